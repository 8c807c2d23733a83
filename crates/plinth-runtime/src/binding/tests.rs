//! Input-binding delivery against test components: an input binding fed by the test (it
//! redelivers nacked events, like a queue), and an output binding that records calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use plinth_core::component::binding::{
    Acknowledger, Binding, BindingRequest, BindingResponse, InputBinding, InputDelivery,
    InputEvent, InputStream, OutputBinding, ReadRequest,
};
use plinth_core::component::state::{Consistency, SetRequest};
use plinth_core::component::{Component, Instance};
use plinth_core::registry::Registry;
use plinth_core::{ComponentSpec, Error, ErrorKind, Metadata, Result};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::timeout;

use super::*;
use crate::components::ComponentHost;
use crate::metrics::Metrics;

const TEST_INPUT: &str = "bindings.test-input";
const RECORDER: &str = "bindings.recorder";

/// Events a test pushes, shared with every instance built with the same `feed` metadata.
#[derive(Debug)]
struct Feed {
    queue: Mutex<VecDeque<InputEvent>>,
    ready: Notify,
    settled: mpsc::UnboundedSender<(Bytes, &'static str)>,
    init_failures: AtomicUsize,
}

impl Feed {
    fn push(&self, data: &'static str) {
        let mut metadata = Metadata::new();
        metadata.insert("source".into(), "test".into());
        self.queue.lock().unwrap().push_back(InputEvent {
            data: Bytes::from_static(data.as_bytes()),
            metadata,
        });
        self.ready.notify_waiters();
    }

    fn give_back(&self, event: InputEvent) {
        self.queue.lock().unwrap().push_front(event);
        self.ready.notify_waiters();
    }

    async fn next(&self) -> InputEvent {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(event) = self.queue.lock().unwrap().pop_front() {
                return event;
            }
            notified.await;
        }
    }
}

/// A recorder's calls: (binding name, request).
type Calls = mpsc::UnboundedSender<(String, BindingRequest)>;

static FEEDS: LazyLock<Mutex<HashMap<String, Arc<Feed>>>> = LazyLock::new(Default::default);
static CALLS: LazyLock<Mutex<HashMap<String, Calls>>> = LazyLock::new(Default::default);

/// A new feed named `name`, and the receiver of its settlements (data, `ack`/`nack`).
fn feed(
    name: &str,
    init_failures: usize,
) -> (Arc<Feed>, mpsc::UnboundedReceiver<(Bytes, &'static str)>) {
    let (settled, rx) = mpsc::unbounded_channel();
    let feed = Arc::new(Feed {
        queue: Mutex::default(),
        ready: Notify::new(),
        settled,
        init_failures: AtomicUsize::new(init_failures),
    });
    FEEDS.lock().unwrap().insert(name.into(), feed.clone());
    (feed, rx)
}

/// Calls to recorders built with `log` metadata `name`: (binding name, request).
fn calls(name: &str) -> mpsc::UnboundedReceiver<(String, BindingRequest)> {
    let (tx, rx) = mpsc::unbounded_channel();
    CALLS.lock().unwrap().insert(name.into(), tx);
    rx
}

#[derive(Debug)]
struct TestInput {
    feed: Arc<Feed>,
    closed: watch::Sender<bool>,
}

#[derive(Debug)]
struct TestAcker {
    feed: Arc<Feed>,
    event: Option<InputEvent>,
}

impl Drop for TestAcker {
    fn drop(&mut self) {
        if let Some(event) = self.event.take() {
            self.feed.give_back(event);
        }
    }
}

#[async_trait]
impl Acknowledger for TestAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        if let Some(event) = self.event.take() {
            let _ = self.feed.settled.send((event.data, "ack"));
        }
        Ok(())
    }

    async fn nack(mut self: Box<Self>) -> Result<()> {
        if let Some(event) = self.event.take() {
            let _ = self.feed.settled.send((event.data.clone(), "nack"));
            self.feed.give_back(event);
        }
        Ok(())
    }
}

#[async_trait]
impl Component for TestInput {
    async fn init(&self) -> Result<()> {
        let left = self.feed.init_failures.load(Ordering::SeqCst);
        if left > 0 {
            self.feed.init_failures.store(left - 1, Ordering::SeqCst);
            return Err(Error::unavailable("the test system is down"));
        }
        Ok(())
    }

    async fn close(&self) {
        self.closed.send_replace(true);
    }
}

#[async_trait]
impl InputBinding for TestInput {
    async fn read(&self, req: ReadRequest) -> Result<InputStream> {
        let (tx, receiver) = mpsc::channel(req.max_in_flight.max(1));
        let (feed, mut closed) = (self.feed.clone(), self.closed.subscribe());
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = closed.wait_for(|c| *c) => return,
                    _ = tx.closed() => return,
                    event = feed.next() => event,
                };
                let delivery = InputDelivery {
                    event: event.clone(),
                    acker: Box::new(TestAcker {
                        feed: feed.clone(),
                        event: Some(event),
                    }),
                };
                if tx.send(delivery).await.is_err() {
                    return;
                }
            }
        });
        Ok(InputStream { receiver })
    }
}

fn test_input(spec: &ComponentSpec) -> Result<Instance> {
    let feed = FEEDS
        .lock()
        .unwrap()
        .get(spec.require("feed")?)
        .cloned()
        .ok_or_else(|| spec.invalid("metadata.feed", "no such feed"))?;
    Ok(Instance::Binding(Binding::input_only(Arc::new(
        TestInput {
            feed,
            closed: watch::channel(false).0,
        },
    ))))
}

/// Records every call; metadata `fail` makes calls fail (`invalid`), `down` makes init fail.
#[derive(Debug)]
struct Recorder {
    name: String,
    calls: Calls,
    fail: bool,
    down: bool,
}

#[async_trait]
impl Component for Recorder {
    async fn init(&self) -> Result<()> {
        if self.down {
            return Err(Error::unavailable("the recorder is down"));
        }
        Ok(())
    }
}

#[async_trait]
impl OutputBinding for Recorder {
    fn operations(&self) -> Vec<String> {
        vec!["create".into()]
    }

    async fn invoke(&self, req: BindingRequest) -> Result<BindingResponse> {
        let _ = self.calls.send((self.name.clone(), req));
        if self.fail {
            return Err(Error::invalid_argument("the recorder refuses"));
        }
        Ok(BindingResponse::default())
    }
}

fn recorder(spec: &ComponentSpec) -> Result<Instance> {
    let calls = CALLS
        .lock()
        .unwrap()
        .get(spec.require("log")?)
        .cloned()
        .ok_or_else(|| spec.invalid("metadata.log", "no such log"))?;
    Ok(Instance::Binding(Binding::output_only(Arc::new(
        Recorder {
            name: spec.name.clone(),
            calls,
            fail: spec.get("fail").is_some(),
            down: spec.get("down").is_some(),
        },
    ))))
}

/// Answers each event with the next scripted answer (an empty reply when none is left), and
/// passes the events on.
#[derive(Debug)]
struct Script {
    events: mpsc::UnboundedSender<BindingEvent>,
    answers: Mutex<VecDeque<Result<BindingReply>>>,
}

#[async_trait]
impl BindingEventHandler for Script {
    async fn on_binding_event(&self, event: BindingEvent) -> Result<BindingReply> {
        let _ = self.events.send(event);
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(BindingReply::default()))
    }
}

fn script(
    answers: Vec<Result<BindingReply>>,
) -> (Arc<Script>, mpsc::UnboundedReceiver<BindingEvent>) {
    let (events, rx) = mpsc::unbounded_channel();
    let script = Arc::new(Script {
        events,
        answers: Mutex::new(answers.into()),
    });
    (script, rx)
}

struct Setup {
    host: Arc<ComponentHost>,
    api: BindingApi,
    state: StateApi,
}

async fn setup(specs: Vec<ComponentSpec>) -> Setup {
    let mut registry = Registry::new();
    plinth_components::register_all(&mut registry);
    registry
        .register(TEST_INPUT, test_input)
        .register(RECORDER, recorder)
        .register("bindings.paused-cron", paused_cron);
    let metrics = Arc::new(Metrics::new());
    let host = ComponentHost::new(registry, BTreeMap::new(), metrics.clone());
    host.add_all(specs).expect("valid components");
    host.wait_initialised().await;
    let state = StateApi::new(host.clone(), "app");
    let api = BindingApi::new(host.clone(), state.clone(), metrics, None);
    Setup { host, api, state }
}

fn input(name: &str, feed: &str) -> ComponentSpec {
    ComponentSpec::new(name, TEST_INPUT).with_metadata("feed", feed)
}

fn output(name: &str, log: &str) -> ComponentSpec {
    ComponentSpec::new(name, RECORDER).with_metadata("log", log)
}

fn store() -> ComponentSpec {
    ComponentSpec::new("store", "state.in-memory")
}

/// Paused time: an hour passes at once when every task waits.
const WAIT: Duration = Duration::from_secs(3600);

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    timeout(WAIT, rx.recv())
        .await
        .expect("within the wait")
        .expect("open")
}

/// Nothing arrives while (paused) time runs on; the sender may be gone.
async fn nothing<T: std::fmt::Debug>(rx: &mut mpsc::UnboundedReceiver<T>) {
    if let Ok(Some(got)) = timeout(WAIT, rx.recv()).await {
        panic!("expected nothing, got {got:?}");
    }
}

fn set(key: &str, value: &'static str) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: Bytes::from_static(value.as_bytes()),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn events_arrive_and_replies_save_state_and_invoke_bindings() {
    let (feed, mut settled) = feed("arrive", 0);
    let mut log = calls("arrive");
    let s = setup(vec![
        input("queue", "arrive"),
        output("out1", "arrive"),
        output("out2", "arrive"),
        store(),
    ])
    .await;
    let reply = BindingReply {
        store_name: "store".into(),
        states: vec![set("k1", "v1"), set("k2", "v2")],
        to: vec!["out1".into(), "out2".into()],
        data: Bytes::from_static(b"forwarded"),
        concurrency: Concurrency::Sequential,
    };
    let (handler, mut events) = script(vec![Ok(reply)]);
    let _handle = s.api.deliver_input("queue", handler).expect("deliver");
    feed.push("hello");

    let event = recv(&mut events).await;
    assert_eq!(event.name, "queue");
    assert_eq!(event.data, "hello");
    assert_eq!(
        event.metadata.get("source").map(String::as_str),
        Some("test")
    );
    for expected in ["out1", "out2"] {
        let (name, req) = recv(&mut log).await;
        assert_eq!(name, expected);
        assert_eq!(req.operation, "create");
        assert_eq!(req.data, "forwarded");
    }
    assert_eq!(
        recv(&mut settled).await,
        (Bytes::from_static(b"hello"), "ack")
    );
    // Saved through the state building block: read back by the app's key, stored under the
    // app's prefix.
    let saved = s
        .state
        .get("store", "k1", Metadata::new(), Consistency::default())
        .await
        .expect("get")
        .expect("saved");
    assert_eq!(saved.data, "v1");
    let raw = s.host.state("store").expect("store");
    let prefixed = raw
        .component
        .get(plinth_core::component::state::GetRequest {
            key: "app||k2".into(),
            ..Default::default()
        })
        .await
        .expect("raw get");
    assert_eq!(prefixed.map(|r| r.data), Some(Bytes::from_static(b"v2")));
}

#[tokio::test(start_paused = true)]
async fn a_handler_error_nacks_and_the_component_redelivers() {
    let (feed, mut settled) = feed("nack", 0);
    let s = setup(vec![input("queue", "nack")]).await;
    let (handler, mut events) = script(vec![Err(Error::unavailable("app not ready"))]);
    let _handle = s.api.deliver_input("queue", handler).expect("deliver");
    feed.push("once");
    assert_eq!(recv(&mut events).await.data, "once");
    assert_eq!(
        recv(&mut settled).await,
        (Bytes::from_static(b"once"), "nack")
    );
    assert_eq!(recv(&mut events).await.data, "once", "redelivered");
    assert_eq!(
        recv(&mut settled).await,
        (Bytes::from_static(b"once"), "ack")
    );
}

/// Holds each event until the test lets it go.
#[derive(Debug)]
struct Gate {
    events: mpsc::UnboundedSender<BindingEvent>,
    open: tokio::sync::Semaphore,
}

#[async_trait]
impl BindingEventHandler for Gate {
    async fn on_binding_event(&self, event: BindingEvent) -> Result<BindingReply> {
        let _ = self.events.send(event);
        self.open
            .acquire()
            .await
            .map_err(|_| Error::internal("gate closed"))?
            .forget();
        Ok(BindingReply::default())
    }
}

#[tokio::test(start_paused = true)]
async fn events_of_one_binding_go_one_at_a_time_in_order() {
    let (feed, mut settled) = feed("order", 0);
    let s = setup(vec![input("queue", "order")]).await;
    let (events, mut rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        events,
        open: tokio::sync::Semaphore::new(0),
    });
    let _handle = s.api.deliver_input("queue", gate.clone()).expect("deliver");
    for data in ["a", "b", "c"] {
        feed.push(data);
    }
    for data in ["a", "b", "c"] {
        assert_eq!(recv(&mut rx).await.data, data);
        // The next event waits until this one is settled.
        nothing(&mut rx).await;
        gate.open.add_permits(1);
        assert_eq!(recv(&mut settled).await.0, data);
    }
}

#[tokio::test(start_paused = true)]
async fn a_reply_that_fails_for_now_nacks_one_that_never_can_acks() {
    let (feed, mut settled) = feed("reply", 0);
    let mut log = calls("reply");
    let s = setup(vec![
        input("queue", "reply"),
        output("refuses", "reply").with_metadata("fail", "yes"),
        output("down", "reply").with_metadata("down", "yes"),
        output("fine", "reply"),
        store(),
    ])
    .await;
    let to = |names: &[&str], concurrency| BindingReply {
        to: names.iter().map(|n| n.to_string()).collect(),
        concurrency,
        ..Default::default()
    };
    let (handler, mut events) = script(vec![
        // Sequential: the refusal stops the rest; it can never succeed, so ack.
        Ok(to(&["refuses", "fine"], Concurrency::Sequential)),
        // A DOWN binding may come back: nack, so the event is redelivered...
        Ok(to(&["down"], Concurrency::Sequential)),
        // ...and this time the reply asks for nothing.
        Ok(BindingReply::default()),
        // Parallel: every binding is invoked, the refusal still acks.
        Ok(to(&["refuses", "fine"], Concurrency::Parallel)),
        // No such store, or states without a store: ack.
        Ok(BindingReply {
            store_name: "nowhere".into(),
            states: vec![set("k", "v")],
            ..Default::default()
        }),
        Ok(BindingReply {
            states: vec![set("k", "v")],
            ..Default::default()
        }),
    ]);
    let _handle = s.api.deliver_input("queue", handler).expect("deliver");

    feed.push("sequential");
    recv(&mut events).await;
    assert_eq!(recv(&mut log).await.0, "refuses");
    assert_eq!(recv(&mut settled).await.1, "ack");

    feed.push("down");
    recv(&mut events).await;
    assert_eq!(recv(&mut settled).await.1, "nack");
    assert_eq!(recv(&mut events).await.data, "down", "redelivered");
    assert_eq!(recv(&mut settled).await.1, "ack");

    feed.push("parallel");
    recv(&mut events).await;
    let mut invoked = vec![recv(&mut log).await.0, recv(&mut log).await.0];
    invoked.sort();
    assert_eq!(invoked, ["fine", "refuses"]);
    assert_eq!(recv(&mut settled).await.1, "ack");

    for data in ["no store", "no store name"] {
        feed.push(data);
        recv(&mut events).await;
        assert_eq!(recv(&mut settled).await, (Bytes::from(data), "ack"));
    }
    nothing(&mut log).await;
}

#[tokio::test(start_paused = true)]
async fn delivery_waits_for_a_component_that_is_down_at_start() {
    let (feed, mut settled) = feed("down-at-start", 3);
    let s = setup(vec![input("queue", "down-at-start")]).await;
    assert_eq!(
        s.host.get("queue").map(|h| h.status().0),
        Some(crate::components::Status::Down)
    );
    let (handler, mut events) = script(vec![]);
    let _handle = s.api.deliver_input("queue", handler).expect("deliver");
    feed.push("late");
    assert_eq!(recv(&mut events).await.data, "late");
    assert_eq!(recv(&mut settled).await.1, "ack");
}

#[tokio::test(start_paused = true)]
async fn delivery_follows_a_component_replaced_at_run_time() {
    let (old_feed, _) = feed("replace-old", 0);
    let (new_feed, mut settled) = feed("replace-new", 0);
    let s = setup(vec![input("queue", "replace-old")]).await;
    let (handler, mut events) = script(vec![]);
    let _handle = s.api.deliver_input("queue", handler).expect("deliver");
    old_feed.push("before");
    assert_eq!(recv(&mut events).await.data, "before");

    s.host
        .replace(input("queue", "replace-new"))
        .await
        .expect("replace");
    new_feed.push("after");
    assert_eq!(recv(&mut events).await.data, "after");
    assert_eq!(
        recv(&mut settled).await,
        (Bytes::from_static(b"after"), "ack")
    );
    old_feed.push("stale");
    nothing(&mut events).await;
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_delivery() {
    let (feed, _settled) = feed("drop", 0);
    let s = setup(vec![input("queue", "drop")]).await;
    let (handler, mut events) = script(vec![]);
    let handle = s.api.deliver_input("queue", handler).expect("deliver");
    feed.push("one");
    assert_eq!(recv(&mut events).await.data, "one");
    handle.cancel();
    feed.push("two");
    // The delivery task ends and drops the handler, which closes the channel.
    assert!(timeout(WAIT, events.recv()).await.expect("ends").is_none());
}

#[tokio::test(start_paused = true)]
async fn only_configured_input_bindings_can_be_delivered() {
    let (_feed, _) = feed("only", 0);
    let _log = calls("only");
    let s = setup(vec![
        input("queue", "only"),
        output("out", "only"),
        store(),
        ComponentSpec::new("ticks", "bindings.cron")
            .with_metadata("schedule", "@every 1s")
            .with_metadata("direction", "output"),
        ComponentSpec::new("input-ticks", "bindings.cron")
            .with_metadata("schedule", "@every 1s")
            .with_metadata("direction", "input"),
    ])
    .await;
    // The output path respects direction too.
    let delete = |name: &str| {
        let name = name.to_owned();
        let api = s.api.clone();
        async move {
            api.invoke(
                &name,
                BindingRequest {
                    operation: "delete".into(),
                    ..Default::default()
                },
            )
            .await
        }
    };
    assert!(delete("ticks").await.is_ok());
    let err = delete("input-ticks").await.expect_err("input only");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("input binding only"), "{err}");
    let err = delete("queue").await.expect_err("no output side");
    assert!(err.to_string().contains("not an output binding"), "{err}");
    for (name, says) in [
        ("nothing", "not configured"),
        ("", "empty"),
        ("out", "not an input binding"),
        ("store", "not a binding"),
        ("ticks", "output binding only"),
    ] {
        let (handler, _) = script(vec![]);
        let err = s.api.deliver_input(name, handler).expect_err(name);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}");
        assert!(err.to_string().contains(says), "{name}: {err}");
    }
}

#[tokio::test(start_paused = true)]
async fn input_bindings_lists_names_types_routes_and_explicit_directions() {
    let _log = calls("list");
    let (_feed, _) = feed("list", 0);
    let s = setup(vec![
        ComponentSpec::new("ticks", "bindings.cron")
            .with_metadata("schedule", "@every 1s")
            .with_metadata("direction", "input")
            .with_metadata("route", "/onticks"),
        ComponentSpec::new("both", "bindings.cron")
            .with_metadata("schedule", "@daily")
            .with_metadata("direction", "input, output"),
        ComponentSpec::new("deleter", "bindings.cron")
            .with_metadata("schedule", "@daily")
            .with_metadata("direction", "output"),
        input("queue", "list"),
        output("out", "list"),
        store(),
    ])
    .await;
    let info = |name: &str, type_name: &str, route: &str, explicit| InputBindingInfo {
        name: name.into(),
        type_name: type_name.into(),
        route: route.into(),
        explicit,
    };
    assert_eq!(
        s.api.input_bindings(),
        [
            info("both", "bindings.cron", "both", true),
            info("queue", TEST_INPUT, "queue", false),
            info("ticks", "bindings.cron", "/onticks", true),
        ]
    );
}

/// `bindings.cron` against wall time that moves with tokio's paused clock.
fn paused_cron(spec: &ComponentSpec) -> Result<Instance> {
    use chrono::TimeZone;
    use plinth_components::bindings::cron::{Clock, CronBinding, CronConfig};

    #[derive(Debug)]
    struct PausedClock(chrono::DateTime<chrono::Utc>, tokio::time::Instant);
    impl Clock for PausedClock {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            self.0 + chrono::TimeDelta::from_std(self.1.elapsed()).unwrap_or_default()
        }
    }
    let base = chrono::Utc
        .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
        .single()
        .ok_or_else(|| Error::internal("base time"))?;
    let clock = PausedClock(base, tokio::time::Instant::now());
    let binding =
        CronBinding::with_clock(&spec.name, CronConfig::from_spec(spec)?, Arc::new(clock));
    Ok(Instance::Binding(Binding::input_output(Arc::new(binding))))
}

#[tokio::test(start_paused = true)]
async fn cron_ticks_reach_the_handler_until_deleted() {
    let s = setup(vec![
        ComponentSpec::new("ticks", "bindings.paused-cron")
            .with_metadata("schedule", "CRON_TZ=UTC 0 * * * * *"),
    ])
    .await;
    let (handler, mut events) = script(vec![]);
    let _handle = s.api.deliver_input("ticks", handler).expect("deliver");
    for minute in 1..=2 {
        let event = recv(&mut events).await;
        assert_eq!(event.name, "ticks");
        assert!(event.data.is_empty());
        assert_eq!(
            event.metadata.get("readTimeUTC").map(String::as_str),
            Some(format!("2024-05-01 12:0{minute}:00 +0000 UTC").as_str())
        );
        assert_eq!(
            event.metadata.get("timeZone").map(String::as_str),
            Some("UTC")
        );
    }
    s.api
        .invoke(
            "ticks",
            BindingRequest {
                operation: "delete".into(),
                ..Default::default()
            },
        )
        .await
        .expect("delete");
    nothing(&mut events).await;
}
