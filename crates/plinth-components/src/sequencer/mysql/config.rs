//! `sequencer.mysql` metadata: Layotto's keys (`mysqlUrl`, `userName`, `password`,
//! `dataBaseName`, `tableName`), or a Go driver DSN in `connectionString` as `state.mysql`
//! takes it.

use std::time::Duration;

use plinth_core::{ComponentSpec, Result};

use crate::mysql_client::{MysqlSettings, parse_connection_string, valid_identifier};

/// Component metadata: a Go driver DSN, `user:password@tcp(host:port)/database`.
pub(crate) const CONNECTION_STRING: &str = "connectionString";
/// Component metadata (Layotto): the server's `host:port`.
pub(crate) const MYSQL_URL: &str = "mysqlUrl";
/// Component metadata (Layotto): the user.
pub(crate) const USER_NAME: &str = "userName";
/// Component metadata (Layotto): the password.
pub(crate) const PASSWORD: &str = "password";
/// Component metadata (Layotto): the database; overrides the DSN's.
pub(crate) const DATABASE_NAME: &str = "dataBaseName";
/// Component metadata (Layotto): the counters' table (default `layotto_sequencer`).
pub(crate) const TABLE_NAME: &str = "tableName";
/// Component metadata: the deadline of every call, in seconds (default 20).
pub(crate) const TIMEOUT_IN_SECONDS: &str = "timeoutInSeconds";
/// Component metadata: the most connections the pool opens (default 10).
pub(crate) const MAX_CONNS: &str = "maxConns";

const DEFAULT_TABLE: &str = "layotto_sequencer";
const DEFAULT_TIMEOUT_SECS: u64 = 20;
const DEFAULT_MAX_CONNS: usize = 10;

/// The parsed metadata of a `sequencer.mysql` component.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where and how to connect; `database` is set.
    pub(crate) connection: MysqlSettings,
    /// The counters' table, validated.
    pub(crate) table: String,
    /// The deadline of every call.
    pub(crate) timeout: Duration,
    /// The pool's size.
    pub(crate) max_conns: usize,
}

impl Config {
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let field = |key: &str| format!("metadata.{key}");
        let mut connection = match (spec.get(CONNECTION_STRING), spec.get(MYSQL_URL)) {
            (Some(_), Some(_)) => {
                return Err(spec.invalid(
                    &field(MYSQL_URL),
                    format!("give either {CONNECTION_STRING} or {MYSQL_URL}, not both"),
                ));
            }
            (Some(raw), None) => parse_connection_string(raw)
                .map_err(|e| spec.invalid(&field(CONNECTION_STRING), e))?,
            (None, Some(url)) => {
                // Layotto's pieces, put together as the Go driver would read them.
                let dsn = format!("@tcp({url})/");
                let mut settings = parse_connection_string(&dsn)
                    .map_err(|e| spec.invalid(&field(MYSQL_URL), e))?;
                settings.user = spec.get(USER_NAME).unwrap_or_default().to_owned();
                settings.password = spec.get(PASSWORD).map(str::to_owned);
                settings
            }
            (None, None) => {
                return Err(spec.invalid(
                    &field(CONNECTION_STRING),
                    format!("is required (or Layotto's {MYSQL_URL})"),
                ));
            }
        };
        if let Some(db) = spec.get(DATABASE_NAME) {
            connection.database = Some(db.to_owned());
        }
        let Some(database) = connection.database.clone() else {
            return Err(spec.invalid(
                &field(DATABASE_NAME),
                "is required (or a database in connectionString)",
            ));
        };
        valid_identifier(&database).map_err(|e| spec.invalid(&field(DATABASE_NAME), e))?;
        let table = spec.get(TABLE_NAME).unwrap_or(DEFAULT_TABLE).to_owned();
        valid_identifier(&table).map_err(|e| spec.invalid(&field(TABLE_NAME), e))?;
        let timeout_secs: u64 = spec.parse_or(TIMEOUT_IN_SECONDS, DEFAULT_TIMEOUT_SECS)?;
        if timeout_secs == 0 {
            return Err(spec.invalid(&field(TIMEOUT_IN_SECONDS), "must be positive"));
        }
        let max_conns = spec.parse_or(MAX_CONNS, DEFAULT_MAX_CONNS)?;
        if max_conns == 0 {
            return Err(spec.invalid(&field(MAX_CONNS), "must be positive"));
        }
        Ok(Self {
            connection,
            table,
            timeout: Duration::from_secs(timeout_secs),
            max_conns,
        })
    }
}
