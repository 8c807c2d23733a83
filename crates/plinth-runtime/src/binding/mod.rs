//! The bindings building block. Output bindings: invoke an operation on a binding. Input
//! bindings: read a binding's events and deliver each to a handler (the app channel), carry
//! out what the handler's reply asks for (save state, invoke output bindings), then settle
//! the event with the component.

mod input;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use plinth_core::component::Instance;
use plinth_core::component::binding::{BindingRequest, BindingResponse};
use plinth_core::component::state::SetRequest;
use plinth_core::{Error, Metadata, Result};
use tokio::sync::Semaphore;

pub use input::InputBindingHandle;

use crate::components::ComponentHost;
use crate::metrics::SharedMetrics;
use crate::state::StateApi;

/// Component metadata read by the building block: the HTTP path an app receives a binding's
/// events on (Dapr's `route`); the binding's name when absent.
pub const ROUTE: &str = "route";

/// The operation `to` bindings of a reply are invoked with, as in Dapr.
pub const REPLY_OPERATION: &str = "create";

/// One event of an input binding, as the app receives it.
#[derive(Debug, Clone, Default)]
pub struct BindingEvent {
    /// The binding's name.
    pub name: String,
    /// The payload.
    pub data: Bytes,
    /// Event metadata, as the component type documents it.
    pub metadata: Metadata,
}

/// How the `to` bindings of a reply are invoked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// One after the other, in the order given; the first failure stops the rest.
    #[default]
    Sequential,
    /// All at once.
    Parallel,
}

/// The app's answer to an event (Dapr's `BindingEventResponse`): optionally, state to save
/// and output bindings to invoke with `data`. The default asks for nothing.
#[derive(Debug, Clone, Default)]
pub struct BindingReply {
    /// The state store `states` go to.
    pub store_name: String,
    /// State to save, keys as the app gave them (the state building block prefixes them).
    pub states: Vec<SetRequest>,
    /// Output bindings to invoke with operation `create` and `data`.
    pub to: Vec<String>,
    /// The data sent to the `to` bindings.
    pub data: Bytes,
    /// How the `to` bindings are invoked.
    pub concurrency: Concurrency,
}

/// Receives the events of an input binding: the app channel implements it.
#[async_trait]
pub trait BindingEventHandler: Send + Sync + std::fmt::Debug + 'static {
    /// Deliver one event. `Ok` means the app processed it, and carries its reply; an error
    /// means it did not, and the event is given back to the component (which redelivers it
    /// or drops it, per its type).
    async fn on_binding_event(&self, event: BindingEvent) -> Result<BindingReply>;
}

/// A configured binding that has an input side in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputBindingInfo {
    /// The binding's name: what a gRPC app lists in `ListInputBindings`.
    pub name: String,
    /// Its type, e.g. `bindings.cron`.
    pub type_name: String,
    /// The route an HTTP app receives events on: the `route` metadata as configured, or the
    /// binding's name.
    pub route: String,
    /// The `direction` metadata names `input`: Dapr then delivers without asking the app
    /// (no `OPTIONS` probe, no match against `ListInputBindings`).
    pub explicit: bool,
}

/// The bindings API every front door and the app channel call.
#[derive(Debug, Clone)]
pub struct BindingApi {
    host: Arc<ComponentHost>,
    state: StateApi,
    metrics: SharedMetrics,
    app_concurrency: Option<Arc<Semaphore>>,
}

impl BindingApi {
    /// Bindings over the host's components. Replies save state through `state`; deliveries
    /// to the app take a permit of `app_concurrency` (`--app-max-concurrency`, shared with
    /// pub/sub) while the handler runs.
    pub fn new(
        host: Arc<ComponentHost>,
        state: StateApi,
        metrics: SharedMetrics,
        app_concurrency: Option<Arc<Semaphore>>,
    ) -> Self {
        Self {
            host,
            state,
            metrics,
            app_concurrency,
        }
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

    /// Every configured binding whose input side is in use (its type reads events and its
    /// `direction`, if any, names `input`), sorted by name, whatever its status: the app
    /// channel intersects them with what the app declares.
    pub fn input_bindings(&self) -> Vec<InputBindingInfo> {
        let mut all: Vec<_> = self
            .host
            .all()
            .iter()
            .filter_map(|hosted| {
                let Instance::Binding(binding) = hosted.instance() else {
                    return None;
                };
                let spec = hosted.spec();
                if !binding.directions_in_use(spec).input {
                    return None;
                }
                let explicit = plinth_core::component::binding::Directions::from_spec(spec)
                    .ok()
                    .flatten()
                    .is_some_and(|d| d.input);
                Some(InputBindingInfo {
                    name: spec.name.clone(),
                    type_name: spec.type_name.clone(),
                    route: spec.get(ROUTE).unwrap_or(&spec.name).to_owned(),
                    explicit,
                })
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Deliver the events of input binding `name` to `handler` until the handle is dropped.
    /// Events of one binding are delivered one at a time. Reading starts in the background
    /// and is retried with backoff while the component is not UP; when the component ends
    /// its stream (it failed, or was replaced at run time) it is read again. Only a name
    /// that is not a configured input binding is an error.
    pub fn deliver_input(
        &self,
        name: &str,
        handler: Arc<dyn BindingEventHandler>,
    ) -> Result<InputBindingHandle> {
        if !self.input_bindings().iter().any(|b| b.name == name) {
            // The host's message says what is wrong (unknown name, wrong kind, no input).
            self.host.input_binding(name)?;
            return Err(Error::invalid_argument(format!(
                "binding {name:?} is not an input binding"
            )));
        }
        Ok(input::start(self.clone(), name.to_owned(), handler))
    }

    /// Carry out a handler's reply: save its states, then invoke its `to` bindings.
    async fn apply(&self, binding: &str, reply: BindingReply) -> Result<()> {
        if !reply.states.is_empty() {
            if reply.store_name.is_empty() {
                return Err(Error::invalid_argument(format!(
                    "the reply to binding {binding:?} has states but no store name"
                )));
            }
            self.state.save(&reply.store_name, reply.states).await?;
        }
        let invoke = |to: String| {
            let req = BindingRequest {
                operation: REPLY_OPERATION.to_owned(),
                data: reply.data.clone(),
                metadata: Metadata::new(),
            };
            async move {
                self.invoke(&to, req)
                    .await
                    .map_err(|e| e.context(format!("output binding {to:?}")))
            }
        };
        match reply.concurrency {
            Concurrency::Sequential => {
                for to in reply.to {
                    invoke(to).await?;
                }
                Ok(())
            }
            Concurrency::Parallel => {
                let results = futures::future::join_all(reply.to.into_iter().map(invoke)).await;
                let mut errors: Vec<Error> = results.into_iter().filter_map(|r| r.err()).collect();
                // A failure worth retrying decides: the event then goes back to the component.
                errors.sort_by_key(|e| !e.kind().is_retryable());
                errors.into_iter().next().map_or(Ok(()), Err)
            }
        }
    }
}

#[cfg(test)]
mod tests;
