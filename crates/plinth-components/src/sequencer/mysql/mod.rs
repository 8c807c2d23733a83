//! `sequencer.mysql`: per-key counters in a MySQL or MariaDB table, in Layotto's layout.
//!
//! Data layout (Layotto's `sequencer.mysql`): one table, `tableName` (default
//! `layotto_sequencer`) in the database `dataBaseName`, created when missing, with
//! `sequencer_key varchar(255)` (unique), `sequencer_value` (the last id issued for the key)
//! and `version` (bumped on every change). A key has no row before its first id.
//!
//! Each call is one atomic statement: `INSERT ... ON DUPLICATE KEY UPDATE` adds `size` (1 for
//! a STRONG id, the segment's size for WEAK ones) and hands the new value back through
//! `LAST_INSERT_ID(expr)`, which is per connection, so concurrent callers never see each
//! other's. A `biggerThan` floor raises the value to the floor when it is below.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};
use plinth_core::component::sequencer::Sequencer;
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};
use tokio::sync::OnceCell;

use crate::mysql_client::{MysqlClient, server_code};

mod config;
#[cfg(test)]
mod tests;

use config::Config;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "sequencer.mysql";

/// `sequencer_key` is `varchar(255)`.
const MAX_KEY_CHARS: usize = 255;

/// Build a `sequencer.mysql` store; metadata is validated here, the connection made in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    Ok(Instance::Sequencer(Arc::new(MysqlSequencer::new(config))))
}

/// A sequencer in MySQL.
#[derive(Debug)]
pub struct MysqlSequencer {
    config: Config,
    client: MysqlClient,
    /// Whether the table has Layotto's `version` column, learnt on first use.
    versioned: OnceCell<bool>,
}

fn valid_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument("the key is empty"));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(Error::invalid_argument(format!(
            "the key is longer than {MAX_KEY_CHARS} characters, the most sequencer_key holds"
        )));
    }
    Ok(())
}

impl MysqlSequencer {
    fn new(config: Config) -> Self {
        let client = MysqlClient::new(
            &config.connection,
            config.connection.database.as_deref(),
            config.max_conns,
            config.timeout,
        );
        Self {
            config,
            client,
            versioned: OnceCell::new(),
        }
    }

    /// Create the table on first use; learn whether it has a `version` column (Layotto's
    /// own CREATE TABLE leaves it out, though its statements use it).
    async fn ensure_table(&self) -> Result<bool> {
        self.versioned
            .get_or_try_init(|| async {
                let mut conn = self.client.conn().await?;
                self.client.timed(self.create_table(&mut conn)).await
            })
            .await
            .copied()
    }

    async fn create_table(&self, conn: &mut mysql_async::Conn) -> Result<bool> {
        let c = &self.client;
        let table = &self.config.table;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS `{table}` (
                sequencer_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
                sequencer_value BIGINT NOT NULL,
                version BIGINT NOT NULL DEFAULT 0,
                UNIQUE INDEX (sequencer_key)
            ) DEFAULT CHARSET = utf8mb4"
        ))
        .await
        .map_err(|e| c.error(e))?;
        let columns: Vec<String> = conn
            .exec(
                "SELECT LOWER(column_name) FROM information_schema.columns
                 WHERE table_schema = DATABASE() AND table_name = ?",
                (table,),
            )
            .await
            .map_err(|e| c.error(e))?;
        let columns: HashSet<String> = columns.into_iter().collect();
        for needed in ["sequencer_key", "sequencer_value"] {
            if !columns.contains(needed) {
                return Err(Error::invalid_argument(format!(
                    "mysql: table {table} exists but is not in Layotto's layout (no column {needed}); use another tableName"
                )));
            }
        }
        Ok(columns.contains("version"))
    }

    /// Add `by` to the key's counter, creating it at `by`; the new value.
    async fn advance(&self, key: &str, by: i64) -> Result<i64> {
        valid_key(key)?;
        let versioned = self.ensure_table().await?;
        let table = &self.config.table;
        let (columns, values, bump) = if versioned {
            (", version", ", 1", ", version = version + 1")
        } else {
            ("", "", "")
        };
        let sql = format!(
            "INSERT INTO `{table}` (sequencer_key, sequencer_value{columns})
             VALUES (?, LAST_INSERT_ID(?){values})
             ON DUPLICATE KEY UPDATE sequencer_value = LAST_INSERT_ID(sequencer_value + ?){bump}"
        );
        let mut conn = self.client.conn().await?;
        let c = &self.client;
        let id = c
            .timed(async {
                let params = vec![Value::from(key), Value::from(by), Value::from(by)];
                conn.exec_drop(sql, Params::Positional(params))
                    .await
                    .map_err(|e| c.error(e))?;
                // LAST_INSERT_ID(expr) is what the server reports as the insert id.
                let id: Option<i64> = conn
                    .query_first("SELECT LAST_INSERT_ID()")
                    .await
                    .map_err(|e| c.error(e))?;
                id.ok_or_else(|| Error::internal("mysql: LAST_INSERT_ID() returned nothing"))
            })
            .await
            .map_err(|err| match server_code(&err) {
                // Out of range: the counter cannot advance (an INT column, as Layotto
                // creates it, or BIGINT's end).
                Some(1264 | 1690) => {
                    Error::resource_exhausted(format!("sequencer key cannot advance: {err}"))
                }
                _ => err,
            })?;
        Ok(id)
    }
}

#[async_trait]
impl Component for MysqlSequencer {
    async fn init(&self) -> Result<()> {
        self.ensure_table().await.map(|_| ())
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.client.conn().await?;
        self.client
            .timed(async { conn.ping().await.map_err(|e| self.client.error(e)) })
            .await
    }

    async fn close(&self) {
        self.client.close().await;
    }
}

#[async_trait]
impl Sequencer for MysqlSequencer {
    async fn next_id(&self, key: &str) -> Result<i64> {
        self.advance(key, 1).await
    }

    async fn reserve(&self, key: &str, size: u32) -> Result<Option<(i64, i64)>> {
        super::reserve_by_advancing(size, |by| self.advance(key, by)).await
    }

    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()> {
        valid_key(key)?;
        if floor <= 0 {
            // Ids start at 1: nothing to raise.
            return Ok(());
        }
        let versioned = self.ensure_table().await?;
        let table = &self.config.table;
        // `version` first: assignments run left to right and it compares the old value.
        let (columns, values, bump) = if versioned {
            (
                ", version",
                ", 1",
                "version = IF(sequencer_value < VALUES(sequencer_value), version + 1, version), ",
            )
        } else {
            ("", "", "")
        };
        let sql = format!(
            "INSERT INTO `{table}` (sequencer_key, sequencer_value{columns}) VALUES (?, ?{values})
             ON DUPLICATE KEY UPDATE {bump}sequencer_value = GREATEST(sequencer_value, VALUES(sequencer_value))"
        );
        let mut conn = self.client.conn().await?;
        let c = &self.client;
        c.timed(async {
            conn.exec_drop(sql, (key, floor))
                .await
                .map_err(|e| c.error(e))
        })
        .await
        .map_err(|err| match server_code(&err) {
            Some(1264) => Error::invalid_argument(format!(
                "biggerThan {floor} does not fit the table's sequencer_value column: {err}"
            )),
            _ => err,
        })
    }
}
