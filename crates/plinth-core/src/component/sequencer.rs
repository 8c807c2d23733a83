//! Sequencers: per-key unique, increasing ids.

use async_trait::async_trait;

use super::Component;
use crate::Result;

/// A sequencer store. Keys arrive prefixed by the building block.
#[async_trait]
pub trait Sequencer: Component {
    /// The next id for `key`, strictly greater than every id issued before for that key.
    async fn next_id(&self, key: &str) -> Result<i64>;

    /// Reserve `size` consecutive ids for `key` and return the inclusive range, or `None`
    /// when the store cannot reserve ranges (the building block then calls `next_id`).
    /// Ids of a reserved range are never issued again, even if unused.
    async fn reserve(&self, _key: &str, _size: u32) -> Result<Option<(i64, i64)>> {
        Ok(None)
    }

    /// Make every future id for `key` greater than `floor` (Layotto's `biggerThan`).
    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()>;
}
