use std::time::Duration;

use plinth_core::ErrorKind;
use plinth_core::component::state::StateOptions;
use plinth_core::component::state::query::{
    Comparison, Filter, KeyPath, Order, Page, Query, Sorting,
};
use plinth_core::metadata::TTL_IN_SECONDS;

use super::*;

fn put(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: Bytes::from(value.to_owned()),
        ..Default::default()
    }
}

fn with_etag(mut req: SetRequest, etag: &str) -> SetRequest {
    req.etag = Some(etag.into());
    req
}

fn with_ttl(mut req: SetRequest, secs: &str) -> SetRequest {
    req.metadata.insert(TTL_IN_SECONDS.into(), secs.into());
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

async fn read(store: &InMemoryStateStore, key: &str) -> Option<GetResponse> {
    let req = GetRequest {
        key: key.into(),
        ..Default::default()
    };
    store.get(req).await.ok().flatten()
}

async fn value(store: &InMemoryStateStore, key: &str) -> Option<Bytes> {
    read(store, key).await.map(|r| r.data)
}

fn kind<T>(result: Result<T>) -> Option<ErrorKind> {
    result.err().map(|e| e.kind())
}

#[tokio::test]
async fn set_get_delete_with_increasing_etags() {
    let store = InMemoryStateStore::new();
    assert!(read(&store, "k").await.is_none());
    assert!(store.set(put("k", "v1")).await.is_ok());
    let first = read(&store, "k").await;
    assert_eq!(
        first.as_ref().map(|r| r.data.clone()),
        Some(Bytes::from("v1"))
    );
    assert_eq!(
        first.as_ref().and_then(|r| r.etag.clone()).as_deref(),
        Some("1")
    );
    assert!(first.is_some_and(|r| r.metadata.is_empty() && r.content_type.is_none()));
    assert!(store.set(put("k", "v2")).await.is_ok());
    assert_eq!(
        read(&store, "k").await.and_then(|r| r.etag).as_deref(),
        Some("2")
    );
    assert!(store.delete(del("k", None)).await.is_ok());
    assert!(read(&store, "k").await.is_none());
    // The counter is store-wide, so a recreated key does not get an old ETag back.
    assert!(store.set(put("k", "v3")).await.is_ok());
    assert_eq!(
        read(&store, "k").await.and_then(|r| r.etag).as_deref(),
        Some("3")
    );
}

#[tokio::test]
async fn etag_rules() {
    let store = InMemoryStateStore::new();
    assert_eq!(
        kind(store.set(with_etag(put("k", "v"), "1")).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert!(store.set(put("k", "v")).await.is_ok());
    assert_eq!(
        kind(store.set(with_etag(put("k", "x"), "abc")).await),
        Some(ErrorKind::EtagInvalid)
    );
    assert_eq!(
        kind(store.set(with_etag(put("k", "x"), "-1")).await),
        Some(ErrorKind::EtagInvalid)
    );
    assert_eq!(
        kind(store.set(with_etag(put("k", "x"), "7")).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert_eq!(value(&store, "k").await, Some(Bytes::from("v")));
    assert!(store.set(with_etag(put("k", "x"), "1")).await.is_ok());
    assert_eq!(value(&store, "k").await, Some(Bytes::from("x")));
    // An empty ETag counts as none.
    assert!(store.set(with_etag(put("k", "y"), "")).await.is_ok());

    assert_eq!(
        kind(store.delete(del("k", Some("1"))).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert_eq!(
        kind(store.delete(del("k", Some("zz"))).await),
        Some(ErrorKind::EtagInvalid)
    );
    assert!(store.delete(del("k", Some("3"))).await.is_ok());
    assert!(
        store.delete(del("k", None)).await.is_ok(),
        "deleting a missing key is fine"
    );
    assert_eq!(
        kind(store.delete(del("k", Some("3"))).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert_eq!(
        kind(store.set(put("", "v")).await),
        Some(ErrorKind::InvalidArgument)
    );
}

#[tokio::test]
async fn first_write_needs_the_etag_once_the_key_exists() {
    let store = InMemoryStateStore::new();
    assert!(store.set(first_write(put("k", "a"))).await.is_ok());
    assert_eq!(
        kind(store.set(first_write(put("k", "b"))).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert!(
        store
            .set(first_write(with_etag(put("k", "b"), "1")))
            .await
            .is_ok()
    );
    assert_eq!(
        kind(store.set(first_write(with_etag(put("k", "c"), "1"))).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert_eq!(value(&store, "k").await, Some(Bytes::from("b")));
}

#[tokio::test]
async fn content_type_is_kept() {
    let store = InMemoryStateStore::new();
    let mut req = put("k", "{}");
    req.metadata
        .insert("contentType".into(), "application/json".into());
    assert!(store.set(req).await.is_ok());
    let got = read(&store, "k").await.and_then(|r| r.content_type);
    assert_eq!(got.as_deref(), Some("application/json"));
}

#[tokio::test(start_paused = true)]
async fn ttl_expires_and_reports_its_time() {
    let store = InMemoryStateStore::new();
    assert!(store.set(with_ttl(put("k", "v"), "1")).await.is_ok());
    let expire = read(&store, "k")
        .await
        .and_then(|r| r.metadata.get(TTL_EXPIRE_TIME).cloned());
    let expire = expire.unwrap_or_default();
    assert!(DateTime::parse_from_rfc3339(&expire).is_ok(), "{expire}");
    assert!(expire.ends_with('Z'), "{expire}");

    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(read(&store, "k").await.is_some());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(read(&store, "k").await.is_none());
    assert!(
        lock(&store.table).entries.is_empty(),
        "a read removes the expired key"
    );
    // An ETag for an expired key is a mismatch: the key does not exist any more.
    assert!(store.set(with_ttl(put("k", "v"), "1")).await.is_ok());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        kind(store.set(with_etag(put("k", "w"), "2")).await),
        Some(ErrorKind::EtagMismatch)
    );
}

#[tokio::test(start_paused = true)]
async fn ttl_never_or_absent_clears_the_expiry() {
    let store = InMemoryStateStore::new();
    assert!(store.set(with_ttl(put("a", "v"), "1")).await.is_ok());
    assert!(store.set(with_ttl(put("a", "v"), "-1")).await.is_ok());
    assert!(store.set(with_ttl(put("b", "v"), "1")).await.is_ok());
    assert!(store.set(put("b", "v")).await.is_ok());
    tokio::time::advance(Duration::from_secs(5)).await;
    for key in ["a", "b"] {
        let got = read(&store, key).await;
        assert!(got.is_some_and(|r| r.metadata.is_empty()), "{key}");
    }
    assert_eq!(
        kind(store.set(with_ttl(put("c", "v"), "soon")).await),
        Some(ErrorKind::InvalidArgument)
    );
    assert_eq!(
        kind(
            store
                .set(with_ttl(put("c", "v"), &i64::MAX.to_string()))
                .await
        ),
        Some(ErrorKind::InvalidArgument)
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweep_removes_expired_keys_nobody_reads() {
    let store = InMemoryStateStore::new();
    assert!(store.init().await.is_ok());
    assert!(store.init().await.is_ok(), "init is idempotent");
    assert!(store.set(with_ttl(put("k", "v"), "1")).await.is_ok());
    assert!(store.set(put("keep", "v")).await.is_ok());
    tokio::time::sleep(SWEEP_INTERVAL * 3).await;
    let keys: Vec<String> = lock(&store.table).entries.keys().cloned().collect();
    assert_eq!(keys, ["keep"]);
    store.close().await;
    assert!(lock(&store.sweeper).is_none());
}

#[tokio::test(start_paused = true)]
async fn the_sweep_ends_when_the_table_is_dropped() {
    let table = Arc::new(Mutex::new(Table::default()));
    let task = tokio::spawn(sweep(Arc::downgrade(&table), Duration::from_secs(1)));
    drop(table);
    let ended = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(ended.is_ok_and(|joined| joined.is_ok()));
}

#[tokio::test]
async fn transactions_see_their_own_writes_in_order() {
    let store = InMemoryStateStore::new();
    assert!(store.set(put("a", "0")).await.is_ok()); // version 1
    let ops = vec![
        TransactionOp::Upsert(with_etag(put("a", "1"), "1")), // version 2
        TransactionOp::Upsert(with_etag(put("a", "2"), "2")), // version 3
        TransactionOp::Upsert(put("b", "x")),                 // version 4
        TransactionOp::Delete(del("b", Some("4"))),
        TransactionOp::Delete(del("missing", None)),
    ];
    assert!(store.transact(ops, Metadata::new()).await.is_ok());
    let a = read(&store, "a").await;
    assert_eq!(a.as_ref().map(|r| r.data.clone()), Some(Bytes::from("2")));
    assert_eq!(a.and_then(|r| r.etag).as_deref(), Some("3"));
    assert!(read(&store, "b").await.is_none());
    // The next write continues after the last version the transaction used.
    assert!(store.set(put("c", "v")).await.is_ok());
    assert_eq!(
        read(&store, "c").await.and_then(|r| r.etag).as_deref(),
        Some("5")
    );
}

#[tokio::test]
async fn a_failing_operation_leaves_nothing_applied() {
    let store = InMemoryStateStore::new();
    assert!(store.set(put("a", "old")).await.is_ok());
    let ops = vec![
        TransactionOp::Upsert(put("a", "new")),
        TransactionOp::Upsert(put("b", "new")),
        TransactionOp::Delete(del("a", Some("1"))), // a is at version 2 inside the transaction
    ];
    let err = store.transact(ops, Metadata::new()).await.err();
    assert_eq!(
        err.as_ref().map(|e| e.kind()),
        Some(ErrorKind::EtagMismatch)
    );
    assert!(err.is_some_and(|e| e.message().contains("operation 2")));
    assert_eq!(value(&store, "a").await, Some(Bytes::from("old")));
    assert!(read(&store, "b").await.is_none());

    // A request error in a later operation also stops the earlier ones.
    let ops = vec![
        TransactionOp::Upsert(put("b", "new")),
        TransactionOp::Upsert(with_ttl(put("c", "v"), "forever")),
    ];
    let err = store.transact(ops, Metadata::new()).await;
    assert_eq!(kind(err), Some(ErrorKind::InvalidArgument));
    assert!(read(&store, "b").await.is_none());
    assert!(store.set(put("z", "v")).await.is_ok());
    assert_eq!(
        read(&store, "z").await.and_then(|r| r.etag).as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn bulk_set_is_per_key() {
    let store = InMemoryStateStore::new();
    let reqs = vec![put("a", "1"), with_etag(put("b", "2"), "9"), put("c", "3")];
    let err = store.bulk_set(reqs).await.err();
    assert_eq!(
        err.as_ref().map(|e| e.kind()),
        Some(ErrorKind::EtagMismatch)
    );
    assert!(err.is_some_and(|e| e.message().contains("\"b\"")));
    assert!(read(&store, "a").await.is_some());
    assert!(read(&store, "b").await.is_none());
    assert!(read(&store, "c").await.is_some());
}

#[test]
fn features() {
    let features = InMemoryStateStore::new().features();
    assert_eq!(
        features,
        StateFeatures {
            etag: true,
            transactional: true,
            ttl: true,
            query: true
        }
    );
}

fn doc(key: &str, json: &str) -> SetRequest {
    put(key, json)
}

fn query(filter: Option<Filter>, sort: Vec<Sorting>, limit: Option<usize>) -> Query {
    Query {
        filter,
        sort,
        page: Page {
            limit: limit.and_then(std::num::NonZeroUsize::new),
            token: None,
        },
    }
}

async fn run(store: &InMemoryStateStore, prefix: &str, query: Query) -> Result<QueryResponse> {
    store
        .query(QueryRequest {
            query,
            key_prefix: prefix.into(),
            metadata: Metadata::new(),
        })
        .await
}

fn keys_of(resp: &QueryResponse) -> Vec<&str> {
    resp.results.iter().map(|r| r.key.as_str()).collect()
}

fn path(p: &str) -> KeyPath {
    KeyPath::parse(p).expect("path")
}

async fn employees() -> InMemoryStateStore {
    let store = InMemoryStateStore::new();
    let reqs = vec![
        doc(
            "app||1",
            r#"{"person": {"org": "Dev Ops", "id": 1036}, "state": "CA"}"#,
        ),
        doc(
            "app||2",
            r#"{"person": {"org": "Hardware", "id": 1028}, "state": "WA"}"#,
        ),
        doc(
            "app||3",
            r#"{"person": {"org": "Finance", "id": 1071}, "state": "NY"}"#,
        ),
        doc(
            "app||4",
            r#"{"person": {"org": "Dev Ops", "id": 1042}, "state": "WA"}"#,
        ),
        doc("app||5", "not json"),
        doc(
            "other||1",
            r#"{"person": {"org": "Dev Ops", "id": 1}, "state": "CA"}"#,
        ),
    ];
    store.bulk_set(reqs).await.expect("seed");
    store
}

#[tokio::test]
async fn query_filters_only_the_prefix_and_skips_values_that_are_not_json() {
    let store = employees().await;
    let all = run(&store, "app||", Query::default()).await.expect("query");
    assert_eq!(keys_of(&all), ["app||1", "app||2", "app||3", "app||4"]);
    assert_eq!(all.token, None);
    let item = &all.results[0];
    assert_eq!(item.etag, read(&store, "app||1").await.and_then(|r| r.etag));
    assert!(item.data.starts_with(b"{\"person\""));

    let dev_ops = Filter::Compare {
        op: Comparison::Eq,
        key: path("person.org"),
        value: serde_json::json!("Dev Ops"),
    };
    let found = run(&store, "app||", query(Some(dev_ops.clone()), vec![], None))
        .await
        .expect("query");
    assert_eq!(keys_of(&found), ["app||1", "app||4"]);
    let everyone = run(&store, "", query(Some(dev_ops), vec![], None))
        .await
        .expect("query");
    assert_eq!(keys_of(&everyone), ["app||1", "app||4", "other||1"]);
}

#[tokio::test]
async fn query_sorts_on_nested_keys_and_pages_through_tokens() {
    let store = employees().await;
    let by_id = |order| Sorting {
        key: path("person.id"),
        order,
    };
    let desc = run(&store, "app||", query(None, vec![by_id(Order::Desc)], None))
        .await
        .expect("query");
    assert_eq!(keys_of(&desc), ["app||3", "app||4", "app||1", "app||2"]);

    let mut q = query(None, vec![by_id(Order::Asc)], Some(3));
    let first = run(&store, "app||", q.clone()).await.expect("page 1");
    assert_eq!(keys_of(&first), ["app||2", "app||1", "app||4"]);
    assert_eq!(first.token.as_deref(), Some("3"));
    q.page.token = first.token;
    let second = run(&store, "app||", q.clone()).await.expect("page 2");
    assert_eq!(keys_of(&second), ["app||3"]);
    assert_eq!(second.token, None, "the last page has no token");

    // A token past the end (the data shrank meanwhile) is an empty last page.
    q.page.token = Some("10".into());
    let past = run(&store, "app||", q.clone()).await.expect("past the end");
    assert!(past.results.is_empty() && past.token.is_none());
    for bad in ["x", "-1", "+1", "1.0", " 1"] {
        q.page.token = Some(bad.into());
        let err = run(&store, "app||", q.clone()).await.err();
        assert_eq!(
            err.map(|e| e.kind()),
            Some(ErrorKind::InvalidArgument),
            "{bad:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn query_never_returns_expired_values() {
    let store = InMemoryStateStore::new();
    store
        .set(with_ttl(doc("app||short", r#"{"a": 1}"#), "1"))
        .await
        .expect("set");
    store
        .set(doc("app||long", r#"{"a": 1}"#))
        .await
        .expect("set");
    let before = run(&store, "app||", Query::default()).await.expect("query");
    assert_eq!(keys_of(&before), ["app||long", "app||short"]);
    tokio::time::advance(Duration::from_secs(1)).await;
    let after = run(&store, "app||", Query::default()).await.expect("query");
    assert_eq!(keys_of(&after), ["app||long"]);
}
