//! What the MySQL components share: Go driver DSNs (Dapr's and Layotto's connection
//! strings), a connection pool whose every call has a deadline, and one error mapping.
//!
//! The driver is mysql_async without TLS or compression codecs: a shorter build than sqlx's
//! MySQL driver (fewer crates, no RSA stack), and no compile-time query checking.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use plinth_core::{Error, ErrorKind, Result};

/// Where and how to connect, parsed from a connection string.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct MysqlSettings {
    /// Host name or address (TCP).
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// A Unix socket path, instead of TCP (`unix(/path)` in a DSN).
    pub(crate) socket: Option<String>,
    /// User name; empty for the server's anonymous user.
    pub(crate) user: String,
    /// Password, if any.
    pub(crate) password: Option<String>,
    /// The database the DSN names, if any.
    pub(crate) database: Option<String>,
}

impl fmt::Debug for MysqlSettings {
    // Leave the password out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl MysqlSettings {
    /// Where the server is, for messages.
    pub(crate) fn address(&self) -> String {
        match &self.socket {
            Some(path) => path.clone(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Parse a connection string: the Go driver's DSN, as Dapr and Layotto write it,
/// `[user[:password]@][tcp[(host[:port])]|unix(path)]/[dbname][?params]`, or a URL
/// `mysql://user:password@host:port/dbname`. The error never echoes the string, which may
/// hold a password.
pub(crate) fn parse_connection_string(raw: &str) -> std::result::Result<MysqlSettings, String> {
    if raw.starts_with("mysql://") {
        let opts = Opts::from_url(raw).map_err(|e| match e {
            mysql_async::UrlError::InvalidParamValue { param, .. } => {
                format!("not a valid MySQL URL: parameter {param:?} has an invalid value")
            }
            mysql_async::UrlError::UnknownParameter { param } => {
                format!("not a valid MySQL URL: unknown parameter {param:?}")
            }
            _ => "not a valid MySQL URL (mysql://user:password@host:port/database)".to_owned(),
        })?;
        return Ok(MysqlSettings {
            host: opts.ip_or_hostname().to_owned(),
            port: opts.tcp_port(),
            socket: opts.socket().map(str::to_owned),
            user: opts.user().unwrap_or_default().to_owned(),
            password: opts.pass().map(str::to_owned),
            database: opts.db_name().map(str::to_owned),
        });
    }
    // The Go driver splits at the last '/', then at the last '@' before it, so a password
    // may hold both.
    let slash = raw.rfind('/').ok_or_else(|| {
        "not a valid MySQL DSN: it needs a '/' before the database name (user:password@tcp(host:port)/)".to_owned()
    })?;
    let (head, tail) = (&raw[..slash], &raw[slash + 1..]);
    let (credentials, address) = match head.rfind('@') {
        Some(at) => (Some(&head[..at]), &head[at + 1..]),
        None => (None, head),
    };
    let (user, password) = match credentials {
        None => (String::new(), None),
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
            None => (c.to_owned(), None),
        },
    };
    let (net, addr) = match address.split_once('(') {
        Some((net, rest)) => {
            let addr = rest.strip_suffix(')').ok_or_else(|| {
                "not a valid MySQL DSN: the address lacks its closing ')'".to_owned()
            })?;
            (net, addr)
        }
        None => (address, ""),
    };
    let mut settings = MysqlSettings {
        host: "127.0.0.1".to_owned(),
        port: 3306,
        socket: None,
        user,
        password,
        database: None,
    };
    match net {
        "" | "tcp" | "tcp4" | "tcp6" => {
            if !addr.is_empty() {
                let (host, port) = split_host_port(addr)?;
                settings.host = host;
                settings.port = port.unwrap_or(3306);
            }
        }
        "unix" => {
            if addr.is_empty() {
                return Err("not a valid MySQL DSN: unix() needs a socket path".to_owned());
            }
            settings.socket = Some(addr.to_owned());
        }
        other => {
            return Err(format!(
                "not a valid MySQL DSN: network {other:?} is not one of tcp, unix"
            ));
        }
    }
    let (database, params) = match tail.split_once('?') {
        Some((db, params)) => (db, params),
        None => (tail, ""),
    };
    if !database.is_empty() {
        settings.database = Some(database.to_owned());
    }
    for pair in params.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // No TLS stack is compiled in: refuse a DSN that asks for one rather than talk in
        // the clear to a server the user meant to reach over TLS.
        if key == "tls" && !matches!(value, "" | "false" | "preferred") {
            return Err(format!(
                "tls={value}: TLS connections are not supported by this build; use tls=false or leave it out"
            ));
        }
    }
    Ok(settings)
}

fn split_host_port(addr: &str) -> std::result::Result<(String, Option<u16>), String> {
    let bad_port = || "not a valid MySQL DSN: the port is not a number".to_owned();
    if let Some(rest) = addr.strip_prefix('[') {
        // [ipv6]:port
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "not a valid MySQL DSN: unclosed '[' in the address".to_owned())?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad_port())?),
            None => None,
        };
        return Ok((host.to_owned(), port));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Ok((host.to_owned(), Some(port.parse().map_err(|_| bad_port())?)))
        }
        _ => Ok((addr.to_owned(), None)),
    }
}

/// A pool of connections to one server whose every call has a deadline; errors carry the
/// server's address, never the credentials.
pub(crate) struct MysqlClient {
    pool: Pool,
    address: String,
    timeout: Duration,
}

impl fmt::Debug for MysqlClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlClient")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MysqlClient {
    /// A pool of at most `max_conns` connections to `database` (none: no default database);
    /// nothing connects until the first call.
    pub(crate) fn new(
        settings: &MysqlSettings,
        database: Option<&str>,
        max_conns: usize,
        timeout: Duration,
    ) -> Self {
        let constraints = PoolConstraints::new(0, max_conns.max(1))
            .unwrap_or_else(|| PoolConstraints::new(0, 1).unwrap_or_default());
        let opts = OptsBuilder::default()
            .ip_or_hostname(settings.host.clone())
            .tcp_port(settings.port)
            .socket(settings.socket.clone())
            .user(Some(settings.user.clone()).filter(|u| !u.is_empty()))
            .pass(settings.password.clone())
            .db_name(database.map(str::to_owned))
            .prefer_socket(false)
            // Sessions in UTC so that TIMESTAMP arithmetic never crosses a DST change. The
            // driver rolls back a transaction left open by a dropped call, so connections go
            // back to the pool without a reset (which would also undo this setting).
            .init(vec!["SET time_zone = '+00:00'"])
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_reset_connection(false)
                    // Keep idle connections a while rather than reconnect after every lull.
                    .with_inactive_connection_ttl(Duration::from_secs(60)),
            );
        Self {
            pool: Pool::new(opts),
            address: settings.address(),
            timeout,
        }
    }

    /// A pooled connection, or UNAVAILABLE when none can be had in time.
    pub(crate) async fn conn(&self) -> Result<Conn> {
        match tokio::time::timeout(self.timeout, self.pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(err)) => Err(self.error(err)),
            Err(_) => Err(Error::unavailable(format!(
                "mysql at {}: no connection within {:?}",
                self.address, self.timeout
            ))),
        }
    }

    /// Run `fut` within the deadline; running out is UNAVAILABLE (the server did not answer
    /// in time), and the connection the future held is dropped, so never reused mid-call.
    pub(crate) async fn timed<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(Error::unavailable(format!(
                    "mysql at {}: no answer within {:?}",
                    self.address, self.timeout
                )))
            })
    }

    /// Map a driver error. Connection trouble, lock waits and deadlocks are UNAVAILABLE
    /// (retrying may succeed); rejected credentials are UNAUTHENTICATED / PERMISSION_DENIED;
    /// anything else the server answered is INTERNAL (the SQL is ours).
    pub(crate) fn error(&self, err: mysql_async::Error) -> Error {
        let kind = match &err {
            mysql_async::Error::Server(server) => server_error_kind(server.code),
            mysql_async::Error::Io(_) => ErrorKind::Unavailable,
            mysql_async::Error::Driver(
                mysql_async::DriverError::ConnectionClosed
                | mysql_async::DriverError::PoolDisconnected,
            ) => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, format!("mysql at {}: {err}", self.address)).with_source(err)
    }

    /// Close every connection.
    pub(crate) async fn close(&self) {
        if let Err(err) = self.pool.clone().disconnect().await {
            tracing::debug!(address = %self.address, error = %err, "closing the mysql pool");
        }
    }
}

/// The error kind of a server error code.
pub(crate) fn server_error_kind(code: u16) -> ErrorKind {
    match code {
        // Access denied (user, database, no password).
        1045 | 1698 => ErrorKind::Unauthenticated,
        1044 | 1142 | 1227 => ErrorKind::PermissionDenied,
        // Too many connections, server shutting down, lock wait timeout, deadlock,
        // read-only server, query interrupted.
        1040 | 1053 | 1205 | 1213 | 1290 | 1317 | 1836 | 3024 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

/// The server error code of a driver error, if the server answered one.
pub(crate) fn server_code(err: &Error) -> Option<u16> {
    let source = std::error::Error::source(err)?;
    match source.downcast_ref::<mysql_async::Error>()? {
        mysql_async::Error::Server(server) => Some(server.code),
        _ => None,
    }
}

/// Whether `name` may be an unquoted identifier in SQL text: ASCII letters, digits and `_`,
/// at most 64 characters (MySQL's limit), as Dapr's component checks. Only such names reach
/// SQL text; every value goes through bind parameters.
pub(crate) fn valid_identifier(name: &str) -> std::result::Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "{name:?} is not a valid name: use 1 to 64 ASCII letters, digits and '_'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns_parse_as_the_go_driver_reads_them() {
        let s = parse_connection_string("root:p@ss:w/rd@tcp(db.example:3307)/test?parseTime=true")
            .expect("dsn");
        assert_eq!(s.user, "root");
        assert_eq!(s.password.as_deref(), Some("p@ss:w/rd"));
        assert_eq!((s.host.as_str(), s.port), ("db.example", 3307));
        assert_eq!(s.database.as_deref(), Some("test"));

        let s = parse_connection_string("dapr@tcp(localhost)/").expect("dsn");
        assert_eq!((s.user.as_str(), s.password.as_deref()), ("dapr", None));
        assert_eq!((s.host.as_str(), s.port), ("localhost", 3306));
        assert_eq!(s.database, None);

        let s = parse_connection_string("u:p@unix(/run/mysqld/mysqld.sock)/db").expect("dsn");
        assert_eq!(s.socket.as_deref(), Some("/run/mysqld/mysqld.sock"));

        let s = parse_connection_string("/").expect("dsn");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 3306));

        let s = parse_connection_string("u@tcp([::1]:3310)/x").expect("dsn");
        assert_eq!((s.host.as_str(), s.port), ("::1", 3310));

        let s = parse_connection_string("mysql://u:secret@h:3308/d").expect("url");
        assert_eq!((s.host.as_str(), s.port), ("h", 3308));
        assert_eq!(s.password.as_deref(), Some("secret"));
        assert_eq!(s.database.as_deref(), Some("d"));
    }

    #[test]
    fn bad_dsns_are_rejected_without_echoing_them() {
        for bad in [
            "root:secret@tcp(localhost:3306)",
            "root:secret@tcp(localhost:3306/db",
            "root:secret@tcp(localhost:port)/db",
            "root:secret@pipe(x)/db",
            "root:secret@tcp(localhost)/db?tls=custom",
        ] {
            let err = parse_connection_string(bad).expect_err(bad);
            assert!(!err.contains("secret"), "{err}");
        }
        assert!(parse_connection_string("u@tcp(h)/db?tls=false&timeout=5s").is_ok());
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(valid_identifier("dapr_state_store").is_ok());
        assert!(valid_identifier("State2").is_ok());
        for bad in ["", "a-b", "a.b", "a b", "`x`", &"x".repeat(65)] {
            assert!(valid_identifier(bad).is_err(), "{bad}");
        }
    }
}
