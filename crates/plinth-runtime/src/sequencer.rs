//! The sequencer building block: STRONG ids straight from the store, WEAK ids from segment
//! caches, and `biggerThan` floors applied once per key and process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use plinth_core::component::Sequencer;
use plinth_core::{ComponentSpec, Error, Result};
use tokio::sync::Mutex as AsyncMutex;

use crate::components::{ComponentHost, Handle};
use crate::keys;

/// How ids are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Increment {
    /// Unique, and may be served from a cached segment: increasing per process only.
    Weak,
    /// Unique and strictly increasing across every caller.
    Strong,
}

/// The metadata key of the WEAK segment size.
pub const SEGMENT_SIZE: &str = "segmentSize";
const DEFAULT_SEGMENT: u32 = 100;
/// Sequences whose WEAK segments are cached at once.
const MAX_CACHED_SEGMENTS: usize = 65_536;

/// (hosted generation, prefixed key): one segment cache per sequence and component
/// instance, so that a reconfigured component starts with fresh caches and re-applies its
/// `biggerThan` floors.
type SegmentKey = (u64, String);

#[derive(Debug, Default)]
struct Segment {
    next: i64,
    end: i64,
}

/// The sequencer API every front door calls.
#[derive(Debug, Clone)]
pub struct SequencerApi {
    host: Arc<ComponentHost>,
    app_id: Arc<str>,
    segments: Arc<Mutex<HashMap<SegmentKey, Arc<AsyncMutex<Segment>>>>>,
    floored: Arc<Mutex<HashSet<SegmentKey>>>,
}

/// The `biggerThan` floor configured for `key`, from Layotto's `biggerThan` object or from
/// metadata `biggerThan.<key>`.
fn floor_of(spec: &ComponentSpec, key: &str) -> Result<Option<i64>> {
    if let Some(v) = spec.structured.get("biggerThan").and_then(|m| m.get(key)) {
        return v
            .as_i64()
            .map(Some)
            .ok_or_else(|| spec.invalid(&format!("biggerThan.{key}"), "is not an integer"));
    }
    let meta_key = format!("biggerThan.{key}");
    match spec.get(&meta_key) {
        Some(_) => spec.parse_or(&meta_key, 0i64).map(Some),
        None => Ok(None),
    }
}

impl SequencerApi {
    /// Sequencers over the host's components for app `app_id`.
    pub fn new(host: Arc<ComponentHost>, app_id: &str) -> Self {
        Self {
            host,
            app_id: app_id.into(),
            segments: Arc::default(),
            floored: Arc::default(),
        }
    }

    /// The next id for `key`.
    pub async fn next_id(&self, store: &str, key: &str, increment: Increment) -> Result<i64> {
        let handle = self.host.sequencer(store)?;
        let full_key = keys::prefixed(handle.spec(), &self.app_id, key)?;
        self.apply_floor(&handle, key, &full_key).await?;
        match increment {
            Increment::Strong => self.strong(&handle, full_key).await,
            Increment::Weak => self.weak(&handle, full_key).await,
        }
    }

    async fn strong(&self, handle: &Handle<dyn Sequencer>, key: String) -> Result<i64> {
        handle
            .call("next_id", key, |c, k| async move { c.next_id(&k).await })
            .await
    }

    async fn weak(&self, handle: &Handle<dyn Sequencer>, key: String) -> Result<i64> {
        let slot = {
            let mut map = self
                .segments
                .lock()
                .map_err(|_| Error::internal("sequencer cache lock poisoned"))?;
            // Bounded: forgetting cached segments only skips their unused ids, which are
            // never issued again, so dropping the cache is always safe.
            if map.len() >= MAX_CACHED_SEGMENTS {
                map.clear();
            }
            map.entry((handle.hosted.generation(), key.clone()))
                .or_default()
                .clone()
        };
        let mut segment = slot.lock().await;
        if segment.next > 0 && segment.next <= segment.end {
            let id = segment.next;
            segment.next += 1;
            return Ok(id);
        }
        let size = handle
            .spec()
            .parse_or(SEGMENT_SIZE, DEFAULT_SEGMENT)?
            .max(1);
        let k = key.clone();
        let reserved = handle
            .call("reserve", (k, size), |c, (k, n)| async move {
                c.reserve(&k, n).await
            })
            .await?;
        match reserved {
            Some((from, to)) if from <= to => {
                *segment = Segment {
                    next: from + 1,
                    end: to,
                };
                Ok(from)
            }
            Some((from, to)) => Err(Error::internal(format!(
                "sequencer returned an empty segment {from}..{to}"
            ))),
            None => self.strong(handle, key).await,
        }
    }

    async fn apply_floor(
        &self,
        handle: &Handle<dyn Sequencer>,
        key: &str,
        full_key: &str,
    ) -> Result<()> {
        let id = (handle.hosted.generation(), full_key.to_string());
        if self
            .floored
            .lock()
            .map(|s| s.contains(&id))
            .unwrap_or(false)
        {
            return Ok(());
        }
        if let Some(floor) = floor_of(handle.spec(), key)? {
            let k = full_key.to_string();
            handle
                .call("ensure_floor", (k, floor), |c, (k, f)| async move {
                    c.ensure_floor(&k, f).await
                })
                .await?;
        }
        if let Ok(mut set) = self.floored.lock() {
            // Re-applying a floor is idempotent, so forgetting is safe and keeps this bounded.
            if set.len() >= MAX_CACHED_SEGMENTS {
                set.clear();
            }
            set.insert(id);
        }
        Ok(())
    }
}
