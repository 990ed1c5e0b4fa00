//! The module's `config:` block: defaults, parsing and validation. Every error names the key
//! it is about, so that Synapse can refuse to start with a message an admin can act on.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::duration::parse_duration;

/// Shortest allowed session lifetime: anything shorter cannot complete a QR login.
const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest allowed session lifetime: a rendezvous is a one-off exchange, not storage.
const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Largest allowed `max_payload_bytes`: MSC4108 payloads are a few KiB of ciphertext.
const MAX_MAX_PAYLOAD_BYTES: usize = 1_048_576;
/// Largest allowed `capacity`.
const MAX_CAPACITY: usize = 10_000_000;

/// Validated settings of the rendezvous core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a session lives from its creation; writes do not extend it.
    pub ttl: Duration,
    /// Largest body accepted on create and write, in bytes (the limit itself is allowed).
    pub max_payload_bytes: usize,
    /// Most live sessions held at once; creates beyond it are refused, never evicting.
    pub capacity: usize,
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
    fn new(key: &str, reason: impl Into<String>) -> Self {
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
        for (key, value) in map {
            match key.as_str() {
                "ttl" => config.ttl = duration_in_range(key, value, MIN_TTL, MAX_TTL)?,
                "max_payload_bytes" => {
                    config.max_payload_bytes =
                        integer_in_range(key, value, 1, MAX_MAX_PAYLOAD_BYTES)?;
                }
                "capacity" => config.capacity = integer_in_range(key, value, 1, MAX_CAPACITY)?,
                _ => return Err(ConfigError::new(key, "unknown option")),
            }
        }
        Ok(config)
    }
}

fn integer_in_range(
    key: &str,
    value: &Value,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let reason = || format!("must be an integer from {min} to {max}");
    let number = value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ConfigError::new(key, format!("{}, got {value}", reason())))?;
    if (min..=max).contains(&number) {
        Ok(number)
    } else {
        Err(ConfigError::new(key, format!("{}, got {number}", reason())))
    }
}

fn duration_in_range(
    key: &str,
    value: &Value,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let duration = match value {
        Value::Number(n) => n.as_u64().map(Duration::from_millis),
        Value::String(s) => parse_duration(s),
        _ => None,
    };
    let reason = format!(
        "must be a duration from {} to {} (integer milliseconds, or a string such as \"90s\" \
         or \"2m\"), got {value}",
        humanize(min),
        humanize(max)
    );
    match duration {
        Some(d) if (min..=max).contains(&d) => Ok(d),
        _ => Err(ConfigError::new(key, reason)),
    }
}

fn humanize(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
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
    fn error_message_says_what_is_allowed() {
        let error = Config::from_json(&json!({"capacity": 0})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid `capacity`: must be an integer from 1 to 10000000, got 0"
        );
    }
}
