//! The state building block: validation, key prefixing and capability checks in front of
//! every state store, and the state query language ([`query`]).

pub mod query;

use std::sync::Arc;

use plinth_core::component::state::{
    BulkGetItem, Consistency, DeleteRequest, GetRequest, GetResponse, QueryRequest, QueryResponse,
    SetRequest, StateStore, TransactionOp,
};
use plinth_core::metadata::parse_ttl;
use plinth_core::{Error, Metadata, Result};

use crate::components::{ComponentHost, Handle};
use crate::keys;

/// Largest number of keys in one bulk call.
pub const MAX_BULK_KEYS: usize = 10_000;

/// The state API every front door calls.
#[derive(Debug, Clone)]
pub struct StateApi {
    host: Arc<ComponentHost>,
    app_id: Arc<str>,
}

impl StateApi {
    /// State over the host's components for app `app_id`.
    pub fn new(host: Arc<ComponentHost>, app_id: &str) -> Self {
        Self {
            host,
            app_id: app_id.into(),
        }
    }

    fn store(&self, name: &str) -> Result<Handle<dyn StateStore>> {
        self.host.state(name)
    }

    fn key(&self, store: &Handle<dyn StateStore>, key: &str) -> Result<String> {
        keys::prefixed(store.spec(), &self.app_id, key)
    }

    fn check_write_metadata(store: &Handle<dyn StateStore>, metadata: &Metadata) -> Result<()> {
        if parse_ttl(metadata)?.is_some() && !store.component.features().ttl {
            return Err(Error::unimplemented(format!(
                "state store {:?} does not support TTL (ttlInSeconds)",
                store.spec().name
            )));
        }
        Ok(())
    }

    /// Read one key.
    pub async fn get(
        &self,
        store: &str,
        key: &str,
        metadata: Metadata,
        consistency: Consistency,
    ) -> Result<Option<GetResponse>> {
        let handle = self.store(store)?;
        let req = GetRequest {
            key: self.key(&handle, key)?,
            metadata,
            consistency,
        };
        handle
            .call("get", req, |c, r| async move { c.get(r).await })
            .await
    }

    /// Read many keys; the items carry the keys as the caller gave them.
    pub async fn bulk_get(
        &self,
        store: &str,
        keys: Vec<String>,
        metadata: Metadata,
    ) -> Result<Vec<BulkGetItem>> {
        if keys.len() > MAX_BULK_KEYS {
            return Err(Error::invalid_argument(format!(
                "bulk get of {} keys exceeds the limit of {MAX_BULK_KEYS}",
                keys.len()
            )));
        }
        let handle = self.store(store)?;
        let prefixed = keys
            .iter()
            .map(|k| self.key(&handle, k))
            .collect::<Result<Vec<_>>>()?;
        let mut items = handle
            .call("bulk_get", (prefixed, metadata), |c, (k, m)| async move {
                c.bulk_get(k, m).await
            })
            .await?;
        for (item, key) in items.iter_mut().zip(keys) {
            item.key = key;
        }
        Ok(items)
    }

    /// Save one or more keys. Keys arrive unprefixed.
    pub async fn save(&self, store: &str, mut items: Vec<SetRequest>) -> Result<()> {
        if items.len() > MAX_BULK_KEYS {
            return Err(Error::invalid_argument(format!(
                "saving {} keys at once exceeds the limit of {MAX_BULK_KEYS}",
                items.len()
            )));
        }
        let handle = self.store(store)?;
        for item in &mut items {
            item.key = self.key(&handle, &item.key)?;
            Self::check_write_metadata(&handle, &item.metadata)?;
        }
        if items.len() == 1 {
            let item = items.pop().unwrap_or_default();
            return handle
                .call("set", item, |c, r| async move { c.set(r).await })
                .await;
        }
        handle
            .call("bulk_set", items, |c, r| async move { c.bulk_set(r).await })
            .await
            .map_err(|e| unprefix_error(e, &handle, &self.app_id))
    }

    /// Delete one key.
    pub async fn delete(&self, store: &str, mut req: DeleteRequest) -> Result<()> {
        let handle = self.store(store)?;
        req.key = self.key(&handle, &req.key)?;
        handle
            .call("delete", req, |c, r| async move { c.delete(r).await })
            .await
    }

    /// Delete many keys.
    pub async fn bulk_delete(&self, store: &str, mut reqs: Vec<DeleteRequest>) -> Result<()> {
        if reqs.len() > MAX_BULK_KEYS {
            return Err(Error::invalid_argument(format!(
                "deleting {} keys at once exceeds the limit of {MAX_BULK_KEYS}",
                reqs.len()
            )));
        }
        let handle = self.store(store)?;
        for req in &mut reqs {
            req.key = self.key(&handle, &req.key)?;
        }
        handle
            .call(
                "bulk_delete",
                reqs,
                |c, r| async move { c.bulk_delete(r).await },
            )
            .await
            .map_err(|e| unprefix_error(e, &handle, &self.app_id))
    }

    /// Apply operations atomically and in order.
    pub async fn transact(
        &self,
        store: &str,
        mut ops: Vec<TransactionOp>,
        metadata: Metadata,
    ) -> Result<()> {
        if ops.len() > MAX_BULK_KEYS {
            return Err(Error::invalid_argument(format!(
                "a transaction of {} operations exceeds the limit of {MAX_BULK_KEYS}",
                ops.len()
            )));
        }
        let handle = self.store(store)?;
        if !handle.component.features().transactional {
            return Err(Error::unimplemented(format!(
                "state store {store:?} does not support transactions"
            )));
        }
        for op in &mut ops {
            match op {
                TransactionOp::Upsert(r) => {
                    r.key = self.key(&handle, &r.key)?;
                    Self::check_write_metadata(&handle, &r.metadata)?;
                }
                TransactionOp::Delete(r) => r.key = self.key(&handle, &r.key)?,
            }
        }
        handle
            .call("transact", (ops, metadata), |c, (o, m)| async move {
                c.transact(o, m).await
            })
            .await
            .map_err(|e| unprefix_error(e, &handle, &self.app_id))
    }

    /// Run a query (Dapr's state query language, as JSON) over this app's values in a
    /// store. The query is validated before the store sees it; result keys come back
    /// without the app's prefix. A store without the query capability answers as Dapr's
    /// does: INTERNAL, "state store does not support querying".
    pub async fn query(
        &self,
        store: &str,
        query: &[u8],
        metadata: Metadata,
    ) -> Result<QueryResponse> {
        let handle = self.store(store)?;
        if !handle.component.features().query {
            return Err(Error::internal(format!(
                "state store {store:?} does not support querying"
            )));
        }
        let req = QueryRequest {
            query: query::parse(query)?,
            key_prefix: keys::prefix(handle.spec(), &self.app_id),
            metadata,
        };
        let mut resp = handle
            .call("query", req, |c, r| async move { c.query(r).await })
            .await?;
        for item in &mut resp.results {
            item.key = keys::unprefixed(handle.spec(), &self.app_id, &item.key).to_string();
        }
        Ok(resp)
    }
}

/// Errors from bulk calls name prefixed keys; callers know their keys unprefixed.
fn unprefix_error(err: Error, handle: &Handle<dyn StateStore>, app_id: &str) -> Error {
    let prefix = keys::prefix(handle.spec(), app_id);
    if prefix.is_empty() || !err.message().contains(&prefix) {
        return err;
    }
    let message = err.message().replace(&format!("\"{prefix}"), "\"");
    Error::new(err.kind(), message)
}

#[cfg(test)]
mod tests;
