//! `lock.postgresql` metadata: the shared PostgreSQL connection keys plus `tableName`.

use plinth_core::{ComponentSpec, Result};

use crate::postgres_client::{PgSettings, table_name};

/// Component metadata: the lock table, optionally `schema.table` (default `plinth_lock`).
pub(crate) const TABLE_NAME: &str = "tableName";
const DEFAULT_TABLE: &str = "plinth_lock";

/// The parsed metadata of a `lock.postgresql` component.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where and how to connect.
    pub(crate) pg: PgSettings,
    /// The lock table, validated.
    pub(crate) table: String,
}

impl Config {
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        Ok(Self {
            pg: PgSettings::from_spec(spec)?,
            table: table_name(spec, TABLE_NAME, DEFAULT_TABLE)?,
        })
    }
}
