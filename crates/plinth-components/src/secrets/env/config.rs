//! Metadata of `secretstores.local.env`.

use std::collections::BTreeSet;

use plinth_core::{ComponentSpec, Result};

/// Component metadata: only variables whose names start with this are visible, and secret
/// names are the variable names without it.
pub const PREFIX: &str = "prefix";
/// Component metadata: a comma-separated list of the secret names that are visible.
pub const ALLOWLIST: &str = "allowlist";

/// The settings of an environment secret store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvSecretsConfig {
    /// Only variables starting with the prefix are visible; secret names leave it out.
    pub prefix: Option<String>,
    /// When set, only these secret names (after the prefix is removed) are visible.
    pub allowlist: Option<BTreeSet<String>>,
}

impl EnvSecretsConfig {
    /// Read the settings from component metadata.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let prefix = spec.get(PREFIX).map(str::to_owned);
        if prefix.as_deref().is_some_and(|p| p.contains(['=', '\0'])) {
            return Err(spec.invalid(&format!("metadata.{PREFIX}"), "may not contain '=' or NUL"));
        }
        let allowlist = spec.get(ALLOWLIST).map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        });
        Ok(Self { prefix, allowlist })
    }

    /// Whether bulk reads may return anything: only when something limits what they see.
    pub(super) fn bulk_allowed(&self) -> bool {
        self.prefix.is_some() || self.allowlist.is_some()
    }

    /// Whether the secret name passes the allowlist.
    pub(super) fn allows(&self, name: &str) -> bool {
        self.allowlist
            .as_ref()
            .is_none_or(|list| list.contains(name))
    }
}
