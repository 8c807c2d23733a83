use std::collections::HashMap;

use plinth_proto::runtime::v1 as pb;
use tonic::Code;

use crate::common::{Plinth, unique};

fn item(key: &str, value: &[u8]) -> pb::StateItem {
    pb::StateItem {
        key: key.into(),
        value: value.to_vec(),
        ..Default::default()
    }
}

fn with_etag(mut item: pb::StateItem, etag: &str) -> pb::StateItem {
    item.etag = Some(pb::Etag { value: etag.into() });
    item
}

fn first_write(mut item: pb::StateItem) -> pb::StateItem {
    item.options = Some(pb::StateOptions {
        concurrency: pb::state_options::StateConcurrency::ConcurrencyFirstWrite as i32,
        consistency: 0,
    });
    item
}

async fn save(
    c: &mut pb::runtime_client::RuntimeClient<tonic::transport::Channel>,
    items: Vec<pb::StateItem>,
) -> Result<(), tonic::Status> {
    c.save_state(pb::SaveStateRequest {
        store_name: "statestore".into(),
        states: items,
    })
    .await
    .map(|_| ())
}

async fn get(
    c: &mut pb::runtime_client::RuntimeClient<tonic::transport::Channel>,
    key: &str,
) -> pb::GetStateResponse {
    c.get_state(pb::GetStateRequest {
        store_name: "statestore".into(),
        key: key.into(),
        ..Default::default()
    })
    .await
    .expect("get")
    .into_inner()
}

#[tokio::test]
async fn save_get_delete_with_etags() {
    let plinth = Plinth::start();
    let mut c = plinth.client().await;
    let key = unique("k");
    save(&mut c, vec![item(&key, b"v1")]).await.expect("save");
    let got = get(&mut c, &key).await;
    assert_eq!(got.data, b"v1");
    assert!(!got.etag.is_empty());

    // A stale etag loses: ABORTED.
    save(&mut c, vec![with_etag(item(&key, b"v2"), &got.etag)])
        .await
        .expect("save with etag");
    let err = save(&mut c, vec![with_etag(item(&key, b"v3"), &got.etag)])
        .await
        .expect_err("stale etag");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    // A malformed etag is the caller's error.
    let err = save(&mut c, vec![with_etag(item(&key, b"v3"), "not-a-number")])
        .await
        .expect_err("bad etag");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(get(&mut c, &key).await.data, b"v2");

    // First-write: no etag on an existing key fails; on a new key succeeds.
    let err = save(&mut c, vec![first_write(item(&key, b"x"))])
        .await
        .expect_err("first-write on existing key");
    assert_eq!(err.code(), Code::Aborted);
    let fresh = unique("fresh");
    save(&mut c, vec![first_write(item(&fresh, b"x"))])
        .await
        .expect("first-write on new key");

    // Delete with a wrong etag fails, with the right one succeeds; a missing key reads empty.
    let current = get(&mut c, &key).await.etag;
    let err = c
        .delete_state(pb::DeleteStateRequest {
            store_name: "statestore".into(),
            key: key.clone(),
            etag: Some(pb::Etag {
                value: "999999".into(),
            }),
            ..Default::default()
        })
        .await
        .expect_err("wrong etag");
    assert_eq!(err.code(), Code::Aborted);
    c.delete_state(pb::DeleteStateRequest {
        store_name: "statestore".into(),
        key: key.clone(),
        etag: Some(pb::Etag { value: current }),
        ..Default::default()
    })
    .await
    .expect("delete");
    let gone = get(&mut c, &key).await;
    assert!(gone.data.is_empty() && gone.etag.is_empty());
    // Deleting a missing key without an etag succeeds.
    c.delete_state(pb::DeleteStateRequest {
        store_name: "statestore".into(),
        key,
        ..Default::default()
    })
    .await
    .expect("delete missing");
}

#[tokio::test]
async fn bulk_save_names_the_key_with_a_bad_etag() {
    let plinth = Plinth::start();
    let mut c = plinth.client().await;
    let (a, b, bad) = (unique("a"), unique("b"), unique("bad"));
    save(&mut c, vec![item(&bad, b"0")]).await.expect("seed");
    let err = save(
        &mut c,
        vec![
            item(&a, b"1"),
            with_etag(item(&bad, b"1"), "12345"),
            item(&b, b"1"),
        ],
    )
    .await
    .expect_err("one bad etag");
    assert_eq!(err.code(), Code::Aborted);
    assert!(
        err.message().contains(&bad),
        "error names the key: {}",
        err.message()
    );
    assert!(
        !err.message().contains("plinth||"),
        "error shows the caller's key, not the stored one: {}",
        err.message()
    );

    let resp = c
        .get_bulk_state(pb::GetBulkStateRequest {
            store_name: "statestore".into(),
            keys: vec![a.clone(), b.clone(), unique("missing")],
            parallelism: 4,
            metadata: HashMap::new(),
        })
        .await
        .expect("bulk get")
        .into_inner();
    assert_eq!(resp.items.len(), 3);
    assert_eq!(resp.items[0].key, a);
    assert_eq!(resp.items[0].data, b"1");
    assert_eq!(resp.items[1].data, b"1");
    assert!(resp.items[2].data.is_empty());

    c.delete_bulk_state(pb::DeleteBulkStateRequest {
        store_name: "statestore".into(),
        states: vec![item(&a, b""), item(&b, b"")],
    })
    .await
    .expect("bulk delete");
    assert!(get(&mut c, &a).await.data.is_empty());
}

#[tokio::test]
async fn transactions_are_atomic_and_ordered() {
    let plinth = Plinth::start();
    let mut c = plinth.client().await;
    let (k1, k2) = (unique("t1"), unique("t2"));
    let op = |kind: &str, it: pb::StateItem| pb::TransactionalStateOperation {
        operation_type: kind.into(),
        request: Some(it),
    };
    c.execute_state_transaction(pb::ExecuteStateTransactionRequest {
        store_name: "statestore".into(),
        operations: vec![
            op("upsert", item(&k1, b"1")),
            op("upsert", item(&k2, b"2")),
            op("delete", item(&k1, b"")),
            op("delete", item(&unique("none"), b"")),
        ],
        metadata: HashMap::new(),
    })
    .await
    .expect("transaction");
    assert!(
        get(&mut c, &k1).await.data.is_empty(),
        "delete after upsert applied in order"
    );
    assert_eq!(get(&mut c, &k2).await.data, b"2");

    // One failing operation (stale etag) leaves nothing applied.
    let k3 = unique("t3");
    let err = c
        .execute_state_transaction(pb::ExecuteStateTransactionRequest {
            store_name: "statestore".into(),
            operations: vec![
                op("upsert", item(&k3, b"3")),
                op("upsert", with_etag(item(&k2, b"x"), "424242")),
            ],
            metadata: HashMap::new(),
        })
        .await
        .expect_err("stale etag in transaction");
    assert_eq!(err.code(), Code::Aborted);
    assert!(get(&mut c, &k3).await.data.is_empty(), "nothing applied");

    let err = c
        .execute_state_transaction(pb::ExecuteStateTransactionRequest {
            store_name: "statestore".into(),
            operations: vec![op("merge", item(&k3, b"3"))],
            metadata: HashMap::new(),
        })
        .await
        .expect_err("unknown operation");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn ttl_expires_and_reports_expire_time() {
    let plinth = Plinth::start();
    let mut c = plinth.client().await;
    let key = unique("ttl");
    let mut it = item(&key, b"short");
    it.metadata.insert("ttlInSeconds".into(), "1".into());
    save(&mut c, vec![it]).await.expect("save with ttl");
    let got = get(&mut c, &key).await;
    assert_eq!(got.data, b"short");
    let expire = got
        .metadata
        .get("ttlExpireTime")
        .expect("ttlExpireTime reported");
    assert!(expire.ends_with('Z'), "{expire}");

    // -1 removes the TTL: no expire time.
    let mut it = item(&key, b"forever");
    it.metadata.insert("ttlInSeconds".into(), "-1".into());
    save(&mut c, vec![it]).await.expect("save without ttl");
    assert!(
        !get(&mut c, &key)
            .await
            .metadata
            .contains_key("ttlExpireTime")
    );

    let mut bad = item(&key, b"x");
    bad.metadata.insert("ttlInSeconds".into(), "soon".into());
    assert_eq!(
        save(&mut c, vec![bad]).await.expect_err("bad ttl").code(),
        Code::InvalidArgument
    );

    // Expiry: poll (no fixed sleep) until the key is gone, bounded.
    let k2 = unique("ttl2");
    let mut it = item(&k2, b"gone soon");
    it.metadata.insert("ttlInSeconds".into(), "1".into());
    save(&mut c, vec![it]).await.expect("save");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !get(&mut c, &k2).await.data.is_empty() {
        assert!(std::time::Instant::now() < deadline, "key did not expire");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bad_state_requests_get_clear_errors() {
    let plinth = Plinth::start();
    let mut c = plinth.client().await;
    let err = c
        .get_state(pb::GetStateRequest {
            store_name: "nope".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown store");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("nope"), "{}", err.message());
    let err = c
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = save(&mut c, vec![item("", b"x")])
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .get_state(pb::GetStateRequest {
            store_name: "lockstore".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("wrong kind");
    assert_eq!(err.code(), Code::InvalidArgument);
}
