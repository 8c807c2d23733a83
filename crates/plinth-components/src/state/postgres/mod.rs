//! `state.postgresql`: a state store in a PostgreSQL table, in Dapr's v2 layout (or v1 under
//! `spec.version: v1`, see `v1.rs`).
//!
//! Data layout (as Dapr's `state.postgresql` v2, so either can read what the other wrote):
//! one table, `<tablePrefix>state` unless `tableName` says otherwise, with `key text` primary
//! key, `value bytea`, `etag uuid`, `created_at`, `updated_at` and `expires_at` (all
//! `timestamp with time zone`), and an index on `expires_at`. It is created on first use.
//! Every write draws a new random UUID as ETag. A row whose `expires_at` has passed reads as
//! absent; a background task deletes such rows every `cleanupInterval`.
//!
//! The driver is tokio-postgres pooled by deadpool-postgres: far fewer dependencies and a
//! shorter build than sqlx, and no compile-time query checking (so no database at build
//! time). Connections are plain TCP or Unix sockets; no TLS stack is compiled in.
//!
//! Queries (`QueryStateAlpha1`, which Dapr's v2 component lacks) are translated to SQL over
//! the JSON in `value`; see `query.rs`.
//!
//! Table names reach SQL text, so they are validated as plain identifiers when the config is
//! read; every value goes through bind parameters.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
// deadpool's GenericClient: like tokio-postgres's, plus `prepare_cached`, so that each
// statement is parsed once per pooled connection instead of on every call.
use deadpool_postgres::{GenericClient, Object};
use plinth_core::component::state::{
    BulkGetItem, Concurrency, DeleteRequest, GetRequest, GetResponse, QueryItem, QueryRequest,
    QueryResponse, SetRequest, StateFeatures, StateStore, TransactionOp,
};
use plinth_core::component::{Component, Instance};
use plinth_core::metadata::{TTL_EXPIRE_TIME, Ttl, parse_ttl};
use plinth_core::{ComponentSpec, Error, Metadata, Result};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::postgres_client::{PgPool, PgSettings, pg_error};
use crate::util::{Background, rfc3339};

pub mod config;
mod query;
#[cfg(test)]
mod tests;
pub mod v1;

pub use config::{Layout, PostgresConfig};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "state.postgresql";

/// The condition a row must meet to exist for readers.
const LIVE: &str = "(expires_at IS NULL OR expires_at > now())";

/// Build a `state.postgresql` store from its metadata; it connects on `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = PostgresConfig::from_spec(spec)?;
    match config.layout {
        Layout::V1 => Ok(Instance::State(v1::instance(config)?)),
        Layout::V2 => Ok(Instance::State(Arc::new(PostgresStateStore::new(config)?))),
    }
}

/// A state store in PostgreSQL with ETags, transactions and TTLs.
pub struct PostgresStateStore {
    config: PostgresConfig,
    pool: PgPool,
    schema: OnceCell<()>,
    cleaner: Background,
}

impl fmt::Debug for PostgresStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStateStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A request's ETag as this store's UUID; anything else cannot be one of its ETags.
fn parse_etag(etag: Option<&str>) -> Result<Option<Uuid>> {
    match etag.filter(|e| !e.is_empty()) {
        None => Ok(None),
        Some(e) => Uuid::parse_str(e)
            .map(Some)
            .map_err(|_| Error::etag_invalid(format!("etag {e:?} is not a UUID"))),
    }
}

/// A page token is the offset of the next result, as this store issued it.
fn parse_token(token: &str) -> Result<i64> {
    token
        .parse::<i64>()
        .ok()
        .filter(|_| token.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            Error::invalid_argument(format!(
                "invalid query: page.token: {token:?} is not a token this store issued"
            ))
        })
}

fn valid_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument("the key is empty"));
    }
    Ok(())
}

/// The TTL of a write in seconds, `None` for no expiry.
fn ttl_seconds(metadata: &Metadata) -> Result<Option<f64>> {
    Ok(match parse_ttl(metadata)? {
        Some(Ttl::After(ttl)) => Some(ttl.as_secs_f64()),
        Some(Ttl::Never) | None => None,
    })
}

fn response(value: Vec<u8>, etag: Uuid, expires_at: Option<DateTime<Utc>>) -> GetResponse {
    let mut metadata = Metadata::new();
    if let Some(at) = expires_at {
        metadata.insert(TTL_EXPIRE_TIME.to_owned(), rfc3339(at));
    }
    GetResponse {
        data: Bytes::from(value),
        etag: Some(etag.to_string()),
        metadata,
        content_type: None,
    }
}

impl PostgresStateStore {
    /// A store for `config`; no connection is made until `init` or the first call.
    pub fn new(config: PostgresConfig) -> Result<Self> {
        let pool = PgPool::new(&PgSettings {
            connection: config.connection.clone(),
            timeout: config.timeout,
            max_conns: config.max_conns,
        })?;
        Ok(Self {
            config,
            pool,
            schema: OnceCell::new(),
            cleaner: Background::default(),
        })
    }

    /// The state table's name, as configured.
    pub fn table(&self) -> &str {
        &self.config.table
    }

    /// A pooled connection, or Unavailable when none can be had in time.
    async fn conn(&self) -> Result<Object> {
        self.pool.conn().await
    }

    /// Run `fut` within the configured timeout.
    async fn timed<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        self.pool.timed(fut).await
    }

    /// Create the tables on first use. The DDL runs under an advisory lock so that several
    /// sidecars starting at once do not race on `CREATE TABLE IF NOT EXISTS`.
    async fn ensure_schema(&self) -> Result<()> {
        self.schema
            .get_or_try_init(|| self.create_schema())
            .await
            .map(|_| ())
    }

    async fn create_schema(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        self.timed(self.create_schema_on(&mut conn)).await
    }

    async fn create_schema_on(&self, conn: &mut Object) -> Result<()> {
        let table = &self.config.table;
        let meta = &self.config.metadata_table;
        let index = format!(
            "{}_expires_at_idx",
            table.rsplit('.').next().unwrap_or(table)
        );
        let tx = conn.transaction().await.map_err(pg_error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("plinth-state-postgresql-{table}")],
        )
        .await
        .map_err(pg_error)?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                key text NOT NULL PRIMARY KEY,
                value bytea NOT NULL,
                etag uuid NOT NULL DEFAULT gen_random_uuid(),
                created_at timestamp with time zone NOT NULL DEFAULT now(),
                updated_at timestamp with time zone,
                expires_at timestamp with time zone
            );"
        ))
        .await
        .map_err(pg_error)?;
        // A table that existed before must be in the v2 layout: Dapr's v1 layout (a `jsonb`
        // value, `isbinary`, `xmin` as ETag) has no `etag` column.
        let (schema, name) = match table.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, table.as_str()),
        };
        let etag_type: Option<String> = tx
            .query_opt(
                "SELECT data_type::text FROM information_schema.columns
                 WHERE table_schema = coalesce($1, current_schema())
                   AND table_name = $2 AND column_name = 'etag'",
                &[&schema.map(str::to_lowercase), &name.to_lowercase()],
            )
            .await
            .map_err(pg_error)?
            .map(|row| row.get(0));
        if etag_type.as_deref() != Some("uuid") {
            return Err(Error::invalid_argument(format!(
                "postgresql: table {table} exists but is not in Dapr's v2 layout (a v1 table?); \
                 use another tableName or tablePrefix, or spec.version: v1"
            )));
        }
        tx.batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);
            CREATE TABLE IF NOT EXISTS {meta} (
                key text NOT NULL PRIMARY KEY,
                value text NOT NULL
            );"
        ))
        .await
        .map_err(pg_error)?;
        if let Some(key) = &self.config.migration_key {
            // Dapr's migration level 1 is this table: recording it keeps Dapr, pointed at the
            // same database, from trying to create the table again.
            tx.execute(
                &format!(
                    "INSERT INTO {meta} (key, value) VALUES ($1, '1') ON CONFLICT (key) DO NOTHING"
                ),
                &[key],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    /// Delete every expired row now; returns how many were deleted.
    pub async fn cleanup_expired(&self) -> Result<u64> {
        self.ensure_schema().await?;
        self.timed(delete_expired(&self.pool, &self.config.table))
            .await
    }

    async fn do_set<C: GenericClient>(&self, client: &C, req: &SetRequest) -> Result<()> {
        valid_key(&req.key)?;
        let want = parse_etag(req.etag.as_deref())?;
        let ttl = ttl_seconds(&req.metadata)?;
        let table = &self.config.table;
        let etag = Uuid::new_v4();
        let value: &[u8] = &req.value;
        let expires = "now() + $4::float8 * interval '1 second'";
        let rows = match want {
            Some(want) => {
                let sql = format!(
                    "UPDATE {table} SET value = $2, etag = $3, updated_at = now(), expires_at = {expires}
                     WHERE key = $1 AND etag = $5 AND {LIVE}"
                );
                let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
                client
                    .execute(&stmt, &[&req.key, &value, &etag, &ttl, &want])
                    .await
            }
            None => {
                // First-write may still replace a row that has expired but not been cleaned.
                let only_expired = if req.options.concurrency == Concurrency::FirstWrite {
                    " WHERE t.expires_at IS NOT NULL AND t.expires_at <= now()"
                } else {
                    ""
                };
                let sql = format!(
                    "INSERT INTO {table} AS t (key, value, etag, expires_at)
                     VALUES ($1, $2, $3, {expires})
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
                       etag = EXCLUDED.etag, updated_at = now(),
                       expires_at = EXCLUDED.expires_at{only_expired}"
                );
                let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
                client.execute(&stmt, &[&req.key, &value, &etag, &ttl]).await
            }
        }
        .map_err(pg_error)?;
        if rows == 1 {
            return Ok(());
        }
        Err(match want {
            Some(want) => Error::etag_mismatch(format!(
                "etag {want:?} does not match the stored etag, or the key does not exist"
            )),
            None => Error::etag_mismatch(
                "first-write concurrency: the key already exists and no etag was given",
            ),
        })
    }

    async fn do_delete<C: GenericClient>(&self, client: &C, req: &DeleteRequest) -> Result<()> {
        valid_key(&req.key)?;
        let want = parse_etag(req.etag.as_deref())?;
        let table = &self.config.table;
        match want {
            Some(want) => {
                let sql = format!("DELETE FROM {table} WHERE key = $1 AND etag = $2 AND {LIVE}");
                let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
                let rows = client
                    .execute(&stmt, &[&req.key, &want])
                    .await
                    .map_err(pg_error)?;
                if rows != 1 {
                    return Err(Error::etag_mismatch(format!(
                        "etag {want:?} does not match the stored etag, or the key does not exist"
                    )));
                }
            }
            None => {
                if req.options.concurrency == Concurrency::FirstWrite {
                    let sql = format!("SELECT 1 FROM {table} WHERE key = $1 AND {LIVE}");
                    let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
                    let live = client
                        .query_opt(&stmt, &[&req.key])
                        .await
                        .map_err(pg_error)?;
                    if live.is_some() {
                        return Err(Error::etag_mismatch(
                            "first-write concurrency: the key exists and no etag was given",
                        ));
                    }
                }
                let sql = format!("DELETE FROM {table} WHERE key = $1");
                let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
                client.execute(&stmt, &[&req.key]).await.map_err(pg_error)?;
            }
        }
        Ok(())
    }

    async fn do_transact(&self, conn: &mut Object, ops: &[TransactionOp]) -> Result<()> {
        let tx = conn.transaction().await.map_err(pg_error)?;
        for (index, op) in ops.iter().enumerate() {
            let done = match op {
                TransactionOp::Upsert(req) => self.do_set(&tx, req).await,
                TransactionOp::Delete(req) => self.do_delete(&tx, req).await,
            };
            // Dropping the transaction rolls it back.
            done.map_err(|err| err.context(format!("operation {index} (key {:?})", op.key())))?;
        }
        tx.commit().await.map_err(pg_error)
    }
}

async fn delete_expired(pool: &PgPool, table: &str) -> Result<u64> {
    let conn = pool.conn().await?;
    let sql = format!("DELETE FROM {table} WHERE expires_at IS NOT NULL AND expires_at <= now()");
    conn.execute(&sql, &[]).await.map_err(pg_error)
}

/// Delete expired rows every `every`, until aborted by `close` or drop.
async fn cleanup_loop(pool: PgPool, table: String, every: Duration, timeout: Duration) {
    let start = tokio::time::Instant::now() + every;
    let mut ticker = tokio::time::interval_at(start, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match tokio::time::timeout(timeout, delete_expired(&pool, &table)).await {
            Ok(Ok(n)) => tracing::debug!(table, deleted = n, "deleted expired state rows"),
            Ok(Err(err)) => tracing::warn!(table, error = %err, "cleanup of expired rows failed"),
            Err(_) => tracing::warn!(table, "cleanup of expired rows timed out"),
        }
    }
}

#[async_trait]
impl Component for PostgresStateStore {
    async fn init(&self) -> Result<()> {
        self.ensure_schema().await?;
        if let Some(every) = self.config.cleanup_interval {
            self.cleaner.start_once(|| {
                cleanup_loop(
                    self.pool.clone(),
                    self.config.table.clone(),
                    every,
                    self.config.timeout,
                )
            });
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.pool.ping().await
    }

    async fn close(&self) {
        self.cleaner.stop();
        self.pool.close();
    }
}

#[async_trait]
impl StateStore for PostgresStateStore {
    fn features(&self) -> StateFeatures {
        StateFeatures {
            etag: true,
            transactional: true,
            ttl: true,
            query: true,
        }
    }

    async fn get(&self, req: GetRequest) -> Result<Option<GetResponse>> {
        valid_key(&req.key)?;
        self.ensure_schema().await?;
        let conn = self.conn().await?;
        self.timed(async {
            let sql = format!(
                "SELECT value, etag, expires_at FROM {} WHERE key = $1 AND {LIVE}",
                self.config.table
            );
            let stmt = conn.prepare_cached(&sql).await.map_err(pg_error)?;
            let row = conn.query_opt(&stmt, &[&req.key]).await.map_err(pg_error)?;
            Ok(row.map(|row| response(row.get(0), row.get(1), row.get(2))))
        })
        .await
    }

    async fn bulk_get(&self, keys: Vec<String>, _metadata: Metadata) -> Result<Vec<BulkGetItem>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        for key in &keys {
            valid_key(key)?;
        }
        self.ensure_schema().await?;
        let conn = self.conn().await?;
        let found: HashMap<String, GetResponse> = self
            .timed(async {
                let sql = format!(
                    "SELECT key, value, etag, expires_at FROM {} WHERE key = ANY($1) AND {LIVE}",
                    self.config.table
                );
                let stmt = conn.prepare_cached(&sql).await.map_err(pg_error)?;
                let rows = conn.query(&stmt, &[&keys]).await.map_err(pg_error)?;
                Ok(rows
                    .into_iter()
                    .map(|row| (row.get(0), response(row.get(1), row.get(2), row.get(3))))
                    .collect())
            })
            .await?;
        Ok(keys
            .into_iter()
            .map(|key| BulkGetItem {
                value: found.get(&key).cloned(),
                key,
                error: None,
            })
            .collect())
    }

    async fn set(&self, req: SetRequest) -> Result<()> {
        self.ensure_schema().await?;
        let conn = self.conn().await?;
        self.timed(async { self.do_set(&conn, &req).await }).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<()> {
        self.ensure_schema().await?;
        let conn = self.conn().await?;
        self.timed(async { self.do_delete(&conn, &req).await })
            .await
    }

    async fn query(&self, req: QueryRequest) -> Result<QueryResponse> {
        let offset = match req.query.page.token.as_deref() {
            None => 0,
            Some(token) => parse_token(token)?,
        };
        self.ensure_schema().await?;
        let sql = query::select(&self.config.table, &req.key_prefix, &req.query, offset);
        let conn = self.conn().await?;
        let rows = self
            .timed(async {
                conn.batch_execute(query::TRY_JSONB)
                    .await
                    .map_err(pg_error)?;
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = sql
                    .params
                    .iter()
                    .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                conn.query(&sql.text, &params).await.map_err(pg_error)
            })
            .await?;
        let limit = req.query.page.limit.map(|l| l.get());
        let more = limit.is_some_and(|l| rows.len() > l);
        let results: Vec<QueryItem> = rows
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .map(|row| {
                let value: Vec<u8> = row.get(1);
                let etag: Uuid = row.get(2);
                QueryItem {
                    key: row.get(0),
                    data: Bytes::from(value),
                    etag: Some(etag.to_string()),
                    error: None,
                }
            })
            .collect();
        let token = more.then(|| {
            (offset.saturating_add(i64::try_from(results.len()).unwrap_or(i64::MAX))).to_string()
        });
        Ok(QueryResponse {
            results,
            token,
            metadata: Metadata::new(),
        })
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.ensure_schema().await?;
        let mut conn = self.conn().await?;
        self.timed(self.do_transact(&mut conn, &ops)).await
    }
}
