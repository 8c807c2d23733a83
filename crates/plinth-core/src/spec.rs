//! The validated description of one component, as factories receive it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::metadata::{parse_bool, parse_duration, parse_value};
use crate::{Error, Metadata, Result};

/// One component instance to build: its name, type, version and resolved metadata
/// (secret references already injected), plus where it was declared, for error messages.
#[derive(Clone, Default)]
pub struct ComponentSpec {
    /// The name apps use (`statestore`).
    pub name: String,
    /// The type, `kind.name` (`state.redis`).
    pub type_name: String,
    /// `spec.version` (`v1`, `v2`); empty when not given.
    pub version: String,
    /// Metadata with secret references resolved. Values may be secrets: never log them.
    pub metadata: Metadata,
    /// Nested structured settings that do not fit a string map, such as Layotto's
    /// `biggerThan` object for sequencers.
    pub structured: BTreeMap<String, serde_json::Value>,
    /// The host's app id, for components that namespace by it.
    pub app_id: String,
    /// How long `init` may take before the component counts as failed.
    pub init_timeout: Duration,
    /// A failing component does not block readiness.
    pub ignore_errors: bool,
    /// Where the component was declared (a file path, or `embedded default`).
    pub source: String,
}

impl std::fmt::Debug for ComponentSpec {
    // Metadata can hold secrets, so only its keys are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentSpec")
            .field("name", &self.name)
            .field("type_name", &self.type_name)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.keys().collect::<Vec<_>>())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ComponentSpec {
    /// A spec with defaults for tests and the embedded configuration.
    pub fn new(name: impl Into<String>, type_name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            type_name: type_name.into(),
            app_id: "plinth".into(),
            init_timeout: Duration::from_secs(5),
            source: "embedded default".into(),
            ..Default::default()
        }
    }

    /// Builder: set one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The kind part of the type (`state` for `state.redis`).
    pub fn kind(&self) -> &str {
        self.type_name.split('.').next().unwrap_or_default()
    }

    /// A configuration error naming the file, the component and the field.
    pub fn invalid(&self, field: &str, problem: impl std::fmt::Display) -> Error {
        Error::invalid_argument(format!(
            "{}: component {:?} ({}): {field}: {problem}",
            self.source, self.name, self.type_name
        ))
    }

    /// A metadata value, trimmed, if present and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The first present key among aliases (Dapr renamed several keys over the years).
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.get(k))
    }

    /// A required metadata value.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| self.invalid(&format!("metadata.{key}"), "is required"))
    }

    /// A metadata value parsed with `FromStr`, or `default` when absent.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => {
                parse_value(key, raw).map_err(|e| self.invalid(&format!("metadata.{key}"), e))
            }
        }
    }

    /// A boolean metadata value, or `default` when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => {
                parse_bool(key, raw).map_err(|e| self.invalid(&format!("metadata.{key}"), e))
            }
        }
    }

    /// One of a fixed set of named values, matched without regard to case, or `default` when
    /// absent; any other value is a config error listing the names.
    pub fn choice_or<T: Copy>(&self, key: &str, default: T, choices: &[(&str, T)]) -> Result<T> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|(name, _)| raw.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.invalid(
                    &format!("metadata.{key}"),
                    format!("{raw:?} is not one of {}", names.join(", ")),
                )
            })
    }

    /// A duration metadata value (`5s`, `250ms`, or seconds), or `default` when absent.
    pub fn duration_or(&self, key: &str, default: Duration) -> Result<Duration> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => parse_duration(raw).ok_or_else(|| {
                self.invalid(
                    &format!("metadata.{key}"),
                    format!("{raw:?} is not a duration"),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_or_matches_names_without_case_and_names_the_choices_otherwise() {
        let spec = ComponentSpec::new("c", "lock.redis").with_metadata("keyLayout", "Layotto");
        let choices = [("dapr", 1), ("layotto", 2)];
        assert_eq!(spec.choice_or("keyLayout", 1, &choices).ok(), Some(2));
        assert_eq!(spec.choice_or("missing", 1, &choices).ok(), Some(1));
        let spec = spec.with_metadata("keyLayout", "sideways");
        let err = spec
            .choice_or("keyLayout", 1, &choices)
            .expect_err("not a choice")
            .to_string();
        assert!(
            err.contains("metadata.keyLayout") && err.contains("\"dapr\", \"layotto\""),
            "{err}"
        );
    }
}
