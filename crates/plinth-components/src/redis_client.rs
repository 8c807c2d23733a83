//! The Redis connection the `*.redis` components share: Dapr's connection metadata, one
//! multiplexed [`ConnectionManager`] per component (it reconnects by itself), and a timeout
//! around every call so that an unreachable Redis fails fast with UNAVAILABLE.

use std::future::Future;
use std::time::Duration;

use plinth_core::{ComponentSpec, Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError};
use tokio::sync::RwLock;

/// How long connecting may take, by default (`dialTimeout`).
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take, by default (`timeout`, Dapr's `readTimeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connection settings read from Dapr's metadata keys.
#[derive(Clone)]
pub(crate) struct RedisSettings {
    host: String,
    port: u16,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    /// How long connecting may take.
    pub(crate) dial_timeout: Duration,
    /// How long one call may take.
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    // The password is a secret: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// Read `redisHost`, `redisUsername`, `redisPassword`, `redisDB`, `dialTimeout`,
    /// `timeout` (alias `readTimeout`) and reject what this client does not do (`enableTLS`,
    /// `redisType: cluster`, `failover`).
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let raw_host = spec.require("redisHost")?;
        let (host, port) = split_host_port(raw_host).ok_or_else(|| {
            spec.invalid(
                "metadata.redisHost",
                format!("{raw_host:?} is not host:port"),
            )
        })?;
        if spec.bool_or("enableTLS", false)? {
            return Err(spec.invalid(
                "metadata.enableTLS",
                "TLS to Redis is not supported yet; use a TLS-terminating proxy or a plain connection",
            ));
        }
        if let Some(kind) = spec.get("redisType")
            && !kind.eq_ignore_ascii_case("node")
        {
            return Err(spec.invalid(
                "metadata.redisType",
                format!("{kind:?} is not supported; only \"node\" (a single Redis) is"),
            ));
        }
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
            host,
            port,
            db,
            username: spec.get("redisUsername").map(str::to_owned),
            password: spec.get("redisPassword").map(str::to_owned),
            dial_timeout,
            timeout,
        })
    }

    pub(crate) fn client(&self) -> Result<redis::Client> {
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let info = ConnectionAddr::Tcp(self.host.clone(), self.port)
            .into_connection_info()
            .map_err(|e| Error::internal(format!("redis connection info: {e}")))?
            .set_redis_settings(redis);
        redis::Client::open(info).map_err(|e| Error::internal(format!("redis client: {e}")))
    }
}

/// `host:port`, `[v6]:port`; a missing port is Redis's 6379.
fn split_host_port(raw: &str) -> Option<(String, u16)> {
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
        None => Some((raw.to_owned(), 6379)),
    }
}

/// One component's connection: absent until `init` connects.
pub(crate) struct RedisConn {
    settings: RedisSettings,
    manager: RwLock<Option<ConnectionManager>>,
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
            manager: RwLock::new(None),
        }
    }

    /// Connect, if not yet connected, and check that Redis answers. Idempotent.
    pub(crate) async fn init(&self) -> Result<()> {
        let mut slot = self.manager.write().await;
        if slot.is_none() {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.settings.dial_timeout))
                .set_response_timeout(Some(self.settings.timeout))
                // Reconnect attempts are short: the runtime's probes and retries do the rest.
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let client = self.settings.client()?;
            let connect = ConnectionManager::new_with_config(client, config);
            let manager = tokio::time::timeout(self.settings.dial_timeout, connect)
                .await
                .map_err(|_| {
                    Error::unavailable(format!(
                        "redis at {}:{} did not accept a connection within {:?}",
                        self.settings.host, self.settings.port, self.settings.dial_timeout
                    ))
                })?
                .map_err(|e| self.error(e))?;
            *slot = Some(manager);
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
        self.manager.write().await.take();
    }

    /// Run one call on a clone of the connection (clones share it), bounded by the timeout.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // Never wait for a connect in progress: calls fail fast while the component is DOWN.
        let conn = self
            .manager
            .try_read()
            .ok()
            .and_then(|slot| slot.clone())
            .ok_or_else(|| {
                Error::unavailable(
                    "the redis connection is not established yet (init has not succeeded)",
                )
            })?;
        match tokio::time::timeout(self.settings.timeout, call(conn)).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(Error::unavailable(format!(
                "redis at {}:{} did not answer within {:?}",
                self.settings.host, self.settings.port, self.settings.timeout
            ))),
        }
    }

    /// Connection failures and timeouts are UNAVAILABLE (retryable); anything else Redis
    /// answered is INTERNAL.
    fn error(&self, err: RedisError) -> Error {
        let at = format!("redis at {}:{}", self.settings.host, self.settings.port);
        let kind = if err.is_io_error()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.is_timeout()
            || err.is_unrecoverable_error()
        {
            plinth_core::ErrorKind::Unavailable
        } else {
            plinth_core::ErrorKind::Internal
        };
        Error::new(kind, format!("{at}: {err}")).with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::*;

    /// A TCP proxy to the test Redis that can cut every connection and stop listening.
    struct Proxy {
        tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    }

    impl Proxy {
        async fn start(addr: SocketAddr) -> Self {
            let upstream = std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into());
            let listener = TcpListener::bind(addr).await.expect("bind proxy");
            let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
            let inner = Arc::clone(&tasks);
            let accept = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let conn = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    inner.lock().expect("tasks").push(conn);
                }
            });
            tasks.lock().expect("tasks").push(accept);
            Self { tasks }
        }

        fn cut(&self) {
            for task in self.tasks.lock().expect("tasks").drain(..) {
                task.abort();
            }
        }
    }

    async fn free_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    }

    #[tokio::test]
    async fn reconnects_after_redis_comes_back() {
        let addr = free_addr().await;
        let proxy = Proxy::start(addr).await;
        let spec = ComponentSpec::new("s", "state.redis")
            .with_metadata("redisHost", addr.to_string())
            .with_metadata("timeout", "1s")
            .with_metadata("dialTimeout", "1s");
        let conn = RedisConn::new(RedisSettings::from_spec(&spec).expect("settings"));
        conn.init().await.expect("init through the proxy");

        proxy.cut();
        let started = std::time::Instant::now();
        let err = conn.ping().await.expect_err("redis is gone");
        assert_eq!(err.kind(), plinth_core::ErrorKind::Unavailable, "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));

        let proxy = Proxy::start(addr).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while conn.ping().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        proxy.cut();
    }

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("localhost:6380"),
            Some(("localhost".into(), 6380))
        );
        assert_eq!(split_host_port("redis"), Some(("redis".into(), 6379)));
        assert_eq!(split_host_port("[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(split_host_port("host:port"), None);
        assert_eq!(split_host_port(":6379"), None);
    }

    #[test]
    fn settings_reject_what_is_unsupported() {
        let spec = |k: &str, v: &str| {
            ComponentSpec::new("s", "state.redis")
                .with_metadata("redisHost", "127.0.0.1:6379")
                .with_metadata(k, v)
        };
        assert!(RedisSettings::from_spec(&spec("enableTLS", "true")).is_err());
        assert!(RedisSettings::from_spec(&spec("enableTLS", "false")).is_ok());
        assert!(RedisSettings::from_spec(&spec("redisType", "cluster")).is_err());
        assert!(RedisSettings::from_spec(&spec("redisDB", "x")).is_err());
        assert!(RedisSettings::from_spec(&spec("timeout", "soon")).is_err());
        assert!(RedisSettings::from_spec(&ComponentSpec::new("s", "state.redis")).is_err());
    }
}
