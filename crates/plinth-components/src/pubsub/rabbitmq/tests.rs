//! Tests against the real RabbitMQ at 127.0.0.1:5672, vhost `/`, as guest
//! (`PLINTH_TEST_RABBITMQ` overrides, as an AMQP URI); they fail when it is missing. Every
//! exchange and queue a test creates has a fresh uuid in its name and is deleted when the
//! test ends, even when it fails.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::uri::AMQPUri;
use plinth_core::ErrorKind;
use plinth_testkit::FaultProxy;

use super::*;
use crate::pubsub::testing::{
    WAIT, assert_ends, assert_publish_fails_fast, assert_unreachable, closed_port, message,
    nothing_for, publish, recv, request, subscribe, subscribe_with, text,
};

fn url() -> String {
    std::env::var("PLINTH_TEST_RABBITMQ")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `host:port` of the test broker, for a proxy.
fn upstream() -> String {
    let uri: AMQPUri = url().parse().expect("PLINTH_TEST_RABBITMQ is an AMQP URI");
    format!("{}:{}", uri.authority.host, uri.authority.port)
}

fn spec(extra: &[(&str, &str)]) -> ComponentSpec {
    let mut spec = ComponentSpec::new("rabbit", TYPE_NAME).with_metadata("connectionString", url());
    for (k, v) in extra {
        spec = spec.with_metadata(*k, *v);
    }
    spec
}

fn config(extra: &[(&str, &str)]) -> Result<Config> {
    Config::from_spec(&spec(extra))
}

fn build(spec: &ComponentSpec) -> RabbitMqPubSub {
    let config = Config::from_spec(spec).expect("valid config");
    RabbitMqPubSub::new(spec.name.clone(), config)
}

/// A component on the test broker, initialised; panics naming the broker when it is missing.
async fn broker(extra: &[(&str, &str)]) -> RabbitMqPubSub {
    let pubsub = build(&spec(extra));
    if let Err(err) = pubsub.init().await {
        panic!(
            "RabbitMQ must be reachable at {} (set PLINTH_TEST_RABBITMQ): {err}",
            upstream()
        );
    }
    pubsub
}

/// A plain AMQP channel on the test broker, for looking behind the component.
async fn raw() -> (lapin::Connection, Channel) {
    let connection = lapin::Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ must be reachable at {} (set PLINTH_TEST_RABBITMQ): {e}",
                upstream()
            )
        });
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

fn uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What a test created on the broker; deleted when dropped, also when the test panicked.
#[derive(Default)]
struct Created {
    exchanges: Vec<String>,
    queues: Vec<String>,
}

impl Created {
    fn topic(&mut self) -> String {
        let topic = format!("plinth-test-{}", uuid());
        self.exchanges.push(topic.clone());
        topic
    }

    /// A group, with the `{group}-{topic}` queue it gets (and the dead-letter exchange and
    /// queue it may get).
    fn group(&mut self, topic: &str) -> (String, String) {
        let group = format!("g{}", uuid());
        let queue = format!("{group}-{topic}");
        self.queues.push(queue.clone());
        self.queues.push(format!("dlq-{queue}"));
        self.exchanges.push(format!("dlx-{queue}"));
        (group, queue)
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        let (exchanges, queues) = (
            std::mem::take(&mut self.exchanges),
            std::mem::take(&mut self.queues),
        );
        // Its own runtime on its own thread: this may run while the test's runtime unwinds.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let (connection, channel) = raw().await;
                for queue in queues {
                    channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await
                        .unwrap_or_else(|e| panic!("deleting queue {queue}: {e}"));
                }
                for exchange in exchanges {
                    channel
                        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                        .await
                        .unwrap_or_else(|e| panic!("deleting exchange {exchange}: {e}"));
                }
                let _ = connection.close(200, "OK".into()).await;
            });
        })
        .join();
        if done.is_err() && !std::thread::panicking() {
            panic!("cleaning up the test's exchanges and queues failed");
        }
    }
}

/// Create the group's queue (and its dead-letter queue when configured) with a component
/// that then closes, so that no consumer is left on it when `close` returns.
async fn declare(extra: &[(&str, &str)], topic: &str, group: &str) {
    let pubsub = broker(extra).await;
    let sub = subscribe(&pubsub, topic, group, 1).await;
    pubsub.close().await;
    drop(sub);
}

/// The number of ready messages in `queue`; panics if it does not exist.
async fn ready(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("queue {queue} is missing: {e}"))
        .message_count()
}

fn classic() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    args
}

// --- configuration ---------------------------------------------------------------------

#[test]
fn defaults_are_durable_persistent_and_confirmed() {
    let config = config(&[]).expect("valid");
    assert!(config.durable && !config.delete_when_unused);
    assert_eq!(config.delivery_mode, 2);
    assert_eq!(config.exchange_kind, ExchangeKind::Fanout);
    assert_eq!(config.max_message_bytes, 128 * 1024 * 1024);
    assert_eq!(config.reconnect_wait, Duration::from_secs(3));
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(config.connection.uri.query.heartbeat, Some(10));
    assert_eq!(config.connection.uri.vhost, "/");
    assert!(config.ttl.is_none() && !config.enable_dead_letter && !config.single);
    assert!(config.consumer_id.is_none());
    let pubsub = build(&spec(&[]));
    assert_eq!(
        pubsub.features(),
        PubSubFeatures {
            ordered: true,
            durable: true
        }
    );
    let transient = build(&spec(&[("deliveryMode", "1")]));
    assert!(!transient.features().durable);
}

#[test]
fn dapr_keys_are_read() {
    let config = Config::from_spec(
        &ComponentSpec::new("r", TYPE_NAME)
            .with_metadata("hostname", "rabbit.internal:5673")
            .with_metadata("username", "app")
            .with_metadata("password", "pw")
            .with_metadata("consumerID", "shared")
            .with_metadata("durable", "false")
            .with_metadata("deletedWhenUnused", "true")
            .with_metadata("deliveryMode", "0")
            .with_metadata("prefetchCount", "7")
            .with_metadata("reconnectWaitSeconds", "10")
            .with_metadata("concurrencyMode", "single")
            .with_metadata("publisherConfirm", "false")
            .with_metadata("enableDeadLetter", "true")
            .with_metadata("maxLen", "100")
            .with_metadata("maxLenBytes", "4096")
            .with_metadata("exchangeKind", "topic")
            .with_metadata("ttlInSeconds", "60")
            .with_metadata("clientName", "orders")
            .with_metadata("heartBeat", "30s")
            .with_metadata("requeueInFailure", "true"),
    )
    .expect("valid");
    let uri = &config.connection.uri;
    assert_eq!(
        (uri.authority.host.as_str(), uri.authority.port),
        ("rabbit.internal", 5673)
    );
    assert_eq!(uri.authority.userinfo.username, "app");
    assert_eq!(uri.query.heartbeat, Some(30));
    assert_eq!(config.consumer_id.as_deref(), Some("shared"));
    assert!(!config.durable && config.delete_when_unused && config.single);
    assert_eq!((config.delivery_mode, config.prefetch_count), (0, 7));
    assert_eq!(config.reconnect_wait, Duration::from_secs(10));
    assert!(!config.publisher_confirm && config.enable_dead_letter);
    assert_eq!(
        (config.max_len, config.max_len_bytes),
        (Some(100), Some(4096))
    );
    assert_eq!(config.exchange_kind, ExchangeKind::Topic);
    assert_eq!(config.ttl, Some(Duration::from_secs(60)));
    assert_eq!(config.connection.client_name.as_deref(), Some("orders"));
    // amqps without a port means 5671.
    let tls = Config::from_spec(
        &ComponentSpec::new("r", TYPE_NAME)
            .with_metadata("hostname", "rabbit")
            .with_metadata("protocol", "amqps"),
    )
    .expect("valid");
    assert_eq!(tls.connection.uri.authority.port, 5671);
    // The connection string wins, as in Dapr; `amqp://host/` is the default vhost.
    let both = self::config(&[("hostname", "elsewhere")]).expect("valid");
    assert_eq!(both.connection.uri.authority.host, "127.0.0.1");
    let slash = Config::from_spec(
        &ComponentSpec::new("r", TYPE_NAME).with_metadata("connectionString", "amqp://h/"),
    )
    .expect("valid");
    assert_eq!(slash.connection.uri.vhost, "/");
}

#[test]
fn every_bad_value_names_its_field() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("autoAck", "true")], "autoAck"),
        (&[("autoAck", "sometimes")], "autoAck"),
        (&[("deliveryMode", "3")], "deliveryMode"),
        (&[("exchangeKind", "x-delayed")], "exchangeKind"),
        (&[("concurrencyMode", "many")], "concurrencyMode"),
        (&[("ttlInSeconds", "0")], "ttlInSeconds"),
        (&[("ttlInSeconds", "soon")], "ttlInSeconds"),
        (&[("maxLen", "-1")], "maxLen"),
        (&[("maxLenBytes", "lots")], "maxLenBytes"),
        (&[("prefetchCount", "70000")], "prefetchCount"),
        (&[("reconnectWaitSeconds", "0")], "reconnectWaitSeconds"),
        (&[("heartBeat", "often")], "heartBeat"),
        (&[("heartBeat", "100000")], "heartBeat"),
        (&[("dialTimeout", "0s")], "dialTimeout"),
        (&[("timeout", "never")], "timeout"),
        (&[("durable", "perhaps")], "durable"),
        (&[("deletedWhenUnused", "2")], "deletedWhenUnused"),
        (&[("publisherConfirm", "maybe")], "publisherConfirm"),
        (&[("requeueInFailure", "x")], "requeueInFailure"),
        (&[("enableDeadLetter", "x")], "enableDeadLetter"),
        (&[("maxMessageBytes", "0")], "maxMessageBytes"),
        (&[("protocol", "amqp1")], "protocol"),
        (&[("protocol", "amqps")], "protocol"),
        (&[("caCert", "not pem")], "caCert"),
        (&[("caCert", pem)], "caCert"),
        (&[("clientCert", pem)], "clientKey"),
        (&[("saslExternal", "true")], "saslExternal"),
        (&[("connectionString", "http://h")], "connectionString"),
        (&[("connectionString", "amqp://h:port")], "connectionString"),
    ];
    for (extra, field) in cases {
        let err = config(extra).expect_err(&format!("{extra:?} is refused"));
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(
            err.message().contains(&format!("metadata.{field}")),
            "{extra:?}: {err}"
        );
    }
    let bare = ComponentSpec::new("r", TYPE_NAME);
    let err = Config::from_spec(&bare).expect_err("no broker named");
    assert!(err.message().contains("metadata.connectionString"), "{err}");
    let err = Config::from_spec(
        &bare
            .clone()
            .with_metadata("hostname", "h")
            .with_metadata("password", "p"),
    )
    .expect_err("a password without a user");
    assert!(err.message().contains("metadata.password"), "{err}");
    assert!(factory(&bare).is_err());
    assert!(factory(&spec(&[])).is_ok());
}

#[test]
fn secrets_never_show() {
    let secret = "s3cr3t-Pa55";
    let key = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYDATA\n-----END PRIVATE KEY-----";
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    let spec = ComponentSpec::new("r", TYPE_NAME)
        .with_metadata("connectionString", format!("amqps://app:{secret}@h:5671/v"))
        .with_metadata("caCert", cert)
        .with_metadata("clientCert", cert)
        .with_metadata("clientKey", key);
    let pubsub = build(&spec);
    let shown = format!("{pubsub:?} {:?}", pubsub.inner.config);
    assert!(!shown.contains(secret), "{shown}");
    assert!(!shown.contains("TOPSECRETKEYDATA"), "{shown}");
    assert!(shown.contains("amqps://app@h:5671/v"), "{shown}");
    // Errors about a connection string never quote it.
    for bad in [
        format!("amqp://app:{secret}@h:notaport/"),
        format!("amqp:app:{secret}"),
        format!("app:{secret}@h"),
        format!("ftp://app:{secret}@h/"),
    ] {
        let err = Config::from_spec(
            &ComponentSpec::new("r", TYPE_NAME).with_metadata("connectionString", bad.clone()),
        )
        .expect_err(&bad);
        assert!(!err.message().contains(secret), "{err}");
        assert!(err.message().contains("metadata.connectionString"), "{err}");
    }
    let err = Config::from_spec(
        &ComponentSpec::new("r", TYPE_NAME)
            .with_metadata("hostname", "h")
            .with_metadata("username", "u")
            .with_metadata("password", secret)
            .with_metadata("clientKey", "not pem"),
    )
    .expect_err("clientKey is not PEM");
    assert!(
        !err.message().contains(secret) && !err.message().contains("not pem"),
        "{err}"
    );
    assert_eq!(
        pubsub
            .inner
            .config
            .connection
            .redact(format!("x {secret} y")),
        "x *** y"
    );
}

#[test]
fn subscription_metadata_is_read_and_checked() {
    let md = |pairs: &[(&str, &str)]| -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let options = SubscriptionOptions::from_metadata(&md(&[
        ("queueName", "orders"),
        ("routingKey", "a, b.#"),
        ("maxPriority", "9"),
        ("queueType", "quorum"),
        ("singleActiveConsumer", "true"),
        ("maxLen", "5"),
    ]))
    .expect("valid");
    assert_eq!(options.queue_name.as_deref(), Some("orders"));
    assert_eq!(options.routing_keys, vec!["a", "b.#"]);
    assert_eq!(options.max_priority, Some(9));
    assert_eq!(options.queue_type, "quorum");
    assert!(options.single_active_consumer);
    assert_eq!((options.max_len, options.max_len_bytes), (Some(5), None));
    let default = SubscriptionOptions::from_metadata(&Metadata::new()).expect("valid");
    assert_eq!(default.routing_keys, vec![""]);
    assert_eq!(default.queue_type, "classic");
    for (key, value) in [
        ("queueType", "stream"),
        ("maxPriority", "300"),
        ("singleActiveConsumer", "often"),
        ("maxLen", "0"),
        ("maxLenBytes", "-5"),
    ] {
        let err = SubscriptionOptions::from_metadata(&md(&[(key, value)])).expect_err(key);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains(key), "{err}");
    }
}

// --- the broker ------------------------------------------------------------------------

#[tokio::test]
async fn queue_and_exchange_are_durable_and_outlive_the_subscriber() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, queue) = created.group(&topic);
    declare(&[], &topic, &group).await;
    let pubsub = broker(&[]).await;
    let (_connection, channel) = raw().await;
    // A publish returns once the broker confirmed it: the message is in the queue by then.
    for n in 1..=3 {
        publish(&pubsub, &topic, &format!("m{n}")).await;
        assert_eq!(ready(&channel, &queue).await, n, "after publish {n}");
    }
    // Declaring them again as durable and not auto-deleted only succeeds if that is what
    // they are (the broker refuses an inequivalent declaration).
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                auto_delete: false,
                ..QueueDeclareOptions::default()
            },
            classic(),
        )
        .await
        .expect("the queue is durable and not auto-deleted");
    channel
        .exchange_declare(
            topic.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                auto_delete: false,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the exchange is a durable fanout, not auto-deleted");
    // The next subscriber gets what was published while nobody listened.
    let mut sub = subscribe(&pubsub, &topic, &group, 3).await;
    for n in 1..=3 {
        let d = recv(&mut sub, "a message published meanwhile").await;
        assert_eq!(text(&d), format!("m{n}"));
        d.ack().await.expect("ack");
    }
    // And a transient declaration of the same queue is refused: the check above is real.
    let err = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            classic(),
        )
        .await;
    assert!(err.is_err(), "a non-durable redeclaration was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_each_wait_for_their_confirm() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, queue) = created.group(&topic);
    declare(&[], &topic, &group).await;
    let pubsub = Arc::new(broker(&[]).await);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (pubsub, topic) = (Arc::clone(&pubsub), topic.clone());
            tokio::spawn(async move { pubsub.publish(message(&topic, format!("c{i}"))).await })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        task.expect("task").expect("publish");
    }
    let (_connection, channel) = raw().await;
    assert_eq!(ready(&channel, &queue).await, 200);
}

#[tokio::test]
async fn messages_carry_their_properties() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, queue) = created.group(&topic);
    declare(&[], &topic, &group).await;
    let pubsub = broker(&[]).await;
    let mut req = message(&topic, "{\"a\":1}");
    req.content_type = "application/json".into();
    req.metadata = [
        ("messageID", "id-1"),
        ("correlationID", "c-1"),
        ("type", "order.created"),
        ("priority", "4"),
        ("traceparent", "00-abc-def-01"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    pubsub.publish(req.clone()).await.expect("publish");
    // On the broker: persistent, stamped, with the metadata as headers.
    let (_connection, channel) = raw().await;
    let got = channel
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await
        .expect("basic.get")
        .expect("the message is in the queue");
    let p = &got.delivery.properties;
    assert_eq!(*p.delivery_mode(), Some(2));
    assert!(p.timestamp().is_some_and(|t| t > 1_600_000_000));
    assert_eq!(
        p.message_id().as_ref().map(ShortString::as_str),
        Some("id-1")
    );
    assert_eq!(
        p.correlation_id().as_ref().map(ShortString::as_str),
        Some("c-1")
    );
    assert_eq!(
        p.kind().as_ref().map(ShortString::as_str),
        Some("order.created")
    );
    assert_eq!(*p.priority(), Some(4));
    assert_eq!(
        p.content_type().as_ref().map(ShortString::as_str),
        Some("application/json")
    );
    let requeue = BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    got.delivery.acker.nack(requeue).await.expect("requeue");
    // Through the component: the same message, id and metadata.
    let mut sub = subscribe(&pubsub, &topic, &group, 1).await;
    let d = recv(&mut sub, "the message").await;
    assert_eq!(d.message.id, "id-1");
    assert_eq!(d.message.topic, topic);
    assert_eq!(d.message.content_type, "application/json");
    assert_eq!(d.message.metadata, req.metadata);
    assert_eq!(text(&d), "{\"a\":1}");
    d.ack().await.expect("ack");
}

#[tokio::test]
async fn a_publish_the_broker_nacks_is_an_error() {
    let mut created = Created::default();
    let topic = created.topic();
    let queue = format!("plinth-test-full-{}", uuid());
    created.queues.push(queue.clone());
    let pubsub = broker(&[]).await;
    // The component declares the exchange on the first publish (kept by nobody yet).
    publish(&pubsub, &topic, "unrouted").await;
    let (_connection, channel) = raw().await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .expect("declare");
    channel
        .queue_bind(
            queue.as_str().into(),
            topic.as_str().into(),
            ShortString::default(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    publish(&pubsub, &topic, "fits").await;
    let err = pubsub
        .publish(message(&topic, "overflows"))
        .await
        .expect_err("the broker nacked it");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("nacked"), "{err}");
    assert_eq!(ready(&channel, &queue).await, 1);
    // The publishing channel is still usable.
    channel
        .queue_purge(queue.as_str().into(), Default::default())
        .await
        .expect("purge");
    publish(&pubsub, &topic, "fits again").await;
}

/// Consume one message from `queue` with a plain consumer, within [`WAIT`].
async fn consume_one(channel: &Channel, queue: &str) -> lapin::message::Delivery {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            ShortString::default(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    match tokio::time::timeout(WAIT, consumer.next()).await {
        Ok(Some(Ok(d))) => d,
        other => panic!("nothing arrived in {queue}: {other:?}"),
    }
}

fn first_death_reason(d: &lapin::message::Delivery) -> Option<String> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-first-death-reason"))
        .and_then(header_text)
}

#[tokio::test]
async fn expired_messages_go_to_the_dead_letter_queue() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, queue) = created.group(&topic);
    let extra = [("enableDeadLetter", "true"), ("ttlInSeconds", "1")];
    declare(&extra, &topic, &group).await;
    let pubsub = broker(&extra).await;
    publish(&pubsub, &topic, "expires").await;
    let (_connection, channel) = raw().await;
    let dead = consume_one(&channel, &format!("dlq-{queue}")).await;
    assert_eq!(dead.data, b"expires");
    assert_eq!(first_death_reason(&dead).as_deref(), Some("expired"));
    assert_eq!(ready(&channel, &queue).await, 0);
}

#[tokio::test]
async fn overflowing_messages_go_to_the_dead_letter_queue() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, queue) = created.group(&topic);
    let extra = [("enableDeadLetter", "true"), ("maxLen", "1")];
    declare(&extra, &topic, &group).await;
    let pubsub = broker(&extra).await;
    publish(&pubsub, &topic, "oldest").await;
    publish(&pubsub, &topic, "newest").await;
    let (_connection, channel) = raw().await;
    let dead = consume_one(&channel, &format!("dlq-{queue}")).await;
    assert_eq!(dead.data, b"oldest");
    assert_eq!(first_death_reason(&dead).as_deref(), Some("maxlen"));
    let mut sub = subscribe(&pubsub, &topic, &group, 1).await;
    let d = recv(&mut sub, "the newest").await;
    assert_eq!(text(&d), "newest");
    d.ack().await.expect("ack");
}

#[tokio::test]
async fn routing_keys_select_messages_on_a_direct_exchange() {
    let mut created = Created::default();
    let topic = created.topic();
    let (a, _) = created.group(&topic);
    let (b, _) = created.group(&topic);
    let pubsub = broker(&[("exchangeKind", "direct")]).await;
    let key = |k: &str| Metadata::from([("routingKey".to_owned(), k.to_owned())]);
    let mut sub_a = subscribe_with(&pubsub, &topic, &a, 4, key("red")).await;
    let mut sub_b = subscribe_with(&pubsub, &topic, &b, 4, key("blue, green")).await;
    for (data, k) in [
        ("r1", "red"),
        ("g1", "green"),
        ("b1", "blue"),
        ("r2", "red"),
    ] {
        let mut req = message(&topic, data);
        req.metadata = key(k);
        pubsub.publish(req).await.expect("publish");
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..2 {
        let d = recv(&mut sub_a, "red").await;
        got_a.push(text(&d));
        d.ack().await.expect("ack");
        let d = recv(&mut sub_b, "blue or green").await;
        got_b.push(text(&d));
        d.ack().await.expect("ack");
    }
    assert_eq!(got_a, ["r1", "r2"]);
    assert_eq!(got_b, ["g1", "b1"]);
}

#[tokio::test]
async fn consumer_id_names_the_group() {
    let mut created = Created::default();
    let topic = created.topic();
    let (shared, queue) = created.group(&topic);
    let pubsub = broker(&[("consumerID", &shared)]).await;
    let mut s1 = subscribe(&pubsub, &topic, "app-one", 1).await;
    let mut s2 = subscribe(&pubsub, &topic, "app-two", 1).await;
    publish(&pubsub, &topic, "x").await;
    publish(&pubsub, &topic, "y").await;
    // One queue for both: they compete, one message each.
    let d1 = recv(&mut s1, "subscriber one").await;
    let d2 = recv(&mut s2, "subscriber two").await;
    let mut got = [text(&d1), text(&d2)];
    got.sort();
    assert_eq!(got, ["x", "y"]);
    let (_connection, channel) = raw().await;
    assert_eq!(ready(&channel, &queue).await, 0);
}

#[tokio::test]
async fn a_dropped_subscription_gives_back_what_it_had_not_handed_out() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, _) = created.group(&topic);
    let pubsub = broker(&[]).await;
    let mut sub = subscribe(&pubsub, &topic, &group, 3).await;
    for i in 1..=5 {
        publish(&pubsub, &topic, &i.to_string()).await;
    }
    let held = recv(&mut sub, "the first").await;
    assert_eq!(text(&held), "1");
    // Two more are in the subscription's buffer; dropping it gives them back.
    drop(sub);
    // What was handed out still settles.
    held.ack()
        .await
        .expect("an ack after the subscription was dropped");
    // The rest arrive once each (those given back may race the new consumer, so the order
    // is not checked).
    let mut next = subscribe(&pubsub, &topic, &group, 10).await;
    let mut got = Vec::new();
    for n in 0..4 {
        let d = recv(&mut next, &format!("message {n} of the rest")).await;
        got.push(text(&d));
        d.ack().await.expect("ack");
    }
    got.sort();
    assert_eq!(got, ["2", "3", "4", "5"]);
    assert!(
        nothing_for(&mut next, Duration::from_millis(500)).await,
        "a message came twice"
    );
}

#[tokio::test]
async fn an_ack_after_the_channel_closed_is_an_error() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, queue) = created.group(&topic);
    let pubsub = broker(&[]).await;
    let mut sub = subscribe(&pubsub, &topic, &group, 1).await;
    publish(&pubsub, &topic, "held").await;
    let d = recv(&mut sub, "held").await;
    pubsub.close().await;
    let err = d.ack().await.expect_err("the channel is closed");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // The broker requeued it.
    let (_connection, channel) = raw().await;
    assert_eq!(ready(&channel, &queue).await, 1);
    // A closed component refuses work.
    let err = pubsub
        .publish(message(&topic, "x"))
        .await
        .expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn names_the_broker_cannot_take_are_invalid() {
    let pubsub = broker(&[("maxMessageBytes", "1024")]).await;
    let long = "t".repeat(256);
    for topic in [long.as_str(), "amq.plinth-test"] {
        let err = pubsub
            .publish(message(topic, "x"))
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.message().contains(topic), "names the topic: {err}");
        let err = pubsub
            .subscribe(request(topic, "g", 1))
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    // A queue name over the limit: the group and topic together.
    let err = pubsub
        .subscribe(request(&"t".repeat(200), &"g".repeat(60), 1))
        .await
        .expect_err("refused");
    assert!(err.message().contains("queue"), "{err}");
    let topic = format!("plinth-test-{}", uuid());
    let mut req = message(&topic, "x");
    req.metadata.insert("k".repeat(300), "v".into());
    let err = pubsub.publish(req).await.expect_err("a long header key");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let mut req = message(&topic, "x");
    req.metadata.insert("big".into(), "v".repeat(200_000));
    let err = pubsub.publish(req).await.expect_err("headers over a frame");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    for (key, value) in [("ttlInSeconds", "soon"), ("priority", "high")] {
        let mut req = message(&topic, "x");
        req.metadata.insert(key.into(), value.into());
        let err = pubsub.publish(req).await.expect_err(key);
        assert!(err.message().contains(key), "{err}");
    }
    let err = pubsub
        .publish(PublishRequest {
            topic: topic.clone(),
            data: vec![0; 1025].into(),
            ..PublishRequest::default()
        })
        .await
        .expect_err("over maxMessageBytes");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    assert!(err.message().contains("1024"), "{err}");
}

#[tokio::test]
async fn an_unreachable_broker_fails_fast() {
    let closed = closed_port();
    let secret = "pw-never-shown";
    let spec = ComponentSpec::new("rabbit", TYPE_NAME).with_metadata(
        "connectionString",
        format!("amqp://u:{secret}@127.0.0.1:{closed}/"),
    );
    let pubsub = build(&spec);
    let err = assert_unreachable(&pubsub, &closed.to_string(), Duration::from_secs(3)).await;
    assert!(!err.message().contains(secret), "{err}");
}

/// The test broker's URI with the address of `proxy` in front of it.
fn url_via(proxy: &FaultProxy) -> String {
    let mut uri: AMQPUri = url().parse().expect("uri");
    uri.authority.host = proxy.addr().ip().to_string();
    uri.authority.port = proxy.port();
    uri.to_string()
}

#[tokio::test]
async fn a_broker_that_stops_answering_times_out() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, queue) = created.group(&topic);
    let proxy = FaultProxy::start(upstream()).await;
    let spec = ComponentSpec::new("rabbit", TYPE_NAME)
        .with_metadata("connectionString", url_via(&proxy))
        // Long enough that declaring the subscription's exchange and queue never times out
        // on a loaded machine before the freeze.
        .with_metadata("timeout", "2s");
    let pubsub = build(&spec);
    pubsub.init().await.expect("init through the proxy");
    let mut sub = subscribe(&pubsub, &topic, &group, 1).await;
    publish(&pubsub, &topic, "one").await;
    let d = recv(&mut sub, "one").await;
    proxy.freeze();
    let started = Instant::now();
    let err = pubsub
        .publish(message(&topic, "two"))
        .await
        .expect_err("no confirm comes");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("within"), "{err}");
    assert!(pubsub.ping().await.is_err());
    // A bound on the two timeouts (2 s each), not a measurement: the calls do not hang.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // The connection outlives the freeze (shorter than the heartbeat timeout): what was
    // held still settles, and publishing works again on a fresh channel.
    proxy.thaw();
    d.ack().await.expect("ack after the thaw");
    publish(&pubsub, &topic, "three").await;
    let mut got = Vec::new();
    for n in 0..2 {
        let d = recv(&mut sub, &format!("message {n} after the thaw")).await;
        got.push(text(&d));
        d.ack().await.expect("ack");
    }
    // "two" timed out, but its frames were sent and reached the broker after the thaw: a
    // publish that failed with UNAVAILABLE may still have been taken (at least once).
    assert_eq!(got, ["two", "three"]);
    let (_connection, channel) = raw().await;
    assert_eq!(ready(&channel, &queue).await, 0);
    pubsub.close().await;
}

#[tokio::test]
async fn recovers_after_the_connection_is_cut() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, _) = created.group(&topic);
    let proxy = FaultProxy::start(upstream()).await;
    let spec = ComponentSpec::new("rabbit", TYPE_NAME)
        .with_metadata("connectionString", url_via(&proxy))
        .with_metadata("reconnectWaitSeconds", "1");
    let pubsub = build(&spec);
    pubsub.init().await.expect("init through the proxy");
    let mut sub = subscribe(&pubsub, &topic, &group, 4).await;
    publish(&pubsub, &topic, "before").await;
    publish(&pubsub, &topic, "held").await;
    let before = recv(&mut sub, "before").await;
    assert_eq!(text(&before), "before");
    before.ack().await.expect("ack");
    let held = recv(&mut sub, "held").await;

    proxy.cut();
    // The subscription ends (the building block would subscribe again)...
    assert_ends(&mut sub, WAIT, "cut off").await;
    // ...an ack on the lost channel fails without panicking...
    let err = held.ack().await.expect_err("the channel is gone");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // ...and publishing fails fast.
    for _ in 0..3 {
        assert_publish_fails_fast(&pubsub, &topic, Duration::from_secs(3)).await;
    }
    assert!(pubsub.ping().await.is_err());
    assert!(pubsub.subscribe(request(&topic, &group, 4)).await.is_err());

    proxy.restore().await;
    // The component reconnects by itself once its backoff (at most 1s here) is over; no
    // signal says when the broker is back, so publish until it works.
    let deadline = Instant::now() + WAIT;
    loop {
        match pubsub.publish(message(&topic, "after")).await {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no recovery within {WAIT:?}: {err}"),
        }
    }
    pubsub.ping().await.expect("ping after recovery");
    // A new subscription gets the message held when the connection broke (the broker
    // requeued it), then the one published after. The ack of "before" may have been cut in
    // flight too (basic.ack has no confirmation): then the broker rightly delivers it
    // again first, as at-least-once allows.
    let mut sub = subscribe(&pubsub, &topic, &group, 4).await;
    let mut again = recv(&mut sub, "held, redelivered").await;
    if text(&again) == "before" {
        again.ack().await.expect("ack");
        again = recv(&mut sub, "held, redelivered").await;
    }
    assert_eq!(text(&again), "held");
    again.ack().await.expect("ack");
    let after = recv(&mut sub, "after").await;
    assert_eq!(text(&after), "after");
    after.ack().await.expect("ack");
    pubsub.close().await;
}

#[tokio::test]
async fn a_silent_broker_times_out() {
    // Accepts connections and never answers: a frozen proxy.
    let proxy = FaultProxy::start(upstream()).await;
    proxy.freeze();
    let port = proxy.port();
    let spec = ComponentSpec::new("rabbit", TYPE_NAME)
        .with_metadata("connectionString", format!("amqp://u:p@127.0.0.1:{port}/"))
        .with_metadata("dialTimeout", "500ms");
    let pubsub = build(&spec);
    let started = Instant::now();
    let err = pubsub.init().await.expect_err("no answer");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("within"), "{err}");
    // A bound on the two timeouts (2 s each), not a measurement: the calls do not hang.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn refusals_keep_their_meaning() {
    let wrong = url().replacen("guest:guest", "guest:wrong-password", 1);
    let pubsub = build(&spec(&[]).with_metadata("connectionString", wrong));
    let err = pubsub.init().await.expect_err("a wrong password");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!err.message().contains("wrong-password"), "{err}");
    // A topic whose exchange exists with another kind: FAILED_PRECONDITION naming it, and
    // the publishing channel keeps working for other topics.
    let mut created = Created::default();
    let (fanout, other) = (created.topic(), created.topic());
    let a = broker(&[]).await;
    publish(&a, &fanout, "x").await;
    let b = broker(&[("exchangeKind", "topic")]).await;
    let err = b
        .publish(message(&fanout, "y"))
        .await
        .expect_err("another kind");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message().contains(&fanout), "{err}");
    publish(&b, &other, "z").await;
    publish(&b, &other, "z").await;
}

#[tokio::test]
async fn a_deleted_exchange_is_declared_again() {
    let mut created = Created::default();
    let topic = created.topic();
    let (group, queue) = created.group(&topic);
    let pubsub = broker(&[]).await;
    publish(&pubsub, &topic, "first").await;
    let (_connection, channel) = raw().await;
    channel
        .exchange_delete(topic.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete the exchange behind the component's back");
    // The component had it cached; the broker refuses the publish, the component declares
    // the exchange again and publishes once more.
    publish(&pubsub, &topic, "second").await;
    channel
        .exchange_delete(topic.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete it again");
    // A subscription fails to bind to the missing exchange; the next one declares it.
    let req = request(&topic, &group, 1);
    let err = pubsub.subscribe(req).await.expect_err("no exchange");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let mut sub = subscribe(&pubsub, &topic, &group, 1).await;
    publish(&pubsub, &topic, "third").await;
    let d = recv(&mut sub, "third").await;
    assert_eq!(text(&d), "third");
    d.ack().await.expect("ack");
    assert_eq!(ready(&channel, &queue).await, 0);
}
