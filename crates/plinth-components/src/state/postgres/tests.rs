//! Tests against the real PostgreSQL: `PLINTH_TEST_POSTGRES` (a connection string), or the
//! local default below. A test that cannot reach it fails. Every test works in tables of
//! its own, named with a UUID, and drops them at the end, even when it fails.

use std::time::Duration;

use plinth_core::ErrorKind;
use plinth_core::component::state::StateOptions;
use plinth_core::component::state::query::{
    Comparison, Filter, KeyPath, Order, Page, Query, Sorting,
};
use plinth_core::metadata::TTL_IN_SECONDS;

use super::config::{
    CLEANUP_INTERVAL, CONNECTION_STRING, METADATA_TABLE_NAME, TABLE_NAME, TABLE_PREFIX, TIMEOUT,
};
use super::*;
use crate::postgres_client::test_support::{DEFAULT_URL, DropOnExit, connect, unique, url};
use serde_json::json;

/// A store over tables of its own, and a plain client to look at them with SQL.
struct Fixture {
    store: PostgresStateStore,
    sql: tokio_postgres::Client,
    _tables: DropOnExit,
}

fn spec(table: &str, meta: &str) -> ComponentSpec {
    ComponentSpec::new("statestore", TYPE_NAME)
        .with_metadata(CONNECTION_STRING, url())
        .with_metadata(TABLE_NAME, table)
        .with_metadata(METADATA_TABLE_NAME, meta)
        .with_metadata(TIMEOUT, "5s")
}

async fn fixture_with(extra: &[(&str, &str)]) -> Fixture {
    let table = unique("plinth_state");
    let meta = unique("plinth_meta");
    let tables = DropOnExit::tables(&[&table, &meta]);
    let mut spec = spec(&table, &meta);
    for (k, v) in extra {
        spec = spec.with_metadata(*k, *v);
    }
    let store = PostgresStateStore::new(PostgresConfig::from_spec(&spec).expect("valid config"))
        .expect("a store");
    store
        .init()
        .await
        .expect("init against the real PostgreSQL");
    Fixture {
        store,
        sql: connect().await,
        _tables: tables,
    }
}

async fn fixture() -> Fixture {
    fixture_with(&[]).await
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

async fn read(store: &PostgresStateStore, key: &str) -> Option<GetResponse> {
    let req = GetRequest {
        key: key.into(),
        ..Default::default()
    };
    store.get(req).await.expect("get")
}

async fn value(store: &PostgresStateStore, key: &str) -> Option<Bytes> {
    read(store, key).await.map(|r| r.data)
}

async fn etag(store: &PostgresStateStore, key: &str) -> String {
    read(store, key)
        .await
        .and_then(|r| r.etag)
        .expect("the key exists")
}

fn kind<T>(result: Result<T>) -> Option<ErrorKind> {
    result.err().map(|e| e.kind())
}

#[tokio::test]
async fn postgres_set_get_json_text_and_binary() {
    let fx = fixture().await;
    let json = br#"{"name":"plinth","n":1}"#.to_vec();
    let binary = vec![0u8, 159, 146, 150, 255, 0];
    fx.store.set(put("json", json.clone())).await.unwrap();
    fx.store.set(put("text", "hello")).await.unwrap();
    fx.store.set(put("bin", binary.clone())).await.unwrap();
    assert_eq!(value(&fx.store, "json").await.as_deref(), Some(&json[..]));
    assert_eq!(
        value(&fx.store, "text").await.as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(value(&fx.store, "bin").await.as_deref(), Some(&binary[..]));
    let got = read(&fx.store, "text").await.unwrap();
    let etag = got.etag.expect("an etag");
    assert!(Uuid::parse_str(&etag).is_ok(), "etag {etag} is a UUID");
    assert!(!got.metadata.contains_key(TTL_EXPIRE_TIME));
    // Each write gets a new ETag.
    fx.store.set(put("text", "again")).await.unwrap();
    assert_ne!(self::etag(&fx.store, "text").await, etag);
    assert_eq!(read(&fx.store, "missing").await, None);
    assert_eq!(
        kind(fx.store.set(put("", "x")).await),
        Some(ErrorKind::InvalidArgument)
    );
}

#[tokio::test]
async fn postgres_delete() {
    let fx = fixture().await;
    fx.store.set(put("k", "v")).await.unwrap();
    fx.store.delete(del("k", None)).await.unwrap();
    assert_eq!(read(&fx.store, "k").await, None);
    // Deleting a missing key without an ETag succeeds.
    fx.store.delete(del("k", None)).await.unwrap();
}

#[tokio::test]
async fn postgres_bulk_set_get_delete() {
    let fx = fixture().await;
    fx.store
        .bulk_set(vec![put("a", "1"), put("b", "2"), put("c", "3")])
        .await
        .unwrap();
    let keys = vec!["c".to_owned(), "missing".to_owned(), "a".to_owned()];
    let items = fx.store.bulk_get(keys, Metadata::new()).await.unwrap();
    let got: Vec<(String, Option<Bytes>)> = items
        .into_iter()
        .map(|i| (i.key, i.value.map(|v| v.data)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("c".to_owned(), Some(Bytes::from("3"))),
            ("missing".to_owned(), None),
            ("a".to_owned(), Some(Bytes::from("1"))),
        ]
    );
    fx.store
        .bulk_delete(vec![del("a", None), del("b", None)])
        .await
        .unwrap();
    assert_eq!(value(&fx.store, "a").await, None);
    assert_eq!(value(&fx.store, "b").await, None);
    assert_eq!(value(&fx.store, "c").await, Some(Bytes::from("3")));
}

#[tokio::test]
async fn postgres_etag_mismatch_and_malformed() {
    let fx = fixture().await;
    fx.store.set(put("k", "v1")).await.unwrap();
    let current = etag(&fx.store, "k").await;
    let other = Uuid::new_v4().to_string();
    assert_eq!(
        kind(fx.store.set(with_etag(put("k", "v2"), &other)).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert_eq!(
        kind(fx.store.set(with_etag(put("k", "v2"), "not-a-uuid")).await),
        Some(ErrorKind::EtagInvalid)
    );
    assert_eq!(
        kind(fx.store.delete(del("k", Some(&other))).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert_eq!(
        kind(fx.store.delete(del("k", Some("bad"))).await),
        Some(ErrorKind::EtagInvalid)
    );
    // An ETag for a key that does not exist is a mismatch.
    assert_eq!(
        kind(fx.store.set(with_etag(put("new", "v"), &other)).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert_eq!(value(&fx.store, "k").await, Some(Bytes::from("v1")));
    fx.store
        .set(with_etag(put("k", "v2"), &current))
        .await
        .unwrap();
    assert_eq!(value(&fx.store, "k").await, Some(Bytes::from("v2")));
    // The old ETag is spent.
    assert_eq!(
        kind(fx.store.set(with_etag(put("k", "v3"), &current)).await),
        Some(ErrorKind::EtagMismatch)
    );
    let current = etag(&fx.store, "k").await;
    fx.store.delete(del("k", Some(&current))).await.unwrap();
    assert_eq!(read(&fx.store, "k").await, None);
}

#[tokio::test]
async fn postgres_first_write_with_and_without_etag() {
    let fx = fixture().await;
    fx.store.set(first_write(put("k", "v1"))).await.unwrap();
    assert_eq!(
        kind(fx.store.set(first_write(put("k", "v2"))).await),
        Some(ErrorKind::EtagMismatch)
    );
    let current = etag(&fx.store, "k").await;
    fx.store
        .set(first_write(with_etag(put("k", "v2"), &current)))
        .await
        .unwrap();
    assert_eq!(value(&fx.store, "k").await, Some(Bytes::from("v2")));
    assert_eq!(
        kind(
            fx.store
                .set(first_write(with_etag(put("k", "v3"), &current)))
                .await
        ),
        Some(ErrorKind::EtagMismatch)
    );
    // An expired row not yet cleaned up does not block a first write.
    fx.sql
        .execute(
            &format!(
                "UPDATE {} SET expires_at = now() - interval '1 hour' WHERE key = 'k'",
                fx.store.table()
            ),
            &[],
        )
        .await
        .unwrap();
    fx.store.set(first_write(put("k", "v4"))).await.unwrap();
    assert_eq!(value(&fx.store, "k").await, Some(Bytes::from("v4")));
}

#[tokio::test]
async fn postgres_concurrent_writers_with_one_etag_or_first_write_have_one_winner() {
    let fx = fixture_with(&[(super::config::MAX_CONNS, "8")]).await;
    fx.store.set(put("k", "v0")).await.unwrap();
    let current = etag(&fx.store, "k").await;
    let writes = (0..8).map(|i| {
        fx.store
            .set(with_etag(put("k", format!("v{}", i + 1)), &current))
    });
    let results = futures::future::join_all(writes).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind() == ErrorKind::EtagMismatch)
    );

    let creates = (0..8).map(|i| fx.store.set(first_write(put("new", format!("{i}")))));
    let results = futures::future::join_all(creates).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
}

#[tokio::test]
async fn postgres_transactions_apply_in_order_and_atomically() {
    let fx = fixture().await;
    fx.store.set(put("gone", "x")).await.unwrap();
    let ops = vec![
        TransactionOp::Upsert(put("a", "1")),
        TransactionOp::Upsert(put("a", "2")),
        TransactionOp::Delete(del("gone", None)),
        TransactionOp::Delete(del("never-existed", None)),
        TransactionOp::Upsert(put("b", "3")),
        TransactionOp::Delete(del("b", None)),
    ];
    fx.store.transact(ops, Metadata::new()).await.unwrap();
    assert_eq!(value(&fx.store, "a").await, Some(Bytes::from("2")));
    assert_eq!(value(&fx.store, "gone").await, None);
    assert_eq!(value(&fx.store, "b").await, None);

    // A failing operation rolls back the ones before it.
    let stale = Uuid::new_v4().to_string();
    let ops = vec![
        TransactionOp::Upsert(put("a", "changed")),
        TransactionOp::Upsert(put("c", "new")),
        TransactionOp::Upsert(with_etag(put("a", "x"), &stale)),
    ];
    let err = fx.store.transact(ops, Metadata::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EtagMismatch);
    assert!(err.to_string().contains("operation 2"), "{err}");
    assert_eq!(value(&fx.store, "a").await, Some(Bytes::from("2")));
    assert_eq!(value(&fx.store, "c").await, None);

    // Each operation sees the ones before it: the ETag read before the transaction is
    // spent by its first write, so the delete that reuses it fails and undoes that write.
    let current = etag(&fx.store, "a").await;
    let ops = vec![
        TransactionOp::Upsert(with_etag(put("a", "3"), &current)),
        TransactionOp::Delete(del("a", Some(&current))),
    ];
    assert_eq!(
        kind(fx.store.transact(ops, Metadata::new()).await),
        Some(ErrorKind::EtagMismatch)
    );
    assert_eq!(value(&fx.store, "a").await, Some(Bytes::from("2")));
}

#[tokio::test]
async fn postgres_ttl() {
    let fx = fixture().await;
    for bad in ["abc", "-2", "1.5"] {
        assert_eq!(
            kind(fx.store.set(with_ttl(put("k", "v"), bad)).await),
            Some(ErrorKind::InvalidArgument),
            "ttl {bad}"
        );
    }
    assert_eq!(read(&fx.store, "k").await, None);

    fx.store
        .set(with_ttl(put("short", "v"), "1"))
        .await
        .unwrap();
    let got = read(&fx.store, "short").await;
    if let Some(got) = got {
        let at = got.metadata.get(TTL_EXPIRE_TIME).expect("ttlExpireTime");
        assert!(DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while read(&fx.store, "short").await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fx.store
            .bulk_get(vec!["short".into()], Metadata::new())
            .await
            .unwrap()[0]
            .value
            .is_none()
    );

    fx.store
        .set(with_ttl(put("long", "v"), "3600"))
        .await
        .unwrap();
    let got = read(&fx.store, "long").await.unwrap();
    assert!(got.metadata.contains_key(TTL_EXPIRE_TIME));
    // -1 removes the expiry.
    fx.store
        .set(with_ttl(put("long", "v"), "-1"))
        .await
        .unwrap();
    let got = read(&fx.store, "long").await.unwrap();
    assert!(!got.metadata.contains_key(TTL_EXPIRE_TIME));
    let expires: Option<DateTime<Utc>> = fx
        .sql
        .query_one(
            &format!(
                "SELECT expires_at FROM {} WHERE key = 'long'",
                fx.store.table()
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(expires, None);
}

#[tokio::test]
async fn postgres_cleanup_deletes_expired_rows_and_stops_on_close() {
    let fx = fixture_with(&[(CLEANUP_INTERVAL, "1s")]).await;
    let table = fx.store.table().to_owned();
    fx.sql
        .execute(
            &format!(
                "INSERT INTO {table} (key, value, etag, expires_at)
                 VALUES ('old', 'v', gen_random_uuid(), now() - interval '1 minute'),
                        ('live', 'v', gen_random_uuid(), NULL)"
            ),
            &[],
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = fx
            .sql
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no cleanup ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(value(&fx.store, "live").await, Some(Bytes::from("v")));
    let task = fx.store.cleaner.abort_handle().expect("a cleanup task");
    assert!(!task.is_finished());
    fx.store.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !task.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cleanup task outlived close"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn postgres_reads_rows_written_in_dapr_v2_layout() {
    let fx = fixture().await;
    let table = fx.store.table().to_owned();
    let etag = Uuid::new_v4();
    // As Dapr's v2 component writes them: the value's bytes, a UUID ETag, created_at by
    // default, updated_at and expires_at.
    fx.sql
        .execute(
            &format!(
                "INSERT INTO {table} (key, value, etag, updated_at, expires_at)
                 VALUES ($1, $2, $3, now(), now() + interval '1 hour')"
            ),
            &[&"myapp||order", &&br#"{"id":7}"#[..], &etag],
        )
        .await
        .unwrap();
    let got = read(&fx.store, "myapp||order").await.expect("the row");
    assert_eq!(got.data, Bytes::from_static(br#"{"id":7}"#));
    assert_eq!(got.etag, Some(etag.to_string()));
    assert!(got.metadata.contains_key(TTL_EXPIRE_TIME));
    // Dapr's ETag works for a write through Plinth.
    fx.store
        .set(with_etag(put("myapp||order", "x"), &etag.to_string()))
        .await
        .unwrap();
    // The table has exactly Dapr's columns.
    let columns: Vec<(String, String)> = fx
        .sql
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let columns: Vec<(&str, &str)> = columns
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        columns,
        vec![
            ("key", "text"),
            ("value", "bytea"),
            ("etag", "uuid"),
            ("created_at", "timestamp with time zone"),
            ("updated_at", "timestamp with time zone"),
            ("expires_at", "timestamp with time zone"),
        ]
    );
}

#[tokio::test]
async fn postgres_default_table_records_dapr_migration_level() {
    // With tablePrefix and no tableName, the table is Dapr's `<prefix>state`, and the
    // migration level is recorded as Dapr does.
    let prefix = format!("{}_", unique("plinth"));
    let meta = unique("plinth_meta");
    let _tables = DropOnExit::tables(&[&format!("{prefix}state"), &meta]);
    let spec = ComponentSpec::new("statestore", TYPE_NAME)
        .with_metadata(CONNECTION_STRING, url())
        .with_metadata(TABLE_PREFIX, prefix.as_str())
        .with_metadata(METADATA_TABLE_NAME, meta.as_str());
    let store = PostgresStateStore::new(PostgresConfig::from_spec(&spec).unwrap()).unwrap();
    store.init().await.unwrap();
    assert_eq!(store.table(), format!("{prefix}state"));
    let sql = connect().await;
    let level: String = sql
        .query_one(
            &format!("SELECT value FROM {meta} WHERE key = $1"),
            &[&format!("migrations-state-v2-{prefix}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, "1");
    store.set(put("k", "v")).await.unwrap();
    assert_eq!(value(&store, "k").await, Some(Bytes::from("v")));
    store.close().await;
}

#[test]
fn postgres_bad_table_name_is_a_config_error() {
    for (field, bad) in [
        (TABLE_NAME, "state; DROP TABLE x"),
        (TABLE_NAME, "1state"),
        (TABLE_NAME, "a.b.c"),
        (TABLE_NAME, "\"quoted\""),
        (TABLE_PREFIX, "bad-prefix"),
        (METADATA_TABLE_NAME, "meta data"),
    ] {
        let spec = ComponentSpec::new("statestore", TYPE_NAME)
            .with_metadata(CONNECTION_STRING, DEFAULT_URL)
            .with_metadata(field, bad);
        let err = factory(&spec).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        assert!(
            err.to_string().contains(&format!("metadata.{field}")),
            "{err}"
        );
    }
    let long = "t".repeat(64);
    let spec = ComponentSpec::new("statestore", TYPE_NAME)
        .with_metadata(CONNECTION_STRING, DEFAULT_URL)
        .with_metadata(TABLE_NAME, long);
    assert!(factory(&spec).is_err());
    for good in ["state", "my_schema.state", "_s1"] {
        let spec = ComponentSpec::new("statestore", TYPE_NAME)
            .with_metadata(CONNECTION_STRING, DEFAULT_URL)
            .with_metadata(TABLE_NAME, good);
        assert!(factory(&spec).is_ok(), "{good}");
    }
}

#[test]
fn postgres_config_defaults_and_errors() {
    let spec = ComponentSpec::new("statestore", TYPE_NAME).with_metadata(
        CONNECTION_STRING,
        "host=localhost user=postgres password=secret port=5432 database=my_db",
    );
    let config = PostgresConfig::from_spec(&spec).unwrap();
    assert_eq!(config.table, "state");
    assert_eq!(config.metadata_table, "dapr_metadata");
    assert_eq!(config.timeout, Duration::from_secs(20));
    assert_eq!(config.cleanup_interval, Some(Duration::from_secs(3600)));
    assert_eq!(config.connection.get_dbname(), Some("my_db"));
    assert!(!format!("{config:?}").contains("secret"));
    for off in ["0", "-1", "-5s"] {
        let config =
            PostgresConfig::from_spec(&spec.clone().with_metadata(CLEANUP_INTERVAL, off)).unwrap();
        assert_eq!(config.cleanup_interval, None, "{off}");
    }
    let missing = ComponentSpec::new("statestore", TYPE_NAME);
    let err = factory(&missing).unwrap_err();
    assert!(
        err.to_string().contains("metadata.connectionString"),
        "{err}"
    );
    let bad = ComponentSpec::new("statestore", TYPE_NAME)
        .with_metadata(CONNECTION_STRING, "host=localhost nonsense=1");
    let err = factory(&bad).unwrap_err();
    assert!(
        err.to_string().contains("metadata.connectionString"),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_rejects_a_table_in_dapr_v1_layout() {
    let table = unique("plinth_state");
    let meta = unique("plinth_meta");
    let _tables = DropOnExit::tables(&[&table, &meta]);
    let sql = connect().await;
    sql.batch_execute(&format!(
        "CREATE TABLE {table} (key text NOT NULL PRIMARY KEY, value jsonb NOT NULL,
         isbinary boolean NOT NULL, insertdate timestamp with time zone NOT NULL DEFAULT now(),
         updatedate timestamp with time zone, expiredate timestamp with time zone)"
    ))
    .await
    .unwrap();
    let store =
        PostgresStateStore::new(PostgresConfig::from_spec(&spec(&table, &meta)).unwrap()).unwrap();
    let err = store.init().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("v2 layout"), "{err}");

    let mut v3 = spec(&table, &meta);
    v3.version = "v3".into();
    let err = factory(&v3).unwrap_err();
    assert!(err.to_string().contains("spec.version"), "{err}");
}

#[tokio::test]
async fn postgres_unreachable_server_is_unavailable_within_seconds() {
    let spec = ComponentSpec::new("statestore", TYPE_NAME)
        // Nothing listens on port 1.
        .with_metadata(
            CONNECTION_STRING,
            "host=127.0.0.1 port=1 user=postgres dbname=test",
        )
        .with_metadata(TIMEOUT, "2s");
    let store = PostgresStateStore::new(PostgresConfig::from_spec(&spec).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let err = store.init().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string().contains("refused"),
        "the cause is reported: {err}"
    );
    assert_eq!(kind(store.ping().await), Some(ErrorKind::Unavailable));
    assert_eq!(
        kind(
            store
                .get(GetRequest {
                    key: "k".into(),
                    ..Default::default()
                })
                .await
        ),
        Some(ErrorKind::Unavailable)
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A server that never answers (a non-routable address) too, within the timeout.
    let spec = ComponentSpec::new("statestore", TYPE_NAME)
        .with_metadata(
            CONNECTION_STRING,
            "host=10.255.255.1 port=5432 user=postgres dbname=test",
        )
        .with_metadata(TIMEOUT, "1s");
    let store = PostgresStateStore::new(PostgresConfig::from_spec(&spec).unwrap()).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(kind(store.ping().await), Some(ErrorKind::Unavailable));
    assert!(started.elapsed() < Duration::from_secs(5));
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

async fn run(store: &PostgresStateStore, prefix: &str, query: Query) -> Result<QueryResponse> {
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

fn cmp(op: Comparison, p: &str, value: serde_json::Value) -> Filter {
    Filter::Compare {
        op,
        key: path(p),
        value,
    }
}

async fn employees() -> Fixture {
    let fx = fixture().await;
    let reqs = vec![
        put(
            "app||1",
            r#"{"person": {"org": "Dev Ops", "id": 1036}, "state": "CA"}"#,
        ),
        put(
            "app||2",
            r#"{"person": {"org": "Hardware", "id": 1028}, "state": "WA"}"#,
        ),
        put(
            "app||3",
            r#"{"person": {"org": "Finance", "id": 1071}, "state": "NY"}"#,
        ),
        put(
            "app||4",
            r#"{"person": {"org": "Dev Ops", "id": 1042}, "state": "WA"}"#,
        ),
        put("app||5", "not json"),
        put("app||6", vec![0xffu8, 0xfe, 0x00]),
        put(
            "other||1",
            r#"{"person": {"org": "Dev Ops", "id": 1}, "state": "CA"}"#,
        ),
    ];
    fx.store.bulk_set(reqs).await.expect("seed");
    fx
}

#[tokio::test]
async fn postgres_query_filters_only_the_prefix_and_skips_values_that_are_not_json() {
    let fx = employees().await;
    let store = &fx.store;
    assert!(store.features().query);
    let all = run(store, "app||", Query::default()).await.expect("query");
    assert_eq!(keys_of(&all), ["app||1", "app||2", "app||3", "app||4"]);
    assert_eq!(all.token, None);
    let item = &all.results[0];
    assert_eq!(item.etag, read(store, "app||1").await.and_then(|r| r.etag));
    assert!(item.data.starts_with(b"{\"person\""));

    let dev_ops = cmp(Comparison::Eq, "person.org", json!("Dev Ops"));
    let found = run(store, "app||", query(Some(dev_ops.clone()), vec![], None))
        .await
        .expect("query");
    assert_eq!(keys_of(&found), ["app||1", "app||4"]);
    let everyone = run(store, "", query(Some(dev_ops), vec![], None))
        .await
        .expect("query");
    assert_eq!(keys_of(&everyone), ["app||1", "app||4", "other||1"]);
}

#[tokio::test]
async fn postgres_query_operators() {
    let fx = employees().await;
    let store = &fx.store;
    let keys = |f: Filter| async move {
        let resp = run(store, "app||", query(Some(f), vec![], None))
            .await
            .expect("query");
        keys_of(&resp)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(cmp(Comparison::Eq, "person.id", json!(1036.0))).await,
        ["app||1"],
        "numbers compare by value"
    );
    assert!(
        keys(cmp(Comparison::Eq, "person.id", json!("1036")))
            .await
            .is_empty(),
        "no coercion"
    );
    assert_eq!(
        keys(cmp(Comparison::Neq, "state", json!("WA"))).await,
        ["app||1", "app||3"]
    );
    assert_eq!(
        keys(cmp(Comparison::Neq, "missing", json!(1))).await.len(),
        4,
        "NEQ holds when the path is absent"
    );
    assert_eq!(
        keys(cmp(Comparison::Gt, "person.id", json!(1036))).await,
        ["app||3", "app||4"]
    );
    assert_eq!(
        keys(cmp(Comparison::Gte, "person.id", json!(1036))).await,
        ["app||1", "app||3", "app||4"]
    );
    assert_eq!(
        keys(cmp(Comparison::Lt, "person.id", json!(1036))).await,
        ["app||2"]
    );
    assert_eq!(
        keys(cmp(Comparison::Lte, "person.id", json!(1036))).await,
        ["app||1", "app||2"]
    );
    assert_eq!(
        keys(cmp(Comparison::Gt, "person.org", json!("E"))).await,
        ["app||2", "app||3"]
    );
    assert!(
        keys(cmp(Comparison::Gt, "person.org", json!(1)))
            .await
            .is_empty(),
        "mixed types never order"
    );
    assert_eq!(
        keys(Filter::In {
            key: path("state"),
            values: vec![json!("CA"), json!("NY")],
        })
        .await,
        ["app||1", "app||3"]
    );
    assert!(
        keys(Filter::In {
            key: path("state"),
            values: vec![],
        })
        .await
        .is_empty()
    );
    let nested = Filter::Or(vec![
        cmp(Comparison::Eq, "person.org", json!("Finance")),
        Filter::And(vec![
            cmp(Comparison::Eq, "person.org", json!("Dev Ops")),
            cmp(Comparison::Eq, "state", json!("WA")),
        ]),
    ]);
    assert_eq!(keys(nested).await, ["app||3", "app||4"]);
    // A value that looks like SQL is only ever a parameter.
    assert!(
        keys(cmp(Comparison::Eq, "state", json!("x' OR '1'='1")))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn postgres_query_sorts_on_nested_keys_and_pages_through_tokens() {
    let fx = employees().await;
    let store = &fx.store;
    let by_id = |order| Sorting {
        key: path("person.id"),
        order,
    };
    let desc = run(store, "app||", query(None, vec![by_id(Order::Desc)], None))
        .await
        .expect("query");
    assert_eq!(keys_of(&desc), ["app||3", "app||4", "app||1", "app||2"]);
    let by_org = run(
        store,
        "app||",
        query(
            None,
            vec![
                Sorting {
                    key: path("person.org"),
                    order: Order::Asc,
                },
                by_id(Order::Desc),
            ],
            None,
        ),
    )
    .await
    .expect("query");
    assert_eq!(keys_of(&by_org), ["app||4", "app||1", "app||3", "app||2"]);

    let mut q = query(None, vec![by_id(Order::Asc)], Some(3));
    let first = run(store, "app||", q.clone()).await.expect("page 1");
    assert_eq!(keys_of(&first), ["app||2", "app||1", "app||4"]);
    assert_eq!(first.token.as_deref(), Some("3"));
    q.page.token = first.token;
    let second = run(store, "app||", q.clone()).await.expect("page 2");
    assert_eq!(keys_of(&second), ["app||3"]);
    assert_eq!(second.token, None, "the last page has no token");

    q.page.token = Some("10".into());
    let past = run(store, "app||", q.clone()).await.expect("past the end");
    assert!(past.results.is_empty() && past.token.is_none());
    for bad in ["x", "-1", "+1", "1.0", " 1"] {
        q.page.token = Some(bad.into());
        let err = run(store, "app||", q.clone()).await.err();
        assert_eq!(
            err.map(|e| e.kind()),
            Some(ErrorKind::InvalidArgument),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn postgres_query_never_returns_expired_values() {
    let fx = fixture().await;
    fx.store
        .set(with_ttl(put("app||short", r#"{"a": 1}"#), "3600"))
        .await
        .unwrap();
    fx.store.set(put("app||long", r#"{"a": 1}"#)).await.unwrap();
    let before = run(&fx.store, "app||", Query::default()).await.unwrap();
    assert_eq!(keys_of(&before), ["app||long", "app||short"]);
    fx.sql
        .execute(
            &format!(
                "UPDATE {} SET expires_at = now() - interval '1 second' WHERE key = 'app||short'",
                fx.store.table()
            ),
            &[],
        )
        .await
        .unwrap();
    let after = run(&fx.store, "app||", Query::default()).await.unwrap();
    assert_eq!(keys_of(&after), ["app||long"]);
}

fn v1_spec(table: &str, meta: &str) -> ComponentSpec {
    let mut spec = spec(table, meta);
    spec.version = "v1".into();
    spec
}

async fn v1_store(table: &str, meta: &str) -> v1::PostgresV1StateStore {
    let store = v1::PostgresV1StateStore::new(
        PostgresConfig::from_spec(&v1_spec(table, meta)).expect("valid config"),
    )
    .expect("a store");
    store
        .init()
        .await
        .expect("init against the real PostgreSQL");
    store
}

#[tokio::test]
async fn postgres_v1_reads_rows_written_by_hand_in_daprs_v1_shape() {
    let table = unique("plinth_state_v1");
    let meta = unique("plinth_meta");
    let _tables = DropOnExit::tables(&[&table, &meta]);
    let sql = connect().await;
    // Dapr's v1 table after its first two migrations, and rows as Dapr writes them: JSON
    // as jsonb, bytes as a base64 JSON string.
    sql.batch_execute(&format!(
        "CREATE TABLE {table} (key text NOT NULL PRIMARY KEY, value jsonb NOT NULL,
           isbinary boolean NOT NULL, insertdate timestamp with time zone NOT NULL DEFAULT now(),
           updatedate timestamp with time zone NULL, expiredate timestamp with time zone);
         INSERT INTO {table} (key, value, isbinary) VALUES
           ('app||json', '{{\"a\": 1, \"b\": [true, null]}}', false),
           ('app||bytes', to_jsonb('AAEC/w=='::text), true);
         INSERT INTO {table} (key, value, isbinary, expiredate) VALUES
           ('app||gone', '1', false, now() - interval '1 second'),
           ('app||later', '2', false, now() + interval '1 hour');"
    ))
    .await
    .expect("Dapr's rows");
    let store = v1_store(&table, &meta).await;
    let get = |key: &'static str| {
        let store = &store;
        async move {
            store
                .get(GetRequest {
                    key: key.into(),
                    ..Default::default()
                })
                .await
                .expect("get")
        }
    };
    let json = get("app||json").await.expect("present");
    assert_eq!(
        json.data,
        Bytes::from_static(br#"{"a": 1, "b": [true, null]}"#)
    );
    let xmin: String = sql
        .query_one(
            &format!("SELECT xmin::text FROM {table} WHERE key = 'app||json'"),
            &[],
        )
        .await
        .expect("xmin")
        .get(0);
    assert_eq!(
        json.etag.as_deref(),
        Some(xmin.as_str()),
        "xmin is the etag"
    );
    let bytes = get("app||bytes").await.expect("present");
    assert_eq!(bytes.data, Bytes::from_static(&[0, 1, 2, 255]));
    assert!(get("app||gone").await.is_none(), "expired");
    let later = get("app||later").await.expect("present");
    assert!(later.metadata.contains_key(TTL_EXPIRE_TIME));

    // A write with the row's etag succeeds and moves it; the old one is then stale.
    store
        .set(with_etag(put("app||json", "{\"a\": 2}"), &xmin))
        .await
        .expect("matching etag");
    let stale = store.set(with_etag(put("app||json", "{}"), &xmin)).await;
    assert_eq!(stale.err().map(|e| e.kind()), Some(ErrorKind::EtagMismatch));
    let malformed = store
        .set(with_etag(put("app||json", "{}"), "not-a-xid"))
        .await;
    assert_eq!(
        malformed.err().map(|e| e.kind()),
        Some(ErrorKind::EtagInvalid)
    );
    // Dapr's table is not migrated again by Plinth: no migration level is recorded.
    let level = sql
        .query_opt(
            &format!("SELECT value FROM {meta} WHERE key = 'migrations'"),
            &[],
        )
        .await
        .expect("metadata table");
    assert!(level.is_none());
}

#[tokio::test]
async fn postgres_v1_writes_rows_dapr_reads() {
    let table = unique("plinth_state_v1");
    let meta = unique("plinth_meta");
    let _tables = DropOnExit::tables(&[&table, &meta]);
    let store = v1_store(&table, &meta).await;
    let sql = connect().await;
    let level: String = sql
        .query_one(
            &format!("SELECT value FROM {meta} WHERE key = 'migrations'"),
            &[],
        )
        .await
        .expect("migration level")
        .get(0);
    assert_eq!(level, "3");
    let cases: [(&str, &[u8], bool); 4] = [
        // jsonb gives this back as written: stored as JSON.
        ("pretty", br#"{"a": 1}"#, false),
        // jsonb would add spaces: stored as bytes, so it reads back as written.
        ("compact", br#"{"a":1}"#, true),
        ("text", "héllo".as_bytes(), true),
        ("binary", &[0, 255, 10], true),
    ];
    for (key, value, binary) in cases {
        store
            .set(put(key, Bytes::copy_from_slice(value)))
            .await
            .expect("set");
        let got = store
            .get(GetRequest {
                key: key.into(),
                ..Default::default()
            })
            .await
            .expect("get")
            .expect("present");
        assert_eq!(&got.data[..], value, "{key}");
        let row = sql
            .query_one(
                &format!("SELECT isbinary, value #>> '{{}}', row_id FROM {table} WHERE key = $1"),
                &[&key],
            )
            .await
            .expect("row");
        assert_eq!(row.get::<_, bool>(0), binary, "{key}");
        if binary {
            // As Dapr stores bytes: standard base64 in a JSON string.
            let b64: String = row.get(1);
            let decoded: Vec<u8> = sql
                .query_one("SELECT decode($1, 'base64')", &[&b64])
                .await
                .expect("base64")
                .get(0);
            assert_eq!(decoded, value, "{key}");
        }
    }

    // A v2 table is refused under v1, and the other way round.
    let v2_table = unique("plinth_state");
    let _more = DropOnExit::tables(&[&v2_table]);
    let v2 = PostgresStateStore::new(PostgresConfig::from_spec(&spec(&v2_table, &meta)).unwrap())
        .unwrap();
    v2.init().await.expect("a v2 table");
    let wrong = v1::PostgresV1StateStore::new(
        PostgresConfig::from_spec(&v1_spec(&v2_table, &meta)).unwrap(),
    )
    .unwrap();
    let err = wrong.init().await.expect_err("not a v1 table");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let prefix = v1_spec(&table, &meta).with_metadata(TABLE_PREFIX, "p_");
    let err = factory(&prefix).expect_err("no prefix in v1");
    assert!(err.to_string().contains("metadata.tablePrefix"), "{err}");
}
