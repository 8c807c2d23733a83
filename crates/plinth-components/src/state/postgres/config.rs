//! Metadata of `state.postgresql`, with Dapr's keys and defaults (state.postgresql v2, or
//! v1 under `spec.version: v1`).

use std::time::Duration;

use plinth_core::{ComponentSpec, Result};

use crate::postgres_client::{parse_connection_string, validate_table_name};

/// Component metadata: the PostgreSQL connection string, key/value
/// (`host=... user=... dbname=...`, `database=` accepted as Dapr writes it) or URL
/// (`postgres://user@host/db`). Required.
pub const CONNECTION_STRING: &str = "connectionString";
/// Component metadata: the state table's name, optionally schema-qualified (`schema.table`).
/// Defaults to `tablePrefix` followed by `state`.
pub const TABLE_NAME: &str = "tableName";
/// Component metadata: Dapr v2's prefix of the state table's name (default empty).
pub const TABLE_PREFIX: &str = "tablePrefix";
/// Component metadata: the table where Dapr keeps its migration level (default
/// `dapr_metadata`).
pub const METADATA_TABLE_NAME: &str = "metadataTableName";
/// Component metadata: the deadline of every database operation (default 20s, as Dapr).
pub const TIMEOUT: &str = "timeout";
/// Component metadata: how often expired rows are deleted (default 1h, as Dapr); `0` or a
/// negative value disables the cleanup.
pub const CLEANUP_INTERVAL: &str = "cleanupInterval";
/// Component metadata: the most connections the pool opens (default 10).
pub const MAX_CONNS: &str = "maxConns";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_CONNS: usize = 10;

/// Which of Dapr's table layouts a store uses (`spec.version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Dapr's v1: `value jsonb`, `isbinary`, `xmin` as ETag.
    V1,
    /// Dapr's v2 (the default): `value bytea`, a UUID `etag`.
    V2,
}

/// The settings of a PostgreSQL state store.
#[derive(Clone)]
pub struct PostgresConfig {
    /// Dapr's table layout, from `spec.version`.
    pub layout: Layout,
    /// The parsed connection settings.
    pub connection: tokio_postgres::Config,
    /// The state table, validated, possibly `schema.table`.
    pub table: String,
    /// The metadata table, validated.
    pub metadata_table: String,
    /// The key of the migration level in the metadata table, when the state table is
    /// Dapr's default name for its prefix (so Dapr, on the same database, sees the table
    /// as already created).
    pub migration_key: Option<String>,
    /// The deadline of every operation.
    pub timeout: Duration,
    /// How often expired rows are deleted; `None` disables it.
    pub cleanup_interval: Option<Duration>,
    /// The pool's size.
    pub max_conns: usize,
}

impl std::fmt::Debug for PostgresConfig {
    // The connection settings may hold a password: leave them out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("layout", &self.layout)
            .field("table", &self.table)
            .field("metadata_table", &self.metadata_table)
            .field("timeout", &self.timeout)
            .field("cleanup_interval", &self.cleanup_interval)
            .field("max_conns", &self.max_conns)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    /// Read and validate the settings; every error names the field.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let layout = match spec.version.as_str() {
            "" | "v2" => Layout::V2,
            "v1" => Layout::V1,
            other => {
                return Err(spec.invalid(
                    "spec.version",
                    format!("{other:?}: Dapr's table layouts are v1 and v2 (the default)"),
                ));
            }
        };
        let raw = spec.require(CONNECTION_STRING)?;
        let connection = parse_connection_string(raw).map_err(|e| {
            // The parser's message never echoes the string, which may hold a password.
            spec.invalid(&format!("metadata.{CONNECTION_STRING}"), e)
        })?;
        if layout == Layout::V1 && spec.get(TABLE_PREFIX).is_some() {
            return Err(spec.invalid(
                &format!("metadata.{TABLE_PREFIX}"),
                "Dapr's v1 layout has no table prefix; use tableName",
            ));
        }
        let prefix = spec.get(TABLE_PREFIX).unwrap_or_default();
        let (table, migration_key) = match (spec.get(TABLE_NAME), layout) {
            (Some(name), Layout::V2) => (name.to_owned(), None),
            (None, Layout::V2) => (
                format!("{prefix}state"),
                Some(format!("migrations-state-v2-{prefix}")),
            ),
            // Dapr's v1 keeps one migration level per metadata table, whatever the table.
            (name, Layout::V1) => (
                name.unwrap_or("state").to_owned(),
                Some("migrations".to_owned()),
            ),
        };
        let table_field = if spec.get(TABLE_NAME).is_some() {
            TABLE_NAME
        } else {
            TABLE_PREFIX
        };
        validate_table_name(&table)
            .map_err(|e| spec.invalid(&format!("metadata.{table_field}"), e))?;
        let metadata_table = spec
            .get(METADATA_TABLE_NAME)
            .unwrap_or("dapr_metadata")
            .to_owned();
        validate_table_name(&metadata_table)
            .map_err(|e| spec.invalid(&format!("metadata.{METADATA_TABLE_NAME}"), e))?;
        let timeout = spec.duration_or(TIMEOUT, DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(spec.invalid(&format!("metadata.{TIMEOUT}"), "must be positive"));
        }
        let cleanup_interval = match spec.get(CLEANUP_INTERVAL) {
            Some(raw) if raw.starts_with('-') => None,
            _ => Some(spec.duration_or(CLEANUP_INTERVAL, DEFAULT_CLEANUP_INTERVAL)?)
                .filter(|d| !d.is_zero()),
        };
        let max_conns = spec.parse_or(MAX_CONNS, DEFAULT_MAX_CONNS)?;
        if max_conns == 0 {
            return Err(spec.invalid(&format!("metadata.{MAX_CONNS}"), "must be positive"));
        }
        Ok(Self {
            layout,
            connection,
            table,
            metadata_table,
            migration_key,
            timeout,
            cleanup_interval,
            max_conns,
        })
    }
}
