//! Token-bucket arithmetic, kept pure so that every limiter computes exactly the same thing.

use std::time::{Duration, SystemTime};

use super::Decision;

/// The size and refill rate of a token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketConfig {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens the bucket holds: how many requests may come at once.
    pub burst: u32,
}

/// The state of one client's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Tokens left at `updated`.
    pub tokens: f64,
    /// When `tokens` was computed.
    pub updated: SystemTime,
}

impl Bucket {
    /// A full bucket.
    pub fn full(config: BucketConfig, now: SystemTime) -> Self {
        Self {
            tokens: f64::from(config.burst),
            updated: now,
        }
    }

    /// Refills for the time elapsed, then takes one token if there is one.
    pub fn take(&mut self, config: BucketConfig, now: SystemTime) -> Decision {
        let elapsed = now.duration_since(self.updated).unwrap_or_default();
        let burst = f64::from(config.burst);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * config.per_second).min(burst);
        // A clock stepped backwards must not hand out tokens twice.
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Decision::Allowed
        } else {
            let wait = (1.0 - self.tokens) / config.per_second;
            Decision::Limited {
                retry_after: Duration::from_secs_f64(wait.max(0.001)),
            }
        }
    }

    /// Whether the bucket is full again at `now`, so forgetting it changes nothing.
    pub fn is_idle(&self, config: BucketConfig, now: SystemTime) -> bool {
        let elapsed = now.duration_since(self.updated).unwrap_or_default();
        self.tokens + elapsed.as_secs_f64() * config.per_second >= f64::from(config.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BucketConfig = BucketConfig {
        per_second: 0.5,
        burst: 2,
    };

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn burst_then_refill() {
        let mut bucket = Bucket::full(CONFIG, start());
        assert_eq!(bucket.take(CONFIG, start()), Decision::Allowed);
        assert_eq!(bucket.take(CONFIG, start()), Decision::Allowed);
        assert_eq!(
            bucket.take(CONFIG, start()),
            Decision::Limited {
                retry_after: Duration::from_secs(2)
            }
        );
        assert_eq!(
            bucket.take(CONFIG, start() + Duration::from_secs(2)),
            Decision::Allowed
        );
        assert!(!bucket.is_idle(CONFIG, start() + Duration::from_secs(5)));
        assert!(bucket.is_idle(CONFIG, start() + Duration::from_secs(6)));
    }

    #[test]
    fn clock_stepping_back_gives_nothing_away() {
        let mut bucket = Bucket::full(CONFIG, start());
        bucket.take(CONFIG, start());
        bucket.take(CONFIG, start());
        let earlier = start() - Duration::from_secs(60);
        assert!(matches!(
            bucket.take(CONFIG, earlier),
            Decision::Limited { .. }
        ));
        assert!(matches!(
            bucket.take(CONFIG, start()),
            Decision::Limited { .. }
        ));
    }
}
