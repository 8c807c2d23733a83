//! A test app: the Layotto `AppCallback` server Plinth delivers events to.
//!
//! It lists a configurable set of subscriptions, answers each event with a scriptable
//! handler, and records every delivery (with its attempt number per topic and id) on a
//! channel, so tests await deliveries with bounded timeouts instead of sleeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use plinth_proto::runtime::v1 as pb;
use plinth_proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use plinth_proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::TcpListenerStream;

/// The pub/sub component every test uses.
pub(crate) const PUBSUB: &str = "pubsub";

/// What the app answers to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    Success,
    Retry,
    Drop,
    /// A gRPC error instead of a response (e.g. UNIMPLEMENTED: the app has no handler).
    Fail(tonic::Code),
}

/// One call of `OnTopicEvent` as the app saw it.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) event: pb::TopicEventRequest,
    /// 1 for the first delivery of this (topic, id), 2 for the next, ...
    pub(crate) attempt: u32,
    /// When the call arrived.
    pub(crate) at: Instant,
}

/// Decides the answer to a delivery; the future may wait (e.g. on a test-controlled gate).
pub(crate) type Handler = Arc<dyn Fn(&Delivery) -> BoxFuture<'static, Reply> + Send + Sync>;

/// A handler answering synchronously.
pub(crate) fn reply(f: impl Fn(&Delivery) -> Reply + Send + Sync + 'static) -> Handler {
    Arc::new(move |d| {
        let r = f(d);
        Box::pin(async move { r })
    })
}

/// A handler answering `r` to everything.
pub(crate) fn always(r: Reply) -> Handler {
    reply(move |_| r)
}

struct State {
    /// `None`: ListTopicSubscriptions answers UNIMPLEMENTED.
    subscriptions: Option<Vec<pb::TopicSubscription>>,
    handler: Mutex<Handler>,
    attempts: Mutex<HashMap<(String, String), u32>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    list_calls: AtomicUsize,
    /// ListTopicSubscriptions waits until this turns true.
    list_open: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<Delivery>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a call in flight until dropped.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl AppCallback for Service {
    async fn list_topic_subscriptions(
        &self,
        _request: tonic::Request<()>,
    ) -> Result<tonic::Response<pb::ListTopicSubscriptionsResponse>, tonic::Status> {
        self.0.list_calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.0.list_open.clone().wait_for(|open| *open).await;
        match &self.0.subscriptions {
            Some(subscriptions) => Ok(tonic::Response::new(pb::ListTopicSubscriptionsResponse {
                subscriptions: subscriptions.clone(),
            })),
            None => Err(tonic::Status::unimplemented(
                "this app declares no subscriptions",
            )),
        }
    }

    async fn on_topic_event(
        &self,
        request: tonic::Request<pb::TopicEventRequest>,
    ) -> Result<tonic::Response<pb::TopicEventResponse>, tonic::Status> {
        let state = &self.0;
        let _in_flight = InFlight::enter(state);
        let event = request.into_inner();
        let attempt = {
            let mut attempts = lock(&state.attempts);
            let n = attempts
                .entry((event.topic.clone(), event.id.clone()))
                .or_default();
            *n += 1;
            *n
        };
        let delivery = Delivery {
            event,
            attempt,
            at: Instant::now(),
        };
        let handler = lock(&state.handler).clone();
        let answer = handler(&delivery);
        // Recorded before answering, so a test sees calls the handler is still holding.
        let _ = state.tx.send(delivery);
        let status = match answer.await {
            Reply::Success => TopicEventResponseStatus::Success,
            Reply::Retry => TopicEventResponseStatus::Retry,
            Reply::Drop => TopicEventResponseStatus::Drop,
            Reply::Fail(code) => {
                return Err(tonic::Status::new(code, "the test app failed this event"));
            }
        };
        Ok(tonic::Response::new(pb::TopicEventResponse {
            status: status as i32,
        }))
    }
}

/// Builds a [`TestApp`].
pub(crate) struct AppBuilder {
    subscriptions: Option<Vec<pb::TopicSubscription>>,
    handler: Handler,
}

impl AppBuilder {
    /// List a subscription to `topic` on [`PUBSUB`] with delivery metadata.
    pub(crate) fn subscribe(mut self, topic: &str, metadata: &[(&str, &str)]) -> Self {
        self.subscriptions
            .get_or_insert_with(Vec::new)
            .push(pb::TopicSubscription {
                pubsub_name: PUBSUB.into(),
                topic: topic.into(),
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            });
        self
    }

    /// Answer ListTopicSubscriptions with UNIMPLEMENTED.
    pub(crate) fn without_list(mut self) -> Self {
        self.subscriptions = None;
        self
    }

    /// How to answer events (SUCCESS to everything by default).
    pub(crate) fn handler(mut self, handler: Handler) -> Self {
        self.handler = handler;
        self
    }

    /// Serve on an ephemeral port.
    pub(crate) async fn start(self) -> TestApp {
        self.start_on(0).await
    }

    /// Serve on `port` of 127.0.0.1.
    pub(crate) async fn start_on(self, port: u16) -> TestApp {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the test app");
        let port = listener.local_addr().expect("test app address").port();
        let (tx, deliveries) = mpsc::unbounded_channel();
        let (list_gate, list_open) = watch::channel(false);
        let state = Arc::new(State {
            subscriptions: self.subscriptions,
            handler: Mutex::new(self.handler),
            attempts: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            list_calls: AtomicUsize::new(0),
            list_open,
            tx,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(AppCallbackServer::new(Service(state.clone())))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(server);
        TestApp {
            port,
            deliveries,
            state,
            list_gate,
            _stop: stop,
        }
    }
}

/// A running test app; stops serving when dropped.
pub(crate) struct TestApp {
    pub(crate) port: u16,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    state: Arc<State>,
    list_gate: watch::Sender<bool>,
    _stop: oneshot::Sender<()>,
}

impl TestApp {
    /// An app with no subscriptions that answers SUCCESS.
    pub(crate) fn builder() -> AppBuilder {
        AppBuilder {
            subscriptions: Some(Vec::new()),
            handler: always(Reply::Success),
        }
    }

    /// Let ListTopicSubscriptions answer (it waits until then). Plinth's log lines before
    /// `plinth started` are consumed by the harness, so a test that waits for `subscribed`
    /// opens this only after Plinth has started.
    pub(crate) fn answer_list(&self) {
        self.list_gate.send_replace(true);
    }

    /// Change how the app answers from now on.
    pub(crate) fn set_handler(&self, handler: Handler) {
        *lock(&self.state.handler) = handler;
    }

    /// The next delivery, or panic after `timeout`.
    pub(crate) async fn next(&mut self, timeout: Duration) -> Delivery {
        match tokio::time::timeout(timeout, self.deliveries.recv()).await {
            Ok(Some(d)) => d,
            Ok(None) => panic!("the test app stopped"),
            Err(_) => panic!("no delivery within {timeout:?}"),
        }
    }

    /// The next `n` deliveries, or panic (naming how many arrived) after `timeout` overall.
    pub(crate) async fn next_n(&mut self, n: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.deliveries.recv()).await {
                Ok(Some(d)) => out.push(d),
                Ok(None) => panic!("the test app stopped"),
                Err(_) => panic!(
                    "{} of {n} deliveries within {timeout:?}: {:?}",
                    out.len(),
                    summary(&out)
                ),
            }
        }
        out
    }

    /// The next delivery, if one arrives within `window`.
    pub(crate) async fn next_within(&mut self, window: Duration) -> Option<Delivery> {
        tokio::time::timeout(window, self.deliveries.recv())
            .await
            .ok()
            .flatten()
    }

    /// A delivery already received and not yet taken, if any.
    pub(crate) fn try_next(&mut self) -> Option<Delivery> {
        self.deliveries.try_recv().ok()
    }

    /// The most `OnTopicEvent` calls the app has had in progress at once.
    pub(crate) fn max_concurrent(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// How many times Plinth asked for the subscriptions.
    pub(crate) fn list_calls(&self) -> usize {
        self.state.list_calls.load(Ordering::SeqCst)
    }
}

/// (topic, data, attempt) of each delivery, for failure messages.
pub(crate) fn summary(deliveries: &[Delivery]) -> Vec<(String, String, u32)> {
    deliveries
        .iter()
        .map(|d| {
            (
                d.event.topic.clone(),
                String::from_utf8_lossy(&d.event.data).into_owned(),
                d.attempt,
            )
        })
        .collect()
}
