//! Name resolution: which sidecars serve an app id. One [`Resolver`] is built from the
//! `nameResolution` section of a Configuration (Dapr's shape: a component name and its
//! configuration).
//!
//! The mesh asks a resolver for an app's instances in the background and keeps the answer
//! (see the balancer), so a resolver is not on the request path and needs no cache of its
//! own.
//!
//! [`build`] picks the resolver by `nameResolution.component`:
//!
//! - `static` ([`StaticResolver`]): a fixed map of app id → addresses in the configuration.
//! - `sqlite` ([`SqliteResolver`]): sidecars on one machine register in one shared SQLite file
//!   and heartbeat; entries whose heartbeats stop expire.
//! - `dns` ([`DnsResolver`]): a DNS name per app (Kubernetes headless services).

mod config;
mod dns;
mod sqlite;
mod static_;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use plinth_core::{Error, Result};
use serde::Deserialize;

pub use dns::{DnsConfig, DnsResolver};
pub use sqlite::{SqliteConfig, SqliteResolver};
pub use static_::{StaticConfig, StaticResolver};

/// Build the resolver that `spec` names. Errors name the offending field
/// (`nameResolution.component`, `nameResolution.configuration.<field>`), so a bad
/// Configuration is reported once, at load.
///
/// The `sqlite` resolver opens its database file here (blocking file I/O, once at startup).
pub fn build(spec: &NameResolutionSpec) -> Result<Arc<dyn Resolver>> {
    let component = spec.component.trim();
    let resolver: Arc<dyn Resolver> = match component {
        "static" => Arc::new(StaticResolver::new(config::parse(&spec.configuration)?)?),
        "sqlite" => Arc::new(SqliteResolver::open(config::parse(&spec.configuration)?)?),
        "dns" => Arc::new(DnsResolver::new(config::parse(&spec.configuration)?)?),
        "" => {
            return Err(Error::invalid_argument(
                "nameResolution.component: missing; use one of static, sqlite, dns",
            ));
        }
        other => {
            return Err(Error::invalid_argument(format!(
                "nameResolution.component: unknown resolver {other:?}; use one of static, sqlite, dns"
            )));
        }
    };
    Ok(resolver)
}

/// The `nameResolution` section of a Configuration, as Dapr writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameResolutionSpec {
    /// The resolver: `static`, `sqlite` or `dns`.
    pub component: String,
    /// The resolver's version; accepted and ignored, as every resolver has one version.
    #[serde(default)]
    pub version: String,
    /// The resolver's own settings.
    #[serde(default)]
    pub configuration: serde_json::Value,
}

/// Who this sidecar is, for resolvers that register it (SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The app id this sidecar serves.
    pub app_id: String,
    /// Its namespace.
    pub namespace: String,
    /// The address peers reach its mesh listener at.
    pub address: SocketAddr,
}

/// Resolves app ids to the mesh addresses of their sidecars.
#[async_trait]
pub trait Resolver: Send + Sync + fmt::Debug + 'static {
    /// The resolver's name, for logs and metrics (`static`, `sqlite`, `dns`).
    fn name(&self) -> &'static str;

    /// The live instances of `app_id` in `namespace`, in no particular order. An app with no
    /// instance answers an empty list; an error means the resolver itself failed (its
    /// database or DNS is unreachable), and the mesh keeps its last answer.
    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Vec<SocketAddr>>;

    /// Announce this sidecar to peers until the returned guard is dropped. Resolvers that
    /// learn instances elsewhere (static config, DNS) do nothing.
    async fn register(&self, me: Registration) -> Result<RegistrationGuard>;
}

/// Keeps a registration alive (heartbeats); dropping it stops them and removes the entry.
pub struct RegistrationGuard {
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl RegistrationGuard {
    /// A guard that does nothing.
    pub fn none() -> Self {
        Self { on_drop: None }
    }

    /// A guard that runs `f` when dropped.
    pub fn on_drop(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            on_drop: Some(Box::new(f)),
        }
    }
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl fmt::Debug for RegistrationGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationGuard")
            .field("active", &self.on_drop.is_some())
            .finish()
    }
}
