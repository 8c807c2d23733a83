//! `configuration.postgresql`: configuration items in a PostgreSQL table in Dapr's layout,
//! with changes announced by LISTEN/NOTIFY, so Plinth and Dapr can share a table.
//!
//! Data layout (Dapr's): one table (`table`) with columns `key`, `value`, `version` (text)
//! and `metadata` (json, the item's metadata as an object of strings). Plinth creates it on
//! first use with `key` as primary key; a table Dapr's users created by hand (no key
//! constraint) works as well. An item without group or label (every item Dapr's API sees) is
//! stored under its key as is; an item with a group or label under `{group}||{label}||{key}`,
//! as `configuration.redis` does. The app id is not stored: like Dapr, the table is shared by
//! every app that uses the component. Layotto's tags are not stored.
//!
//! Writes through Plinth bump `version` (`1`, `2`, ...; a version that is not a number
//! restarts at 1) and run in one transaction that also sets `plinth.app_id` for the trigger.
//!
//! Notifications: on first use Plinth installs (unless `createTrigger: false`) a row trigger
//! `{table}_notify` that calls `pg_notify` on the channel `pgNotifyChannel` (default
//! `{table}_changes`) with Dapr's payload shape,
//! `{"table": ..., "action": "INSERT"|"UPDATE"|"DELETE", "data": {"key": ..., ...}}`,
//! plus `appId`; only the key and version are sent, keeping far below NOTIFY's 8000-byte
//! limit. A Dapr-style trigger of the user's own (whole row in `data`) is read the same way.
//! Each `watch` holds one dedicated connection that LISTENs, re-reads the keys it is told
//! about and reports them as they now are (a key that is gone as deleted). When that
//! connection fails it reconnects with backoff and then reports every current item, since
//! notifications sent meanwhile are lost.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use plinth_core::component::configuration::{
    ConfigurationChange, ConfigurationItem, ConfigurationQuery, ConfigurationStore,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Metadata, Result};
use tokio::sync::{OnceCell, mpsc};
use tokio_postgres::{AsyncMessage, Client};

use crate::postgres_client::{PgPool, PgSettings, bare_name, create_schema, pg_error};

mod config;
#[cfg(test)]
mod tests;

use config::Config;

/// The type name this component registers under (Dapr's).
pub const TYPE_NAME: &str = "configuration.postgresql";

/// The separator between group, label and key.
const SEPARATOR: &str = "||";
/// The most items a get of every key returns.
pub const MAX_ITEMS: i64 = 10_000;
/// The capacity of the channel each `watch` returns.
const WATCH_CAPACITY: usize = 256;
/// The most keys re-read at once for watchers.
const FLUSH_BATCH: usize = 500;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Build a `configuration.postgresql` store; metadata is validated here, the connection
/// made in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    Ok(Instance::Configuration(Arc::new(
        PostgresConfigurationStore::new(config)?,
    )))
}

/// A configuration store in PostgreSQL.
pub struct PostgresConfigurationStore {
    pool: PgPool,
    config: Config,
    schema: OnceCell<()>,
}

impl std::fmt::Debug for PostgresConfigurationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfigurationStore")
            .field("table", &self.config.table)
            .field("channel", &self.config.channel)
            .finish_non_exhaustive()
    }
}

/// The stored key of an item.
pub fn stored_key(group: &str, label: &str, key: &str) -> String {
    if group.is_empty() && label.is_empty() {
        key.to_owned()
    } else {
        format!("{group}{SEPARATOR}{label}{SEPARATOR}{key}")
    }
}

/// Split a stored key into (group, label, key).
fn split_key(stored: &str) -> (String, String, String) {
    let mut parts = stored.splitn(3, SEPARATOR);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(group), Some(label), Some(key)) => {
            (group.to_owned(), label.to_owned(), key.to_owned())
        }
        _ => (String::new(), String::new(), stored.to_owned()),
    }
}

/// An item's metadata from the `metadata` column; values that are not strings keep their
/// JSON text.
fn parse_metadata(raw: Option<&str>) -> Metadata {
    let Some(serde_json::Value::Object(map)) = raw.and_then(|r| serde_json::from_str(r).ok())
    else {
        return Metadata::new();
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

fn item_of(row: &tokio_postgres::Row) -> ConfigurationItem {
    let stored: String = row.get(0);
    let (group, label, key) = split_key(&stored);
    let metadata: Option<String> = row.get(3);
    ConfigurationItem {
        key,
        content: row.get(1),
        group,
        label,
        version: row.get(2),
        metadata: parse_metadata(metadata.as_deref()),
        ..Default::default()
    }
}

/// What a notification names: the stored key and the writer's app id (empty when the
/// trigger does not say). `None` for a payload that is not about `table`.
fn decode_notification(payload: &str, table: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    if let Some(t) = v.get("table").and_then(|t| t.as_str())
        && !t.eq_ignore_ascii_case(bare_name(table))
    {
        return None;
    }
    let data = v.get("data")?;
    let key = data.get("key").or_else(|| data.get("KEY"))?.as_str()?;
    let app_id = v.get("appId").and_then(|a| a.as_str()).unwrap_or_default();
    Some((key.to_owned(), app_id.to_owned()))
}

impl PostgresConfigurationStore {
    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            pool: PgPool::new(&config.pg)?,
            config,
            schema: OnceCell::new(),
        })
    }

    /// The channel this store's trigger notifies.
    pub fn channel(&self) -> &str {
        &self.config.channel
    }

    async fn ensure_schema(&self) -> Result<()> {
        self.schema
            .get_or_try_init(|| async {
                let Config {
                    table,
                    channel,
                    trigger,
                    ..
                } = &self.config;
                let mut ddl = format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        key text NOT NULL PRIMARY KEY,
                        value text NOT NULL,
                        version text NOT NULL,
                        metadata json
                    );"
                );
                if self.config.create_trigger {
                    let function = match table.split_once('.') {
                        Some((schema, _)) => format!("{schema}.{trigger}"),
                        None => trigger.clone(),
                    };
                    // Names are validated identifiers, so they can sit in SQL text.
                    ddl.push_str(&format!(
                        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
                         LANGUAGE plpgsql AS $plinth$
                         DECLARE r record;
                         BEGIN
                           IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
                           PERFORM pg_notify('{channel}', json_build_object(
                             'table', TG_TABLE_NAME,
                             'action', TG_OP,
                             'appId', coalesce(current_setting('plinth.app_id', true), ''),
                             'data', json_build_object('key', r.key, 'version', r.version)
                           )::text);
                           RETURN NULL;
                         END $plinth$;
                         DO $plinth$ BEGIN
                           IF NOT EXISTS (SELECT 1 FROM pg_trigger
                               WHERE tgname = '{trigger}' AND tgrelid = '{table}'::regclass) THEN
                             CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table}
                               FOR EACH ROW EXECUTE FUNCTION {function}();
                           END IF;
                         END $plinth$;"
                    ));
                }
                create_schema(
                    &self.pool,
                    &format!("plinth-configuration-postgresql-{table}"),
                    &ddl,
                )
                .await
            })
            .await
            .map(|_| ())
    }

    /// The stored keys a query covers: its keys, or every key under its group and label.
    fn select_sql(&self, query: &ConfigurationQuery) -> (String, Vec<String>) {
        let table = &self.config.table;
        let columns = "key, value, version, metadata::text";
        if !query.keys.is_empty() {
            let keys = query
                .keys
                .iter()
                .map(|k| stored_key(&query.group, &query.label, k))
                .collect();
            return (
                format!("SELECT {columns} FROM {table} WHERE key = ANY($1) ORDER BY key"),
                keys,
            );
        }
        let prefix = stored_key(&query.group, &query.label, "");
        if prefix.is_empty() {
            // Dapr's items: those without a group or label. Every query takes one array
            // parameter; here it is empty and excludes nothing.
            (
                format!(
                    "SELECT {columns} FROM {table} WHERE strpos(key, '{SEPARATOR}') = 0 AND key <> ALL($1::text[])
                     ORDER BY key LIMIT {MAX_ITEMS}"
                ),
                Vec::new(),
            )
        } else {
            (
                format!(
                    "SELECT {columns} FROM {table} WHERE left(key, char_length(($1::text[])[1])) = ($1::text[])[1]
                     ORDER BY key LIMIT {MAX_ITEMS}"
                ),
                vec![prefix],
            )
        }
    }
}

/// The current rows of `keys`.
async fn read_keys(pool: &PgPool, table: &str, keys: &[String]) -> Result<Vec<ConfigurationItem>> {
    let conn = pool.conn().await?;
    pool.timed(async {
        let sql =
            format!("SELECT key, value, version, metadata::text FROM {table} WHERE key = ANY($1)");
        let rows = conn.query(&sql, &[&keys]).await.map_err(pg_error)?;
        Ok(rows.iter().map(item_of).collect())
    })
    .await
}

/// Every stored key, up to [`MAX_ITEMS`].
async fn all_keys(pool: &PgPool, table: &str) -> Result<Vec<String>> {
    let conn = pool.conn().await?;
    pool.timed(async {
        let sql = format!("SELECT key FROM {table} ORDER BY key LIMIT {MAX_ITEMS}");
        let rows = conn.query(&sql, &[]).await.map_err(pg_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    })
    .await
}

#[async_trait]
impl Component for PostgresConfigurationStore {
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
impl ConfigurationStore for PostgresConfigurationStore {
    async fn get(&self, query: &ConfigurationQuery) -> Result<Vec<ConfigurationItem>> {
        self.ensure_schema().await?;
        let (sql, params) = self.select_sql(query);
        let conn = self.pool.conn().await?;
        self.pool
            .timed(async {
                let rows = conn.query(&sql, &[&params]).await.map_err(pg_error)?;
                Ok(rows.iter().map(item_of).collect())
            })
            .await
    }

    async fn set(&self, app_id: &str, items: Vec<ConfigurationItem>) -> Result<()> {
        if items.iter().any(|item| item.key.is_empty()) {
            return Err(Error::invalid_argument(
                "a configuration item has an empty key",
            ));
        }
        if items.is_empty() {
            return Ok(());
        }
        self.ensure_schema().await?;
        let table = &self.config.table;
        let update = format!(
            "UPDATE {table} SET value = $2, metadata = $3::text::json,
               version = (CASE WHEN version ~ '^[0-9]{{1,18}}$' THEN version::bigint + 1 ELSE 1 END)::text
             WHERE key = $1"
        );
        let insert = format!(
            "INSERT INTO {table} (key, value, version, metadata) VALUES ($1, $2, '1', $3::text::json)"
        );
        let lock_name = format!("plinth-configuration-postgresql-{table}-");
        let mut conn = self.pool.conn().await?;
        self.pool
            .timed(async {
                let tx = conn.transaction().await.map_err(pg_error)?;
                tx.execute("SELECT set_config('plinth.app_id', $1, true)", &[&app_id])
                    .await
                    .map_err(pg_error)?;
                for item in &items {
                    let key = stored_key(&item.group, &item.label, &item.key);
                    let metadata = serde_json::to_string(&item.metadata)
                        .map_err(|e| Error::internal(format!("item metadata: {e}")))?;
                    // A table created by hand may have no unique key, so no ON CONFLICT:
                    // an advisory lock per key orders concurrent writers instead.
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtext($1))",
                        &[&format!("{lock_name}{key}")],
                    )
                    .await
                    .map_err(pg_error)?;
                    let updated = tx
                        .execute(&update, &[&key, &item.content, &metadata])
                        .await
                        .map_err(pg_error)?;
                    if updated == 0 {
                        tx.execute(&insert, &[&key, &item.content, &metadata])
                            .await
                            .map_err(pg_error)?;
                    }
                }
                tx.commit().await.map_err(pg_error)
            })
            .await
    }

    async fn delete(&self, query: &ConfigurationQuery) -> Result<()> {
        self.ensure_schema().await?;
        let keys: Vec<String> = if query.keys.is_empty() {
            self.get(query)
                .await?
                .into_iter()
                .map(|item| stored_key(&item.group, &item.label, &item.key))
                .collect()
        } else {
            query
                .keys
                .iter()
                .map(|k| stored_key(&query.group, &query.label, k))
                .collect()
        };
        if keys.is_empty() {
            return Ok(());
        }
        let sql = format!("DELETE FROM {} WHERE key = ANY($1)", self.config.table);
        let mut conn = self.pool.conn().await?;
        self.pool
            .timed(async {
                let tx = conn.transaction().await.map_err(pg_error)?;
                tx.execute(
                    "SELECT set_config('plinth.app_id', $1, true)",
                    &[&query.app_id],
                )
                .await
                .map_err(pg_error)?;
                tx.execute(&sql, &[&keys]).await.map_err(pg_error)?;
                tx.commit().await.map_err(pg_error)
            })
            .await
    }

    async fn watch(&self) -> Result<mpsc::Receiver<ConfigurationChange>> {
        self.ensure_schema().await?;
        let listener = Listener::connect(&self.config.pg, &self.config.channel).await?;
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let watch = Watch {
            pool: self.pool.clone(),
            settings: self.config.pg.clone(),
            table: self.config.table.clone(),
            channel: self.config.channel.clone(),
            tx,
            pending: BTreeMap::new(),
        };
        tokio::spawn(watch.run(listener));
        Ok(rx)
    }
}

type Messages =
    Pin<Box<dyn Stream<Item = std::result::Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

/// A dedicated connection that LISTENs on the channel. The client is kept so that the
/// connection stays open.
struct Listener {
    _client: Client,
    messages: Messages,
}

impl Listener {
    async fn connect(settings: &PgSettings, channel: &str) -> Result<Self> {
        let connect = async {
            let (client, mut connection) = settings
                .connection()
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(pg_error)?;
            let mut messages: Messages = Box::pin(futures::stream::poll_fn(move |cx| {
                connection.poll_message(cx)
            }));
            // The connection only makes progress while polled, so poll it while LISTEN runs.
            {
                let listen_sql = format!("LISTEN \"{channel}\"");
                let listen = client.batch_execute(&listen_sql);
                tokio::pin!(listen);
                loop {
                    tokio::select! {
                        done = &mut listen => {
                            done.map_err(pg_error)?;
                            break;
                        }
                        message = messages.next() => match message {
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(pg_error(e)),
                            None => return Err(Error::unavailable("postgresql: the listening connection closed")),
                        }
                    }
                }
            }
            Ok(Self {
                _client: client,
                messages,
            })
        };
        match tokio::time::timeout(settings.timeout, connect).await {
            Ok(result) => result.map_err(|e| e.context(format!("listening on {channel}"))),
            Err(_) => Err(Error::unavailable(format!(
                "postgresql: listening on {channel} took longer than {:?}",
                settings.timeout
            ))),
        }
    }
}

/// What a watcher does after a wake-up.
enum Step {
    Listen,
    Reconnect,
    Flush,
}

/// One watcher's state: the keys it was told about and has not reported yet.
struct Watch {
    pool: PgPool,
    settings: PgSettings,
    table: String,
    channel: String,
    tx: mpsc::Sender<ConfigurationChange>,
    /// Stored key -> the app id of its last writer. Reported once the receiver has room, so
    /// a lagging receiver loses no key: it gets each key's current state once it catches up.
    pending: BTreeMap<String, String>,
}

impl Watch {
    async fn run(mut self, first: Listener) {
        let mut listener = Some(first);
        let mut backoff = Duration::from_millis(500);
        loop {
            let Some(current) = listener.as_mut() else {
                tokio::select! {
                    _ = self.tx.closed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                match Listener::connect(&self.settings, &self.channel).await {
                    Ok(reconnected) => {
                        tracing::info!(
                            channel = self.channel,
                            "configuration.postgresql: listening again"
                        );
                        listener = Some(reconnected);
                        backoff = Duration::from_millis(500);
                        // Changes made while disconnected were not announced: report every
                        // item as it is now.
                        match all_keys(&self.pool, &self.table).await {
                            Ok(keys) => {
                                for key in keys {
                                    self.pending.entry(key).or_default();
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "configuration.postgresql: re-reading after reconnecting failed")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "configuration.postgresql: reconnecting the listener failed");
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            let step = tokio::select! {
                _ = self.tx.closed() => return,
                message = current.messages.next() => match message {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        match decode_notification(n.payload(), &self.table) {
                            Some((key, app_id)) => { self.pending.insert(key, app_id); }
                            None => tracing::debug!(payload = n.payload(), "configuration.postgresql: ignoring a notification"),
                        }
                        Step::Listen
                    }
                    Some(Ok(_)) => Step::Listen,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "configuration.postgresql: the listening connection failed");
                        Step::Reconnect
                    }
                    None => {
                        tracing::warn!("configuration.postgresql: the listening connection closed");
                        Step::Reconnect
                    }
                },
                // Only this task sends, so the room stays free for the flush.
                _room = self.tx.reserve(), if !self.pending.is_empty() => Step::Flush,
            };
            match step {
                Step::Listen => {}
                Step::Reconnect => listener = None,
                Step::Flush => {
                    if !self.flush().await {
                        return;
                    }
                }
            }
        }
    }

    /// Report a batch of pending keys as they now are. Returns false when the receiver is
    /// gone.
    async fn flush(&mut self) -> bool {
        let batch: Vec<(String, String)> = {
            let keys: Vec<String> = self.pending.keys().take(FLUSH_BATCH).cloned().collect();
            keys.into_iter()
                .filter_map(|k| self.pending.remove_entry(&k))
                .collect()
        };
        let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        let current = match read_keys(&self.pool, &self.table, &keys).await {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(error = %e, "configuration.postgresql: re-reading changed keys failed");
                self.pending.extend(batch);
                tokio::select! {
                    _ = self.tx.closed() => return false,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                return true;
            }
        };
        let mut found: HashMap<String, ConfigurationItem> = current
            .into_iter()
            .map(|item| (stored_key(&item.group, &item.label, &item.key), item))
            .collect();
        // One change per (app id, deleted, group, label), as a write through Plinth makes.
        let mut changes: Vec<(ConfigurationChange, Vec<(String, String)>)> = Vec::new();
        for (stored, app_id) in batch {
            let (item, deleted) = match found.remove(&stored) {
                Some(item) => (item, false),
                None => {
                    let (group, label, key) = split_key(&stored);
                    (
                        ConfigurationItem {
                            key,
                            group,
                            label,
                            ..Default::default()
                        },
                        true,
                    )
                }
            };
            match changes.iter_mut().find(|(c, _)| {
                c.app_id == app_id
                    && c.deleted == deleted
                    && c.items[0].group == item.group
                    && c.items[0].label == item.label
            }) {
                Some((change, keys)) => {
                    change.items.push(item);
                    keys.push((stored, app_id));
                }
                None => changes.push((
                    ConfigurationChange {
                        app_id: app_id.clone(),
                        items: vec![item],
                        deleted,
                    },
                    vec![(stored, app_id)],
                )),
            }
        }
        let mut changes = changes.into_iter();
        for (change, keys) in changes.by_ref() {
            match self.tx.try_send(change) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Reported when the receiver has room again, as they are then.
                    for (k, a) in keys {
                        self.pending.entry(k).or_insert(a);
                    }
                    break;
                }
            }
        }
        for (_, keys) in changes {
            for (k, a) in keys {
                self.pending.entry(k).or_insert(a);
            }
        }
        true
    }
}
