//! `lock.redis` metadata: the shared Redis connection keys plus `keyLayout`.

use plinth_core::{ComponentSpec, Result};

use crate::redis_client::RedisSettings;

/// Which project's Redis keys the locks use, so that Plinth and the sidecar it replaces
/// contend for the same keys during a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyLayout {
    /// Dapr's: `lock||` before the key the building block prefixed
    /// (`lock||{appId}||{resource}`, `lock||{resource}` under `keyPrefix: none`).
    Dapr,
    /// Layotto's: `lock|||` before the key the building block prefixed
    /// (`lock|||{appId}||{resource}`, `lock|||{resource}` under `keyPrefix: none`).
    Layotto,
}

impl KeyLayout {
    /// The Redis key for a key the building block prefixed.
    pub(crate) fn redis_key(self, key: &str) -> String {
        match self {
            KeyLayout::Dapr => format!("lock||{key}"),
            KeyLayout::Layotto => format!("lock|||{key}"),
        }
    }
}

/// The parsed metadata of a `lock.redis` component.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where and how to connect.
    pub(crate) redis: RedisSettings,
    /// `keyLayout`: `dapr` (default) or `layotto`.
    pub(crate) layout: KeyLayout,
}

impl Config {
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let redis = RedisSettings::from_spec(spec)?;
        let layout = spec.choice_or(
            "keyLayout",
            KeyLayout::Dapr,
            &[("dapr", KeyLayout::Dapr), ("layotto", KeyLayout::Layotto)],
        )?;
        Ok(Self { redis, layout })
    }
}
