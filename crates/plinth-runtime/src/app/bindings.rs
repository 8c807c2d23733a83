//! Input bindings for the app: ask it which configured input bindings it takes (gRPC
//! `ListInputBindings`, HTTP `OPTIONS /{route}`), or deliver without asking when the
//! component's `direction` names `input`, then hand each event to the app and carry out its
//! reply.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plinth_core::component::state::SetRequest;
use plinth_core::{Error, ErrorKind, Result};
use tokio::sync::{Mutex, watch};

use super::{AppBindingEvent, AppChannel, AppHealth};
use crate::Runtime;
use crate::binding::{
    BindingEvent, BindingEventHandler, BindingReply, Concurrency, InputBindingHandle,
};

/// Input-binding deliveries kept alive for the process's lifetime.
pub type InputBindings = Arc<Mutex<Vec<InputBindingHandle>>>;

#[derive(Debug)]
struct AppBindingHandler {
    channel: Arc<dyn AppChannel>,
    route: String,
    health: AppHealth,
}

#[async_trait]
impl BindingEventHandler for AppBindingHandler {
    async fn on_binding_event(&self, event: BindingEvent) -> Result<BindingReply> {
        if !self.health.is_healthy() {
            return Err(Error::unavailable("the app is unhealthy"));
        }
        let reply = self
            .channel
            .on_binding_event(AppBindingEvent {
                name: event.name,
                route: self.route.clone(),
                data: event.data,
                metadata: event.metadata,
            })
            .await?;
        Ok(BindingReply {
            store_name: reply.store_name,
            states: reply
                .states
                .into_iter()
                .map(|(key, value)| SetRequest {
                    key,
                    value,
                    ..Default::default()
                })
                .collect(),
            to: reply.to,
            data: reply.data,
            concurrency: if reply.parallel {
                Concurrency::Parallel
            } else {
                Concurrency::Sequential
            },
        })
    }
}

/// Start delivering the input bindings the app takes. Runs in the background until
/// `shutdown`; the app may start after Plinth.
pub fn start(rt: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) -> InputBindings {
    let handles: InputBindings = Arc::default();
    let configured = rt.binding.input_bindings();
    if configured.is_empty() {
        return handles;
    }
    let (Some(channel), Some(health)) = (rt.app.get().cloned(), rt.app.health().cloned()) else {
        let names: Vec<_> = configured.iter().map(|b| b.name.as_str()).collect();
        tracing::warn!(bindings = ?names, "input bindings need --app-port to deliver to; they are not started");
        return handles;
    };
    let out = handles.clone();
    tokio::spawn(async move {
        let (explicit, ask): (Vec<_>, Vec<_>) = configured.into_iter().partition(|b| b.explicit);
        let pairs: Vec<(String, String)> = ask
            .iter()
            .map(|b| (b.name.clone(), b.route.clone()))
            .collect();
        let mut taken: Vec<String> = explicit.iter().map(|b| b.name.clone()).collect();
        if !pairs.is_empty() {
            let mut backoff = Duration::from_millis(100);
            loop {
                let result = tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    r = channel.input_bindings(&pairs) => r,
                };
                match result {
                    Ok(names) => {
                        taken.extend(names);
                        break;
                    }
                    Err(err) if err.kind() == ErrorKind::Unavailable => {
                        tracing::debug!(app = %channel.address(), error = %err, "app not answering for input bindings yet; retrying");
                        tokio::select! {
                            _ = shutdown.wait_for(|s| *s) => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(err) => {
                        tracing::error!(app = %channel.address(), error = %err, "cannot ask the app for its input bindings");
                        break;
                    }
                }
            }
        }
        let all: Vec<_> = explicit.into_iter().chain(ask).collect();
        for name in taken {
            let Some(info) = all.iter().find(|b| b.name == name) else {
                continue;
            };
            let handler = Arc::new(AppBindingHandler {
                channel: channel.clone(),
                route: info.route.clone(),
                health: health.clone(),
            });
            match rt.binding.deliver_input(&name, handler) {
                Ok(h) => {
                    tracing::info!(binding = %name, "input binding delivering to the app");
                    out.lock().await.push(h)
                }
                Err(err) => {
                    tracing::error!(binding = %name, error = %err, "input binding not started")
                }
            }
        }
    });
    handles
}
