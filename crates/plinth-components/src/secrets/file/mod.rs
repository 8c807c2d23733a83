//! `secretstores.local.file`: secrets from a JSON file, read once by `init` (Dapr's
//! `secretstores.local.file`).
//!
//! Nested objects are flattened with the separator (`{"db": {"password": "x"}}` holds the
//! secret `db:password`), arrays by index (`list:0`); numbers and booleans become strings and
//! `null` an empty string. With `multiValued`, each top-level key is one secret whose values
//! are its nested entries, flattened below that level (`db` → `{"password": "x"}`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plinth_core::component::secrets::{Secret, SecretStore};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Metadata, Result};
use serde_json::Value;

use crate::util::lock;

mod config;
#[cfg(test)]
mod tests;

pub use config::{FileSecretsConfig, MULTI_VALUED, NESTED_SEPARATOR, SECRETS_FILE};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "secretstores.local.file";

/// Build a `secretstores.local.file` store from its metadata (`secretsFile`,
/// `nestedSeparator`, `multiValued`).
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = FileSecretsConfig::from_spec(spec)?;
    Ok(Instance::Secrets(Arc::new(FileSecretStore::new(config))))
}

type Secrets = HashMap<String, Secret>;

/// A secret store over a JSON file.
pub struct FileSecretStore {
    config: FileSecretsConfig,
    secrets: Mutex<Option<Arc<Secrets>>>,
}

impl fmt::Debug for FileSecretStore {
    // Never the values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loaded = lock(&self.secrets).as_ref().map(|s| s.len());
        f.debug_struct("FileSecretStore")
            .field("config", &self.config)
            .field("secrets", &loaded)
            .finish()
    }
}

/// Flatten `value` into `out` under `key`.
fn flatten(key: String, value: &Value, separator: &str, out: &mut Secret) {
    let join = |child: &str| {
        if key.is_empty() {
            child.to_owned()
        } else {
            format!("{key}{separator}{child}")
        }
    };
    match value {
        Value::Object(map) => {
            for (child, value) in map {
                flatten(join(child), value, separator, out);
            }
        }
        Value::Array(list) => {
            for (index, value) in list.iter().enumerate() {
                flatten(join(&index.to_string()), value, separator, out);
            }
        }
        Value::String(s) => {
            out.insert(key, s.clone());
        }
        Value::Number(n) => {
            out.insert(key, n.to_string());
        }
        Value::Bool(b) => {
            out.insert(key, b.to_string());
        }
        Value::Null => {
            out.insert(key, String::new());
        }
    }
}

/// The secrets a parsed file holds.
fn secrets_of(root: &Value, config: &FileSecretsConfig) -> Result<Secrets> {
    let Value::Object(top) = root else {
        return Err(Error::invalid_argument(format!(
            "secrets file {:?}: the top level must be a JSON object",
            config.secrets_file
        )));
    };
    let sep = config.nested_separator.as_str();
    if config.multi_valued {
        let mut secrets = Secrets::new();
        for (name, value) in top {
            let mut values = Secret::new();
            match value {
                Value::Object(_) | Value::Array(_) => {
                    flatten(String::new(), value, sep, &mut values)
                }
                scalar => flatten(name.clone(), scalar, sep, &mut values),
            }
            secrets.insert(name.clone(), values);
        }
        Ok(secrets)
    } else {
        let mut flat = Secret::new();
        flatten(String::new(), root, sep, &mut flat);
        Ok(flat
            .into_iter()
            .map(|(name, value)| (name.clone(), Secret::from([(name, value)])))
            .collect())
    }
}

impl FileSecretStore {
    /// A store over the file the config names; `init` reads it.
    pub fn new(config: FileSecretsConfig) -> Self {
        Self {
            config,
            secrets: Mutex::new(None),
        }
    }

    fn loaded(&self) -> Result<Arc<Secrets>> {
        lock(&self.secrets)
            .clone()
            .ok_or_else(|| Error::unavailable("the secrets file has not been read yet"))
    }

    async fn read(&self) -> Result<Secrets> {
        let path = &self.config.secrets_file;
        let bytes = tokio::fs::read(path).await.map_err(|e| {
            Error::invalid_argument(format!("secrets file {path:?}: cannot be read: {e}"))
                .with_source(e)
        })?;
        // serde_json's message can quote the input; only its position is reported.
        let root: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid_argument(format!(
                "secrets file {path:?}: not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        secrets_of(&root, &self.config)
    }
}

#[async_trait]
impl Component for FileSecretStore {
    /// Reads the file; calling it again reloads it.
    async fn init(&self) -> Result<()> {
        let secrets = self.read().await?;
        *lock(&self.secrets) = Some(Arc::new(secrets));
        Ok(())
    }
}

#[async_trait]
impl SecretStore for FileSecretStore {
    async fn get(&self, name: &str, _metadata: &Metadata) -> Result<Secret> {
        self.loaded()?
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("secret {name:?} not found")))
    }

    async fn bulk_get(&self, _metadata: &Metadata) -> Result<HashMap<String, Secret>> {
        Ok(self.loaded()?.as_ref().clone())
    }
}
