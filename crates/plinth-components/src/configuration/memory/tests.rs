use std::collections::HashMap;
use std::time::Duration;

use plinth_core::ErrorKind;

use super::*;

fn item(key: &str, content: &str) -> ConfigurationItem {
    ConfigurationItem {
        key: key.into(),
        content: content.into(),
        ..Default::default()
    }
}

fn in_group(mut item: ConfigurationItem, group: &str, label: &str) -> ConfigurationItem {
    item.group = group.into();
    item.label = label.into();
    item
}

fn query(app_id: &str, keys: &[&str]) -> ConfigurationQuery {
    ConfigurationQuery {
        app_id: app_id.into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    }
}

async fn contents(
    store: &InMemoryConfigurationStore,
    q: &ConfigurationQuery,
) -> Vec<(String, String)> {
    let items = store.get(q).await.unwrap_or_default();
    items.into_iter().map(|i| (i.key, i.content)).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn next(rx: &mut mpsc::Receiver<ConfigurationChange>) -> Option<ConfigurationChange> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn get_filters_by_app_group_label_and_keys() {
    let store = InMemoryConfigurationStore::new();
    let items = vec![
        item("a", "1"),
        item("b", "2"),
        in_group(item("a", "g"), "grp", "lbl"),
    ];
    assert!(store.set("app", items).await.is_ok());
    assert!(store.set("other", vec![item("a", "x")]).await.is_ok());

    assert_eq!(
        contents(&store, &query("app", &[])).await,
        pairs(&[("a", "1"), ("b", "2")])
    );
    assert_eq!(
        contents(&store, &query("app", &["b", "zz"])).await,
        pairs(&[("b", "2")])
    );
    assert_eq!(
        contents(&store, &query("other", &[])).await,
        pairs(&[("a", "x")])
    );
    let mut grouped = query("app", &["a"]);
    grouped.group = "grp".into();
    grouped.label = "lbl".into();
    assert_eq!(contents(&store, &grouped).await, pairs(&[("a", "g")]));
}

#[tokio::test]
async fn versions_increase_on_every_write() {
    let store = InMemoryConfigurationStore::new();
    assert!(
        store
            .set("app", vec![item("a", "1"), item("b", "1")])
            .await
            .is_ok()
    );
    assert!(store.set("app", vec![item("a", "2")]).await.is_ok());
    let items = store.get(&query("app", &[])).await.unwrap_or_default();
    let versions: Vec<_> = items.iter().map(|i| i.version.as_str()).collect();
    assert_eq!(versions, ["3", "2"]);
    let err = store
        .set("app", vec![item("", "x")])
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::InvalidArgument));
}

#[tokio::test]
async fn delete_removes_matching_items() {
    let store = InMemoryConfigurationStore::new();
    assert!(
        store
            .set("app", vec![item("a", "1"), item("b", "2"), item("c", "3")])
            .await
            .is_ok()
    );
    assert!(store.delete(&query("app", &["a", "c"])).await.is_ok());
    assert_eq!(
        contents(&store, &query("app", &[])).await,
        pairs(&[("b", "2")])
    );
    assert!(store.delete(&query("app", &["missing"])).await.is_ok());
}

#[tokio::test]
async fn watchers_get_every_change_in_order() {
    let store = InMemoryConfigurationStore::new();
    assert!(store.set("app", vec![item("before", "x")]).await.is_ok());
    let mut rx = store.watch().await.unwrap_or_else(|_| mpsc::channel(1).1);
    assert!(store.set("app", vec![item("a", "1")]).await.is_ok());
    assert!(store.delete(&query("app", &["a"])).await.is_ok());

    let set = next(&mut rx).await.unwrap_or_default();
    assert_eq!((set.app_id.as_str(), set.deleted), ("app", false));
    assert_eq!(
        set.items
            .iter()
            .map(|i| (&*i.key, &*i.content))
            .collect::<Vec<_>>(),
        [("a", "1")]
    );
    let deleted = next(&mut rx).await.unwrap_or_default();
    assert!(deleted.deleted);
    assert_eq!(
        deleted
            .items
            .iter()
            .map(|i| (&*i.key, &*i.content))
            .collect::<Vec<_>>(),
        [("a", "")]
    );
}

#[tokio::test]
async fn a_watcher_ends_when_its_receiver_is_dropped() {
    let store = InMemoryConfigurationStore::new();
    let rx = store.watch().await;
    assert_eq!(store.changes.receiver_count(), 1);
    drop(rx);
    for _ in 0..100 {
        if store.changes.receiver_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(store.changes.receiver_count(), 0);
}

#[tokio::test]
async fn a_watcher_ends_when_the_store_is_dropped() {
    let store = InMemoryConfigurationStore::new();
    let rx = store.watch().await;
    drop(store);
    let mut rx = rx.unwrap_or_else(|_| mpsc::channel(1).1);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .is_ok_and(|c| c.is_none())
    );
}

/// The test runs on one thread, so the forwarding task cannot run while the writes happen:
/// the watcher is guaranteed to fall behind by far more than the channels hold.
#[tokio::test]
async fn a_lagging_watcher_converges() {
    let store = InMemoryConfigurationStore::new();
    assert!(
        store
            .set("app", vec![item("deleted-before", "x"), item("kept", "x")])
            .await
            .is_ok()
    );
    let mut rx = store.watch().await.unwrap_or_else(|_| mpsc::channel(1).1);
    // The watcher's view starts from what a get returns when it subscribes.
    let mut view: HashMap<String, String> = contents(&store, &query("app", &[]))
        .await
        .into_iter()
        .collect();

    for i in 0..3000 {
        let key = format!("k{}", i % 500);
        assert!(
            store
                .set("app", vec![item(&key, &i.to_string())])
                .await
                .is_ok()
        );
        if i % 7 == 0 {
            assert!(store.delete(&query("app", &[&key])).await.is_ok());
        }
    }
    assert!(
        store
            .delete(&query("app", &["deleted-before"]))
            .await
            .is_ok()
    );

    let want: HashMap<String, String> = contents(&store, &query("app", &[]))
        .await
        .into_iter()
        .collect();
    let mut received = 0;
    while view != want {
        let Some(change) = next(&mut rx).await else {
            break;
        };
        received += 1;
        for item in change.items {
            if change.deleted {
                view.remove(&item.key);
            } else {
                view.insert(item.key, item.content);
            }
        }
    }
    assert_eq!(view, want);
    assert!(
        received < 3000,
        "the watcher caught up rather than replaying ({received} changes)"
    );
}
