//! Tests against the real Redis at 127.0.0.1:6379 (`REDIS_HOST` overrides); they fail when
//! it is missing. Every key is under a fresh uuid prefix and deleted afterwards.

use std::time::{Duration, Instant};

use plinth_core::ErrorKind;
use redis::AsyncCommands;

use super::*;

fn redis_host() -> String {
    std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

async fn store() -> RedisStateStore {
    let spec = ComponentSpec::new("s", TYPE_NAME).with_metadata("redisHost", redis_host());
    let store = RedisStateStore::new(Config::from_spec(&spec).expect("config"));
    store.init().await.expect("redis must be reachable");
    store
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}/", redis_host()))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis must be reachable")
}

fn prefix() -> String {
    format!("plinth-test-{}||", uuid::Uuid::new_v4())
}

async fn cleanup(keys: &[&str]) {
    let mut c = raw().await;
    let _: () = c.del(keys).await.expect("del");
}

#[tokio::test]
async fn reads_what_dapr_wrote() {
    let key = format!("{}dapr", prefix());
    let mut c = raw().await;
    let _: () = c
        .hset_multiple(&key, &[("data", "\"from dapr\""), ("version", "1")])
        .await
        .expect("hset");
    let store = store().await;
    let got = store
        .get(GetRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.data, Bytes::from_static(b"\"from dapr\""));
    assert_eq!(got.etag.as_deref(), Some("1"));
    // A write with that ETag bumps the version the way Dapr does.
    store
        .set(SetRequest {
            key: key.clone(),
            value: Bytes::from_static(b"2"),
            etag: Some("1".into()),
            ..Default::default()
        })
        .await
        .expect("set");
    let (data, version): (String, String) =
        c.hmget(&key, &["data", "version"]).await.expect("hget");
    assert_eq!((data.as_str(), version.as_str()), ("2", "2"));
    cleanup(&[&key]).await;
}

#[tokio::test]
async fn malformed_etag_is_invalid() {
    let store = store().await;
    let err = store
        .set(SetRequest {
            key: format!("{}k", prefix()),
            value: Bytes::from_static(b"v"),
            etag: Some("not-a-version".into()),
            ..Default::default()
        })
        .await
        .expect_err("malformed etag");
    assert_eq!(err.kind(), ErrorKind::EtagInvalid);
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_quickly() {
    // A port nothing listens on.
    let spec = ComponentSpec::new("s", TYPE_NAME)
        .with_metadata("redisHost", "127.0.0.1:1")
        .with_metadata("dialTimeout", "1s");
    let store = RedisStateStore::new(Config::from_spec(&spec).expect("config"));
    let started = Instant::now();
    let err = store.init().await.expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let err = store
        .get(GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("not connected");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(
        store.ping().await.map_err(|e| e.kind()),
        Err(ErrorKind::Unavailable)
    );
}

#[tokio::test]
async fn default_ttl_from_metadata_applies() {
    let key = format!("{}ttl", prefix());
    let spec = ComponentSpec::new("s", TYPE_NAME)
        .with_metadata("redisHost", redis_host())
        .with_metadata("ttlInSeconds", "100");
    let store = RedisStateStore::new(Config::from_spec(&spec).expect("config"));
    store.init().await.expect("init");
    store
        .set(SetRequest {
            key: key.clone(),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
        .await
        .expect("set");
    let mut c = raw().await;
    let ttl: i64 = c.ttl(&key).await.expect("ttl");
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
    cleanup(&[&key]).await;
}

#[test]
fn bad_metadata_is_rejected() {
    let spec = |k: &str, v: &str| {
        ComponentSpec::new("s", TYPE_NAME)
            .with_metadata("redisHost", "127.0.0.1:6379")
            .with_metadata(k, v)
    };
    assert!(factory(&spec("ttlInSeconds", "soon")).is_err());
    assert!(factory(&spec("enableTLS", "maybe")).is_err());
    assert!(factory(&spec("redisType", "sentinel")).is_err());
    assert!(factory(&spec("ttlInSeconds", "10")).is_ok());
}
