//! `pubsub.rabbitmq`: RabbitMQ over AMQP 0-9-1, with Dapr's layout.
//!
//! Data layout: one exchange per topic (named as the topic, of kind `exchangeKind`, fanout by
//! default) and one queue per consumer group and topic, `{group}-{topic}` (or the
//! subscription's `queueName`), bound to the exchange. Subscribers of a group share its queue
//! and so compete; every group's queue gets every message. Exchanges and queues are durable
//! and not auto-deleted by default, so a group keeps what is published while its subscribers
//! are away. With `enableDeadLetter`, what the broker itself drops from a queue (expired or
//! overflowing messages) goes to the fanout exchange `dlx-{queue}` and its queue
//! `dlq-{queue}`.
//!
//! One AMQP connection per component, opened by `init` and again, lazily and with backoff,
//! by the first call after it failed. Publishing goes through one channel in confirm mode:
//! each publish waits for its own broker ack. Declarations go through a second channel, so a
//! refused declaration never breaks the publishing channel, and are cached per connection.
//! Each subscription has a channel of its own with `basic.qos(prefetch = max_in_flight)` and
//! manual acknowledgements; when that channel or the connection closes, the subscription
//! ends and the building block subscribes again.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, ConnectionProperties};
use plinth_core::component::pubsub::{
    Acknowledger, Delivery, Message, PubSub, PubSubFeatures, PublishRequest, SubscribeRequest,
    Subscription,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, ErrorKind, Metadata, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use self::config::{Config, ExchangeKind, MAX_NAME_BYTES, SubscriptionOptions, parse_ttl};
use super::common::{check_publish, check_subscribe};
use crate::util::lock;

mod config;
#[cfg(test)]
mod tests;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "pubsub.rabbitmq";

/// The first wait after a failed connection attempt; it doubles up to
/// `reconnectWaitSeconds`.
const FIRST_RECONNECT_WAIT: Duration = Duration::from_millis(250);
/// Room left in a frame for the properties other than the headers.
const FRAME_OVERHEAD: usize = 4096;

/// Build a `pubsub.rabbitmq` broker from its metadata; connects only in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    Ok(Instance::PubSub(Arc::new(RabbitMqPubSub::new(
        spec.name.clone(),
        config,
    ))))
}

/// A RabbitMQ broker reached over one AMQP connection.
pub struct RabbitMqPubSub {
    inner: Arc<Inner>,
}

impl fmt::Debug for RabbitMqPubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqPubSub")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .field(
                "connected",
                &lock(&self.inner.current)
                    .as_ref()
                    .is_some_and(|l| l.alive()),
            )
            .field("closed", &self.inner.shutdown.is_cancelled())
            .finish()
    }
}

impl Drop for RabbitMqPubSub {
    fn drop(&mut self) {
        // Subscription tasks hold the inner state; this ends them.
        self.inner.shutdown.cancel();
    }
}

struct Inner {
    name: String,
    config: Config,
    /// The connection, once one was made; replaced when it fails.
    current: Mutex<Option<Arc<Link>>>,
    /// Serialises connection attempts and spaces them out after failures.
    connecting: tokio::sync::Mutex<Retry>,
    warned_confirm: AtomicBool,
    shutdown: CancellationToken,
}

/// When the next connection attempt may be made, after failed ones.
#[derive(Debug, Default)]
struct Retry {
    failures: u32,
    not_before: Option<Instant>,
    last_error: String,
}

/// One AMQP connection with its publishing and declaring channels.
struct Link {
    connection: lapin::Connection,
    /// In confirm mode.
    publisher: tokio::sync::Mutex<Option<Channel>>,
    /// For declarations: a refused one closes this channel, not the publishing one.
    admin: tokio::sync::Mutex<Option<Channel>>,
    /// Exchanges declared on this connection.
    exchanges: Mutex<HashSet<String>>,
}

impl Link {
    fn new(connection: lapin::Connection) -> Self {
        Self {
            connection,
            publisher: tokio::sync::Mutex::new(None),
            admin: tokio::sync::Mutex::new(None),
            exchanges: Mutex::new(HashSet::new()),
        }
    }

    fn alive(&self) -> bool {
        self.connection.status().connected()
    }
}

/// An AMQP short string (exchange, queue, routing key, header key), or INVALID_ARGUMENT.
fn short(what: &str, value: &str) -> Result<ShortString> {
    ShortString::try_new(value).map_err(|_| {
        let shown: String = value.chars().take(64).collect();
        Error::invalid_argument(format!(
            "{what} {shown:?}... is {} bytes; RabbitMQ takes at most {MAX_NAME_BYTES}",
            value.len()
        ))
    })
}

/// Refuse a name RabbitMQ cannot take for an exchange or a queue, naming it.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid_argument(format!(
            "{what} {name:?} is {} bytes; RabbitMQ names take at most {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if name.starts_with("amq.") {
        return Err(Error::invalid_argument(format!(
            "{what} {name:?}: names starting with \"amq.\" are reserved by RabbitMQ"
        )));
    }
    Ok(())
}

fn metadata_value<'a>(md: &'a Metadata, key: &str) -> Option<&'a str> {
    md.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A header value as text; tables and arrays (such as the broker's `x-death`) are left out.
fn header_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::DecimalValue(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::Void => return None,
    })
}

/// Turn a delivery's properties and body into a message: the headers are the publish
/// metadata, `message_id` the id.
fn to_message(
    topic: &str,
    properties: &BasicProperties,
    data: Vec<u8>,
    properties_to_metadata: bool,
) -> Message {
    let mut metadata = Metadata::new();
    if let Some(headers) = properties.headers() {
        for (key, value) in headers.inner() {
            if let Some(text) = header_text(value) {
                if properties_to_metadata {
                    metadata.insert(format!("metadata.{key}"), text.clone());
                }
                metadata.insert(key.to_string(), text);
            }
        }
    }
    let text = |v: &Option<ShortString>| v.as_ref().map(ShortString::to_string);
    if properties_to_metadata {
        for (key, value) in [
            ("metadata.messageid", text(properties.message_id())),
            ("metadata.correlationid", text(properties.correlation_id())),
            ("metadata.type", text(properties.kind())),
            ("metadata.contenttype", text(properties.content_type())),
        ] {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                metadata.insert(key.to_owned(), value);
            }
        }
    }
    Message {
        id: text(properties.message_id()).unwrap_or_default(),
        topic: topic.to_owned(),
        data: Bytes::from(data),
        content_type: text(properties.content_type()).unwrap_or_default(),
        metadata,
    }
}

impl Inner {
    fn describe(&self) -> String {
        self.config.connection.describe()
    }

    fn check_open(&self) -> Result<()> {
        if self.shutdown.is_cancelled() {
            return Err(Error::unavailable(format!(
                "pubsub {:?} is closed",
                self.name
            )));
        }
        Ok(())
    }

    /// The connection if it is up.
    fn live_link(&self) -> Option<Arc<Link>> {
        let mut current = lock(&self.current);
        match current.as_ref() {
            Some(link) if link.alive() => Some(Arc::clone(link)),
            Some(_) => {
                tracing::warn!(pubsub = %self.name, broker = %self.describe(), "the rabbitmq connection was lost; reconnecting when next used");
                // Dropping it releases the dead connection's resources.
                *current = None;
                None
            }
            None => None,
        }
    }

    /// The connection, connecting when there is none. Without `now`, an attempt is only
    /// made once the wait after the last failed one is over; until then this fails at once,
    /// so calls fail fast while the broker is away.
    async fn link(&self, now: bool) -> Result<Arc<Link>> {
        self.check_open()?;
        if let Some(link) = self.live_link() {
            return Ok(link);
        }
        // Waits for an attempt under way, which the dial timeout bounds.
        let mut retry = self.connecting.lock().await;
        if let Some(link) = self.live_link() {
            return Ok(link);
        }
        self.check_open()?;
        if !now && let Some(at) = retry.not_before {
            let left = at.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Err(Error::unavailable(format!(
                    "{} is not connected; the next attempt is in {}ms (the last one failed: {})",
                    self.describe(),
                    left.as_millis(),
                    retry.last_error,
                )));
            }
        }
        match self.connect().await {
            Ok(connection) => {
                if self.shutdown.is_cancelled() {
                    // Closed while connecting.
                    let _ = self
                        .call(
                            "closing the connection",
                            connection.close(200, "closing".into()),
                        )
                        .await;
                    return Err(Error::unavailable(format!(
                        "pubsub {:?} is closed",
                        self.name
                    )));
                }
                tracing::info!(pubsub = %self.name, broker = %self.describe(), "connected to rabbitmq");
                *retry = Retry::default();
                let link = Arc::new(Link::new(connection));
                *lock(&self.current) = Some(Arc::clone(&link));
                Ok(link)
            }
            Err(err) => {
                retry.failures = retry.failures.saturating_add(1);
                let wait = FIRST_RECONNECT_WAIT
                    .saturating_mul(1 << retry.failures.saturating_sub(1).min(16))
                    .min(self.config.reconnect_wait);
                retry.not_before = Some(Instant::now() + wait);
                let prefix = format!("{}: ", self.describe());
                retry.last_error = err
                    .message()
                    .strip_prefix(&prefix)
                    .unwrap_or(err.message())
                    .to_owned();
                tracing::warn!(pubsub = %self.name, error = %err, retry_in_ms = wait.as_millis() as u64, "connecting to rabbitmq failed");
                Err(err)
            }
        }
    }

    async fn connect(&self) -> Result<lapin::Connection> {
        let settings = &self.config.connection;
        let mut properties = ConnectionProperties::default();
        if let Some(name) = &settings.client_name {
            properties = properties.with_connection_name(LongString::from(name.clone()));
        }
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| Error::internal(format!("rabbitmq client runtime: {e}")))?;
        let connect = lapin::Connection::connect_uri_with_config(
            settings.uri.clone(),
            properties,
            settings.tls.clone(),
            runtime,
        );
        match tokio::time::timeout(settings.dial_timeout, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(err)) => Err(self.error("connecting", &err)),
            Err(_) => Err(Error::unavailable(format!(
                "{} did not accept a connection within {:?}",
                self.describe(),
                settings.dial_timeout
            ))),
        }
    }

    /// An AMQP failure as Plinth's error: what the broker refused keeps its meaning, the
    /// rest (a lost connection, a closed channel) is UNAVAILABLE.
    fn error(&self, what: &str, err: &lapin::Error) -> Error {
        let kind = match err.kind() {
            lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) if what == "connecting" => {
                    ErrorKind::Unauthenticated
                }
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => ErrorKind::PermissionDenied,
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => ErrorKind::NotFound,
                AMQPErrorKind::Soft(
                    AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::RESOURCELOCKED,
                ) => ErrorKind::FailedPrecondition,
                AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE) => ErrorKind::ResourceExhausted,
                _ => ErrorKind::Unavailable,
            },
            lapin::ErrorKind::AuthProviderError(_) => ErrorKind::Unauthenticated,
            _ => ErrorKind::Unavailable,
        };
        let text = self.config.connection.redact(err.to_string());
        Error::new(kind, format!("{}: {what}: {text}", self.describe()))
    }

    /// One broker call, bounded by `timeout`.
    async fn call<T>(&self, what: &str, call: impl Future<Output = lapin::Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.error(what, &err)),
            Err(_) => Err(Error::unavailable(format!(
                "{}: {what}: no answer within {:?}",
                self.describe(),
                self.config.timeout
            ))),
        }
    }

    /// The channel in `slot`, opened (in confirm mode if asked) when it is missing or closed.
    async fn channel(
        &self,
        link: &Link,
        slot: &tokio::sync::Mutex<Option<Channel>>,
        confirm: bool,
    ) -> Result<Channel> {
        let mut slot = slot.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self
            .call("opening a channel", link.connection.create_channel())
            .await?;
        if confirm {
            self.call(
                "enabling publisher confirms",
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        }
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Declare the topic's exchange once per connection.
    async fn declare_exchange(&self, link: &Link, topic: &str) -> Result<()> {
        if lock(&link.exchanges).contains(topic) {
            return Ok(());
        }
        let channel = self.channel(link, &link.admin, false).await?;
        let options = ExchangeDeclareOptions {
            durable: self.config.durable,
            auto_delete: self.config.delete_when_unused,
            ..ExchangeDeclareOptions::default()
        };
        self.call(
            "declaring the exchange",
            channel.exchange_declare(
                short("topic", topic)?,
                self.config.exchange_kind.lapin(),
                options,
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|e| e.context(format!("topic {topic:?}")))?;
        lock(&link.exchanges).insert(topic.to_owned());
        Ok(())
    }

    /// The queue arguments Dapr sets: length limits, dead-lettering, priority, type.
    fn queue_arguments(&self, options: &SubscriptionOptions, dlx: Option<&str>) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(n) = options.max_len.or(self.config.max_len) {
            args.insert("x-max-length".into(), AMQPValue::LongLongInt(n));
        }
        if let Some(n) = options.max_len_bytes.or(self.config.max_len_bytes) {
            args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(n));
        }
        if let Some(dlx) = dlx {
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(dlx.into()),
            );
        }
        if let Some(p) = options.max_priority {
            args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(p));
        }
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(options.queue_type.as_str().into()),
        );
        if options.single_active_consumer {
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        args
    }

    /// Declare the group's queue (with its dead-letter exchange and queue when enabled) on
    /// `channel` and bind it to the topic's exchange.
    async fn declare_queue(
        &self,
        channel: &Channel,
        topic: &str,
        queue: &str,
        options: &SubscriptionOptions,
    ) -> Result<()> {
        let queue_options = |durable| QueueDeclareOptions {
            durable,
            auto_delete: self.config.delete_when_unused,
            ..QueueDeclareOptions::default()
        };
        let dlx = if self.config.enable_dead_letter {
            let dlx = format!("dlx-{queue}");
            let dlq = format!("dlq-{queue}");
            let in_dlx = |e: Error| e.context(format!("dead-letter exchange {dlx:?}"));
            self.call(
                "declaring the dead-letter exchange",
                channel.exchange_declare(
                    short("exchange", &dlx)?,
                    ExchangeKind::Fanout.lapin(),
                    ExchangeDeclareOptions {
                        durable: true,
                        auto_delete: self.config.delete_when_unused,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(in_dlx)?;
            let mut args = FieldTable::default();
            if let Some(n) = self.config.max_len {
                args.insert("x-max-length".into(), AMQPValue::LongLongInt(n));
            }
            if let Some(n) = self.config.max_len_bytes {
                args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(n));
            }
            // Kept on disk: a dead-letter queue may grow while nobody reads it.
            args.insert("x-queue-mode".into(), AMQPValue::LongString("lazy".into()));
            let in_dlq = |e: Error| e.context(format!("dead-letter queue {dlq:?}"));
            self.call(
                "declaring the dead-letter queue",
                channel.queue_declare(short("queue", &dlq)?, queue_options(true), args),
            )
            .await
            .map_err(in_dlq)?;
            self.call(
                "binding the dead-letter queue",
                channel.queue_bind(
                    short("queue", &dlq)?,
                    short("exchange", &dlx)?,
                    ShortString::default(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(in_dlq)?;
            Some(dlx)
        } else {
            None
        };
        let in_queue = |e: Error| e.context(format!("queue {queue:?}"));
        let args = self.queue_arguments(options, dlx.as_deref());
        self.call(
            "declaring the queue",
            channel.queue_declare(
                short("queue", queue)?,
                queue_options(self.config.durable),
                args,
            ),
        )
        .await
        .map_err(in_queue)?;
        for key in &options.routing_keys {
            self.call(
                "binding the queue",
                channel.queue_bind(
                    short("queue", queue)?,
                    short("topic", topic)?,
                    short("routing key", key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(in_queue)?;
        }
        Ok(())
    }

    /// Check that the broker answers, on the declaring channel.
    async fn ping_link(&self, link: &Link) -> Result<()> {
        let channel = self.channel(link, &link.admin, false).await?;
        // amq.direct exists in every vhost: a passive declaration is a cheap round trip.
        self.call(
            "ping",
            channel.exchange_declare(
                "amq.direct".into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await
    }

    /// The routing key, properties and header size of a publish, checking its metadata.
    fn outgoing(&self, req: &PublishRequest) -> Result<(ShortString, BasicProperties, usize)> {
        let md = &req.metadata;
        let mut headers = FieldTable::default();
        let mut header_bytes = 0usize;
        for (key, value) in md {
            headers.insert(
                short("publish metadata key", key)?,
                AMQPValue::LongString(value.as_str().into()),
            );
            // Key length, key, type, value length, value.
            header_bytes += 1 + key.len() + 1 + 4 + value.len();
        }
        let message_id = match metadata_value(md, "messageID") {
            Some(id) => short("metadata messageID", id)?,
            None => ShortString::from(uuid::Uuid::new_v4().to_string()),
        };
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut properties = BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(self.config.delivery_mode)
            .with_message_id(message_id)
            .with_timestamp(timestamp);
        let content_type = Some(req.content_type.trim())
            .filter(|c| !c.is_empty())
            .or_else(|| metadata_value(md, "contentType"));
        if let Some(content_type) = content_type {
            properties = properties.with_content_type(short("content type", content_type)?);
        }
        if let Some(id) = metadata_value(md, "correlationID") {
            properties = properties.with_correlation_id(short("metadata correlationID", id)?);
        }
        if let Some(kind) = metadata_value(md, "type") {
            properties = properties.with_type(short("metadata type", kind)?);
        }
        if let Some(raw) = metadata_value(md, "priority") {
            let priority: i64 = raw.parse().map_err(|_| {
                Error::invalid_argument(format!("metadata priority: {raw:?} is not an integer"))
            })?;
            properties = properties.with_priority(priority.clamp(0, 255) as u8);
        }
        let ttl = match metadata_value(md, "ttlInSeconds") {
            Some(raw) => Some(
                parse_ttl(raw)
                    .map_err(|e| Error::invalid_argument(format!("metadata ttlInSeconds: {e}")))?,
            ),
            None => self.config.ttl,
        };
        if let Some(ttl) = ttl {
            properties = properties.with_expiration(ShortString::from(ttl.as_millis().to_string()));
        }
        let routing_key = short(
            "metadata routingKey",
            metadata_value(md, "routingKey").unwrap_or_default(),
        )?;
        Ok((routing_key, properties, header_bytes))
    }

    /// Publish on the confirm channel and wait for the broker's answer.
    async fn send(
        &self,
        link: &Link,
        req: &PublishRequest,
        routing_key: ShortString,
        properties: BasicProperties,
    ) -> Result<()> {
        let channel = self.channel(link, &link.publisher, true).await?;
        let exchange = short("topic", &req.topic)?;
        let (data, timeout, publisher) = (req.data.clone(), self.config.timeout, channel.clone());
        // In a task of its own, so that a caller giving up half-way never drops lapin's
        // pending confirm (the client keeps an abandoned one until the channel closes).
        let sent = tokio::spawn(async move {
            let publish = publisher.basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions::default(),
                &data,
                properties,
            );
            let confirm = match tokio::time::timeout(timeout, publish).await {
                Ok(Ok(confirm)) => confirm,
                Ok(Err(err)) => return Sent::Failed("publishing", err),
                Err(_) => return Sent::TimedOut("publishing"),
            };
            match tokio::time::timeout(timeout, confirm).await {
                Ok(Ok(Confirmation::Ack(_))) => Sent::Acked,
                Ok(Ok(Confirmation::Nack(_))) => Sent::Nacked,
                Ok(Ok(Confirmation::NotRequested)) => Sent::Unconfirmed,
                Ok(Err(err)) => Sent::Failed("waiting for the publisher confirm", err),
                Err(_) => Sent::TimedOut("waiting for the publisher confirm"),
            }
        })
        .await
        .map_err(|e| Error::internal(format!("the publishing task failed: {e}")))?;
        match sent {
            Sent::Acked => Ok(()),
            Sent::Nacked => Err(Error::unavailable(format!(
                "{}: the broker did not accept the message for topic {:?} (it nacked the \
                 publish: a queue bound to the topic is full and rejects publishes, or the \
                 broker could not store it)",
                self.describe(),
                req.topic
            ))),
            Sent::Unconfirmed => Err(Error::internal(
                "the publishing channel is not in confirm mode",
            )),
            Sent::Failed(what, err) => Err(self.error(what, &err)),
            Sent::TimedOut(what) => {
                // A fresh channel next time; closing this one also releases the confirms
                // it still waits for.
                let stale = {
                    let mut slot = link.publisher.lock().await;
                    match slot.as_ref() {
                        Some(current) if current.id() == channel.id() => slot.take(),
                        _ => None,
                    }
                };
                if let Some(stale) = stale {
                    let _ = tokio::time::timeout(timeout, stale.close(200, "timeout".into())).await;
                }
                Err(Error::unavailable(format!(
                    "{}: {what}: no answer within {timeout:?}",
                    self.describe()
                )))
            }
        }
    }
}

/// How a publish on the confirm channel went.
enum Sent {
    Acked,
    Nacked,
    /// The channel was not in confirm mode.
    Unconfirmed,
    Failed(&'static str, lapin::Error),
    TimedOut(&'static str),
}

#[async_trait]
impl Component for RabbitMqPubSub {
    async fn init(&self) -> Result<()> {
        if !self.inner.config.publisher_confirm
            && !self.inner.warned_confirm.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(pubsub = %self.inner.name, "publisherConfirm \"false\" has no effect: every publish waits for the broker's confirm");
        }
        let link = self.inner.link(true).await?;
        self.inner.ping_link(&link).await
    }

    async fn ping(&self) -> Result<()> {
        let link = self.inner.link(false).await?;
        self.inner.ping_link(&link).await
    }

    async fn close(&self) {
        self.inner.shutdown.cancel();
        let link = lock(&self.inner.current).take();
        if let Some(link) = link
            && link.alive()
        {
            let _ = self
                .inner
                .call(
                    "closing the connection",
                    link.connection.close(200, "closing".into()),
                )
                .await;
        }
    }
}

impl RabbitMqPubSub {
    fn new(name: String, config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                config,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(Retry::default()),
                warned_confirm: AtomicBool::new(false),
                shutdown: CancellationToken::new(),
            }),
        }
    }
}

#[async_trait]
impl PubSub for RabbitMqPubSub {
    fn features(&self) -> PubSubFeatures {
        PubSubFeatures {
            ordered: true,
            durable: self.inner.config.durable_messages(),
        }
    }

    async fn publish(&self, req: PublishRequest) -> Result<()> {
        let inner = &self.inner;
        check_publish(&inner.name, &req, inner.config.max_message_bytes)?;
        check_name("topic", &req.topic)?;
        let (routing_key, properties, header_bytes) = inner.outgoing(&req)?;
        let link = inner.link(false).await?;
        let budget =
            (link.connection.configuration().frame_max() as usize).saturating_sub(FRAME_OVERHEAD);
        if header_bytes > budget {
            return Err(Error::invalid_argument(format!(
                "the publish metadata takes {header_bytes} bytes; at most {budget} fit in one \
                 AMQP frame (the broker's frame_max)"
            )));
        }
        if link.connection.status().blocked() {
            // Publishing now would make the broker stop reading this connection, acks of
            // the subscriptions included.
            return Err(Error::unavailable(format!(
                "{} blocks publishing (a memory or disk alarm)",
                inner.describe()
            )));
        }
        inner.declare_exchange(&link, &req.topic).await?;
        match inner
            .send(&link, &req, routing_key.clone(), properties.clone())
            .await
        {
            // The exchange was deleted since it was declared: declare it again, once.
            Err(err) if err.kind() == ErrorKind::NotFound => {
                lock(&link.exchanges).remove(&req.topic);
                inner.declare_exchange(&link, &req.topic).await?;
                inner.send(&link, &req, routing_key, properties).await
            }
            other => other,
        }
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Subscription> {
        let inner = &self.inner;
        let (group, max_in_flight) = check_subscribe(&req, inner.config.consumer_id.as_deref())?;
        let max_in_flight = if inner.config.single {
            1
        } else {
            max_in_flight
        };
        check_name("topic", &req.topic)?;
        let options = SubscriptionOptions::from_metadata(&req.metadata)?;
        let queue = options
            .queue_name
            .clone()
            .unwrap_or_else(|| format!("{group}-{}", req.topic));
        check_name("queue", &queue)?;
        if inner.config.enable_dead_letter {
            check_name("dead-letter queue", &format!("dlq-{queue}"))?;
        }
        let mut prefetch = max_in_flight.min(usize::from(u16::MAX));
        if inner.config.prefetch_count > 0 {
            prefetch = prefetch.min(usize::from(inner.config.prefetch_count));
        }
        let prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
        let link = inner.link(false).await?;
        inner.declare_exchange(&link, &req.topic).await?;
        // Dropped on any failure below, which closes it.
        let channel = inner
            .call("opening a channel", link.connection.create_channel())
            .await?;
        if let Err(err) = inner
            .declare_queue(&channel, &req.topic, &queue, &options)
            .await
        {
            if err.kind() == ErrorKind::NotFound {
                // The exchange was deleted since it was declared: declare it next time.
                lock(&link.exchanges).remove(&req.topic);
            }
            return Err(err);
        }
        inner
            .call(
                "setting the prefetch",
                channel.basic_qos(prefetch, BasicQosOptions::default()),
            )
            .await?;
        let tag = format!("plinth-{}", uuid::Uuid::new_v4().simple());
        let consumer = inner
            .call(
                "consuming",
                channel.basic_consume(
                    short("queue", &queue)?,
                    short("consumer tag", &tag)?,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(|e| e.context(format!("queue {queue:?}")))?;
        tracing::info!(pubsub = %inner.name, topic = %req.topic, queue = %queue, prefetch, "consuming");
        let (tx, receiver) = mpsc::channel(max_in_flight);
        let feed = Feed {
            pubsub: inner.name.clone(),
            topic: req.topic,
            queue,
            tag,
            channel,
            consumer,
            tx,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            timeout: inner.config.timeout,
            properties_to_metadata: inner.config.properties_to_metadata,
            shutdown: inner.shutdown.clone(),
        };
        tokio::spawn(feed.run());
        Ok(Subscription { receiver })
    }
}

/// Why a subscription's task stopped.
enum End {
    /// The subscriber dropped its receiver.
    Unsubscribed,
    /// The component was closed.
    Closed,
    /// The channel or the connection failed, or the broker cancelled the consumer.
    Failed,
}

/// One subscription's task: moves deliveries from the consumer to the subscriber.
struct Feed {
    pubsub: String,
    topic: String,
    queue: String,
    tag: String,
    channel: Channel,
    consumer: lapin::Consumer,
    tx: mpsc::Sender<Delivery>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    properties_to_metadata: bool,
    shutdown: CancellationToken,
}

impl Feed {
    async fn run(mut self) {
        let end = self.forward().await;
        match end {
            End::Unsubscribed => self.unsubscribe().await,
            End::Closed => {
                let _ =
                    tokio::time::timeout(self.timeout, self.channel.close(200, "closing".into()))
                        .await;
            }
            // The channel is gone, and with it the broker's record of what this subscriber
            // held: the broker has requeued it. Dropping `tx` ends the subscription.
            End::Failed => {}
        }
    }

    async fn forward(&mut self) -> End {
        loop {
            let permit = tokio::select! {
                _ = self.tx.closed() => return End::Unsubscribed,
                _ = self.shutdown.cancelled() => return End::Closed,
                permit = Arc::clone(&self.in_flight).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return End::Closed,
                },
            };
            let next = tokio::select! {
                _ = self.tx.closed() => return End::Unsubscribed,
                _ = self.shutdown.cancelled() => return End::Closed,
                next = self.consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(err)) => {
                    tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, queue = %self.queue, error = %err, "the subscription's channel failed; ending the subscription");
                    return End::Failed;
                }
                None => {
                    tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, queue = %self.queue, "the broker cancelled the consumer (was the queue deleted?); ending the subscription");
                    return End::Failed;
                }
            };
            let lapin::message::Delivery {
                delivery_tag,
                properties,
                data,
                acker,
                ..
            } = delivery;
            let message = to_message(&self.topic, &properties, data, self.properties_to_metadata);
            let acker = RabbitAcker {
                acker: Some(acker),
                delivery_tag,
                timeout: self.timeout,
                _permit: permit,
            };
            // On failure the delivery comes back in the error and is dropped: its acker
            // gives the message back.
            if self
                .tx
                .send(Delivery {
                    message,
                    acker: Box::new(acker),
                })
                .await
                .is_err()
            {
                return End::Unsubscribed;
            }
        }
    }

    /// Stop consuming, give back what the broker sent but was not handed out, let what was
    /// handed out settle, then close the channel.
    async fn unsubscribe(&mut self) {
        let cancel = self.channel.basic_cancel(
            ShortString::from(self.tag.clone()),
            BasicCancelOptions::default(),
        );
        if !matches!(tokio::time::timeout(self.timeout, cancel).await, Ok(Ok(()))) {
            // Closing the channel returns every unsettled message to the queue.
            let _ =
                tokio::time::timeout(self.timeout, self.channel.close(200, "closing".into())).await;
            return;
        }
        // After the cancel, the consumer yields what was already sent, then ends.
        let drain = async {
            while let Some(Ok(delivery)) = self.consumer.next().await {
                let requeue = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                let _ = delivery.acker.nack(requeue).await;
            }
        };
        let _ = tokio::time::timeout(self.timeout, drain).await;
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        tokio::select! {
            _ = self.in_flight.acquire_many(all) => {}
            _ = self.shutdown.cancelled() => {}
        }
        let _ = tokio::time::timeout(self.timeout, self.channel.close(200, "closing".into())).await;
        tracing::debug!(pubsub = %self.pubsub, topic = %self.topic, queue = %self.queue, "unsubscribed");
    }
}

/// Settles one delivery on its subscription's channel; holds a permit of the
/// subscription's in-flight budget.
struct RabbitAcker {
    /// `None` once settled.
    acker: Option<lapin::Acker>,
    delivery_tag: u64,
    timeout: Duration,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for RabbitAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitAcker")
            .field("delivery_tag", &self.delivery_tag)
            .field("settled", &self.acker.is_none())
            .finish_non_exhaustive()
    }
}

const REQUEUE: BasicNackOptions = BasicNackOptions {
    requeue: true,
    multiple: false,
};

impl RabbitAcker {
    async fn settle(&mut self, ack: bool) -> Result<()> {
        let Some(acker) = self.acker.take() else {
            return Ok(());
        };
        let what = if ack { "ack" } else { "nack" };
        let result = if ack {
            tokio::time::timeout(self.timeout, acker.ack(Default::default())).await
        } else {
            tokio::time::timeout(self.timeout, acker.nack(REQUEUE)).await
        };
        match result {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Error::unavailable(format!(
                "rabbitmq: {what} of delivery {}: its channel has closed, so the broker has \
                 already requeued the message",
                self.delivery_tag
            ))),
            Ok(Err(err)) => Err(Error::unavailable(format!(
                "rabbitmq: {what} of delivery {}: {err}; the broker requeues the message when \
                 the channel closes",
                self.delivery_tag
            ))),
            Err(_) => Err(Error::unavailable(format!(
                "rabbitmq: {what} of delivery {}: not sent within {:?}",
                self.delivery_tag, self.timeout
            ))),
        }
    }
}

impl Drop for RabbitAcker {
    // At least once: a delivery dropped unsettled goes back to the queue.
    fn drop(&mut self) {
        let Some(acker) = self.acker.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to send from: the broker requeues it when the channel closes.
            return;
        };
        let timeout = self.timeout;
        runtime.spawn(async move {
            let _ = tokio::time::timeout(timeout, acker.nack(REQUEUE)).await;
        });
    }
}

#[async_trait]
impl Acknowledger for RabbitAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.settle(true).await
    }

    /// RabbitMQ puts a requeued message back where it was in the queue, for this or another
    /// consumer of the group. It has no delayed requeue (without plugins), so `nack_after`
    /// holds the message, then nacks it.
    async fn nack(mut self: Box<Self>) -> Result<()> {
        self.settle(false).await
    }
}
