//! Starting, probing and stopping a system under test (SUT) as a child
//! process.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::pin::pinned_command;
use crate::procfs::Proc;

/// Output lines kept per SUT for error reports.
const LOG_TAIL: usize = 40;

/// How a SUT announces that it is ready and where it listens.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// The SUT prints `LISTENING <host:port>` on stdout once it accepts
    /// connections (the bare server). Other listeners may be announced
    /// before it as `LISTENING <name> <host:port>`.
    ListeningLine,
    /// Plinth with `--log-format json`: one `listening` log line per bound
    /// listener (fields `listener`, `address`), then `plinth started`; then
    /// the admin listener's readiness endpoint answers 200.
    PlinthJsonLogs {
        /// Listener whose address the benchmark calls, e.g. `grpc`.
        serve_listener: String,
        /// Listener that serves the readiness probe, e.g. `admin`.
        admin_listener: String,
        /// HTTP path of the readiness probe.
        readiness_path: String,
    },
    /// The SUT announces nothing; it listens on `addr`, known before it
    /// starts (haproxy, from its generated config), and is ready once
    /// `GET http://<probe or addr><path>` answers 200.
    HttpProbe {
        /// Where the SUT listens; becomes [`Sut::addr`].
        addr: SocketAddr,
        /// HTTP path of the readiness probe.
        path: String,
        /// Where the probe goes when `addr` does not answer plain HTTP (a
        /// TLS listener); `None`: `addr`.
        probe: Option<SocketAddr>,
    },
}

/// The signal that asks a SUT to exit cleanly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: Plinth and the bare server.
    #[default]
    Term,
    /// SIGUSR1: haproxy's soft stop. haproxy's SIGTERM is an immediate stop
    /// that exits with a failure status.
    Usr1,
}

impl StopSignal {
    /// The name `kill(1)` takes.
    fn kill_arg(self) -> &'static str {
        match self {
            StopSignal::Term => "-TERM",
            StopSignal::Usr1 => "-USR1",
        }
    }

    /// The name in messages.
    fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Usr1 => "SIGUSR1",
        }
    }
}

/// How to launch a SUT.
#[derive(Debug, Clone)]
pub struct SutSpec {
    /// Label used in reports, e.g. `plinth` or `bare`.
    pub label: String,
    /// Executable.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Startup protocol.
    pub readiness: Readiness,
    /// How long startup may take before it counts as failed.
    pub startup_timeout: Duration,
    /// What [`Sut::stop`] sends.
    pub stop_signal: StopSignal,
}

impl SutSpec {
    /// `plinth run` with every listener on a free port and JSON logs at
    /// level info, then `extra` arguments; [`Sut::addr`] is the listener
    /// `serve_listener` (e.g. `grpc`, `dapr-grpc`) and readiness is the
    /// admin listener's readiness probe.
    pub fn plinth(
        program: PathBuf,
        serve_listener: &str,
        extra: impl IntoIterator<Item = String>,
        startup_timeout: Duration,
    ) -> Self {
        Self {
            label: "plinth".into(),
            program,
            args: [
                "run",
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
                "--log-level",
                "info",
            ]
            .into_iter()
            .map(String::from)
            .chain(extra)
            .collect(),
            readiness: Readiness::PlinthJsonLogs {
                serve_listener: serve_listener.into(),
                admin_listener: "admin".into(),
                readiness_path: "/actuator/health/readiness".into(),
            },
            startup_timeout,
            stop_signal: StopSignal::Term,
        }
    }
}

/// A running SUT. Killed on drop if not stopped with [`Sut::stop`].
#[derive(Debug)]
pub struct Sut {
    label: String,
    child: Child,
    addr: SocketAddr,
    listeners: Vec<(String, SocketAddr)>,
    tail: Arc<Mutex<VecDeque<String>>>,
    startup: Duration,
    stop_signal: StopSignal,
}

/// What the output reader thread reports during startup.
#[derive(Debug)]
enum Event {
    Listening { listener: String, addr: SocketAddr },
    Started,
}

impl Sut {
    /// Starts `spec` (under `taskset -c <core>` when `core` is set) and
    /// blocks until it is ready.
    pub fn start(spec: &SutSpec, core: Option<usize>) -> anyhow::Result<Self> {
        let begin = Instant::now();
        let mut cmd: Command = pinned_command(core, &spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.label, spec.program.display()))?;

        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let parse: Option<LineParser> = match spec.readiness {
                Readiness::ListeningLine => Some(parse_listening_line),
                Readiness::PlinthJsonLogs { .. } => Some(parse_plinth_json_line),
                Readiness::HttpProbe { .. } => None,
            };
            spawn_reader(stdout, Arc::clone(&tail), parse.map(|parse| (tx, parse)));
        }
        if let Some(stderr) = child.stderr.take() {
            spawn_reader(stderr, Arc::clone(&tail), None);
        }
        let mut sut = Self {
            label: spec.label.clone(),
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            listeners: Vec::new(),
            tail,
            startup: Duration::ZERO,
            stop_signal: spec.stop_signal,
        };

        let deadline = begin + spec.startup_timeout;
        if let Err(e) = sut.await_ready(&spec.readiness, &rx, deadline) {
            return Err(e.context(sut.describe_failure()));
        }
        sut.startup = begin.elapsed();
        Ok(sut)
    }

    /// Address the benchmark sends requests to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Address of the listener announced as `name` (a Plinth listener such
    /// as `dapr-http`, or a named `LISTENING` line).
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(l, _)| l == name)
            .map(|(_, a)| *a)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Handle for `/proc` statistics.
    pub fn proc(&self) -> Proc {
        Proc::Pid(self.child.id())
    }

    /// Label from the spec.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Time from spawn until ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited unexpectedly ({status})\n{}",
                self.label,
                self.log_tail()
            ),
        }
    }

    /// Sends the spec's stop signal (SIGTERM unless told otherwise) and
    /// waits up to `grace` for a clean exit, then kills.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.child.id().to_string();
        // `kill(1)` keeps this crate free of `unsafe` libc calls.
        let _ = Command::new("kill")
            .args([self.stop_signal.kill_arg(), &pid])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        bail!(
            "{} did not exit within {grace:?} of {}; killed ({status})",
            self.label,
            self.stop_signal.name()
        )
    }

    /// [`Sut::stop`] with a 5 s grace, reporting an unclean exit on stderr
    /// instead of failing: the measurements are already taken.
    pub fn stop_or_warn(self) {
        let label = self.label.clone();
        let signal = self.stop_signal.name();
        match self.stop(Duration::from_secs(5)) {
            Ok(status) if !status.success() => {
                eprintln!("  warning: {label} exited with {status} on {signal}")
            }
            Ok(_) => {}
            Err(e) => eprintln!("  warning: {e:#}"),
        }
    }

    /// The last lines the process wrote to stdout and stderr.
    pub fn log_tail(&self) -> String {
        let tail = self
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        tail.join("\n")
    }

    fn describe_failure(&mut self) -> String {
        let exited = match self.child.try_wait() {
            Ok(Some(status)) => format!(" (exited: {status})"),
            _ => String::new(),
        };
        format!(
            "{} failed to start{exited}; last output:\n{}",
            self.label,
            self.log_tail()
        )
    }

    /// Follows the startup protocol and sets the service address.
    fn await_ready(
        &mut self,
        readiness: &Readiness,
        rx: &mpsc::Receiver<Event>,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        if let Readiness::HttpProbe { addr, path, probe } = readiness {
            self.addr = *addr;
            return self.await_probe(probe.unwrap_or(*addr), path, deadline);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::Listening { listener, addr }) => {
                    if matches!(readiness, Readiness::ListeningLine) && listener.is_empty() {
                        self.addr = addr;
                        return Ok(());
                    }
                    self.listeners.push((listener, addr));
                }
                Ok(Event::Started) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("not started within the startup timeout")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("output closed before startup completed")
                }
            }
        }
        let Readiness::PlinthJsonLogs {
            serve_listener,
            admin_listener,
            readiness_path,
        } = readiness
        else {
            bail!("unexpected startup event");
        };
        let find = |name: &str| {
            self.listener(name)
                .with_context(|| format!("no `listening` line for listener {name:?}"))
        };
        let serve = find(serve_listener)?;
        let admin = find(admin_listener)?;
        self.addr = serve;
        self.await_probe(admin, readiness_path, deadline)
    }

    /// Polls `GET http://<addr><path>` until it answers 200.
    fn await_probe(
        &mut self,
        addr: SocketAddr,
        path: &str,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            self.check_alive()?;
            match probe(addr, path) {
                Ok(200) => return Ok(()),
                Ok(code) => last = format!("HTTP {code}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "readiness probe http://{addr}{path} not 200 within the startup timeout (last: {last})"
        )
    }
}

/// Turns an output line into a startup event, if it is one.
type LineParser = fn(&str) -> Option<Event>;

/// Reads lines from `stream` into `tail`; with `startup`, also parses each
/// line into startup events until the receiver goes away.
fn spawn_reader<R: Read + Send + 'static>(
    stream: R,
    tail: Arc<Mutex<VecDeque<String>>>,
    startup: Option<(mpsc::Sender<Event>, LineParser)>,
) {
    std::thread::spawn(move || {
        let mut startup = startup;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some((tx, parse)) = &startup
                && let Some(event) = parse(&line)
            {
                let done = matches!(event, Event::Started);
                if tx.send(event).is_err() || done {
                    startup = None;
                }
            }
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == LOG_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    });
}

/// `LISTENING <addr>` (the main listener, which also signals readiness) or
/// `LISTENING <name> <addr>`.
fn parse_listening_line(line: &str) -> Option<Event> {
    let rest = line.strip_prefix("LISTENING ")?.trim();
    let (listener, addr) = match rest.split_once(' ') {
        Some((name, addr)) => (name.to_owned(), addr.trim()),
        None => (String::new(), rest),
    };
    Some(Event::Listening {
        listener,
        addr: addr.parse().ok()?,
    })
}

fn parse_plinth_json_line(line: &str) -> Option<Event> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    // tracing-subscriber nests event fields under `fields` unless the
    // subscriber flattens them; accept both.
    let fields = value.get("fields").unwrap_or(&value);
    match fields.get("message")?.as_str()? {
        "listening" => {
            let listener = fields.get("listener")?.as_str()?.to_owned();
            let addr = fields.get("address")?.as_str()?.parse().ok()?;
            Some(Event::Listening { listener, addr })
        }
        "plinth started" => Some(Event::Started),
        _ => None,
    }
}

/// One `GET http://<addr><path>`; returns the HTTP status code.
fn probe(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line)?;
    let code = status_line
        .split_whitespace()
        .nth(1)
        .context("empty HTTP response")?;
    Ok(code.parse()?)
}

/// A gRPC channel to a SUT's listener: TCP_NODELAY, a 5 s connect timeout, connected now.
pub async fn grpc_channel(addr: SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plinth_json_logs() {
        let line = r#"{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","fields":{"message":"listening","listener":"grpc","address":"127.0.0.1:41234"},"target":"plinth"}"#;
        match parse_plinth_json_line(line) {
            Some(Event::Listening { listener, addr }) => {
                assert_eq!(listener, "grpc");
                assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 41234)));
            }
            other => panic!("unexpected {other:?}"),
        }
        let flat = r#"{"level":"INFO","message":"plinth started"}"#;
        assert!(matches!(parse_plinth_json_line(flat), Some(Event::Started)));
        assert!(parse_plinth_json_line(r#"{"fields":{"message":"other"}}"#).is_none());
        assert!(parse_plinth_json_line("not json").is_none());
    }

    #[test]
    fn parses_listening_line() {
        assert!(matches!(
            parse_listening_line("LISTENING 127.0.0.1:5000"),
            Some(Event::Listening { listener, addr }) if addr.port() == 5000 && listener.is_empty()
        ));
        assert!(matches!(
            parse_listening_line("LISTENING http 127.0.0.1:5001"),
            Some(Event::Listening { listener, addr }) if addr.port() == 5001 && listener == "http"
        ));
        assert!(parse_listening_line("hello").is_none());
    }
}
