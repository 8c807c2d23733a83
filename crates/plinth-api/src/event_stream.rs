//! Event delivery to a streaming subscriber (Layotto's SubscribeTopicEvents, Dapr's
//! SubscribeTopicEventsAlpha1): send the event on the stream, then wait for the client's
//! answer by event id. Generic over the wire message so each front door keeps its own types.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use plinth_runtime::pubsub::{EventHandler, Outcome, TopicEvent};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// Messages buffered towards a streaming client.
pub(crate) const STREAM_BUFFER: usize = 64;
/// How long a streaming subscriber may take to answer one event before it counts as failed.
const EVENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Delivers events to a streaming client and waits for its answer by event id.
pub(crate) struct StreamHandler<T> {
    pub(crate) tx: mpsc::Sender<Result<T, Status>>,
    pending: Mutex<Pending>,
    /// Wraps an event in the front door's response message.
    wrap: fn(&TopicEvent) -> T,
}

impl<T> std::fmt::Debug for StreamHandler<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandler").finish_non_exhaustive()
    }
}

/// The events waiting for the client's answer, by id.
#[derive(Debug, Default)]
struct Pending {
    /// Set when the stream ends. Deliveries still under way (e.g. waiting for an
    /// `--app-max-concurrency` slot) must not be sent on it and then wait for an answer that
    /// cannot come: they go back to the broker at once.
    closed: bool,
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
}

impl<T> StreamHandler<T> {
    /// A handler sending on `tx`, each event wrapped by `wrap`.
    pub(crate) fn new(tx: mpsc::Sender<Result<T, Status>>, wrap: fn(&TopicEvent) -> T) -> Self {
        Self {
            tx,
            pending: Mutex::default(),
            wrap,
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client answered event `id`.
    pub(crate) fn answer(&self, id: &str, outcome: Outcome) {
        let waiter = self.pending().waiting.remove(id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome);
        }
    }

    /// The stream ended: pending events go back to the broker for other subscribers, and
    /// so do those not yet sent.
    pub(crate) fn close(&self) {
        let mut pending = self.pending();
        pending.closed = true;
        pending.waiting.clear();
    }
}

#[async_trait]
impl<T: Send + 'static> EventHandler for StreamHandler<T> {
    async fn handle(&self, event: TopicEvent) -> Outcome {
        let (answer_tx, answer_rx) = oneshot::channel();
        let id = event.id.clone();
        {
            let mut pending = self.pending();
            if pending.closed {
                return Outcome::Gone;
            }
            pending.waiting.insert(id.clone(), answer_tx);
        }
        if self.tx.send(Ok((self.wrap)(&event))).await.is_err() {
            return Outcome::Gone;
        }
        let outcome = match tokio::time::timeout(EVENT_ANSWER_TIMEOUT, answer_rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Gone,
            Err(_) => Outcome::Error("the streaming subscriber did not answer in time".into()),
        };
        self.pending().waiting.remove(&id);
        outcome
    }
}
