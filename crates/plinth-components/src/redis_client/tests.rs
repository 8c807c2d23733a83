//! The shared connection against the real Redis: reconnection, metadata.

use std::net::SocketAddr;

use plinth_testkit::FaultProxy;
use tokio::net::TcpListener;

use super::*;

async fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn reconnects_after_redis_comes_back() {
    let upstream = std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let proxy = FaultProxy::start(upstream).await;
    let spec = ComponentSpec::new("s", "state.redis")
        .with_metadata("redisHost", proxy.addr().to_string())
        .with_metadata("timeout", "1s")
        .with_metadata("dialTimeout", "1s");
    let conn = RedisConn::new(RedisSettings::from_spec(&spec).expect("settings"));
    conn.init().await.expect("init through the proxy");

    proxy.cut();
    let started = std::time::Instant::now();
    let err = conn.ping().await.expect_err("redis is gone");
    assert_eq!(err.kind(), plinth_core::ErrorKind::Unavailable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));

    proxy.restore().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conn.ping().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
