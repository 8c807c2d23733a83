//! Output bindings: invoke an operation on an external system.

use async_trait::async_trait;
use bytes::Bytes;

use super::Component;
use crate::{Metadata, Result};

/// An invocation of an output binding.
#[derive(Debug, Clone, Default)]
pub struct BindingRequest {
    /// The operation (`get`, `post`, `create`, ...).
    pub operation: String,
    /// The payload.
    pub data: Bytes,
    /// Request metadata.
    pub metadata: Metadata,
}

/// The binding's answer.
#[derive(Debug, Clone, Default)]
pub struct BindingResponse {
    /// The payload.
    pub data: Bytes,
    /// Response metadata.
    pub metadata: Metadata,
}

/// An output binding.
#[async_trait]
pub trait OutputBinding: Component {
    /// The operations the binding supports.
    fn operations(&self) -> Vec<String>;

    /// Invoke an operation.
    async fn invoke(&self, req: BindingRequest) -> Result<BindingResponse>;
}
