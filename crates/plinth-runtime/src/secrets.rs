//! The secrets building block.

use std::collections::HashMap;
use std::sync::Arc;

use plinth_core::component::secrets::Secret;
use plinth_core::{Error, Metadata, Result};

use crate::components::ComponentHost;

/// The secrets API every front door calls, and the resolver of `secretKeyRef`s.
#[derive(Debug, Clone)]
pub struct SecretsApi {
    host: Arc<ComponentHost>,
}

impl SecretsApi {
    /// Secrets over the host's components.
    pub fn new(host: Arc<ComponentHost>) -> Self {
        Self { host }
    }

    /// One secret.
    pub async fn get(&self, store: &str, key: &str, metadata: Metadata) -> Result<Secret> {
        if key.is_empty() {
            return Err(Error::invalid_argument("secret key is empty"));
        }
        let handle = self.host.secrets(store)?;
        let k = key.to_string();
        handle
            .call("get", (k, metadata), |c, (k, m)| async move {
                c.get(&k, &m).await
            })
            .await
    }

    /// Every secret the store returns in bulk.
    pub async fn bulk_get(
        &self,
        store: &str,
        metadata: Metadata,
    ) -> Result<HashMap<String, Secret>> {
        let handle = self.host.secrets(store)?;
        handle
            .call(
                "bulk_get",
                metadata,
                |c, m| async move { c.bulk_get(&m).await },
            )
            .await
    }
}
