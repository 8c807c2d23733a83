//! Delivery of one subscription: pull from the component, hand each event to the handler
//! with bounded concurrency, and settle it per the outcome table.
//!
//! | outcome                          | with a dead-letter topic          | without one                  |
//! |----------------------------------|-----------------------------------|------------------------------|
//! | SUCCESS                          | ack                               | ack                          |
//! | RETRY, error                     | backoff; after max attempts DLQ   | backoff; then park           |
//! | DROP                             | DLQ, then ack                     | ack, logged and counted      |
//! | UNIMPLEMENTED                    | ack                               | ack                          |
//!
//! A message whose dead-lettering fails is returned to the broker after the largest backoff
//! (`nack_after`), never acked.

use std::sync::Arc;
use std::time::Duration;

use plinth_core::component::pubsub::{Delivery, SubscribeRequest, Subscription};
use plinth_core::{ErrorKind, Result};
use tokio::sync::{mpsc, watch};

use super::{EventHandler, Outcome, PubSubApi, SubscriptionSpec, cloudevent};
use crate::metrics::TopicLabels;

/// A running subscription. Dropping it (or calling [`SubscriptionHandle::cancel`]) stops
/// delivery; unsettled messages go back to the broker.
#[derive(Debug)]
pub struct SubscriptionHandle {
    _stop: mpsc::Sender<()>,
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
}

impl SubscriptionHandle {
    /// Stop delivery.
    pub fn cancel(self) {}
}

/// The first and the largest wait between attempts to (re)open a subscription.
const RESUBSCRIBE_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(250), Duration::from_secs(15));

async fn open(api: &PubSubApi, spec: &SubscriptionSpec) -> Result<Subscription> {
    // Again on every (re)open: the component may have been reconfigured with new scopes.
    api.admit(spec)?;
    let handle = api.host.pubsub(&spec.pubsub)?;
    let req = SubscribeRequest {
        topic: spec.topic.clone(),
        group: api.app_id.to_string(),
        max_in_flight: spec.policy.max_in_flight,
        metadata: spec.metadata.clone(),
    };
    handle.component.subscribe(req).await
}

/// Start delivering. With `first` set, the subscription is already open; otherwise it is
/// opened in the background, retrying while the component is not UP. Whenever the
/// component ends the subscription (it failed, or was replaced at run time), it is opened
/// again with backoff, so delivery recovers by itself. Only cancelling the handle, a
/// request the component rejects as invalid, or topic scopes that no longer allow it end it.
pub(super) fn start(
    api: PubSubApi,
    spec: SubscriptionSpec,
    handler: Arc<dyn EventHandler>,
    first: Option<Subscription>,
) -> SubscriptionHandle {
    let (stop_tx, mut stop_rx) = mpsc::channel::<()>(1);
    let spec = Arc::new(spec);
    let handle_out = SubscriptionHandle {
        _stop: stop_tx,
        pubsub: spec.pubsub.clone(),
        topic: spec.topic.clone(),
    };
    tokio::spawn(async move {
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let mut next = first;
        let mut backoff = RESUBSCRIBE_BACKOFF.0;
        'outer: loop {
            let mut subscription = match next.take() {
                Some(s) => s,
                None => {
                    let opened = tokio::select! {
                        _ = stop_rx.recv() => break 'outer,
                        r = open(&api, &spec) => r,
                    };
                    match opened {
                        Ok(s) => s,
                        Err(err)
                            if matches!(
                                err.kind(),
                                ErrorKind::InvalidArgument | ErrorKind::PermissionDenied
                            ) =>
                        {
                            tracing::error!(pubsub = %spec.pubsub, topic = %spec.topic, error = %err, "cannot subscribe");
                            break 'outer;
                        }
                        Err(err) => {
                            tracing::warn!(pubsub = %spec.pubsub, topic = %spec.topic, error = %err, retry_in_ms = backoff.as_millis() as u64, "subscribing failed; retrying");
                            tokio::select! {
                                _ = stop_rx.recv() => break 'outer,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(RESUBSCRIBE_BACKOFF.1);
                            continue;
                        }
                    }
                }
            };
            tracing::info!(pubsub = %spec.pubsub, topic = %spec.topic, "subscribed");
            loop {
                tokio::select! {
                    _ = stop_rx.recv() => break 'outer,
                    delivery = subscription.receiver.recv() => {
                        let Some(delivery) = delivery else { break };
                        backoff = RESUBSCRIBE_BACKOFF.0;
                        // The component bounds unsettled deliveries to max_in_flight, so this
                        // spawns at most that many tasks.
                        let (api, spec, handler, done) = (api.clone(), spec.clone(), handler.clone(), done_tx.clone());
                        let cancel = cancel_rx.clone();
                        tokio::spawn(async move {
                            process(api, spec, handler, delivery, cancel).await;
                            drop(done);
                        });
                    }
                }
            }
            // Back off too when a subscription ends without delivering, so a component that
            // keeps ending them is not hammered.
            tracing::warn!(pubsub = %spec.pubsub, topic = %spec.topic, retry_in_ms = backoff.as_millis() as u64, "the component ended the subscription; resubscribing");
            tokio::select! {
                _ = stop_rx.recv() => break 'outer,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RESUBSCRIBE_BACKOFF.1);
        }
        tracing::info!(pubsub = %spec.pubsub, topic = %spec.topic, "unsubscribed");
        // In-flight tasks waiting to retry return their messages; dropping the receiver (at
        // the end of the loop above) returned the queued ones.
        let _ = cancel_tx.send(true);
        drop(done_tx);
        let _ = done_rx.recv().await;
    });
    handle_out
}

/// Open a subscription now, reporting why it cannot be opened.
pub(super) async fn open_now(api: &PubSubApi, spec: &SubscriptionSpec) -> Result<Subscription> {
    open(api, spec).await
}

fn backoff(spec: &SubscriptionSpec, attempt: u32) -> Duration {
    let p = &spec.policy;
    p.initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(p.max_backoff)
}

/// Sleep before a redelivery; false when the subscription was cancelled meanwhile.
async fn wait(delay: Duration, cancel: &mut watch::Receiver<bool>) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        if *cancel.borrow() {
            return false;
        }
        tokio::select! {
            _ = &mut sleep => return true,
            changed = cancel.changed() => if changed.is_err() { return true },
        }
    }
}

async fn process(
    api: PubSubApi,
    spec: Arc<SubscriptionSpec>,
    handler: Arc<dyn EventHandler>,
    delivery: Delivery,
    mut cancel: watch::Receiver<bool>,
) {
    let spec = spec.as_ref();
    let m = &delivery.message;
    let event = cloudevent::parse(
        &spec.pubsub,
        &spec.topic,
        &m.id,
        m.data.clone(),
        &m.content_type,
        m.metadata.clone(),
    );
    let mut attempt = 1u32;
    let mut parked = false;
    let labels = TopicLabels {
        pubsub: spec.pubsub.clone(),
        topic: spec.topic.clone(),
    };
    let outcome = loop {
        let outcome = {
            let _permit = match &api.app_concurrency {
                Some(s) => s.clone().acquire_owned().await.ok(),
                None => None,
            };
            handler.handle(event.clone()).await
        };
        match outcome {
            Outcome::Retry | Outcome::Error(_) => {
                if let Outcome::Error(reason) = &outcome {
                    tracing::debug!(topic = %spec.topic, id = %event.id, %reason, attempt, "delivery failed");
                }
                api.metrics
                    .record_delivery(&spec.pubsub, &spec.topic, "retry");
                if attempt >= spec.policy.max_attempts {
                    if spec.policy.dead_letter_topic.is_some() {
                        break Outcome::Drop;
                    }
                    if !parked {
                        parked = true;
                        api.metrics.parked.get_or_create(&labels).inc();
                        tracing::warn!(topic = %spec.topic, id = %event.id, attempts = attempt, "event parked: retrying at the slowest interval");
                    }
                }
                let delay = if attempt >= spec.policy.max_attempts {
                    spec.policy.max_backoff
                } else {
                    backoff(spec, attempt)
                };
                if !wait(delay, &mut cancel).await {
                    break Outcome::Gone;
                }
                attempt = attempt.saturating_add(1);
            }
            other => break other,
        }
    };
    if parked {
        api.metrics.parked.get_or_create(&labels).dec();
    }
    let settle = match outcome {
        Outcome::Success => {
            api.metrics
                .record_delivery(&spec.pubsub, &spec.topic, "success");
            delivery.ack().await
        }
        Outcome::Unimplemented => {
            api.metrics
                .record_delivery(&spec.pubsub, &spec.topic, "unimplemented");
            delivery.ack().await
        }
        Outcome::Gone => delivery.nack().await,
        Outcome::Drop => match &spec.policy.dead_letter_topic {
            Some(dlq) => match api.dead_letter(&spec.pubsub, dlq, &event).await {
                Ok(()) => {
                    api.metrics
                        .record_delivery(&spec.pubsub, &spec.topic, "dead_letter");
                    delivery.ack().await
                }
                Err(err) => {
                    // Delayed, so that a dead-letter topic that keeps failing does not turn
                    // into a hot loop of redeliveries.
                    tracing::warn!(topic = %spec.topic, dead_letter_topic = %dlq, error = %err, retry_in_ms = spec.policy.max_backoff.as_millis() as u64, "dead-lettering failed; returning the event to the broker");
                    delivery.nack_after(spec.policy.max_backoff).await
                }
            },
            None => {
                tracing::warn!(topic = %spec.topic, id = %event.id, "event dropped by the subscriber");
                api.metrics
                    .record_delivery(&spec.pubsub, &spec.topic, "drop");
                delivery.ack().await
            }
        },
        Outcome::Retry | Outcome::Error(_) => unreachable_retry(delivery).await,
    };
    if let Err(err) = settle {
        tracing::warn!(topic = %spec.topic, error = %err, "settling the event with the broker failed; it will be redelivered");
    }
}

// The loop above only breaks with a final outcome; should that ever change, the message is
// returned to the broker rather than lost.
async fn unreachable_retry(delivery: Delivery) -> Result<()> {
    delivery.nack().await
}
