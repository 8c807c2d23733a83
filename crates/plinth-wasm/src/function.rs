//! One loaded function of either kind, with its wall-clock timeout, its concurrency bound
//! and its counters. The kinds ([`crate::component`], [`crate::proxywasm`]) run one request
//! each under the memory cap and execution-time budget ([`crate::limits`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use plinth_core::{Error, Result};
use plinth_runtime::app::{InvokeRequest, InvokeResponse};
use tokio::sync::Semaphore;

use crate::component::ComponentFunction;
use crate::config::FunctionConfig;
use crate::engine::{Compiled, WasmEngine};
use crate::env::FunctionEnv;
use crate::proxywasm::ProxyWasmFunction;

/// The two function models.
#[derive(Debug)]
pub enum Kind {
    /// A WASI 0.2 component exporting `wasi:http/incoming-handler`.
    Component(ComponentFunction),
    /// A core module on Layotto's proxy-wasm ABI.
    ProxyWasm(ProxyWasmFunction),
}

impl Kind {
    /// The model's name, as listed by the admin API.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Component(_) => "component",
            Kind::ProxyWasm(_) => "proxy-wasm",
        }
    }
}

/// Counters of one function, as listed by the admin API.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests that ran to an answer, whatever its status.
    pub ok: AtomicU64,
    /// Requests stopped by a trap or a limit, or refused for concurrency.
    pub failed: AtomicU64,
    /// Requests running now.
    pub in_flight: AtomicU64,
}

/// Counts a request in [`Stats::in_flight`] while it lives.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A loaded function.
#[derive(Debug)]
pub struct Function {
    /// Its id.
    pub id: Arc<str>,
    /// Its version: a counter the registry bumps on every update.
    pub version: u64,
    /// The SHA-256 of its binary, hex.
    pub digest: String,
    /// Its config.
    pub config: FunctionConfig,
    /// Its model and code.
    pub kind: Kind,
    /// Its counters.
    pub stats: Stats,
    /// Its compiled code (cheap to clone), kept to reload it with another config.
    pub compiled: Compiled,
    slots: Arc<Semaphore>,
}

impl Function {
    /// Load compiled code as function `id`: link its imports, pre-instantiate it, and run its
    /// `start` hook (proxy-wasm: `_start`, vm start and configure) once.
    pub async fn load(
        engine: &Arc<WasmEngine>,
        compiled: Compiled,
        id: &str,
        version: u64,
        digest: String,
        config: FunctionConfig,
        env: FunctionEnv,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(|e| Error::invalid_argument(format!("function {id:?}: {e}")))?;
        if config.limits.memory_bytes > engine.options().max_memory_bytes {
            return Err(Error::invalid_argument(format!(
                "function {id:?}: limits.memoryBytes {} is above the host's maximum of {} bytes",
                config.limits.memory_bytes,
                engine.options().max_memory_bytes
            )));
        }
        let kind = match compiled.clone() {
            Compiled::Component(c) => {
                Kind::Component(ComponentFunction::new(engine, c, &config, env).await?)
            }
            Compiled::Module(m) => {
                Kind::ProxyWasm(ProxyWasmFunction::new(engine, m, &config, env).await?)
            }
        };
        Ok(Self {
            id: id.into(),
            version,
            digest,
            slots: Arc::new(Semaphore::new(config.limits.max_concurrency as usize)),
            config,
            kind,
            stats: Stats::default(),
            compiled,
        })
    }

    /// The routing id a proxy-wasm module announces through `proxy_get_id`, if any.
    pub fn announced_id(&self) -> Option<&str> {
        match &self.kind {
            Kind::ProxyWasm(p) => p.routing_id(),
            Kind::Component(_) => None,
        }
    }

    /// Serve one request, under the function's wall-clock timeout and concurrency bound. `Ok`
    /// whatever status the function answered; an error when it could not answer: a trap
    /// (INTERNAL), a limit (RESOURCE_EXHAUSTED for memory and the execution-time budget,
    /// DEADLINE_EXCEEDED for the wall clock), or no free slot in time.
    pub async fn call(&self, req: InvokeRequest) -> Result<InvokeResponse> {
        let timeout = self.config.limits.timeout();
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, async {
            let _slot = self.slots.acquire().await.map_err(|_| {
                Error::unavailable(format!("function {:?} is being unloaded", self.id))
            })?;
            // A guard, not a decrement after the call: the timeout drops the call midway.
            let _in_flight = InFlight::enter(&self.stats.in_flight);
            match &self.kind {
                Kind::Component(c) => c.handle(req).await,
                Kind::ProxyWasm(p) => p.handle(req).await,
            }
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(Error::timeout(format!(
                "function {:?} did not answer within its timeout of {:?} (limits.timeoutMs)",
                self.id, timeout
            ))),
        };
        match &result {
            Ok(_) => self.stats.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(function = %self.id, elapsed = ?started.elapsed(), error = %e, "function failed");
                self.stats.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        result
    }

    /// Run the `destroy` hook, once no request is running. Called when the function is
    /// uninstalled or replaced, after requests in flight have finished on it.
    pub async fn unload(&self) {
        match &self.kind {
            Kind::Component(c) => c.destroy().await,
            Kind::ProxyWasm(p) => p.destroy().await,
        }
    }
}
