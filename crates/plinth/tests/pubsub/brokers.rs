//! The brokers the pub/sub suites run Plinth against: the machine's shared ones (Redis,
//! NATS with JetStream, RabbitMQ, Mosquitto, each on its standard loopback port, or the
//! address in an environment variable), and private instances that a fault test starts,
//! stops and restarts on a port and data directory of its own, configured for durability.
//!
//! Everything a test creates on a shared broker carries a uuid in its name (topics, app ids,
//! client ids); [`cleanup`] removes it afterwards. Nothing is flushed or purged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::app::PUBSUB;
use crate::common::{scratch, write};

/// A pub/sub component type the suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broker {
    InMemory,
    Redis,
    JetStream,
    RabbitMq,
    Mqtt,
}

impl Broker {
    /// The component type.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Broker::InMemory => "pubsub.in-memory",
            Broker::Redis => "pubsub.redis",
            Broker::JetStream => "pubsub.jetstream",
            Broker::RabbitMq => "pubsub.rabbitmq",
            Broker::Mqtt => "pubsub.mqtt3",
        }
    }

    /// The machine's instance: `host:port`.
    pub(crate) fn shared_address(self) -> String {
        let (var, default) = match self {
            Broker::InMemory => return String::new(),
            Broker::Redis => ("REDIS_HOST", "127.0.0.1:6379"),
            Broker::JetStream => ("PLINTH_TEST_NATS", "127.0.0.1:4222"),
            Broker::RabbitMq => ("PLINTH_TEST_RABBITMQ", "127.0.0.1:5672"),
            Broker::Mqtt => ("PLINTH_TEST_MQTT", "127.0.0.1:1883"),
        };
        std::env::var(var).unwrap_or_else(|_| default.into())
    }

    /// The component metadata that points it at the broker at `address`.
    pub(crate) fn connection(self, address: &str) -> Vec<(String, String)> {
        let kv = |k: &str, v: String| vec![(k.to_string(), v)];
        match self {
            Broker::InMemory => Vec::new(),
            Broker::Redis => kv("redisHost", address.into()),
            Broker::JetStream => kv("natsURL", format!("nats://{address}")),
            Broker::RabbitMq => kv("connectionString", format!("amqp://guest:guest@{address}")),
            Broker::Mqtt => kv("url", format!("tcp://{address}")),
        }
    }

    /// Whether the broker keeps per-topic order for one subscriber with one event in flight.
    pub(crate) fn ordered(self) -> bool {
        true
    }

    /// The command that starts a private instance, and what must be on this machine for it.
    fn binary(self) -> &'static str {
        match self {
            Broker::InMemory => "",
            Broker::Redis => "redis-server",
            Broker::JetStream => "nats-server",
            Broker::RabbitMq => "rabbitmq-server",
            Broker::Mqtt => "mosquitto",
        }
    }
}

/// A resources directory holding one Component named [`PUBSUB`] of `broker`'s type at
/// `address`, with `extra` metadata; pass it with `--resources-path`.
pub(crate) fn resources(broker: Broker, address: &str, extra: &[(&str, &str)]) -> PathBuf {
    let dir = scratch("resources");
    write_component(&dir, broker, address, extra);
    dir
}

/// Write (or rewrite) the component file in `dir`.
pub(crate) fn write_component(dir: &Path, broker: Broker, address: &str, extra: &[(&str, &str)]) {
    let mut metadata = broker.connection(address);
    metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {PUBSUB}\nspec:\n  type: {}\n  version: v1\n  metadata:\n",
        broker.type_name()
    );
    for (k, v) in metadata {
        yaml.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    if broker == Broker::InMemory {
        yaml.push_str("  - name: maxQueueLength\n    value: \"100000\"\n");
    }
    write(dir, "pubsub.yaml", &yaml);
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A broker process of the test's own, on its own port and data directory, configured for
/// durability: Redis with an fsync-always append-only file, NATS with JetStream on disk,
/// RabbitMQ as a node of its own, Mosquitto with persistence and no cap on queued messages.
/// Dropping it kills it and removes its data.
pub(crate) struct PrivateBroker {
    pub(crate) broker: Broker,
    pub(crate) port: u16,
    dir: PathBuf,
    child: Option<Child>,
    node: String,
}

/// How long a private broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl PrivateBroker {
    /// Start one and wait until it accepts connections.
    pub(crate) async fn start(broker: Broker) -> Self {
        let mut this = Self {
            broker,
            port: free_port(),
            dir: scratch(&format!("broker-{}", broker.binary())),
            child: None,
            node: format!("plinth-test-{}", uuid::Uuid::new_v4().simple()),
        };
        this.start_again().await;
        this
    }

    /// `host:port`.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start it again on the same port and data, after [`PrivateBroker::stop`].
    pub(crate) async fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = self.command();
        let log = std::fs::File::create(self.dir.join("broker.log")).expect("broker log");
        let err = log.try_clone().expect("broker log");
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // Its own process group, so that stopping it reaches whatever it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): it must be installed on this machine",
                self.broker.binary()
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(self.address()).await.is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited with {status} before accepting connections:\n{}",
                    self.broker.binary(),
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not accept connections on {} within {START_TIMEOUT:?}:\n{}",
                self.broker.binary(),
                self.address(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop it gracefully (SIGTERM, so that Mosquitto saves its database and NATS flushes
    /// its store) and wait until it has exited and its port is closed.
    pub(crate) async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal_group(&child, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                signal_group(&child, "-KILL");
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // RabbitMQ's node may outlive the script that started it by a moment.
        while tokio::net::TcpStream::connect(self.address()).await.is_ok() {
            assert!(
                Instant::now() < deadline + Duration::from_secs(10),
                "{} still accepts connections after stopping",
                self.broker.binary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn command(&self) -> Command {
        let port = self.port.to_string();
        let dir = &self.dir;
        match self.broker {
            Broker::InMemory => panic!("the in-memory broker has no process"),
            Broker::Redis => {
                let mut cmd = Command::new("redis-server");
                cmd.args(["--bind", "127.0.0.1", "--port", &port])
                    .args(["--appendonly", "yes", "--appendfsync", "always"])
                    .args(["--save", "", "--protected-mode", "no"])
                    .arg("--dir")
                    .arg(dir);
                cmd
            }
            Broker::JetStream => {
                let mut cmd = Command::new("nats-server");
                cmd.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
                    .arg(dir.join("jetstream"));
                cmd
            }
            Broker::Mqtt => {
                let conf = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                     persistence_location {}/\nmax_queued_messages 0\nautosave_interval 1\n",
                    dir.display()
                );
                let path = write(dir, "mosquitto.conf", &conf);
                // Started as root, Mosquitto drops to its own user, which must be able to
                // write its persistence file here (or it persists nothing, silently).
                use std::os::unix::fs::PermissionsExt as _;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
                let mut cmd = Command::new("mosquitto");
                cmd.arg("-c").arg(path);
                cmd
            }
            Broker::RabbitMq => {
                // A node of its own: its own name, ports, database and (no) plugins, next to
                // the machine's node. The distribution port is picked free as well.
                let conf = format!("listeners.tcp.default = {port}\nloopback_users = none\n");
                write(dir, "rabbitmq.conf", &conf);
                write(dir, "enabled_plugins", "[].\n");
                let mut cmd = Command::new(rabbitmq_server());
                cmd.env("HOME", dir)
                    .env("RABBITMQ_NODENAME", format!("{}@localhost", self.node))
                    .env("RABBITMQ_NODE_PORT", &port)
                    .env("RABBITMQ_DIST_PORT", free_port().to_string())
                    .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
                    .env("RABBITMQ_LOG_BASE", dir.join("log"))
                    .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                    .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
                    .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"));
                cmd
            }
        }
    }
}

/// The RabbitMQ server script itself, not Debian's wrapper (which switches to the
/// `rabbitmq` user and its home): `PLINTH_TEST_RABBITMQ_SERVER`, or the one under
/// /usr/lib/rabbitmq.
fn rabbitmq_server() -> PathBuf {
    if let Ok(path) = std::env::var("PLINTH_TEST_RABBITMQ_SERVER") {
        return path.into();
    }
    let base = Path::new("/usr/lib/rabbitmq/lib");
    let found = std::fs::read_dir(base).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|e| e.path().join("sbin/rabbitmq-server"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| "rabbitmq-server".into())
}

fn signal_group(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{}", child.id())])
        .status();
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(&child, "-KILL");
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Remove what a case created on the machine's `broker` for `topics` and the consumer
/// groups `groups` (the app ids): Redis streams, JetStream streams (with their consumers),
/// RabbitMQ exchanges and queues, and the persistent MQTT sessions of the component client
/// ids `mqtt_clients`. Only names carrying the case's uuids are touched.
pub(crate) async fn cleanup(
    broker: Broker,
    topics: &[String],
    groups: &[String],
    mqtt_clients: &[String],
) {
    let address = broker.shared_address();
    match broker {
        Broker::InMemory => {}
        Broker::Redis => {
            let client = redis::Client::open(format!("redis://{address}")).expect("redis url");
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("Redis for cleanup");
            for topic in topics {
                let _: Result<i64, _> = redis::cmd("DEL").arg(topic).query_async(&mut conn).await;
            }
        }
        Broker::JetStream => {
            let client = async_nats::connect(format!("nats://{address}"))
                .await
                .expect("NATS for cleanup");
            let js = async_nats::jetstream::new(client);
            for topic in topics {
                // The stream pubsub.jetstream created for the topic; a topic never published
                // to has none.
                let stream = plinth_components::pubsub::jetstream::stream_name(topic);
                let _ = js.delete_stream(stream).await;
            }
        }
        Broker::RabbitMq => {
            let conn = lapin::Connection::connect(
                &format!("amqp://guest:guest@{address}/%2f"),
                lapin::ConnectionProperties::default(),
            )
            .await
            .expect("RabbitMQ for cleanup");
            let channel = conn.create_channel().await.expect("channel");
            for topic in topics {
                for group in groups {
                    let queue = format!("{group}-{topic}");
                    let _ = channel
                        .queue_delete(queue.as_str().into(), Default::default())
                        .await;
                }
                let _ = channel
                    .exchange_delete(topic.as_str().into(), Default::default())
                    .await;
            }
            let _ = conn.close(0, "done".into()).await;
        }
        Broker::Mqtt => {
            let url = Broker::Mqtt.connection(&address);
            for client in mqtt_clients {
                let mut spec = plinth_core::ComponentSpec::new(PUBSUB, Broker::Mqtt.type_name())
                    .with_metadata("clientID", client.as_str());
                for (k, v) in &url {
                    spec = spec.with_metadata(k.as_str(), v.as_str());
                }
                for topic in topics {
                    for group in groups {
                        let _ =
                            plinth_components::pubsub::mqtt3::remove_session(&spec, group, topic)
                                .await;
                    }
                }
            }
        }
    }
}
