//! `lock.etcd`: locks in etcd v3, compatible with Layotto's etcd lock store.
//!
//! Data layout: one key per held lock, `{keyPrefixPath}lock|||{key}` (Layotto's
//! `/layotto/lock|||{appId}||{resource}` by default), whose value is the owner, attached to a
//! lease of its own whose TTL is the expiry rounded up to whole seconds. Taking a lock is one
//! transaction that puts the key only if it does not exist (`create_revision == 0`), as
//! Layotto does. Unlock and keep-alive are transactions that compare the value with the owner
//! and act in the same step, so a lock that expired and was taken by another owner is never
//! released or extended by the first. Keep-alive moves the key to a fresh lease with the new
//! TTL and revokes the old one; unlock deletes the key and revokes its lease.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use plinth_core::component::lock::{LockStatus, LockStore};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};

use crate::etcd_conn::{EtcdConn, EtcdSettings};

#[cfg(test)]
mod tests;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "lock.etcd";

/// Layotto's default `keyPrefixPath`.
const DEFAULT_PREFIX: &str = "/layotto/";
/// What Layotto's lock API puts before the key the building block prefixed.
const LOCK_PREFIX: &str = "lock|||";

/// Build a `lock.etcd` store; metadata is validated here, the connection made in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let settings = EtcdSettings::from_spec(spec, DEFAULT_PREFIX)?;
    Ok(Instance::Lock(Arc::new(EtcdLockStore::new(settings))))
}

/// A lock store in etcd.
#[derive(Debug)]
pub struct EtcdLockStore {
    conn: EtcdConn,
}

/// etcd lease TTLs are whole seconds, at least one (etcd itself raises short TTLs to its
/// minimum, about two seconds with default settings).
fn ttl_seconds(expire: Duration) -> Result<i64> {
    if expire.is_zero() {
        return Err(Error::invalid_argument("the expiry must be positive"));
    }
    let secs = expire.as_secs() + u64::from(expire.subsec_nanos() > 0);
    i64::try_from(secs).map_err(|_| Error::invalid_argument("the expiry is too long"))
}

/// The key and lease of the first response of a transaction, if it is a get that found it.
fn first_get(resp: &TxnResponse) -> Option<(Vec<u8>, i64)> {
    match resp.op_responses().into_iter().next() {
        Some(TxnOpResponse::Get(get)) => get
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.lease())),
        _ => None,
    }
}

impl EtcdLockStore {
    fn new(settings: EtcdSettings) -> Self {
        Self {
            conn: EtcdConn::new(settings),
        }
    }

    fn key(&self, resource: &str) -> String {
        format!("{}{LOCK_PREFIX}{resource}", self.conn.settings().key_prefix)
    }

    async fn grant(&self, expire: Duration) -> Result<i64> {
        let ttl = ttl_seconds(expire)?;
        let lease = self
            .conn
            .run(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        Ok(lease.id())
    }

    /// Revoke a lease that no key needs any more. Best effort: a lease left behind expires by
    /// itself at its TTL, taking nothing with it.
    async fn revoke(&self, lease: i64) {
        if lease == 0 {
            return;
        }
        if let Err(e) = self
            .conn
            .run(|mut c| async move { c.lease_revoke(lease).await })
            .await
        {
            tracing::debug!(lease, error = %e, "lock.etcd: revoking a lease failed");
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.conn.run(|mut c| async move { c.txn(txn).await }).await
    }
}

#[async_trait]
impl Component for EtcdLockStore {
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
impl LockStore for EtcdLockStore {
    async fn try_lock(&self, resource: &str, owner: &str, expire: Duration) -> Result<bool> {
        let key = self.key(resource);
        let lease = self.grant(expire).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                owner,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        match self.txn(txn).await {
            Ok(resp) if resp.succeeded() => Ok(true),
            Ok(_) => {
                self.revoke(lease).await;
                Ok(false)
            }
            Err(e) => {
                self.revoke(lease).await;
                Err(e)
            }
        }
    }

    async fn unlock(&self, resource: &str, owner: &str) -> Result<LockStatus> {
        let key = self.key(resource);
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, owner)])
            .and_then([
                TxnOp::get(key.clone(), None),
                TxnOp::delete(key.clone(), None),
            ])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        let found = first_get(&resp);
        if resp.succeeded() {
            if let Some((_, lease)) = found {
                self.revoke(lease).await;
            }
            return Ok(LockStatus::Success);
        }
        Ok(match found {
            None => LockStatus::NotExist,
            Some(_) => LockStatus::BelongsToOthers,
        })
    }

    async fn keep_alive(
        &self,
        resource: &str,
        owner: &str,
        expire: Duration,
    ) -> Result<LockStatus> {
        let key = self.key(resource);
        let lease = self.grant(expire).await?;
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, owner)])
            .and_then([
                TxnOp::get(key.clone(), None),
                TxnOp::put(
                    key.clone(),
                    owner,
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ])
            .or_else([TxnOp::get(key, None)]);
        let resp = match self.txn(txn).await {
            Ok(resp) => resp,
            Err(e) => {
                self.revoke(lease).await;
                return Err(e);
            }
        };
        let found = first_get(&resp);
        if resp.succeeded() {
            if let Some((_, old)) = found
                && old != lease
            {
                self.revoke(old).await;
            }
            return Ok(LockStatus::Success);
        }
        self.revoke(lease).await;
        Ok(match found {
            None => LockStatus::NotExist,
            Some(_) => LockStatus::BelongsToOthers,
        })
    }
}
