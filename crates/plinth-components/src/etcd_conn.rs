//! The etcd connection the `*.etcd` components share: Layotto's etcd metadata (`endpoints`,
//! `dialTimeout`, `keyPrefixPath`, `username`, `password`, `tlsCa`, `tlsCert`, `tlsCertKey`),
//! one client per component (tonic reconnects by itself), and a timeout around every call so
//! that an unreachable etcd fails fast with UNAVAILABLE.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use plinth_core::{ComponentSpec, Error, ErrorKind, Result};
use tokio::sync::RwLock;

/// How long connecting may take, by default (`dialTimeout`, Layotto's 5 seconds).
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take, by default (`timeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection settings read from Layotto's metadata keys.
#[derive(Clone)]
pub(crate) struct EtcdSettings {
    endpoints: Vec<String>,
    user: Option<(String, String)>,
    tls: Option<TlsOptions>,
    /// `keyPrefixPath`, with a leading and a trailing `/`.
    pub(crate) key_prefix: String,
    /// How long connecting may take.
    pub(crate) dial_timeout: Duration,
    /// How long one call may take.
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for EtcdSettings {
    // The password is a secret: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("username", &self.user.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls.is_some())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `p` with a leading and a trailing `/`, as Layotto normalises `keyPrefixPath`.
fn with_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 2);
    if !p.starts_with('/') {
        out.push('/');
    }
    out.push_str(p);
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

impl EtcdSettings {
    /// Read the metadata; `default_prefix` is the `keyPrefixPath` when it is absent.
    /// Certificate files are read here, so that a missing one stops startup naming the field.
    pub(crate) fn from_spec(spec: &ComponentSpec, default_prefix: &str) -> Result<Self> {
        let endpoints: Vec<String> = spec
            .require("endpoints")?
            .split([';', ','])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(spec.invalid("metadata.endpoints", "names no endpoint"));
        }
        let dial_timeout = spec.duration_or("dialTimeout", DEFAULT_DIAL_TIMEOUT)?;
        let timeout = spec.duration_or("timeout", DEFAULT_TIMEOUT)?;
        for (key, value) in [("dialTimeout", dial_timeout), ("timeout", timeout)] {
            if value.is_zero() {
                return Err(spec.invalid(&format!("metadata.{key}"), "must be positive"));
            }
        }
        let key_prefix = with_slashes(spec.get("keyPrefixPath").unwrap_or(default_prefix));
        let user = match (spec.get("username"), spec.get("password")) {
            (Some(user), Some(password)) => Some((user.to_owned(), password.to_owned())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(spec.invalid("metadata.password", "is required with a username"));
            }
            (None, Some(_)) => {
                return Err(spec.invalid("metadata.username", "is required with a password"));
            }
        };
        let read = |key: &str| -> Result<Option<Vec<u8>>> {
            spec.get(key)
                .map(|path| {
                    std::fs::read(path).map_err(|e| {
                        spec.invalid(&format!("metadata.{key}"), format!("reading {path}: {e}"))
                    })
                })
                .transpose()
        };
        let (ca, cert, key) = (read("tlsCa")?, read("tlsCert")?, read("tlsCertKey")?);
        let tls = if ca.is_none() && cert.is_none() && key.is_none() {
            None
        } else {
            let mut tls = TlsOptions::new();
            if let Some(ca) = ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            match (cert, key) {
                (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(cert, key)),
                (None, None) => {}
                (Some(_), None) => {
                    return Err(spec.invalid("metadata.tlsCertKey", "is required with tlsCert"));
                }
                (None, Some(_)) => {
                    return Err(spec.invalid("metadata.tlsCert", "is required with tlsCertKey"));
                }
            }
            if endpoints.iter().any(|e| e.starts_with("http://")) {
                return Err(spec.invalid(
                    "metadata.endpoints",
                    "an http:// endpoint cannot use TLS; write host:port or https://",
                ));
            }
            Some(tls)
        };
        Ok(Self {
            endpoints,
            user,
            tls,
            key_prefix,
            dial_timeout,
            timeout,
        })
    }

    fn options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_timeout(self.timeout)
            // Detects a dead connection under a long-lived watch.
            .with_keep_alive(Duration::from_secs(10), self.timeout);
        if let Some((user, password)) = &self.user {
            options = options.with_user(user, password);
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        options
    }
}

/// One component's client: absent until `init` connects.
pub(crate) struct EtcdConn {
    settings: EtcdSettings,
    client: RwLock<Option<Client>>,
}

impl std::fmt::Debug for EtcdConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConn")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl EtcdConn {
    pub(crate) fn new(settings: EtcdSettings) -> Self {
        Self {
            settings,
            client: RwLock::new(None),
        }
    }

    pub(crate) fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    /// Connect, if not yet connected, and check that etcd answers. Idempotent.
    pub(crate) async fn init(&self) -> Result<()> {
        let mut slot = self.client.write().await;
        if slot.is_none() {
            let connect = Client::connect(&self.settings.endpoints, Some(self.settings.options()));
            let client = tokio::time::timeout(self.settings.dial_timeout, connect)
                .await
                .map_err(|_| {
                    Error::unavailable(format!(
                        "etcd at {} did not accept a connection within {:?}",
                        self.at(),
                        self.settings.dial_timeout
                    ))
                })?
                .map_err(|e| self.error(e))?;
            *slot = Some(client);
        }
        drop(slot);
        self.ping().await
    }

    /// A read of one key (Layotto's "ping"), bounded by the call timeout: it needs a leader.
    pub(crate) async fn ping(&self) -> Result<()> {
        self.run(|mut c| async move { c.get("ping", None).await })
            .await
            .map(drop)
    }

    /// Drop the client.
    pub(crate) async fn close(&self) {
        self.client.write().await.take();
    }

    /// The client, if `init` succeeded. Clones share the connection.
    pub(crate) fn client(&self) -> Result<Client> {
        // Never wait for a connect in progress: calls fail fast while the component is DOWN.
        self.client
            .try_read()
            .ok()
            .and_then(|slot| slot.clone())
            .ok_or_else(|| {
                Error::unavailable(
                    "the etcd connection is not established yet (init has not succeeded)",
                )
            })
    }

    /// Run one call on a clone of the client, bounded by the timeout.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let client = self.client()?;
        match tokio::time::timeout(self.settings.timeout, call(client)).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// The error of a call that took longer than the timeout.
    pub(crate) fn timed_out(&self) -> Error {
        Error::unavailable(format!(
            "etcd at {} did not answer within {:?}",
            self.at(),
            self.settings.timeout
        ))
    }

    fn at(&self) -> String {
        self.settings.endpoints.join(";")
    }

    /// What etcd refused outright (a malformed request, too many operations in a
    /// transaction) is INTERNAL, a rejected login UNAUTHENTICATED or PERMISSION_DENIED;
    /// anything else (no connection, no leader, a deadline) is UNAVAILABLE and retryable.
    pub(crate) fn error(&self, err: etcd_client::Error) -> Error {
        use etcd_client::Error as E;
        use tonic::Code;
        let kind = match &err {
            E::InvalidArgs(_) | E::InvalidUri(_) | E::Utf8Error(_) => ErrorKind::Internal,
            E::GRpcStatus(status) => match status.code() {
                Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                    ErrorKind::Internal
                }
                Code::Unauthenticated => ErrorKind::Unauthenticated,
                Code::PermissionDenied => ErrorKind::PermissionDenied,
                _ => ErrorKind::Unavailable,
            },
            _ => ErrorKind::Unavailable,
        };
        Error::new(kind, format!("etcd at {}: {err}", self.at())).with_source(err)
    }
}

/// What the `*.etcd` components' tests share: the test etcd and a namespace per test.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The etcd the tests use: 127.0.0.1:2379, or `PLINTH_TEST_ETCD`.
    pub(crate) fn endpoint() -> String {
        std::env::var("PLINTH_TEST_ETCD").unwrap_or_else(|_| "127.0.0.1:2379".into())
    }

    /// A fresh `keyPrefixPath` for one test.
    pub(crate) fn prefix() -> String {
        format!("/plinth-test-{}/", uuid::Uuid::new_v4())
    }

    /// A spec of `type_name` on the test etcd under `prefix`.
    pub(crate) fn spec(type_name: &str, prefix: &str) -> ComponentSpec {
        ComponentSpec::new("t", type_name)
            .with_metadata("endpoints", endpoint())
            .with_metadata("keyPrefixPath", prefix)
    }

    /// A client of its own on the test etcd, failing loudly when it is missing.
    pub(crate) async fn raw() -> Client {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let mut client = Client::connect([endpoint()], Some(options))
            .await
            .unwrap_or_else(|e| panic!("{}", missing(&e)));
        client
            .get("ping", None)
            .await
            .unwrap_or_else(|e| panic!("{}", missing(&e)));
        client
    }

    /// The panic message when the test etcd does not answer.
    pub(crate) fn missing(e: &dyn std::fmt::Display) -> String {
        format!(
            "etcd at {} must be reachable (start it with scripts/services/etcd.sh, or set PLINTH_TEST_ETCD): {e}",
            endpoint()
        )
    }

    /// Delete every key under `prefix`.
    pub(crate) async fn cleanup(prefix: &str) {
        raw()
            .await
            .delete(
                prefix,
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .expect("delete the test prefix");
    }
}
