//! `lock.in-memory`: locks in the process's memory.
//!
//! Data layout: one map from resource to (owner, expiry instant) behind a mutex. An expired
//! lock counts as free; it is removed when touched, and an occasional sweep keeps the map
//! from growing with locks that expired and were never touched again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use plinth_core::component::lock::{LockStatus, LockStore};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};
use tokio::time::Instant;

use crate::util::lock;

#[cfg(test)]
mod tests;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "lock.in-memory";

/// The map is swept when it reaches this size, then when it doubles after a sweep.
const SWEEP_FLOOR: usize = 1024;

/// Build a `lock.in-memory` store; it takes no metadata.
pub fn factory(_spec: &ComponentSpec) -> Result<Instance> {
    Ok(Instance::Lock(Arc::new(InMemoryLockStore::new())))
}

/// A lock store in memory.
pub struct InMemoryLockStore {
    locks: Mutex<Locks>,
}

impl fmt::Debug for InMemoryLockStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryLockStore")
            .field("locks", &lock(&self.locks).held.len())
            .finish()
    }
}

impl Default for InMemoryLockStore {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Held {
    owner: String,
    expires_at: Instant,
}

#[derive(Debug)]
struct Locks {
    held: HashMap<String, Held>,
    sweep_at: usize,
}

impl Locks {
    /// The live lock on `resource`, removing it first if it has expired.
    fn live(&mut self, resource: &str, now: Instant) -> Option<&mut Held> {
        if self.held.get(resource).is_some_and(|h| h.expires_at <= now) {
            self.held.remove(resource);
        }
        self.held.get_mut(resource)
    }

    fn maybe_sweep(&mut self, now: Instant) {
        if self.held.len() >= self.sweep_at {
            self.held.retain(|_, h| h.expires_at > now);
            self.sweep_at = (self.held.len() * 2).max(SWEEP_FLOOR);
        }
    }
}

fn deadline(now: Instant, expire: Duration) -> Result<Instant> {
    now.checked_add(expire).ok_or_else(|| {
        Error::invalid_argument(format!("an expiry of {}s is too long", expire.as_secs()))
    })
}

impl InMemoryLockStore {
    /// An empty lock store.
    pub fn new() -> Self {
        Self {
            locks: Mutex::new(Locks {
                held: HashMap::new(),
                sweep_at: SWEEP_FLOOR,
            }),
        }
    }
}

#[async_trait]
impl Component for InMemoryLockStore {
    /// Its metadata is read by the building block (`keyPrefix`, ...), so new metadata
    /// changes nothing here, and the data is kept.
    async fn reconfigure(&self, _spec: &plinth_core::ComponentSpec) -> Result<bool> {
        Ok(true)
    }
}

#[async_trait]
impl LockStore for InMemoryLockStore {
    async fn try_lock(&self, resource: &str, owner: &str, expire: Duration) -> Result<bool> {
        let now = Instant::now();
        let expires_at = deadline(now, expire)?;
        let mut locks = lock(&self.locks);
        if locks.live(resource, now).is_some() {
            return Ok(false);
        }
        locks.maybe_sweep(now);
        locks.held.insert(
            resource.to_owned(),
            Held {
                owner: owner.to_owned(),
                expires_at,
            },
        );
        Ok(true)
    }

    async fn unlock(&self, resource: &str, owner: &str) -> Result<LockStatus> {
        let mut locks = lock(&self.locks);
        match locks.live(resource, Instant::now()) {
            None => Ok(LockStatus::NotExist),
            Some(held) if held.owner != owner => Ok(LockStatus::BelongsToOthers),
            Some(_) => {
                locks.held.remove(resource);
                Ok(LockStatus::Success)
            }
        }
    }

    async fn keep_alive(
        &self,
        resource: &str,
        owner: &str,
        expire: Duration,
    ) -> Result<LockStatus> {
        let now = Instant::now();
        let expires_at = deadline(now, expire)?;
        let mut locks = lock(&self.locks);
        match locks.live(resource, now) {
            None => Ok(LockStatus::NotExist),
            Some(held) if held.owner != owner => Ok(LockStatus::BelongsToOthers),
            Some(held) => {
                held.expires_at = expires_at;
                Ok(LockStatus::Success)
            }
        }
    }
}
