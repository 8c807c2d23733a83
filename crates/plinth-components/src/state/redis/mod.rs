//! `state.redis`: a state store in Redis with Dapr's data layout, so Plinth and Dapr can
//! share data on the same Redis.
//!
//! Data layout: one hash per key (the key as the building block prefixed it) with the field
//! `data` (the value's bytes, as given) and the field `version` (a decimal counter the store
//! increments on every write of the key, starting at 1). The ETag is `version`. TTLs are the
//! key's Redis expiry (`EXPIRE`); `ttlExpireTime` is computed from `PTTL` on read.
//!
//! Every write is one Lua script that checks the ETag rules of
//! [`plinth_core::component::state::check_etag`] and writes, so the check and the write are
//! atomic. A transaction is one script that checks every operation in order against the
//! state the earlier ones leave, and only then applies them all.
//!
//! In a Redis Cluster a script sees one hash slot: a transaction whose keys span slots is
//! refused with INVALID_ARGUMENT before anything is written (keys sharing a `{hash tag}`
//! share a slot), and bulk get sends one pipeline per slot.

use std::sync::Arc;

use ::redis::Script;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use plinth_core::component::state::{
    BulkGetItem, Concurrency, DeleteRequest, GetRequest, GetResponse, SetRequest, StateFeatures,
    StateStore, TransactionOp,
};
use plinth_core::component::{Component, Instance};
use plinth_core::metadata::{TTL_EXPIRE_TIME, Ttl, parse_ttl};
use plinth_core::{ComponentSpec, Error, Metadata, Result};

use crate::redis_client::RedisConn;
use crate::util::rfc3339;

mod config;
#[cfg(test)]
mod tests;

use config::Config;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "state.redis";

/// The hash field holding the value.
const DATA: &str = "data";
/// The hash field holding the version (the ETag).
const VERSION: &str = "version";

/// Check and write one key. KEYS[1] the key; ARGV: etag ("" for none), first-write ("1" or
/// "0"), data, ttl ("" keeps no expiry, else seconds). Returns the new version, or a
/// negative code: -1 an ETag for a missing key, -2 a different ETag, -3 first-write on an
/// existing key.
const SET_SCRIPT: &str = r#"
local v = redis.call("HGET", KEYS[1], "version")
if ARGV[1] ~= "" then
  if not v then return -1 end
  if v ~= ARGV[1] then return -2 end
elseif v and ARGV[2] == "1" then
  return -3
end
redis.call("HSET", KEYS[1], "data", ARGV[3])
local n = redis.call("HINCRBY", KEYS[1], "version", 1)
if ARGV[4] == "" then
  redis.call("PERSIST", KEYS[1])
else
  redis.call("EXPIRE", KEYS[1], ARGV[4])
end
return n
"#;

/// Check and delete one key. KEYS[1] the key; ARGV: etag, first-write. Returns 0 or a
/// negative code as [`SET_SCRIPT`] does.
const DELETE_SCRIPT: &str = r#"
local v = redis.call("HGET", KEYS[1], "version")
if ARGV[1] ~= "" then
  if not v then return -1 end
  if v ~= ARGV[1] then return -2 end
elseif v and ARGV[2] == "1" then
  return -3
end
redis.call("DEL", KEYS[1])
return 0
"#;

/// Check every operation in order, then apply them all. KEYS[i] is operation i's key; ARGV
/// holds five values per operation: "U" or "D", etag, first-write, data, ttl. Returns
/// {0, 0}, or {i, code} for the first operation that fails its check.
const TRANSACTION_SCRIPT: &str = r#"
local staged = {}
local function version(k)
  local v = staged[k]
  if v == nil then
    v = redis.call("HGET", k, "version")
    staged[k] = v
  end
  return v
end
for i = 1, #KEYS do
  local b = (i - 1) * 5
  local k = KEYS[i]
  local v = version(k)
  if ARGV[b + 2] ~= "" then
    if not v then return {i, -1} end
    if v ~= ARGV[b + 2] then return {i, -2} end
  elseif v and ARGV[b + 3] == "1" then
    return {i, -3}
  end
  if ARGV[b + 1] == "U" then
    staged[k] = tostring((tonumber(v) or 0) + 1)
  else
    staged[k] = false
  end
end
for i = 1, #KEYS do
  local b = (i - 1) * 5
  local k = KEYS[i]
  if ARGV[b + 1] == "U" then
    redis.call("HSET", k, "data", ARGV[b + 4])
    redis.call("HINCRBY", k, "version", 1)
    if ARGV[b + 5] == "" then
      redis.call("PERSIST", k)
    else
      redis.call("EXPIRE", k, ARGV[b + 5])
    end
  else
    redis.call("DEL", k)
  end
end
return {0, 0}
"#;

/// Build a `state.redis` store; metadata is validated here, the connection made in `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = Config::from_spec(spec)?;
    Ok(Instance::State(Arc::new(RedisStateStore::new(config))))
}

/// A state store in Redis with ETags, transactions and TTLs.
pub struct RedisStateStore {
    conn: RedisConn,
    default_ttl: Option<Ttl>,
    set_script: Script,
    delete_script: Script,
    transaction_script: Script,
}

impl std::fmt::Debug for RedisStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStateStore")
            .field("conn", &self.conn)
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

/// A write checked against the request alone, as the scripts take it.
#[derive(Debug)]
struct Write {
    key: String,
    etag: String,
    first_write: bool,
    /// `None` deletes.
    value: Option<(Bytes, String)>,
}

impl Write {
    fn upsert(req: SetRequest, default_ttl: Option<Ttl>) -> Result<Self> {
        let ttl = match parse_ttl(&req.metadata)?.or(default_ttl) {
            Some(Ttl::After(d)) => d.as_secs().to_string(),
            Some(Ttl::Never) | None => String::new(),
        };
        Ok(Self {
            key: valid_key(req.key)?,
            etag: valid_etag(req.etag)?,
            first_write: req.options.concurrency == Concurrency::FirstWrite,
            value: Some((req.value, ttl)),
        })
    }

    fn delete(req: DeleteRequest) -> Result<Self> {
        Ok(Self {
            key: valid_key(req.key)?,
            etag: valid_etag(req.etag)?,
            first_write: req.options.concurrency == Concurrency::FirstWrite,
            value: None,
        })
    }

    fn first_write_arg(&self) -> &'static str {
        if self.first_write { "1" } else { "0" }
    }
}

fn valid_key(key: String) -> Result<String> {
    if key.is_empty() {
        return Err(Error::invalid_argument("the key is empty"));
    }
    Ok(key)
}

/// ETags are version numbers, so anything that is not a decimal number cannot be one.
fn valid_etag(etag: Option<String>) -> Result<String> {
    match etag.filter(|e| !e.is_empty()) {
        None => Ok(String::new()),
        Some(e) if e.bytes().all(|b| b.is_ascii_digit()) => Ok(e),
        Some(e) => Err(Error::etag_invalid(format!(
            "etag {e:?} is not a decimal version number"
        ))),
    }
}

/// The error for a script's negative answer.
fn check_failed(code: i64, etag: &str) -> Error {
    match code {
        -1 => Error::etag_mismatch(format!("etag {etag:?} given for a key that does not exist")),
        -2 => Error::etag_mismatch(format!("etag {etag:?} does not match the stored etag")),
        -3 => Error::etag_mismatch(
            "first-write concurrency: the key already exists and no etag was given",
        ),
        other => Error::internal(format!("unexpected answer {other} from the redis script")),
    }
}

/// One key's read: `HMGET data version` and `PTTL`.
type Read = ((Option<Vec<u8>>, Option<String>), i64);

fn response(read: Read) -> Option<GetResponse> {
    let ((data, version), pttl) = read;
    // A hash without `data` is not a value this layout wrote; treat it as absent.
    let data = data?;
    let mut metadata = Metadata::new();
    if pttl > 0
        && let Some(at) = Utc::now().checked_add_signed(TimeDelta::milliseconds(pttl))
    {
        metadata.insert(TTL_EXPIRE_TIME.to_owned(), rfc3339(at));
    }
    Some(GetResponse {
        data: Bytes::from(data),
        etag: version,
        metadata,
        content_type: None,
    })
}

impl RedisStateStore {
    fn new(config: Config) -> Self {
        Self {
            conn: RedisConn::new(config.redis),
            default_ttl: config.default_ttl,
            set_script: Script::new(SET_SCRIPT),
            delete_script: Script::new(DELETE_SCRIPT),
            transaction_script: Script::new(TRANSACTION_SCRIPT),
        }
    }

    async fn write(&self, write: Write) -> Result<()> {
        let code: i64 = match &write.value {
            Some((data, ttl)) => {
                let mut invocation = self.set_script.key(&write.key);
                invocation
                    .arg(&write.etag)
                    .arg(write.first_write_arg())
                    .arg(data.as_ref())
                    .arg(ttl);
                self.conn
                    .run(|mut c| async move { invocation.invoke_async(&mut c).await })
                    .await?
            }
            None => {
                let mut invocation = self.delete_script.key(&write.key);
                invocation.arg(&write.etag).arg(write.first_write_arg());
                self.conn
                    .run(|mut c| async move { invocation.invoke_async(&mut c).await })
                    .await?
            }
        };
        if code < 0 {
            return Err(check_failed(code, &write.etag));
        }
        Ok(())
    }
}

#[async_trait]
impl Component for RedisStateStore {
    async fn init(&self) -> Result<()> {
        self.conn.init().await
    }

    async fn ping(&self) -> Result<()> {
        self.conn.ping().await
    }

    async fn close(&self) {
        self.conn.close().await;
    }
}

#[async_trait]
impl StateStore for RedisStateStore {
    fn features(&self) -> StateFeatures {
        StateFeatures {
            etag: true,
            transactional: true,
            ttl: true,
            query: false,
        }
    }

    async fn get(&self, req: GetRequest) -> Result<Option<GetResponse>> {
        let key = valid_key(req.key)?;
        let read: Read = self
            .conn
            .run(|mut c| async move {
                ::redis::pipe()
                    .atomic()
                    .hmget(&key, &[DATA, VERSION])
                    .pttl(&key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(response(read))
    }

    async fn bulk_get(&self, keys: Vec<String>, metadata: Metadata) -> Result<Vec<BulkGetItem>> {
        if keys.iter().any(String::is_empty) {
            return Err(Error::invalid_argument("a key is empty"));
        }
        // One pipeline per hash slot in a cluster (a pipeline cannot span slots there); not
        // atomic across keys, as bulk reads are not.
        let mut pipes = Vec::new();
        for group in self
            .conn
            .by_slot(keys.iter().enumerate().collect(), |(_, k)| *k)
        {
            let mut pipe = ::redis::pipe();
            for (_, key) in &group {
                pipe.hmget(key, &[DATA, VERSION]).pttl(key);
            }
            let order: Vec<usize> = group.into_iter().map(|(i, _)| i).collect();
            pipes.push((order, pipe));
        }
        let reads: Result<Vec<Read>> = self
            .conn
            .run(|c| async move {
                let answers = futures::future::try_join_all(pipes.iter().map(|(_, pipe)| {
                    let mut c = c.clone();
                    async move { pipe.query_async::<Vec<Read>>(&mut c).await }
                }))
                .await?;
                let mut reads: Vec<Option<Read>> = Vec::new();
                for ((order, _), answer) in pipes.iter().zip(answers) {
                    for (i, read) in order.iter().zip(answer) {
                        if reads.len() <= *i {
                            reads.resize_with(*i + 1, || None);
                        }
                        reads[*i] = Some(read);
                    }
                }
                Ok(reads.into_iter().flatten().collect())
            })
            .await;
        match reads {
            Ok(reads) if reads.len() == keys.len() => Ok(keys
                .into_iter()
                .zip(reads)
                .map(|(key, read)| BulkGetItem {
                    key,
                    value: response(read),
                    error: None,
                })
                .collect()),
            // One key of another type fails the whole pipeline: read one by one to report
            // the error on that key alone.
            Ok(_) | Err(_) => {
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    let req = GetRequest {
                        key: key.clone(),
                        metadata: metadata.clone(),
                        ..Default::default()
                    };
                    let (value, error) = match self.get(req).await {
                        Ok(value) => (value, None),
                        Err(err) => (None, Some(err.to_string())),
                    };
                    out.push(BulkGetItem { key, value, error });
                }
                Ok(out)
            }
        }
    }

    async fn set(&self, req: SetRequest) -> Result<()> {
        self.write(Write::upsert(req, self.default_ttl)?).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<()> {
        self.write(Write::delete(req)?).await
    }

    async fn transact(&self, ops: Vec<TransactionOp>, _metadata: Metadata) -> Result<()> {
        let writes = ops
            .into_iter()
            .enumerate()
            .map(|(index, op)| {
                let key = op.key().to_owned();
                match op {
                    TransactionOp::Upsert(req) => Write::upsert(req, self.default_ttl),
                    TransactionOp::Delete(req) => Write::delete(req),
                }
                .map_err(|err| err.context(format!("operation {index} (key {key:?})")))
            })
            .collect::<Result<Vec<_>>>()?;
        if writes.is_empty() {
            return Ok(());
        }
        // In a cluster one script sees one hash slot only: refuse rather than half-apply.
        self.conn.same_slot(writes.iter().map(|w| w.key.as_str()))?;
        let mut invocation = self.transaction_script.prepare_invoke();
        for write in &writes {
            invocation.key(&write.key);
            match &write.value {
                Some((data, ttl)) => invocation
                    .arg("U")
                    .arg(&write.etag)
                    .arg(write.first_write_arg())
                    .arg(data.as_ref())
                    .arg(ttl),
                None => invocation
                    .arg("D")
                    .arg(&write.etag)
                    .arg(write.first_write_arg())
                    .arg("")
                    .arg(""),
            };
        }
        let (index, code): (usize, i64) = self
            .conn
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        if index == 0 {
            return Ok(());
        }
        let failed = writes
            .get(index - 1)
            .ok_or_else(|| Error::internal(format!("the redis script named operation {index}")))?;
        Err(check_failed(code, &failed.etag).context(format!(
            "operation {} (key {:?})",
            index - 1,
            failed.key
        )))
    }
}
