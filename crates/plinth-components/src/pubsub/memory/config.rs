//! Metadata of `pubsub.in-memory`.

use plinth_core::{ComponentSpec, Result};

/// Component metadata: how many messages one consumer group may hold.
pub const MAX_QUEUE_LENGTH: &str = "maxQueueLength";
/// The default of [`MAX_QUEUE_LENGTH`].
pub const DEFAULT_MAX_QUEUE_LENGTH: usize = 10_000;

/// The settings of an in-memory broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InMemoryPubSubConfig {
    /// How many messages one consumer group may hold; publishing fails beyond that.
    pub max_queue_length: usize,
}

impl Default for InMemoryPubSubConfig {
    fn default() -> Self {
        Self {
            max_queue_length: DEFAULT_MAX_QUEUE_LENGTH,
        }
    }
}

impl InMemoryPubSubConfig {
    /// Read the settings from component metadata.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let max_queue_length = spec.parse_or(MAX_QUEUE_LENGTH, DEFAULT_MAX_QUEUE_LENGTH)?;
        if max_queue_length == 0 {
            return Err(spec.invalid(
                &format!("metadata.{MAX_QUEUE_LENGTH}"),
                "must be at least 1",
            ));
        }
        Ok(Self { max_queue_length })
    }
}
