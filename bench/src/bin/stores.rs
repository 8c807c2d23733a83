//! `bench-stores`: Plinth with real backends against direct clients.
//!
//! Each scenario calls Plinth's Layotto gRPC API (the same generated tonic client as
//! `bench-core`) with a real backend behind it, and, as the baseline in the same run, a
//! client in this process that sends the backend the same commands Plinth sends:
//!
//! - Redis GetState / SaveState (`state.redis`): the atomic `HMGET data version` + `PTTL`
//!   pipeline and the component's own set script through `redis::Script` (EVALSHA), over a
//!   `ConnectionManager` configured as the component's;
//! - PostgreSQL GetState / SaveState (`state.postgresql`): the component's SELECT and upsert
//!   through tokio-postgres pooled by deadpool-postgres, the driver and pool Plinth uses,
//!   with the same pool size;
//! - TryLock + Unlock (`lock.redis`): `SET NX PX` and the component's unlock script;
//! - GetNextId STRONG (`sequencer.redis`): `INCR` on the same key.
//!
//! The Lua scripts are read from the components' source at build time, so the baseline runs
//! exactly Plinth's scripts; the SQL is checked against the component's source at startup.
//!
//! Every key lives under a per-invocation uuid prefix and is deleted at the end; the
//! PostgreSQL tables are bench-only and dropped at the end. The benchmark refuses to start
//! when a backend it needs does not answer.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use plinth_bench::load::Load;
use plinth_bench::report::{self, Check, DirectExtra};
use plinth_bench::stats::{self, Comparison, Measurement, Side};
use plinth_bench::{
    Candidate, CommonArgs, Phase, Proc, ProcessSeries, Report, RunConfig, Session, Sut, SutSpec,
    pin,
};
use plinth_proto::runtime::v1::runtime_client::RuntimeClient;
use plinth_proto::runtime::v1::sequencer_options::AutoIncrement;
use plinth_proto::runtime::v1::unlock_response::Status as UnlockStatus;
use plinth_proto::runtime::v1::{
    GetNextIdRequest, GetStateRequest, SaveStateRequest, SequencerOptions, StateItem,
    TryLockRequest, UnlockRequest,
};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use tonic::transport::Channel;
use uuid::Uuid;

/// Plinth's p50 at most this many times the direct client's, at both open-loop rates.
const TARGET_P50_RATIO: f64 = 1.5;
/// Plinth's p99 at most this many times the direct client's, at both open-loop rates.
const TARGET_P99_RATIO: f64 = 2.0;
/// Lock and sequencer closed-loop throughput at least this many times the direct client's.
const TARGET_LOCK_SEQ_THROUGHPUT: f64 = 0.5;

/// Label of the baseline: a client in the benchmark process talking to the backend.
const DIRECT: &str = "direct";

/// Component names in the generated resources.
const REDIS_STATE: &str = "redis-state";
const PG_STATE: &str = "pg-state";
const REDIS_LOCK: &str = "redis-lock";
const REDIS_SEQUENCER: &str = "redis-sequencer";

/// Lock expiry (TryLock's `expire` is in seconds; the component sends `PX` milliseconds).
const LOCK_EXPIRE_SECS: i32 = 10;

/// The components' sources: the baseline takes their Lua scripts from here, so it runs
/// byte for byte the scripts Plinth loads, and checks its SQL against them.
const STATE_REDIS_SRC: &str =
    include_str!("../../../crates/plinth-components/src/state/redis/mod.rs");
const LOCK_REDIS_SRC: &str =
    include_str!("../../../crates/plinth-components/src/lock/redis/mod.rs");
const LOCK_REDIS_CONFIG_SRC: &str =
    include_str!("../../../crates/plinth-components/src/lock/redis/config.rs");
const SEQUENCER_REDIS_SRC: &str =
    include_str!("../../../crates/plinth-components/src/sequencer/redis/mod.rs");
const SEQUENCER_REDIS_CONFIG_SRC: &str =
    include_str!("../../../crates/plinth-components/src/sequencer/redis/config.rs");
const STATE_POSTGRES_SRC: &str =
    include_str!("../../../crates/plinth-components/src/state/postgres/mod.rs");

/// `state.postgresql`'s condition for a live row (its `LIVE`).
const PG_LIVE: &str = "(expires_at IS NULL OR expires_at > now())";

/// Plinth with real backends against direct clients.
#[derive(Debug, Parser)]
#[command(name = "bench-stores", args_override_self = true)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::ALL)]
    scenarios: Vec<Scenario>,
    /// State value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Redis `host:port`.
    #[arg(long, env = "REDIS_HOST", default_value = "127.0.0.1:6379")]
    redis_host: String,
    /// PostgreSQL connection string (key=value or URL).
    #[arg(
        long,
        env = "PLINTH_TEST_POSTGRES",
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    )]
    postgres: String,
    /// Connections in the PostgreSQL pool, Plinth's (`maxConns`) and the direct client's.
    #[arg(long, default_value_t = 10)]
    pg_max_conns: usize,
    /// Result name (`<results-dir>/<name>.json`).
    #[arg(long, default_value = "stores")]
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    RedisGet,
    RedisSave,
    PgGet,
    PgSave,
    Lock,
    Sequencer,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::RedisGet,
        Scenario::RedisSave,
        Scenario::PgGet,
        Scenario::PgSave,
        Scenario::Lock,
        Scenario::Sequencer,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::RedisGet => "Redis GetState",
            Scenario::RedisSave => "Redis SaveState",
            Scenario::PgGet => "PostgreSQL GetState",
            Scenario::PgSave => "PostgreSQL SaveState",
            Scenario::Lock => "TryLock+Unlock",
            Scenario::Sequencer => "GetNextId STRONG",
        }
    }

    /// State scenarios run open loop at both rates and closed loop; lock and sequencer
    /// closed loop only.
    fn is_state(self) -> bool {
        matches!(
            self,
            Scenario::RedisGet | Scenario::RedisSave | Scenario::PgGet | Scenario::PgSave
        )
    }

    fn needs_postgres(self) -> bool {
        matches!(self, Scenario::PgGet | Scenario::PgSave)
    }

    fn needs_redis(self) -> bool {
        !self.needs_postgres()
    }
}

/// The configuration as run, recorded in the JSON result.
#[derive(Debug, Clone, Serialize)]
struct Config {
    #[serde(flatten)]
    run: RunConfig,
    scenarios: Vec<Scenario>,
    value_size: usize,
    redis_host: String,
    pg_max_conns: usize,
    /// Prefix of every key this invocation wrote.
    key_prefix: String,
    /// The bench-only PostgreSQL tables (state, metadata).
    pg_tables: (String, String),
}

/// Names shared by both sides and by the cleanup.
#[derive(Debug, Clone)]
struct Names {
    /// `bench-<uuid>`: every key starts with it (after the component's own prefix).
    prefix: String,
    /// Bench-only state table.
    table: String,
    /// Bench-only metadata table.
    meta_table: String,
}

impl Names {
    fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!("bench-{id}"),
            table: format!("plinth_bench_{id}"),
            meta_table: format!("plinth_bench_meta_{id}"),
        }
    }

    fn get_key(&self) -> String {
        format!("{}-get", self.prefix)
    }

    fn save_key(&self) -> String {
        format!("{}-save", self.prefix)
    }

    fn seq_key(&self) -> String {
        format!("{}-seq", self.prefix)
    }

    fn lock_resource(&self, n: u64) -> String {
        format!("{}-lock-{n}", self.prefix)
    }
}

/// Checks that the components still read and write the way the direct client does: the
/// state read pipeline, the lock and sequencer key layouts (their defaults) and INCR.
fn check_redis_layouts() -> anyhow::Result<()> {
    for (component, src, fragment) in [
        (
            "state.redis",
            STATE_REDIS_SRC,
            "::redis::pipe()\n                    .atomic()\n                    .hmget(&key, &[DATA, VERSION])\n                    .pttl(&key)",
        ),
        (
            "state.redis",
            STATE_REDIS_SRC,
            "const DATA: &str = \"data\";",
        ),
        (
            "state.redis",
            STATE_REDIS_SRC,
            "const VERSION: &str = \"version\";",
        ),
        (
            "state.redis",
            STATE_REDIS_SRC,
            ".arg(&write.etag)\n                    .arg(write.first_write_arg())\n                    .arg(data.as_ref())\n                    .arg(ttl);",
        ),
        (
            "lock.redis",
            LOCK_REDIS_CONFIG_SRC,
            "KeyLayout::Dapr,\n            &[(\"dapr\", KeyLayout::Dapr)",
        ),
        (
            "lock.redis",
            LOCK_REDIS_CONFIG_SRC,
            "KeyLayout::Dapr => format!(\"lock||{key}\"),",
        ),
        (
            "lock.redis",
            LOCK_REDIS_SRC,
            ".arg(\"NX\")\n                    .arg(\"PX\")",
        ),
        (
            "sequencer.redis",
            SEQUENCER_REDIS_CONFIG_SRC,
            "KeyLayout::Layotto,\n            &[(\"layotto\", KeyLayout::Layotto)",
        ),
        (
            "sequencer.redis",
            SEQUENCER_REDIS_CONFIG_SRC,
            "KeyLayout::Layotto => format!(\"sequencer|||{key}\"),",
        ),
        (
            "sequencer.redis",
            SEQUENCER_REDIS_SRC,
            "::redis::cmd(\"INCR\").arg(&key)",
        ),
    ] {
        ensure!(
            src.contains(fragment),
            "{component} no longer contains {fragment:?}: update bench-stores' direct client to match"
        );
    }
    Ok(())
}

/// `lock.redis`'s key under its default `keyLayout: dapr` (the store uses `keyPrefix: none`).
fn lock_redis_key(resource: &str) -> String {
    format!("lock||{resource}")
}

/// `sequencer.redis`'s key under its default `keyLayout: layotto`.
fn sequencer_redis_key(key: &str) -> String {
    format!("sequencer|||{key}")
}

/// The text of `const <name>: &str = r#"..."#;` in a component's source.
fn lua_const(src: &'static str, name: &str) -> anyhow::Result<&'static str> {
    let open = format!("const {name}: &str = r#\"");
    let from = src
        .find(&open)
        .with_context(|| format!("{name} not found in the component source"))?
        + open.len();
    let len = src[from..]
        .find("\"#;")
        .with_context(|| format!("{name} is not terminated in the component source"))?;
    Ok(&src[from..from + len])
}

/// The SQL `state.postgresql` sends for GetState and for SaveState without ETag or TTL.
#[derive(Debug)]
struct PgSql {
    get: String,
    set: String,
}

impl PgSql {
    /// The statements for `table`, after checking that the component still builds them
    /// this way.
    fn new(table: &str) -> anyhow::Result<Self> {
        for fragment in [
            "const LIVE: &str = \"(expires_at IS NULL OR expires_at > now())\";",
            "\"SELECT value, etag, expires_at FROM {} WHERE key = $1 AND {LIVE}\"",
            "let expires = \"now() + $4::float8 * interval '1 second'\";",
            "\"INSERT INTO {table} AS t (key, value, etag, expires_at)\n                     VALUES ($1, $2, $3, {expires})\n                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,\n                       etag = EXCLUDED.etag, updated_at = now(),\n                       expires_at = EXCLUDED.expires_at{only_expired}\"",
            "client.execute(&stmt, &[&req.key, &value, &etag, &ttl]).await",
            "let stmt = conn.prepare_cached(&sql).await.map_err(pg_error)?;",
        ] {
            ensure!(
                STATE_POSTGRES_SRC.contains(fragment),
                "state.postgresql no longer contains {fragment:?}: update bench-stores' SQL to match"
            );
        }
        let expires = "now() + $4::float8 * interval '1 second'";
        Ok(Self {
            get: format!(
                "SELECT value, etag, expires_at FROM {table} WHERE key = $1 AND {PG_LIVE}"
            ),
            set: format!(
                "INSERT INTO {table} AS t (key, value, etag, expires_at)
                     VALUES ($1, $2, $3, {expires})
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
                       etag = EXCLUDED.etag, updated_at = now(),
                       expires_at = EXCLUDED.expires_at"
            ),
        })
    }
}

/// Everything a call needs, shared by every call of a run.
#[derive(Debug)]
struct Ctx {
    names: Names,
    value: Bytes,
    set_script: Script,
    unlock_script: Script,
    sql: PgSql,
    /// Lock resources are numbered so that every TryLock finds its resource free.
    next_lock: AtomicU64,
    owner: String,
}

/// The client one side calls.
#[derive(Clone)]
enum Client {
    Plinth(RuntimeClient<Channel>),
    Direct {
        redis: Option<ConnectionManager>,
        pg: Option<Pool>,
    },
}

impl Client {
    fn redis(&self) -> anyhow::Result<ConnectionManager> {
        match self {
            Client::Direct { redis: Some(c), .. } => Ok(c.clone()),
            _ => bail!("no direct Redis client"),
        }
    }

    fn pg(&self) -> anyhow::Result<&Pool> {
        match self {
            Client::Direct { pg: Some(p), .. } => Ok(p),
            _ => bail!("no direct PostgreSQL pool"),
        }
    }
}

/// The store the Plinth side of a state scenario calls.
fn store_of(scenario: Scenario) -> &'static str {
    if scenario.needs_postgres() {
        PG_STATE
    } else {
        REDIS_STATE
    }
}

/// One call of `scenario` through `client`.
async fn call(ctx: Arc<Ctx>, client: Client, scenario: Scenario) -> anyhow::Result<()> {
    match client {
        Client::Plinth(mut c) => match scenario {
            Scenario::RedisGet | Scenario::PgGet => {
                let got = c
                    .get_state(GetStateRequest {
                        store_name: store_of(scenario).into(),
                        key: ctx.names.get_key(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .data
                    .len();
                ensure!(got == ctx.value.len(), "GetState returned {got} bytes");
            }
            Scenario::RedisSave | Scenario::PgSave => {
                c.save_state(save_request(
                    store_of(scenario),
                    &ctx.names.save_key(),
                    &ctx.value,
                ))
                .await?;
            }
            Scenario::Lock => {
                let resource = ctx
                    .names
                    .lock_resource(ctx.next_lock.fetch_add(1, Ordering::Relaxed));
                let taken = c
                    .try_lock(TryLockRequest {
                        store_name: REDIS_LOCK.into(),
                        resource_id: resource.clone(),
                        lock_owner: ctx.owner.clone(),
                        expire: LOCK_EXPIRE_SECS,
                    })
                    .await?
                    .into_inner()
                    .success;
                ensure!(taken, "TryLock of a free resource failed");
                let status = c
                    .unlock(UnlockRequest {
                        store_name: REDIS_LOCK.into(),
                        resource_id: resource,
                        lock_owner: ctx.owner.clone(),
                    })
                    .await?
                    .into_inner()
                    .status;
                ensure!(
                    status == UnlockStatus::Success as i32,
                    "Unlock answered status {status}"
                );
            }
            Scenario::Sequencer => {
                let id = c
                    .get_next_id(next_id_request(&ctx.names.seq_key()))
                    .await?
                    .into_inner()
                    .next_id;
                ensure!(id > 0, "GetNextId answered {id}");
            }
        },
        direct @ Client::Direct { .. } => match scenario {
            Scenario::RedisGet => {
                let data = redis_get(direct.redis()?, &ctx.names.get_key()).await?;
                let got = data.map_or(0, |d| d.len());
                ensure!(got == ctx.value.len(), "HMGET returned {got} bytes");
            }
            Scenario::RedisSave => {
                let version = redis_set(
                    &ctx.set_script,
                    direct.redis()?,
                    &ctx.names.save_key(),
                    &ctx.value,
                )
                .await?;
                ensure!(version > 0, "the set script answered {version}");
            }
            Scenario::PgGet => {
                let data = pg_get(direct.pg()?, &ctx.sql, &ctx.names.get_key()).await?;
                let got = data.map_or(0, |d| d.len());
                ensure!(got == ctx.value.len(), "SELECT returned {got} bytes");
            }
            Scenario::PgSave => {
                pg_set(direct.pg()?, &ctx.sql, &ctx.names.save_key(), &ctx.value).await?;
            }
            Scenario::Lock => {
                let key = lock_redis_key(
                    &ctx.names
                        .lock_resource(ctx.next_lock.fetch_add(1, Ordering::Relaxed)),
                );
                let mut c = direct.redis()?;
                let taken: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&ctx.owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(i64::from(LOCK_EXPIRE_SECS) * 1000)
                    .query_async(&mut c)
                    .await?;
                ensure!(taken.is_some(), "SET NX of a free resource failed");
                let code: i64 = ctx
                    .unlock_script
                    .key(&key)
                    .arg(&ctx.owner)
                    .invoke_async(&mut c)
                    .await?;
                ensure!(code == 1, "the unlock script answered {code}");
            }
            Scenario::Sequencer => {
                let mut c = direct.redis()?;
                let id: i64 = redis::cmd("INCR")
                    .arg(sequencer_redis_key(&ctx.names.seq_key()))
                    .query_async(&mut c)
                    .await?;
                ensure!(id > 0, "INCR answered {id}");
            }
        },
    }
    Ok(())
}

/// `state.redis`'s read: `MULTI`, `HMGET key data version`, `PTTL key`, `EXEC`.
async fn redis_get(mut c: ConnectionManager, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let ((data, _version), _pttl): ((Option<Vec<u8>>, Option<String>), i64) = redis::pipe()
        .atomic()
        .hmget(key, &["data", "version"])
        .pttl(key)
        .query_async(&mut c)
        .await?;
    Ok(data)
}

/// `state.redis`'s write without ETag, first-write or TTL: its set script (EVALSHA).
async fn redis_set(
    script: &Script,
    mut c: ConnectionManager,
    key: &str,
    value: &[u8],
) -> anyhow::Result<i64> {
    let mut invocation = script.key(key);
    invocation.arg("").arg("0").arg(value).arg("");
    Ok(invocation.invoke_async(&mut c).await?)
}

/// `state.postgresql`'s read (value, etag and expiry decoded as the component does).
async fn pg_get(pool: &Pool, sql: &PgSql, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let conn = pool.get().await?;
    // Prepared once per pooled connection, as the component does.
    let stmt = conn.prepare_cached(&sql.get).await?;
    let row = conn.query_opt(&stmt, &[&key]).await?;
    Ok(row.map(|row| {
        let _etag: Uuid = row.get(1);
        let _expires: Option<SystemTime> = row.get(2);
        row.get(0)
    }))
}

/// `state.postgresql`'s upsert without ETag or TTL, with a fresh ETag.
async fn pg_set(pool: &Pool, sql: &PgSql, key: &str, value: &[u8]) -> anyhow::Result<()> {
    let conn = pool.get().await?;
    let ttl: Option<f64> = None;
    let stmt = conn.prepare_cached(&sql.set).await?;
    let rows = conn
        .execute(&stmt, &[&key, &value, &Uuid::new_v4(), &ttl])
        .await?;
    ensure!(rows == 1, "the upsert changed {rows} rows");
    Ok(())
}

fn save_request(store: &str, key: &str, value: &[u8]) -> SaveStateRequest {
    SaveStateRequest {
        store_name: store.to_owned(),
        states: vec![StateItem {
            key: key.to_owned(),
            value: value.to_vec(),
            ..Default::default()
        }],
    }
}

fn next_id_request(key: &str) -> GetNextIdRequest {
    GetNextIdRequest {
        store_name: REDIS_SEQUENCER.into(),
        key: key.to_owned(),
        options: Some(SequencerOptions {
            increment: AutoIncrement::Strong as i32,
        }),
        metadata: Default::default(),
    }
}

/// Connects to Redis as `state.redis` does: one `ConnectionManager` with the component's
/// default timeouts.
async fn connect_redis(host: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(format!("redis://{host}/"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let mut c = tokio::time::timeout(
        Duration::from_secs(5),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .context("no connection within 5 s")??;
    let _: String = redis::cmd("PING").query_async(&mut c).await?;
    Ok(c)
}

/// A pool as `state.postgresql` builds it (fast recycling, `max` connections).
fn pg_pool(conn: &str, max: usize) -> anyhow::Result<Pool> {
    let mut config: tokio_postgres::Config = conn
        .parse()
        .context("--postgres is not a valid connection string")?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(max)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(20)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

/// Where the connection string points, without anything secret.
fn pg_where(conn: &str) -> String {
    match conn.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
            format!(
                "host {} port {} db {}",
                hosts.join(","),
                if ports.is_empty() {
                    "5432".to_owned()
                } else {
                    ports.join(",")
                },
                c.get_dbname().unwrap_or("(default)")
            )
        }
        Err(_) => "an unparsable connection string".into(),
    }
}

/// Refuses to go on when a backend the selected scenarios need does not answer.
async fn check_backends(args: &Args) -> anyhow::Result<()> {
    if args.scenarios.iter().any(|s| s.needs_redis()) {
        connect_redis(&args.redis_host).await.map_err(|e| {
            anyhow::anyhow!(
                "Redis is not answering at {} ({e:#}). bench-stores measures Plinth against a real Redis: \
                 start one there (e.g. `redis-server --port 6379 --daemonize yes`), point --redis-host \
                 or REDIS_HOST at one, or leave out the Redis scenarios (--scenarios pg-get,pg-save)",
                args.redis_host
            )
        })?;
    }
    if args.scenarios.iter().any(|s| s.needs_postgres()) {
        let answered = async {
            let pool = pg_pool(&args.postgres, 1)?;
            let conn = tokio::time::timeout(Duration::from_secs(5), pool.get())
                .await
                .context("no connection within 5 s")??;
            conn.simple_query("SELECT 1").await?;
            anyhow::Ok(())
        }
        .await;
        answered.map_err(|e| {
            anyhow::anyhow!(
                "PostgreSQL is not answering at {} ({e:#}). bench-stores measures Plinth against a real \
                 PostgreSQL: start one (user postgres, database test, trust auth on loopback), set \
                 --postgres or PLINTH_TEST_POSTGRES, or leave out the PostgreSQL scenarios \
                 (--scenarios redis-get,redis-save,lock,sequencer)",
                pg_where(&args.postgres)
            )
        })?;
    }
    Ok(())
}

/// Writes one Component resource per store the selected scenarios use into `dir`.
fn write_resources(dir: &Path, args: &Args, names: &Names) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let component = |name: &str, kind: &str, version: &str, metadata: &[(&str, String)]| {
        let mut yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: {version}\n  metadata:\n"
        );
        for (key, value) in metadata {
            // JSON strings are YAML strings: quoting keeps any value a string.
            let value = serde_json::to_string(value).unwrap_or_default();
            yaml.push_str(&format!("  - name: {key}\n    value: {value}\n"));
        }
        yaml
    };
    let redis = || {
        vec![
            ("redisHost", args.redis_host.clone()),
            ("keyPrefix", "none".to_owned()),
        ]
    };
    let mut files = Vec::new();
    let uses = |f: fn(Scenario) -> bool| args.scenarios.iter().any(|s| f(*s));
    if uses(|s| matches!(s, Scenario::RedisGet | Scenario::RedisSave)) {
        files.push((
            REDIS_STATE,
            component(REDIS_STATE, "state.redis", "v1", &redis()),
        ));
    }
    if uses(Scenario::needs_postgres) {
        files.push((
            PG_STATE,
            component(
                PG_STATE,
                "state.postgresql",
                "v2",
                &[
                    ("connectionString", args.postgres.clone()),
                    ("tableName", names.table.clone()),
                    ("metadataTableName", names.meta_table.clone()),
                    ("maxConns", args.pg_max_conns.to_string()),
                    ("keyPrefix", "none".to_owned()),
                ],
            ),
        ));
    }
    if uses(|s| s == Scenario::Lock) {
        files.push((
            REDIS_LOCK,
            component(REDIS_LOCK, "lock.redis", "v1", &redis()),
        ));
    }
    if uses(|s| s == Scenario::Sequencer) {
        files.push((
            REDIS_SEQUENCER,
            component(REDIS_SEQUENCER, "sequencer.redis", "v1", &redis()),
        ));
    }
    for (name, yaml) in files {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Checks before measuring that both sides answer every selected scenario correctly and
/// that they address the same data: what Plinth writes, the direct client reads, and the
/// other way round. Leaves the GetState value stored on both backends.
async fn preflight(
    ctx: &Ctx,
    plinth: &mut RuntimeClient<Channel>,
    direct: &Client,
    scenarios: &[Scenario],
) -> anyhow::Result<()> {
    let names = &ctx.names;
    let value = &ctx.value[..];
    let uses = |s: Scenario| scenarios.contains(&s);
    let reader = plinth.clone();
    let plinth_get = |store: &'static str, key: String| {
        let mut plinth = reader.clone();
        async move {
            anyhow::Ok(
                plinth
                    .get_state(GetStateRequest {
                        store_name: store.into(),
                        key,
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .data,
            )
        }
    };
    if uses(Scenario::RedisGet) || uses(Scenario::RedisSave) {
        plinth
            .save_state(save_request(REDIS_STATE, &names.get_key(), value))
            .await
            .context("Plinth SaveState (state.redis)")?;
        let direct_read = redis_get(direct.redis()?, &names.get_key()).await?;
        ensure!(
            direct_read.as_deref() == Some(value),
            "the direct Redis read does not see the value Plinth saved"
        );
        let version = redis_set(&ctx.set_script, direct.redis()?, &names.save_key(), value)
            .await
            .context("direct set script")?;
        ensure!(version > 0, "the set script answered {version}");
        let via_plinth = plinth_get(REDIS_STATE, names.save_key()).await?;
        ensure!(
            via_plinth == value,
            "Plinth's GetState does not see the value the direct client saved"
        );
    }
    if uses(Scenario::PgGet) || uses(Scenario::PgSave) {
        plinth
            .save_state(save_request(PG_STATE, &names.get_key(), value))
            .await
            .context("Plinth SaveState (state.postgresql)")?;
        let direct_read = pg_get(direct.pg()?, &ctx.sql, &names.get_key()).await?;
        ensure!(
            direct_read.as_deref() == Some(value),
            "the direct PostgreSQL read does not see the value Plinth saved"
        );
        pg_set(direct.pg()?, &ctx.sql, &names.save_key(), value)
            .await
            .context("direct upsert")?;
        let via_plinth = plinth_get(PG_STATE, names.save_key()).await?;
        ensure!(
            via_plinth == value,
            "Plinth's GetState does not see the row the direct client saved"
        );
    }
    if uses(Scenario::Lock) {
        let resource = format!("{}-check", names.prefix);
        let taken = plinth
            .try_lock(TryLockRequest {
                store_name: REDIS_LOCK.into(),
                resource_id: resource.clone(),
                lock_owner: ctx.owner.clone(),
                expire: LOCK_EXPIRE_SECS,
            })
            .await
            .context("Plinth TryLock")?
            .into_inner()
            .success;
        ensure!(taken, "Plinth's TryLock of a free resource failed");
        let mut c = direct.redis()?;
        let holder: Option<String> = redis::cmd("GET")
            .arg(lock_redis_key(&resource))
            .query_async(&mut c)
            .await?;
        ensure!(
            holder.as_deref() == Some(ctx.owner.as_str()),
            "the lock Plinth took is not at {} (found {holder:?})",
            lock_redis_key(&resource)
        );
        let code: i64 = ctx
            .unlock_script
            .key(lock_redis_key(&resource))
            .arg(&ctx.owner)
            .invoke_async(&mut c)
            .await?;
        ensure!(code == 1, "the unlock script answered {code}");
    }
    if uses(Scenario::Sequencer) {
        let id = plinth
            .get_next_id(next_id_request(&names.seq_key()))
            .await
            .context("Plinth GetNextId")?
            .into_inner()
            .next_id;
        let mut c = direct.redis()?;
        let next: i64 = redis::cmd("INCR")
            .arg(sequencer_redis_key(&names.seq_key()))
            .query_async(&mut c)
            .await?;
        ensure!(
            next == id + 1,
            "INCR on {} answered {next} after Plinth's id {id}",
            sequencer_redis_key(&names.seq_key())
        );
    }
    Ok(())
}

/// Deletes every key under the run's prefix and drops the bench-only tables.
async fn cleanup(args: &Args, names: &Names) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    if args.scenarios.iter().any(|s| s.needs_redis()) {
        let deleted = async {
            let mut c = connect_redis(&args.redis_host).await?;
            // Keys carry the component's prefix (`lock||`, `sequencer|||`) before ours.
            let pattern = format!("*{}*", names.prefix);
            let mut keys: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut c)
                    .await?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            for chunk in keys.chunks(500) {
                let _: i64 = redis::cmd("DEL").arg(chunk).query_async(&mut c).await?;
            }
            anyhow::Ok(keys.len())
        }
        .await;
        match deleted {
            Ok(n) => eprintln!("  cleanup: deleted {n} Redis key(s) under {}", names.prefix),
            Err(e) => failures.push(format!("Redis keys under {}: {e:#}", names.prefix)),
        }
    }
    if args.scenarios.iter().any(|s| s.needs_postgres()) {
        let dropped = async {
            let pool = pg_pool(&args.postgres, 1)?;
            let conn = pool.get().await?;
            conn.batch_execute(&format!(
                "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
                names.table, names.meta_table
            ))
            .await?;
            anyhow::Ok(())
        }
        .await;
        match dropped {
            Ok(()) => eprintln!(
                "  cleanup: dropped tables {} and {}",
                names.table, names.meta_table
            ),
            Err(e) => failures.push(format!(
                "tables {} and {}: {e:#}",
                names.table, names.meta_table
            )),
        }
    }
    if !failures.is_empty() {
        bail!("cleanup failed: {}", failures.join("; "));
    }
    Ok(())
}

async fn connect_plinth(addr: std::net::SocketAddr) -> anyhow::Result<RuntimeClient<Channel>> {
    Ok(RuntimeClient::new(
        plinth_bench::sut::grpc_channel(addr).await?,
    ))
}

/// What the runs produce besides the session's measurements.
#[derive(Debug, Default)]
struct RunsOut {
    process: ProcessSeries,
}

/// The load phases of `scenario`.
fn phases_of(scenario: Scenario, cfg: &RunConfig) -> Vec<Phase> {
    let all = cfg.phases();
    if scenario.is_state() {
        all.to_vec()
    } else {
        all.into_iter()
            .filter(|p| matches!(p.load, Load::Closed { .. }))
            .collect()
    }
}

fn run_all(
    args: &Args,
    cfg: &Config,
    names: &Names,
    session: &mut Session,
    plinth_spec: &SutSpec,
) -> anyhow::Result<RunsOut> {
    let run_cfg = &cfg.run;
    let mut out = RunsOut::default();
    let value: Bytes = (0..args.value_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into();
    let ctx = Arc::new(Ctx {
        names: names.clone(),
        value,
        set_script: Script::new(lua_const(STATE_REDIS_SRC, "SET_SCRIPT")?),
        unlock_script: Script::new(lua_const(LOCK_REDIS_SRC, "UNLOCK_SCRIPT")?),
        sql: PgSql::new(&names.table)?,
        next_lock: AtomicU64::new(0),
        owner: format!("{}-owner", names.prefix),
    });
    let needs_redis = args.scenarios.iter().any(|s| s.needs_redis());
    let needs_pg = args.scenarios.iter().any(|s| s.needs_postgres());
    for run in 1..=run_cfg.runs {
        let mut sut = Sut::start(plinth_spec, session.pinning().sut_core())?;
        if run == 1
            && let Ok(cpus) = sut.proc().cpus_allowed()
        {
            eprintln!("  {} pid {} on CPUs {cpus}", sut.label(), sut.pid());
        }
        out.process
            .startup_ms
            .push(Side::Candidate, run, sut.startup_time().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs_f64(run_cfg.settle_secs));
        let kib = sut
            .proc()
            .rss_kib()
            .with_context(|| format!("reading RSS of {}", sut.label()))?;
        out.process
            .idle_rss_kib
            .push(Side::Candidate, run, kib as f64);

        // A fresh runtime per run: dropping it closes every connection, so Plinth can shut
        // down gracefully and the next run starts cold on both sides alike.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let measured = rt.block_on(async {
            let mut plinth = connect_plinth(sut.addr()).await?;
            let direct = Client::Direct {
                redis: match needs_redis {
                    true => Some(connect_redis(&args.redis_host).await?),
                    false => None,
                },
                pg: match needs_pg {
                    true => Some(pg_pool(&args.postgres, args.pg_max_conns)?),
                    false => None,
                },
            };
            preflight(&ctx, &mut plinth, &direct, &args.scenarios)
                .await
                .context("preflight failed")?;
            let plinth = Client::Plinth(plinth);
            for &scenario in &args.scenarios {
                for phase in phases_of(scenario, run_cfg) {
                    for (side, label, client, proc) in [
                        (Side::Baseline, DIRECT, &direct, Proc::Current),
                        (Side::Candidate, sut.label(), &plinth, sut.proc()),
                    ] {
                        let m = session
                            .measure(scenario.name(), side, label, run, proc, phase, || {
                                call(Arc::clone(&ctx), client.clone(), scenario)
                            })
                            .await;
                        eprintln!("{}", report::progress_line(m, run_cfg.runs, 20));
                    }
                    sut.check_alive()?;
                }
            }
            anyhow::Ok(())
        });
        drop(rt);
        sut.stop_or_warn();
        measured?;
    }
    Ok(out)
}

fn comparison(comparisons: &[Comparison], scenario: Scenario, load: Load) -> Option<&Comparison> {
    comparisons
        .iter()
        .find(|c| c.scenario == scenario.name() && c.load == load && c.baseline == DIRECT)
}

fn checks(cfg: &Config, comparisons: &[Comparison]) -> Vec<Check> {
    let run = &cfg.run;
    let mut checks = Vec::new();
    for &scenario in cfg.scenarios.iter().filter(|s| s.is_state()) {
        for load in [run.low_load(), run.high_load()] {
            let c = comparison(comparisons, scenario, load);
            checks.push(Check::of(
                format!("{}: p50 plinth/direct at {}", scenario.name(), load.label()),
                c.and_then(|c| c.p50_ratio.as_ref()),
                report::ratio,
                format!("≤ {TARGET_P50_RATIO:.2}×"),
                |v| v <= TARGET_P50_RATIO,
            ));
            checks.push(Check::of(
                format!("{}: p99 plinth/direct at {}", scenario.name(), load.label()),
                c.and_then(|c| c.p99_ratio.as_ref()),
                report::ratio,
                format!("≤ {TARGET_P99_RATIO:.2}×"),
                |v| v <= TARGET_P99_RATIO,
            ));
        }
    }
    for &scenario in &cfg.scenarios {
        let throughput = Check::throughput(
            scenario.name(),
            "plinth",
            DIRECT,
            run.max_load(),
            comparisons,
            TARGET_LOCK_SEQ_THROUGHPUT,
        );
        checks.push(if scenario.is_state() {
            throughput.informational()
        } else {
            throughput
        });
    }
    checks
}

/// Notes on open-loop cells where even the direct client did not keep up with the offered
/// rate: there the comparison is of two saturated systems, not of Plinth's overhead.
fn saturation_notes(cfg: &Config, measurements: &[Measurement]) -> Vec<String> {
    let mut notes = Vec::new();
    for &scenario in cfg.scenarios.iter().filter(|s| s.is_state()) {
        for load in [cfg.run.low_load(), cfg.run.high_load()] {
            let Load::Open { rate } = load else { continue };
            let direct: Vec<&Measurement> = measurements
                .iter()
                .filter(|m| {
                    m.side == Side::Baseline && m.scenario == scenario.name() && m.load == load
                })
                .collect();
            let short = direct
                .iter()
                .filter(|m| m.dropped > 0 || m.rps < 0.95 * rate as f64)
                .count();
            if short > 0 {
                let best = direct.iter().map(|m| m.rps).fold(0.0, f64::max);
                notes.push(format!(
                    "{}: the direct client itself did not sustain {} in {short} of {} run(s) (best {:.0} rps): \
                     {} is beyond this backend on this machine, so that row compares two saturated clients, \
                     not Plinth's overhead.",
                    scenario.name(),
                    load.label(),
                    direct.len(),
                    best,
                    load.label()
                ));
            }
        }
    }
    notes
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let common = &args.common;
    ensure!(
        common.candidate == Candidate::Plinth,
        "bench-stores compares Plinth with direct clients; --candidate bare does not apply"
    );
    ensure!(!args.scenarios.is_empty(), "no scenarios selected");
    ensure!(args.value_size > 0, "--value-size must be positive");
    ensure!(args.pg_max_conns > 0, "--pg-max-conns must be positive");

    // Before any thread exists: re-exec under taskset if pinning.
    let pinning = pin::pin_generator(!common.no_pin, common.generator_core, common.sut_core);
    check_redis_layouts()?;
    // Refuse to start without the backends.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(check_backends(&args))?;
    let names = Names::new();
    let cfg = Config {
        run: RunConfig::resolve(common)?,
        scenarios: args.scenarios.clone(),
        value_size: args.value_size,
        redis_host: args.redis_host.clone(),
        pg_max_conns: args.pg_max_conns,
        key_prefix: names.prefix.clone(),
        pg_tables: (names.table.clone(), names.meta_table.clone()),
    };
    let run_cfg = &cfg.run;

    let resources: PathBuf = std::env::temp_dir().join(format!("plinth-{}", names.prefix));
    write_resources(&resources, &args, &names)?;
    let plinth_spec = SutSpec::plinth(
        run_cfg.plinth_bin.clone(),
        "grpc",
        [format!("--resources-path={}", resources.display())]
            .into_iter()
            .chain(common.plinth_arg.iter().cloned()),
        common.startup_timeout(),
    );

    let generator_cpus = Proc::Current.cpus_allowed().unwrap_or_default();
    eprintln!(
        "bench-stores: plinth vs {DIRECT} clients, {} run(s), generator on CPUs {generator_cpus}, Plinth on {}, keys under {}",
        run_cfg.runs,
        pinning
            .sut_core()
            .map_or("any core".to_owned(), |c| format!("core {c}")),
        names.prefix,
    );

    let mut session = Session::new(pinning, run_cfg.max_in_flight);
    let outcome = run_all(&args, &cfg, &names, &mut session, &plinth_spec);
    let _ = std::fs::remove_dir_all(&resources);
    let cleaned = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(cleanup(&args, &names));
    let out = outcome?;
    cleaned?;

    let results = session.results();
    let checks = checks(&cfg, &results.comparisons);
    let added = stats::added_latency(&results.measurements);
    let mut notes = vec![
        format!(
            "Baseline `{DIRECT}`: a client in the benchmark process (on the generator's core) sending the \
             backend the commands Plinth sends; its `SUT cpu` column is the benchmark process itself. \
             Redis ({}) and PostgreSQL are machine services and not pinned.",
            args.redis_host
        ),
        "PostgreSQL baseline: tokio-postgres pooled by deadpool-postgres, the driver and pool Plinth's \
         state.postgresql uses, with the same SQL and pool size: the same work through another \
         driver (e.g. sqlx) would measure the driver, not Plinth."
            .to_owned(),
        format!(
            "TryLock+Unlock is one pair per call (two gRPC calls through Plinth; SET NX PX and the unlock \
             script directly), on a fresh resource each time; GetNextId is STRONG (INCR). {}",
            report::plinth_process_note(&out.process),
        ),
    ];
    notes.extend(saturation_notes(&cfg, &results.measurements));

    let extra = DirectExtra {
        process: out.process,
        added,
        checks,
        notes,
    };
    let report = Report::new(
        &args.name,
        DIRECT,
        "plinth",
        cfg,
        generator_cpus,
        pinning,
        results,
        extra,
    );
    report.finish_direct(
        &format!("Plinth with real backends: plinth vs {DIRECT}"),
        &report.config.run,
        pinning,
        "scenario",
        &args.common.results_dir(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_read_from_the_components() {
        let set = lua_const(STATE_REDIS_SRC, "SET_SCRIPT").unwrap();
        assert!(set.contains("HINCRBY") && set.contains("HSET"), "{set}");
        let unlock = lua_const(LOCK_REDIS_SRC, "UNLOCK_SCRIPT").unwrap();
        assert!(unlock.contains("DEL"), "{unlock}");
        assert!(lua_const(STATE_REDIS_SRC, "NO_SUCH_SCRIPT").is_err());
    }

    #[test]
    fn sql_and_key_layouts_match_the_components() {
        let sql = PgSql::new("t").unwrap();
        assert!(
            sql.get
                .starts_with("SELECT value, etag, expires_at FROM t WHERE key = $1")
        );
        check_redis_layouts().unwrap();
        assert_eq!(lock_redis_key("r"), "lock||r");
        assert_eq!(sequencer_redis_key("k"), "sequencer|||k");
    }
}
