//! The pub/sub conformance suite through Plinth's APIs: the same cases against the in-memory
//! broker and every real broker on this machine, with a test app receiving events over
//! Layotto's `AppCallback` (or `SubscribeTopicEvents` streams), so every case goes through
//! the building block's delivery (retries, dead letters, bounds) and the component.
//!
//! Each case uses topics and app ids (the consumer groups) of its own and removes what it
//! created on the broker when it passes.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use plinth_proto::runtime::v1::topic_event_response::TopicEventResponseStatus as Status;
use tokio::sync::watch;

use crate::app::{Delivery, Reply, TestApp, reply};
use crate::brokers::{Broker, cleanup, resources};
use crate::common::{Plinth, unique};
use crate::streaming::EventStream;
use crate::support::{
    WAIT, outcome_count, publish, start_for, try_publish, wait_outcome, wait_subscribed,
};

/// How long a case watches for a delivery that must not come.
const QUIET: Duration = Duration::from_millis(800);

/// One case's names and config, and what to remove from the broker at the end.
struct Case {
    broker: Broker,
    /// Component metadata beyond the connection.
    extra: Vec<(String, String)>,
    resources: PathBuf,
    topics: Vec<String>,
    app_ids: Vec<String>,
    /// The MQTT client ids given to the processes (each has its own sessions).
    mqtt_clients: std::sync::Mutex<Vec<String>>,
}

impl Case {
    fn new(broker: Broker) -> Self {
        Self::with(broker, &[])
    }

    fn with(broker: Broker, extra: &[(&str, &str)]) -> Self {
        Self {
            broker,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            resources: resources(broker, &broker.shared_address(), extra),
            topics: Vec::new(),
            app_ids: Vec::new(),
            mqtt_clients: Default::default(),
        }
    }

    fn topic(&mut self, tag: &str) -> String {
        let t = unique(tag);
        self.topics.push(t.clone());
        t
    }

    fn app_id(&mut self, tag: &str) -> String {
        let a = unique(tag);
        self.app_ids.push(a.clone());
        a
    }

    /// A Plinth for app `app_id` delivering to `app`, on this case's broker. Its resources
    /// carry a client identity of their own where the broker needs one per process (MQTT
    /// sessions), so several processes of one app id can run side by side.
    fn plinth(&self, app: &TestApp, app_id: &str) -> Plinth {
        let dir = self.process_resources();
        let dir = dir.to_string_lossy().into_owned();
        start_for(app, &["--app-id", app_id, "--resources-path", &dir])
    }

    /// A Plinth without an app (publishing, streaming subscriptions).
    async fn plinth_alone(&self, app_id: &str) -> Plinth {
        let dir = self.process_resources();
        let dir = dir.to_string_lossy().into_owned();
        Plinth::start_ready_with(&["--app-id", app_id, "--resources-path", &dir], None).await
    }

    fn process_resources(&self) -> PathBuf {
        match self.broker {
            Broker::Mqtt => {
                let client = unique("client");
                self.mqtt_clients
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(client.clone());
                let mut extra: Vec<(&str, &str)> = self
                    .extra
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                extra.push(("clientID", client.as_str()));
                resources(self.broker, &self.broker.shared_address(), &extra)
            }
            _ => self.resources.clone(),
        }
    }

    async fn done(self) {
        let clients = self
            .mqtt_clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        cleanup(self.broker, &self.topics, &self.app_ids, &clients).await;
        let _ = std::fs::remove_dir_all(&self.resources);
    }
}

fn texts(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8_lossy(&d.event.data).into_owned())
        .collect()
}

fn numbered(prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Every published event reaches the app once.
async fn publish_n_all_received(broker: Broker) {
    let mut case = Case::new(broker);
    let topic = case.topic("all");
    let app_id = case.app_id("app");
    let mut app = TestApp::builder().subscribe(&topic, &[]).start().await;
    let plinth = case.plinth(&app, &app_id);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = plinth.client().await;
    for i in 0..200 {
        publish(&mut c, &topic, format!("m{i}").as_bytes(), "text/plain").await;
    }
    let got = app.next_n(200, WAIT).await;
    assert!(got.iter().all(|d| d.attempt == 1), "a redelivery");
    let set: BTreeSet<String> = texts(&got).into_iter().collect();
    assert_eq!(set, numbered("m", 200));
    wait_outcome(&plinth, &topic, "success", 200).await;
    assert!(app.try_next().is_none(), "an event was delivered twice");
    case.done().await;
}

/// A handler that fails the first two events and every fifth (RETRY on their first
/// attempt) sees exactly those redelivered, once each.
async fn failed_events_are_redelivered(broker: Broker) {
    let mut case = Case::new(broker);
    let topic = case.topic("retry");
    let app_id = case.app_id("app");
    let fails = |i: usize| i < 2 || i.is_multiple_of(5);
    let handler = reply(move |d| {
        let i: usize = String::from_utf8_lossy(&d.event.data)
            .trim_start_matches('r')
            .parse()
            .unwrap_or(usize::MAX);
        if d.attempt == 1 && fails(i) {
            Reply::Retry
        } else {
            Reply::Success
        }
    });
    let mut app = TestApp::builder()
        .subscribe(&topic, &[("retryInitialInterval", "20ms")])
        .handler(handler)
        .start()
        .await;
    let plinth = case.plinth(&app, &app_id);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = plinth.client().await;
    for i in 0..50 {
        publish(&mut c, &topic, format!("r{i}").as_bytes(), "text/plain").await;
    }
    let failing = (0..50).filter(|i| fails(*i)).count();
    let got = app.next_n(50 + failing, WAIT).await;
    let mut attempts: HashMap<String, Vec<u32>> = HashMap::new();
    for d in &got {
        let text = String::from_utf8_lossy(&d.event.data).into_owned();
        attempts.entry(text).or_default().push(d.attempt);
    }
    for i in 0..50 {
        let seen = attempts.get(&format!("r{i}")).cloned().unwrap_or_default();
        let want = if fails(i) { vec![1, 2] } else { vec![1] };
        assert_eq!(seen, want, "r{i}");
    }
    wait_outcome(&plinth, &topic, "success", 50).await;
    assert_eq!(
        outcome_count(&plinth, &topic, "retry").await,
        failing as f64
    );
    assert!(app.try_next().is_none(), "an extra delivery");
    case.done().await;
}

/// A topic whose events the app holds does not hold up another topic.
async fn topics_stay_independent(broker: Broker) {
    let mut case = Case::new(broker);
    let (busy, free) = (case.topic("busy"), case.topic("free"));
    let app_id = case.app_id("app");
    let (open, gate) = watch::channel(false);
    let busy_topic = busy.clone();
    let handler: crate::app::Handler = Arc::new(move |d: &Delivery| {
        let mut gate = gate.clone();
        let held = d.event.topic == busy_topic;
        Box::pin(async move {
            if held {
                let _ = gate.wait_for(|open| *open).await;
            }
            Reply::Success
        })
    });
    let mut app = TestApp::builder()
        .subscribe(&busy, &[("maxInFlight", "2")])
        .subscribe(&free, &[])
        .handler(handler)
        .start()
        .await;
    let plinth = case.plinth(&app, &app_id);
    wait_subscribed(&plinth, &[&busy, &free]).await;
    let mut c = plinth.client().await;
    for i in 0..5 {
        publish(&mut c, &busy, format!("b{i}").as_bytes(), "text/plain").await;
    }
    let held = app.next_n(2, WAIT).await;
    assert!(held.iter().all(|d| d.event.topic == busy));
    for i in 0..5 {
        publish(&mut c, &free, format!("f{i}").as_bytes(), "text/plain").await;
    }
    let got = app.next_n(5, WAIT).await;
    let set: BTreeSet<String> = texts(&got).into_iter().collect();
    assert_eq!(
        set,
        numbered("f", 5),
        "the free topic flows while the busy one is held"
    );
    open.send_replace(true);
    let rest = app.next_n(3, WAIT).await;
    let mut busy_seen: BTreeSet<String> = texts(&held).into_iter().collect();
    busy_seen.extend(texts(&rest));
    assert_eq!(busy_seen, numbered("b", 5));
    wait_outcome(&plinth, &busy, "success", 5).await;
    case.done().await;
}

/// Closing a streaming subscription stops delivery; what is published meanwhile, and what
/// the stream held unanswered when it closed, wait for the app id's next subscription.
async fn unsubscribe_stops_delivery(broker: Broker) {
    let mut case = Case::new(broker);
    let topic = case.topic("unsub");
    let app_id = case.app_id("app");
    let plinth = case.plinth_alone(&app_id).await;
    let mut c = plinth.client().await;
    let mut stream = EventStream::open(&plinth, &topic, &[]).await;
    for i in 0..3 {
        publish(&mut c, &topic, format!("u{i}").as_bytes(), "text/plain").await;
    }
    for _ in 0..3 {
        let e = stream.next_event().await;
        stream.answer(&e.id, Status::Success).await;
    }
    wait_outcome(&plinth, &topic, "success", 3).await;
    publish(&mut c, &topic, b"u3", "text/plain").await;
    let held = stream.next_event().await;
    assert_eq!(held.data, b"u3");
    drop(stream);
    plinth.wait_log("\"unsubscribed\"", WAIT);
    for i in 4..8 {
        publish(&mut c, &topic, format!("u{i}").as_bytes(), "text/plain").await;
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        outcome_count(&plinth, &topic, "success").await,
        3.0,
        "nothing is delivered without a subscription"
    );
    let mut stream = EventStream::open(&plinth, &topic, &[]).await;
    let mut seen = BTreeSet::new();
    for _ in 0..5 {
        let e = stream.next_event().await;
        seen.insert(String::from_utf8_lossy(&e.data).into_owned());
        stream.answer(&e.id, Status::Success).await;
    }
    let want: BTreeSet<String> = (3..8).map(|i| format!("u{i}")).collect();
    assert_eq!(
        seen, want,
        "held when the stream closed, and published while unsubscribed: delivered on return"
    );
    wait_outcome(&plinth, &topic, "success", 8).await;
    case.done().await;
}

/// With one event in flight, events arrive in publish order.
async fn order_is_kept(broker: Broker) {
    if !broker.ordered() {
        return;
    }
    let mut case = Case::new(broker);
    let topic = case.topic("order");
    let app_id = case.app_id("app");
    let mut app = TestApp::builder()
        .subscribe(&topic, &[("maxInFlight", "1")])
        .start()
        .await;
    let plinth = case.plinth(&app, &app_id);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = plinth.client().await;
    for i in 0..100 {
        publish(&mut c, &topic, format!("o{i:03}").as_bytes(), "text/plain").await;
    }
    let got = texts(&app.next_n(100, WAIT).await);
    let want: Vec<String> = (0..100).map(|i| format!("o{i:03}")).collect();
    assert_eq!(got, want);
    case.done().await;
}

/// RETRY until the last attempt dead-letters the event; DROP dead-letters at once.
async fn dead_letters(broker: Broker) {
    let mut case = Case::new(broker);
    let (retried, dropped, dlq) = (
        case.topic("retried"),
        case.topic("dropped"),
        case.topic("dlq"),
    );
    let app_id = case.app_id("app");
    let (r, d) = (retried.clone(), dropped.clone());
    let handler = reply(move |delivery| {
        if delivery.event.topic == r {
            Reply::Retry
        } else if delivery.event.topic == d {
            Reply::Drop
        } else {
            Reply::Success
        }
    });
    let meta = [
        ("deadLetterTopic", dlq.as_str()),
        ("maxDeliveryAttempts", "3"),
        ("retryInitialInterval", "10ms"),
    ];
    let mut app = TestApp::builder()
        .subscribe(&retried, &meta)
        .subscribe(&dropped, &meta)
        .subscribe(&dlq, &[])
        .handler(handler)
        .start()
        .await;
    let plinth = case.plinth(&app, &app_id);
    wait_subscribed(&plinth, &[&retried, &dropped, &dlq]).await;
    let mut c = plinth.client().await;
    publish(&mut c, &retried, b"tired", "text/plain").await;
    publish(&mut c, &dropped, b"poison", "text/plain").await;
    // tired: 3 attempts, then the dead-letter topic; poison: 1, then the dead-letter topic.
    let got = app.next_n(6, WAIT).await;
    let count = |topic: &str, data: &[u8]| {
        got.iter()
            .filter(|d| d.event.topic == topic && d.event.data == data)
            .count()
    };
    assert_eq!(
        count(&retried, b"tired"),
        3,
        "{:?}",
        crate::app::summary(&got)
    );
    assert_eq!(count(&dropped, b"poison"), 1);
    assert_eq!(count(&dlq, b"tired"), 1);
    assert_eq!(count(&dlq, b"poison"), 1);
    wait_outcome(&plinth, &retried, "dead_letter", 1).await;
    wait_outcome(&plinth, &dropped, "dead_letter", 1).await;
    wait_outcome(&plinth, &dlq, "success", 2).await;
    assert!(app.next_within(QUIET).await.is_none(), "an extra delivery");
    case.done().await;
}

/// Two app ids each receive every event; two subscribers of one app id split them, with
/// nothing delivered twice.
async fn app_ids_fan_out_and_replicas_compete(broker: Broker) {
    let mut case = Case::new(broker);
    let topic = case.topic("groups");
    let (a, b) = (case.app_id("a"), case.app_id("b"));

    // Two app ids: each app gets all 30.
    let mut app_a = TestApp::builder().subscribe(&topic, &[]).start().await;
    let mut app_b = TestApp::builder().subscribe(&topic, &[]).start().await;
    let plinth_a = case.plinth(&app_a, &a);
    let plinth_b = case.plinth(&app_b, &b);
    wait_subscribed(&plinth_a, &[&topic]).await;
    wait_subscribed(&plinth_b, &[&topic]).await;
    let mut c = plinth_a.client().await;
    for i in 0..30 {
        publish(&mut c, &topic, format!("e{i}").as_bytes(), "text/plain").await;
    }
    let got_a: BTreeSet<String> = texts(&app_a.next_n(30, WAIT).await).into_iter().collect();
    let got_b: BTreeSet<String> = texts(&app_b.next_n(30, WAIT).await).into_iter().collect();
    assert_eq!(got_a, numbered("e", 30));
    assert_eq!(got_b, numbered("e", 30));
    drop((plinth_a, plinth_b));

    // Two replicas of one app id: each holds its first event until the other has one too,
    // so the broker must hand events to both; together they get each event once.
    let replicas = case.app_id("replicas");
    let topic2 = case.topic("split");
    let both = Arc::new(AtomicUsize::new(0));
    let (go, ready) = watch::channel(false);
    let barrier = |first: Arc<AtomicBool>| -> crate::app::Handler {
        let (both, go, ready) = (both.clone(), go.clone(), ready.clone());
        Arc::new(move |_d: &Delivery| {
            let mut ready = ready.clone();
            let wait = !first.swap(true, Ordering::SeqCst);
            if wait && both.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
                go.send_replace(true);
            }
            Box::pin(async move {
                if wait {
                    let _ = ready.wait_for(|go| *go).await;
                }
                Reply::Success
            })
        })
    };
    let meta = [("maxInFlight", "1")];
    let mut r1 = TestApp::builder()
        .subscribe(&topic2, &meta)
        .handler(barrier(Arc::default()))
        .start()
        .await;
    let mut r2 = TestApp::builder()
        .subscribe(&topic2, &meta)
        .handler(barrier(Arc::default()))
        .start()
        .await;
    let p1 = case.plinth(&r1, &replicas);
    let p2 = case.plinth(&r2, &replicas);
    wait_subscribed(&p1, &[&topic2]).await;
    wait_subscribed(&p2, &[&topic2]).await;
    let mut c = p1.client().await;
    for i in 0..60 {
        publish(&mut c, &topic2, format!("s{i}").as_bytes(), "text/plain").await;
    }
    let mut counts: HashMap<String, u32> = HashMap::new();
    let (mut n1, mut n2) = (0, 0);
    while n1 + n2 < 60 {
        let d = tokio::select! {
            d = r1.next(WAIT) => { n1 += 1; d }
            d = r2.next(WAIT) => { n2 += 1; d }
        };
        *counts
            .entry(String::from_utf8_lossy(&d.event.data).into_owned())
            .or_default() += 1;
    }
    assert!(
        n1 > 0 && n2 > 0,
        "both replicas receive events: {n1} and {n2}"
    );
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered twice: {dups:?}");
    assert_eq!(
        counts.into_keys().collect::<BTreeSet<_>>(),
        numbered("s", 60)
    );
    assert!(r1.next_within(QUIET).await.is_none() && r2.try_next().is_none());
    case.done().await;
}

/// Dapr's bulk publish reaches the broker entry by entry.
async fn bulk_publish(broker: Broker) {
    let mut case = Case::new(broker);
    let topic = case.topic("bulk");
    let app_id = case.app_id("app");
    let mut app = TestApp::builder().subscribe(&topic, &[]).start().await;
    let plinth = case.plinth(&app, &app_id);
    wait_subscribed(&plinth, &[&topic]).await;
    let entries: Vec<serde_json::Value> = (0..100)
        .map(|i| {
            serde_json::json!({
                "entryId": i.to_string(),
                "event": format!("k{i}"),
                "contentType": "text/plain",
            })
        })
        .collect();
    let resp = plinth
        .dapr_http()
        .post_json(
            &format!("/v1.0-alpha1/publish/bulk/{}/{topic}", crate::app::PUBSUB),
            &serde_json::Value::Array(entries),
        )
        .await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    let got: BTreeSet<String> = texts(&app.next_n(100, WAIT).await).into_iter().collect();
    assert_eq!(got, numbered("k", 100));
    case.done().await;
}

/// A message over the component's size limit is refused with RESOURCE_EXHAUSTED naming the
/// limit; one under it goes through.
async fn size_limit(broker: Broker) {
    let mut case = Case::with(broker, &[("maxMessageBytes", "65536")]);
    if broker == Broker::InMemory {
        // The in-memory broker has no size limit of its own: the API's body limit applies.
        case.done().await;
        return;
    }
    let topic = case.topic("size");
    let app_id = case.app_id("app");
    let mut app = TestApp::builder().subscribe(&topic, &[]).start().await;
    let plinth = case.plinth(&app, &app_id);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = plinth.client().await;
    let err = try_publish(
        &mut c,
        crate::app::PUBSUB,
        &topic,
        &vec![b'x'; 100_000],
        "text/plain",
    )
    .await
    .expect_err("over the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("65536"), "{err:?}");
    let small = vec![b'y'; 30_000];
    publish(&mut c, &topic, &small, "text/plain").await;
    let d = app.next(WAIT).await;
    assert_eq!(d.event.data.len(), 30_000);
    case.done().await;
}

macro_rules! conformance {
    ($broker:ident => $variant:expr) => {
        mod $broker {
            use super::*;

            const BROKER: Broker = $variant;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn publish_n_all_received() {
                super::publish_n_all_received(BROKER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn failed_events_are_redelivered() {
                super::failed_events_are_redelivered(BROKER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn topics_stay_independent() {
                super::topics_stay_independent(BROKER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unsubscribe_stops_delivery() {
                super::unsubscribe_stops_delivery(BROKER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn order_is_kept() {
                super::order_is_kept(BROKER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dead_letters() {
                super::dead_letters(BROKER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bulk_publish() {
                super::bulk_publish(BROKER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn size_limit() {
                super::size_limit(BROKER).await;
            }
        }
    };
}

conformance!(in_memory => Broker::InMemory);
conformance!(redis => Broker::Redis);
conformance!(jetstream => Broker::JetStream);
conformance!(rabbitmq => Broker::RabbitMq);
conformance!(mqtt => Broker::Mqtt);

/// Fan-out and competition need the broker shared by several processes, which the
/// in-memory broker is not: there, two streaming subscriptions of one process compete.
mod across_processes {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_streams_compete() {
        let mut case = Case::new(Broker::InMemory);
        let topic = case.topic("streams");
        let app_id = case.app_id("app");
        let plinth = case.plinth_alone(&app_id).await;
        let meta = [("maxInFlight", "1")];
        let mut s1 = EventStream::open(&plinth, &topic, &meta).await;
        let mut s2 = EventStream::open(&plinth, &topic, &meta).await;
        let mut c = plinth.client().await;
        for i in 0..40 {
            publish(&mut c, &topic, format!("s{i}").as_bytes(), "text/plain").await;
        }
        // Each holds its first event until the other has one: both must receive.
        let (e1, e2) = (s1.next_event().await, s2.next_event().await);
        let mut seen = vec![e1.data.clone(), e2.data.clone()];
        s1.answer(&e1.id, Status::Success).await;
        s2.answer(&e2.id, Status::Success).await;
        while seen.len() < 40 {
            let (stream, e) = tokio::select! {
                e = s1.next_event() => (&s1, e),
                e = s2.next_event() => (&s2, e),
            };
            stream.answer(&e.id, Status::Success).await;
            seen.push(e.data);
        }
        let set: BTreeSet<String> = seen
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect();
        assert_eq!(set.len(), 40, "nothing twice");
        assert_eq!(set, numbered("s", 40));
        case.done().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        app_ids_fan_out_and_replicas_compete(Broker::Redis).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jetstream() {
        app_ids_fan_out_and_replicas_compete(Broker::JetStream).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbitmq() {
        app_ids_fan_out_and_replicas_compete(Broker::RabbitMq).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt() {
        app_ids_fan_out_and_replicas_compete(Broker::Mqtt).await;
    }
}
