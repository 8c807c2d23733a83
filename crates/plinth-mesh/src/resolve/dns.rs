//! The `dns` resolver: one DNS name per app, every address it resolves to is an instance.
//! Meant for Kubernetes headless services, whose name resolves to the IP of every ready pod,
//! with the peers' mesh port fixed in the configuration.

use std::net::SocketAddr;

use async_trait::async_trait;
use plinth_core::{Error, Result};
use serde::Deserialize;

use super::config::field_error;
use super::{Registration, RegistrationGuard, Resolver};

/// `nameResolution.configuration` for `component: dns`.
///
/// ```yaml
/// nameResolution:
///   component: dns
///   configuration:
///     template: "{app}-mesh.{namespace}.svc.cluster.local"
///     port: 50002
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsConfig {
    /// The DNS name of an app's instances. `{app}` is replaced by the app id and must appear;
    /// `{namespace}` is replaced by the namespace. Default
    /// `"{app}.{namespace}.svc.cluster.local"`.
    #[serde(default = "default_template")]
    pub template: String,
    /// The port peers' mesh listeners use; DNS gives only addresses. Default `50002`.
    #[serde(default = "default_port")]
    pub port: u16,
}

impl DnsConfig {
    /// The default name template: a headless service named after the app, in the app's
    /// namespace.
    pub const DEFAULT_TEMPLATE: &'static str = "{app}.{namespace}.svc.cluster.local";
    /// The default mesh port of peers.
    pub const DEFAULT_PORT: u16 = 50002;
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            template: default_template(),
            port: default_port(),
        }
    }
}

fn default_template() -> String {
    DnsConfig::DEFAULT_TEMPLATE.to_owned()
}

fn default_port() -> u16 {
    DnsConfig::DEFAULT_PORT
}

/// Resolves `{app}`'s name from its [`DnsConfig`] template through the system resolver.
#[derive(Debug, Clone)]
pub struct DnsResolver {
    template: String,
    port: u16,
}

impl DnsResolver {
    /// Check the template (it must contain `{app}` and no other placeholder) and the port.
    pub fn new(config: DnsConfig) -> Result<Self> {
        let template = config.template.trim().to_owned();
        if !template.contains("{app}") {
            return Err(field_error(
                "template",
                format!("{template:?} must contain {{app}}, which is replaced by the app id"),
            ));
        }
        let rest = template.replace("{app}", "").replace("{namespace}", "");
        if rest.contains('{') || rest.contains('}') {
            return Err(field_error(
                "template",
                format!("{template:?} has a placeholder other than {{app}} and {{namespace}}"),
            ));
        }
        if config.port == 0 {
            return Err(field_error("port", "must not be 0"));
        }
        Ok(Self {
            template,
            port: config.port,
        })
    }

    /// The DNS name for `app_id` in `namespace`.
    pub fn name_for(&self, app_id: &str, namespace: &str) -> String {
        self.template
            .replace("{app}", app_id)
            .replace("{namespace}", namespace)
    }
}

#[async_trait]
impl Resolver for DnsResolver {
    fn name(&self) -> &'static str {
        "dns"
    }

    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Vec<SocketAddr>> {
        let name = self.name_for(app_id, namespace);
        match tokio::net::lookup_host((name.as_str(), self.port)).await {
            Ok(found) => {
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for addr in found {
                    // getaddrinfo answers once per socket type unless told otherwise.
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
                Ok(addrs)
            }
            // A headless service with no ready pod has no record: the app has no instances.
            Err(err) if is_not_found(&err) => Ok(Vec::new()),
            // Anything else (no nameserver reachable, SERVFAIL) says nothing about the app;
            // the mesh keeps its last answer.
            Err(err) => Err(Error::unavailable(format!(
                "dns name resolution: looking up {name:?} failed: {err}"
            ))
            .with_source(err)),
        }
    }

    async fn register(&self, _me: Registration) -> Result<RegistrationGuard> {
        // Kubernetes publishes the pod in DNS; there is nothing to announce.
        Ok(RegistrationGuard::none())
    }
}

/// Whether a lookup error means "this name has no address" rather than "DNS failed".
///
/// The standard library surfaces getaddrinfo's error only as text (no `EAI_*` code), so the
/// texts that mean not-found are matched: glibc's `EAI_NONAME` and `EAI_NODATA`, musl's, and
/// the BSD/macOS one. Rust never calls `setlocale`, so these are the untranslated messages.
/// Anything unrecognised counts as a failure: reporting an outage as "no instances" would
/// make the mesh drop every instance of the app, while the reverse only keeps a stale answer.
fn is_not_found(err: &std::io::Error) -> bool {
    const NOT_FOUND: &[&str] = &[
        "Name or service not known",
        "No address associated with hostname",
        "Name does not resolve",
        "nodename nor servname provided",
    ];
    let text = err.to_string();
    NOT_FOUND.iter().any(|needle| text.contains(needle))
}
