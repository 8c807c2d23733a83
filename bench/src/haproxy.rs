//! haproxy as a baseline: an HTTP reverse proxy from a local port to one
//! backend, run from a configuration generated for each start.
//!
//! haproxy comes from Debian's package (`bench/run.sh dapr` installs it);
//! nothing here downloads or builds it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::sut::{Readiness, StopSignal, Sut, SutSpec};

/// Path haproxy answers 200 on by itself (`monitor-uri`), without the
/// backend: the readiness probe.
pub const READY_PATH: &str = "/haproxy-ready";

/// Where Debian installs haproxy, searched after `PATH` (a non-root `PATH`
/// often lacks `/usr/sbin`).
const DEBIAN_SBIN: &str = "/usr/sbin";

/// An haproxy reverse proxy in HTTP mode with one thread and keep-alive
/// connections to its backend.
#[derive(Debug, Clone)]
pub struct HaproxySpec {
    /// Label used in reports.
    pub label: String,
    /// The `haproxy` executable.
    pub program: PathBuf,
    /// The server every request is forwarded to.
    pub backend: SocketAddr,
    /// Client connections haproxy accepts at once (`maxconn`); beyond it
    /// connections wait, so it must exceed what the generator opens.
    pub max_connections: usize,
    /// `(regex, replacement)` for `http-request replace-path`, applied to
    /// every request before it is forwarded.
    pub replace_path: Option<(String, String)>,
    /// How long startup may take before it counts as failed.
    pub startup_timeout: Duration,
    /// TLS terminated on the listener; `None`: plain HTTP.
    pub listen_tls: Option<ListenTls>,
    /// TLS to the backend; `None`: plain HTTP.
    pub backend_tls: Option<BackendTls>,
}

/// TLS on haproxy's listener (`bind ... ssl crt <file>`). The readiness probe
/// then goes to a second, plain frontend on another port.
#[derive(Debug, Clone)]
pub struct ListenTls {
    /// The certificate chain and its key, concatenated in one PEM file.
    pub crt: PathBuf,
    /// When set, clients must present a certificate that chains to this CA
    /// (`verify required ca-file`): mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN (`alpn h2,http/1.1`).
    pub h2: bool,
}

/// TLS from haproxy to its backend (`server ... ssl verify required`).
#[derive(Debug, Clone)]
pub struct BackendTls {
    /// The CA the backend's certificate must chain to.
    pub ca_file: PathBuf,
    /// The name checked against the backend certificate's DNS names or, with
    /// none, its common name (`verifyhost`); `None`: the chain alone.
    pub verify_host: Option<String>,
    /// A client certificate chain and key in one PEM file, presented to the
    /// backend (`crt`).
    pub crt: Option<PathBuf>,
    /// Speak HTTP/2 to the backend (`alpn h2`); otherwise HTTP/1.1.
    pub h2: bool,
}

impl HaproxySpec {
    /// The configuration for a proxy listening on `listen` (and, with
    /// [`ListenTls`], answering the readiness probe on `probe`). One thread,
    /// as Plinth and the bare server run one Tokio worker; no `log` line, so
    /// nothing is logged per request.
    pub fn config(&self, listen: SocketAddr, probe: Option<SocketAddr>) -> String {
        let maxconn = self.max_connections;
        let rewrite = self
            .replace_path
            .as_ref()
            .map(|(regex, replacement)| {
                format!("    http-request replace-path {regex} {replacement}\n")
            })
            .unwrap_or_default();
        let backend = self.backend;
        // A TLS listener cannot answer the plain readiness probe: a second
        // frontend on `probe` does.
        let (bind, frontend_monitor, ready_frontend) = match (&self.listen_tls, probe) {
            (Some(tls), Some(probe)) => {
                let mut bind = format!("{listen} ssl crt {}", tls.crt.display());
                if let Some(ca) = &tls.client_ca {
                    bind.push_str(&format!(" verify required ca-file {}", ca.display()));
                }
                if tls.h2 {
                    bind.push_str(" alpn h2,http/1.1");
                }
                let ready =
                    format!("\nfrontend ready\n    bind {probe}\n    monitor-uri {READY_PATH}\n");
                (bind, String::new(), ready)
            }
            _ => (
                listen.to_string(),
                format!("    monitor-uri {READY_PATH}\n"),
                String::new(),
            ),
        };
        let server_tls = self
            .backend_tls
            .as_ref()
            .map(|tls| {
                let mut s = format!(" ssl verify required ca-file {}", tls.ca_file.display());
                if let Some(host) = &tls.verify_host {
                    s.push_str(&format!(" verifyhost {host}"));
                }
                if let Some(crt) = &tls.crt {
                    s.push_str(&format!(" crt {}", crt.display()));
                }
                if tls.h2 {
                    s.push_str(" alpn h2");
                }
                s
            })
            .unwrap_or_default();
        format!(
            "\
# Generated by plinth-bench for one run (bench/README.md).
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend bench
    bind {bind}
{frontend_monitor}{rewrite}    default_backend app

backend app
    server app {backend}{server_tls}
{ready_frontend}"
        )
    }

    /// Writes the configuration into a fresh temporary directory, starts
    /// haproxy in the foreground (under `taskset -c <core>` when `core` is
    /// set) and waits until it answers [`READY_PATH`]. The [`Sut::addr`] of
    /// the result is where it listens for requests.
    ///
    /// The directory is removed once haproxy has answered or failed: haproxy
    /// reads its configuration only at startup, and nothing reloads it.
    pub fn start(&self, core: Option<usize>) -> anyhow::Result<Sut> {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let probe = match self.listen_tls {
            Some(_) => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?))),
            None => None,
        };
        let dir = temp_dir()?;
        let file = dir.join("haproxy.cfg");
        let started = std::fs::write(&file, self.config(listen, probe))
            .with_context(|| format!("writing {}", file.display()))
            .and_then(|()| Sut::start(&self.sut_spec(&file, listen, probe), core));
        let _ = std::fs::remove_dir_all(&dir);
        started
    }

    fn sut_spec(&self, config: &Path, listen: SocketAddr, probe: Option<SocketAddr>) -> SutSpec {
        SutSpec {
            label: self.label.clone(),
            program: self.program.clone(),
            // `-db`: foreground, no master process, so the pid measured is
            // the one proxying.
            args: vec![
                "-db".into(),
                "-f".into(),
                config.to_string_lossy().into_owned(),
            ],
            readiness: Readiness::HttpProbe {
                addr: listen,
                path: READY_PATH.into(),
                probe,
            },
            startup_timeout: self.startup_timeout,
            stop_signal: StopSignal::Usr1,
        }
    }
}

/// `program` as given when it names a path, else the first match in `PATH`
/// or in `/usr/sbin`.
pub fn find_program(program: &Path) -> anyhow::Result<PathBuf> {
    if program.components().count() > 1 {
        if program.is_file() {
            return Ok(program.to_owned());
        }
        bail!("{} not found", program.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::iter::once(PathBuf::from(DEBIAN_SBIN)))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("{} not found in PATH or {DEBIAN_SBIN}", program.display()))
}

/// A loopback port free at the time of asking. haproxy cannot bind port 0
/// and report what it got, so the port is chosen here; another process
/// taking it in between makes haproxy fail to start, loudly.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A new directory under the system's temporary directory, unique to this
/// process and call.
fn temp_dir() -> anyhow::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("plinth-bench-haproxy-{}-{n}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_proxies_to_the_backend_with_keep_alive() {
        let spec = HaproxySpec {
            label: "haproxy".into(),
            program: "haproxy".into(),
            backend: SocketAddr::from(([127, 0, 0, 1], 4000)),
            max_connections: 2000,
            replace_path: Some(("^/a/(.*)$".into(), r"/\1".into())),
            startup_timeout: Duration::from_secs(1),
            listen_tls: None,
            backend_tls: None,
        };
        let cfg = spec.config(SocketAddr::from(([127, 0, 0, 1], 5000)), None);
        for line in [
            "    nbthread 1",
            "    mode http",
            "    maxconn 2000",
            "    option http-keep-alive",
            "    http-reuse always",
            "    bind 127.0.0.1:5000",
            "    monitor-uri /haproxy-ready",
            r"    http-request replace-path ^/a/(.*)$ /\1",
            "    server app 127.0.0.1:4000",
        ] {
            assert!(cfg.lines().any(|l| l == line), "missing {line:?} in\n{cfg}");
        }
    }

    #[test]
    fn config_with_tls_on_both_sides() {
        let spec = HaproxySpec {
            label: "haproxy".into(),
            program: "haproxy".into(),
            backend: SocketAddr::from(([127, 0, 0, 1], 4000)),
            max_connections: 100,
            replace_path: None,
            startup_timeout: Duration::from_secs(1),
            listen_tls: Some(ListenTls {
                crt: "/d/b.pem".into(),
                client_ca: Some("/d/ca.pem".into()),
                h2: true,
            }),
            backend_tls: Some(BackendTls {
                ca_file: "/d/ca.pem".into(),
                verify_host: Some("server".into()),
                crt: Some("/d/a.pem".into()),
                h2: true,
            }),
        };
        let cfg = spec.config(
            SocketAddr::from(([127, 0, 0, 1], 5000)),
            Some(SocketAddr::from(([127, 0, 0, 1], 5001))),
        );
        for line in [
            "    bind 127.0.0.1:5000 ssl crt /d/b.pem verify required ca-file /d/ca.pem alpn h2,http/1.1",
            "    server app 127.0.0.1:4000 ssl verify required ca-file /d/ca.pem verifyhost server crt /d/a.pem alpn h2",
            "frontend ready",
            "    bind 127.0.0.1:5001",
            "    monitor-uri /haproxy-ready",
        ] {
            assert!(cfg.lines().any(|l| l == line), "missing {line:?} in\n{cfg}");
        }
    }

    #[test]
    fn finds_programs_by_path_or_name() {
        assert!(find_program(Path::new("sh")).is_ok());
        assert!(find_program(Path::new("/nonexistent/haproxy")).is_err());
        assert!(find_program(Path::new("no-such-program-plinth-bench")).is_err());
    }
}
