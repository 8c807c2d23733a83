//! The runtime: loads config, hosts components, and exposes one API object per building
//! block for every front door to call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plinth_core::registry::Registry;
use plinth_core::{ComponentSpec, Error, Result};

use crate::app::AppSlot;
use crate::binding::BindingApi;
use crate::components::{ComponentHost, Status};
use crate::config::{self, Declared, Loaded, Sources};
use crate::configuration::ConfigurationApi;
use crate::file::FileApi;
use crate::invoke::InvokeApi;
use crate::lock::LockApi;
use crate::metadata::MetadataApi;
use crate::metrics::{Metrics, SharedMetrics};
use crate::pubsub::PubSubApi;
use crate::secrets::SecretsApi;
use crate::sequencer::SequencerApi;
use crate::state::StateApi;

/// How the runtime is started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The app id (`--app-id`); a config may override it.
    pub app_id: String,
    /// Where config comes from.
    pub sources: Sources,
    /// `--app-max-concurrency`.
    pub app_max_concurrency: Option<usize>,
}

/// Every building block, over one component host.
#[derive(Debug)]
pub struct Runtime {
    /// The effective app id.
    pub app_id: String,
    /// What was loaded from config.
    pub loaded: Loaded,
    /// The components.
    pub host: Arc<ComponentHost>,
    /// The metrics registry.
    pub metrics: SharedMetrics,
    /// State.
    pub state: StateApi,
    /// Pub/sub.
    pub pubsub: PubSubApi,
    /// Locks.
    pub lock: LockApi,
    /// Sequencers.
    pub sequencer: SequencerApi,
    /// Configuration.
    pub configuration: ConfigurationApi,
    /// Files.
    pub file: FileApi,
    /// Secrets.
    pub secrets: SecretsApi,
    /// Bindings: output invocations and input-binding delivery.
    pub binding: BindingApi,
    /// Run-time attributes and the list of loaded components.
    pub metadata: MetadataApi,
    /// Service invocation.
    pub invoke: InvokeApi,
    /// The app's channel, set when the listeners start.
    pub app: Arc<AppSlot>,
    /// The namespace (`NAMESPACE`, else `default`), for `app-id.namespace` targets.
    pub namespace: String,
    /// When the runtime started.
    pub started: Instant,
}

/// The registry of every built-in component type.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    plinth_components::register_all(&mut registry);
    registry
}

impl Runtime {
    /// Load config and start every component. Invalid config is an error here; an
    /// unreachable backend is not (its component starts DOWN and is retried).
    pub async fn start(options: Options) -> Result<Arc<Self>> {
        let loaded = config::load(&options.sources, &options.app_id)?;
        let app_id = loaded
            .settings
            .app_id
            .clone()
            .unwrap_or(options.app_id.clone());
        if app_id.is_empty() {
            return Err(Error::invalid_argument("app id is empty"));
        }
        let metrics: SharedMetrics = Arc::new(Metrics::new());
        let host = ComponentHost::new(registry(), loaded.policies.clone(), metrics.clone());
        let secrets = SecretsApi::new(host.clone());

        // Secret stores first: other components' secret references resolve through them.
        let (stores, others): (Vec<Declared>, Vec<Declared>) = loaded
            .components
            .iter()
            .cloned()
            .partition(|d| d.spec.kind() == "secretstores");
        for d in &stores {
            if let Some(r) = d.secret_refs.first() {
                return Err(d.spec.invalid(
                    &format!("metadata.{}.secretKeyRef", r.field),
                    "secret stores cannot take secrets from other stores",
                ));
            }
        }
        host.add_all(stores.into_iter().map(|d| d.spec).collect())?;
        let mut specs: Vec<ComponentSpec> = Vec::with_capacity(others.len());
        for mut d in others {
            if !d.secret_refs.is_empty() {
                for r in &d.secret_refs {
                    wait_up(&host, &r.store, &d.spec).await?;
                }
                config::resolve_secret_refs(&mut d.spec, &d.secret_refs, &secrets).await?;
            }
            specs.push(d.spec);
        }
        host.add_all(specs)?;

        let namespace = std::env::var("NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let app = Arc::new(AppSlot::default());
        // One bound on calls to the app: deliveries, input-binding events and invocations.
        let app_concurrency = options
            .app_max_concurrency
            .filter(|n| *n > 0)
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
        let state = StateApi::new(host.clone(), &app_id);
        let pubsub = PubSubApi::new(
            host.clone(),
            &app_id,
            metrics.clone(),
            app_concurrency.clone(),
        );
        let binding = BindingApi::new(
            host.clone(),
            state.clone(),
            metrics.clone(),
            app_concurrency.clone(),
        );
        Ok(Arc::new(Self {
            invoke: InvokeApi::new(&app_id, &namespace, app.clone(), app_concurrency),
            app,
            namespace,
            state,
            pubsub,
            lock: LockApi::new(host.clone(), &app_id),
            sequencer: SequencerApi::new(host.clone(), &app_id),
            configuration: ConfigurationApi::new(host.clone(), &app_id),
            file: FileApi::new(host.clone()),
            binding,
            metadata: MetadataApi::new(
                host.clone(),
                &app_id,
                &loaded.subscriptions,
                options.app_max_concurrency,
            ),
            secrets,
            app_id,
            loaded,
            host,
            metrics,
            started: Instant::now(),
        }))
    }

    /// Whether every component that counts for readiness is UP.
    pub fn components_ready(&self) -> bool {
        self.host
            .health()
            .iter()
            .all(|c| c.ignore_errors || c.status == Status::Up)
    }

    /// Stop: close every component.
    pub async fn shutdown(&self) {
        self.host.close_all().await;
    }
}

/// Wait until the secret store a component references is UP, for at most its init timeout.
async fn wait_up(host: &Arc<ComponentHost>, store: &str, spec: &ComponentSpec) -> Result<()> {
    let Some(hosted) = host.get(store) else {
        return Err(spec.invalid(
            "auth.secretStore",
            format!("secret store {store:?} is not configured"),
        ));
    };
    let deadline = Instant::now() + hosted.spec().init_timeout.max(Duration::from_secs(1));
    loop {
        match hosted.status().0 {
            Status::Up => return Ok(()),
            _ if Instant::now() >= deadline => {
                return Err(spec.invalid(
                    "auth.secretStore",
                    format!(
                        "secret store {store:?} is not UP: {}",
                        hosted.status().1.unwrap_or_default()
                    ),
                ));
            }
            // Startup only: the store's init task flips the status; poll briefly.
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
