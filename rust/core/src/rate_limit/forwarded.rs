//! Who a request really comes from. Behind reverse proxies the TCP peer is the proxy, and
//! the client's address is in `X-Forwarded-For`, which every hop may append to but which
//! the client itself may also fill with anything: only the part the configured trusted
//! proxies wrote can be believed.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use super::{ClientKey, RateLimitConfig};

/// Most `X-Forwarded-For` entries looked at, from the right: far more hops than any real
/// chain of proxies.
const MAX_HOPS: usize = 32;

/// Networks that only local or private clients come from: exempting them is exempting
/// everyone when a local proxy forwards every request.
const LOCAL_NETWORKS: [&str; 9] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

impl RateLimitConfig {
    /// Whether the client's address is taken from `X-Forwarded-For` (trusted proxies are
    /// configured) rather than from Synapse.
    pub fn trusts_proxies(&self) -> bool {
        !self.trusted_proxies.is_empty()
    }

    /// The client of a request whose TCP peer is `peer` (`None` when it is not an IP socket)
    /// and whose headers are `headers`, with trusted proxies
    /// configured: a peer that is not a trusted proxy is the client, whatever its headers
    /// say; otherwise the client is the right-most address of the header that is not a
    /// trusted proxy (the left-most one when every hop is trusted). An entry that is not an
    /// address, or a peer that is not an IP socket, makes the request count as the one
    /// unknown client.
    pub fn client_of(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientKey {
        let Some(peer) = peer.map(unmapped) else {
            return ClientKey::unknown();
        };
        if !self.is_trusted_proxy(peer) {
            return ClientKey::new(peer);
        }
        let entries: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|line| line.as_bytes().split(|&byte| byte == b','))
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev().take(MAX_HOPS) {
            let Some(address) = parse_entry(entry) else {
                return ClientKey::unknown();
            };
            client = address;
            if !self.is_trusted_proxy(address) {
                break;
            }
        }
        ClientKey::new(client)
    }

    fn is_trusted_proxy(&self, address: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }

    /// What an operator should hear at startup about how clients are told apart, given
    /// whether a listener that serves the client API has `x_forwarded: true`.
    pub fn startup_warnings(&self, x_forwarded_client_listener: bool) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.enabled || self.trusts_proxies() {
            return warnings;
        }
        if x_forwarded_client_listener {
            warnings.push(
                "a client listener has `x_forwarded: true` and `rate_limit.trusted_proxies` is \
                 not set: Synapse then takes the client's address from the first \
                 X-Forwarded-For value, which a client can write itself, so rate limits and \
                 `exempt` can be dodged; list your proxies in `rate_limit.trusted_proxies`"
                    .to_owned(),
            );
        }
        let local: Vec<IpNet> = LOCAL_NETWORKS
            .iter()
            .filter_map(|net| net.parse().ok())
            .collect();
        if let Some(net) = self
            .exempt
            .iter()
            .find(|net| local.iter().any(|l| overlap(net, l)))
        {
            warnings.push(format!(
                "`rate_limit.exempt` contains {net}, a loopback or private range: behind a \
                 proxy on such an address every client is exempt unless \
                 `rate_limit.trusted_proxies` names the proxy"
            ));
        }
        warnings
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`192.0.2.7:4711`,
/// `[2001:db8::1]:443`), as some proxies write it.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .map(unmapped)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn config(trusted: &[&str]) -> RateLimitConfig {
        RateLimitConfig {
            trusted_proxies: trusted.iter().map(|net| net.parse().unwrap()).collect(),
            ..RateLimitConfig::default()
        }
    }

    fn client(config: &RateLimitConfig, peer: &str, lines: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", line.parse().unwrap());
        }
        config.client_of(peer.parse().ok(), &headers).to_string()
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let proxies = config(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        // HAProxy's `option forwardfor` appends: the client's own claim is on the left.
        assert_eq!(
            client(&proxies, "10.0.0.2", &["10.9.9.9, 198.51.100.7"]),
            "198.51.100.7"
        );
        assert_eq!(
            client(
                &proxies,
                "10.0.0.2",
                &["203.0.113.1", "198.51.100.7, 10.0.0.3"]
            ),
            "198.51.100.7"
        );
        assert_eq!(
            client(&proxies, "10.0.0.2", &["[2001:db8::5]:443"]),
            "2001:db8::/64"
        );
        assert_eq!(
            client(&proxies, "10.0.0.2", &["198.51.100.7:4711"]),
            "198.51.100.7"
        );
        assert_eq!(
            client(&proxies, "10.0.0.2", &["10.0.0.7, 10.0.0.8"]),
            "10.0.0.7"
        );
        assert_eq!(client(&proxies, "10.0.0.2", &[]), "10.0.0.2");
        assert_eq!(
            client(&proxies, "::ffff:10.0.0.2", &["198.51.100.7"]),
            "198.51.100.7"
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let proxies = config(&["10.0.0.0/8"]);
        assert_eq!(
            client(&proxies, "198.51.100.9", &["10.0.0.5"]),
            "198.51.100.9"
        );
        assert_eq!(client(&proxies, "not-an-ip", &["198.51.100.7"]), "0.0.0.0");
    }

    #[test]
    fn junk_from_a_trusted_chain_is_the_unknown_client() {
        let proxies = config(&["10.0.0.0/8"]);
        assert_eq!(client(&proxies, "10.0.0.2", &["unknown"]), "0.0.0.0");
        assert_eq!(
            client(&proxies, "10.0.0.2", &["198.51.100.7, junk"]),
            "0.0.0.0"
        );
        // Junk left of the first untrusted address is never looked at.
        assert_eq!(
            client(&proxies, "10.0.0.2", &["junk, 198.51.100.7"]),
            "198.51.100.7"
        );
    }

    #[test]
    fn warnings_name_what_lets_clients_choose_their_address() {
        let plain = RateLimitConfig::default();
        assert!(plain.startup_warnings(false).is_empty());
        assert_eq!(plain.startup_warnings(true).len(), 1);
        let exempting = RateLimitConfig {
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
            ..RateLimitConfig::default()
        };
        assert!(exempting.startup_warnings(false)[0].contains("10.0.0.0/8"));
        let public = RateLimitConfig {
            exempt: vec!["198.51.100.0/24".parse().unwrap()],
            ..RateLimitConfig::default()
        };
        assert!(public.startup_warnings(false).is_empty());
        assert!(config(&["10.0.0.1/32"]).startup_warnings(true).is_empty());
    }
}
