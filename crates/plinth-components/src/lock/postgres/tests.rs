//! Tests against the real PostgreSQL, database `test` (`PLINTH_TEST_POSTGRES` overrides);
//! they fail when it is missing. Each test uses a lock table of its own, dropped at the end.

use plinth_core::ErrorKind;

use super::*;
use crate::postgres_client::test_support::{DropOnExit, connect, unique, url};

const LONG: Duration = Duration::from_secs(30);

async fn store() -> (PostgresLockStore, DropOnExit) {
    let table = unique("plinth_lock_test");
    let guard = DropOnExit::tables(&[&table]);
    let spec = ComponentSpec::new("l", TYPE_NAME)
        .with_metadata("connectionString", url())
        .with_metadata("tableName", &table)
        .with_metadata("timeout", "5s");
    let store =
        PostgresLockStore::new(Config::from_spec(&spec).expect("config"), None).expect("store");
    store.init().await.expect("PostgreSQL must be reachable");
    (store, guard)
}

#[tokio::test]
async fn only_one_owner_holds_a_lock() {
    let (store, _guard) = store().await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.try_lock("r", &format!("owner{i}"), LONG).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.expect("join").expect("try_lock") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn unlock_and_keep_alive_check_the_owner() {
    let (store, _guard) = store().await;
    assert_eq!(
        store.unlock("r", "a").await.expect("unlock"),
        LockStatus::NotExist
    );
    assert!(store.try_lock("r", "a", LONG).await.expect("lock"));
    assert!(!store.try_lock("r", "b", LONG).await.expect("lock"));
    assert!(
        !store.try_lock("r", "a", LONG).await.expect("lock"),
        "not reentrant"
    );
    assert_eq!(
        store.unlock("r", "b").await.expect("unlock"),
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        store.keep_alive("r", "b", LONG).await.expect("keep alive"),
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        store.keep_alive("r", "a", LONG).await.expect("keep alive"),
        LockStatus::Success
    );
    assert_eq!(
        store.unlock("r", "a").await.expect("unlock"),
        LockStatus::Success
    );
    assert_eq!(
        store.keep_alive("r", "a", LONG).await.expect("keep alive"),
        LockStatus::NotExist
    );
}

#[tokio::test]
async fn expiry_follows_the_database_clock() {
    let (store, _guard) = store().await;
    assert!(store.try_lock("r", "a", LONG).await.expect("lock"));
    // Age the lease in the database: the sidecar's clock plays no part.
    let sql = connect().await;
    sql.execute(
        &format!(
            "UPDATE {} SET expires_at = now() - interval '1 second'",
            store.table
        ),
        &[],
    )
    .await
    .expect("age the lease");
    assert_eq!(
        store.unlock("r", "a").await.expect("unlock"),
        LockStatus::NotExist,
        "an expired lease is no lock"
    );
    assert!(store.try_lock("r", "b", LONG).await.expect("take over"));
    let owner: String = sql
        .query_one(
            &format!("SELECT owner FROM {} WHERE key = 'r'", store.table),
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(owner, "b");
    sql.execute(
        &format!(
            "UPDATE {} SET expires_at = now() - interval '1 second'",
            store.table
        ),
        &[],
    )
    .await
    .expect("age the lease");
    assert_eq!(store.cleanup_expired().await.expect("cleanup"), 1);
}

#[tokio::test]
async fn bad_input_is_rejected() {
    let (store, _guard) = store().await;
    let zero = store.try_lock("r", "a", Duration::ZERO).await;
    assert_eq!(
        zero.err().map(|e| e.kind()),
        Some(ErrorKind::InvalidArgument)
    );
    let empty = store.try_lock("", "a", LONG).await;
    assert_eq!(
        empty.err().map(|e| e.kind()),
        Some(ErrorKind::InvalidArgument)
    );
    let spec = ComponentSpec::new("l", TYPE_NAME)
        .with_metadata("connectionString", url())
        .with_metadata("tableName", "locks; drop table x");
    let err = factory(&spec).expect_err("bad table name");
    assert!(err.message().contains("metadata.tableName"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_quickly() {
    // Port 1 on loopback refuses connections.
    let spec = ComponentSpec::new("l", TYPE_NAME)
        .with_metadata(
            "connectionString",
            "host=127.0.0.1 port=1 user=postgres dbname=test",
        )
        .with_metadata("timeout", "2s");
    let store =
        PostgresLockStore::new(Config::from_spec(&spec).expect("config"), None).expect("store");
    let err = store.init().await.expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}
