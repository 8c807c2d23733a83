//! Layotto's proxy-wasm ABI for core modules. (Being written.)

use std::sync::Arc;

use plinth_core::Result;
use plinth_runtime::app::{InvokeRequest, InvokeResponse};
use wasmtime::Module;

use crate::config::FunctionConfig;
use crate::engine::WasmEngine;
use crate::env::FunctionEnv;

/// A proxy-wasm function.
#[derive(Debug)]
pub struct ProxyWasmFunction {}

impl ProxyWasmFunction {
    /// Link every `env.proxy_*` import and WASI preview 1, pre-instantiate, and read
    /// `proxy_get_id`.
    pub async fn new(
        _engine: &Arc<WasmEngine>,
        _module: Module,
        _config: &FunctionConfig,
        _env: FunctionEnv,
    ) -> Result<Self> {
        todo!()
    }

    /// The id the module announced through `proxy_get_id`, if it exports it.
    pub fn routing_id(&self) -> Option<&str> {
        None
    }

    /// Serve one request.
    pub async fn handle(&self, _req: InvokeRequest) -> Result<InvokeResponse> {
        todo!()
    }

    /// Run `proxy_on_done`/`proxy_on_delete` for the root context.
    pub async fn destroy(&self) {}
}
