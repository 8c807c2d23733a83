//! Metadata of `pubsub.jetstream`: Dapr's keys with Dapr's meaning, plus Plinth's own for
//! what Dapr's component does not do (creating streams, a CA, a call timeout).
//!
//! Everything is parsed and checked here, once, in the factory; nothing here does I/O.
//! Secrets (`token`, `jwt`, `seedKey`, `tls_client_key`, a password in `natsURL`) never
//! appear in Debug output or in error messages.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::ServerAddr;
use async_nats::jetstream::consumer::DeliverPolicy;
use plinth_core::{ComponentSpec, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::names::percent_decode;
use crate::pubsub::common::{consumer_id, max_message_bytes};

/// The connection name the server shows for Plinth's connections (Dapr's `name`).
pub(crate) const DEFAULT_CONNECTION_NAME: &str = "plinth - pubsub.jetstream";
/// How long a delivered message may stay unacknowledged before JetStream redelivers it
/// (Dapr's `ackWait`), unless Plinth keeps it alive.
pub(crate) const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// The shortest `ackWait`: held messages are kept alive every third of it.
pub(crate) const MIN_ACK_WAIT: Duration = Duration::from_secs(1);
/// How long connecting, one JetStream API call or one publish acknowledgement may take.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// JetStream keeps at most this many copies of a stream.
const MAX_REPLICAS: usize = 5;

/// Dapr keys that only mean something for push consumers (or for Dapr's own delivery
/// loop); Plinth pulls, so they are checked and then ignored.
pub(crate) const IGNORED_KEYS: &[&str] = &[
    "queueGroupName",
    "flowControl",
    "heartbeat",
    "rateLimit",
    "concurrency",
];

/// Where a PEM value comes from: the metadata itself, or a file read when connecting.
#[derive(Clone)]
pub(crate) enum Pem {
    /// PEM text given in the metadata.
    Inline(Vec<u8>),
    /// A file path (Dapr passes `tls_client_cert` and `tls_client_key` to the Go client as
    /// file names).
    File(PathBuf),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::Inline(_) => f.write_str("Inline(..)"),
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// TLS material beyond what a `tls://` URL alone does (system roots, no client
/// certificate).
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    /// `caCert`: the CAs to trust instead of Mozilla's roots.
    pub(crate) ca_cert: Option<Pem>,
    /// `tls_client_cert` and `tls_client_key`, for mutual TLS.
    pub(crate) client: Option<(Pem, Pem)>,
}

/// How Plinth authenticates to NATS.
#[derive(Clone, Default)]
pub(crate) enum Auth {
    /// No credentials (or only a client certificate).
    #[default]
    None,
    /// `token`, or a URL with only a user part (`nats://token@host`).
    Token(String),
    /// A user and password from the URL (`nats://user:password@host`).
    UserPassword(String, String),
    /// `jwt` and `seedKey`, as a credentials file would hold them.
    Jwt {
        /// The user JWT.
        jwt: String,
        /// The user's NKEY seed.
        seed: String,
    },
}

impl fmt::Debug for Auth {
    // Credentials are secrets: only their kind (and a user name) is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token(_) => f.write_str("Token(..)"),
            Auth::UserPassword(user, _) => f.debug_tuple("UserPassword").field(user).finish(),
            Auth::Jwt { .. } => f.write_str("Jwt(..)"),
        }
    }
}

impl Auth {
    /// Credentials as the text of a NATS credentials file, for the client's parser.
    pub(crate) fn credentials(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }
}

/// Limits of the streams Plinth creates (Plinth keys; unset means unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamLimits {
    /// `maxAge`: messages older than this are removed.
    pub(crate) max_age: Duration,
    /// `maxMsgs`: the most messages the stream holds; -1 for no limit.
    pub(crate) max_msgs: i64,
    /// `maxBytes`: the most bytes the stream holds; -1 for no limit.
    pub(crate) max_bytes: i64,
}

/// The parsed metadata of a `pubsub.jetstream` component.
#[derive(Clone)]
pub(crate) struct Config {
    /// `natsURL`, one or more servers, without credentials.
    pub(crate) servers: Vec<ServerAddr>,
    /// `natsURL` for messages: credentials replaced by `***`.
    pub(crate) url_display: String,
    /// `name`: the connection name.
    pub(crate) connection_name: String,
    /// `token`, `jwt` + `seedKey`, or credentials in the URL.
    pub(crate) auth: Auth,
    /// `caCert`, `tls_client_cert`, `tls_client_key`.
    pub(crate) tls: Option<TlsSettings>,
    /// `streamName`: the one stream every topic of this component uses.
    pub(crate) stream_name: Option<String>,
    /// `autoCreateStream`: create (or extend) the stream a topic needs.
    pub(crate) auto_create: bool,
    /// `durableName`: the base of consumer names instead of the group.
    pub(crate) durable_name: Option<String>,
    /// `consumerID`: the group every subscription joins instead of the app id.
    pub(crate) consumer_id: Option<String>,
    /// `deliverPolicy` with `startSequence` / `startTime`.
    pub(crate) deliver_policy: DeliverPolicy,
    /// `ackWait`.
    pub(crate) ack_wait: Duration,
    /// `maxDeliver`; -1 for unlimited.
    pub(crate) max_deliver: i64,
    /// `maxAckPending`; -1 for unlimited.
    pub(crate) max_ack_pending: i64,
    /// `backOff`: redelivery delays of messages not acknowledged in time.
    pub(crate) backoff: Vec<Duration>,
    /// `replicas` of created streams.
    pub(crate) replicas: usize,
    /// `memoryStorage` for created streams.
    pub(crate) memory_storage: bool,
    /// `maxAge`, `maxMsgs`, `maxBytes` of created streams.
    pub(crate) limits: StreamLimits,
    /// `retention` of created streams: `limits` or `interest`.
    pub(crate) retention: &'static str,
    /// The JetStream API prefix, from `domain` or `apiPrefix`.
    pub(crate) api_prefix: String,
    /// `maxMessageBytes`; `usize::MAX` when unset (the server's `max_payload` applies).
    pub(crate) max_message_bytes: usize,
    /// `timeout`: connecting, each API call, each publish acknowledgement.
    pub(crate) timeout: Duration,
}

impl fmt::Debug for Config {
    // Credentials and key material are left out (see `Auth` and `Pem`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("natsURL", &self.url_display)
            .field("connection_name", &self.connection_name)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("stream_name", &self.stream_name)
            .field("auto_create", &self.auto_create)
            .field("durable_name", &self.durable_name)
            .field("consumer_id", &self.consumer_id)
            .field("deliver_policy", &self.deliver_policy)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("max_ack_pending", &self.max_ack_pending)
            .field("backoff", &self.backoff)
            .field("replicas", &self.replicas)
            .field("memory_storage", &self.memory_storage)
            .field("limits", &self.limits)
            .field("api_prefix", &self.api_prefix)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn field(key: &str) -> String {
    format!("metadata.{key}")
}

/// A JetStream name (stream, consumer): no whitespace, `.`, `*`, `>`, path separators or
/// control characters.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
}

/// An integer where `0` and `-1` (and, for Dapr, absence) mean "no limit".
fn limit(spec: &ComponentSpec, key: &str) -> Result<i64> {
    let value: i64 = spec.parse_or(key, -1)?;
    match value {
        0 | -1 => Ok(-1),
        v if v > 0 => Ok(v),
        _ => Err(spec.invalid(&field(key), "must be positive, or 0 or -1 for no limit")),
    }
}

/// `[1s, 2s, 4s]` (Dapr's example) or `1s,2s,4s`.
fn backoff(spec: &ComponentSpec) -> Result<Vec<Duration>> {
    let Some(raw) = spec.get("backOff") else {
        return Ok(Vec::new());
    };
    let inner = raw.trim().trim_start_matches('[').trim_end_matches(']');
    let mut out = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let delay = plinth_core::metadata::parse_duration(part)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                spec.invalid(
                    &field("backOff"),
                    format!("{part:?} is not a positive duration"),
                )
            })?;
        out.push(delay);
    }
    Ok(out)
}

/// A PEM value: inline text (checked to parse) or a file path (read when connecting).
fn pem(spec: &ComponentSpec, key: &str, private_key: bool) -> Result<Option<Pem>> {
    let Some(raw) = spec.get(key) else {
        return Ok(None);
    };
    if !raw.contains("-----BEGIN ") {
        return Ok(Some(Pem::File(PathBuf::from(raw))));
    }
    // Parsed now only to report a malformed value at startup; the message never quotes it.
    let ok = if private_key {
        PrivateKeyDer::from_pem_slice(raw.as_bytes()).is_ok()
    } else {
        let certs: std::result::Result<Vec<CertificateDer<'_>>, _> =
            CertificateDer::pem_slice_iter(raw.as_bytes()).collect();
        certs.is_ok_and(|c| !c.is_empty())
    };
    if !ok {
        let what = if private_key {
            "a PEM private key"
        } else {
            "PEM certificates"
        };
        return Err(spec.invalid(&field(key), format!("does not hold {what}")));
    }
    Ok(Some(Pem::Inline(raw.as_bytes().to_vec())))
}

/// The servers of `natsURL` (comma-separated), with credentials taken out of the URLs.
fn servers(spec: &ComponentSpec) -> Result<(Vec<ServerAddr>, String, Auth)> {
    let raw = spec.require("natsURL")?;
    let mut servers = Vec::new();
    let mut shown = Vec::new();
    let mut auth = Auth::None;
    for (i, part) in raw.split(',').map(str::trim).enumerate() {
        // The parse error of the URL crate never quotes the input; ours names only the
        // position, since the URL may hold a password.
        let addr: ServerAddr = part.parse().map_err(|_| {
            spec.invalid(
                &field("natsURL"),
                format!("server {} is not a NATS URL (nats://host:4222)", i + 1),
            )
        })?;
        if !matches!(addr.scheme(), "nats" | "tls") {
            return Err(spec.invalid(
                &field("natsURL"),
                format!(
                    "scheme {:?} is not supported; use nats:// or tls://",
                    addr.scheme()
                ),
            ));
        }
        let mut url = addr.into_inner();
        if !url.username().is_empty() {
            let user = percent_decode(url.username());
            let found = match url.password() {
                Some(password) => Auth::UserPassword(user, percent_decode(password)),
                None => Auth::Token(user),
            };
            auth = found;
            // Cannot fail for a URL with a host, which a NATS URL has.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            shown.push(url.as_str().replacen("://", "://***@", 1));
        } else {
            shown.push(url.as_str().to_owned());
        }
        let addr = ServerAddr::from_url(url)
            .map_err(|_| spec.invalid(&field("natsURL"), "is not a NATS URL"))?;
        servers.push(addr);
    }
    Ok((servers, shown.join(","), auth))
}

fn auth(spec: &ComponentSpec, from_url: Auth) -> Result<Auth> {
    let token = spec.get("token");
    let jwt = spec.get("jwt");
    let seed = spec.get("seedKey");
    let url_has_credentials = !matches!(from_url, Auth::None);
    match (token, jwt, seed) {
        (_, Some(_), None) => Err(spec.invalid(&field("seedKey"), "jwt needs seedKey")),
        (_, None, Some(_)) => Err(spec.invalid(&field("jwt"), "seedKey needs jwt")),
        (Some(_), Some(_), Some(_)) => Err(spec.invalid(
            &field("token"),
            "use either token or jwt with seedKey, not both",
        )),
        (Some(_), None, None) | (None, Some(_), Some(_)) if url_has_credentials => Err(spec
            .invalid(
                &field("natsURL"),
                "holds credentials, and token or jwt is set too; use one",
            )),
        (Some(token), None, None) => Ok(Auth::Token(token.to_owned())),
        (None, Some(jwt), Some(seed)) => {
            // The client's own parser checks the seed; its error never holds the seed.
            async_nats::ConnectOptions::new()
                .credentials(&Auth::credentials(jwt, seed))
                .map_err(|_| {
                    spec.invalid(
                        &field("seedKey"),
                        "is not a user NKEY seed (SU...), or jwt is malformed",
                    )
                })?;
            Ok(Auth::Jwt {
                jwt: jwt.to_owned(),
                seed: seed.to_owned(),
            })
        }
        (None, None, None) => Ok(from_url),
    }
}

fn tls(spec: &ComponentSpec) -> Result<Option<TlsSettings>> {
    let ca_cert = pem(spec, "caCert", false)?;
    let cert = pem(spec, "tls_client_cert", false)?;
    let key = pem(spec, "tls_client_key", true)?;
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(spec.invalid(
                &field("tls_client_key"),
                "tls_client_cert needs tls_client_key",
            ));
        }
        (None, Some(_)) => {
            return Err(spec.invalid(
                &field("tls_client_cert"),
                "tls_client_key needs tls_client_cert",
            ));
        }
    };
    if ca_cert.is_none() && client.is_none() {
        return Ok(None);
    }
    Ok(Some(TlsSettings { ca_cert, client }))
}

fn deliver_policy(spec: &ComponentSpec) -> Result<DeliverPolicy> {
    #[derive(Clone, Copy)]
    enum Kind {
        All,
        Last,
        New,
        Sequence,
        Time,
    }
    let kind = spec.choice_or(
        "deliverPolicy",
        Kind::All,
        &[
            ("all", Kind::All),
            ("last", Kind::Last),
            ("new", Kind::New),
            ("sequence", Kind::Sequence),
            ("time", Kind::Time),
        ],
    )?;
    let start_sequence: u64 = spec.parse_or("startSequence", 0)?;
    // Dapr: Unix seconds.
    let start_time: Option<u64> = match spec.get("startTime") {
        None => None,
        Some(_) => Some(spec.parse_or("startTime", 0)?),
    };
    let misplaced = |key: &str, policy: &str| {
        spec.invalid(
            &field(key),
            format!("is only used with deliverPolicy: {policy}"),
        )
    };
    if start_sequence > 0 && !matches!(kind, Kind::Sequence) {
        return Err(misplaced("startSequence", "sequence"));
    }
    if start_time.is_some_and(|t| t > 0) && !matches!(kind, Kind::Time) {
        return Err(misplaced("startTime", "time"));
    }
    Ok(match kind {
        Kind::All => DeliverPolicy::All,
        Kind::Last => DeliverPolicy::Last,
        Kind::New => DeliverPolicy::New,
        Kind::Sequence => {
            if start_sequence == 0 {
                return Err(spec.invalid(
                    &field("startSequence"),
                    "deliverPolicy: sequence needs startSequence (1 or more)",
                ));
            }
            DeliverPolicy::ByStartSequence { start_sequence }
        }
        Kind::Time => {
            let secs = start_time.filter(|t| *t > 0).ok_or_else(|| {
                spec.invalid(
                    &field("startTime"),
                    "deliverPolicy: time needs startTime (Unix seconds)",
                )
            })?;
            let start_time = async_nats::datetime::from_nanos(i128::from(secs) * 1_000_000_000)
                .map_err(|_| spec.invalid(&field("startTime"), "is out of range"))?;
            DeliverPolicy::ByStartTime { start_time }
        }
    })
}

fn api_prefix(spec: &ComponentSpec) -> Result<String> {
    match (spec.get("domain"), spec.get("apiPrefix")) {
        (Some(_), Some(_)) => Err(spec.invalid(
            &field("apiPrefix"),
            "domain and apiPrefix both set the JetStream API prefix; set one",
        )),
        (Some(domain), None) => {
            if !is_valid_name(domain) {
                return Err(spec.invalid(&field("domain"), "is not a valid JetStream domain"));
            }
            Ok(format!("$JS.{domain}.API"))
        }
        (None, Some(prefix)) => {
            let prefix = prefix.trim_end_matches('.');
            if prefix.is_empty()
                || prefix.split('.').any(|t| {
                    t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
                })
            {
                return Err(spec.invalid(&field("apiPrefix"), "is not a valid subject prefix"));
            }
            Ok(prefix.to_owned())
        }
        (None, None) => Ok("$JS.API".to_owned()),
    }
}

impl Config {
    /// Read and check the metadata.
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let (servers, url_display, url_auth) = servers(spec)?;
        let auth = auth(spec, url_auth)?;
        let tls = tls(spec)?;

        let stream_name = spec.get("streamName").map(str::to_owned);
        if let Some(name) = &stream_name
            && !is_valid_name(name)
        {
            return Err(spec.invalid(
                &field("streamName"),
                "is not a valid stream name (no whitespace, '.', '*', '>', '/' or '\\')",
            ));
        }
        let durable_name = spec.get("durableName").map(str::to_owned);

        match spec.get("ackPolicy") {
            None => {}
            Some(v) if v.eq_ignore_ascii_case("explicit") => {}
            Some(v) => {
                return Err(spec.invalid(
                    &field("ackPolicy"),
                    format!(
                        "{v:?} is not supported: Plinth acknowledges every message on its \
                         own (at least once), which needs \"explicit\""
                    ),
                ));
            }
        }
        let deliver_policy = deliver_policy(spec)?;

        let ack_wait = spec.duration_or("ackWait", DEFAULT_ACK_WAIT)?;
        if ack_wait < MIN_ACK_WAIT {
            return Err(spec.invalid(
                &field("ackWait"),
                format!(
                    "must be at least {MIN_ACK_WAIT:?}: held messages are kept alive every \
                     third of it"
                ),
            ));
        }
        let max_deliver = limit(spec, "maxDeliver")?;
        let max_ack_pending = limit(spec, "maxAckPending")?;
        let backoff = backoff(spec)?;
        if !backoff.is_empty() && (max_deliver < 0 || max_deliver <= backoff.len() as i64) {
            return Err(spec.invalid(
                &field("maxDeliver"),
                format!(
                    "backOff has {} delays, so JetStream needs maxDeliver greater than that",
                    backoff.len()
                ),
            ));
        }

        let replicas: usize = spec.parse_or("replicas", 1)?;
        if replicas > MAX_REPLICAS {
            return Err(spec.invalid(&field("replicas"), format!("must be 1 to {MAX_REPLICAS}")));
        }
        let limits = StreamLimits {
            max_age: spec.duration_or("maxAge", Duration::ZERO)?,
            max_msgs: limit(spec, "maxMsgs")?,
            max_bytes: limit(spec, "maxBytes")?,
        };

        // Checked, then ignored: see IGNORED_KEYS.
        spec.bool_or("flowControl", false)?;
        spec.duration_or("heartbeat", Duration::ZERO)?;
        let _: u64 = spec.parse_or("rateLimit", 0)?;
        spec.choice_or("concurrency", (), &[("single", ()), ("parallel", ())])?;

        let timeout = spec.duration_or("timeout", DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(spec.invalid(&field("timeout"), "must be positive"));
        }

        Ok(Self {
            servers,
            url_display,
            connection_name: spec
                .get("name")
                .unwrap_or(DEFAULT_CONNECTION_NAME)
                .to_owned(),
            auth,
            tls,
            stream_name,
            auto_create: spec.bool_or("autoCreateStream", true)?,
            durable_name,
            consumer_id: consumer_id(spec),
            deliver_policy,
            ack_wait,
            max_deliver,
            max_ack_pending,
            backoff,
            replicas: replicas.max(1),
            memory_storage: spec.bool_or("memoryStorage", false)?,
            limits,
            // Limits by default: nats-server 2.9 drops messages of an interest-retention
            // stream that were delivered and not yet acknowledged when the server shut down
            // (seen in Plinth's broker-restart ledger test; never with limits).
            retention: spec.choice_or(
                "retention",
                "limits",
                &[("limits", "limits"), ("interest", "interest")],
            )?,
            api_prefix: api_prefix(spec)?,
            max_message_bytes: max_message_bytes(spec, usize::MAX)?,
            timeout,
        })
    }

    /// How often a held message is reported in progress: a third of the shortest time
    /// after which JetStream would redeliver it.
    pub(crate) fn keep_alive(&self) -> Duration {
        let shortest = self
            .backoff
            .iter()
            .copied()
            .chain([self.ack_wait])
            .min()
            .unwrap_or(self.ack_wait);
        shortest / 3
    }
}
