//! Layotto's proxy-wasm ABI for core modules, so that a function written for Layotto runs on
//! Plinth unchanged.
//!
//! A module is linked once ([`host`]: WASI preview 1, the 43 `env.proxy_*` functions Layotto
//! registers, the ABI 0.2.x names the upstream SDKs import) and pre-instantiated. Loading it
//! runs Layotto's start sequence once in a throw-away instance: `_start` (or `_initialize`),
//! `proxy_get_id` when exported (the routing id, read from buffer type 8),
//! `proxy_on_context_create` for the root context, `proxy_on_vm_start` and
//! `proxy_on_configure` with the function's `pluginConfig`.
//!
//! Every request gets a fresh instance in its own store, under the function's memory cap and
//! execution-time budget: the start sequence again, then an HTTP context:
//! `proxy_on_context_create`, `proxy_on_request_headers`, `proxy_on_request_body` (the query
//! string when the request has no body, as in Layotto), `proxy_on_done`, `proxy_on_delete`.
//! The answer is the local response if the module sent one, else status 200 (or the
//! `:status` response header it set) with the response body buffer it filled.

pub mod abi;
mod context;
mod exports;
mod host;
mod memory;
mod wasi;

use std::sync::Arc;

use plinth_core::{Error, Result};
use plinth_runtime::app::{AppStatus, InvokeRequest, InvokeResponse};
use wasmtime::{Instance, InstancePre, Linker, Module, Store};

use self::abi::{ACTION_CONTINUE, HTTP_CONTEXT, ROOT_CONTEXT};
use self::context::{HostState, HttpState, Shared};
use self::exports::{AbiVersion, CallError, Exports, Init, call};
use self::wasi::WasiGrants;
use crate::config::{FunctionConfig, Limits};
use crate::engine::WasmEngine;
use crate::env::FunctionEnv;
use crate::limits::{self, CallLimits, LimitExceeded};

/// A proxy-wasm function.
pub struct ProxyWasmFunction {
    engine: Arc<WasmEngine>,
    pre: InstancePre<HostState>,
    exports: Exports,
    shared: Arc<Shared>,
    limits: Limits,
    routing_id: Option<String>,
}

impl std::fmt::Debug for ProxyWasmFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyWasmFunction")
            .field("id", &self.shared.id)
            .field("routing_id", &self.routing_id)
            .field("abi", &self.exports.abi)
            .finish_non_exhaustive()
    }
}

/// Why running the module failed.
#[derive(Debug)]
enum Failure {
    /// Instantiating it.
    Instantiate(wasmtime::Error),
    /// A call into it: a trap or a limit.
    Call(CallError),
    /// `proxy_on_vm_start` or `proxy_on_configure` returned false.
    Refused(&'static str),
    /// `proxy_get_id` announced no usable id.
    BadId(&'static str),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Failure::Call(e)
    }
}

/// `_start` of a WASI command may end in `proc_exit(0)`: that is a normal return.
fn exited_ok(result: Result<(), CallError>) -> Result<(), CallError> {
    match result {
        Err(e)
            if e.error
                .downcast_ref::<wasmtime_wasi::I32Exit>()
                .is_some_and(|x| x.0 == 0) =>
        {
            Ok(())
        }
        r => r,
    }
}

impl ProxyWasmFunction {
    /// Link every `env.proxy_*` import and WASI preview 1, pre-instantiate, and read
    /// `proxy_get_id`.
    pub async fn new(
        engine: &Arc<WasmEngine>,
        module: Module,
        config: &FunctionConfig,
        env: FunctionEnv,
    ) -> Result<Self> {
        let id = env.id.clone();
        let unusable = |what: String| {
            Error::invalid_argument(format!(
                "function {id:?} is not a usable proxy-wasm module: {what}"
            ))
        };
        let exports = Exports::inspect(&module).map_err(unusable)?;
        let shared = Arc::new(Shared {
            id: id.clone(),
            wasi: WasiGrants::parse(&id, &config.grants)?,
            env,
            plugin_config: config
                .plugin_config
                .clone()
                .unwrap_or_default()
                .into_bytes(),
            allocator: exports.allocator,
            max_buffer: usize::try_from(config.limits.memory_bytes).unwrap_or(usize::MAX),
            data: Default::default(),
        });
        let mut linker = Linker::new(engine.engine());
        host::link(&mut linker, &module).map_err(unusable)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| unusable(format!("{e:#}")))?;
        let mut function = Self {
            engine: engine.clone(),
            pre,
            exports,
            shared,
            limits: config.limits.clone(),
            routing_id: None,
        };
        function.routing_id = function.load().await?;
        tracing::debug!(
            function = %id,
            abi = ?function.exports.abi,
            routing_id = function.routing_id.as_deref(),
            "proxy-wasm function loaded"
        );
        Ok(function)
    }

    /// The id the module announced through `proxy_get_id`, if it exports it.
    pub fn routing_id(&self) -> Option<&str> {
        self.routing_id.as_deref()
    }

    /// The proxy-wasm ABI version the module declares (`0.1.0`, `0.2.0`, `0.2.1`), or that it
    /// declares none, as Layotto's modules may.
    pub fn abi_version(&self) -> &'static str {
        self.exports.abi.as_str()
    }

    /// Serve one request.
    pub async fn handle(&self, req: InvokeRequest) -> Result<InvokeResponse> {
        if req.data.len() > self.shared.max_buffer {
            return Err(Error::resource_exhausted(format!(
                "function {:?}: a request body of {} bytes exceeds its memory limit of {} bytes (limits.memoryBytes)",
                self.shared.id,
                req.data.len(),
                self.limits.memory_bytes
            )));
        }
        let _running = self.engine.running();
        let mut store = self.store()?;
        let result = self.serve(&mut store, req).await;
        result.map_err(|f| self.error(&store, f, false))
    }

    /// Run `proxy_on_done`/`proxy_on_delete` for the root context.
    ///
    /// Instances live for one request, so there is no long-lived root context: a fresh
    /// instance runs the start sequence and then the root context's end, so a module that
    /// acts when it is unloaded gets the calls. Failures are logged.
    pub async fn destroy(&self) {
        if !self.exports.done && !self.exports.delete {
            return;
        }
        let _running = self.engine.running();
        let mut store = match self.store() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(function = %self.shared.id, error = %e, "could not unload the function cleanly");
                return;
            }
        };
        if let Err(f) = self.teardown(&mut store).await {
            let e = self.error(&store, f, false);
            tracing::warn!(function = %self.shared.id, error = %e, "the function failed while unloading");
        }
    }

    /// A store under the function's limits, with WASI as granted.
    fn store(&self) -> Result<Store<HostState>> {
        let wasi = self.shared.wasi.build(&self.shared.id)?;
        let limits = CallLimits::new(self.limits.memory_bytes, self.limits.cpu());
        let mut store = Store::new(
            self.engine.engine(),
            HostState::new(self.shared.clone(), limits, wasi),
        );
        limits::install(&mut store);
        Ok(store)
    }

    async fn instantiate(&self, store: &mut Store<HostState>) -> Result<Instance, Failure> {
        self.pre
            .instantiate_async(&mut *store)
            .await
            .map_err(Failure::Instantiate)
    }

    /// The start sequence in a fresh instance, keeping the routing id.
    async fn load(&self) -> Result<Option<String>> {
        let _running = self.engine.running();
        let mut store = self.store()?;
        let result = self.load_in(&mut store).await;
        result.map_err(|f| self.error(&store, f, true))
    }

    async fn load_in(&self, store: &mut Store<HostState>) -> Result<Option<String>, Failure> {
        let instance = self.instantiate(store).await?;
        self.start(store, &instance, true).await
    }

    async fn teardown(&self, store: &mut Store<HostState>) -> Result<(), Failure> {
        let instance = self.instantiate(store).await?;
        self.start(store, &instance, false).await?;
        if self.exports.done {
            call::<i32, i32>(&mut *store, &instance, "proxy_on_done", ROOT_CONTEXT).await?;
        }
        if self.exports.delete {
            call::<i32, ()>(&mut *store, &instance, "proxy_on_delete", ROOT_CONTEXT).await?;
        }
        Ok(())
    }

    /// Layotto's start sequence: `_start` (or `_initialize` and `main`), `proxy_get_id` when
    /// `get_id` is set, then the root context, `proxy_on_vm_start` (with an empty VM
    /// configuration) and `proxy_on_configure`.
    async fn start(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        get_id: bool,
    ) -> Result<Option<String>, Failure> {
        match self.exports.init {
            Init::Initialize { main } => {
                exited_ok(call::<(), ()>(&mut *store, instance, "_initialize", ()).await)?;
                if main {
                    call::<(i32, i32), i32>(&mut *store, instance, "main", (0, 0)).await?;
                }
            }
            Init::Start => exited_ok(call::<(), ()>(&mut *store, instance, "_start", ()).await)?,
            Init::None => {}
        }
        let mut routing_id = None;
        if get_id && self.exports.get_id {
            store.data_mut().call_data.clear();
            call::<(), ()>(&mut *store, instance, "proxy_get_id", ()).await?;
            let id = String::from_utf8(std::mem::take(&mut store.data_mut().call_data))
                .map_err(|_| Failure::BadId("an id that is not UTF-8"))?;
            if id.is_empty() {
                return Err(Failure::BadId("an empty id"));
            }
            routing_id = Some(id);
        }
        call::<(i32, i32), ()>(
            &mut *store,
            instance,
            "proxy_on_context_create",
            (ROOT_CONTEXT, 0),
        )
        .await?;
        if self.exports.vm_start {
            let ok: i32 = call(
                &mut *store,
                instance,
                "proxy_on_vm_start",
                (ROOT_CONTEXT, 0),
            )
            .await?;
            if ok == 0 {
                return Err(Failure::Refused("proxy_on_vm_start"));
            }
        }
        if self.exports.configure {
            let size = self.shared.plugin_config.len() as i32;
            let ok: i32 = call(
                &mut *store,
                instance,
                "proxy_on_configure",
                (ROOT_CONTEXT, size),
            )
            .await?;
            if ok == 0 {
                return Err(Failure::Refused("proxy_on_configure"));
            }
        }
        Ok(routing_id)
    }

    /// One request in a fresh instance.
    async fn serve(
        &self,
        store: &mut Store<HostState>,
        req: InvokeRequest,
    ) -> Result<InvokeResponse, Failure> {
        let instance = self.instantiate(store).await?;
        self.start(store, &instance, false).await?;

        // Layotto sets end_of_stream on the headers when the request has no body of its own,
        // even though the query string then comes as the body.
        let headers_end = i32::from(req.data.is_empty());
        let http = HttpState::new(req);
        let headers = http.request_headers.len() as i32;
        let body = http.request_body.len() as i32;
        store.data_mut().http = Some(http);
        call::<(i32, i32), ()>(
            &mut *store,
            &instance,
            "proxy_on_context_create",
            (HTTP_CONTEXT, ROOT_CONTEXT),
        )
        .await?;

        let mut paused = None;
        if self.exports.request_headers {
            let action: i32 = if self.exports.headers_eos {
                call(
                    &mut *store,
                    &instance,
                    "proxy_on_request_headers",
                    (HTTP_CONTEXT, headers, headers_end),
                )
                .await?
            } else {
                call(
                    &mut *store,
                    &instance,
                    "proxy_on_request_headers",
                    (HTTP_CONTEXT, headers),
                )
                .await?
            };
            if action != ACTION_CONTINUE {
                paused = Some("proxy_on_request_headers");
            }
        }
        if paused.is_none() && !self.answered(store) && body > 0 && self.exports.request_body {
            let action: i32 = call(
                &mut *store,
                &instance,
                "proxy_on_request_body",
                (HTTP_CONTEXT, body, 1),
            )
            .await?;
            if action != ACTION_CONTINUE {
                paused = Some("proxy_on_request_body");
            }
        }
        let response = self.respond(store, paused);

        if self.exports.done {
            call::<i32, i32>(&mut *store, &instance, "proxy_on_done", HTTP_CONTEXT).await?;
        }
        if self.exports.delete {
            call::<i32, ()>(&mut *store, &instance, "proxy_on_delete", HTTP_CONTEXT).await?;
        }
        store.data_mut().http = None;
        Ok(response)
    }

    fn answered(&self, store: &Store<HostState>) -> bool {
        store
            .data()
            .http
            .as_ref()
            .is_some_and(|h| h.local_response.is_some())
    }

    /// The answer: the local response, or the response the module built, or, when it paused
    /// the request without answering (where Layotto would leave the client waiting), 500.
    fn respond(&self, store: &mut Store<HostState>, paused: Option<&str>) -> InvokeResponse {
        let Some(http) = store.data_mut().http.as_mut() else {
            return answer(500, Vec::new(), Vec::new());
        };
        if let Some(local) = http.local_response.take() {
            return answer(local.status, local.headers.0, local.body);
        }
        let body = std::mem::take(&mut http.response_body);
        if let Some(callback) = paused {
            let body = if body.is_empty() {
                format!(
                    "function {:?} paused the request in {callback} without answering",
                    self.shared.id
                )
                .into_bytes()
            } else {
                body
            };
            return answer(500, Vec::new(), body);
        }
        let status = http
            .response_headers
            .get(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (100..=599).contains(s))
            .unwrap_or(200);
        answer(status, http.response_headers.0.clone(), body)
    }

    /// The error a failure is to the caller: a limit names it; a trap is the function's
    /// fault (INTERNAL while serving, INVALID_ARGUMENT while loading).
    fn error(&self, store: &Store<HostState>, failure: Failure, loading: bool) -> Error {
        let id = &self.shared.id;
        let fault = |message: String| {
            if loading {
                Error::invalid_argument(message)
            } else {
                Error::internal(message)
            }
        };
        let (error, during) = match failure {
            Failure::Instantiate(e) => (e, "instantiation"),
            Failure::Call(CallError { export, error }) => (error, export),
            Failure::Refused(export) => {
                return fault(format!(
                    "function {id:?}: {export} returned false: the module refused to start"
                ));
            }
            Failure::BadId(what) => {
                return Error::invalid_argument(format!(
                    "function {id:?}: proxy_get_id announced {what}"
                ));
            }
        };
        if let Some(limit) = limits::explain(&error, &store.data().limits) {
            let field = match limit {
                LimitExceeded::Cpu(_) => "limits.cpuMs",
                LimitExceeded::Memory(_) => "limits.memoryBytes",
            };
            return Error::resource_exhausted(format!(
                "function {id:?} {limit} ({field}), in {during}"
            ));
        }
        if let Some(pool) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
            return Error::resource_exhausted(format!(
                "function {id:?} could not start an instance: {pool}"
            ));
        }
        if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return fault(format!(
                "function {id:?} exited with code {} in {during}",
                exit.0
            ));
        }
        tracing::debug!(function = %id, during, error = ?error, "proxy-wasm function trapped");
        let cause = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        fault(format!("function {id:?} trapped in {during}: {cause}"))
    }
}

fn answer(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> InvokeResponse {
    let headers: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    InvokeResponse {
        status: AppStatus::Http(status),
        content_type,
        data: body.into(),
        headers,
    }
}

impl AbiVersion {
    /// As the module declares it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AbiVersion::Unmarked => "unmarked (Layotto's 0.1.0)",
            AbiVersion::V0_1_0 => "0.1.0",
            AbiVersion::V0_2_0 => "0.2.0",
            AbiVersion::V0_2_1 => "0.2.1",
        }
    }
}
