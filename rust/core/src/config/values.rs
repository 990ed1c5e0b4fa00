//! Readers for single option values, each failing with a [`ConfigError`] that names the key.

use std::time::Duration;

use serde_json::Value;

use super::ConfigError;
use crate::duration::parse_duration;

pub(crate) fn integer_in_range(
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

pub(crate) fn duration_in_range(
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
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

pub(crate) fn non_empty_string(key: &str, value: &Value) -> Result<String, ConfigError> {
    match value.as_str() {
        Some(text) if !text.is_empty() => Ok(text.to_owned()),
        _ => Err(ConfigError::new(
            key,
            format!("must be a non-empty string, got {value}"),
        )),
    }
}

/// A finite number within `min..=max` (integers are accepted too).
pub(crate) fn number_in_range(
    key: &str,
    value: &Value,
    min: f64,
    max: f64,
) -> Result<f64, ConfigError> {
    match value.as_f64() {
        Some(number) if number.is_finite() && number >= min && number <= max => Ok(number),
        _ => Err(ConfigError::new(
            key,
            format!("must be a number from {min} to {max}, got {value}"),
        )),
    }
}

/// A boolean.
pub(crate) fn boolean(key: &str, value: &Value) -> Result<bool, ConfigError> {
    value
        .as_bool()
        .ok_or_else(|| ConfigError::new(key, format!("must be true or false, got {value}")))
}

/// A mapping of options.
pub(crate) fn mapping<'a>(
    key: &str,
    value: &'a Value,
) -> Result<&'a serde_json::Map<String, Value>, ConfigError> {
    value
        .as_object()
        .ok_or_else(|| ConfigError::new(key, "must be a mapping of options"))
}
