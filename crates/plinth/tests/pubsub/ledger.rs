//! Fault tests counted with a ledger: 10,000 events with unique sequence numbers are
//! published through Plinth at a steady rate while a fault is injected mid-stream, and
//! every publish outcome and every delivery is recorded. The ledger reports, separately:
//! - **lost**: accepted by Plinth (the publish returned OK) and never delivered: must be 0;
//! - **duplicated**: delivered more than once (at-least-once allows it; counted);
//! - **rejected**: publishes that failed, by gRPC code (UNAVAILABLE while something is down),
//!   and how many of those were delivered anyway (a publish can time out after the broker
//!   took it).
//!
//! The faults:
//! - **app down**: the subscribing app vanishes mid-stream (every connection to it is cut
//!   and new ones are refused, through a TCP proxy Plinth reaches it by) and comes back;
//! - **broker down**: a private broker of the test's own, configured for durability, is
//!   really stopped and restarted; publishes during the outage must fail;
//! - **Plinth down**: the Plinth process is killed (SIGKILL) and a new one (a new pid) takes
//!   over with the same configuration.
//!
//! Each run appends its ledger as a JSON line to `$CARGO_TARGET_TMPDIR/pubsub-ledger.jsonl`
//! and prints it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use plinth_proto::runtime::v1 as pb;
use plinth_proto::runtime::v1::runtime_client::RuntimeClient;
use plinth_testkit::FaultProxy;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::app::{Delivery, PUBSUB, Reply, TestApp};
use crate::brokers::{Broker, PrivateBroker, cleanup, write_component};
use crate::common::{scratch, unique};
use crate::support::{start_via, wait_subscribed};

/// Events per run.
const EVENTS: u32 = 10_000;
/// Publishes per second: slow enough that the fault lands mid-stream.
const RATE: u32 = 1_000;
/// Publishes in flight at once.
const CONCURRENCY: usize = 16;
/// The fault is injected once this many publishes were accepted.
const FAULT_AT: usize = 3_000;
/// How long the app stays away.
const APP_OUTAGE: Duration = Duration::from_secs(2);
/// How many publishes must have failed before a stopped broker or Plinth is started again.
const MIN_REJECTED: usize = 50;
/// How long a stopped broker or Plinth stays down at least: long enough for connections to
/// notice, reconnects to back off and subscriptions to be reopened.
const MIN_OUTAGE: Duration = Duration::from_millis(1500);
/// The bound on delivering everything accepted, once publishing is over.
const DRAIN: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    App,
    Broker,
    Plinth,
}

impl Outage {
    fn name(self) -> &'static str {
        match self {
            Outage::App => "app-down",
            Outage::Broker => "broker-down",
            Outage::Plinth => "plinth-down",
        }
    }
}

/// What happened to every sequence number.
#[derive(Debug, Default)]
struct Book {
    /// Publish outcome per sequence number: `None` for OK, else the gRPC code.
    published: HashMap<u32, Option<tonic::Code>>,
    /// Deliveries per sequence number.
    delivered: HashMap<u32, u32>,
}

type Shared = Arc<Mutex<Book>>;

fn lock(book: &Shared) -> std::sync::MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Book {
    fn accepted(&self) -> usize {
        self.published.values().filter(|r| r.is_none()).count()
    }

    fn rejected(&self) -> usize {
        self.published.values().filter(|r| r.is_some()).count()
    }

    fn missing(&self) -> Vec<u32> {
        let mut missing: Vec<u32> = self
            .published
            .iter()
            .filter(|(seq, r)| r.is_none() && !self.delivered.contains_key(seq))
            .map(|(seq, _)| *seq)
            .collect();
        missing.sort_unstable();
        missing
    }
}

/// The test app: records every delivery (before answering, so a delivery whose answer
/// is lost with the connection counts, and its redelivery shows as a duplicate).
async fn app(book: Shared, topic: &str, port: u16) -> TestApp {
    let handler: crate::app::Handler = Arc::new(move |d: &Delivery| {
        if let Ok(seq) = std::str::from_utf8(&d.event.data)
            .unwrap_or_default()
            .parse::<u32>()
        {
            *lock(&book).delivered.entry(seq).or_default() += 1;
        }
        Box::pin(async { Reply::Success })
    });
    TestApp::builder()
        .subscribe(
            topic,
            &[("retryInitialInterval", "50ms"), ("retryMaxInterval", "1s")],
        )
        .handler(handler)
        .start_on(port)
        .await
}

/// Publishes every sequence number once, at [`RATE`], through whichever Plinth `addr`
/// names at the time, recording each outcome. A failed publish is not retried.
async fn publisher(book: Shared, topic: String, mut addr: watch::Receiver<SocketAddr>) {
    let connect = |a: SocketAddr| {
        Endpoint::from_shared(format!("http://{a}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    };
    let mut channel: Channel = connect(*addr.borrow_and_update());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..EVENTS {
        let due = started + Duration::from_secs(1) * seq / RATE;
        tokio::time::sleep_until(due.into()).await;
        while tasks.len() >= CONCURRENCY {
            tasks.join_next().await;
        }
        if addr.has_changed().unwrap_or(false) {
            channel = connect(*addr.borrow_and_update());
        }
        let mut client = RuntimeClient::new(channel.clone());
        let (book, topic) = (book.clone(), topic.clone());
        tasks.spawn(async move {
            let result = client
                .publish_event(pb::PublishEventRequest {
                    pubsub_name: PUBSUB.into(),
                    topic,
                    data: seq.to_string().into_bytes(),
                    data_content_type: "text/plain".into(),
                    metadata: Default::default(),
                })
                .await;
            lock(&book)
                .published
                .insert(seq, result.err().map(|s| s.code()));
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Component metadata that makes a redelivery after a crash come within seconds (the
/// defaults wait longer before deciding a consumer is gone).
fn recovery_settings(broker: Broker) -> Vec<(&'static str, &'static str)> {
    match broker {
        Broker::Redis => vec![("processingTimeout", "3s"), ("redeliverInterval", "1s")],
        Broker::JetStream => vec![("ackWait", "3s")],
        _ => Vec::new(),
    }
}

async fn run(broker: Broker, fault: Outage) {
    let private = match broker {
        Broker::InMemory => None,
        b => Some(PrivateBroker::start(b).await),
    };
    let address = private
        .as_ref()
        .map(PrivateBroker::address)
        .unwrap_or_default();
    let resources: PathBuf = scratch("ledger-resources");
    let mut extra = recovery_settings(broker);
    let client_id = unique("ledger-client");
    if broker == Broker::Mqtt {
        extra.push(("clientID", client_id.as_str()));
        if fault == Outage::Broker {
            // Mosquitto 2.0 does not persist shared subscriptions: across its restart only a
            // plain subscription keeps what is published before the session reconnects (see
            // docs/components/pubsub.mqtt3.md).
            extra.push(("sharedSubscription", "false"));
        }
    }
    write_component(&resources, broker, &address, &extra);
    let resources_arg = resources.to_string_lossy().into_owned();
    let topic = unique("ledger");
    let app_id = unique("ledger-app");
    let book: Shared = Arc::default();

    // Plinth reaches the app through a proxy, which "kills" the app by cutting it off.
    let app_port = crate::brokers::free_port();
    let the_app = app(book.clone(), &topic, app_port).await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{app_port}")).await;
    let plinth_args = [
        "--app-id",
        app_id.as_str(),
        "--resources-path",
        resources_arg.as_str(),
    ];
    let mut plinth = start_via(&the_app, proxy.port(), &plinth_args);
    wait_subscribed(&plinth, &[&topic]).await;
    let (addr_tx, addr_rx) = watch::channel(plinth.grpc);
    let publishing = tokio::spawn(publisher(book.clone(), topic.clone(), addr_rx));

    wait_until(
        "publishes accepted before the fault",
        Duration::from_secs(60),
        || lock(&book).accepted() >= FAULT_AT,
    )
    .await;
    let mut private = private;
    let started_at = Instant::now();
    match fault {
        Outage::App => {
            proxy.cut();
            tokio::time::sleep(APP_OUTAGE).await;
            proxy.restore().await;
        }
        Outage::Broker => {
            let broker = private.as_mut().expect("a private broker");
            let before = lock(&book).rejected();
            broker.stop().await;
            wait_until(
                "publishes failing while the broker is down",
                Duration::from_secs(60),
                || {
                    lock(&book).rejected() >= before + MIN_REJECTED
                        && started_at.elapsed() >= MIN_OUTAGE
                },
            )
            .await;
            broker.start_again().await;
        }
        Outage::Plinth => {
            let old_pid = plinth.pid();
            let before = lock(&book).rejected();
            drop(plinth);
            wait_until(
                "publishes failing while Plinth is down",
                Duration::from_secs(60),
                || {
                    lock(&book).rejected() >= before + MIN_REJECTED
                        && started_at.elapsed() >= MIN_OUTAGE
                },
            )
            .await;
            plinth = start_via(&the_app, proxy.port(), &plinth_args);
            assert_ne!(plinth.pid(), old_pid, "a new Plinth process");
            // Not waiting for its subscription: the group keeps what is published until it
            // is back (and the app's subscriptions may open before the startup lines end).
            addr_tx.send_replace(plinth.grpc);
        }
    }
    let outage = started_at.elapsed();
    publishing.await.expect("the publisher");

    let deadline = Instant::now() + DRAIN;
    loop {
        let missing = lock(&book).missing().len();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Everything is delivered or given up on: take the ledger out of its lock.
    let book = std::mem::take(&mut *lock(&book));
    let accepted = book.accepted();
    let missing = book.missing();
    let duplicated = book.delivered.values().filter(|n| **n > 1).count();
    let extra_deliveries: u32 = book.delivered.values().map(|n| n - 1).sum();
    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    let mut rejected_delivered = 0;
    for (seq, result) in &book.published {
        if let Some(code) = result {
            *rejected.entry(format!("{code:?}")).or_default() += 1;
            if book.delivered.contains_key(seq) {
                rejected_delivered += 1;
            }
        }
    }
    let unavailable = rejected.get("Unavailable").copied().unwrap_or(0);
    // Sequence numbers go out in order, so the first and last rejected one place the outage.
    let rejected_seqs = book
        .published
        .iter()
        .filter(|(_, r)| r.is_some())
        .map(|(seq, _)| *seq);
    let rejected_span = (rejected_seqs.clone().min(), rejected_seqs.max());
    let report = serde_json::json!({
        "broker": broker.type_name(),
        "fault": fault.name(),
        "events": EVENTS,
        "accepted": accepted,
        "lost": missing.len(),
        "duplicated": duplicated,
        "extra_deliveries": extra_deliveries,
        "rejected_unavailable": unavailable,
        "rejected_by_code": rejected,
        "rejected_but_delivered": rejected_delivered,
        "outage_ms": outage.as_millis() as u64,
        "rejected_span": rejected_span,
        "lost_first": &missing[..missing.len().min(20)],
    });
    eprintln!("ledger: {report}");
    if !missing.is_empty()
        && let Some(broker) = &private
    {
        eprintln!("the private broker's log:\n{}", broker.log_tail());
    }
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pubsub-ledger.jsonl");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        use std::io::Write as _;
        let _ = writeln!(file, "{report}");
    }
    assert_eq!(
        book.published.len(),
        EVENTS as usize,
        "every publish answered"
    );
    assert!(
        missing.is_empty(),
        "{} accepted events were lost (first: {:?}): {report}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    if fault != Outage::App {
        assert!(
            unavailable >= MIN_REJECTED,
            "publishes must fail with UNAVAILABLE while the {} is down: {report}",
            if fault == Outage::Broker {
                "broker"
            } else {
                "Plinth"
            }
        );
    } else {
        assert_eq!(
            book.rejected(),
            0,
            "the app's outage must not fail publishes: {report}"
        );
        let retried = crate::support::outcome_count(&plinth, &topic, "retry").await;
        assert!(
            retried > 0.0,
            "deliveries failed while the app was away: {report}"
        );
    }
    drop(plinth);
    if private.is_none() {
        cleanup(broker, &[topic], &[app_id], &[]).await;
    }
    let _ = std::fs::remove_dir_all(&resources);
}

macro_rules! ledger {
    ($broker:ident => $variant:expr, $($fault:ident => $f:expr),*) => {
        mod $broker {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $fault() {
                    run($variant, $f).await;
                }
            )*
        }
    };
}

ledger!(in_memory => Broker::InMemory, app_down => Outage::App);
ledger!(redis => Broker::Redis,
    app_down => Outage::App, broker_down => Outage::Broker, plinth_down => Outage::Plinth);
ledger!(jetstream => Broker::JetStream,
    app_down => Outage::App, broker_down => Outage::Broker, plinth_down => Outage::Plinth);
ledger!(rabbitmq => Broker::RabbitMq,
    app_down => Outage::App, broker_down => Outage::Broker, plinth_down => Outage::Plinth);
ledger!(mqtt => Broker::Mqtt,
    app_down => Outage::App, broker_down => Outage::Broker, plinth_down => Outage::Plinth);
