//! WASI preview 1 for proxy-wasm modules, built from the function's grants: environment
//! variables, directories and the network only when granted; stdout and stderr go to the
//! log, line by line, under the function's id; stdin is closed.

use std::path::PathBuf;
use std::sync::Arc;

use plinth_core::{Error, Result};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::config::Grants;

/// Plinth's and Dapr's API tokens: a grant never passes the host's value on.
const TOKENS: [&str; 4] = [
    "PLINTH_API_TOKEN",
    "DAPR_API_TOKEN",
    "APP_API_TOKEN",
    "DAPR_CLIENT_TOKEN",
];

/// The longest line of guest output logged as one event; longer lines are split.
const MAX_LINE: usize = 4096;

/// A function's grants, checked once at load and applied to every store.
#[derive(Debug, Clone, Default)]
pub(crate) struct WasiGrants {
    env: Vec<(String, String)>,
    dirs: Vec<(PathBuf, String, bool)>,
    network: bool,
}

impl WasiGrants {
    /// Check `grants`, naming the bad entry.
    pub(crate) fn parse(id: &str, grants: &Grants) -> Result<Self> {
        let bad = |what: String| Error::invalid_argument(format!("function {id:?}: {what}"));
        let mut env = Vec::new();
        for (i, entry) in grants.env.iter().enumerate() {
            match entry.split_once('=') {
                Some(("", _)) => {
                    return Err(bad(format!("grants.env[{i}] has no name")));
                }
                Some((name, value)) => env.push((name.to_string(), value.to_string())),
                None if entry.is_empty() => return Err(bad(format!("grants.env[{i}] is empty"))),
                None if TOKENS.contains(&entry.as_str()) => {
                    return Err(bad(format!(
                        "grants.env[{i}]: {entry} is an API token and is never passed to functions"
                    )));
                }
                None => {
                    if let Ok(value) = std::env::var(entry) {
                        env.push((entry.clone(), value));
                    }
                }
            }
        }
        let mut dirs = Vec::new();
        for (i, entry) in grants.dirs.iter().enumerate() {
            let (spec, rw) = match entry.strip_suffix(":rw") {
                Some(spec) => (spec, true),
                None => (entry.strip_suffix(":ro").unwrap_or(entry), false),
            };
            let Some((host, guest)) = spec
                .split_once(':')
                .filter(|(h, g)| !h.is_empty() && !g.is_empty())
            else {
                return Err(bad(format!(
                    "grants.dirs[{i}] {entry:?} is not host-path:guest-path[:rw]"
                )));
            };
            if !std::path::Path::new(host).is_dir() {
                return Err(bad(format!(
                    "grants.dirs[{i}]: {host:?} is not a directory"
                )));
            }
            dirs.push((PathBuf::from(host), guest.to_string(), rw));
        }
        let granted = Self {
            env,
            dirs,
            network: grants.network,
        };
        granted
            .build(&Arc::from(id))
            .map_err(|e| bad(e.to_string()))?;
        Ok(granted)
    }

    /// A fresh WASI context for one store.
    pub(crate) fn build(&self, id: &Arc<str>) -> Result<WasiP1Ctx> {
        let mut b = WasiCtxBuilder::new();
        b.stdout(GuestOutput {
            function: id.clone(),
            stream: "stdout",
        })
        .stderr(GuestOutput {
            function: id.clone(),
            stream: "stderr",
        });
        for (k, v) in &self.env {
            b.env(k, v);
        }
        for (host, guest, rw) in &self.dirs {
            let perms = if *rw {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            b.preopened_dir(host, guest, perms).map_err(|e| {
                Error::unavailable(format!("granted directory {}: {e:#}", host.display()))
            })?;
        }
        if self.network {
            b.inherit_network().allow_ip_name_lookup(true);
        } else {
            b.allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false);
        }
        Ok(b.build_p1())
    }
}

/// A guest's stdout or stderr, logged.
#[derive(Debug, Clone)]
struct GuestOutput {
    function: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 asks for this, which core modules cannot import.
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineLog {
            out: self.clone(),
            line: Vec::new(),
        })
    }
}

/// Logs complete lines as they are written, the rest when dropped.
struct LineLog {
    out: GuestOutput,
    line: Vec<u8>,
}

impl LineLog {
    fn emit(&mut self, upto: usize) {
        let text = String::from_utf8_lossy(&self.line[..upto]);
        tracing::info!(target: "plinth_wasm::guest", function = %self.out.function, stream = self.out.stream, "{}", text.trim_end_matches('\r'));
        let consumed = (upto + 1).min(self.line.len());
        self.line.drain(..consumed);
    }
}

impl Drop for LineLog {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            let n = self.line.len();
            self.emit(n);
        }
    }
}

impl OutputStream for LineLog {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        for &b in bytes.iter() {
            if b == b'\n' {
                let n = self.line.len();
                self.line.push(b);
                self.emit(n);
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    let n = self.line.len();
                    self.emit(n);
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineLog {
    async fn ready(&mut self) {}
}
