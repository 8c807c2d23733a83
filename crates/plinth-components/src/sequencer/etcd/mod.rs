//! `sequencer.etcd`: per-key counters in etcd v3, under Layotto's keys.
//!
//! Data layout: one key per sequence, `{keyPrefixPath}sequencer|||{key}` (Layotto's
//! `/layotto/sequencer|||{appId}||{key}` by default), whose value is the last id issued as a
//! decimal integer. Every change is a compare-and-swap transaction on the key's
//! `mod_revision` (or on its absence), retried while other writers win, until the call's
//! timeout: STRONG ids add one, WEAK segments add the segment's size, `biggerThan` floors
//! raise the value to the floor when it is below.
//!
//! Layotto's etcd sequencer issues the key's etcd `version` (the number of writes since the
//! key was created) and writes an empty value. The counter therefore starts from the larger
//! of the stored number and the key's version, so Plinth continues a sequence Layotto began
//! without issuing an id twice. The value Plinth writes is always at least the version, but
//! Layotto reads only the version: the two must not issue ids for the same key at once, and
//! going back to Layotto after Plinth advanced a key by segments or floors is not supported.

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use plinth_core::component::sequencer::Sequencer;
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};

use crate::etcd_conn::{EtcdConn, EtcdSettings};

#[cfg(test)]
mod tests;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "sequencer.etcd";

/// Layotto's default `keyPrefixPath`.
const DEFAULT_PREFIX: &str = "/layotto/";
/// What Layotto's sequencer API puts before the key the building block prefixed.
const SEQUENCER_PREFIX: &str = "sequencer|||";

/// Build a `sequencer.etcd` store; metadata is validated here, the connection made in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let settings = EtcdSettings::from_spec(spec, DEFAULT_PREFIX)?;
    Ok(Instance::Sequencer(Arc::new(EtcdSequencer::new(settings))))
}

/// A sequencer in etcd.
#[derive(Debug)]
pub struct EtcdSequencer {
    conn: EtcdConn,
}

/// A counter as read: its value and the `mod_revision` a swap compares against (0: absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counter {
    value: i64,
    mod_revision: i64,
}

/// The counter a stored key stands for: the larger of its number (empty is Layotto's, 0)
/// and its version.
fn counter_of(key: &str, value: &[u8], version: i64) -> Result<i64> {
    let text = std::str::from_utf8(value).unwrap_or("\u{fffd}").trim();
    let stored = if text.is_empty() {
        0
    } else {
        text.parse::<i64>().map_err(|_| {
            Error::failed_precondition(format!(
                "sequencer.etcd: {key} holds {text:?}, not a counter"
            ))
        })?
    };
    Ok(stored.max(version))
}

impl EtcdSequencer {
    fn new(settings: EtcdSettings) -> Self {
        Self {
            conn: EtcdConn::new(settings),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{SEQUENCER_PREFIX}{key}", self.conn.settings().key_prefix)
    }

    async fn read(&self, key: &str) -> Result<Counter> {
        let owned = key.to_owned();
        let resp = self
            .conn
            .run(|mut c| async move { c.get(owned, None).await })
            .await?;
        match resp.kvs().first() {
            None => Ok(Counter {
                value: 0,
                mod_revision: 0,
            }),
            Some(kv) => Ok(Counter {
                value: counter_of(key, kv.value(), kv.version())?,
                mod_revision: kv.mod_revision(),
            }),
        }
    }

    /// Store `value` if the key has not changed since `seen`. Whether it was stored.
    async fn swap(&self, key: &str, seen: Counter, value: i64) -> Result<bool> {
        let compare = if seen.mod_revision == 0 {
            Compare::create_revision(key, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, seen.mod_revision)
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, value.to_string(), None)]);
        let resp = self
            .conn
            .run(|mut c| async move { c.txn(txn).await })
            .await?;
        Ok(resp.succeeded())
    }

    /// Apply `next` (from the current counter to the new one, or `None` to leave it) with
    /// compare-and-swap until it holds, within the call timeout. The new counter.
    async fn update(&self, key: &str, next: impl Fn(i64) -> Result<Option<i64>>) -> Result<i64> {
        let key = self.key(key);
        let attempt = async {
            loop {
                let seen = self.read(&key).await?;
                let Some(value) = next(seen.value)? else {
                    return Ok(seen.value);
                };
                if self.swap(&key, seen, value).await? {
                    return Ok(value);
                }
                // Another writer won this round; it made progress, so retrying ends.
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(self.conn.settings().timeout, attempt)
            .await
            .map_err(|_| self.conn.timed_out())?
    }

    async fn advance(&self, key: &str, by: i64) -> Result<i64> {
        self.update(key, |current| {
            current.checked_add(by).map(Some).ok_or_else(|| {
                Error::resource_exhausted(format!(
                    "sequencer.etcd: the counter cannot advance past {current}"
                ))
            })
        })
        .await
    }
}

#[async_trait]
impl Component for EtcdSequencer {
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
impl Sequencer for EtcdSequencer {
    async fn next_id(&self, key: &str) -> Result<i64> {
        self.advance(key, 1).await
    }

    async fn reserve(&self, key: &str, size: u32) -> Result<Option<(i64, i64)>> {
        super::reserve_by_advancing(size, |by| self.advance(key, by)).await
    }

    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()> {
        self.update(key, |current| Ok((current < floor).then_some(floor)))
            .await
            .map(drop)
    }
}
