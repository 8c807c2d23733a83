//! Pub/sub brokers. Components move bytes and acknowledgements; CloudEvents, retries, dead
//! letters and bounded delivery belong to the pub/sub building block.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::Component;
use crate::{Metadata, Result};

/// What a broker guarantees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PubSubFeatures {
    /// Messages of a topic are delivered in publish order to a subscriber with one in flight.
    pub ordered: bool,
    /// Messages survive a restart of the broker (and, for embedded brokers, of Plinth).
    pub durable: bool,
}

/// A message to publish. `data` is the full payload as it goes on the broker (a CloudEvent
/// envelope, unless the raw-payload option was used).
#[derive(Debug, Clone, Default)]
pub struct PublishRequest {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub data: Bytes,
    /// The payload's content type.
    pub content_type: String,
    /// Request metadata.
    pub metadata: Metadata,
}

/// A subscription request.
#[derive(Debug, Clone, Default)]
pub struct SubscribeRequest {
    /// The topic.
    pub topic: String,
    /// The consumer group: subscribers of one group compete for messages, each group gets
    /// every message. The building block passes the app id.
    pub group: String,
    /// How many unacknowledged messages the component may hand out at once.
    pub max_in_flight: usize,
    /// Subscription metadata.
    pub metadata: Metadata,
}

/// A received message.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The broker's id for the message, when it has one.
    pub id: String,
    /// The topic it came from.
    pub topic: String,
    /// The payload.
    pub data: Bytes,
    /// The payload's content type.
    pub content_type: String,
    /// Broker metadata.
    pub metadata: Metadata,
}

/// Settles one delivered message (or input-binding event) with its backend.
#[async_trait]
pub trait Acknowledger: Send + Debug {
    /// The message is done: remove it.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Give the message back for redelivery (to this or another subscriber of the group);
    /// a backend that cannot redeliver (an input binding's timer) drops it.
    async fn nack(self: Box<Self>) -> Result<()>;

    /// Give the message back, to be redelivered no sooner than `delay`: for a message whose
    /// immediate redelivery would only fail again (its dead-lettering failed). A broker that
    /// delays redelivery itself (a NATS NAK with a delay) overrides this; by default the
    /// message is held for `delay`, then nacked.
    async fn nack_after(self: Box<Self>, delay: Duration) -> Result<()> {
        tokio::time::sleep(delay).await;
        self.nack().await
    }
}

/// A message with the handle that settles it. Dropping a delivery without settling it must
/// give the message back to the broker (at least once).
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Settles it.
    pub acker: Box<dyn Acknowledger>,
}

impl Delivery {
    /// Acknowledge the message.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Return the message for redelivery.
    pub async fn nack(self) -> Result<()> {
        self.acker.nack().await
    }

    /// Return the message for redelivery no sooner than `delay`.
    pub async fn nack_after(self, delay: Duration) -> Result<()> {
        self.acker.nack_after(delay).await
    }
}

/// An open subscription: deliveries arrive on `receiver`; dropping the subscription (or its
/// receiver) stops delivery and returns unsettled messages to the broker.
#[derive(Debug)]
pub struct Subscription {
    /// Deliveries, bounded by `max_in_flight`.
    pub receiver: mpsc::Receiver<Delivery>,
}

/// A pub/sub broker.
#[async_trait]
pub trait PubSub: Component {
    /// What the broker guarantees.
    fn features(&self) -> PubSubFeatures;

    /// Publish one message. Returns only once the broker has accepted it.
    async fn publish(&self, req: PublishRequest) -> Result<()>;

    /// Subscribe a consumer of `req.group` to `req.topic`.
    async fn subscribe(&self, req: SubscribeRequest) -> Result<Subscription>;
}
