//! Tests against the real etcd at 127.0.0.1:2379 (`PLINTH_TEST_ETCD` overrides); they fail
//! when it is missing. Every test works under a `keyPrefixPath` of its own (a fresh uuid) and
//! deletes it at the end.

use std::time::Instant;

use etcd_client::GetOptions;
use plinth_core::ErrorKind;

use super::*;
use crate::etcd_conn::testing;

async fn store(prefix: &str) -> EtcdLockStore {
    let spec = testing::spec(TYPE_NAME, prefix);
    let store = EtcdLockStore::new(EtcdSettings::from_spec(&spec, DEFAULT_PREFIX).expect("config"));
    store
        .init()
        .await
        .unwrap_or_else(|e| panic!("{}", testing::missing(&e)));
    store
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn only_one_owner_holds_a_lock() {
    let prefix = testing::prefix();
    let store = Arc::new(store(&prefix).await);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let owner = format!("owner{i}");
                store
                    .try_lock("r", &owner, LONG)
                    .await
                    .expect("try lock")
                    .then_some(owner)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.expect("task"));
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = &winners[0];
    assert!(!store.try_lock("r", winner, LONG).await.expect("held"));
    assert!(!store.try_lock("r", "late", LONG).await.expect("held"));
    assert_eq!(
        store.unlock("r", winner).await.expect("unlock"),
        LockStatus::Success
    );
    assert!(store.try_lock("r", "next", LONG).await.expect("lock"));
    assert_eq!(
        store.unlock("r", "next").await.expect("unlock"),
        LockStatus::Success
    );
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn a_lock_expires_with_its_lease() {
    let prefix = testing::prefix();
    let store = store(&prefix).await;
    assert!(
        store
            .try_lock("r", "a", Duration::from_millis(300))
            .await
            .expect("lock")
    );
    assert!(!store.try_lock("r", "b", LONG).await.expect("held"));
    // etcd raises short TTLs to its minimum (about 2s) and expires leases in its own time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.try_lock("r", "b", LONG).await.expect("lock") {
        assert!(Instant::now() < deadline, "the lock did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.unlock("r", "a").await.expect("unlock"),
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        store.unlock("r", "b").await.expect("unlock"),
        LockStatus::Success
    );
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn only_the_owner_unlocks_or_extends() {
    let prefix = testing::prefix();
    let store = store(&prefix).await;
    assert_eq!(
        store.unlock("r", "a").await.expect("unlock"),
        LockStatus::NotExist
    );
    assert_eq!(
        store.keep_alive("r", "a", LONG).await.expect("keep alive"),
        LockStatus::NotExist
    );
    assert!(store.try_lock("r", "a", LONG).await.expect("lock"));
    assert_eq!(
        store.unlock("r", "b").await.expect("unlock"),
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        store.keep_alive("r", "b", LONG).await.expect("keep alive"),
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        store.unlock("r", "a").await.expect("unlock"),
        LockStatus::Success
    );
    assert_eq!(
        store.unlock("r", "a").await.expect("unlock"),
        LockStatus::NotExist
    );
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn keep_alive_moves_the_lock_to_a_lease_with_the_new_ttl() {
    let prefix = testing::prefix();
    let store = store(&prefix).await;
    let mut raw = testing::raw().await;
    let key = format!("{prefix}lock|||r");
    assert!(
        store
            .try_lock("r", "a", Duration::from_secs(3))
            .await
            .expect("lock")
    );
    let lease_of = |resp: etcd_client::GetResponse| resp.kvs()[0].lease();
    let first = lease_of(raw.get(key.as_str(), None).await.expect("get"));
    assert_eq!(
        store.keep_alive("r", "a", LONG).await.expect("keep alive"),
        LockStatus::Success
    );
    let second = lease_of(raw.get(key.as_str(), None).await.expect("get"));
    assert_ne!(first, second, "keep-alive attaches a fresh lease");
    let ttl = raw
        .lease_time_to_live(second, None)
        .await
        .expect("ttl")
        .granted_ttl();
    assert_eq!(ttl, 30);
    // The old lease is revoked, so nothing expires the key early.
    let old = raw.lease_time_to_live(first, None).await.expect("ttl");
    assert!(old.ttl() <= 0, "the old lease is still alive: {old:?}");
    assert_eq!(
        store.unlock("r", "a").await.expect("unlock"),
        LockStatus::Success
    );
    // Unlocking revokes the lease too.
    let gone = raw.lease_time_to_live(second, None).await.expect("ttl");
    assert!(gone.ttl() <= 0, "the lease outlived the lock: {gone:?}");
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn keys_use_layottos_layout() {
    let prefix = testing::prefix();
    let store = store(&prefix).await;
    assert!(
        store
            .try_lock("app||res", "owner-1", LONG)
            .await
            .expect("lock")
    );
    let mut raw = testing::raw().await;
    let all = raw
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    let kvs: Vec<_> = all
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().expect("key"), kv.value_str().expect("value")))
        .collect();
    assert_eq!(
        kvs,
        [(format!("{prefix}lock|||app||res").as_str(), "owner-1")]
    );
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn an_unreachable_etcd_fails_fast_with_unavailable() {
    // Nothing listens on port 1.
    let spec = ComponentSpec::new("l", TYPE_NAME)
        .with_metadata("endpoints", "127.0.0.1:1")
        .with_metadata("dialTimeout", "1s")
        .with_metadata("timeout", "1s");
    let store = EtcdLockStore::new(EtcdSettings::from_spec(&spec, DEFAULT_PREFIX).expect("config"));
    let err = store.init().await.expect_err("no etcd there");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = store
        .try_lock("r", "a", LONG)
        .await
        .expect_err("not connected");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[test]
fn bad_metadata_is_rejected() {
    let base = ComponentSpec::new("l", TYPE_NAME);
    assert!(factory(&base).is_err(), "endpoints is required");
    let with = |k: &str, v: &str| {
        base.clone()
            .with_metadata("endpoints", "e:1")
            .with_metadata(k, v)
    };
    for (k, v) in [
        ("dialTimeout", "soon"),
        ("timeout", "0"),
        ("username", "only-a-user"),
        ("tlsCa", "/nonexistent/ca.pem"),
    ] {
        let err = factory(&with(k, v)).expect_err(k);
        assert!(err.message().contains(k), "{err}");
    }
    assert_eq!(
        ttl_seconds(Duration::ZERO).map_err(|e| e.kind()),
        Err(ErrorKind::InvalidArgument)
    );
    assert_eq!(ttl_seconds(Duration::from_millis(1500)).ok(), Some(2));
    assert_eq!(ttl_seconds(Duration::from_secs(3)).ok(), Some(3));
}
