//! Tests against the real Redis at 127.0.0.1:6379 (`REDIS_HOST` overrides); they fail when
//! it is missing. Every key and channel is under a fresh uuid and deleted afterwards.

use std::time::{Duration, Instant};

use plinth_core::ErrorKind;
use redis::AsyncCommands;

use super::*;

fn redis_host() -> String {
    std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

fn uid() -> String {
    format!("plinth-test-{}", uuid::Uuid::new_v4())
}

async fn store() -> RedisConfigurationStore {
    // The component name is unique, so is the channel.
    let spec = ComponentSpec::new(uid(), TYPE_NAME).with_metadata("redisHost", redis_host());
    let store = RedisConfigurationStore::new(
        RedisSettings::from_spec(&spec).expect("settings"),
        &spec.name,
    );
    store.init().await.expect("redis must be reachable");
    store
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}/", redis_host()))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis must be reachable")
}

async fn cleanup(keys: &[String]) {
    let mut c = raw().await;
    let _: () = c.del(keys).await.expect("del");
}

fn item(group: &str, key: &str, content: &str) -> ConfigurationItem {
    ConfigurationItem {
        key: key.into(),
        content: content.into(),
        group: group.into(),
        ..Default::default()
    }
}

fn query(group: &str, keys: &[&str]) -> ConfigurationQuery {
    ConfigurationQuery {
        app_id: "app".into(),
        group: group.into(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn reads_what_dapr_wrote() {
    let (a, b) = (uid(), uid());
    let mut c = raw().await;
    let _: () = c.set(&a, "blue||7").await.expect("set");
    let _: () = c.set(&b, "no version").await.expect("set");
    let store = store().await;
    let got = store.get(&query("", &[&a, &b])).await.expect("get");
    cleanup(&[a.clone(), b.clone()]).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].key.as_str(), got[0].content.as_str()),
        (a.as_str(), "blue")
    );
    assert_eq!(got[0].version, "7");
    assert_eq!(got[1].content, "no version");
    assert_eq!(got[1].version, "");
}

#[tokio::test]
async fn writes_gets_and_deletes_items() {
    let group = uid();
    let store = store().await;
    store
        .set("app", vec![item(&group, "a", "1"), item(&group, "b", "2")])
        .await
        .expect("set");
    store
        .set("app", vec![item(&group, "a", "3")])
        .await
        .expect("set");
    let mut c = raw().await;
    let stored: String = c.get(redis_key(&group, "", "a")).await.expect("get");
    assert_eq!(stored, "3||2", "Dapr's value||version layout");

    let mut all = store.get(&query(&group, &[])).await.expect("get all");
    all.sort_by(|x, y| x.key.cmp(&y.key));
    let pairs: Vec<_> = all
        .iter()
        .map(|i| (i.key.as_str(), i.content.as_str(), i.version.as_str()))
        .collect();
    assert_eq!(pairs, [("a", "3", "2"), ("b", "2", "1")]);

    let missing = store.get(&query(&group, &["nope"])).await.expect("get");
    assert!(missing.is_empty());

    store.delete(&query(&group, &[])).await.expect("delete");
    assert!(
        store
            .get(&query(&group, &[]))
            .await
            .expect("get")
            .is_empty()
    );
}

#[tokio::test]
async fn rejects_values_with_the_separator_and_empty_keys() {
    let store = store().await;
    let err = store
        .set("app", vec![item("g", "k", "a||b")])
        .await
        .expect_err("separator");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = store
        .set("app", vec![item("g", "", "v")])
        .await
        .expect_err("empty key");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

async fn next(rx: &mut mpsc::Receiver<ConfigurationChange>) -> ConfigurationChange {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a change within 5s")
        .expect("channel open")
}

#[tokio::test]
async fn watch_receives_writes_and_deletes() {
    let group = uid();
    let store = store().await;
    let mut rx = store.watch().await.expect("watch");
    store
        .set("app", vec![item(&group, "k", "v")])
        .await
        .expect("set");
    let change = next(&mut rx).await;
    assert_eq!(change.app_id, "app");
    assert!(!change.deleted);
    assert_eq!(change.items.len(), 1);
    assert_eq!(change.items[0].content, "v");
    assert_eq!(change.items[0].version, "1");
    assert_eq!(change.items[0].group, group);

    store.delete(&query(&group, &["k"])).await.expect("delete");
    let change = next(&mut rx).await;
    assert!(change.deleted);
    assert_eq!(change.items[0].key, "k");
    assert_eq!(change.items[0].content, "");
}

#[tokio::test]
async fn dropping_the_receiver_ends_the_subscription() {
    let group = uid();
    let store = store().await;
    let rx = store.watch().await.expect("watch");
    let mut c = raw().await;
    let count = |c: &mut redis::aio::MultiplexedConnection, channel: String| {
        let mut c = c.clone();
        async move {
            let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query_async(&mut c)
                .await
                .expect("numsub");
            counts[0].1
        }
    };
    assert_eq!(count(&mut c, store.channel().to_owned()).await, 1);
    drop(rx);
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(&mut c, store.channel().to_owned()).await != 0 {
        assert!(Instant::now() < deadline, "still subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Writes go on without a subscriber.
    store
        .set("app", vec![item(&group, "k", "v")])
        .await
        .expect("set");
    cleanup(&[redis_key(&group, "", "k")]).await;
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_quickly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let spec = ComponentSpec::new("c", TYPE_NAME)
        .with_metadata("redisHost", addr.to_string())
        .with_metadata("dialTimeout", "1s")
        .with_metadata("timeout", "1s");
    let instance = factory(&spec).expect("metadata is fine");
    let Instance::Configuration(store) = instance else {
        panic!("not a configuration store");
    };
    let started = Instant::now();
    let err = store.init().await.expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = store
        .get(&query("", &["k"]))
        .await
        .expect_err("not connected");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn bad_metadata_names_the_field() {
    let err = factory(&ComponentSpec::new("c", TYPE_NAME)).expect_err("no redisHost");
    assert!(err.to_string().contains("redisHost"), "{err}");
    let spec = ComponentSpec::new("c", TYPE_NAME)
        .with_metadata("redisHost", "127.0.0.1:6379")
        .with_metadata("redisDB", "x");
    let err = factory(&spec).expect_err("bad redisDB");
    assert!(err.to_string().contains("redisDB"), "{err}");
}

#[test]
fn splits_values_like_dapr() {
    assert_eq!(split_value("v||3"), ("v".into(), "3".into()));
    assert_eq!(split_value("v"), ("v".into(), String::new()));
    assert_eq!(split_value("v||3||x"), ("v".into(), "3".into()));
    assert_eq!(redis_key("", "", "k"), "k");
    assert_eq!(redis_key("g", "l", "k"), "g||l||k");
    let m = Message {
        app_id: "a".into(),
        group: "g".into(),
        label: String::new(),
        keys: vec!["k".into()],
        deleted: true,
    };
    assert_eq!(Message::decode(&m.encode()), Some(m));
}

#[tokio::test]
async fn watch_sees_a_direct_write_announced_on_the_channel() {
    let key = uid();
    let store = store().await;
    let mut rx = store.watch().await.expect("watch");
    let mut c = raw().await;
    let _: () = c.set(&key, "red||9").await.expect("set");
    let message = format!(r#"{{"appId":"app","keys":["{key}"]}}"#);
    let _: i64 = c.publish(store.channel(), message).await.expect("publish");
    let change = next(&mut rx).await;
    cleanup(std::slice::from_ref(&key)).await;
    assert_eq!(change.app_id, "app");
    assert!(!change.deleted);
    assert_eq!(change.items[0].key, key);
    assert_eq!(change.items[0].content, "red");
    assert_eq!(change.items[0].version, "9");
}

/// A store on the Redis Cluster at 127.0.0.1:17001-17003 (`PLINTH_TEST_REDIS_CLUSTER`
/// overrides; `scripts/services/redis-cluster.sh` starts it).
async fn cluster_store() -> RedisConfigurationStore {
    let seeds = std::env::var("PLINTH_TEST_REDIS_CLUSTER")
        .unwrap_or_else(|_| "127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003".into());
    let spec = ComponentSpec::new(uid(), TYPE_NAME)
        .with_metadata("redisHost", seeds)
        .with_metadata("redisType", "cluster");
    let store = RedisConfigurationStore::new(
        RedisSettings::from_spec(&spec).expect("settings"),
        &spec.name,
    );
    store.init().await.unwrap_or_else(|e| {
        panic!("the redis cluster must be reachable (scripts/services/redis-cluster.sh): {e}")
    });
    store
}

/// How many keys matching `pattern` the node at `host:port` holds itself.
async fn keys_on_node(
    store: &RedisConfigurationStore,
    host: &str,
    port: u16,
    pattern: &str,
) -> usize {
    let mut cursor: u64 = 0;
    let mut count = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, batch): (u64, Vec<String>) =
            store.conn.run_on(host, port, cmd).await.expect("scan");
        count += batch.len();
        cursor = next;
        if cursor == 0 {
            return count;
        }
    }
}

#[tokio::test]
async fn cluster_items_on_every_primary_are_read_and_watched_through_one_node() {
    let group = uid();
    let store = cluster_store().await;
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let mut rx = store.watch().await.expect("watch");
    let items: Vec<ConfigurationItem> = keys.iter().map(|k| item(&group, k, "v")).collect();
    store.set("app", items).await.expect("set across slots");

    // The keys landed on every primary (30 keys over the slots make a miss vanishingly
    // unlikely), so the watch on one node saw changes published on the others.
    let primaries = store.conn.primaries().await.expect("primaries");
    assert!(primaries.len() > 1, "a cluster of several primaries");
    let pattern = format!("{}*", redis_key(&group, "", ""));
    for (host, port) in &primaries {
        let n = keys_on_node(&store, host, *port, &pattern).await;
        assert!(n > 0, "no key on {host}:{port}");
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < keys.len() {
        let change = next(&mut rx).await;
        assert!(!change.deleted);
        seen.extend(change.items.into_iter().map(|i| i.key));
    }
    let got = store.get(&query(&group, &[])).await.expect("get all");
    let mut got: Vec<String> = got.into_iter().map(|i| i.key).collect();
    got.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(got, want, "a get of every key scans every primary");

    store.delete(&query(&group, &[])).await.expect("delete");
    let mut gone = std::collections::HashSet::new();
    while gone.len() < keys.len() {
        let change = next(&mut rx).await;
        assert!(change.deleted);
        gone.extend(change.items.into_iter().map(|i| i.key));
    }
    assert!(
        store
            .get(&query(&group, &[]))
            .await
            .expect("get")
            .is_empty()
    );
}
