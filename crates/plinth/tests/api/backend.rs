//! Backends the store tests need: addresses of the machine's shared services, and private
//! Redis servers that a test starts, stops and restarts on a port of its own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::scratch;

/// The machine's shared Redis: 127.0.0.1:6379, or `REDIS_HOST`.
pub(crate) fn redis_host() -> String {
    std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

/// A loopback port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// A `redis-server` of the test's own (Debian's package), persisting nothing, killed when
/// dropped.
pub(crate) struct PrivateRedis {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl PrivateRedis {
    /// Start one on a fresh port and wait until it answers PING.
    pub(crate) fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Start one on `port` (a restart reuses the port of the one it replaces).
    pub(crate) fn start_on(port: u16) -> Self {
        let dir = scratch("redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's package redis-server) must be installed");
        let redis = Self {
            child: Some(child),
            port,
            dir,
        };
        redis.wait_answering(Duration::from_secs(10));
        redis
    }

    /// `127.0.0.1:{port}`.
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kill it and wait until it is gone: its port refuses connections afterwards.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_answering(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if ping(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private redis-server on port {} did not answer within {timeout:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a Redis on `port` answers PING with PONG.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A PostgreSQL server of the test's own (Debian's packages, the newest version installed):
/// its own data directory and port, trust auth, fsync off, run by `pg_ctl` and stopped in
/// immediate mode when dropped. As root it runs as the `postgres` user, since PostgreSQL
/// refuses to run as root.
pub(crate) struct PrivatePostgres {
    running: bool,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl PrivatePostgres {
    /// Create a cluster and start it on a fresh port; waits until it accepts connections.
    pub(crate) fn start() -> Self {
        let dir = scratch("postgres");
        Self::as_postgres_user(&dir);
        let out = Self::command("initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            running: false,
            port: free_port(),
            dir,
        };
        pg.restart();
        pg
    }

    /// A connection string for its `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Stop it in immediate mode (every server process quits at once, as in a crash) and
    /// wait until it is gone.
    pub(crate) fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let status = Self::command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed");
    }

    /// Start it again on the same port and data directory; waits until it accepts
    /// connections.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c fsync=off -k {}",
            self.port,
            self.dir.display()
        );
        let status = Self::command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "30", "-o", &options])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(
            status.success(),
            "the private postgres on port {} did not start: {}",
            self.port,
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
        self.running = true;
    }

    /// Debian's binaries of the newest installed PostgreSQL.
    fn bin(name: &str) -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL from Debian's packages must be installed")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        versions.sort();
        versions
            .pop()
            .expect("a PostgreSQL version under /usr/lib/postgresql")
            .join("bin")
            .join(name)
    }

    /// `name`, run as the `postgres` user when the test runs as root.
    fn command(name: &str) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(Self::bin(name));
            c
        } else {
            Command::new(Self::bin(name))
        }
    }

    /// As root, hand the scratch directory to the `postgres` user.
    fn as_postgres_user(dir: &std::path::Path) {
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of {}", dir.display());
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The S3-compatible server `file.s3` tests use: `PLINTH_TEST_S3`, by default moto at
/// `http://127.0.0.1:19000` (`scripts/services/s3.sh` starts it).
pub(crate) fn s3_endpoint() -> String {
    std::env::var("PLINTH_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:19000".into())
}

/// One unsigned, path-style request to the S3 test server (moto accepts it; buckets are
/// created and deleted this way): the status code.
pub(crate) fn s3_request(method: &str, path: &str) -> u16 {
    let endpoint = s3_endpoint();
    let host = endpoint
        .strip_prefix("http://")
        .unwrap_or(&endpoint)
        .trim_end_matches('/');
    let mut conn = TcpStream::connect(host).unwrap_or_else(|e| {
        panic!("no S3 server at {endpoint} ({e}); start one with scripts/services/s3.sh")
    });
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("read");
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response from {endpoint}: {response}"))
}
