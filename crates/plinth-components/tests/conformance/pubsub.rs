//! The pub/sub conformance suite: the same cases against every broker of this crate, at the
//! component trait (the delivery semantics above it, retries, dead letters and parking, are
//! the building block's and are tested through Plinth's APIs in `crates/plinth/tests`).
//!
//! Every case works on topics and consumer groups of its own (a fresh uuid in each name)
//! and removes the broker-side state it created (streams, consumers, queues, sessions) when
//! it ends, so runs can share the machine's brokers. A broker that cannot be reached fails
//! its cases, naming it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use plinth_core::component::Instance;
use plinth_core::component::pubsub::{
    Delivery, PubSub, PublishRequest, SubscribeRequest, Subscription,
};
use plinth_core::{ComponentSpec, ErrorKind, Metadata};

use crate::common::{build, mqtt_url, rabbitmq_url, redis_host};

/// The bound on every wait for a delivery that should come.
const WAIT: Duration = Duration::from_secs(15);
/// How long a case watches for a delivery that must not come.
const QUIET: Duration = Duration::from_millis(700);

/// One broker under test, with what it can and cannot carry.
pub(crate) struct Broker {
    pub(crate) pubsub: Arc<dyn PubSub>,
    /// The content type and the publish metadata arrive with the message (MQTT 3.1.1 has no
    /// message properties, so `pubsub.mqtt3` carries neither).
    pub(crate) carries_metadata: bool,
    /// The largest payload the component accepts as configured for the suite; one byte more
    /// must be refused with RESOURCE_EXHAUSTED.
    pub(crate) max_message_bytes: usize,
    /// Removes what the case created on the broker for these topics and groups.
    pub(crate) cleanup: Cleanup,
}

/// Removes the broker-side state of a case's topics and consumer groups.
pub(crate) type Cleanup = Box<dyn Fn(Names) -> BoxFuture<'static, ()> + Send + Sync>;

/// The topics and groups one case used.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    pub(crate) topics: Vec<String>,
    pub(crate) groups: Vec<String>,
}

impl Names {
    fn topic(&mut self, tag: &str) -> String {
        let t = format!("plinth-conf-{tag}-{}", uuid::Uuid::new_v4().simple());
        self.topics.push(t.clone());
        t
    }

    fn group(&mut self, tag: &str) -> String {
        let g = format!("plinth-conf-{tag}-{}", uuid::Uuid::new_v4().simple());
        self.groups.push(g.clone());
        g
    }
}

fn no_cleanup() -> Cleanup {
    Box::new(|_| Box::pin(async {}))
}

async fn in_memory() -> Broker {
    Broker {
        pubsub: instance(ComponentSpec::new("conformance", "pubsub.in-memory")).await,
        carries_metadata: true,
        max_message_bytes: usize::MAX,
        cleanup: no_cleanup(),
    }
}

/// The largest payload the suite configures on brokers that take a limit.
const SUITE_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// `pubsub.redis` on the machine's Redis; a case's streams (each holds its groups and
/// consumers) are deleted after it.
async fn redis() -> Broker {
    let host = redis_host();
    redis_broker(
        ComponentSpec::new("conformance", "pubsub.redis").with_metadata("redisHost", &host),
        move || {
            let host = host.clone();
            Box::pin(async move {
                let client = ::redis::Client::open(format!("redis://{host}/")).expect("client");
                let conn = client.get_multiplexed_async_connection().await;
                RedisCleanup::Node(conn.expect("redis must be reachable"))
            })
        },
    )
    .await
}

/// `pubsub.redis` on the Redis Cluster: each topic is one stream, so one hash slot.
async fn redis_cluster() -> Broker {
    let seeds = crate::common::redis_cluster();
    redis_broker(
        ComponentSpec::new("conformance", "pubsub.redis")
            .with_metadata("redisHost", &seeds)
            .with_metadata("redisType", "cluster"),
        move || {
            let nodes: Vec<String> = seeds.split(',').map(|n| format!("redis://{n}/")).collect();
            Box::pin(async move {
                let client = ::redis::cluster::ClusterClient::new(nodes).expect("cluster client");
                let conn = client.get_async_connection().await;
                RedisCleanup::Cluster(conn.expect("the redis cluster must be reachable"))
            })
        },
    )
    .await
}

enum RedisCleanup {
    Node(::redis::aio::MultiplexedConnection),
    Cluster(::redis::cluster_async::ClusterConnection),
}

async fn redis_broker(
    spec: ComponentSpec,
    connect: impl Fn() -> BoxFuture<'static, RedisCleanup> + Send + Sync + 'static,
) -> Broker {
    let spec = spec.with_metadata("maxMessageBytes", SUITE_MAX_MESSAGE_BYTES.to_string());
    let pubsub = instance(spec).await;
    let closing = Arc::clone(&pubsub);
    Broker {
        pubsub,
        carries_metadata: true,
        max_message_bytes: SUITE_MAX_MESSAGE_BYTES,
        cleanup: Box::new(move |names| {
            let closing = Arc::clone(&closing);
            let conn = connect();
            Box::pin(async move {
                // Closed first, so that no subscription recreates a stream being deleted.
                closing.close().await;
                let mut conn = conn.await;
                for topic in &names.topics {
                    let mut del = ::redis::cmd("DEL");
                    del.arg(topic);
                    let deleted: ::redis::RedisResult<i64> = match &mut conn {
                        RedisCleanup::Node(c) => del.query_async(c).await,
                        RedisCleanup::Cluster(c) => del.query_async(c).await,
                    };
                    deleted.unwrap_or_else(|e| panic!("deleting stream {topic}: {e}"));
                }
            })
        }),
    }
}

/// `pubsub.mqtt3` on the machine's Mosquitto, with a client id of its own. MQTT 3.1.1
/// carries no content type or metadata. Cleanup closes the component (its sessions
/// disconnect and stay away) and removes the persistent session of every (group, topic).
async fn mqtt3() -> Broker {
    let spec = ComponentSpec::new("conformance", "pubsub.mqtt3")
        .with_metadata("url", mqtt_url())
        .with_metadata(
            "clientID",
            format!("plinth-conf-{}", uuid::Uuid::new_v4().simple()),
        )
        .with_metadata("maxMessageBytes", (1024 * 1024).to_string());
    let pubsub = instance(spec.clone()).await;
    let component = Arc::clone(&pubsub);
    Broker {
        pubsub,
        carries_metadata: false,
        max_message_bytes: 1024 * 1024,
        cleanup: Box::new(move |names| {
            let (spec, component) = (spec.clone(), Arc::clone(&component));
            Box::pin(async move {
                component.close().await;
                for topic in &names.topics {
                    for group in &names.groups {
                        plinth_components::pubsub::mqtt3::remove_session(&spec, group, topic)
                            .await
                            .unwrap_or_else(|e| {
                                panic!("removing the session of {group}/{topic}: {e}")
                            });
                    }
                }
            })
        }),
    }
}

/// RabbitMQ at [`rabbitmq_url`], limited to 1 MiB messages so that `bad_input` checks the
/// limit. The cleanup deletes the `{group}-{topic}` queues and the topics' exchanges.
async fn rabbitmq() -> Broker {
    const MAX: usize = 1024 * 1024;
    let url = rabbitmq_url();
    let spec = ComponentSpec::new("conformance", "pubsub.rabbitmq")
        .with_metadata("connectionString", url.clone())
        .with_metadata("maxMessageBytes", MAX.to_string());
    Broker {
        pubsub: instance(spec).await,
        carries_metadata: true,
        max_message_bytes: MAX,
        cleanup: Box::new(move |names| Box::pin(rabbitmq_cleanup(url.clone(), names))),
    }
}

async fn rabbitmq_cleanup(url: String, names: Names) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be reachable at {url} for the cleanup: {e}"));
    let channel = connection.create_channel().await.expect("channel");
    for topic in &names.topics {
        for group in &names.groups {
            let queue = format!("{group}-{topic}");
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap_or_else(|e| panic!("deleting queue {queue}: {e}"));
        }
        channel
            .exchange_delete(topic.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("deleting exchange {topic}: {e}"));
    }
    let _ = connection.close(200, "OK".into()).await;
}

/// The NATS server (with JetStream) `pubsub.jetstream` uses: `nats://127.0.0.1:4222`, or
/// `PLINTH_TEST_NATS`.
fn nats_url() -> String {
    std::env::var("PLINTH_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// `pubsub.jetstream` with a 1 MiB message limit. Its cleanup deletes the stream Plinth
/// created for each of the case's topics, and with it the groups' consumers.
async fn jetstream() -> Broker {
    const MAX: usize = 1024 * 1024;
    let url = nats_url();
    let spec = ComponentSpec::new("conformance", "pubsub.jetstream")
        .with_metadata("natsURL", url.clone())
        .with_metadata("maxMessageBytes", MAX.to_string());
    Broker {
        pubsub: instance(spec).await,
        carries_metadata: true,
        max_message_bytes: MAX,
        cleanup: Box::new(move |names: Names| {
            let url = url.clone();
            Box::pin(async move {
                let client = async_nats::connect(url.as_str()).await.unwrap_or_else(|e| {
                    panic!("NATS at {url} (PLINTH_TEST_NATS), for cleanup: {e}")
                });
                let js = async_nats::jetstream::new(client);
                for topic in &names.topics {
                    let stream = plinth_components::pubsub::jetstream::stream_name(topic);
                    // A case that never published to a topic has no stream for it.
                    let _ = js.delete_stream(stream).await;
                }
            })
        }),
    }
}

pub(crate) async fn instance(spec: ComponentSpec) -> Arc<dyn PubSub> {
    match build(spec).await {
        Instance::PubSub(pubsub) => pubsub,
        other => panic!("not a pub/sub: {}", other.kind()),
    }
}

async fn publish(b: &Broker, topic: &str, data: impl Into<Bytes>) {
    publish_with(b, topic, data.into(), Metadata::new()).await;
}

async fn publish_with(b: &Broker, topic: &str, data: Bytes, metadata: Metadata) {
    b.pubsub
        .publish(PublishRequest {
            topic: topic.into(),
            data,
            content_type: "text/plain".into(),
            metadata,
        })
        .await
        .unwrap_or_else(|e| panic!("publish to {topic}: {e}"));
}

async fn subscribe(b: &Broker, topic: &str, group: &str, max_in_flight: usize) -> Subscription {
    b.pubsub
        .subscribe(SubscribeRequest {
            topic: topic.into(),
            group: group.into(),
            max_in_flight,
            metadata: Metadata::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("subscribe to {topic} as {group}: {e}"))
}

/// The next delivery, or panic after [`WAIT`].
async fn recv(sub: &mut Subscription, what: &str) -> Delivery {
    match tokio::time::timeout(WAIT, sub.receiver.recv()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: no delivery within {WAIT:?}"),
    }
}

/// A delivery arriving within [`QUIET`], if any.
async fn recv_quiet(sub: &mut Subscription) -> Option<Delivery> {
    tokio::time::timeout(QUIET, sub.receiver.recv())
        .await
        .ok()
        .flatten()
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.message.data).into_owned()
}

async fn ack(d: Delivery) {
    d.ack().await.expect("ack");
}

/// Receive and acknowledge until `n` deliveries arrived; returns their payloads in order.
async fn drain(sub: &mut Subscription, n: usize, what: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = recv(sub, &format!("{what} ({} of {n})", out.len())).await;
        out.push(text(&d));
        ack(d).await;
    }
    out
}

fn expected(prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Every message published arrives once, byte for byte, with its content type and metadata
/// where the broker carries them.
async fn publish_receive(b: &Broker, names: &mut Names) {
    let topic = names.topic("all");
    let group = names.group("g");
    let mut sub = subscribe(b, &topic, &group, 16).await;
    for i in 0..50 {
        let mut md = Metadata::new();
        md.insert("seq".into(), i.to_string());
        publish_with(b, &topic, format!("m{i}").into(), md).await;
    }
    let mut seen = BTreeSet::new();
    for n in 0..50 {
        let d = recv(&mut sub, &format!("message {n} of 50")).await;
        assert_eq!(d.message.topic, topic);
        let body = text(&d);
        if b.carries_metadata {
            assert_eq!(d.message.content_type, "text/plain", "{body}");
            let seq = body.trim_start_matches('m');
            assert_eq!(d.message.metadata.get("seq").map(String::as_str), Some(seq));
        }
        assert!(seen.insert(body.clone()), "{body} delivered twice");
        ack(d).await;
    }
    assert_eq!(seen, expected("m", 50));
    assert!(recv_quiet(&mut sub).await.is_none(), "a 51st delivery");
}

/// Binary payloads, an empty one and a large one arrive unchanged.
async fn payloads(b: &Broker, names: &mut Names) {
    let topic = names.topic("bytes");
    let group = names.group("g");
    let mut sub = subscribe(b, &topic, &group, 4).await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let large: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    for payload in [binary.clone(), Vec::new(), large.clone()] {
        publish(b, &topic, payload).await;
    }
    let mut got = Vec::new();
    for n in 0..3 {
        let d = recv(&mut sub, &format!("payload {n}")).await;
        got.push(d.message.data.to_vec());
        ack(d).await;
    }
    got.sort_by_key(Vec::len);
    assert_eq!(got, vec![Vec::new(), binary, large]);
}

/// A payload over the configured limit is refused before it reaches the broker, naming the
/// limit; empty topics and groups are refused.
async fn bad_input(b: &Broker, names: &mut Names) {
    let topic = names.topic("bad");
    if b.max_message_bytes < 64 * 1024 * 1024 {
        let err = b
            .pubsub
            .publish(PublishRequest {
                topic: topic.clone(),
                data: vec![b'x'; b.max_message_bytes + 1].into(),
                content_type: "application/octet-stream".into(),
                metadata: Metadata::new(),
            })
            .await
            .expect_err("a payload over the limit");
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
        assert!(
            err.message().contains(&b.max_message_bytes.to_string()),
            "the error names the limit: {err}"
        );
    }
    let err = b
        .pubsub
        .publish(PublishRequest {
            topic: String::new(),
            data: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("an empty topic");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    for (topic, group) in [("", "g"), (topic.as_str(), "")] {
        let err = b
            .pubsub
            .subscribe(SubscribeRequest {
                topic: topic.into(),
                group: group.into(),
                max_in_flight: 1,
                metadata: Metadata::new(),
            })
            .await
            .expect_err("an empty topic or group");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
}

/// A nacked message, and one whose delivery is dropped unsettled, come back.
async fn nack_redelivers(b: &Broker, names: &mut Names) {
    let topic = names.topic("nack");
    let group = names.group("g");
    let mut sub = subscribe(b, &topic, &group, 4).await;
    publish(b, &topic, "again").await;
    let first = recv(&mut sub, "the first delivery").await;
    assert_eq!(text(&first), "again");
    first.nack().await.expect("nack");
    let second = recv(&mut sub, "the redelivery after a nack").await;
    assert_eq!(text(&second), "again");
    drop(second);
    let third = recv(&mut sub, "the redelivery after a drop").await;
    assert_eq!(text(&third), "again");
    ack(third).await;
    assert!(
        recv_quiet(&mut sub).await.is_none(),
        "an acknowledged message came back"
    );
}

/// At most `max_in_flight` unsettled deliveries; settling one lets the next through.
async fn in_flight_bound(b: &Broker, names: &mut Names) {
    let topic = names.topic("bound");
    let group = names.group("g");
    let mut sub = subscribe(b, &topic, &group, 3).await;
    for i in 0..10 {
        publish(b, &topic, format!("b{i}")).await;
    }
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(recv(&mut sub, &format!("held {n}")).await);
    }
    assert!(
        recv_quiet(&mut sub).await.is_none(),
        "a 4th delivery with 3 unsettled and max_in_flight 3"
    );
    let mut seen: BTreeSet<String> = held.iter().map(text).collect();
    ack(held.remove(0)).await;
    let next = recv(&mut sub, "the delivery after an ack").await;
    seen.insert(text(&next));
    ack(next).await;
    for d in held {
        ack(d).await;
    }
    seen.extend(drain(&mut sub, 6, "the rest").await);
    assert_eq!(seen, expected("b", 10));
}

/// Each consumer group gets every message.
async fn groups_each_get_all(b: &Broker, names: &mut Names) {
    let topic = names.topic("fanout");
    let (g1, g2) = (names.group("a"), names.group("b"));
    let mut s1 = subscribe(b, &topic, &g1, 8).await;
    let mut s2 = subscribe(b, &topic, &g2, 8).await;
    for i in 0..20 {
        publish(b, &topic, format!("f{i}")).await;
    }
    let got1: BTreeSet<_> = drain(&mut s1, 20, "group a").await.into_iter().collect();
    let got2: BTreeSet<_> = drain(&mut s2, 20, "group b").await.into_iter().collect();
    assert_eq!(got1, expected("f", 20));
    assert_eq!(got2, expected("f", 20));
}

/// Two subscribers of one group compete: with one unsettled delivery each, two messages go
/// one to each; later messages are split without duplicates.
async fn group_members_compete(b: &Broker, names: &mut Names) {
    let topic = names.topic("compete");
    let group = names.group("g");
    let mut s1 = subscribe(b, &topic, &group, 1).await;
    let mut s2 = subscribe(b, &topic, &group, 1).await;
    publish(b, &topic, "c0").await;
    publish(b, &topic, "c1").await;
    let d1 = recv(&mut s1, "subscriber 1").await;
    let d2 = recv(&mut s2, "subscriber 2").await;
    let pair: BTreeSet<_> = [text(&d1), text(&d2)].into_iter().collect();
    assert_eq!(pair, expected("c", 2), "one message each");
    ack(d1).await;
    ack(d2).await;

    for i in 0..30 {
        publish(b, &topic, format!("s{i}")).await;
    }
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut total = 0;
    while total < 30 {
        let d = tokio::select! {
            d = recv(&mut s1, "subscriber 1") => d,
            d = recv(&mut s2, "subscriber 2") => d,
        };
        *counts.entry(text(&d)).or_default() += 1;
        total += 1;
        ack(d).await;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    assert_eq!(
        counts.into_keys().collect::<BTreeSet<_>>(),
        expected("s", 30)
    );
}

/// A topic whose subscriber holds every delivery it may does not hold up another topic.
async fn topics_independent(b: &Broker, names: &mut Names) {
    let (t1, t2) = (names.topic("busy"), names.topic("free"));
    let group = names.group("g");
    let mut s1 = subscribe(b, &t1, &group, 2).await;
    let mut s2 = subscribe(b, &t2, &group, 2).await;
    for i in 0..5 {
        publish(b, &t1, format!("x{i}")).await;
    }
    let held = [recv(&mut s1, "busy 0").await, recv(&mut s1, "busy 1").await];
    publish(b, &t2, "y0").await;
    let d = recv(&mut s2, "the other topic, while the first is held").await;
    assert_eq!(text(&d), "y0");
    assert_eq!(d.message.topic, t2);
    ack(d).await;
    let mut seen: BTreeSet<String> = held.iter().map(text).collect();
    for d in held {
        ack(d).await;
    }
    seen.extend(drain(&mut s1, 3, "busy, the rest").await);
    assert_eq!(seen, expected("x", 5));
}

/// A group outlives its subscribers: what is published while none is subscribed, and what
/// a subscriber held unsettled when it left, reach the next subscriber.
async fn durable_group(b: &Broker, names: &mut Names) {
    let topic = names.topic("durable");
    let group = names.group("g");
    let mut sub = subscribe(b, &topic, &group, 4).await;
    publish(b, &topic, "d0").await;
    assert_eq!(drain(&mut sub, 1, "before leaving").await, vec!["d0"]);
    publish(b, &topic, "d1").await;
    publish(b, &topic, "d2").await;
    let held = [
        recv(&mut sub, "held 1").await,
        recv(&mut sub, "held 2").await,
    ];
    drop(sub);
    drop(held);
    for i in 3..6 {
        publish(b, &topic, format!("d{i}")).await;
    }
    let mut sub = subscribe(b, &topic, &group, 4).await;
    let mut seen: BTreeSet<String> = drain(&mut sub, 5, "after coming back")
        .await
        .into_iter()
        .collect();
    seen.insert("d0".into());
    assert_eq!(seen, expected("d", 6));
    assert!(recv_quiet(&mut sub).await.is_none(), "an extra delivery");
}

/// With one delivery in flight, messages arrive in publish order (for brokers that
/// promise it).
async fn ordered(b: &Broker, names: &mut Names) {
    if !b.pubsub.features().ordered {
        return;
    }
    let topic = names.topic("order");
    let group = names.group("g");
    let mut sub = subscribe(b, &topic, &group, 1).await;
    for i in 0..40 {
        publish(b, &topic, format!("o{i:02}")).await;
    }
    let got = drain(&mut sub, 40, "in order").await;
    let want: Vec<String> = (0..40).map(|i| format!("o{i:02}")).collect();
    assert_eq!(got, want);
}

macro_rules! conformance {
    ($broker:ident: $($case:ident),* $(,)?) => {
        mod $broker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let broker = super::$broker().await;
                    let mut names = super::Names::default();
                    super::$case(&broker, &mut names).await;
                    (broker.cleanup)(names).await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($broker:ident),*) => {
        $(
            conformance!($broker:
                publish_receive,
                payloads,
                bad_input,
                nack_redelivers,
                in_flight_bound,
                groups_each_get_all,
                group_members_compete,
                topics_independent,
                durable_group,
                ordered,
            );
        )*
    };
}

suite!(in_memory, redis, redis_cluster, jetstream, rabbitmq, mqtt3);
