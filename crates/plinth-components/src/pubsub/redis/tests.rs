//! Tests against the real Redis at 127.0.0.1:6379 (`REDIS_HOST` overrides); they fail,
//! naming it, when it is missing. Every stream is named with a fresh uuid and deleted
//! afterwards; nothing else on the Redis is touched.

use std::time::Instant;

use plinth_core::ErrorKind;
use plinth_testkit::FaultProxy;

use super::config::{
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PROCESSING_TIMEOUT, DEFAULT_REDELIVER_INTERVAL,
    MIN_CONSUMER_EXPIRY,
};
use super::*;
use crate::pubsub::testing::{
    WAIT, assert_ends, assert_publish_fails_fast, assert_unreachable, closed_port, message,
    nothing_for, publish, recv, request, subscribe, text,
};

fn redis_host() -> String {
    std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

fn spec(host: &str, metadata: &[(&str, &str)]) -> ComponentSpec {
    let mut spec = ComponentSpec::new("pubsub", TYPE_NAME).with_metadata("redisHost", host);
    for (k, v) in metadata {
        spec = spec.with_metadata(*k, *v);
    }
    spec
}

/// A broker on the test Redis, initialised.
async fn component(metadata: &[(&str, &str)]) -> RedisPubSub {
    component_at(&redis_host(), metadata).await
}

async fn component_at(host: &str, metadata: &[(&str, &str)]) -> RedisPubSub {
    let config = Config::from_spec(&spec(host, metadata)).expect("config");
    let broker = RedisPubSub::new("pubsub", config);
    if let Err(e) = broker.init().await {
        panic!("the Redis at {host} must be reachable (set REDIS_HOST to move it): {e}");
    }
    broker
}

async fn raw() -> ::redis::aio::MultiplexedConnection {
    let host = redis_host();
    ::redis::Client::open(format!("redis://{host}/"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("the Redis at {host} must be reachable: {e}"))
}

async fn query<T: FromRedisValue>(cmd: &mut Cmd) -> T {
    cmd.query_async(&mut raw().await)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The streams a test creates; deleted when it ends, even when it fails. Declared before
/// the brokers, so that they are dropped (and stop) first.
struct Streams(Vec<String>);

impl Streams {
    fn new() -> Self {
        Self(Vec::new())
    }

    fn topic(&mut self, tag: &str) -> String {
        let t = format!("plinth-test-{tag}-{}", uuid::Uuid::new_v4().simple());
        self.0.push(t.clone());
        t
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let deleted = ::redis::Client::open(format!("redis://{}/", redis_host()))
            .and_then(|c| c.get_connection())
            .and_then(|mut c| ::redis::cmd("DEL").arg(&self.0).query::<i64>(&mut c));
        if let Err(e) = deleted {
            eprintln!("could not delete the test streams {:?}: {e}", self.0);
        }
    }
}

/// `XGROUP CREATE topic group 0 MKSTREAM`: a group at the start of a stream, made if missing.
async fn create_group(topic: &str, group: &str) {
    let _: () = query(
        ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(topic)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM"),
    )
    .await;
}

/// `XGROUP CREATECONSUMER topic group consumer`: a consumer that holds nothing.
async fn create_consumer(topic: &str, group: &str, consumer: &str) {
    let _: i64 = query(
        ::redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(topic)
            .arg(group)
            .arg(consumer),
    )
    .await;
}

/// `XREADGROUP` of one new entry by `consumer` of `group`, as a Plinth that then dies would:
/// the entry stays pending on it.
async fn read_one(topic: &str, group: &str, consumer: &str) -> Value {
    query(
        ::redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(topic)
            .arg(">"),
    )
    .await
}

/// `XPENDING topic group` summary: how many entries are pending.
async fn pending(topic: &str, group: &str) -> i64 {
    let summary: Value = query(::redis::cmd("XPENDING").arg(topic).arg(group)).await;
    match summary {
        Value::Array(parts) => match parts.first() {
            Some(Value::Int(n)) => *n,
            _ => panic!("XPENDING summary: {parts:?}"),
        },
        other => panic!("XPENDING summary: {other:?}"),
    }
}

/// The names of the consumers of a group.
async fn consumers(topic: &str, group: &str) -> Vec<String> {
    let infos: Vec<HashMap<String, Value>> =
        query(::redis::cmd("XINFO").arg("CONSUMERS").arg(topic).arg(group)).await;
    infos
        .iter()
        .filter_map(|c| c.get("name").and_then(super::text))
        .collect()
}

// ---- configuration ----

#[test]
fn config_defaults() {
    let config = Config::from_spec(&spec("localhost", &[])).expect("config");
    assert_eq!(config.processing_timeout, DEFAULT_PROCESSING_TIMEOUT);
    assert_eq!(config.redeliver_interval, DEFAULT_REDELIVER_INTERVAL);
    assert_eq!(config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
    assert_eq!(config.trim, Trim::Never);
    assert_eq!(config.consumer_id, None);
    assert_eq!((config.queue_depth, config.concurrency), (100, 10));
    assert_eq!(config.consumer_expiry, MIN_CONSUMER_EXPIRY);
    assert_eq!(config.read_block, Duration::from_secs(1));
}

#[test]
fn config_reads_dapr_keys_with_dapr_meaning() {
    let config = Config::from_spec(&spec(
        "localhost:6380",
        &[
            ("consumerID", "shared"),
            // A bare number is milliseconds, as in Dapr.
            ("processingTimeout", "60000"),
            ("redeliverInterval", "2s"),
            ("queueDepth", "1000"),
            ("concurrency", "4"),
            ("maxLenApprox", "10000"),
            ("maxMessageBytes", "1048576"),
        ],
    ))
    .expect("config");
    assert_eq!(config.consumer_id.as_deref(), Some("shared"));
    assert_eq!(config.processing_timeout, Duration::from_secs(60));
    assert_eq!(config.redeliver_interval, Duration::from_secs(2));
    assert_eq!((config.queue_depth, config.concurrency), (1000, 4));
    assert_eq!(config.trim, Trim::MaxLen(10_000));
    assert_eq!(config.max_message_bytes, 1_048_576);
    assert_eq!(config.consumer_expiry, Duration::from_secs(600));

    let config = Config::from_spec(&spec("localhost", &[("streamTTL", "7d")])).expect("config");
    assert_eq!(config.trim, Trim::MaxAge(Duration::from_secs(7 * 86_400)));
    let config = Config::from_spec(&spec("localhost", &[("streamTTL", "90m")])).expect("config");
    assert_eq!(config.trim, Trim::MaxAge(Duration::from_secs(90 * 60)));
    let config = Config::from_spec(&spec(
        "localhost",
        &[("maxLenApprox", "0"), ("streamTTL", "0")],
    ))
    .expect("config");
    assert_eq!(config.trim, Trim::Never);
    let config = Config::from_spec(&spec(
        "127.0.0.1:17001,127.0.0.1:17002",
        &[("redisType", "cluster")],
    ))
    .expect("a cluster is supported");
    assert!(format!("{config:?}").contains("cluster: true"));
}

#[test]
fn every_bad_value_names_its_field() {
    for (metadata, field) in [
        (vec![("processingTimeout", "0")], "processingTimeout"),
        (vec![("processingTimeout", "soon")], "processingTimeout"),
        (vec![("processingTimeout", "500")], "processingTimeout"),
        (vec![("redeliverInterval", "0")], "redeliverInterval"),
        (vec![("redeliverInterval", "10ms")], "redeliverInterval"),
        (vec![("redeliverInterval", "-1s")], "redeliverInterval"),
        (vec![("redeliverInterval", "48h")], "redeliverInterval"),
        (vec![("processingTimeout", "1e19")], "processingTimeout"),
        (vec![("processingTimeout", "1e30")], "processingTimeout"),
        (vec![("streamTTL", "1e30d")], "streamTTL"),
        (vec![("queueDepth", "0")], "queueDepth"),
        (vec![("queueDepth", "deep")], "queueDepth"),
        (vec![("concurrency", "-1")], "concurrency"),
        (vec![("maxLenApprox", "-5")], "maxLenApprox"),
        (vec![("maxLenApprox", "many")], "maxLenApprox"),
        (vec![("streamTTL", "forever")], "streamTTL"),
        (vec![("streamTTL", "100ms")], "streamTTL"),
        (
            vec![("maxLenApprox", "100"), ("streamTTL", "1h")],
            "streamTTL",
        ),
        (vec![("maxMessageBytes", "0")], "maxMessageBytes"),
        (vec![("maxMessageBytes", "big")], "maxMessageBytes"),
        (vec![("redisType", "sentinel")], "redisType"),
        (vec![("redisDB", "-1")], "redisDB"),
        (vec![("timeout", "0s")], "timeout"),
        (vec![("enableTLS", "maybe")], "enableTLS"),
    ] {
        let err = Config::from_spec(&spec("localhost", &metadata)).expect_err(field);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(
            err.message().contains(&format!("metadata.{field}")),
            "{metadata:?}: {err}"
        );
    }
    let err = Config::from_spec(&ComponentSpec::new("pubsub", TYPE_NAME)).expect_err("no host");
    assert!(err.message().contains("metadata.redisHost"), "{err}");
}

#[test]
fn secrets_never_show() {
    let secret = "s3cret-Pa55";
    let spec = spec(
        "localhost",
        &[("redisPassword", secret), ("redisUsername", "app")],
    );
    let config = Config::from_spec(&spec).expect("config");
    assert!(!format!("{config:?}").contains(secret));
    let broker = RedisPubSub::new("pubsub", config);
    assert!(!format!("{broker:?}").contains(secret));
    assert!(!format!("{spec:?}").contains(secret));
    // A URL with a password in redisHost is refused without echoing it.
    let url = format!("redis://app:{secret}@localhost:6379");
    let err =
        Config::from_spec(&ComponentSpec::new("p", TYPE_NAME).with_metadata("redisHost", url))
            .expect_err("a URL is not host:port");
    assert!(err.message().contains("metadata.redisHost"), "{err}");
    assert!(!err.message().contains(secret), "{err}");
    let err = Config::from_spec(
        &ComponentSpec::new("p", TYPE_NAME).with_metadata("redisHost", format!("{secret}@host")),
    )
    .expect_err("a user part is not a host");
    assert!(!err.message().contains(secret), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_showing_it() {
    let secret = "s3cret-Pa55";
    let config = Config::from_spec(&spec(
        &redis_host(),
        &[
            ("redisPassword", secret),
            ("redisUsername", "nobody-plinth"),
        ],
    ))
    .expect("config");
    let broker = RedisPubSub::new("pubsub", config);
    let err = broker
        .init()
        .await
        .expect_err("Redis refuses the credentials");
    assert!(!err.to_string().contains(secret), "{err}");
    assert!(!format!("{err:?}").contains(secret), "{err:?}");
}

// ---- data layout ----

#[tokio::test]
async fn entries_have_dapr_layout_plus_content_type() {
    let mut streams = Streams::new();
    let topic = streams.topic("layout");
    let broker = component(&[]).await;
    let mut md = Metadata::new();
    md.insert("k".into(), "v".into());
    broker
        .publish(PublishRequest {
            topic: topic.clone(),
            data: Bytes::from_static(b"\x00\xffbytes"),
            content_type: "application/octet-stream".into(),
            metadata: md,
        })
        .await
        .expect("publish");
    publish(&broker, &topic, "plain").await;
    let entries: Value = query(::redis::cmd("XRANGE").arg(&topic).arg("-").arg("+")).await;
    let entries = parse_entries(entries).expect("entries");
    assert_eq!(entries.len(), 2);
    let fields = |i: usize| -> HashMap<String, Vec<u8>> {
        entries[i]
            .fields
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect()
    };
    let first = fields(0);
    assert_eq!(
        first.get("data").map(Vec::as_slice),
        Some(&b"\x00\xffbytes"[..])
    );
    assert_eq!(
        first.get("metadata").map(Vec::as_slice),
        Some(&br#"{"k":"v"}"#[..])
    );
    assert_eq!(
        first.get("contentType").map(Vec::as_slice),
        Some(&b"application/octet-stream"[..])
    );
    // No metadata, no metadata field.
    let second = fields(1);
    assert_eq!(
        second.keys().map(String::as_str).collect::<HashSet<_>>(),
        HashSet::from(["data", "contentType"])
    );
    assert!(broker.features().ordered && broker.features().durable);
    broker.close().await;
}

#[tokio::test]
async fn reads_what_dapr_wrote() {
    let mut streams = Streams::new();
    let topic = streams.topic("dapr");
    let _: String = query(
        ::redis::cmd("XADD")
            .arg(&topic)
            .arg("*")
            .arg("data")
            .arg("only data"),
    )
    .await;
    let _: String = query(
        ::redis::cmd("XADD")
            .arg(&topic)
            .arg("*")
            .arg("data")
            .arg(r#"{"specversion":"1.0"}"#)
            .arg("metadata")
            .arg(r#"{"traceid":"abc","n":1}"#),
    )
    .await;
    let broker = component(&[]).await;
    // The group is created at 0: it gets what the stream already holds, as with Dapr.
    let mut sub = subscribe(&broker, &topic, "app", 4).await;
    let first = recv(&mut sub, "the entry with data only").await;
    assert_eq!(text(&first), "only data");
    assert!(first.message.metadata.is_empty());
    assert_eq!(first.message.content_type, "");
    assert_eq!(first.message.topic, topic);
    let second = recv(&mut sub, "the entry with metadata").await;
    assert_eq!(text(&second), r#"{"specversion":"1.0"}"#);
    assert_eq!(
        second.message.metadata.get("traceid").map(String::as_str),
        Some("abc")
    );
    assert_eq!(
        second.message.metadata.get("n").map(String::as_str),
        Some("1")
    );
    first.ack().await.expect("ack");
    second.ack().await.expect("ack");
    assert_eq!(pending(&topic, "app").await, 0);
    broker.close().await;
}

#[tokio::test]
async fn a_key_that_is_not_a_stream_is_refused_naming_the_topic() {
    let mut streams = Streams::new();
    let topic = streams.topic("string");
    let _: () = query(::redis::cmd("SET").arg(&topic).arg("not a stream")).await;
    let broker = component(&[]).await;
    let err = broker
        .publish(message(&topic, "x"))
        .await
        .expect_err("publish");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.message().contains(&topic), "{err}");
    let err = broker
        .subscribe(request(&topic, "g", 1))
        .await
        .expect_err("subscribe");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    // A stream replaced by another type under a subscription ends it.
    let replaced = streams.topic("replaced");
    let mut sub = subscribe(&broker, &replaced, "g", 1).await;
    let _: () = query(
        ::redis::cmd("SET")
            .arg(&replaced)
            .arg("not a stream any more"),
    )
    .await;
    assert_ends(&mut sub, WAIT, "the stream replaced").await;
    broker.close().await;
}

// ---- redelivery ----

#[tokio::test]
async fn what_a_dead_consumer_left_pending_is_delivered_after_processing_timeout() {
    let mut streams = Streams::new();
    let topic = streams.topic("dead");
    let broker = component(&[("processingTimeout", "2s"), ("redeliverInterval", "200ms")]).await;
    create_group(&topic, "g").await;
    publish(&broker, &topic, "orphan").await;
    // A consumer reads it and dies: never acknowledged, never renewed.
    let read = read_one(&topic, "g", "crashed-plinth").await;
    let read_at = Instant::now();
    assert_eq!(parse_read(read).expect("read").len(), 1);
    let mut sub = subscribe(&broker, &topic, "g", 4).await;
    let d = recv(&mut sub, "the orphan").await;
    let after = read_at.elapsed();
    assert_eq!(text(&d), "orphan");
    assert!(
        after >= Duration::from_millis(1900),
        "taken over after {after:?}, before processingTimeout"
    );
    assert!(
        after < Duration::from_secs(5),
        "taken over only after {after:?}"
    );
    d.ack().await.expect("ack");
    assert_eq!(pending(&topic, "g").await, 0);
    broker.close().await;
}

#[tokio::test]
async fn a_held_message_is_not_taken_over_while_its_holder_renews_it() {
    let mut streams = Streams::new();
    let topic = streams.topic("held");
    let settings = [("processingTimeout", "1s"), ("redeliverInterval", "100ms")];
    // Two components: two Plinth processes with subscribers of one group.
    let holder = component(&settings).await;
    let other = component(&settings).await;
    let mut sub = subscribe(&holder, &topic, "g", 1).await;
    publish(&holder, &topic, "mine").await;
    let held = recv(&mut sub, "the message").await;
    let mut rival = subscribe(&other, &topic, "g", 1).await;
    assert!(
        nothing_for(&mut rival, Duration::from_millis(3500)).await,
        "taken over while held and renewed"
    );
    // Dropped unsettled, it goes to whoever of the group reclaims first.
    drop(held);
    let again = tokio::select! {
        d = recv(&mut sub, "the holder") => d,
        d = recv(&mut rival, "the rival") => d,
    };
    assert_eq!(text(&again), "mine");
    again.ack().await.expect("ack");
    assert_eq!(pending(&topic, "g").await, 0);
    holder.close().await;
    other.close().await;
}

#[tokio::test]
async fn nack_after_delays_redelivery_and_frees_the_slot() {
    let mut streams = Streams::new();
    let topic = streams.topic("later");
    let broker = component(&[("processingTimeout", "2s"), ("redeliverInterval", "5s")]).await;
    let mut sub = subscribe(&broker, &topic, "g", 1).await;
    publish(&broker, &topic, "first").await;
    publish(&broker, &topic, "second").await;

    // Shorter than processingTimeout: Redis's idle time does it.
    let first = recv(&mut sub, "first").await;
    assert_eq!(text(&first), "first");
    let nacked_at = Instant::now();
    first
        .nack_after(Duration::from_millis(1200))
        .await
        .expect("nack_after");
    let second = recv(&mut sub, "second, while first waits").await;
    assert_eq!(text(&second), "second");
    assert!(nacked_at.elapsed() < Duration::from_millis(1200));
    second.ack().await.expect("ack");
    let again = recv(&mut sub, "first again").await;
    let waited = nacked_at.elapsed();
    assert_eq!(text(&again), "first");
    assert!(
        waited >= Duration::from_millis(1200),
        "back after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "back only after {waited:?}"
    );

    // Longer than processingTimeout: held and renewed for the difference first.
    let nacked_at = Instant::now();
    again
        .nack_after(Duration::from_secs(3))
        .await
        .expect("nack_after");
    let back = recv(&mut sub, "first, the second time").await;
    let waited = nacked_at.elapsed();
    assert_eq!(text(&back), "first");
    assert!(waited >= Duration::from_secs(3), "back after {waited:?}");
    assert!(
        waited < Duration::from_secs(6),
        "back only after {waited:?}"
    );
    back.ack().await.expect("ack");
    broker.close().await;
}

#[tokio::test]
async fn a_deleted_group_is_recreated() {
    let mut streams = Streams::new();
    let topic = streams.topic("nogroup");
    let broker = component(&[]).await;
    let mut sub = subscribe(&broker, &topic, "g", 4).await;
    publish(&broker, &topic, "before").await;
    let d = recv(&mut sub, "before").await;
    d.ack().await.expect("ack");
    let destroyed: i64 = query(::redis::cmd("XGROUP").arg("DESTROY").arg(&topic).arg("g")).await;
    assert_eq!(destroyed, 1);
    publish(&broker, &topic, "after").await;
    // Recreated at the start of the stream: what it still holds comes again (at least once).
    let mut got = Vec::new();
    while !got.iter().any(|t| t == "after") {
        let d = recv(&mut sub, "after the group was deleted").await;
        got.push(text(&d));
        d.ack().await.expect("ack");
    }
    let groups: Vec<HashMap<String, Value>> =
        query(::redis::cmd("XINFO").arg("GROUPS").arg(&topic)).await;
    assert_eq!(groups.len(), 1);
    broker.close().await;
}

#[tokio::test]
async fn only_empty_consumers_idle_long_enough_are_removed() {
    let mut streams = Streams::new();
    let topic = streams.topic("consumers");
    let broker = component(&[]).await;
    create_group(&topic, "g").await;
    publish(&broker, &topic, "kept pending").await;
    create_consumer(&topic, "g", "idle-empty").await;
    read_one(&topic, "g", "idle-busy").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    create_consumer(&topic, "g", "fresh-empty").await;
    let removed = broker
        .shared
        .remove_idle_consumers(&topic, "g", Duration::from_secs(1), None)
        .await
        .expect("remove");
    assert_eq!(removed, vec!["idle-empty".to_owned()]);
    let mut left = consumers(&topic, "g").await;
    left.sort();
    assert_eq!(left, vec!["fresh-empty".to_owned(), "idle-busy".to_owned()]);
    assert_eq!(pending(&topic, "g").await, 1, "nothing pending was lost");

    // A subscription that ends holding nothing removes its own consumer.
    let mut sub = subscribe(&broker, &topic, "g2", 1).await;
    let d = recv(&mut sub, "the message").await;
    d.ack().await.expect("ack");
    assert_eq!(consumers(&topic, "g2").await.len(), 1);
    drop(sub);
    let deadline = Instant::now() + WAIT;
    while !consumers(&topic, "g2").await.is_empty() {
        assert!(Instant::now() < deadline, "the ended consumer stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.close().await;
}

#[tokio::test]
async fn trimming_bounds_streams_and_lost_pending_entries_are_counted() {
    let mut streams = Streams::new();
    let (topic, aged) = (streams.topic("trim"), streams.topic("ttl"));
    let broker = component(&[
        ("maxLenApprox", "10"),
        ("processingTimeout", "1s"),
        ("redeliverInterval", "100ms"),
    ])
    .await;
    create_group(&topic, "g").await;
    publish(&broker, &topic, "first").await;
    read_one(&topic, "g", "crashed").await;
    for i in 0..300 {
        publish(&broker, &topic, &i.to_string()).await;
    }
    let len: i64 = query(::redis::cmd("XLEN").arg(&topic)).await;
    assert!(len < 300, "not trimmed: {len} entries");
    // The entry pending on the crashed consumer was trimmed: taking it over finds it gone.
    let mut sub = subscribe(&broker, &topic, "g", 1000).await;
    let deadline = Instant::now() + WAIT;
    while broker.trimmed() == 0 {
        assert!(
            Instant::now() < deadline,
            "the trimmed entry was never counted"
        );
        if let Ok(Some(d)) =
            tokio::time::timeout(Duration::from_millis(100), sub.receiver.recv()).await
        {
            assert_ne!(text(&d), "first", "a trimmed entry was delivered");
            d.ack().await.expect("ack");
        }
    }
    drop(sub);
    broker.close().await;

    let broker = component(&[("streamTTL", "1h")]).await;
    publish(&broker, &aged, "kept").await;
    let len: i64 = query(::redis::cmd("XLEN").arg(&aged)).await;
    assert_eq!(len, 1);
    broker.close().await;
}

#[tokio::test]
async fn close_ends_subscriptions_and_refuses_work() {
    let mut streams = Streams::new();
    let topic = streams.topic("close");
    let broker = component(&[]).await;
    let mut sub = subscribe(&broker, &topic, "g", 1).await;
    broker.close().await;
    assert_ends(&mut sub, WAIT, "closed").await;
    let err = broker
        .publish(message(&topic, "x"))
        .await
        .expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

// ---- failures ----

#[tokio::test]
async fn an_unreachable_redis_fails_fast_with_unavailable() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let config = Config::from_spec(&spec(&addr, &[("dialTimeout", "1s"), ("timeout", "1s")]))
        .expect("config");
    let broker = RedisPubSub::new("pubsub", config);
    assert_unreachable(&broker, &addr, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn publish_and_subscriptions_recover_after_the_connection_is_cut() {
    let mut streams = Streams::new();
    let topic = streams.topic("cut");
    let proxy = FaultProxy::start(redis_host()).await;
    let broker = component_at(
        &proxy.addr().to_string(),
        &[("dialTimeout", "1s"), ("timeout", "1s")],
    )
    .await;
    let mut sub = subscribe(&broker, &topic, "g", 4).await;
    publish(&broker, &topic, "before").await;
    let d = recv(&mut sub, "before the cut").await;
    assert_eq!(text(&d), "before");
    d.ack().await.expect("ack");

    proxy.cut();
    assert_publish_fails_fast(&broker, &topic, Duration::from_secs(3)).await;
    let err = broker.ping().await.expect_err("cut off");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    proxy.restore().await;
    let deadline = Instant::now() + WAIT;
    while let Err(e) = broker.publish(message(&topic, "after")).await {
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(Instant::now() < deadline, "publish never recovered: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same subscription reconnects its reader by itself.
    let d = recv(&mut sub, "after the cut").await;
    assert_eq!(text(&d), "after");
    d.ack().await.expect("ack");
    assert_eq!(pending(&topic, "g").await, 0);
    broker.close().await;
}
