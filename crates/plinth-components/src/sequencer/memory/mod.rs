//! `sequencer.in-memory`: per-key counters in the process's memory.
//!
//! Data layout: one map from key to the last id issued (0 before the first) behind a mutex.
//! Ids restart when the process does, so this store suits tests and single-process use.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plinth_core::component::sequencer::Sequencer;
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};

use crate::util::lock;

#[cfg(test)]
mod tests;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "sequencer.in-memory";

/// Build a `sequencer.in-memory` store; it takes no metadata.
pub fn factory(_spec: &ComponentSpec) -> Result<Instance> {
    Ok(Instance::Sequencer(Arc::new(InMemorySequencer::new())))
}

/// A sequencer in memory.
#[derive(Default)]
pub struct InMemorySequencer {
    last: Mutex<HashMap<String, i64>>,
}

impl fmt::Debug for InMemorySequencer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemorySequencer")
            .field("keys", &lock(&self.last).len())
            .finish()
    }
}

impl InMemorySequencer {
    /// A sequencer with no keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Advance `key` by `size` and return the inclusive range of new ids.
    fn advance(&self, key: &str, size: i64) -> Result<(i64, i64)> {
        let mut last = lock(&self.last);
        let current = last.get(key).copied().unwrap_or(0);
        let end = current.checked_add(size).ok_or_else(|| {
            Error::resource_exhausted(format!("sequencer key {key:?} has run out of ids"))
        })?;
        last.insert(key.to_owned(), end);
        Ok((current + 1, end))
    }
}

#[async_trait]
impl Component for InMemorySequencer {
    /// Its metadata is read by the building block (`keyPrefix`, ...), so new metadata
    /// changes nothing here, and the data is kept.
    async fn reconfigure(&self, _spec: &plinth_core::ComponentSpec) -> Result<bool> {
        Ok(true)
    }
}

#[async_trait]
impl Sequencer for InMemorySequencer {
    async fn next_id(&self, key: &str) -> Result<i64> {
        self.advance(key, 1).map(|(id, _)| id)
    }

    async fn reserve(&self, key: &str, size: u32) -> Result<Option<(i64, i64)>> {
        if size == 0 {
            return Err(Error::invalid_argument("cannot reserve 0 ids"));
        }
        self.advance(key, i64::from(size)).map(Some)
    }

    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()> {
        let mut last = lock(&self.last);
        let current = last.entry(key.to_owned()).or_insert(0);
        *current = (*current).max(floor);
        Ok(())
    }
}
