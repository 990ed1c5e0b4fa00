//! The module's `config:` block: defaults, parsing and validation. Every error names the key
//! it is about, so that Synapse can refuse to start with a message an admin can act on.

mod rate_limit;
mod redis;
mod values;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::msc4388::{Msc4388Mode, MSC4388_MAX_BODY_BYTES, MSC4388_MAX_TTL, MSC4388_MIN_TTL};
use crate::rate_limit::RateLimitConfig;

use self::rate_limit::rate_limit_config;
use self::redis::redis_config;
use self::values::{duration_in_range, integer_in_range, non_empty_string};

/// Shortest allowed session lifetime: anything shorter cannot complete a QR login.
const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest allowed session lifetime: a rendezvous is a one-off exchange, not storage.
const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Largest allowed `max_payload_bytes`: MSC4108 payloads are a few KiB of ciphertext.
const MAX_MAX_PAYLOAD_BYTES: usize = 1_048_576;
/// Largest allowed `capacity`.
const MAX_CAPACITY: usize = 10_000_000;

/// Validated settings of the rendezvous core.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How long a session lives from its creation; writes do not extend it.
    pub ttl: Duration,
    /// Largest body accepted on create and write, in bytes (the limit itself is allowed).
    pub max_payload_bytes: usize,
    /// Most live sessions held at once; creates beyond it are refused, never evicting.
    pub capacity: usize,
    /// Where sessions live.
    pub store: StoreConfig,
    /// Per-client limits.
    pub rate_limit: RateLimitConfig,
    /// Whether MSC4388 (the 2025 API) is served, and who may create its sessions. Its
    /// sessions live `ttl` too, so with it on `ttl` must be within 120 to 300 s (see
    /// [`Config::with_msc4388`]); they share `capacity` and the rate limits with MSC4108's,
    /// but their data limit is MSC4388's 4096 bytes, not `max_payload_bytes`.
    pub msc4388: Msc4388Mode,
}

/// Which store holds the sessions, and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// This process's memory: the zero-setup default.
    Memory {
        /// Where live sessions are saved on a clean shutdown and loaded from at startup.
        snapshot_path: Option<PathBuf>,
    },
    /// A Redis server shared by every Synapse process.
    Redis(RedisConfig),
}

/// Settings of the Redis store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `unix://` URL; `None` means the homeserver's own `redis:`.
    pub url: Option<String>,
    /// Prepended to every key, so that the store can share a Redis with Synapse.
    pub key_prefix: String,
    /// Longest a request waits for Redis, from its arrival, before it is answered 503.
    pub timeout: Duration,
    /// Connections each process keeps open (each carries many requests at once).
    pub pool_size: u32,
    /// Most requests of one process waiting for Redis at once; `None` for
    /// [`RedisConfig::PENDING_PER_CONNECTION`] per connection.
    pub max_pending: Option<usize>,
}

impl RedisConfig {
    /// Requests in flight per connection allowed by default.
    pub const PENDING_PER_CONNECTION: usize = 128;

    /// The bound on requests waiting for Redis in one process.
    pub fn pending_limit(&self) -> usize {
        self.max_pending.unwrap_or_else(|| {
            usize::try_from(self.pool_size).unwrap_or(1) * Self::PENDING_PER_CONNECTION
        })
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: "synapse_rendezvous:".to_owned(),
            timeout: Duration::from_secs(2),
            // One carries the load (the link fills it first), one stands by.
            pool_size: 2,
            max_pending: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // 120 s rather than Synapse's 60 s: a client whose clock runs 60 s ahead of the
            // server still has a minute to finish.
            ttl: Duration::from_secs(120),
            // MSC4108's figure.
            max_payload_bytes: 4096,
            capacity: 10_000,
            store: StoreConfig::Memory {
                snapshot_path: None,
            },
            rate_limit: RateLimitConfig::default(),
            msc4388: Msc4388Mode::Off,
        }
    }
}

/// The settings as the startup log line shows them (never the Redis URL, which may hold a
/// password).
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.store {
            StoreConfig::Memory {
                snapshot_path: None,
            } => f.write_str("store=memory")?,
            StoreConfig::Memory {
                snapshot_path: Some(path),
            } => write!(f, "store=memory (snapshot_path={})", path.display())?,
            StoreConfig::Redis(redis) => write!(
                f,
                "store=redis (key_prefix={}, timeout={}ms, pool_size={}, max_pending={})",
                redis.key_prefix,
                redis.timeout.as_millis(),
                redis.pool_size,
                redis.pending_limit()
            )?,
        }
        write!(
            f,
            ", ttl={}s, max_payload_bytes={}, capacity={}, ",
            self.ttl.as_secs_f64(),
            self.max_payload_bytes,
            self.capacity
        )?;
        // Only when on, so that the line of a configuration without it stays as it was.
        if self.msc4388.is_on() {
            write!(f, "msc4388={}, ", self.msc4388.name())?;
        }
        f.write_str("rate_limit=")?;
        let limits = &self.rate_limit;
        if limits.enabled {
            write!(
                f,
                "on (create {}/s burst {}, session {}/s burst {}, {} live sessions per client, \
                 {} exempt networks, {} trusted proxies, fair share {})",
                limits.create.per_second,
                limits.create.burst,
                limits.session.per_second,
                limits.session.burst,
                limits.max_sessions_per_ip,
                limits.exempt.len(),
                limits.trusted_proxies.len(),
                if limits.fair_share { "on" } else { "off" }
            )
        } else {
            f.write_str("off")
        }
    }
}

/// A configuration value that cannot be used, and the key it was found under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, for example `ttl`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: &str, reason: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Builds a configuration from the module's `config:` block, as JSON. `null` (an empty
    /// block in YAML) means every default.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first unknown key or invalid value.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let empty = Map::new();
        let map = match value {
            Value::Null => &empty,
            Value::Object(map) => map,
            _ => return Err(ConfigError::new("config", "must be a mapping of options")),
        };
        let mut config = Self::default();
        let mut store_kind = "memory";
        let (mut snapshot_path, mut redis) = (None, None);
        for (key, value) in map {
            match key.as_str() {
                "ttl" => config.ttl = duration_in_range(key, value, MIN_TTL, MAX_TTL)?,
                "max_payload_bytes" => {
                    config.max_payload_bytes =
                        integer_in_range(key, value, 1, MAX_MAX_PAYLOAD_BYTES)?;
                }
                "capacity" => config.capacity = integer_in_range(key, value, 1, MAX_CAPACITY)?,
                "store" => {
                    store_kind = match value.as_str() {
                        Some(kind @ ("memory" | "redis")) => kind,
                        _ => {
                            return Err(ConfigError::new(
                                key,
                                format!("must be \"memory\" or \"redis\", got {value}"),
                            ))
                        }
                    };
                }
                "snapshot_path" => snapshot_path = Some(non_empty_string(key, value)?),
                "redis" => redis = Some(redis_config(value)?),
                "rate_limit" => config.rate_limit = rate_limit_config(value)?,
                "msc4388" => config.msc4388 = msc4388_mode(key, value)?,
                _ => return Err(ConfigError::new(key, "unknown option")),
            }
        }
        config.store = match (store_kind, snapshot_path, redis) {
            ("redis", Some(_), _) => {
                return Err(ConfigError::new(
                    "snapshot_path",
                    "only applies to the memory store (Redis keeps its own data)",
                ))
            }
            ("redis", None, redis) => StoreConfig::Redis(redis.unwrap_or_default()),
            (_, _, Some(_)) => {
                return Err(ConfigError::new(
                    "redis",
                    "only applies with `store: redis`",
                ))
            }
            (_, snapshot_path, None) => StoreConfig::Memory {
                snapshot_path: snapshot_path.map(PathBuf::from),
            },
        };
        config.check_msc4388_ttl()?;
        Ok(config)
    }

    /// The same configuration serving MSC4388 in `mode`: how the glue applies a switch that
    /// lives outside the module's block (Synapse's `experimental_features.msc4388_mode`).
    ///
    /// The default `ttl` (120 s) is already within MSC4388's range, so a configuration that
    /// does not set `ttl` needs nothing more.
    ///
    /// # Errors
    /// [`ConfigError`] naming `ttl` when MSC4388 is on and `ttl` is outside 120 to 300 s.
    pub fn with_msc4388(mut self, mode: Msc4388Mode) -> Result<Self, ConfigError> {
        self.msc4388 = mode;
        self.check_msc4388_ttl()?;
        Ok(self)
    }

    /// The largest request body the glue must let through to the core: `max_payload_bytes`
    /// for MSC4108, and with MSC4388 on at least [`MSC4388_MAX_BODY_BYTES`], since its JSON
    /// can legitimately be longer than its 4096 bytes of data. Larger bodies may be refused
    /// by the glue before the core sees them.
    pub fn max_body_bytes(&self) -> usize {
        if self.msc4388.is_on() {
            self.max_payload_bytes.max(MSC4388_MAX_BODY_BYTES)
        } else {
            self.max_payload_bytes
        }
    }

    /// MSC4388's sessions live `ttl`, which the MSC wants between 120 and 300 s.
    fn check_msc4388_ttl(&self) -> Result<(), ConfigError> {
        if self.msc4388.is_on() && !(MSC4388_MIN_TTL..=MSC4388_MAX_TTL).contains(&self.ttl) {
            return Err(ConfigError::new(
                "ttl",
                format!(
                    "must be from 120s to 300s while MSC4388 is on (msc4388: {}), got {}ms",
                    self.msc4388.name(),
                    self.ttl.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

/// `off`, `open` or `authenticated`. YAML 1.1 readers (`PyYAML`, which Synapse uses) turn a
/// bare `off` into `false`, so `false` means off too.
fn msc4388_mode(key: &str, value: &Value) -> Result<Msc4388Mode, ConfigError> {
    match value {
        Value::String(text) => match text.as_str() {
            "off" => Ok(Msc4388Mode::Off),
            "open" => Ok(Msc4388Mode::Open),
            "authenticated" => Ok(Msc4388Mode::Authenticated),
            _ => Err(mode_error(key, value)),
        },
        Value::Bool(false) => Ok(Msc4388Mode::Off),
        _ => Err(mode_error(key, value)),
    }
}

fn mode_error(key: &str, value: &Value) -> ConfigError {
    ConfigError::new(
        key,
        format!("must be \"off\", \"open\" or \"authenticated\", got {value}"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error_key(value: &Value) -> String {
        Config::from_json(value).unwrap_err().key
    }

    #[test]
    fn empty_block_gives_defaults() {
        let config = Config::from_json(&Value::Null).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.ttl, Duration::from_secs(120));
        assert_eq!(config.max_payload_bytes, 4096);
        assert_eq!(config.capacity, 10_000);
        assert_eq!(Config::from_json(&json!({})).unwrap(), Config::default());
    }

    #[test]
    fn every_key_is_read() {
        let config =
            Config::from_json(&json!({"ttl": "90s", "max_payload_bytes": 100, "capacity": 5}))
                .unwrap();
        assert_eq!(config.ttl, Duration::from_secs(90));
        assert_eq!(config.max_payload_bytes, 100);
        assert_eq!(config.capacity, 5);
    }

    #[test]
    fn ttl_accepts_synapse_durations() {
        for (value, secs) in [
            (json!("2m"), 120),
            (json!(90_000), 90),
            (json!("1d"), 86_400),
        ] {
            assert_eq!(
                Config::from_json(&json!({ "ttl": value })).unwrap().ttl,
                Duration::from_secs(secs)
            );
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(error_key(&json!({"ttl": -1})), "ttl");
        assert_eq!(error_key(&json!({"ttl": "0s"})), "ttl");
        assert_eq!(error_key(&json!({"ttl": "2d"})), "ttl");
        assert_eq!(error_key(&json!({"ttl": 1.5})), "ttl");
        assert_eq!(error_key(&json!({"capacity": 0})), "capacity");
        assert_eq!(error_key(&json!({"capacity": -3})), "capacity");
        assert_eq!(error_key(&json!({"capacity": "10"})), "capacity");
        assert_eq!(
            error_key(&json!({"max_payload_bytes": "lots"})),
            "max_payload_bytes"
        );
        assert_eq!(
            error_key(&json!({"max_payload_bytes": 2_000_000})),
            "max_payload_bytes"
        );
        assert_eq!(error_key(&json!({"no_such_key": 1})), "no_such_key");
        assert_eq!(error_key(&json!([1, 2])), "config");
    }

    #[test]
    fn store_selection() {
        let redis = Config::from_json(&json!({
            "store": "redis",
            "redis": {"url": "redis://127.0.0.1:6379/2", "key_prefix": "x:", "timeout": "500ms"}
        }))
        .unwrap();
        assert_eq!(
            redis.store,
            StoreConfig::Redis(RedisConfig {
                url: Some("redis://127.0.0.1:6379/2".to_owned()),
                key_prefix: "x:".to_owned(),
                timeout: Duration::from_millis(500),
                pool_size: 2,
                max_pending: None,
            })
        );
        let snapshot = Config::from_json(&json!({"snapshot_path": "/var/lib/x.snap"})).unwrap();
        assert_eq!(
            snapshot.store,
            StoreConfig::Memory {
                snapshot_path: Some(PathBuf::from("/var/lib/x.snap"))
            }
        );
        assert_eq!(
            Config::from_json(&json!({"store": "redis"})).unwrap().store,
            StoreConfig::Redis(RedisConfig::default())
        );
    }

    #[test]
    fn store_options_are_checked() {
        assert_eq!(error_key(&json!({"store": "disk"})), "store");
        assert_eq!(
            error_key(&json!({"store": "redis", "snapshot_path": "/x"})),
            "snapshot_path"
        );
        assert_eq!(error_key(&json!({"redis": {"url": "redis://x"}})), "redis");
        assert_eq!(
            error_key(&json!({"store": "redis", "redis": {"url": "http://x"}})),
            "redis.url"
        );
        assert_eq!(
            error_key(&json!({"store": "redis", "redis": {"timeout": 0}})),
            "redis.timeout"
        );
        assert_eq!(
            error_key(&json!({"store": "redis", "redis": {"nope": 1}})),
            "redis.nope"
        );
        assert_eq!(error_key(&json!({"store": "redis", "redis": []})), "redis");
        assert_eq!(error_key(&json!({"snapshot_path": ""})), "snapshot_path");
    }

    #[test]
    fn rate_limits_are_read() {
        let config = Config::from_json(&json!({"rate_limit": {
            "create": {"per_second": 1, "burst": 3},
            "session": {"per_second": 0.5},
            "max_sessions_per_ip": 2,
            "exempt": ["127.0.0.1", "10.0.0.0/8", "::1"],
        }}))
        .unwrap();
        let limits = config.rate_limit;
        assert!(limits.enabled);
        assert!((limits.create.per_second - 1.0).abs() < f64::EPSILON);
        assert_eq!(limits.create.burst, 3);
        assert!((limits.session.per_second - 0.5).abs() < f64::EPSILON);
        assert_eq!(limits.session.burst, 50);
        assert_eq!(limits.max_sessions_per_ip, 2);
        assert_eq!(limits.exempt.len(), 3);
    }

    #[test]
    fn rate_limit_errors_name_the_nested_key() {
        let key = |limits: Value| error_key(&json!({ "rate_limit": limits }));
        assert_eq!(
            key(json!({"create": {"per_second": 0}})),
            "rate_limit.create.per_second"
        );
        assert_eq!(
            key(json!({"session": {"burst": -1}})),
            "rate_limit.session.burst"
        );
        assert_eq!(key(json!({"exempt": ["nope"]})), "rate_limit.exempt[0]");
        assert_eq!(key(json!({"exempt": "10.0.0.0/8"})), "rate_limit.exempt");
        assert_eq!(key(json!({"enabled": "yes"})), "rate_limit.enabled");
        assert_eq!(
            key(json!({"max_sessions_per_ip": 0})),
            "rate_limit.max_sessions_per_ip"
        );
        assert_eq!(key(json!({"what": 1})), "rate_limit.what");
        assert_eq!(key(json!(3)), "rate_limit");
    }

    #[test]
    fn display_is_the_startup_line() {
        let config = Config::from_json(&json!({
            "store": "redis",
            "redis": {"url": "redis://:secret@127.0.0.1/0", "pool_size": 2},
            "rate_limit": {"enabled": false},
        }))
        .unwrap();
        let line = config.to_string();
        assert_eq!(
            line,
            "store=redis (key_prefix=synapse_rendezvous:, timeout=2000ms, pool_size=2, \
             max_pending=256), ttl=120s, max_payload_bytes=4096, capacity=10000, rate_limit=off"
        );
        assert!(!line.contains("secret"));
        assert!(Config::default()
            .to_string()
            .starts_with("store=memory, ttl=120s"));
    }

    #[test]
    fn msc4388_mode_is_read_and_bounds_ttl() {
        assert_eq!(Config::default().msc4388, Msc4388Mode::Off);
        for (value, mode) in [
            (json!("off"), Msc4388Mode::Off),
            (json!(false), Msc4388Mode::Off),
            (json!("open"), Msc4388Mode::Open),
            (json!("authenticated"), Msc4388Mode::Authenticated),
        ] {
            let config = Config::from_json(&json!({ "msc4388": value })).unwrap();
            assert_eq!(config.msc4388, mode);
            assert_eq!(config.ttl, Duration::from_secs(120));
        }
        for bad in [json!("on"), json!(true), json!(1), json!("Open")] {
            assert_eq!(error_key(&json!({ "msc4388": bad })), "msc4388");
        }
        assert!(Config::from_json(&json!({"msc4388": "open", "ttl": "300s"})).is_ok());
        for ttl in ["119s", "301s", "1h"] {
            assert_eq!(error_key(&json!({"msc4388": "open", "ttl": ttl})), "ttl");
            let config = Config::from_json(&json!({ "ttl": ttl })).unwrap();
            assert_eq!(
                config
                    .with_msc4388(Msc4388Mode::Authenticated)
                    .unwrap_err()
                    .key,
                "ttl"
            );
        }
        // Off, any ttl goes, as before.
        assert!(Config::from_json(&json!({"msc4388": "off", "ttl": "10s"})).is_ok());
        let on = Config::default().with_msc4388(Msc4388Mode::Open).unwrap();
        assert_eq!(on.max_body_bytes(), MSC4388_MAX_BODY_BYTES);
        assert_eq!(Config::default().max_body_bytes(), 4096);
        assert!(on.to_string().contains(", msc4388=open, rate_limit=on"));
    }

    #[test]
    fn error_message_says_what_is_allowed() {
        let error = Config::from_json(&json!({"capacity": 0})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid `capacity`: must be an integer from 1 to 10000000, got 0"
        );
    }
}
