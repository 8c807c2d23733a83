//! `configuration.redis`: configuration items in Redis with Dapr's layout, so Plinth and
//! Dapr can share items on the same Redis.
//!
//! Data layout: one string key per item whose value is `{value}||{version}`. A value without
//! `||` is read as the value with an empty version, as Dapr does; of a value with more than
//! one `||`, the part before the first is the value and the part between the first and the
//! second is the version. An item without group or label (every item Dapr's API sees) is
//! stored under its key as is; an item with a group or label under `{group}||{label}||{key}`.
//! The app id is not part of the Redis key: like Dapr, the Redis database is the namespace,
//! shared by every app that uses the component.
//!
//! Every write through Plinth is one Lua script that writes the items (bumping each key's
//! numeric version, starting at 1) and `PUBLISH`es a JSON change message on the channel
//! `plinth-configuration||{component name}`. Each `watch` subscribes to that channel on its
//! own pub/sub connection, re-reads the keys a message names and sends them as one change.
//!
//! In a Redis Cluster a write runs one script (and one message) per hash slot, a get of
//! every key scans each primary, and a watch subscribes on one seed node: a `PUBLISH`
//! reaches every node of a cluster.

use std::sync::Arc;

use ::redis::Script;
use async_trait::async_trait;
use futures::StreamExt;
use plinth_core::component::configuration::{
    ConfigurationChange, ConfigurationItem, ConfigurationQuery, ConfigurationStore,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Result};
use serde_json::json;
use tokio::sync::mpsc;

use crate::redis_client::{RedisConn, RedisSettings};

#[cfg(test)]
mod tests;

/// The type name this component registers under.
pub const TYPE_NAME: &str = "configuration.redis";

/// The separator between value and version, and between group, label and key.
const SEPARATOR: &str = "||";
/// The prefix of the change channel; the component's name follows.
pub const CHANNEL_PREFIX: &str = "plinth-configuration||";
/// The most keys a get of every key returns.
pub const MAX_SCAN_KEYS: usize = 10_000;
/// The capacity of the channel each `watch` returns.
const WATCH_CAPACITY: usize = 256;

/// Write items and publish the change. KEYS: the Redis keys; ARGV[1] the channel, ARGV[2]
/// the message, then one value per key. Returns the new versions.
const SET_SCRIPT: &str = r#"
local versions = {}
for i = 1, #KEYS do
  local old = redis.call("GET", KEYS[i])
  local v = 0
  if old then
    local s = string.find(old, "||", 1, true)
    if s then
      local rest = string.sub(old, s + 2)
      local e = string.find(rest, "||", 1, true)
      if e then rest = string.sub(rest, 1, e - 1) end
      v = tonumber(rest) or 0
    end
  end
  v = math.floor(v) + 1
  redis.call("SET", KEYS[i], ARGV[i + 2] .. "||" .. v)
  versions[i] = tostring(v)
end
redis.call("PUBLISH", ARGV[1], ARGV[2])
return versions
"#;

/// Delete keys and publish the change. KEYS: the Redis keys; ARGV[1] the channel, ARGV[2]
/// the message.
const DELETE_SCRIPT: &str = r#"
redis.call("DEL", unpack(KEYS))
redis.call("PUBLISH", ARGV[1], ARGV[2])
return 0
"#;

/// Build a `configuration.redis` store; metadata is validated here, the connection made in
/// `init`.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let settings = RedisSettings::from_spec(spec)?;
    Ok(Instance::Configuration(Arc::new(
        RedisConfigurationStore::new(settings, &spec.name),
    )))
}

/// A configuration store in Redis that announces Plinth's writes on a pub/sub channel.
pub struct RedisConfigurationStore {
    conn: Arc<RedisConn>,
    settings: RedisSettings,
    channel: String,
    set_script: Script,
    delete_script: Script,
}

impl std::fmt::Debug for RedisConfigurationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfigurationStore")
            .field("conn", &self.conn)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// The Redis key of an item.
pub fn redis_key(group: &str, label: &str, key: &str) -> String {
    if group.is_empty() && label.is_empty() {
        key.to_owned()
    } else {
        format!("{group}{SEPARATOR}{label}{SEPARATOR}{key}")
    }
}

/// Split a stored value into (value, version) the way Dapr does.
pub fn split_value(raw: &str) -> (String, String) {
    let mut parts = raw.split(SEPARATOR);
    let value = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().unwrap_or_default().to_owned();
    (value, version)
}

/// Escape Redis glob characters.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A change message as published on the channel.
#[derive(Debug, Default, PartialEq, Eq)]
struct Message {
    app_id: String,
    group: String,
    label: String,
    keys: Vec<String>,
    deleted: bool,
}

impl Message {
    fn encode(&self) -> String {
        json!({
            "appId": self.app_id,
            "group": self.group,
            "label": self.label,
            "keys": self.keys,
            "deleted": self.deleted,
        })
        .to_string()
    }

    fn decode(raw: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(raw).ok()?;
        let text = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        Some(Self {
            app_id: text("appId"),
            group: text("group"),
            label: text("label"),
            keys: v
                .get("keys")?
                .as_array()?
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            deleted: v.get("deleted").and_then(|d| d.as_bool()).unwrap_or(false),
        })
    }
}

impl RedisConfigurationStore {
    fn new(settings: RedisSettings, name: &str) -> Self {
        Self {
            conn: Arc::new(RedisConn::new(settings.clone())),
            settings,
            channel: format!("{CHANNEL_PREFIX}{name}"),
            set_script: Script::new(SET_SCRIPT),
            delete_script: Script::new(DELETE_SCRIPT),
        }
    }

    /// The channel this store publishes its changes on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Every Redis key under a group and label, bounded by [`MAX_SCAN_KEYS`].
    async fn scan(&self, group: &str, label: &str) -> Result<Vec<String>> {
        let dapr = group.is_empty() && label.is_empty();
        let pattern = if dapr {
            "*".to_owned()
        } else {
            format!("{}*", glob_escape(&redis_key(group, label, "")))
        };
        // A cluster's keys are spread over its primaries: scan each; one Redis is one node.
        let nodes: Vec<Option<(String, u16)>> = if self.conn.is_cluster() {
            self.conn.primaries().await?.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let mut keys = Vec::new();
        'nodes: for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, batch): (u64, Vec<String>) = match &node {
                    Some((host, port)) => self.conn.run_on(host, *port, cmd).await?,
                    None => {
                        self.conn
                            .run(|mut c| async move { cmd.query_async(&mut c).await })
                            .await?
                    }
                };
                // Items with a group or label are not Dapr items.
                keys.extend(
                    batch
                        .into_iter()
                        .filter(|k| !dapr || !k.contains(SEPARATOR)),
                );
                if keys.len() >= MAX_SCAN_KEYS {
                    keys.truncate(MAX_SCAN_KEYS);
                    tracing::warn!(
                        max = MAX_SCAN_KEYS,
                        "configuration.redis: a get of every key stopped at the limit"
                    );
                    break 'nodes;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Write items whose Redis keys share a hash slot, with one script and one message.
    async fn set_one_slot(
        &self,
        app_id: &str,
        group: &str,
        label: &str,
        list: Vec<ConfigurationItem>,
    ) -> Result<()> {
        let message = Message {
            app_id: app_id.to_owned(),
            group: group.to_owned(),
            label: label.to_owned(),
            keys: list.iter().map(|i| i.key.clone()).collect(),
            deleted: false,
        };
        let mut invocation = self.set_script.prepare_invoke();
        for item in &list {
            invocation.key(redis_key(group, label, &item.key));
        }
        invocation.arg(&self.channel).arg(message.encode());
        for item in &list {
            invocation.arg(&item.content);
        }
        let _: Vec<String> = self
            .conn
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// The items of `keys` (plain keys) under a group and label; missing keys are skipped.
    async fn read(
        conn: &RedisConn,
        group: &str,
        label: &str,
        keys: &[String],
    ) -> Result<Vec<Option<ConfigurationItem>>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let redis_keys: Vec<String> =
                chunk.iter().map(|k| redis_key(group, label, k)).collect();
            let values: Vec<Option<String>> =
                conn.run(|mut c| async move {
                    redis::cmd("MGET").arg(redis_keys).query_async(&mut c).await
                })
                .await?;
            for (key, value) in chunk.iter().zip(values) {
                out.push(value.map(|raw| {
                    let (content, version) = split_value(&raw);
                    ConfigurationItem {
                        key: key.clone(),
                        content,
                        group: group.to_owned(),
                        label: label.to_owned(),
                        version,
                        ..Default::default()
                    }
                }));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Component for RedisConfigurationStore {
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
impl ConfigurationStore for RedisConfigurationStore {
    async fn get(&self, query: &ConfigurationQuery) -> Result<Vec<ConfigurationItem>> {
        let keys = if query.keys.is_empty() {
            let prefix = redis_key(&query.group, &query.label, "");
            self.scan(&query.group, &query.label)
                .await?
                .into_iter()
                .map(|k| k[prefix.len()..].to_owned())
                .collect()
        } else {
            query.keys.clone()
        };
        Ok(Self::read(&self.conn, &query.group, &query.label, &keys)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn set(&self, app_id: &str, items: Vec<ConfigurationItem>) -> Result<()> {
        if items.iter().any(|item| item.key.is_empty()) {
            return Err(Error::invalid_argument(
                "a configuration item has an empty key",
            ));
        }
        if items.iter().any(|item| item.content.contains(SEPARATOR)) {
            return Err(Error::invalid_argument(
                "a configuration value must not contain \"||\" (Dapr's value||version separator)",
            ));
        }
        // One script, and so one message, per (group, label).
        let mut groups: Vec<((String, String), Vec<ConfigurationItem>)> = Vec::new();
        for item in items {
            let id = (item.group.clone(), item.label.clone());
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, list)) => list.push(item),
                None => groups.push((id, vec![item])),
            }
        }
        // In a cluster a script sees one hash slot: one script and message per slot there.
        for ((group, label), list) in groups {
            for list in self
                .conn
                .by_slot(list, |item| redis_key(&group, &label, &item.key))
            {
                self.set_one_slot(app_id, &group, &label, list).await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, query: &ConfigurationQuery) -> Result<()> {
        let keys = if query.keys.is_empty() {
            let prefix = redis_key(&query.group, &query.label, "");
            self.scan(&query.group, &query.label)
                .await?
                .into_iter()
                .map(|k| k[prefix.len()..].to_owned())
                .collect()
        } else {
            query.keys.clone()
        };
        if keys.is_empty() {
            return Ok(());
        }
        let redis_keys: Vec<(String, String)> = keys
            .into_iter()
            .map(|k| (redis_key(&query.group, &query.label, &k), k))
            .collect();
        for group in self.conn.by_slot(redis_keys, |(rk, _)| rk.clone()) {
            for chunk in group.chunks(500) {
                let message = Message {
                    app_id: query.app_id.clone(),
                    group: query.group.clone(),
                    label: query.label.clone(),
                    keys: chunk.iter().map(|(_, k)| k.clone()).collect(),
                    deleted: true,
                };
                let mut invocation = self.delete_script.prepare_invoke();
                for (redis_key, _) in chunk {
                    invocation.key(redis_key);
                }
                invocation.arg(&self.channel).arg(message.encode());
                let _: i64 = self
                    .conn
                    .run(|mut c| async move { invocation.invoke_async(&mut c).await })
                    .await?;
            }
        }
        Ok(())
    }

    async fn watch(&self) -> Result<mpsc::Receiver<ConfigurationChange>> {
        // In a cluster a PUBLISH reaches every node, so one node's subscription sees every
        // change: take the first seed node that answers.
        let mut failures = Vec::new();
        let mut subscribed = None;
        for client in self.settings.node_clients()? {
            let connect = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(self.settings.dial_timeout, connect).await {
                Ok(Ok(pubsub)) => {
                    subscribed = Some(pubsub);
                    break;
                }
                Ok(Err(e)) => failures.push(e.to_string()),
                Err(_) => {
                    failures.push(format!("took longer than {:?}", self.settings.dial_timeout))
                }
            }
        }
        let Some(pubsub) = subscribed else {
            return Err(Error::unavailable(format!(
                "configuration.redis: subscribing to {}: {}",
                self.channel,
                failures.join("; ")
            )));
        };
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let conn = Arc::clone(&self.conn);
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    msg = messages.next() => msg,
                };
                let Some(msg) = msg else {
                    tracing::warn!("configuration.redis: the change subscription ended");
                    return;
                };
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                let Some(message) = Message::decode(&payload) else {
                    tracing::warn!(
                        payload,
                        "configuration.redis: ignoring a malformed change message"
                    );
                    continue;
                };
                for change in changes(&conn, message).await {
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// The changes a message announces: the keys' items as they now are, and the keys that are
/// gone as deleted items.
async fn changes(conn: &RedisConn, message: Message) -> Vec<ConfigurationChange> {
    let current =
        match RedisConfigurationStore::read(conn, &message.group, &message.label, &message.keys)
            .await
        {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(error = %e, "configuration.redis: re-reading changed keys failed");
                return Vec::new();
            }
        };
    let mut written = Vec::new();
    let mut deleted = Vec::new();
    for (key, item) in message.keys.iter().zip(current) {
        match item {
            Some(item) => written.push(item),
            None => deleted.push(ConfigurationItem {
                key: key.clone(),
                group: message.group.clone(),
                label: message.label.clone(),
                ..Default::default()
            }),
        }
    }
    let mut out = Vec::new();
    for (items, is_deleted) in [(deleted, true), (written, false)] {
        if !items.is_empty() {
            out.push(ConfigurationChange {
                app_id: message.app_id.clone(),
                items,
                deleted: is_deleted,
            });
        }
    }
    out
}
