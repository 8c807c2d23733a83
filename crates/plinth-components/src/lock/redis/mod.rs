//! `lock.redis`: locks in Redis, compatible with Dapr's and Layotto's Redis lock stores.
//!
//! Data layout: one string key per held lock whose value is the owner, with a Redis expiry
//! (`SET key owner NX PX ms`). The key is the building block's prefixed key, with Dapr's
//! `lock||` in front under `keyLayout: dapr` (the default), or Layotto's `lock|||` under
//! `keyLayout: layotto`. Unlock and keep-alive are Lua scripts that compare the owner and
//! act in one step, so a lock that expired and was taken by another owner is never
//! released or extended by the first.

use std::sync::Arc;
use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;
use plinth_core::component::lock::{LockStatus, LockStore};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};

use crate::redis_client::RedisConn;

mod config;
#[cfg(test)]
mod tests;

use config::{Config, KeyLayout};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "lock.redis";

/// KEYS[1] the lock; ARGV[1] the owner. 1 released, 0 not held, -1 held by another owner.
const UNLOCK_SCRIPT: &str = r#"
local owner = redis.call("GET", KEYS[1])
if not owner then return 0 end
if owner ~= ARGV[1] then return -1 end
redis.call("DEL", KEYS[1])
return 1
"#;

/// KEYS[1] the lock; ARGV[1] the owner, ARGV[2] the new expiry in milliseconds. Answers as
/// [`UNLOCK_SCRIPT`] does.
const KEEP_ALIVE_SCRIPT: &str = r#"
local owner = redis.call("GET", KEYS[1])
if not owner then return 0 end
if owner ~= ARGV[1] then return -1 end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
return 1
"#;

/// Build a `lock.redis` store; metadata is validated here, the connection made in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    Ok(Instance::Lock(Arc::new(RedisLockStore::new(config))))
}

/// A lock store in Redis.
pub struct RedisLockStore {
    conn: RedisConn,
    layout: KeyLayout,
    unlock_script: Script,
    keep_alive_script: Script,
}

impl std::fmt::Debug for RedisLockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLockStore")
            .field("conn", &self.conn)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// Redis expiries are whole milliseconds, at least one.
fn millis(expire: Duration) -> Result<u64> {
    let ms = u64::try_from(expire.as_millis())
        .map_err(|_| Error::invalid_argument("the expiry is too long"))?;
    if ms == 0 {
        return Err(Error::invalid_argument("the expiry must be positive"));
    }
    Ok(ms)
}

fn status(code: i64) -> Result<LockStatus> {
    match code {
        1 => Ok(LockStatus::Success),
        0 => Ok(LockStatus::NotExist),
        -1 => Ok(LockStatus::BelongsToOthers),
        other => Err(Error::internal(format!(
            "unexpected answer {other} from the redis lock script"
        ))),
    }
}

impl RedisLockStore {
    fn new(config: Config) -> Self {
        Self {
            conn: RedisConn::new(config.redis),
            layout: config.layout,
            unlock_script: Script::new(UNLOCK_SCRIPT),
            keep_alive_script: Script::new(KEEP_ALIVE_SCRIPT),
        }
    }
}

#[async_trait]
impl Component for RedisLockStore {
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
impl LockStore for RedisLockStore {
    async fn try_lock(&self, resource: &str, owner: &str, expire: Duration) -> Result<bool> {
        let ms = millis(expire)?;
        let key = self.layout.redis_key(resource);
        let owner = owner.to_owned();
        let taken: Option<String> = self
            .conn
            .run(|mut c| async move {
                ::redis::cmd("SET")
                    .arg(&key)
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(taken.is_some())
    }

    async fn unlock(&self, resource: &str, owner: &str) -> Result<LockStatus> {
        let mut invocation = self.unlock_script.key(self.layout.redis_key(resource));
        invocation.arg(owner);
        let code: i64 = self
            .conn
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        status(code)
    }

    async fn keep_alive(
        &self,
        resource: &str,
        owner: &str,
        expire: Duration,
    ) -> Result<LockStatus> {
        let ms = millis(expire)?;
        let mut invocation = self.keep_alive_script.key(self.layout.redis_key(resource));
        invocation.arg(owner).arg(ms);
        let code: i64 = self
            .conn
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        status(code)
    }
}
