//! Distributed locks with expiry and owner checks.

use std::time::Duration;

use async_trait::async_trait;

use super::Component;
use crate::Result;

/// The outcome of unlocking or extending a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockStatus {
    /// Done.
    Success,
    /// No such lock (never taken, released, or expired).
    NotExist,
    /// Held by another owner.
    BelongsToOthers,
}

/// A lock store.
#[async_trait]
pub trait LockStore: Component {
    /// Take the lock for `owner` for `expire`, if nobody holds it. Returns whether it was taken.
    async fn try_lock(&self, resource: &str, owner: &str, expire: Duration) -> Result<bool>;

    /// Release the lock if `owner` holds it.
    async fn unlock(&self, resource: &str, owner: &str) -> Result<LockStatus>;

    /// Extend the lock's expiry to `expire` from now if `owner` holds it.
    async fn keep_alive(&self, resource: &str, owner: &str, expire: Duration)
    -> Result<LockStatus>;
}
