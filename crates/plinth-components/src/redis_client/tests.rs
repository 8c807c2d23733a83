//! The shared connection against the real Redis: reconnection, metadata.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

/// A TCP proxy to the test Redis that can cut every connection and stop listening.
struct Proxy {
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(addr: SocketAddr) -> Self {
        let upstream = std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into());
        let listener = TcpListener::bind(addr).await.expect("bind proxy");
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let inner = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                inner.lock().expect("tasks").push(conn);
            }
        });
        tasks.lock().expect("tasks").push(accept);
        Self { tasks }
    }

    fn cut(&self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }
}

async fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn reconnects_after_redis_comes_back() {
    let addr = free_addr().await;
    let proxy = Proxy::start(addr).await;
    let spec = ComponentSpec::new("s", "state.redis")
        .with_metadata("redisHost", addr.to_string())
        .with_metadata("timeout", "1s")
        .with_metadata("dialTimeout", "1s");
    let conn = RedisConn::new(RedisSettings::from_spec(&spec).expect("settings"));
    conn.init().await.expect("init through the proxy");

    proxy.cut();
    let started = std::time::Instant::now();
    let err = conn.ping().await.expect_err("redis is gone");
    assert_eq!(err.kind(), plinth_core::ErrorKind::Unavailable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let proxy = Proxy::start(addr).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conn.ping().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.cut();
}

#[test]
fn host_and_port() {
    assert_eq!(
        split_host_port("localhost:6380"),
        Some(("localhost".into(), 6380))
    );
    assert_eq!(split_host_port("redis"), Some(("redis".into(), 6379)));
    assert_eq!(split_host_port("[::1]:7000"), Some(("::1".into(), 7000)));
    assert_eq!(split_host_port("host:port"), None);
    assert_eq!(split_host_port(":6379"), None);
}

#[test]
fn settings_reject_what_is_unsupported() {
    let spec = |k: &str, v: &str| {
        ComponentSpec::new("s", "state.redis")
            .with_metadata("redisHost", "127.0.0.1:6379")
            .with_metadata(k, v)
    };
    assert!(RedisSettings::from_spec(&spec("enableTLS", "true")).is_ok());
    assert!(RedisSettings::from_spec(&spec("enableTLS", "false")).is_ok());
    assert!(RedisSettings::from_spec(&spec("redisType", "cluster")).is_ok());
    assert!(RedisSettings::from_spec(&spec("redisType", "sentinel")).is_err());
    assert!(RedisSettings::from_spec(&spec("failover", "true")).is_err());
    assert!(RedisSettings::from_spec(&spec("clientCert", "-----BEGIN CERTIFICATE-----")).is_err());
    assert!(RedisSettings::from_spec(&spec("redisDB", "x")).is_err());
    assert!(RedisSettings::from_spec(&spec("timeout", "soon")).is_err());
    assert!(RedisSettings::from_spec(&ComponentSpec::new("s", "state.redis")).is_err());
}

#[tokio::test]
async fn an_unreachable_cluster_is_unavailable_quickly() {
    let closed = free_addr().await;
    let spec = ComponentSpec::new("s", "state.redis")
        .with_metadata("redisHost", format!("{closed},{closed}"))
        .with_metadata("redisType", "cluster")
        .with_metadata("dialTimeout", "1s");
    let conn = RedisConn::new(RedisSettings::from_spec(&spec).expect("settings"));
    let started = std::time::Instant::now();
    let err = conn.init().await.expect_err("nothing listens");
    assert_eq!(err.kind(), plinth_core::ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("redis cluster"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(conn.ping().await.is_err());
}
