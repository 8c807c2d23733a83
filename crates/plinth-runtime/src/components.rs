//! The component host: every configured component by name, its lifecycle (INIT, UP, DOWN),
//! init with retry and backoff, periodic health probes, and replacement at run time.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use plinth_core::component::binding::Binding;
use plinth_core::component::{
    ConfigurationStore, FileStore, InputBinding, Instance, LockStore, OutputBinding, PubSub,
    SecretStore, Sequencer, StateStore,
};
use plinth_core::registry::Registry;
use plinth_core::{ComponentSpec, Error, Result};
use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::{ComponentName, SharedMetrics};
use crate::pubsub::scopes::TopicScopes;
use crate::resilience::{Policy, PolicyConfig};

/// How often an UP component is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// The first and the largest wait between init attempts of a DOWN component.
const INIT_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(15));

/// A component's lifecycle state, as readiness reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Initialising for the first time.
    Init,
    /// Serving.
    Up,
    /// Failed to init or to answer a probe; retried with backoff.
    Down,
}

/// What readiness shows of a component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentHealth {
    /// The component's name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// INIT, UP or DOWN.
    pub status: Status,
    /// Why it is not UP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether its failure is ignored by readiness.
    #[serde(rename = "ignoreErrors", skip_serializing_if = "std::ops::Not::not")]
    pub ignore_errors: bool,
}

/// One hosted component.
#[derive(Debug)]
pub struct Hosted {
    spec: ComponentSpec,
    instance: Instance,
    policy: Policy,
    status: RwLock<(Status, Option<String>)>,
    generation: u64,
    settings: RuntimeSettings,
}

/// What the building blocks read from a component's metadata for themselves, parsed once
/// when the component is built or reconfigured. The component is built from its spec
/// without these keys, so they never reach (or confuse) it.
#[derive(Debug, Clone, Default)]
pub struct RuntimeSettings {
    /// Pub/sub topic scopes (`publishingScopes`, `subscriptionScopes`, `allowedTopics`,
    /// `protectedTopics`); empty for other kinds.
    pub topic_scopes: TopicScopes,
}

impl RuntimeSettings {
    /// Parse the runtime's keys out of `spec`: the settings, and the spec the component is
    /// built from. Errors name the component and the field.
    fn split(spec: &ComponentSpec) -> Result<(Self, ComponentSpec)> {
        if spec.kind() != "pubsub" {
            return Ok((Self::default(), spec.clone()));
        }
        let settings = Self {
            topic_scopes: TopicScopes::from_spec(spec)?,
        };
        Ok((settings, TopicScopes::strip(spec)))
    }
}

/// Distinguishes every hosted instance from the one it replaced, for caches keyed by it.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Hosted {
    /// A number unique to this hosted instance: a replacement (new spec, possibly the same
    /// component) gets a new one, so building-block caches keyed by it start afresh.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The spec as declared, the runtime's own keys included.
    pub fn spec(&self) -> &ComponentSpec {
        &self.spec
    }

    /// What the building blocks read from its metadata.
    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    /// The component's resilience policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The component itself, e.g. to ask it for its features.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Its current status and reason.
    pub fn status(&self) -> (Status, Option<String>) {
        self.status
            .read()
            .map(|s| s.clone())
            .unwrap_or((Status::Down, Some("status lock poisoned".into())))
    }

    fn set_status(&self, status: Status, reason: Option<String>, metrics: &SharedMetrics) {
        if let Ok(mut s) = self.status.write() {
            *s = (status, reason);
        }
        metrics
            .component_up
            .get_or_create(&ComponentName {
                component: self.spec.name.clone(),
            })
            .set(i64::from(status == Status::Up));
    }

    /// Fail fast with UNAVAILABLE unless the component is UP.
    pub fn ensure_up(&self) -> Result<()> {
        match self.status() {
            (Status::Up, _) => Ok(()),
            (Status::Init, _) => Err(Error::unavailable(format!(
                "component {:?} is still initialising",
                self.spec.name
            ))),
            (Status::Down, reason) => Err(Error::unavailable(format!(
                "component {:?} is DOWN: {}",
                self.spec.name,
                reason.unwrap_or_default()
            ))),
        }
    }
}

/// A typed handle to a component, as building blocks use it.
#[derive(Debug, Clone)]
pub struct Handle<T: ?Sized> {
    /// The component.
    pub component: Arc<T>,
    /// Its host entry: spec and resilience policy.
    pub hosted: Arc<Hosted>,
}

impl<T: ?Sized + Send + Sync + 'static> Handle<T> {
    /// Call the component through its resilience policy. `f` receives the component and a
    /// clone of `args` on each attempt (a retry needs them again).
    pub fn call<A, R, F, Fut>(
        &self,
        operation: &'static str,
        args: A,
        f: F,
    ) -> BoxFuture<'static, Result<R>>
    where
        A: Clone + Send + Sync + 'static,
        R: Send + 'static,
        F: Fn(Arc<T>, A) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = Result<R>> + Send + 'static,
    {
        let component = self.component.clone();
        self.hosted
            .policy
            .call(operation, move || f(component.clone(), args.clone()))
    }

    /// The component's resilience policy.
    pub fn policy(&self) -> &Policy {
        &self.hosted.policy
    }

    /// The component's spec.
    pub fn spec(&self) -> &ComponentSpec {
        &self.hosted.spec
    }
}

/// Every component, by name.
#[derive(Debug)]
pub struct ComponentHost {
    registry: Registry,
    metrics: SharedMetrics,
    policies: BTreeMap<String, PolicyConfig>,
    components: RwLock<BTreeMap<String, Arc<Hosted>>>,
    changed: watch::Sender<u64>,
}

macro_rules! typed_getter {
    ($fn:ident, $variant:ident, $trait:ident, $what:literal) => {
        #[doc = concat!("The ", $what, " named `name`, if it is UP.")]
        pub fn $fn(&self, name: &str) -> Result<Handle<dyn $trait>> {
            let hosted = self.lookup(name, $what)?;
            match &hosted.instance {
                Instance::$variant(c) => {
                    hosted.ensure_up()?;
                    Ok(Handle {
                        component: c.clone(),
                        hosted: hosted.clone(),
                    })
                }
                other => Err(Error::invalid_argument(format!(
                    "component {name:?} is a {} component, not a {}",
                    other.kind(),
                    $what
                ))),
            }
        }
    };
}

impl ComponentHost {
    /// An empty host building components from `registry`, with per-component resilience
    /// policies (components without an entry get the default).
    pub fn new(
        registry: Registry,
        policies: BTreeMap<String, PolicyConfig>,
        metrics: SharedMetrics,
    ) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(Self {
            registry,
            metrics,
            policies,
            components: RwLock::new(BTreeMap::new()),
            changed,
        })
    }

    /// The registry of component types.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Build every component (synchronously validating its config), then start initialising
    /// each in the background. Errors name the file, component and field.
    pub fn add_all(self: &Arc<Self>, specs: Vec<ComponentSpec>) -> Result<()> {
        let mut built = Vec::with_capacity(specs.len());
        for spec in specs {
            if self.get(&spec.name).is_some()
                || built.iter().any(|h: &Arc<Hosted>| h.spec.name == spec.name)
            {
                return Err(spec.invalid(
                    "metadata.name",
                    "a component with this name is already defined",
                ));
            }
            built.push(self.build(spec)?);
        }
        for hosted in built {
            self.insert(hosted.clone());
            self.start(hosted);
        }
        Ok(())
    }

    fn build(&self, spec: ComponentSpec) -> Result<Arc<Hosted>> {
        let (settings, component_spec) = RuntimeSettings::split(&spec)?;
        let instance = self.registry.build(&component_spec)?;
        Ok(self.host(spec, instance, settings))
    }

    fn host(
        &self,
        spec: ComponentSpec,
        instance: Instance,
        settings: RuntimeSettings,
    ) -> Arc<Hosted> {
        let policy_config = self.policies.get(&spec.name).cloned().unwrap_or_default();
        let policy = Policy::new(&spec.name, &policy_config, self.metrics.clone());
        Arc::new(Hosted {
            spec,
            instance,
            policy,
            status: RwLock::new((Status::Init, None)),
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            settings,
        })
    }

    fn insert(&self, hosted: Arc<Hosted>) {
        if let Ok(mut map) = self.components.write() {
            map.insert(hosted.spec.name.clone(), hosted);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Init with backoff until UP, then probe periodically; a failed probe marks it DOWN and
    /// re-inits. The task ends when the component is replaced or removed.
    fn start(self: &Arc<Self>, hosted: Arc<Hosted>) {
        let host = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = INIT_BACKOFF.0;
            loop {
                // Stop when the host is gone or this instance was replaced.
                let current = match host.upgrade() {
                    Some(h) => h
                        .get(&hosted.spec.name)
                        .is_some_and(|c| Arc::ptr_eq(&c, &hosted)),
                    None => false,
                };
                if !current {
                    return;
                }
                let metrics = match host.upgrade() {
                    Some(h) => h.metrics.clone(),
                    None => return,
                };
                let up = hosted.status().0 == Status::Up;
                let component = hosted.instance.component();
                let attempt = if up {
                    component.ping()
                } else {
                    component.init()
                };
                let result = match tokio::time::timeout(hosted.spec.init_timeout, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::timeout(format!(
                        "no answer within {}ms",
                        hosted.spec.init_timeout.as_millis()
                    ))),
                };
                match result {
                    Ok(()) => {
                        if !up {
                            tracing::info!(component = %hosted.spec.name, r#type = %hosted.spec.type_name, "component UP");
                            hosted.set_status(Status::Up, None, &metrics);
                        }
                        backoff = INIT_BACKOFF.0;
                        tokio::time::sleep(PROBE_INTERVAL).await;
                    }
                    Err(err) => {
                        tracing::warn!(component = %hosted.spec.name, error = %err, retry_in_ms = backoff.as_millis() as u64, "component DOWN");
                        hosted.set_status(Status::Down, Some(err.to_string()), &metrics);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(INIT_BACKOFF.1);
                    }
                }
            }
        });
    }

    /// Wait until every component has finished its first init attempt (none is INIT), for at
    /// most the longest init timeout. Startup uses it so that the first calls after Plinth
    /// announces itself do not meet components still initialising; a component whose
    /// backend is unreachable is DOWN by then, as always.
    pub async fn wait_initialised(&self) {
        let limit = self
            .all()
            .iter()
            .map(|h| h.spec.init_timeout)
            .max()
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + limit + Duration::from_millis(100);
        // Startup only, and init attempts are short: polling is simpler than a notification
        // on every status change.
        while self.all().iter().any(|h| h.status().0 == Status::Init)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Replace a component with one built from `spec` (same name), initialising it before the
    /// swap so that callers never see a half-built component. The old one is closed.
    ///
    /// A component that can take the new metadata in place (`Component::reconfigure`) keeps
    /// its instance and its data; an in-memory store is never emptied by a reconfiguration.
    pub async fn replace(self: &Arc<Self>, spec: ComponentSpec) -> Result<()> {
        let old = self.get(&spec.name);
        if let Some(old) = &old {
            if old.spec.type_name != spec.type_name {
                return Err(
                    spec.invalid("spec.type", "a component's type cannot change at run time")
                );
            }
            let (settings, component_spec) = RuntimeSettings::split(&spec)?;
            if old
                .instance
                .component()
                .reconfigure(&component_spec)
                .await?
            {
                let hosted = self.host(spec, old.instance.clone(), settings);
                hosted.set_status(old.status().0, old.status().1, &self.metrics);
                self.insert(hosted.clone());
                self.start(hosted);
                return Ok(());
            }
        }
        let hosted = self.build(spec)?;
        let init =
            tokio::time::timeout(hosted.spec.init_timeout, hosted.instance.component().init())
                .await
                .map_err(|_| {
                    Error::timeout(format!(
                        "component {:?} did not init in time",
                        hosted.spec.name
                    ))
                })?;
        init.map_err(|e| e.context(format!("component {:?} failed to init", hosted.spec.name)))?;
        hosted.set_status(Status::Up, None, &self.metrics);
        self.insert(hosted.clone());
        self.start(hosted);
        if let Some(old) = old {
            old.instance.component().close().await;
        }
        Ok(())
    }

    /// A component by name, of any kind.
    pub fn get(&self, name: &str) -> Option<Arc<Hosted>> {
        self.components.read().ok()?.get(name).cloned()
    }

    fn lookup(&self, name: &str, what: &str) -> Result<Arc<Hosted>> {
        if name.is_empty() {
            return Err(Error::invalid_argument(format!("{what} name is empty")));
        }
        self.get(name).ok_or_else(|| {
            let known = self.names_of(what);
            Error::invalid_argument(format!(
                "{what} {name:?} is not configured; configured: {known:?}"
            ))
        })
    }

    /// Names of the components of a kind.
    pub fn names_of(&self, kind: &str) -> Vec<String> {
        let kind = kind_prefix(kind);
        self.components
            .read()
            .map(|m| {
                m.values()
                    .filter(|h| h.instance.kind() == kind)
                    .map(|h| h.spec.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every component, for readiness and metadata.
    pub fn health(&self) -> Vec<ComponentHealth> {
        self.all()
            .into_iter()
            .map(|h| {
                let (status, reason) = h.status();
                ComponentHealth {
                    name: h.spec.name.clone(),
                    type_name: h.spec.type_name.clone(),
                    status,
                    reason,
                    ignore_errors: h.spec.ignore_errors,
                }
            })
            .collect()
    }

    /// Every hosted component.
    pub fn all(&self) -> Vec<Arc<Hosted>> {
        self.components
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Wait until components change (added or replaced).
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Close every component.
    pub async fn close_all(&self) {
        for hosted in self.all() {
            hosted.instance.component().close().await;
        }
    }

    typed_getter!(state, State, StateStore, "state store");
    typed_getter!(pubsub, PubSub, PubSub, "pubsub");
    typed_getter!(lock, Lock, LockStore, "lock store");
    typed_getter!(sequencer, Sequencer, Sequencer, "sequencer");
    typed_getter!(
        configuration,
        Configuration,
        ConfigurationStore,
        "configuration store"
    );
    typed_getter!(file, File, FileStore, "file store");
    typed_getter!(secrets, Secrets, SecretStore, "secret store");

    /// The output binding named `name`, if it is UP. A binding whose type has no output
    /// side, or whose `direction` metadata leaves it out, is INVALID_ARGUMENT.
    pub fn binding(&self, name: &str) -> Result<Handle<dyn OutputBinding>> {
        let (hosted, binding) = self.lookup_binding(name)?;
        let output = match binding.output() {
            Some(o) if binding.directions_in_use(&hosted.spec).output => o.clone(),
            Some(_) => {
                return Err(Error::invalid_argument(format!(
                    "binding {name:?} is configured as an input binding only (metadata direction)"
                )));
            }
            None => {
                return Err(Error::invalid_argument(format!(
                    "binding {name:?} ({}) is not an output binding",
                    hosted.spec.type_name
                )));
            }
        };
        hosted.ensure_up()?;
        Ok(Handle {
            component: output,
            hosted,
        })
    }

    /// The input binding named `name`, if it is UP. A binding whose type has no input side,
    /// or whose `direction` metadata leaves it out, is INVALID_ARGUMENT.
    pub fn input_binding(&self, name: &str) -> Result<Handle<dyn InputBinding>> {
        let (hosted, binding) = self.lookup_binding(name)?;
        let input = match binding.input() {
            Some(i) if binding.directions_in_use(&hosted.spec).input => i.clone(),
            Some(_) => {
                return Err(Error::invalid_argument(format!(
                    "binding {name:?} is configured as an output binding only (metadata direction)"
                )));
            }
            None => {
                return Err(Error::invalid_argument(format!(
                    "binding {name:?} ({}) is not an input binding",
                    hosted.spec.type_name
                )));
            }
        };
        hosted.ensure_up()?;
        Ok(Handle {
            component: input,
            hosted,
        })
    }

    fn lookup_binding(&self, name: &str) -> Result<(Arc<Hosted>, Binding)> {
        let hosted = self.lookup(name, "binding")?;
        match &hosted.instance {
            Instance::Binding(b) => {
                let binding = b.clone();
                Ok((hosted, binding))
            }
            other => Err(Error::invalid_argument(format!(
                "component {name:?} is a {} component, not a binding",
                other.kind()
            ))),
        }
    }
}

fn kind_prefix(what: &str) -> &str {
    match what {
        "state store" => "state",
        "lock store" => "lock",
        "configuration store" => "configuration",
        "file store" => "file",
        "secret store" => "secretstores",
        "binding" => "bindings",
        other => other,
    }
}
