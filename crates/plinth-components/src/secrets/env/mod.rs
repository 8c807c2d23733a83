//! `secretstores.local.env`: secrets from the process environment.
//!
//! Plinth's, Dapr's and the app's API tokens are never returned: variables named
//! `DAPR_API_TOKEN`, `APP_API_TOKEN` or `PLINTH_API_TOKEN`, and every variable whose name
//! starts with `PLINTH_`, `DAPR_` or `APP_API_TOKEN`, read as absent, with the same answer as
//! a variable that does not exist so that their existence does not leak. Names are
//! case-sensitive.
//!
//! With metadata `prefix` (Dapr's semantics), only variables starting with the prefix are
//! visible and secret names are variable names without it: with prefix `MYAPP_`, secret
//! `DB` is variable `MYAPP_DB`. With `allowlist`, only the listed secret names are visible.
//! A bulk read returns nothing unless a prefix or an allowlist is configured, so that a
//! default store cannot be used to dump the environment.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use plinth_core::component::secrets::{Secret, SecretStore};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Metadata, Result};

mod config;
#[cfg(test)]
mod tests;

pub use config::{ALLOWLIST, EnvSecretsConfig, PREFIX};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "secretstores.local.env";

/// Variables never returned, whatever the configuration.
const BLOCKED_NAMES: &[&str] = &["DAPR_API_TOKEN", "APP_API_TOKEN", "PLINTH_API_TOKEN"];
/// Variable name prefixes never returned, whatever the configuration.
const BLOCKED_PREFIXES: &[&str] = &["PLINTH_", "DAPR_", "APP_API_TOKEN"];

/// Build a `secretstores.local.env` store from its metadata (`prefix`, `allowlist`).
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = EnvSecretsConfig::from_spec(spec)?;
    Ok(Instance::Secrets(Arc::new(EnvSecretStore::new(config))))
}

/// Whether a variable is one of the tokens that must never be returned.
pub fn is_blocked(variable: &str) -> bool {
    BLOCKED_NAMES.contains(&variable) || BLOCKED_PREFIXES.iter().any(|p| variable.starts_with(p))
}

/// Where variables come from.
enum Source {
    Process,
    Fixed(HashMap<String, String>),
}

impl Source {
    fn var(&self, name: &str) -> Option<String> {
        match self {
            Source::Process => std::env::var_os(name).and_then(|v| v.into_string().ok()),
            Source::Fixed(vars) => vars.get(name).cloned(),
        }
    }

    fn vars(&self) -> Vec<(String, String)> {
        match self {
            // Variables that are not UTF-8 cannot be returned as strings; they are skipped.
            Source::Process => std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            Source::Fixed(vars) => vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

/// A secret store over environment variables.
pub struct EnvSecretStore {
    config: EnvSecretsConfig,
    source: Source,
}

impl fmt::Debug for EnvSecretStore {
    // Never the values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            Source::Process => "process",
            Source::Fixed(_) => "fixed",
        };
        f.debug_struct("EnvSecretStore")
            .field("config", &self.config)
            .field("source", &source)
            .finish()
    }
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("secret {name:?} not found"))
}

impl EnvSecretStore {
    /// A store over the process environment.
    pub fn new(config: EnvSecretsConfig) -> Self {
        Self {
            config,
            source: Source::Process,
        }
    }

    /// A store over a fixed set of variables instead of the process environment, for tests
    /// (setting process variables is unsafe in a multi-threaded program).
    pub fn with_vars(config: EnvSecretsConfig, vars: HashMap<String, String>) -> Self {
        Self {
            config,
            source: Source::Fixed(vars),
        }
    }

    /// The variable behind a secret name, when the name is visible.
    fn variable(&self, name: &str) -> Option<String> {
        // Names the platform cannot hold are simply absent.
        if name.is_empty() || name.contains(['=', '\0']) || !self.config.allows(name) {
            return None;
        }
        let variable = format!(
            "{}{name}",
            self.config.prefix.as_deref().unwrap_or_default()
        );
        (!is_blocked(&variable)).then_some(variable)
    }

    /// The secret name of a variable, when the variable is visible.
    fn secret_name<'a>(&self, variable: &'a str) -> Option<&'a str> {
        if is_blocked(variable) {
            return None;
        }
        let name = match &self.config.prefix {
            Some(prefix) => variable.strip_prefix(prefix.as_str())?,
            None => variable,
        };
        (!name.is_empty() && self.config.allows(name)).then_some(name)
    }
}

#[async_trait]
impl Component for EnvSecretStore {}

#[async_trait]
impl SecretStore for EnvSecretStore {
    async fn get(&self, name: &str, _metadata: &Metadata) -> Result<Secret> {
        let value = self
            .variable(name)
            .and_then(|v| self.source.var(&v))
            .ok_or_else(|| not_found(name))?;
        Ok(Secret::from([(name.to_owned(), value)]))
    }

    async fn bulk_get(&self, _metadata: &Metadata) -> Result<HashMap<String, Secret>> {
        if !self.config.bulk_allowed() {
            return Ok(HashMap::new());
        }
        let mut secrets = HashMap::new();
        for (variable, value) in self.source.vars() {
            if let Some(name) = self.secret_name(&variable) {
                secrets.insert(name.to_owned(), Secret::from([(name.to_owned(), value)]));
            }
        }
        Ok(secrets)
    }
}
