use std::time::{Duration, Instant};

use pb::runtime_client::RuntimeClient;
use pb::unlock_response::Status as LockStatus;
use plinth_proto::runtime::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Plinth, unique};

type Client = RuntimeClient<Channel>;

const STORE: &str = "lockstore";

async fn try_lock(
    c: &mut Client,
    resource: &str,
    owner: &str,
    expire: i32,
) -> Result<bool, tonic::Status> {
    c.try_lock(pb::TryLockRequest {
        store_name: STORE.into(),
        resource_id: resource.into(),
        lock_owner: owner.into(),
        expire,
    })
    .await
    .map(|r| r.into_inner().success)
}

async fn unlock(c: &mut Client, resource: &str, owner: &str) -> Result<LockStatus, tonic::Status> {
    let resp = c
        .unlock(pb::UnlockRequest {
            store_name: STORE.into(),
            resource_id: resource.into(),
            lock_owner: owner.into(),
        })
        .await?;
    Ok(LockStatus::try_from(resp.into_inner().status).expect("a known unlock status"))
}

async fn keep_alive(
    c: &mut Client,
    resource: &str,
    owner: &str,
    expire: i32,
) -> Result<LockStatus, tonic::Status> {
    let resp = c
        .lock_keep_alive(pb::LockKeepAliveRequest {
            store_name: STORE.into(),
            resource_id: resource.into(),
            lock_owner: owner.into(),
            expire,
        })
        .await?;
    // Keep-alive and unlock statuses share their values.
    Ok(LockStatus::try_from(resp.into_inner().status).expect("a known keep-alive status"))
}

#[tokio::test]
async fn lock_unlock_and_owner_checks() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let (res, alice, bob) = (unique("res"), unique("alice"), unique("bob"));

    assert!(try_lock(&mut c, &res, &alice, 60).await.expect("lock"));
    assert!(
        !try_lock(&mut c, &res, &bob, 60)
            .await
            .expect("contended lock"),
        "a held lock is not granted to another owner"
    );
    assert!(
        !try_lock(&mut c, &res, &alice, 60).await.expect("relock"),
        "a held lock is not granted twice, even to its owner"
    );

    assert_eq!(
        unlock(&mut c, &res, &bob).await.expect("unlock by other"),
        LockStatus::LockBelongToOthers
    );
    assert_eq!(
        keep_alive(&mut c, &res, &bob, 60)
            .await
            .expect("keep-alive by other"),
        LockStatus::LockBelongToOthers
    );
    assert_eq!(
        unlock(&mut c, &res, &alice).await.expect("unlock"),
        LockStatus::Success
    );
    assert_eq!(
        unlock(&mut c, &res, &alice).await.expect("unlock again"),
        LockStatus::LockUnexist
    );
    assert_eq!(
        keep_alive(&mut c, &res, &alice, 60)
            .await
            .expect("keep-alive of a free lock"),
        LockStatus::LockUnexist
    );
    assert_eq!(
        unlock(&mut c, &unique("never"), &alice)
            .await
            .expect("unlock unknown"),
        LockStatus::LockUnexist
    );

    // Released: the other owner gets it now.
    assert!(
        try_lock(&mut c, &res, &bob, 60)
            .await
            .expect("lock after release")
    );
    // Resources are independent.
    assert!(
        try_lock(&mut c, &unique("other"), &alice, 60)
            .await
            .expect("other resource")
    );
}

#[tokio::test]
async fn a_lock_expires() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let (res, alice, bob) = (unique("res"), unique("alice"), unique("bob"));
    assert!(try_lock(&mut c, &res, &alice, 1).await.expect("lock"));
    assert!(!try_lock(&mut c, &res, &bob, 1).await.expect("held"));
    // Poll (bounded) until the lease runs out and the other owner gets it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !try_lock(&mut c, &res, &bob, 60).await.expect("try lock") {
        assert!(Instant::now() < deadline, "the lock did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The expired owner no longer holds it.
    assert_eq!(
        unlock(&mut c, &res, &alice)
            .await
            .expect("unlock by old owner"),
        LockStatus::LockBelongToOthers
    );
    assert_eq!(
        keep_alive(&mut c, &res, &alice, 60)
            .await
            .expect("keep-alive by old owner"),
        LockStatus::LockBelongToOthers
    );
}

#[tokio::test]
async fn keep_alive_extends_a_lock() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let (res, alice, bob) = (unique("res"), unique("alice"), unique("bob"));
    let locked_at = Instant::now();
    assert!(try_lock(&mut c, &res, &alice, 1).await.expect("lock"));
    assert_eq!(
        keep_alive(&mut c, &res, &alice, 30)
            .await
            .expect("keep-alive"),
        LockStatus::Success
    );
    // Past the original 1 s lease (with margin), the lock must still be held: keep polling
    // until then, and every attempt by another owner must fail.
    let original_expiry = locked_at + Duration::from_millis(1500);
    let mut attempts = 0;
    while Instant::now() < original_expiry {
        assert!(
            !try_lock(&mut c, &res, &bob, 60).await.expect("try lock"),
            "the lock was free before its extended lease ran out"
        );
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(attempts > 0);
    assert!(
        !try_lock(&mut c, &res, &bob, 60)
            .await
            .expect("try lock past the original expiry"),
        "keep-alive did not extend the lease"
    );
    assert_eq!(
        unlock(&mut c, &res, &alice).await.expect("unlock"),
        LockStatus::Success
    );
}

#[tokio::test]
async fn bad_lock_requests_are_invalid_arguments() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let (res, owner) = (unique("res"), unique("owner"));
    for (resource, owner, expire, what) in [
        ("", owner.as_str(), 10, "empty resource id"),
        (res.as_str(), "", 10, "empty owner"),
        (res.as_str(), owner.as_str(), 0, "zero expire"),
        (res.as_str(), owner.as_str(), -5, "negative expire"),
    ] {
        let err = try_lock(&mut c, resource, owner, expire)
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    for (resource, owner, what) in [
        ("", owner.as_str(), "empty resource id"),
        (res.as_str(), "", "empty owner"),
    ] {
        let err = unlock(&mut c, resource, owner).await.expect_err(what);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "unlock with {what}: {err:?}"
        );
    }
    assert!(try_lock(&mut c, &res, &owner, 10).await.expect("lock"));
    for (expire, what) in [(0, "zero expire"), (-1, "negative expire")] {
        let err = keep_alive(&mut c, &res, &owner, expire)
            .await
            .expect_err(what);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "keep-alive with {what}: {err:?}"
        );
    }
    let err = c
        .try_lock(pb::TryLockRequest {
            store_name: "nope".into(),
            resource_id: res.clone(),
            lock_owner: owner.clone(),
            expire: 10,
        })
        .await
        .expect_err("unknown store");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("nope"), "{}", err.message());
    // None of the rejected calls changed the lock.
    assert_eq!(
        unlock(&mut c, &res, &owner).await.expect("unlock"),
        LockStatus::Success
    );
}

#[tokio::test]
async fn exactly_one_of_many_concurrent_clients_gets_the_lock() {
    let plinth = Plinth::start_ready().await;
    let res = unique("contended");
    let mut clients = Vec::with_capacity(100);
    for _ in 0..100 {
        clients.push(plinth.client().await);
    }
    // Every task waits at the barrier so the calls race.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let (res, barrier) = (res.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let owner = format!("owner-{i}");
                (
                    owner.clone(),
                    try_lock(&mut c, &res, &owner, 60).await.expect("try lock"),
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (owner, won) = t.await.expect("task");
        if won {
            winners.push(owner);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let mut c = plinth.client().await;
    assert_eq!(
        unlock(&mut c, &res, "owner-0-not")
            .await
            .expect("unlock by loser"),
        LockStatus::LockBelongToOthers
    );
    assert_eq!(
        unlock(&mut c, &res, &winners[0])
            .await
            .expect("unlock by winner"),
        LockStatus::Success
    );
}
