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
