//! One subscription: pull batches bounded by the free in-flight permits, hand each message
//! out with an acknowledger that keeps it alive, and give back what was not handed out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, StatusCode, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use plinth_core::component::pubsub::{Acknowledger, Delivery, Message};
use plinth_core::{Error, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::names::{CONTENT_TYPE, MSG_ID, metadata_from_headers, percent_decode};

/// How long one pull request waits on the server for messages. It also bounds how long a
/// dropped subscription keeps giving back what its last request still brings.
pub(super) const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How long past its expiry a pull request is given before it counts as lost (the
/// connection dropped and the server's end-of-request status never came).
const PULL_GRACE: Duration = Duration::from_secs(2);
/// How often a subscription waiting for the connection looks at its state again.
const STATE_RECHECK: Duration = Duration::from_secs(1);
/// The most messages one pull request asks for.
const MAX_BATCH: usize = 256;
/// The most pull requests one subscription has waiting on the server at once.
const MAX_PULLS: usize = 4;
/// The first and the largest wait after a failed pull.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Sleep until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What one subscription's task needs.
pub(super) struct Puller {
    /// The component, for logs.
    pub(super) pubsub: String,
    pub(super) client: Client,
    pub(super) js: jetstream::Context,
    /// `<api prefix>.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    pub(super) next_subject: String,
    pub(super) topic: String,
    pub(super) consumer: String,
    /// How often a held message is reported in progress.
    pub(super) keep_alive: Duration,
    /// Bounds each call to the server.
    pub(super) timeout: Duration,
    pub(super) connected: watch::Receiver<bool>,
    /// Cancelled when the component closes.
    pub(super) shutdown: CancellationToken,
}

/// How one pull request ended.
enum End {
    /// It was filled or expired: pull again.
    Done,
    /// The receiver was dropped or the component closed: stop.
    Stopped,
    /// The consumer was deleted: end the subscription, so the runtime subscribes again
    /// (which creates it again).
    ConsumerGone(String),
    /// Something went wrong: wait, then pull again.
    Failed(String),
    /// The server ended the request early without a message: wait (quietly), so a server
    /// that keeps doing so is not asked in a hot loop.
    Early,
}

impl Puller {
    /// Feed `tx` until its receiver is dropped, the component closes or the consumer is
    /// deleted. At most `in_flight`'s permits worth of messages are unsettled at once.
    ///
    /// Pull requests overlap: whenever permits are free while earlier requests wait, another
    /// request asks for them. One request at a time would serialize the pulls whenever
    /// permits come back one by one (a busy subscription), capping its rate at about one
    /// request round trip per message.
    pub(super) async fn run(self, tx: mpsc::Sender<Delivery>, in_flight: Arc<Semaphore>) {
        let mut connected = self.connected.clone();
        let mut backoff = RETRY_BACKOFF.0;
        let mut pulls = futures::stream::FuturesUnordered::new();
        // After a failed or empty-handed request no new one starts before this; the requests
        // already waiting keep being served meanwhile.
        let mut paused_until: Option<tokio::time::Instant> = None;
        loop {
            let may_pull = pulls.len() < MAX_PULLS && paused_until.is_none() && !tx.is_closed();
            let end = tokio::select! {
                _ = tx.closed(), if pulls.is_empty() => return,
                _ = self.shutdown.cancelled() => return,
                _ = sleep_until(paused_until) => {
                    paused_until = None;
                    continue;
                }
                permit = Arc::clone(&in_flight).acquire_owned(), if may_pull => {
                    let Ok(first) = permit else { return };
                    let mut permits = vec![first];
                    while permits.len() < MAX_BATCH {
                        match Arc::clone(&in_flight).try_acquire_owned() {
                            Ok(permit) => permits.push(permit),
                            Err(_) => break,
                        }
                    }
                    if !self.wait_connected(&tx, &mut connected).await {
                        return;
                    }
                    pulls.push(self.pull(&tx, permits));
                    continue;
                }
                Some(end) = pulls.next(), if !pulls.is_empty() => end,
            };
            match end {
                End::Done => backoff = RETRY_BACKOFF.0,
                // The receiver is gone: the other requests give back what they still bring.
                End::Stopped if pulls.is_empty() => return,
                End::Stopped => {}
                End::ConsumerGone(why) => {
                    tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, consumer = %self.consumer, reason = %why, "the consumer is gone; ending the subscription");
                    return;
                }
                End::Early | End::Failed(_) => {
                    if let End::Failed(why) = &end {
                        tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, consumer = %self.consumer, error = %why, retry_in_ms = backoff.as_millis() as u64, "pulling failed");
                    }
                    paused_until = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(RETRY_BACKOFF.1);
                }
            }
        }
    }

    /// Wait until the client is connected; false when the subscription should stop.
    async fn wait_connected(
        &self,
        tx: &mpsc::Sender<Delivery>,
        connected: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            if self.client.connection_state() == async_nats::connection::State::Connected {
                return true;
            }
            tokio::select! {
                _ = tx.closed() => return false,
                _ = self.shutdown.cancelled() => return false,
                changed = connected.changed() => if changed.is_err() {
                    // The client is gone for good (closed).
                    return false;
                },
                // The client hands events over with `try_send`, so one may be lost: look
                // at the state again now and then rather than wait for an event for ever.
                _ = tokio::time::sleep(STATE_RECHECK) => {}
            }
        }
    }

    /// One pull request for `permits.len()` messages.
    async fn pull(
        &self,
        tx: &mpsc::Sender<Delivery>,
        mut permits: Vec<OwnedSemaphorePermit>,
    ) -> End {
        let wanted = permits.len();
        let inbox = self.client.new_inbox();
        let mut replies =
            match tokio::time::timeout(self.timeout, self.client.subscribe(inbox.clone())).await {
                Ok(Ok(subscriber)) => subscriber,
                Ok(Err(err)) => {
                    return End::Failed(format!("subscribing to the reply inbox: {err}"));
                }
                Err(_) => return End::Failed("subscribing to the reply inbox timed out".into()),
            };
        let request = serde_json::json!({
            "batch": wanted,
            "expires": u64::try_from(PULL_EXPIRES.as_nanos()).unwrap_or(u64::MAX),
        });
        let sent = tokio::time::timeout(
            self.timeout,
            self.client.publish_with_reply(
                self.next_subject.clone(),
                inbox,
                Bytes::from(request.to_string()),
            ),
        )
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return End::Failed(format!("sending the pull request: {err}")),
            Err(_) => return End::Failed("sending the pull request timed out".into()),
        }
        let started = tokio::time::Instant::now();
        let lost = tokio::time::sleep(PULL_EXPIRES + PULL_GRACE);
        tokio::pin!(lost);
        let mut received = 0;
        // Set once the receiver is gone: from then on every message is given back.
        let mut draining = false;
        let finished = |draining: bool, received: usize| {
            if draining {
                End::Stopped
            } else if received == 0 && started.elapsed() < PULL_EXPIRES / 2 {
                End::Early
            } else {
                End::Done
            }
        };
        while received < wanted {
            let message = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return End::Stopped,
                _ = tx.closed(), if !draining => {
                    draining = true;
                    continue;
                }
                _ = &mut lost => return finished(draining, received),
                message = replies.next() => message,
            };
            let Some(message) = message else {
                return End::Failed("the reply subscription closed".into());
            };
            match message.status {
                None | Some(StatusCode::OK) => {}
                Some(StatusCode::IDLE_HEARTBEAT) => continue,
                // The request expired, or (no_wait) there was nothing: pull again.
                Some(StatusCode::TIMEOUT | StatusCode::NOT_FOUND) => {
                    return finished(draining, received);
                }
                Some(StatusCode::NO_RESPONDERS) => {
                    return End::ConsumerGone("no responders for the consumer".into());
                }
                Some(status) => {
                    let description = message.description.unwrap_or_default();
                    let lower = description.to_ascii_lowercase();
                    if lower.contains("deleted") || lower.contains("push based") {
                        return End::ConsumerGone(format!("{status}: {description}"));
                    }
                    if draining {
                        return End::Stopped;
                    }
                    return End::Failed(format!("{status}: {description}"));
                }
            }
            received += 1;
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let Some(permit) = permits.pop().filter(|_| !draining) else {
                self.give_back(reply).await;
                continue;
            };
            let delivery = self.delivery(message, reply, permit);
            // A failed send drops the delivery, whose acknowledger gives the message back.
            if tx.send(delivery).await.is_err() {
                draining = true;
            }
        }
        finished(draining, received)
    }

    /// NAK a message that was never handed out.
    async fn give_back(&self, reply: Subject) {
        let nak = self.client.publish(reply, AckKind::Nak(None).into());
        if tokio::time::timeout(self.timeout, nak).await.is_err() {
            tracing::debug!(pubsub = %self.pubsub, topic = %self.topic, "giving back a message timed out; JetStream redelivers it after ackWait");
        }
    }

    fn delivery(
        &self,
        message: async_nats::Message,
        reply: Subject,
        permit: OwnedSemaphorePermit,
    ) -> Delivery {
        let headers = message.headers.clone().unwrap_or_default();
        let header = |name: &str| headers.get(name).map(|v| percent_decode(v.as_str()));
        let sequence = jetstream::Message {
            message: message.clone(),
            context: self.js.clone(),
        }
        .info()
        .map(|info| (info.stream.to_owned(), info.stream_sequence))
        .ok();
        let id = header(MSG_ID)
            .or_else(|| sequence.map(|(stream, seq)| format!("{stream}:{seq}")))
            .unwrap_or_default();
        let keep_alive = self.shutdown.child_token();
        tokio::spawn(keep_alive_task(
            self.client.clone(),
            reply.clone(),
            self.keep_alive,
            self.timeout,
            keep_alive.clone(),
        ));
        Delivery {
            message: Message {
                id: id.clone(),
                topic: self.topic.clone(),
                data: message.payload,
                content_type: header(CONTENT_TYPE).unwrap_or_default(),
                metadata: metadata_from_headers(&headers),
            },
            acker: Box::new(JetStreamAcker {
                client: self.client.clone(),
                reply: Some(reply),
                id,
                timeout: self.timeout,
                _keep_alive: keep_alive.drop_guard(),
                permit: Some(permit),
            }),
        }
    }
}

/// Report a held message in progress every `every`, until cancelled.
async fn keep_alive_task(
    client: Client,
    reply: Subject,
    every: Duration,
    timeout: Duration,
    cancelled: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancelled.cancelled() => return,
            _ = ticks.tick() => {
                let progress = client.publish(reply.clone(), AckKind::Progress.into());
                if !matches!(tokio::time::timeout(timeout, progress).await, Ok(Ok(()))) {
                    tracing::debug!("reporting a held message in progress failed; retrying at the next tick");
                }
            }
        }
    }
}

/// Settles one message with JetStream; holds a permit of its subscription's in-flight
/// budget and keeps the message alive until settled.
struct JetStreamAcker {
    client: Client,
    /// The message's ack subject; `None` once settled.
    reply: Option<Subject>,
    /// For Debug.
    id: String,
    timeout: Duration,
    /// Stops the keep-alive when the acknowledger goes.
    _keep_alive: DropGuard,
    /// Released only after the settlement is queued, so the subscription's next pull goes
    /// to the server after it (publish order survives a NAK).
    permit: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for JetStreamAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamAcker")
            .field("message_id", &self.id)
            .field("settled", &self.reply.is_none())
            .finish_non_exhaustive()
    }
}

impl JetStreamAcker {
    /// Send `kind` without waiting for the server (NAKs).
    async fn send(mut self: Box<Self>, kind: AckKind) -> Result<()> {
        let Some(reply) = self.reply.take() else {
            return Ok(());
        };
        let what = ack_name(kind);
        match tokio::time::timeout(self.timeout, self.client.publish(reply, kind.into())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Error::unavailable(format!(
                "sending {what} to NATS failed ({err}); JetStream redelivers the message after ackWait"
            ))),
            Err(_) => Err(Error::unavailable(format!(
                "sending {what} to NATS timed out; JetStream redelivers the message after ackWait"
            ))),
        }
    }
}

fn ack_name(kind: AckKind) -> &'static str {
    match kind {
        AckKind::Ack => "an ack",
        AckKind::Nak(None) => "a nak",
        AckKind::Nak(Some(_)) => "a delayed nak",
        AckKind::Progress => "an in-progress ack",
        AckKind::Next => "an ack-next",
        AckKind::Term => "a term",
    }
}

impl Drop for JetStreamAcker {
    // At least once: a delivery dropped unsettled is given back at once.
    fn drop(&mut self) {
        let permit = self.permit.take();
        let Some(reply) = self.reply.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to send on: JetStream redelivers it after ackWait.
            return;
        };
        let client = self.client.clone();
        let timeout = self.timeout;
        runtime.spawn(async move {
            let nak = client.publish(reply, AckKind::Nak(None).into());
            let _ = tokio::time::timeout(timeout, nak).await;
            drop(permit);
        });
    }
}

#[async_trait]
impl Acknowledger for JetStreamAcker {
    /// An ack the server confirms (a double ack): Ok means JetStream recorded it.
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let Some(reply) = self.reply.take() else {
            return Ok(());
        };
        let acked = tokio::time::timeout(
            self.timeout,
            self.client.request(reply, AckKind::Ack.into()),
        )
        .await;
        match acked {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(Error::unavailable(format!(
                "NATS did not confirm the ack ({err}); JetStream may redeliver the message"
            ))),
            Err(_) => Err(Error::unavailable(format!(
                "NATS did not confirm the ack within {:?}; JetStream may redeliver the message",
                self.timeout
            ))),
        }
    }

    async fn nack(self: Box<Self>) -> Result<()> {
        self.send(AckKind::Nak(None)).await
    }

    /// A NAK with a delay: JetStream redelivers no sooner than `delay`.
    async fn nack_after(self: Box<Self>, delay: Duration) -> Result<()> {
        self.send(AckKind::Nak(Some(delay))).await
    }
}
