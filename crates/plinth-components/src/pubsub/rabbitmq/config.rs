//! Metadata of `pubsub.rabbitmq`: Dapr's keys with Dapr's meaning, except where Plinth's
//! guarantees need other defaults (durable exchanges, queues and messages; publisher confirms
//! always on; manual acknowledgements only), plus the per-subscription and per-publish keys.

use std::fmt;
use std::time::Duration;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri, AMQPUserInfo, SASLMechanism};
use plinth_core::metadata::parse_duration;
use plinth_core::{ComponentSpec, Error, Metadata, Result};

use crate::pubsub::common::{consumer_id, max_message_bytes};

/// RabbitMQ 3.10's default `max_message_size` (128 MiB), the default of `maxMessageBytes`.
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;
/// How long connecting may take, by default (`dialTimeout`).
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one broker call may take, by default (`timeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Dapr's `reconnectWaitSeconds` default.
const DEFAULT_RECONNECT_WAIT: Duration = Duration::from_secs(3);
/// Dapr's `heartBeat` default.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// The longest name RabbitMQ takes for an exchange, a queue or a header key (AMQP short
/// string).
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// The kind of the exchange each topic gets (`exchangeKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExchangeKind {
    Fanout,
    Topic,
    Direct,
    Headers,
}

impl ExchangeKind {
    pub(crate) fn lapin(self) -> lapin::ExchangeKind {
        match self {
            Self::Fanout => lapin::ExchangeKind::Fanout,
            Self::Topic => lapin::ExchangeKind::Topic,
            Self::Direct => lapin::ExchangeKind::Direct,
            Self::Headers => lapin::ExchangeKind::Headers,
        }
    }
}

/// Where and how to connect. The password (in the URI) and the client key are secrets and
/// never shown.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) uri: AMQPUri,
    pub(crate) tls: OwnedTLSConfig,
    pub(crate) client_name: Option<String>,
    pub(crate) dial_timeout: Duration,
}

impl Connection {
    /// Where the broker is, for messages: `amqp://user@host:port/vhost`, without the password.
    pub(crate) fn describe(&self) -> String {
        let tls = if self.tls.cert_chain.is_some() || self.tls.identity.is_some() {
            " (custom TLS)"
        } else {
            ""
        };
        format!(
            "rabbitmq at {}://{}@{}:{}/{}{tls}",
            self.uri.scheme,
            self.uri.authority.userinfo.username,
            self.uri.authority.host,
            self.uri.authority.port,
            self.uri.vhost.replace('/', "%2f"),
        )
    }

    /// Remove the password from a message that may have picked it up (a client library
    /// error quoting the URI).
    pub(crate) fn redact(&self, message: String) -> String {
        let password = &self.uri.authority.userinfo.password;
        if password.is_empty() {
            return message;
        }
        message.replace(password.as_str(), "***")
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("broker", &self.describe())
            .field("sasl", &self.uri.query.auth_mechanism.unwrap_or_default())
            .field("ca_cert", &self.tls.cert_chain.is_some())
            .field("client_cert", &self.tls.identity.is_some())
            .field("client_name", &self.client_name)
            .field("heartbeat", &self.uri.query.heartbeat)
            .field("dial_timeout", &self.dial_timeout)
            .finish()
    }
}

/// The parsed metadata of a `pubsub.rabbitmq` component.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) connection: Connection,
    /// `consumerID`: the consumer group of every subscription, instead of the app id.
    pub(crate) consumer_id: Option<String>,
    /// `durable`: exchanges and queues survive a broker restart.
    pub(crate) durable: bool,
    /// `deletedWhenUnused`: exchanges and queues are auto-deleted.
    pub(crate) delete_when_unused: bool,
    /// `deliveryMode`: 2 is persistent, 0 and 1 transient.
    pub(crate) delivery_mode: u8,
    /// `prefetchCount`: an upper bound on the prefetch (0: none beyond `max_in_flight`).
    pub(crate) prefetch_count: u16,
    /// `reconnectWaitSeconds`: the longest wait between two connection attempts.
    pub(crate) reconnect_wait: Duration,
    /// `concurrencyMode: single`: one delivery in flight per subscription.
    pub(crate) single: bool,
    /// `publisherConfirm` as given; confirms are on regardless.
    pub(crate) publisher_confirm: bool,
    /// `enableDeadLetter`: a `dlx-{queue}` exchange and `dlq-{queue}` queue take what the
    /// broker drops (expired or overflowing messages).
    pub(crate) enable_dead_letter: bool,
    /// `maxLen`: queue length limit (`x-max-length`).
    pub(crate) max_len: Option<i64>,
    /// `maxLenBytes`: queue size limit (`x-max-length-bytes`).
    pub(crate) max_len_bytes: Option<i64>,
    /// `exchangeKind`.
    pub(crate) exchange_kind: ExchangeKind,
    /// `ttlInSeconds`: the expiration of messages published without their own.
    pub(crate) ttl: Option<Duration>,
    /// `maxMessageBytes`: the largest payload a publish may carry.
    pub(crate) max_message_bytes: usize,
    /// `timeout`: the bound on every broker call after connecting.
    pub(crate) timeout: Duration,
    /// `publishMessagePropertiesToMetadata`: Dapr's `metadata.*` keys on received messages.
    pub(crate) properties_to_metadata: bool,
}

fn positive(spec: &ComponentSpec, key: &str, value: Duration) -> Result<Duration> {
    if value.is_zero() {
        return Err(spec.invalid(&format!("metadata.{key}"), "must be positive"));
    }
    Ok(value)
}

/// A TTL as Dapr reads it: a positive number of seconds, or a Go duration (`90s`, `1m`).
pub(crate) fn parse_ttl(raw: &str) -> std::result::Result<Duration, String> {
    let raw = raw.trim();
    let ttl = match raw.parse::<i64>() {
        Ok(secs) if secs > 0 => Duration::from_secs(secs.unsigned_abs()),
        Ok(_) => return Err(format!("{raw:?} must be a positive number of seconds")),
        Err(_) => parse_duration(raw).ok_or_else(|| {
            format!("{raw:?} is neither a number of seconds nor a duration (90s, 1m)")
        })?,
    };
    if ttl.as_millis() == 0 {
        return Err(format!("{raw:?} is shorter than a millisecond"));
    }
    Ok(ttl)
}

/// A non-negative integer where 0 means "no limit".
fn limit(spec: &ComponentSpec, key: &str) -> Result<Option<i64>> {
    let value: i64 = spec.parse_or(key, 0)?;
    if value < 0 {
        return Err(spec.invalid(&format!("metadata.{key}"), "must not be negative"));
    }
    Ok((value > 0).then_some(value))
}

fn pem(spec: &ComponentSpec, key: &str) -> Result<Option<String>> {
    match spec.get(key) {
        None => Ok(None),
        // Never quote the value: it may be a private key.
        Some(v) if v.contains("-----BEGIN ") => Ok(Some(v.to_owned())),
        Some(_) => Err(spec.invalid(&format!("metadata.{key}"), "is not PEM")),
    }
}

/// `host`, `host:port` or `[v6]:port`.
fn split_host_port(raw: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = raw.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if tail.is_empty() => None,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match raw.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_owned(), Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None if !raw.is_empty() && !raw.contains(['/', '@']) => Some((raw.to_owned(), None)),
        None => None,
    }
}

/// Parse `connectionString` (alias: Dapr's deprecated `host`) without ever quoting it: it
/// may hold a password.
fn parse_connection_string(spec: &ComponentSpec, key: &str, raw: &str) -> Result<AMQPUri> {
    let field = format!("metadata.{key}");
    let uri: AMQPUri = raw.parse().map_err(|e: String| {
        let why = if e.starts_with("Invalid AMQP scheme") {
            "the scheme must be amqp or amqps"
        } else if e.starts_with("invalid digit") || e.contains("port") {
            "a port or a query parameter (heartbeat, frame_max, channel_max, \
             connection_timeout) is not a number"
        } else {
            "it is not a URL"
        };
        spec.invalid(
            &field,
            format!(
                "is not a valid AMQP URI ({why}); expected amqp[s]://user:password@host:port/vhost"
            ),
        )
    })?;
    if uri.authority.host.is_empty() {
        return Err(spec.invalid(&field, "names no host"));
    }
    Ok(uri)
}

impl Config {
    /// Read and check every key; no I/O.
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let connection = Self::connection(spec)?;
        if spec.bool_or("autoAck", false)? {
            return Err(spec.invalid(
                "metadata.autoAck",
                "\"true\" would lose messages: the broker would forget each message as soon as \
                 it is sent, before the app handled it; Plinth acknowledges after delivery and \
                 retries, so remove autoAck or set it to \"false\"",
            ));
        }
        // Validated, then unused: a nack always gives the message back for redelivery, and
        // the pub/sub building block owns retries and dead letters.
        spec.bool_or("requeueInFailure", false)?;
        let delivery_mode: u8 = spec.parse_or("deliveryMode", 2)?;
        if delivery_mode > 2 {
            return Err(spec.invalid(
                "metadata.deliveryMode",
                format!("{delivery_mode} is not 0 or 1 (transient) or 2 (persistent)"),
            ));
        }
        let exchange_kind = spec.choice_or(
            "exchangeKind",
            ExchangeKind::Fanout,
            &[
                ("fanout", ExchangeKind::Fanout),
                ("topic", ExchangeKind::Topic),
                ("direct", ExchangeKind::Direct),
                ("headers", ExchangeKind::Headers),
            ],
        )?;
        let single = spec.choice_or(
            "concurrencyMode",
            false,
            &[("parallel", false), ("single", true)],
        )?;
        let ttl = match spec.get("ttlInSeconds") {
            None => None,
            Some(raw) => {
                Some(parse_ttl(raw).map_err(|e| spec.invalid("metadata.ttlInSeconds", e))?)
            }
        };
        let timeout = positive(
            spec,
            "timeout",
            spec.duration_or("timeout", DEFAULT_TIMEOUT)?,
        )?;
        let reconnect_wait = positive(
            spec,
            "reconnectWaitSeconds",
            spec.duration_or("reconnectWaitSeconds", DEFAULT_RECONNECT_WAIT)?,
        )?;
        Ok(Self {
            connection,
            consumer_id: consumer_id(spec),
            durable: spec.bool_or("durable", true)?,
            delete_when_unused: spec.bool_or("deletedWhenUnused", false)?,
            delivery_mode,
            prefetch_count: spec.parse_or("prefetchCount", 0)?,
            reconnect_wait,
            single,
            publisher_confirm: spec.bool_or("publisherConfirm", true)?,
            enable_dead_letter: spec.bool_or("enableDeadLetter", false)?,
            max_len: limit(spec, "maxLen")?,
            max_len_bytes: limit(spec, "maxLenBytes")?,
            exchange_kind,
            ttl,
            max_message_bytes: max_message_bytes(spec, DEFAULT_MAX_MESSAGE_BYTES)?,
            timeout,
            properties_to_metadata: spec.bool_or("publishMessagePropertiesToMetadata", false)?,
        })
    }

    fn connection(spec: &ComponentSpec) -> Result<Connection> {
        let protocol = spec
            .choice_or(
                "protocol",
                None,
                &[("amqp", Some(false)), ("amqps", Some(true))],
            )?
            .map(|tls| {
                if tls {
                    AMQPScheme::AMQPS
                } else {
                    AMQPScheme::AMQP
                }
            });
        let conn_key = if spec.get("connectionString").is_some() {
            "connectionString"
        } else {
            "host"
        };
        let mut uri = match spec.get(conn_key) {
            Some(raw) => {
                let uri = parse_connection_string(spec, conn_key, raw)?;
                if protocol.as_ref().is_some_and(|p| *p != uri.scheme) {
                    return Err(spec.invalid(
                        "metadata.protocol",
                        format!("does not match the scheme of {conn_key} ({})", uri.scheme),
                    ));
                }
                uri
            }
            None => {
                let scheme = protocol.unwrap_or_default();
                // Dapr falls back to localhost; Plinth wants the broker named.
                let raw = spec.get("hostname").ok_or_else(|| {
                    spec.invalid(
                        "metadata.connectionString",
                        "is required (or hostname, with username and password)",
                    )
                })?;
                let (host, port) = split_host_port(raw).ok_or_else(|| {
                    spec.invalid(
                        "metadata.hostname",
                        format!("{raw:?} is not host or host:port"),
                    )
                })?;
                let port = port.unwrap_or_else(|| scheme.default_port());
                let mut uri = AMQPUri {
                    scheme,
                    ..AMQPUri::default()
                };
                uri.authority.host = host;
                uri.authority.port = port;
                match (spec.get("username"), spec.metadata.get("password")) {
                    (Some(username), password) => {
                        uri.authority.userinfo = AMQPUserInfo {
                            username: username.to_owned(),
                            password: password.cloned().unwrap_or_default(),
                        };
                    }
                    (None, Some(p)) if !p.is_empty() => {
                        return Err(spec.invalid("metadata.password", "needs username"));
                    }
                    (None, _) => {}
                }
                uri
            }
        };
        // Dapr's client reads `amqp://host/` as the default vhost; so does Plinth.
        if uri.vhost.is_empty() {
            uri.vhost = "/".into();
        }
        let tls = OwnedTLSConfig {
            cert_chain: pem(spec, "caCert")?,
            identity: match (pem(spec, "clientCert")?, pem(spec, "clientKey")?) {
                (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
                    pem: cert.into_bytes(),
                    key: key.into_bytes(),
                }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(spec.invalid("metadata.clientKey", "clientCert needs clientKey"));
                }
                (None, Some(_)) => {
                    return Err(spec.invalid("metadata.clientCert", "clientKey needs clientCert"));
                }
            },
        };
        let custom_tls = tls.cert_chain.is_some() || tls.identity.is_some();
        if custom_tls && uri.scheme != AMQPScheme::AMQPS {
            let key = if tls.cert_chain.is_some() {
                "caCert"
            } else {
                "clientCert"
            };
            return Err(spec.invalid(
                &format!("metadata.{key}"),
                "is only used over TLS: use an amqps:// connectionString or protocol: amqps",
            ));
        }
        if spec.bool_or("saslExternal", false)? {
            if tls.cert_chain.is_none() || tls.identity.is_none() {
                return Err(spec.invalid(
                    "metadata.saslExternal",
                    "needs caCert, clientCert and clientKey (the broker takes the user name \
                     from the client certificate)",
                ));
            }
            uri.query.auth_mechanism = Some(SASLMechanism::External);
        }
        // A heartbeat or connection timeout in the connection string stands unless the
        // metadata key is given.
        if spec.get("heartBeat").is_some() || uri.query.heartbeat.is_none() {
            let heartbeat = spec.duration_or("heartBeat", DEFAULT_HEARTBEAT)?;
            let secs = u16::try_from(heartbeat.as_secs_f64().ceil() as u64)
                .map_err(|_| spec.invalid("metadata.heartBeat", "must be at most 65535 seconds"))?;
            uri.query.heartbeat = Some(secs);
        }
        let dial_timeout = positive(
            spec,
            "dialTimeout",
            spec.duration_or("dialTimeout", DEFAULT_DIAL_TIMEOUT)?,
        )?;
        uri.query.connection_timeout =
            Some(u64::try_from(dial_timeout.as_millis()).unwrap_or(u64::MAX));
        let client_name = spec.get("clientName").map(str::to_owned);
        if client_name.as_ref().is_some_and(|n| n.len() > 65_535) {
            return Err(spec.invalid("metadata.clientName", "is too long"));
        }
        Ok(Connection {
            uri,
            tls,
            client_name,
            dial_timeout,
        })
    }

    /// Whether published messages survive a broker restart in the queues that take them.
    pub(crate) fn durable_messages(&self) -> bool {
        self.durable && self.delivery_mode == 2
    }
}

/// Per-subscription settings from the subscription's metadata (Dapr's keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SubscriptionOptions {
    /// `queueName`: the queue instead of `{group}-{topic}`.
    pub(crate) queue_name: Option<String>,
    /// `routingKey`: comma-separated binding keys (for direct and topic exchanges).
    pub(crate) routing_keys: Vec<String>,
    /// `maxPriority`: `x-max-priority` (0..=255).
    pub(crate) max_priority: Option<u8>,
    /// `queueType`: `classic` (default) or `quorum`.
    pub(crate) queue_type: String,
    /// `singleActiveConsumer`: `x-single-active-consumer`.
    pub(crate) single_active_consumer: bool,
    /// `maxLen`: overrides the component's `x-max-length`.
    pub(crate) max_len: Option<i64>,
    /// `maxLenBytes`: overrides the component's `x-max-length-bytes`.
    pub(crate) max_len_bytes: Option<i64>,
}

fn bad(key: &str, problem: impl fmt::Display) -> Error {
    Error::invalid_argument(format!("subscription metadata {key}: {problem}"))
}

fn meta<'a>(md: &'a Metadata, key: &str) -> Option<&'a str> {
    md.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn meta_limit(md: &Metadata, key: &str) -> Result<Option<i64>> {
    match meta(md, key) {
        None => Ok(None),
        Some(raw) => match raw.parse::<i64>() {
            Ok(v) if v > 0 => Ok(Some(v)),
            _ => Err(bad(key, format!("{raw:?} is not a positive integer"))),
        },
    }
}

impl SubscriptionOptions {
    /// Read `queueName`, `routingKey`, `maxPriority`, `queueType`, `singleActiveConsumer`,
    /// `maxLen` and `maxLenBytes`.
    pub(crate) fn from_metadata(md: &Metadata) -> Result<Self> {
        let queue_type = match meta(md, "queueType") {
            None => "classic".to_owned(),
            Some(t) if t == "classic" || t == "quorum" => t.to_owned(),
            Some(t) => return Err(bad("queueType", format!("{t:?} is not classic or quorum"))),
        };
        let max_priority = match meta(md, "maxPriority") {
            None => None,
            Some(raw) => Some(raw.parse::<u8>().map_err(|_| {
                bad(
                    "maxPriority",
                    format!("{raw:?} is not an integer from 0 to 255"),
                )
            })?),
        };
        let single_active_consumer = match meta(md, "singleActiveConsumer") {
            None => false,
            Some(raw) => plinth_core::metadata::parse_bool("singleActiveConsumer", raw)
                .map_err(|_| bad("singleActiveConsumer", format!("{raw:?} is not a boolean")))?,
        };
        let routing_keys = meta(md, "routingKey")
            .map(|keys| keys.split(',').map(|k| k.trim().to_owned()).collect())
            .unwrap_or_else(|| vec![String::new()]);
        for key in &routing_keys {
            if key.len() > MAX_NAME_BYTES {
                return Err(bad("routingKey", "a routing key is longer than 255 bytes"));
            }
        }
        Ok(Self {
            queue_name: meta(md, "queueName").map(str::to_owned),
            routing_keys,
            max_priority,
            queue_type,
            single_active_consumer,
            max_len: meta_limit(md, "maxLen")?,
            max_len_bytes: meta_limit(md, "maxLenBytes")?,
        })
    }
}
