//! Durations in Synapse's configuration syntax: an integer is milliseconds, a string is a
//! number with a unit suffix (`90s`, `2m`, `500ms`).

use std::time::Duration;

/// Parses a duration string in Synapse's syntax: digits followed by one of `ms`, `s`, `m`,
/// `h`, `d`, `w`, `y`, or bare digits meaning milliseconds.
///
/// Returns `None` for anything else, including negative numbers, fractions and overflow.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return None;
    }
    let value: u64 = number.parse().ok()?;
    let millis_per_unit: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => return None,
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_synapse_syntax() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1w"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1y"), Some(Duration::from_secs(31_536_000)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1500"), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn junk_is_rejected() {
        for bad in [
            "",
            "s",
            "-1",
            "-1s",
            "1.5s",
            "1 s",
            "10x",
            "lots",
            "99999999999999999999y",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
