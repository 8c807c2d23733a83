//! WASI 0.2 components: the primary function model. (Being written.)

use std::sync::Arc;

use plinth_core::Result;
use plinth_runtime::app::{InvokeRequest, InvokeResponse};
use wasmtime::component::Component;

use crate::config::FunctionConfig;
use crate::engine::WasmEngine;
use crate::env::FunctionEnv;

/// A component function.
#[derive(Debug)]
pub struct ComponentFunction {}

impl ComponentFunction {
    /// Link, pre-instantiate, and run the optional `start` export once.
    pub async fn new(
        _engine: &Arc<WasmEngine>,
        _component: Component,
        _config: &FunctionConfig,
        _env: FunctionEnv,
    ) -> Result<Self> {
        todo!()
    }

    /// Serve one request in a fresh store under the memory cap and budget.
    pub async fn handle(&self, _req: InvokeRequest) -> Result<InvokeResponse> {
        todo!()
    }

    /// Run the optional `destroy` export.
    pub async fn destroy(&self) {}
}
