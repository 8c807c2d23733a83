//! `sequencer.postgresql`: per-key counters in a PostgreSQL table. Dapr has no sequencer
//! building block and Layotto's sequencers do not include PostgreSQL, so the layout is
//! Plinth's own.
//!
//! Data layout: one table (`tableName`, default `plinth_sequencer`) with `key text` primary
//! key (the building block's prefixed key) and `last_id bigint`, the last id issued (no row
//! before the first), created on first use. Every operation is one statement, atomic under
//! concurrency from any number of sidecars:
//! - the next id: `INSERT (key, 1) ON CONFLICT DO UPDATE SET last_id = last_id + 1
//!   RETURNING last_id` (STRONG ids);
//! - a segment of `n` ids (WEAK ids, cached by the building block) is the same with `n`,
//!   the range ending at the answer;
//! - a `biggerThan` floor raises `last_id` to the floor when it is below.

use std::sync::Arc;

use async_trait::async_trait;
use plinth_core::component::sequencer::Sequencer;
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};
use tokio::sync::OnceCell;

use crate::postgres_client::{PgPool, create_schema, pg_error};

mod config;
#[cfg(test)]
mod tests;

use config::Config;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "sequencer.postgresql";

/// SQLSTATE numeric_value_out_of_range: a counter at the top of `bigint`.
const OUT_OF_RANGE: &str = "22003";

/// Build a `sequencer.postgresql` store; metadata is validated here, the connection made in
/// `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    Ok(Instance::Sequencer(Arc::new(PostgresSequencer::new(
        config,
    )?)))
}

/// A sequencer in PostgreSQL.
pub struct PostgresSequencer {
    pool: PgPool,
    table: String,
    schema: OnceCell<()>,
}

impl std::fmt::Debug for PostgresSequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSequencer")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl PostgresSequencer {
    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            pool: PgPool::new(&config.pg)?,
            table: config.table,
            schema: OnceCell::new(),
        })
    }

    async fn ensure_schema(&self) -> Result<()> {
        self.schema
            .get_or_try_init(|| async {
                let table = &self.table;
                create_schema(
                    &self.pool,
                    &format!("plinth-sequencer-postgresql-{table}"),
                    &format!(
                        "CREATE TABLE IF NOT EXISTS {table} (
                            key text NOT NULL PRIMARY KEY,
                            last_id bigint NOT NULL
                        )"
                    ),
                )
                .await
            })
            .await
            .map(|_| ())
    }

    /// Advance `key` by `by` and return the new last id.
    async fn advance(&self, key: &str, by: i64) -> Result<i64> {
        if key.is_empty() {
            return Err(Error::invalid_argument("the key is empty"));
        }
        self.ensure_schema().await?;
        let sql = format!(
            "INSERT INTO {} AS s (key, last_id) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET last_id = s.last_id + EXCLUDED.last_id
             RETURNING last_id",
            self.table
        );
        let conn = self.pool.conn().await?;
        self.pool
            .timed(async {
                // Parsed once per pooled connection.
                let stmt = conn.prepare_cached(&sql).await.map_err(pg_error)?;
                match conn.query_one(&stmt, &[&key, &by]).await {
                    Ok(row) => Ok(row.get(0)),
                    Err(e) if e.code().is_some_and(|c| c.code() == OUT_OF_RANGE) => {
                        Err(Error::resource_exhausted(format!(
                            "sequencer key {key:?} cannot advance past the largest 64-bit id"
                        )))
                    }
                    Err(e) => Err(pg_error(e)),
                }
            })
            .await
    }
}

#[async_trait]
impl Component for PostgresSequencer {
    async fn init(&self) -> Result<()> {
        self.ensure_schema().await
    }

    async fn ping(&self) -> Result<()> {
        self.pool.ping().await
    }

    async fn close(&self) {
        self.pool.close();
    }
}

#[async_trait]
impl Sequencer for PostgresSequencer {
    async fn next_id(&self, key: &str) -> Result<i64> {
        self.advance(key, 1).await
    }

    async fn reserve(&self, key: &str, size: u32) -> Result<Option<(i64, i64)>> {
        super::reserve_by_advancing(size, |by| self.advance(key, by)).await
    }

    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid_argument("the key is empty"));
        }
        self.ensure_schema().await?;
        let sql = format!(
            "INSERT INTO {} AS s (key, last_id) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET last_id = EXCLUDED.last_id
             WHERE s.last_id < EXCLUDED.last_id",
            self.table
        );
        let conn = self.pool.conn().await?;
        self.pool
            .timed(async {
                conn.execute(&sql, &[&key, &floor])
                    .await
                    .map_err(pg_error)?;
                Ok(())
            })
            .await
    }
}
