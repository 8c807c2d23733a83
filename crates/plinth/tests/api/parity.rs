//! Front-door parity: the same state, lock and configuration cases through Layotto's gRPC
//! API, Dapr's gRPC API and Dapr's HTTP API, each against an in-memory component and a Redis
//! one, in one Plinth. Every door must give the same answers, and a value written through one
//! door reads back byte for byte, with the same ETag, through the others.
//!
//! Redis is the machine's (127.0.0.1:6379, `REDIS_HOST` overrides); every key is unique to
//! the case and deleted at the end.

use std::collections::HashMap;
use std::time::Duration;

use ::dapr::dapr::proto::common::v1 as common;
use ::dapr::dapr::proto::runtime::v1 as dpb;
use dpb::dapr_client::DaprClient;
use plinth_proto::runtime::v1 as lpb;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use crate::backend::redis_host;
use crate::common::{DaprHttp, Plinth, scratch, unique, write};

const APP: &str = "parity";
const WAIT: Duration = Duration::from_secs(10);

/// Plinth with `{mem,redis}-{state,lock,config}` components.
async fn plinth() -> Plinth {
    let host = redis_host();
    let dir = scratch("parity");
    let mut yaml = String::new();
    for (name, type_name, redis) in [
        ("mem-state", "state.in-memory", false),
        ("redis-state", "state.redis", true),
        ("mem-lock", "lock.in-memory", false),
        ("redis-lock", "lock.redis", true),
        ("mem-config", "configuration.in-memory", false),
        ("redis-config", "configuration.redis", true),
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_name}\n  version: v1\n"
        ));
        if redis {
            yaml.push_str(&format!(
                "  metadata:\n    - name: redisHost\n      value: {host}\n"
            ));
        }
    }
    write(&dir, "resources/components.yaml", &yaml);
    Plinth::start_ready_with(
        &["--resources-path", "resources", "--app-id", APP],
        Some(&dir),
    )
    .await
}

/// How a write failed, the same across doors.
#[derive(Debug, PartialEq)]
enum Fail {
    /// An ETag mismatch or a first-write conflict: ABORTED over gRPC, 409 over HTTP.
    Conflict,
    Other(String),
}

fn grpc_fail(status: tonic::Status) -> Fail {
    match status.code() {
        Code::Aborted => Fail::Conflict,
        _ => Fail::Other(format!("{status:?}")),
    }
}

fn http_fail(status: u16, body: &[u8]) -> Fail {
    match status {
        409 => Fail::Conflict,
        _ => Fail::Other(format!("{status} {}", String::from_utf8_lossy(body))),
    }
}

/// One of the three front doors.
enum Door {
    Layotto(lpb::runtime_client::RuntimeClient<Channel>),
    DaprGrpc(DaprClient<Channel>),
    DaprHttp(DaprHttp),
}

#[derive(Clone, Copy, Debug)]
enum DoorKind {
    Layotto,
    DaprGrpc,
    DaprHttp,
}

const DOORS: [DoorKind; 3] = [DoorKind::Layotto, DoorKind::DaprGrpc, DoorKind::DaprHttp];

impl Door {
    async fn open(plinth: &Plinth, kind: DoorKind) -> Self {
        match kind {
            DoorKind::Layotto => Door::Layotto(plinth.client().await),
            DoorKind::DaprGrpc => Door::DaprGrpc(
                DaprClient::connect(format!("http://{}", plinth.dapr_grpc))
                    .await
                    .expect("connect to the Dapr gRPC listener"),
            ),
            DoorKind::DaprHttp => Door::DaprHttp(plinth.dapr_http()),
        }
    }

    async fn save(
        &mut self,
        store: &str,
        key: &str,
        value: &[u8],
        etag: Option<&str>,
        first_write: bool,
    ) -> Result<(), Fail> {
        match self {
            Door::Layotto(c) => c
                .save_state(lpb::SaveStateRequest {
                    store_name: store.into(),
                    states: vec![layotto_item(key, value, etag, first_write)],
                })
                .await
                .map(|_| ())
                .map_err(grpc_fail),
            Door::DaprGrpc(c) => c
                .save_state(dpb::SaveStateRequest {
                    store_name: store.into(),
                    states: vec![dapr_item(key, value, etag, first_write)],
                })
                .await
                .map(|_| ())
                .map_err(grpc_fail),
            Door::DaprHttp(h) => {
                let mut item = http_item(key, value);
                if let Some(etag) = etag {
                    item["etag"] = json!(etag);
                }
                if first_write {
                    item["options"] = json!({"concurrency": "first-write"});
                }
                let resp = h
                    .post_json(&format!("/v1.0/state/{store}"), &json!([item]))
                    .await;
                match resp.status {
                    204 => Ok(()),
                    s => Err(http_fail(s, &resp.body)),
                }
            }
        }
    }

    /// The value and ETag, or `None` when the key is missing.
    async fn get(&mut self, store: &str, key: &str) -> Option<(Vec<u8>, String)> {
        let (data, etag) = match self {
            Door::Layotto(c) => {
                let r = c
                    .get_state(lpb::GetStateRequest {
                        store_name: store.into(),
                        key: key.into(),
                        ..Default::default()
                    })
                    .await
                    .expect("get")
                    .into_inner();
                (r.data, r.etag)
            }
            Door::DaprGrpc(c) => {
                let r = c
                    .get_state(dpb::GetStateRequest {
                        store_name: store.into(),
                        key: key.into(),
                        ..Default::default()
                    })
                    .await
                    .expect("get")
                    .into_inner();
                (r.data, r.etag)
            }
            Door::DaprHttp(h) => {
                let resp = h.get(&format!("/v1.0/state/{store}/{key}")).await;
                match resp.status {
                    204 => return None,
                    200 => (
                        resp.body.to_vec(),
                        resp.header("etag").expect("an ETag header").to_owned(),
                    ),
                    s => panic!("GET state: {s} {}", resp.text()),
                }
            }
        };
        // Over gRPC a missing key is an empty answer.
        (!data.is_empty() || !etag.is_empty()).then_some((data, etag))
    }

    async fn delete(&mut self, store: &str, key: &str, etag: Option<&str>) -> Result<(), Fail> {
        match self {
            Door::Layotto(c) => c
                .delete_state(lpb::DeleteStateRequest {
                    store_name: store.into(),
                    key: key.into(),
                    etag: etag.map(|e| lpb::Etag { value: e.into() }),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(grpc_fail),
            Door::DaprGrpc(c) => c
                .delete_state(dpb::DeleteStateRequest {
                    store_name: store.into(),
                    key: key.into(),
                    etag: etag.map(|e| common::Etag { value: e.into() }),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(grpc_fail),
            Door::DaprHttp(h) => {
                let headers: Vec<(&str, &str)> =
                    etag.map(|e| ("if-match", e)).into_iter().collect();
                let resp = h
                    .delete(&format!("/v1.0/state/{store}/{key}"), &headers)
                    .await;
                match resp.status {
                    204 => Ok(()),
                    s => Err(http_fail(s, &resp.body)),
                }
            }
        }
    }

    /// The values of the keys that exist, sorted by key.
    async fn bulk_get(&mut self, store: &str, keys: &[String]) -> Vec<(String, Vec<u8>)> {
        let mut found: Vec<(String, Vec<u8>)> = match self {
            Door::Layotto(c) => c
                .get_bulk_state(lpb::GetBulkStateRequest {
                    store_name: store.into(),
                    keys: keys.to_vec(),
                    ..Default::default()
                })
                .await
                .expect("bulk get")
                .into_inner()
                .items
                .into_iter()
                .filter(|i| !i.data.is_empty())
                .map(|i| (i.key, i.data))
                .collect(),
            Door::DaprGrpc(c) => c
                .get_bulk_state(dpb::GetBulkStateRequest {
                    store_name: store.into(),
                    keys: keys.to_vec(),
                    ..Default::default()
                })
                .await
                .expect("bulk get")
                .into_inner()
                .items
                .into_iter()
                .filter(|i| !i.data.is_empty())
                .map(|i| (i.key, i.data))
                .collect(),
            Door::DaprHttp(h) => {
                let resp = h
                    .post_json(&format!("/v1.0/state/{store}/bulk"), &json!({"keys": keys}))
                    .await;
                assert_eq!(resp.status, 200, "{}", resp.text());
                resp.json()
                    .as_array()
                    .expect("an array")
                    .iter()
                    .filter(|i| i.get("data").is_some_and(|d| !d.is_null()))
                    .map(|i| {
                        (
                            i["key"].as_str().expect("key").to_owned(),
                            serde_json::to_vec(&i["data"]).expect("JSON"),
                        )
                    })
                    .collect()
            }
        };
        found.sort();
        found
    }

    /// Upserts (`Some(value)`) and deletes (`None`), in order, atomically.
    async fn transact(&mut self, store: &str, ops: &[(&str, Option<&[u8]>)]) -> Result<(), Fail> {
        match self {
            Door::Layotto(c) => c
                .execute_state_transaction(lpb::ExecuteStateTransactionRequest {
                    store_name: store.into(),
                    operations: ops
                        .iter()
                        .map(|(key, value)| lpb::TransactionalStateOperation {
                            operation_type: if value.is_some() { "upsert" } else { "delete" }
                                .into(),
                            request: Some(layotto_item(
                                key,
                                value.unwrap_or_default(),
                                None,
                                false,
                            )),
                        })
                        .collect(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(grpc_fail),
            Door::DaprGrpc(c) => c
                .execute_state_transaction(dpb::ExecuteStateTransactionRequest {
                    store_name: store.into(),
                    operations: ops
                        .iter()
                        .map(|(key, value)| dpb::TransactionalStateOperation {
                            operation_type: if value.is_some() { "upsert" } else { "delete" }
                                .into(),
                            request: Some(dapr_item(key, value.unwrap_or_default(), None, false)),
                        })
                        .collect(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(grpc_fail),
            Door::DaprHttp(h) => {
                let operations: Vec<Value> = ops
                    .iter()
                    .map(|(key, value)| match value {
                        Some(v) => json!({"operation": "upsert", "request": http_item(key, v)}),
                        None => json!({"operation": "delete", "request": {"key": key}}),
                    })
                    .collect();
                let resp = h
                    .post_json(
                        &format!("/v1.0/state/{store}/transaction"),
                        &json!({"operations": operations}),
                    )
                    .await;
                match resp.status {
                    204 => Ok(()),
                    s => Err(http_fail(s, &resp.body)),
                }
            }
        }
    }

    async fn try_lock(&mut self, store: &str, resource: &str, owner: &str, secs: i32) -> bool {
        match self {
            Door::Layotto(c) => {
                c.try_lock(lpb::TryLockRequest {
                    store_name: store.into(),
                    resource_id: resource.into(),
                    lock_owner: owner.into(),
                    expire: secs,
                })
                .await
                .expect("try lock")
                .into_inner()
                .success
            }
            Door::DaprGrpc(c) => {
                c.try_lock_alpha1(dpb::TryLockRequest {
                    store_name: store.into(),
                    resource_id: resource.into(),
                    lock_owner: owner.into(),
                    expiry_in_seconds: secs,
                })
                .await
                .expect("try lock")
                .into_inner()
                .success
            }
            Door::DaprHttp(h) => {
                let resp = h
                    .post_json(
                        &format!("/v1.0-alpha1/lock/{store}"),
                        &json!({"resourceId": resource, "lockOwner": owner, "expiryInSeconds": secs}),
                    )
                    .await;
                assert_eq!(resp.status, 200, "{}", resp.text());
                resp.json()["success"].as_bool().expect("success")
            }
        }
    }

    /// Unlock status: 0 success, 1 no such lock, 2 held by another owner.
    async fn unlock(&mut self, store: &str, resource: &str, owner: &str) -> i64 {
        match self {
            Door::Layotto(c) => i64::from(
                c.unlock(lpb::UnlockRequest {
                    store_name: store.into(),
                    resource_id: resource.into(),
                    lock_owner: owner.into(),
                })
                .await
                .expect("unlock")
                .into_inner()
                .status,
            ),
            Door::DaprGrpc(c) => i64::from(
                c.unlock_alpha1(dpb::UnlockRequest {
                    store_name: store.into(),
                    resource_id: resource.into(),
                    lock_owner: owner.into(),
                })
                .await
                .expect("unlock")
                .into_inner()
                .status,
            ),
            Door::DaprHttp(h) => {
                let resp = h
                    .post_json(
                        &format!("/v1.0-alpha1/unlock/{store}"),
                        &json!({"resourceId": resource, "lockOwner": owner}),
                    )
                    .await;
                assert_eq!(resp.status, 200, "{}", resp.text());
                resp.json()["status"].as_i64().unwrap_or(0)
            }
        }
    }

    /// (key, value) of the configuration items that exist, sorted by key.
    async fn get_config(&mut self, store: &str, keys: &[String]) -> Vec<(String, String)> {
        let mut items: Vec<(String, String)> = match self {
            Door::Layotto(c) => c
                .get_configuration(lpb::GetConfigurationRequest {
                    store_name: store.into(),
                    app_id: APP.into(),
                    keys: keys.to_vec(),
                    ..Default::default()
                })
                .await
                .expect("get configuration")
                .into_inner()
                .items
                .into_iter()
                .map(|i| (i.key, i.content))
                .collect(),
            Door::DaprGrpc(c) => c
                .get_configuration(dpb::GetConfigurationRequest {
                    store_name: store.into(),
                    keys: keys.to_vec(),
                    metadata: HashMap::new(),
                })
                .await
                .expect("get configuration")
                .into_inner()
                .items
                .into_iter()
                .map(|(k, i)| (k, i.value))
                .collect(),
            Door::DaprHttp(h) => {
                let query: Vec<String> = keys.iter().map(|k| format!("key={k}")).collect();
                let resp = h
                    .get(&format!("/v1.0/configuration/{store}?{}", query.join("&")))
                    .await;
                // Dapr answers 204 when none of the keys exists.
                if resp.status == 204 {
                    return Vec::new();
                }
                assert_eq!(resp.status, 200, "{}", resp.text());
                resp.json()
                    .as_object()
                    .expect("an object")
                    .iter()
                    .map(|(k, v)| (k.clone(), v["value"].as_str().expect("value").to_owned()))
                    .collect()
            }
        };
        items.sort();
        items
    }
}

fn layotto_item(key: &str, value: &[u8], etag: Option<&str>, first_write: bool) -> lpb::StateItem {
    lpb::StateItem {
        key: key.into(),
        value: value.to_vec(),
        etag: etag.map(|e| lpb::Etag { value: e.into() }),
        options: first_write.then_some(lpb::StateOptions {
            concurrency: lpb::state_options::StateConcurrency::ConcurrencyFirstWrite as i32,
            consistency: 0,
        }),
        ..Default::default()
    }
}

fn dapr_item(key: &str, value: &[u8], etag: Option<&str>, first_write: bool) -> common::StateItem {
    common::StateItem {
        key: key.into(),
        value: value.to_vec(),
        etag: etag.map(|e| common::Etag { value: e.into() }),
        options: first_write.then_some(common::StateOptions {
            concurrency: common::state_options::StateConcurrency::ConcurrencyFirstWrite as i32,
            consistency: 0,
        }),
        ..Default::default()
    }
}

/// Over HTTP a value is JSON: the cases use JSON values, which every door stores as the same
/// bytes.
fn http_item(key: &str, value: &[u8]) -> Value {
    let value: Value = serde_json::from_slice(value).expect("the cases use JSON values");
    json!({"key": key, "value": value})
}

fn value(n: u32) -> Vec<u8> {
    format!(r#"{{"n":{n}}}"#).into_bytes()
}

async fn state_round_trip(door: &mut Door, store: &str) {
    let key = unique("parity");
    assert_eq!(door.get(store, &key).await, None);
    door.save(store, &key, &value(1), None, false)
        .await
        .expect("save");
    let (data, etag) = door.get(store, &key).await.expect("saved");
    assert_eq!(data, value(1));
    assert!(!etag.is_empty());
    door.save(store, &key, &value(2), None, false)
        .await
        .expect("overwrite");
    let (data, second) = door.get(store, &key).await.expect("saved");
    assert_eq!(data, value(2));
    assert_ne!(second, etag, "a write changes the ETag");
    door.delete(store, &key, None).await.expect("delete");
    assert_eq!(door.get(store, &key).await, None);
    // Deleting a missing key is fine.
    door.delete(store, &key, None)
        .await
        .expect("delete a missing key");
}

async fn state_etags(door: &mut Door, store: &str) {
    let key = unique("parity");
    door.save(store, &key, &value(1), None, false)
        .await
        .expect("save");
    let (_, etag) = door.get(store, &key).await.expect("saved");
    door.save(store, &key, &value(2), Some(&etag), false)
        .await
        .expect("save with the current ETag");
    // The old ETag is stale now, for writes and deletes.
    assert_eq!(
        door.save(store, &key, &value(3), Some(&etag), false).await,
        Err(Fail::Conflict)
    );
    assert_eq!(
        door.delete(store, &key, Some(&etag)).await,
        Err(Fail::Conflict)
    );
    let (data, current) = door.get(store, &key).await.expect("still there");
    assert_eq!(data, value(2), "a failed write changed nothing");
    // First-write: without an ETag on an existing key, it conflicts; with the current one it wins.
    assert_eq!(
        door.save(store, &key, &value(4), None, true).await,
        Err(Fail::Conflict)
    );
    door.save(store, &key, &value(5), Some(&current), true)
        .await
        .expect("first-write with the current ETag");
    let (_, current) = door.get(store, &key).await.expect("still there");
    door.delete(store, &key, Some(&current))
        .await
        .expect("delete with the current ETag");
    // First-write of a new key needs no ETag.
    door.save(store, &key, &value(6), None, true)
        .await
        .expect("first-write of a new key");
    door.delete(store, &key, None).await.expect("cleanup");
}

async fn state_bulk_and_transactions(door: &mut Door, store: &str) {
    let keys: Vec<String> = (0..3).map(|_| unique("parity")).collect();
    for (n, key) in keys.iter().enumerate() {
        door.save(store, key, &value(n as u32), None, false)
            .await
            .expect("save");
    }
    let mut all = keys.clone();
    all.push(unique("missing"));
    let mut want: Vec<(String, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .map(|(n, k)| (k.clone(), value(n as u32)))
        .collect();
    want.sort();
    assert_eq!(door.bulk_get(store, &all).await, want);

    // In order: upsert then delete the same key leaves nothing; delete of a missing key is
    // fine; the last upsert of a key wins.
    let fresh = unique("parity");
    door.transact(
        store,
        &[
            (keys[0].as_str(), Some(value(10).as_slice())),
            (fresh.as_str(), Some(value(11).as_slice())),
            (fresh.as_str(), None),
            (all[3].as_str(), None),
            (keys[1].as_str(), None),
            (keys[0].as_str(), Some(value(12).as_slice())),
        ],
    )
    .await
    .expect("transaction");
    assert_eq!(
        door.get(store, &keys[0]).await.map(|g| g.0),
        Some(value(12))
    );
    assert_eq!(door.get(store, &fresh).await, None);
    assert_eq!(door.get(store, &keys[1]).await, None);
    assert_eq!(door.get(store, &keys[2]).await.map(|g| g.0), Some(value(2)));
    for key in &keys {
        door.delete(store, key, None).await.expect("cleanup");
    }
}

async fn lock_cases(door: &mut Door, store: &str) {
    let resource = unique("parity-lock");
    assert!(door.try_lock(store, &resource, "alice", 60).await);
    assert!(!door.try_lock(store, &resource, "bob", 60).await);
    assert!(
        !door.try_lock(store, &resource, "alice", 60).await,
        "not reentrant"
    );
    assert_eq!(door.unlock(store, &resource, "bob").await, 2);
    assert_eq!(door.unlock(store, &resource, "alice").await, 0);
    assert_eq!(door.unlock(store, &resource, "alice").await, 1);
    assert!(door.try_lock(store, &resource, "bob", 60).await);
    assert_eq!(door.unlock(store, &resource, "bob").await, 0);
}

async fn config_cases(door: &mut Door, layotto: &mut Door, store: &str) {
    let Door::Layotto(writer) = layotto else {
        unreachable!("the writer is Layotto's door")
    };
    let keys: Vec<String> = (0..2).map(|_| unique("parity-config")).collect();
    writer
        .save_configuration(lpb::SaveConfigurationRequest {
            store_name: store.into(),
            app_id: APP.into(),
            items: keys
                .iter()
                .map(|k| lpb::ConfigurationItem {
                    key: k.clone(),
                    content: format!("value of {k}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .expect("save configuration");
    let missing = unique("parity-missing");
    let got = door
        .get_config(store, &[keys[0].clone(), keys[1].clone(), missing])
        .await;
    let mut want: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.clone(), format!("value of {k}")))
        .collect();
    want.sort();
    assert_eq!(got, want);
    writer
        .delete_configuration(lpb::DeleteConfigurationRequest {
            store_name: store.into(),
            app_id: APP.into(),
            keys: keys.clone(),
            ..Default::default()
        })
        .await
        .expect("cleanup");
    assert!(door.get_config(store, &keys).await.is_empty());
}

macro_rules! parity {
    ($($door:ident: $kind:expr;)*) => {
        $(
            mod $door {
                use super::*;

                async fn door() -> (Plinth, Door) {
                    let plinth = plinth().await;
                    let door = Door::open(&plinth, $kind).await;
                    (plinth, door)
                }

                #[tokio::test]
                async fn state_round_trip() {
                    let (_plinth, mut door) = door().await;
                    for store in ["mem-state", "redis-state"] {
                        super::state_round_trip(&mut door, store).await;
                    }
                }

                #[tokio::test]
                async fn state_etags() {
                    let (_plinth, mut door) = door().await;
                    for store in ["mem-state", "redis-state"] {
                        super::state_etags(&mut door, store).await;
                    }
                }

                #[tokio::test]
                async fn state_bulk_and_transactions() {
                    let (_plinth, mut door) = door().await;
                    for store in ["mem-state", "redis-state"] {
                        super::state_bulk_and_transactions(&mut door, store).await;
                    }
                }

                #[tokio::test]
                async fn lock() {
                    let (_plinth, mut door) = door().await;
                    for store in ["mem-lock", "redis-lock"] {
                        super::lock_cases(&mut door, store).await;
                    }
                }

                #[tokio::test]
                async fn configuration_get() {
                    let (plinth, mut door) = door().await;
                    let mut layotto = Door::open(&plinth, DoorKind::Layotto).await;
                    for store in ["mem-config", "redis-config"] {
                        super::config_cases(&mut door, &mut layotto, store).await;
                    }
                }
            }
        )*
    };
}

parity! {
    layotto_grpc: DoorKind::Layotto;
    dapr_grpc: DoorKind::DaprGrpc;
    dapr_http: DoorKind::DaprHttp;
}

/// A value written through any door reads back byte for byte, with the same ETag, through
/// every other door; an ETag from one door is good on another.
#[tokio::test]
async fn values_and_etags_cross_doors() {
    let plinth = plinth().await;
    let mut doors = Vec::new();
    for kind in DOORS {
        doors.push((kind, Door::open(&plinth, kind).await));
    }
    for store in ["mem-state", "redis-state"] {
        for w in 0..doors.len() {
            let key = unique("parity-cross");
            doors[w]
                .1
                .save(store, &key, &value(7), None, false)
                .await
                .expect("save");
            let (data, etag) = doors[w].1.get(store, &key).await.expect("saved");
            for r in 0..doors.len() {
                let got = doors[r].1.get(store, &key).await;
                assert_eq!(
                    got,
                    Some((data.clone(), etag.clone())),
                    "{store}: written through {:?}, read through {:?}",
                    doors[w].0,
                    doors[r].0
                );
            }
            // The writer's ETag is good on the next door.
            let next = (w + 1) % doors.len();
            doors[next]
                .1
                .delete(store, &key, Some(&etag))
                .await
                .expect("delete with a foreign ETag");
        }
    }
}

/// A configuration change reaches subscribers on Layotto's and Dapr's gRPC APIs alike.
#[tokio::test]
async fn configuration_changes_reach_both_grpc_apis() {
    let plinth = plinth().await;
    let mut layotto = plinth.client().await;
    let mut dapr = DaprClient::connect(format!("http://{}", plinth.dapr_grpc))
        .await
        .expect("connect");
    for store in ["mem-config", "redis-config"] {
        let key = unique("parity-sub");
        let (tx, rx) = mpsc::channel(1);
        tx.send(lpb::SubscribeConfigurationRequest {
            store_name: store.into(),
            app_id: APP.into(),
            keys: vec![key.clone()],
            ..Default::default()
        })
        .await
        .expect("queue");
        let mut layotto_sub = layotto
            .subscribe_configuration(ReceiverStream::new(rx))
            .await
            .expect("subscribe over Layotto")
            .into_inner();
        let mut dapr_sub = dapr
            .subscribe_configuration(dpb::SubscribeConfigurationRequest {
                store_name: store.into(),
                keys: vec![key.clone()],
                metadata: HashMap::new(),
            })
            .await
            .expect("subscribe over Dapr")
            .into_inner();
        // Dapr's stream opens with its id; once it has, both subscriptions are in place
        // (Layotto's is registered before its first message is read below).
        let first = tokio::time::timeout(WAIT, dapr_sub.message())
            .await
            .expect("Dapr's first message")
            .expect("stream")
            .expect("open");
        assert!(!first.id.is_empty());
        layotto
            .save_configuration(lpb::SaveConfigurationRequest {
                store_name: store.into(),
                app_id: APP.into(),
                items: vec![lpb::ConfigurationItem {
                    key: key.clone(),
                    content: "changed".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect("save");
        let change = tokio::time::timeout(WAIT, dapr_sub.message())
            .await
            .expect("a change over Dapr")
            .expect("stream")
            .expect("change");
        assert_eq!(change.items[&key].value, "changed", "{store}");
        let change = tokio::time::timeout(WAIT, layotto_sub.message())
            .await
            .expect("a change over Layotto")
            .expect("stream")
            .expect("change");
        assert_eq!(
            change
                .items
                .iter()
                .map(|i| (i.key.as_str(), i.content.as_str()))
                .collect::<Vec<_>>(),
            vec![(key.as_str(), "changed")],
            "{store}"
        );
        drop(tx);
        layotto
            .delete_configuration(lpb::DeleteConfigurationRequest {
                store_name: store.into(),
                app_id: APP.into(),
                keys: vec![key],
                ..Default::default()
            })
            .await
            .expect("cleanup");
    }
}
