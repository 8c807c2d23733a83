//! The lock conformance suite: the same cases against every lock store of this crate.
//!
//! `lock.redis` runs against the real Redis at 127.0.0.1:6379 (`REDIS_HOST` overrides) and
//! fails when it is missing, and again on the Redis Cluster of `common::redis_cluster`;
//! `lock.postgresql` against the real PostgreSQL, database `test` (`PLINTH_TEST_POSTGRES`
//! overrides), in a table of its own, `plinth_conformance_lock`; each fails when its
//! backend is missing; `lock.etcd` (with the `etcd` feature) runs against etcd at
//! 127.0.0.1:2379 (`PLINTH_TEST_ETCD` overrides). Every case locks resources under a fresh uuid prefix and unlocks
//! what it still holds at the end, so runs can share a Redis.

use std::sync::Arc;
use std::time::Duration;

use plinth_core::ComponentSpec;
use plinth_core::component::Instance;
use plinth_core::component::lock::{LockStatus, LockStore};
use tokio::time::Instant;

use crate::common::{build, postgres_url, redis_host};

/// Long enough never to expire during a case.
const LONG: Duration = Duration::from_secs(60);
/// Short enough to expire quickly while a case polls.
const SHORT: Duration = Duration::from_millis(300);
/// How long a case polls for an expiry before failing.
const PATIENCE: Duration = Duration::from_secs(5);

async fn in_memory() -> Arc<dyn LockStore> {
    instance(ComponentSpec::new("conformance", "lock.in-memory")).await
}

async fn redis() -> Arc<dyn LockStore> {
    instance(
        ComponentSpec::new("conformance", "lock.redis").with_metadata("redisHost", redis_host()),
    )
    .await
}

async fn redis_cluster() -> Arc<dyn LockStore> {
    instance(
        ComponentSpec::new("conformance", "lock.redis")
            .with_metadata("redisHost", crate::common::redis_cluster())
            .with_metadata("redisType", "cluster"),
    )
    .await
}

async fn postgresql() -> Arc<dyn LockStore> {
    instance(
        ComponentSpec::new("conformance", "lock.postgresql")
            .with_metadata("connectionString", postgres_url())
            .with_metadata("tableName", "plinth_conformance_lock"),
    )
    .await
}

#[cfg(feature = "etcd")]
async fn etcd() -> Arc<dyn LockStore> {
    // Every lock is on a lease, so what a case leaves behind expires by itself.
    instance(
        ComponentSpec::new("conformance", "lock.etcd")
            .with_metadata("endpoints", crate::common::etcd_endpoint())
            .with_metadata("keyPrefixPath", crate::common::ETCD_PREFIX),
    )
    .await
}

async fn instance(spec: ComponentSpec) -> Arc<dyn LockStore> {
    match build(spec).await {
        Instance::Lock(store) => store,
        other => panic!("not a lock store: {}", other.kind()),
    }
}

async fn try_lock(store: &dyn LockStore, resource: &str, owner: &str, expire: Duration) -> bool {
    store
        .try_lock(resource, owner, expire)
        .await
        .expect("try_lock")
}

async fn unlock(store: &dyn LockStore, resource: &str, owner: &str) -> LockStatus {
    store.unlock(resource, owner).await.expect("unlock")
}

async fn keep_alive(
    store: &dyn LockStore,
    resource: &str,
    owner: &str,
    expire: Duration,
) -> LockStatus {
    store
        .keep_alive(resource, owner, expire)
        .await
        .expect("keep_alive")
}

/// Poll until `owner` takes `resource`, failing after `PATIENCE`.
async fn take_eventually(store: &dyn LockStore, resource: &str, owner: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !try_lock(store, resource, owner, LONG).await {
        assert!(Instant::now() < deadline, "{resource} did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exclusivity(store: Arc<dyn LockStore>, p: &str) {
    let resource = format!("{p}r");
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = Arc::clone(&store);
            let resource = resource.clone();
            tokio::spawn(async move {
                let owner = format!("owner-{i}");
                try_lock(store.as_ref(), &resource, &owner, LONG)
                    .await
                    .then_some(owner)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(owner) = task.await.expect("task") {
            winners.push(owner);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one owner wins: {winners:?}");
    let winner = &winners[0];
    // Not even the holder takes it twice, nor does a latecomer.
    assert!(!try_lock(store.as_ref(), &resource, winner, LONG).await);
    assert!(!try_lock(store.as_ref(), &resource, "latecomer", LONG).await);
    // Other resources are independent.
    let other = format!("{p}other");
    assert!(try_lock(store.as_ref(), &other, "latecomer", LONG).await);
    // Released, it is free again.
    assert_eq!(
        unlock(store.as_ref(), &resource, winner).await,
        LockStatus::Success
    );
    assert!(try_lock(store.as_ref(), &resource, "latecomer", LONG).await);
    for r in [&resource, &other] {
        assert_eq!(
            unlock(store.as_ref(), r, "latecomer").await,
            LockStatus::Success
        );
    }
}

async fn expiry(store: Arc<dyn LockStore>, p: &str) {
    let resource = format!("{p}r");
    assert!(try_lock(store.as_ref(), &resource, "first", SHORT).await);
    assert!(!try_lock(store.as_ref(), &resource, "second", LONG).await);
    take_eventually(store.as_ref(), &resource, "second").await;
    // The first owner's lock is gone: it no longer owns what the second one holds.
    assert_eq!(
        unlock(store.as_ref(), &resource, "first").await,
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        unlock(store.as_ref(), &resource, "second").await,
        LockStatus::Success
    );
    // Expired and not retaken, it does not exist.
    assert!(try_lock(store.as_ref(), &resource, "third", SHORT).await);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match unlock(store.as_ref(), &resource, "nobody").await {
            LockStatus::NotExist => break,
            LockStatus::BelongsToOthers => {
                assert!(Instant::now() < deadline, "{resource} did not expire");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            LockStatus::Success => panic!("a stranger unlocked {resource}"),
        }
    }
    assert_eq!(
        unlock(store.as_ref(), &resource, "third").await,
        LockStatus::NotExist
    );
}

async fn owner_errors(store: Arc<dyn LockStore>, p: &str) {
    let resource = format!("{p}r");
    assert_eq!(
        unlock(store.as_ref(), &format!("{p}missing"), "owner").await,
        LockStatus::NotExist
    );
    assert!(try_lock(store.as_ref(), &resource, "owner", LONG).await);
    assert_eq!(
        unlock(store.as_ref(), &resource, "intruder").await,
        LockStatus::BelongsToOthers
    );
    // The failed unlock left the lock in place.
    assert!(!try_lock(store.as_ref(), &resource, "intruder", LONG).await);
    assert_eq!(
        unlock(store.as_ref(), &resource, "owner").await,
        LockStatus::Success
    );
    // Released, it no longer exists, for its former owner or anyone.
    assert_eq!(
        unlock(store.as_ref(), &resource, "owner").await,
        LockStatus::NotExist
    );
    assert_eq!(
        unlock(store.as_ref(), &resource, "intruder").await,
        LockStatus::NotExist
    );
}

async fn keep_alive_extends(store: Arc<dyn LockStore>, p: &str) {
    let resource = format!("{p}r");
    assert_eq!(
        keep_alive(store.as_ref(), &format!("{p}missing"), "owner", LONG).await,
        LockStatus::NotExist
    );
    let taken = Instant::now();
    assert!(try_lock(store.as_ref(), &resource, "owner", SHORT).await);
    assert_eq!(
        keep_alive(store.as_ref(), &resource, "intruder", LONG).await,
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        keep_alive(store.as_ref(), &resource, "owner", LONG).await,
        LockStatus::Success
    );
    // Well past the original expiry, nobody else can take it.
    let past = taken + SHORT * 3;
    while Instant::now() < past {
        assert!(
            !try_lock(store.as_ref(), &resource, "intruder", LONG).await,
            "{resource} expired despite keep_alive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!try_lock(store.as_ref(), &resource, "intruder", LONG).await);
    // A keep_alive can also shorten the lease: then it expires and another owner takes it.
    assert_eq!(
        keep_alive(store.as_ref(), &resource, "owner", SHORT).await,
        LockStatus::Success
    );
    take_eventually(store.as_ref(), &resource, "intruder").await;
    assert_eq!(
        keep_alive(store.as_ref(), &resource, "owner", LONG).await,
        LockStatus::BelongsToOthers
    );
    assert_eq!(
        unlock(store.as_ref(), &resource, "intruder").await,
        LockStatus::Success
    );
}

macro_rules! conformance {
    ($store:ident: $($case:ident),* $(,)?) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let store = super::$store().await;
                    super::$case(store, &crate::common::prefix()).await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($store:ident),*) => {
        $(
            conformance!($store:
                exclusivity,
                expiry,
                owner_errors,
                keep_alive_extends,
            );
        )*
    };
}

suite!(in_memory, redis, redis_cluster, postgresql);
#[cfg(feature = "etcd")]
suite!(etcd);
