//! Rate limits kept in this process's memory (for the memory store), with a hard bound on
//! how many clients are remembered.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use super::{Bucket, BucketConfig, ClientKey, Decision, Limit};
use crate::store::Admission;

/// Most buckets remembered at once. Past it, the idle ones go first, then the least
/// recently used: forgetting a bucket only ever makes a limit more lenient.
const MAX_BUCKETS: usize = 100_000;

/// Token buckets in process memory, each with the configuration it was filled with.
#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    buckets: Mutex<HashMap<(Limit, ClientKey), (Bucket, BucketConfig)>>,
}

type Buckets = HashMap<(Limit, ClientKey), (Bucket, BucketConfig)>;

impl MemoryRateLimiter {
    /// Limits with every bucket full.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many buckets are remembered.
    pub fn remembered(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Takes one token from the bucket `admission` names, if it has one.
    pub fn take(&self, admission: &Admission, now: SystemTime) -> Decision {
        let key = (admission.limit, admission.client);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            forget(&mut buckets, now);
        }
        let (bucket, config) = buckets
            .entry(key)
            .or_insert_with(|| (Bucket::full(admission.bucket, now), admission.bucket));
        *config = admission.bucket;
        bucket.take(admission.bucket, now)
    }

    /// Drops buckets that have refilled completely, so that memory stays bounded.
    pub fn forget_idle(&self, now: SystemTime) {
        forget(
            &mut self.buckets.lock().unwrap_or_else(PoisonError::into_inner),
            now,
        );
    }
}

fn forget(buckets: &mut Buckets, now: SystemTime) {
    buckets.retain(|_, (bucket, config)| !bucket.is_idle(*config, now));
    if buckets.len() >= MAX_BUCKETS {
        let mut by_age: Vec<_> = buckets
            .iter()
            .map(|(key, (bucket, _))| (bucket.updated, *key))
            .collect();
        by_age.sort_unstable_by_key(|(updated, _)| *updated);
        for (_, key) in by_age.iter().take(buckets.len() - MAX_BUCKETS / 2) {
            buckets.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;

    const CREATE: BucketConfig = BucketConfig {
        per_second: 1.0,
        burst: 2,
    };

    fn admission(limit: Limit, last: u8) -> Admission {
        Admission {
            client: ClientKey::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))),
            limit,
            bucket: CREATE,
        }
    }

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn clients_and_limits_have_separate_budgets() {
        let limiter = MemoryRateLimiter::new();
        for _ in 0..2 {
            assert_eq!(
                limiter.take(&admission(Limit::Create, 1), start()),
                Decision::Allowed
            );
        }
        assert!(matches!(
            limiter.take(&admission(Limit::Create, 1), start()),
            Decision::Limited { .. }
        ));
        assert_eq!(
            limiter.take(&admission(Limit::Create, 2), start()),
            Decision::Allowed
        );
        assert_eq!(
            limiter.take(&admission(Limit::Session, 1), start()),
            Decision::Allowed
        );
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let limiter = MemoryRateLimiter::new();
        limiter.take(&admission(Limit::Create, 1), start());
        limiter.forget_idle(start());
        assert_eq!(limiter.remembered(), 1);
        limiter.forget_idle(start() + Duration::from_secs(1));
        assert_eq!(limiter.remembered(), 0);
    }

    #[test]
    fn memory_stays_bounded_under_many_clients() {
        let limiter = MemoryRateLimiter::new();
        for i in 0..(u32::try_from(MAX_BUCKETS).unwrap() + 10) {
            let client = ClientKey::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
            let admission = Admission {
                client,
                ..admission(Limit::Create, 0)
            };
            limiter.take(&admission, start());
        }
        assert!(limiter.remembered() <= MAX_BUCKETS);
    }
}
