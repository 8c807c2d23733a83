//! The sequencer conformance suite: the same cases against every sequencer of this crate.
//!
//! `sequencer.redis` runs against the real Redis at 127.0.0.1:6379 (`REDIS_HOST` overrides)
//! and again on the Redis Cluster of `common::redis_cluster`, and `sequencer.mysql` against
//! the real MariaDB/MySQL, database `test` (`PLINTH_TEST_MYSQL` overrides, a Go DSN), in a
//! table of its own, `plinth_conformance_sequencer`; each fails when its backend is missing.
//! `sequencer.postgresql` runs against the real PostgreSQL, database `test`
//! (`PLINTH_TEST_POSTGRES` overrides), in a table of its own, `plinth_conformance_sequencer`.
//! `sequencer.etcd` (with the `etcd` feature) runs against etcd at 127.0.0.1:2379
//! (`PLINTH_TEST_ETCD` overrides). Every case uses keys under a fresh uuid prefix and deletes them at the end (the trait has
//! no delete, so the Redis keys and the MySQL and PostgreSQL rows go directly), so runs can share the servers.

use std::collections::HashSet;
use std::sync::Arc;

use ::redis::AsyncCommands;
use plinth_core::ComponentSpec;
use plinth_core::component::Instance;
use plinth_core::component::sequencer::Sequencer;

use crate::common::{build, mysql_url, postgres_client, postgres_url, redis_host};

/// Where a sequencer's keys live when they outlive the process.
enum Keys {
    InMemory,
    Redis(String),
    RedisCluster(String),
    Mysql,
    Postgres,
    /// The etcd at this endpoint, under [`crate::common::ETCD_PREFIX`].
    #[cfg(feature = "etcd")]
    Etcd(String),
}

/// The table `sequencer.postgresql` uses in this suite.
const POSTGRES_TABLE: &str = "plinth_conformance_sequencer";

/// The table `sequencer.mysql` uses in this suite.
const MYSQL_TABLE: &str = "plinth_conformance_sequencer";

/// A sequencer under test, and where its keys live.
struct Store {
    sequencer: Arc<dyn Sequencer>,
    keys: Keys,
}

impl Store {
    /// Forget `keys`, where they outlive the process: the Redis and etcd keys (the default
    /// layout, `sequencer|||{key}`) or the SQL rows.
    async fn cleanup(&self, keys: &[String]) {
        let stored = || keys.iter().map(|k| format!("sequencer|||{k}"));
        match &self.keys {
            Keys::InMemory => {}
            Keys::Mysql => mysql_cleanup(keys).await,
            Keys::Postgres => {
                postgres_client()
                    .await
                    .execute(
                        &format!("DELETE FROM {POSTGRES_TABLE} WHERE key = ANY($1)"),
                        &[&keys],
                    )
                    .await
                    .expect("cleanup");
            }
            Keys::Redis(host) => {
                let mut raw = ::redis::Client::open(format!("redis://{host}/"))
                    .expect("client")
                    .get_multiplexed_async_connection()
                    .await
                    .expect("redis must be reachable");
                for key in stored() {
                    let _: () = raw.del(key).await.expect("cleanup");
                }
            }
            Keys::RedisCluster(seeds) => {
                let nodes = seeds.split(',').map(|n| format!("redis://{n}/"));
                let mut raw = ::redis::cluster::ClusterClient::new(nodes)
                    .expect("cluster client")
                    .get_async_connection()
                    .await
                    .expect("the redis cluster must be reachable");
                for key in stored() {
                    let _: () = raw.del(key).await.expect("cleanup");
                }
            }
            #[cfg(feature = "etcd")]
            Keys::Etcd(endpoint) => {
                let mut raw = etcd_client::Client::connect([endpoint], None)
                    .await
                    .expect("etcd must be reachable");
                for key in stored() {
                    raw.delete(format!("{}{key}", crate::common::ETCD_PREFIX), None)
                        .await
                        .expect("cleanup");
                }
            }
        }
    }
}

async fn in_memory() -> Store {
    Store {
        sequencer: instance(ComponentSpec::new("conformance", "sequencer.in-memory")).await,
        keys: Keys::InMemory,
    }
}

async fn redis() -> Store {
    let host = redis_host();
    Store {
        sequencer: instance(
            ComponentSpec::new("conformance", "sequencer.redis")
                .with_metadata("redisHost", host.clone()),
        )
        .await,
        keys: Keys::Redis(host),
    }
}

async fn redis_cluster() -> Store {
    let seeds = crate::common::redis_cluster();
    Store {
        sequencer: instance(
            ComponentSpec::new("conformance", "sequencer.redis")
                .with_metadata("redisHost", seeds.clone())
                .with_metadata("redisType", "cluster"),
        )
        .await,
        keys: Keys::RedisCluster(seeds),
    }
}

async fn mysql() -> Store {
    Store {
        sequencer: instance(
            ComponentSpec::new("conformance", "sequencer.mysql")
                .with_metadata("connectionString", mysql_url())
                .with_metadata("tableName", MYSQL_TABLE),
        )
        .await,
        keys: Keys::Mysql,
    }
}

/// Delete the rows of `keys` from the suite's MySQL table.
async fn mysql_cleanup(keys: &[String]) {
    use mysql_async::prelude::Queryable;
    let dsn = mysql_url();
    // The DSN's `user[:password]@tcp(host:port)/db`, as a URL for the driver.
    let (credentials, rest) = dsn.rsplit_once('@').unwrap_or(("", &dsn));
    let address = rest
        .strip_prefix("tcp(")
        .and_then(|r| r.split_once(')'))
        .map(|(addr, db)| format!("{addr}{}", db.split('?').next().unwrap_or_default()))
        .expect("PLINTH_TEST_MYSQL is user:password@tcp(host:port)/db");
    let mut conn = mysql_async::Conn::from_url(format!("mysql://{credentials}@{address}"))
        .await
        .expect("MariaDB/MySQL must be reachable");
    for key in keys {
        conn.exec_drop(
            format!("DELETE FROM {MYSQL_TABLE} WHERE sequencer_key = ?"),
            (key,),
        )
        .await
        .expect("cleanup");
    }
    conn.disconnect().await.expect("disconnect");
}

async fn postgresql() -> Store {
    Store {
        sequencer: instance(
            ComponentSpec::new("conformance", "sequencer.postgresql")
                .with_metadata("connectionString", postgres_url())
                .with_metadata("tableName", POSTGRES_TABLE),
        )
        .await,
        keys: Keys::Postgres,
    }
}

#[cfg(feature = "etcd")]
async fn etcd() -> Store {
    let endpoint = crate::common::etcd_endpoint();
    Store {
        sequencer: instance(
            ComponentSpec::new("conformance", "sequencer.etcd")
                .with_metadata("endpoints", endpoint.clone())
                .with_metadata("keyPrefixPath", crate::common::ETCD_PREFIX),
        )
        .await,
        keys: Keys::Etcd(endpoint),
    }
}

async fn instance(spec: ComponentSpec) -> Arc<dyn Sequencer> {
    match build(spec).await {
        Instance::Sequencer(sequencer) => sequencer,
        other => panic!("not a sequencer: {}", other.kind()),
    }
}

async fn next(sequencer: &dyn Sequencer, key: &str) -> i64 {
    sequencer.next_id(key).await.expect("next_id")
}

/// Reserve `size` ids, checking the range has exactly that many. Every sequencer of this
/// crate reserves ranges (WEAK segments), so a store answering `None` fails the suite.
async fn reserve(sequencer: &dyn Sequencer, key: &str, size: u32) -> (i64, i64) {
    let (from, to) = sequencer
        .reserve(key, size)
        .await
        .expect("reserve")
        .unwrap_or_else(|| panic!("{key}: the store reserves no ranges"));
    assert_eq!(to - from + 1, i64::from(size), "{key}: {from}..={to}");
    (from, to)
}

async fn unique_under_concurrency(store: &Store, p: &str) {
    let key = format!("{p}k");
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let sequencer = Arc::clone(&store.sequencer);
            let key = key.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..20 {
                    // Odd tasks mix in segments of varying size.
                    if t % 2 == 1 && i % 3 == 0 {
                        let (from, to) = reserve(sequencer.as_ref(), &key, i + 1).await;
                        ids.extend(from..=to);
                        continue;
                    }
                    ids.push(next(sequencer.as_ref(), &key).await);
                }
                ids
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an id was issued twice");
    assert!(all.iter().all(|id| *id > 0), "ids are positive");
    // Every store of this crate is a counter: a fresh key's ids are exactly 1..=n, none
    // skipped.
    let max = all.iter().copied().max().expect("ids");
    assert_eq!(max, all.len() as i64, "ids were skipped");
    // Every id issued afterwards is above all of them.
    assert!(next(store.sequencer.as_ref(), &key).await > max);
    store.cleanup(&[key]).await;
}

async fn monotonic(store: &Store, p: &str) {
    let sequencer = store.sequencer.as_ref();
    let key = format!("{p}k");
    let mut last = next(sequencer, &key).await;
    assert!(last > 0, "the first id is positive: {last}");
    for _ in 0..50 {
        let id = next(sequencer, &key).await;
        assert!(id > last, "{id} after {last}");
        last = id;
    }
    // A segment lies above every earlier id, and later ids above the segment.
    let (from, to) = reserve(sequencer, &key, 10).await;
    assert!(from > last, "segment {from}..={to} after {last}");
    last = to;
    let id = next(sequencer, &key).await;
    assert!(id > last, "{id} after {last}");
    store.cleanup(&[key]).await;
}

async fn keys_are_independent(store: &Store, p: &str) {
    let sequencer = store.sequencer.as_ref();
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    for _ in 0..10 {
        next(sequencer, &a).await;
    }
    sequencer.ensure_floor(&a, 1_000).await.expect("floor");
    // Neither ids nor floors of `a` move `b`.
    let first_b = next(sequencer, &b).await;
    assert!(first_b > 0 && first_b < 10, "{b} started at {first_b}");
    store.cleanup(&[a, b]).await;
}

async fn floor(store: &Store, p: &str) {
    let sequencer = store.sequencer.as_ref();

    // On a fresh key, the next id is above the floor.
    let fresh = format!("{p}fresh");
    sequencer.ensure_floor(&fresh, 100).await.expect("floor");
    let id = next(sequencer, &fresh).await;
    assert!(id > 100, "{id} after a floor of 100");
    // Applying it again (the building block does, once per process) changes nothing.
    sequencer.ensure_floor(&fresh, 100).await.expect("floor");
    let again = next(sequencer, &fresh).await;
    assert!(again > id, "{again} after {id}");

    // A floor below what was issued never moves the key back.
    let used = format!("{p}used");
    let mut last = 0;
    for _ in 0..20 {
        last = next(sequencer, &used).await;
    }
    sequencer.ensure_floor(&used, 1).await.expect("floor");
    let id = next(sequencer, &used).await;
    assert!(id > last, "{id} after {last} and a lower floor");

    // A floor above what was issued lifts both single ids and segments.
    sequencer.ensure_floor(&used, 5_000).await.expect("floor");
    let id = next(sequencer, &used).await;
    assert!(id > 5_000, "{id} after a floor of 5000");
    sequencer.ensure_floor(&used, 10_000).await.expect("floor");
    let (from, to) = reserve(sequencer, &used, 5).await;
    assert!(
        from > 10_000,
        "segment {from}..={to} after a floor of 10000"
    );
    store.cleanup(&[fresh, used]).await;
}

macro_rules! conformance {
    ($store:ident: $($case:ident),* $(,)?) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let store = super::$store().await;
                    super::$case(&store, &crate::common::prefix()).await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($store:ident),*) => {
        $(
            conformance!($store:
                unique_under_concurrency,
                monotonic,
                keys_are_independent,
                floor,
            );
        )*
    };
}

suite!(in_memory, redis, redis_cluster, mysql, postgresql);
#[cfg(feature = "etcd")]
suite!(etcd);
