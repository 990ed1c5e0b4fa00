//! The shared store: sessions in Redis, so that every Synapse process (main and workers)
//! sees the same sessions and they survive a restart of Synapse. Observable behaviour is the
//! [`MemoryStore`](super::MemoryStore)'s, to the nanosecond.
//!
//! # Data model
//!
//! With `{prefix}` the configured `key_prefix`:
//!
//! - `{prefix}session:{id}`, one hash per session: `payload` (the exact bytes), `etag` (the
//!   opaque tag), `last_modified` and `expires` (milliseconds since the Unix epoch), and
//!   `last_modified_ns` and `expires_ns` (the nanoseconds within that millisecond, so that
//!   times round-trip exactly). `PEXPIREAT` at `expires` (rounded up to the millisecond)
//!   makes Redis remove the key by itself.
//! - `{prefix}sessions`, a sorted set indexing every stored session: member the id, score
//!   `expires` in milliseconds. It makes the capacity count consistent across processes.
//!
//! Every time comes from the `now` given to each call (the core's clock), never from Redis's
//! clock: a session whose `expires` is at or before `now` is absent even while Redis still
//! holds its key. Redis's own expiry only frees memory; if Redis's clock runs ahead of
//! Synapse's, it may drop a session that much early.
//!
//! Each multi-step operation is one Lua script (see the `.lua` files beside this module), so
//! it is atomic with respect to every other process: create (drop ended index entries, refuse
//! at capacity, else write the hash, its expiry and its index entry), replace (compare-and-set
//! on the tag), delete (key and index entry), live count and reclaim (drop ended entries and
//! their keys, then count). Reads are a single `HMGET`. Scripts reach session keys through
//! the index, so the store needs a single Redis server (not Redis Cluster), with an eviction
//! policy that does not evict the index (`noeviction`, the default, or a `volatile-*` one).

mod codec;
mod limits;
mod pool;
mod scripts;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ::redis::{Client, Value};

use self::codec::{Millis, FIELDS};
pub use self::limits::RedisLimits;
use self::pool::Connections;
use self::scripts::Scripts;
use super::{CreateOutcome, ReplaceOutcome, Store, StoreError};
use crate::config::RedisConfig;
use crate::etag::EntityTagList;
use crate::id::SessionId;
use crate::rate_limit::RateLimitConfig;
use crate::session::{Session, Version};

/// Live sessions in a Redis server shared by every process, at most `capacity` of them.
pub struct RedisStore {
    connections: Connections,
    scripts: Scripts,
    prefix: String,
    index: String,
    capacity: usize,
    /// Ended sessions this instance removed, by any call.
    expired: AtomicU64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis server at `url` (`redis://`, `rediss://` or `unix://`), with the
    /// key prefix, timeout and pool size of `config` (its own `url` is not read: the caller
    /// resolves it). Holds at most `capacity` live sessions across every process sharing the
    /// prefix.
    ///
    /// Connects lazily: Redis being down now is not an error; each operation fails with a
    /// [`StoreError`] until it is back, and then succeeds again without a new store.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when `url` is not a usable Redis URL.
    pub fn connect(
        url: &str,
        config: &RedisConfig,
        capacity: usize,
    ) -> Result<RedisStore, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            connections: Connections::new(client, config.timeout, config.pool_size),
            scripts: Scripts::new(),
            prefix: config.key_prefix.clone(),
            index: format!("{}sessions", config.key_prefix),
            capacity,
            expired: AtomicU64::new(0),
        })
    }

    /// Rate limits and per-client session caps in the same Redis, under the same prefix,
    /// sharing this store's connections.
    pub fn limits(&self, config: RateLimitConfig) -> RedisLimits {
        RedisLimits::new(self.connections.clone(), &self.prefix, config)
    }

    fn key(&self, id: SessionId) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn count_expired(&self, dropped: usize) {
        self.expired.fetch_add(
            u64::try_from(dropped).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Runs `script` with the index as its only key and `now` and the prefix as arguments.
    fn on_index(&self, script: &::redis::Script, now: SystemTime) -> Result<Value, StoreError> {
        let now = Millis::from_time(now);
        let reply = self.connections.run(|conn| {
            script
                .key(&self.index)
                .arg(now.ms)
                .arg(now.ns)
                .arg(&self.prefix)
                .invoke::<Value>(conn)
        })?;
        Ok(reply)
    }
}

impl Store for RedisStore {
    fn create(&self, session: Session, now: SystemTime) -> Result<CreateOutcome, StoreError> {
        let at = Millis::from_time(now);
        let last_modified = Millis::from_time(session.last_modified);
        let expires = Millis::from_time(session.expires);
        let reply = self.connections.run(|conn| {
            self.scripts
                .create
                .key(self.key(session.id))
                .key(&self.index)
                .arg(at.ms)
                .arg(at.ns)
                .arg(self.capacity)
                .arg(&self.prefix)
                .arg(session.id.to_string())
                .arg(session.payload.as_ref())
                .arg(session.etag.opaque())
                .arg(last_modified.ms)
                .arg(last_modified.ns)
                .arg(expires.ms)
                .arg(expires.ns)
                .arg(expires.ceil_ms())
                .invoke::<Value>(conn)
        })?;
        match codec::array(reply)?.as_slice() {
            [status, dropped] if codec::int(status)? == 0 => {
                self.count_expired(codec::count(dropped)?);
                Ok(CreateOutcome::Created)
            }
            [status, ms, ns, dropped] if codec::int(status)? == 1 => {
                self.count_expired(codec::count(dropped)?);
                let oldest = codec::time(ms, ns)?;
                let retry_after = oldest.duration_since(now).unwrap_or(Duration::ZERO);
                Ok(CreateOutcome::Full { retry_after })
            }
            _ => Err(codec::corrupt("create")),
        }
    }

    fn get(&self, id: SessionId, now: SystemTime) -> Result<Option<Session>, StoreError> {
        let reply = self.connections.run(|conn| {
            ::redis::cmd("HMGET")
                .arg(self.key(id))
                .arg(&FIELDS[..])
                .query::<Value>(conn)
        })?;
        let session = codec::session(id, codec::array(reply)?)?;
        Ok(session.filter(|s| !s.is_expired(now)))
    }

    fn replace(
        &self,
        id: SessionId,
        if_match: &EntityTagList,
        version: Version,
        now: SystemTime,
    ) -> Result<ReplaceOutcome, StoreError> {
        let at = Millis::from_time(now);
        let last_modified = Millis::from_time(version.last_modified);
        let (any, tags): (&str, &[String]) = match if_match {
            EntityTagList::Any => ("1", &[]),
            EntityTagList::Tags(tags) => ("0", tags),
        };
        let reply = self.connections.run(|conn| {
            self.scripts
                .replace
                .key(self.key(id))
                .arg(at.ms)
                .arg(at.ns)
                .arg(any)
                .arg(version.payload.as_ref())
                .arg(version.etag.opaque())
                .arg(last_modified.ms)
                .arg(last_modified.ns)
                .arg(tags)
                .invoke::<Value>(conn)
        })?;
        let mut reply = codec::array(reply)?;
        let status = reply.first().map(codec::int).transpose()?;
        match (status, reply.len()) {
            (Some(0), 1) => Ok(ReplaceOutcome::NotFound),
            (Some(1), 3) => Ok(ReplaceOutcome::Replaced(Session {
                id,
                expires: codec::time(&reply[1], &reply[2])?,
                payload: version.payload,
                etag: version.etag,
                last_modified: version.last_modified,
            })),
            (Some(2), 7) => codec::session(id, reply.split_off(1))?
                .map(ReplaceOutcome::PreconditionFailed)
                .ok_or_else(|| codec::corrupt("replace")),
            (Some(3), 1) => Err(StoreError::Corrupt(format!(
                "session {id} is missing fields"
            ))),
            _ => Err(codec::corrupt("replace")),
        }
    }

    fn delete(&self, id: SessionId, now: SystemTime) -> Result<bool, StoreError> {
        let at = Millis::from_time(now);
        let reply = self.connections.run(|conn| {
            self.scripts
                .delete
                .key(self.key(id))
                .key(&self.index)
                .arg(at.ms)
                .arg(at.ns)
                .arg(id.to_string())
                .invoke::<Value>(conn)
        })?;
        match codec::int(&reply)? {
            1 => Ok(true),
            2 => {
                self.count_expired(1);
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    fn live_count(&self, now: SystemTime) -> Result<usize, StoreError> {
        let reply = self.on_index(&self.scripts.live_count, now)?;
        match codec::array(reply)?.as_slice() {
            [live, dropped] => {
                self.count_expired(codec::count(dropped)?);
                codec::count(live)
            }
            _ => Err(codec::corrupt("live count")),
        }
    }

    fn reclaim_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        let dropped = codec::count(&self.on_index(&self.scripts.reclaim, now)?)?;
        self.count_expired(dropped);
        Ok(dropped)
    }

    fn expired_total(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}
