//! Tests against the real MariaDB/MySQL at 127.0.0.1:3306, database `test`, user root
//! (`PLINTH_TEST_MYSQL` overrides, a Go DSN); they fail when it is missing. Every test works
//! in tables (or a database) of its own, named with a fresh uuid, and drops them at the end.

use std::time::Duration;

use plinth_core::ErrorKind;
use plinth_core::component::state::StateOptions;
use tokio::time::Instant;

use super::*;
use crate::mysql_client::parse_connection_string;

fn mysql_url() -> String {
    std::env::var("PLINTH_TEST_MYSQL").unwrap_or_else(|_| "root@tcp(127.0.0.1:3306)/test".into())
}

fn unique(what: &str) -> String {
    format!("plinth_test_{what}_{}", Uuid::new_v4().simple())
}

/// A store in fresh tables of the test database, initialised.
async fn store() -> MysqlStateStore {
    store_with(|spec| spec).await
}

async fn store_with(edit: impl FnOnce(ComponentSpec) -> ComponentSpec) -> MysqlStateStore {
    let spec = ComponentSpec::new("s", TYPE_NAME)
        .with_metadata(config::CONNECTION_STRING, mysql_url())
        .with_metadata(config::TABLE_NAME, unique("state"))
        .with_metadata(config::METADATA_TABLE_NAME, unique("meta"));
    let store = MysqlStateStore::new(MysqlStateConfig::from_spec(&edit(spec)).expect("config"));
    store.init().await.unwrap_or_else(|e| {
        panic!(
            "MariaDB/MySQL must be reachable at {} (start it, or set PLINTH_TEST_MYSQL): {e}",
            mysql_url()
        )
    });
    store
}

/// A raw connection to the test server, without a default database.
async fn raw() -> mysql_async::Conn {
    let settings = parse_connection_string(&mysql_url()).expect("PLINTH_TEST_MYSQL is a DSN");
    let client = MysqlClient::new(&settings, None, 1, Duration::from_secs(10));
    client
        .conn()
        .await
        .expect("MariaDB/MySQL must be reachable")
}

async fn drop_tables(store: &MysqlStateStore) {
    store.close().await;
    let mut conn = raw().await;
    conn.query_drop(format!(
        "DROP TABLE IF EXISTS {}, {}",
        store.table, store.metadata_table
    ))
    .await
    .expect("drop tables");
}

fn put(key: &str, value: impl Into<Bytes>) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

async fn get(store: &MysqlStateStore, key: &str) -> Option<GetResponse> {
    store
        .get(GetRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .expect("get")
}

#[tokio::test]
async fn rows_written_by_dapr_read_back() {
    let store = store().await;
    let mut conn = raw().await;
    // As Dapr writes them: JSON as is; bytes as a JSON string of base64 with isbinary.
    let etag = Uuid::new_v4().to_string();
    conn.exec_drop(
        format!(
            "INSERT INTO {} (id, value, isbinary, eTag, expiredate) VALUES
             ('app||json', ?, 0, ?, NULL),
             ('app||bin', '\"AP8BCg==\"', 1, ?, CURRENT_TIMESTAMP + INTERVAL 100 SECOND),
             ('app||gone', '1', 0, ?, CURRENT_TIMESTAMP - INTERVAL 1 SECOND)",
            store.table
        ),
        (r#"{"name": "dapr", "n": [1, 2]}"#, &etag, &etag, &etag),
    )
    .await
    .expect("insert as dapr");
    let json = get(&store, "app||json").await.expect("json row");
    assert_eq!(json.data, r#"{"name": "dapr", "n": [1, 2]}"#);
    assert_eq!(json.etag.as_deref(), Some(etag.as_str()));
    assert!(!json.metadata.contains_key(TTL_EXPIRE_TIME));
    let bin = get(&store, "app||bin").await.expect("binary row");
    assert_eq!(bin.data, Bytes::from_static(&[0, 255, 1, 10]));
    let expire = bin.metadata.get(TTL_EXPIRE_TIME).expect("ttlExpireTime");
    let at = DateTime::parse_from_rfc3339(expire).expect("rfc 3339");
    assert!(
        at > chrono::Utc::now() + chrono::TimeDelta::seconds(90),
        "{expire}"
    );
    assert!(
        get(&store, "app||gone").await.is_none(),
        "expired reads as absent"
    );
    let items = store
        .bulk_get(
            vec!["app||bin".into(), "app||gone".into(), "app||json".into()],
            Metadata::new(),
        )
        .await
        .expect("bulk get");
    assert_eq!(
        items[0].value.as_ref().map(|v| v.data.clone()),
        Some(bin.data)
    );
    assert!(items[1].value.is_none());
    assert_eq!(
        items[2].value.as_ref().map(|v| v.data.clone()),
        Some(json.data)
    );
    // Dapr's ETag works for a write through the component.
    let mut req = put("app||json", "2");
    req.etag = Some(etag);
    store.set(req).await.expect("write with dapr's etag");
    drop_tables(&store).await;
}

#[tokio::test]
async fn values_are_stored_as_dapr_stores_them() {
    let store = store().await;
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let cases: [(&str, Bytes); 5] = [
        ("json", Bytes::from_static(br#"{"b":1, "a" : [true]}"#)),
        ("text", Bytes::from_static(b"plain text")),
        ("bytes", Bytes::from_static(&[0, 159, 146, 150])),
        ("empty", Bytes::new()),
        // Too deep for MariaDB's JSON check: kept as bytes.
        ("deep", Bytes::from(deep.clone())),
    ];
    for (key, value) in &cases {
        store.set(put(key, value.clone())).await.expect("set");
        assert_eq!(
            &get(&store, key).await.expect("present").data,
            value,
            "{key}"
        );
    }
    let mut conn = raw().await;
    let rows: Vec<(String, Vec<u8>, bool, String)> = conn
        .query(format!(
            "SELECT id, value, isbinary, eTag FROM {} ORDER BY id",
            store.table
        ))
        .await
        .expect("select");
    let rows: HashMap<String, (Vec<u8>, bool, String)> = rows
        .into_iter()
        .map(|(k, v, b, e)| (k, (v, b, e)))
        .collect();
    let column = store.ensure_schema().await.expect("schema");
    if column == ValueColumn::Verbatim {
        assert_eq!(rows["json"].0, br#"{"b":1, "a" : [true]}"#);
        assert!(!rows["json"].1);
    } else {
        assert!(
            rows["json"].1,
            "MySQL's JSON type rewrites text: stored as bytes"
        );
    }
    assert_eq!(rows["text"].0, br#""cGxhaW4gdGV4dA==""#);
    assert!(rows["text"].1);
    assert_eq!(rows["empty"].0, br#""""#);
    assert!(rows["empty"].1);
    assert!(rows["deep"].1);
    assert!(Uuid::parse_str(&rows["bytes"].2).is_ok(), "etags are UUIDs");
    drop_tables(&store).await;
}

#[tokio::test]
async fn expired_rows_are_cleaned_and_first_write_replaces_them() {
    let store = store().await;
    let mut req = put("k", "v");
    req.metadata
        .insert(plinth_core::metadata::TTL_IN_SECONDS.into(), "1".into());
    store.set(req).await.expect("set with ttl");
    store.set(put("stays", "v")).await.expect("set");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&store, "k").await.is_some() {
        assert!(Instant::now() < deadline, "k did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The row is still there until cleaned: first-write treats it as absent.
    let mut first = put("k", "again");
    first.options = StateOptions {
        concurrency: Concurrency::FirstWrite,
        ..Default::default()
    };
    store
        .set(first.clone())
        .await
        .expect("first-write over an expired row");
    assert_eq!(get(&store, "k").await.expect("written").data, "again");
    let again = store.set(first).await;
    assert_eq!(again.err().map(|e| e.kind()), Some(ErrorKind::EtagMismatch));

    let mut req = put("short", "v");
    req.metadata
        .insert(plinth_core::metadata::TTL_IN_SECONDS.into(), "1".into());
    store.set(req).await.expect("set with ttl");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if store.cleanup_expired().await.expect("cleanup") == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "short was not cleaned up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(get(&store, "stays").await.is_some());
    drop_tables(&store).await;
}

#[tokio::test]
async fn a_missing_database_is_created() {
    let schema = unique("db");
    let store = store_with(|spec| spec.with_metadata(config::SCHEMA_NAME, schema.clone())).await;
    store.set(put("k", "1")).await.expect("set");
    assert_eq!(get(&store, "k").await.expect("present").data, "1");
    store.close().await;
    raw()
        .await
        .query_drop(format!("DROP DATABASE `{schema}`"))
        .await
        .expect("drop database");
}

#[tokio::test]
async fn keys_are_case_sensitive_and_bounded() {
    let store = store().await;
    store.set(put("Key", "upper")).await.expect("set");
    store.set(put("key", "lower")).await.expect("set");
    assert_eq!(get(&store, "Key").await.expect("present").data, "upper");
    let long = "x".repeat(256);
    let err = store.set(put(&long, "v")).await.expect_err("too long");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = store
        .set(SetRequest {
            etag: Some("not-a-uuid".into()),
            ..put("key", "v")
        })
        .await
        .expect_err("bad etag");
    assert_eq!(err.kind(), ErrorKind::EtagInvalid);
    drop_tables(&store).await;
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Nothing listens on port 1.
    let spec = ComponentSpec::new("s", TYPE_NAME)
        .with_metadata(config::CONNECTION_STRING, "root@tcp(127.0.0.1:1)/test")
        .with_metadata(config::TIMEOUT_IN_SECONDS, "2");
    let store = MysqlStateStore::new(MysqlStateConfig::from_spec(&spec).expect("config"));
    let err = store.init().await.expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = store.get(GetRequest {
        key: "k".into(),
        ..Default::default()
    });
    assert_eq!(
        err.await.err().map(|e| e.kind()),
        Some(ErrorKind::Unavailable)
    );
}

#[test]
fn metadata_is_daprs() {
    let spec = ComponentSpec::new("s", TYPE_NAME)
        .with_metadata(config::CONNECTION_STRING, "dapr:pw@tcp(db:3306)/");
    let config = MysqlStateConfig::from_spec(&spec).expect("defaults");
    assert_eq!(config.schema, "dapr_state_store");
    assert_eq!(config.table, "state");
    assert_eq!(config.metadata_table, "dapr_metadata");
    assert_eq!(config.timeout, Duration::from_secs(20));
    assert_eq!(config.cleanup_interval, Some(Duration::from_secs(3600)));

    let config = MysqlStateConfig::from_spec(
        &spec
            .clone()
            .with_metadata(config::CLEANUP_INTERVAL, "-1")
            .with_metadata(config::TIMEOUT_IN_SECONDS, "5"),
    )
    .expect("config");
    assert_eq!(config.cleanup_interval, None);
    assert_eq!(config.timeout, Duration::from_secs(5));
    let config = MysqlStateConfig::from_spec(
        &spec
            .clone()
            .with_metadata(config::CLEANUP_INTERVAL_IN_SECONDS, "30"),
    )
    .expect("config");
    assert_eq!(config.cleanup_interval, Some(Duration::from_secs(30)));

    for (key, value) in [
        (config::TABLE_NAME, "state; DROP TABLE x"),
        (config::SCHEMA_NAME, "a.b"),
        (config::METADATA_TABLE_NAME, "m-1"),
        (config::TIMEOUT_IN_SECONDS, "0"),
        (config::PEM_PATH, "/etc/ssl/ca.pem"),
    ] {
        let err =
            MysqlStateConfig::from_spec(&spec.clone().with_metadata(key, value)).expect_err(key);
        assert!(err.message().contains(key), "{key}: {err}");
    }
    let err = MysqlStateConfig::from_spec(&ComponentSpec::new("s", TYPE_NAME)).expect_err("none");
    assert!(err.message().contains(config::CONNECTION_STRING), "{err}");
    let err = MysqlStateConfig::from_spec(
        &ComponentSpec::new("s", TYPE_NAME)
            .with_metadata(config::CONNECTION_STRING, "root:hunter2@tcp(db"),
    )
    .expect_err("bad dsn");
    assert!(!err.message().contains("hunter2"), "{err}");
}

#[test]
fn json_depth_ignores_brackets_in_strings() {
    assert_eq!(json_depth(br#"{"a":[1,{"b":"]]]"}]}"#), 3);
    assert_eq!(json_depth(br#""[[[\"[""#), 0);
    assert!(is_json(b" 1 "));
    assert!(!is_json(b"{"));
}

#[tokio::test]
async fn the_background_cleanup_deletes_expired_rows() {
    let store = store_with(|spec| spec.with_metadata(config::CLEANUP_INTERVAL, "1s")).await;
    let mut req = put("k", "v");
    req.metadata
        .insert(plinth_core::metadata::TTL_IN_SECONDS.into(), "1".into());
    store.set(req).await.expect("set with ttl");
    let mut conn = raw().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows: Option<i64> = conn
            .query_first(format!("SELECT COUNT(*) FROM {}", store.table))
            .await
            .expect("count");
        if rows == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the expired row was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The cleanup left Dapr's mark, so a Dapr sidecar on the same table skips its round.
    let mark: Option<String> = conn
        .query_first(format!(
            "SELECT value FROM {} WHERE id = 'last-cleanup'",
            store.metadata_table
        ))
        .await
        .expect("mark");
    assert!(mark.is_some(), "last-cleanup recorded");
    drop_tables(&store).await;
}

#[tokio::test]
async fn a_ttl_beyond_the_timestamp_range_is_invalid() {
    let store = store().await;
    for ttl in ["1000000000", "1000000000000"] {
        let mut req = put("k", "v");
        req.metadata
            .insert(plinth_core::metadata::TTL_IN_SECONDS.into(), ttl.into());
        let err = store.set(req).await.expect_err(ttl);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{ttl}: {err}");
    }
    assert!(get(&store, "k").await.is_none());
    drop_tables(&store).await;
}

#[tokio::test]
async fn json_the_server_refuses_is_kept_as_bytes_in_a_transaction() {
    let store = store().await;
    // Valid JSON, but a lone surrogate escape: whether the server's check takes it or not,
    // the value reads back the same, and the transaction goes through.
    let odd = Bytes::from_static(br#"["\ud800"]"#);
    store
        .transact(
            vec![
                TransactionOp::Upsert(put("a", odd.clone())),
                TransactionOp::Upsert(put("b", "{\"x\":1}")),
            ],
            Metadata::new(),
        )
        .await
        .expect("transaction");
    assert_eq!(get(&store, "a").await.expect("a").data, odd);
    assert_eq!(get(&store, "b").await.expect("b").data, "{\"x\":1}");
    drop_tables(&store).await;
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable() {
    // Accepts connections and says nothing: the handshake never comes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let spec = ComponentSpec::new("s", TYPE_NAME)
        .with_metadata(
            config::CONNECTION_STRING,
            format!("root@tcp(127.0.0.1:{port})/test"),
        )
        .with_metadata(config::TIMEOUT_IN_SECONDS, "1");
    let store = MysqlStateStore::new(MysqlStateConfig::from_spec(&spec).expect("config"));
    let err = store.init().await.expect_err("no handshake");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    silent.abort();
}
