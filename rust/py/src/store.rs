//! Opens the store the configuration asks for, and keeps what shutdown needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use synapse_rendezvous_core::rate_limit::{RateLimiter, SessionQuota};
use synapse_rendezvous_core::store::snapshot;
use synapse_rendezvous_core::{Config, ConfigError, MemoryStore, RedisStore, Store, StoreConfig};

/// An opened store, with what the handler needs to know about it.
pub(crate) struct OpenedStore {
    pub(crate) store: Arc<dyn Store>,
    /// Whether calls can block on the network: then they run off the reactor thread.
    pub(crate) blocking: bool,
    /// The memory store and where to save it at shutdown, when a snapshot is configured.
    pub(crate) snapshot: Option<(Arc<MemoryStore>, PathBuf)>,
    /// What happened at opening that the operator should know, for the log.
    pub(crate) notices: Vec<Notice>,
    /// Limits shared through the store, when it is shared by several processes.
    pub(crate) shared_limits: Option<(Arc<dyn RateLimiter>, Arc<dyn SessionQuota>)>,
}

/// A line for the log, with its level.
pub(crate) enum Notice {
    Info(String),
    Warning(String),
}

/// Opens the configured store. `default_redis_url` is the homeserver's own Redis, if any.
///
/// # Errors
/// [`ConfigError`] when the Redis store has no URL or an unusable one.
pub(crate) fn open(
    config: &Config,
    default_redis_url: Option<&str>,
    now: SystemTime,
) -> Result<OpenedStore, ConfigError> {
    match &config.store {
        StoreConfig::Memory { snapshot_path } => {
            let store = Arc::new(MemoryStore::new(config.capacity));
            let mut notices = Vec::new();
            if let Some(path) = snapshot_path {
                notices.push(restore(&store, path, now));
            }
            Ok(OpenedStore {
                store: store.clone(),
                blocking: false,
                snapshot: snapshot_path.clone().map(|path| (store, path)),
                notices,
                shared_limits: None,
            })
        }
        StoreConfig::Redis(redis) => {
            let url = redis
                .url
                .as_deref()
                .or(default_redis_url)
                .ok_or_else(|| ConfigError {
                    key: "redis.url".to_owned(),
                    reason: "is required with `store: redis` when the homeserver's own `redis:` \
                             section is not enabled"
                        .to_owned(),
                })?;
            let store =
                RedisStore::connect(url, redis, config.capacity).map_err(|error| ConfigError {
                    key: "redis.url".to_owned(),
                    reason: error.to_string(),
                })?;
            let limits = Arc::new(store.limits(config.rate_limit.clone()));
            Ok(OpenedStore {
                store: Arc::new(store),
                blocking: true,
                snapshot: None,
                notices: Vec::new(),
                shared_limits: Some((limits.clone(), limits)),
            })
        }
    }
}

fn restore(store: &MemoryStore, path: &Path, now: SystemTime) -> Notice {
    match snapshot::take(path, now) {
        Ok(None) => Notice::Info(format!("no session snapshot at {}", path.display())),
        Ok(Some(sessions)) => {
            let found = sessions.len();
            let restored = store.restore(sessions, now);
            Notice::Info(format!(
                "restored {restored} of {found} live sessions from {}",
                path.display()
            ))
        }
        // Never fatal: losing sessions in progress beats a homeserver that cannot start.
        Err(error) => Notice::Warning(format!(
            "ignoring session snapshot {}: {error}",
            path.display()
        )),
    }
}

/// Saves the live sessions of a memory store; returns how many.
///
/// # Errors
/// The snapshot error, as text for the log.
pub(crate) fn save(store: &MemoryStore, path: &Path, now: SystemTime) -> Result<usize, String> {
    let sessions = store.live_sessions(now);
    snapshot::save(path, &sessions)
        .map(|()| sessions.len())
        .map_err(|error| error.to_string())
}
