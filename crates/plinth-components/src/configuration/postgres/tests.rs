//! Tests against the real PostgreSQL, database `test` (`PLINTH_TEST_POSTGRES` overrides);
//! they fail when it is missing. Each test uses a table, trigger function and channel of its
//! own, dropped at the end.

use plinth_core::ErrorKind;
use tokio::time::Instant;

use super::*;
use crate::postgres_client::test_support::{DropOnExit, connect, unique, url};

const PATIENCE: Duration = Duration::from_secs(10);

struct Fixture {
    store: PostgresConfigurationStore,
    table: String,
    sql: Client,
    _guard: DropOnExit,
}

/// A store over a fresh table; `setup` (SQL, `{table}` standing for the table's name) runs
/// before the store starts.
async fn fixture_with(setup: &str, extra: &[(&str, &str)]) -> Fixture {
    let table = unique("plinth_cfg_test");
    let guard = DropOnExit(vec![
        format!("DROP TABLE IF EXISTS {table}"),
        format!("DROP FUNCTION IF EXISTS {table}_notify()"),
        format!("DROP FUNCTION IF EXISTS {table}_dapr()"),
    ]);
    let mut spec = ComponentSpec::new("c", TYPE_NAME)
        .with_metadata("connectionString", url())
        .with_metadata("table", &table)
        .with_metadata("timeout", "5s");
    for (k, v) in extra {
        spec = spec.with_metadata(*k, *v);
    }
    let sql = connect().await;
    if !setup.is_empty() {
        sql.batch_execute(&setup.replace("{table}", &table))
            .await
            .expect("setup");
    }
    let store =
        PostgresConfigurationStore::new(Config::from_spec(&spec).expect("config")).expect("store");
    store.init().await.expect("PostgreSQL must be reachable");
    Fixture {
        store,
        table,
        sql,
        _guard: guard,
    }
}

async fn fixture() -> Fixture {
    fixture_with("", &[]).await
}

fn item(group: &str, key: &str, content: &str) -> ConfigurationItem {
    ConfigurationItem {
        key: key.into(),
        content: content.into(),
        group: group.into(),
        ..Default::default()
    }
}

fn query(group: &str, keys: &[&str]) -> ConfigurationQuery {
    ConfigurationQuery {
        app_id: "app".into(),
        group: group.into(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        ..Default::default()
    }
}

async fn next(rx: &mut mpsc::Receiver<ConfigurationChange>) -> ConfigurationChange {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a change in time")
        .expect("the watch goes on")
}

#[tokio::test]
async fn items_use_daprs_columns_and_versions_count_up() {
    let f = fixture().await;
    let mut with_meta = item("", "color", "red");
    with_meta.metadata.insert("owner".into(), "ops".into());
    f.store
        .set("app", vec![with_meta, item("g", "size", "xl")])
        .await
        .expect("set");
    let row = f
        .sql
        .query_one(
            &format!(
                "SELECT value, version, metadata->>'owner' FROM {} WHERE key = 'color'",
                f.table
            ),
            &[],
        )
        .await
        .expect("Dapr's columns");
    assert_eq!(row.get::<_, String>(0), "red");
    assert_eq!(row.get::<_, String>(1), "1");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("ops"));
    // A group (or label) goes into the stored key.
    let grouped: i64 = f
        .sql
        .query_one(
            &format!("SELECT count(*) FROM {} WHERE key = 'g||||size'", f.table),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(grouped, 1);

    f.store
        .set("app", vec![item("", "color", "blue")])
        .await
        .expect("set");
    let got = f.store.get(&query("", &[])).await.expect("get all");
    assert_eq!(got.len(), 1, "Dapr's view holds no grouped items: {got:?}");
    assert_eq!(got[0].content, "blue");
    assert_eq!(got[0].version, "2");
    let grouped = f.store.get(&query("g", &[])).await.expect("get group");
    assert_eq!(grouped.len(), 1);
    assert_eq!(
        (grouped[0].key.as_str(), grouped[0].group.as_str()),
        ("size", "g")
    );
    let empty = f.store.set("app", vec![item("", "", "x")]).await;
    assert_eq!(
        empty.err().map(|e| e.kind()),
        Some(ErrorKind::InvalidArgument)
    );
}

#[tokio::test]
async fn rows_written_by_hand_are_read_and_versioned() {
    let f = fixture().await;
    f.sql
        .execute(
            &format!(
                "INSERT INTO {} (key, value, version, metadata) VALUES ('k', 'v', 'v7', '{{\"n\": 1}}')",
                f.table
            ),
            &[],
        )
        .await
        .expect("insert");
    let got = f
        .store
        .get(&query("", &["k", "missing"]))
        .await
        .expect("get");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].content.as_str(), got[0].version.as_str()),
        ("v", "v7")
    );
    assert_eq!(got[0].metadata.get("n").map(String::as_str), Some("1"));
    // A version that is not a number restarts at 1.
    f.store
        .set("app", vec![item("", "k", "w")])
        .await
        .expect("set");
    let got = f.store.get(&query("", &["k"])).await.expect("get");
    assert_eq!(got[0].version, "1");
    f.store.delete(&query("", &["k"])).await.expect("delete");
    assert!(
        f.store
            .get(&query("", &["k"]))
            .await
            .expect("get")
            .is_empty()
    );
}

#[tokio::test]
async fn watch_reports_writes_and_deletes_with_the_writers_app() {
    let f = fixture().await;
    let mut rx = f.store.watch().await.expect("watch");
    f.store
        .set("app-a", vec![item("g", "k", "v1")])
        .await
        .expect("set");
    let change = next(&mut rx).await;
    assert_eq!(change.app_id, "app-a");
    assert!(!change.deleted);
    assert_eq!(change.items[0].key, "k");
    assert_eq!(change.items[0].group, "g");
    assert_eq!(change.items[0].content, "v1");
    assert_eq!(change.items[0].version, "1");
    f.store
        .delete(&ConfigurationQuery {
            app_id: "app-b".into(),
            ..query("g", &["k"])
        })
        .await
        .expect("delete");
    let change = next(&mut rx).await;
    assert_eq!(change.app_id, "app-b");
    assert!(change.deleted);
    assert_eq!(change.items[0].key, "k");
}

/// Dapr's documented setup, done by hand: a table without a key constraint and
/// upper-case column names, and a trigger sending the whole row.
const DAPR_SETUP: &str = "
CREATE TABLE {table} (KEY VARCHAR NOT NULL, VALUE VARCHAR NOT NULL, VERSION VARCHAR NOT NULL, METADATA JSON);
CREATE FUNCTION {table}_dapr() RETURNS TRIGGER AS $$
DECLARE
  data json;
  notification json;
BEGIN
  IF (TG_OP = 'DELETE') THEN data = row_to_json(OLD); ELSE data = row_to_json(NEW); END IF;
  notification = json_build_object('table', TG_TABLE_NAME, 'action', TG_OP, 'data', data);
  PERFORM pg_notify('{table}_changes', notification::text);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER {table}_dapr AFTER INSERT OR UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE PROCEDURE {table}_dapr();
";

#[tokio::test]
async fn a_dapr_style_trigger_reaches_a_watcher() {
    let f = fixture_with(DAPR_SETUP, &[("createTrigger", "false")]).await;
    let mut rx = f.store.watch().await.expect("watch");
    f.sql
        .execute(
            &format!(
                "INSERT INTO {} (key, value, version, metadata) VALUES ('feature', 'on', '3', NULL)",
                f.table
            ),
            &[],
        )
        .await
        .expect("a write as Dapr's users make it");
    let change = next(&mut rx).await;
    assert!(!change.deleted);
    assert_eq!(change.app_id, "", "Dapr's payload names no app");
    assert_eq!(change.items.len(), 1);
    assert_eq!(change.items[0].key, "feature");
    assert_eq!(change.items[0].content, "on");
    assert_eq!(change.items[0].version, "3");
    // Plinth's writes work on a table without a key constraint, and are announced by the
    // user's trigger.
    f.store
        .set("app", vec![item("", "feature", "off")])
        .await
        .expect("set");
    let change = next(&mut rx).await;
    assert_eq!(change.items[0].content, "off");
    assert_eq!(change.items[0].version, "4");
    f.sql
        .execute(
            &format!("DELETE FROM {} WHERE key = 'feature'", f.table),
            &[],
        )
        .await
        .expect("delete");
    let change = next(&mut rx).await;
    assert!(change.deleted);
    assert_eq!(change.items[0].key, "feature");
}

#[tokio::test]
async fn a_watch_reconnects_and_reports_current_items() {
    let f = fixture().await;
    f.store
        .set("app", vec![item("", "k", "before")])
        .await
        .expect("set");
    let mut rx = f.store.watch().await.expect("watch");
    // End the watcher's connection from the server side.
    let listen = format!("LISTEN \"{}\"", f.store.channel());
    let killed: i64 = f
        .sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
            &[&listen],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(killed, 1, "one listening connection");
    // Once back, it reports every item as it is now.
    let change = next(&mut rx).await;
    assert_eq!(change.items[0].key, "k");
    assert_eq!(change.items[0].content, "before");
    // And it hears new writes again.
    f.store
        .set("app", vec![item("", "k", "after")])
        .await
        .expect("set");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let change = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the new write within patience")
            .expect("the watch goes on");
        if change.items.iter().any(|i| i.content == "after") {
            break;
        }
    }
}

#[tokio::test]
async fn a_lagging_watcher_converges_on_the_current_items() {
    let f = fixture().await;
    let mut rx = f.store.watch().await.expect("watch");
    // Far more changes than the channel holds, while nobody reads.
    let keys = ["a", "b", "c"];
    for round in 0..150 {
        let items = keys
            .iter()
            .map(|k| item("", k, &format!("{round}")))
            .collect();
        f.store.set("app", items).await.expect("set");
    }
    let mut latest: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    while keys
        .iter()
        .any(|k| latest.get(*k).map(String::as_str) != Some("149"))
    {
        let change = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("not converged: {latest:?}"))
            .expect("the watch goes on");
        for item in change.items {
            latest.insert(item.key, item.content);
        }
    }
}

#[tokio::test]
async fn bad_names_are_config_errors_and_a_missing_server_is_unavailable() {
    let base = || ComponentSpec::new("c", TYPE_NAME).with_metadata("connectionString", url());
    let err = factory(&base().with_metadata("table", "t; drop")).expect_err("bad table");
    assert!(err.message().contains("metadata.table"), "{err}");
    let err = factory(&base().with_metadata("pgNotifyChannel", "a'b")).expect_err("bad channel");
    assert!(err.message().contains("metadata.pgNotifyChannel"), "{err}");
    let spec = ComponentSpec::new("c", TYPE_NAME)
        .with_metadata(
            "connectionString",
            "host=127.0.0.1 port=1 user=postgres dbname=test",
        )
        .with_metadata("timeout", "2s");
    let store =
        PostgresConfigurationStore::new(Config::from_spec(&spec).expect("config")).expect("store");
    let err = store.init().await.expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = store.watch().await.expect_err("no watch either");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}
