//! The `redis:` block of the module configuration.

use std::time::Duration;

use serde_json::Value;

use super::values::{duration_in_range, integer_in_range, mapping, non_empty_string};
use super::{ConfigError, RedisConfig};

pub(crate) fn redis_config(value: &Value) -> Result<RedisConfig, ConfigError> {
    let map = mapping("redis", value)?;
    let mut redis = RedisConfig::default();
    for (key, value) in map {
        let path = format!("redis.{key}");
        match key.as_str() {
            "url" => {
                let url = non_empty_string(&path, value)?;
                if !["redis://", "rediss://", "unix://", "redis+unix://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                {
                    return Err(ConfigError::new(
                        &path,
                        "must start with redis://, rediss:// or unix://",
                    ));
                }
                redis.url = Some(url);
            }
            "key_prefix" => redis.key_prefix = non_empty_string(&path, value)?,
            "timeout" => {
                redis.timeout = duration_in_range(
                    &path,
                    value,
                    Duration::from_millis(10),
                    Duration::from_secs(60),
                )?;
            }
            "pool_size" => {
                redis.pool_size =
                    u32::try_from(integer_in_range(&path, value, 1, 64)?).unwrap_or(64);
            }
            "max_pending" => {
                redis.max_pending = Some(integer_in_range(&path, value, 1, 100_000)?);
            }
            _ => return Err(ConfigError::new(&path, "unknown option")),
        }
    }
    Ok(redis)
}
