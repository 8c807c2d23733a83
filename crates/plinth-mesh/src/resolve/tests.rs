//! Resolver tests against the real thing: SQLite files in a temporary directory, the
//! system's DNS resolver for `localhost`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use plinth_core::ErrorKind;
use serde_json::json;

use super::*;

fn spec(component: &str, configuration: serde_json::Value) -> NameResolutionSpec {
    NameResolutionSpec {
        component: component.to_owned(),
        version: "v1".to_owned(),
        configuration,
    }
}

fn build_err(component: &str, configuration: serde_json::Value) -> Error {
    match build(&spec(component, configuration)) {
        Ok(resolver) => panic!("expected an error, built {resolver:?}"),
        Err(err) => err,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn me(app_id: &str, namespace: &str, address: &str) -> Registration {
    Registration {
        app_id: app_id.to_owned(),
        namespace: namespace.to_owned(),
        address: addr(address),
    }
}

fn sorted(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addrs.sort();
    addrs
}

/// Poll `check` until it holds, failing after `within`. For conditions that need time to pass
/// (expiry) or that another thread completes (a deregistering delete).
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- build ----

#[test]
fn unknown_component_names_the_field() {
    let err = build_err("consul", json!({}));
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("nameResolution.component"), "{err}");
    assert!(err.message().contains("consul"), "{err}");

    let err = build_err("", json!({}));
    assert!(err.message().contains("nameResolution.component"), "{err}");
}

#[test]
fn unknown_configuration_field_names_it() {
    let err = build_err("dns", json!({"templates": "{app}"}));
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.message().starts_with("nameResolution.configuration"),
        "{err}"
    );
    assert!(err.message().contains("templates"), "{err}");
}

#[test]
fn wrongly_typed_field_names_its_path() {
    let err = build_err("dns", json!({"port": "fifty"}));
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.port:"),
        "{err}"
    );

    let err = build_err(
        "sqlite",
        json!({"connectionString": "x.db", "updateInterval": "soon"}),
    );
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.updateInterval:"),
        "{err}"
    );
    assert!(err.message().contains("soon"), "{err}");
}

#[test]
fn names_the_resolver() {
    let r = build(&spec("static", serde_json::Value::Null)).expect("static with no config");
    assert_eq!(r.name(), "static");
    let r = build(&spec("dns", serde_json::Value::Null)).expect("dns with defaults");
    assert_eq!(r.name(), "dns");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nr.db");
    let r = build(&spec(
        "sqlite",
        json!({"connectionString": path.to_string_lossy()}),
    ))
    .expect("sqlite");
    assert_eq!(r.name(), "sqlite");
}

// ---- static ----

#[tokio::test]
async fn static_resolves_listed_apps() {
    let r = build(&spec(
        "static",
        json!({"apps": {
            "orders": ["127.0.0.1:50002", "[::1]:50012", "127.0.0.1:50002"],
            "billing": ["localhost:50022"],
            "idle": [],
        }}),
    ))
    .expect("static");
    assert_eq!(
        sorted(r.resolve("orders", "default").await.expect("resolve")),
        sorted(vec![addr("127.0.0.1:50002"), addr("[::1]:50012")]),
        "listed addresses, a duplicate once"
    );
    // The namespace is not consulted.
    assert_eq!(
        r.resolve("orders", "other").await.expect("resolve").len(),
        2
    );
    let billing = r.resolve("billing", "default").await.expect("resolve");
    assert!(!billing.is_empty());
    assert!(
        billing
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 50022),
        "{billing:?}"
    );
    assert!(
        r.resolve("idle", "default")
            .await
            .expect("resolve")
            .is_empty()
    );
    assert!(
        r.resolve("nobody", "default")
            .await
            .expect("resolve")
            .is_empty()
    );

    // Registering is accepted and does nothing.
    let guard = r
        .register(me("orders", "default", "127.0.0.1:1"))
        .await
        .expect("register");
    drop(guard);
    assert_eq!(
        r.resolve("orders", "default").await.expect("resolve").len(),
        2
    );
}

#[test]
fn static_bad_address_names_app_and_value() {
    for bad in [
        "127.0.0.1",
        "not an address",
        "127.0.0.1:99999",
        "no-such-host.invalid:80",
    ] {
        let err = build_err("static", json!({"apps": {"orders": ["127.0.0.1:1", bad]}}));
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}: {err}");
        assert!(
            err.message()
                .starts_with("nameResolution.configuration.apps.orders:"),
            "{err}"
        );
        assert!(err.message().contains(bad), "{err}");
    }
    let err = build_err("static", json!({"apps": {"orders": "127.0.0.1:1"}}));
    assert!(err.message().contains("apps.orders"), "{err}");
}

// ---- dns ----

#[tokio::test]
async fn dns_resolves_localhost_with_the_configured_port() {
    let r = build(&spec("dns", json!({"template": "{app}", "port": 50123}))).expect("dns");
    let addrs = r.resolve("localhost", "default").await.expect("resolve");
    assert!(!addrs.is_empty(), "localhost resolves");
    assert!(
        addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 50123),
        "{addrs:?}"
    );
    let mut deduped = addrs.clone();
    deduped.sort();
    deduped.dedup();
    assert_eq!(deduped.len(), addrs.len(), "no duplicates: {addrs:?}");
}

#[tokio::test]
async fn dns_unknown_name_has_no_instances() {
    let r = build(&spec(
        "dns",
        json!({"template": "{app}.{namespace}.invalid"}),
    ))
    .expect("dns");
    let addrs = r
        .resolve("no-such-app", "default")
        .await
        .expect("not an error");
    assert!(addrs.is_empty(), "{addrs:?}");
}

#[test]
fn dns_template_placeholders() {
    let r = DnsResolver::new(DnsConfig::default()).expect("defaults");
    assert_eq!(
        r.name_for("orders", "prod"),
        "orders.prod.svc.cluster.local"
    );

    let err = build_err("dns", json!({"template": "orders.{namespace}.svc"}));
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.template:"),
        "{err}"
    );
    assert!(err.message().contains("{app}"), "{err}");

    let err = build_err("dns", json!({"template": "{app}.{ns}.svc"}));
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.template:"),
        "{err}"
    );

    let err = build_err("dns", json!({"port": 0}));
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.port:"),
        "{err}"
    );
}

// ---- sqlite ----

/// A configuration for a database in `dir`, with a short update interval so expiry tests run
/// in about a second, yet long enough that a loaded machine does not miss heartbeats.
fn fast(dir: &Path) -> SqliteConfig {
    SqliteConfig {
        update_interval: Duration::from_millis(200),
        ..SqliteConfig::new(dir.join("nr.db").to_string_lossy())
    }
}

fn open(config: &SqliteConfig) -> Arc<dyn Resolver> {
    Arc::new(SqliteResolver::open(config.clone()).expect("open sqlite resolver"))
}

/// The rows in the file, read with a connection of its own as another program would.
fn rows_in(dir: &Path) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open(dir.join("nr.db")).expect("open");
    let mut stmt = conn
        .prepare("SELECT app_id, namespace, address FROM hosts ORDER BY address")
        .expect("prepare");
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

#[tokio::test]
async fn sqlite_two_registrations_resolve_to_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = open(&fast(dir.path()));
    let _a = r
        .register(me("orders", "default", "127.0.0.1:50002"))
        .await
        .expect("a");
    let _b = r
        .register(me("orders", "default", "127.0.0.1:50012"))
        .await
        .expect("b");
    assert_eq!(
        sorted(r.resolve("orders", "default").await.expect("resolve")),
        vec![addr("127.0.0.1:50002"), addr("127.0.0.1:50012")]
    );
    assert!(
        r.resolve("billing", "default")
            .await
            .expect("resolve")
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_namespaces_are_separate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = open(&fast(dir.path()));
    let _a = r
        .register(me("orders", "default", "127.0.0.1:50002"))
        .await
        .expect("a");
    let _b = r
        .register(me("orders", "prod", "127.0.0.1:50012"))
        .await
        .expect("b");
    assert_eq!(
        r.resolve("orders", "default").await.expect("resolve"),
        vec![addr("127.0.0.1:50002")]
    );
    assert_eq!(
        r.resolve("orders", "prod").await.expect("resolve"),
        vec![addr("127.0.0.1:50012")]
    );
    assert!(
        r.resolve("orders", "staging")
            .await
            .expect("resolve")
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_another_instance_on_the_file_sees_registrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fast(dir.path());
    let first = open(&config);
    let second = open(&config);
    let _a = first
        .register(me("orders", "default", "127.0.0.1:50002"))
        .await
        .expect("a");
    let _b = second
        .register(me("billing", "default", "127.0.0.1:50012"))
        .await
        .expect("b");
    assert_eq!(
        second.resolve("orders", "default").await.expect("resolve"),
        vec![addr("127.0.0.1:50002")]
    );
    assert_eq!(
        first.resolve("billing", "default").await.expect("resolve"),
        vec![addr("127.0.0.1:50012")]
    );
}

#[tokio::test]
async fn sqlite_dropping_the_guard_removes_the_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = open(&fast(dir.path()));
    let peer = open(&fast(dir.path()));
    let gone = r
        .register(me("orders", "default", "127.0.0.1:50002"))
        .await
        .expect("a");
    let _kept = r
        .register(me("orders", "default", "127.0.0.1:50012"))
        .await
        .expect("b");
    assert_eq!(
        peer.resolve("orders", "default")
            .await
            .expect("resolve")
            .len(),
        2
    );

    drop(gone);
    // The delete runs on the blocking pool; the row is gone long before it could expire.
    eventually(
        Duration::from_secs(5),
        "the dropped registration to go",
        || async {
            peer.resolve("orders", "default").await.expect("resolve")
                == vec![addr("127.0.0.1:50012")]
        },
    )
    .await;
    assert_eq!(
        rows_in(dir.path()).len(),
        1,
        "the row is deleted, not just stale"
    );
}

#[test]
fn sqlite_guard_dropped_outside_a_runtime_deregisters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fast(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = open(&config);
    let guard = rt
        .block_on(r.register(me("orders", "default", "127.0.0.1:50002")))
        .expect("register");
    assert_eq!(rows_in(dir.path()).len(), 1);
    drop(rt);
    // No runtime here: the guard deletes synchronously, without panicking.
    drop(guard);
    assert!(rows_in(dir.path()).is_empty());
}

#[tokio::test]
async fn sqlite_heartbeats_keep_a_registration_past_its_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fast(dir.path());
    let r = SqliteResolver::open(config.clone()).expect("open");
    let _a = r
        .register(me("orders", "default", "127.0.0.1:50002"))
        .await
        .expect("a");
    // Time must pass here: past two expiry windows, only heartbeats keep the entry.
    tokio::time::sleep(r.expiry() * 2).await;
    assert_eq!(
        r.resolve("orders", "default").await.expect("resolve"),
        vec![addr("127.0.0.1:50002")]
    );
}

#[tokio::test]
async fn sqlite_entry_expires_when_heartbeats_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fast(dir.path());
    // A sidecar that dies without deregistering: its runtime (and so its heartbeat task)
    // stops, and its guard is never dropped.
    let dead_config = config.clone();
    let dead_sidecar = move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let r = open(&dead_config);
        let guard = rt
            .block_on(r.register(me("orders", "default", "127.0.0.1:50002")))
            .expect("register");
        std::mem::forget(guard);
    };
    // A thread of its own: the blocking pool's threads are inside this test's runtime, where
    // another runtime cannot be started.
    tokio::task::spawn_blocking(move || std::thread::spawn(dead_sidecar).join())
        .await
        .expect("join")
        .expect("dead sidecar");

    let r = SqliteResolver::open(config).expect("open");
    let _alive = r
        .register(me("orders", "default", "127.0.0.1:50012"))
        .await
        .expect("alive");
    // The dead row is in the file either way; resolving skips it once it is stale.
    eventually(
        r.expiry() * 10,
        "the dead sidecar's entry to expire",
        || async {
            r.resolve("orders", "default").await.expect("resolve") == vec![addr("127.0.0.1:50012")]
        },
    )
    .await;
    assert_eq!(rows_in(dir.path()).len(), 2, "expired, not yet cleaned up");
    assert_eq!(r.cleanup().await.expect("cleanup"), 1);
    assert_eq!(
        rows_in(dir.path()),
        vec![("orders".into(), "default".into(), "127.0.0.1:50012".into())]
    );
}

#[tokio::test]
async fn sqlite_stale_rows_are_not_resolved_and_are_cleaned_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SqliteConfig {
        cleanup_interval: Duration::from_millis(100),
        ..fast(dir.path())
    };
    let r = SqliteResolver::open(config).expect("open");
    // A row another program left an hour ago.
    {
        let conn = rusqlite::Connection::open(dir.path().join("nr.db")).expect("open");
        conn.execute(
            "INSERT INTO hosts (registration_id, address, app_id, namespace, last_update) \
             VALUES ('old', '127.0.0.1:50099', 'orders', 'default', \
                     CAST(strftime('%s', 'now') AS INTEGER) * 1000 - 3600000)",
            [],
        )
        .expect("insert stale row");
    }
    assert!(
        r.resolve("orders", "default")
            .await
            .expect("resolve")
            .is_empty()
    );

    // A registered sidecar runs the cleanup every cleanupInterval.
    let _me = r
        .register(me("billing", "default", "127.0.0.1:50002"))
        .await
        .expect("register");
    eventually(
        Duration::from_secs(5),
        "cleanup to remove the stale row",
        || async { rows_in(dir.path()).len() == 1 },
    )
    .await;
    assert_eq!(rows_in(dir.path())[0].0, "billing");
}

#[tokio::test]
async fn sqlite_a_removed_registration_comes_back_with_the_next_heartbeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = open(&fast(dir.path()));
    let _me = r
        .register(me("orders", "default", "127.0.0.1:50002"))
        .await
        .expect("register");
    // As a peer's cleanup would after this sidecar stalled past the expiry.
    rusqlite::Connection::open(dir.path().join("nr.db"))
        .expect("open")
        .execute("DELETE FROM hosts", [])
        .expect("delete");
    assert!(
        r.resolve("orders", "default")
            .await
            .expect("resolve")
            .is_empty()
    );
    eventually(
        Duration::from_secs(5),
        "the heartbeat to re-register",
        || async {
            r.resolve("orders", "default").await.expect("resolve") == vec![addr("127.0.0.1:50002")]
        },
    )
    .await;
}

#[tokio::test]
async fn sqlite_a_restarted_sidecar_takes_over_its_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = open(&fast(dir.path()));
    let old = r
        .register(me("orders", "default", "127.0.0.1:50002"))
        .await
        .expect("old");
    std::mem::forget(old);
    let _new = r
        .register(me("orders", "default", "127.0.0.1:50002"))
        .await
        .expect("new");
    assert_eq!(rows_in(dir.path()).len(), 1, "one row per address");
    assert_eq!(
        r.resolve("orders", "default").await.expect("resolve"),
        vec![addr("127.0.0.1:50002")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_many_sidecars_register_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fast(dir.path());
    let sidecars: Vec<Arc<dyn Resolver>> = (0..8).map(|_| open(&config)).collect();
    let registrations = sidecars.iter().enumerate().map(|(i, r)| {
        let r = Arc::clone(r);
        tokio::spawn(async move {
            r.register(me("orders", "default", &format!("127.0.0.1:{}", 50100 + i)))
                .await
        })
    });
    let mut guards = Vec::new();
    for joined in futures::future::join_all(registrations).await {
        guards.push(joined.expect("task").expect("register"));
    }
    for r in &sidecars {
        assert_eq!(
            r.resolve("orders", "default").await.expect("resolve").len(),
            8
        );
    }
}

#[test]
fn sqlite_bad_connection_string_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir").join("nr.db");
    let err = build_err(
        "sqlite",
        json!({"connectionString": missing.to_string_lossy()}),
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.connectionString:"),
        "{err}"
    );
    assert!(err.message().contains("no-such-dir"), "{err}");

    let err = build_err("sqlite", json!({}));
    assert!(err.message().contains("connectionString"), "{err}");
    let err = build_err("sqlite", json!({"connectionString": " "}));
    assert!(err.message().contains("connectionString"), "{err}");

    // A directory where the file should be.
    let err = build_err(
        "sqlite",
        json!({"connectionString": dir.path().to_string_lossy()}),
    );
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.connectionString:"),
        "{err}"
    );
}

#[test]
fn sqlite_configuration_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nr.db");
    let config: SqliteConfig = config::parse(&json!({
        "connectionString": path.to_string_lossy(),
        "updateInterval": "2s",
        "timeout": 3,
        "tableName": "mesh_hosts",
        "cleanupInterval": "0",
        "busyTimeout": "250ms",
        "disableWAL": true,
    }))
    .expect("parse");
    assert_eq!(config.update_interval, Duration::from_secs(2));
    assert_eq!(config.timeout, Duration::from_secs(3));
    assert_eq!(config.cleanup_interval, Duration::ZERO);
    assert_eq!(config.busy_timeout, Duration::from_millis(250));
    assert!(config.disable_wal);
    SqliteResolver::open(config).expect("open with a custom table");

    let defaults: SqliteConfig =
        config::parse(&json!({"connectionString": "nr.db"})).expect("parse");
    assert_eq!(defaults.update_interval, Duration::from_secs(5));
    assert_eq!(defaults.timeout, Duration::from_secs(1));
    assert_eq!(defaults.table_name, "hosts");
    assert_eq!(defaults.cleanup_interval, Duration::from_secs(3600));
    assert_eq!(defaults.busy_timeout, Duration::from_millis(800));
    assert!(!defaults.disable_wal);

    let err = build_err(
        "sqlite",
        json!({"connectionString": path.to_string_lossy(), "tableName": "hosts; DROP TABLE x"}),
    );
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.tableName:"),
        "{err}"
    );
    let err = build_err(
        "sqlite",
        json!({"connectionString": path.to_string_lossy(), "updateInterval": "0s"}),
    );
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.updateInterval:"),
        "{err}"
    );
    let err = build_err(
        "sqlite",
        json!({"connectionString": path.to_string_lossy(), "timeout": -1}),
    );
    assert!(
        err.message()
            .starts_with("nameResolution.configuration.timeout:"),
        "{err}"
    );
}

#[tokio::test]
async fn sqlite_uses_wal_so_readers_do_not_block_on_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _r = open(&fast(dir.path()));
    let conn = rusqlite::Connection::open(dir.path().join("nr.db")).expect("open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
}

/// Another program holding the file's write lock: SQLite's `BEGIN EXCLUSIVE`, kept until drop.
fn lock_for_writes(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("nr.db")).expect("open");
    conn.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    conn
}

#[tokio::test]
async fn sqlite_a_locked_file_fails_writes_within_the_limits_and_still_resolves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = SqliteResolver::open(SqliteConfig {
        busy_timeout: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        ..fast(dir.path())
    })
    .expect("open");
    let _a = r
        .register(me("orders", "default", "127.0.0.1:50002"))
        .await
        .expect("a");
    let lock = lock_for_writes(dir.path());

    // busyTimeout ends the wait for the lock first: the database is busy.
    let err = r
        .register(me("orders", "default", "127.0.0.1:50012"))
        .await
        .expect_err("the file is locked");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // WAL: readers are not blocked by the writer.
    assert_eq!(
        r.resolve("orders", "default").await.expect("resolve"),
        vec![addr("127.0.0.1:50002")]
    );

    drop(lock);
    let _b = r
        .register(me("orders", "default", "127.0.0.1:50012"))
        .await
        .expect("b");
    assert_eq!(
        r.resolve("orders", "default").await.expect("resolve").len(),
        2
    );
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_waiting_on_a_lock_does_not_block_the_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = SqliteResolver::open(SqliteConfig {
        busy_timeout: Duration::from_secs(10),
        timeout: Duration::from_millis(500),
        ..fast(dir.path())
    })
    .expect("open");
    let _lock = lock_for_writes(dir.path());

    let started = tokio::time::Instant::now();
    // On this one-thread runtime the timer fires on time only if the register's wait is off
    // the runtime's thread.
    let (registered, ticked) = tokio::join!(
        r.register(me("orders", "default", "127.0.0.1:50002")),
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            started.elapsed()
        }
    );
    let err = registered.expect_err("the file is locked");
    // `timeout` ends the caller's wait long before busyTimeout would.
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        ticked < Duration::from_millis(400),
        "the runtime was blocked: {ticked:?}"
    );
}
