//! What a function reaches: the same building blocks as the APIs, under the function's app
//! id, and nothing it has not been granted.

use std::collections::BTreeMap;
use std::sync::Arc;

use plinth_core::component::secrets::Secret;
use plinth_core::{Error, Metadata, Result};
use plinth_runtime::Runtime;
use plinth_runtime::app::{InvokeRequest, InvokeResponse};
use plinth_runtime::configuration::ConfigurationApi;
use plinth_runtime::lock::LockApi;
use plinth_runtime::sequencer::SequencerApi;
use plinth_runtime::state::StateApi;

use crate::config::{FunctionConfig, Grants};

/// The building blocks one function calls, shared by both ABIs (components and proxy-wasm).
#[derive(Debug, Clone)]
pub struct FunctionEnv {
    /// The function's id.
    pub id: Arc<str>,
    /// The app id its keys go under and callees see as the caller.
    pub app_id: Arc<str>,
    /// State, keys prefixed with `app_id`.
    pub state: StateApi,
    /// Locks, under `app_id`.
    pub lock: LockApi,
    /// Sequencers, under `app_id`.
    pub sequencer: SequencerApi,
    /// Configuration, under `app_id`.
    pub configuration: ConfigurationApi,
    /// What the function is granted.
    pub grants: Arc<Grants>,
    /// Its configuration values, for `wasi:config`.
    pub variables: Arc<BTreeMap<String, String>>,
    runtime: Arc<Runtime>,
}

impl FunctionEnv {
    /// The environment of function `id` configured by `config`, on `runtime`.
    pub fn new(runtime: Arc<Runtime>, id: &str, config: &FunctionConfig) -> Self {
        let app_id: Arc<str> = config
            .app_id
            .as_deref()
            .filter(|a| !a.is_empty())
            .unwrap_or(&runtime.app_id)
            .into();
        Self {
            id: id.into(),
            state: StateApi::new(runtime.host.clone(), &app_id),
            lock: LockApi::new(runtime.host.clone(), &app_id),
            sequencer: SequencerApi::new(runtime.host.clone(), &app_id),
            configuration: ConfigurationApi::new(runtime.host.clone(), &app_id),
            app_id,
            grants: Arc::new(config.grants.clone()),
            variables: Arc::new(config.variables.clone()),
            runtime,
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Invoke `target`: a function (in-process) or an app, as this function's app id.
    pub async fn invoke(&self, target: &str, req: InvokeRequest) -> Result<InvokeResponse> {
        self.runtime
            .invoke
            .invoke_as(target, &self.app_id, req)
            .await
    }

    /// Publish through the pub/sub building block.
    pub async fn publish(
        &self,
        pubsub: &str,
        topic: &str,
        data: &[u8],
        content_type: &str,
        metadata: Metadata,
    ) -> Result<()> {
        self.runtime
            .pubsub
            .publish(pubsub, topic, data, content_type, metadata)
            .await
    }

    /// A secret, from a store the function has been granted.
    pub async fn secret(&self, store: &str, key: &str) -> Result<Secret> {
        if !self.grants.secret_stores.iter().any(|s| s == store) {
            return Err(Error::permission_denied(format!(
                "function {:?} has not been granted secret store {store:?} (grants.secretStores)",
                self.id
            )));
        }
        self.runtime.secrets.get(store, key, Metadata::new()).await
    }
}
