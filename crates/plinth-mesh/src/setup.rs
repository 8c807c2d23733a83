//! Building the mesh from configuration: the Configuration's `nameResolution`,
//! `accessControl` and (Plinth's) `mesh` sections, `TrafficPolicy` and `HTTPEndpoint`
//! resources, and Resiliency's app targets. Everything is validated here, at startup, with
//! errors that name the file and the field.

use std::sync::Arc;
use std::time::Duration;

use plinth_core::{Error, Result};
use plinth_runtime::config::MeshSources;

use crate::HttpEndpoint;
use crate::acl::AccessControl;
use crate::client::Transport;
use crate::config::{HttpEndpointSpec, MeshSettings, TrafficPolicySpec, parse};
use crate::resolve::{self, NameResolutionSpec, Resolver};
use crate::tls::{Identity, MeshTls, TlsFiles};

/// The default trust domain of sidecar identities, as in Dapr.
pub const DEFAULT_TRUST_DOMAIN: &str = "public";

/// The mesh's configuration, validated.
#[derive(Debug)]
pub struct MeshSetup {
    /// Settings.
    pub settings: MeshSettings,
    /// How sidecars reach each other.
    pub transport: Transport,
    /// The trust domain.
    pub trust_domain: String,
    /// Name resolution.
    pub resolver: Option<Arc<dyn Resolver>>,
    /// Access control.
    pub access: Option<AccessControl>,
    /// Traffic policies: (file, name, spec).
    pub policies: Vec<(String, String, TrafficPolicySpec)>,
    /// The policy of other targets.
    pub defaults: TrafficPolicySpec,
    /// HTTPEndpoints.
    pub http_endpoints: Vec<HttpEndpoint>,
    /// How often instances are resolved again.
    pub refresh_interval: Duration,
}

impl MeshSetup {
    /// Read and validate `sources` for app `app_id` in `namespace`. `loopback` says whether
    /// the mesh listens on a loopback address only (plain TCP is allowed there without
    /// saying so).
    pub fn load(
        sources: &MeshSources,
        app_id: &str,
        namespace: &str,
        loopback: bool,
    ) -> Result<Self> {
        let settings: MeshSettings = match &sources.settings {
            Some(s) => parse(&s.source, "Configuration: spec.mesh", &s.value)?,
            None => MeshSettings::default(),
        };
        let mesh_source = sources
            .settings
            .as_ref()
            .map(|s| s.source.clone())
            .unwrap_or_default();
        let (transport, trust_domain) = match &settings.tls {
            Some(value) => {
                let files: TlsFiles = parse(&mesh_source, "Configuration: spec.mesh.tls", value)?;
                let me = Identity {
                    trust_domain: files.trust_domain.clone(),
                    namespace: namespace.to_string(),
                    app_id: app_id.to_string(),
                };
                let tls = MeshTls::load(&files, &me).map_err(|e| {
                    Error::invalid_argument(format!(
                        "{mesh_source}: Configuration: spec.mesh.tls: {e}"
                    ))
                })?;
                (Transport::Tls(tls), files.trust_domain.clone())
            }
            None => {
                if !loopback && !settings.plaintext {
                    return Err(Error::invalid_argument(format!(
                        "{}the mesh listens beyond loopback without mTLS: configure spec.mesh.tls, or set spec.mesh.plaintext: true to allow plain TCP between sidecars",
                        if mesh_source.is_empty() {
                            String::new()
                        } else {
                            format!("{mesh_source}: ")
                        }
                    )));
                }
                (Transport::Plain, DEFAULT_TRUST_DOMAIN.to_string())
            }
        };
        let resolver = match &sources.name_resolution {
            Some(s) => {
                let spec: NameResolutionSpec =
                    parse(&s.source, "Configuration: spec.nameResolution", &s.value)?;
                Some(resolve::build(&spec).map_err(|e| {
                    Error::invalid_argument(format!("{}: Configuration: spec.{e}", s.source))
                })?)
            }
            None => None,
        };
        let access = match &sources.access_control {
            Some(s) => Some(AccessControl::from_spec(&s.value).map_err(|e| {
                Error::invalid_argument(format!("{}: Configuration: spec.{e}", s.source))
            })?),
            None => None,
        };
        let mut policies = Vec::new();
        for r in &sources.traffic_policies {
            let spec: TrafficPolicySpec = parse(
                &r.source,
                &format!("TrafficPolicy {:?}: spec", r.name),
                &r.spec,
            )?;
            policies.push((r.source.clone(), r.name.clone(), spec));
        }
        let defaults: TrafficPolicySpec = match &settings.defaults {
            Some(v) => parse(&mesh_source, "Configuration: spec.mesh.defaults", v)?,
            None => TrafficPolicySpec::default(),
        };
        if defaults.target.is_some() || !defaults.routes.is_empty() {
            return Err(Error::invalid_argument(format!(
                "{mesh_source}: Configuration: spec.mesh.defaults: target and routes belong in a TrafficPolicy"
            )));
        }
        let mut http_endpoints = Vec::new();
        for r in &sources.http_endpoints {
            let spec: HttpEndpointSpec = parse(
                &r.source,
                &format!("HTTPEndpoint {:?}: spec", r.name),
                &r.spec,
            )?;
            http_endpoints.push(HttpEndpoint::new(&r.name, &spec, &r.source)?);
        }
        Ok(Self {
            refresh_interval: settings
                .refresh_interval
                .unwrap_or(Duration::from_secs(2))
                .max(Duration::from_millis(50)),
            settings,
            transport,
            trust_domain,
            resolver,
            access,
            policies,
            defaults,
            http_endpoints,
        })
    }
}
