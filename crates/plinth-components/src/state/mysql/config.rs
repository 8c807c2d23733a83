//! Metadata of `state.mysql`, with Dapr's keys and defaults.

use std::time::Duration;

use plinth_core::{ComponentSpec, Result};

use crate::mysql_client::{MysqlSettings, parse_connection_string, valid_identifier};

/// Component metadata: the Go driver DSN, `user:password@tcp(host:port)/?params` (a
/// `mysql://` URL is accepted too). Required.
pub const CONNECTION_STRING: &str = "connectionString";
/// Component metadata: the database (MySQL's schema) holding the tables, created when
/// missing. Defaults to the DSN's database, else `dapr_state_store` (Dapr's default).
pub const SCHEMA_NAME: &str = "schemaName";
/// Component metadata: the state table (default `state`), created when missing.
pub const TABLE_NAME: &str = "tableName";
/// Component metadata: the table of Dapr's `last-cleanup` mark (default `dapr_metadata`).
pub const METADATA_TABLE_NAME: &str = "metadataTableName";
/// Component metadata: the deadline of every database call, in seconds (default 20).
pub const TIMEOUT_IN_SECONDS: &str = "timeoutInSeconds";
/// Component metadata: how often expired rows are deleted, a duration (default `1h`);
/// `0` or negative disables the cleanup.
pub const CLEANUP_INTERVAL: &str = "cleanupInterval";
/// Component metadata: the same in whole seconds, as older Dapr releases named it.
pub const CLEANUP_INTERVAL_IN_SECONDS: &str = "cleanupIntervalInSeconds";
/// Component metadata: Dapr's PEM file for TLS; refused, as this build has no TLS stack.
pub const PEM_PATH: &str = "pemPath";
/// Component metadata: the most connections the pool opens (default 10).
pub const MAX_CONNS: &str = "maxConns";

const DEFAULT_SCHEMA: &str = "dapr_state_store";
const DEFAULT_TABLE: &str = "state";
const DEFAULT_METADATA_TABLE: &str = "dapr_metadata";
const DEFAULT_TIMEOUT_SECS: u64 = 20;
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_CONNS: usize = 10;

/// The settings of a MySQL state store.
#[derive(Debug, Clone)]
pub struct MysqlStateConfig {
    pub(crate) connection: MysqlSettings,
    /// The database holding the tables, validated.
    pub schema: String,
    /// The state table, validated.
    pub table: String,
    /// The metadata table, validated.
    pub metadata_table: String,
    /// The deadline of every call.
    pub timeout: Duration,
    /// How often expired rows are deleted; `None` disables it.
    pub cleanup_interval: Option<Duration>,
    /// The pool's size.
    pub max_conns: usize,
}

impl MysqlStateConfig {
    /// Read and validate the settings; every error names the field.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let field = |key: &str| format!("metadata.{key}");
        let raw = spec.require(CONNECTION_STRING)?;
        let connection =
            parse_connection_string(raw).map_err(|e| spec.invalid(&field(CONNECTION_STRING), e))?;
        if spec.get(PEM_PATH).is_some() {
            return Err(spec.invalid(
                &field(PEM_PATH),
                "TLS connections are not supported by this build",
            ));
        }
        let (schema, schema_field) = match (spec.get(SCHEMA_NAME), &connection.database) {
            (Some(name), _) => (name.to_owned(), SCHEMA_NAME),
            (None, Some(db)) => (db.clone(), CONNECTION_STRING),
            (None, None) => (DEFAULT_SCHEMA.to_owned(), SCHEMA_NAME),
        };
        valid_identifier(&schema).map_err(|e| spec.invalid(&field(schema_field), e))?;
        let table = spec.get(TABLE_NAME).unwrap_or(DEFAULT_TABLE).to_owned();
        valid_identifier(&table).map_err(|e| spec.invalid(&field(TABLE_NAME), e))?;
        let metadata_table = spec
            .get(METADATA_TABLE_NAME)
            .unwrap_or(DEFAULT_METADATA_TABLE)
            .to_owned();
        valid_identifier(&metadata_table)
            .map_err(|e| spec.invalid(&field(METADATA_TABLE_NAME), e))?;
        // Dapr falls back to its default for a non-positive value; a typo is better reported.
        let timeout_secs: u64 = spec.parse_or(TIMEOUT_IN_SECONDS, DEFAULT_TIMEOUT_SECS)?;
        if timeout_secs == 0 {
            return Err(spec.invalid(&field(TIMEOUT_IN_SECONDS), "must be positive"));
        }
        let cleanup_interval = match (
            spec.get(CLEANUP_INTERVAL),
            spec.get(CLEANUP_INTERVAL_IN_SECONDS),
        ) {
            (Some(raw), _) if raw.starts_with('-') => None,
            (Some(_), _) => Some(spec.duration_or(CLEANUP_INTERVAL, DEFAULT_CLEANUP_INTERVAL)?),
            (None, Some(_)) => {
                let secs: i64 = spec.parse_or(CLEANUP_INTERVAL_IN_SECONDS, 0)?;
                u64::try_from(secs).ok().map(Duration::from_secs)
            }
            (None, None) => Some(DEFAULT_CLEANUP_INTERVAL),
        }
        .filter(|d| !d.is_zero());
        let max_conns = spec.parse_or(MAX_CONNS, DEFAULT_MAX_CONNS)?;
        if max_conns == 0 {
            return Err(spec.invalid(&field(MAX_CONNS), "must be positive"));
        }
        Ok(Self {
            connection,
            schema,
            table,
            metadata_table,
            timeout: Duration::from_secs(timeout_secs),
            cleanup_interval,
            max_conns,
        })
    }
}
