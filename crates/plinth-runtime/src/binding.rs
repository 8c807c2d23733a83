//! The output-binding building block.

use std::sync::Arc;

use plinth_core::component::binding::{BindingRequest, BindingResponse};
use plinth_core::{Error, Result};

use crate::components::ComponentHost;

/// The bindings API every front door calls.
#[derive(Debug, Clone)]
pub struct BindingApi {
    host: Arc<ComponentHost>,
}

impl BindingApi {
    /// Bindings over the host's components.
    pub fn new(host: Arc<ComponentHost>) -> Self {
        Self { host }
    }

    /// Invoke `operation` on binding `name`.
    pub async fn invoke(&self, name: &str, req: BindingRequest) -> Result<BindingResponse> {
        let handle = self.host.binding(name)?;
        let operations = handle.component.operations();
        if req.operation.is_empty() {
            return Err(Error::invalid_argument(format!(
                "binding {name:?}: operation is empty; supported: {operations:?}"
            )));
        }
        if !operations
            .iter()
            .any(|o| o.eq_ignore_ascii_case(&req.operation))
        {
            return Err(Error::invalid_argument(format!(
                "binding {name:?} does not support operation {:?}; supported: {operations:?}",
                req.operation
            )));
        }
        handle
            .call("invoke", req, |c, r| async move { c.invoke(r).await })
            .await
    }
}
