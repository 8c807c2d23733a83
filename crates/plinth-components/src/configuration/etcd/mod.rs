//! `configuration.etcd`: configuration items in etcd v3 with Layotto's layout, so Plinth and
//! Layotto can share items on the same etcd.
//!
//! Data layout: one key per item, `{keyPrefixPath}{appId}/{group}/{label}/{key}` (with the
//! default `keyPrefixPath` of `/`, Layotto's `/{appId}/{group}/{label}/{key}`), whose value
//! is the item's content. The item's version is the key's etcd `mod_revision`, which changes
//! on every write. Layotto also writes tag entries one level below an item
//! (`.../{key}/{tag}`); Plinth reads items only, skips those entries and deletes them with
//! their item. App ids, groups, labels and keys therefore must not contain `/`.
//!
//! Writes are transactions of puts (or deletes), up to [`MAX_TXN_ITEMS`] items each. Each
//! `watch` is an etcd watch on the whole `keyPrefixPath`, from the revision at which it was
//! made: on a broken stream it reconnects and resumes from the revision after the last event
//! it saw, so no change is lost; when that revision was compacted away, it sends the current
//! items of every key under the prefix instead (deletions in the gap are then not reported).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, DeleteOptions, EventType, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchStream,
};
use plinth_core::component::configuration::{
    ConfigurationChange, ConfigurationItem, ConfigurationQuery, ConfigurationStore,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};
use tokio::sync::mpsc;

use crate::etcd_conn::{EtcdConn, EtcdSettings};

#[cfg(test)]
mod tests;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "configuration.etcd";

/// Layotto's configuration root.
const DEFAULT_PREFIX: &str = "/";
/// The most items one transaction writes or reads (etcd allows 128 operations by default;
/// a delete takes two).
pub const MAX_TXN_ITEMS: usize = 50;
/// The most items a get of every key returns.
pub const MAX_ITEMS: i64 = 10_000;
/// The capacity of the channel each `watch` returns.
const WATCH_CAPACITY: usize = 256;
/// The longest wait between two attempts to re-establish a broken watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Build a `configuration.etcd` store; metadata is validated here, the connection made in
/// `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let settings = EtcdSettings::from_spec(spec, DEFAULT_PREFIX)?;
    Ok(Instance::Configuration(Arc::new(
        EtcdConfigurationStore::new(settings),
    )))
}

/// A configuration store in etcd.
#[derive(Debug)]
pub struct EtcdConfigurationStore {
    conn: Arc<EtcdConn>,
}

/// The parts of an item's path, refused when one would change the path's shape.
fn check_part(what: &str, part: &str) -> Result<()> {
    if part.contains('/') {
        return Err(Error::invalid_argument(format!(
            "configuration.etcd: the {what} {part:?} contains \"/\", which separates app id, group, label and key"
        )));
    }
    Ok(())
}

/// The etcd prefix of the items of one app, group and label.
fn dir(root: &str, app_id: &str, group: &str, label: &str) -> Result<String> {
    check_part("app id", app_id)?;
    check_part("group", group)?;
    check_part("label", label)?;
    Ok(format!("{root}{app_id}/{group}/{label}/"))
}

/// The item a key under `root` stands for, with its app id; `None` for anything that is not
/// an item (Layotto's tag entries, other data under the prefix).
fn parse(root: &str, kv: &KeyValue) -> Option<(String, ConfigurationItem)> {
    let rest = kv.key_str().ok()?.strip_prefix(root)?;
    let mut parts = rest.split('/');
    let (app, group, label, key) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || key.is_empty() {
        return None;
    }
    Some((
        app.to_owned(),
        ConfigurationItem {
            key: key.to_owned(),
            content: String::from_utf8_lossy(kv.value()).into_owned(),
            group: group.to_owned(),
            label: label.to_owned(),
            version: kv.mod_revision().to_string(),
            ..Default::default()
        },
    ))
}

/// Append `item` of `app_id` to `changes`, extending the last change when it is of the same
/// app, group, label and kind, so that a batch of events becomes as few changes as its order
/// allows while each change concerns one group and label, as a write does. A change carries
/// each item once, as it last was.
fn push(
    changes: &mut Vec<ConfigurationChange>,
    app_id: String,
    item: ConfigurationItem,
    deleted: bool,
) {
    match changes.last_mut() {
        Some(last)
            if last.app_id == app_id
                && last.deleted == deleted
                && last
                    .items
                    .first()
                    .is_some_and(|i| i.group == item.group && i.label == item.label) =>
        {
            let same = |i: &ConfigurationItem| {
                i.key == item.key && i.group == item.group && i.label == item.label
            };
            match last.items.iter_mut().find(|i| same(i)) {
                Some(earlier) => *earlier = item,
                None => last.items.push(item),
            }
        }
        _ => changes.push(ConfigurationChange {
            app_id,
            items: vec![item],
            deleted,
        }),
    }
}

impl EtcdConfigurationStore {
    fn new(settings: EtcdSettings) -> Self {
        Self {
            conn: Arc::new(EtcdConn::new(settings)),
        }
    }

    fn root(&self) -> &str {
        &self.conn.settings().key_prefix
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<etcd_client::TxnResponse> {
        let txn = Txn::new().and_then(ops);
        self.conn.run(|mut c| async move { c.txn(txn).await }).await
    }
}

#[async_trait]
impl Component for EtcdConfigurationStore {
    async fn init(&self) -> Result<()> {
        self.conn.init().await
    }

    async fn ping(&self) -> Result<()> {
        self.conn.ping().await
    }

    async fn close(&self) {
        self.conn.close().await;
    }
}

#[async_trait]
impl ConfigurationStore for EtcdConfigurationStore {
    async fn get(&self, query: &ConfigurationQuery) -> Result<Vec<ConfigurationItem>> {
        let dir = dir(self.root(), &query.app_id, &query.group, &query.label)?;
        let root = self.root().to_owned();
        if query.keys.is_empty() {
            let options = GetOptions::new().with_prefix().with_limit(MAX_ITEMS);
            let resp = self
                .conn
                .run(|mut c| async move { c.get(dir, Some(options)).await })
                .await?;
            if resp.more() {
                tracing::warn!(
                    max = MAX_ITEMS,
                    "configuration.etcd: a get of every key stopped at the limit"
                );
            }
            return Ok(resp
                .kvs()
                .iter()
                .filter_map(|kv| parse(&root, kv).map(|(_, item)| item))
                .collect());
        }
        let mut items = Vec::with_capacity(query.keys.len());
        for chunk in query.keys.chunks(MAX_TXN_ITEMS) {
            let mut ops = Vec::with_capacity(chunk.len());
            for key in chunk {
                check_part("key", key)?;
                ops.push(TxnOp::get(format!("{dir}{key}"), None));
            }
            for resp in self.txn(ops).await?.op_responses() {
                if let TxnOpResponse::Get(get) = resp {
                    items.extend(
                        get.kvs()
                            .iter()
                            .filter_map(|kv| parse(&root, kv).map(|(_, item)| item)),
                    );
                }
            }
        }
        Ok(items)
    }

    async fn set(&self, app_id: &str, items: Vec<ConfigurationItem>) -> Result<()> {
        let mut puts = Vec::with_capacity(items.len());
        for item in &items {
            if item.key.is_empty() {
                return Err(Error::invalid_argument(
                    "a configuration item has an empty key",
                ));
            }
            check_part("key", &item.key)?;
            let dir = dir(self.root(), app_id, &item.group, &item.label)?;
            puts.push((format!("{dir}{}", item.key), item.content.clone()));
        }
        for chunk in puts.chunks(MAX_TXN_ITEMS) {
            let ops = chunk
                .iter()
                .map(|(key, value)| TxnOp::put(key.as_str(), value.as_str(), None))
                .collect();
            self.txn(ops).await?;
        }
        Ok(())
    }

    async fn delete(&self, query: &ConfigurationQuery) -> Result<()> {
        let dir = dir(self.root(), &query.app_id, &query.group, &query.label)?;
        if query.keys.is_empty() {
            let options = DeleteOptions::new().with_prefix();
            self.conn
                .run(|mut c| async move { c.delete(dir, Some(options)).await })
                .await?;
            return Ok(());
        }
        for chunk in query.keys.chunks(MAX_TXN_ITEMS) {
            let mut ops = Vec::with_capacity(chunk.len() * 2);
            for key in chunk {
                check_part("key", key)?;
                // The item, and Layotto's tag entries below it.
                ops.push(TxnOp::delete(format!("{dir}{key}"), None));
                ops.push(TxnOp::delete(
                    format!("{dir}{key}/"),
                    Some(DeleteOptions::new().with_prefix()),
                ));
            }
            self.txn(ops).await?;
        }
        Ok(())
    }

    async fn watch(&self) -> Result<mpsc::Receiver<ConfigurationChange>> {
        let root = self.root().to_owned();
        let client = self.conn.client()?;
        // The revision the watch starts after: changes from then on are not missed even if
        // the stream takes a while to be established.
        let options = GetOptions::new().with_count_only();
        let key = root.clone();
        let header = self
            .conn
            .run(|mut c| async move { c.get(key, Some(options)).await })
            .await?;
        let start = header.header().map(|h| h.revision()).unwrap_or(0) + 1;
        let stream = open(&self.conn, &client, &root, start).await?;
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let watcher = Watcher {
            conn: Arc::clone(&self.conn),
            client,
            root,
            next: start,
            tx,
        };
        tokio::spawn(watcher.run(stream));
        Ok(rx)
    }
}

/// Open a watch on every key under `root` from revision `from`, bounded by the call timeout.
async fn open(conn: &EtcdConn, client: &Client, root: &str, from: i64) -> Result<WatchStream> {
    let mut client = client.clone();
    let options = WatchOptions::new().with_prefix().with_start_revision(from);
    let watch = client.watch(root, Some(options));
    match tokio::time::timeout(conn.settings().timeout, watch).await {
        Ok(result) => result.map_err(|e| conn.error(e)),
        Err(_) => Err(conn.timed_out()),
    }
}

/// One `watch`: feeds its channel until the receiver is dropped.
struct Watcher {
    conn: Arc<EtcdConn>,
    client: Client,
    root: String,
    /// The revision to resume from.
    next: i64,
    tx: mpsc::Sender<ConfigurationChange>,
}

/// Why a watch stream stopped.
enum Stop {
    /// The receiver is gone.
    Closed,
    /// The stream broke or ended; resume from `next`.
    Broken,
    /// `next` was compacted away.
    Compacted,
}

impl Watcher {
    async fn run(mut self, mut stream: WatchStream) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow(&mut stream).await {
                Stop::Closed => return,
                Stop::Broken => {}
                Stop::Compacted => {
                    tracing::warn!(
                        revision = self.next,
                        "configuration.etcd: the watch fell behind a compaction; sending every current item"
                    );
                    if !self.resync().await {
                        return;
                    }
                }
            }
            // Re-establish, with backoff, until it works or the receiver is gone.
            loop {
                tokio::select! {
                    _ = self.tx.closed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                match open(&self.conn, &self.client, &self.root, self.next).await {
                    Ok(s) => {
                        stream = s;
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "configuration.etcd: re-establishing the watch failed");
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }

    /// Forward the events of `stream` until it stops.
    async fn follow(&mut self, stream: &mut WatchStream) -> Stop {
        loop {
            let message = tokio::select! {
                _ = self.tx.closed() => return Stop::Closed,
                message = stream.message() => message,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    tracing::warn!("configuration.etcd: the watch stream ended; resuming");
                    return Stop::Broken;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "configuration.etcd: the watch stream broke; resuming");
                    return Stop::Broken;
                }
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return Stop::Compacted;
                }
                tracing::warn!(
                    reason = resp.cancel_reason(),
                    "configuration.etcd: etcd cancelled the watch; resuming"
                );
                return Stop::Broken;
            }
            let mut changes = Vec::new();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                self.next = self.next.max(kv.mod_revision() + 1);
                let Some((app_id, mut item)) = parse(&self.root, kv) else {
                    continue;
                };
                let deleted = event.event_type() == EventType::Delete;
                if deleted {
                    item.content.clear();
                }
                push(&mut changes, app_id, item, deleted);
            }
            for change in changes {
                if self.tx.send(change).await.is_err() {
                    return Stop::Closed;
                }
            }
        }
    }

    /// Send every current item under the root, and resume after the revision read. Whether
    /// the receiver is still there.
    async fn resync(&mut self) -> bool {
        loop {
            let root = self.root.clone();
            let mut client = self.client.clone();
            let read = async move {
                client
                    .get(
                        root,
                        Some(GetOptions::new().with_prefix().with_limit(MAX_ITEMS)),
                    )
                    .await
            };
            let resp = match tokio::time::timeout(self.conn.settings().timeout, read).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "configuration.etcd: re-reading every item failed");
                    tokio::select! {
                        _ = self.tx.closed() => return false,
                        _ = tokio::time::sleep(MAX_BACKOFF) => continue,
                    }
                }
                Err(_) => continue,
            };
            let mut changes = Vec::new();
            for kv in resp.kvs() {
                if let Some((app_id, item)) = parse(&self.root, kv) {
                    push(&mut changes, app_id, item, false);
                }
            }
            self.next = resp.header().map(|h| h.revision()).unwrap_or(self.next - 1) + 1;
            for change in changes {
                if self.tx.send(change).await.is_err() {
                    return false;
                }
            }
            return true;
        }
    }
}
