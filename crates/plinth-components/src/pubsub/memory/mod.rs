//! `pubsub.in-memory`: a broker in the process's memory.
//!
//! Data layout: topics → consumer groups → a bounded queue of messages. A group comes into
//! being at the first subscribe and lives as long as the broker, so a consumer that leaves
//! and comes back gets what was published meanwhile. A topic with no group keeps nothing,
//! like Dapr's in-memory broker. Subscribers of one group compete for its queue; each
//! subscription has a task that takes a message from the queue only while it has fewer than
//! `max_in_flight` unsettled deliveries. A message that is nacked, whose acknowledger is
//! dropped, or that was taken but never handed out goes back to the front of its queue,
//! ahead of every message published after it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plinth_core::component::pubsub::{
    Acknowledger, Delivery, Message, PubSub, PubSubFeatures, PublishRequest, SubscribeRequest,
    Subscription,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::common::check_subscribe;
use crate::util::lock;

mod config;
#[cfg(test)]
mod tests;

pub use config::{DEFAULT_MAX_QUEUE_LENGTH, InMemoryPubSubConfig, MAX_QUEUE_LENGTH};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "pubsub.in-memory";

/// Build a `pubsub.in-memory` broker from its metadata (`maxQueueLength`).
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = InMemoryPubSubConfig::from_spec(spec)?;
    Ok(Instance::PubSub(Arc::new(InMemoryPubSub::new(
        config.max_queue_length,
    ))))
}

/// A broker in memory with consumer groups, competing consumers and redelivery.
pub struct InMemoryPubSub {
    topics: Mutex<HashMap<String, HashMap<String, Arc<Group>>>>,
    max_queue_length: AtomicUsize,
    /// Orders messages so that returned ones go back where they were.
    next_seq: AtomicU64,
    shutdown: CancellationToken,
}

impl fmt::Debug for InMemoryPubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryPubSub")
            .field("topics", &lock(&self.topics).len())
            .field(
                "max_queue_length",
                &self.max_queue_length.load(Ordering::Relaxed),
            )
            .field("closed", &self.shutdown.is_cancelled())
            .finish()
    }
}

impl Drop for InMemoryPubSub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A message in a queue, with its place in publish order.
#[derive(Debug, Clone)]
struct Queued {
    seq: u64,
    message: Message,
}

/// One consumer group of one topic.
#[derive(Debug, Default)]
struct Group {
    /// Sorted by `seq`.
    queue: Mutex<VecDeque<Queued>>,
    ready: Notify,
}

impl Group {
    /// Take the next message, waiting for one.
    async fn next(&self) -> Queued {
        loop {
            // Registered before looking at the queue, so a push in between is not missed.
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(queued) = lock(&self.queue).pop_front() {
                return queued;
            }
            notified.await;
        }
    }

    /// Put a message back before every message published after it.
    fn give_back(&self, queued: Queued) {
        {
            let mut queue = lock(&self.queue);
            let at = queue.partition_point(|q| q.seq < queued.seq);
            queue.insert(at, queued);
        }
        self.ready.notify_waiters();
    }
}

/// Settles one delivery; holds a permit of its subscription's in-flight budget.
struct InMemoryAcker {
    group: Arc<Group>,
    /// `None` once settled.
    queued: Option<Queued>,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for InMemoryAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.queued.as_ref().map(|q| q.message.id.as_str());
        f.debug_struct("InMemoryAcker")
            .field("message_id", &id)
            .finish_non_exhaustive()
    }
}

impl Drop for InMemoryAcker {
    // At least once: a delivery dropped unsettled is delivered again.
    fn drop(&mut self) {
        if let Some(queued) = self.queued.take() {
            self.group.give_back(queued);
        }
    }
}

#[async_trait]
impl Acknowledger for InMemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.queued = None;
        Ok(())
    }

    async fn nack(self: Box<Self>) -> Result<()> {
        // Drop gives the message back.
        Ok(())
    }
}

/// Feed one subscription until its receiver is dropped or the broker closes.
async fn pull(
    group: Arc<Group>,
    tx: mpsc::Sender<Delivery>,
    in_flight: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => return,
            permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        // `next` takes a message only in the poll that returns it, so losing this race to
        // `closed` never loses a message.
        let queued = tokio::select! {
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => return,
            queued = group.next() => queued,
        };
        let message = queued.message.clone();
        let acker = InMemoryAcker {
            group: Arc::clone(&group),
            queued: Some(queued),
            _permit: permit,
        };
        // On failure the delivery comes back in the error and is dropped: its acker gives the
        // message back.
        if tx
            .send(Delivery {
                message,
                acker: Box::new(acker),
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

impl InMemoryPubSub {
    /// A broker whose consumer groups each hold at most `max_queue_length` messages.
    pub fn new(max_queue_length: usize) -> Self {
        Self {
            topics: Mutex::default(),
            max_queue_length: AtomicUsize::new(max_queue_length.max(1)),
            next_seq: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.shutdown.is_cancelled() {
            return Err(Error::unavailable("the in-memory broker is closed"));
        }
        Ok(())
    }
}

impl Default for InMemoryPubSub {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_QUEUE_LENGTH)
    }
}

#[async_trait]
impl Component for InMemoryPubSub {
    /// A new `maxQueueLength` applies to later publishes; queued messages are kept.
    async fn reconfigure(&self, spec: &ComponentSpec) -> Result<bool> {
        let config = InMemoryPubSubConfig::from_spec(spec)?;
        self.max_queue_length
            .store(config.max_queue_length.max(1), Ordering::Relaxed);
        Ok(true)
    }

    async fn close(&self) {
        self.shutdown.cancel();
    }
}

#[async_trait]
impl PubSub for InMemoryPubSub {
    fn features(&self) -> PubSubFeatures {
        PubSubFeatures {
            ordered: true,
            durable: false,
        }
    }

    async fn publish(&self, req: PublishRequest) -> Result<()> {
        self.check_open()?;
        if req.topic.is_empty() {
            return Err(Error::invalid_argument("the topic is empty"));
        }
        // The topics lock serialises publishers, so the check below still holds when the
        // message is added: consumers only shorten queues.
        let topics = lock(&self.topics);
        let Some(groups) = topics.get(&req.topic) else {
            return Ok(());
        };
        for (name, group) in groups {
            if lock(&group.queue).len() >= self.max_queue_length.load(Ordering::Relaxed) {
                return Err(Error::resource_exhausted(format!(
                    "topic {:?}: the queue of consumer group {name:?} is full ({} messages)",
                    req.topic,
                    self.max_queue_length.load(Ordering::Relaxed)
                )));
            }
        }
        let queued = Queued {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            message: Message {
                id: uuid::Uuid::new_v4().to_string(),
                topic: req.topic.clone(),
                data: req.data,
                content_type: req.content_type,
                metadata: req.metadata,
            },
        };
        for group in groups.values() {
            lock(&group.queue).push_back(queued.clone());
            group.ready.notify_waiters();
        }
        Ok(())
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Subscription> {
        self.check_open()?;
        let (group_name, max_in_flight) = check_subscribe(&req, None)?;
        let group = {
            let mut topics = lock(&self.topics);
            let groups = topics.entry(req.topic).or_default();
            Arc::clone(groups.entry(group_name).or_default())
        };
        let (tx, receiver) = mpsc::channel(max_in_flight);
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        tokio::spawn(pull(group, tx, in_flight, self.shutdown.clone()));
        Ok(Subscription { receiver })
    }
}
