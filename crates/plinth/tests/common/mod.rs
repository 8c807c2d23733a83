//! Test harness: runs the real `plinth` binary on ephemeral ports and connects generated
//! Layotto clients, and an HTTP client for Dapr's HTTP API, to it over TCP.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plinth_proto::runtime::v1::runtime_client::RuntimeClient;
use tonic::transport::Channel;

/// How long a Plinth process may take to bind its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `plinth run` that did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// The exit code; `None` when it had to be killed (it neither started nor exited).
    pub code: Option<i32>,
    /// Everything it printed, stdout and stderr.
    pub output: String,
}

/// A running `plinth run`.
pub struct Plinth {
    child: Child,
    pub grpc: SocketAddr,
    pub dapr_grpc: SocketAddr,
    /// Dapr's HTTP API.
    pub dapr_http: SocketAddr,
    pub admin: SocketAddr,
    /// The functions' HTTP ingress.
    pub functions: SocketAddr,
    /// The mesh listener (other sidecars call here).
    pub mesh: SocketAddr,
    /// Every log line after startup.
    pub logs: mpsc::Receiver<String>,
    pub dir: PathBuf,
}

/// A per-test scratch directory (the working directory of the process under test).
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-test-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A name unique to this test run, for keys, topics and stores on shared services.
pub fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

impl Plinth {
    /// Start with the embedded default configuration.
    pub fn start() -> Self {
        Self::start_with(&[], None)
    }

    /// Start with the embedded default configuration and wait until readiness answers 200
    /// (every component UP, not merely past its first init attempt).
    pub async fn start_ready() -> Self {
        Self::start_ready_with(&[], None).await
    }

    /// [`Plinth::start_with`], then wait until readiness answers 200.
    pub async fn start_ready_with(args: &[&str], dir: Option<&Path>) -> Self {
        let plinth = Self::start_with(args, dir);
        plinth.wait_ready(START_TIMEOUT).await;
        plinth
    }

    /// Start with extra arguments, in `dir` (a fresh scratch dir when `None`).
    pub fn start_with(args: &[&str], dir: Option<&Path>) -> Self {
        Self::try_start(args, dir).unwrap_or_else(|e| panic!("plinth did not start: {e}"))
    }

    /// Start, or return what it printed if it exited instead.
    pub fn try_start(args: &[&str], dir: Option<&Path>) -> Result<Self, String> {
        Self::launch(args, &[], dir).map_err(|failed| failed.output)
    }

    /// Start with extra environment variables (on top of the test's own environment).
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::try_start_with_env(args, envs, None)
            .unwrap_or_else(|e| panic!("plinth did not start: {e}"))
    }

    /// Start with extra environment variables, or return what it printed if it exited instead.
    pub fn try_start_with_env(
        args: &[&str],
        envs: &[(&str, &str)],
        dir: Option<&Path>,
    ) -> Result<Self, String> {
        Self::launch(args, envs, dir).map_err(|failed| failed.output)
    }

    /// Start a process that is expected not to come up; panics if it does. Returns its exit
    /// code and everything it printed.
    pub fn start_failure(args: &[&str], envs: &[(&str, &str)], dir: Option<&Path>) -> StartFailure {
        match Self::launch(args, envs, dir) {
            Ok(plinth) => panic!(
                "plinth started although it should not have (grpc on {})",
                plinth.grpc
            ),
            Err(failed) => failed,
        }
    }

    fn launch(
        args: &[&str],
        envs: &[(&str, &str)],
        dir: Option<&Path>,
    ) -> Result<Self, StartFailure> {
        let failed = |output: String| StartFailure { code: None, output };
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| scratch("run"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_plinth"))
            .arg("run")
            .args([
                "--grpc-port",
                "0",
                "--dapr-grpc-port",
                "0",
                "--dapr-http-port",
                "0",
                "--admin-port",
                "0",
                "--functions-port",
                "0",
                "--mesh-port",
                "0",
                "--log-format",
                "json",
            ])
            .args(["--shutdown-grace-period", "5s"])
            .args(args)
            .envs(envs.iter().copied())
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("spawn: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed("no stdout".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| failed("no stderr".into()))?;
        let (tx, rx) = mpsc::channel::<String>();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx2.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut grpc, mut dapr_grpc, mut dapr_http, mut admin, mut functions, mut mesh) =
            (None, None, None, None, None, None);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    let fields = &v["fields"];
                    match fields["message"].as_str() {
                        Some("listening") => {
                            let addr: SocketAddr = fields["address"]
                                .as_str()
                                .unwrap_or_default()
                                .parse()
                                .map_err(|e| failed(format!("{e}")))?;
                            match fields["listener"].as_str() {
                                Some("grpc") => grpc = Some(addr),
                                Some("dapr-grpc") => dapr_grpc = Some(addr),
                                Some("dapr-http") => dapr_http = Some(addr),
                                Some("admin") => admin = Some(addr),
                                Some("functions") => functions = Some(addr),
                                Some("mesh") => mesh = Some(addr),
                                _ => {}
                            }
                        }
                        Some("plinth started") => break,
                        _ => {}
                    }
                }
                Err(_) => {
                    // Either it exited (both pipes closed) or it did not start in time.
                    let _ = child.kill();
                    let code = child.wait().ok().and_then(|s| s.code());
                    // The pipes may still hold the last lines after an exit.
                    seen.extend(rx.try_iter());
                    return Err(StartFailure {
                        code,
                        output: seen.join("\n"),
                    });
                }
            }
        }
        Ok(Self {
            child,
            grpc: grpc.ok_or_else(|| failed("no grpc address".into()))?,
            dapr_grpc: dapr_grpc.ok_or_else(|| failed("no dapr-grpc address".into()))?,
            dapr_http: dapr_http.ok_or_else(|| failed("no dapr-http address".into()))?,
            admin: admin.ok_or_else(|| failed("no admin address".into()))?,
            functions: functions.ok_or_else(|| failed("no functions address".into()))?,
            mesh: mesh.ok_or_else(|| failed("no mesh address".into()))?,
            logs: rx,
            dir,
        })
    }

    /// A Layotto client over a fresh connection.
    pub async fn client(&self) -> RuntimeClient<Channel> {
        RuntimeClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect to plinth")
    }

    /// A raw channel to the gRPC listener.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// A client for Dapr's HTTP API on this Plinth.
    pub fn dapr_http(&self) -> DaprHttp {
        DaprHttp::new(self.dapr_http)
    }

    /// GET a path on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_request(self.admin, "GET", path, None).await
    }

    /// POST JSON to the admin listener.
    pub async fn admin_post(&self, path: &str, body: &str) -> (u16, String) {
        http_request(self.admin, "POST", path, Some(body)).await
    }

    /// Kill the process outright (SIGKILL): nothing of its shutdown runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait until readiness answers 200, or panic after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.admin_get("/actuator/health/readiness").await;
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready after {timeout:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line containing {needle:?} within {timeout:?}"),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Wait for the process to exit, at most `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "plinth did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Plinth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A minimal HTTP/1.1 request with hyper, for the admin listener and the http binding.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(
            body.unwrap_or_default().to_string(),
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A response from Dapr's HTTP API.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: bytes::Bytes,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert a Dapr error answer: this status and `errorCode`; returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["errorCode"], code, "{body}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{body}"
        );
        body["message"].as_str().expect("message").to_string()
    }
}

/// An HTTP/1.1 client for Dapr's HTTP API (hyper-util's pooled client).
#[derive(Clone)]
pub struct DaprHttp {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    addr: SocketAddr,
}

impl DaprHttp {
    pub fn new(addr: SocketAddr) -> Self {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Self { client, addr }
    }

    /// Send `method path` with `headers` and `body`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<bytes::Bytes>,
    ) -> HttpResponse {
        use http_body_util::BodyExt;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Full::new(body.into()))
            .expect("request");
        let resp = self.client.request(req).await.expect("send");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        HttpResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[], bytes::Bytes::new()).await
    }

    pub async fn delete(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.request("DELETE", path, headers, bytes::Bytes::new())
            .await
    }

    /// POST a JSON document with `Content-Type: application/json`.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> HttpResponse {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }
}

/// Write a file into `dir`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, text).expect("write");
    path
}
