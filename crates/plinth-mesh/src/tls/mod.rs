//! Mutual TLS between sidecars on the mesh listener.
//!
//! Every sidecar holds a certificate whose URI SAN is its SPIFFE id,
//! `spiffe://<trust-domain>/ns/<namespace>/<app-id>` (Dapr's format), issued by a CA that
//! every sidecar trusts. Both ends verify the other's chain against that CA; the caller then
//! checks that the callee is the app it meant to reach ([`MeshTls::connect`]), and the callee
//! learns who is calling ([`MeshTls::accept`]) for access control (see [`crate::acl`]).
//!
//! DNS names play no part: peers are addressed by app id, and an instance's address says
//! nothing about which app it serves, so the server's name is its SPIFFE id and nothing else.
//!
//! Certificates rotate by rewriting the three files; [`MeshTls::spawn_reload`] notices and
//! swaps the configurations for new connections, leaving open ones as they are.

mod verify;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use plinth_core::{Error, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::net::TcpStream;

use self::verify::SpiffeServerVerifier;

/// The trust domain when none is configured, as in Dapr.
pub const DEFAULT_TRUST_DOMAIN: &str = "public";

/// How often certificate files are checked for changes when `reloadInterval` is not set.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// ALPN: the mesh speaks HTTP/2; the server also offers HTTP/1.1 for tools such as curl.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Who a sidecar is: the SPIFFE id in its certificate, taken apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The trust domain, `public` unless configured.
    pub trust_domain: String,
    /// The app's namespace.
    pub namespace: String,
    /// The app id.
    pub app_id: String,
}

impl Identity {
    /// An identity from its parts.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        app_id: impl Into<String>,
    ) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            app_id: app_id.into(),
        }
    }

    /// Parse `spiffe://<trust-domain>/ns/<namespace>/<app-id>`; `None` for any other shape
    /// (another scheme, a missing or empty part, extra path segments).
    pub fn from_spiffe(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let trust_domain = parts.next()?;
        if parts.next()? != "ns" {
            return None;
        }
        let namespace = parts.next()?;
        let app_id = parts.next()?;
        if parts.next().is_some()
            || [trust_domain, namespace, app_id]
                .iter()
                .any(|p| p.is_empty())
        {
            return None;
        }
        Some(Self::new(trust_domain, namespace, app_id))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/{}",
            self.trust_domain, self.namespace, self.app_id
        )
    }
}

/// The SPIFFE identity in a certificate's URI SAN.
///
/// Errors (unauthenticated) when the certificate does not parse, carries no SPIFFE URI, or
/// carries more than one (the SPIFFE spec allows exactly one).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
        Error::unauthenticated(format!("the certificate does not parse as X.509: {e}"))
    })?;
    let san = parsed.subject_alternative_name().map_err(|e| {
        Error::unauthenticated(format!(
            "the certificate's subjectAltName does not parse: {e}"
        ))
    })?;
    let mut found = None;
    for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
        let x509_parser::extensions::GeneralName::URI(uri) = name else {
            continue;
        };
        if !uri.starts_with("spiffe://") {
            continue;
        }
        let id = Identity::from_spiffe(uri).ok_or_else(|| {
            Error::unauthenticated(format!(
                "the certificate's SPIFFE id {uri} is not spiffe://<trust-domain>/ns/<namespace>/<app-id>"
            ))
        })?;
        if found.is_some() {
            return Err(Error::unauthenticated(
                "the certificate carries more than one SPIFFE id",
            ));
        }
        found = Some(id);
    }
    found.ok_or_else(|| {
        Error::unauthenticated("the certificate carries no SPIFFE id (URI subjectAltName)")
    })
}

/// The `mesh.tls` section: this sidecar's certificate, its key and the CA that signs every
/// sidecar's certificate, all PEM files. The files are re-read when they change, so a
/// certificate can be rotated without a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    /// This sidecar's certificate chain, leaf first. The leaf must carry the sidecar's SPIFFE
    /// id `spiffe://<trustDomain>/ns/<namespace>/<app-id>` as a URI subjectAltName, and both
    /// the serverAuth and clientAuth extended key usages (it serves and it calls).
    pub cert_file: PathBuf,
    /// The private key of the leaf certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key_file: PathBuf,
    /// The CA bundle that peers' certificates must chain to.
    pub ca_file: PathBuf,
    /// The SPIFFE trust domain of this sidecar. Default `public`, as in Dapr.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// How often the three files are checked for changes, as a Go duration (`5s`, `1m`).
    /// Default `5s`.
    #[serde(default)]
    pub reload_interval: Option<String>,
}

fn default_trust_domain() -> String {
    DEFAULT_TRUST_DOMAIN.to_owned()
}

impl TlsFiles {
    /// Files with the default trust domain and reload interval.
    pub fn new(
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
        ca_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            ca_file: ca_file.into(),
            trust_domain: default_trust_domain(),
            reload_interval: None,
        }
    }

    /// The identity of app `app_id` in `namespace` within this section's trust domain: what
    /// [`MeshTls::load`] expects the certificate to say.
    pub fn identity(&self, namespace: &str, app_id: &str) -> Identity {
        Identity::new(self.trust_domain.clone(), namespace, app_id)
    }

    /// The reload interval, validated.
    pub fn reload_interval(&self) -> Result<Duration> {
        let Some(raw) = &self.reload_interval else {
            return Ok(DEFAULT_RELOAD_INTERVAL);
        };
        match plinth_core::metadata::parse_duration(raw) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(Error::invalid_argument(format!(
                "mesh.tls.reloadInterval: {raw:?} is not a positive duration (e.g. 5s, 1m)"
            ))),
        }
    }
}

/// The two rustls configurations built from one reading of the files.
#[derive(Debug)]
struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// What the files looked like when they were last loaded: modification time and size of
/// each, `None` for one that could not be read.
type Stamp = [Option<(SystemTime, u64)>; 3];

/// This sidecar's mesh TLS: the current server and client configurations, reloaded when the
/// files change. Cloning is cheap and clones share the configurations.
#[derive(Clone)]
pub struct MeshTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    me: Identity,
    interval: Duration,
    current: ArcSwap<Configs>,
    /// The files' stamp behind `current`; a different stamp on a tick triggers a reload.
    loaded: Mutex<Stamp>,
}

impl fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshTls")
            .field("me", &self.inner.me.to_string())
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Read the files and build the configurations. Errors name the field and file that is
    /// missing or wrong, and fail when the certificate is not `me`'s or the key is not the
    /// certificate's.
    pub fn load(files: &TlsFiles, me: &Identity) -> Result<MeshTls> {
        let interval = files.reload_interval()?;
        let stamp = stamp(files);
        let configs = build(files, me)?;
        Ok(MeshTls {
            inner: Arc::new(Inner {
                files: files.clone(),
                me: me.clone(),
                interval,
                current: ArcSwap::from_pointee(configs),
                loaded: Mutex::new(stamp),
            }),
        })
    }

    /// Who this sidecar is.
    pub fn identity(&self) -> &Identity {
        &self.inner.me
    }

    /// The current server configuration: client certificates required and verified against
    /// the CA; ALPN `h2` and `http/1.1`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.current.load().server.clone()
    }

    /// The current client configuration: presents this sidecar's certificate, verifies the
    /// server's chain against the CA (no DNS name check, see the module docs); ALPN `h2`.
    /// Callers that use it directly must check the server's identity themselves, as
    /// [`MeshTls::connect`] does.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.inner.current.load().client.clone()
    }

    /// TLS handshake as the client on `tcp`, then check that the server is `expected`.
    ///
    /// Errors: unauthenticated when either side rejected the other's certificate or the
    /// server is someone else; unavailable when the connection failed. There is no timeout
    /// here: callers bound the handshake with their connect timeout.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        expected: &Identity,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let peer = tcp.peer_addr().ok();
        let name = match peer {
            // An IP address sends no SNI, which would mean nothing to the peer anyway.
            Some(addr) => ServerName::IpAddress(addr.ip().into()),
            None => ServerName::try_from("plinth-mesh.invalid")
                .map_err(|e| Error::internal(format!("server name: {e}")))?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(e, peer, &format!("calling {expected}")))?;
        let presented = peer_identity(stream.get_ref().1.peer_certificates(), peer)?;
        if presented != *expected {
            return Err(Error::unauthenticated(format!(
                "peer at {} presented {presented}, expected {expected}",
                show(peer)
            )));
        }
        Ok(stream)
    }

    /// TLS handshake as the server on `tcp` with the current configuration; returns the
    /// stream and the caller's identity (for access control).
    ///
    /// Errors: unauthenticated when the client presented no certificate or one that does not
    /// chain to the CA or carries no SPIFFE id; unavailable when the connection failed.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Identity)> {
        let peer = tcp.peer_addr().ok();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config());
        let stream = acceptor
            .accept(tcp)
            .await
            .map_err(|e| handshake_error(e, peer, "accepting a mesh connection"))?;
        let caller = peer_identity(stream.get_ref().1.peer_certificates(), peer)?;
        Ok((stream, caller))
    }

    /// Re-read the files now and, if they are good, use them for new connections. On error
    /// the current configurations stay.
    pub fn reload_now(&self) -> Result<()> {
        self.inner.reload()
    }

    /// Check the files' modification times and sizes every reload interval and reload when
    /// they change. A failed reload (a half-written file, a certificate for someone else) is
    /// logged and retried on the next tick while the old configurations stay in use.
    ///
    /// The task ends when every clone of this `MeshTls` is dropped, or when aborted through
    /// the handle.
    pub fn spawn_reload(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let interval = self.inner.interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; the files were just loaded.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                // Reading metadata and a few KiB of PEM blocks for microseconds; not worth
                // a blocking-pool hop every few seconds.
                if inner.changed()
                    && let Err(err) = inner.reload()
                {
                    tracing::warn!(
                        me = %inner.me,
                        error = %err,
                        "mesh TLS reload failed; keeping the current certificate"
                    );
                }
            }
        })
    }
}

impl Inner {
    fn changed(&self) -> bool {
        let now = stamp(&self.files);
        match self.loaded.lock() {
            Ok(loaded) => *loaded != now,
            // A panic elsewhere while holding the lock: reloading is the safe answer.
            Err(_) => true,
        }
    }

    fn reload(&self) -> Result<()> {
        // Stamp before reading: a write that lands during the read changes the stamp again
        // and is picked up on the next tick.
        let now = stamp(&self.files);
        let configs = build(&self.files, &self.me)?;
        self.current.store(Arc::new(configs));
        match self.loaded.lock() {
            Ok(mut loaded) => *loaded = now,
            Err(poisoned) => *poisoned.into_inner() = now,
        }
        tracing::info!(me = %self.me, "mesh TLS certificate reloaded");
        Ok(())
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.cert_file, &files.key_file, &files.ca_file].map(|path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    })
}

fn provider() -> Arc<CryptoProvider> {
    // The workspace builds rustls with ring only; naming it here keeps the mesh independent
    // of whatever process-wide default another crate installs.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, field: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::from(e).context(format!("mesh.tls.{field}: cannot read {}", path.display()))
    })
}

fn build(files: &TlsFiles, me: &Identity) -> Result<Configs> {
    let provider = provider();

    let cert_pem = read(&files.cert_file, "certFile")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::invalid_argument(format!(
                "mesh.tls.certFile: {} is not a PEM certificate chain: {e}",
                files.cert_file.display()
            ))
        })?;
    let Some(leaf) = chain.first() else {
        return Err(Error::invalid_argument(format!(
            "mesh.tls.certFile: {} holds no certificate",
            files.cert_file.display()
        )));
    };
    let mine = identity_of(leaf).map_err(|e| {
        Error::invalid_argument(format!(
            "mesh.tls.certFile: {}: {}",
            files.cert_file.display(),
            e.message()
        ))
    })?;
    if mine != *me {
        return Err(Error::invalid_argument(format!(
            "mesh.tls.certFile: {} is the certificate of {mine}, but this sidecar is {me}",
            files.cert_file.display()
        )));
    }

    let key_pem = read(&files.key_file, "keyFile")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        Error::invalid_argument(format!(
            "mesh.tls.keyFile: {} holds no PEM private key (PKCS#8, RSA or SEC1): {e}",
            files.key_file.display()
        ))
    })?;
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        Error::invalid_argument(format!(
            "mesh.tls.keyFile: {} is not the key of the certificate in {}: {e}",
            files.key_file.display(),
            files.cert_file.display()
        ))
    })?;
    let certified = Arc::new(certified);

    let ca_pem = read(&files.ca_file, "caFile")?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| {
            Error::invalid_argument(format!(
                "mesh.tls.caFile: {} is not a PEM certificate bundle: {e}",
                files.ca_file.display()
            ))
        })?;
        roots.add(cert).map_err(|e| {
            Error::invalid_argument(format!(
                "mesh.tls.caFile: {}: a certificate is not a usable trust anchor: {e}",
                files.ca_file.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(Error::invalid_argument(format!(
            "mesh.tls.caFile: {} holds no certificate",
            files.ca_file.display()
        )));
    }
    let roots = Arc::new(roots);

    let config_error = |side: &str, e: &dyn fmt::Display| {
        Error::invalid_argument(format!("mesh.tls: building the {side} configuration: {e}"))
    };

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| config_error("server", &e))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("server", &e))?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            certified.clone(),
        )));
    server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];

    let server_verifier = SpiffeServerVerifier::new(roots, provider.clone());
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("client", &e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(server_verifier))
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    client.alpn_protocols = vec![ALPN_H2.to_vec()];

    Ok(Configs {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

fn show(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string())
}

fn peer_identity(
    certs: Option<&[CertificateDer<'static>]>,
    peer: Option<SocketAddr>,
) -> Result<Identity> {
    let leaf = certs.and_then(|c| c.first()).ok_or_else(|| {
        Error::unauthenticated(format!("peer at {} presented no certificate", show(peer)))
    })?;
    identity_of(leaf).map_err(|e| e.context(format!("peer at {}", show(peer))))
}

/// A failed handshake: a certificate problem on either side is an authentication failure,
/// anything else (reset, EOF) means the peer is unavailable.
fn handshake_error(err: std::io::Error, peer: Option<SocketAddr>, doing: &str) -> Error {
    use rustls::AlertDescription as Alert;
    let rejected = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| match tls {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
            rustls::Error::AlertReceived(alert) => matches!(
                alert,
                Alert::BadCertificate
                    | Alert::UnsupportedCertificate
                    | Alert::CertificateRevoked
                    | Alert::CertificateExpired
                    | Alert::CertificateUnknown
                    | Alert::UnknownCA
                    | Alert::CertificateRequired
                    | Alert::AccessDenied
                    | Alert::DecryptError
            ),
            _ => false,
        });
    let message = format!("TLS handshake with {} failed ({doing}): {err}", show(peer));
    if rejected {
        Error::unauthenticated(message).with_source(err)
    } else {
        Error::unavailable(message).with_source(err)
    }
}
