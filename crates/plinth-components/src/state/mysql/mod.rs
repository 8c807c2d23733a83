//! `state.mysql`: a state store in a MySQL or MariaDB table, in Dapr's layout.
//!
//! Data layout (as Dapr's `state.mysql`, so either can read what the other wrote): one table
//! `tableName` (default `state`) in the database `schemaName` (default `dapr_state_store`,
//! created when missing), with `id varchar(255)` primary key, `value JSON`, `isbinary
//! boolean`, `insertDate` and `updateDate` timestamps, `eTag varchar(36)` (a random UUID per
//! write), `expiredate timestamp NULL` with an index, and Dapr's `row_id` auto-increment; plus
//! Dapr's metadata table (`dapr_metadata`) holding the `last-cleanup` mark. Both are created
//! on first use.
//!
//! Values: a value that is JSON is stored as it is, with `isbinary` false, as Dapr stores
//! JSON; any other value (and every value on a server whose JSON column rewrites text, which
//! MySQL's native JSON type does) is stored as Dapr stores bytes: a JSON string of its
//! standard base64, with `isbinary` true. MariaDB's JSON column is text, kept verbatim, so
//! either way the bytes read back are exactly the bytes written.
//!
//! A row whose `expiredate` has passed reads as absent; a background task deletes such rows
//! every `cleanupInterval`, coordinating with other instances (Dapr's included) through the
//! `last-cleanup` mark. Table names reach SQL text, so they are validated as plain
//! identifiers when the config is read; every value goes through bind parameters.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::DateTime;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, TxOpts, Value};
use plinth_core::component::state::{
    BulkGetItem, Concurrency, DeleteRequest, GetRequest, GetResponse, SetRequest, StateFeatures,
    StateStore, TransactionOp,
};
use plinth_core::component::{Component, Instance};
use plinth_core::metadata::{TTL_EXPIRE_TIME, Ttl, parse_ttl};
use plinth_core::{ComponentSpec, Error, Metadata, Result};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::mysql_client::{MysqlClient, server_code};
use crate::util::{Background, rfc3339};

pub mod config;
#[cfg(test)]
mod tests;

pub use config::MysqlStateConfig;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "state.mysql";

/// The condition a row must meet to exist for readers.
const LIVE: &str = "(expiredate IS NULL OR expiredate > CURRENT_TIMESTAMP)";
/// The condition of a row that has expired but not been deleted yet.
const EXPIRED: &str = "(expiredate IS NOT NULL AND expiredate <= CURRENT_TIMESTAMP)";
/// `id` is `varchar(255)`: a longer key cannot be stored.
const MAX_KEY_CHARS: usize = 255;
/// MariaDB refuses JSON nested deeper than 32; deeper values are stored as bytes.
const MAX_JSON_DEPTH: usize = 16;
/// Keys per statement of a bulk get.
const BULK_GET_CHUNK: usize = 500;
/// Server errors meaning the JSON column refused the text (a failed CHECK (json_valid),
/// an invalid JSON text, a character the column's charset lacks): store it as bytes.
const JSON_REFUSED: [u16; 3] = [4025, 3140, 1366];

/// Build a `state.mysql` store from its metadata; it connects on `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = MysqlStateConfig::from_spec(spec)?;
    Ok(Instance::State(Arc::new(MysqlStateStore::new(config))))
}

/// What the `value` column does with JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueColumn {
    /// Keeps it verbatim (MariaDB, where JSON is LONGTEXT with a validity check).
    Verbatim,
    /// Normalises it (MySQL's native JSON type): every value is stored as bytes.
    Rewrites,
}

/// A value as the table holds it.
struct Encoded {
    text: Vec<u8>,
    binary: bool,
}

fn encode_binary(value: &[u8]) -> Encoded {
    let mut text = Vec::with_capacity(value.len() * 4 / 3 + 4);
    text.push(b'"');
    text.extend_from_slice(BASE64.encode(value).as_bytes());
    text.push(b'"');
    Encoded { text, binary: true }
}

fn encode(value: &[u8], column: ValueColumn) -> Encoded {
    if column == ValueColumn::Verbatim && is_json(value) {
        return Encoded {
            text: value.to_vec(),
            binary: false,
        };
    }
    encode_binary(value)
}

/// Whether `value` is JSON text the column will take: valid, and not nested too deep.
fn is_json(value: &[u8]) -> bool {
    json_depth(value) <= MAX_JSON_DEPTH
        && serde_json::from_slice::<&serde_json::value::RawValue>(value).is_ok()
}

/// The deepest nesting of arrays and objects in `value`, ignoring brackets in strings.
fn json_depth(value: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in value {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The bytes a row holds: JSON text as it is, or Dapr's base64 JSON string when binary.
fn decode(text: Vec<u8>, binary: bool) -> Result<Bytes> {
    if !binary {
        return Ok(Bytes::from(text));
    }
    let encoded: String = serde_json::from_slice(&text).map_err(|e| {
        Error::internal(format!(
            "mysql: a binary value is not a JSON string of base64: {e}"
        ))
    })?;
    // Dapr writes standard base64; MariaDB's TO_BASE64 wraps lines, so tolerate those.
    let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    BASE64
        .decode(compact)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("mysql: a binary value is not base64: {e}")))
}

/// A request's ETag: this store's are UUIDs, so anything else cannot be one.
fn parse_etag(etag: Option<&str>) -> Result<Option<String>> {
    match etag.filter(|e| !e.is_empty()) {
        None => Ok(None),
        Some(e) => Uuid::parse_str(e)
            .map(|_| Some(e.to_owned()))
            .map_err(|_| Error::etag_invalid(format!("etag {e:?} is not a UUID"))),
    }
}

fn valid_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument("the key is empty"));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(Error::invalid_argument(format!(
            "the key is longer than {MAX_KEY_CHARS} characters, the most the id column holds"
        )));
    }
    Ok(())
}

/// The TTL of a write in whole seconds, `None` for no expiry.
fn ttl_seconds(metadata: &Metadata) -> Result<Option<u64>> {
    Ok(match parse_ttl(metadata)? {
        Some(Ttl::After(ttl)) => Some(ttl.as_secs()),
        Some(Ttl::Never) | None => None,
    })
}

/// One row as read: value, isbinary, eTag, expiry as Unix seconds.
type Row = (Vec<u8>, bool, String, Option<i64>);

fn response(row: Row) -> Result<GetResponse> {
    let (value, binary, etag, expires) = row;
    let mut metadata = Metadata::new();
    if let Some(at) = expires.and_then(|s| DateTime::from_timestamp(s, 0)) {
        metadata.insert(TTL_EXPIRE_TIME.to_owned(), rfc3339(at));
    }
    Ok(GetResponse {
        data: decode(value, binary)?,
        etag: Some(etag),
        metadata,
        content_type: None,
    })
}

/// Run a statement and count the rows it changed.
async fn exec_affected<Q: Queryable>(
    q: &mut Q,
    sql: &str,
    params: Vec<Value>,
) -> mysql_async::Result<u64> {
    let result = q.exec_iter(sql, Params::Positional(params)).await?;
    let affected = result.affected_rows();
    result.drop_result().await?;
    Ok(affected)
}

/// A state store in MySQL or MariaDB with ETags, transactions and TTLs.
pub struct MysqlStateStore {
    config: MysqlStateConfig,
    client: Arc<MysqlClient>,
    /// `schema`.`table`, ready for SQL text.
    table: String,
    /// `schema`.`metadata table`.
    metadata_table: String,
    schema: OnceCell<ValueColumn>,
    cleaner: Background,
}

impl fmt::Debug for MysqlStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlStateStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MysqlStateStore {
    /// A store for `config`; no connection is made until `init` or the first call.
    pub fn new(config: MysqlStateConfig) -> Self {
        // No default database: the schema may not exist yet, and every name is qualified.
        let client = MysqlClient::new(&config.connection, None, config.max_conns, config.timeout);
        Self {
            table: format!("`{}`.`{}`", config.schema, config.table),
            metadata_table: format!("`{}`.`{}`", config.schema, config.metadata_table),
            config,
            client: Arc::new(client),
            schema: OnceCell::new(),
            cleaner: Background::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MysqlStateConfig {
        &self.config
    }

    /// Create the database and tables on first use; learn what the value column does.
    async fn ensure_schema(&self) -> Result<ValueColumn> {
        self.schema
            .get_or_try_init(|| async {
                let mut conn = self.client.conn().await?;
                self.client.timed(self.create_schema(&mut conn)).await
            })
            .await
            .copied()
    }

    async fn create_schema(&self, conn: &mut mysql_async::Conn) -> Result<ValueColumn> {
        let c = &self.client;
        let schema = &self.config.schema;
        let exists: Option<i64> = conn
            .exec_first(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = ?",
                (schema,),
            )
            .await
            .map_err(|e| c.error(e))?;
        if exists.is_none() {
            // Checked first, so a user without CREATE on an existing database still works.
            conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{schema}`"))
                .await
                .map_err(|e| c.error(e))?;
        }
        let table = &self.table;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
                value JSON NOT NULL,
                isbinary BOOLEAN NOT NULL,
                insertDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                updateDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
                eTag VARCHAR(36) NOT NULL,
                expiredate TIMESTAMP NULL,
                row_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
                INDEX expiredate_idx (expiredate),
                UNIQUE KEY row_id_uidx (row_id)
            ) DEFAULT CHARSET = utf8mb4"
        ))
        .await
        .map_err(|e| c.error(e))?;
        let columns: Vec<(String, String)> = conn
            .exec(
                "SELECT LOWER(column_name), LOWER(data_type) FROM information_schema.columns
                 WHERE table_schema = ? AND table_name = ?",
                (schema, &self.config.table),
            )
            .await
            .map_err(|e| c.error(e))?;
        let columns: HashMap<String, String> = columns.into_iter().collect();
        let missing: Vec<&str> = ["id", "value", "isbinary", "etag"]
            .into_iter()
            .filter(|name| !columns.contains_key(*name))
            .collect();
        if !missing.is_empty() {
            return Err(Error::invalid_argument(format!(
                "mysql: table {table} exists but is not in Dapr's layout (no column {}); use another tableName",
                missing.join(", ")
            )));
        }
        if !columns.contains_key("expiredate") {
            // A table Dapr created before it had TTLs (1.11): add the column as Dapr does.
            conn.query_drop(format!(
                "ALTER TABLE {table} ADD COLUMN expiredate TIMESTAMP NULL, ADD INDEX expiredate_idx (expiredate)"
            ))
            .await
            .map_err(|e| c.error(e))?;
        }
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (
                id VARCHAR(255) NOT NULL PRIMARY KEY,
                value TEXT NOT NULL
            ) DEFAULT CHARSET = utf8mb4",
            self.metadata_table
        ))
        .await
        .map_err(|e| c.error(e))?;
        Ok(match columns.get("value").map(String::as_str) {
            Some("json") => ValueColumn::Rewrites,
            _ => ValueColumn::Verbatim,
        })
    }

    /// Delete every expired row now; returns how many were deleted.
    pub async fn cleanup_expired(&self) -> Result<u64> {
        self.ensure_schema().await?;
        let mut conn = self.client.conn().await?;
        self.client
            .timed(delete_expired(&self.client, &mut conn, &self.table))
            .await
    }

    async fn do_set<Q: Queryable>(
        &self,
        q: &mut Q,
        req: &SetRequest,
        column: ValueColumn,
    ) -> Result<()> {
        valid_key(&req.key)?;
        let want = parse_etag(req.etag.as_deref())?;
        let ttl = ttl_seconds(&req.metadata)?;
        let encoded = encode(&req.value, column);
        match self.write(q, req, want.as_deref(), ttl, &encoded).await {
            Err(err)
                if !encoded.binary
                    && server_code(&err).is_some_and(|c| JSON_REFUSED.contains(&c)) =>
            {
                // The column refused this JSON (a limit of the server's validator): store
                // the bytes instead, which read back the same.
                let binary = encode_binary(&req.value);
                self.write(q, req, want.as_deref(), ttl, &binary).await
            }
            other => other,
        }
    }

    async fn write<Q: Queryable>(
        &self,
        q: &mut Q,
        req: &SetRequest,
        want: Option<&str>,
        ttl: Option<u64>,
        encoded: &Encoded,
    ) -> Result<()> {
        let table = &self.table;
        let etag = Uuid::new_v4().to_string();
        let expires = if ttl.is_some() {
            "CURRENT_TIMESTAMP + INTERVAL ? SECOND"
        } else {
            "NULL"
        };
        let value = Value::Bytes(encoded.text.clone());
        let binary = Value::from(encoded.binary);
        let ttl_param = ttl.map(Value::from);
        let (sql, params) = match want {
            Some(want) => {
                let sql = format!(
                    "UPDATE {table} SET value = ?, isbinary = ?, eTag = ?, expiredate = {expires}
                     WHERE id = ? AND eTag = ? AND {LIVE}"
                );
                let mut params = vec![value, binary, Value::from(etag)];
                params.extend(ttl_param);
                params.extend([Value::from(&req.key), Value::from(want)]);
                (sql, params)
            }
            None => {
                // First-write may still replace a row that has expired but not been deleted.
                // MySQL assigns left to right, so `expiredate` goes last.
                let set = if req.options.concurrency == Concurrency::FirstWrite {
                    ["value", "isbinary", "eTag", "expiredate"]
                        .map(|c| format!("{c} = IF({EXPIRED}, VALUES({c}), {c})"))
                        .join(", ")
                } else {
                    ["value", "isbinary", "eTag", "expiredate"]
                        .map(|c| format!("{c} = VALUES({c})"))
                        .join(", ")
                };
                let sql = format!(
                    "INSERT INTO {table} (id, value, isbinary, eTag, expiredate)
                     VALUES (?, ?, ?, ?, {expires}) ON DUPLICATE KEY UPDATE {set}"
                );
                let mut params = vec![Value::from(&req.key), value, binary, Value::from(etag)];
                params.extend(ttl_param);
                (sql, params)
            }
        };
        let affected = exec_affected(q, &sql, params).await.map_err(|e| {
            let err = self.client.error(e);
            // A TTL past what a TIMESTAMP holds (2038 on most servers).
            if ttl.is_some() && matches!(server_code(&err), Some(1292 | 1441 | 1264)) {
                Error::invalid_argument(format!(
                    "metadata ttlInSeconds: the expiry time is out of the server's range: {err}"
                ))
            } else {
                err
            }
        })?;
        if affected > 0 {
            return Ok(());
        }
        Err(match want {
            Some(want) => Error::etag_mismatch(format!(
                "etag {want:?} does not match the stored etag, or the key does not exist"
            )),
            None => Error::etag_mismatch(
                "first-write concurrency: the key already exists and no etag was given",
            ),
        })
    }

    async fn do_delete<Q: Queryable>(&self, q: &mut Q, req: &DeleteRequest) -> Result<()> {
        valid_key(&req.key)?;
        let want = parse_etag(req.etag.as_deref())?;
        let table = &self.table;
        let c = &self.client;
        match want {
            Some(want) => {
                let sql = format!("DELETE FROM {table} WHERE id = ? AND eTag = ? AND {LIVE}");
                let affected =
                    exec_affected(q, &sql, vec![Value::from(&req.key), Value::from(&want)])
                        .await
                        .map_err(|e| c.error(e))?;
                if affected != 1 {
                    return Err(Error::etag_mismatch(format!(
                        "etag {want:?} does not match the stored etag, or the key does not exist"
                    )));
                }
            }
            None => {
                if req.options.concurrency == Concurrency::FirstWrite {
                    let sql = format!("SELECT 1 FROM {table} WHERE id = ? AND {LIVE}");
                    let live: Option<i64> = q
                        .exec_first(sql, (&req.key,))
                        .await
                        .map_err(|e| c.error(e))?;
                    if live.is_some() {
                        return Err(Error::etag_mismatch(
                            "first-write concurrency: the key exists and no etag was given",
                        ));
                    }
                }
                let sql = format!("DELETE FROM {table} WHERE id = ?");
                q.exec_drop(sql, (&req.key,))
                    .await
                    .map_err(|e| c.error(e))?;
            }
        }
        Ok(())
    }

    async fn do_transact(
        &self,
        conn: &mut mysql_async::Conn,
        ops: &[TransactionOp],
        column: ValueColumn,
    ) -> Result<()> {
        let c = &self.client;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| c.error(e))?;
        for (index, op) in ops.iter().enumerate() {
            let done = match op {
                TransactionOp::Upsert(req) => self.do_set(&mut tx, req, column).await,
                TransactionOp::Delete(req) => self.do_delete(&mut tx, req).await,
            };
            if let Err(err) = done {
                // Dropping the transaction would roll back too, but only when the
                // connection is next used; say so now.
                let _ = tx.rollback().await;
                return Err(err.context(format!("operation {index} (key {:?})", op.key())));
            }
        }
        tx.commit().await.map_err(|e| c.error(e))
    }
}

async fn delete_expired(
    client: &MysqlClient,
    conn: &mut mysql_async::Conn,
    table: &str,
) -> Result<u64> {
    exec_affected(
        conn,
        &format!("DELETE FROM {table} WHERE {EXPIRED}"),
        Vec::new(),
    )
    .await
    .map_err(|e| client.error(e))
}

/// Every `every`, claim the cleanup in the metadata table (as Dapr does: only when the last
/// one, by any instance, is older than the interval) and delete expired rows, until aborted.
async fn cleanup_loop(
    client: Arc<MysqlClient>,
    table: String,
    metadata_table: String,
    every: Duration,
) {
    let start = tokio::time::Instant::now() + every;
    let mut ticker = tokio::time::interval_at(start, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Claim a little early, so that jitter does not skip every other round.
    let claim_ms = every.as_millis().saturating_mul(95) / 100;
    let claim_ms = u64::try_from(claim_ms).unwrap_or(u64::MAX);
    loop {
        ticker.tick().await;
        let round = async {
            let mut conn = client.conn().await?;
            let claimed = exec_affected(
                &mut conn,
                &format!(
                    "INSERT INTO {metadata_table} (id, value) VALUES ('last-cleanup', CURRENT_TIMESTAMP)
                     ON DUPLICATE KEY UPDATE value = IF(CURRENT_TIMESTAMP > DATE_ADD(value, INTERVAL ?*1000 MICROSECOND), CURRENT_TIMESTAMP, value)"
                ),
                vec![Value::from(claim_ms)],
            )
            .await
            .map_err(|e| client.error(e))?;
            if claimed == 0 {
                return Ok(None);
            }
            delete_expired(&client, &mut conn, &table).await.map(Some)
        };
        match client.timed(round).await {
            Ok(Some(n)) => tracing::debug!(table, deleted = n, "deleted expired state rows"),
            Ok(None) => tracing::debug!(table, "another instance cleaned up recently"),
            Err(err) => tracing::warn!(table, error = %err, "cleanup of expired rows failed"),
        }
    }
}

#[async_trait]
impl Component for MysqlStateStore {
    async fn init(&self) -> Result<()> {
        self.ensure_schema().await?;
        if let Some(every) = self.config.cleanup_interval {
            self.cleaner.start_once(|| {
                cleanup_loop(
                    Arc::clone(&self.client),
                    self.table.clone(),
                    self.metadata_table.clone(),
                    every,
                )
            });
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.client.conn().await?;
        self.client
            .timed(async { conn.ping().await.map_err(|e| self.client.error(e)) })
            .await
    }

    async fn close(&self) {
        self.cleaner.stop();
        self.client.close().await;
    }
}

#[async_trait]
impl StateStore for MysqlStateStore {
    fn features(&self) -> StateFeatures {
        StateFeatures {
            etag: true,
            transactional: true,
            ttl: true,
            query: false,
        }
    }

    async fn get(&self, req: GetRequest) -> Result<Option<GetResponse>> {
        valid_key(&req.key)?;
        self.ensure_schema().await?;
        let mut conn = self.client.conn().await?;
        let row: Option<Row> = self
            .client
            .timed(async {
                let sql = format!(
                    "SELECT value, isbinary, eTag, CAST(UNIX_TIMESTAMP(expiredate) AS SIGNED)
                     FROM {} WHERE id = ? AND {LIVE}",
                    self.table
                );
                conn.exec_first(sql, (&req.key,))
                    .await
                    .map_err(|e| self.client.error(e))
            })
            .await?;
        row.map(response).transpose()
    }

    async fn bulk_get(&self, keys: Vec<String>, _metadata: Metadata) -> Result<Vec<BulkGetItem>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        for key in &keys {
            valid_key(key)?;
        }
        self.ensure_schema().await?;
        let mut conn = self.client.conn().await?;
        let found: HashMap<String, Row> = self
            .client
            .timed(async {
                let mut found = HashMap::new();
                for chunk in keys.chunks(BULK_GET_CHUNK) {
                    let marks = vec!["?"; chunk.len()].join(", ");
                    let sql = format!(
                        "SELECT id, value, isbinary, eTag, CAST(UNIX_TIMESTAMP(expiredate) AS SIGNED)
                         FROM {} WHERE id IN ({marks}) AND {LIVE}",
                        self.table
                    );
                    let params: Vec<Value> = chunk.iter().map(Value::from).collect();
                    let rows: Vec<(String, Vec<u8>, bool, String, Option<i64>)> = conn
                        .exec(sql, Params::Positional(params))
                        .await
                        .map_err(|e| self.client.error(e))?;
                    for (id, value, binary, etag, expires) in rows {
                        found.insert(id, (value, binary, etag, expires));
                    }
                }
                Ok(found)
            })
            .await?;
        Ok(keys
            .into_iter()
            .map(|key| match found.get(&key).cloned().map(response) {
                None => BulkGetItem {
                    key,
                    value: None,
                    error: None,
                },
                Some(Ok(value)) => BulkGetItem {
                    key,
                    value: Some(value),
                    error: None,
                },
                Some(Err(err)) => BulkGetItem {
                    key,
                    value: None,
                    error: Some(err.to_string()),
                },
            })
            .collect())
    }

    async fn set(&self, req: SetRequest) -> Result<()> {
        let column = self.ensure_schema().await?;
        let mut conn = self.client.conn().await?;
        self.client
            .timed(self.do_set(&mut conn, &req, column))
            .await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<()> {
        self.ensure_schema().await?;
        let mut conn = self.client.conn().await?;
        self.client.timed(self.do_delete(&mut conn, &req)).await
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let column = self.ensure_schema().await?;
        let mut conn = self.client.conn().await?;
        self.client
            .timed(self.do_transact(&mut conn, &ops, column))
            .await
    }
}
