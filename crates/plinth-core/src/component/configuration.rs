//! Configuration stores: one item model for Layotto (key, content, group, label, tags) and
//! Dapr (key, value, version, metadata).

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::Component;
use crate::{Error, Metadata, Result};

/// One configuration item. Its identity is (app id, group, label, key); Dapr's API leaves
/// group and label empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigurationItem {
    /// The key.
    pub key: String,
    /// The value (Layotto's `content`, Dapr's `value`).
    pub content: String,
    /// Layotto's group; empty for Dapr.
    pub group: String,
    /// Layotto's label; empty for Dapr.
    pub label: String,
    /// Layotto's tags.
    pub tags: HashMap<String, String>,
    /// Item metadata.
    pub metadata: Metadata,
    /// The version the store assigned; changes on every write.
    pub version: String,
}

/// Which items a get or subscribe covers.
#[derive(Debug, Clone, Default)]
pub struct ConfigurationQuery {
    /// The app the items belong to.
    pub app_id: String,
    /// Group filter.
    pub group: String,
    /// Label filter.
    pub label: String,
    /// Keys; empty means every key.
    pub keys: Vec<String>,
    /// Request metadata.
    pub metadata: Metadata,
}

impl ConfigurationQuery {
    /// Whether an item of `app_id` falls under this query. An empty `app_id` means the
    /// writer is unknown (a change made directly in the backend, e.g. by a Dapr-style
    /// trigger): stores without app ids in their layout share items between apps, so such a
    /// change concerns every app.
    pub fn matches(&self, app_id: &str, item: &ConfigurationItem) -> bool {
        (app_id.is_empty() || app_id == self.app_id)
            && item.group == self.group
            && item.label == self.label
            && (self.keys.is_empty() || self.keys.contains(&item.key))
    }
}

/// A change pushed to subscribers: the items as they now are; `app_id` empty when the
/// store cannot tell which app wrote them. A deleted item is reported
/// with `deleted` set and empty content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigurationChange {
    /// The app the items belong to.
    pub app_id: String,
    /// The changed items.
    pub items: Vec<ConfigurationItem>,
    /// Whether the items were deleted.
    pub deleted: bool,
}

/// A configuration store.
#[async_trait]
pub trait ConfigurationStore: Component {
    /// Items matching the query; an empty key list means every item of the group and label.
    async fn get(&self, query: &ConfigurationQuery) -> Result<Vec<ConfigurationItem>>;

    /// Create or replace items.
    async fn set(&self, _app_id: &str, _items: Vec<ConfigurationItem>) -> Result<()> {
        Err(Error::unimplemented(
            "this configuration store is read-only",
        ))
    }

    /// Delete items by key under a group and label.
    async fn delete(&self, _query: &ConfigurationQuery) -> Result<()> {
        Err(Error::unimplemented(
            "this configuration store is read-only",
        ))
    }

    /// A stream of every change in the store, fed until the receiver is dropped. The building
    /// block filters it per subscriber. A bounded channel: when a subscriber lags, the store
    /// may drop changes but must then send a change carrying the current items of every
    /// affected key, so that subscribers converge.
    async fn watch(&self) -> Result<mpsc::Receiver<ConfigurationChange>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_without_an_app_concerns_every_app() {
        let query = ConfigurationQuery {
            app_id: "a".into(),
            ..Default::default()
        };
        let item = ConfigurationItem::default();
        assert!(query.matches("a", &item));
        assert!(query.matches("", &item), "writer unknown");
        assert!(!query.matches("b", &item), "another app's item");
    }
}
