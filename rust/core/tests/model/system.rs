//! The system under test: a [`Service`] with small limits, a manual clock and
//! deterministic entropy, over whichever store a test supplies.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use synapse_rendezvous_core::rate_limit::RateLimitConfig;

// Poor but never-repeating randomness, so that a failing sequence replays identically.
use crate::support::CountingEntropy;
use synapse_rendezvous_core::{Config, ManualClock, Rendezvous, Routes, Service, Store};

/// Small, so that capacity refusals happen often.
pub(crate) const CAPACITY: usize = 3;
/// Short, so that random clock moves cross it often.
pub(crate) const TTL: Duration = Duration::from_secs(30);
/// Small, so that bodies at and over the limit are cheap.
pub(crate) const MAX_PAYLOAD: usize = 64;
pub(crate) const BASEURL: &str = "https://matrix.example.org/";
/// Well formed, never issued.
pub(crate) const UNKNOWN_ID: &str = "01KQ3ZZZZZZZZZZZZZZZZZZZZZ";

/// Makes a fresh, empty store holding at most `capacity` live sessions.
pub(crate) type StoreFactory<'a> = &'a dyn Fn(usize) -> Arc<dyn Store>;

pub(crate) struct Harness {
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) service: Service,
}

impl Harness {
    pub(crate) fn new(store: Arc<dyn Store>, start: SystemTime) -> Self {
        let config = Config {
            ttl: TTL,
            max_payload_bytes: MAX_PAYLOAD,
            capacity: CAPACITY,
            // Requests here carry no client address, so no limit applies anyway; off makes
            // sure that the model only has to know about capacity.
            rate_limit: RateLimitConfig {
                enabled: false,
                ..RateLimitConfig::default()
            },
            ..Config::default()
        };
        let clock = Arc::new(ManualClock::new(start));
        let rendezvous = Rendezvous::new(
            config,
            Arc::new(CountingEntropy::default()),
            Routes::takeover(),
            BASEURL,
        );
        let service = Service::new(rendezvous, store, clock.clone());
        Self { clock, service }
    }
}

/// A fixed start on a whole second, so that the second-resolution HTTP dates of the first
/// requests equal the clock exactly.
pub(crate) fn fixed_start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}
