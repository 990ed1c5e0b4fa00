//! Rate limits kept in this process's memory, with a hard bound on how many clients are
//! remembered.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use super::{Bucket, ClientKey, Decision, Limit, RateLimitConfig, RateLimiter};
use crate::store::StoreError;

/// Most buckets remembered at once. Past it, the idle ones go first, then the least
/// recently used: forgetting a bucket only ever makes a limit more lenient.
const MAX_BUCKETS: usize = 100_000;

/// Token buckets in process memory.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<(Limit, ClientKey), Bucket>>,
}

impl MemoryRateLimiter {
    /// Limits per `config`, starting with every bucket full.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How many buckets are remembered.
    pub fn remembered(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn forget(&self, buckets: &mut HashMap<(Limit, ClientKey), Bucket>, now: SystemTime) {
        buckets.retain(|(limit, _), bucket| !bucket.is_idle(self.config.bucket(*limit), now));
        if buckets.len() >= MAX_BUCKETS {
            let mut by_age: Vec<_> = buckets.iter().map(|(key, b)| (b.updated, *key)).collect();
            by_age.sort_unstable_by_key(|(updated, _)| *updated);
            for (_, key) in by_age.iter().take(buckets.len() - MAX_BUCKETS / 2) {
                buckets.remove(key);
            }
        }
    }
}

impl RateLimiter for MemoryRateLimiter {
    fn check(
        &self,
        limit: Limit,
        client: &ClientKey,
        now: SystemTime,
    ) -> Result<Decision, StoreError> {
        let config = self.config.bucket(limit);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&(limit, *client)) {
            self.forget(&mut buckets, now);
        }
        let bucket = buckets
            .entry((limit, *client))
            .or_insert_with(|| Bucket::full(config, now));
        Ok(bucket.take(config, now))
    }

    fn forget_idle(&self, now: SystemTime) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        self.forget(&mut buckets, now);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;
    use crate::rate_limit::BucketConfig;

    fn limiter() -> MemoryRateLimiter {
        MemoryRateLimiter::new(RateLimitConfig {
            create: BucketConfig {
                per_second: 1.0,
                burst: 2,
            },
            ..RateLimitConfig::default()
        })
    }

    fn client(last: u8) -> ClientKey {
        ClientKey::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn clients_have_separate_budgets() {
        let limiter = limiter();
        for _ in 0..2 {
            assert_eq!(
                limiter.check(Limit::Create, &client(1), start()),
                Ok(Decision::Allowed)
            );
        }
        assert!(matches!(
            limiter.check(Limit::Create, &client(1), start()),
            Ok(Decision::Limited { .. })
        ));
        assert_eq!(
            limiter.check(Limit::Create, &client(2), start()),
            Ok(Decision::Allowed)
        );
        assert_eq!(
            limiter.check(Limit::Session, &client(1), start()),
            Ok(Decision::Allowed)
        );
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let limiter = limiter();
        limiter.check(Limit::Create, &client(1), start()).unwrap();
        limiter.forget_idle(start());
        assert_eq!(limiter.remembered(), 1);
        limiter.forget_idle(start() + Duration::from_secs(1));
        assert_eq!(limiter.remembered(), 0);
    }

    #[test]
    fn memory_stays_bounded_under_many_clients() {
        let limiter = limiter();
        for i in 0..(u32::try_from(MAX_BUCKETS).unwrap() + 10) {
            let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            limiter
                .check(Limit::Create, &ClientKey::new(address), start())
                .unwrap();
        }
        assert!(limiter.remembered() <= MAX_BUCKETS);
    }
}
