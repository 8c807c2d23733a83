//! `state.postgresql` under `spec.version: v1`: Dapr's v1 table layout, so Plinth and a Dapr
//! sidecar running the v1 component can share a table.
//!
//! Data layout (Dapr's v1): one table, `tableName` (default `state`), with `key text`
//! primary key, `value jsonb`, `isbinary boolean`, `insertdate`, `updatedate` and
//! `expiredate` (`timestamp with time zone`), and Dapr's `row_id` identity with a unique
//! index. A value is stored as JSON when it is JSON that `jsonb` gives back byte for byte;
//! any other value (binary, text, or JSON that `jsonb` would reformat) as a base64 JSON
//! string with `isbinary` set, which is how Dapr stores bytes. So every value reads back
//! exactly as written, and Dapr reads Plinth's rows as Plinth reads Dapr's. The ETag is the
//! row's `xmin` (the id of the transaction that last wrote it), as in Dapr's v1. A row whose
//! `expiredate` has passed reads as absent; a background task deletes such rows every
//! `cleanupInterval`.
//!
//! Dapr records its v1 migration level under the key `migrations` of `metadataTableName`;
//! creating the table records level 3 (table, `expiredate`, `row_id`) unless a level is
//! recorded already, so Dapr pointed at the same database does not migrate again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use plinth_core::component::Component;
use plinth_core::component::state::{
    BulkGetItem, Concurrency, DeleteRequest, GetRequest, GetResponse, SetRequest, StateFeatures,
    StateStore, TransactionOp,
};
use plinth_core::metadata::TTL_EXPIRE_TIME;
use plinth_core::{Error, Metadata, Result};
use tokio::sync::OnceCell;
use tokio_postgres::GenericClient;

use super::{PostgresConfig, ttl_seconds, valid_key};
use crate::postgres_client::{PgPool, PgSettings, bare_name, pg_error};
use crate::util::{Background, rfc3339};

/// The condition a row must meet to exist for readers.
const LIVE: &str = "(expiredate IS NULL OR expiredate > now())";
/// Dapr's v1 migrations: the table, `expiredate`, `row_id`.
const MIGRATION_LEVEL: &str = "3";
/// The stored value: JSON as is when `$2` (the value as JSON text, or NULL) survives
/// `jsonb` unchanged, else the bytes `$3` as a base64 JSON string. `v.j` says which.
const VALUE: &str = "CASE WHEN v.j THEN $2::text::jsonb
    ELSE to_jsonb(translate(encode($3::bytea, 'base64'), E'\\n', '')) END";
const JSON_CHECK: &str = "(SELECT coalesce($2::text::jsonb::text = $2::text, false) AS j) AS v";
/// The stored value as the bytes that were written.
const READ_VALUE: &str = "CASE WHEN isbinary THEN decode(value #>> '{}', 'base64')
    ELSE convert_to(value::text, 'UTF8') END";
/// The expiry from `$4`, seconds or NULL.
const EXPIRES: &str = "now() + $4::float8 * interval '1 second'";

/// A state store in Dapr's v1 PostgreSQL layout.
pub struct PostgresV1StateStore {
    config: PostgresConfig,
    pool: PgPool,
    schema: OnceCell<()>,
    cleaner: Background,
}

impl std::fmt::Debug for PostgresV1StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresV1StateStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A request's ETag as an `xmin`; anything else cannot be one of this store's ETags.
fn parse_etag(etag: Option<&str>) -> Result<Option<String>> {
    match etag.filter(|e| !e.is_empty()) {
        None => Ok(None),
        Some(e) => e
            .parse::<u32>()
            .map(|x| Some(x.to_string()))
            .map_err(|_| Error::etag_invalid(format!("etag {e:?} is not a transaction id"))),
    }
}

/// The value as JSON text when `jsonb` may hold it: JSON, without the `\u0000` that
/// `jsonb` refuses.
fn json_text(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    if text.contains("\\u0000") {
        return None;
    }
    // Value, not RawValue: it refuses numbers out of range, which `jsonb` refuses too.
    serde_json::from_str::<serde_json::Value>(text).ok()?;
    Some(text)
}

fn response(value: Vec<u8>, etag: String, expires_at: Option<DateTime<Utc>>) -> GetResponse {
    let mut metadata = Metadata::new();
    if let Some(at) = expires_at {
        metadata.insert(TTL_EXPIRE_TIME.to_owned(), rfc3339(at));
    }
    GetResponse {
        data: Bytes::from(value),
        etag: Some(etag),
        metadata,
        content_type: None,
    }
}

impl PostgresV1StateStore {
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

    async fn ensure_schema(&self) -> Result<()> {
        self.schema
            .get_or_try_init(|| async {
                let mut conn = self.pool.conn().await?;
                self.pool.timed(self.create_schema(&mut conn)).await
            })
            .await
            .map(|_| ())
    }

    async fn create_schema(&self, conn: &mut Object) -> Result<()> {
        let table = &self.config.table;
        let meta = &self.config.metadata_table;
        let tx = conn.transaction().await.map_err(pg_error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("plinth-state-postgresql-{table}")],
        )
        .await
        .map_err(pg_error)?;
        let existed: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[table])
            .await
            .map_err(pg_error)?
            .get(0);
        if existed {
            // A table that existed before must be in the v1 layout, with its later columns.
            let (schema, name) = match table.split_once('.') {
                Some((schema, name)) => (Some(schema), name),
                None => (None, table.as_str()),
            };
            let columns: Vec<String> = tx
                .query(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = coalesce($1, current_schema()) AND table_name = $2",
                    &[&schema.map(str::to_lowercase), &name.to_lowercase()],
                )
                .await
                .map_err(pg_error)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let has = |c: &str| columns.iter().any(|x| x == c);
            if !(has("isbinary") && has("expiredate")) {
                return Err(Error::invalid_argument(format!(
                    "postgresql: table {table} exists but is not in Dapr's v1 layout with \
                     `expiredate` (a v2 table, or a v1 table Dapr has not migrated?); use \
                     another tableName, or the matching spec.version"
                )));
            }
        } else {
            let index = format!("{}_row_id_uidx", bare_name(table));
            tx.batch_execute(&format!(
                "CREATE TABLE {table} (
                    key text NOT NULL PRIMARY KEY,
                    value jsonb NOT NULL,
                    isbinary boolean NOT NULL,
                    insertdate timestamp with time zone NOT NULL DEFAULT now(),
                    updatedate timestamp with time zone NULL,
                    expiredate timestamp with time zone NULL,
                    row_id bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL
                );
                CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} (row_id);"
            ))
            .await
            .map_err(pg_error)?;
        }
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {meta} (
                key text NOT NULL PRIMARY KEY,
                value text NOT NULL
            );"
        ))
        .await
        .map_err(pg_error)?;
        if !existed && let Some(key) = &self.config.migration_key {
            tx.execute(
                &format!(
                    "INSERT INTO {meta} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
                ),
                &[key, &MIGRATION_LEVEL],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    /// Delete every expired row now; returns how many were deleted.
    pub async fn cleanup_expired(&self) -> Result<u64> {
        self.ensure_schema().await?;
        delete_expired(&self.pool, &self.config.table).await
    }

    async fn do_set<C: GenericClient>(&self, client: &C, req: &SetRequest) -> Result<()> {
        valid_key(&req.key)?;
        let want = parse_etag(req.etag.as_deref())?;
        let ttl = ttl_seconds(&req.metadata)?;
        let table = &self.config.table;
        let json = json_text(&req.value);
        let value: &[u8] = &req.value;
        let rows = match &want {
            Some(want) => {
                let sql = format!(
                    "UPDATE {table} SET value = {VALUE}, isbinary = NOT v.j, updatedate = now(),
                       expiredate = {EXPIRES}
                     FROM {JSON_CHECK}
                     WHERE key = $1 AND xmin = $5::text::xid AND {LIVE}"
                );
                client
                    .execute(&sql, &[&req.key, &json, &value, &ttl, want])
                    .await
            }
            None => {
                let only_expired = if req.options.concurrency == Concurrency::FirstWrite {
                    " WHERE t.expiredate IS NOT NULL AND t.expiredate <= now()"
                } else {
                    ""
                };
                let sql = format!(
                    "INSERT INTO {table} AS t (key, value, isbinary, expiredate)
                     SELECT $1, {VALUE}, NOT v.j, {EXPIRES} FROM {JSON_CHECK}
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
                       isbinary = EXCLUDED.isbinary, updatedate = now(),
                       expiredate = EXCLUDED.expiredate{only_expired}"
                );
                client.execute(&sql, &[&req.key, &json, &value, &ttl]).await
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
                let sql = format!(
                    "DELETE FROM {table} WHERE key = $1 AND xmin = $2::text::xid AND {LIVE}"
                );
                let rows = client
                    .execute(&sql, &[&req.key, &want])
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
                    let live = client
                        .query_opt(&sql, &[&req.key])
                        .await
                        .map_err(pg_error)?;
                    if live.is_some() {
                        return Err(Error::etag_mismatch(
                            "first-write concurrency: the key exists and no etag was given",
                        ));
                    }
                }
                let sql = format!("DELETE FROM {table} WHERE key = $1");
                client.execute(&sql, &[&req.key]).await.map_err(pg_error)?;
            }
        }
        Ok(())
    }

    async fn do_transact(&self, conn: &mut Object, ops: &[TransactionOp]) -> Result<()> {
        let tx = conn.transaction().await.map_err(pg_error)?;
        for (index, op) in ops.iter().enumerate() {
            let done = match op {
                TransactionOp::Upsert(req) => self.do_set(&*tx, req).await,
                TransactionOp::Delete(req) => self.do_delete(&*tx, req).await,
            };
            // Dropping the transaction rolls it back.
            done.map_err(|err| err.context(format!("operation {index} (key {:?})", op.key())))?;
        }
        tx.commit().await.map_err(pg_error)
    }
}

async fn delete_expired(pool: &PgPool, table: &str) -> Result<u64> {
    let conn = pool.conn().await?;
    pool.timed(async {
        let sql =
            format!("DELETE FROM {table} WHERE expiredate IS NOT NULL AND expiredate <= now()");
        conn.execute(&sql, &[]).await.map_err(pg_error)
    })
    .await
}

async fn cleanup_loop(pool: PgPool, table: String, every: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match delete_expired(&pool, &table).await {
            Ok(n) => tracing::debug!(table, deleted = n, "deleted expired state rows"),
            Err(err) => tracing::warn!(table, error = %err, "cleanup of expired rows failed"),
        }
    }
}

#[async_trait]
impl Component for PostgresV1StateStore {
    async fn init(&self) -> Result<()> {
        self.ensure_schema().await?;
        if let Some(every) = self.config.cleanup_interval {
            self.cleaner
                .start_once(|| cleanup_loop(self.pool.clone(), self.config.table.clone(), every));
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
impl StateStore for PostgresV1StateStore {
    fn features(&self) -> StateFeatures {
        StateFeatures {
            etag: true,
            transactional: true,
            ttl: true,
            query: false,
        }
    }

    async fn get(&self, req: GetRequest) -> Result<Option<GetResponse>> {
        valid_key(&req.key)?;
        self.ensure_schema().await?;
        let conn = self.pool.conn().await?;
        self.pool
            .timed(async {
                let sql = format!(
                    "SELECT {READ_VALUE}, xmin::text, expiredate FROM {} WHERE key = $1 AND {LIVE}",
                    self.config.table
                );
                let row = conn.query_opt(&sql, &[&req.key]).await.map_err(pg_error)?;
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
        let conn = self.pool.conn().await?;
        let found: HashMap<String, GetResponse> = self
            .pool
            .timed(async {
                let sql = format!(
                    "SELECT key, {READ_VALUE}, xmin::text, expiredate FROM {}
                     WHERE key = ANY($1) AND {LIVE}",
                    self.config.table
                );
                let rows = conn.query(&sql, &[&keys]).await.map_err(pg_error)?;
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
        let conn = self.pool.conn().await?;
        self.pool
            .timed(async { self.do_set(&**conn, &req).await })
            .await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<()> {
        self.ensure_schema().await?;
        let conn = self.pool.conn().await?;
        self.pool
            .timed(async { self.do_delete(&**conn, &req).await })
            .await
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.ensure_schema().await?;
        let mut conn = self.pool.conn().await?;
        self.pool.timed(self.do_transact(&mut conn, &ops)).await
    }
}

/// A v1 store for `config`, as the factory returns it.
pub(super) fn instance(config: PostgresConfig) -> Result<Arc<dyn StateStore>> {
    Ok(Arc::new(PostgresV1StateStore::new(config)?))
}
