//! `sequencer.redis` metadata: the shared Redis connection keys plus `keyLayout`.

use plinth_core::{ComponentSpec, Result};

use crate::redis_client::RedisSettings;

/// Which Redis keys the counters use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyLayout {
    /// Layotto's: `sequencer|||` before the key the building block prefixed
    /// (`sequencer|||{appId}||{key}`, `sequencer|||{key}` under `keyPrefix: none`).
    Layotto,
    /// The prefixed key as it is.
    Plain,
}

impl KeyLayout {
    /// The Redis key for a key the building block prefixed.
    pub(crate) fn redis_key(self, key: &str) -> String {
        match self {
            KeyLayout::Layotto => format!("sequencer|||{key}"),
            KeyLayout::Plain => key.to_owned(),
        }
    }
}

/// The parsed metadata of a `sequencer.redis` component.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where and how to connect.
    pub(crate) redis: RedisSettings,
    /// `keyLayout`: `layotto` (default) or `plain`.
    pub(crate) layout: KeyLayout,
}

impl Config {
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let redis = RedisSettings::from_spec(spec)?;
        let layout = spec.choice_or(
            "keyLayout",
            KeyLayout::Layotto,
            &[("layotto", KeyLayout::Layotto), ("plain", KeyLayout::Plain)],
        )?;
        Ok(Self { redis, layout })
    }
}
