//! What every suite shares: backend addresses, prefixes and building components.

use plinth_core::ComponentSpec;
use plinth_core::component::Instance;

/// A fresh namespace for one case.
pub(crate) fn prefix() -> String {
    format!("plinth-conformance-{}||", uuid::Uuid::new_v4())
}

/// A fresh namespace for one case whose keys must share one Redis Cluster hash slot (a
/// transaction's keys must): the uuid is the key's `{hash tag}`.
pub(crate) fn hash_tagged_prefix() -> String {
    format!("{{plinth-conformance-{}}}||", uuid::Uuid::new_v4())
}

/// The seed nodes of the Redis Cluster the `*.redis` components' cluster suites use:
/// 127.0.0.1:17001-17003 (`scripts/services/redis-cluster.sh` starts it), or
/// `PLINTH_TEST_REDIS_CLUSTER`.
pub(crate) fn redis_cluster() -> String {
    std::env::var("PLINTH_TEST_REDIS_CLUSTER")
        .unwrap_or_else(|_| "127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003".into())
}

/// The Redis every `*.redis` component uses: 127.0.0.1:6379, or `REDIS_HOST`.
pub(crate) fn redis_host() -> String {
    std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

/// The MQTT broker `pubsub.mqtt3` uses: Mosquitto at tcp://127.0.0.1:1883, or the URL in
/// `PLINTH_TEST_MQTT`.
pub(crate) fn mqtt_url() -> String {
    std::env::var("PLINTH_TEST_MQTT").unwrap_or_else(|_| "tcp://127.0.0.1:1883".into())
}

/// The PostgreSQL database `test`, or the connection string in `PLINTH_TEST_POSTGRES`.
pub(crate) fn postgres_url() -> String {
    std::env::var("PLINTH_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// The RabbitMQ every `pubsub.rabbitmq` suite uses, as an AMQP URI: the vhost `/` of
/// 127.0.0.1:5672 as guest, or `PLINTH_TEST_RABBITMQ`.
pub(crate) fn rabbitmq_url() -> String {
    std::env::var("PLINTH_TEST_RABBITMQ")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The MariaDB/MySQL database `test`, user root, as a Go DSN, or the DSN in
/// `PLINTH_TEST_MYSQL`.
pub(crate) fn mysql_url() -> String {
    std::env::var("PLINTH_TEST_MYSQL").unwrap_or_else(|_| "root@tcp(127.0.0.1:3306)/test".into())
}

/// A plain client of the PostgreSQL at [`postgres_url`], for cleaning up; panics naming
/// the backend when it is missing.
pub(crate) async fn postgres_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect(
            "PostgreSQL must be reachable: start it on 127.0.0.1:5432 (user postgres, \
             database test) or set PLINTH_TEST_POSTGRES",
        );
    tokio::spawn(connection);
    client
}

/// The etcd every `*.etcd` component uses: 127.0.0.1:2379, or `PLINTH_TEST_ETCD`. Start it
/// with `scripts/services/etcd.sh`.
#[cfg(feature = "etcd")]
pub(crate) fn etcd_endpoint() -> String {
    std::env::var("PLINTH_TEST_ETCD").unwrap_or_else(|_| "127.0.0.1:2379".into())
}

/// The `keyPrefixPath` every `*.etcd` component of the suites works under.
#[cfg(feature = "etcd")]
pub(crate) const ETCD_PREFIX: &str = "/plinth-conformance/";

/// Build `spec` with every factory of the crate and initialise it, panicking with the
/// component's type when its backend is unreachable.
pub(crate) async fn build(spec: ComponentSpec) -> Instance {
    let mut registry = plinth_core::registry::Registry::new();
    plinth_components::register_all(&mut registry);
    let instance = registry
        .build(&spec)
        .unwrap_or_else(|e| panic!("{} does not build: {e}", spec.type_name));
    instance.component().init().await.unwrap_or_else(|e| {
        let hint = if spec.get("redisType") == Some("cluster") {
            " (start the Redis Cluster with scripts/services/redis-cluster.sh)"
        } else if spec.type_name.ends_with(".etcd") {
            " (start etcd with scripts/services/etcd.sh)"
        } else {
            ""
        };
        panic!("{} must be reachable: {e}{hint}", spec.type_name)
    });
    instance
}

/// The S3-compatible server `file.s3` uses: `PLINTH_TEST_S3`, by default moto at
/// `http://127.0.0.1:19000` (`scripts/services/s3.sh` starts it).
pub(crate) fn s3_endpoint() -> String {
    std::env::var("PLINTH_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:19000".into())
}

/// One unsigned, path-style request to the S3 test server (moto accepts it; buckets are
/// created and deleted this way), returning the status code.
pub(crate) async fn s3_request(method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let endpoint = s3_endpoint();
    let host = endpoint
        .strip_prefix("http://")
        .unwrap_or(&endpoint)
        .trim_end_matches('/')
        .to_owned();
    let mut conn = tokio::net::TcpStream::connect(&host)
        .await
        .unwrap_or_else(|e| {
            panic!("no S3 server at {endpoint} ({e}); start one with scripts/services/s3.sh")
        });
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response from {endpoint}: {text}"))
}
