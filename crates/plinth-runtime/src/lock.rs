//! The lock building block.

use std::sync::Arc;
use std::time::Duration;

use plinth_core::component::lock::LockStatus;
use plinth_core::{Error, Result};

use crate::components::ComponentHost;
use crate::keys;

/// The longest lease a lock may ask for.
pub const MAX_EXPIRE_SECS: i64 = 24 * 3600;

/// The lock API every front door calls.
#[derive(Debug, Clone)]
pub struct LockApi {
    host: Arc<ComponentHost>,
    app_id: Arc<str>,
}

fn validate(resource: &str, owner: &str) -> Result<()> {
    if resource.is_empty() {
        return Err(Error::invalid_argument("resource id is empty"));
    }
    if owner.is_empty() {
        return Err(Error::invalid_argument("lock owner is empty"));
    }
    Ok(())
}

fn expire(secs: i64) -> Result<Duration> {
    if secs <= 0 {
        return Err(Error::invalid_argument(format!(
            "expire must be a positive number of seconds, got {secs}"
        )));
    }
    if secs > MAX_EXPIRE_SECS {
        return Err(Error::invalid_argument(format!(
            "expire of {secs}s exceeds the maximum of {MAX_EXPIRE_SECS}s"
        )));
    }
    Ok(Duration::from_secs(secs.unsigned_abs()))
}

impl LockApi {
    /// Locks over the host's components for app `app_id`.
    pub fn new(host: Arc<ComponentHost>, app_id: &str) -> Self {
        Self {
            host,
            app_id: app_id.into(),
        }
    }

    /// Take a lock if free. Returns whether it was taken.
    pub async fn try_lock(
        &self,
        store: &str,
        resource: &str,
        owner: &str,
        expire_secs: i64,
    ) -> Result<bool> {
        validate(resource, owner)?;
        let ttl = expire(expire_secs)?;
        let handle = self.host.lock(store)?;
        let key = keys::prefixed(handle.spec(), &self.app_id, resource)?;
        let owner = owner.to_string();
        handle
            .call("try_lock", (key, owner, ttl), |c, (k, o, t)| async move {
                c.try_lock(&k, &o, t).await
            })
            .await
    }

    /// Release a lock held by `owner`.
    pub async fn unlock(&self, store: &str, resource: &str, owner: &str) -> Result<LockStatus> {
        validate(resource, owner)?;
        let handle = self.host.lock(store)?;
        let key = keys::prefixed(handle.spec(), &self.app_id, resource)?;
        let owner = owner.to_string();
        handle
            .call("unlock", (key, owner), |c, (k, o)| async move {
                c.unlock(&k, &o).await
            })
            .await
    }

    /// Extend a lock held by `owner` to `expire_secs` from now.
    pub async fn keep_alive(
        &self,
        store: &str,
        resource: &str,
        owner: &str,
        expire_secs: i64,
    ) -> Result<LockStatus> {
        validate(resource, owner)?;
        let ttl = expire(expire_secs)?;
        let handle = self.host.lock(store)?;
        let key = keys::prefixed(handle.spec(), &self.app_id, resource)?;
        let owner = owner.to_string();
        handle
            .call("keep_alive", (key, owner, ttl), |c, (k, o, t)| async move {
                c.keep_alive(&k, &o, t).await
            })
            .await
    }
}
