//! The `sqlite` resolver: sidecars on one machine share one SQLite file (Dapr's
//! `nameresolution.sqlite`). Each sidecar inserts a row for itself and heartbeats it; a
//! resolve returns the rows of the app whose heartbeat is recent, so a sidecar that died
//! without deregistering drops out on its own.
//!
//! Every database call runs on tokio's blocking pool under a deadline; the one connection
//! sits behind a mutex that no async task ever takes.
//!
//! Liveness differs from Dapr's on purpose. Dapr renews every `updateInterval − timeout` and
//! treats a row as live for one `updateInterval`, so one slow write drops a healthy sidecar.
//! Here a sidecar renews every `updateInterval` and its row counts as live for three of them
//! ([`SqliteResolver::EXPIRY_INTERVALS`]): two heartbeats may be late or lost before peers
//! stop calling it.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use plinth_core::{Error, Result};
use rusqlite::{Connection, params};
use serde::Deserialize;
use tokio::time::MissedTickBehavior;

use super::config::{duration, field_error};
use super::{Registration, RegistrationGuard, Resolver};

/// `nameResolution.configuration` for `component: sqlite`. Field names and defaults are
/// Dapr's, except where noted.
///
/// ```yaml
/// nameResolution:
///   component: sqlite
///   configuration:
///     connectionString: /home/user/.plinth/nr.db
///     updateInterval: 5s
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqliteConfig {
    /// The SQLite database every sidecar on the machine shares: a file path (relative to the
    /// working directory, or absolute), or a `file:` URI. Required. The file is created if
    /// missing; its directory must exist. Use a local disk: SQLite's locking is not reliable
    /// over NFS or SMB.
    pub connection_string: String,
    /// How often a registered sidecar renews its row. A row not renewed for three intervals
    /// is ignored by resolves and deleted by cleanup; shorter intervals notice a dead sidecar
    /// sooner at the cost of more writes. Fractions of a second are allowed (Dapr truncates
    /// them). Default `5s`.
    #[serde(
        default = "default_update_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub update_interval: Duration,
    /// The limit on one database operation (a resolve, a heartbeat). Default `1s`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
    /// The table holding the registrations, created if missing. Letters, digits and `_`,
    /// not starting with a digit. Default `hosts`.
    #[serde(default = "default_table_name")]
    pub table_name: String,
    /// How often a registered sidecar deletes expired rows (its own peers' leftovers). `0`
    /// disables cleanup; expired rows are still ignored by resolves. Default `1h`.
    #[serde(
        default = "default_cleanup_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub cleanup_interval: Duration,
    /// How long a write waits for another sidecar's write lock on the file before failing
    /// with "database is busy". Keep it below `timeout`. Default `800ms`.
    #[serde(
        default = "default_busy_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub busy_timeout: Duration,
    /// Keep SQLite's rollback journal instead of switching the file to write-ahead logging.
    /// WAL lets resolves read while another sidecar writes; disable it only where WAL cannot
    /// work. Default `false`.
    #[serde(default, rename = "disableWAL")]
    pub disable_wal: bool,
}

fn default_update_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_table_name() -> String {
    "hosts".to_owned()
}

fn default_cleanup_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_busy_timeout() -> Duration {
    Duration::from_millis(800)
}

impl SqliteConfig {
    /// A configuration with Dapr's defaults for the database at `connection_string`.
    pub fn new(connection_string: impl Into<String>) -> Self {
        Self {
            connection_string: connection_string.into(),
            update_interval: default_update_interval(),
            timeout: default_timeout(),
            table_name: default_table_name(),
            cleanup_interval: default_cleanup_interval(),
            busy_timeout: default_busy_timeout(),
            disable_wal: false,
        }
    }
}

/// Registers sidecars in, and resolves apps from, a shared SQLite file.
#[derive(Clone)]
pub struct SqliteResolver {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    /// The connection string, for messages.
    location: String,
    update_interval: Duration,
    expiry: Duration,
    timeout: Duration,
    cleanup_interval: Duration,
    sql: Statements,
}

/// The statements, with the configured table name in place (it cannot be a parameter).
struct Statements {
    register: String,
    reinsert: String,
    renew: String,
    resolve: String,
    deregister: String,
    cleanup: String,
}

impl Statements {
    fn new(table: &str) -> Self {
        Self {
            // REPLACE takes over a row left at the same address by a sidecar that died: two
            // live sidecars cannot listen on one address.
            register: format!(
                "INSERT OR REPLACE INTO {table} \
                 (registration_id, address, app_id, namespace, last_update) \
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            ),
            // Coming back after a peer's cleanup removed the row must not evict a newer
            // registration at the same address, hence IGNORE here.
            reinsert: format!(
                "INSERT OR IGNORE INTO {table} \
                 (registration_id, address, app_id, namespace, last_update) \
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            ),
            renew: format!("UPDATE {table} SET last_update = ?2 WHERE registration_id = ?1"),
            resolve: format!(
                "SELECT address FROM {table} \
                 WHERE app_id = ?1 AND namespace = ?2 AND last_update > ?3"
            ),
            deregister: format!("DELETE FROM {table} WHERE registration_id = ?1"),
            cleanup: format!("DELETE FROM {table} WHERE last_update <= ?1"),
        }
    }

    fn schema(table: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 registration_id TEXT NOT NULL PRIMARY KEY,
                 address TEXT NOT NULL,
                 app_id TEXT NOT NULL,
                 namespace TEXT NOT NULL,
                 last_update INTEGER NOT NULL
             );
             CREATE UNIQUE INDEX IF NOT EXISTS {table}_address_idx ON {table} (address);
             CREATE INDEX IF NOT EXISTS {table}_app_idx ON {table} (app_id, namespace);
             CREATE INDEX IF NOT EXISTS {table}_last_update_idx ON {table} (last_update);"
        )
    }
}

impl fmt::Debug for SqliteResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteResolver")
            .field("location", &self.inner.location)
            .field("update_interval", &self.inner.update_interval)
            .field("timeout", &self.inner.timeout)
            .field("cleanup_interval", &self.inner.cleanup_interval)
            .finish_non_exhaustive()
    }
}

impl SqliteResolver {
    /// A row counts as live for this many update intervals after its last heartbeat.
    pub const EXPIRY_INTERVALS: u32 = 3;

    /// Check `config`, open (creating if missing) the database and its table. Blocking file
    /// I/O: call it at startup, or from a blocking thread.
    pub fn open(config: SqliteConfig) -> Result<Self> {
        let location = config.connection_string.trim().to_owned();
        if location.is_empty() {
            return Err(field_error(
                "connectionString",
                "is required: the path of the SQLite file the sidecars share",
            ));
        }
        let table = config.table_name.trim();
        if !is_identifier(table) {
            return Err(field_error(
                "tableName",
                format!(
                    "{table:?} is not a table name (letters, digits and _, not starting with a digit)"
                ),
            ));
        }
        if config.update_interval < Duration::from_millis(1) {
            return Err(field_error("updateInterval", "must be at least 1ms"));
        }
        if config.timeout < Duration::from_millis(1) {
            return Err(field_error("timeout", "must be at least 1ms"));
        }
        // A file path whose directory is missing fails in SQLite as "unable to open database
        // file"; name the directory instead.
        if !location.starts_with("file:")
            && !location.starts_with(':')
            && let Some(dir) = Path::new(&location).parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(field_error(
                "connectionString",
                format!(
                    "the directory {} of {location:?} does not exist",
                    dir.display()
                ),
            ));
        }
        let conn = Connection::open(&location).map_err(|err| {
            field_error(
                "connectionString",
                format!("cannot open SQLite database {location:?}: {err}"),
            )
            .with_source(err)
        })?;
        let setup = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(config.busy_timeout)?;
            if !config.disable_wal {
                // Answers the mode in force: `memory` for an in-memory database, which has
                // no WAL and needs none.
                let _mode: String =
                    conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
                // Durable enough for heartbeats (WAL stays consistent; a power loss may undo
                // the last ones, which the next heartbeat rewrites) and fewer fsyncs.
                conn.execute_batch("PRAGMA synchronous = NORMAL")?;
            }
            conn.execute_batch(&Statements::schema(table))
        };
        setup(&conn).map_err(|err| {
            Error::unavailable(format!(
                "sqlite name resolution: preparing {location:?} failed: {err}"
            ))
            .with_source(err)
        })?;
        let expiry = config
            .update_interval
            .saturating_mul(Self::EXPIRY_INTERVALS);
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                location,
                update_interval: config.update_interval,
                expiry,
                timeout: config.timeout,
                cleanup_interval: config.cleanup_interval,
                sql: Statements::new(table),
            }),
        })
    }

    /// How long after its last heartbeat a registration stops being resolved.
    pub fn expiry(&self) -> Duration {
        self.inner.expiry
    }

    /// Delete the rows whose heartbeats stopped longer than [`Self::expiry`] ago, returning
    /// how many. Registered sidecars do this every `cleanupInterval`.
    pub async fn cleanup(&self) -> Result<usize> {
        self.inner.cleanup().await
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Milliseconds since the Unix epoch. Every sidecar sharing the file is on this machine, so
/// they share this clock.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One registered sidecar's row.
#[derive(Debug)]
struct Row {
    registration_id: String,
    address: String,
    app_id: String,
    namespace: String,
}

/// What a heartbeat found.
#[derive(Debug, PartialEq, Eq)]
enum Renewal {
    /// The row was there and is renewed.
    Renewed,
    /// The row was gone (a peer's cleanup removed it after heartbeats stalled) and is back.
    Reinserted,
    /// The row was gone and another registration holds the address.
    Displaced,
    /// The guard was dropped meanwhile; nothing was written.
    Closed,
}

impl Inner {
    /// Run `op` on the connection in the blocking pool, giving up after `timeout`.
    async fn run<T, F>(self: &Arc<Self>, what: &'static str, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(self);
        let deadline = Instant::now() + self.timeout;
        let task = tokio::task::spawn_blocking(move || {
            // A panic elsewhere while holding the lock leaves the connection usable: SQLite
            // rolls back any statement left unfinished.
            let conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            // Queued behind a slow operation until the caller gave up: do not add to the load.
            if Instant::now() >= deadline {
                return None;
            }
            Some(op(&inner, &conn))
        });
        let timed_out = || {
            Error::timeout(format!(
                "sqlite name resolution: {what} on {:?} took longer than {:?}",
                self.location, self.timeout
            ))
        };
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) | Ok(Ok(None)) => Err(timed_out()),
            Ok(Err(join)) => Err(Error::internal(format!(
                "sqlite name resolution: {what} task failed: {join}"
            ))
            .with_source(join)),
            Ok(Ok(Some(Err(err)))) => Err(Error::unavailable(format!(
                "sqlite name resolution: {what} on {:?} failed: {err}",
                self.location
            ))
            .with_source(err)),
            Ok(Ok(Some(Ok(value)))) => Ok(value),
        }
    }

    async fn cleanup(self: &Arc<Self>) -> Result<usize> {
        self.run("cleanup", |inner, conn| {
            let cutoff = now_ms().saturating_sub(duration_ms(inner.expiry));
            conn.execute(&inner.sql.cleanup, params![cutoff])
        })
        .await
    }

    fn renew(
        &self,
        conn: &Connection,
        row: &Row,
        closed: &AtomicBool,
    ) -> rusqlite::Result<Renewal> {
        // Checked under the connection lock, which the deregistering delete also takes: a
        // heartbeat that lost the race to the delete must not bring the row back.
        if closed.load(Ordering::Acquire) {
            return Ok(Renewal::Closed);
        }
        let now = now_ms();
        if conn.execute(&self.sql.renew, params![row.registration_id, now])? > 0 {
            return Ok(Renewal::Renewed);
        }
        let inserted = conn.execute(
            &self.sql.reinsert,
            params![
                row.registration_id,
                row.address,
                row.app_id,
                row.namespace,
                now
            ],
        )?;
        Ok(if inserted > 0 {
            Renewal::Reinserted
        } else {
            Renewal::Displaced
        })
    }

    fn deregister(&self, registration_id: &str) {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = conn.execute(&self.sql.deregister, params![registration_id]) {
            // The row expires on its own; peers may call this address until then.
            tracing::warn!(
                location = %self.location,
                error = %err,
                "sqlite name resolution: removing this sidecar's registration failed"
            );
        }
    }
}

/// Renew `row` every update interval and, every cleanup interval, delete expired rows, until
/// aborted by the guard.
async fn heartbeat(inner: Arc<Inner>, row: Arc<Row>, closed: Arc<AtomicBool>) {
    let period = inner.update_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // After a stall, one renewal is enough; a burst of catch-up writes would only add load.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_cleanup = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        let (r, c) = (Arc::clone(&row), Arc::clone(&closed));
        match inner
            .run("heartbeat", move |inner, conn| inner.renew(conn, &r, &c))
            .await
        {
            Ok(Renewal::Renewed) | Ok(Renewal::Closed) => {}
            Ok(Renewal::Reinserted) => tracing::warn!(
                app_id = %row.app_id,
                address = %row.address,
                "sqlite name resolution: this sidecar's registration had expired and was removed; registered again"
            ),
            Ok(Renewal::Displaced) => tracing::warn!(
                app_id = %row.app_id,
                address = %row.address,
                "sqlite name resolution: another registration holds this sidecar's address; not registered"
            ),
            Err(err) => tracing::warn!(
                app_id = %row.app_id,
                error = %err,
                "sqlite name resolution: heartbeat failed; peers drop this sidecar if it keeps failing"
            ),
        }
        if !inner.cleanup_interval.is_zero() && last_cleanup.elapsed() >= inner.cleanup_interval {
            last_cleanup = tokio::time::Instant::now();
            match inner.cleanup().await {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(
                    removed,
                    "sqlite name resolution: removed expired registrations"
                ),
                Err(err) => tracing::warn!(error = %err, "sqlite name resolution: cleanup failed"),
            }
        }
    }
}

#[async_trait]
impl Resolver for SqliteResolver {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Vec<SocketAddr>> {
        let (app, ns) = (app_id.to_owned(), namespace.to_owned());
        let raw: Vec<String> = self
            .inner
            .run("resolve", move |inner, conn| {
                let cutoff = now_ms().saturating_sub(duration_ms(inner.expiry));
                let mut stmt = conn.prepare(&inner.sql.resolve)?;
                let rows = stmt.query_map(params![app, ns, cutoff], |row| row.get(0))?;
                rows.collect()
            })
            .await?;
        let mut addrs = Vec::with_capacity(raw.len());
        for text in raw {
            match text.parse::<SocketAddr>() {
                Ok(addr) if !addrs.contains(&addr) => addrs.push(addr),
                Ok(_) => {}
                // Another program wrote the row; one bad row must not hide the others.
                Err(_) => tracing::warn!(
                    app_id,
                    address = %text,
                    "sqlite name resolution: ignoring a registration whose address is not ip:port"
                ),
            }
        }
        Ok(addrs)
    }

    async fn register(&self, me: Registration) -> Result<RegistrationGuard> {
        if me.app_id.trim().is_empty() {
            return Err(Error::invalid_argument(
                "sqlite name resolution: cannot register an empty app id",
            ));
        }
        let row = Arc::new(Row {
            registration_id: uuid::Uuid::new_v4().to_string(),
            address: me.address.to_string(),
            app_id: me.app_id,
            namespace: me.namespace,
        });
        let r = Arc::clone(&row);
        // On a timeout the insert may still land later; with no heartbeat behind it, the row
        // expires like a dead sidecar's.
        self.inner
            .run("register", move |inner, conn| {
                conn.execute(
                    &inner.sql.register,
                    params![
                        r.registration_id,
                        r.address,
                        r.app_id,
                        r.namespace,
                        now_ms()
                    ],
                )
            })
            .await?;

        let closed = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(heartbeat(
            Arc::clone(&self.inner),
            Arc::clone(&row),
            Arc::clone(&closed),
        ))
        .abort_handle();
        let inner = Arc::clone(&self.inner);
        Ok(RegistrationGuard::on_drop(move || {
            closed.store(true, Ordering::Release);
            task.abort();
            let id = row.registration_id.clone();
            match tokio::runtime::Handle::try_current() {
                // Inside a runtime: a blocking delete here would stall a worker thread.
                Ok(handle) => {
                    handle.spawn_blocking(move || inner.deregister(&id));
                }
                // Dropped after the runtime (or outside one): nothing else to block.
                Err(_) => inner.deregister(&id),
            }
        }))
    }
}
