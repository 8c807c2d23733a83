//! Two Plinth processes sharing one backend: lock exclusion holds across them, and neither
//! ever issues an id the other issued, also after one of them restarts (a WEAK segment is
//! never handed out twice).
//!
//! The backends are the machine's Redis (127.0.0.1:6379, `REDIS_HOST` overrides), PostgreSQL
//! (database `test`) and MariaDB (database `test`). Every lock and sequence key is unique to
//! the case; Redis keys are deleted at the end, and the SQL stores work in tables of the
//! case's own, dropped at the end.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use pb::sequencer_options::AutoIncrement;
use plinth_proto::runtime::v1 as pb;
use tonic::transport::Channel;

use crate::backend::redis_host;
use crate::common::{Plinth, scratch, unique, write};

type Client = pb::runtime_client::RuntimeClient<Channel>;

const APP: &str = "cross-process";

/// Where the shared components keep their data, and how a case removes it afterwards.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Redis,
    Postgres,
    Mysql,
}

impl Backend {
    /// The `spec` of `shared-lock` (when the backend has a lock store) and `shared-seq`,
    /// with tables named after `marker`.
    fn specs(self, marker: &str) -> (Option<String>, String) {
        let table = marker.replace('-', "_");
        match self {
            Backend::Redis => {
                let redis = format!(
                    "  metadata:\n    - name: redisHost\n      value: {}\n",
                    redis_host()
                );
                (
                    Some(format!("  type: lock.redis\n  version: v1\n{redis}")),
                    format!("  type: sequencer.redis\n  version: v1\n{redis}"),
                )
            }
            Backend::Postgres => {
                let spec = |kind: &str, table: &str| {
                    format!(
                        "  type: {kind}.postgresql\n  version: v1\n  metadata:\n    - name: connectionString\n      value: {}\n    - name: tableName\n      value: {table}\n",
                        postgres_url()
                    )
                };
                (
                    Some(spec("lock", &format!("{table}_lock"))),
                    spec("sequencer", &format!("{table}_seq")),
                )
            }
            Backend::Mysql => (
                None,
                format!(
                    "  type: sequencer.mysql\n  version: v1\n  metadata:\n    - name: connectionString\n      value: {}\n    - name: tableName\n      value: {table}_seq\n",
                    mysql_url()
                ),
            ),
        }
    }

    /// Remove what the case left: Redis keys containing `marker`, or the case's tables.
    async fn cleanup(self, marker: &str) {
        let table = marker.replace('-', "_");
        match self {
            Backend::Redis => delete_redis_keys(marker).await,
            Backend::Postgres => {
                let (client, connection) =
                    tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
                        .await
                        .expect("PostgreSQL must be reachable");
                tokio::spawn(connection);
                client
                    .batch_execute(&format!(
                        "DROP TABLE IF EXISTS {table}_lock; DROP TABLE IF EXISTS {table}_seq"
                    ))
                    .await
                    .expect("drop the case's tables");
            }
            Backend::Mysql => {
                use mysql_async::prelude::Queryable;
                let mut conn = mysql_async::Conn::from_url("mysql://root@127.0.0.1:3306/test")
                    .await
                    .expect("MariaDB must be reachable");
                conn.query_drop(format!("DROP TABLE IF EXISTS {table}_seq"))
                    .await
                    .expect("drop the case's table");
                conn.disconnect().await.expect("disconnect");
            }
        }
    }
}

fn postgres_url() -> String {
    std::env::var("PLINTH_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

fn mysql_url() -> String {
    std::env::var("PLINTH_TEST_MYSQL").unwrap_or_else(|_| "root@tcp(127.0.0.1:3306)/test".into())
}

/// Resources for `shared-lock` and `shared-seq` on `backend`.
fn resources(backend: Backend, marker: &str) -> std::path::PathBuf {
    let dir = scratch("xproc");
    let (lock, seq) = backend.specs(marker);
    let mut yaml = String::new();
    if let Some(lock) = lock {
        yaml.push_str(&format!(
            "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: shared-lock\nspec:\n{lock}"
        ));
    }
    yaml.push_str(&format!(
        "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: shared-seq\nspec:\n{seq}"
    ));
    write(&dir, "resources/components.yaml", &yaml);
    dir
}

async fn start(dir: &Path) -> Plinth {
    Plinth::start_ready_with(
        &["--resources-path", "resources", "--app-id", APP],
        Some(dir),
    )
    .await
}

async fn try_lock(mut c: Client, resource: String, owner: String, expire: i32) -> bool {
    c.try_lock(pb::TryLockRequest {
        store_name: "shared-lock".into(),
        resource_id: resource,
        lock_owner: owner,
        expire,
    })
    .await
    .expect("try lock")
    .into_inner()
    .success
}

async fn unlock(c: &mut Client, resource: &str, owner: &str) -> i32 {
    c.unlock(pb::UnlockRequest {
        store_name: "shared-lock".into(),
        resource_id: resource.into(),
        lock_owner: owner.into(),
    })
    .await
    .expect("unlock")
    .into_inner()
    .status
}

/// `n` ids of `key` from `c`, taken by 8 concurrent callers.
async fn ids(c: &Client, key: &str, mode: AutoIncrement, n: usize) -> Vec<i64> {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let mut c = c.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in (t..n).step_by(8) {
                    let id = c
                        .get_next_id(pb::GetNextIdRequest {
                            store_name: "shared-seq".into(),
                            key: key.clone(),
                            options: Some(pb::SequencerOptions {
                                increment: mode as i32,
                            }),
                            ..Default::default()
                        })
                        .await
                        .expect("get next id")
                        .into_inner()
                        .next_id;
                    got.push(id);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for task in tasks {
        all.extend(task.await.expect("caller"));
    }
    all
}

/// Add `batch` to `seen`, failing on any id seen before.
fn all_new(seen: &mut HashSet<i64>, batch: &[i64], what: &str) {
    for id in batch {
        assert!(seen.insert(*id), "{what}: id {id} was issued twice");
    }
}

async fn delete_redis_keys(marker: &str) {
    let mut c = ::redis::Client::open(format!("redis://{}/", redis_host()))
        .expect("redis client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis must be reachable");
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{marker}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .expect("scan");
        if !keys.is_empty() {
            let _: () = ::redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut c)
                .await
                .expect("delete");
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

async fn lock_exclusion_holds_across_processes(backend: Backend) {
    let marker = unique("xproc");
    let dir = resources(backend, &marker);
    let a = start(&dir).await;
    let b = start(&dir).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let resource = unique("xproc-lock");

    let mut racers = Vec::new();
    for i in 0..20 {
        for (side, c) in [("a", &ca), ("b", &cb)] {
            let owner = format!("{side}-{i}");
            let task = tokio::spawn(try_lock(c.clone(), resource.clone(), owner.clone(), 60));
            racers.push((owner, task));
        }
    }
    let mut winners = Vec::new();
    for (owner, task) in racers {
        if task.await.expect("racer") {
            winners.push(owner);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one owner in both processes: {winners:?}"
    );
    let winner = winners.remove(0);
    let (mut holder, mut other) = if winner.starts_with('a') {
        (ca.clone(), cb.clone())
    } else {
        (cb.clone(), ca.clone())
    };
    // The other process sees it held, cannot release it, and gets it once it is released.
    assert!(!try_lock(other.clone(), resource.clone(), "intruder".into(), 60).await);
    assert_eq!(unlock(&mut other, &resource, "intruder").await, 2);
    assert_eq!(unlock(&mut holder, &resource, &winner).await, 0);
    assert!(try_lock(other.clone(), resource.clone(), "intruder".into(), 1).await);
    // An expired lease frees it for the first process.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !try_lock(holder.clone(), resource.clone(), winner.clone(), 60).await {
        assert!(Instant::now() < deadline, "the 1 s lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(unlock(&mut holder, &resource, &winner).await, 0);
    drop((a, b));
    backend.cleanup(&marker).await;
}

async fn no_id_is_issued_twice_across_processes_and_a_restart(backend: Backend) {
    let marker = unique("xproc");
    let dir = resources(backend, &marker);
    let strong = format!("{marker}-strong");
    let weak = format!("{marker}-weak");
    let mut a = start(&dir).await;
    let b = start(&dir).await;
    let (ca, cb) = (a.client().await, b.client().await);

    // STRONG: both at once, every id once, and together exactly 1..=1000.
    let (from_a, from_b) = tokio::join!(
        ids(&ca, &strong, AutoIncrement::Strong, 500),
        ids(&cb, &strong, AutoIncrement::Strong, 500)
    );
    let mut strong_seen = HashSet::new();
    all_new(&mut strong_seen, &from_a, "STRONG from a");
    all_new(&mut strong_seen, &from_b, "STRONG from b");
    assert_eq!(strong_seen, (1..=1000).collect::<HashSet<i64>>());

    // WEAK: segments of either process never overlap.
    let (weak_a, weak_b) = tokio::join!(
        ids(&ca, &weak, AutoIncrement::Weak, 300),
        ids(&cb, &weak, AutoIncrement::Weak, 300)
    );
    let mut weak_seen = HashSet::new();
    all_new(&mut weak_seen, &weak_a, "WEAK from a");
    all_new(&mut weak_seen, &weak_b, "WEAK from b");
    let old_a_max = weak_a.iter().copied().max().expect("ids");

    // Restart a: the rest of its segment is gone for good, never reissued.
    drop(ca);
    a.terminate();
    assert_eq!(a.wait_exit(Duration::from_secs(30)), Some(0));
    let a = start(&dir).await;
    let ca = a.client().await;
    let (weak_a2, weak_b2) = tokio::join!(
        ids(&ca, &weak, AutoIncrement::Weak, 300),
        ids(&cb, &weak, AutoIncrement::Weak, 300)
    );
    all_new(&mut weak_seen, &weak_a2, "WEAK from a after its restart");
    all_new(&mut weak_seen, &weak_b2, "WEAK from b after a's restart");
    assert!(
        weak_a2.iter().all(|id| *id > old_a_max),
        "the restarted process issued an id from before its restart"
    );
    let strong_after = ids(&ca, &strong, AutoIncrement::Strong, 50).await;
    all_new(&mut strong_seen, &strong_after, "STRONG after the restart");
    assert!(strong_after.iter().all(|id| *id > 1000));

    drop((a, b));
    backend.cleanup(&marker).await;
}

macro_rules! cross_process {
    ($($name:ident: $backend:expr => $($case:ident),*;)*) => {
        $(
            mod $name {
                use super::*;
                $(
                    #[tokio::test]
                    async fn $case() {
                        super::$case($backend).await;
                    }
                )*
            }
        )*
    };
}

// MySQL has a sequencer but no lock store.
cross_process! {
    redis: Backend::Redis => lock_exclusion_holds_across_processes, no_id_is_issued_twice_across_processes_and_a_restart;
    postgresql: Backend::Postgres => lock_exclusion_holds_across_processes, no_id_is_issued_twice_across_processes_and_a_restart;
    mysql: Backend::Mysql => no_id_is_issued_twice_across_processes_and_a_restart;
}
