//! State stores: key/value with ETags, bulk operations, transactions and TTL.

use async_trait::async_trait;
use bytes::Bytes;

use super::Component;
use crate::{Error, Metadata, Result};

pub mod query;

pub use query::{Query, QueryItem, QueryRequest, QueryResponse};

/// What a state store can do beyond get/set/delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateFeatures {
    /// Optimistic concurrency with ETags.
    pub etag: bool,
    /// Atomic multi-key transactions.
    pub transactional: bool,
    /// Per-key expiry through `ttlInSeconds`.
    pub ttl: bool,
    /// The state query language ([`StateStore::query`]).
    pub query: bool,
}

/// Concurrency mode of a write (Dapr's and Layotto's `StateOptions.concurrency`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// The store's default, which is last-write.
    #[default]
    Unspecified,
    /// The write succeeds only if the ETag matches, or the key is new when none is given.
    FirstWrite,
    /// The write succeeds unless an ETag is given and does not match.
    LastWrite,
}

/// Consistency asked for a read or write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// The store's default.
    #[default]
    Unspecified,
    /// Eventual.
    Eventual,
    /// Strong.
    Strong,
}

/// Options on a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateOptions {
    /// First-write or last-write.
    pub concurrency: Concurrency,
    /// Eventual or strong.
    pub consistency: Consistency,
}

/// Read one key.
#[derive(Debug, Clone, Default)]
pub struct GetRequest {
    /// The key, already prefixed by the building block.
    pub key: String,
    /// Request metadata.
    pub metadata: Metadata,
    /// Consistency asked for.
    pub consistency: Consistency,
}

/// A stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetResponse {
    /// The value's bytes.
    pub data: Bytes,
    /// The current ETag, when the store has ETags.
    pub etag: Option<String>,
    /// Response metadata, such as `ttlExpireTime`.
    pub metadata: Metadata,
    /// The content type the value was saved with, when the store keeps it.
    pub content_type: Option<String>,
}

/// Write one key.
#[derive(Debug, Clone, Default)]
pub struct SetRequest {
    /// The key, already prefixed.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// The expected current ETag, if any.
    pub etag: Option<String>,
    /// Request metadata (`ttlInSeconds`, `contentType`).
    pub metadata: Metadata,
    /// Concurrency and consistency.
    pub options: StateOptions,
}

/// Delete one key.
#[derive(Debug, Clone, Default)]
pub struct DeleteRequest {
    /// The key, already prefixed.
    pub key: String,
    /// The expected current ETag, if any.
    pub etag: Option<String>,
    /// Request metadata.
    pub metadata: Metadata,
    /// Concurrency and consistency.
    pub options: StateOptions,
}

/// One result of a bulk get.
#[derive(Debug, Clone)]
pub struct BulkGetItem {
    /// The key as asked (prefixed).
    pub key: String,
    /// The value, absent when the key does not exist.
    pub value: Option<GetResponse>,
    /// A per-key error; bulk get reports errors per item rather than failing the call.
    pub error: Option<String>,
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub enum TransactionOp {
    /// Insert or update.
    Upsert(SetRequest),
    /// Delete.
    Delete(DeleteRequest),
}

impl TransactionOp {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            TransactionOp::Upsert(r) => &r.key,
            TransactionOp::Delete(r) => &r.key,
        }
    }
}

/// A state store.
#[async_trait]
pub trait StateStore: Component {
    /// What the store supports.
    fn features(&self) -> StateFeatures;

    /// Read a key; `None` when it does not exist (or has expired).
    async fn get(&self, req: GetRequest) -> Result<Option<GetResponse>>;

    /// Write a key, honouring ETag, concurrency and TTL.
    async fn set(&self, req: SetRequest) -> Result<()>;

    /// Delete a key, honouring ETag and concurrency. Deleting a missing key without an
    /// ETag succeeds.
    async fn delete(&self, req: DeleteRequest) -> Result<()>;

    /// Read many keys. The default reads them one by one.
    async fn bulk_get(&self, keys: Vec<String>, metadata: Metadata) -> Result<Vec<BulkGetItem>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let req = GetRequest {
                key: key.clone(),
                metadata: metadata.clone(),
                ..Default::default()
            };
            match self.get(req).await {
                Ok(value) => out.push(BulkGetItem {
                    key,
                    value,
                    error: None,
                }),
                Err(err) => out.push(BulkGetItem {
                    key,
                    value: None,
                    error: Some(err.to_string()),
                }),
            }
        }
        Ok(out)
    }

    /// Write many keys. Each write is independent; the error names every key that failed.
    async fn bulk_set(&self, reqs: Vec<SetRequest>) -> Result<()> {
        let mut failures = Vec::new();
        for req in reqs {
            let key = req.key.clone();
            if let Err(err) = self.set(req).await {
                failures.push((key, err));
            }
        }
        bulk_result(failures)
    }

    /// Delete many keys; the error names every key that failed.
    async fn bulk_delete(&self, reqs: Vec<DeleteRequest>) -> Result<()> {
        let mut failures = Vec::new();
        for req in reqs {
            let key = req.key.clone();
            if let Err(err) = self.delete(req).await {
                failures.push((key, err));
            }
        }
        bulk_result(failures)
    }

    /// Apply operations atomically and in order: all or nothing.
    async fn transact(&self, _ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<()> {
        Err(Error::unimplemented(
            "this state store does not support transactions",
        ))
    }

    /// Run a query over the JSON values whose keys start with `req.key_prefix`; only
    /// stores with the `query` feature implement it. Expired values never appear.
    async fn query(&self, _req: QueryRequest) -> Result<QueryResponse> {
        Err(Error::unimplemented(
            "this state store does not support querying",
        ))
    }
}

/// Fold per-key failures of a bulk write into one error naming the keys. The first failure's
/// kind wins, so a single ETag mismatch still maps to ABORTED / 409.
pub fn bulk_result(failures: Vec<(String, Error)>) -> Result<()> {
    let Some((_, first)) = failures.first() else {
        return Ok(());
    };
    let kind = first.kind();
    let detail: Vec<String> = failures
        .iter()
        .map(|(k, e)| format!("key {k:?}: {e}"))
        .collect();
    Err(Error::new(
        kind,
        format!(
            "bulk operation failed for {} key(s): {}",
            failures.len(),
            detail.join("; ")
        ),
    ))
}

/// The ETag rules every store applies, given the key's current ETag (`None` when the key does
/// not exist), the ETag the caller sent, and the concurrency mode. Stores call this inside
/// their atomic section (a lock, a Lua script, a row lock), then write.
///
/// - An ETag given for a key that does not exist, or that differs, is a mismatch.
/// - First-write without an ETag requires the key not to exist.
/// - Last-write without an ETag always writes.
pub fn check_etag(
    current: Option<&str>,
    requested: Option<&str>,
    concurrency: Concurrency,
) -> Result<()> {
    match (requested.filter(|e| !e.is_empty()), current) {
        (Some(want), Some(have)) if want == have => Ok(()),
        (Some(want), Some(_)) => Err(Error::etag_mismatch(format!(
            "etag {want:?} does not match the stored etag"
        ))),
        (Some(want), None) => Err(Error::etag_mismatch(format!(
            "etag {want:?} given for a key that does not exist"
        ))),
        (None, Some(_)) if concurrency == Concurrency::FirstWrite => Err(Error::etag_mismatch(
            "first-write concurrency: the key already exists and no etag was given",
        )),
        (None, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn etag_rules() {
        let lw = Concurrency::LastWrite;
        let fw = Concurrency::FirstWrite;
        assert!(check_etag(None, None, lw).is_ok());
        assert!(check_etag(Some("1"), None, lw).is_ok());
        assert!(check_etag(Some("1"), Some("1"), fw).is_ok());
        assert!(check_etag(None, None, fw).is_ok());
        let mismatch = |r: Result<()>| r.err().map(|e| e.kind()) == Some(ErrorKind::EtagMismatch);
        assert!(mismatch(check_etag(Some("1"), None, fw)));
        assert!(mismatch(check_etag(Some("2"), Some("1"), lw)));
        assert!(mismatch(check_etag(None, Some("1"), lw)));
    }
}
