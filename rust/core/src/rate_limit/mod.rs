//! Per-client rate limits: the rendezvous endpoints take no authentication, so anyone can
//! call them, and a flood from one address must not starve everyone else.
//!
//! Two token buckets per client address, one for creates and a more generous one for
//! session requests, sized so that honest polling (about one request a second per device)
//! is never limited: matrix-rust-sdk aborts the whole login on any 4xx. Stores apply them
//! (see [`crate::store::Admission`]), together with the cap on live sessions per client.

mod bucket;
mod client;
mod forwarded;
mod memory;

use std::time::Duration;

pub use bucket::{Bucket, BucketConfig};
pub use client::{ClientKey, PrefixGroup};
use ipnet::IpNet;
pub use memory::MemoryRateLimiter;

/// Which budget a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Creating a session.
    Create,
    /// Any request to a session URL.
    Session,
}

impl Limit {
    /// A short stable name, for keys and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Session => "session",
        }
    }
}

/// Whether a request may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within the budget.
    Allowed,
    /// Over the budget; a token is available again after `retry_after`.
    Limited {
        /// How long until the request would be allowed.
        retry_after: Duration,
    },
}

/// The `rate_limit:` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Whether any limit applies.
    pub enabled: bool,
    /// Budget of creates per client.
    pub create: BucketConfig,
    /// Budget of session requests (GET, HEAD, PUT, DELETE) per client.
    pub session: BucketConfig,
    /// Most live sessions one client may have created.
    pub max_sessions_per_ip: usize,
    /// Clients no limit applies to.
    pub exempt: Vec<IpNet>,
    /// Reverse proxies whose `X-Forwarded-For` is believed; empty: the client is the
    /// address Synapse reports.
    pub trusted_proxies: Vec<IpNet>,
    /// Whether, once the store is more than half full, a create is refused to a client whose
    /// wider prefix group (IPv4 /24, IPv6 /56 and /48) holds as many sessions as are free.
    pub fair_share: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            // A QR login needs one create; ten in a row, then one every five seconds.
            create: BucketConfig {
                per_second: 0.2,
                burst: 10,
            },
            // Two devices polling once a second each, with their writes, use about 2.5/s.
            session: BucketConfig {
                per_second: 10.0,
                burst: 50,
            },
            max_sessions_per_ip: 20,
            exempt: Vec::new(),
            trusted_proxies: Vec::new(),
            fair_share: true,
        }
    }
}

impl RateLimitConfig {
    /// The budget of `limit`.
    pub fn bucket(&self, limit: Limit) -> BucketConfig {
        match limit {
            Limit::Create => self.create,
            Limit::Session => self.session,
        }
    }

    /// Whether limits apply to `client` at all.
    pub fn applies_to(&self, client: &ClientKey) -> bool {
        self.enabled
            && !self
                .exempt
                .iter()
                .any(|net| net.contains(&client.address()))
    }
}
