//! WASI 0.2 components: the primary function model.
//!
//! A function is a component exporting `wasi:http/incoming-handler@0.2.x` and importing any
//! of WASI 0.2 and Plinth's `plinth:runtime` interfaces (`wit/runtime.wit`). Loading it
//! links those imports and pre-instantiates it once ([`ComponentFunction::new`]); every
//! request then runs in a fresh store and instance ([`ComponentFunction::handle`]), so
//! nothing a request leaves in guest memory reaches the next one, under the memory cap and
//! execution-time budget of [`crate::limits`].
//!
//! - `host`: the `plinth:runtime` imports over [`FunctionEnv`].
//! - `wasi_keyvalue`, `wasi_config`: the draft WASI interfaces where they fit: buckets are
//!   state stores, config values the function's `variables`.
//! - `store`: a request's store data and the WASI sandbox built from the grants.
//! - `http`: invocations as incoming HTTP requests, and responses back.

mod host;
mod http;
mod store;
mod wasi_config;
mod wasi_keyvalue;

use std::sync::Arc;

use plinth_core::{Error, Result};
use plinth_runtime::app::{InvokeRequest, InvokeResponse};
use tokio::sync::oneshot;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Store, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

use crate::config::{FunctionConfig, Limits};
use crate::engine::WasmEngine;
use crate::env::FunctionEnv;
use crate::limits::{self, CallLimits};

use self::host::exports::plinth::runtime::lifecycle;
pub use self::http::MAX_RESPONSE_BODY;
pub(crate) use self::store::Ctx;
use self::store::Sandbox;

/// The interface a function exports its lifecycle hooks under (this host serves 0.1.x).
const LIFECYCLE: &str = "plinth:runtime/lifecycle@";

/// A component function: its code linked and pre-instantiated, and what each request's
/// store is built from.
pub struct ComponentFunction {
    id: Arc<str>,
    engine: Arc<WasmEngine>,
    pre: ProxyPre<Ctx>,
    lifecycle: Option<lifecycle::GuestIndices>,
    env: Arc<FunctionEnv>,
    sandbox: Sandbox,
    limits: Limits,
    /// This function's key among the engine's idle instances.
    key: u64,
}

/// An instance that answered cleanly, in its store, with the requests it has served: it
/// may serve more ([`Limits::instance_reuse`]). The engine keeps idle ones
/// ([`crate::engine::IdleInstances`]).
pub(crate) struct Warm {
    store: Store<Ctx>,
    proxy: Proxy,
    served: u32,
}

impl Drop for ComponentFunction {
    fn drop(&mut self) {
        self.engine.idle().remove(self.key);
    }
}

impl std::fmt::Debug for ComponentFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentFunction")
            .field("id", &self.id)
            .field("lifecycle", &self.lifecycle.is_some())
            .field("sandbox", &self.sandbox)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The linker every component function is linked with: WASI 0.2, wasi:http's types (and an
/// outgoing handler that refuses), `plinth:runtime`, and the drafts `wasi:keyvalue` and
/// `wasi:config`. The engine builds it once.
pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<Linker<Ctx>> {
    let mut linker = Linker::new(engine);
    let link = |e: wasmtime::Error| Error::internal(format!("linking the function imports: {e:#}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link)?;
    host::ImportsWithLifecycle::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)
        .map_err(link)?;
    wasi_keyvalue::add_to_linker(&mut linker).map_err(link)?;
    wasi_config::add_to_linker(&mut linker).map_err(link)?;
    Ok(linker)
}

impl ComponentFunction {
    /// Link, pre-instantiate, and run the optional `start` export once.
    pub async fn new(
        engine: &Arc<WasmEngine>,
        component: Component,
        config: &FunctionConfig,
        env: FunctionEnv,
    ) -> Result<Self> {
        let id = env.id.clone();
        let sandbox = Sandbox::from_grants(&id, &config.grants)?;
        let instance_pre = engine
            .component_linker()
            .instantiate_pre(&component).map_err(|e| {
            Error::invalid_argument(format!(
                "function {id:?} imports what Plinth does not provide (WASI 0.2, wasi:http types, plinth:runtime@0.1, wasi:keyvalue@0.2.0-draft, wasi:config@0.2.0-draft or -rc.1): {e:#}"
            ))
        })?;
        let pre = ProxyPre::new(instance_pre.clone()).map_err(|e| {
            Error::invalid_argument(format!(
                "function {id:?} does not export wasi:http/incoming-handler@0.2.x: {e:#}"
            ))
        })?;
        let exports_lifecycle = component
            .component_type()
            .exports(engine.engine())
            .any(|(name, _)| name.starts_with(LIFECYCLE));
        let lifecycle = if exports_lifecycle {
            Some(lifecycle::GuestIndices::new(&instance_pre).map_err(|e| {
                Error::invalid_argument(format!(
                    "function {id:?} exports plinth:runtime/lifecycle, but not as this host's wit/runtime.wit (0.1.x) defines it: {e:#}"
                ))
            })?)
        } else {
            None
        };
        let function = Self {
            id,
            engine: engine.clone(),
            pre,
            lifecycle,
            env: Arc::new(env),
            sandbox,
            limits: config.limits.clone(),
            key: engine.idle().new_key(),
        };
        if function.lifecycle.is_some() {
            function.start().await?;
        }
        Ok(function)
    }

    /// Serve one request under the memory cap and budget, in a warm instance when one is
    /// idle, else in a fresh store and instance.
    pub async fn handle(&self, req: InvokeRequest) -> Result<InvokeResponse> {
        let request = http::to_http(&self.id, req)?;
        let Warm {
            mut store,
            proxy,
            served,
        } = self.instance().await?;
        let (tx, rx) = oneshot::channel();
        let (request, out) = {
            let mut view = store.data_mut().http();
            let request = view.new_incoming_request(Scheme::Http, request);
            let out = view.new_response_outparam(tx);
            match (request, out) {
                (Ok(r), Ok(o)) => (r, o),
                (Err(e), _) | (_, Err(e)) => {
                    return Err(Error::internal(format!(
                        "function {:?}: preparing the request: {e:#}",
                        self.id
                    )));
                }
            }
        };
        // The guest runs beside the reader of its response: a body larger than the host's
        // buffer only moves while it is read.
        let engine = &self.engine;
        let guest = async move {
            let _running = engine.running();
            let result = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await;
            (result.map(|()| proxy), store)
        };
        let response = http::collect(&self.id, rx);
        tokio::pin!(guest, response);
        let ((result, store), early) = tokio::select! {
            done = &mut guest => (done, None),
            answer = &mut response => match answer {
                // The body is too large or broken: no need to let the guest finish.
                Err(e) => return Err(e),
                Ok(answer) => (guest.await, Some(answer)),
            },
        };
        store.data().output.flush();
        let proxy = match result {
            Ok(proxy) => proxy,
            Err(e) => return Err(self.failure(&e, store.data())),
        };
        // Whatever a guest left in its store (a response it never set, a body it never
        // finished) goes with the store, which ends the wait for it. An instance that
        // released everything the request handed it, and answered well, may serve again.
        if !store.data().is_idle() {
            drop(store);
            return match early {
                Some(answer) => Ok(answer),
                None => response.await,
            };
        }
        let answer = match early {
            Some(answer) => Ok(answer),
            None => response.await,
        };
        let served = served + 1;
        if answer.is_ok() && served < self.limits.instance_reuse {
            let warm = Warm {
                store,
                proxy,
                served,
            };
            self.engine.idle().put(self.key, warm);
        }
        answer
    }

    /// An idle warm instance of this function with a fresh execution-time budget, else a
    /// new instance in a fresh store. When the engine's instance pool is full, idle
    /// instances (of any function) are dropped, oldest first, to make room.
    async fn instance(&self) -> Result<Warm> {
        if let Some(mut warm) = self.engine.idle().take(self.key) {
            warm.store.data_mut().limits.reset_budget();
            warm.store.set_epoch_deadline(1);
            return Ok(warm);
        }
        // Instantiating runs the guest's start functions.
        let _running = self.engine.running();
        loop {
            let mut store = self.store()?;
            match self.pre.instantiate_async(&mut store).await {
                Ok(proxy) => {
                    return Ok(Warm {
                        store,
                        proxy,
                        served: 0,
                    });
                }
                Err(e)
                    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some()
                        && self.engine.idle().evict_oldest() => {}
                Err(e) => return Err(self.failure(&e, store.data())),
            }
        }
    }

    /// Run the optional `destroy` export.
    pub async fn destroy(&self) {
        if self.lifecycle.is_none() {
            return;
        }
        let run = async {
            let _running = self.engine.running();
            let (guest, mut store) = self.lifecycle_instance().await?;
            let result = guest.call_destroy(&mut store).await;
            store.data().output.flush();
            result.map_err(|e| self.failure(&e, store.data()))
        };
        let result = tokio::time::timeout(self.limits.timeout(), run).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(function = %self.id, error = %e, "the function's destroy hook failed");
            }
            Err(_) => tracing::warn!(
                function = %self.id,
                timeout = ?self.limits.timeout(),
                "the function's destroy hook did not finish within its timeout (limits.timeoutMs)"
            ),
        }
    }

    /// Run the `start` export; its error fails the load.
    async fn start(&self) -> Result<()> {
        let run = async {
            let _running = self.engine.running();
            let (guest, mut store) = self.lifecycle_instance().await?;
            let result = guest.call_start(&mut store).await;
            store.data().output.flush();
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(Error::failed_precondition(format!(
                    "function {:?} failed to start: {}",
                    self.id,
                    host::truncate(&message, 1024)
                ))),
                Err(e) => Err(self.failure(&e, store.data())),
            }
        };
        tokio::time::timeout(self.limits.timeout(), run)
            .await
            .map_err(|_| {
                Error::timeout(format!(
                    "function {:?} did not start within its timeout of {:?} (limits.timeoutMs)",
                    self.id,
                    self.limits.timeout()
                ))
            })?
    }

    /// A fresh instance for a lifecycle hook, in a store of its own. The caller holds the
    /// engine's running guard for the instantiation and the call.
    async fn lifecycle_instance(&self) -> Result<(lifecycle::Guest, Store<Ctx>)> {
        let Some(indices) = &self.lifecycle else {
            return Err(Error::internal("no lifecycle export"));
        };
        let mut store = self.store()?;
        let guest = match self.pre.instance_pre().instantiate_async(&mut store).await {
            Ok(instance) => indices.load(&mut store, &instance),
            Err(e) => Err(e),
        };
        match guest {
            Ok(guest) => Ok((guest, store)),
            Err(e) => Err(self.failure(&e, store.data())),
        }
    }

    /// A fresh store: a new WASI context from the grants, the limits installed.
    fn store(&self) -> Result<Store<Ctx>> {
        let limits = CallLimits::new(self.limits.memory_bytes, self.limits.cpu());
        let ctx = Ctx::new(self.env.clone(), &self.sandbox, limits)?;
        let mut store = Store::new(self.engine.engine(), ctx);
        limits::install(&mut store);
        Ok(store)
    }

    /// Why a guest call failed, for the caller: a limit it hit (RESOURCE_EXHAUSTED, naming
    /// the limit), no free instance in the pool, or a trap (INTERNAL, with the trap and any
    /// panic message the guest printed).
    fn failure(&self, e: &wasmtime::Error, ctx: &Ctx) -> Error {
        tracing::debug!(function = %self.id, error = ?e, "guest call failed");
        if let Some(limit) = limits::explain(e, &ctx.limits) {
            return Error::resource_exhausted(format!("function {:?} {limit}", self.id));
        }
        if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return Error::resource_exhausted(format!(
                "function {:?} could not get an instance: every slot of the host's instance pool ({}) is in use",
                self.id,
                self.engine.options().pool_size
            ));
        }
        let reason = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => e.root_cause().to_string(),
        };
        let mut message = format!("function {:?} trapped: {reason}", self.id);
        if let Some(panic) = ctx.output.panic_message() {
            message.push_str(&format!(" (the guest {panic})"));
        }
        Error::internal(message)
    }
}
