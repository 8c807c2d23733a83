//! Unit tests: metadata parsing without a broker, then the component against the machine's
//! NATS server with JetStream (`nats://127.0.0.1:4222`, or `PLINTH_TEST_NATS`). Every
//! stream a test makes has the test's uuid in its name and is deleted when the test ends,
//! pass or fail; nothing else on the server is touched.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plinth_core::{ErrorKind, Metadata};
use plinth_testkit::FaultProxy;

use super::*;
use crate::pubsub::testing::{
    assert_ends, assert_publish_fails_fast, assert_unreachable, closed_port, message, nothing_for,
    publish, quiet, recv, recv_within, request, subscribe, text,
};

// ---------------------------------------------------------------------------------------
// Metadata

fn base() -> ComponentSpec {
    ComponentSpec::new("js", TYPE_NAME).with_metadata("natsURL", "nats://127.0.0.1:4222")
}

fn config_err(spec: &ComponentSpec) -> Error {
    match Config::from_spec(spec) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(err) => err,
    }
}

#[test]
fn defaults() {
    let config = Config::from_spec(&base()).expect("valid");
    assert_eq!(config.url_display, "nats://127.0.0.1:4222");
    assert_eq!(config.connection_name, config::DEFAULT_CONNECTION_NAME);
    assert!(matches!(config.auth, Auth::None));
    assert!(config.tls.is_none());
    assert_eq!(config.stream_name, None);
    assert!(config.auto_create);
    assert_eq!(config.deliver_policy, consumer::DeliverPolicy::All);
    assert_eq!(config.ack_wait, Duration::from_secs(30));
    assert_eq!(config.keep_alive(), Duration::from_secs(10));
    assert_eq!((config.max_deliver, config.max_ack_pending), (-1, -1));
    assert!(config.backoff.is_empty());
    assert_eq!((config.replicas, config.memory_storage), (1, false));
    assert_eq!(config.api_prefix, "$JS.API");
    assert_eq!(config.max_message_bytes, usize::MAX);
    assert_eq!(config.timeout, Duration::from_secs(5));
    let broker = JetStreamPubSub::new("js".into(), config);
    assert_eq!(
        broker.features(),
        PubSubFeatures {
            ordered: true,
            durable: true
        }
    );
}

#[test]
fn dapr_keys_are_read_with_dapr_meaning() {
    let spec = base()
        .with_metadata("natsURL", "nats://a:4222, tls://b:4223")
        .with_metadata("name", "orders-sidecar")
        .with_metadata("streamName", "ORDERS")
        .with_metadata("durableName", "billing")
        .with_metadata("deliverPolicy", "sequence")
        .with_metadata("startSequence", "42")
        .with_metadata("ackWait", "1m")
        .with_metadata("maxDeliver", "5")
        .with_metadata("maxAckPending", "100")
        .with_metadata("backOff", "[1s, 2s, 4s]")
        .with_metadata("replicas", "3")
        .with_metadata("memoryStorage", "true")
        .with_metadata("ackPolicy", "explicit")
        .with_metadata("domain", "hub")
        .with_metadata("queueGroupName", "ignored")
        .with_metadata("flowControl", "true")
        .with_metadata("heartbeat", "10s")
        .with_metadata("rateLimit", "1000")
        .with_metadata("concurrency", "parallel")
        .with_metadata("consumerID", "shared")
        .with_metadata("maxMessageBytes", "1000");
    let config = Config::from_spec(&spec).expect("valid");
    assert_eq!(config.servers.len(), 2);
    assert_eq!(config.connection_name, "orders-sidecar");
    assert_eq!(config.stream_name.as_deref(), Some("ORDERS"));
    assert_eq!(config.durable_name.as_deref(), Some("billing"));
    assert_eq!(config.consumer_id.as_deref(), Some("shared"));
    assert_eq!(
        config.deliver_policy,
        consumer::DeliverPolicy::ByStartSequence { start_sequence: 42 }
    );
    assert_eq!(config.ack_wait, Duration::from_secs(60));
    assert_eq!((config.max_deliver, config.max_ack_pending), (5, 100));
    let secs = |s: &[u64]| {
        s.iter()
            .map(|s| Duration::from_secs(*s))
            .collect::<Vec<_>>()
    };
    assert_eq!(config.backoff, secs(&[1, 2, 4]));
    // The shortest redelivery delay is the first backoff: keep-alive every third of it.
    assert_eq!(config.keep_alive(), Duration::from_secs(1) / 3);
    assert_eq!((config.replicas, config.memory_storage), (3, true));
    assert_eq!(config.api_prefix, "$JS.hub.API");
    assert_eq!(config.max_message_bytes, 1000);
    let broker = JetStreamPubSub::new("js".into(), config);
    assert!(!broker.features().durable, "memory storage");

    let time = Config::from_spec(
        &base()
            .with_metadata("deliverPolicy", "time")
            .with_metadata("startTime", "1700000000"),
    )
    .expect("valid");
    assert!(matches!(
        time.deliver_policy,
        consumer::DeliverPolicy::ByStartTime { start_time } if start_time.unix_timestamp() == 1_700_000_000
    ));
    let prefix =
        Config::from_spec(&base().with_metadata("apiPrefix", "$JS.other.API.")).expect("valid");
    assert_eq!(prefix.api_prefix, "$JS.other.API");
    let plain_backoff = Config::from_spec(
        &base()
            .with_metadata("backOff", "500ms,1s")
            .with_metadata("maxDeliver", "3"),
    )
    .expect("valid");
    assert_eq!(plain_backoff.backoff.len(), 2);
}

#[test]
fn every_bad_value_names_its_field() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("natsURL", "")], "natsURL"),
        (&[("natsURL", "http://127.0.0.1:4222")], "natsURL"),
        (&[("natsURL", "ws://127.0.0.1:4222")], "natsURL"),
        (&[("natsURL", "nats://[::1")], "natsURL"),
        (&[("jwt", "eyJ")], "seedKey"),
        (&[("seedKey", "SUA")], "jwt"),
        (&[("jwt", "eyJ"), ("seedKey", "not-a-seed")], "seedKey"),
        (
            &[("token", "t"), ("jwt", "eyJ"), ("seedKey", "SUA")],
            "token",
        ),
        (&[("tls_client_cert", "/etc/cert.pem")], "tls_client_key"),
        (&[("tls_client_key", "/etc/key.pem")], "tls_client_cert"),
        (&[("caCert", "-----BEGIN CERTIFICATE-----\nnope")], "caCert"),
        (&[("streamName", "a.b")], "streamName"),
        (&[("streamName", "a b")], "streamName"),
        (&[("ackPolicy", "none")], "ackPolicy"),
        (&[("ackPolicy", "all")], "ackPolicy"),
        (&[("ackPolicy", "sometimes")], "ackPolicy"),
        (&[("deliverPolicy", "oldest")], "deliverPolicy"),
        (&[("deliverPolicy", "sequence")], "startSequence"),
        (&[("startSequence", "5")], "startSequence"),
        (&[("startSequence", "-5")], "startSequence"),
        (&[("deliverPolicy", "time")], "startTime"),
        (&[("startTime", "1700000000")], "startTime"),
        (
            &[("deliverPolicy", "time"), ("startTime", "yesterday")],
            "startTime",
        ),
        (&[("ackWait", "soon")], "ackWait"),
        (&[("ackWait", "500ms")], "ackWait"),
        (&[("maxDeliver", "-3")], "maxDeliver"),
        (&[("maxDeliver", "many")], "maxDeliver"),
        (&[("maxAckPending", "-2")], "maxAckPending"),
        (&[("backOff", "1s,soon")], "backOff"),
        (&[("backOff", "1s,2s")], "maxDeliver"),
        (&[("backOff", "1s,2s"), ("maxDeliver", "2")], "maxDeliver"),
        (&[("replicas", "7")], "replicas"),
        (&[("replicas", "two")], "replicas"),
        (&[("memoryStorage", "maybe")], "memoryStorage"),
        (&[("autoCreateStream", "maybe")], "autoCreateStream"),
        (&[("maxAge", "forever")], "maxAge"),
        (&[("maxMsgs", "-9")], "maxMsgs"),
        (&[("maxBytes", "lots")], "maxBytes"),
        (&[("domain", "a.b")], "domain"),
        (&[("apiPrefix", "a..b")], "apiPrefix"),
        (
            &[("domain", "hub"), ("apiPrefix", "$JS.x.API")],
            "apiPrefix",
        ),
        (&[("flowControl", "maybe")], "flowControl"),
        (&[("heartbeat", "often")], "heartbeat"),
        (&[("rateLimit", "-1")], "rateLimit"),
        (&[("concurrency", "many")], "concurrency"),
        (&[("timeout", "0s")], "timeout"),
        (&[("maxMessageBytes", "0")], "maxMessageBytes"),
    ];
    for (entries, field) in cases {
        let mut spec = base();
        for (key, value) in *entries {
            spec = spec.with_metadata(*key, *value);
        }
        let err = config_err(&spec);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{entries:?}");
        assert!(
            err.message().contains(&format!("metadata.{field}")),
            "{entries:?} should name {field}: {err}"
        );
    }
    let missing = config_err(&ComponentSpec::new("js", TYPE_NAME));
    assert!(missing.message().contains("metadata.natsURL"), "{missing}");
}

#[test]
fn secrets_never_show_in_debug_or_errors() {
    const SEED: &str = "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM";
    const JWT: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln";
    let token = base().with_metadata("token", "t0ken-secret");
    let debug = format!("{:?}", Config::from_spec(&token).expect("valid"));
    assert!(!debug.contains("t0ken-secret"), "{debug}");

    let jwt = base()
        .with_metadata("jwt", JWT)
        .with_metadata("seedKey", SEED);
    let config = Config::from_spec(&jwt).expect("valid");
    assert!(matches!(config.auth, Auth::Jwt { .. }));
    let debug = format!("{config:?}");
    assert!(!debug.contains(SEED) && !debug.contains(JWT), "{debug}");
    let bad_seed = base()
        .with_metadata("jwt", JWT)
        .with_metadata("seedKey", "SUsecret-but-wrong");
    let err = config_err(&bad_seed).to_string();
    assert!(!err.contains("SUsecret-but-wrong"), "{err}");

    let url = base().with_metadata("natsURL", "nats://alice:pa%40ss-word@127.0.0.1:4222");
    let config = Config::from_spec(&url).expect("valid");
    assert!(
        matches!(&config.auth, Auth::UserPassword(user, password) if user == "alice" && password == "pa@ss-word")
    );
    assert_eq!(config.url_display, "nats://***@127.0.0.1:4222");
    assert!(
        config.servers.iter().all(|s| !s.has_user_pass()),
        "the client never sees the credentials in a URL"
    );
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("pa%40ss") && !debug.contains("pa@ss"),
        "{debug}"
    );
    let broker = JetStreamPubSub::new("js".into(), config);
    assert!(!format!("{broker:?}").contains("pa%40ss"));
    let token_url = Config::from_spec(&base().with_metadata("natsURL", "nats://s3cret@host:4222"))
        .expect("valid");
    assert!(matches!(&token_url.auth, Auth::Token(t) if t == "s3cret"));
    assert!(!format!("{token_url:?}").contains("s3cret"));
    let both = config_err(
        &base()
            .with_metadata("natsURL", "nats://u:hunter2@host:4222")
            .with_metadata("token", "t0ken-secret"),
    )
    .to_string();
    assert!(
        !both.contains("hunter2") && !both.contains("t0ken-secret"),
        "{both}"
    );
    let malformed =
        config_err(&base().with_metadata("natsURL", "nats://u:hunter2@[::1")).to_string();
    assert!(!malformed.contains("hunter2"), "{malformed}");

    let key =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
    let with_key = base()
        .with_metadata("tls_client_cert", "/etc/client.crt")
        .with_metadata("tls_client_key", key);
    let debug = format!("{:?}", Config::from_spec(&with_key).expect("valid"));
    assert!(!debug.contains("c2VjcmV0"), "{debug}");
    let broken =
        "-----BEGIN PRIVATE KEY-----\n!!secret-key-material!!\n-----END PRIVATE KEY-----\n";
    let err = config_err(&with_key.with_metadata("tls_client_key", broken)).to_string();
    assert!(
        err.contains("metadata.tls_client_key") && !err.contains("secret-key-material"),
        "{err}"
    );
}

#[test]
fn factory_needs_a_url() {
    assert!(factory(&ComponentSpec::new("js", TYPE_NAME)).is_err());
    assert!(factory(&base()).is_ok());
}

// ---------------------------------------------------------------------------------------
// Against the broker

fn nats_url() -> String {
    std::env::var("PLINTH_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// `host:port` of [`nats_url`], for the proxy.
fn nats_addr() -> String {
    let url = nats_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    host_port.trim_end_matches('/').to_owned()
}

fn spec() -> ComponentSpec {
    ComponentSpec::new("js-test", TYPE_NAME).with_metadata("natsURL", nats_url())
}

async fn broker(spec: ComponentSpec) -> JetStreamPubSub {
    let config = Config::from_spec(&spec).expect("valid metadata");
    let broker = JetStreamPubSub::new(spec.name.clone(), config);
    if let Err(err) = broker.init().await {
        panic!(
            "NATS with JetStream must be reachable at {} (set PLINTH_TEST_NATS): {err}",
            nats_url()
        );
    }
    broker
}

/// A plain client for checking the broker's state.
async fn admin() -> jetstream::Context {
    let client = async_nats::connect(nats_url())
        .await
        .unwrap_or_else(|e| panic!("NATS must be reachable at {}: {e}", nats_url()));
    jetstream::new(client)
}

/// Deletes the streams a test made (the ones derived from its topics, and named ones)
/// when the test ends, even when it fails.
struct Streams(Vec<String>);

impl Streams {
    fn topic(&mut self, tag: &str) -> String {
        let topic = format!("plinth-test.{tag}.{}", uuid::Uuid::new_v4().simple());
        self.0.push(stream_name(&topic));
        topic
    }

    fn named(&mut self, tag: &str) -> String {
        let name = format!("plinth-test-{tag}-{}", uuid::Uuid::new_v4().simple());
        self.0.push(name.clone());
        name
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        // A thread of its own: Drop cannot await, and may run inside a runtime.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(client) = async_nats::connect(nats_url()).await else {
                    return;
                };
                let js = jetstream::new(client);
                for name in names {
                    let _ = js.delete_stream(&name).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn kind_of<T: fmt::Debug>(result: &Result<T>) -> Option<ErrorKind> {
    result.as_ref().err().map(Error::kind)
}

fn group(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_content_type_metadata_and_an_id() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("carry");
    let broker = broker(spec()).await;
    broker.ping().await.expect("ping");
    let mut sub = subscribe(&broker, &topic, &group("g"), 4).await;

    let mut metadata = Metadata::new();
    metadata.insert("seq".into(), "1".into());
    metadata.insert("odd key: ü".into(), "line\nbreak 100%".into());
    let req = PublishRequest {
        topic: topic.clone(),
        data: Bytes::from_static(b"\x00\x01binary"),
        content_type: "application/octet-stream".into(),
        metadata: metadata.clone(),
    };
    broker.publish(req).await.expect("publish");
    let delivery = recv(&mut sub, "the message").await;
    assert_eq!(delivery.message.topic, topic);
    assert_eq!(delivery.message.data, Bytes::from_static(b"\x00\x01binary"));
    assert_eq!(delivery.message.content_type, "application/octet-stream");
    assert_eq!(delivery.message.metadata, metadata);
    assert_eq!(
        delivery.message.id,
        format!("{}:1", stream_name(&topic)),
        "stream:sequence"
    );
    delivery.ack().await.expect("ack");

    // A CloudEvent's id becomes the message id, and JetStream drops a second publish of it.
    let id = format!("ce-{}", uuid::Uuid::new_v4());
    let event = serde_json::json!({"id": id, "specversion": "1.0", "source": "t", "type": "t", "data": "x"});
    for _ in 0..2 {
        let req = PublishRequest {
            topic: topic.clone(),
            data: Bytes::from(event.to_string()),
            content_type: "application/cloudevents+json".into(),
            metadata: Metadata::new(),
        };
        broker.publish(req).await.expect("publish the event");
    }
    let delivery = recv(&mut sub, "the event").await;
    assert_eq!(delivery.message.id, id);
    delivery.ack().await.expect("ack");
    assert!(quiet(&mut sub).await.is_none(), "the duplicate was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_map_to_durable_consumers_and_each_gets_everything() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("groups");
    let broker = broker(spec()).await;
    let (a, b) = (group("a"), group("b"));
    let mut sa = subscribe(&broker, &topic, &a, 8).await;
    let mut sb = subscribe(&broker, &topic, &b, 8).await;
    for i in 0..5 {
        publish(&broker, &topic, &format!("m{i}")).await;
    }
    for sub in [&mut sa, &mut sb] {
        let mut got = BTreeSet::new();
        for _ in 0..5 {
            let delivery = recv(sub, "a message").await;
            got.insert(text(&delivery));
            delivery.ack().await.expect("ack");
        }
        assert_eq!(got.len(), 5);
    }
    // The layout the docs describe.
    let js = admin().await;
    let mut stream = js
        .get_stream(stream_name(&topic))
        .await
        .expect("the stream");
    let info = stream.info().await.expect("stream info").clone();
    assert_eq!(info.config.subjects, vec![topic.clone()]);
    assert_eq!(
        info.config.retention,
        jetstream::stream::RetentionPolicy::Limits
    );
    assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    for g in [&a, &b] {
        let consumer = stream
            .consumer_info(consumer_name(g, &topic))
            .await
            .expect("the group's consumer");
        assert_eq!(consumer.config.durable_name, Some(consumer_name(g, &topic)));
        assert_eq!(consumer.config.filter_subject, topic);
        assert_eq!(consumer.config.ack_policy, AckPolicy::Explicit);
        assert_eq!(consumer.config.ack_wait, Duration::from_secs(30));
        assert!(consumer.config.deliver_subject.is_none(), "a pull consumer");
    }
    // Limits retention: acknowledged by both groups, and still kept (for groups to come).
    let state = stream.info().await.expect("stream info").state.clone();
    assert!(state.messages > 0, "{state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_is_kept_alive_past_ack_wait() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("keepalive");
    let broker = broker(spec().with_metadata("ackWait", "2s")).await;
    let g = group("g");
    let mut first = subscribe(&broker, &topic, &g, 1).await;
    let mut second = subscribe(&broker, &topic, &g, 1).await;
    publish(&broker, &topic, "held").await;
    let (held, first_won) = tokio::select! {
        d = recv(&mut first, "first") => (d, true),
        d = recv(&mut second, "second") => (d, false),
    };
    let other = if first_won { &mut second } else { &mut first };
    // Two and a half times ackWait: without the in-progress acks JetStream would have
    // redelivered it to the other subscriber (or the same) by now.
    assert!(
        recv_within(other, Duration::from_secs(5)).await.is_none(),
        "redelivered while held"
    );
    held.ack().await.expect("ack after holding");
    assert!(recv_within(other, Duration::from_secs(3)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_after_redelivers_no_sooner_than_the_delay_and_nack_at_once() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("nackafter");
    let broker = broker(spec()).await;
    let mut sub = subscribe(&broker, &topic, &group("g"), 1).await;
    publish(&broker, &topic, "later").await;
    let delivery = recv(&mut sub, "first delivery").await;
    let id = delivery.message.id.clone();
    let at = Instant::now();
    delivery
        .nack_after(Duration::from_secs(1))
        .await
        .expect("nack_after");
    assert!(
        at.elapsed() < Duration::from_millis(500),
        "the delay is the broker's"
    );
    let again = recv(&mut sub, "redelivery").await;
    let waited = at.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "redelivered after {waited:?}"
    );
    assert_eq!(again.message.id, id);
    let at = Instant::now();
    again.nack().await.expect("nack");
    let third = recv(&mut sub, "redelivery after nack").await;
    assert!(
        at.elapsed() < Duration::from_secs(2),
        "a plain nack is prompt"
    );
    third.ack().await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_position_survives_a_restart() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("restart");
    let s = spec().with_metadata("ackWait", "2s");
    let g = group("g");
    let before = broker(s.clone()).await;
    let mut sub = subscribe(&before, &topic, &g, 4).await;
    publish(&before, &topic, "m1").await;
    publish(&before, &topic, "m2").await;
    let m1 = recv(&mut sub, "m1").await;
    assert_eq!(text(&m1), "m1");
    m1.ack().await.expect("ack m1");
    let m2 = recv(&mut sub, "m2").await;
    assert_eq!(text(&m2), "m2");
    // A crash: the connection goes with m2 unsettled (forgotten, so not even a NAK is
    // tried; closing stopped its keep-alive).
    before.close().await;
    std::mem::forget(m2);
    drop(sub);
    drop(before);

    let after = broker(s).await;
    publish(&after, &topic, "m3").await;
    let mut sub = subscribe(&after, &topic, &g, 4).await;
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let delivery = recv(&mut sub, "after the restart").await;
        got.insert(text(&delivery));
        delivery.ack().await.expect("ack");
    }
    assert_eq!(got, BTreeSet::from(["m2".to_owned(), "m3".to_owned()]));
    assert!(
        recv_within(&mut sub, Duration::from_secs(3))
            .await
            .is_none(),
        "m1 was acknowledged before the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_gives_back_what_it_had_not_handed_out() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("dropped");
    // ackWait is the default 30s: anything seen below came back by a NAK, not a timeout.
    let broker = broker(spec()).await;
    let g = group("g");
    let sub = subscribe(&broker, &topic, &g, 4).await;
    for i in 0..3 {
        publish(&broker, &topic, &format!("m{i}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sub.receiver.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the subscription did not fetch 3"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at = Instant::now();
    drop(sub);
    // Its last pull request is still open: this one reaches the dropped subscription and
    // is given back too.
    publish(&broker, &topic, "m3").await;
    let mut next = subscribe(&broker, &topic, &g, 8).await;
    let mut got = BTreeSet::new();
    for _ in 0..4 {
        let delivery = recv(&mut next, "given back").await;
        got.insert(text(&delivery));
        delivery.ack().await.expect("ack");
    }
    assert_eq!(got.len(), 4);
    assert!(at.elapsed() < Duration::from_secs(15), "{:?}", at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stream_creation_is_safe() {
    let mut streams = Streams(Vec::new());
    // Three components, as three processes would be: two publish, one subscribes, all at
    // once to a topic no stream captures yet.
    let (a, b, c) = (
        broker(spec()).await,
        broker(spec()).await,
        broker(spec()).await,
    );
    let js = admin().await;
    for _ in 0..5 {
        let topic = streams.topic("race");
        let g = group("g");
        let (ra, rb, sub) = tokio::join!(
            a.publish(message(&topic, "from a")),
            b.publish(message(&topic, "from b")),
            c.subscribe(request(&topic, &g, 4))
        );
        ra.expect("a publishes");
        rb.expect("b publishes");
        let mut sub = sub.expect("c subscribes");
        assert_eq!(
            js.stream_by_subject(topic.clone())
                .await
                .expect("one stream"),
            stream_name(&topic)
        );
        publish(&a, &topic, "after").await;
        // The two racing messages arrive too (limits retention keeps them for groups to
        // come); the one after must arrive.
        let mut got = Vec::new();
        while got.last().map(String::as_str) != Some("after") {
            let delivery = recv(&mut sub, "after the race").await;
            got.push(text(&delivery));
            delivery.ack().await.expect("ack");
        }
        assert!(got.len() <= 3, "{got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limits_name_the_limit() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("size");
    let broker = broker(spec()).await;
    let max_payload = broker.conn().expect("connected").client.max_payload();
    let err = broker
        .publish(message(&topic, vec![b'x'; max_payload + 1]))
        .await
        .expect_err("over max_payload");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(
        err.message().contains(&max_payload.to_string()) && err.message().contains("max_payload"),
        "{err}"
    );
    // Headers count: a payload that fits alone but not with them.
    let err = broker
        .publish(message(&topic, vec![b'x'; max_payload - 5]))
        .await
        .expect_err("over max_payload with headers");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");

    let small = self::broker(spec().with_metadata("maxMessageBytes", "1000")).await;
    let err = small
        .publish(message(&topic, vec![b'x'; 1001]))
        .await
        .expect_err("over maxMessageBytes");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    assert!(err.message().contains("1000"), "{err}");
    small
        .publish(message(&topic, vec![b'x'; 1000]))
        .await
        .expect("at the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_that_are_not_subjects_are_invalid_arguments() {
    let broker = broker(spec()).await;
    for topic in ["with space", "star.*", "tail.>", "a*b", "dot.", "$SYS.x"] {
        let err = broker
            .publish(message(topic, "x"))
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{topic}: {err}");
        assert!(err.message().contains(&format!("{topic:?}")), "{err}");
        let sub = broker.subscribe(request(topic, "g", 1)).await;
        assert_eq!(kind_of(&sub), Some(ErrorKind::InvalidArgument), "{topic}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_creation_a_missing_stream_is_a_failed_precondition() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("nocreate");
    let broker = broker(spec().with_metadata("autoCreateStream", "false")).await;
    let err = broker
        .publish(message(&topic, "x"))
        .await
        .expect_err("no stream");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message().contains(&topic), "{err}");
    let sub = broker.subscribe(request(&topic, "g", 1)).await;
    assert_eq!(kind_of(&sub), Some(ErrorKind::FailedPrecondition));
    let js = admin().await;
    assert!(
        js.stream_by_subject(topic).await.is_err(),
        "nothing created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_stream_is_created_and_extended_per_topic() {
    let mut streams = Streams(Vec::new());
    let name = streams.named("named");
    let (t1, t2) = (format!("{name}.one"), format!("{name}.two"));
    let broker = broker(spec().with_metadata("streamName", name.clone())).await;
    let g = group("g");
    let mut s1 = subscribe(&broker, &t1, &g, 2).await;
    let mut s2 = subscribe(&broker, &t2, &g, 2).await;
    publish(&broker, &t1, "one").await;
    publish(&broker, &t2, "two").await;
    let d1 = recv(&mut s1, "topic one").await;
    let d2 = recv(&mut s2, "topic two").await;
    assert_eq!((text(&d1).as_str(), text(&d2).as_str()), ("one", "two"));
    d1.ack().await.expect("ack");
    d2.ack().await.expect("ack");
    let js = admin().await;
    let mut stream = js.get_stream(&name).await.expect("the named stream");
    let subjects = stream.info().await.expect("info").config.subjects.clone();
    assert_eq!(subjects, vec![t1.clone(), t2.clone()]);

    let strict = self::broker(
        spec()
            .with_metadata("streamName", name.clone())
            .with_metadata("autoCreateStream", "false"),
    )
    .await;
    let err = strict
        .publish(message(&format!("{t1}.other"), "x"))
        .await
        .expect_err("not captured");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_ends_the_subscription_and_subscribing_again_recreates_it() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("deleted");
    let broker = broker(spec()).await;
    let g = group("g");
    let mut sub = subscribe(&broker, &topic, &g, 2).await;
    let js = admin().await;
    js.delete_consumer_from_stream(consumer_name(&g, &topic), stream_name(&topic))
        .await
        .expect("delete the consumer");
    assert_ends(&mut sub, Duration::from_secs(15), "the consumer deleted").await;
    let mut again = subscribe(&broker, &topic, &g, 2).await;
    publish(&broker, &topic, "again").await;
    let delivery = recv(&mut again, "after subscribing again").await;
    assert_eq!(text(&delivery), "again");
    delivery.ack().await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_subscriptions_and_refuses_publishing() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("close");
    let broker = broker(spec()).await;
    let mut sub = subscribe(&broker, &topic, &group("g"), 1).await;
    broker.close().await;
    assert_ends(&mut sub, Duration::from_secs(5), "closed").await;
    let err = broker
        .publish(message(&topic, "x"))
        .await
        .expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_fast_with_unavailable() {
    let port = closed_port();
    let s = ComponentSpec::new("js", TYPE_NAME)
        .with_metadata("natsURL", format!("nats://127.0.0.1:{port}"))
        .with_metadata("timeout", "2s");
    let broker = JetStreamPubSub::new("js".into(), Config::from_spec(&s).expect("valid"));
    let topic = "plinth-test.unreachable";
    let err = broker
        .publish(message(topic, "x"))
        .await
        .expect_err("not init");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let server = format!("127.0.0.1:{port}");
    assert_unreachable(&broker, &server, Duration::from_secs(3)).await;
}

/// Wait until the component's client reports `connected`.
async fn connection_is(broker: &JetStreamPubSub, connected: bool) {
    let conn = broker.conn().expect("initialised");
    let mut watch = conn.connected.clone();
    tokio::time::timeout(Duration::from_secs(20), async {
        while conn.is_connected() != connected {
            if watch.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the client did not become connected={connected}"));
    assert_eq!(conn.is_connected(), connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_subscriptions_recover_after_the_connection_is_cut() {
    let mut streams = Streams(Vec::new());
    let topic = streams.topic("recover");
    let proxy = FaultProxy::start(nats_addr()).await;
    let s = ComponentSpec::new("js-proxy", TYPE_NAME)
        .with_metadata("natsURL", format!("nats://{}", proxy.addr()))
        .with_metadata("timeout", "2s");
    let broker = broker(s).await;
    let mut sub = subscribe(&broker, &topic, &group("g"), 2).await;
    publish(&broker, &topic, "before").await;
    let d = recv(&mut sub, "before the cut").await;
    assert_eq!(text(&d), "before");
    d.ack().await.expect("ack");

    proxy.cut();
    connection_is(&broker, false).await;
    assert_publish_fails_fast(&broker, &topic, Duration::from_millis(500)).await;
    assert_eq!(kind_of(&broker.ping().await), Some(ErrorKind::Unavailable));
    // While cut off the subscription waits: it neither delivers nor ends.
    assert!(
        nothing_for(&mut sub, Duration::from_secs(1)).await,
        "the subscription delivered or ended while cut off"
    );

    proxy.restore().await;
    connection_is(&broker, true).await;
    broker.ping().await.expect("ping after the reconnect");
    publish(&broker, &topic, "after").await;
    let d = recv(&mut sub, "the same subscription, after the reconnect").await;
    assert_eq!(text(&d), "after");
    d.ack().await.expect("ack");
}
