//! `state.in-memory`: a state store in the process's memory.
//!
//! Data layout: one map from key to entry (bytes, version, expiry, content type) behind a
//! mutex that is never held across an await. ETags are decimal version numbers drawn from
//! one counter for the whole store, so a key deleted and written again never gets back an
//! ETag it had before. Expired keys read as absent; they are removed when touched and by a
//! sweep task that `init` starts.
//!
//! Queries scan every key under the caller's prefix, parse each value as JSON (values that
//! are not JSON never match) and filter and sort in memory: fine for the data sizes an
//! in-memory store holds. Without sort keys, results are in key order. Page tokens are the
//! decimal offset of the next result in that order.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use plinth_core::component::state::{
    Concurrency, DeleteRequest, GetRequest, GetResponse, QueryItem, QueryRequest, QueryResponse,
    SetRequest, StateFeatures, StateStore, TransactionOp, check_etag,
};
use plinth_core::component::{Component, Instance};
use plinth_core::metadata::{TTL_EXPIRE_TIME, Ttl, parse_ttl};
use plinth_core::{ComponentSpec, Error, Metadata, Result};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::util::{lock, rfc3339};

#[cfg(test)]
mod tests;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "state.in-memory";

/// The request metadata key whose value is kept as the value's content type.
const CONTENT_TYPE: &str = "contentType";

/// How often the sweep task removes expired keys nobody reads.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Build a `state.in-memory` store; it takes no metadata.
pub fn factory(_spec: &ComponentSpec) -> Result<Instance> {
    Ok(Instance::State(Arc::new(InMemoryStateStore::new())))
}

/// A state store in memory with ETags, transactions and TTLs.
pub struct InMemoryStateStore {
    table: Arc<Mutex<Table>>,
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for InMemoryStateStore {
    // Values are app data: show only how many keys there are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryStateStore")
            .field("keys", &lock(&self.table).entries.len())
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryStateStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InMemoryStateStore {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.sweeper).take() {
            handle.abort();
        }
    }
}

/// One stored value.
#[derive(Debug, Clone)]
struct Entry {
    data: Bytes,
    version: u64,
    expiry: Option<Expiry>,
    content_type: Option<String>,
}

/// When a value expires: the monotonic instant decides, the wall-clock time is reported.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    at: Instant,
    wall: DateTime<Utc>,
}

impl Entry {
    fn is_expired(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|e| e.at <= now)
    }

    fn etag(&self) -> String {
        self.version.to_string()
    }
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<String, Entry>,
    last_version: u64,
}

impl Table {
    /// The live entry for a key, removing it first if it has expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<&Entry> {
        if self.entries.get(key).is_some_and(|e| e.is_expired(now)) {
            self.entries.remove(key);
        }
        self.entries.get(key)
    }

    fn purge_expired(&mut self, now: Instant) {
        self.entries.retain(|_, e| !e.is_expired(now));
    }

    /// Check every operation against the state as the earlier ones leave it, then apply
    /// them all, or none when one fails.
    fn apply(&mut self, ops: Vec<Write>, now: Instant) -> Result<()> {
        // Only the final state of each touched key matters once every check has passed.
        let mut staged: HashMap<String, Option<Entry>> = HashMap::new();
        let mut version = self.last_version;
        let many = ops.len() > 1;
        for (index, op) in ops.into_iter().enumerate() {
            let current = match staged.get(&op.key) {
                Some(staged) => staged.as_ref(),
                None => self.entries.get(&op.key).filter(|e| !e.is_expired(now)),
            };
            let current = current.map(Entry::etag);
            check_etag(current.as_deref(), op.etag.as_deref(), op.concurrency).map_err(|err| {
                if many {
                    err.context(format!("operation {index} (key {:?})", op.key))
                } else {
                    err
                }
            })?;
            let next = match op.value {
                Some(value) => {
                    version = version.checked_add(1).ok_or_else(|| {
                        Error::resource_exhausted("the store's version counter is exhausted")
                    })?;
                    Some(Entry {
                        data: value.data,
                        version,
                        expiry: value.expiry,
                        content_type: value.content_type,
                    })
                }
                None => None,
            };
            staged.insert(op.key, next);
        }
        self.last_version = version;
        for (key, next) in staged {
            match next {
                Some(entry) => self.entries.insert(key, entry),
                None => self.entries.remove(&key),
            };
        }
        Ok(())
    }
}

/// A write checked against the request alone, ready to be applied under the lock.
#[derive(Debug)]
struct Write {
    key: String,
    etag: Option<String>,
    concurrency: Concurrency,
    /// `None` deletes the key.
    value: Option<NewValue>,
}

#[derive(Debug)]
struct NewValue {
    data: Bytes,
    expiry: Option<Expiry>,
    content_type: Option<String>,
}

impl Write {
    fn upsert(req: SetRequest, now: Instant) -> Result<Self> {
        let expiry = match parse_ttl(&req.metadata)? {
            Some(Ttl::After(ttl)) => Some(expiry_after(ttl, now)?),
            Some(Ttl::Never) | None => None,
        };
        let content_type = req
            .metadata
            .get(CONTENT_TYPE)
            .filter(|c| !c.is_empty())
            .cloned();
        Ok(Self {
            etag: valid_etag(req.etag)?,
            key: valid_key(req.key)?,
            concurrency: req.options.concurrency,
            value: Some(NewValue {
                data: req.value,
                expiry,
                content_type,
            }),
        })
    }

    fn delete(req: DeleteRequest) -> Result<Self> {
        Ok(Self {
            etag: valid_etag(req.etag)?,
            key: valid_key(req.key)?,
            concurrency: req.options.concurrency,
            value: None,
        })
    }
}

fn valid_key(key: String) -> Result<String> {
    if key.is_empty() {
        return Err(Error::invalid_argument("the key is empty"));
    }
    Ok(key)
}

/// This store only ever issues decimal numbers, so anything else cannot be one of its ETags.
fn valid_etag(etag: Option<String>) -> Result<Option<String>> {
    match etag.filter(|e| !e.is_empty()) {
        Some(e) if !e.bytes().all(|b| b.is_ascii_digit()) => Err(Error::etag_invalid(format!(
            "etag {e:?} is not a decimal version number"
        ))),
        etag => Ok(etag),
    }
}

/// A page token is the offset of the next result, as this store issued it.
fn parse_token(token: &str) -> Result<usize> {
    token
        .parse::<usize>()
        .ok()
        .filter(|_| token.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            Error::invalid_argument(format!(
                "invalid query: page.token: {token:?} is not a token this store issued"
            ))
        })
}

fn expiry_after(ttl: Duration, now: Instant) -> Result<Expiry> {
    let too_long = || Error::invalid_argument(format!("a ttl of {}s is too long", ttl.as_secs()));
    let at = now.checked_add(ttl).ok_or_else(too_long)?;
    let wall = TimeDelta::from_std(ttl)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .ok_or_else(too_long)?;
    Ok(Expiry { at, wall })
}

/// Remove expired keys every `every` until the table is gone.
async fn sweep(table: Weak<Mutex<Table>>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(table) = table.upgrade() else {
            return;
        };
        lock(&table).purge_expired(Instant::now());
    }
}

impl InMemoryStateStore {
    /// An empty store. Call `init` to start the sweep of expired keys.
    pub fn new() -> Self {
        Self {
            table: Arc::default(),
            sweeper: Mutex::new(None),
        }
    }

    fn apply(&self, ops: Vec<Write>) -> Result<()> {
        lock(&self.table).apply(ops, Instant::now())
    }
}

#[async_trait]
impl Component for InMemoryStateStore {
    /// Its metadata is read by the building block (`keyPrefix`, ...), so new metadata
    /// changes nothing here, and the data is kept.
    async fn reconfigure(&self, _spec: &plinth_core::ComponentSpec) -> Result<bool> {
        Ok(true)
    }
    async fn init(&self) -> Result<()> {
        let mut sweeper = lock(&self.sweeper);
        if sweeper.is_none() {
            // A weak reference, so that a store dropped without `close` still ends the task.
            let table = Arc::downgrade(&self.table);
            *sweeper = Some(tokio::spawn(sweep(table, SWEEP_INTERVAL)));
        }
        Ok(())
    }

    async fn close(&self) {
        if let Some(handle) = lock(&self.sweeper).take() {
            handle.abort();
        }
    }
}

#[async_trait]
impl StateStore for InMemoryStateStore {
    fn features(&self) -> StateFeatures {
        StateFeatures {
            etag: true,
            transactional: true,
            ttl: true,
            query: true,
        }
    }

    async fn get(&self, req: GetRequest) -> Result<Option<GetResponse>> {
        let mut table = lock(&self.table);
        let Some(entry) = table.live(&req.key, Instant::now()) else {
            return Ok(None);
        };
        let mut metadata = Metadata::new();
        if let Some(expiry) = entry.expiry {
            metadata.insert(TTL_EXPIRE_TIME.to_owned(), rfc3339(expiry.wall));
        }
        Ok(Some(GetResponse {
            data: entry.data.clone(),
            etag: Some(entry.etag()),
            metadata,
            content_type: entry.content_type.clone(),
        }))
    }

    async fn set(&self, req: SetRequest) -> Result<()> {
        let write = Write::upsert(req, Instant::now())?;
        self.apply(vec![write])
    }

    async fn delete(&self, req: DeleteRequest) -> Result<()> {
        let write = Write::delete(req)?;
        self.apply(vec![write])
    }

    async fn query(&self, req: QueryRequest) -> Result<QueryResponse> {
        let offset = match req.query.page.token.as_deref() {
            None => 0,
            Some(token) => parse_token(token)?,
        };
        let now = Instant::now();
        // Copy out under the lock (the values are reference-counted), parse outside it.
        let candidates: Vec<(String, Entry)> = lock(&self.table)
            .entries
            .iter()
            .filter(|(key, entry)| key.starts_with(&req.key_prefix) && !entry.is_expired(now))
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect();
        let query = &req.query;
        let mut matched: Vec<(String, serde_json::Value, Entry)> = candidates
            .into_iter()
            .filter_map(|(key, entry)| {
                let doc = serde_json::from_slice(&entry.data).ok()?;
                query.matches(&doc).then_some((key, doc, entry))
            })
            .collect();
        matched.sort_by(|a, b| query.compare((&a.0, &a.1), (&b.0, &b.1)));
        let total = matched.len();
        let start = offset.min(total);
        let end = match query.page.limit {
            Some(limit) => start.saturating_add(limit.get()).min(total),
            None => total,
        };
        let results = matched
            .drain(start..end)
            .map(|(key, _, entry)| QueryItem {
                etag: Some(entry.etag()),
                key,
                data: entry.data,
                error: None,
            })
            .collect();
        Ok(QueryResponse {
            results,
            token: (end < total).then(|| end.to_string()),
            metadata: Metadata::new(),
        })
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<()> {
        let now = Instant::now();
        let writes = ops
            .into_iter()
            .enumerate()
            .map(|(index, op)| {
                let key = op.key().to_owned();
                match op {
                    TransactionOp::Upsert(req) => Write::upsert(req, now),
                    TransactionOp::Delete(req) => Write::delete(req),
                }
                .map_err(|err| err.context(format!("operation {index} (key {key:?})")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.apply(writes)
    }
}
