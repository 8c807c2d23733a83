use std::collections::HashSet;

use pb::runtime_client::RuntimeClient;
use pb::sequencer_options::AutoIncrement;
use plinth_proto::runtime::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Plinth, scratch, unique, write};

type Client = RuntimeClient<Channel>;

async fn next_id(
    c: &mut Client,
    store: &str,
    key: &str,
    increment: Option<AutoIncrement>,
) -> Result<i64, tonic::Status> {
    c.get_next_id(pb::GetNextIdRequest {
        store_name: store.into(),
        key: key.into(),
        options: increment.map(|i| pb::SequencerOptions {
            increment: i as i32,
        }),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().next_id)
}

/// `tasks` clients, each on its own connection, each asking `calls` ids in sequence; returns
/// every caller's ids in the order it got them.
async fn race(
    plinth: &Plinth,
    key: &str,
    increment: Option<AutoIncrement>,
    tasks: usize,
    calls: usize,
) -> Vec<Vec<i64>> {
    let mut clients = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        clients.push(plinth.client().await);
    }
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let key = key.to_string();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(calls);
                for _ in 0..calls {
                    ids.push(
                        next_id(&mut c, "sequencer", &key, increment)
                            .await
                            .expect("next id"),
                    );
                }
                ids
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks);
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

fn assert_unique_and_increasing_per_caller(per_caller: &[Vec<i64>], total: usize) {
    let mut all = HashSet::with_capacity(total);
    for ids in per_caller {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids not strictly increasing for one caller: {ids:?}"
        );
        for id in ids {
            assert!(*id > 0, "ids are positive, got {id}");
            assert!(all.insert(*id), "id {id} issued twice");
        }
    }
    assert_eq!(all.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_ids_are_unique_across_ten_thousand_concurrent_calls() {
    let plinth = Plinth::start_ready().await;
    let key = unique("strong");
    let per_caller = race(&plinth, &key, Some(AutoIncrement::Strong), 50, 200).await;
    assert_unique_and_increasing_per_caller(&per_caller, 10_000);
    // STRONG ids come straight from the store: together they are exactly 1..=10000.
    let max = per_caller.iter().flatten().max().copied();
    assert_eq!(max, Some(10_000));
    let mut c = plinth.client().await;
    assert_eq!(
        next_id(&mut c, "sequencer", &key, Some(AutoIncrement::Strong))
            .await
            .expect("next"),
        10_001
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_ids_are_unique_across_concurrent_callers() {
    let plinth = Plinth::start_ready().await;
    let key = unique("weak");
    // No options at all: WEAK is the default.
    let per_caller = race(&plinth, &key, None, 20, 100).await;
    assert_unique_and_increasing_per_caller(&per_caller, 2_000);
    let explicit = race(&plinth, &key, Some(AutoIncrement::Weak), 10, 50).await;
    let mut seen: HashSet<i64> = per_caller.iter().flatten().copied().collect();
    for id in explicit.iter().flatten() {
        assert!(seen.insert(*id), "id {id} issued twice");
    }
    // Keys are independent.
    let mut c = plinth.client().await;
    assert_eq!(
        next_id(&mut c, "sequencer", &unique("fresh"), None)
            .await
            .expect("fresh key"),
        1
    );
}

#[tokio::test]
async fn bigger_than_from_a_component_resource() {
    let dir = scratch("seq-resources");
    let (strong_key, weak_key) = (unique("order"), unique("invoice"));
    write(
        &dir,
        "resources/sequencer.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: seq
spec:
  type: sequencer.in-memory
  version: v1
  metadata:
    - name: biggerThan.{strong_key}
      value: \"1000\"
    - name: biggerThan.{weak_key}
      value: 5000
"
        ),
    );
    let plinth = Plinth::start_ready_with(&["--resources-path", "resources"], Some(&dir)).await;
    let mut c = plinth.client().await;
    let first = next_id(&mut c, "seq", &strong_key, Some(AutoIncrement::Strong))
        .await
        .expect("strong id");
    assert!(
        first > 1000,
        "first id {first} is not above biggerThan 1000"
    );
    let second = next_id(&mut c, "seq", &strong_key, Some(AutoIncrement::Strong))
        .await
        .expect("strong id");
    assert!(second > first);
    let weak = next_id(&mut c, "seq", &weak_key, None)
        .await
        .expect("weak id");
    assert!(
        weak > 5000,
        "first WEAK id {weak} is not above biggerThan 5000"
    );
    // A key without a floor starts at 1.
    assert_eq!(
        next_id(&mut c, "seq", &unique("plain"), Some(AutoIncrement::Strong))
            .await
            .expect("plain"),
        1
    );
    // Only the resources' components exist: no embedded default sequencer.
    let err = next_id(&mut c, "sequencer", &strong_key, None)
        .await
        .expect_err("no embedded store");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bigger_than_from_a_layotto_config() {
    let dir = scratch("seq-layotto");
    let key = unique("order");
    let config = serde_json::json!({
        "servers": [{
            "default_log_path": "stdout",
            "listeners": [{
                "name": "grpc",
                "address": "127.0.0.1:34904",
                "filter_chains": [{
                    "filters": [{
                        "type": "grpc",
                        "config": {
                            "server_name": "runtime",
                            "grpc_config": {
                                "hellos": { "quick_start_demo": { "type": "helloworld", "hello": "greeting" } },
                                "sequencer": {
                                    "sequencer_demo": { "type": "in-memory", "biggerThan": { key.clone(): 1000 } }
                                }
                            }
                        }
                    }]
                }]
            }]
        }]
    });
    write(&dir, "config.json", &config.to_string());
    let plinth = Plinth::start_ready_with(&["--layotto-config", "config.json"], Some(&dir)).await;
    let mut c = plinth.client().await;
    let first = next_id(&mut c, "sequencer_demo", &key, Some(AutoIncrement::Strong))
        .await
        .expect("id");
    assert!(
        first > 1000,
        "first id {first} is not above biggerThan 1000"
    );
    let weak = next_id(&mut c, "sequencer_demo", &key, None)
        .await
        .expect("weak id");
    assert!(
        weak > first,
        "WEAK after STRONG on the same key: {weak} <= {first}"
    );
}

#[tokio::test]
async fn bad_sequencer_requests_are_invalid_arguments() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let err = next_id(&mut c, "sequencer", "", None)
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = next_id(&mut c, "sequencer", "", Some(AutoIncrement::Strong))
        .await
        .expect_err("empty key, strong");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = next_id(&mut c, "no-such-sequencer", &unique("k"), None)
        .await
        .expect_err("unknown store");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("no-such-sequencer"),
        "{}",
        err.message()
    );
    let err = next_id(&mut c, "statestore", &unique("k"), None)
        .await
        .expect_err("not a sequencer");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = c
        .get_next_id(pb::GetNextIdRequest {
            store_name: "sequencer".into(),
            key: unique("k"),
            options: Some(pb::SequencerOptions { increment: 7 }),
            ..Default::default()
        })
        .await
        .expect_err("unknown increment");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}
