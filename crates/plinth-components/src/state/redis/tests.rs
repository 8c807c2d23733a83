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

/// `state.redis` on the Redis Cluster at 127.0.0.1:17001-17003 (`PLINTH_TEST_REDIS_CLUSTER`
/// overrides; `scripts/services/redis-cluster.sh` starts it).
async fn cluster_store() -> RedisStateStore {
    let seeds = std::env::var("PLINTH_TEST_REDIS_CLUSTER")
        .unwrap_or_else(|_| "127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003".into());
    let spec = ComponentSpec::new("s", TYPE_NAME)
        .with_metadata("redisHost", seeds)
        .with_metadata("redisType", "cluster");
    let store = RedisStateStore::new(Config::from_spec(&spec).expect("config"));
    store.init().await.unwrap_or_else(|e| {
        panic!("the redis cluster must be reachable (scripts/services/redis-cluster.sh): {e}")
    });
    store
}

fn upsert(key: &str, value: &'static str) -> TransactionOp {
    TransactionOp::Upsert(SetRequest {
        key: key.to_owned(),
        value: Bytes::from_static(value.as_bytes()),
        ..Default::default()
    })
}

async fn read(store: &RedisStateStore, key: &str) -> Option<GetResponse> {
    store
        .get(GetRequest {
            key: key.to_owned(),
            ..Default::default()
        })
        .await
        .expect("get")
}

/// Two keys of `p` in different hash slots.
fn keys_in_two_slots(p: &str) -> (String, String) {
    use ::redis::cluster_routing::Slot;
    let a = format!("{p}a");
    let b = (0..)
        .map(|i| format!("{p}b{i}"))
        .find(|b| Slot::for_key(b) != Slot::for_key(&a))
        .expect("some key lands elsewhere");
    (a, b)
}

#[tokio::test]
async fn cluster_transaction_across_slots_is_invalid_and_writes_nothing() {
    let store = cluster_store().await;
    let (a, b) = keys_in_two_slots(&prefix());
    let err = store
        .transact(vec![upsert(&a, "1"), upsert(&b, "2")], Metadata::new())
        .await
        .expect_err("the keys are in different slots");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.message().contains("hash slot"), "{err}");
    assert!(err.message().contains("hash tag"), "{err}");
    assert!(read(&store, &a).await.is_none());
    assert!(read(&store, &b).await.is_none());
}

#[tokio::test]
async fn cluster_transaction_within_a_hash_tag_is_atomic() {
    let store = cluster_store().await;
    let p = format!("{{plinth-test-{}}}||", uuid::Uuid::new_v4());
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    store
        .transact(vec![upsert(&a, "1"), upsert(&b, "2")], Metadata::new())
        .await
        .expect("one slot");
    // A failing check on the second operation leaves the first unapplied.
    let stale = TransactionOp::Upsert(SetRequest {
        key: b.clone(),
        value: Bytes::from_static(b"x"),
        etag: Some("99".into()),
        ..Default::default()
    });
    let err = store
        .transact(vec![upsert(&a, "changed"), stale], Metadata::new())
        .await
        .expect_err("stale etag");
    assert_eq!(err.kind(), ErrorKind::EtagMismatch, "{err}");
    assert_eq!(read(&store, &a).await.expect("kept").data, "1");
    store
        .transact(
            vec![
                TransactionOp::Delete(DeleteRequest {
                    key: a.clone(),
                    ..Default::default()
                }),
                TransactionOp::Delete(DeleteRequest {
                    key: b.clone(),
                    ..Default::default()
                }),
            ],
            Metadata::new(),
        )
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn cluster_bulk_get_and_set_span_slots() {
    let store = cluster_store().await;
    let p = prefix();
    let keys: Vec<String> = (0..20).map(|i| format!("{p}k{i}")).collect();
    store
        .bulk_set(
            keys.iter()
                .map(|k| SetRequest {
                    key: k.clone(),
                    value: Bytes::from(k.clone()),
                    ..Default::default()
                })
                .collect(),
        )
        .await
        .expect("bulk writes are independent per key");
    let mut asked = keys.clone();
    asked.push(format!("{p}missing"));
    let items = store
        .bulk_get(asked.clone(), Metadata::new())
        .await
        .expect("bulk get");
    assert_eq!(
        items.iter().map(|i| i.key.clone()).collect::<Vec<_>>(),
        asked
    );
    for item in &items[..keys.len()] {
        assert!(item.error.is_none(), "{item:?}");
        assert_eq!(item.value.as_ref().expect("present").data, item.key);
    }
    assert!(items[keys.len()].value.is_none());
    store
        .bulk_delete(
            keys.iter()
                .map(|k| DeleteRequest {
                    key: k.clone(),
                    ..Default::default()
                })
                .collect(),
        )
        .await
        .expect("cleanup");
}
