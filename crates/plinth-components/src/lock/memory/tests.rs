use super::*;

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn one_owner_at_a_time_until_expiry() {
    let store = InMemoryLockStore::new();
    assert!(
        store
            .try_lock("r", "alice", SEC * 2)
            .await
            .is_ok_and(|taken| taken)
    );
    assert!(
        store
            .try_lock("r", "bob", SEC * 2)
            .await
            .is_ok_and(|taken| !taken)
    );
    assert!(
        store
            .try_lock("r", "alice", SEC * 2)
            .await
            .is_ok_and(|taken| !taken),
        "not reentrant"
    );
    assert!(
        store
            .try_lock("other", "bob", SEC)
            .await
            .is_ok_and(|taken| taken)
    );
    tokio::time::advance(SEC * 2).await;
    assert!(
        store
            .try_lock("r", "bob", SEC)
            .await
            .is_ok_and(|taken| taken),
        "expired lock is free"
    );
}

#[tokio::test(start_paused = true)]
async fn unlock_statuses() {
    let store = InMemoryLockStore::new();
    assert_eq!(
        store.unlock("r", "alice").await.ok(),
        Some(LockStatus::NotExist)
    );
    assert!(
        store
            .try_lock("r", "alice", SEC)
            .await
            .is_ok_and(|taken| taken)
    );
    assert_eq!(
        store.unlock("r", "bob").await.ok(),
        Some(LockStatus::BelongsToOthers)
    );
    assert_eq!(
        store.unlock("r", "alice").await.ok(),
        Some(LockStatus::Success)
    );
    assert_eq!(
        store.unlock("r", "alice").await.ok(),
        Some(LockStatus::NotExist)
    );
    assert!(
        store
            .try_lock("r", "alice", SEC)
            .await
            .is_ok_and(|taken| taken)
    );
    tokio::time::advance(SEC).await;
    assert_eq!(
        store.unlock("r", "alice").await.ok(),
        Some(LockStatus::NotExist)
    );
}

#[tokio::test(start_paused = true)]
async fn keep_alive_extends_only_the_owner() {
    let store = InMemoryLockStore::new();
    assert_eq!(
        store.keep_alive("r", "alice", SEC).await.ok(),
        Some(LockStatus::NotExist)
    );
    assert!(
        store
            .try_lock("r", "alice", SEC)
            .await
            .is_ok_and(|taken| taken)
    );
    assert_eq!(
        store.keep_alive("r", "bob", SEC * 10).await.ok(),
        Some(LockStatus::BelongsToOthers)
    );
    tokio::time::advance(SEC / 2).await;
    assert_eq!(
        store.keep_alive("r", "alice", SEC * 3).await.ok(),
        Some(LockStatus::Success)
    );
    tokio::time::advance(SEC * 2).await;
    assert!(
        store
            .try_lock("r", "bob", SEC)
            .await
            .is_ok_and(|taken| !taken),
        "still held"
    );
    tokio::time::advance(SEC).await;
    assert_eq!(
        store.keep_alive("r", "alice", SEC).await.ok(),
        Some(LockStatus::NotExist)
    );
}

#[tokio::test(start_paused = true)]
async fn expired_locks_are_swept() {
    let store = InMemoryLockStore::new();
    for i in 0..SWEEP_FLOOR {
        assert!(
            store
                .try_lock(&format!("r{i}"), "o", SEC)
                .await
                .is_ok_and(|taken| taken)
        );
    }
    tokio::time::advance(SEC).await;
    assert!(
        store
            .try_lock("fresh", "o", SEC)
            .await
            .is_ok_and(|taken| taken)
    );
    assert_eq!(lock(&store.locks).held.len(), 1);
}

#[tokio::test]
async fn absurd_expiry_is_rejected() {
    let store = InMemoryLockStore::new();
    let err = store
        .try_lock("r", "o", Duration::MAX)
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(plinth_core::ErrorKind::InvalidArgument));
}
