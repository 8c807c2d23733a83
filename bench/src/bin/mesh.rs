//! `bench-mesh`: the mesh data-plane benchmark.
//!
//! One app (the bare server's `--app` mode, `POST /echo`) called three ways,
//! HTTP/1.1 keep-alive from the generator, the same small JSON body:
//!
//! | lane | path |
//! | --- | --- |
//! | `direct` | client → app `POST /echo` |
//! | `plinth` | client → Plinth A (`POST /v1.0/invoke/server/method/echo`) → mesh (HTTP/2, mTLS) → Plinth B → app |
//! | `haproxy` | client → haproxy A (plain HTTP, same path, rewritten to `/echo`) → TLS (mutual) → haproxy B → app |
//!
//! Each run starts everything fresh, checks every lane answers correctly,
//! then measures open loop at the low rate and closed loop at a fixed
//! concurrency, alternating the lanes measurement by measurement. Besides
//! latency and throughput it reports, per sidecar (A and B of each two-hop
//! path), CPU per 1,000 rps during the low-rate runs and RSS after the run.
//!
//! Results go to stdout as Markdown and to `bench/results/<name>.json`.
//! Target checks are informational: the exit status is 0 unless something
//! failed to run. When the Plinth path fails (to start or to answer), the
//! failure and both sidecars' log tails go to stderr and into the report, and
//! the direct and haproxy lanes are still measured.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plinth_bench::payload::json_value;
use plinth_bench::report::{self, Check, megabytes, opt_spread, signed};
use plinth_bench::stats::{Measurement, Spread};
use plinth_bench::{
    BackendTls, Candidate, CommonArgs, HaproxySpec, ListenTls, Load, Phase, Pinning, Proc,
    Readiness, Report, RunConfig, Session, Side, StopSignal, Sut, SutSpec, haproxy, pin,
};
use plinth_mesh::testing::{Ca, write_ca};
use plinth_mesh::tls::Identity;
use serde::Serialize;

/// The one scenario, as the tables name it.
const SCENARIO: &str = "Invoke mesh";
/// The callee's app id (Plinth B's), in the invoke path.
const SERVER_ID: &str = "server";
/// The caller's app id (Plinth A's).
const CLIENT_ID: &str = "client";
/// The trust domain and namespace of the certificates.
const TRUST_DOMAIN: &str = "public";
const NAMESPACE: &str = "default";
/// The app's route.
const APP_PATH: &str = "/echo";
/// Added p99 per sidecar pair at the low rate, vs direct, µs.
const TARGET_ADDED_P99_US: f64 = 500.0;
/// CPU per 1,000 rps per sidecar, cores.
const TARGET_VCPU_PER_1K: f64 = 0.1;
/// Closed-loop throughput of Plinth relative to haproxy's.
const TARGET_THROUGHPUT_RATIO: f64 = 1.0;
/// How long the checks before measuring may take per lane.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// Mesh data-plane benchmark: an app called directly, through two Plinth
/// sidecars (HTTP/2 mTLS mesh between them), and through two haproxies (TLS
/// between them).
#[derive(Debug, Parser)]
#[command(name = "bench-mesh", args_override_self = true)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Size of the JSON body echoed, bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Core for the app [default: the SUTs' core].
    #[arg(long)]
    app_core: Option<usize>,
    /// Also measure open loop at --high-rate (default: only --low-rate and
    /// the closed loop).
    #[arg(long)]
    with_high_rate: bool,
    /// Leave the haproxy two-hop path out.
    #[arg(long)]
    no_haproxy: bool,
    /// The haproxy executable (Debian's package `haproxy`), looked up in
    /// PATH, then /usr/sbin.
    #[arg(long, default_value = "haproxy")]
    haproxy_bin: PathBuf,
    /// Protocol between haproxy A and haproxy B, over TLS.
    #[arg(long, value_enum, default_value_t = HopProto::H2)]
    haproxy_proto: HopProto,
    /// Result name (`<results-dir>/<name>.json`).
    #[arg(long, default_value = "mesh")]
    name: String,
}

/// What haproxy A speaks to haproxy B inside TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum HopProto {
    /// HTTP/1.1, keep-alive connections shared across requests (`http-reuse always`).
    H1,
    /// HTTP/2 negotiated by ALPN (`alpn h2`), streams multiplexed on shared connections.
    H2,
}

impl HopProto {
    fn name(self) -> &'static str {
        match self {
            HopProto::H1 => "HTTP/1.1",
            HopProto::H2 => "HTTP/2",
        }
    }
}

/// The configuration as run, recorded in the JSON result.
#[derive(Debug, Clone, Serialize)]
struct Config {
    #[serde(flatten)]
    run: RunConfig,
    value_size: usize,
    app_core: Option<usize>,
    with_high_rate: bool,
    /// The haproxy executable, when the haproxy path is measured.
    haproxy_bin: Option<PathBuf>,
    haproxy_proto: HopProto,
}

impl Config {
    fn resolve(args: &Args, pinning: Pinning) -> anyhow::Result<Self> {
        ensure!(
            args.common.candidate == Candidate::Plinth,
            "bench-mesh compares Plinth with haproxy and a direct call; it has no bare candidate"
        );
        let haproxy_bin = if args.no_haproxy {
            None
        } else {
            Some(haproxy::find_program(&args.haproxy_bin).context(
                "haproxy is the two-hop baseline: install Debian's package \
                 (`apt-get install haproxy`; `bench/run.sh mesh` does when run as root), \
                 pass --haproxy-bin, or leave it out with --no-haproxy",
            )?)
        };
        Ok(Self {
            run: RunConfig::resolve(&args.common)?,
            value_size: args.value_size,
            app_core: args.app_core.or(pinning.sut_core()),
            with_high_rate: args.with_high_rate,
            haproxy_bin,
            haproxy_proto: args.haproxy_proto,
        })
    }

    fn phases(&self) -> Vec<Phase> {
        let high = self.run.high_load();
        self.run
            .phases()
            .into_iter()
            .filter(|p| self.with_high_rate || p.load != high)
            .collect()
    }
}

/// Who is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Lane {
    Direct,
    Haproxy,
    Plinth,
}

impl Lane {
    fn label(self) -> &'static str {
        match self {
            Lane::Direct => "direct",
            Lane::Haproxy => "haproxy",
            Lane::Plinth => "plinth",
        }
    }

    fn side(self) -> Side {
        match self {
            Lane::Direct | Lane::Haproxy => Side::Baseline,
            Lane::Plinth => Side::Candidate,
        }
    }
}

/// The invoke path the generator sends to both first hops.
fn invoke_path() -> String {
    format!("/v1.0/invoke/{SERVER_ID}/method/echo")
}

/// haproxy A's `replace-path`, from [`invoke_path`] to the app's route.
fn haproxy_rewrite() -> (String, String) {
    (
        format!(r"^/v1\.0/invoke/{SERVER_ID}/method/(.*)$"),
        r"/\1".to_owned(),
    )
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One HTTP/1.1 keep-alive pool for every lane.
fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The call of one lane: `POST uri` with the body, expecting 200 and the
/// body back.
#[derive(Debug, Clone)]
struct Call {
    client: HttpClient,
    uri: Uri,
    body: Bytes,
}

impl Call {
    async fn exchange(&self) -> anyhow::Result<(http::response::Parts, Bytes)> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Full::new(self.body.clone()))?;
        let (parts, body) = self.client.request(request).await?.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts, body))
    }

    /// Sends the request and checks the status and the body's length.
    async fn send(self) -> anyhow::Result<()> {
        let (parts, body) = self.exchange().await?;
        ensure!(
            parts.status == StatusCode::OK,
            "HTTP {} (expected 200): {}",
            parts.status,
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        ensure!(
            body.len() == self.body.len(),
            "HTTP body of {} bytes, expected {}",
            body.len(),
            self.body.len()
        );
        Ok(())
    }

    /// Checks the answer byte for byte and its content type; returns a line
    /// for the log.
    async fn preflight(&self) -> anyhow::Result<String> {
        let (parts, body) = self.exchange().await?;
        ensure!(
            parts.status == StatusCode::OK,
            "HTTP {} (expected 200): {}",
            parts.status,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        ensure!(
            body == self.body,
            "the body is not the one sent: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        ensure!(
            content_type.is_some_and(|c| c.as_bytes().starts_with(b"application/json")),
            "Content-Type {content_type:?}, expected application/json"
        );
        Ok(format!("{}, {} bytes echoed", parts.status, body.len()))
    }
}

/// The certificates of a session, in a temporary directory removed on drop.
#[derive(Debug)]
struct Certs {
    dir: PathBuf,
    ca: PathBuf,
    /// Plinth A's and B's: (cert, key).
    plinth_a: (PathBuf, PathBuf),
    plinth_b: (PathBuf, PathBuf),
    /// haproxy A's client and haproxy B's server certificate, each with its
    /// key in one PEM file.
    haproxy_a: PathBuf,
    haproxy_b: PathBuf,
}

impl Certs {
    fn write() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("plinth-bench-mesh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = write_ca(&dir).context("writing the mesh CA")?;
        let client = Identity::new(TRUST_DOMAIN, NAMESPACE, CLIENT_ID);
        let server = Identity::new(TRUST_DOMAIN, NAMESPACE, SERVER_ID);
        let issue = |id: &Identity, name: &str| -> anyhow::Result<(PathBuf, PathBuf)> {
            let files = ca
                .issue(id, &dir, name)
                .with_context(|| format!("issuing {name}"))?;
            Ok((files.cert_file, files.key_file))
        };
        let plinth_a = issue(&client, "client")?;
        let plinth_b = issue(&server, "server")?;
        let haproxy_a = combined(&ca, &client, &dir, "haproxy-a")?;
        let haproxy_b = combined(&ca, &server, &dir, "haproxy-b")?;
        Ok(Self {
            ca: ca.ca_file().to_owned(),
            dir,
            plinth_a,
            plinth_b,
            haproxy_a,
            haproxy_b,
        })
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate for `id` and its key, concatenated in `dir/<name>.pem`
/// (haproxy's `crt`).
fn combined(ca: &Ca, id: &Identity, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let (cert, key) = ca
        .issue_pem(id)
        .with_context(|| format!("issuing {name}"))?;
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, format!("{cert}{key}"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A Plinth Configuration with the mesh's TLS files and, when `server` is
/// given, static name resolution of the server app to it.
fn plinth_config(cert: &Path, key: &Path, ca: &Path, server: Option<SocketAddr>) -> String {
    let resolution = server
        .map(|addr| {
            format!(
                "  nameResolution:\n    component: static\n    configuration:\n      apps:\n        {SERVER_ID}: [\"{addr}\"]\n"
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: plinth.dev/v1alpha1\nkind: Configuration\nmetadata:\n  name: bench\nspec:\n{resolution}  mesh:\n    tls:\n      certFile: \"{}\"\n      keyFile: \"{}\"\n      caFile: \"{}\"\n",
        cert.display(),
        key.display(),
        ca.display()
    )
}

/// The two sidecars of a two-hop path, and where the generator calls A.
#[derive(Debug)]
struct TwoHop {
    a: Sut,
    b: Sut,
    front: SocketAddr,
}

impl TwoHop {
    fn procs(&self) -> [Proc; 2] {
        [self.a.proc(), self.b.proc()]
    }

    fn log_tails(&self) -> String {
        format!(
            "--- {} log tail ---\n{}\n--- {} log tail ---\n{}",
            self.a.label(),
            self.a.log_tail(),
            self.b.label(),
            self.b.log_tail()
        )
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.a.check_alive()?;
        self.b.check_alive()
    }

    fn stop(self) {
        // A first: it holds connections to B.
        self.a.stop_or_warn();
        self.b.stop_or_warn();
    }
}

/// A sidecar's `plinth run` with JSON logs, every listener on a free port,
/// one worker thread, then `extra`.
fn plinth_spec(
    cfg: &Config,
    common: &CommonArgs,
    label: &str,
    serve_listener: &str,
    extra: Vec<String>,
) -> SutSpec {
    let mut spec = SutSpec::plinth(
        cfg.run.plinth_bin.clone(),
        serve_listener,
        ["--worker-threads".to_owned(), "1".to_owned()]
            .into_iter()
            .chain(extra)
            .chain(common.plinth_arg.iter().cloned()),
        common.startup_timeout(),
    );
    spec.label = label.to_owned();
    spec
}

/// Starts Plinth B (serving the app, mesh listener on a free port), writes
/// A's configuration with B's mesh address, and starts Plinth A.
fn start_plinth(
    cfg: &Config,
    common: &CommonArgs,
    certs: &Certs,
    app: SocketAddr,
    core: Option<usize>,
) -> anyhow::Result<TwoHop> {
    let b_yaml = certs.dir.join("b.yaml");
    std::fs::write(
        &b_yaml,
        plinth_config(&certs.plinth_b.0, &certs.plinth_b.1, &certs.ca, None),
    )?;
    let b_spec = plinth_spec(
        cfg,
        common,
        "plinth-b",
        "mesh",
        vec![
            "--app-id".into(),
            SERVER_ID.into(),
            "--app-port".into(),
            app.port().to_string(),
            "--app-protocol".into(),
            "http".into(),
            "--config".into(),
            b_yaml.to_string_lossy().into_owned(),
        ],
    );
    let b = Sut::start(&b_spec, core)?;
    let mesh = b.addr();
    let a_yaml = certs.dir.join("a.yaml");
    std::fs::write(
        &a_yaml,
        plinth_config(&certs.plinth_a.0, &certs.plinth_a.1, &certs.ca, Some(mesh)),
    )?;
    let a_spec = plinth_spec(
        cfg,
        common,
        "plinth-a",
        "dapr-http",
        vec![
            "--app-id".into(),
            CLIENT_ID.into(),
            "--config".into(),
            a_yaml.to_string_lossy().into_owned(),
        ],
    );
    let a = match Sut::start(&a_spec, core) {
        Ok(a) => a,
        Err(e) => {
            let tail = b.log_tail();
            b.stop_or_warn();
            return Err(e.context(format!("plinth-b log tail:\n{tail}")));
        }
    };
    let front = a.addr();
    Ok(TwoHop { a, b, front })
}

/// Starts haproxy B (TLS, client certificates required, in front of the
/// app), then haproxy A (plain HTTP in front, TLS to B, verifying B's
/// certificate against the CA).
fn start_haproxy(
    cfg: &Config,
    program: &Path,
    certs: &Certs,
    app: SocketAddr,
    core: Option<usize>,
    startup_timeout: Duration,
) -> anyhow::Result<TwoHop> {
    let h2 = cfg.haproxy_proto == HopProto::H2;
    let max_connections = cfg.run.max_in_flight.max(cfg.run.concurrency) + 100;
    let b = HaproxySpec {
        label: "haproxy-b".into(),
        program: program.to_owned(),
        backend: app,
        max_connections,
        replace_path: None,
        startup_timeout,
        listen_tls: Some(ListenTls {
            crt: certs.haproxy_b.clone(),
            client_ca: Some(certs.ca.clone()),
            h2,
        }),
        backend_tls: None,
    }
    .start(core)?;
    let a = HaproxySpec {
        label: "haproxy-a".into(),
        program: program.to_owned(),
        backend: b.addr(),
        max_connections,
        replace_path: Some(haproxy_rewrite()),
        startup_timeout,
        listen_tls: None,
        backend_tls: Some(BackendTls {
            ca_file: certs.ca.clone(),
            // The leaf has no DNS name (only its SPIFFE URI): the common
            // name, the app id, is what haproxy can check.
            verify_host: Some(SERVER_ID.into()),
            crt: Some(certs.haproxy_a.clone()),
            h2,
        }),
    };
    let a = match a.start(core) {
        Ok(a) => a,
        Err(e) => {
            let tail = b.log_tail();
            b.stop_or_warn();
            return Err(e.context(format!("haproxy-b log tail:\n{tail}")));
        }
    };
    let front = a.addr();
    Ok(TwoHop { a, b, front })
}

fn uri(addr: SocketAddr, path: &str) -> anyhow::Result<Uri> {
    format!("http://{addr}{path}")
        .parse()
        .with_context(|| format!("building a URI for {path}"))
}

/// Per-run figures of one sidecar.
#[derive(Debug, Clone, Serialize)]
struct SidecarSeries {
    /// `plinth-a`, `plinth-b`, `haproxy-a`, `haproxy-b`.
    label: String,
    /// The lane it is on.
    lane: Lane,
    /// RSS after startup, before any load, KiB, per run.
    idle_rss_kib: Vec<(u32, f64)>,
    /// RSS after the run's measurements, KiB, per run.
    rss_after_kib: Vec<(u32, f64)>,
    /// CPU (user + system) per 1,000 achieved rps during the low-rate runs,
    /// cores, per run.
    vcpu_per_1k_rps: Vec<(u32, f64)>,
}

impl SidecarSeries {
    fn new(label: &str, lane: Lane) -> Self {
        Self {
            label: label.to_owned(),
            lane,
            idle_rss_kib: Vec::new(),
            rss_after_kib: Vec::new(),
            vcpu_per_1k_rps: Vec::new(),
        }
    }

    fn spread(values: &[(u32, f64)]) -> Option<Spread> {
        Spread::of(values.iter().map(|(_, v)| *v))
    }
}

/// Two-hop latency minus direct latency, paired by run.
#[derive(Debug, Clone, Serialize)]
struct AddedVsDirect {
    lane: Lane,
    load: Load,
    p50_us: Option<Spread>,
    p99_us: Option<Spread>,
}

/// The benchmark's extras in the JSON result.
#[derive(Debug, Serialize)]
struct Extra {
    sidecars: Vec<SidecarSeries>,
    added_vs_direct: Vec<AddedVsDirect>,
    /// The mean over runs of the A and B sidecars' CPU per 1,000 rps, per lane.
    mean_vcpu_per_1k_rps: Vec<(Lane, Option<Spread>)>,
    checks: Vec<Check>,
    /// Why the Plinth path was not measured (in some runs), with the
    /// sidecars' log tails.
    plinth_failures: Vec<String>,
    notes: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let common = &args.common;
    // Before any thread exists: re-exec under taskset if pinning.
    let pinning = pin::pin_generator(!common.no_pin, common.generator_core, common.sut_core);
    let cfg = Config::resolve(&args, pinning)?;
    let run_cfg = &cfg.run;
    let body = json_value(cfg.value_size)?;
    let certs = Certs::write()?;
    let sut_core = pinning.sut_core();

    let app_spec = SutSpec {
        label: "app".into(),
        program: run_cfg.bare_bin.clone(),
        args: ["--app", "--port", "0"].map(String::from).to_vec(),
        readiness: Readiness::ListeningLine,
        startup_timeout: common.startup_timeout(),
        stop_signal: StopSignal::Term,
    };

    let generator_cpus = Proc::Current.cpus_allowed().unwrap_or_default();
    let core = |c: Option<usize>| c.map_or("any core".to_owned(), |c| format!("core {c}"));
    eprintln!(
        "bench-mesh: direct vs plinth two-hop{}, {} run(s), generator on CPUs {generator_cpus}, sidecars on {}, app on {}",
        if cfg.haproxy_bin.is_some() {
            " vs haproxy two-hop"
        } else {
            ""
        },
        run_cfg.runs,
        core(sut_core),
        core(cfg.app_core),
    );

    let phases = cfg.phases();
    let mut session = Session::new(pinning, run_cfg.max_in_flight);
    let mut sidecars = vec![
        SidecarSeries::new("plinth-a", Lane::Plinth),
        SidecarSeries::new("plinth-b", Lane::Plinth),
    ];
    if cfg.haproxy_bin.is_some() {
        sidecars.push(SidecarSeries::new("haproxy-a", Lane::Haproxy));
        sidecars.push(SidecarSeries::new("haproxy-b", Lane::Haproxy));
    }
    let mut plinth_failures = Vec::new();

    for run in 1..=run_cfg.runs {
        let mut app = Sut::start(&app_spec, cfg.app_core)?;
        let mut haproxy = match &cfg.haproxy_bin {
            Some(program) => Some(start_haproxy(
                &cfg,
                program,
                &certs,
                app.addr(),
                sut_core,
                common.startup_timeout(),
            )?),
            None => None,
        };
        let mut plinth = match start_plinth(&cfg, common, &certs, app.addr(), sut_core) {
            Ok(p) => Some(p),
            Err(e) => {
                let msg = format!("run {run}: the Plinth path did not start: {e:#}");
                eprintln!("  {msg}");
                plinth_failures.push(msg);
                None
            }
        };
        if run == 1 {
            let hops = [&haproxy, &plinth]
                .into_iter()
                .flatten()
                .flat_map(|h| [&h.a, &h.b]);
            for sut in std::iter::once(&app).chain(hops) {
                if let Ok(cpus) = sut.proc().cpus_allowed() {
                    eprintln!("  {} pid {} on CPUs {cpus}", sut.label(), sut.pid());
                }
            }
        }
        // Idle RSS: after startup, before any client connects.
        std::thread::sleep(Duration::from_secs_f64(run_cfg.settle_secs));
        for hop in [&haproxy, &plinth].into_iter().flatten() {
            for sut in [&hop.a, &hop.b] {
                if let (Some(s), Ok(kib)) = (
                    sidecars.iter_mut().find(|s| s.label == sut.label()),
                    sut.proc().rss_kib(),
                ) {
                    s.idle_rss_kib.push((run, kib as f64));
                }
            }
        }

        // A fresh runtime per run: dropping it closes every client
        // connection, so the servers can shut down gracefully.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let client = http_client();
            let call_to = |addr: SocketAddr, path: &str| -> anyhow::Result<Call> {
                Ok(Call {
                    client: client.clone(),
                    uri: uri(addr, path)?,
                    body: body.clone(),
                })
            };
            let mut lanes: Vec<(Lane, Call)> = vec![(Lane::Direct, call_to(app.addr(), APP_PATH)?)];
            if let Some(h) = &haproxy {
                lanes.push((Lane::Haproxy, call_to(h.front, &invoke_path())?));
            }
            if let Some(p) = &plinth {
                lanes.push((Lane::Plinth, call_to(p.front, &invoke_path())?));
            }
            // Correctness first; a failing Plinth path is reported and left out.
            let mut checked = Vec::new();
            for (lane, call) in lanes {
                let seen = tokio::time::timeout(PREFLIGHT_TIMEOUT, call.preflight())
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {PREFLIGHT_TIMEOUT:?}"))
                    .and_then(|r| r);
                match seen {
                    Ok(line) => {
                        if run == 1 {
                            eprintln!("  preflight {}: {line}", lane.label());
                        }
                        checked.push((lane, call));
                    }
                    Err(e) if lane == Lane::Plinth => {
                        let tails = plinth.as_ref().map(TwoHop::log_tails).unwrap_or_default();
                        let msg = format!(
                            "run {run}: preflight through the Plinth path failed: {e:#}\n{tails}"
                        );
                        eprintln!("  {msg}");
                        plinth_failures.push(msg);
                    }
                    Err(e) => {
                        let tails = match lane {
                            Lane::Haproxy => {
                                haproxy.as_ref().map(TwoHop::log_tails).unwrap_or_default()
                            }
                            _ => app.log_tail(),
                        };
                        bail!("preflight against {} failed: {e:#}\n{tails}", lane.label());
                    }
                }
            }
            let mut lanes = checked;
            for phase in &phases {
                let mut failed_plinth = None;
                for (lane, call) in &lanes {
                    let procs: Vec<Proc> = match lane {
                        Lane::Direct => vec![app.proc()],
                        Lane::Haproxy => haproxy.as_ref().context("no haproxy")?.procs().to_vec(),
                        Lane::Plinth => plinth.as_ref().context("no plinth")?.procs().to_vec(),
                    };
                    let m = session
                        .measure_group(
                            SCENARIO,
                            lane.side(),
                            lane.label(),
                            run,
                            &procs,
                            *phase,
                            || call.clone().send(),
                        )
                        .await;
                    eprintln!("{}", report::progress_line(m, run_cfg.runs, SCENARIO.len()));
                    if phase.load == run_cfg.low_load() {
                        record_cpu(&mut sidecars, *lane, run, m);
                    }
                    app.check_alive()?;
                    if let Some(h) = haproxy.as_mut() {
                        h.check_alive()?;
                    }
                    if let Some(p) = plinth.as_mut()
                        && let Err(e) = p.check_alive()
                    {
                        failed_plinth = Some(e);
                    }
                }
                if let Some(e) = failed_plinth {
                    let tails = plinth.as_ref().map(TwoHop::log_tails).unwrap_or_default();
                    let msg = format!("run {run}: a Plinth sidecar exited: {e:#}\n{tails}");
                    eprintln!("  {msg}");
                    plinth_failures.push(msg);
                    lanes.retain(|(l, _)| *l != Lane::Plinth);
                }
            }
            anyhow::Ok(())
        })?;
        drop(rt);

        // RSS after the run, before stopping.
        for hop in [&haproxy, &plinth].into_iter().flatten() {
            for sut in [&hop.a, &hop.b] {
                if let (Some(s), Ok(kib)) = (
                    sidecars.iter_mut().find(|s| s.label == sut.label()),
                    sut.proc().rss_kib(),
                ) {
                    s.rss_after_kib.push((run, kib as f64));
                }
            }
        }
        if let Some(p) = plinth.take() {
            p.stop();
        }
        if let Some(h) = haproxy.take() {
            h.stop();
        }
        app.stop_or_warn();
    }

    let results = session.results();
    let added_vs_direct = added_vs_direct(&results.measurements, &phases);
    let mean_vcpu: Vec<(Lane, Option<Spread>)> = [Lane::Plinth, Lane::Haproxy]
        .into_iter()
        .filter(|lane| sidecars.iter().any(|s| s.lane == *lane))
        .map(|lane| (lane, mean_vcpu_per_1k(&sidecars, lane)))
        .collect();
    let checks = checks(
        &cfg,
        &results.comparisons,
        &added_vs_direct,
        &sidecars,
        &mean_vcpu,
    );

    let mut notes = vec![
        format!(
            "Lanes: `direct` is `POST {APP_PATH}` on the app (`bare-server --app`); `plinth` is `POST {}` to Plinth A \
             (app id `{CLIENT_ID}`, Dapr HTTP), which resolves `{SERVER_ID}` statically to Plinth B's mesh listener and \
             calls it over HTTP/2 with mTLS (SPIFFE certificates from one CA), B calling the app; `haproxy` is the same \
             request to haproxy A (plain HTTP, rewriting the path to `{APP_PATH}`), which calls haproxy B over TLS \
             ({} inside, `http-reuse always`; B requires A's client certificate, A verifies B's against the CA and its \
             common name `{SERVER_ID}`, the leaf having no DNS name), B calling the app over plain HTTP/1.1 keep-alive.",
            invoke_path(),
            cfg.haproxy_proto.name(),
        ),
        format!(
            "Pinning: 2 cores; the generator has {}; the app has {}; **both sidecars of a path (and both haproxies) \
             share {}**, one worker thread each (`--worker-threads 1`, haproxy `nbthread 1`). Plinth's metrics are on (always).",
            match pinning {
                Pinning::Pinned { generator, .. } => format!("core {generator}"),
                Pinning::Unpinned => "no pinning".to_owned(),
            },
            core(cfg.app_core),
            core(sut_core),
        ),
        format!(
            "SUT cpu is the app's on `direct` rows and the two sidecars' together (the app's not included) on the others; \
             the `ratio` rows are plinth/direct and plinth/haproxy. Payload: a {}-byte JSON document, echoed.",
            body.len()
        ),
    ];
    if !plinth_failures.is_empty() {
        notes.push(format!(
            "**The Plinth path failed** in {} place(s); its rows cover only the runs where it answered (see the failures below and in the JSON).",
            plinth_failures.len()
        ));
    }
    let sections = vec![
        added_section(&added_vs_direct),
        sidecar_section(&sidecars, &mean_vcpu, run_cfg),
        failures_section(&plinth_failures),
    ];
    let extra = Extra {
        sidecars,
        added_vs_direct,
        mean_vcpu_per_1k_rps: mean_vcpu,
        checks,
        plinth_failures,
        notes,
    };
    let report = Report::new(
        &args.name,
        Lane::Direct.label(),
        Lane::Plinth.label(),
        cfg,
        generator_cpus,
        pinning,
        results,
        extra,
    );
    let text = report::Text {
        title: "Plinth mesh data plane: direct vs plinth two-hop vs haproxy two-hop",
        run_cfg: &report.config.run,
        pinning,
        notes: &report.extra.notes,
        sections: &sections,
        checks: &report.extra.checks,
    };
    report::finish(&report, &text, &args.common.results_dir())?;
    drop(certs);
    Ok(())
}

/// Each sidecar's CPU per 1,000 achieved rps from a low-rate measurement of
/// its lane (`sut_cpu_each` is in the order A, B).
fn record_cpu(sidecars: &mut [SidecarSeries], lane: Lane, run: u32, m: &Measurement) {
    if m.rps <= 0.0 {
        return;
    }
    let per_1k = m.rps / 1000.0;
    let mut on_lane = sidecars.iter_mut().filter(|s| s.lane == lane);
    for cpu in &m.sut_cpu_each {
        let (Some(s), Some(cpu)) = (on_lane.next(), cpu) else {
            continue;
        };
        s.vcpu_per_1k_rps.push((run, cpu / per_1k));
    }
}

/// Mean of A's and B's CPU per 1,000 rps per run, over runs.
fn mean_vcpu_per_1k(sidecars: &[SidecarSeries], lane: Lane) -> Option<Spread> {
    let on_lane: Vec<&SidecarSeries> = sidecars.iter().filter(|s| s.lane == lane).collect();
    let [a, b] = on_lane.as_slice() else {
        return None;
    };
    Spread::of(a.vcpu_per_1k_rps.iter().filter_map(|(run, va)| {
        b.vcpu_per_1k_rps
            .iter()
            .find(|(r, _)| r == run)
            .map(|(_, vb)| (va + vb) / 2.0)
    }))
}

/// Added p50/p99 of each two-hop lane over `direct`, paired by run, per load
/// of the open loop.
fn added_vs_direct(measurements: &[Measurement], phases: &[Phase]) -> Vec<AddedVsDirect> {
    let mut out = Vec::new();
    for phase in phases
        .iter()
        .filter(|p| matches!(p.load, Load::Open { .. }))
    {
        for lane in [Lane::Plinth, Lane::Haproxy] {
            let pairs: Vec<(&Measurement, &Measurement)> = measurements
                .iter()
                .filter(|m| m.target == lane.label() && m.load == phase.load)
                .filter_map(|m| {
                    measurements
                        .iter()
                        .find(|d| {
                            d.target == Lane::Direct.label() && d.load == m.load && d.run == m.run
                        })
                        .map(|d| (d, m))
                })
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let diff = |f: fn(&Measurement) -> u64| {
                Spread::of(pairs.iter().map(|(d, m)| f(m) as f64 - f(d) as f64))
            };
            out.push(AddedVsDirect {
                lane,
                load: phase.load,
                p50_us: diff(|m| m.latency_us.p50),
                p99_us: diff(|m| m.latency_us.p99),
            });
        }
    }
    out
}

fn added_section(added: &[AddedVsDirect]) -> String {
    let us = |s: &Option<Spread>| opt_spread(s.as_ref(), signed);
    let rows: Vec<Vec<String>> = added
        .iter()
        .map(|a| {
            vec![
                a.lane.label().to_owned(),
                a.load.label(),
                us(&a.p50_us),
                us(&a.p99_us),
            ]
        })
        .collect();
    format!(
        "### Added latency vs direct (one sidecar pair: A + B + the extra hop, paired by run)\n\n{}\n",
        report::markdown_table(&["path", "load", "added p50 µs", "added p99 µs"], &rows)
    )
}

fn sidecar_section(
    sidecars: &[SidecarSeries],
    mean: &[(Lane, Option<Spread>)],
    run_cfg: &RunConfig,
) -> String {
    let mb = |v: &[(u32, f64)]| opt_spread(SidecarSeries::spread(v).as_ref(), megabytes);
    let vcpu = |s: Option<&Spread>| opt_spread(s, |x| format!("{x:.3}"));
    let mut rows: Vec<Vec<String>> = sidecars
        .iter()
        .map(|s| {
            vec![
                s.label.clone(),
                vcpu(SidecarSeries::spread(&s.vcpu_per_1k_rps).as_ref()),
                mb(&s.idle_rss_kib),
                mb(&s.rss_after_kib),
            ]
        })
        .collect();
    for (lane, spread) in mean {
        rows.push(vec![
            format!("{} mean of A and B", lane.label()),
            vcpu(spread.as_ref()),
            String::new(),
            String::new(),
        ]);
    }
    format!(
        "### Sidecars: CPU per 1,000 rps and memory\n\n\
         CPU from `/proc/<pid>/stat` (utime + stime) over each {} run, divided by the achieved rate in thousands, \
         in vCPU, both sidecars and the app sharing one core; RSS (`VmRSS`) idle after startup and after the \
         run's last measurement. Cells are median (min..max) over runs.\n\n{}\n",
        run_cfg.low_load().label(),
        report::markdown_table(
            &[
                "sidecar",
                "vCPU per 1k rps",
                "idle RSS",
                "RSS after the run"
            ],
            &rows
        )
    )
}

fn failures_section(failures: &[String]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let mut out = String::from("### Plinth path failures\n\n```\n");
    for f in failures {
        out.push_str(f);
        out.push_str("\n\n");
    }
    out.push_str("```\n\n");
    out
}

fn checks(
    cfg: &Config,
    comparisons: &[plinth_bench::Comparison],
    added: &[AddedVsDirect],
    sidecars: &[SidecarSeries],
    mean: &[(Lane, Option<Spread>)],
) -> Vec<Check> {
    let low = cfg.run.low_load();
    let mut checks = Vec::new();
    for lane in [Lane::Plinth, Lane::Haproxy] {
        if lane == Lane::Haproxy && cfg.haproxy_bin.is_none() {
            continue;
        }
        let value = added
            .iter()
            .find(|a| a.lane == lane && a.load == low)
            .and_then(|a| a.p99_us.as_ref());
        let check = Check::of(
            format!(
                "added p99 at {} per sidecar pair ({} − direct)",
                low.label(),
                lane.label()
            ),
            value,
            |x| format!("{} µs", signed(x)),
            format!("≤ +{TARGET_ADDED_P99_US:.0} µs"),
            |v| v <= TARGET_ADDED_P99_US,
        );
        checks.push(if lane == Lane::Plinth {
            check
        } else {
            check.informational()
        });
    }
    for s in sidecars {
        let check = Check::of(
            format!("{}: vCPU per 1,000 rps at {}", s.label, low.label()),
            SidecarSeries::spread(&s.vcpu_per_1k_rps).as_ref(),
            |x| format!("{x:.3}"),
            format!("≤ {TARGET_VCPU_PER_1K}"),
            |v| v <= TARGET_VCPU_PER_1K,
        );
        checks.push(if s.lane == Lane::Plinth {
            check
        } else {
            check.informational()
        });
    }
    for (lane, spread) in mean {
        let check = Check::of(
            format!("{}: vCPU per 1,000 rps, mean of A and B", lane.label()),
            spread.as_ref(),
            |x| format!("{x:.3}"),
            format!("≤ {TARGET_VCPU_PER_1K}"),
            |v| v <= TARGET_VCPU_PER_1K,
        );
        checks.push(if *lane == Lane::Plinth {
            check
        } else {
            check.informational()
        });
    }
    if cfg.haproxy_bin.is_some() {
        checks.push(Check::throughput(
            SCENARIO,
            Lane::Plinth.label(),
            Lane::Haproxy.label(),
            cfg.run.max_load(),
            comparisons,
            TARGET_THROUGHPUT_RATIO,
        ));
    }
    checks.push(
        Check::throughput(
            SCENARIO,
            Lane::Plinth.label(),
            Lane::Direct.label(),
            cfg.run.max_load(),
            comparisons,
            0.0,
        )
        .informational(),
    );
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plinth_config_names_the_server_and_the_tls_files() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 4100));
        let a = plinth_config(
            Path::new("/d/client.pem"),
            Path::new("/d/client.key"),
            Path::new("/d/ca.pem"),
            Some(addr),
        );
        for line in [
            "kind: Configuration",
            "    component: static",
            "        server: [\"127.0.0.1:4100\"]",
            "      certFile: \"/d/client.pem\"",
            "      keyFile: \"/d/client.key\"",
            "      caFile: \"/d/ca.pem\"",
        ] {
            assert!(a.lines().any(|l| l == line), "missing {line:?} in\n{a}");
        }
        let b = plinth_config(
            Path::new("/d/server.pem"),
            Path::new("/d/server.key"),
            Path::new("/d/ca.pem"),
            None,
        );
        assert!(!b.contains("nameResolution"));
    }
}
