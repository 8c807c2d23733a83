//! Request and component metadata: string maps with typed accessors whose errors name the
//! field.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::{Error, Result};

/// Metadata as it travels on every API: string keys and values.
pub type Metadata = HashMap<String, String>;

/// The request metadata key that carries a TTL in seconds (Dapr's and Layotto's name).
pub const TTL_IN_SECONDS: &str = "ttlInSeconds";
/// The response metadata key that reports when a value expires (RFC 3339).
pub const TTL_EXPIRE_TIME: &str = "ttlExpireTime";

/// A TTL requested on a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Expire after this long.
    After(Duration),
    /// Never expire: removes any TTL the key had (`ttlInSeconds: -1`).
    Never,
}

/// Read `ttlInSeconds` from request metadata: absent or empty means none was asked for;
/// `-1` and `0` mean no expiry; a positive integer is the TTL; anything else is an error.
pub fn parse_ttl(metadata: &Metadata) -> Result<Option<Ttl>> {
    let Some(raw) = metadata
        .get(TTL_IN_SECONDS)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let secs: i64 = raw.parse().map_err(|_| {
        Error::invalid_argument(format!(
            "metadata {TTL_IN_SECONDS}: {raw:?} is not an integer number of seconds"
        ))
    })?;
    match secs {
        -1 | 0 => Ok(Some(Ttl::Never)),
        s if s > 0 => Ok(Some(Ttl::After(Duration::from_secs(s.unsigned_abs())))),
        _ => Err(Error::invalid_argument(format!(
            "metadata {TTL_IN_SECONDS}: {secs} is invalid; use a positive number of seconds, or -1 for no expiry"
        ))),
    }
}

/// Parse a duration as Go and Dapr write them (`500ms`, `5s`, `1m30s`, `2h`), or as a bare
/// number of seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if let Ok(secs) = raw.parse::<f64>() {
        // `try_`: a number too large for a Duration is not a duration, not a panic.
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = Duration::ZERO;
    let mut rest = raw;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(split);
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        let secs = value * scale;
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        total = total.checked_add(Duration::try_from_secs_f64(secs).ok()?)?;
        rest = tail;
    }
    Some(total)
}

/// Parse a value with `FromStr`, naming the key in the error.
pub fn parse_value<T: FromStr>(key: &str, raw: &str) -> Result<T> {
    raw.trim().parse().map_err(|_| {
        Error::invalid_argument(format!(
            "metadata {key}: {raw:?} is not a valid {}",
            short_type_name::<T>()
        ))
    })
}

/// Parse a boolean the lenient way Dapr does (`true`, `1`, `yes`, `on`, case-insensitive).
pub fn parse_bool(key: &str, raw: &str) -> Result<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Ok(true),
        "false" | "0" | "no" | "n" | "off" | "" => Ok(false),
        _ => Err(Error::invalid_argument(format!(
            "metadata {key}: {raw:?} is not a boolean"
        ))),
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_syntax() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("-5s"), None);
        assert_eq!(parse_duration(""), None);
        // Too large for a Duration: refused, not a panic.
        assert_eq!(parse_duration("1e30"), None);
        assert_eq!(parse_duration("inf"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
        assert_eq!(parse_duration("18446744073709551615s1h"), None);
    }

    #[test]
    fn ttl_values() {
        let md = |v: &str| Metadata::from([(TTL_IN_SECONDS.to_string(), v.to_string())]);
        assert_eq!(parse_ttl(&Metadata::new()).ok(), Some(None));
        assert_eq!(parse_ttl(&md("-1")).ok(), Some(Some(Ttl::Never)));
        assert_eq!(
            parse_ttl(&md("10")).ok(),
            Some(Some(Ttl::After(Duration::from_secs(10))))
        );
        assert!(parse_ttl(&md("-2")).is_err());
        assert!(parse_ttl(&md("ten")).is_err());
    }
}
