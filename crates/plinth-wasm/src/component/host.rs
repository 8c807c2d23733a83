//! Plinth's imports (`plinth:runtime`, `wit/runtime.wit`) on a request's store: each one
//! calls the same building block as the gRPC and HTTP APIs, through the function's
//! [`FunctionEnv`](crate::env::FunctionEnv).

use plinth_core::component::configuration::ConfigurationQuery;
use plinth_core::component::lock::LockStatus;
use plinth_core::component::state::{Consistency, DeleteRequest, SetRequest};
use plinth_core::{ErrorKind, Metadata};
use plinth_runtime::app::{AppStatus, InvokeRequest};
use plinth_runtime::sequencer::Increment;

use super::store::Ctx;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plinth:runtime/imports-with-lifecycle",
    imports: { default: async },
    exports: { default: async },
});

use plinth::runtime::types::Error as WitError;
use plinth::runtime::{configuration, invoke, lock, logging, pubsub, secrets, sequencer, state};

/// The longest log message a function may emit in one call; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 4096;

type WitResult<T> = Result<T, WitError>;

/// A building block's error as the WIT `error` variant, kind for kind.
fn wit_error(e: plinth_core::Error) -> WitError {
    let message = e.message().to_string();
    match e.kind() {
        ErrorKind::InvalidArgument | ErrorKind::EtagInvalid => WitError::InvalidArgument(message),
        ErrorKind::NotFound => WitError::NotFound(message),
        ErrorKind::EtagMismatch => WitError::EtagMismatch(message),
        ErrorKind::FailedPrecondition | ErrorKind::AlreadyExists => {
            WitError::FailedPrecondition(message)
        }
        ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => {
            WitError::PermissionDenied(message)
        }
        ErrorKind::Unavailable => WitError::Unavailable(message),
        ErrorKind::Timeout => WitError::DeadlineExceeded(message),
        ErrorKind::ResourceExhausted => WitError::ResourceExhausted(message),
        ErrorKind::Unimplemented => WitError::Unimplemented(message),
        ErrorKind::Internal => WitError::Internal(message),
    }
}

fn metadata(pairs: Vec<(String, String)>) -> Metadata {
    pairs.into_iter().collect()
}

/// Metadata as WIT pairs, sorted so that guests see a stable order.
fn pairs(metadata: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = metadata.into_iter().collect();
    pairs.sort();
    pairs
}

/// The HTTP status a gRPC code corresponds to (the mapping gRPC's HTTP gateways use).
fn grpc_to_http(code: i32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

impl plinth::runtime::types::Host for Ctx {}

impl state::Host for Ctx {
    async fn get(&mut self, store: String, key: String) -> WitResult<Option<state::Item>> {
        let found = self
            .env
            .state
            .get(&store, &key, Metadata::new(), Consistency::Unspecified)
            .await
            .map_err(wit_error)?;
        Ok(found.map(|r| state::Item {
            value: r.data.to_vec(),
            etag: r.etag,
            metadata: pairs(r.metadata),
        }))
    }

    async fn set(
        &mut self,
        store: String,
        key: String,
        value: Vec<u8>,
        options: state::SetOptions,
    ) -> WitResult<()> {
        let item = SetRequest {
            key,
            value: value.into(),
            etag: options.etag,
            metadata: metadata(options.metadata),
            ..Default::default()
        };
        self.env
            .state
            .save(&store, vec![item])
            .await
            .map_err(wit_error)
    }

    async fn delete(&mut self, store: String, key: String, etag: Option<String>) -> WitResult<()> {
        let req = DeleteRequest {
            key,
            etag,
            ..Default::default()
        };
        self.env.state.delete(&store, req).await.map_err(wit_error)
    }
}

impl invoke::Host for Ctx {
    async fn call(&mut self, app_id: String, req: invoke::Request) -> WitResult<invoke::Response> {
        let req = InvokeRequest {
            method: req.method,
            verb: req.verb,
            query: req.query,
            content_type: req.content_type,
            data: req.data.into(),
            headers: req
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        };
        let resp = self.env.invoke(&app_id, req).await.map_err(wit_error)?;
        let status = match resp.status {
            AppStatus::Http(code) => code,
            AppStatus::Grpc { code, .. } => grpc_to_http(code),
        };
        Ok(invoke::Response {
            status,
            content_type: resp.content_type,
            data: resp.data.to_vec(),
            headers: resp.headers,
        })
    }
}

impl pubsub::Host for Ctx {
    async fn publish(
        &mut self,
        pubsub_name: String,
        topic: String,
        data: Vec<u8>,
        content_type: Option<String>,
        meta: Vec<(String, String)>,
    ) -> WitResult<()> {
        self.env
            .publish(
                &pubsub_name,
                &topic,
                &data,
                content_type.as_deref().unwrap_or_default(),
                metadata(meta),
            )
            .await
            .map_err(wit_error)
    }
}

impl lock::Host for Ctx {
    async fn try_lock(
        &mut self,
        store: String,
        resource_id: String,
        owner: String,
        expire_seconds: u32,
    ) -> WitResult<bool> {
        self.env
            .lock
            .try_lock(&store, &resource_id, &owner, i64::from(expire_seconds))
            .await
            .map_err(wit_error)
    }

    async fn unlock(
        &mut self,
        store: String,
        resource_id: String,
        owner: String,
    ) -> WitResult<lock::UnlockStatus> {
        let status = self
            .env
            .lock
            .unlock(&store, &resource_id, &owner)
            .await
            .map_err(wit_error)?;
        Ok(match status {
            LockStatus::Success => lock::UnlockStatus::Success,
            LockStatus::NotExist => lock::UnlockStatus::LockDoesNotExist,
            LockStatus::BelongsToOthers => lock::UnlockStatus::LockBelongsToOthers,
        })
    }
}

impl sequencer::Host for Ctx {
    async fn next_id(
        &mut self,
        store: String,
        key: String,
        increment: sequencer::Increment,
    ) -> WitResult<i64> {
        let increment = match increment {
            sequencer::Increment::Weak => Increment::Weak,
            sequencer::Increment::Strong => Increment::Strong,
        };
        self.env
            .sequencer
            .next_id(&store, &key, increment)
            .await
            .map_err(wit_error)
    }
}

impl configuration::Host for Ctx {
    async fn get(
        &mut self,
        store: String,
        keys: Vec<String>,
        meta: Vec<(String, String)>,
    ) -> WitResult<Vec<configuration::ConfigItem>> {
        let query = ConfigurationQuery {
            keys,
            metadata: metadata(meta),
            ..Default::default()
        };
        let items = self
            .env
            .configuration
            .get(&store, query)
            .await
            .map_err(wit_error)?;
        Ok(items
            .into_iter()
            .map(|i| configuration::ConfigItem {
                key: i.key,
                value: i.content,
                version: i.version,
                metadata: pairs(i.metadata),
            })
            .collect())
    }
}

impl secrets::Host for Ctx {
    async fn get(&mut self, store: String, key: String) -> WitResult<Vec<(String, String)>> {
        let secret = self.env.secret(&store, &key).await.map_err(wit_error)?;
        Ok(pairs(secret))
    }
}

impl logging::Host for Ctx {
    async fn log(&mut self, level: logging::Level, message: String) {
        let message = truncate(&message, MAX_LOG_MESSAGE);
        let function = &*self.env.id;
        match level {
            logging::Level::Trace => {
                tracing::trace!(target: "plinth_wasm::guest", function, "{message}")
            }
            logging::Level::Debug => {
                tracing::debug!(target: "plinth_wasm::guest", function, "{message}")
            }
            logging::Level::Info => {
                tracing::info!(target: "plinth_wasm::guest", function, "{message}")
            }
            logging::Level::Warn => {
                tracing::warn!(target: "plinth_wasm::guest", function, "{message}")
            }
            logging::Level::Error => {
                tracing::error!(target: "plinth_wasm::guest", function, "{message}")
            }
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
