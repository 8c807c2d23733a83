//! The state conformance suite: the same cases against every state store of this crate.
//!
//! `state.redis` runs against the real Redis at 127.0.0.1:6379 (`REDIS_HOST` overrides) and
//! `state.postgresql` against the real PostgreSQL, database `test` (`PLINTH_TEST_POSTGRES`
//! overrides, a connection string), in a table of its own, `plinth_conformance_state`
//! (`plinth_conformance_state_v1` in Dapr's v1 layout, `spec.version: v1`);
//! `state.mysql` against the real MariaDB/MySQL, database `test` (`PLINTH_TEST_MYSQL`
//! overrides, a Go DSN), in tables of its own, `plinth_conformance_state` and
//! `plinth_conformance_metadata`; each fails when its backend is missing. `state.redis` also
//! runs on the Redis Cluster of `common::redis_cluster`, under a hash-tagged prefix so that a
//! transaction's keys share a slot as the cluster requires. Every case writes under a fresh
//! uuid prefix and deletes what it
//! wrote, so runs can share a Redis.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use plinth_core::component::Instance;
use plinth_core::component::state::{
    Concurrency, DeleteRequest, GetRequest, GetResponse, SetRequest, StateOptions, StateStore,
    TransactionOp,
};
use plinth_core::metadata::{TTL_EXPIRE_TIME, TTL_IN_SECONDS};
use plinth_core::{ComponentSpec, ErrorKind, Metadata};
use tokio::time::Instant;

use crate::common::{build, mysql_url, postgres_url, redis_cluster, redis_host};

async fn in_memory() -> Arc<dyn StateStore> {
    instance(ComponentSpec::new("conformance", "state.in-memory")).await
}

async fn redis() -> Arc<dyn StateStore> {
    instance(
        ComponentSpec::new("conformance", "state.redis").with_metadata("redisHost", redis_host()),
    )
    .await
}

/// `state.redis` on the Redis Cluster; its cases run under a hash-tagged prefix so that a
/// transaction's keys share one slot, as the cluster requires.
async fn redis_cluster_store() -> Arc<dyn StateStore> {
    instance(
        ComponentSpec::new("conformance", "state.redis")
            .with_metadata("redisHost", redis_cluster())
            .with_metadata("redisType", "cluster"),
    )
    .await
}

async fn postgresql() -> Arc<dyn StateStore> {
    instance(
        ComponentSpec::new("conformance", "state.postgresql")
            .with_metadata("connectionString", postgres_url())
            .with_metadata("tableName", "plinth_conformance_state"),
    )
    .await
}

async fn mysql() -> Arc<dyn StateStore> {
    instance(
        ComponentSpec::new("conformance", "state.mysql")
            .with_metadata("connectionString", mysql_url())
            .with_metadata("schemaName", "test")
            .with_metadata("tableName", "plinth_conformance_state")
            .with_metadata("metadataTableName", "plinth_conformance_metadata"),
    )
    .await
}

async fn postgresql_v1() -> Arc<dyn StateStore> {
    let mut spec = ComponentSpec::new("conformance", "state.postgresql")
        .with_metadata("connectionString", postgres_url())
        .with_metadata("tableName", "plinth_conformance_state_v1")
        .with_metadata("metadataTableName", "plinth_conformance_state_v1_meta");
    spec.version = "v1".into();
    instance(spec).await
}

async fn instance(spec: ComponentSpec) -> Arc<dyn StateStore> {
    match build(spec).await {
        Instance::State(store) => store,
        other => panic!("not a state store: {}", other.kind()),
    }
}

fn put(key: &str, value: impl Into<Bytes>) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn with_etag(mut req: SetRequest, etag: &str) -> SetRequest {
    req.etag = Some(etag.into());
    req
}

fn with_ttl(mut req: SetRequest, ttl: &str) -> SetRequest {
    req.metadata.insert(TTL_IN_SECONDS.into(), ttl.into());
    req
}

fn first_write(mut req: SetRequest) -> SetRequest {
    req.options = StateOptions {
        concurrency: Concurrency::FirstWrite,
        ..Default::default()
    };
    req
}

fn del(key: &str, etag: Option<&str>) -> DeleteRequest {
    DeleteRequest {
        key: key.into(),
        etag: etag.map(Into::into),
        ..Default::default()
    }
}

async fn get(store: &dyn StateStore, key: &str) -> Option<GetResponse> {
    store
        .get(GetRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .expect("get")
}

async fn etag_of(store: &dyn StateStore, key: &str) -> String {
    get(store, key)
        .await
        .and_then(|r| r.etag)
        .expect("a stored value has an etag")
}

async fn cleanup(store: &dyn StateStore, keys: &[String]) {
    for key in keys {
        store.delete(del(key, None)).await.expect("cleanup");
    }
}

fn kind<T>(result: plinth_core::Result<T>) -> Option<ErrorKind> {
    result.err().map(|e| e.kind())
}

async fn value_kinds(store: &dyn StateStore, p: &str) {
    let cases: [(String, Bytes); 4] = [
        (
            format!("{p}json"),
            Bytes::from_static(br#"{"a":1,"b":[true,null]}"#),
        ),
        (
            format!("{p}text"),
            Bytes::from_static("héllo wörld".as_bytes()),
        ),
        (
            format!("{p}binary"),
            Bytes::from_static(&[0, 255, 1, 254, 0, 10, 13]),
        ),
        (format!("{p}empty"), Bytes::new()),
    ];
    for (key, value) in &cases {
        store.set(put(key, value.clone())).await.expect("set");
        let got = get(store, key).await.expect("present");
        assert_eq!(&got.data, value, "{key}");
        assert!(got.etag.is_some_and(|e| !e.is_empty()), "{key} has an etag");
    }
    let keys: Vec<String> = cases.into_iter().map(|(k, _)| k).collect();
    cleanup(store, &keys).await;
}

async fn delete(store: &dyn StateStore, p: &str) {
    let key = format!("{p}k");
    store.set(put(&key, "v")).await.expect("set");
    store.delete(del(&key, None)).await.expect("delete");
    assert!(get(store, &key).await.is_none());
    // Deleting a missing key without an ETag succeeds.
    store.delete(del(&key, None)).await.expect("delete missing");
    assert!(get(store, &format!("{p}never")).await.is_none());
}

async fn bulk(store: &dyn StateStore, p: &str) {
    let keys: Vec<String> = (0..3).map(|i| format!("{p}bulk{i}")).collect();
    store
        .bulk_set(keys.iter().map(|k| put(k, k.clone())).collect())
        .await
        .expect("bulk set");
    let mut asked = keys.clone();
    asked.push(format!("{p}missing"));
    let items = store
        .bulk_get(asked.clone(), Metadata::new())
        .await
        .expect("bulk get");
    assert_eq!(items.len(), 4);
    for item in &items {
        assert!(item.error.is_none(), "{:?}", item.error);
    }
    for (item, key) in items.iter().zip(&keys) {
        assert_eq!(&item.key, key);
        let value = item.value.as_ref().expect("present");
        assert_eq!(value.data, Bytes::from(key.clone()));
        assert!(value.etag.is_some());
    }
    assert_eq!(items[3].key, asked[3]);
    assert!(items[3].value.is_none());
    store
        .bulk_delete(keys.iter().map(|k| del(k, None)).collect())
        .await
        .expect("bulk delete");
    for key in &keys {
        assert!(get(store, key).await.is_none(), "{key} deleted");
    }
}

async fn bulk_set_with_a_bad_etag(store: &dyn StateStore, p: &str) {
    let stale = format!("{p}stale");
    let fine = format!("{p}fine");
    store.set(put(&stale, "1")).await.expect("set");
    let etag = etag_of(store, &stale).await;
    store.set(put(&stale, "2")).await.expect("set");
    let err = store
        .bulk_set(vec![with_etag(put(&stale, "3"), &etag), put(&fine, "ok")])
        .await
        .expect_err("one etag is stale");
    assert_eq!(err.kind(), ErrorKind::EtagMismatch);
    assert!(err.message().contains(&stale), "{}", err.message());
    assert!(!err.message().contains(&fine), "{}", err.message());
    assert_eq!(get(store, &stale).await.expect("kept").data, "2");
    // Bulk writes are independent: the good one was written.
    assert_eq!(get(store, &fine).await.expect("written").data, "ok");
    cleanup(store, &[stale, fine]).await;
}

async fn etag_mismatch(store: &dyn StateStore, p: &str) {
    let key = format!("{p}k");
    store.set(put(&key, "1")).await.expect("set");
    let first = etag_of(store, &key).await;
    store
        .set(with_etag(put(&key, "2"), &first))
        .await
        .expect("matching etag");
    let second = etag_of(store, &key).await;
    assert_ne!(first, second, "a write changes the etag");
    let stale_set = store.set(with_etag(put(&key, "3"), &first)).await;
    assert_eq!(kind(stale_set), Some(ErrorKind::EtagMismatch));
    let stale_delete = store.delete(del(&key, Some(&first))).await;
    assert_eq!(kind(stale_delete), Some(ErrorKind::EtagMismatch));
    assert_eq!(get(store, &key).await.expect("kept").data, "2");
    // An ETag for a key that does not exist is a mismatch too.
    let missing = store
        .set(with_etag(put(&format!("{p}missing"), "x"), &second))
        .await;
    assert_eq!(kind(missing), Some(ErrorKind::EtagMismatch));
    store
        .delete(del(&key, Some(&second)))
        .await
        .expect("delete with the current etag");
    assert!(get(store, &key).await.is_none());
}

async fn first_write_concurrency(store: &dyn StateStore, p: &str) {
    let key = format!("{p}k");
    store
        .set(first_write(put(&key, "1")))
        .await
        .expect("first-write of a new key without an etag");
    let again = store.set(first_write(put(&key, "2"))).await;
    assert_eq!(kind(again), Some(ErrorKind::EtagMismatch));
    let etag = etag_of(store, &key).await;
    store
        .set(first_write(with_etag(put(&key, "3"), &etag)))
        .await
        .expect("first-write with the current etag");
    let stale = store
        .set(first_write(with_etag(put(&key, "4"), &etag)))
        .await;
    assert_eq!(kind(stale), Some(ErrorKind::EtagMismatch));
    assert_eq!(get(store, &key).await.expect("kept").data, "3");
    // Last-write without an ETag always writes.
    store.set(put(&key, "5")).await.expect("last-write");
    assert_eq!(get(store, &key).await.expect("kept").data, "5");
    cleanup(store, &[key]).await;
}

async fn transactions(store: &dyn StateStore, p: &str) {
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    store.set(put(&b, "old")).await.expect("set");
    store
        .transact(
            vec![
                TransactionOp::Upsert(put(&a, "1")),
                TransactionOp::Delete(del(&c, None)),
                TransactionOp::Upsert(put(&b, "new")),
                TransactionOp::Upsert(put(&a, "2")),
                TransactionOp::Delete(del(&b, None)),
                TransactionOp::Upsert(put(&c, "c")),
            ],
            Metadata::new(),
        )
        .await
        .expect("transaction");
    assert_eq!(get(store, &a).await.expect("a").data, "2", "later ops win");
    assert!(get(store, &b).await.is_none(), "b upserted, then deleted");
    assert_eq!(get(store, &c).await.expect("c").data, "c");

    // All or nothing: a stale ETag in the last op leaves the earlier ones unapplied.
    let etag = etag_of(store, &a).await;
    store.set(put(&a, "3")).await.expect("set");
    let err = store
        .transact(
            vec![
                TransactionOp::Upsert(put(&c, "changed")),
                TransactionOp::Upsert(with_etag(put(&a, "4"), &etag)),
            ],
            Metadata::new(),
        )
        .await
        .expect_err("stale etag");
    assert_eq!(err.kind(), ErrorKind::EtagMismatch);
    assert_eq!(get(store, &c).await.expect("c").data, "c");
    assert_eq!(get(store, &a).await.expect("a").data, "3");

    // ETags checked against the state earlier ops of the same transaction leave.
    let etag = etag_of(store, &a).await;
    store
        .transact(
            vec![
                TransactionOp::Upsert(with_etag(put(&a, "5"), &etag)),
                TransactionOp::Delete(del(&c, Some(&etag_of(store, &c).await))),
            ],
            Metadata::new(),
        )
        .await
        .expect("matching etags");
    assert_eq!(get(store, &a).await.expect("a").data, "5");
    assert!(get(store, &c).await.is_none());
    cleanup(store, &[a, b, c]).await;
}

async fn ttl(store: &dyn StateStore, p: &str) {
    assert!(store.features().ttl);
    let key = format!("{p}k");
    for bad in ["soon", "-2", "1.5"] {
        let result = store.set(with_ttl(put(&key, "v"), bad)).await;
        assert_eq!(
            kind(result),
            Some(ErrorKind::InvalidArgument),
            "ttl {bad:?}"
        );
    }
    assert!(
        get(store, &key).await.is_none(),
        "rejected writes wrote nothing"
    );

    // Without a TTL there is no ttlExpireTime.
    store.set(put(&key, "v")).await.expect("set");
    let got = get(store, &key).await.expect("present");
    assert!(!got.metadata.contains_key(TTL_EXPIRE_TIME));

    // With one, ttlExpireTime is an RFC 3339 time in the future; -1 removes it.
    store
        .set(with_ttl(put(&key, "v"), "100"))
        .await
        .expect("set");
    let got = get(store, &key).await.expect("present");
    let expire = got.metadata.get(TTL_EXPIRE_TIME).expect("ttlExpireTime");
    let at = chrono::DateTime::parse_from_rfc3339(expire).expect("rfc 3339");
    assert!(
        at > chrono::Utc::now() + chrono::TimeDelta::seconds(90),
        "{expire}"
    );
    store
        .set(with_ttl(put(&key, "v"), "-1"))
        .await
        .expect("set");
    let got = get(store, &key).await.expect("present");
    assert!(!got.metadata.contains_key(TTL_EXPIRE_TIME));

    // A 1-second TTL expires; poll with a deadline rather than sleep a fixed time.
    let short = format!("{p}short");
    store
        .set(with_ttl(put(&short, "v"), "1"))
        .await
        .expect("set");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(store, &short).await.is_some() {
        assert!(Instant::now() < deadline, "{short} did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No expiry with -1: still there after the short key expired.
    assert!(get(store, &key).await.is_some());
    cleanup(store, &[key, short]).await;
}

macro_rules! conformance {
    ($name:ident = $store:ident, $prefix:path: $($case:ident),* $(,)?) => {
        mod $name {
            $(
                #[tokio::test]
                async fn $case() {
                    let store = super::$store().await;
                    super::$case(store.as_ref(), &$prefix()).await;
                }
            )*
        }
    };
}

/// Every store under its test module name, with the constructor and the prefix its cases use.
macro_rules! suite {
    ($($name:ident = $store:ident, $prefix:path);* $(;)?) => {
        $(
            conformance!($name = $store, $prefix:
                value_kinds,
                delete,
                bulk,
                bulk_set_with_a_bad_etag,
                etag_mismatch,
                first_write_concurrency,
                transactions,
                ttl,
            );
        )*
    };
}

suite!(
    in_memory = in_memory, crate::common::prefix;
    redis = redis, crate::common::prefix;
    redis_cluster = redis_cluster_store, crate::common::hash_tagged_prefix;
    postgresql = postgresql, crate::common::prefix;
    mysql = mysql, crate::common::prefix;
    postgresql_v1 = postgresql_v1, crate::common::prefix;
);
