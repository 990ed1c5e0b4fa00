//! Opens the store a configuration asks for: the memory store (restoring its snapshot), or
//! the Redis store with the address and bounds of its connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, ConfigError, StoreConfig};
use crate::store::redis::{LinkConfig, Target};
use crate::store::snapshot::{self, Contents, Limits, SnapshotError};
use crate::store::{MemoryStore, RedisStore};

/// An opened store.
pub enum Backend {
    /// Sessions in this process.
    Memory {
        /// The store.
        store: Arc<MemoryStore>,
        /// Where to save it at shutdown, if anywhere.
        snapshot_path: Option<PathBuf>,
    },
    /// Sessions in Redis.
    Redis {
        /// How operations become calls.
        store: RedisStore,
        /// Where the server is.
        target: Target,
        /// The bounds of the connections.
        link: LinkConfig,
    },
}

/// A line for the operator's log, with its level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Worth knowing.
    Info(String),
    /// Something went wrong, but serving goes on.
    Warning(String),
}

impl Backend {
    /// Opens the store of `config`; `default_redis_url` is the homeserver's own Redis, used
    /// when `redis.url` is not set. A memory store restores its snapshot, if one is
    /// configured and present; what happened is in the notices.
    ///
    /// # Errors
    /// [`ConfigError`] when the Redis store has no URL or an unusable one.
    pub fn open(
        config: &Config,
        default_redis_url: Option<&str>,
        now: SystemTime,
    ) -> Result<(Self, Vec<Notice>), ConfigError> {
        match &config.store {
            StoreConfig::Memory { snapshot_path } => {
                let store = Arc::new(MemoryStore::new(config.capacity));
                let limits = Limits {
                    capacity: config.capacity,
                    max_payload_bytes: config.max_payload_bytes,
                    ttl: config.ttl,
                    msc4388: config.msc4388.is_on(),
                };
                let notices = snapshot_path
                    .iter()
                    .flat_map(|path| restore(&store, path, &limits, now))
                    .collect();
                let backend = Self::Memory {
                    store,
                    snapshot_path: snapshot_path.clone(),
                };
                Ok((backend, notices))
            }
            StoreConfig::Redis(redis) => {
                let url = redis.url.as_deref().or(default_redis_url).ok_or_else(|| {
                    ConfigError::new(
                        "redis.url",
                        "is required with `store: redis` when the homeserver's own `redis:` \
                         section is not enabled",
                    )
                })?;
                let target = Target::parse(url)
                    .map_err(|error| ConfigError::new("redis.url", error.to_string()))?;
                let link = LinkConfig {
                    connections: usize::try_from(redis.pool_size).unwrap_or(1),
                    max_pending: redis.pending_limit(),
                    timeout: redis.timeout,
                };
                let backend = Self::Redis {
                    store: RedisStore::new(redis, config.capacity)
                        .with_bounds(config.max_payload_bytes, config.ttl),
                    target,
                    link,
                };
                Ok((backend, Vec::new()))
            }
        }
    }

    /// Saves the live sessions of a memory store to its snapshot; how many, or `None` when
    /// there is nothing to save to.
    ///
    /// # Errors
    /// [`SnapshotError`] when the snapshot cannot be written.
    pub fn save_snapshot(&self, now: SystemTime) -> Result<Option<usize>, SnapshotError> {
        let Self::Memory {
            store,
            snapshot_path: Some(path),
        } = self
        else {
            return Ok(None);
        };
        let sessions = store.live_sessions(now);
        snapshot::save(path, &sessions)?;
        Ok(Some(sessions.len()))
    }
}

/// Restores the snapshot at `path`, if any: an INFO notice says what was restored, and a
/// WARNING, one for the whole file, what was refused.
fn restore(store: &MemoryStore, path: &Path, limits: &Limits, now: SystemTime) -> Vec<Notice> {
    match snapshot::take(path, limits, now) {
        Ok(None) => vec![Notice::Info(format!(
            "no session snapshot at {}",
            path.display()
        ))],
        Ok(Some(contents)) => {
            let mut notices = Vec::new();
            if contents.dropped() > 0 {
                notices.push(Notice::Warning(dropped(path, &contents, limits)));
            }
            let found = contents.sessions.len();
            let restored = store.restore(contents.sessions, now);
            notices.push(Notice::Info(format!(
                "restored {restored} of {found} live sessions from {}",
                path.display()
            )));
            if contents.unserved > 0 {
                notices.push(Notice::Info(format!(
                    "did not restore {} live MSC4388 sessions from {}: MSC4388 is off",
                    contents.unserved,
                    path.display()
                )));
            }
            notices
        }
        // Never fatal: losing sessions in progress beats a homeserver that cannot start.
        Err(error) => vec![Notice::Warning(format!(
            "ignoring session snapshot {}: {error}",
            path.display()
        ))],
    }
}

/// Why sessions of a snapshot were not restored. None of it happens to a file this
/// configuration wrote; it may to one written with larger limits, or changed since.
fn dropped(path: &Path, contents: &Contents, limits: &Limits) -> String {
    let mut reasons = Vec::new();
    if contents.oversized > 0 {
        reasons.push(format!(
            "{} with a payload over max_payload_bytes = {}",
            contents.oversized, limits.max_payload_bytes
        ));
    }
    if contents.bad_times > 0 {
        reasons.push(format!(
            "{} expiring more than ttl = {}s from now, or modified after expiry",
            contents.bad_times,
            limits.ttl.as_secs_f64()
        ));
    }
    if contents.duplicates > 0 {
        reasons.push(format!("{} with a duplicate id", contents.duplicates));
    }
    format!(
        "dropped {} sessions from session snapshot {} that this configuration cannot have \
         written ({}): the file was written with larger limits, by a clock ahead of this one, \
         or changed since",
        contents.dropped(),
        path.display(),
        reasons.join("; ")
    )
}
