//! Tests against the real Redis at 127.0.0.1:6379 (`REDIS_HOST` overrides); they fail when
//! it is missing. Every resource is a fresh uuid; the tests release or let expire what they
//! take.

use std::time::Instant;

use ::redis::AsyncCommands;
use plinth_core::ErrorKind;

use super::*;

fn redis_host() -> String {
    std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

async fn store_with(layout: &str) -> RedisLockStore {
    let spec = ComponentSpec::new("l", TYPE_NAME)
        .with_metadata("redisHost", redis_host())
        .with_metadata("keyLayout", layout);
    let store = RedisLockStore::new(Config::from_spec(&spec).expect("config"));
    store.init().await.expect("redis must be reachable");
    store
}

async fn store() -> RedisLockStore {
    store_with("dapr").await
}

fn resource() -> String {
    format!("plinth-test-{}", uuid::Uuid::new_v4())
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn only_one_owner_holds_a_lock() {
    let store = store().await;
    let r = resource();
    let owners: Vec<String> = (0..8).map(|i| format!("owner{i}")).collect();
    let attempts =
        futures::future::join_all(owners.iter().map(|o| store.try_lock(&r, o, LONG))).await;
    let winners: Vec<&String> = owners
        .iter()
        .zip(attempts)
        .filter_map(|(o, a)| a.expect("try lock").then_some(o))
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = winners[0];
    for other in owners.iter().filter(|o| *o != winner) {
        assert!(!store.try_lock(&r, other, LONG).await.expect("held"));
    }
    assert_eq!(
        store.unlock(&r, winner).await.expect("unlock"),
        LockStatus::Success
    );
    // Released, it is free for the next owner.
    assert!(store.try_lock(&r, "next", LONG).await.expect("lock"));
    assert_eq!(
        store.unlock(&r, "next").await.expect("unlock"),
        LockStatus::Success
    );
}

#[tokio::test]
async fn a_lock_expires() {
    let store = store().await;
    let r = resource();
    assert!(
        store
            .try_lock(&r, "a", Duration::from_millis(300))
            .await
            .expect("lock")
    );
    assert!(!store.try_lock(&r, "b", LONG).await.expect("held"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store.try_lock(&r, "b", LONG).await.expect("lock") {
        assert!(Instant::now() < deadline, "the lock did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store.unlock(&r, "b").await.expect("unlock"),
        LockStatus::Success
    );
}

#[tokio::test]
async fn only_the_owner_unlocks() {
    let store = store().await;
    let r = resource();
    assert_eq!(
        store.unlock(&r, "a").await.expect("unlock"),
        LockStatus::NotExist
    );
    assert!(store.try_lock(&r, "a", LONG).await.expect("lock"));
    assert_eq!(
        store.unlock(&r, "b").await.expect("unlock"),
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        store.keep_alive(&r, "b", LONG).await.expect("keep alive"),
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        store.unlock(&r, "a").await.expect("unlock"),
        LockStatus::Success
    );
    assert_eq!(
        store.unlock(&r, "a").await.expect("unlock"),
        LockStatus::NotExist
    );
}

#[tokio::test]
async fn keep_alive_extends() {
    let store = store().await;
    let r = resource();
    assert_eq!(
        store.keep_alive(&r, "a", LONG).await.expect("keep alive"),
        LockStatus::NotExist
    );
    assert!(
        store
            .try_lock(&r, "a", Duration::from_millis(500))
            .await
            .expect("lock")
    );
    assert_eq!(
        store.keep_alive(&r, "a", LONG).await.expect("keep alive"),
        LockStatus::Success
    );
    // Well past the first expiry, the lock is still held.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!store.try_lock(&r, "b", LONG).await.expect("still held"));
    assert_eq!(
        store.unlock(&r, "a").await.expect("unlock"),
        LockStatus::Success
    );
}

#[tokio::test]
async fn key_layouts_match_dapr_and_layotto() {
    let mut raw = ::redis::Client::open(format!("redis://{}/", redis_host()))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis must be reachable");
    let key = format!("app||{}", resource());
    let dapr = store_with("dapr").await;
    assert!(dapr.try_lock(&key, "owner-d", LONG).await.expect("lock"));
    let owner: Option<String> = raw.get(format!("lock||{key}")).await.expect("get");
    assert_eq!(owner.as_deref(), Some("owner-d"));
    let layotto = store_with("layotto").await;
    assert!(layotto.try_lock(&key, "owner-l", LONG).await.expect("lock"));
    let owner: Option<String> = raw.get(format!("lock|||{key}")).await.expect("get");
    assert_eq!(owner.as_deref(), Some("owner-l"));
    assert_eq!(
        dapr.unlock(&key, "owner-d").await.expect("unlock"),
        LockStatus::Success
    );
    assert_eq!(
        layotto.unlock(&key, "owner-l").await.expect("unlock"),
        LockStatus::Success
    );
}

#[test]
fn bad_metadata_is_rejected() {
    let spec = ComponentSpec::new("l", TYPE_NAME)
        .with_metadata("redisHost", "127.0.0.1:6379")
        .with_metadata("keyLayout", "etcd");
    assert!(factory(&spec).is_err());
    assert_eq!(
        millis(Duration::ZERO).map_err(|e| e.kind()),
        Err(ErrorKind::InvalidArgument)
    );
}
