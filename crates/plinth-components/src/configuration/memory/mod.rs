//! `configuration.in-memory`: configuration items in the process's memory.
//!
//! Data layout: items keyed by (app id, group, label, key) behind a mutex, each with a
//! version drawn from one counter for the whole store, and a bounded list of recent
//! deletions (tombstones). Every write publishes a change on a broadcast channel while the
//! lock is held, so changes go out in version order. Each `watch` forwards that channel into
//! its own bounded channel; a watcher that falls behind is sent, instead of the changes it
//! missed, every item written and every tombstone recorded since the last change it got.
//!
//! Only the newest [`MAX_TOMBSTONES`] deletions are remembered: a watcher that falls behind
//! by more deletions than that is not told of the older ones.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plinth_core::component::configuration::{
    ConfigurationChange, ConfigurationItem, ConfigurationQuery, ConfigurationStore,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use crate::util::lock;

#[cfg(test)]
mod tests;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "configuration.in-memory";

/// How many changes the broadcast channel keeps for watchers that are behind.
const BROADCAST_CAPACITY: usize = 1024;
/// The capacity of the channel each `watch` returns.
const WATCH_CAPACITY: usize = 256;
/// How many deletions are remembered for watchers that fell behind.
pub const MAX_TOMBSTONES: usize = 4096;

/// Build a `configuration.in-memory` store; it takes no metadata.
pub fn factory(_spec: &ComponentSpec) -> Result<Instance> {
    Ok(Instance::Configuration(Arc::new(
        InMemoryConfigurationStore::new(),
    )))
}

/// A configuration store in memory that pushes every change to its watchers.
pub struct InMemoryConfigurationStore {
    items: Arc<Mutex<Items>>,
    changes: broadcast::Sender<Arc<Versioned>>,
}

impl fmt::Debug for InMemoryConfigurationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items = lock(&self.items);
        f.debug_struct("InMemoryConfigurationStore")
            .field("items", &items.current.len())
            .field("version", &items.version)
            .field("watchers", &self.changes.receiver_count())
            .finish()
    }
}

impl Default for InMemoryConfigurationStore {
    fn default() -> Self {
        Self::new()
    }
}

/// (app id, group, label, key)
type ItemId = (String, String, String, String);

fn item_id(app_id: &str, item: &ConfigurationItem) -> ItemId {
    (
        app_id.to_owned(),
        item.group.clone(),
        item.label.clone(),
        item.key.clone(),
    )
}

/// A change with the highest version it carries.
#[derive(Debug)]
struct Versioned {
    version: u64,
    change: ConfigurationChange,
}

#[derive(Debug)]
struct Stored {
    version: u64,
    item: ConfigurationItem,
}

#[derive(Debug)]
struct Tombstone {
    version: u64,
    app_id: String,
    item: ConfigurationItem,
}

#[derive(Debug, Default)]
struct Items {
    current: BTreeMap<ItemId, Stored>,
    /// Deletions in version order, oldest first.
    tombstones: VecDeque<Tombstone>,
    /// The version of the newest deletion no longer remembered.
    forgotten: u64,
    version: u64,
}

impl Items {
    fn next_version(&mut self) -> Result<u64> {
        self.version = self.version.checked_add(1).ok_or_else(|| {
            Error::resource_exhausted("the configuration store's version counter is exhausted")
        })?;
        Ok(self.version)
    }

    fn remember_deletion(&mut self, tombstone: Tombstone) {
        self.tombstones.push_back(tombstone);
        while self.tombstones.len() > MAX_TOMBSTONES {
            if let Some(old) = self.tombstones.pop_front() {
                self.forgotten = old.version;
            }
        }
    }

    /// What a watcher that last saw `since` needs to catch up: deletions first, then items,
    /// one change per app; and the version it is then at.
    fn changes_since(&self, since: u64) -> (Vec<ConfigurationChange>, u64) {
        if since < self.forgotten {
            tracing::warn!(
                since,
                forgotten = self.forgotten,
                "a configuration watcher fell behind by more deletions than are remembered"
            );
        }
        let mut deleted: BTreeMap<&str, Vec<ConfigurationItem>> = BTreeMap::new();
        for tomb in self.tombstones.iter().filter(|t| t.version > since) {
            deleted
                .entry(tomb.app_id.as_str())
                .or_default()
                .push(tomb.item.clone());
        }
        let mut written: BTreeMap<&str, Vec<ConfigurationItem>> = BTreeMap::new();
        for ((app_id, ..), stored) in self.current.iter().filter(|(_, s)| s.version > since) {
            written
                .entry(app_id.as_str())
                .or_default()
                .push(stored.item.clone());
        }
        let change = |deleted: bool| {
            move |(app_id, items): (&str, Vec<ConfigurationItem>)| ConfigurationChange {
                app_id: app_id.to_owned(),
                items,
                deleted,
            }
        };
        let changes = deleted
            .into_iter()
            .map(change(true))
            .chain(written.into_iter().map(change(false)));
        (changes.collect(), self.version)
    }
}

impl InMemoryConfigurationStore {
    /// An empty store.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            items: Arc::default(),
            changes,
        }
    }

    fn publish(&self, version: u64, change: ConfigurationChange) {
        // No receiver means no watcher, which is not an error.
        let _ = self.changes.send(Arc::new(Versioned { version, change }));
    }
}

/// Forward changes to one watcher until it drops its receiver or the store goes away.
async fn forward(
    items: Arc<Mutex<Items>>,
    mut changes: broadcast::Receiver<Arc<Versioned>>,
    tx: mpsc::Sender<ConfigurationChange>,
    mut seen: u64,
) {
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            next = changes.recv() => next,
        };
        let batch = match next {
            // After a catch-up, the channel still holds changes the catch-up covered.
            Ok(versioned) if versioned.version <= seen => continue,
            Ok(versioned) => {
                seen = versioned.version;
                vec![versioned.change.clone()]
            }
            Err(RecvError::Lagged(_)) => {
                let (batch, version) = lock(&items).changes_since(seen);
                seen = version;
                batch
            }
            Err(RecvError::Closed) => return,
        };
        for change in batch {
            if tx.send(change).await.is_err() {
                return;
            }
        }
    }
}

#[async_trait]
impl Component for InMemoryConfigurationStore {
    /// Its metadata is read by the building block (`keyPrefix`, ...), so new metadata
    /// changes nothing here, and the data is kept.
    async fn reconfigure(&self, _spec: &plinth_core::ComponentSpec) -> Result<bool> {
        Ok(true)
    }
}

#[async_trait]
impl ConfigurationStore for InMemoryConfigurationStore {
    async fn get(&self, query: &ConfigurationQuery) -> Result<Vec<ConfigurationItem>> {
        let items = lock(&self.items);
        Ok(items
            .current
            .iter()
            .filter(|((app_id, ..), stored)| query.matches(app_id, &stored.item))
            .map(|(_, stored)| stored.item.clone())
            .collect())
    }

    async fn set(&self, app_id: &str, new_items: Vec<ConfigurationItem>) -> Result<()> {
        if new_items.iter().any(|item| item.key.is_empty()) {
            return Err(Error::invalid_argument(
                "a configuration item has an empty key",
            ));
        }
        if new_items.is_empty() {
            return Ok(());
        }
        let mut items = lock(&self.items);
        let mut changed = Vec::with_capacity(new_items.len());
        for mut item in new_items {
            let version = items.next_version()?;
            item.version = version.to_string();
            changed.push(item.clone());
            items
                .current
                .insert(item_id(app_id, &item), Stored { version, item });
        }
        let change = ConfigurationChange {
            app_id: app_id.to_owned(),
            items: changed,
            deleted: false,
        };
        self.publish(items.version, change);
        Ok(())
    }

    async fn delete(&self, query: &ConfigurationQuery) -> Result<()> {
        let mut items = lock(&self.items);
        let doomed: Vec<ItemId> = items
            .current
            .iter()
            .filter(|((app_id, ..), stored)| query.matches(app_id, &stored.item))
            .map(|(id, _)| id.clone())
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let mut deleted = Vec::with_capacity(doomed.len());
        for id in doomed {
            if items.current.remove(&id).is_none() {
                continue;
            }
            let version = items.next_version()?;
            let (app_id, group, label, key) = id;
            let item = ConfigurationItem {
                key,
                group,
                label,
                version: version.to_string(),
                ..Default::default()
            };
            deleted.push(item.clone());
            items.remember_deletion(Tombstone {
                version,
                app_id,
                item,
            });
        }
        let change = ConfigurationChange {
            app_id: query.app_id.clone(),
            items: deleted,
            deleted: true,
        };
        self.publish(items.version, change);
        Ok(())
    }

    async fn watch(&self) -> Result<mpsc::Receiver<ConfigurationChange>> {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        // Subscribing under the lock pins down which changes the new watcher will receive.
        let (changes, seen) = {
            let items = lock(&self.items);
            (self.changes.subscribe(), items.version)
        };
        tokio::spawn(forward(Arc::clone(&self.items), changes, tx, seen));
        Ok(rx)
    }
}
