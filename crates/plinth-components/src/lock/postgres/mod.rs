//! `lock.postgresql`: leases in a PostgreSQL table. Dapr has no PostgreSQL lock store, so
//! the type name and layout are Plinth's own.
//!
//! Data layout: one table (`tableName`, default `plinth_lock`) with `key text` primary key
//! (the building block's prefixed resource id), `owner text` and `expires_at timestamp with
//! time zone`, created on first use. A row whose `expires_at` has passed is a free lock.
//! Every decision is one statement judged by the database's clock (`now()`), never the
//! sidecar's, so sidecars with skewed clocks agree:
//! - try-lock inserts the row, or takes over an expired one (`ON CONFLICT ... DO UPDATE
//!   ... WHERE expires_at <= now()`); a row was written exactly when the lock was taken;
//! - unlock deletes the row only when the owner matches and it has not expired, and the
//!   same statement tells a lock held by another owner from one that does not exist;
//! - keep-alive likewise moves `expires_at` only for the live owner.
//!
//! Expired rows are overwritten by the next try-lock of the same resource; a background
//! task deletes those left behind every `cleanupInterval` (default 1h; `0` disables it).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plinth_core::component::lock::{LockStatus, LockStore};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};
use tokio::sync::OnceCell;

use crate::postgres_client::{PgPool, create_schema, pg_error};
use crate::util::Background;

mod config;
#[cfg(test)]
mod tests;

use config::Config;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "lock.postgresql";

/// Component metadata: how often expired lock rows are deleted (default 1h); `0` disables.
const CLEANUP_INTERVAL: &str = "cleanupInterval";
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);

/// Build a `lock.postgresql` store; metadata is validated here, the connection made in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    let cleanup = spec
        .duration_or(CLEANUP_INTERVAL, DEFAULT_CLEANUP_INTERVAL)
        .map(|d| Some(d).filter(|d| !d.is_zero()))?;
    Ok(Instance::Lock(Arc::new(PostgresLockStore::new(
        config, cleanup,
    )?)))
}

/// A lock store in PostgreSQL.
pub struct PostgresLockStore {
    pool: PgPool,
    table: String,
    schema: OnceCell<()>,
    cleanup_interval: Option<Duration>,
    cleaner: Background,
}

impl std::fmt::Debug for PostgresLockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLockStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// A lease length in seconds for SQL; at least a millisecond.
fn seconds(expire: Duration) -> Result<f64> {
    if expire.as_millis() == 0 {
        return Err(Error::invalid_argument("the expiry must be positive"));
    }
    Ok(expire.as_secs_f64())
}

fn valid_resource(resource: &str) -> Result<()> {
    if resource.is_empty() {
        return Err(Error::invalid_argument("the resource id is empty"));
    }
    Ok(())
}

fn status(code: i32) -> Result<LockStatus> {
    match code {
        1 => Ok(LockStatus::Success),
        0 => Ok(LockStatus::NotExist),
        -1 => Ok(LockStatus::BelongsToOthers),
        other => Err(Error::internal(format!(
            "unexpected answer {other} from the lock statement"
        ))),
    }
}

impl PostgresLockStore {
    fn new(config: Config, cleanup_interval: Option<Duration>) -> Result<Self> {
        Ok(Self {
            pool: PgPool::new(&config.pg)?,
            table: config.table,
            schema: OnceCell::new(),
            cleanup_interval,
            cleaner: Background::default(),
        })
    }

    async fn ensure_schema(&self) -> Result<()> {
        self.schema
            .get_or_try_init(|| async {
                let table = &self.table;
                create_schema(
                    &self.pool,
                    &format!("plinth-lock-postgresql-{table}"),
                    &format!(
                        "CREATE TABLE IF NOT EXISTS {table} (
                            key text NOT NULL PRIMARY KEY,
                            owner text NOT NULL,
                            expires_at timestamp with time zone NOT NULL
                        )"
                    ),
                )
                .await
            })
            .await
            .map(|_| ())
    }

    /// Run one statement answering a status code.
    async fn status_of(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<LockStatus> {
        self.ensure_schema().await?;
        let conn = self.pool.conn().await?;
        let code: i32 = self
            .pool
            .timed(async {
                let stmt = conn.prepare_cached(sql).await.map_err(pg_error)?;
                let row = conn.query_one(&stmt, params).await.map_err(pg_error)?;
                Ok(row.get(0))
            })
            .await?;
        status(code)
    }

    /// Delete every expired row now; returns how many were deleted.
    pub async fn cleanup_expired(&self) -> Result<u64> {
        self.ensure_schema().await?;
        delete_expired(&self.pool, &self.table).await
    }
}

async fn delete_expired(pool: &PgPool, table: &str) -> Result<u64> {
    let conn = pool.conn().await?;
    pool.timed(async {
        conn.execute(
            &format!("DELETE FROM {table} WHERE expires_at <= now()"),
            &[],
        )
        .await
        .map_err(pg_error)
    })
    .await
}

async fn cleanup_loop(pool: PgPool, table: String, every: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match delete_expired(&pool, &table).await {
            Ok(n) => tracing::debug!(table, deleted = n, "deleted expired lock rows"),
            Err(err) => tracing::warn!(table, error = %err, "cleanup of expired locks failed"),
        }
    }
}

#[async_trait]
impl Component for PostgresLockStore {
    async fn init(&self) -> Result<()> {
        self.ensure_schema().await?;
        if let Some(every) = self.cleanup_interval {
            self.cleaner
                .start_once(|| cleanup_loop(self.pool.clone(), self.table.clone(), every));
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
impl LockStore for PostgresLockStore {
    async fn try_lock(&self, resource: &str, owner: &str, expire: Duration) -> Result<bool> {
        valid_resource(resource)?;
        let secs = seconds(expire)?;
        self.ensure_schema().await?;
        let table = &self.table;
        // ON CONFLICT takes the row lock, so of concurrent callers exactly one writes.
        let sql = format!(
            "INSERT INTO {table} AS l (key, owner, expires_at)
             VALUES ($1, $2, now() + $3::float8 * interval '1 second')
             ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner,
               expires_at = EXCLUDED.expires_at
             WHERE l.expires_at <= now()"
        );
        let conn = self.pool.conn().await?;
        let rows = self
            .pool
            .timed(async {
                // Parsed once per pooled connection.
                let stmt = conn.prepare_cached(&sql).await.map_err(pg_error)?;
                conn.execute(&stmt, &[&resource, &owner, &secs])
                    .await
                    .map_err(pg_error)
            })
            .await?;
        Ok(rows == 1)
    }

    async fn unlock(&self, resource: &str, owner: &str) -> Result<LockStatus> {
        valid_resource(resource)?;
        let table = &self.table;
        // The outer SELECT sees the table as it was before the DELETE, so a live row that
        // was not deleted belongs to someone else.
        let sql = format!(
            "WITH done AS (
               DELETE FROM {table} WHERE key = $1 AND owner = $2 AND expires_at > now()
               RETURNING 1)
             SELECT CASE WHEN EXISTS (SELECT 1 FROM done) THEN 1
               WHEN EXISTS (SELECT 1 FROM {table} WHERE key = $1 AND expires_at > now()) THEN -1
               ELSE 0 END"
        );
        self.status_of(&sql, &[&resource, &owner]).await
    }

    async fn keep_alive(
        &self,
        resource: &str,
        owner: &str,
        expire: Duration,
    ) -> Result<LockStatus> {
        valid_resource(resource)?;
        let secs = seconds(expire)?;
        let table = &self.table;
        let sql = format!(
            "WITH done AS (
               UPDATE {table} SET expires_at = now() + $3::float8 * interval '1 second'
               WHERE key = $1 AND owner = $2 AND expires_at > now()
               RETURNING 1)
             SELECT CASE WHEN EXISTS (SELECT 1 FROM done) THEN 1
               WHEN EXISTS (SELECT 1 FROM {table} WHERE key = $1 AND expires_at > now()) THEN -1
               ELSE 0 END"
        );
        self.status_of(&sql, &[&resource, &owner, &secs]).await
    }
}
