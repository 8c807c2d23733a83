//! Delivery of one input binding: read the component's stream, hand each event to the
//! handler, carry out the reply, settle the event.
//!
//! | the handler                         | then                                   | the event is |
//! |-------------------------------------|----------------------------------------|--------------|
//! | answers                             | the reply is carried out               | acked        |
//! | answers; the reply fails for now    | (state store or binding unavailable)   | nacked       |
//! | answers; the reply cannot be done   | logged and counted (no such store, ...) | acked        |
//! | fails                               |                                        | nacked       |
//!
//! A nacked event is redelivered or dropped by the component, per its type.

use std::sync::Arc;
use std::time::Duration;

use plinth_core::component::binding::{InputDelivery, InputStream, ReadRequest};
use plinth_core::{Error, ErrorKind, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{BindingApi, BindingEvent, BindingEventHandler};

/// Events of one binding in flight at once: one, so an app sees them in order.
const MAX_IN_FLIGHT: usize = 1;

/// The first and the largest wait between attempts to (re)open a binding's stream.
const REOPEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(15));

/// A running input-binding delivery. Dropping it (or calling [`InputBindingHandle::cancel`])
/// stops reading; an event the handler is processing is still settled.
#[derive(Debug)]
pub struct InputBindingHandle {
    _stop: mpsc::Sender<()>,
    /// The binding.
    pub name: String,
}

impl InputBindingHandle {
    /// Stop delivery.
    pub fn cancel(self) {}
}

/// Open the binding's stream, within the component's init timeout. Returns the stream and
/// the generation of the hosted component it came from.
async fn open(api: &BindingApi, name: &str) -> Result<(InputStream, u64)> {
    let handle = api.host.input_binding(name)?;
    let limit = handle.spec().init_timeout;
    let req = ReadRequest {
        max_in_flight: MAX_IN_FLIGHT,
    };
    let stream = tokio::time::timeout(limit, handle.component.read(req))
        .await
        .map_err(|_| {
            Error::timeout(format!(
                "binding {name:?} did not start reading within {}ms",
                limit.as_millis()
            ))
        })??;
    Ok((stream, handle.hosted.generation()))
}

/// Whether the host now holds another instance of the binding than `generation`.
fn replaced(api: &BindingApi, name: &str, generation: u64) -> bool {
    api.host
        .get(name)
        .is_none_or(|h| h.generation() != generation)
}

/// Start delivering in the background until the handle is dropped.
pub(super) fn start(
    api: BindingApi,
    name: String,
    handler: Arc<dyn BindingEventHandler>,
) -> InputBindingHandle {
    let (stop_tx, mut stop_rx) = mpsc::channel::<()>(1);
    let handle = InputBindingHandle {
        _stop: stop_tx,
        name: name.clone(),
    };
    tokio::spawn(async move {
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut changes = api.host.subscribe_changes();
        let mut backoff = REOPEN_BACKOFF.0;
        'outer: loop {
            let opened = tokio::select! {
                _ = stop_rx.recv() => break 'outer,
                r = open(&api, &name) => r,
            };
            let (mut stream, generation) = match opened {
                Ok(opened) => opened,
                Err(err) => {
                    // A binding reconfigured without its input side may get it back later;
                    // until then, try at the slowest pace.
                    if err.kind() == ErrorKind::InvalidArgument {
                        backoff = REOPEN_BACKOFF.1;
                    }
                    tracing::warn!(binding = %name, error = %err, retry_in_ms = backoff.as_millis() as u64, "reading the input binding failed; retrying");
                    tokio::select! {
                        _ = stop_rx.recv() => break 'outer,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(REOPEN_BACKOFF.1);
                    continue;
                }
            };
            tracing::info!(binding = %name, "reading the input binding");
            changes.mark_unchanged();
            loop {
                // A permit first: the stream is read only while there is room in flight, so
                // events wait in the component, which bounds them.
                let permit = tokio::select! {
                    _ = stop_rx.recv() => break 'outer,
                    p = in_flight.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break 'outer,
                    },
                };
                tokio::select! {
                    _ = stop_rx.recv() => break 'outer,
                    changed = changes.changed() => {
                        if changed.is_err() || replaced(&api, &name, generation) {
                            break;
                        }
                    }
                    delivery = stream.receiver.recv() => {
                        let Some(delivery) = delivery else { break };
                        backoff = REOPEN_BACKOFF.0;
                        let (api, name, handler) = (api.clone(), name.clone(), handler.clone());
                        tokio::spawn(process(api, name, handler, delivery, permit));
                    }
                }
            }
            drop(stream);
            if replaced(&api, &name, generation) {
                tracing::info!(binding = %name, "the input binding was replaced; reading the new one");
                continue;
            }
            // Back off too when a stream ends without delivering, so a component that keeps
            // ending them is not hammered.
            tracing::warn!(binding = %name, retry_in_ms = backoff.as_millis() as u64, "the component ended the input binding's stream; reading again");
            tokio::select! {
                _ = stop_rx.recv() => break 'outer,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(REOPEN_BACKOFF.1);
        }
        tracing::info!(binding = %name, "stopped reading the input binding");
    });
    handle
}

/// Deliver one event and settle it per the table above.
async fn process(
    api: BindingApi,
    name: String,
    handler: Arc<dyn BindingEventHandler>,
    delivery: InputDelivery,
    _permit: OwnedSemaphorePermit,
) {
    let event = BindingEvent {
        name: name.clone(),
        data: delivery.event.data.clone(),
        metadata: delivery.event.metadata.clone(),
    };
    let answer = {
        let _app_permit = match &api.app_concurrency {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        handler.on_binding_event(event).await
    };
    let (ack, outcome) = match answer {
        Err(err) => {
            tracing::warn!(binding = %name, error = %err, "the app failed to process the binding event");
            (false, "error")
        }
        Ok(reply) => match api.apply(&name, reply).await {
            Ok(()) => (true, "success"),
            Err(err) if err.kind().is_retryable() => {
                tracing::warn!(binding = %name, error = %err, "carrying out the app's reply failed; the event goes back to the component");
                (false, "reply_retry")
            }
            Err(err) => {
                tracing::error!(binding = %name, error = %err, "the app's reply to a binding event cannot be carried out");
                (true, "reply_failed")
            }
        },
    };
    api.metrics.record_binding_event(&name, outcome);
    let settled = if ack {
        delivery.ack().await
    } else {
        delivery.nack().await
    };
    if let Err(err) = settled {
        tracing::warn!(binding = %name, error = %err, "settling the binding event with the component failed");
    }
}
