//! The Redis connection the `*.redis` components share: Dapr's connection metadata, one
//! connection per component that reconnects by itself (a multiplexed [`ConnectionManager`]
//! to a single Redis, or a [`ClusterConnection`] that follows the cluster's slots), TLS
//! through rustls, and a timeout around every call so that an unreachable Redis fails fast
//! with UNAVAILABLE.

use std::future::Future;
use std::time::Duration;

use plinth_core::{ComponentSpec, Error, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, TlsCertificates, TlsMode, Value,
};
use tokio::sync::RwLock;

/// How long connecting may take, by default (`dialTimeout`).
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take, by default (`timeout`, Dapr's `readTimeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// TLS settings: Dapr's `enableTLS`, `insecureSkipTLSVerify`, `clientCert`, `clientKey`, plus
/// Plinth's `caCert` (Dapr trusts only the system's roots).
#[derive(Clone)]
struct TlsSettings {
    insecure: bool,
    ca_cert: Option<Vec<u8>>,
    client: Option<ClientTlsConfig>,
}

impl TlsSettings {
    fn from_spec(spec: &ComponentSpec) -> Result<Option<Self>> {
        if !spec.bool_or("enableTLS", false)? {
            for key in ["caCert", "clientCert", "clientKey"] {
                if spec.get(key).is_some_and(|v| !v.is_empty()) {
                    return Err(spec.invalid(
                        &format!("metadata.{key}"),
                        "is only used with enableTLS: \"true\"",
                    ));
                }
            }
            return Ok(None);
        }
        let pem = |key: &str| -> Result<Option<Vec<u8>>> {
            match spec.get(key).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) if v.contains("-----BEGIN ") => Ok(Some(v.as_bytes().to_vec())),
                Some(_) => Err(spec.invalid(&format!("metadata.{key}"), "is not PEM")),
            }
        };
        let client = match (pem("clientCert")?, pem("clientKey")?) {
            (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
                client_cert,
                client_key,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(spec.invalid("metadata.clientKey", "clientCert needs clientKey"));
            }
            (None, Some(_)) => {
                return Err(spec.invalid("metadata.clientCert", "clientKey needs clientCert"));
            }
        };
        Ok(Some(Self {
            insecure: spec.bool_or("insecureSkipTLSVerify", false)?,
            ca_cert: pem("caCert")?,
            client,
        }))
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.client.clone(),
            root_cert: self.ca_cert.clone(),
        }
    }
}

/// Connection settings read from Dapr's metadata keys.
#[derive(Clone)]
pub(crate) struct RedisSettings {
    /// The Redis (one), or the cluster's seed nodes (at least one).
    nodes: Vec<(String, u16)>,
    cluster: bool,
    tls: Option<TlsSettings>,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    /// How long connecting may take.
    pub(crate) dial_timeout: Duration,
    /// How long one call may take.
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    // The password and the client key are secrets: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("nodes", &self.nodes)
            .field("cluster", &self.cluster)
            .field("tls", &self.tls.is_some())
            .field("db", &self.db)
            .field("username", &self.username)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// Read `redisHost`, `redisType` (`node` or `cluster`), `redisUsername`, `redisPassword`,
    /// `redisDB`, `dialTimeout`, `timeout` (alias `readTimeout`), `enableTLS` with
    /// `insecureSkipTLSVerify`, `caCert`, `clientCert` and `clientKey`, and reject what this
    /// client does not do (`failover`).
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let cluster = match spec.get("redisType") {
            None => false,
            Some(kind) if kind.eq_ignore_ascii_case("node") => false,
            Some(kind) if kind.eq_ignore_ascii_case("cluster") => true,
            Some(kind) => {
                return Err(spec.invalid(
                    "metadata.redisType",
                    format!("{kind:?} is not supported; \"node\" and \"cluster\" are"),
                ));
            }
        };
        let raw_host = spec.require("redisHost")?;
        let mut nodes = Vec::new();
        for raw in raw_host.split(',').map(str::trim) {
            let node = split_host_port(raw).ok_or_else(|| {
                // A URL may carry a password before the `@`: never echo it.
                let shown = match raw.rsplit_once('@') {
                    Some((_, host)) => format!("\"***@{host}\""),
                    None => format!("{raw:?}"),
                };
                spec.invalid("metadata.redisHost", format!("{shown} is not host:port"))
            })?;
            nodes.push(node);
        }
        if nodes.len() > 1 && !cluster {
            return Err(spec.invalid(
                "metadata.redisHost",
                "several hosts are only allowed with redisType: cluster",
            ));
        }
        let tls = TlsSettings::from_spec(spec)?;
        if spec.bool_or("failover", false)? {
            return Err(spec.invalid(
                "metadata.failover",
                "Sentinel failover is not supported yet",
            ));
        }
        let db: i64 = spec.parse_or("redisDB", 0)?;
        if db < 0 {
            return Err(spec.invalid("metadata.redisDB", "must not be negative"));
        }
        if cluster && db != 0 {
            return Err(spec.invalid("metadata.redisDB", "a Redis Cluster has only database 0"));
        }
        let timeout_key = if spec.get("timeout").is_some() {
            "timeout"
        } else {
            "readTimeout"
        };
        let timeout = spec.duration_or(timeout_key, DEFAULT_TIMEOUT)?;
        let dial_timeout = spec.duration_or("dialTimeout", DEFAULT_DIAL_TIMEOUT)?;
        for (key, value) in [(timeout_key, timeout), ("dialTimeout", dial_timeout)] {
            if value.is_zero() {
                return Err(spec.invalid(&format!("metadata.{key}"), "must be positive"));
            }
        }
        Ok(Self {
            nodes,
            cluster,
            tls,
            db,
            username: spec.get("redisUsername").map(str::to_owned),
            password: spec.get("redisPassword").map(str::to_owned),
            dial_timeout,
            timeout,
        })
    }

    /// Where Redis is, for messages.
    fn describe(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect();
        let kind = if self.cluster {
            "redis cluster"
        } else {
            "redis"
        };
        let tls = if self.tls.is_some() { " over TLS" } else { "" };
        format!("{kind} at {}{tls}", nodes.join(","))
    }

    fn connection_info(&self, host: &str, port: u16) -> Result<ConnectionInfo> {
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let addr = match &self.tls {
            None => ConnectionAddr::Tcp(host.to_owned(), port),
            Some(tls) => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: tls.insecure,
                tls_params: None,
            },
        };
        Ok(addr
            .into_connection_info()
            .map_err(|e| Error::internal(format!("redis connection info: {e}")))?
            .set_redis_settings(redis))
    }

    fn node_client(&self, host: &str, port: u16) -> Result<redis::Client> {
        let info = self.connection_info(host, port)?;
        let client = match &self.tls {
            Some(tls) if tls.ca_cert.is_some() || tls.client.is_some() => {
                redis::Client::build_with_tls(info, tls.certificates())
            }
            _ => redis::Client::open(info),
        };
        client.map_err(|e| Error::internal(format!("redis client: {e}")))
    }

    /// A client of one node for every seed node, in order: what pub/sub subscribes through.
    /// In a cluster a `PUBLISH` reaches every node, so any one node is enough.
    pub(crate) fn node_clients(&self) -> Result<Vec<redis::Client>> {
        self.nodes
            .iter()
            .map(|(host, port)| self.node_client(host, *port))
            .collect()
    }

    async fn connect(&self) -> Result<RedisConnection> {
        if self.cluster {
            let infos = self
                .nodes
                .iter()
                .map(|(host, port)| self.connection_info(host, *port))
                .collect::<Result<Vec<_>>>()?;
            let mut builder = ClusterClientBuilder::new(infos)
                .connection_timeout(self.dial_timeout)
                .response_timeout(self.timeout)
                // Retries follow MOVED/ASK and reconnects; short, the runtime retries the rest.
                .retries(3)
                .max_retry_wait(500);
            if let Some(tls) = &self.tls {
                builder = builder.tls(if tls.insecure {
                    TlsMode::Insecure
                } else {
                    TlsMode::Secure
                });
                if tls.ca_cert.is_some() || tls.client.is_some() {
                    builder = builder.certs(tls.certificates());
                }
            }
            let client = builder
                .build()
                .map_err(|e| Error::internal(format!("redis cluster client: {e}")))?;
            let connection = client
                .get_async_connection()
                .await
                .map_err(|e| self.error(e))?;
            Ok(RedisConnection::Cluster(connection))
        } else {
            let (host, port) = self
                .nodes
                .first()
                .ok_or_else(|| Error::internal("redis: no host"))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.dial_timeout))
                .set_response_timeout(Some(self.timeout))
                // Reconnect attempts are short: the runtime's probes and retries do the rest.
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let client = self.node_client(host, *port)?;
            let manager = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(|e| self.error(e))?;
            Ok(RedisConnection::Node(manager))
        }
    }

    /// Connection failures and timeouts are UNAVAILABLE (retryable); anything else Redis
    /// answered is INTERNAL. Over TLS, a failed handshake is a connection failure.
    fn error(&self, err: RedisError) -> Error {
        let at = self.describe();
        let kind = if err.is_io_error()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.is_timeout()
            || err.is_unrecoverable_error()
            || err.is_cluster_error()
        {
            plinth_core::ErrorKind::Unavailable
        } else {
            plinth_core::ErrorKind::Internal
        };
        let hint = if self.tls.is_some() && kind == plinth_core::ErrorKind::Unavailable {
            " (TLS connection or handshake failed; check enableTLS, caCert and the server's certificate)"
        } else {
            ""
        };
        Error::new(kind, format!("{at}: {err}{hint}")).with_source(err)
    }
}

/// `host:port`, `[v6]:port`; a missing port is Redis's 6379.
fn split_host_port(raw: &str) -> Option<(String, u16)> {
    // A URL (`redis://user:password@host`) is not a host; refused so that no part of it,
    // the password included, ends up in connection errors.
    if raw.contains('@') || raw.contains('/') {
        return None;
    }
    if let Some(rest) = raw.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if tail.is_empty() => 6379,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match raw.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_owned(), port.parse().ok()?))
        }
        Some(_) => None,
        None if !raw.is_empty() => Some((raw.to_owned(), 6379)),
        None => None,
    }
}

/// A connection to a single Redis or to a cluster; cheap to clone (clones share it).
#[derive(Clone)]
pub(crate) enum RedisConnection {
    /// One Redis, reconnected by the manager.
    Node(ConnectionManager),
    /// A Redis Cluster: commands go to the node owning their key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// One component's connection: absent until `init` connects.
pub(crate) struct RedisConn {
    settings: RedisSettings,
    connection: RwLock<Option<RedisConnection>>,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisConn {
    pub(crate) fn new(settings: RedisSettings) -> Self {
        Self {
            settings,
            connection: RwLock::new(None),
        }
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.settings.cluster
    }

    /// Connect, if not yet connected, and check that Redis answers. Idempotent.
    pub(crate) async fn init(&self) -> Result<()> {
        let mut slot = self.connection.write().await;
        if slot.is_none() {
            let connection =
                tokio::time::timeout(self.settings.dial_timeout, self.settings.connect())
                    .await
                    .map_err(|_| {
                        Error::unavailable(format!(
                            "{} did not accept a connection within {:?}",
                            self.settings.describe(),
                            self.settings.dial_timeout
                        ))
                    })??;
            *slot = Some(connection);
        }
        drop(slot);
        self.ping().await
    }

    /// `PING`, bounded by the call timeout.
    pub(crate) async fn ping(&self) -> Result<()> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(drop)
    }

    /// Drop the connection.
    pub(crate) async fn close(&self) {
        self.connection.write().await.take();
    }

    /// Run one call on a clone of the connection (clones share it), bounded by the timeout.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // Never wait for a connect in progress: calls fail fast while the component is DOWN.
        let conn = self
            .connection
            .try_read()
            .ok()
            .and_then(|slot| slot.clone())
            .ok_or_else(|| {
                Error::unavailable(
                    "the redis connection is not established yet (init has not succeeded)",
                )
            })?;
        match tokio::time::timeout(self.settings.timeout, call(conn)).await {
            Ok(result) => result.map_err(|e| self.settings.error(e)),
            Err(_) => Err(Error::unavailable(format!(
                "{} did not answer within {:?}",
                self.settings.describe(),
                self.settings.timeout
            ))),
        }
    }

    /// A connection of its own, shared with no other call of the component, whose calls may
    /// take up to `response_timeout`: for blocking commands (`XREADGROUP ... BLOCK`), which
    /// would hold up every other command on the shared multiplexed connection. Bounded by
    /// `dialTimeout`; fails with UNAVAILABLE.
    pub(crate) async fn dedicated(&self, response_timeout: Duration) -> Result<RedisConnection> {
        let mut settings = self.settings.clone();
        settings.timeout = response_timeout;
        tokio::time::timeout(settings.dial_timeout, settings.connect())
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "{} did not accept a connection within {:?}",
                    settings.describe(),
                    settings.dial_timeout
                ))
            })?
    }

    /// How long one call may take (`timeout`).
    pub(crate) fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// An error of a call made on a [`RedisConn::dedicated`] connection, classified as
    /// [`RedisConn::run`] classifies its own.
    pub(crate) fn error(&self, err: RedisError) -> Error {
        self.settings.error(err)
    }

    /// Where Redis is, for messages (never with credentials).
    pub(crate) fn describe(&self) -> String {
        self.settings.describe()
    }

    /// Fail with INVALID_ARGUMENT when, in a cluster, `keys` are not all in one hash slot:
    /// a script or transaction over them could not run atomically. Always fine on one Redis.
    pub(crate) fn same_slot<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<()> {
        if !self.settings.cluster {
            return Ok(());
        }
        let mut first: Option<(&str, Slot)> = None;
        for key in keys {
            let slot = Slot::for_key(key);
            match first {
                None => first = Some((key, slot)),
                Some((other, at)) if at != slot => {
                    return Err(Error::invalid_argument(format!(
                        "keys {other:?} and {key:?} are in different hash slots of the redis \
                         cluster, so they cannot be written atomically; use a {{hash tag}} \
                         (the same text in braces in every key) to put them in one slot"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Split `items` into groups whose keys share a hash slot (one group on a single Redis),
    /// keeping the order within each group.
    pub(crate) fn by_slot<T, K: AsRef<[u8]>>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> K,
    ) -> Vec<Vec<T>> {
        if !self.settings.cluster {
            return vec![items];
        }
        let mut groups: Vec<(Slot, Vec<T>)> = Vec::new();
        for item in items {
            let slot = Slot::for_key(key(&item));
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, group)) => group.push(item),
                None => groups.push((slot, vec![item])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// The primaries of the cluster as `(host, port)`, from `CLUSTER SLOTS`; on a single
    /// Redis, empty.
    pub(crate) async fn primaries(&self) -> Result<Vec<(String, u16)>> {
        if !self.settings.cluster {
            return Ok(Vec::new());
        }
        let slots: Vec<Value> = self
            .run(
                |mut c| async move { redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await },
            )
            .await?;
        let mut out: Vec<(String, u16)> = Vec::new();
        for range in slots {
            // [start, end, [host, port, id, ...], replicas...]
            let Value::Array(parts) = range else { continue };
            let Some(Value::Array(primary)) = parts.get(2) else {
                continue;
            };
            let host = match primary.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = primary.get(1) else {
                continue;
            };
            let Ok(port) = u16::try_from(*port) else {
                continue;
            };
            if !out.iter().any(|(h, p)| *h == host && *p == port) {
                out.push((host, port));
            }
        }
        if out.is_empty() {
            return Err(Error::unavailable(format!(
                "{} reported no primaries in CLUSTER SLOTS",
                self.settings.describe()
            )));
        }
        Ok(out)
    }

    /// Run `cmd` on one node of the cluster, bounded by the timeout.
    pub(crate) async fn run_on<T: redis::FromRedisValue>(
        &self,
        host: &str,
        port: u16,
        cmd: Cmd,
    ) -> Result<T> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        });
        let value = self
            .run(|c| async move {
                match c {
                    RedisConnection::Cluster(mut c) => c.route_command(cmd, routing).await,
                    RedisConnection::Node(mut c) => cmd.query_async(&mut c).await,
                }
            })
            .await?;
        redis::from_redis_value(value)
            .map_err(|e| Error::internal(format!("{}: {e}", self.settings.describe())))
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
