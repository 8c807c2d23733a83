//! Placeholder until the access-control module lands.

use crate::tls::Identity;

/// Dapr's access control.
#[derive(Debug, Clone)]
pub struct AccessControl;

impl AccessControl {
    /// Whether `caller` may call `verb method`.
    pub fn allows(&self, _caller: &Identity, _verb: Option<&str>, _method: &str) -> bool {
        true
    }
}

impl AccessControl {
    /// From the spec.
    pub fn from_spec(_v: &serde_json::Value) -> plinth_core::Result<Self> {
        Ok(Self)
    }
}
