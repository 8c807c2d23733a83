//! The pub/sub building block: CloudEvent envelopes on publish; subscriptions from the app
//! callback, declarative resources and streaming clients; delivery with retries, backoff,
//! dead letters and parking, per the outcome table in the architecture; topic scopes
//! ([`scopes`]) on every publish and every subscription.

pub mod cloudevent;
mod delivery;
pub mod routes;
pub mod scopes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use plinth_core::component::pubsub::PublishRequest;
use plinth_core::metadata::{parse_bool, parse_duration};
use plinth_core::{Error, Metadata, Result};
use tokio::sync::Semaphore;

pub use cloudevent::TopicEvent;
pub use delivery::SubscriptionHandle;
use scopes::Access;

use crate::components::ComponentHost;
use crate::metrics::{SharedMetrics, TopicLabels};

/// What a subscriber answered for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed: acknowledge.
    Success,
    /// Failed for now: redeliver with backoff.
    Retry,
    /// Never processable: dead-letter, or acknowledge and count.
    Drop,
    /// The app has no handler (gRPC UNIMPLEMENTED): acknowledge, no dead letter.
    Unimplemented,
    /// The subscriber failed (connection refused, timeout, bad answer): like RETRY.
    Error(String),
    /// The subscriber is gone for good (a closed stream): give the message back to the
    /// broker for another subscriber, without counting an attempt.
    Gone,
}

impl Outcome {
    /// An HTTP subscriber's status word (`SUCCESS`, `RETRY`, `DROP`; empty is SUCCESS).
    pub fn from_status_word(status: &str) -> Outcome {
        match status.to_ascii_uppercase().as_str() {
            "" | "SUCCESS" => Outcome::Success,
            "RETRY" => Outcome::Retry,
            "DROP" => Outcome::Drop,
            other => Outcome::Error(format!("the subscriber answered unknown status {other:?}")),
        }
    }

    /// An HTTP subscriber's answer: 404 drops, another non-2xx retries, and a 2xx body's
    /// `status` word decides (an empty or unparsable body is a success).
    pub fn from_http(status: u16, body: &[u8]) -> Outcome {
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default)]
            status: String,
        }
        match status {
            404 => Outcome::Drop,
            200..=299 => match serde_json::from_slice::<Reply>(body) {
                Err(_) => Outcome::Success,
                Ok(reply) => Outcome::from_status_word(&reply.status),
            },
            other => Outcome::Error(format!("the subscriber answered HTTP {other}")),
        }
    }
}

/// Receives events for a subscription: the app callback, a streaming client, a function.
#[async_trait]
pub trait EventHandler: Send + Sync + std::fmt::Debug + 'static {
    /// Deliver one event and report the outcome.
    async fn handle(&self, event: TopicEvent) -> Outcome;
}

/// Subscription metadata keys Plinth reads (Layotto's TopicSubscription has no dead-letter
/// field, so these travel in its metadata, or in a declarative Subscription).
pub mod keys {
    /// Where events go after their last attempt, or when dropped.
    pub const DEAD_LETTER_TOPIC: &str = "deadLetterTopic";
    /// Attempts before dead-lettering or parking (default 5).
    pub const MAX_ATTEMPTS: &str = "maxDeliveryAttempts";
    /// First wait before a redelivery (default 200ms); doubles per attempt.
    pub const RETRY_INITIAL: &str = "retryInitialInterval";
    /// Largest wait between redeliveries, and the interval of parked messages (default 10s).
    pub const RETRY_MAX: &str = "retryMaxInterval";
    /// Unacknowledged events in flight for this subscription (default 32).
    pub const MAX_IN_FLIGHT: &str = "maxInFlight";
    /// Deliver the broker's bytes as they are, without CloudEvent parsing on publish.
    pub const RAW_PAYLOAD: &str = super::cloudevent::RAW_PAYLOAD;
}

/// A subscription's delivery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    /// Dead-letter topic, on the same pub/sub component.
    pub dead_letter_topic: Option<String>,
    /// Attempts before dead-lettering or parking.
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Largest backoff, and the parked retry interval.
    pub max_backoff: Duration,
    /// Events in flight.
    pub max_in_flight: usize,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            dead_letter_topic: None,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_in_flight: 32,
        }
    }
}

impl DeliveryPolicy {
    /// Read the policy from subscription metadata, naming a bad key.
    pub fn from_metadata(metadata: &Metadata) -> Result<Self> {
        let mut p = Self::default();
        let get = |k: &str| metadata.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        if let Some(t) = get(keys::DEAD_LETTER_TOPIC) {
            p.dead_letter_topic = Some(t.to_string());
        }
        if let Some(v) = get(keys::MAX_ATTEMPTS) {
            p.max_attempts = v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "subscription metadata {}: {v:?} is not a positive integer",
                    keys::MAX_ATTEMPTS
                ))
            })?;
        }
        let duration = |k: &str, default: Duration| -> Result<Duration> {
            match get(k) {
                None => Ok(default),
                Some(v) => parse_duration(v).filter(|d| !d.is_zero()).ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "subscription metadata {k}: {v:?} is not a duration"
                    ))
                }),
            }
        };
        p.initial_backoff = duration(keys::RETRY_INITIAL, p.initial_backoff)?;
        p.max_backoff = duration(keys::RETRY_MAX, p.max_backoff)?.max(p.initial_backoff);
        if let Some(v) = get(keys::MAX_IN_FLIGHT) {
            p.max_in_flight = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "subscription metadata {}: {v:?} must be between 1 and 10000",
                        keys::MAX_IN_FLIGHT
                    ))
                })?;
        }
        Ok(p)
    }
}

/// One event of a bulk publish.
#[derive(Debug, Clone, Default)]
pub struct BulkEntry {
    /// The caller's id for the entry, echoed in failures.
    pub entry_id: String,
    /// The payload.
    pub event: Vec<u8>,
    /// Its content type.
    pub content_type: String,
    /// Entry metadata, over the request's.
    pub metadata: Metadata,
}

/// A subscription to start.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// Subscription metadata, passed to the component.
    pub metadata: Metadata,
    /// Delivery settings.
    pub policy: DeliveryPolicy,
}

impl SubscriptionSpec {
    /// A subscription from what every source gives (app callback, declarative resource,
    /// streaming request): an explicit dead-letter topic, when given, is folded into the
    /// metadata, and the delivery policy is read from it. Errors name the bad key.
    pub fn new(
        pubsub: String,
        topic: String,
        mut metadata: Metadata,
        dead_letter_topic: Option<String>,
    ) -> Result<Self> {
        if pubsub.is_empty() {
            return Err(Error::invalid_argument("pubsub name is empty"));
        }
        if let Some(dlq) = dead_letter_topic.filter(|t| !t.is_empty()) {
            metadata.insert(keys::DEAD_LETTER_TOPIC.into(), dlq);
        }
        let policy = DeliveryPolicy::from_metadata(&metadata)?;
        Ok(Self {
            pubsub,
            topic,
            metadata,
            policy,
        })
    }
}

/// The pub/sub API every front door calls.
#[derive(Debug, Clone)]
pub struct PubSubApi {
    host: Arc<ComponentHost>,
    app_id: Arc<str>,
    metrics: SharedMetrics,
    app_concurrency: Option<Arc<Semaphore>>,
}

impl PubSubApi {
    /// Pub/sub over the host's components for app `app_id`. `app_concurrency` bounds all
    /// calls to the app together (deliveries and invocations).
    pub fn new(
        host: Arc<ComponentHost>,
        app_id: &str,
        metrics: SharedMetrics,
        app_concurrency: Option<Arc<Semaphore>>,
    ) -> Self {
        Self {
            host,
            app_id: app_id.into(),
            metrics,
            app_concurrency,
        }
    }

    /// The app id events are published as.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Publish many events to one topic. Entry ids must be non-empty and unique; an unusable
    /// pub/sub fails the whole call; otherwise each entry is published on its own (each
    /// wrapped as [`PubSubApi::publish`] does, with the request metadata under the entry's)
    /// and the entries that failed come back with their errors. Entries are published
    /// concurrently, so their order on the broker is not guaranteed.
    pub async fn bulk_publish(
        &self,
        pubsub: &str,
        topic: &str,
        entries: Vec<BulkEntry>,
        metadata: Metadata,
    ) -> Result<Vec<(String, Error)>> {
        if topic.is_empty() {
            return Err(Error::invalid_argument("topic is empty"));
        }
        let mut ids = std::collections::HashSet::new();
        for entry in &entries {
            if entry.entry_id.is_empty() {
                return Err(Error::invalid_argument("an entry has an empty entryId"));
            }
            if !ids.insert(entry.entry_id.as_str()) {
                return Err(Error::invalid_argument(format!(
                    "entryId {:?} is not unique",
                    entry.entry_id
                )));
            }
        }
        self.authorize(Access::Publish, pubsub, topic)?;
        self.host.pubsub(pubsub)?;
        let publishes = entries.into_iter().map(|entry| {
            let mut md = metadata.clone();
            md.extend(entry.metadata);
            async move {
                self.publish(pubsub, topic, &entry.event, &entry.content_type, md)
                    .await
                    .err()
                    .map(|e| (entry.entry_id, e))
            }
        });
        Ok(futures::future::join_all(publishes)
            .await
            .into_iter()
            .flatten()
            .collect())
    }

    /// Publish an event: wrapped in a CloudEvent unless `rawPayload` is set. Returns once the
    /// broker has accepted it.
    pub async fn publish(
        &self,
        pubsub: &str,
        topic: &str,
        data: &[u8],
        content_type: &str,
        metadata: Metadata,
    ) -> Result<()> {
        if topic.is_empty() {
            return Err(Error::invalid_argument("topic is empty"));
        }
        self.authorize(Access::Publish, pubsub, topic)?;
        let handle = self.host.pubsub(pubsub)?;
        let raw = match metadata.get(keys::RAW_PAYLOAD) {
            Some(v) => parse_bool(keys::RAW_PAYLOAD, v)?,
            None => false,
        };
        let (data, content_type) = if raw {
            (Bytes::copy_from_slice(data), content_type.to_string())
        } else {
            cloudevent::envelope(&cloudevent::Publication {
                app_id: &self.app_id,
                pubsub,
                topic,
                data,
                content_type,
                metadata: &metadata,
            })?
        };
        self.publish_bytes(
            pubsub.to_string(),
            topic.to_string(),
            data,
            content_type,
            metadata,
            handle,
        )
        .await
    }

    // Owned arguments and a boxed future: delivery tasks call this, and futures borrowing
    // across the generic policy call trip rustc's higher-ranked `Send` inference.
    fn publish_bytes(
        &self,
        pubsub: String,
        topic: String,
        data: Bytes,
        content_type: String,
        metadata: Metadata,
        handle: crate::components::Handle<dyn plinth_core::component::PubSub>,
    ) -> futures::future::BoxFuture<'static, Result<()>> {
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let req = PublishRequest {
                topic: topic.clone(),
                data,
                content_type,
                metadata,
            };
            handle
                .call("publish", req, |c, r| async move { c.publish(r).await })
                .await?;
            metrics
                .published
                .get_or_create(&TopicLabels { pubsub, topic })
                .inc();
            Ok(())
        })
    }

    /// Check a topic against the pub/sub's topic scopes for this app. A pub/sub that does not
    /// exist passes: the call that follows reports it.
    fn authorize(&self, access: Access, pubsub: &str, topic: &str) -> Result<()> {
        match self.host.get(pubsub) {
            Some(hosted) => {
                hosted
                    .settings()
                    .topic_scopes
                    .check(access, pubsub, &self.app_id, topic)
            }
            None => Ok(()),
        }
    }

    /// Whether a subscription may start: a topic, a dead-letter topic other than it, the
    /// right to subscribe to the topic, and the right to publish to the dead-letter topic
    /// (checked now rather than when the first event fails, which would leave it
    /// redelivered forever).
    fn admit(&self, spec: &SubscriptionSpec) -> Result<()> {
        if spec.topic.is_empty() {
            return Err(Error::invalid_argument("topic is empty"));
        }
        if spec.policy.dead_letter_topic.as_deref() == Some(spec.topic.as_str()) {
            return Err(Error::invalid_argument(format!(
                "dead-letter topic {:?} is the subscribed topic itself",
                spec.topic
            )));
        }
        self.authorize(Access::Subscribe, &spec.pubsub, &spec.topic)?;
        if let Some(dlq) = &spec.policy.dead_letter_topic {
            self.authorize(Access::Publish, &spec.pubsub, dlq)
                .map_err(|e| e.context("dead-letter topic"))?;
        }
        Ok(())
    }

    /// Subscribe `handler` to a topic, failing now if the subscription cannot be opened (a
    /// streaming client gets the error). Once open, delivery survives the component ending
    /// the subscription: it is reopened with backoff. It runs until the handle is dropped.
    pub async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<SubscriptionHandle> {
        self.admit(&spec)?;
        let first = delivery::open_now(self, &spec).await?;
        Ok(delivery::start(self.clone(), spec, handler, Some(first)))
    }

    /// Subscribe `handler` to a topic for as long as the handle lives, opening the
    /// subscription in the background and retrying while the component is not UP (for the
    /// app callback and declarative subscriptions: the backend may come up after Plinth).
    /// Only a request that can never succeed (no such pub/sub, empty topic) is an error.
    pub fn subscribe_durably(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<SubscriptionHandle> {
        self.admit(&spec)?;
        if self.host.get(&spec.pubsub).is_none() {
            // Reuse the host's message, which lists the configured pub/subs.
            self.host.pubsub(&spec.pubsub)?;
        }
        Ok(delivery::start(self.clone(), spec, handler, None))
    }

    /// Publish an event's original envelope to a dead-letter topic.
    fn dead_letter(
        &self,
        pubsub: &str,
        topic: &str,
        event: &TopicEvent,
    ) -> futures::future::BoxFuture<'static, Result<()>> {
        let handle = match self
            .authorize(Access::Publish, pubsub, topic)
            .and_then(|()| self.host.pubsub(pubsub))
        {
            Ok(h) => h,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let mut metadata = Metadata::new();
        metadata.insert(keys::RAW_PAYLOAD.into(), "true".into());
        self.publish_bytes(
            pubsub.to_string(),
            topic.to_string(),
            event.raw.clone(),
            event.raw_content_type.clone(),
            metadata,
            handle,
        )
    }
}

#[cfg(test)]
mod tests;
