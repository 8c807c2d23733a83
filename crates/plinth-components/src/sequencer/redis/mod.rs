//! `sequencer.redis`: per-key counters in Redis, compatible with Layotto's Redis sequencer.
//!
//! Data layout: one string key per sequence holding the last id issued, as a decimal
//! integer (absent before the first id). STRONG ids are `INCR`; WEAK segments are reserved
//! with `INCRBY size`, the range ending at the answer. `biggerThan` floors (applied by the
//! building block to the same keys `next_id` uses) are one Lua script that raises the
//! counter to the floor when it is below. Under `keyLayout: layotto` (the default) the key
//! carries Layotto's `sequencer|||` in front; under `plain` it is the prefixed key as it is.

use std::sync::Arc;

use ::redis::Script;
use async_trait::async_trait;
use plinth_core::component::sequencer::Sequencer;
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};

use crate::redis_client::RedisConn;

mod config;
#[cfg(test)]
mod tests;

use config::{Config, KeyLayout};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "sequencer.redis";

/// KEYS[1] the counter; ARGV[1] the floor. Raises the counter to the floor if it is below.
const FLOOR_SCRIPT: &str = r#"
local v = tonumber(redis.call("GET", KEYS[1]) or "0")
local floor = tonumber(ARGV[1])
if v < floor then
  redis.call("SET", KEYS[1], ARGV[1])
end
return 0
"#;

/// Build a `sequencer.redis` store; metadata is validated here, the connection made in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    Ok(Instance::Sequencer(Arc::new(RedisSequencer::new(config))))
}

/// A sequencer in Redis.
pub struct RedisSequencer {
    conn: RedisConn,
    layout: KeyLayout,
    floor_script: Script,
}

impl std::fmt::Debug for RedisSequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSequencer")
            .field("conn", &self.conn)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl RedisSequencer {
    fn new(config: Config) -> Self {
        Self {
            conn: RedisConn::new(config.redis),
            layout: config.layout,
            floor_script: Script::new(FLOOR_SCRIPT),
        }
    }

    async fn incr_by(&self, key: &str, by: i64) -> Result<i64> {
        let key = self.layout.redis_key(key);
        self.conn
            .run(|mut c| async move {
                if by == 1 {
                    ::redis::cmd("INCR").arg(&key).query_async(&mut c).await
                } else {
                    ::redis::cmd("INCRBY")
                        .arg(&key)
                        .arg(by)
                        .query_async(&mut c)
                        .await
                }
            })
            .await
            .map_err(|e| {
                // Redis refuses to overflow a counter (or to increment a non-integer).
                if e.kind() == plinth_core::ErrorKind::Internal {
                    Error::resource_exhausted(format!("sequencer key cannot advance: {e}"))
                } else {
                    e
                }
            })
    }
}

#[async_trait]
impl Component for RedisSequencer {
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
impl Sequencer for RedisSequencer {
    async fn next_id(&self, key: &str) -> Result<i64> {
        self.incr_by(key, 1).await
    }

    async fn reserve(&self, key: &str, size: u32) -> Result<Option<(i64, i64)>> {
        super::reserve_by_advancing(size, |by| self.incr_by(key, by)).await
    }

    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()> {
        let mut invocation = self.floor_script.key(self.layout.redis_key(key));
        invocation.arg(floor);
        let _: i64 = self
            .conn
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }
}
