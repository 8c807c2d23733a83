//! What one request's store holds, and the sandbox it is built from: WASI with only what the
//! function was granted, wasi:http without an outgoing client, the limits, and the
//! function's environment.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use plinth_core::{Error, Result};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::config::Grants;
use crate::env::FunctionEnv;
use crate::limits::{CallLimits, HasLimits};

/// The data of one request's store.
pub(crate) struct Ctx {
    pub(crate) env: Arc<FunctionEnv>,
    pub(crate) limits: CallLimits,
    pub(crate) output: GuestOutput,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutgoingHttp,
    table: ResourceTable,
}

impl Ctx {
    pub(crate) fn new(
        env: Arc<FunctionEnv>,
        sandbox: &Sandbox,
        limits: CallLimits,
    ) -> Result<Self> {
        let output = GuestOutput::new(env.id.clone());
        let wasi = sandbox.wasi_ctx(&env.id, &output)?;
        Ok(Self {
            hooks: NoOutgoingHttp {
                function: env.id.clone(),
                network: sandbox.network,
            },
            env,
            limits,
            output,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        })
    }
}

impl Ctx {
    /// The resources the guest holds handles to (WASI's, wasi:http's and wasi:keyvalue's
    /// buckets).
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Whether the store holds no resource of a finished request: the guest dropped the
    /// request, its response and body, and no memory growth was refused.
    pub(crate) fn is_idle(&self) -> bool {
        self.table.is_empty() && self.limits.exceeded().is_none()
    }
}

impl HasLimits for Ctx {
    fn limits(&mut self) -> &mut CallLimits {
        &mut self.limits
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// `wasi:http/outgoing-handler` is linked, so that components built against the whole
/// `wasi:http/proxy` world load, but refuses every request: functions call other services
/// through `plinth:runtime/invoke`, where Plinth applies its resilience and access rules.
struct NoOutgoingHttp {
    function: Arc<str>,
    network: bool,
}

impl WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        tracing::warn!(
            function = %self.function,
            authority = ?request.uri().authority().map(|a| a.as_str()),
            "refused an outgoing wasi:http request: functions call services through plinth:runtime/invoke{}",
            if self.network { " (grants.network opens WASI sockets, not wasi:http)" } else { "" }
        );
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// What a function's grants open in its WASI context, checked once at load.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sandbox {
    env: Vec<(String, String)>,
    dirs: Vec<Preopen>,
    network: bool,
}

#[derive(Debug, Clone)]
struct Preopen {
    host: PathBuf,
    guest: String,
    writable: bool,
}

/// Environment variables a function may never be handed from the host's environment: the
/// API tokens (the same rule as the env secret store's).
fn blocked_env(name: &str) -> bool {
    ["DAPR_API_TOKEN", "APP_API_TOKEN", "PLINTH_API_TOKEN"].contains(&name)
        || ["PLINTH_", "DAPR_", "APP_API_TOKEN"]
            .iter()
            .any(|p| name.starts_with(p))
}

impl Sandbox {
    /// Check and resolve `grants` of function `id`: `env` entries are `NAME=value` or `NAME`
    /// (the host's value, read now; a variable the host does not have is left out), `dirs`
    /// entries are `host:guest` with an optional `:ro` or `:rw` (read-only by default), and
    /// the host directory must exist.
    pub(crate) fn from_grants(id: &str, grants: &Grants) -> Result<Self> {
        let invalid = |field: &str, msg: String| {
            Error::invalid_argument(format!("function {id:?}: grants.{field}: {msg}"))
        };
        let mut env = Vec::with_capacity(grants.env.len());
        for entry in &grants.env {
            match entry.split_once('=') {
                Some((name, value)) => {
                    if name.is_empty() {
                        return Err(invalid("env", format!("{entry:?} has no variable name")));
                    }
                    env.push((name.to_string(), value.to_string()));
                }
                None if entry.is_empty() => {
                    return Err(invalid("env", "an entry is empty".into()));
                }
                None if blocked_env(entry) => {
                    return Err(invalid(
                        "env",
                        format!(
                            "{entry:?} cannot be passed from the host: Plinth's and Dapr's variables and API tokens stay private (give a value with NAME=value)"
                        ),
                    ));
                }
                None => match std::env::var(entry) {
                    Ok(value) => env.push((entry.clone(), value)),
                    Err(_) => tracing::warn!(
                        function = id,
                        variable = %entry,
                        "granted environment variable is not set (or not UTF-8) on the host; the function will not see it"
                    ),
                },
            }
        }
        let mut dirs = Vec::with_capacity(grants.dirs.len());
        for entry in &grants.dirs {
            let (spec, writable) = match entry.rsplit_once(':') {
                Some((spec, "rw")) => (spec, true),
                Some((spec, "ro")) => (spec, false),
                _ => (entry.as_str(), false),
            };
            let Some((host, guest)) = spec.split_once(':') else {
                return Err(invalid(
                    "dirs",
                    format!("{entry:?} is not host-path:guest-path[:ro|:rw]"),
                ));
            };
            if host.is_empty() || guest.is_empty() || guest.contains(':') {
                return Err(invalid(
                    "dirs",
                    format!("{entry:?} is not host-path:guest-path[:ro|:rw]"),
                ));
            }
            if !std::path::Path::new(host).is_dir() {
                return Err(invalid(
                    "dirs",
                    format!("{host:?} is not a directory on the host"),
                ));
            }
            dirs.push(Preopen {
                host: host.into(),
                guest: guest.to_string(),
                writable,
            });
        }
        Ok(Self {
            env,
            dirs,
            network: grants.network,
        })
    }

    /// A fresh WASI context: no arguments, no stdin, stdout and stderr to the log, and
    /// nothing else unless granted.
    fn wasi_ctx(&self, id: &str, output: &GuestOutput) -> Result<WasiCtx> {
        let mut b = WasiCtxBuilder::new();
        b.stdout(output.stream(Stream::Stdout))
            .stderr(output.stream(Stream::Stderr))
            .envs(&self.env);
        for d in &self.dirs {
            let perms = if d.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            b.preopened_dir(&d.host, &d.guest, perms).map_err(|e| {
                Error::internal(format!(
                    "function {id:?}: opening granted directory {}: {e}",
                    d.host.display()
                ))
            })?;
        }
        if self.network {
            b.inherit_network()
                .allow_ip_name_lookup(true)
                .allow_tcp(true)
                .allow_udp(true);
        } else {
            // Every address is refused already; refuse creating sockets at all too.
            b.allow_ip_name_lookup(false)
                .allow_tcp(false)
                .allow_udp(false);
        }
        Ok(b.build())
    }
}

/// Bytes of guest output logged per request; the rest is dropped.
const MAX_LOGGED_OUTPUT: usize = 16 << 10;
/// Bytes of stderr kept to explain a trap (a Rust panic prints its message there).
const STDERR_TAIL: usize = 2 << 10;
/// The longest line logged as one event.
const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// The guest's stdout and stderr: logged line by line with the function's id, up to
/// [`MAX_LOGGED_OUTPUT`] per request, never blocking and never failing the guest.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    function: Arc<str>,
    inner: Arc<Mutex<OutputState>>,
}

#[derive(Default)]
struct OutputState {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    logged: usize,
    truncated: bool,
    stderr_tail: Vec<u8>,
}

impl GuestOutput {
    fn new(function: Arc<str>) -> Self {
        Self {
            function,
            inner: Arc::default(),
        }
    }

    fn stream(&self, stream: Stream) -> GuestStream {
        GuestStream {
            output: self.clone(),
            stream,
        }
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let state = &mut *guard;
        if stream == Stream::Stderr {
            state.stderr_tail.extend_from_slice(bytes);
            let excess = state.stderr_tail.len().saturating_sub(STDERR_TAIL);
            state.stderr_tail.drain(..excess);
        }
        let mut buf = std::mem::take(state.pending(stream));
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(offset) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset + 1;
            state.emit(&self.function, stream, &buf[start..end]);
            start = end;
        }
        buf.drain(..start);
        if buf.len() >= MAX_LINE {
            state.emit(&self.function, stream, &buf);
            buf.clear();
        }
        *state.pending(stream) = buf;
    }

    /// Log what is left of unterminated lines; called once the guest is done.
    pub(crate) fn flush(&self) {
        let Ok(mut state) = self.inner.lock() else {
            return;
        };
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(state.pending(stream));
            if !line.is_empty() {
                state.emit(&self.function, stream, &line);
            }
        }
    }

    /// The panic message a Rust guest printed to stderr before it trapped, if any.
    pub(crate) fn panic_message(&self) -> Option<String> {
        let state = self.inner.lock().ok()?;
        let tail = String::from_utf8_lossy(&state.stderr_tail);
        let at = tail.rfind("panicked at ")?;
        let text = &tail[at..];
        let text = text.split("\nnote:").next().unwrap_or(text);
        let text = text.trim().replace('\n', " ");
        Some(super::host::truncate(&text, 512).to_string())
    }
}

impl OutputState {
    fn pending(&mut self, stream: Stream) -> &mut Vec<u8> {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }

    fn emit(&mut self, function: &str, stream: Stream, line: &[u8]) {
        if self.logged >= MAX_LOGGED_OUTPUT {
            if !self.truncated {
                self.truncated = true;
                tracing::info!(target: "plinth_wasm::guest", function, "further output of this request dropped");
            }
            return;
        }
        let line = &line[..line.len().min(MAX_LINE)];
        self.logged += line.len();
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        match stream {
            Stream::Stdout => {
                tracing::info!(target: "plinth_wasm::guest", function, stream = "stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "plinth_wasm::guest", function, stream = "stderr", "{text}")
            }
        }
    }
}

/// One of the guest's output streams.
#[derive(Clone)]
struct GuestStream {
    output: GuestOutput,
    stream: Stream,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.output.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
