//! The publishing connection: clean session, its own client id, QoS 1. rumqttc's `publish`
//! only queues a packet, so each publish leaves a waiter: the event loop gives the waiters
//! their packet ids in request order as it writes the packets
//! (`Outgoing::Publish(pkid)`), and the broker's PUBACK for that id settles the waiter. A
//! lost connection fails every waiter with UNAVAILABLE (the message may still have reached
//! the broker: at least once); while disconnected, publishing fails at once.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use plinth_core::{Error, ErrorKind, Result};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{BACKOFF, Config, Link, REQUEST_CAPACITY, stayed_up, wait_up};
use crate::util::{Background, lock};

/// The filter `ping` unsubscribes from: nobody subscribes to it, so the round trip changes
/// nothing.
const PING_FILTER: &str = "plinth/ping";

/// One call waiting for the broker's answer.
#[derive(Debug)]
struct Waiter {
    id: u64,
    tx: oneshot::Sender<Result<()>>,
}

/// Waiters for one kind of packet: those whose packet is not written yet (in request
/// order), and those waiting for the answer to a packet id.
#[derive(Debug, Default)]
struct Waiters {
    unassigned: VecDeque<Waiter>,
    /// A publish whose packet id was still in flight (rumqttc's "collision"): it is written,
    /// with that id, once the earlier one is acknowledged.
    collided: Option<Waiter>,
    by_pkid: HashMap<u16, Waiter>,
}

impl Waiters {
    fn assign(&mut self, pkid: u16) {
        if let Some(waiter) = self.collided.take().or_else(|| self.unassigned.pop_front()) {
            self.by_pkid.insert(pkid, waiter);
        }
    }

    fn collide(&mut self) {
        self.collided = self.unassigned.pop_front();
    }

    fn settle(&mut self, pkid: u16) {
        if let Some(waiter) = self.by_pkid.remove(&pkid) {
            let _ = waiter.tx.send(Ok(()));
        }
    }

    /// Forget the waiter of a request the event loop did not take.
    fn withdraw(&mut self, id: u64) {
        if let Some(at) = self.unassigned.iter().rposition(|w| w.id == id) {
            self.unassigned.remove(at);
        }
    }

    fn fail_all(&mut self, reason: &str) {
        let all = self
            .unassigned
            .drain(..)
            .chain(self.collided.take())
            .chain(self.by_pkid.drain().map(|(_, w)| w));
        for waiter in all {
            let _ = waiter.tx.send(Err(Error::unavailable(format!(
                "{reason}, before the broker answered (a publish may still have reached it)"
            ))));
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// The client of the connected event loop; `None` while disconnected.
    client: Option<AsyncClient>,
    publishes: Waiters,
    pings: Waiters,
    next_id: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    link: watch::Sender<Link>,
    kick: Notify,
}

/// The publishing connection of one component.
pub(super) struct Publisher {
    config: Arc<Config>,
    /// Fixed on `start` (it names the host, which is read then, not in the factory).
    client_id: OnceLock<String>,
    /// The random part of the client id.
    random: String,
    shared: Arc<Shared>,
    /// Requests waiting for an answer, at most the event loop's queue capacity.
    slots: Semaphore,
    task: Background,
    cancel: CancellationToken,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("client_id", &self.client_id)
            .field("link", &*self.shared.link.borrow())
            .finish_non_exhaustive()
    }
}

/// What a request to the event loop waits for.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Publish,
    Ping,
}

impl Publisher {
    pub(super) fn new(config: Arc<Config>) -> Self {
        let (link, _) = watch::channel(Link::Connecting(0));
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self {
            config,
            client_id: OnceLock::new(),
            random: random.chars().take(12).collect(),
            shared: Arc::new(Shared {
                state: Mutex::default(),
                link,
                kick: Notify::new(),
            }),
            slots: Semaphore::new(REQUEST_CAPACITY),
            task: Background::default(),
            cancel: CancellationToken::new(),
        }
    }

    /// Start the connection task, once.
    pub(super) fn start(&self) {
        let client_id = self
            .client_id
            .get_or_init(|| self.config.publisher_id(&self.random));
        let (config, client_id, shared, cancel) = (
            Arc::clone(&self.config),
            client_id.clone(),
            Arc::clone(&self.shared),
            self.cancel.clone(),
        );
        self.task
            .start_once(move || run(config, client_id, shared, cancel));
    }

    /// Stop the connection task; pending publishes fail.
    pub(super) fn stop(&self) {
        self.cancel.cancel();
        self.task.stop();
        let mut state = lock(&self.shared.state);
        state.client = None;
        state.publishes.fail_all("the component was closed");
        state.pings.fail_all("the component was closed");
        drop(state);
        self.shared
            .link
            .send_replace(Link::Closed(ErrorKind::Unavailable, "closed".into()));
    }

    /// The connection's state, for tests that wait for it to change.
    #[cfg(test)]
    pub(super) fn link(&self) -> watch::Receiver<Link> {
        self.shared.link.subscribe()
    }

    /// Wait for the connection (see [`wait_up`]).
    pub(super) async fn wait_up(&self) -> Result<()> {
        wait_up(
            &self.shared.link,
            &self.shared.kick,
            self.config.timeout,
            &format!("pubsub {:?}", self.config.name),
        )
        .await
    }

    /// Publish with QoS 1 and wait for the PUBACK.
    pub(super) async fn publish(&self, topic: &str, payload: Bytes, retain: bool) -> Result<()> {
        self.request(Kind::Publish, |client| {
            client.try_publish(topic, QoS::AtLeastOnce, retain, Vec::from(payload))
        })
        .await
    }

    /// UNSUBSCRIBE from a filter nobody uses and wait for the UNSUBACK.
    pub(super) async fn ping(&self) -> Result<()> {
        self.request(Kind::Ping, |client| client.try_unsubscribe(PING_FILTER))
            .await
    }

    /// Queue one request with its waiter, then wait for the broker's answer; all within
    /// the timeout. The waiter is queued and the request handed to the event loop under one
    /// lock, so waiters are in request order; the request slots keep the event loop's queue
    /// from filling up, so handing over does not wait.
    async fn request<F>(&self, kind: Kind, send: F) -> Result<()>
    where
        F: FnOnce(&AsyncClient) -> Result<(), rumqttc::ClientError>,
    {
        let timeout = self.config.timeout;
        let endpoint = &self.config.endpoint;
        let what = match kind {
            Kind::Publish => "PUBACK",
            Kind::Ping => "UNSUBACK",
        };
        let work = async {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| Error::unavailable(format!("{endpoint}: closed")))?;
            let rx = {
                let mut state = lock(&self.shared.state);
                let Some(client) = state.client.clone() else {
                    return Err(self.not_connected());
                };
                let (tx, rx) = oneshot::channel();
                state.next_id += 1;
                let id = state.next_id;
                waiters(&mut state, kind)
                    .unassigned
                    .push_back(Waiter { id, tx });
                if send(&client).is_err() {
                    waiters(&mut state, kind).withdraw(id);
                    return Err(Error::unavailable(format!(
                        "{endpoint}: the connection is closing or too busy to take the request"
                    )));
                }
                rx
            };
            match rx.await {
                Ok(result) => result,
                Err(_) => Err(Error::unavailable(format!(
                    "{endpoint}: the connection closed before the {what}"
                ))),
            }
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| {
            Error::unavailable(format!(
                "{endpoint}: no {what} within {timeout:?}; the message may or may not have \
                 reached the broker"
            ))
        })?
    }

    fn not_connected(&self) -> Error {
        let reason = match &*self.shared.link.borrow() {
            Link::Down(_, _, reason) | Link::Closed(_, reason) => reason.clone(),
            _ => format!("{}: not connected", self.config.endpoint),
        };
        Error::unavailable(format!("pubsub {:?}: {reason}", self.config.name))
    }
}

fn waiters(state: &mut State, kind: Kind) -> &mut Waiters {
    match kind {
        Kind::Publish => &mut state.publishes,
        Kind::Ping => &mut state.pings,
    }
}

/// Connect, drive the event loop until the connection ends, fail what waited on it, back
/// off, again; until cancelled.
async fn run(
    config: Arc<Config>,
    client_id: String,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut backoff = BACKOFF.0;
    let mut attempt = 0;
    loop {
        attempt += 1;
        shared.link.send_replace(Link::Connecting(attempt));
        let (client, mut eventloop) = config.connection(&client_id, true);
        let ended = tokio::select! {
            _ = cancel.cancelled() => None,
            ended = drive(&config, &shared, &client, &mut eventloop, attempt) => Some(ended),
        };
        {
            let mut state = lock(&shared.state);
            state.client = None;
            let reason = match &ended {
                Some((_, _, reason)) => reason.clone(),
                None => "the component was closed".into(),
            };
            state.publishes.fail_all(&reason);
            state.pings.fail_all(&reason);
        }
        let Some((up_since, kind, reason)) = ended else {
            return;
        };
        if stayed_up(up_since) {
            backoff = BACKOFF.0;
        }
        tracing::warn!(pubsub = %config.name, client_id = %client_id, error = %reason, retry_in_ms = backoff.as_millis() as u64, "mqtt publishing connection lost");
        shared.link.send_replace(Link::Down(attempt, kind, reason));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.kick.notified() => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Poll one connection until it fails; returns since when it was up, if it was, and why it
/// ended.
async fn drive(
    config: &Config,
    shared: &Shared,
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    attempt: u64,
) -> (Option<Instant>, ErrorKind, String) {
    let mut up = None;
    loop {
        let event = match eventloop.poll().await {
            Ok(event) => event,
            Err(err) => {
                let (kind, reason) = config.describe(&err);
                return (up, kind, reason);
            }
        };
        let mut state = lock(&shared.state);
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                up = Some(Instant::now());
                state.client = Some(client.clone());
                drop(state);
                tracing::debug!(pubsub = %config.name, "mqtt publishing connection up");
                shared.link.send_replace(Link::Up(attempt));
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => state.publishes.assign(pkid),
            Event::Outgoing(Outgoing::AwaitAck(_)) => state.publishes.collide(),
            Event::Incoming(Packet::PubAck(ack)) => state.publishes.settle(ack.pkid),
            Event::Outgoing(Outgoing::Unsubscribe(pkid)) => state.pings.assign(pkid),
            Event::Incoming(Packet::UnsubAck(ack)) => state.pings.settle(ack.pkid),
            _ => {}
        }
    }
}
