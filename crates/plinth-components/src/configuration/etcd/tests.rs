//! Tests against the real etcd at 127.0.0.1:2379 (`PLINTH_TEST_ETCD` overrides); they fail
//! when it is missing. Every test works under a `keyPrefixPath` of its own (a fresh uuid) and
//! deletes it at the end.

use plinth_core::ErrorKind;
use plinth_testkit::FaultProxy;

use super::*;
use crate::etcd_conn::testing;

const APP: &str = "app";
const PATIENCE: Duration = Duration::from_secs(10);

async fn store_at(endpoint: &str, prefix: &str) -> EtcdConfigurationStore {
    let spec = testing::spec(TYPE_NAME, prefix).with_metadata("endpoints", endpoint);
    let store = EtcdConfigurationStore::new(
        EtcdSettings::from_spec(&spec, DEFAULT_PREFIX).expect("config"),
    );
    store
        .init()
        .await
        .unwrap_or_else(|e| panic!("{}", testing::missing(&e)));
    store
}

async fn store(prefix: &str) -> EtcdConfigurationStore {
    store_at(&testing::endpoint(), prefix).await
}

fn item(key: &str, content: &str) -> ConfigurationItem {
    ConfigurationItem {
        key: key.into(),
        content: content.into(),
        group: "g".into(),
        label: "l".into(),
        ..Default::default()
    }
}

fn query(keys: &[&str]) -> ConfigurationQuery {
    ConfigurationQuery {
        app_id: APP.into(),
        group: "g".into(),
        label: "l".into(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        ..Default::default()
    }
}

async fn next(rx: &mut mpsc::Receiver<ConfigurationChange>) -> ConfigurationChange {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("no change in time")
        .expect("the watch ended")
}

#[tokio::test]
async fn items_use_layottos_layout_with_the_revision_as_version() {
    let prefix = testing::prefix();
    let store = store(&prefix).await;
    store
        .set(APP, vec![item("a", "1"), item("b", "2")])
        .await
        .expect("set");
    let mut raw = testing::raw().await;
    let stored = raw
        .get(format!("{prefix}{APP}/g/l/a"), None)
        .await
        .expect("get");
    let kv = &stored.kvs()[0];
    assert_eq!(kv.value_str().expect("value"), "1");
    let mut items = store.get(&query(&[])).await.expect("get all");
    items.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].version, kv.mod_revision().to_string());
    assert_eq!(
        (items[1].key.as_str(), items[1].content.as_str()),
        ("b", "2")
    );
    // Layotto's tag entries below an item are not items, and go with their item.
    raw.put(format!("{prefix}{APP}/g/l/a/tag"), "1", None)
        .await
        .expect("put");
    assert_eq!(store.get(&query(&[])).await.expect("get all").len(), 2);
    store.delete(&query(&["a"])).await.expect("delete");
    let left = raw
        .get(
            format!("{prefix}{APP}/g/l/a"),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    assert!(left.kvs().is_empty(), "{left:?}");
    assert_eq!(
        store.get(&query(&["a", "b"])).await.expect("get")[0].key,
        "b"
    );
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn a_slash_in_a_part_is_refused() {
    let prefix = testing::prefix();
    let store = store(&prefix).await;
    let err = store
        .set(APP, vec![item("a/b", "1")])
        .await
        .expect_err("slash in key");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let mut q = query(&[]);
    q.group = "g/h".into();
    assert_eq!(
        store.get(&q).await.map_err(|e| e.kind()).err(),
        Some(ErrorKind::InvalidArgument)
    );
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn a_watch_reports_writes_and_deletes_of_any_writer() {
    let prefix = testing::prefix();
    let store = store(&prefix).await;
    let mut rx = store.watch().await.expect("watch");
    store.set(APP, vec![item("k", "v1")]).await.expect("set");
    let change = next(&mut rx).await;
    assert_eq!(change.app_id, APP);
    assert!(!change.deleted);
    assert_eq!(change.items[0].content, "v1");
    let current = store.get(&query(&["k"])).await.expect("get");
    assert_eq!(change.items[0].version, current[0].version);
    // A direct write (Layotto's, or etcdctl's) is seen as well.
    let mut raw = testing::raw().await;
    raw.put(format!("{prefix}other/g/l/k"), "v2", None)
        .await
        .expect("put");
    let change = next(&mut rx).await;
    assert_eq!(change.app_id, "other");
    assert_eq!(change.items[0].content, "v2");
    store.delete(&query(&["k"])).await.expect("delete");
    let change = next(&mut rx).await;
    assert!(change.deleted, "{change:?}");
    assert_eq!(change.items[0].key, "k");
    assert!(change.items[0].content.is_empty());
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn a_watch_resumes_after_a_broken_connection_without_losing_changes() {
    let prefix = testing::prefix();
    let proxy = FaultProxy::start(testing::endpoint()).await;
    let store = store_at(&proxy.addr().to_string(), &prefix).await;
    let mut rx = store.watch().await.expect("watch");
    store
        .set(APP, vec![item("k", "before")])
        .await
        .expect("set");
    assert_eq!(next(&mut rx).await.items[0].content, "before");
    // Every connection closed; new ones are still accepted.
    assert!(proxy.reset() > 0, "the store talks through the proxy");
    // Written while the watch is down, through another connection.
    let mut raw = testing::raw().await;
    raw.put(format!("{prefix}{APP}/g/l/k"), "during", None)
        .await
        .expect("put");
    raw.put(format!("{prefix}{APP}/g/l/k"), "after", None)
        .await
        .expect("put");
    // Both writes arrive, in order; etcd may batch them into one change, which then carries
    // the item as it last was.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("after") {
        let change = next(&mut rx).await;
        assert_eq!(change.items.len(), 1, "{change:?}");
        seen.push(change.items[0].content.clone());
    }
    assert!(seen == ["during", "after"] || seen == ["after"], "{seen:?}");
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn a_dropped_watch_ends_its_task() {
    let prefix = testing::prefix();
    let store = store(&prefix).await;
    let rx = store.watch().await.expect("watch");
    drop(rx);
    for i in 0..300 {
        tokio::time::timeout(PATIENCE, store.set(APP, vec![item("k", &i.to_string())]))
            .await
            .expect("a write blocked on a dropped watcher")
            .expect("set");
    }
    testing::cleanup(&prefix).await;
}

#[tokio::test]
async fn an_unreachable_etcd_fails_fast_with_unavailable() {
    let spec = ComponentSpec::new("c", TYPE_NAME)
        .with_metadata("endpoints", "127.0.0.1:1")
        .with_metadata("dialTimeout", "1")
        .with_metadata("timeout", "1s");
    let store = EtcdConfigurationStore::new(
        EtcdSettings::from_spec(&spec, DEFAULT_PREFIX).expect("config"),
    );
    assert_eq!(
        store.init().await.map_err(|e| e.kind()),
        Err(ErrorKind::Unavailable)
    );
    assert_eq!(
        store.watch().await.map(drop).map_err(|e| e.kind()),
        Err(ErrorKind::Unavailable)
    );
}

#[test]
fn the_default_root_is_layottos() {
    let spec = ComponentSpec::new("c", TYPE_NAME).with_metadata("endpoints", "127.0.0.1:2379");
    let settings = EtcdSettings::from_spec(&spec, DEFAULT_PREFIX).expect("config");
    assert_eq!(settings.key_prefix, "/");
    let spec = spec.with_metadata("keyPrefixPath", "cfg");
    let settings = EtcdSettings::from_spec(&spec, DEFAULT_PREFIX).expect("config");
    assert_eq!(settings.key_prefix, "/cfg/");
}

#[test]
fn a_batch_of_events_becomes_few_changes_with_each_item_once() {
    let mut changes = Vec::new();
    push(&mut changes, "a".into(), item("k", "1"), false);
    push(&mut changes, "a".into(), item("j", "1"), false);
    push(&mut changes, "a".into(), item("k", "2"), false);
    push(&mut changes, "a".into(), item("k", ""), true);
    push(&mut changes, "b".into(), item("k", "3"), false);
    let mut other_group = item("k", "4");
    other_group.group = "h".into();
    push(&mut changes, "b".into(), other_group, false);
    let shape: Vec<_> = changes
        .iter()
        .map(|c| {
            let items: Vec<_> = c
                .items
                .iter()
                .map(|i| format!("{}={}", i.key, i.content))
                .collect();
            (c.app_id.as_str(), c.deleted, items)
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("a", false, vec!["k=2".to_owned(), "j=1".to_owned()]),
            ("a", true, vec!["k=".to_owned()]),
            ("b", false, vec!["k=3".to_owned()]),
            ("b", false, vec!["k=4".to_owned()]),
        ]
    );
}
