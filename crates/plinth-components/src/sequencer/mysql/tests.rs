//! Tests against the real MariaDB/MySQL at 127.0.0.1:3306, database `test`, user root
//! (`PLINTH_TEST_MYSQL` overrides, a Go DSN); they fail when it is missing. Every test uses a
//! table of its own, named with a fresh uuid, and drops it at the end.

use std::time::Duration;

use plinth_core::ErrorKind;

use super::*;
use crate::mysql_client::parse_connection_string;

fn mysql_url() -> String {
    std::env::var("PLINTH_TEST_MYSQL").unwrap_or_else(|_| "root@tcp(127.0.0.1:3306)/test".into())
}

fn table() -> String {
    format!("plinth_test_seq_{}", uuid::Uuid::new_v4().simple())
}

async fn sequencer(table: &str) -> MysqlSequencer {
    let spec = ComponentSpec::new("q", TYPE_NAME)
        .with_metadata("connectionString", mysql_url())
        .with_metadata("tableName", table);
    let sequencer = MysqlSequencer::new(Config::from_spec(&spec).expect("config"));
    sequencer.init().await.unwrap_or_else(|e| {
        panic!(
            "MariaDB/MySQL must be reachable at {} (start it, or set PLINTH_TEST_MYSQL): {e}",
            mysql_url()
        )
    });
    sequencer
}

async fn raw() -> mysql_async::Conn {
    let settings = parse_connection_string(&mysql_url()).expect("PLINTH_TEST_MYSQL is a DSN");
    let client = MysqlClient::new(
        &settings,
        settings.database.as_deref(),
        1,
        Duration::from_secs(10),
    );
    client
        .conn()
        .await
        .expect("MariaDB/MySQL must be reachable")
}

async fn drop_table(sequencer: MysqlSequencer, table: &str) {
    sequencer.close().await;
    raw()
        .await
        .query_drop(format!("DROP TABLE IF EXISTS `{table}`"))
        .await
        .expect("drop table");
}

#[tokio::test]
async fn rows_are_in_layottos_layout() {
    let table = table();
    let sequencer = sequencer(&table).await;
    assert_eq!(sequencer.next_id("app||k").await.expect("next id"), 1);
    assert_eq!(sequencer.next_id("app||k").await.expect("next id"), 2);
    assert_eq!(
        sequencer.reserve("app||k", 10).await.expect("reserve"),
        Some((3, 12))
    );
    let row: Option<(String, i64, i64)> = raw()
        .await
        .exec_first(
            format!("SELECT sequencer_key, sequencer_value, version FROM `{table}`"),
            (),
        )
        .await
        .expect("select");
    assert_eq!(row, Some(("app||k".to_owned(), 12, 3)));
    drop_table(sequencer, &table).await;
}

#[tokio::test]
async fn a_table_layotto_created_is_used_as_it_is() {
    let table = table();
    // Layotto's own CREATE TABLE: an INT value and no version column.
    raw()
        .await
        .query_drop(format!(
            "CREATE TABLE `{table}` (sequencer_key VARCHAR(255), sequencer_value INT, UNIQUE INDEX (sequencer_key))"
        ))
        .await
        .expect("create as layotto");
    let sequencer = sequencer(&table).await;
    assert_eq!(sequencer.next_id("k").await.expect("next id"), 1);
    sequencer.ensure_floor("k", 100).await.expect("floor");
    assert_eq!(sequencer.next_id("k").await.expect("next id"), 101);
    // The INT column ends at 2^31 - 1: past that, the key cannot advance.
    sequencer
        .ensure_floor("k", i64::from(i32::MAX) - 1)
        .await
        .expect("floor");
    assert_eq!(
        sequencer.next_id("k").await.expect("last id"),
        i64::from(i32::MAX)
    );
    let err = sequencer.next_id("k").await.expect_err("overflow");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    drop_table(sequencer, &table).await;
}

#[tokio::test]
async fn bigger_than_raises_the_counter_only() {
    let table = table();
    let sequencer = sequencer(&table).await;
    sequencer.ensure_floor("k", 1000).await.expect("floor");
    assert_eq!(sequencer.next_id("k").await.expect("next id"), 1001);
    sequencer.ensure_floor("k", 10).await.expect("floor");
    assert_eq!(sequencer.next_id("k").await.expect("next id"), 1002);
    drop_table(sequencer, &table).await;
}

#[tokio::test]
async fn layottos_metadata_connects() {
    let settings = parse_connection_string(&mysql_url()).expect("dsn");
    let table = table();
    let mut spec = ComponentSpec::new("q", TYPE_NAME)
        .with_metadata("mysqlUrl", format!("{}:{}", settings.host, settings.port))
        .with_metadata("userName", settings.user.clone())
        .with_metadata(
            "dataBaseName",
            settings.database.clone().unwrap_or_default(),
        )
        .with_metadata("tableName", table.clone());
    if let Some(password) = &settings.password {
        spec = spec.with_metadata("password", password.clone());
    }
    let sequencer = MysqlSequencer::new(Config::from_spec(&spec).expect("config"));
    sequencer.init().await.expect("init");
    assert_eq!(sequencer.next_id("k").await.expect("next id"), 1);
    drop_table(sequencer, &table).await;
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let spec = ComponentSpec::new("q", TYPE_NAME)
        .with_metadata("connectionString", "root@tcp(127.0.0.1:1)/test")
        .with_metadata("timeoutInSeconds", "2");
    let sequencer = MysqlSequencer::new(Config::from_spec(&spec).expect("config"));
    let err = sequencer.init().await.expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[test]
fn bad_metadata_is_rejected() {
    let base = ComponentSpec::new("q", TYPE_NAME);
    for (spec, field) in [
        (base.clone(), "connectionString"),
        (
            base.clone()
                .with_metadata("connectionString", "root@tcp(h)/db")
                .with_metadata("mysqlUrl", "h:3306"),
            "mysqlUrl",
        ),
        (
            base.clone().with_metadata("mysqlUrl", "h:3306"),
            "dataBaseName",
        ),
        (
            base.clone()
                .with_metadata("connectionString", "root@tcp(h)/db")
                .with_metadata("tableName", "a;b"),
            "tableName",
        ),
    ] {
        let err = factory(&spec).expect_err(field);
        assert!(err.message().contains(field), "{field}: {err}");
    }
}
