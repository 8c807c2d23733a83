//! One persistent MQTT session: a connection with a stable client id, subscribed to
//! `$share/{group}/{topic}` with QoS 1, whose messages wait in a local queue (bounded by the
//! broker's in-flight window) for the local subscriptions of that group and topic.
//!
//! Lifecycle: the session starts with its first local subscriber and stops when the last
//! one is gone and every delivery is settled, with a DISCONNECT that keeps the session on
//! the broker (no UNSUBSCRIBE, no clean session). A lost connection is reconnected with
//! backoff; the broker then sends the unacknowledged messages again, so the local queue is
//! emptied and the acks of deliveries from the lost connection fail.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use plinth_core::component::pubsub::{Acknowledger, Delivery, Message, Subscription};
use plinth_core::{Error, ErrorKind, Result};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, Publish, QoS, SubscribeReasonCode};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{BACKOFF, Config, Link, MAX_UNSETTLED, stayed_up, wait_up};
use crate::util::lock;

/// A message received and not yet acknowledged.
#[derive(Debug)]
struct Held {
    /// Arrival order, so a message given back goes before later ones.
    seq: u64,
    /// The connection attempt it arrived on; only that connection can acknowledge it.
    generation: u64,
    /// A fresh uuid: MQTT packet ids are reused.
    id: String,
    publish: Publish,
}

#[derive(Debug, Default)]
struct State {
    /// Received, not handed out; sorted by `seq`.
    queue: VecDeque<Held>,
    next_seq: u64,
    /// Local subscriptions.
    subscribers: usize,
    /// Handed out, not settled.
    outstanding: usize,
    /// The connection attempt that is (or was last) connected.
    generation: u64,
    /// The client of the connected event loop; `None` while disconnected.
    client: Option<AsyncClient>,
    /// The session is stopping: new subscribers start a new one.
    closing: bool,
}

/// One (group, topic) session of a component.
pub(super) struct Session {
    config: Arc<Config>,
    client_id: String,
    topic: String,
    /// `$share/{group}/{topic}`.
    filter: String,
    state: Mutex<State>,
    /// A message was added to the queue.
    ready: Notify,
    pub(super) link: watch::Sender<Link>,
    kick: Notify,
    /// The session is ending: no more reconnects, local subscriptions end.
    stopping: CancellationToken,
    /// Drop the connection now (a DISCONNECT could not be queued).
    hard_stop: CancellationToken,
    /// The connection task has ended and let go of the client id.
    done: CancellationToken,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.client_id)
            .field("filter", &self.filter)
            .field("link", &*self.link.borrow())
            .finish_non_exhaustive()
    }
}

/// How a connection ended.
enum End {
    /// Stopped on purpose.
    Stopped,
    /// The broker refused the subscription: retrying will not help.
    Refused(ErrorKind, String),
    /// The connection failed; reconnect.
    Lost {
        /// When it was subscribed, if it was.
        up_since: Option<Instant>,
        kind: ErrorKind,
        reason: String,
    },
}

impl Session {
    /// A session with one subscriber (the caller), connecting in its own task once
    /// `predecessor` (the stopping session with the same client id) is done.
    pub(super) fn start(
        config: Arc<Config>,
        client_id: String,
        group: &str,
        topic: &str,
        predecessor: Option<CancellationToken>,
    ) -> Arc<Self> {
        let (link, _) = watch::channel(Link::Connecting(0));
        let filter = if config.shared {
            format!("$share/{group}/{topic}")
        } else {
            topic.to_owned()
        };
        let session = Arc::new(Self {
            config,
            client_id,
            topic: topic.to_owned(),
            filter,
            state: Mutex::new(State {
                subscribers: 1,
                ..State::default()
            }),
            ready: Notify::new(),
            link,
            kick: Notify::new(),
            stopping: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            done: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&session).run(predecessor));
        session
    }

    /// Count one more local subscriber, unless the session is stopping.
    pub(super) fn try_join(&self) -> bool {
        let mut state = lock(&self.state);
        if state.closing {
            return false;
        }
        state.subscribers += 1;
        true
    }

    pub(super) fn done_token(&self) -> CancellationToken {
        self.done.clone()
    }

    pub(super) fn is_done(&self) -> bool {
        self.done.is_cancelled()
    }

    /// Wait for the session to be subscribed, then feed a new local subscription. The
    /// caller's subscriber count (from `start` or `try_join`) goes with the subscription,
    /// or is given back on failure.
    pub(super) async fn subscribe(self: Arc<Self>, max_in_flight: usize) -> Result<Subscription> {
        let joined = Joined(self);
        let session = &joined.0;
        let what = format!("subscription {:?}", session.filter);
        wait_up(&session.link, &session.kick, session.config.timeout, &what).await?;
        let (tx, receiver) = mpsc::channel(max_in_flight);
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        tokio::spawn(pull(joined, tx, in_flight));
        Ok(Subscription { receiver })
    }

    /// Stop: DISCONNECT (keeping the session on the broker) after the acks already queued,
    /// or drop the connection when none is up; end the local subscriptions.
    pub(super) fn stop(&self) {
        let client = {
            let mut state = lock(&self.state);
            state.closing = true;
            state.client.take()
        };
        self.stopping.cancel();
        let graceful = client.is_some_and(|c| c.try_disconnect().is_ok());
        if !graceful {
            self.hard_stop.cancel();
        }
    }

    /// Stop once nothing uses the session. Called with the state locked; returns whether
    /// the caller must call `stop` (after unlocking).
    fn idle(state: &mut State) -> bool {
        if state.subscribers == 0 && state.outstanding == 0 && !state.closing {
            state.closing = true;
            return true;
        }
        false
    }

    fn leave(&self) {
        let stop = {
            let mut state = lock(&self.state);
            state.subscribers = state.subscribers.saturating_sub(1);
            Self::idle(&mut state)
        };
        if stop {
            self.stop();
        }
    }

    /// A delivery was acknowledged (or its message is known to come again).
    fn settled(&self) {
        let stop = {
            let mut state = lock(&self.state);
            state.outstanding = state.outstanding.saturating_sub(1);
            Self::idle(&mut state)
        };
        if stop {
            self.stop();
        }
    }

    /// Put a message back before every later one, for the next local subscriber; a message
    /// from a lost connection is dropped instead (the broker sends it again).
    fn give_back(&self, held: Held) {
        let stop = {
            let mut state = lock(&self.state);
            state.outstanding = state.outstanding.saturating_sub(1);
            if held.generation == state.generation && !state.closing {
                let at = state.queue.partition_point(|q| q.seq < held.seq);
                state.queue.insert(at, held);
            }
            Self::idle(&mut state)
        };
        self.ready.notify_waiters();
        if stop {
            self.stop();
        }
    }

    /// Queue a message from the broker; an error when the broker sent more than MQTT
    /// allows.
    fn receive(&self, publish: Publish, generation: u64) -> Result<(), String> {
        {
            let mut state = lock(&self.state);
            if state.generation != generation || state.closing {
                // Not acknowledged: the broker sends it again when the session reconnects.
                return Ok(());
            }
            if state.queue.len() + state.outstanding >= MAX_UNSETTLED {
                return Err(format!(
                    "{} sent more than {MAX_UNSETTLED} unacknowledged messages",
                    self.config.endpoint
                ));
            }
            state.next_seq += 1;
            let held = Held {
                seq: state.next_seq,
                generation,
                id: uuid::Uuid::new_v4().to_string(),
                publish,
            };
            state.queue.push_back(held);
        }
        self.ready.notify_waiters();
        Ok(())
    }

    /// Take the next message, waiting for one; counts it as outstanding.
    async fn next(&self) -> Held {
        loop {
            // Registered before looking at the queue, so a push in between is not missed.
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = lock(&self.state);
                if let Some(held) = state.queue.pop_front() {
                    state.outstanding += 1;
                    return held;
                }
            }
            notified.await;
        }
    }

    /// Connect, drive, reconnect with backoff; until stopped.
    async fn run(self: Arc<Self>, predecessor: Option<CancellationToken>) {
        if let Some(predecessor) = predecessor {
            // Two connections with one client id take over each other: let the old one go.
            tokio::select! {
                _ = predecessor.cancelled() => {}
                _ = self.hard_stop.cancelled() => {}
                _ = tokio::time::sleep(self.config.timeout) => {}
            }
        }
        let name = &self.config.name;
        let mut backoff = BACKOFF.0;
        let mut attempt = 0;
        while !self.stopping.is_cancelled() {
            attempt += 1;
            self.link.send_replace(Link::Connecting(attempt));
            let (client, mut eventloop) = self
                .config
                .connection(&self.client_id, self.config.clean_session);
            let end = tokio::select! {
                _ = self.hard_stop.cancelled() => End::Stopped,
                end = self.drive(&client, &mut eventloop, attempt) => end,
            };
            {
                let mut state = lock(&self.state);
                state.client = None;
                // Unacknowledged: the broker sends them again on the next connection.
                state.queue.clear();
            }
            match end {
                End::Stopped => break,
                End::Refused(kind, reason) => {
                    tracing::error!(pubsub = %name, client_id = %self.client_id, error = %reason, "mqtt subscription refused; ending the subscriptions");
                    self.link.send_replace(Link::Closed(kind, reason));
                    self.stop();
                    break;
                }
                End::Lost {
                    up_since,
                    kind,
                    reason,
                } => {
                    if self.stopping.is_cancelled() {
                        break;
                    }
                    if stayed_up(up_since) {
                        backoff = BACKOFF.0;
                    }
                    tracing::warn!(pubsub = %name, client_id = %self.client_id, error = %reason, retry_in_ms = backoff.as_millis() as u64, "mqtt session connection lost");
                    self.link.send_replace(Link::Down(attempt, kind, reason));
                    tokio::select! {
                        _ = self.stopping.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.kick.notified() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        }
        if !matches!(*self.link.borrow(), Link::Closed(..)) {
            self.link.send_replace(Link::Closed(
                ErrorKind::Unavailable,
                "the session ended".into(),
            ));
        }
        tracing::debug!(pubsub = %name, client_id = %self.client_id, "mqtt session disconnected");
        self.done.cancel();
    }

    /// Poll one connection: subscribe on every CONNACK, queue messages, until it ends.
    async fn drive(&self, client: &AsyncClient, eventloop: &mut EventLoop, attempt: u64) -> End {
        let mut up = None;
        loop {
            let event = match eventloop.poll().await {
                Ok(event) => event,
                Err(err) => {
                    let (kind, reason) = self.config.describe(&err);
                    return End::Lost {
                        up_since: up,
                        kind,
                        reason,
                    };
                }
            };
            match event {
                Event::Incoming(Packet::ConnAck(ack)) => {
                    {
                        let mut state = lock(&self.state);
                        state.generation = attempt;
                        state.queue.clear();
                        state.client = Some(client.clone());
                    }
                    // Again on every connection: harmless when the broker kept the
                    // subscription, and needed when it did not (a broker without
                    // persistence, an expired session).
                    if client
                        .try_subscribe(self.filter.clone(), QoS::AtLeastOnce)
                        .is_err()
                    {
                        return End::Lost {
                            up_since: up,
                            kind: ErrorKind::Unavailable,
                            reason: "the connection closed before SUBSCRIBE".into(),
                        };
                    }
                    tracing::debug!(pubsub = %self.config.name, client_id = %self.client_id, session_present = ack.session_present, "mqtt session connected");
                }
                Event::Incoming(Packet::SubAck(ack)) => match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(QoS::AtLeastOnce | QoS::ExactlyOnce)) => {
                        up = Some(Instant::now());
                        tracing::info!(pubsub = %self.config.name, client_id = %self.client_id, filter = %self.filter, "mqtt session subscribed");
                        self.link.send_replace(Link::Up(attempt));
                    }
                    Some(SubscribeReasonCode::Success(QoS::AtMostOnce)) => {
                        return End::Refused(
                            ErrorKind::FailedPrecondition,
                            format!(
                                "{} granted {:?} only QoS 0 (at most once); pubsub.mqtt3 \
                                 needs QoS 1 (check the broker's max_qos)",
                                self.config.endpoint, self.filter
                            ),
                        );
                    }
                    _ => {
                        return End::Refused(
                            ErrorKind::PermissionDenied,
                            format!(
                                "{} refused the subscription {:?} (not authorised, or no \
                                 shared subscriptions)",
                                self.config.endpoint, self.filter
                            ),
                        );
                    }
                },
                Event::Incoming(Packet::Publish(publish)) => {
                    let Err(reason) = self.receive(publish, attempt) else {
                        continue;
                    };
                    return End::Lost {
                        up_since: up,
                        kind: ErrorKind::Unavailable,
                        reason,
                    };
                }
                Event::Outgoing(Outgoing::Disconnect) => return End::Stopped,
                _ => {}
            }
        }
    }
}

/// One local subscriber of a session, counted until dropped.
#[derive(Debug)]
struct Joined(Arc<Session>);

impl Drop for Joined {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// Feed one local subscription until its receiver is dropped or the session stops.
async fn pull(joined: Joined, tx: mpsc::Sender<Delivery>, in_flight: Arc<Semaphore>) {
    let session = &joined.0;
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            _ = session.stopping.cancelled() => return,
            permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        // `next` takes a message only in the poll that returns it, so losing this race
        // never loses a message.
        let held = tokio::select! {
            _ = tx.closed() => return,
            _ = session.stopping.cancelled() => return,
            held = session.next() => held,
        };
        let message = Message {
            id: held.id.clone(),
            topic: session.topic.clone(),
            data: held.publish.payload.clone(),
            // MQTT 3.1.1 carries neither a content type nor metadata.
            ..Message::default()
        };
        let acker = Mqtt3Acker {
            session: Arc::clone(session),
            held: Some(held),
            _permit: permit,
        };
        // On failure the delivery comes back in the error and is dropped: its acker gives
        // the message back.
        let delivery = Delivery {
            message,
            acker: Box::new(acker),
        };
        if tx.send(delivery).await.is_err() {
            return;
        }
    }
}

/// Settles one delivery; holds a permit of its subscription's in-flight budget.
struct Mqtt3Acker {
    session: Arc<Session>,
    /// `None` once settled.
    held: Option<Held>,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for Mqtt3Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mqtt3Acker")
            .field("message_id", &self.held.as_ref().map(|h| h.id.as_str()))
            .field("client_id", &self.session.client_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Mqtt3Acker {
    // At least once: a delivery dropped unsettled goes to the next local subscriber, or
    // back to the broker when the session disconnects.
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            self.session.give_back(held);
        }
    }
}

#[async_trait]
impl Acknowledger for Mqtt3Acker {
    /// PUBACK on the connection the message came on. When that connection was lost, the
    /// broker sends the message again and the ack fails with UNAVAILABLE.
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let session = &self.session;
        let client = {
            let state = lock(&session.state);
            if state.generation == held.generation {
                state.client.clone()
            } else {
                None
            }
        };
        let timeout = session.config.timeout;
        let result = match client {
            Some(client) => match tokio::time::timeout(timeout, client.ack(&held.publish)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) | Err(_) => Err(Error::unavailable(format!(
                    "{}: the PUBACK could not be sent; the broker will deliver the message again",
                    session.config.endpoint
                ))),
            },
            None => Err(Error::unavailable(format!(
                "{}: the connection the message came on was lost; the broker will deliver it \
                 again",
                session.config.endpoint
            ))),
        };
        // After the PUBACK is queued, so a DISCONNECT for an idle session follows it.
        session.settled();
        result
    }

    /// MQTT has no nack: the message goes back to this session's local queue.
    async fn nack(self: Box<Self>) -> Result<()> {
        // Drop gives the message back.
        Ok(())
    }
}
