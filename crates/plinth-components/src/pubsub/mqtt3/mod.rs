//! `pubsub.mqtt3`: an MQTT 3.1.1 broker (Mosquitto, EMQX, HiveMQ, ...) with QoS 1,
//! persistent sessions and manual acknowledgements.
//!
//! Connections: one for publishing (clean session, its own client id; `publish` returns once
//! the broker's PUBACK for its packet id arrived), and one persistent session per subscribed
//! (consumer group, topic) in the process, subscribed to the shared subscription
//! `$share/{group}/{topic}` so that the replicas of an app compete for messages. The broker's
//! in-flight window (Mosquitto's `max_inflight_messages`) is per session, so one topic's
//! unsettled messages never stall another topic. Local subscriptions of the same (group,
//! topic) share the session and compete for its messages, each within its own
//! `max_in_flight`.
//!
//! Acknowledgement: a message is PUBACKed only when its delivery is acked. MQTT has no
//! negative acknowledgement, so a nack (or a delivery dropped unsettled) puts the message back
//! at the front of its session's local queue for the next local subscriber. When the last
//! local subscriber is gone and every delivery is settled, the session DISCONNECTs without
//! unsubscribing: the broker keeps the subscription, queues what is published meanwhile and
//! sends the unacknowledged messages again when the session reconnects. While a session is
//! connected (the event loop keeps it alive with PINGREQs) the broker never gives its
//! unacknowledged messages to anyone else, however long they are held.
//!
//! Every connection's event loop runs in its own task, polled continuously, and reconnects
//! with backoff. A connection lost while deliveries were out makes their acks fail: the
//! broker sends those messages again on the new connection (at least once).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use plinth_core::component::pubsub::{
    PubSub, PubSubFeatures, PublishRequest, SubscribeRequest, Subscription,
};
use plinth_core::component::{Component, Instance};
use plinth_core::metadata::parse_bool;
use plinth_core::{ComponentSpec, Error, ErrorKind, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, TlsConfiguration, Transport};
use tokio::sync::{Notify, watch};

use super::common::{check_publish, check_subscribe};
use crate::util::lock;

mod config;
mod publisher;
mod session;
#[cfg(test)]
mod tests;

pub use config::{
    CA_CERT, CLEAN_SESSION, CLIENT_CERT, CLIENT_ID, CLIENT_KEY, DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT, KEEP_ALIVE, MQTT_MAX_PACKET, QOS, RETAIN,
    SHARED_SUBSCRIPTION, TIMEOUT, URL,
};

use config::{Config, check_group};
use publisher::Publisher;
use session::Session;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "pubsub.mqtt3";

/// Build a `pubsub.mqtt3` component; the metadata is checked here, connections are made in
/// `init` (publishing) and `subscribe` (sessions).
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    Ok(Instance::PubSub(Arc::new(Mqtt3PubSub::new(spec)?)))
}

/// The first and the largest wait between connection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Whether a connection that ended had been up long enough to start the next backoff from
/// the beginning: one that comes up and is dropped again at once (a client id taken over by
/// another process, a broker that refuses after connecting) keeps backing off.
fn stayed_up(up_since: Option<std::time::Instant>) -> bool {
    up_since.is_some_and(|at| at.elapsed() >= BACKOFF.1)
}

/// Requests (publishes, acks, subscribes) queued for one connection's event loop.
const REQUEST_CAPACITY: usize = 256;
/// Unsettled messages one session holds at most: MQTT's packet ids (1 to 65535) bound the
/// messages a broker may have in flight to a client; a broker that sends more is dropped
/// and reconnected (it sends them again).
const MAX_UNSETTLED: usize = 65_535;

/// The client id of the session of `group` and `topic`: `base` plus a stable hash of the
/// two, so that each (group, topic) has its own session and finds it again after a restart.
/// `base` is `clientID`, or by default `{group}-{hostname}`.
pub fn session_client_id(base: &str, group: &str, topic: &str) -> String {
    // FNV-1a, 64 bits: stable across Rust versions and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group.bytes().chain([0]).chain(topic.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{base}-{hash:016x}")
}

/// The host's name (`HOSTNAME`, else the kernel's), part of the default client ids; read
/// once.
fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

impl Config {
    /// The base of the session client ids of `group`.
    fn session_base(&self, group: &str) -> String {
        match &self.client_id {
            Some(id) => id.clone(),
            None => format!("{group}-{}", hostname()),
        }
    }

    /// The publishing connection's client id: `clientID`, or `{appId}-{hostname}`, then
    /// `-pub-` and `random`, so that two processes never take over each other's publisher.
    fn publisher_id(&self, random: &str) -> String {
        match &self.client_id {
            Some(id) => format!("{id}-pub-{random}"),
            None => format!("{}-{}-pub-{random}", self.app_id, hostname()),
        }
    }

    /// MQTT options for one connection.
    fn options(&self, client_id: &str, clean_session: bool) -> MqttOptions {
        let mut options =
            MqttOptions::new(client_id, self.endpoint.host.clone(), self.endpoint.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(clean_session)
            .set_manual_acks(true)
            // Incoming: anything MQTT allows (a message refused here would come back on
            // every reconnect). Outgoing: publish checks sizes before queueing.
            .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET + 5)
            .set_request_channel_capacity(REQUEST_CAPACITY);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::clone(tls),
            )));
        }
        options
    }

    /// A client and its event loop, with the connect timeout applied.
    fn connection(
        &self,
        client_id: &str,
        clean_session: bool,
    ) -> (AsyncClient, rumqttc::EventLoop) {
        let (client, mut eventloop) =
            AsyncClient::new(self.options(client_id, clean_session), REQUEST_CAPACITY);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(self.timeout.as_secs_f64().ceil().max(1.0) as u64);
        // Without it, a lone small packet (a PUBLISH, a PUBACK) waits on Nagle's algorithm
        // for the previous one's ACK: about a millisecond per hop at low rates, measured.
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        (client, eventloop)
    }

    /// A connection failure, for callers and logs.
    fn describe(&self, err: &rumqttc::ConnectionError) -> (ErrorKind, String) {
        use rumqttc::ConnectReturnCode as Code;
        let kind = match err {
            rumqttc::ConnectionError::ConnectionRefused(
                Code::BadUserNamePassword | Code::NotAuthorized,
            ) => ErrorKind::Unauthenticated,
            _ => ErrorKind::Unavailable,
        };
        (kind, format!("{}: {err}", self.endpoint))
    }
}

/// The state of one connection, as `init` and `subscribe` wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// Attempt n is connecting (for a session: connecting or subscribing).
    Connecting(u64),
    /// Attempt n is connected (for a session: subscribed).
    Up(u64),
    /// Attempt n failed; another follows after a backoff.
    Down(u64, ErrorKind, String),
    /// Stopped for good.
    Closed(ErrorKind, String),
}

/// Wait until the connection is up: at once when it is, else the outcome of the attempt
/// under way or of the next one (`kick` cuts a backoff short), within `timeout`.
async fn wait_up(
    link: &watch::Sender<Link>,
    kick: &Notify,
    timeout: Duration,
    what: &str,
) -> Result<()> {
    let mut rx = link.subscribe();
    let start = rx.borrow_and_update().clone();
    if matches!(start, Link::Up(_)) {
        return Ok(());
    }
    kick.notify_one();
    let outcome = tokio::time::timeout(
        timeout,
        rx.wait_for(|now| match now {
            Link::Up(_) | Link::Closed(..) => true,
            Link::Connecting(_) => false,
            Link::Down(..) => *now != start,
        }),
    )
    .await;
    match outcome {
        Ok(Ok(now)) => match &*now {
            Link::Up(_) => Ok(()),
            Link::Down(_, kind, reason) | Link::Closed(kind, reason) => {
                Err(Error::new(*kind, format!("{what}: {reason}")))
            }
            Link::Connecting(_) => Err(Error::unavailable(format!("{what}: not connected"))),
        },
        Ok(Err(_)) => Err(Error::unavailable(format!("{what}: closed"))),
        Err(_) => Err(Error::unavailable(format!(
            "{what}: no connection within {timeout:?}"
        ))),
    }
}

/// The sessions of a component, by (group, topic).
type Sessions = Mutex<HashMap<(String, String), Arc<Session>>>;

/// An MQTT 3.1.1 broker with shared subscriptions, persistent sessions and manual acks.
pub struct Mqtt3PubSub {
    config: Arc<Config>,
    publisher: Publisher,
    sessions: Sessions,
    closed: AtomicBool,
}

impl fmt::Debug for Mqtt3PubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mqtt3PubSub")
            .field("config", &self.config)
            .field("publisher", &self.publisher)
            .field("sessions", &lock(&self.sessions).len())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Mqtt3PubSub {
    /// A component from its spec; nothing connects yet.
    pub fn new(spec: &ComponentSpec) -> Result<Self> {
        let config = Arc::new(Config::from_spec(spec)?);
        if config.clean_session {
            tracing::warn!(pubsub = %config.name, "cleanSession is true: subscriptions and unacknowledged messages are lost whenever a session disconnects (not durable, not at least once across disconnects)");
        }
        Ok(Self {
            publisher: Publisher::new(Arc::clone(&config)),
            config,
            sessions: Mutex::default(),
            closed: AtomicBool::new(false),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::unavailable(format!(
                "pubsub {:?} is closed",
                self.config.name
            )));
        }
        Ok(())
    }

    /// The session of (group, topic), joined as one more local subscriber: the running one,
    /// or a new one (which first waits for the one it replaces to let go of the client id).
    fn join(&self, group: &str, topic: &str) -> Arc<Session> {
        let mut sessions = lock(&self.sessions);
        let key = (group.to_owned(), topic.to_owned());
        let predecessor = match sessions.get(&key) {
            Some(session) if session.try_join() => return Arc::clone(session),
            Some(session) => Some(session.done_token()),
            None => None,
        };
        // Sessions that ended are forgotten, so the map only holds live ones.
        sessions.retain(|_, s| !s.is_done());
        let client_id = session_client_id(&self.config.session_base(group), group, topic);
        let session = Session::start(
            Arc::clone(&self.config),
            client_id,
            group,
            topic,
            predecessor,
        );
        sessions.insert(key, Arc::clone(&session));
        session
    }
}

impl Drop for Mqtt3PubSub {
    fn drop(&mut self) {
        self.publisher.stop();
        for session in lock(&self.sessions).values() {
            session.stop();
        }
    }
}

#[async_trait]
impl Component for Mqtt3PubSub {
    /// Connect the publishing connection, wait for the broker's CONNACK and check it with a
    /// round trip. Idempotent; the connection keeps reconnecting by itself after a failure.
    async fn init(&self) -> Result<()> {
        self.check_open()?;
        self.publisher.start();
        self.publisher.wait_up().await?;
        self.publisher.ping().await
    }

    /// An UNSUBSCRIBE of a filter nobody uses, answered by an UNSUBACK: a round trip that
    /// changes nothing on the broker.
    async fn ping(&self) -> Result<()> {
        self.check_open()?;
        self.publisher.ping().await
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.publisher.stop();
        let sessions: Vec<_> = lock(&self.sessions).drain().map(|(_, s)| s).collect();
        for session in sessions {
            session.stop();
        }
    }
}

/// Refuse topic names MQTT cannot publish to: wildcards, `$` topics (the broker's own),
/// NUL, or longer than a topic may be.
fn check_topic(topic: &str) -> Result<()> {
    if topic.contains(['+', '#', '\0']) || topic.starts_with('$') {
        return Err(Error::invalid_argument(format!(
            "topic {topic:?}: an MQTT topic name cannot contain '+', '#' or NUL, nor start \
             with '$'"
        )));
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err(Error::invalid_argument(format!(
            "a topic of {} bytes is longer than MQTT's 65535",
            topic.len()
        )));
    }
    Ok(())
}

#[async_trait]
impl PubSub for Mqtt3PubSub {
    fn features(&self) -> PubSubFeatures {
        PubSubFeatures {
            // One session per topic and group; the broker sends a session's QoS 1 messages
            // in publish order and a nacked message goes back to the front.
            ordered: true,
            durable: !self.config.clean_session,
        }
    }

    async fn publish(&self, req: PublishRequest) -> Result<()> {
        self.check_open()?;
        check_publish(&self.config.name, &req, self.config.max_message_bytes)?;
        check_topic(&req.topic)?;
        // The packet's remaining length: topic length, topic, packet id, payload.
        let packet = 2 + req.topic.len() + 2 + req.data.len();
        if packet > MQTT_MAX_PACKET {
            return Err(Error::resource_exhausted(format!(
                "pubsub {:?}: a message of {} bytes to topic {:?} makes an MQTT packet of \
                 {packet} bytes, over MQTT's limit of {MQTT_MAX_PACKET} bytes",
                self.config.name,
                req.data.len(),
                req.topic
            )));
        }
        let retain = match req.metadata.get(RETAIN).filter(|v| !v.is_empty()) {
            Some(raw) => parse_bool(RETAIN, raw)?,
            None => self.config.retain,
        };
        self.publisher.publish(&req.topic, req.data, retain).await
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Subscription> {
        self.check_open()?;
        let (group, max_in_flight) = check_subscribe(&req, self.config.consumer_id.as_deref())?;
        check_topic(&req.topic)?;
        check_group(&group)?;
        let session = self.join(&group, &req.topic);
        // The subscriber counts from `join`; `subscribe` hands it to the subscription, or
        // gives it back when the session does not come up.
        session.subscribe(max_in_flight).await
    }
}

/// Remove the persistent session that the component of `spec` keeps for `group` (or its
/// `consumerID`) and `topic`: connect with its client id and clean_session, then
/// disconnect. The broker drops the session's subscription and the messages queued for it.
/// For decommissioning a replica, and for tests; a session connected elsewhere at the time
/// is taken over and dropped.
pub async fn remove_session(spec: &ComponentSpec, group: &str, topic: &str) -> Result<()> {
    let config = Config::from_spec(spec)?;
    let group = config
        .consumer_id
        .clone()
        .unwrap_or_else(|| group.to_owned());
    let client_id = session_client_id(&config.session_base(&group), &group, topic);
    let (client, mut eventloop) = config.connection(&client_id, true);
    let exchange = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .try_disconnect()
                        .map_err(|e| Error::internal(format!("mqtt: queueing DISCONNECT: {e}")))?;
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(err) => {
                    let (kind, reason) = config.describe(&err);
                    return Err(Error::new(kind, reason));
                }
            }
        }
    };
    tokio::time::timeout(config.timeout, exchange)
        .await
        .map_err(|_| {
            Error::unavailable(format!(
                "{}: no answer within {:?}",
                config.endpoint, config.timeout
            ))
        })?
}
