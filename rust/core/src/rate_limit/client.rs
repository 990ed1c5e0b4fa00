//! Who a request counts against: its client address, with IPv6 grouped by /64, since one
//! subscriber usually holds a whole /64 and could otherwise rotate through it; and the wider
//! prefixes it belongs to, among which the capacity is shared fairly once it runs short.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// Prefix lengths of the groups a client belongs to for the capacity's fair share: an
/// IPv4 /24 (a small network), and an IPv6 /56 and /48 (the sizes providers hand out).
const IPV4_GROUP: u8 = 24;
const IPV6_GROUPS: [u8; 2] = [56, 48];

/// A network whose clients share the capacity's fair share, written like `192.0.2.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefixGroup(IpNet);

impl fmt::Display for PrefixGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The rate-limit identity of a client. Two clients are the same when their keys are: one
/// IPv4 address, or one IPv6 /64.
#[derive(Debug, Clone, Copy)]
pub struct ClientKey {
    address: IpAddr,
    key: IpAddr,
}

impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ClientKey {}

impl std::hash::Hash for ClientKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl ClientKey {
    /// The key of a client connecting from `address`.
    pub fn new(address: IpAddr) -> Self {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            IpAddr::V4(_) => address,
        };
        let key = match address {
            IpAddr::V6(v6) => {
                let segments = v6.segments();
                IpAddr::V6(Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
            IpAddr::V4(_) => address,
        };
        Self { address, key }
    }

    /// The one key shared by every client whose address is unknown (`0.0.0.0`), so that
    /// they are limited together rather than not at all.
    pub fn unknown() -> Self {
        Self::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// The client's own address (for exemptions).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The wider networks the client belongs to, narrowest first.
    pub fn groups(&self) -> Vec<PrefixGroup> {
        let lengths: &[u8] = match self.address {
            IpAddr::V4(_) => &[IPV4_GROUP],
            IpAddr::V6(_) => &IPV6_GROUPS,
        };
        lengths
            .iter()
            .filter_map(|&length| IpNet::new(self.address, length).ok())
            .map(|net| PrefixGroup(net.trunc()))
            .collect()
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_groups_by_slash_64() {
        let a = ClientKey::new("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientKey::new("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = ClientKey::new("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(
            a,
            ClientKey {
                address: a.address(),
                ..b
            }
        );
        assert_eq!(a.to_string(), b.to_string());
        assert_ne!(a.to_string(), c.to_string());
    }

    #[test]
    fn groups_are_the_wider_prefixes() {
        let v4 = ClientKey::new("192.0.2.77".parse().unwrap());
        let names: Vec<String> = v4.groups().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["192.0.2.0/24"]);
        let v6 = ClientKey::new("2001:db8:1:2aa::1".parse().unwrap());
        let names: Vec<String> = v6.groups().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["2001:db8:1:200::/56", "2001:db8:1::/48"]);
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let mapped = ClientKey::new("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped.to_string(), "192.0.2.7");
        assert_eq!(mapped.address(), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
