//! The configuration conformance suite: get-all, get-missing, subscribe and unsubscribe
//! against every configuration store of this crate.
//!
//! Items live under a group of their own per case (a fresh uuid), so a get of every key sees
//! only the case's items even on a shared backend, and every case deletes what it wrote.
//! `configuration.redis` runs on the real Redis and on the Redis Cluster of
//! `common::redis_cluster`, where a case's keys spread over the slots.

use std::sync::Arc;
use std::time::Duration;

use plinth_core::ComponentSpec;
use plinth_core::component::Instance;
use plinth_core::component::configuration::{
    ConfigurationChange, ConfigurationItem, ConfigurationQuery, ConfigurationStore,
};
use tokio::sync::mpsc;

use crate::common::{build, postgres_url, redis_host};

const APP: &str = "conformance-app";
/// How long a change may take to reach a watcher.
const PATIENCE: Duration = Duration::from_secs(5);

async fn in_memory() -> Arc<dyn ConfigurationStore> {
    instance(ComponentSpec::new("conformance", "configuration.in-memory")).await
}

async fn redis() -> Arc<dyn ConfigurationStore> {
    // The component name picks the change channel: one per case.
    instance(
        ComponentSpec::new(
            format!("conformance-{}", uuid::Uuid::new_v4()),
            "configuration.redis",
        )
        .with_metadata("redisHost", redis_host()),
    )
    .await
}

async fn redis_cluster() -> Arc<dyn ConfigurationStore> {
    instance(
        ComponentSpec::new(
            format!("conformance-{}", uuid::Uuid::new_v4()),
            "configuration.redis",
        )
        .with_metadata("redisHost", crate::common::redis_cluster())
        .with_metadata("redisType", "cluster"),
    )
    .await
}

async fn postgresql() -> Arc<dyn ConfigurationStore> {
    // One shared table (and channel): every case works under a group of its own.
    instance(
        ComponentSpec::new("conformance", "configuration.postgresql")
            .with_metadata("connectionString", postgres_url())
            .with_metadata("table", "plinth_conformance_configuration"),
    )
    .await
}

#[cfg(feature = "etcd")]
async fn etcd() -> Arc<dyn ConfigurationStore> {
    instance(
        ComponentSpec::new("conformance", "configuration.etcd")
            .with_metadata("endpoints", crate::common::etcd_endpoint())
            .with_metadata("keyPrefixPath", crate::common::ETCD_PREFIX),
    )
    .await
}

async fn instance(spec: ComponentSpec) -> Arc<dyn ConfigurationStore> {
    match build(spec).await {
        Instance::Configuration(store) => store,
        other => panic!("not a configuration store: {}", other.kind()),
    }
}

/// A case's group: `p` without the separator the Redis layout uses between group and key.
fn group_of(p: &str) -> String {
    p.trim_end_matches('|').to_owned()
}

fn item(group: &str, key: &str, content: &str) -> ConfigurationItem {
    ConfigurationItem {
        key: key.into(),
        content: content.into(),
        group: group.into(),
        label: "conformance".into(),
        ..Default::default()
    }
}

fn query(group: &str, keys: &[&str]) -> ConfigurationQuery {
    ConfigurationQuery {
        app_id: APP.into(),
        group: group.into(),
        label: "conformance".into(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        ..Default::default()
    }
}

async fn set(store: &dyn ConfigurationStore, items: Vec<ConfigurationItem>) {
    store.set(APP, items).await.expect("set");
}

async fn get(store: &dyn ConfigurationStore, query: &ConfigurationQuery) -> Vec<(String, String)> {
    let mut items: Vec<_> = store
        .get(query)
        .await
        .expect("get")
        .into_iter()
        .map(|item| (item.key, item.content))
        .collect();
    items.sort();
    items
}

async fn cleanup(store: &dyn ConfigurationStore, group: &str) {
    store.delete(&query(group, &[])).await.expect("cleanup");
}

/// The next change that concerns `group`, skipping others (a store may report every
/// change it sees), failing after `PATIENCE`.
async fn next_change(
    rx: &mut mpsc::Receiver<ConfigurationChange>,
    group: &str,
) -> ConfigurationChange {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let change = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no change for group {group} within {PATIENCE:?}"))
            .expect("the watch ended");
        if change.items.iter().any(|item| item.group == group) {
            return change;
        }
    }
}

async fn get_all(store: Arc<dyn ConfigurationStore>, p: &str) {
    let group = group_of(p);
    set(
        store.as_ref(),
        vec![
            item(&group, "a", "1"),
            item(&group, "b", "2"),
            item(&group, "c", "3"),
        ],
    )
    .await;
    let all = store.get(&query(&group, &[])).await.expect("get all");
    assert_eq!(all.len(), 3, "{all:?}");
    for item in &all {
        assert!(!item.version.is_empty(), "{item:?} has no version");
        assert_eq!(item.group, group);
    }
    assert_eq!(
        get(store.as_ref(), &query(&group, &[])).await,
        [("a", "1"), ("b", "2"), ("c", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    // A key list narrows it.
    assert_eq!(
        get(store.as_ref(), &query(&group, &["a", "c"])).await,
        [("a", "1"), ("c", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    // Another group does not see them.
    assert!(
        get(store.as_ref(), &query(&format!("{group}-other"), &[]))
            .await
            .is_empty()
    );
    // A write bumps the version.
    let before = store.get(&query(&group, &["a"])).await.expect("get")[0]
        .version
        .clone();
    set(store.as_ref(), vec![item(&group, "a", "one")]).await;
    let after = store.get(&query(&group, &["a"])).await.expect("get");
    assert_eq!(after[0].content, "one");
    assert_ne!(after[0].version, before, "a write changes the version");
    cleanup(store.as_ref(), &group).await;
    assert!(get(store.as_ref(), &query(&group, &[])).await.is_empty());
}

async fn get_missing(store: Arc<dyn ConfigurationStore>, p: &str) {
    let group = group_of(p);
    assert!(
        get(store.as_ref(), &query(&group, &["missing"]))
            .await
            .is_empty()
    );
    assert!(get(store.as_ref(), &query(&group, &[])).await.is_empty());
    set(store.as_ref(), vec![item(&group, "present", "here")]).await;
    assert_eq!(
        get(store.as_ref(), &query(&group, &["present", "missing"])).await,
        vec![("present".to_owned(), "here".to_owned())]
    );
    // Deleting a missing key is not an error.
    store
        .delete(&query(&group, &["missing"]))
        .await
        .expect("delete a missing key");
    cleanup(store.as_ref(), &group).await;
}

async fn subscribe(store: Arc<dyn ConfigurationStore>, p: &str) {
    let group = group_of(p);
    let mut rx = store.watch().await.expect("watch");
    set(store.as_ref(), vec![item(&group, "k", "v1")]).await;
    let change = next_change(&mut rx, &group).await;
    assert!(!change.deleted);
    assert_eq!(change.app_id, APP);
    let first = change
        .items
        .iter()
        .find(|i| i.key == "k")
        .unwrap_or_else(|| panic!("{change:?} does not carry k"));
    assert_eq!(first.content, "v1");
    let first_version = first.version.clone();

    set(store.as_ref(), vec![item(&group, "k", "v2")]).await;
    let change = next_change(&mut rx, &group).await;
    let second = change.items.iter().find(|i| i.key == "k").expect("k");
    assert_eq!(second.content, "v2");
    assert_ne!(second.version, first_version);

    store.delete(&query(&group, &["k"])).await.expect("delete");
    let change = next_change(&mut rx, &group).await;
    assert!(change.deleted, "{change:?}");
    assert!(change.items.iter().any(|i| i.key == "k"));
}

async fn unsubscribe(store: Arc<dyn ConfigurationStore>, p: &str) {
    let group = group_of(p);
    let rx = store.watch().await.expect("watch");
    drop(rx);
    // Writes go on without a reader, well past any buffer, and never block.
    for i in 0..300 {
        tokio::time::timeout(
            PATIENCE,
            set(store.as_ref(), vec![item(&group, "k", &i.to_string())]),
        )
        .await
        .expect("a write blocked on a dropped watcher");
    }
    // A new watcher starts from now.
    let mut rx = store.watch().await.expect("watch again");
    set(store.as_ref(), vec![item(&group, "k", "after")]).await;
    let change = next_change(&mut rx, &group).await;
    assert_eq!(
        change
            .items
            .iter()
            .find(|i| i.key == "k")
            .map(|i| i.content.as_str()),
        Some("after")
    );
    cleanup(store.as_ref(), &group).await;
}

macro_rules! conformance {
    ($store:ident: $($case:ident),* $(,)?) => {
        mod $store {
            $(
                #[tokio::test]
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
            conformance!($store: get_all, get_missing, subscribe, unsubscribe);
        )*
    };
}

suite!(in_memory, redis, redis_cluster, postgresql);
#[cfg(feature = "etcd")]
suite!(etcd);
