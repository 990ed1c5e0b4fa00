//! The `rate_limit:` block of the module configuration.

use ipnet::IpNet;
use serde_json::Value;

use super::values::{boolean, integer_in_range, mapping, number_in_range};
use super::ConfigError;
use crate::rate_limit::{BucketConfig, RateLimitConfig};

pub(crate) fn rate_limit_config(value: &Value) -> Result<RateLimitConfig, ConfigError> {
    let mut config = RateLimitConfig::default();
    for (key, value) in mapping("rate_limit", value)? {
        let path = format!("rate_limit.{key}");
        match key.as_str() {
            "enabled" => config.enabled = boolean(&path, value)?,
            "create" => config.create = bucket(&path, value, config.create)?,
            "session" => config.session = bucket(&path, value, config.session)?,
            "max_sessions_per_ip" => {
                config.max_sessions_per_ip = integer_in_range(&path, value, 1, 10_000_000)?;
            }
            "exempt" => config.exempt = networks(&path, value)?,
            "trusted_proxies" => config.trusted_proxies = networks(&path, value)?,
            "fair_share" => config.fair_share = boolean(&path, value)?,
            _ => return Err(ConfigError::new(&path, "unknown option")),
        }
    }
    Ok(config)
}

fn bucket(
    path: &str,
    value: &Value,
    mut bucket: BucketConfig,
) -> Result<BucketConfig, ConfigError> {
    for (key, value) in mapping(path, value)? {
        let path = format!("{path}.{key}");
        match key.as_str() {
            "per_second" => bucket.per_second = number_in_range(&path, value, 0.001, 1_000_000.0)?,
            "burst" => {
                bucket.burst = u32::try_from(integer_in_range(&path, value, 1, 1_000_000)?)
                    .unwrap_or(1_000_000);
            }
            _ => return Err(ConfigError::new(&path, "unknown option")),
        }
    }
    Ok(bucket)
}

/// Addresses (`192.0.2.7`, `::1`) or networks (`10.0.0.0/8`, `fd00::/8`).
fn networks(path: &str, value: &Value) -> Result<Vec<IpNet>, ConfigError> {
    let items = value
        .as_array()
        .ok_or_else(|| ConfigError::new(path, "must be a list of addresses or networks"))?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let text = item.as_str().unwrap_or_default();
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        &format!("{path}[{index}]"),
                        format!(
                            "must be an IP address or a network such as 10.0.0.0/8, got {item}"
                        ),
                    )
                })
        })
        .collect()
}
