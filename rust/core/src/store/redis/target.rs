//! Where the Redis store's server is and how a connection opens, from its URL. The caller
//! opens the socket (TCP, TLS or a UNIX socket); the link sends the handshake.

use std::fmt;
use std::path::PathBuf;

use ::redis::{cmd, Cmd, ConnectionAddr, IntoConnectionInfo};

use crate::store::StoreError;

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP connection, with TLS for `rediss://` URLs.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// `Some` for TLS: `insecure` skips verifying the server's certificate and name.
        tls: Option<Tls>,
    },
    /// A UNIX socket.
    Unix(PathBuf),
}

/// TLS settings from the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tls {
    /// The URL ends with `#insecure`: no certificate or name check.
    pub insecure: bool,
}

/// A parsed Redis URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// Where the server is.
    pub address: Address,
    db: i64,
    username: Option<String>,
    password: Option<String>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("Target")
            .field("address", &self.address)
            .field("db", &self.db)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses a `redis://`, `rediss://` or `unix://` URL.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL cannot be used.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        // The redis crate parses `rediss://` only with a TLS feature, which the core does not
        // need (the caller opens the socket): parse it as `redis://` and keep the TLS part.
        let (url, tls) = match url.strip_prefix("rediss://") {
            Some(rest) => {
                let (rest, insecure) = match rest.strip_suffix("#insecure") {
                    Some(rest) => (rest, true),
                    None => (rest, false),
                };
                (format!("redis://{rest}"), Some(Tls { insecure }))
            }
            None => (url.to_owned(), None),
        };
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|error| StoreError::Unavailable(format!("invalid Redis URL: {error}")))?;
        let address = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Address::Tcp {
                host: host.clone(),
                port: *port,
                tls,
            },
            ConnectionAddr::Unix(path) => Address::Unix(path.clone()),
            _ => {
                return Err(StoreError::Unavailable(
                    "unsupported Redis address".to_owned(),
                ))
            }
        };
        let settings = info.redis_settings();
        Ok(Self {
            address,
            db: settings.db(),
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
        })
    }

    /// The commands that open every connection: `AUTH` and `SELECT` as the URL asks.
    pub fn handshake(&self) -> Vec<Cmd> {
        let mut commands = Vec::new();
        if let Some(password) = &self.password {
            let mut auth = cmd("AUTH");
            if let Some(username) = &self.username {
                auth.arg(username);
            }
            auth.arg(password);
            commands.push(auth);
        }
        if self.db != 0 {
            let mut select = cmd("SELECT");
            select.arg(self.db);
            commands.push(select);
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_addresses_and_handshakes() {
        let plain = Target::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(
            plain.address,
            Address::Tcp {
                host: "127.0.0.1".to_owned(),
                port: 6380,
                tls: None
            }
        );
        let packed: Vec<Vec<u8>> = plain
            .handshake()
            .iter()
            .map(Cmd::get_packed_command)
            .collect();
        assert_eq!(packed, vec![b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n".to_vec()]);

        let secret = Target::parse("rediss://user:s%40cret@[::1]:6379/0").unwrap();
        assert!(matches!(
            secret.address,
            Address::Tcp {
                tls: Some(Tls { insecure: false }),
                ..
            }
        ));
        assert_eq!(secret.handshake().len(), 1);
        assert!(!format!("{secret:?}").contains("cret"));

        let insecure = Target::parse("rediss://redis.internal:6380/#insecure").unwrap();
        assert_eq!(
            insecure.address,
            Address::Tcp {
                host: "redis.internal".to_owned(),
                port: 6380,
                tls: Some(Tls { insecure: true })
            }
        );

        let unix = Target::parse("unix:///run/redis.sock?db=3").unwrap();
        assert_eq!(
            unix.address,
            Address::Unix(PathBuf::from("/run/redis.sock"))
        );
        assert!(Target::parse("http://example.org").is_err());
    }
}
