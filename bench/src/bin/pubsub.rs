//! `bench-pubsub`: publish→deliver through Plinth against each broker's own Rust client.
//!
//! One call is one event's trip: publish it, and wait until the subscriber has it. Through
//! Plinth, the event is published with Layotto's `PublishEvent` (which answers once the
//! broker confirmed it) and delivered by Plinth to an `AppCallback` server in this process,
//! which answers SUCCESS (Plinth then acknowledges it with the broker). The baseline, in
//! the same run, is the broker's own client in this process with the same guarantees:
//!
//! - Redis Streams (`redis`): `XADD`; a consumer group read with `XREADGROUP` on a
//!   connection of its own, `XACK` after each event;
//! - NATS JetStream (`async-nats`): a file-backed stream, publish awaiting the PubAck, a
//!   durable pull consumer with explicit acks;
//! - RabbitMQ (`lapin`): a durable fanout exchange and queue, persistent messages with
//!   publisher confirms, manual acks with a prefetch;
//! - MQTT 3.1.1 (`rumqttc`): QoS 1 publish, a persistent session on a shared subscription
//!   with manual acks.
//!
//! Both sides bound unacknowledged events per subscriber the same way (`--in-flight`).
//! Every topic, stream, queue and session carries a per-invocation uuid and is removed at
//! the end. The benchmark refuses to start when a broker it needs does not answer.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, ValueEnum};
use futures::StreamExt as _;
use plinth_bench::report::{self, Check, DirectExtra};
use plinth_bench::stats::{self, Comparison, Side};
use plinth_bench::{
    Candidate, CommonArgs, Proc, ProcessSeries, Report, RunConfig, Session, Sut, SutSpec, pin,
};
use plinth_proto::runtime::v1 as pb;
use plinth_proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use plinth_proto::runtime::v1::runtime_client::RuntimeClient;
use plinth_proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use serde::Serialize;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use uuid::Uuid;

/// Plinth's p50 at most this many times the direct client's.
const TARGET_P50_RATIO: f64 = 1.5;

/// Label of the baseline.
const DIRECT: &str = "direct";

/// The bound on one event's trip; beyond it the call counts as an error (a lost event).
const TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// Publish→deliver through Plinth against each broker's own client.
#[derive(Debug, Parser)]
#[command(name = "bench-pubsub", args_override_self = true)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Brokers to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::ALL)]
    scenarios: Vec<Scenario>,
    /// Payload size in bytes (the app's data; Plinth adds its CloudEvent envelope).
    #[arg(long, default_value_t = 256)]
    payload_size: usize,
    /// Unacknowledged events per subscriber, on both sides (Plinth's `maxInFlight`, the
    /// direct consumers' prefetch / COUNT / max in flight).
    #[arg(long, default_value_t = 100)]
    in_flight: usize,
    /// Redis `host:port`.
    #[arg(long, env = "REDIS_HOST", default_value = "127.0.0.1:6379")]
    redis: String,
    /// NATS `host:port`.
    #[arg(long, env = "PLINTH_TEST_NATS", default_value = "127.0.0.1:4222")]
    nats: String,
    /// RabbitMQ `host:port` (guest/guest).
    #[arg(long, env = "PLINTH_TEST_RABBITMQ", default_value = "127.0.0.1:5672")]
    rabbitmq: String,
    /// MQTT broker `host:port`.
    #[arg(long, env = "PLINTH_TEST_MQTT", default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// Result name (`<results-dir>/<name>.json`).
    #[arg(long, default_value = "pubsub")]
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    InMemory,
    Redis,
    Jetstream,
    Rabbitmq,
    Mqtt,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::InMemory,
        Scenario::Redis,
        Scenario::Jetstream,
        Scenario::Rabbitmq,
        Scenario::Mqtt,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::InMemory => "in-memory",
            Scenario::Redis => "Redis Streams",
            Scenario::Jetstream => "NATS JetStream",
            Scenario::Rabbitmq => "RabbitMQ",
            Scenario::Mqtt => "MQTT",
        }
    }

    fn component_type(self) -> &'static str {
        match self {
            Scenario::InMemory => "pubsub.in-memory",
            Scenario::Redis => "pubsub.redis",
            Scenario::Jetstream => "pubsub.jetstream",
            Scenario::Rabbitmq => "pubsub.rabbitmq",
            Scenario::Mqtt => "pubsub.mqtt3",
        }
    }

    /// The Plinth component's name in the generated resources.
    fn component(self) -> &'static str {
        match self {
            Scenario::InMemory => "memory-pubsub",
            Scenario::Redis => "redis-pubsub",
            Scenario::Jetstream => "jetstream-pubsub",
            Scenario::Rabbitmq => "rabbitmq-pubsub",
            Scenario::Mqtt => "mqtt-pubsub",
        }
    }
}

/// The configuration as run, recorded in the JSON result.
#[derive(Debug, Clone, Serialize)]
struct Config {
    #[serde(flatten)]
    run: RunConfig,
    scenarios: Vec<Scenario>,
    payload_size: usize,
    in_flight: usize,
    /// Every topic, group and session of this invocation starts with it.
    prefix: String,
}

/// Names of one invocation.
#[derive(Debug, Clone)]
struct Names {
    prefix: String,
}

impl Names {
    fn new() -> Self {
        Self {
            prefix: format!("bench-{}", Uuid::new_v4().simple()),
        }
    }

    /// The topic one side of one scenario uses.
    fn topic(&self, scenario: Scenario, side: Side) -> String {
        let side = match side {
            Side::Baseline => "direct",
            Side::Candidate => "plinth",
        };
        format!("{}-{:?}-{side}", self.prefix, scenario).to_lowercase()
    }

    /// Plinth's app id: the consumer group of Plinth's subscriptions.
    fn app_id(&self) -> String {
        format!("{}-app", self.prefix)
    }

    /// The direct consumers' group.
    fn direct_group(&self) -> String {
        format!("{}-direct", self.prefix)
    }
}

/// Outstanding trips: the event's number → who waits for its delivery.
#[derive(Debug, Default)]
struct Waiters {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

impl Waiters {
    fn register(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        (id, rx)
    }

    fn forget(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// An event arrived: the number is the payload's prefix up to `|`.
    fn arrived(&self, payload: &[u8]) {
        let end = payload
            .iter()
            .position(|b| *b == b'|')
            .unwrap_or(payload.len());
        let Some(id) = std::str::from_utf8(&payload[..end])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(());
        }
    }

    fn payload(&self, id: u64, size: usize) -> Vec<u8> {
        let mut p = format!("{id}|").into_bytes();
        p.resize(size.max(p.len()), b'x');
        p
    }
}

/// Waits for the delivery of `id`, forgetting it on timeout.
async fn delivered(waiters: &Waiters, id: u64, rx: oneshot::Receiver<()>) -> anyhow::Result<()> {
    match tokio::time::timeout(TRIP_TIMEOUT, rx).await {
        Ok(Ok(())) => Ok(()),
        _ => {
            waiters.forget(id);
            bail!("event {id} not delivered within {TRIP_TIMEOUT:?}")
        }
    }
}

/// The app Plinth delivers to: answers SUCCESS and completes the trip.
#[derive(Debug)]
struct App {
    waiters: Arc<Waiters>,
    subscriptions: Vec<pb::TopicSubscription>,
}

#[tonic::async_trait]
impl AppCallback for App {
    async fn list_topic_subscriptions(
        &self,
        _request: tonic::Request<()>,
    ) -> Result<tonic::Response<pb::ListTopicSubscriptionsResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::ListTopicSubscriptionsResponse {
            subscriptions: self.subscriptions.clone(),
        }))
    }

    async fn on_topic_event(
        &self,
        request: tonic::Request<pb::TopicEventRequest>,
    ) -> Result<tonic::Response<pb::TopicEventResponse>, tonic::Status> {
        self.waiters.arrived(&request.get_ref().data);
        Ok(tonic::Response::new(pb::TopicEventResponse {
            status: TopicEventResponseStatus::Success as i32,
        }))
    }
}

/// The direct clients, one per broker, each publishing to and consuming from its topic.
#[derive(Clone)]
enum Direct {
    /// The in-memory scenario's reference: a bounded channel to a task in this process, the
    /// least any delivery can cost; Plinth's figure there is its own floor (two gRPC hops and
    /// the building block), with no broker behind it.
    Channel(tokio::sync::mpsc::Sender<Vec<u8>>),
    Redis {
        conn: redis::aio::MultiplexedConnection,
        topic: String,
    },
    Jetstream {
        js: async_nats::jetstream::Context,
        topic: String,
    },
    Rabbitmq {
        channel: lapin::Channel,
        topic: String,
    },
    Mqtt {
        client: rumqttc::AsyncClient,
        topic: String,
    },
}

/// What a direct client's background consumer needs to stop and clean up.
struct Consumer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Direct {
    async fn publish(&self, payload: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Direct::Channel(tx) => tx.send(payload).await?,
            Direct::Redis { conn, topic } => {
                let mut conn = conn.clone();
                // The fields pubsub.redis writes: Dapr's `data` and `metadata`.
                let _: String = redis::cmd("XADD")
                    .arg(topic)
                    .arg("*")
                    .arg("data")
                    .arg(payload)
                    .arg("metadata")
                    .arg("{}")
                    .query_async(&mut conn)
                    .await?;
            }
            Direct::Jetstream { js, topic } => {
                js.publish(topic.clone(), payload.into()).await?.await?;
            }
            Direct::Rabbitmq { channel, topic } => {
                let confirm = channel
                    .basic_publish(
                        topic.as_str().into(),
                        "".into(),
                        lapin::options::BasicPublishOptions::default(),
                        &payload,
                        lapin::BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("text/plain".into()),
                    )
                    .await?
                    .await?;
                ensure!(confirm.is_ack(), "the broker did not confirm the publish");
            }
            Direct::Mqtt { client, topic } => {
                // QoS 1; the PUBACK is the event loop's. The trip ends at delivery, which
                // comes after the broker accepted the message.
                client
                    .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, payload)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Connects the direct client of `scenario` and starts its consumer.
async fn direct_client(
    args: &Args,
    scenario: Scenario,
    names: &Names,
    waiters: Arc<Waiters>,
) -> anyhow::Result<(Direct, Consumer)> {
    let topic = names.topic(scenario, Side::Baseline);
    let group = names.direct_group();
    let in_flight = args.in_flight;
    match scenario {
        Scenario::InMemory => {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(in_flight);
            let task = tokio::spawn(async move {
                while let Some(payload) = rx.recv().await {
                    waiters.arrived(&payload);
                }
            });
            Ok((Direct::Channel(tx), Consumer { task }))
        }
        Scenario::Redis => {
            let client = redis::Client::open(format!("redis://{}/", args.redis))?;
            let conn = client.get_multiplexed_async_connection().await?;
            // The blocking read gets a connection of its own and no response timeout: a
            // read that timed out client-side would leave its entries pending, unseen.
            let mut reader = client
                .get_multiplexed_async_connection_with_config(
                    &redis::AsyncConnectionConfig::new().set_response_timeout(None),
                )
                .await?;
            let mut acker = conn.clone();
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&topic)
                .arg(&group)
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut acker)
                .await;
            if let Err(e) = created
                && e.code() != Some("BUSYGROUP")
            {
                return Err(e.into());
            }
            let consumer_name = format!("{group}-c");
            let (t, g) = (topic.clone(), group.clone());
            let task = tokio::spawn(async move {
                loop {
                    let read: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(&g)
                        .arg(&consumer_name)
                        .arg("COUNT")
                        .arg(in_flight)
                        .arg("BLOCK")
                        .arg(1000)
                        .arg("STREAMS")
                        .arg(&t)
                        .arg(">")
                        .query_async(&mut reader)
                        .await;
                    let Ok(reply) = read else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    for (id, data) in stream_entries(&reply) {
                        waiters.arrived(&data);
                        let mut acker = acker.clone();
                        let (t, g) = (t.clone(), g.clone());
                        tokio::spawn(async move {
                            let _: redis::RedisResult<i64> = redis::cmd("XACK")
                                .arg(&t)
                                .arg(&g)
                                .arg(&id)
                                .query_async(&mut acker)
                                .await;
                        });
                    }
                }
            });
            Ok((Direct::Redis { conn, topic }, Consumer { task }))
        }
        Scenario::Jetstream => {
            use async_nats::jetstream::{self, consumer, stream};
            let client = async_nats::connect(format!("nats://{}", args.nats)).await?;
            let js = jetstream::new(client);
            let stream = js
                .get_or_create_stream(stream::Config {
                    name: topic.clone(),
                    subjects: vec![topic.clone()],
                    retention: stream::RetentionPolicy::Limits,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await?;
            let consumer = stream
                .get_or_create_consumer(
                    &group,
                    consumer::pull::Config {
                        durable_name: Some(group.clone()),
                        filter_subject: topic.clone(),
                        ack_policy: consumer::AckPolicy::Explicit,
                        max_ack_pending: in_flight as i64,
                        ..Default::default()
                    },
                )
                .await?;
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(in_flight)
                .messages()
                .await?;
            let task = tokio::spawn(async move {
                while let Some(message) = messages.next().await {
                    let Ok(message) = message else { continue };
                    waiters.arrived(&message.payload);
                    tokio::spawn(async move {
                        let _ = message.ack().await;
                    });
                }
            });
            Ok((Direct::Jetstream { js, topic }, Consumer { task }))
        }
        Scenario::Rabbitmq => {
            use lapin::options::*;
            use lapin::types::FieldTable;
            let conn = lapin::Connection::connect(
                &format!("amqp://guest:guest@{}/%2f", args.rabbitmq),
                lapin::ConnectionProperties::default(),
            )
            .await?;
            let publisher = conn.create_channel().await?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            publisher
                .exchange_declare(
                    topic.as_str().into(),
                    lapin::ExchangeKind::Fanout,
                    durable,
                    FieldTable::default(),
                )
                .await?;
            let queue = format!("{group}-{topic}");
            let consumer_channel = conn.create_channel().await?;
            consumer_channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            consumer_channel
                .queue_bind(
                    queue.as_str().into(),
                    topic.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumer_channel
                .basic_qos(
                    in_flight.min(u16::MAX as usize) as u16,
                    BasicQosOptions::default(),
                )
                .await?;
            let mut deliveries = consumer_channel
                .basic_consume(
                    queue.as_str().into(),
                    "bench".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let task = tokio::spawn(async move {
                let _keep = (conn, consumer_channel);
                while let Some(delivery) = deliveries.next().await {
                    let Ok(delivery) = delivery else { continue };
                    waiters.arrived(&delivery.data);
                    tokio::spawn(async move {
                        let _ = delivery.ack(BasicAckOptions::default()).await;
                    });
                }
            });
            Ok((
                Direct::Rabbitmq {
                    channel: publisher,
                    topic,
                },
                Consumer { task },
            ))
        }
        Scenario::Mqtt => {
            use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
            let (host, port) = split_host_port(&args.mqtt)?;
            let mut sub_opts = MqttOptions::new(format!("{group}-sub"), host.clone(), port);
            sub_opts
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_keep_alive(Duration::from_secs(30));
            let (sub, mut sub_loop) = AsyncClient::new(sub_opts, in_flight.max(10));
            let mut network = sub_loop.network_options();
            network.set_tcp_nodelay(true);
            sub_loop.set_network_options(network.clone());
            sub.subscribe(format!("$share/{group}/{topic}"), QoS::AtLeastOnce)
                .await?;
            let mut pub_opts = MqttOptions::new(format!("{group}-pub"), host, port);
            pub_opts
                .set_clean_session(true)
                .set_keep_alive(Duration::from_secs(30))
                .set_inflight(in_flight.clamp(1, u16::MAX as usize) as u16);
            let (publisher, mut pub_loop) = AsyncClient::new(pub_opts, in_flight.max(10));
            pub_loop.set_network_options(network);
            let acker = sub.clone();
            let task = tokio::spawn(async move {
                let publishing = async {
                    loop {
                        if pub_loop.poll().await.is_err() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                let subscribing = async {
                    loop {
                        match sub_loop.poll().await {
                            Ok(Event::Incoming(Incoming::Publish(p))) => {
                                waiters.arrived(&p.payload);
                                let _ = acker.ack(&p).await;
                            }
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                };
                tokio::join!(publishing, subscribing);
            });
            Ok((
                Direct::Mqtt {
                    client: publisher,
                    topic,
                },
                Consumer { task },
            ))
        }
    }
}

/// The (id, `data` field) of each entry in an `XREADGROUP` reply of one stream:
/// `[[stream, [[id, [field, value, ...]], ...]]]` (nil when the block timed out).
fn stream_entries(reply: &redis::Value) -> Vec<(String, Vec<u8>)> {
    use redis::Value;
    let mut out = Vec::new();
    let Value::Array(streams) = reply else {
        return out;
    };
    for stream in streams {
        let Value::Array(parts) = stream else {
            continue;
        };
        let Some(Value::Array(entries)) = parts.get(1) else {
            continue;
        };
        for entry in entries {
            let Value::Array(pair) = entry else { continue };
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
                (pair.first(), pair.get(1))
            else {
                continue;
            };
            let data = fields.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), Value::BulkString(v)] if k == b"data" => Some(v.clone()),
                _ => None,
            });
            if let Some(data) = data {
                out.push((String::from_utf8_lossy(id).into_owned(), data));
            }
        }
    }
    out
}

fn split_host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{addr:?} is not host:port"))?;
    Ok((host.to_owned(), port.parse()?))
}

/// Writes one Component per selected broker into `dir`.
fn write_resources(dir: &Path, args: &Args, names: &Names) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for &scenario in &args.scenarios {
        let metadata: Vec<(&str, String)> = match scenario {
            Scenario::InMemory => Vec::new(),
            Scenario::Redis => vec![("redisHost", args.redis.clone())],
            Scenario::Jetstream => vec![("natsURL", format!("nats://{}", args.nats))],
            Scenario::Rabbitmq => vec![(
                "connectionString",
                format!("amqp://guest:guest@{}", args.rabbitmq),
            )],
            Scenario::Mqtt => vec![
                ("url", format!("tcp://{}", args.mqtt)),
                ("clientID", format!("{}-plinth", names.prefix)),
            ],
        };
        let mut yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {}\nspec:\n  type: {}\n  version: v1\n  metadata:\n",
            scenario.component(),
            scenario.component_type()
        );
        for (key, value) in metadata {
            let value = serde_json::to_string(&value).unwrap_or_default();
            yaml.push_str(&format!("  - name: {key}\n    value: {value}\n"));
        }
        let path = dir.join(format!("{}.yaml", scenario.component()));
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Serves the app Plinth delivers to on an ephemeral port; returns the port.
async fn serve_app(
    args: &Args,
    names: &Names,
    waiters: Arc<Waiters>,
) -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let subscriptions = args
        .scenarios
        .iter()
        .map(|&s| pb::TopicSubscription {
            pubsub_name: s.component().into(),
            topic: names.topic(s, Side::Candidate),
            metadata: [("maxInFlight".to_owned(), args.in_flight.to_string())]
                .into_iter()
                .collect(),
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = App {
        waiters,
        subscriptions,
    };
    let server = tonic::transport::Server::builder()
        .add_service(AppCallbackServer::new(app))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    Ok((port, task))
}

async fn connect_plinth(addr: std::net::SocketAddr) -> anyhow::Result<RuntimeClient<Channel>> {
    Ok(RuntimeClient::new(
        plinth_bench::sut::grpc_channel(addr).await?,
    ))
}

/// One trip through Plinth.
async fn plinth_trip(
    mut client: RuntimeClient<Channel>,
    waiters: Arc<Waiters>,
    scenario: Scenario,
    topic: Arc<str>,
    size: usize,
) -> anyhow::Result<()> {
    let (id, rx) = waiters.register();
    let published = client
        .publish_event(pb::PublishEventRequest {
            pubsub_name: scenario.component().into(),
            topic: topic.to_string(),
            data: waiters.payload(id, size),
            data_content_type: "text/plain".into(),
            metadata: Default::default(),
        })
        .await;
    if let Err(e) = published {
        waiters.forget(id);
        bail!("publish: {e}");
    }
    delivered(&waiters, id, rx).await
}

/// One trip through the broker's own client.
async fn direct_trip(direct: Direct, waiters: Arc<Waiters>, size: usize) -> anyhow::Result<()> {
    let (id, rx) = waiters.register();
    if let Err(e) = direct.publish(waiters.payload(id, size)).await {
        waiters.forget(id);
        return Err(e.context("publish"));
    }
    delivered(&waiters, id, rx).await
}

/// Before measuring: trips on both sides must complete (Plinth's subscription is open and
/// the direct consumer reads).
async fn preflight(
    plinth: &RuntimeClient<Channel>,
    direct: &Direct,
    waiters: &Arc<Waiters>,
    scenario: Scenario,
    topic: &Arc<str>,
    size: usize,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Events published before Plinth's consumer group exists may not be kept for it:
        // retry until one arrives.
        let (id, rx) = waiters.register();
        let mut client = plinth.clone();
        client
            .publish_event(pb::PublishEventRequest {
                pubsub_name: scenario.component().into(),
                topic: topic.to_string(),
                data: waiters.payload(id, size),
                data_content_type: "text/plain".into(),
                metadata: Default::default(),
            })
            .await
            .context("Plinth PublishEvent")?;
        match tokio::time::timeout(Duration::from_millis(500), rx).await {
            Ok(Ok(())) => break,
            _ => waiters.forget(id),
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{}: no event delivered through Plinth within 30 s",
            scenario.name()
        );
    }
    direct_trip(direct.clone(), Arc::clone(waiters), size)
        .await
        .with_context(|| format!("{}: the direct client's trip", scenario.name()))
}

/// Removes every topic, stream, queue and session of this invocation.
async fn cleanup(args: &Args, names: &Names) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for &scenario in &args.scenarios {
        let topics = [
            names.topic(scenario, Side::Baseline),
            names.topic(scenario, Side::Candidate),
        ];
        let groups = [names.direct_group(), names.app_id()];
        let done = async {
            match scenario {
                Scenario::InMemory => {}
                Scenario::Redis => {
                    let client = redis::Client::open(format!("redis://{}/", args.redis))?;
                    let mut c = client.get_multiplexed_async_connection().await?;
                    let _: i64 = redis::cmd("DEL").arg(&topics).query_async(&mut c).await?;
                }
                Scenario::Jetstream => {
                    let client = async_nats::connect(format!("nats://{}", args.nats)).await?;
                    let js = async_nats::jetstream::new(client);
                    for topic in &topics {
                        if let Ok(name) = js.stream_by_subject(topic.as_str()).await {
                            js.delete_stream(&name).await?;
                        }
                    }
                }
                Scenario::Rabbitmq => {
                    let conn = lapin::Connection::connect(
                        &format!("amqp://guest:guest@{}/%2f", args.rabbitmq),
                        lapin::ConnectionProperties::default(),
                    )
                    .await?;
                    let ch = conn.create_channel().await?;
                    for topic in &topics {
                        for group in &groups {
                            ch.queue_delete(
                                format!("{group}-{topic}").as_str().into(),
                                Default::default(),
                            )
                            .await?;
                        }
                        ch.exchange_delete(topic.as_str().into(), Default::default())
                            .await?;
                    }
                }
                Scenario::Mqtt => {
                    // Persistent sessions end by connecting once with a clean session.
                    let (host, port) = split_host_port(&args.mqtt)?;
                    for client_id in mqtt_sessions(names) {
                        let mut opts = rumqttc::MqttOptions::new(client_id, host.clone(), port);
                        opts.set_clean_session(true);
                        let (client, mut ev) = rumqttc::AsyncClient::new(opts, 10);
                        let connected = tokio::time::timeout(Duration::from_secs(5), async {
                            loop {
                                match ev.poll().await {
                                    Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_))) => {
                                        break Ok(());
                                    }
                                    Ok(_) => {}
                                    Err(e) => break Err(e),
                                }
                            }
                        })
                        .await;
                        let _ = client.disconnect().await;
                        let _ = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await;
                        connected.context("MQTT cleanup connect timed out")??;
                    }
                }
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = done {
            failures.push(format!("{}: {e:#}", scenario.name()));
        }
    }
    if !failures.is_empty() {
        bail!("cleanup failed: {}", failures.join("; "));
    }
    Ok(())
}

/// The MQTT client ids with persistent sessions this invocation created: the direct
/// subscriber's (Plinth's sessions are cleaned through the component's naming).
fn mqtt_sessions(names: &Names) -> Vec<String> {
    vec![format!("{}-sub", names.direct_group())]
}

#[derive(Debug, Default)]
struct RunsOut {
    process: ProcessSeries,
}

fn run_all(
    args: &Args,
    cfg: &Config,
    names: &Names,
    session: &mut Session,
    plinth_spec: &dyn Fn(u16) -> SutSpec,
) -> anyhow::Result<RunsOut> {
    let run_cfg = &cfg.run;
    let mut out = RunsOut::default();
    for run in 1..=run_cfg.runs {
        // A fresh runtime per run: the app server, the direct consumers and every
        // connection start cold on both sides alike.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let waiters = Arc::new(Waiters::default());
        let (app_port, app_task) = rt.block_on(serve_app(args, names, Arc::clone(&waiters)))?;
        // Plinth asks the app for its subscriptions until it answers, which it does once
        // the runtime runs again below.
        let mut sut = Sut::start(&plinth_spec(app_port), session.pinning().sut_core())?;
        if run == 1
            && let Ok(cpus) = sut.proc().cpus_allowed()
        {
            eprintln!("  {} pid {} on CPUs {cpus}", sut.label(), sut.pid());
        }
        out.process
            .startup_ms
            .push(Side::Candidate, run, sut.startup_time().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs_f64(run_cfg.settle_secs));
        let kib = sut
            .proc()
            .rss_kib()
            .with_context(|| format!("reading RSS of {}", sut.label()))?;
        out.process
            .idle_rss_kib
            .push(Side::Candidate, run, kib as f64);
        let measured = rt.block_on(async {
            let plinth = connect_plinth(sut.addr()).await?;
            for &scenario in &args.scenarios {
                let (direct, consumer) = direct_client(args, scenario, names, Arc::clone(&waiters))
                    .await
                    .with_context(|| format!("{}: the direct client", scenario.name()))?;
                let topic: Arc<str> = names.topic(scenario, Side::Candidate).into();
                preflight(
                    &plinth,
                    &direct,
                    &waiters,
                    scenario,
                    &topic,
                    args.payload_size,
                )
                .await?;
                for phase in run_cfg.phases() {
                    let m = session
                        .measure(
                            scenario.name(),
                            Side::Baseline,
                            DIRECT,
                            run,
                            Proc::Current,
                            phase,
                            || direct_trip(direct.clone(), Arc::clone(&waiters), args.payload_size),
                        )
                        .await;
                    eprintln!("{}", report::progress_line(m, run_cfg.runs, 16));
                    let m = session
                        .measure(
                            scenario.name(),
                            Side::Candidate,
                            sut.label(),
                            run,
                            sut.proc(),
                            phase,
                            || {
                                plinth_trip(
                                    plinth.clone(),
                                    Arc::clone(&waiters),
                                    scenario,
                                    Arc::clone(&topic),
                                    args.payload_size,
                                )
                            },
                        )
                        .await;
                    eprintln!("{}", report::progress_line(m, run_cfg.runs, 16));
                    sut.check_alive()?;
                }
                drop(consumer);
            }
            anyhow::Ok(())
        });
        app_task.abort();
        drop(rt);
        sut.stop_or_warn();
        measured?;
    }
    Ok(out)
}

fn checks(cfg: &Config, comparisons: &[Comparison]) -> Vec<Check> {
    let run = &cfg.run;
    let mut checks = Vec::new();
    for &scenario in &cfg.scenarios {
        for load in [run.low_load(), run.high_load()] {
            let c = comparisons
                .iter()
                .find(|c| c.scenario == scenario.name() && c.load == load && c.baseline == DIRECT);
            let check = Check::of(
                format!("{}: p50 plinth/direct at {}", scenario.name(), load.label()),
                c.and_then(|c| c.p50_ratio.as_ref()),
                report::ratio,
                format!("≤ {TARGET_P50_RATIO:.2}×"),
                |v| v <= TARGET_P50_RATIO,
            );
            // The in-memory row measures Plinth's own floor against an in-process channel:
            // shown, not a target.
            checks.push(if scenario == Scenario::InMemory {
                check.informational()
            } else {
                check
            });
        }
        checks.push(
            Check::throughput(
                scenario.name(),
                "plinth",
                DIRECT,
                run.max_load(),
                comparisons,
                0.0,
            )
            .informational(),
        );
    }
    checks
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let common = &args.common;
    ensure!(
        common.candidate == Candidate::Plinth,
        "bench-pubsub compares Plinth with the brokers' own clients; --candidate bare does not apply"
    );
    ensure!(!args.scenarios.is_empty(), "no scenarios selected");
    ensure!(
        args.payload_size >= 24,
        "--payload-size must be at least 24 bytes"
    );
    ensure!(args.in_flight > 0, "--in-flight must be positive");

    let pinning = pin::pin_generator(!common.no_pin, common.generator_core, common.sut_core);
    let names = Names::new();
    let cfg = Config {
        run: RunConfig::resolve(common)?,
        scenarios: args.scenarios.clone(),
        payload_size: args.payload_size,
        in_flight: args.in_flight,
        prefix: names.prefix.clone(),
    };
    let run_cfg = &cfg.run;

    let resources: PathBuf = std::env::temp_dir().join(format!("plinth-{}", names.prefix));
    write_resources(&resources, &args, &names)?;
    let app_id = names.app_id();
    let plinth_spec = |app_port: u16| {
        SutSpec::plinth(
            run_cfg.plinth_bin.clone(),
            "grpc",
            [
                format!("--resources-path={}", resources.display()),
                format!("--app-id={app_id}"),
                format!("--app-port={app_port}"),
                "--app-protocol=grpc".to_owned(),
            ]
            .into_iter()
            .chain(common.plinth_arg.iter().cloned()),
            common.startup_timeout(),
        )
    };

    let generator_cpus = Proc::Current.cpus_allowed().unwrap_or_default();
    eprintln!(
        "bench-pubsub: plinth vs {DIRECT} clients, {} run(s), generator on CPUs {generator_cpus}, Plinth on {}, names under {}",
        run_cfg.runs,
        pinning
            .sut_core()
            .map_or("any core".to_owned(), |c| format!("core {c}")),
        names.prefix,
    );

    let mut session = Session::new(pinning, run_cfg.max_in_flight);
    let outcome = run_all(&args, &cfg, &names, &mut session, &plinth_spec);
    let _ = std::fs::remove_dir_all(&resources);
    let cleaned = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(cleanup(&args, &names));
    let out = outcome?;
    if let Err(e) = cleaned {
        eprintln!("bench-pubsub: {e:#}");
    }

    let results = session.results();
    let checks = checks(&cfg, &results.comparisons);
    let added = stats::added_latency(&results.measurements);
    let notes = vec![
        format!(
            "One call is one event's trip from publish to delivery, acknowledged. Baseline `{DIRECT}`: the \
             broker's own Rust client in the benchmark process (on the generator's core), with the same \
             guarantees (confirmed publishes, a durable consumer, manual acks, {} unacknowledged events per \
             subscriber); Plinth delivers to an AppCallback server in the benchmark process. Brokers are \
             machine services and not pinned.",
            args.in_flight
        ),
        format!(
            "Payload {} bytes; through Plinth it travels inside a CloudEvent envelope. {}",
            args.payload_size,
            report::plinth_process_note(&out.process),
        ),
    ];
    let extra = DirectExtra {
        process: out.process,
        added,
        checks,
        notes,
    };
    let report = Report::new(
        &args.name,
        DIRECT,
        "plinth",
        cfg,
        generator_cpus,
        pinning,
        results,
        extra,
    );
    report.finish_direct(
        &format!("Pub/sub publish→deliver: plinth vs {DIRECT}"),
        &report.config.run,
        pinning,
        "broker",
        &args.common.results_dir(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_number() {
        let w = Waiters::default();
        let (id, mut rx) = w.register();
        let p = w.payload(id, 64);
        assert_eq!(p.len(), 64);
        w.arrived(&p);
        assert!(rx.try_recv().is_ok());
        w.arrived(b"not a number|xx");
        w.arrived(b"");
    }
}
