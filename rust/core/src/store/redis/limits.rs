//! Rate limits and per-client session caps kept in the store's Redis, so that they hold
//! across every Synapse process together. Keys expire by themselves once they no longer
//! matter, so no process has to sweep them.

use std::time::{Duration, SystemTime};

use ::redis::{Script, Value};

use super::codec::{self, Millis};
use super::pool::Connections;
use crate::id::SessionId;
use crate::rate_limit::{ClientKey, Decision, Limit, RateLimitConfig, RateLimiter, SessionQuota};
use crate::store::StoreError;

/// Token buckets and session counts in Redis.
pub struct RedisLimits {
    connections: Connections,
    prefix: String,
    config: RateLimitConfig,
    take_token: Script,
    reserve: Script,
    release: Script,
}

impl RedisLimits {
    pub(super) fn new(connections: Connections, prefix: &str, config: RateLimitConfig) -> Self {
        Self {
            connections,
            prefix: prefix.to_owned(),
            config,
            take_token: Script::new(include_str!("take_token.lua")),
            reserve: Script::new(include_str!("reserve.lua")),
            release: Script::new(include_str!("release.lua")),
        }
    }

    fn owner_key(&self, id: SessionId) -> String {
        format!("{}owner:{id}", self.prefix)
    }
}

fn decision(reply: Value, what: &str) -> Result<(i64, Option<i64>), StoreError> {
    match codec::array(reply)?.as_slice() {
        [flag] => Ok((codec::int(flag)?, None)),
        [flag, value] => Ok((codec::int(flag)?, Some(codec::int(value)?))),
        _ => Err(codec::corrupt(what)),
    }
}

fn millis_to_duration(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

impl RateLimiter for RedisLimits {
    fn check(
        &self,
        limit: Limit,
        client: &ClientKey,
        now: SystemTime,
    ) -> Result<Decision, StoreError> {
        let bucket = self.config.bucket(limit);
        let key = format!("{}bucket:{}:{client}", self.prefix, limit.name());
        let reply = self.connections.run(|conn| {
            self.take_token
                .key(&key)
                .arg(Millis::from_time(now).ms)
                .arg(bucket.per_second)
                .arg(bucket.burst)
                .invoke::<Value>(conn)
        })?;
        match decision(reply, "rate limit")? {
            (1, None) => Ok(Decision::Allowed),
            (0, Some(wait)) => Ok(Decision::Limited {
                retry_after: millis_to_duration(wait),
            }),
            _ => Err(codec::corrupt("rate limit")),
        }
    }

    fn forget_idle(&self, _now: SystemTime) {
        // Bucket keys carry their own expiry.
    }
}

impl SessionQuota for RedisLimits {
    fn reserve(
        &self,
        client: &ClientKey,
        id: SessionId,
        expires: SystemTime,
        max: usize,
        now: SystemTime,
    ) -> Result<Decision, StoreError> {
        let now_ms = Millis::from_time(now).ms;
        let reply = self.connections.run(|conn| {
            self.reserve
                .key(format!("{}client:{client}", self.prefix))
                .key(self.owner_key(id))
                .arg(now_ms)
                .arg(id.to_string())
                .arg(Millis::from_time(expires).ms)
                .arg(max)
                .arg(client.to_string())
                .invoke::<Value>(conn)
        })?;
        match decision(reply, "session cap")? {
            (1, None) => Ok(Decision::Allowed),
            (0, Some(oldest)) => Ok(Decision::Limited {
                retry_after: millis_to_duration(oldest - i64::try_from(now_ms).unwrap_or(0)),
            }),
            _ => Err(codec::corrupt("session cap")),
        }
    }

    fn release(&self, id: SessionId) -> Result<(), StoreError> {
        self.connections.run(|conn| {
            self.release
                .key(self.owner_key(id))
                .arg(&self.prefix)
                .arg(id.to_string())
                .invoke::<Value>(conn)
        })?;
        Ok(())
    }

    fn forget_expired(&self, _now: SystemTime) {
        // Client sets and owner keys expire with their newest session.
    }
}
