//! Metadata of `pubsub.mqtt3`: Dapr's keys (`url`, `qos`, `retain`, `cleanSession`,
//! `caCert`, `clientCert`, `clientKey`, `consumerID`) with Dapr's meaning, plus Plinth's
//! `clientID`, `timeout`, `keepAlive` and `maxMessageBytes`.
//!
//! Parsed once, in the factory, without I/O. The password in the URL and the client key are
//! secrets: neither appears in `Debug` output or in an error message.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::ConfigBuilderExt;
use plinth_core::{ComponentSpec, Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::super::common::{consumer_id, max_message_bytes};

/// Component metadata: the broker, `scheme://[user[:password]@]host[:port]` (required).
pub const URL: &str = "url";
/// Component metadata: the quality of service; only `1` (at least once) is accepted.
pub const QOS: &str = "qos";
/// Component metadata: publish with the MQTT retain flag (per request: metadata `retain`).
pub const RETAIN: &str = "retain";
/// Component metadata: connect subscriber sessions with clean_session (not durable).
pub const CLEAN_SESSION: &str = "cleanSession";
/// Component metadata: PEM certificates of the CAs to trust instead of Mozilla's roots.
pub const CA_CERT: &str = "caCert";
/// Component metadata: the PEM client certificate chain for mutual TLS.
pub const CLIENT_CERT: &str = "clientCert";
/// Component metadata: the PEM private key of `clientCert` (a secret).
pub const CLIENT_KEY: &str = "clientKey";
/// Component metadata (Plinth): the base of every MQTT client id of this component.
pub const CLIENT_ID: &str = "clientID";
/// Component metadata (Plinth): how long connecting, a PUBACK, a SUBACK or an ack may take.
pub const TIMEOUT: &str = "timeout";
/// Component metadata (Plinth): the MQTT keep-alive interval.
pub const KEEP_ALIVE: &str = "keepAlive";
/// Component metadata (Plinth): subscribe with shared subscriptions,
/// `$share/{group}/{topic}` (default `true`), so that the replicas of an app compete for
/// messages. `false` subscribes to the plain topic: every subscriber gets every message
/// (run one replica per app id), but the subscription survives a restart of a broker that
/// does not persist shared subscriptions (Mosquitto 2.0 does not).
pub const SHARED_SUBSCRIPTION: &str = "sharedSubscription";

/// The largest remaining length of an MQTT packet (the protocol's own ceiling).
pub const MQTT_MAX_PACKET: usize = 268_435_455;
/// The default `maxMessageBytes`: 256 MiB, the protocol's ceiling (a payload also shares
/// the packet with its topic, so the largest real payload is a few bytes less).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// The default of [`TIMEOUT`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default of [`KEEP_ALIVE`].
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// A host name or an IP address (an IPv6 address in brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Whether the URL asks for TLS (`ssl://`, `mqtts://`, `tls://`, `tcps://`).
    pub(crate) tls: bool,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = if self.tls { " over TLS" } else { "" };
        write!(f, "mqtt broker at {}:{}{tls}", self.host, self.port)
    }
}

/// The settings of a `pubsub.mqtt3` component.
#[derive(Clone)]
pub(crate) struct Config {
    /// The component's name, for logs.
    pub(crate) name: String,
    /// The app id, part of the publisher's default client id.
    pub(crate) app_id: String,
    pub(crate) endpoint: Endpoint,
    /// User name and password from the URL; the password is a secret.
    pub(crate) credentials: Option<(String, String)>,
    /// The TLS client settings, with the ring provider; `Some` exactly when the URL asks
    /// for TLS.
    pub(crate) tls: Option<Arc<ClientConfig>>,
    /// Which TLS material was given, for `Debug`.
    tls_material: (bool, bool),
    pub(crate) retain: bool,
    pub(crate) clean_session: bool,
    /// `consumerID`: the shared-subscription group of every subscription.
    pub(crate) consumer_id: Option<String>,
    /// `clientID`: the base of the client ids; by default derived from the group and the
    /// host name.
    pub(crate) client_id: Option<String>,
    /// `sharedSubscription`: subscribe to `$share/{group}/{topic}` rather than the topic.
    pub(crate) shared: bool,
    pub(crate) max_message_bytes: usize,
    pub(crate) timeout: Duration,
    pub(crate) keep_alive: Duration,
}

impl fmt::Debug for Config {
    // The URL's password and the client key are secrets: only their presence is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = self
            .credentials
            .as_ref()
            .map(|(user, _)| format!("{user}:<redacted>"));
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("credentials", &credentials)
            .field("ca_cert", &self.tls_material.0)
            .field(
                "client_cert_and_key",
                &self.tls_material.1.then_some("<redacted>"),
            )
            .field("retain", &self.retain)
            .field("clean_session", &self.clean_session)
            .field("consumer_id", &self.consumer_id)
            .field("client_id", &self.client_id)
            .field("shared", &self.shared)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("timeout", &self.timeout)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

fn field(key: &str) -> String {
    format!("metadata.{key}")
}

impl Config {
    /// Read and check the metadata.
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let (endpoint, credentials) = parse_url(spec, spec.require(URL)?)?;
        match spec.get(QOS) {
            None | Some("1") => {}
            Some("0") => {
                return Err(spec.invalid(
                    &field(QOS),
                    "QoS 0 is at most once and loses messages; pubsub.mqtt3 needs 1",
                ));
            }
            Some("2") => {
                return Err(spec.invalid(
                    &field(QOS),
                    "QoS 2 is not supported; use 1 (at least once: subscribers may see a \
                     message twice)",
                ));
            }
            Some(other) => {
                return Err(
                    spec.invalid(&field(QOS), format!("{other:?} is not a QoS level; use 1"))
                );
            }
        }
        let retain = spec.bool_or(RETAIN, false)?;
        let shared = spec.bool_or(SHARED_SUBSCRIPTION, true)?;
        let clean_session = spec.bool_or(CLEAN_SESSION, false)?;
        let consumer_id = consumer_id(spec);
        if let Some(group) = &consumer_id {
            check_group(group).map_err(|e| spec.invalid(&field("consumerID"), e.message()))?;
        }
        let client_id = spec.get(CLIENT_ID).map(str::to_owned);
        if client_id
            .as_ref()
            .is_some_and(|id| id.chars().any(char::is_control) || id.len() > 60_000)
        {
            return Err(spec.invalid(
                &field(CLIENT_ID),
                "must be printable and at most 60000 bytes",
            ));
        }
        let max_message_bytes = max_message_bytes(spec, DEFAULT_MAX_MESSAGE_BYTES)?;
        if max_message_bytes > DEFAULT_MAX_MESSAGE_BYTES {
            return Err(spec.invalid(
                &field("maxMessageBytes"),
                format!(
                    "{max_message_bytes} is over MQTT's limit: a packet carries at most \
                     {MQTT_MAX_PACKET} bytes"
                ),
            ));
        }
        let timeout = spec.duration_or(TIMEOUT, DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(spec.invalid(&field(TIMEOUT), "must be positive"));
        }
        let keep_alive = spec.duration_or(KEEP_ALIVE, DEFAULT_KEEP_ALIVE)?;
        if keep_alive < Duration::from_secs(1) || keep_alive > Duration::from_secs(65_535) {
            return Err(spec.invalid(
                &field(KEEP_ALIVE),
                "must be between 1s and 65535s (MQTT counts it in whole seconds)",
            ));
        }
        let pem = |key: &str| spec.get(key).map(str::to_owned);
        let (ca, cert, key) = (pem(CA_CERT), pem(CLIENT_CERT), pem(CLIENT_KEY));
        let tls_material = (ca.is_some(), cert.is_some() || key.is_some());
        let tls = if endpoint.tls {
            Some(tls_config(
                spec,
                ca.as_deref(),
                cert.as_deref(),
                key.as_deref(),
            )?)
        } else {
            for (key, value) in [(CA_CERT, &ca), (CLIENT_CERT, &cert), (CLIENT_KEY, &key)] {
                if value.is_some() {
                    return Err(spec.invalid(
                        &field(key),
                        "is only used with a TLS url (ssl://, mqtts://, tls:// or tcps://)",
                    ));
                }
            }
            None
        };
        Ok(Self {
            name: spec.name.clone(),
            app_id: spec.app_id.clone(),
            endpoint,
            credentials,
            tls,
            tls_material,
            retain,
            clean_session,
            shared,
            consumer_id,
            client_id,
            max_message_bytes,
            timeout,
            keep_alive,
        })
    }
}

/// A shared subscription's group is one level of the filter `$share/{group}/{topic}`.
pub(crate) fn check_group(group: &str) -> Result<()> {
    if group.contains(['/', '+', '#']) || group.chars().any(char::is_control) {
        return Err(Error::invalid_argument(format!(
            "consumer group {group:?}: an MQTT shared subscription's group cannot contain \
             '/', '+', '#' or control characters"
        )));
    }
    Ok(())
}

/// `scheme://[user[:password]@]host[:port][/]`, as Dapr's component (paho) takes it. Errors
/// never repeat the URL, which may hold a password.
fn parse_url(spec: &ComponentSpec, raw: &str) -> Result<(Endpoint, Option<(String, String)>)> {
    let bad = |problem: &str| spec.invalid(&field(URL), problem);
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| bad("is not scheme://host[:port]"))?;
    let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "tcp" | "mqtt" => (false, 1883),
        "ssl" | "mqtts" | "tls" | "tcps" => (true, 8883),
        _ => {
            return Err(spec.invalid(
                &field(URL),
                format!(
                    "the scheme {scheme:?} is not supported; use tcp:// or mqtt://, or ssl://, \
                     mqtts://, tls:// or tcps:// for TLS"
                ),
            ));
        }
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !(tail.is_empty() || tail == "/") {
        return Err(bad("must not have a path or query"));
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let credentials = match userinfo {
        None => None,
        Some(userinfo) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let user = percent_decode(user).ok_or_else(|| bad("has a malformed user name"))?;
            let password =
                percent_decode(password).ok_or_else(|| bad("has a malformed password"))?;
            match (user.is_empty(), password.is_empty()) {
                (true, true) => None,
                (true, false) => return Err(bad("has a password without a user name")),
                _ => Some((user, password)),
            }
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed IPv6 address"))?;
        (format!("[{addr}]"), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("has no host"));
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("has a port that is not a number from 1 to 65535"))?,
    };
    Ok((Endpoint { host, port, tls }, credentials))
}

/// Decode `%XX` escapes, as URL user info carries reserved characters.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// rustls with the ring provider: the CAs of `caCert`, or Mozilla's roots (webpki-roots),
/// and the client certificate for mutual TLS. Errors about the key never show it.
fn tls_config(
    spec: &ComponentSpec,
    ca: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("mqtt TLS setup: {e}")))?;
    let builder = match ca {
        None => builder.with_webpki_roots(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|_| spec.invalid(&field(CA_CERT), "is not PEM"))?;
                roots
                    .add(cert)
                    .map_err(|e| spec.invalid(&field(CA_CERT), e))?;
            }
            if roots.is_empty() {
                return Err(spec.invalid(&field(CA_CERT), "holds no PEM certificate"));
            }
            builder.with_root_certificates(roots)
        }
    };
    let config = match (cert, key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(spec.invalid(&field(CLIENT_KEY), "clientCert needs clientKey"));
        }
        (None, Some(_)) => {
            return Err(spec.invalid(&field(CLIENT_CERT), "clientKey needs clientCert"));
        }
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| spec.invalid(&field(CLIENT_CERT), "is not PEM"))?;
            if chain.is_empty() {
                return Err(spec.invalid(&field(CLIENT_CERT), "holds no PEM certificate"));
            }
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| spec.invalid(&field(CLIENT_KEY), "is not a PEM private key"))?;
            builder.with_client_auth_cert(chain, key).map_err(|_| {
                spec.invalid(
                    &field(CLIENT_KEY),
                    "cannot be used with clientCert (a key of another certificate, or an \
                     unsupported algorithm)",
                )
            })?
        }
    };
    Ok(Arc::new(config))
}
