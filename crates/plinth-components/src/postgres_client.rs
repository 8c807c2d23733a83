//! What the PostgreSQL components share: Dapr's connection metadata, a bounded pool, error
//! mapping and safe table names.
//!
//! The driver is tokio-postgres pooled by deadpool-postgres (see `state::postgres` for why).
//! Every call gets a connection within the configured timeout and finishes within it; a
//! server that cannot be reached is UNAVAILABLE, so `init` fails fast and the runtime starts
//! the component DOWN and retries it.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use plinth_core::{ComponentSpec, Error, Result};

/// Component metadata: the connection string, key/value (`host=... user=... database=...`)
/// or URL (`postgres://user@host/db`). Required.
pub(crate) const CONNECTION_STRING: &str = "connectionString";
/// Component metadata: the deadline of every database operation (default 20s, as Dapr).
pub(crate) const TIMEOUT: &str = "timeout";
/// Component metadata: the most connections the pool opens (default 10).
pub(crate) const MAX_CONNS: &str = "maxConns";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_MAX_CONNS: usize = 10;
/// PostgreSQL truncates longer identifiers; reject them rather than use another name.
const MAX_IDENTIFIER_LEN: usize = 63;

/// Where and how to connect, read from Dapr's metadata keys.
#[derive(Clone)]
pub(crate) struct PgSettings {
    /// The parsed connection settings.
    pub(crate) connection: tokio_postgres::Config,
    /// The deadline of every operation.
    pub(crate) timeout: Duration,
    /// The pool's size.
    pub(crate) max_conns: usize,
}

impl fmt::Debug for PgSettings {
    // The connection settings may hold a password: leave them out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("timeout", &self.timeout)
            .field("max_conns", &self.max_conns)
            .finish_non_exhaustive()
    }
}

impl PgSettings {
    /// Read `connectionString`, `timeout` and `maxConns`; every error names the field.
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let raw = spec.require(CONNECTION_STRING)?;
        let connection = parse_connection_string(raw).map_err(|e| {
            // The parser's message never echoes the string, which may hold a password.
            spec.invalid(&format!("metadata.{CONNECTION_STRING}"), e)
        })?;
        let timeout = spec.duration_or(TIMEOUT, DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(spec.invalid(&format!("metadata.{TIMEOUT}"), "must be positive"));
        }
        let max_conns = spec.parse_or(MAX_CONNS, DEFAULT_MAX_CONNS)?;
        if max_conns == 0 {
            return Err(spec.invalid(&format!("metadata.{MAX_CONNS}"), "must be positive"));
        }
        Ok(Self {
            connection,
            timeout,
            max_conns,
        })
    }

    /// The connection settings with the operation timeout as connect timeout, unless the
    /// connection string sets one.
    pub(crate) fn connection(&self) -> tokio_postgres::Config {
        let mut connection = self.connection.clone();
        if connection.get_connect_timeout().is_none() {
            connection.connect_timeout(self.timeout);
        }
        connection
    }
}

/// A pool of connections with every wait bounded by the operation timeout.
#[derive(Clone)]
pub(crate) struct PgPool {
    pool: Pool,
    timeout: Duration,
}

impl fmt::Debug for PgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPool")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PgPool {
    /// A pool for `settings`; no connection is made until the first call.
    pub(crate) fn new(settings: &PgSettings) -> Result<Self> {
        let manager = Manager::from_config(
            settings.connection(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_conns)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| Error::internal(format!("postgresql: cannot build the pool: {e}")))?;
        Ok(Self {
            pool,
            timeout: settings.timeout,
        })
    }

    /// A pooled connection, or Unavailable when none can be had in time.
    pub(crate) async fn conn(&self) -> Result<Object> {
        match tokio::time::timeout(self.timeout, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(deadpool_postgres::PoolError::Backend(err))) => Err(pg_error(err)),
            Ok(Err(err)) => Err(Error::unavailable(format!(
                "postgresql: no connection: {err}"
            ))),
            Err(_) => Err(Error::unavailable(format!(
                "postgresql: no connection within {:?}",
                self.timeout
            ))),
        }
    }

    /// Run `fut` within the timeout. Callers get their connection first, so that a server
    /// that cannot be reached is reported as Unavailable, not as a timeout.
    pub(crate) async fn timed<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(Error::timeout(format!(
                    "postgresql: the operation did not finish within {:?}",
                    self.timeout
                )))
            })
    }

    /// Check that the server answers.
    pub(crate) async fn ping(&self) -> Result<()> {
        let conn = self.conn().await?;
        self.timed(async {
            conn.simple_query("SELECT 1").await.map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    /// Close the pool: idle connections go now, busy ones when returned.
    pub(crate) fn close(&self) {
        self.pool.close();
    }
}

/// Map a driver error: errors the server reports are internal (the SQL is ours), anything
/// else (refused, reset, closed) means the server cannot be reached.
pub(crate) fn pg_error(err: tokio_postgres::Error) -> Error {
    match err.as_db_error() {
        Some(db) => Error::internal(format!(
            "postgresql: {} ({})",
            db.message(),
            db.code().code()
        )),
        // The driver's message is generic ("error connecting to server"); its cause says why.
        None => match std::error::Error::source(&err) {
            Some(cause) => Error::unavailable(format!("postgresql: {err}: {cause}")),
            None => Error::unavailable(format!("postgresql: {err}")),
        },
    }
    .with_source(err)
}

/// Parse a connection string. Dapr's (pgx's) key/value form names the database
/// `database`, which tokio-postgres calls `dbname`.
pub(crate) fn parse_connection_string(
    raw: &str,
) -> std::result::Result<tokio_postgres::Config, String> {
    let rewritten;
    let raw = if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        raw
    } else {
        rewritten = raw
            .split(' ')
            .map(|token| match token.strip_prefix("database=") {
                Some(rest) => format!("dbname={rest}"),
                None => token.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        &rewritten
    };
    raw.parse::<tokio_postgres::Config>()
        .map_err(|e| format!("not a valid PostgreSQL connection string: {e}"))
}

/// A table name is one or two (`schema.table`) unquoted SQL identifiers: a letter or `_`,
/// then letters, digits or `_`, at most 63 bytes each. Only such names reach SQL text,
/// which is why they are checked so strictly.
pub(crate) fn validate_table_name(name: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        return Err(format!(
            "{name:?} is not a table name: at most one '.' (schema.table)"
        ));
    }
    for part in parts {
        validate_identifier(part).map_err(|_| {
            format!(
                "{name:?} is not a table name: each part must start with a letter or '_', hold only letters, digits and '_', and be at most {MAX_IDENTIFIER_LEN} characters"
            )
        })?;
    }
    Ok(())
}

/// One unquoted SQL identifier, as [`validate_table_name`] checks each part.
pub(crate) fn validate_identifier(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !rest_ok || name.len() > MAX_IDENTIFIER_LEN {
        return Err(format!(
            "{name:?} is not an identifier: it must start with a letter or '_', hold only letters, digits and '_', and be at most {MAX_IDENTIFIER_LEN} characters"
        ));
    }
    Ok(())
}

/// A table's name without its schema, for names derived from it (indexes, triggers).
pub(crate) fn bare_name(table: &str) -> &str {
    table.rsplit('.').next().unwrap_or(table)
}

/// A table name from `key` (validated), or `default`; the error names the field.
pub(crate) fn table_name(spec: &ComponentSpec, key: &str, default: &str) -> Result<String> {
    let table = spec.get(key).unwrap_or(default).to_owned();
    validate_table_name(&table).map_err(|e| spec.invalid(&format!("metadata.{key}"), e))?;
    Ok(table)
}

/// Run `ddl` in one transaction under an advisory lock named after `name`, so that several
/// sidecars starting at once do not race on `CREATE ... IF NOT EXISTS`.
pub(crate) async fn create_schema(pool: &PgPool, name: &str, ddl: &str) -> Result<()> {
    let mut conn = pool.conn().await?;
    pool.timed(async {
        let tx = conn.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name])
            .await
            .map_err(pg_error)?;
        tx.batch_execute(ddl).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        for ok in ["state", "_t1", "public.state", "a_b.c_d"] {
            assert!(validate_table_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1t", "a.b.c", "t;drop", "t-x", "\"t\"", &"x".repeat(64)] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dapr_connection_strings_parse() {
        let config = parse_connection_string("host=h user=u database=d port=5433").expect("ok");
        assert_eq!(config.get_dbname(), Some("d"));
        assert!(parse_connection_string("postgres://u@h/d").is_ok());
        let spec = ComponentSpec::new("c", "lock.postgresql")
            .with_metadata(CONNECTION_STRING, "host=h")
            .with_metadata(TIMEOUT, "0s");
        let err = PgSettings::from_spec(&spec).expect_err("zero timeout");
        assert!(err.message().contains("metadata.timeout"), "{err}");
    }
}

/// What the PostgreSQL components' unit tests share: the real database `test` (or
/// `PLINTH_TEST_POSTGRES`, a connection string), fresh table names and their removal.
#[cfg(test)]
pub(crate) mod test_support {
    /// The local test database.
    pub(crate) const DEFAULT_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

    /// The connection string of the test database.
    pub(crate) fn url() -> String {
        std::env::var("PLINTH_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned())
    }

    /// A plain client, failing loudly when PostgreSQL is missing.
    pub(crate) async fn connect() -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .expect(
                "PostgreSQL must be reachable for these tests: start it on 127.0.0.1:5432 \
                 (user postgres, database test) or set PLINTH_TEST_POSTGRES",
            );
        tokio::spawn(connection);
        client
    }

    /// A fresh table name under `prefix`.
    pub(crate) fn unique(prefix: &str) -> String {
        format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
    }

    /// Runs its SQL (dropping what a test created) when dropped, even when the test fails;
    /// on a thread of its own since `Drop` cannot await.
    #[derive(Debug)]
    pub(crate) struct DropOnExit(pub(crate) Vec<String>);

    impl DropOnExit {
        /// Drop these tables at the end.
        pub(crate) fn tables(tables: &[&str]) -> Self {
            Self(
                tables
                    .iter()
                    .map(|t| format!("DROP TABLE IF EXISTS {t}"))
                    .collect(),
            )
        }
    }

    impl Drop for DropOnExit {
        fn drop(&mut self) {
            let statements = std::mem::take(&mut self.0);
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(async {
                    let client = connect().await;
                    for sql in statements {
                        client
                            .batch_execute(&sql)
                            .await
                            .expect("drop a test object");
                    }
                });
            })
            .join();
            if dropped.is_err() && !std::thread::panicking() {
                panic!("could not drop the test tables");
            }
        }
    }
}
