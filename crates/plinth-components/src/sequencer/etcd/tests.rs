//! Tests against the real etcd at 127.0.0.1:2379 (`PLINTH_TEST_ETCD` overrides); they fail
//! when it is missing. Every test works under a `keyPrefixPath` of its own (a fresh uuid) and
//! deletes it at the end.

use plinth_core::ErrorKind;

use super::*;
use crate::etcd_conn::testing;

async fn sequencer(prefix: &str) -> EtcdSequencer {
    let spec = testing::spec(TYPE_NAME, prefix);
    let sequencer =
        EtcdSequencer::new(EtcdSettings::from_spec(&spec, DEFAULT_PREFIX).expect("config"));
    sequencer
        .init()
        .await
        .unwrap_or_else(|e| panic!("{}", testing::missing(&e)));
    sequencer
}

#[tokio::test]
async fn bigger_than_raises_the_counter_only() {
    let prefix = testing::prefix();
    let sequencer = sequencer(&prefix).await;
    sequencer.ensure_floor("k", 1000).await.expect("floor");
    assert_eq!(sequencer.next_id("k").await.expect("next id"), 1001);
    sequencer.ensure_floor("k", 10).await.expect("floor");
    assert_eq!(sequencer.next_id("k").await.expect("next id"), 1002);
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn keys_use_layottos_layout_and_continue_its_versions() {
    let prefix = testing::prefix();
    let sequencer = sequencer(&prefix).await;
    let key = format!("{prefix}sequencer|||app||k");
    // Layotto issues a key's version and writes an empty value: three ids issued.
    let mut raw = testing::raw().await;
    for _ in 0..3 {
        raw.put(key.as_str(), "", None).await.expect("put");
    }
    assert_eq!(sequencer.next_id("app||k").await.expect("next id"), 4);
    let stored = raw.get(key.as_str(), None).await.expect("get");
    assert_eq!(stored.kvs()[0].value_str().expect("value"), "4");
    assert_eq!(
        sequencer.reserve("app||k", 10).await.expect("reserve"),
        Some((5, 14))
    );
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn a_value_that_is_not_a_counter_is_refused() {
    let prefix = testing::prefix();
    let sequencer = sequencer(&prefix).await;
    let mut raw = testing::raw().await;
    raw.put(format!("{prefix}sequencer|||k"), "twelve", None)
        .await
        .expect("put");
    let err = sequencer.next_id("k").await.expect_err("not a number");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    raw.put(format!("{prefix}sequencer|||k"), i64::MAX.to_string(), None)
        .await
        .expect("put");
    let err = sequencer.next_id("k").await.expect_err("overflow");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    testing::cleanup(&prefix).await;
}

#[test]
fn counters_read_layottos_versions() {
    assert_eq!(counter_of("k", b"", 7).ok(), Some(7));
    assert_eq!(counter_of("k", b"42", 7).ok(), Some(42));
    assert_eq!(counter_of("k", b"3", 7).ok(), Some(7));
    assert!(counter_of("k", b"x", 1).is_err());
    assert!(factory(&ComponentSpec::new("q", TYPE_NAME)).is_err());
}
