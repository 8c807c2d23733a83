//! The `static` resolver: app id → addresses, written in the Configuration. For fixed
//! deployments and tests, where nothing registers and nothing changes while Plinth runs.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};

use async_trait::async_trait;
use plinth_core::Result;
use serde::Deserialize;

use super::config::field_error;
use super::{Registration, RegistrationGuard, Resolver};

/// `nameResolution.configuration` for `component: static`.
///
/// ```yaml
/// nameResolution:
///   component: static
///   configuration:
///     apps:
///       orders: ["127.0.0.1:50002", "127.0.0.1:50012"]
///       billing: ["localhost:50022"]
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticConfig {
    /// App id → the mesh addresses of its sidecars, each `host:port`. IP literals are used as
    /// written (`"[::1]:50002"` for IPv6); a host name (`localhost:50002`) is resolved once,
    /// when the Configuration is loaded, and every address it resolves to is kept. The
    /// namespace of a request is not consulted: an app id means the same instances in every
    /// namespace. An app id not listed has no instances.
    #[serde(default)]
    pub apps: BTreeMap<String, Vec<String>>,
}

/// Answers from the fixed map in its [`StaticConfig`].
#[derive(Debug, Clone)]
pub struct StaticResolver {
    apps: HashMap<String, Vec<SocketAddr>>,
}

impl StaticResolver {
    /// Check and resolve every address in `config`. A value that is not `host:port`, or a
    /// host that does not resolve, is an invalid-argument error naming the app and the value.
    pub fn new(config: StaticConfig) -> Result<Self> {
        let mut apps = HashMap::with_capacity(config.apps.len());
        for (app_id, raw_addrs) in config.apps {
            if app_id.trim().is_empty() {
                return Err(field_error("apps", "an app id must not be empty"));
            }
            let mut addrs: Vec<SocketAddr> = Vec::with_capacity(raw_addrs.len());
            for raw in &raw_addrs {
                let resolved = raw.trim().to_socket_addrs().map_err(|err| {
                    field_error(
                        &format!("apps.{app_id}"),
                        format!("{raw:?} is not a reachable host:port address ({err})"),
                    )
                })?;
                let resolved: Vec<SocketAddr> = resolved.collect();
                if resolved.is_empty() {
                    return Err(field_error(
                        &format!("apps.{app_id}"),
                        format!("{raw:?} resolves to no address"),
                    ));
                }
                for addr in resolved {
                    // A host listed twice (or a name and its IP) is one instance, not two.
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
            }
            apps.insert(app_id, addrs);
        }
        Ok(Self { apps })
    }
}

#[async_trait]
impl Resolver for StaticResolver {
    fn name(&self) -> &'static str {
        "static"
    }

    async fn resolve(&self, app_id: &str, _namespace: &str) -> Result<Vec<SocketAddr>> {
        Ok(self.apps.get(app_id).cloned().unwrap_or_default())
    }

    async fn register(&self, _me: Registration) -> Result<RegistrationGuard> {
        // Peers learn this sidecar's address from their own configuration.
        Ok(RegistrationGuard::none())
    }
}
