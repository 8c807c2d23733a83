//! Reading a resolver's `nameResolution.configuration`: one parse that names the offending
//! field, and the duration format Dapr's configuration uses.

use std::fmt;
use std::time::Duration;

use plinth_core::{Error, Result};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// Where a resolver's settings live in a Configuration; every error message starts with it.
pub(super) const PREFIX: &str = "nameResolution.configuration";

/// Deserialize a resolver's configuration, reporting the field path on error
/// (`nameResolution.configuration.updateInterval: ...`).
pub(super) fn parse<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T> {
    // No configuration at all is an empty one, so a resolver whose fields all have defaults
    // (dns) needs none, and one with a required field reports that field.
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let value = if value.is_null() { &empty } else { value };
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let at = if path == "." {
            PREFIX.to_owned()
        } else {
            format!("{PREFIX}.{path}")
        };
        Error::invalid_argument(format!("{at}: {}", err.into_inner()))
    })
}

/// An error about one field, found after deserializing (a value of the right type that is
/// still wrong).
pub(super) fn field_error(field: &str, message: impl fmt::Display) -> Error {
    Error::invalid_argument(format!("{PREFIX}.{field}: {message}"))
}

/// `#[serde(with = "duration")]` for durations written as Dapr writes them: a Go duration
/// string (`"500ms"`, `"5s"`, `"1m30s"`) or a number of seconds (`5`, `"5"`, `0.5`).
pub(super) mod duration {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"500ms\", \"5s\" or \"1m\", or a number of seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            plinth_core::metadata::parse_duration(v).ok_or_else(|| {
                E::custom(format!(
                    "{v:?} is not a duration; write one such as \"500ms\", \"5s\" or \"1m\""
                ))
            })
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{v} is negative; a duration must not be")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v).map_err(|_| {
                E::custom(format!(
                    "{v} is not a valid number of seconds (negative or too large)"
                ))
            })
        }
    }
}
