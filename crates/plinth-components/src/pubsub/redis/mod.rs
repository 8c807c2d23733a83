//! `pubsub.redis`: a broker on Redis Streams with Dapr's data layout, so Plinth and Dapr
//! sidecars can publish to and subscribe on the same streams.
//!
//! Data layout: one stream per topic, whose key is the topic name. An entry has the fields
//! `data` (the payload's bytes), `metadata` (the publish metadata as a JSON object, when
//! there is any) and `contentType` (Plinth's own field; Dapr ignores it). Each consumer group
//! of the topic is a Redis consumer group of the stream named after the group (`consumerID`,
//! or the app id), created at `0` with `MKSTREAM`. Each subscription is a consumer of its own,
//! `{group}-{uuid}`, so what it holds pending is attributable.
//!
//! A subscription runs one task that reads with `XREADGROUP ... COUNT <free permits> BLOCK`
//! on a connection of its own (a blocking read would hold up every other command on the
//! shared connection), and, every `redeliverInterval` or when woken by a nack, takes over
//! with `XAUTOCLAIM` the entries pending longer than `processingTimeout` on any consumer of
//! the group. A second task renews the idle time of the entries it has handed out and not
//! settled every third of `processingTimeout`, so they are not taken over behind the
//! holder's back. A nack sets the entry's idle time to `processingTimeout` (so that any
//! consumer's next `XAUTOCLAIM` takes it) and wakes the subscriptions of its group in this
//! process; `nack_after(delay)` sets it so that it becomes claimable only after `delay`. An
//! ack is `XACK`. Publishes, acks, claims and renewals share the component's connection.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{Cmd, FromRedisValue, RedisError, Script, Value};
use async_trait::async_trait;
use bytes::Bytes;
use plinth_core::component::pubsub::{
    Acknowledger, Delivery, Message, PubSub, PubSubFeatures, PublishRequest, SubscribeRequest,
    Subscription,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, ErrorKind, Metadata, Result};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::common::{check_publish, check_subscribe};
use crate::redis_client::{RedisConn, RedisConnection};
use crate::util::lock;

mod config;
#[cfg(test)]
mod tests;

use config::{Config, Trim};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "pubsub.redis";

/// The entry field holding the payload (Dapr's).
const DATA: &str = "data";
/// The entry field holding the publish metadata as a JSON object (Dapr's).
const METADATA: &str = "metadata";
/// The entry field holding the content type (Plinth's; Dapr ignores it).
const CONTENT_TYPE: &str = "contentType";

/// The first and the longest wait before a subscription tries Redis again after a failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How many ids one call of [`SET_IDLE_SCRIPT`] takes.
const SET_IDLE_BATCH: usize = 1000;

/// Set the idle time of entries still pending on one consumer; returns the ids that are not
/// (acknowledged, or taken over by another consumer). KEYS[1] the stream; ARGV: the group,
/// the consumer, the idle time in ms, then the ids. The owner check keeps a late renewal
/// from taking an entry back from the consumer that took it over.
const SET_IDLE_SCRIPT: &str = r#"
local gone = {}
for i = 4, #ARGV do
  local p = redis.call("XPENDING", KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call("XCLAIM", KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], "IDLE", ARGV[3], "JUSTID")
  else
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
"#;

/// Delete the consumers of a group that have nothing pending and have been idle at least a
/// given time; returns their names. KEYS[1] the stream; ARGV: the group, the idle time in
/// ms, and one consumer's name ("" for any). One script, so no consumer can take a message
/// between the check and the delete.
const REMOVE_CONSUMERS_SCRIPT: &str = r#"
local consumers = redis.pcall("XINFO", "CONSUMERS", KEYS[1], ARGV[1])
if consumers.err then return {} end
local removed = {}
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f["pending"] == 0 and f["idle"] >= tonumber(ARGV[2])
      and (ARGV[3] == "" or ARGV[3] == f["name"]) then
    redis.call("XGROUP", "DELCONSUMER", KEYS[1], ARGV[1], f["name"])
    removed[#removed + 1] = f["name"]
  end
end
return removed
"#;

/// Build a `pubsub.redis` broker; metadata is validated here, the connection made in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    Ok(Instance::PubSub(Arc::new(RedisPubSub::new(
        &spec.name, config,
    ))))
}

/// A broker on Redis Streams with durable consumer groups, competing consumers and
/// redelivery of what a consumer left pending.
pub struct RedisPubSub {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisPubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("RedisPubSub")
            .field("name", &s.name)
            .field("conn", &s.conn)
            .field("consumer_id", &s.config.consumer_id)
            .field("processing_timeout", &s.config.processing_timeout)
            .field("redeliver_interval", &s.config.redeliver_interval)
            .field("trim", &s.config.trim)
            .field("queue_depth", &s.config.queue_depth)
            .field("concurrency", &s.config.concurrency)
            .field("closed", &s.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisPubSub {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// What the component and its subscriptions share.
struct Shared {
    /// The component's name, for messages.
    name: String,
    conn: RedisConn,
    config: Config,
    /// The wake-ups of this process's subscriptions, by topic and group: a nack wakes every
    /// subscription of its group here, so that one of them takes the message promptly.
    wakers: Mutex<Wakers>,
    shutdown: CancellationToken,
    /// Pending entries found trimmed from their stream before they were acknowledged.
    trimmed: AtomicU64,
    set_idle: Script,
    remove_consumers: Script,
}

/// The wake-ups of subscriptions, by (topic, group).
type Wakers = HashMap<(String, String), Vec<Weak<Notify>>>;

/// A reply meaning the consumer group (or its stream) is gone.
#[derive(Debug)]
struct NoGroup;

fn is_no_group(err: &RedisError) -> bool {
    err.code() == Some("NOGROUP") || err.to_string().contains("NOGROUP")
}

fn is_wrong_type(err: &RedisError) -> bool {
    err.code() == Some("WRONGTYPE")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        if self.shutdown.is_cancelled() {
            return Err(Error::unavailable(format!(
                "pubsub {:?} is closed",
                self.name
            )));
        }
        Ok(())
    }

    /// Run `cmd` on the shared connection; a NOGROUP reply is `Ok(Err(NoGroup))`.
    async fn call<T: FromRedisValue + Send>(
        &self,
        cmd: Cmd,
    ) -> Result<std::result::Result<T, NoGroup>> {
        self.conn
            .run(|mut c| async move {
                match cmd.query_async::<T>(&mut c).await {
                    Ok(v) => Ok(Ok(v)),
                    Err(e) if is_no_group(&e) => Ok(Err(NoGroup)),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// `XGROUP CREATE topic group 0 MKSTREAM`: a new group starts at the beginning of the
    /// stream, as Dapr's does. An existing group is fine.
    async fn create_group(&self, topic: &str, group: &str) -> Result<()> {
        let mut cmd = ::redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(topic)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM");
        let created = self
            .conn
            .run(|mut c| async move {
                match cmd.query_async::<()>(&mut c).await {
                    Ok(()) => Ok(Ok(())),
                    Err(e) if e.code() == Some("BUSYGROUP") => Ok(Ok(())),
                    Err(e) if is_wrong_type(&e) => Ok(Err(())),
                    Err(e) => Err(e),
                }
            })
            .await?;
        created.map_err(|()| not_a_stream(topic))
    }

    /// The group vanished (the stream or the group was deleted): create it again, as Dapr
    /// does, unless the component is closing. A failure is logged and returned.
    async fn recreate_group(&self, topic: &str, group: &str) -> Result<()> {
        if self.shutdown.is_cancelled() {
            return Ok(());
        }
        tracing::warn!(
            component = %self.name, topic, group,
            "the consumer group is gone (its stream or the group was deleted); recreating it at \
             the start of the stream, so entries still in the stream are delivered again"
        );
        let created = self.create_group(topic, group).await;
        if let Err(error) = &created {
            tracing::warn!(component = %self.name, topic, group, %error, "recreating the consumer group failed");
        }
        created
    }

    fn register(&self, topic: &str, group: &str, wake: &Arc<Notify>) {
        let mut wakers = lock(&self.wakers);
        let list = wakers
            .entry((topic.to_owned(), group.to_owned()))
            .or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(wake));
    }

    fn unregister(&self, topic: &str, group: &str, wake: &Arc<Notify>) {
        let mut wakers = lock(&self.wakers);
        let key = (topic.to_owned(), group.to_owned());
        if let Some(list) = wakers.get_mut(&key) {
            list.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(wake)));
            if list.is_empty() {
                wakers.remove(&key);
            }
        }
    }

    /// Wake every subscription of `group` on `topic` in this process for a reclaim pass.
    fn wake(&self, topic: &str, group: &str) {
        let wakers = lock(&self.wakers);
        if let Some(list) = wakers.get(&(topic.to_owned(), group.to_owned())) {
            for wake in list.iter().filter_map(Weak::upgrade) {
                wake.notify_one();
            }
        }
    }

    /// Delete the consumers of `group` that have nothing pending and have been idle for at
    /// least `min_idle` (only `only`, when given); returns their names.
    async fn remove_idle_consumers(
        &self,
        topic: &str,
        group: &str,
        min_idle: Duration,
        only: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut invocation = self.remove_consumers.key(topic);
        invocation
            .arg(group)
            .arg(millis(min_idle))
            .arg(only.unwrap_or_default());
        self.conn
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    /// `MINID ~` for `streamTTL`: entries older than `ttl` (Dapr's `{ms}-1`).
    fn min_id(ttl: Duration) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}-1", millis(now.saturating_sub(ttl)))
    }
}

fn not_a_stream(topic: &str) -> Error {
    Error::invalid_argument(format!(
        "topic {topic:?}: the Redis key of that name holds a value that is not a stream"
    ))
}

impl RedisPubSub {
    fn new(name: &str, config: Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                conn: RedisConn::new(config.redis.clone()),
                config,
                wakers: Mutex::default(),
                shutdown: CancellationToken::new(),
                trimmed: AtomicU64::new(0),
                set_idle: Script::new(SET_IDLE_SCRIPT),
                remove_consumers: Script::new(REMOVE_CONSUMERS_SCRIPT),
            }),
        }
    }

    /// How many pending entries were found trimmed from their stream (by `maxLenApprox`,
    /// `streamTTL` or `XTRIM`) before they were acknowledged: messages lost.
    pub fn trimmed(&self) -> u64 {
        self.shared.trimmed.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Component for RedisPubSub {
    async fn init(&self) -> Result<()> {
        self.shared.check_open()?;
        self.shared.conn.init().await
    }

    async fn ping(&self) -> Result<()> {
        self.shared.conn.ping().await
    }

    async fn close(&self) {
        self.shared.shutdown.cancel();
        self.shared.conn.close().await;
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    /// Ordered per stream; durable as far as Redis persists its data (AOF).
    fn features(&self) -> PubSubFeatures {
        PubSubFeatures {
            ordered: true,
            durable: true,
        }
    }

    async fn publish(&self, req: PublishRequest) -> Result<()> {
        let shared = &self.shared;
        shared.check_open()?;
        check_publish(&shared.name, &req, shared.config.max_message_bytes)?;
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(&req.topic);
        match shared.config.trim {
            Trim::Never => {}
            Trim::MaxLen(n) => {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            Trim::MaxAge(ttl) => {
                cmd.arg("MINID").arg("~").arg(Shared::min_id(ttl));
            }
        }
        cmd.arg("*").arg(DATA).arg(req.data.as_ref());
        if !req.metadata.is_empty() {
            let json = serde_json::to_string(&req.metadata)
                .map_err(|e| Error::internal(format!("encoding the metadata: {e}")))?;
            cmd.arg(METADATA).arg(json);
        }
        if !req.content_type.is_empty() {
            cmd.arg(CONTENT_TYPE).arg(&req.content_type);
        }
        // Ok(Err(..)): what Redis refused, as an error of our own.
        shared
            .conn
            .run(|mut c| async move {
                match cmd.query_async::<String>(&mut c).await {
                    Ok(_) => Ok(Ok(())),
                    Err(e) if is_wrong_type(&e) => Ok(Err(not_a_stream(&req.topic))),
                    Err(e) if e.code() == Some("OOM") => Ok(Err(Error::resource_exhausted(
                        "redis is out of memory (maxmemory): the message was not added",
                    ))),
                    Err(e) => Err(e),
                }
            })
            .await?
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Subscription> {
        let shared = &self.shared;
        shared.check_open()?;
        let (group, max_in_flight) = check_subscribe(&req, shared.config.consumer_id.as_deref())?;
        shared.create_group(&req.topic, &group).await?;
        let reader = shared
            .conn
            .dedicated(shared.config.read_block + shared.conn.timeout())
            .await?;
        let consumer = format!("{group}-{}", uuid::Uuid::new_v4().simple());
        let sub = Arc::new(Sub {
            shared: Arc::clone(shared),
            topic: req.topic,
            group,
            consumer,
            held: Mutex::default(),
            settle: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            ended: CancellationToken::new(),
        });
        shared.register(&sub.topic, &sub.group, &sub.wake);
        tracing::debug!(
            component = %shared.name, topic = %sub.topic, group = %sub.group,
            consumer = %sub.consumer, max_in_flight, "subscribed"
        );
        let (tx, receiver) = mpsc::channel(max_in_flight);
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        tokio::spawn(pump(Arc::clone(&sub), reader, tx, in_flight));
        tokio::spawn(renew_held(sub));
        Ok(Subscription { receiver })
    }
}

/// A stream entry as read: its id and fields (`None` when the entry was deleted).
#[derive(Debug)]
struct Entry {
    id: String,
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// What one read or reclaim pass got.
#[derive(Debug)]
enum Fetch {
    Entries(Vec<Entry>),
    NoGroup,
    /// Failed; `true` when the reading connection must be replaced.
    Failed(Error, bool),
}

/// One subscription: a consumer of a group.
struct Sub {
    shared: Arc<Shared>,
    topic: String,
    group: String,
    consumer: String,
    /// Ids handed out and not settled: renewed so that no other consumer takes them over.
    held: Mutex<HashSet<String>>,
    /// Orders renewals against give-backs, so that a renewal never undoes the idle time a
    /// give-back set. Ids leave `held` before the lock is taken.
    settle: tokio::sync::Mutex<()>,
    /// Asks for a reclaim pass.
    wake: Arc<Notify>,
    /// Cancelled when the subscription stops reading.
    ended: CancellationToken,
}

impl Sub {
    fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Set the idle time of `ids` that are still pending on this consumer; returns the ids
    /// that are not.
    async fn set_idle(
        &self,
        ids: &[String],
        idle: Duration,
    ) -> Result<std::result::Result<Vec<String>, NoGroup>> {
        let mut gone = Vec::new();
        for batch in ids.chunks(SET_IDLE_BATCH) {
            let mut invocation = self.shared.set_idle.key(&self.topic);
            invocation
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(millis(idle))
                .arg(batch);
            let result = self
                .shared
                .conn
                .run(|mut c| async move {
                    match invocation.invoke_async::<Vec<String>>(&mut c).await {
                        Ok(v) => Ok(Ok(v)),
                        Err(e) if is_no_group(&e) => Ok(Err(NoGroup)),
                        Err(e) => Err(e),
                    }
                })
                .await?;
            match result {
                Ok(ids) => gone.extend(ids),
                Err(NoGroup) => return Ok(Err(NoGroup)),
            }
        }
        Ok(Ok(gone))
    }

    /// Stop holding `ids` and set their idle time to `idle`: the group takes them over once
    /// they have been idle for `processingTimeout`, so at once when `idle` is that.
    async fn give_back(&self, ids: &[String], idle: Duration) -> Result<()> {
        {
            let mut held = lock(&self.held);
            for id in ids {
                held.remove(id);
            }
        }
        let _order = self.settle.lock().await;
        match self.set_idle(ids, idle).await? {
            // Ids not pending here any more were acknowledged or taken over: nothing to do.
            Ok(_) => Ok(()),
            Err(NoGroup) => {
                // Logged there; the message went away with the group.
                let _ = self.shared.recreate_group(&self.topic, &self.group).await;
                Ok(())
            }
        }
    }

    /// Renew the idle time of every held entry.
    async fn renew(&self) {
        let _order = self.settle.lock().await;
        let ids: Vec<String> = lock(&self.held).iter().cloned().collect();
        if ids.is_empty() {
            return;
        }
        match self.set_idle(&ids, Duration::ZERO).await {
            Ok(Ok(gone)) => {
                // Ids acknowledged meanwhile have left `held`; the others were taken over.
                let lost = {
                    let mut held = lock(&self.held);
                    gone.iter().filter(|id| held.remove(*id)).count()
                };
                if lost > 0 {
                    tracing::warn!(
                        component = %self.shared.name, topic = %self.topic, group = %self.group,
                        consumer = %self.consumer, lost,
                        "held messages were taken over by another consumer (renewed too late); \
                         they may be processed twice"
                    );
                }
            }
            Ok(Err(NoGroup)) => {
                let _ = self.shared.recreate_group(&self.topic, &self.group).await;
            }
            Err(error) => tracing::warn!(
                component = %self.shared.name, topic = %self.topic, group = %self.group,
                held = ids.len(), %error,
                "renewing held messages failed; another consumer may take them over after \
                 processingTimeout"
            ),
        }
    }

    async fn ack(&self, id: &str) -> Result<()> {
        lock(&self.held).remove(id);
        let mut cmd = ::redis::cmd("XACK");
        cmd.arg(&self.topic).arg(&self.group).arg(id);
        match self.shared.call::<i64>(cmd).await? {
            Ok(_) => Ok(()),
            // The group went away with the message: nothing left to acknowledge.
            Err(NoGroup) => {
                // Logged there; the message went away with the group.
                let _ = self.shared.recreate_group(&self.topic, &self.group).await;
                Ok(())
            }
        }
    }

    /// Wake the group's subscriptions in this process after `delay`.
    fn wake_after(&self, delay: Duration) {
        if delay.is_zero() {
            self.shared.wake(&self.topic, &self.group);
            return;
        }
        let shared = Arc::clone(&self.shared);
        let (topic, group) = (self.topic.clone(), self.group.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shared.shutdown.cancelled() => {}
                _ = tokio::time::sleep(delay) => shared.wake(&topic, &group),
            }
        });
    }

    /// `XREADGROUP ... COUNT count BLOCK block STREAMS topic >` on the reading connection.
    async fn read(&self, conn: &mut RedisConnection, count: usize, block: Duration) -> Fetch {
        // BLOCK 0 would wait forever.
        let block = block.clamp(Duration::from_millis(1), self.config().read_block);
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(millis(block))
            .arg("STREAMS")
            .arg(&self.topic)
            .arg(">");
        let limit = self.config().read_block + self.shared.conn.timeout();
        match tokio::time::timeout(limit, cmd.query_async::<Value>(conn)).await {
            Err(_) => Fetch::Failed(
                Error::unavailable(format!(
                    "{} did not answer a blocking read within {limit:?}",
                    self.shared.conn.describe()
                )),
                true,
            ),
            Ok(Err(e)) if is_no_group(&e) => Fetch::NoGroup,
            Ok(Err(e)) if is_wrong_type(&e) => Fetch::Failed(not_a_stream(&self.topic), false),
            Ok(Err(e)) => Fetch::Failed(self.shared.conn.error(e), true),
            Ok(Ok(reply)) => match parse_read(reply) {
                Ok(entries) => Fetch::Entries(entries),
                Err(e) => Fetch::Failed(e, false),
            },
        }
    }

    /// One `XAUTOCLAIM` round from `cursor`, which it advances (`0-0` once the whole pending
    /// list was scanned).
    async fn reclaim(&self, cursor: &mut String, count: usize) -> Fetch {
        let mut cmd = ::redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.topic)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(millis(self.config().processing_timeout))
            .arg(cursor.as_str())
            .arg("COUNT")
            .arg(count);
        match self.shared.call::<Value>(cmd).await {
            Err(e) => Fetch::Failed(e, false),
            Ok(Err(NoGroup)) => Fetch::NoGroup,
            Ok(Ok(reply)) => match parse_autoclaim(reply) {
                Ok((next, entries, deleted)) => {
                    self.count_trimmed(deleted.len());
                    *cursor = next;
                    Fetch::Entries(entries)
                }
                Err(e) => Fetch::Failed(e, false),
            },
        }
    }

    fn count_trimmed(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.shared
            .trimmed
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
        tracing::warn!(
            component = %self.shared.name, topic = %self.topic, group = %self.group, count = n,
            "pending messages were trimmed from the stream before they were acknowledged; \
             they are lost"
        );
    }

    /// Delete the group's consumers that are empty and idle for longer than any live one can
    /// be.
    async fn remove_dead_consumers(&self) {
        match self
            .shared
            .remove_idle_consumers(
                &self.topic,
                &self.group,
                self.config().consumer_expiry,
                None,
            )
            .await
        {
            Ok(removed) if !removed.is_empty() => tracing::info!(
                component = %self.shared.name, topic = %self.topic, group = %self.group,
                removed = ?removed, "removed idle consumers with nothing pending"
            ),
            Ok(_) => {}
            Err(error) => tracing::debug!(
                component = %self.shared.name, topic = %self.topic, group = %self.group,
                %error, "removing idle consumers failed"
            ),
        }
    }

    /// Hand `entries` out, one permit each; what cannot be handed out (the receiver is gone)
    /// is given back. Returns `false` once the receiver is gone.
    async fn hand_out(
        self: &Arc<Self>,
        entries: Vec<Entry>,
        permits: &mut OwnedSemaphorePermit,
        tx: &mpsc::Sender<Delivery>,
    ) -> bool {
        let mut entries = entries.into_iter();
        while let Some(entry) = entries.next() {
            let Some(fields) = entry.fields else {
                // Claimed but deleted from the stream (Redis before 7.0 reports them so).
                self.count_trimmed(1);
                let _ = self.ack(&entry.id).await;
                continue;
            };
            let Some(permit) = permits.split(1) else {
                // More entries than permits: Redis never answers so, but stay within bounds.
                let rest: Vec<String> = std::iter::once(entry.id)
                    .chain(entries.map(|e| e.id))
                    .collect();
                self.give_back_now(&rest).await;
                return true;
            };
            lock(&self.held).insert(entry.id.clone());
            let delivery = Delivery {
                message: message(&self.topic, &entry.id, fields),
                acker: Box::new(RedisAcker {
                    sub: Arc::clone(self),
                    id: entry.id,
                    settled: false,
                    permit: Some(permit),
                }),
            };
            if tx.send(delivery).await.is_err() {
                // The returned delivery was dropped, which gave it back.
                let rest: Vec<String> = entries.map(|e| e.id).collect();
                if !rest.is_empty() {
                    self.give_back_now(&rest).await;
                }
                return false;
            }
        }
        true
    }

    /// Give `ids` back for immediate redelivery and wake the group.
    async fn give_back_now(&self, ids: &[String]) {
        let result = self.give_back(ids, self.config().processing_timeout).await;
        if let Err(error) = result {
            tracing::warn!(
                component = %self.shared.name, topic = %self.topic, group = %self.group,
                count = ids.len(), %error,
                "giving messages back failed; they are redelivered after processingTimeout"
            );
        }
        self.shared.wake(&self.topic, &self.group);
    }
}

/// Feed one subscription until its receiver is dropped or the component closes.
async fn pump(
    sub: Arc<Sub>,
    reader: RedisConnection,
    tx: mpsc::Sender<Delivery>,
    in_flight: Arc<Semaphore>,
) {
    let shared = Arc::clone(&sub.shared);
    let config = &shared.config;
    let mut reader = Some(reader);
    // The first pass takes over what dead consumers left, before anything new is read.
    let mut reclaim_due = true;
    let mut cursor = String::from("0-0");
    let mut next_reclaim = Instant::now() + config.redeliver_interval;
    let mut next_cleanup = Instant::now();
    let mut backoff = BACKOFF.0;
    loop {
        let mut permits = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break,
            _ = tx.closed() => break,
            _ = sub.wake.notified() => {
                reclaim_due = true;
                continue;
            }
            _ = tokio::time::sleep_until(next_reclaim) => {
                reclaim_due = true;
                next_reclaim = Instant::now() + config.redeliver_interval;
                continue;
            }
            _ = tokio::time::sleep_until(next_cleanup) => {
                next_cleanup = Instant::now() + config.consumer_expiry / 2;
                sub.remove_dead_consumers().await;
                continue;
            }
            permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let free = u32::try_from(in_flight.available_permits()).unwrap_or(u32::MAX);
        if free > 0
            && let Ok(more) = Arc::clone(&in_flight).try_acquire_many_owned(free)
        {
            permits.merge(more);
        }
        let count = permits.num_permits();
        let fetch = if reclaim_due {
            let fetch = tokio::select! {
                biased;
                _ = shared.shutdown.cancelled() => break,
                fetch = sub.reclaim(&mut cursor, count) => fetch,
            };
            // Not done until the cursor went round the whole pending list.
            reclaim_due = !matches!(fetch, Fetch::Entries(_)) || cursor != "0-0";
            fetch
        } else {
            let conn = match reader.take() {
                Some(conn) => Ok(conn),
                None => tokio::select! {
                    biased;
                    _ = shared.shutdown.cancelled() => break,
                    conn = shared.conn.dedicated(config.read_block + shared.conn.timeout()) => conn,
                },
            };
            match conn {
                Err(error) => Fetch::Failed(error, true),
                Ok(mut conn) => {
                    // Back in time for the next reclaim pass.
                    let block = next_reclaim.saturating_duration_since(Instant::now());
                    let fetch = tokio::select! {
                        biased;
                        _ = shared.shutdown.cancelled() => break,
                        fetch = sub.read(&mut conn, count, block) => fetch,
                    };
                    if !matches!(fetch, Fetch::Failed(_, true)) {
                        reader = Some(conn);
                    }
                    fetch
                }
            }
        };
        let error = match fetch {
            Fetch::Entries(entries) => {
                backoff = BACKOFF.0;
                if !sub.hand_out(entries, &mut permits, &tx).await {
                    break;
                }
                continue;
            }
            Fetch::NoGroup => {
                if tx.is_closed() {
                    break;
                }
                drop(permits);
                cursor = String::from("0-0");
                match shared.recreate_group(&sub.topic, &sub.group).await {
                    Ok(()) => continue,
                    Err(error) => error,
                }
            }
            Fetch::Failed(error, _) => {
                drop(permits);
                error
            }
        };
        if error.kind() == ErrorKind::InvalidArgument {
            // The topic's key was replaced by something that is not a stream: ending the
            // subscription lets the runtime report it (resubscribing fails the same way).
            tracing::error!(
                component = %shared.name, topic = %sub.topic, group = %sub.group, %error,
                "ending the subscription"
            );
            break;
        }
        tracing::warn!(
            component = %shared.name, topic = %sub.topic, group = %sub.group,
            %error, retry_in_ms = millis(backoff), "reading the stream failed; retrying"
        );
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tx.closed() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
    shared.unregister(&sub.topic, &sub.group, &sub.wake);
    sub.ended.cancel();
    tracing::debug!(
        component = %shared.name, topic = %sub.topic, group = %sub.group,
        consumer = %sub.consumer, "subscription ended"
    );
}

/// Renew the subscription's held entries every third of `processingTimeout`, for as long
/// as it holds any: after the subscription ended too, until the last one is settled. Then
/// remove its consumer if nothing is pending on it.
async fn renew_held(sub: Arc<Sub>) {
    let every = sub.config().processing_timeout / 3;
    let shutdown = sub.shared.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = sub.ended.cancelled(), if !sub.ended.is_cancelled() => {}
            _ = tokio::time::sleep(every) => {}
        }
        if lock(&sub.held).is_empty() {
            if sub.ended.is_cancelled() {
                break;
            }
            continue;
        }
        sub.renew().await;
    }
    let removed = sub
        .shared
        .remove_idle_consumers(&sub.topic, &sub.group, Duration::ZERO, Some(&sub.consumer))
        .await;
    if let Err(error) = removed {
        tracing::debug!(
            component = %sub.shared.name, topic = %sub.topic, group = %sub.group,
            consumer = %sub.consumer, %error, "removing the ended subscription's consumer failed"
        );
    }
}

/// Settles one delivery; holds a permit of its subscription's in-flight budget.
struct RedisAcker {
    sub: Arc<Sub>,
    id: String,
    /// Set once settled (or given back), so that `Drop` does nothing more.
    settled: bool,
    /// Released when the acker is dropped; after a drop, once the message is given back,
    /// so that a message later in the stream does not overtake it.
    permit: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for RedisAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAcker")
            .field("topic", &self.sub.topic)
            .field("group", &self.sub.group)
            .field("id", &self.id)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisAcker {
    // At least once: a delivery dropped unsettled is given back for prompt redelivery.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let id = std::mem::take(&mut self.id);
        let sub = Arc::clone(&self.sub);
        let permit = self.permit.take();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if !sub.shared.shutdown.is_cancelled() => {
                handle.spawn(async move {
                    sub.give_back_now(&[id]).await;
                    drop(permit);
                });
            }
            // No way to reach Redis: no longer renewed, it is taken over after
            // processingTimeout.
            _ => {
                lock(&sub.held).remove(&id);
            }
        }
    }
}

#[async_trait]
impl Acknowledger for RedisAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        // On failure the acker is dropped unsettled, which gives the message back.
        self.sub.ack(&self.id).await?;
        self.settled = true;
        Ok(())
    }

    async fn nack(mut self: Box<Self>) -> Result<()> {
        self.settled = true;
        let sub = Arc::clone(&self.sub);
        let id = std::mem::take(&mut self.id);
        let result = sub.give_back(&[id], sub.config().processing_timeout).await;
        sub.shared.wake(&sub.topic, &sub.group);
        result
    }

    /// Redis sets the entry's idle time so that it becomes claimable after `delay`; a delay
    /// beyond `processingTimeout` keeps the entry held (and renewed) for the difference
    /// first. Either way the in-flight permit is released now.
    async fn nack_after(mut self: Box<Self>, delay: Duration) -> Result<()> {
        self.settled = true;
        let sub = Arc::clone(&self.sub);
        let id = std::mem::take(&mut self.id);
        let timeout = sub.config().processing_timeout;
        if delay < timeout {
            let result = sub.give_back(&[id], timeout - delay).await;
            sub.wake_after(delay);
            return result;
        }
        let shutdown = sub.shared.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay - timeout) => {}
            }
            if let Err(error) = sub.give_back(&[id], Duration::ZERO).await {
                tracing::warn!(
                    component = %sub.shared.name, topic = %sub.topic, group = %sub.group,
                    %error, "giving a message back failed; it is redelivered after processingTimeout"
                );
            }
            sub.wake_after(timeout);
        });
        Ok(())
    }
}

/// The message an entry carries. Entries Dapr wrote have `data` and maybe `metadata`.
fn message(topic: &str, id: &str, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Message {
    let mut data = Bytes::new();
    let mut metadata = Metadata::new();
    let mut content_type = String::new();
    for (name, value) in fields {
        match name.as_slice() {
            n if n == DATA.as_bytes() => data = Bytes::from(value),
            n if n == METADATA.as_bytes() => match parse_metadata(&value) {
                Some(m) => metadata = m,
                None => tracing::warn!(
                    topic,
                    id,
                    "the entry's metadata field is not a JSON object; delivered without it"
                ),
            },
            n if n == CONTENT_TYPE.as_bytes() => {
                content_type = String::from_utf8_lossy(&value).into_owned();
            }
            _ => {}
        }
    }
    Message {
        id: id.to_owned(),
        topic: topic.to_owned(),
        data,
        content_type,
        metadata,
    }
}

/// A JSON object as metadata; values that are not strings keep their JSON text.
fn parse_metadata(raw: &[u8]) -> Option<Metadata> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(raw).ok()?;
    Some(
        map.into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
    )
}

fn unexpected(what: &str) -> Error {
    Error::internal(format!("redis: an unexpected reply to {what}"))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn into_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// `[id, [field, value, ...] | nil]`.
fn parse_entry(value: Value) -> Result<Entry> {
    let Value::Array(parts) = value else {
        return Err(unexpected("a stream entry"));
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .as_ref()
        .and_then(text)
        .ok_or_else(|| unexpected("a stream entry id"))?;
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(Value::Array(flat)) => {
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                let (Some(name), Some(value)) = (into_bytes(name), into_bytes(value)) else {
                    return Err(unexpected("a stream entry's fields"));
                };
                fields.push((name, value));
            }
            Some(fields)
        }
        Some(Value::Map(pairs)) => {
            let mut fields = Vec::with_capacity(pairs.len());
            for (name, value) in pairs {
                let (Some(name), Some(value)) = (into_bytes(name), into_bytes(value)) else {
                    return Err(unexpected("a stream entry's fields"));
                };
                fields.push((name, value));
            }
            Some(fields)
        }
        Some(_) => return Err(unexpected("a stream entry's fields")),
    };
    Ok(Entry { id, fields })
}

fn parse_entries(value: Value) -> Result<Vec<Entry>> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(parse_entry).collect(),
        _ => Err(unexpected("a list of stream entries")),
    }
}

/// `XREADGROUP`'s reply: nil, or `[[stream, entries]]` (a map in RESP3).
fn parse_read(value: Value) -> Result<Vec<Entry>> {
    let streams: Vec<Value> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.remove(1)),
                _ => Err(unexpected("XREADGROUP")),
            })
            .collect::<Result<_>>()?,
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        _ => return Err(unexpected("XREADGROUP")),
    };
    let mut out = Vec::new();
    for entries in streams {
        out.extend(parse_entries(entries)?);
    }
    Ok(out)
}

/// `XAUTOCLAIM`'s reply: `[next cursor, claimed entries, deleted ids]` (no deleted ids before
/// Redis 7.0).
fn parse_autoclaim(value: Value) -> Result<(String, Vec<Entry>, Vec<String>)> {
    let Value::Array(parts) = value else {
        return Err(unexpected("XAUTOCLAIM"));
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .as_ref()
        .and_then(text)
        .ok_or_else(|| unexpected("XAUTOCLAIM"))?;
    let entries = parse_entries(parts.next().unwrap_or(Value::Nil))?;
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    Ok((cursor, entries, deleted))
}
