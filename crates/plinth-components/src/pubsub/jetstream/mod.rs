//! `pubsub.jetstream`: a broker on NATS JetStream, with Dapr's metadata keys.
//!
//! Data layout: a topic is a NATS subject. Its messages are kept in a stream: `streamName`
//! when set, else the stream whose subjects capture the topic, else one Plinth creates
//! ([`stream_name`]: `plinth-<topic>-<hash>`, subjects `[topic]`, limits retention unless
//! `retention: interest`; see the component's docs for why). Each consumer group
//! (the app id, or `consumerID`; `durableName` replaces it in the name) has one durable
//! pull consumer per topic ([`consumer_name`]: `<group>-<topic>-<hash>`, filter subject =
//! topic, explicit acks); every subscription of the group, in this process or another,
//! pulls from it, so they compete and the group outlives them. The content type travels in
//! the `Content-Type` header and each publish metadata entry in a header
//! `Plinth-Metadata-<key>` (percent-escaped); a CloudEvent's `id` becomes `Nats-Msg-Id`,
//! which JetStream uses to drop duplicates within the stream's window.
//!
//! Delivery: a subscription's task pulls with batch requests of at most as many messages
//! as it has free in-flight permits, so the broker never hands it more than it may hold.
//! Each delivery holds a permit and keeps its message alive with in-progress acks every
//! third of `ackWait`, so a message held while the runtime retries the app is not
//! redelivered elsewhere. Ack is acknowledged by the server (a double ack); nack and
//! dropping a delivery send a NAK (redelivered at once), `nack_after` a NAK with a delay.
//! When the receiver is dropped, the task stops asking for messages and NAKs what its last
//! request still brings.
//!
//! The client reconnects by itself. While it is disconnected publishes fail at once with
//! UNAVAILABLE and subscriptions wait; they resume when it is back.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{self, AckPolicy, IntoConsumerConfig};
use async_nats::jetstream::context::{PublishErrorKind, RequestErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{Client, ConnectOptions, Event, HeaderMap, HeaderName, HeaderValue};
use async_trait::async_trait;
use plinth_core::component::pubsub::{
    PubSub, PubSubFeatures, PublishRequest, SubscribeRequest, Subscription,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, ErrorKind, Result};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::common::{check_publish, check_subscribe};
use crate::util::lock;

#[cfg(test)]
mod auth_tests;
mod config;
mod names;
mod pull;
#[cfg(test)]
mod tests;

use config::{Auth, Config, IGNORED_KEYS, Pem, TlsSettings};
use names::{CONTENT_TYPE, MSG_ID, check_topic, header_value, metadata_header, subject_matches};
pub use names::{consumer_name, stream_name};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "pubsub.jetstream";

/// The content type of CloudEvent envelopes, whose `id` becomes `Nats-Msg-Id`.
const CLOUDEVENT_CONTENT_TYPE: &str = "application/cloudevents+json";
/// How many topic → stream lookups are remembered; past it the cache starts over.
const MAX_CACHED_TOPICS: usize = 10_000;
/// The first and the last wait before publishing again when no stream answered (about
/// 300 ms in all).
const NO_STREAM_RETRY: (Duration, Duration) =
    (Duration::from_millis(20), Duration::from_millis(160));

/// Build a `pubsub.jetstream` broker from its metadata (no I/O; `init` connects).
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    let ignored: Vec<&str> = IGNORED_KEYS
        .iter()
        .copied()
        .filter(|key| spec.get(key).is_some())
        .collect();
    if !ignored.is_empty() {
        tracing::info!(pubsub = %spec.name, keys = ?ignored, "metadata for push consumers is ignored: Plinth pulls");
    }
    Ok(Instance::PubSub(Arc::new(JetStreamPubSub::new(
        spec.name.clone(),
        config,
    ))))
}

/// A broker on NATS JetStream.
pub struct JetStreamPubSub {
    name: String,
    config: Arc<Config>,
    conn: OnceCell<Arc<Conn>>,
    /// Topic → the stream capturing it, so publishing does not look it up every time.
    streams: Mutex<HashMap<String, String>>,
    shutdown: CancellationToken,
}

impl fmt::Debug for JetStreamPubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamPubSub")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("connected", &self.conn.get().map(|c| c.is_connected()))
            .field("closed", &self.shutdown.is_cancelled())
            .finish()
    }
}

impl Drop for JetStreamPubSub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An established connection: the client reconnects by itself.
struct Conn {
    client: Client,
    js: jetstream::Context,
    /// Flips with the client's Connected / Disconnected events; wakes waiting pullers.
    connected: watch::Receiver<bool>,
    /// Where NATS is, for messages (no credentials).
    at: String,
}

impl Conn {
    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Fail fast while the client is reconnecting: a publish would only wait for its
    /// timeout.
    fn check_connected(&self) -> Result<()> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(Error::unavailable(format!(
                "{} is not reachable; the client is reconnecting",
                self.at
            )))
        }
    }

    /// One JetStream API call; the context's timeout bounds it. `Ok(Err(_))` is an error
    /// JetStream answered with.
    async fn request(
        &self,
        what: &str,
        subject: String,
        payload: &Value,
    ) -> Result<std::result::Result<Value, jetstream::Error>> {
        self.check_connected()?;
        let response: Response<Value> = self.js.request(subject, payload).await.map_err(|e| {
            let problem = match e.kind() {
                RequestErrorKind::TimedOut => "did not answer in time".to_owned(),
                RequestErrorKind::NoResponders => {
                    "has no JetStream (no responders; is JetStream enabled, and the domain or \
                     apiPrefix right?)"
                        .to_owned()
                }
                _ => format!("failed: {e}"),
            };
            Error::unavailable(format!("{what}: {} {problem}", self.at))
        })?;
        Ok(match response {
            Response::Ok(value) => Ok(value),
            Response::Err { error } => Err(error),
        })
    }
}

/// An error JetStream answered with, as Plinth's error.
fn js_error(what: &str, err: &jetstream::Error) -> Error {
    let kind = match (err.code(), err.error_code()) {
        (_, ErrorCode::STREAM_SUBJECT_OVERLAP) => ErrorKind::FailedPrecondition,
        (_, code) if code.0 == 10077 || code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => {
            ErrorKind::ResourceExhausted
        }
        (_, ErrorCode::INSUFFICIENT_RESOURCES | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED) => {
            ErrorKind::ResourceExhausted
        }
        (503, _) | (_, ErrorCode::CLUSTER_NOT_AVAILABLE) => ErrorKind::Unavailable,
        (404, _) => ErrorKind::NotFound,
        (400, _) => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("{what}: JetStream refused: {err}"))
}

/// The rustls configuration for `caCert` and the client certificate: Mozilla's roots
/// unless `caCert` names the CAs to trust.
async fn tls_config(tls: &TlsSettings) -> Result<async_nats::rustls::ClientConfig> {
    use hyper_rustls::ConfigBuilderExt;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    async fn read(pem: &Pem, key: &str) -> Result<Vec<u8>> {
        match pem {
            Pem::Inline(bytes) => Ok(bytes.clone()),
            Pem::File(path) => tokio::fs::read(path).await.map_err(|e| {
                Error::invalid_argument(format!(
                    "metadata.{key}: cannot read {}: {e}",
                    path.display()
                ))
            }),
        }
    }
    fn certs(pem: &[u8], key: &str) -> Result<Vec<CertificateDer<'static>>> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                Error::invalid_argument(format!("metadata.{key}: does not hold PEM certificates"))
            })?;
        if certs.is_empty() {
            return Err(Error::invalid_argument(format!(
                "metadata.{key}: holds no certificate"
            )));
        }
        Ok(certs)
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup: {e}")))?;
    let builder = match &tls.ca_cert {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs(&read(ca, "caCert").await?, "caCert")? {
                roots.add(cert).map_err(|_| {
                    Error::invalid_argument("metadata.caCert: a certificate is not a valid CA")
                })?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder.with_webpki_roots(),
    };
    match &tls.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certs(&read(cert, "tls_client_cert").await?, "tls_client_cert")?;
            let key_pem = read(key, "tls_client_key").await?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                Error::invalid_argument("metadata.tls_client_key: does not hold a PEM private key")
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|_| {
                Error::invalid_argument(
                    "metadata.tls_client_key: does not match tls_client_cert, or is not supported",
                )
            })
        }
    }
}

/// Connect, bounded by the timeout, and report connection changes into a watch.
async fn connect(component: &str, config: &Config) -> Result<Conn> {
    let at = format!("NATS at {}", config.url_display);
    let (connected_tx, connected) = watch::channel(false);
    let connected_tx = Arc::new(connected_tx);
    let events_tx = Arc::clone(&connected_tx);
    let pubsub = component.to_owned();
    let mut options = ConnectOptions::new()
        .name(&config.connection_name)
        .connection_timeout(config.timeout)
        .request_timeout(Some(config.timeout))
        .event_callback(move |event| {
            let tx = Arc::clone(&events_tx);
            let pubsub = pubsub.clone();
            async move {
                match event {
                    Event::Connected => {
                        tx.send_replace(true);
                        tracing::info!(%pubsub, "connected to NATS");
                    }
                    Event::Disconnected => {
                        tx.send_replace(false);
                        tracing::warn!(%pubsub, "disconnected from NATS; reconnecting");
                    }
                    Event::Closed => {
                        tx.send_replace(false);
                    }
                    other => tracing::warn!(%pubsub, event = %other, "NATS client event"),
                }
            }
        });
    options = match &config.auth {
        Auth::None => options,
        Auth::Token(token) => options.token(token.clone()),
        Auth::UserPassword(user, password) => {
            options.user_and_password(user.clone(), password.clone())
        }
        Auth::Jwt { jwt, seed } => options
            .credentials(&Auth::credentials(jwt, seed))
            .map_err(|_| Error::invalid_argument("metadata.seedKey: is not a user NKEY seed"))?,
    };
    if let Some(tls) = &config.tls {
        options = options
            .tls_client_config(tls_config(tls).await?)
            .require_tls(true);
    }
    let uses_tls = config.tls.is_some() || config.servers.iter().any(|s| s.tls_required());
    let client =
        match tokio::time::timeout(config.timeout, options.connect(config.servers.clone())).await {
            Err(_) => {
                return Err(Error::unavailable(format!(
                    "{at} did not accept a connection within {:?}",
                    config.timeout
                )));
            }
            Ok(Err(err)) => {
                use async_nats::ConnectErrorKind as Kind;
                return Err(match err.kind() {
                    Kind::AuthorizationViolation | Kind::Authentication => Error::unauthenticated(
                        format!("{at} refused the credentials (token, jwt/seedKey or URL user)"),
                    ),
                    _ if uses_tls => Error::unavailable(format!(
                        "{at} is not reachable over TLS: {err} (check caCert, tls_client_cert, \
                         tls_client_key and the server's certificate)"
                    )),
                    _ => Error::unavailable(format!("{at} is not reachable: {err}")),
                });
            }
            Ok(Ok(client)) => client,
        };
    connected_tx.send_replace(true);
    let js = jetstream::ContextBuilder::new()
        .timeout(config.timeout)
        .api_prefix(config.api_prefix.clone())
        .build(client.clone());
    Ok(Conn {
        client,
        js,
        connected,
        at,
    })
}

/// The header block of a publish: content type, metadata, and the CloudEvent id for
/// de-duplication.
fn headers(req: &PublishRequest) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(req.metadata.len() + 2);
    if !req.content_type.is_empty() {
        headers.push((CONTENT_TYPE.to_owned(), header_value(&req.content_type)));
    }
    for (key, value) in &req.metadata {
        headers.push((metadata_header(key), header_value(value)));
    }
    if req.content_type.starts_with(CLOUDEVENT_CONTENT_TYPE)
        && let Some(id) = serde_json::from_slice::<Value>(&req.data)
            .ok()
            .and_then(|event| event.get("id")?.as_str().map(header_value))
            .filter(|id| !id.is_empty())
    {
        headers.push((MSG_ID.to_owned(), id));
    }
    headers
}

/// The size of `headers` on the wire (`NATS/1.0`, each `name: value`, a blank line).
fn headers_wire_len(headers: &[(String, String)]) -> usize {
    if headers.is_empty() {
        return 0;
    }
    "NATS/1.0\r\n".len()
        + headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum::<usize>()
        + 2
}

fn header_map(headers: Vec<(String, String)>) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        // Names and values are escaped above, so these only fail on a bug.
        let name = HeaderName::try_from(name)
            .map_err(|_| Error::internal("a metadata key did not make a valid header name"))?;
        let value = HeaderValue::try_from(value)
            .map_err(|_| Error::internal("a metadata value did not make a valid header value"))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// Why one publish attempt failed.
enum PublishFailure {
    /// No stream answered for the subject: the stream was deleted since it was looked up.
    NoStream,
    Other(Error),
}

impl JetStreamPubSub {
    fn new(name: String, config: Config) -> Self {
        Self {
            name,
            config: Arc::new(config),
            conn: OnceCell::new(),
            streams: Mutex::default(),
            shutdown: CancellationToken::new(),
        }
    }

    fn conn(&self) -> Result<Arc<Conn>> {
        if self.shutdown.is_cancelled() {
            return Err(Error::unavailable(format!(
                "pubsub {:?} is closed",
                self.name
            )));
        }
        self.conn.get().cloned().ok_or_else(|| {
            Error::unavailable(format!(
                "pubsub {:?}: not connected to NATS at {} yet (init has not succeeded)",
                self.name, self.config.url_display
            ))
        })
    }

    /// The configuration of a stream Plinth creates for `subjects`.
    fn stream_config(&self, name: &str, topic: &str) -> Value {
        let limits = &self.config.limits;
        json!({
            "name": name,
            "description": format!("created by Plinth (pubsub.jetstream) for topic {topic}"),
            "subjects": [topic],
            "retention": self.config.retention,
            "storage": if self.config.memory_storage { "memory" } else { "file" },
            "num_replicas": self.config.replicas,
            "discard": "new",
            "max_age": u64::try_from(limits.max_age.as_nanos()).unwrap_or(u64::MAX),
            "max_msgs": limits.max_msgs,
            "max_bytes": limits.max_bytes,
            "max_msg_size": -1,
            "max_consumers": -1,
        })
    }

    /// The stream capturing `topic`: looked up once, created when missing.
    async fn stream_for(&self, conn: &Conn, topic: &str) -> Result<String> {
        if let Some(stream) = lock(&self.streams).get(topic).cloned() {
            return Ok(stream);
        }
        let stream = match &self.config.stream_name {
            Some(name) => self.ensure_named_stream(conn, name, topic).await?,
            None => self.ensure_topic_stream(conn, topic).await?,
        };
        let mut cache = lock(&self.streams);
        if cache.len() >= MAX_CACHED_TOPICS {
            cache.clear();
        }
        cache.insert(topic.to_owned(), stream.clone());
        Ok(stream)
    }

    fn forget_stream(&self, topic: &str) {
        lock(&self.streams).remove(topic);
    }

    /// The stream whose subjects capture `topic`, if any.
    async fn find_stream(&self, conn: &Conn, topic: &str) -> Result<Option<String>> {
        let what = format!("looking up the stream of topic {topic:?}");
        let names: Value = conn
            .request(&what, "STREAM.NAMES".into(), &json!({ "subject": topic }))
            .await?
            .map_err(|e| js_error(&what, &e))?;
        Ok(names
            .get("streams")
            .and_then(Value::as_array)
            .and_then(|streams| streams.first())
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    /// Without `streamName`: the stream capturing the topic, or a new one for it.
    async fn ensure_topic_stream(&self, conn: &Conn, topic: &str) -> Result<String> {
        if let Some(stream) = self.find_stream(conn, topic).await? {
            return Ok(stream);
        }
        if !self.config.auto_create {
            return Err(Error::failed_precondition(format!(
                "pubsub {:?}: no JetStream stream captures topic {topic:?}, and \
                 autoCreateStream is false; create a stream whose subjects include it",
                self.name
            )));
        }
        let name = stream_name(topic);
        let what = format!("creating stream {name:?} for topic {topic:?}");
        let created: std::result::Result<Value, jetstream::Error> = conn
            .request(
                &what,
                format!("STREAM.CREATE.{name}"),
                &self.stream_config(&name, topic),
            )
            .await?;
        match created {
            Ok(_) => {
                tracing::info!(pubsub = %self.name, %topic, stream = %name, "created stream");
                Ok(name)
            }
            Err(err) => {
                // Another process created it (or a stream capturing the topic) meanwhile.
                if let Some(stream) = self.find_stream(conn, topic).await? {
                    return Ok(stream);
                }
                Err(js_error(&what, &err))
            }
        }
    }

    /// With `streamName`: that stream, created when missing, its subjects extended with
    /// the topic when it does not capture it (both only with `autoCreateStream`).
    async fn ensure_named_stream(&self, conn: &Conn, name: &str, topic: &str) -> Result<String> {
        let what = format!("stream {name:?} (streamName) for topic {topic:?}");
        // A few rounds: another process may create or extend the stream at the same time.
        for _ in 0..3 {
            let info: std::result::Result<Value, jetstream::Error> = conn
                .request(&what, format!("STREAM.INFO.{name}"), &json!({}))
                .await?;
            match info {
                Ok(info) => {
                    let mut config = info.get("config").cloned().unwrap_or(Value::Null);
                    let subjects: Vec<String> = config
                        .get("subjects")
                        .and_then(Value::as_array)
                        .map(|s| {
                            s.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    if subjects.iter().any(|s| subject_matches(s, topic)) {
                        return Ok(name.to_owned());
                    }
                    if !self.config.auto_create {
                        return Err(Error::failed_precondition(format!(
                            "pubsub {:?}: stream {name:?} does not capture topic {topic:?}, and \
                             autoCreateStream is false; add the topic to its subjects",
                            self.name
                        )));
                    }
                    // The server's own config is sent back with one more subject, so
                    // settings this client does not know are kept.
                    if let Some(list) = config.get_mut("subjects").and_then(Value::as_array_mut) {
                        list.push(Value::from(topic));
                    } else if let Some(object) = config.as_object_mut() {
                        object.insert("subjects".into(), json!([topic]));
                    }
                    let updated: std::result::Result<Value, jetstream::Error> = conn
                        .request(&what, format!("STREAM.UPDATE.{name}"), &config)
                        .await?;
                    match updated {
                        Ok(_) => {
                            tracing::info!(pubsub = %self.name, %topic, stream = %name, "added the topic to the stream's subjects");
                            return Ok(name.to_owned());
                        }
                        Err(err) if err.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP => {
                            return Err(js_error(&what, &err));
                        }
                        Err(err) => {
                            tracing::debug!(pubsub = %self.name, stream = %name, error = %err, "updating the stream failed; looking again");
                        }
                    }
                }
                Err(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    if !self.config.auto_create {
                        return Err(Error::failed_precondition(format!(
                            "pubsub {:?}: stream {name:?} (streamName) does not exist, and \
                             autoCreateStream is false",
                            self.name
                        )));
                    }
                    let created: std::result::Result<Value, jetstream::Error> = conn
                        .request(
                            &what,
                            format!("STREAM.CREATE.{name}"),
                            &self.stream_config(name, topic),
                        )
                        .await?;
                    match created {
                        Ok(_) => {
                            tracing::info!(pubsub = %self.name, %topic, stream = %name, "created stream");
                            return Ok(name.to_owned());
                        }
                        Err(err) if err.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP => {
                            return Err(js_error(&what, &err));
                        }
                        Err(err) => {
                            tracing::debug!(pubsub = %self.name, stream = %name, error = %err, "creating the stream failed; looking again");
                        }
                    }
                }
                Err(err) => return Err(js_error(&what, &err)),
            }
        }
        Err(Error::unavailable(format!(
            "pubsub {:?}: {what}: the stream kept changing while Plinth set it up; try again",
            self.name
        )))
    }

    /// Create the group's durable pull consumer on `stream`, or bind to it when it exists:
    /// its position is never reset. Settings JetStream can update (ackWait, maxDeliver,
    /// maxAckPending, backOff) follow the metadata; others stay as they are.
    async fn ensure_consumer(
        &self,
        conn: &Conn,
        stream: &str,
        name: &str,
        topic: &str,
        group: &str,
    ) -> Result<std::result::Result<(), jetstream::Error>> {
        let config = consumer::pull::Config {
            durable_name: Some(name.to_owned()),
            description: Some(format!(
                "Plinth (pubsub.jetstream): group {group}, topic {topic}"
            )),
            deliver_policy: self.config.deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_deliver: self.config.max_deliver,
            filter_subject: topic.to_owned(),
            max_ack_pending: self.config.max_ack_pending,
            backoff: self.config.backoff.clone(),
            ..Default::default()
        }
        .into_consumer_config();
        let payload = json!({ "stream_name": stream, "config": config });
        let what = format!("creating consumer {name:?} on stream {stream:?}");
        let created: std::result::Result<Value, jetstream::Error> = conn
            .request(
                &what,
                format!("CONSUMER.CREATE.{stream}.{name}.{topic}"),
                &payload,
            )
            .await?;
        let err = match created {
            Ok(_) => return Ok(Ok(())),
            Err(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND => return Ok(Err(err)),
            Err(err) => err,
        };
        // It exists with settings JetStream cannot change (deliverPolicy, ...): use it as
        // it is, if it is a pull consumer of this topic with explicit acks.
        let info = conn
            .request(&what, format!("CONSUMER.INFO.{stream}.{name}"), &json!({}))
            .await?
            .ok()
            .and_then(|info| serde_json::from_value::<consumer::Info>(info).ok());
        let Some(info) = info else {
            return Err(js_error(&what, &err));
        };
        let existing = &info.config;
        if existing.deliver_subject.is_some()
            || existing.ack_policy != AckPolicy::Explicit
            || !(existing.filter_subject == topic
                || existing.filter_subject.is_empty()
                    && self.config.stream_name.is_none()
                    && stream == stream_name(topic))
        {
            return Err(Error::failed_precondition(format!(
                "pubsub {:?}: consumer {name:?} on stream {stream:?} exists but is not a pull \
                 consumer of topic {topic:?} with explicit acks; delete it or choose another \
                 durableName ({err})",
                self.name
            )));
        }
        tracing::warn!(pubsub = %self.name, consumer = %name, %stream, error = %err, "the consumer exists with settings that cannot be changed; using it as it is");
        Ok(Ok(()))
    }

    /// Publish once, awaiting the stream's acknowledgement.
    async fn publish_once(
        &self,
        conn: &Conn,
        req: &PublishRequest,
        headers: HeaderMap,
    ) -> std::result::Result<(), PublishFailure> {
        let message = PublishMessage::build()
            .payload(req.data.clone())
            .headers(headers);
        let at = &conn.at;
        let topic = &req.topic;
        let outcome = tokio::time::timeout(self.config.timeout, async {
            conn.js.send_publish(topic.clone(), message).await?.await
        })
        .await;
        let err = match outcome {
            Ok(Ok(_ack)) => return Ok(()),
            Ok(Err(err)) => err,
            Err(_) => {
                return Err(PublishFailure::Other(Error::unavailable(format!(
                    "publishing to topic {topic:?}: {at} did not acknowledge within {:?}",
                    self.config.timeout
                ))));
            }
        };
        Err(match err.kind() {
            PublishErrorKind::StreamNotFound => PublishFailure::NoStream,
            PublishErrorKind::MaxPayloadExceeded => {
                PublishFailure::Other(Error::resource_exhausted(format!(
                    "pubsub {:?}: a message of {} bytes plus its headers is over the NATS \
                     server's max_payload of {} bytes (raise max_payload in the nats-server \
                     configuration)",
                    self.name,
                    req.data.len(),
                    conn.client.max_payload()
                )))
            }
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => PublishFailure::Other(
                Error::unavailable(format!("publishing to topic {topic:?}: {at}: {err}")),
            ),
            _ => {
                let what = format!("publishing to topic {topic:?}");
                let refused = std::error::Error::source(&err)
                    .and_then(|source| source.downcast_ref::<jetstream::Error>());
                PublishFailure::Other(match refused {
                    Some(js) => js_error(&what, js),
                    None => Error::unavailable(format!("{what}: {at}: {err}")),
                })
            }
        })
    }
}

#[async_trait]
impl Component for JetStreamPubSub {
    /// Connect (once; the client then reconnects by itself) and check that JetStream
    /// answers.
    async fn init(&self) -> Result<()> {
        self.conn
            .get_or_try_init(|| async { connect(&self.name, &self.config).await.map(Arc::new) })
            .await?;
        self.ping().await
    }

    /// JetStream's account info: one round trip that also shows JetStream is enabled (read
    /// as plain JSON: the client's typed account info does not parse older servers').
    async fn ping(&self) -> Result<()> {
        let conn = self.conn()?;
        let what = "reading the JetStream account info";
        conn.request(what, "INFO".into(), &json!({}))
            .await?
            .map(drop)
            .map_err(|e| js_error(what, &e))
    }

    async fn close(&self) {
        self.shutdown.cancel();
        if let Some(conn) = self.conn.get() {
            let _ = tokio::time::timeout(self.config.timeout, conn.client.drain()).await;
        }
    }
}

#[async_trait]
impl PubSub for JetStreamPubSub {
    fn features(&self) -> PubSubFeatures {
        PubSubFeatures {
            ordered: true,
            durable: !self.config.memory_storage,
        }
    }

    async fn publish(&self, req: PublishRequest) -> Result<()> {
        check_publish(&self.name, &req, self.config.max_message_bytes)?;
        check_topic(&req.topic)?;
        let conn = self.conn()?;
        conn.check_connected()?;
        let headers = headers(&req);
        let size = req.data.len() + headers_wire_len(&headers);
        let max_payload = conn.client.max_payload();
        if size > max_payload {
            return Err(Error::resource_exhausted(format!(
                "pubsub {:?}: a message of {} bytes plus {} bytes of headers is over the NATS \
                 server's max_payload of {max_payload} bytes (raise max_payload in the \
                 nats-server configuration)",
                self.name,
                req.data.len(),
                size - req.data.len()
            )));
        }
        let headers = header_map(headers)?;
        self.stream_for(&conn, &req.topic).await?;
        let mut retry_in = NO_STREAM_RETRY.0;
        loop {
            match self.publish_once(&conn, &req, headers.clone()).await {
                Ok(()) => return Ok(()),
                Err(PublishFailure::Other(err)) => return Err(err),
                Err(PublishFailure::NoStream) if retry_in <= NO_STREAM_RETRY.1 => {
                    // The stream went away since it was looked up, or another process has
                    // only just created it and it does not take messages yet: look again
                    // (creating it if needed) and retry shortly.
                    self.forget_stream(&req.topic);
                    tokio::time::sleep(retry_in).await;
                    retry_in *= 2;
                    self.stream_for(&conn, &req.topic).await?;
                }
                Err(PublishFailure::NoStream) => {
                    return Err(Error::unavailable(format!(
                        "publishing to topic {:?}: no JetStream stream answered at {}",
                        req.topic, conn.at
                    )));
                }
            }
        }
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Subscription> {
        let (group, max_in_flight) = check_subscribe(&req, self.config.consumer_id.as_deref())?;
        check_topic(&req.topic)?;
        let conn = self.conn()?;
        conn.check_connected()?;
        let base = self.config.durable_name.as_deref().unwrap_or(&group);
        let consumer = consumer_name(base, &req.topic);
        let mut stream = self.stream_for(&conn, &req.topic).await?;
        if let Err(err) = self
            .ensure_consumer(&conn, &stream, &consumer, &req.topic, &group)
            .await?
        {
            // The stream went away since it was looked up: look (or create) again, once.
            self.forget_stream(&req.topic);
            stream = self.stream_for(&conn, &req.topic).await?;
            self.ensure_consumer(&conn, &stream, &consumer, &req.topic, &group)
                .await?
                .map_err(|_| js_error(&format!("creating consumer {consumer:?}"), &err))?;
        }
        tracing::debug!(pubsub = %self.name, topic = %req.topic, %stream, %consumer, max_in_flight, "subscribed");
        let (tx, receiver) = mpsc::channel(max_in_flight);
        let puller = pull::Puller {
            pubsub: self.name.clone(),
            client: conn.client.clone(),
            js: conn.js.clone(),
            next_subject: format!(
                "{}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                self.config.api_prefix
            ),
            topic: req.topic,
            consumer,
            keep_alive: self.config.keep_alive(),
            timeout: self.config.timeout,
            connected: conn.connected.clone(),
            shutdown: self.shutdown.child_token(),
        };
        tokio::spawn(puller.run(tx, Arc::new(Semaphore::new(max_in_flight))));
        Ok(Subscription { receiver })
    }
}
