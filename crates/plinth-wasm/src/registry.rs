//! The installed functions: install, update and uninstall at run time, listing, and routing
//! of invocations to them.
//!
//! A request takes the function's current version (an `Arc`) when it starts and keeps it to
//! the end, so an update never disturbs requests in flight: they finish on the old version,
//! whose `destroy` hook runs once the last of them is done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use plinth_core::{Error, Result};
use plinth_runtime::Runtime;
use plinth_runtime::app::{InvokeRequest, InvokeResponse};
use plinth_runtime::invoke::{LocalFunctions, headers};
use plinth_runtime::pubsub::{
    EventHandler, Outcome, SubscriptionHandle, SubscriptionSpec, TopicEvent,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::FunctionConfig;
use crate::engine::WasmEngine;
use crate::env::FunctionEnv;
use crate::function::Function;

/// The longest function id.
const MAX_ID_LEN: usize = 128;

/// What an install may do when a function of that id exists, or does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallMode {
    /// Install, or replace what is there.
    Upsert,
    /// Install only if absent (ALREADY_EXISTS otherwise).
    Create,
    /// Replace only if present (NOT_FOUND otherwise).
    Update,
}

/// One function as the management APIs list it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionInfo {
    /// Its id.
    pub id: String,
    /// `component` or `proxy-wasm`.
    pub kind: &'static str,
    /// `running`.
    pub status: &'static str,
    /// Bumped on every install or update.
    pub version: u64,
    /// The SHA-256 of its binary.
    pub digest: String,
    /// Its app id.
    pub app_id: String,
    /// When this version was installed, in seconds since the Unix epoch.
    pub installed_at: u64,
    /// Its config: limits and grants.
    pub config: FunctionConfig,
    /// Requests answered.
    pub requests_ok: u64,
    /// Requests stopped by a trap or a limit.
    pub requests_failed: u64,
    /// Requests running now.
    pub in_flight: u64,
    /// Whether the code came from the cache, and how long compiling or loading it took.
    pub compiled_from_cache: bool,
    /// Milliseconds spent compiling (or loading from the cache).
    pub compile_ms: f64,
    /// Milliseconds spent linking and running the start hook.
    pub load_ms: f64,
}

struct Entry {
    function: Arc<Function>,
    installed_at: u64,
    cached: bool,
    compile: Duration,
    load: Duration,
    /// The function's topic subscriptions, ended when this version is replaced or removed.
    _subscriptions: Vec<SubscriptionHandle>,
}

/// Labels of a function call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    function: String,
    /// `ok` (the function answered, whatever its status) or the error kind.
    outcome: &'static str,
}

/// Labels naming a function.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

/// The function host's metrics, in the process's one registry.
#[derive(Debug, Clone)]
struct FunctionMetrics {
    calls: Family<CallLabels, Counter>,
    duration: Family<FunctionLabel, Histogram>,
    installed: Gauge,
}

impl FunctionMetrics {
    fn register(metrics: &plinth_runtime::metrics::Metrics) -> Self {
        fn histogram() -> Histogram {
            // 50 µs to about 3 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00005, 3.0, 11,
            ))
        }
        let this = Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(histogram as fn() -> Histogram),
            installed: Gauge::default(),
        };
        metrics.register(
            "function_calls",
            "Function calls by function and outcome (ok, or the error kind)",
            this.calls.clone(),
        );
        metrics.register(
            "function_call_duration_seconds",
            "Function call latency, instantiation included",
            this.duration.clone(),
        );
        metrics.register(
            "functions_installed",
            "Functions installed",
            this.installed.clone(),
        );
        this
    }
}

/// The installed functions.
pub struct FunctionRegistry {
    metrics: FunctionMetrics,
    me: Weak<FunctionRegistry>,
    engine: Arc<WasmEngine>,
    runtime: Arc<Runtime>,
    functions: RwLock<HashMap<String, Entry>>,
    versions: AtomicU64,
    /// Installs are serialised: compiling is CPU-heavy and two updates of one id must not
    /// race.
    installing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionRegistry")
            .field("functions", &self.ids())
            .finish_non_exhaustive()
    }
}

/// Check a function id: 1 to 128 characters of letters, digits, `-` and `_` (an id also
/// names consumer groups, where brokers refuse dots and slashes).
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid_argument("the function id is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid_argument(format!(
            "the function id is longer than {MAX_ID_LEN} characters"
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        return Err(Error::invalid_argument(format!(
            "the function id {id:?} holds {c:?}: use letters, digits, '-' and '_'"
        )));
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl FunctionRegistry {
    /// An empty registry over `engine` and `runtime`, routed to by the runtime's invocation
    /// building block.
    pub fn new(engine: Arc<WasmEngine>, runtime: Arc<Runtime>) -> Arc<Self> {
        let registry = Arc::new_cyclic(|me| Self {
            metrics: FunctionMetrics::register(&runtime.metrics),
            me: me.clone(),
            engine,
            runtime: runtime.clone(),
            functions: RwLock::default(),
            versions: AtomicU64::new(0),
            installing: tokio::sync::Mutex::new(()),
        });
        runtime.invoke.set_functions(registry.clone());
        registry
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<WasmEngine> {
        &self.engine
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    fn ids(&self) -> Vec<String> {
        let map = self.functions.read().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> = map.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Install `bytes` as function `id` with `config`. A proxy-wasm module that announces a
    /// routing id through `proxy_get_id` is installed under that id instead. Returns the
    /// installed function.
    pub async fn install(
        &self,
        id: &str,
        bytes: Vec<u8>,
        config: FunctionConfig,
        mode: InstallMode,
    ) -> Result<FunctionInfo> {
        validate_id(id)?;
        let _serial = self.installing.lock().await;
        if mode == InstallMode::Create && self.get(id).is_some() {
            return Err(Error::already_exists(format!(
                "function {id:?} is already installed; update it instead"
            )));
        }
        if mode == InstallMode::Update && self.get(id).is_none() {
            return Err(Error::not_found(format!(
                "function {id:?} is not installed"
            )));
        }
        let digest = format!("{:x}", Sha256::digest(&bytes));
        // Compiling takes milliseconds to seconds of CPU: keep it off the async workers.
        let engine = self.engine.clone();
        let (compiled, stats) = tokio::task::spawn_blocking(move || engine.compile(&bytes))
            .await
            .map_err(|e| Error::internal(format!("compiling function {id:?}: {e}")))??;
        self.load_compiled(id, compiled, stats, digest, config)
            .await
    }

    /// Reload function `id` with a new config (limits, grants, subscriptions), keeping its
    /// code. Requests in flight finish on the old version.
    pub async fn reconfigure(&self, id: &str, config: FunctionConfig) -> Result<FunctionInfo> {
        let _serial = self.installing.lock().await;
        let Some(current) = self.get(id) else {
            return Err(Error::not_found(format!(
                "function {id:?} is not installed"
            )));
        };
        let stats = crate::engine::CompileStats {
            cached: true,
            elapsed: Duration::ZERO,
        };
        self.load_compiled(
            id,
            current.compiled.clone(),
            stats,
            current.digest.clone(),
            config,
        )
        .await
    }

    async fn load_compiled(
        &self,
        id: &str,
        compiled: crate::engine::Compiled,
        stats: crate::engine::CompileStats,
        digest: String,
        config: FunctionConfig,
    ) -> Result<FunctionInfo> {
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let env = FunctionEnv::new(self.runtime.clone(), id, &config);
        let started = std::time::Instant::now();
        let function = Function::load(&self.engine, compiled, id, version, digest, config, env)
            .await
            .map_err(|e| e.context(format!("loading function {id:?}")))?;
        let load = started.elapsed();
        let final_id = match function.announced_id() {
            Some(announced) if announced != id => {
                validate_id(announced)
                    .map_err(|e| e.context("the id the module announces (proxy_get_id)"))?;
                announced.to_string()
            }
            _ => id.to_string(),
        };
        let function = Arc::new(function);
        let subscriptions = self.subscribe(&final_id, &function)?;
        let entry = Entry {
            function: function.clone(),
            installed_at: now_secs(),
            cached: stats.cached,
            compile: stats.elapsed,
            load,
            _subscriptions: subscriptions,
        };
        let info = Self::info(&final_id, &entry);
        let old = {
            let mut map = self.functions.write().unwrap_or_else(|e| e.into_inner());
            let old = map.insert(final_id.clone(), entry);
            self.metrics.installed.set(map.len() as i64);
            old
        };
        tracing::info!(
            function = %final_id,
            version,
            kind = function.kind.name(),
            cached = stats.cached,
            compile_ms = stats.elapsed.as_secs_f64() * 1e3,
            "function installed"
        );
        if let Some(old) = old {
            retire(old.function);
        }
        Ok(info)
    }

    /// Open `function`'s topic subscriptions, delivering to whichever version of `id` is
    /// current when an event arrives.
    fn subscribe(&self, id: &str, function: &Function) -> Result<Vec<SubscriptionHandle>> {
        let app_id = function
            .config
            .app_id
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| self.runtime.app_id.clone());
        let mut handles = Vec::new();
        for (i, sub) in function.config.subscriptions.iter().enumerate() {
            let mut metadata: plinth_core::Metadata = sub.metadata.clone().into_iter().collect();
            metadata
                .entry("consumerID".into())
                .or_insert_with(|| format!("{app_id}-{id}"));
            let spec = SubscriptionSpec::new(
                sub.pubsubname.clone(),
                sub.topic.clone(),
                metadata,
                sub.dead_letter_topic.clone(),
            )
            .map_err(|e| e.context(format!("function {id:?}: subscriptions[{i}]")))?;
            let route = sub
                .route
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| sub.topic.clone());
            let handler = Arc::new(FunctionEvents {
                registry: self.me.clone(),
                id: id.to_string(),
                route: route.trim_start_matches('/').to_string(),
            });
            let handle = self
                .runtime
                .pubsub
                .subscribe_durably(spec, handler)
                .map_err(|e| e.context(format!("function {id:?}: subscriptions[{i}]")))?;
            handles.push(handle);
        }
        Ok(handles)
    }

    /// Uninstall function `id`. Requests in flight finish first; then its `destroy` hook
    /// runs.
    pub async fn uninstall(&self, id: &str) -> Result<()> {
        let _serial = self.installing.lock().await;
        let old = {
            let mut map = self.functions.write().unwrap_or_else(|e| e.into_inner());
            let old = map.remove(id);
            self.metrics.installed.set(map.len() as i64);
            old
        };
        match old {
            Some(old) => {
                tracing::info!(function = %id, "function uninstalled");
                retire(old.function);
                Ok(())
            }
            None => Err(Error::not_found(format!(
                "function {id:?} is not installed"
            ))),
        }
    }

    /// The current version of function `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Function>> {
        let map = self.functions.read().unwrap_or_else(|e| e.into_inner());
        map.get(id).map(|e| e.function.clone())
    }

    /// Every function, sorted by id.
    pub fn list(&self) -> Vec<FunctionInfo> {
        let map = self.functions.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<FunctionInfo> = map.iter().map(|(id, e)| Self::info(id, e)).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// One function's listing.
    pub fn describe(&self, id: &str) -> Option<FunctionInfo> {
        let map = self.functions.read().unwrap_or_else(|e| e.into_inner());
        map.get(id).map(|e| Self::info(id, e))
    }

    fn info(id: &str, e: &Entry) -> FunctionInfo {
        let f = &e.function;
        FunctionInfo {
            id: id.to_string(),
            kind: f.kind.name(),
            status: "running",
            version: f.version,
            digest: f.digest.clone(),
            app_id: f
                .config
                .app_id
                .clone()
                .filter(|a| !a.is_empty())
                .unwrap_or_default(),
            installed_at: e.installed_at,
            config: f.config.clone(),
            requests_ok: f.stats.ok.load(Ordering::Relaxed),
            requests_failed: f.stats.failed.load(Ordering::Relaxed),
            in_flight: f.stats.in_flight.load(Ordering::Relaxed),
            compiled_from_cache: e.cached,
            compile_ms: e.compile.as_secs_f64() * 1e3,
            load_ms: e.load.as_secs_f64() * 1e3,
        }
    }

    /// Serve one request with function `id`, as `caller` (an app id, or empty for an
    /// outside caller). NOT_FOUND when no such function is installed.
    pub async fn call(
        &self,
        id: &str,
        caller: &str,
        mut req: InvokeRequest,
    ) -> Result<InvokeResponse> {
        let Some(function) = self.get(id) else {
            return Err(Error::not_found(format!("no function {id:?} is installed")));
        };
        req.verb = if req.verb.is_empty() {
            "POST".to_string()
        } else {
            req.verb.to_ascii_uppercase()
        };
        req.headers
            .retain(|(k, _)| k != headers::CALLER_APP_ID && k != headers::CALLEE_APP_ID);
        if !caller.is_empty() {
            req.headers
                .push((headers::CALLER_APP_ID.into(), caller.to_string()));
        }
        req.headers
            .push((headers::CALLEE_APP_ID.into(), id.to_string()));
        let started = std::time::Instant::now();
        let result = function.call(req).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind().as_str(),
        };
        self.metrics
            .calls
            .get_or_create(&CallLabels {
                function: id.to_string(),
                outcome,
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&FunctionLabel {
                function: id.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl LocalFunctions for FunctionRegistry {
    fn contains(&self, id: &str) -> bool {
        let map = self.functions.read().unwrap_or_else(|e| e.into_inner());
        map.contains_key(id)
    }

    async fn call(&self, id: &str, caller: &str, req: InvokeRequest) -> Result<InvokeResponse> {
        FunctionRegistry::call(self, id, caller, req).await
    }
}

/// Unload a replaced or removed version once no request holds it any more.
fn retire(function: Arc<Function>) {
    tokio::spawn(async move {
        // Requests hold clones of the Arc; wait for the last to finish, bounded by the
        // function's own timeout (after which its requests have failed anyway).
        let deadline =
            tokio::time::Instant::now() + function.config.limits.timeout() + Duration::from_secs(1);
        while Arc::strong_count(&function) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        function.unload().await;
        tracing::debug!(function = %function.id, version = function.version, "function version unloaded");
    });
}

/// Delivers a subscription's events to a function, as to an HTTP app.
#[derive(Debug)]
struct FunctionEvents {
    registry: Weak<FunctionRegistry>,
    id: String,
    route: String,
}

#[async_trait]
impl EventHandler for FunctionEvents {
    async fn handle(&self, event: TopicEvent) -> Outcome {
        let Some(registry) = self.registry.upgrade() else {
            return Outcome::Error("the function host is shutting down".into());
        };
        let req = InvokeRequest {
            method: self.route.clone(),
            verb: "POST".into(),
            query: String::new(),
            content_type: "application/cloudevents+json".into(),
            data: plinth_runtime::pubsub::cloudevent::http_envelope(&event),
            headers: vec![
                ("pubsubname".into(), event.pubsub_name.clone()),
                ("topic".into(), event.topic.clone()),
            ],
        };
        match registry.call(&self.id, "", req).await {
            Ok(resp) => match resp.status {
                plinth_runtime::app::AppStatus::Http(code) => Outcome::from_http(code, &resp.data),
                status if status.is_success() => Outcome::Success,
                status => Outcome::Error(format!("function answered {status:?}")),
            },
            Err(e) => Outcome::Error(e.to_string()),
        }
    }
}
