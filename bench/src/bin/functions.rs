//! `bench-functions`: the function host benchmark.
//!
//! Plinth's function host (`crates/plinth-wasm`) with its trivial function, `fixture-hello`
//! (a WASI 0.2 component answering `hello`), measured five ways:
//!
//! | scenario (`--scenarios`) | candidate | baseline |
//! | --- | --- | --- |
//! | Function (`function`) | `GET /fn`: fixture-hello through the function registry | `GET /native`: the same answer from a Rust handler, same server |
//! | Plinth ingress (`ingress`) | Plinth's functions listener, header `id: hello` | `GET /native` |
//! | Function, 2 cores (`throughput`) | `/fn`, closed loop, the server on both cores | `/native`, the same |
//! | Cold start (`cold-start`) | the first call of a function just installed from the cache of compiled code | - |
//! | Density (`density`) | 1,000 distinct functions installed into one Plinth | - |
//!
//! The server of the first three is this binary's `serve` mode (see [`serve`]), pinned to the
//! SUT core like Plinth; Plinth runs beside it with fixture-hello installed through its admin
//! API. Each run starts them fresh, measures every scenario at a low and a high open-loop
//! rate and closed loop, native then candidate, then measures cold start in a process of its
//! own (`cold-start` mode, see [`cold`]) and density in a Plinth of its own (see
//! [`density`]).
//!
//! Results go to stdout as Markdown and to `bench/results/<name>.json`. Target checks are
//! informational: the exit status is 0 unless something failed to run.

#![forbid(unsafe_code)]

// A binary's root file looks for modules beside it: these live in `functions/`.
#[path = "functions/binaries.rs"]
mod binaries;
#[path = "functions/cold.rs"]
mod cold;
#[path = "functions/density.rs"]
mod density;
#[path = "functions/serve.rs"]
mod serve;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plinth_bench::report::{self, Check, markdown_table, megabytes, opt_spread, spread};
use plinth_bench::stats::{self, Comparison, Series, Side};
use plinth_bench::{
    Candidate, CommonArgs, Phase, Pinning, Proc, ProcessSeries, Readiness, Report, RunConfig,
    Session, StopSignal, Sut, SutSpec, pin,
};
use serde::{Deserialize, Serialize};

use crate::cold::ColdRun;
use crate::density::DensityRun;

/// The id fixture-hello is installed under, in the server and in Plinth.
const FUNCTION_ID: &str = "hello";
/// What fixture-hello answers, and `/native` too.
const HELLO_BODY: &[u8] = b"hello";
/// The content type of that answer.
const HELLO_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// The server's native route.
const NATIVE_PATH: &str = "/native";
/// The server's function route.
const FUNCTION_PATH: &str = "/fn";
/// Labels of the sides.
const NATIVE: &str = "native";
const FUNCTION: &str = "function";
const PLINTH: &str = "plinth";

/// The first call of a function installed from the cache, p99, at most (µs).
const TARGET_COLD_START_P99_US: f64 = 1_000.0;
/// Function − native p50 at the open-loop rates, at most (µs).
const TARGET_ADDED_P50_US: f64 = 50.0;
/// Plinth's RSS with the density target's number of functions installed, at most (MB).
const TARGET_DENSITY_RSS_MB: f64 = 300.0;
/// The number of functions the density target is stated for.
const DENSITY_TARGET_FUNCTIONS: usize = 1_000;
/// How long the checks before measuring may take per server.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// Function host benchmark: a function against the same handler in native Rust, cold
/// start, density and throughput.
#[derive(Debug, Parser)]
#[command(
    name = "bench-functions",
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    args: Args,
}

/// The benchmark's own subprocesses; run without one to benchmark.
#[derive(Debug, Subcommand)]
enum Mode {
    /// The warm-latency server: `/native` and `/fn` on one axum server (started by the
    /// benchmark).
    Serve(serve::ServeArgs),
    /// One cold-start run, printing its result as JSON (started by the benchmark).
    ColdStart(cold::ColdArgs),
}

#[derive(Debug, clap::Args)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::ALL)]
    scenarios: Vec<Scenario>,
    /// fixture-hello.wasm [default: $CARGO_TARGET_DIR or <workspace>/target, then
    /// tmp/plinth-functions/fixture-hello.wasm, where scripts/build-functions.sh puts it].
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Distinct functions compiled, installed and first called per cold-start run
    /// [default: 200; --quick: 20].
    #[arg(long)]
    cold_functions: Option<usize>,
    /// Distinct functions installed into Plinth per density run [default: 1000; --quick: 100].
    #[arg(long)]
    density_functions: Option<usize>,
    /// Installed functions called on the functions listener after the density installs.
    #[arg(long, default_value_t = 10)]
    density_checks: usize,
    /// `--functions-pool-size` for every Plinth started [default: Plinth's own].
    #[arg(long)]
    functions_pool_size: Option<u32>,
    /// `limits.instanceReuse` of the measured function, in the warm-latency, ingress and
    /// throughput scenarios: how many requests one instance serves [default: Plinth's own, 1,
    /// a fresh instance per request].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    instance_reuse: Option<u32>,
    /// Result name (`<results-dir>/<name>.json`).
    #[arg(long, default_value = "functions")]
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
enum Scenario {
    /// `/fn` against `/native` on one server, pinned.
    Function,
    /// Plinth's functions listener against `/native`.
    Ingress,
    /// `/fn` against `/native`, closed loop, the server on two cores.
    Throughput,
    /// First call after an install from the cache.
    ColdStart,
    /// Many distinct functions in one Plinth.
    Density,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::Function,
        Scenario::Ingress,
        Scenario::Throughput,
        Scenario::ColdStart,
        Scenario::Density,
    ];

    /// Width of the longest load scenario's name, for progress lines.
    const NAME_WIDTH: usize = 17;

    /// The name in tables, for the scenarios measured under load.
    fn name(self) -> &'static str {
        match self {
            Scenario::Function => "Function",
            Scenario::Ingress => "Plinth ingress",
            Scenario::Throughput => "Function, 2 cores",
            Scenario::ColdStart => "Cold start",
            Scenario::Density => "Density",
        }
    }
}

/// The configuration as run, recorded in the JSON result.
#[derive(Debug, Clone, Serialize)]
struct Config {
    #[serde(flatten)]
    run: RunConfig,
    scenarios: Vec<Scenario>,
    fixture: PathBuf,
    fixture_bytes: usize,
    cold_functions: usize,
    density_functions: usize,
    density_checks: usize,
    functions_pool_size: Option<u32>,
    instance_reuse: Option<u32>,
}

impl Config {
    fn resolve(args: &Args, fixture_bytes: usize) -> anyhow::Result<Self> {
        let quick = args.common.quick;
        let cfg = Self {
            run: RunConfig::resolve(&args.common)?,
            scenarios: args.scenarios.clone(),
            fixture: args
                .fixture
                .clone()
                .unwrap_or_else(binaries::default_fixture),
            fixture_bytes,
            cold_functions: args.cold_functions.unwrap_or(if quick { 20 } else { 200 }),
            density_functions: args.density_functions.unwrap_or(if quick {
                100
            } else {
                DENSITY_TARGET_FUNCTIONS
            }),
            density_checks: args.density_checks,
            functions_pool_size: args.functions_pool_size,
            instance_reuse: args.instance_reuse,
        };
        ensure!(cfg.cold_functions > 0, "--cold-functions must be positive");
        ensure!(
            cfg.density_functions > 0,
            "--density-functions must be positive"
        );
        Ok(cfg)
    }

    fn has(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One HTTP/1.1 keep-alive pool for every server of a run.
fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

fn uri(addr: SocketAddr, path: &str) -> anyhow::Result<Uri> {
    format!("http://{addr}{path}")
        .parse()
        .with_context(|| format!("building a URI for {path}"))
}

/// A request for fixture-hello's answer (or `/native`'s), cloned per call so every side
/// pays the same client-side cost.
#[derive(Debug, Clone)]
struct Hello {
    client: HttpClient,
    uri: Uri,
    /// The `id` header that picks the function on Plinth's functions listener.
    id: Option<HeaderValue>,
}

/// A response: head and whole body (read to the end so the connection goes back to the
/// pool).
type Answer = (http::response::Parts, Bytes);

impl Hello {
    fn new(client: HttpClient, uri: Uri, id: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            client,
            uri,
            id: id.map(HeaderValue::from_str).transpose()?,
        })
    }

    async fn fetch(self) -> anyhow::Result<Answer> {
        let mut request = Request::builder().method(Method::GET).uri(self.uri);
        if let Some(id) = self.id {
            request = request.header("id", id);
        }
        let (parts, body) = self
            .client
            .request(request.body(Full::new(Bytes::new()))?)
            .await?
            .into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts, body))
    }

    /// One measured call: status 200 and fixture-hello's body, byte for byte.
    async fn send(self) -> anyhow::Result<()> {
        let (parts, body) = self.fetch().await?;
        ensure!(
            parts.status == StatusCode::OK,
            "HTTP {} (expected 200): {}",
            parts.status,
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        ensure!(
            body.as_ref() == HELLO_BODY,
            "body {:?}, expected {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)]),
            String::from_utf8_lossy(HELLO_BODY)
        );
        Ok(())
    }

    /// The check before measuring: status, body and content type; returns a line saying
    /// what `what` answered.
    async fn check(self, what: &str) -> anyhow::Result<String> {
        let (parts, body) = tokio::time::timeout(PREFLIGHT_TIMEOUT, self.fetch())
            .await
            .map_err(|_| anyhow::anyhow!("{what}: no answer within {PREFLIGHT_TIMEOUT:?}"))?
            .with_context(|| what.to_owned())?;
        ensure!(
            parts.status == StatusCode::OK && body.as_ref() == HELLO_BODY,
            "{what}: HTTP {} with body {:?}, expected 200 with {:?}",
            parts.status,
            String::from_utf8_lossy(&body[..body.len().min(200)]),
            String::from_utf8_lossy(HELLO_BODY)
        );
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        ensure!(
            content_type.is_some_and(|c| c.as_bytes() == HELLO_CONTENT_TYPE.as_bytes()),
            "{what}: Content-Type {content_type:?}, expected {HELLO_CONTENT_TYPE}"
        );
        Ok(format!(
            "{what}: {}, Content-Type: {HELLO_CONTENT_TYPE}, {} bytes",
            parts.status,
            body.len()
        ))
    }
}

/// What Plinth's admin API answers to an install (the fields used here).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Installed {
    kind: String,
    compiled_from_cache: bool,
    compile_ms: f64,
    load_ms: f64,
}

/// The token Plinth's admin API wants, when `DAPR_API_TOKEN` is set (Plinth inherits it).
fn api_token() -> Option<HeaderValue> {
    std::env::var("DAPR_API_TOKEN")
        .ok()
        .and_then(|t| HeaderValue::from_str(&t).ok())
}

/// `PUT /functions/{id}?{query}` on Plinth's admin listener with `wasm` as the body.
async fn admin_install(
    client: &HttpClient,
    admin: SocketAddr,
    id: &str,
    query: Option<&str>,
    wasm: Vec<u8>,
) -> anyhow::Result<Installed> {
    let path = match query {
        Some(q) => format!("/functions/{id}?{q}"),
        None => format!("/functions/{id}"),
    };
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(uri(admin, &path)?)
        .header(header::CONTENT_TYPE, "application/wasm");
    if let Some(token) = api_token() {
        request = request.header("dapr-api-token", token);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(wasm)))?)
        .await
        .with_context(|| format!("installing {id} through Plinth's admin API"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    ensure!(
        status == StatusCode::CREATED || status == StatusCode::OK,
        "installing {id}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).with_context(|| format!("reading the install answer of {id}"))
}

/// How many functions `GET /functions` lists.
async fn admin_list_len(client: &HttpClient, admin: SocketAddr) -> anyhow::Result<usize> {
    let response = client
        .request(
            Request::builder()
                .uri(uri(admin, "/functions")?)
                .body(Full::new(Bytes::new()))?,
        )
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    ensure!(status == StatusCode::OK, "GET /functions: HTTP {status}");
    let list: serde_json::Value = serde_json::from_slice(&body)?;
    list.get("functions")
        .and_then(|f| f.as_array())
        .map(Vec::len)
        .context("GET /functions: no `functions` array")
}

/// A directory removed when dropped: the caches of compiled code of one invocation.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("plinth-bench-functions-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// A path under it, not created (the function host creates its cache private).
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What every run uses.
#[derive(Debug)]
struct Ctx<'a> {
    args: &'a Args,
    cfg: &'a Config,
    pinning: Pinning,
    exe: PathBuf,
    temp: TempDir,
    fixture: Vec<u8>,
}

/// What the runs collect.
#[derive(Debug)]
struct Collected {
    session: Session,
    /// Idle RSS and startup: baseline = the server, candidate = Plinth.
    process: ProcessSeries,
    /// Largest RSS during the high-rate runs: baseline = the server, candidate = Plinth.
    rss_under_load_kib: Series,
    cold: Vec<ColdRun>,
    density: Vec<DensityRun>,
    shootdowns: Vec<Shootdowns>,
}

/// TLB shootdowns during one measurement: the interrupts a core sends the others when it
/// changes mappings they may cache, as resetting an instance's memory with `madvise` in a
/// process running on several cores does.
#[derive(Debug, Clone, Serialize)]
struct Shootdowns {
    scenario: String,
    load: plinth_bench::Load,
    target: String,
    run: u32,
    /// Shootdowns per call: the machine's count over the warm-up and the run, divided by
    /// the calls of both (estimated from the measured rate).
    per_call: f64,
}

/// The machine's TLB shootdown interrupts so far, all CPUs (`/proc/interrupts`, x86).
fn tlb_shootdowns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let counts = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("TLB:"))?;
    Some(
        counts
            .split_whitespace()
            .map_while(|v| v.parse::<u64>().ok())
            .sum(),
    )
}

impl Ctx<'_> {
    /// `bench-functions serve` with a fresh cache; under `taskset -c <cores>` when given.
    fn serve_spec(&self, label: &str, cores: Option<&str>, cache: &Path) -> SutSpec {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--engine-cache".into(),
            cache.display().to_string(),
            "--fixture".into(),
            self.cfg.fixture.display().to_string(),
        ];
        if let Some(n) = self.cfg.instance_reuse {
            args.push(format!("--instance-reuse={n}"));
        }
        let program = match cores {
            Some(cores) => {
                let mut prefixed = vec![
                    "-c".to_owned(),
                    cores.to_owned(),
                    self.exe.display().to_string(),
                ];
                prefixed.append(&mut args);
                args = prefixed;
                PathBuf::from("taskset")
            }
            None => self.exe.clone(),
        };
        SutSpec {
            label: label.into(),
            program,
            args,
            readiness: Readiness::ListeningLine,
            startup_timeout: self.args.common.startup_timeout(),
            stop_signal: StopSignal::Term,
        }
    }

    /// `plinth run` with every listener on a free port, a fresh cache, served address
    /// the functions listener.
    fn plinth_spec(&self, cache: &Path) -> SutSpec {
        let mut extra = vec![format!("--functions-cache-dir={}", cache.display())];
        if let Some(n) = self.cfg.functions_pool_size {
            extra.push(format!("--functions-pool-size={n}"));
        }
        extra.extend(self.args.common.plinth_arg.iter().cloned());
        SutSpec::plinth(
            self.cfg.run.plinth_bin.clone(),
            "functions",
            extra,
            self.args.common.startup_timeout(),
        )
    }
}

/// Who answers a measured call.
#[derive(Debug, Clone)]
struct Lane {
    side: Side,
    label: &'static str,
    proc: Proc,
    call: Hello,
}

fn print_cpus(suts: &[&Sut]) {
    for sut in suts {
        if let Ok(cpus) = sut.proc().cpus_allowed() {
            eprintln!("  {} pid {} on CPUs {cpus}", sut.label(), sut.pid());
        }
    }
}

/// The Function and Plinth ingress scenarios of one run: the server and Plinth, both
/// pinned to the SUT core, started fresh.
fn run_latency(ctx: &Ctx<'_>, out: &mut Collected, run: u32) -> anyhow::Result<()> {
    let run_cfg = &ctx.cfg.run;
    let core = ctx.pinning.sut_core();
    let mut server = Sut::start(
        &ctx.serve_spec("serve", None, &ctx.temp.join(&format!("serve-{run}"))),
        core,
    )?;
    let mut plinth = match ctx.cfg.has(Scenario::Ingress) {
        true => Some(Sut::start(
            &ctx.plinth_spec(&ctx.temp.join(&format!("plinth-{run}"))),
            core,
        )?),
        false => None,
    };
    if run == 1 {
        print_cpus(
            &std::iter::once(&server)
                .chain(plinth.as_ref())
                .collect::<Vec<_>>(),
        );
    }
    // Idle RSS: after startup, before any client connects (Plinth: before any install).
    std::thread::sleep(Duration::from_secs_f64(run_cfg.settle_secs));
    for (side, sut) in std::iter::once((Side::Baseline, &server))
        .chain(plinth.as_ref().map(|p| (Side::Candidate, p)))
    {
        let kib = sut
            .proc()
            .rss_kib()
            .with_context(|| format!("reading RSS of {}", sut.label()))?;
        out.process.idle_rss_kib.push(side, run, kib as f64);
        out.process
            .startup_ms
            .push(side, run, sut.startup_time().as_secs_f64() * 1e3);
    }

    // A fresh runtime per run: dropping it closes every client connection, so the servers
    // shut down gracefully.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let client = http_client();
        let native = Lane {
            side: Side::Baseline,
            label: NATIVE,
            proc: server.proc(),
            call: Hello::new(client.clone(), uri(server.addr(), NATIVE_PATH)?, None)?,
        };
        let function = Lane {
            side: Side::Candidate,
            label: FUNCTION,
            proc: server.proc(),
            call: Hello::new(client.clone(), uri(server.addr(), FUNCTION_PATH)?, None)?,
        };
        let ingress = match &plinth {
            Some(p) => {
                let admin = p
                    .listener("admin")
                    .context("Plinth announced no admin listener")?;
                let query = ctx.cfg.instance_reuse.map(|n| format!("instanceReuse={n}"));
                let info = admin_install(
                    &client,
                    admin,
                    FUNCTION_ID,
                    query.as_deref(),
                    ctx.fixture.clone(),
                )
                .await?;
                ensure!(
                    info.kind == "component",
                    "Plinth installed fixture-hello as {:?}, expected a component",
                    info.kind
                );
                Some(Lane {
                    side: Side::Candidate,
                    label: PLINTH,
                    proc: p.proc(),
                    call: Hello::new(client.clone(), uri(p.addr(), "/")?, Some(FUNCTION_ID))?,
                })
            }
            None => None,
        };
        let mut seen = vec![
            native.call.clone().check("serve GET /native").await?,
            function.call.clone().check("serve GET /fn").await?,
        ];
        if let Some(lane) = &ingress {
            seen.push(lane.call.clone().check("plinth GET / (id: hello)").await?);
        }
        if run == 1 {
            for line in seen {
                eprintln!("  {line}");
            }
        }
        let mut scenarios = Vec::new();
        if ctx.cfg.has(Scenario::Function) {
            scenarios.push((Scenario::Function, vec![native.clone(), function]));
        }
        if let Some(lane) = ingress {
            scenarios.push((Scenario::Ingress, vec![native, lane]));
        }
        for (scenario, lanes) in &scenarios {
            for phase in &run_cfg.phases() {
                for lane in lanes {
                    measure(ctx, out, *scenario, run, *phase, lane).await;
                    server.check_alive()?;
                    if let Some(p) = plinth.as_mut() {
                        p.check_alive()?;
                    }
                }
            }
        }
        anyhow::Ok(())
    });
    drop(rt);
    if let Some(p) = plinth {
        p.stop_or_warn();
    }
    server.stop_or_warn();
    result
}

/// Measures `lane` under `phase`, prints the progress line and keeps the RSS under load.
async fn measure(
    ctx: &Ctx<'_>,
    out: &mut Collected,
    scenario: Scenario,
    run: u32,
    phase: Phase,
    lane: &Lane,
) {
    let shootdowns_before = tlb_shootdowns();
    let m = out
        .session
        .measure(
            scenario.name(),
            lane.side,
            lane.label,
            run,
            lane.proc,
            phase,
            || lane.call.clone().send(),
        )
        .await;
    eprintln!(
        "{}",
        report::progress_line(m, ctx.cfg.run.runs, Scenario::NAME_WIDTH)
    );
    let window = phase.warmup + phase.duration;
    if let (Some(before), Some(after)) = (shootdowns_before, tlb_shootdowns())
        && m.rps > 0.0
    {
        out.shootdowns.push(Shootdowns {
            scenario: m.scenario.clone(),
            load: m.load,
            target: m.target.clone(),
            run,
            per_call: after.saturating_sub(before) as f64 / (m.rps * window.as_secs_f64()),
        });
    }
    if phase.load == ctx.cfg.run.high_load()
        && let Some(kib) = m.sut_rss_max_kib
    {
        // The server answers both sides of the Function scenario.
        let side = if lane.label == PLINTH {
            Side::Candidate
        } else {
            Side::Baseline
        };
        out.rss_under_load_kib.keep_max(side, run, kib as f64);
    }
}

/// The Function, 2 cores scenario of one run: a server on the generator's core and the
/// SUT core, with two workers, closed loop only.
fn run_throughput(ctx: &Ctx<'_>, out: &mut Collected, run: u32) -> anyhow::Result<()> {
    let cores = match ctx.pinning {
        Pinning::Pinned { generator, sut } => Some(format!("{generator},{sut}")),
        Pinning::Unpinned => None,
    };
    let mut server = Sut::start(
        &ctx.serve_spec(
            "serve (2 cores)",
            cores.as_deref(),
            &ctx.temp.join(&format!("serve2-{run}")),
        ),
        None,
    )?;
    if run == 1 {
        print_cpus(&[&server]);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let client = http_client();
        let lanes = [
            Lane {
                side: Side::Baseline,
                label: NATIVE,
                proc: server.proc(),
                call: Hello::new(client.clone(), uri(server.addr(), NATIVE_PATH)?, None)?,
            },
            Lane {
                side: Side::Candidate,
                label: FUNCTION,
                proc: server.proc(),
                call: Hello::new(client.clone(), uri(server.addr(), FUNCTION_PATH)?, None)?,
            },
        ];
        for lane in &lanes {
            lane.call
                .clone()
                .check(&format!("serve (2 cores) {}", lane.call.uri.path()))
                .await?;
        }
        let phase = Phase {
            load: ctx.cfg.run.max_load(),
            duration: Duration::from_secs_f64(ctx.cfg.run.max_secs),
            warmup: Duration::from_secs_f64(ctx.cfg.run.warmup_secs),
        };
        for lane in &lanes {
            measure(ctx, out, Scenario::Throughput, run, phase, lane).await;
            server.check_alive()?;
        }
        anyhow::Ok(())
    });
    drop(rt);
    server.stop_or_warn();
    result
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.mode {
        Some(Mode::Serve(a)) => return serve::main(a),
        Some(Mode::ColdStart(a)) => return cold::main(a),
        None => cli.args,
    };
    let common = &args.common;
    ensure!(
        common.candidate == Candidate::Plinth,
        "bench-functions compares functions with native handlers in its own server; --candidate bare does not apply"
    );
    ensure!(!args.scenarios.is_empty(), "no scenarios selected");
    // Before any thread exists: re-exec under taskset if pinning.
    let pinning = pin::pin_generator(!common.no_pin, common.generator_core, common.sut_core);
    let fixture_path = args
        .fixture
        .clone()
        .unwrap_or_else(binaries::default_fixture);
    let fixture = binaries::read_fixture(&fixture_path)?;
    let cfg = Config::resolve(&args, fixture.len())?;
    let run_cfg = &cfg.run;
    let ctx = Ctx {
        args: &args,
        cfg: &cfg,
        pinning,
        exe: std::env::current_exe().context("locating own executable")?,
        temp: TempDir::new()?,
        fixture,
    };

    let generator_cpus = Proc::Current.cpus_allowed().unwrap_or_default();
    eprintln!(
        "bench-functions: {} vs {NATIVE}, {} run(s), generator on CPUs {generator_cpus}, SUTs on {}, fixture {} ({} bytes)",
        args.scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        run_cfg.runs,
        pinning
            .sut_core()
            .map_or("any core".to_owned(), |c| format!("core {c}")),
        cfg.fixture.display(),
        cfg.fixture_bytes,
    );

    let mut out = Collected {
        session: Session::new(pinning, run_cfg.max_in_flight),
        process: ProcessSeries::default(),
        rss_under_load_kib: Series::default(),
        cold: Vec::new(),
        density: Vec::new(),
        shootdowns: Vec::new(),
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    for run in 1..=run_cfg.runs {
        if cfg.has(Scenario::Function) || cfg.has(Scenario::Ingress) {
            run_latency(&ctx, &mut out, run)?;
        }
        if cfg.has(Scenario::Throughput) {
            run_throughput(&ctx, &mut out, run)?;
        }
        if cfg.has(Scenario::ColdStart) {
            eprintln!(
                "  run {run}/{} cold start: compiling {} functions, then installing each from the cache",
                run_cfg.runs, cfg.cold_functions
            );
            let r = cold::run_subprocess(
                &ctx.exe,
                pinning.sut_core(),
                &cfg.fixture,
                &ctx.temp.join(&format!("cold-{run}")),
                cfg.cold_functions,
                &format!("{tag}-{run}"),
            )?;
            eprintln!(
                "  run {run}/{} cold start: first call p50 {:.0} µs p99 {:.0} µs, compile p50 {:.1} ms",
                run_cfg.runs,
                binaries::quantile(&r.first_call_us, 0.5).unwrap_or(f64::NAN),
                binaries::quantile(&r.first_call_us, 0.99).unwrap_or(f64::NAN),
                binaries::quantile(&r.compile_ms, 0.5).unwrap_or(f64::NAN),
            );
            out.cold.push(r);
        }
        if cfg.has(Scenario::Density) {
            eprintln!(
                "  run {run}/{} density: installing {} distinct functions into Plinth{}",
                run_cfg.runs,
                cfg.density_functions,
                if run > 1 {
                    " from the cache"
                } else {
                    ", compiling each"
                }
            );
            // One cache for every density run: the first fills it, the others read it.
            let spec = ctx.plinth_spec(&ctx.temp.join("density"));
            let d = density::run(
                &spec,
                pinning.sut_core(),
                &ctx.fixture,
                cfg.density_functions,
                cfg.density_checks,
                Duration::from_secs_f64(run_cfg.settle_secs),
                &tag,
                run > 1,
            )?;
            eprintln!(
                "  run {run}/{} density: RSS {} with {} functions ({}), compileMs total {:.1} s",
                run_cfg.runs,
                megabytes(d.rss_after_install_kib as f64),
                d.functions,
                if d.from_cache {
                    "from the cache"
                } else {
                    "compiled"
                },
                d.compile_ms.iter().sum::<f64>() / 1e3,
            );
            if !cfg.has(Scenario::Ingress) {
                out.process
                    .idle_rss_kib
                    .push(Side::Candidate, run, d.rss_before_kib as f64);
            }
            out.density.push(d);
        }
    }

    let results = out.session.results();
    let added = stats::added_latency(&results.measurements);
    let checks = checks(&cfg, &results.comparisons, &out);
    let notes = notes(&cfg, pinning, &out, &results.summaries);
    let mut sections = vec![report::added_section(
        &added,
        "candidate",
        NATIVE,
        "scenario",
    )];
    if results.measurements.is_empty() {
        sections.clear();
    }
    sections.push(cold::section(&out.cold));
    sections.push(density::section(&out.density));
    sections.push(memory_section(&cfg, &out));
    sections.push(shootdowns_section(&cfg, &out.shootdowns));
    let extra = Extra {
        process: out.process,
        rss_under_load_kib: out.rss_under_load_kib,
        added,
        cold_start: out.cold,
        density: out.density,
        tlb_shootdowns: out.shootdowns,
        checks,
        notes,
    };
    let report = Report::new(
        &args.name,
        NATIVE,
        FUNCTION,
        cfg.clone(),
        generator_cpus,
        pinning,
        results,
        extra,
    );
    let text = report::Text {
        title: "Plinth function host: functions vs native handlers",
        run_cfg: &report.config.run,
        pinning,
        notes: &report.extra.notes,
        sections: &sections,
        checks: &report.extra.checks,
    };
    report::finish(&report, &text, &args.common.results_dir())
}

/// Everything bench-functions adds to the shared JSON report.
#[derive(Debug, Serialize)]
struct Extra {
    /// Idle RSS and startup time per run: baseline = the server, candidate = Plinth.
    process: ProcessSeries,
    /// Largest RSS during the high-rate runs per run: baseline = the server, candidate =
    /// Plinth.
    rss_under_load_kib: Series,
    /// Candidate − native latency per scenario and load, paired by run.
    added: Vec<stats::Added>,
    /// Every cold-start run, every function's figures.
    cold_start: Vec<ColdRun>,
    /// Every density run.
    density: Vec<DensityRun>,
    /// TLB shootdowns per call, per measurement.
    tlb_shootdowns: Vec<Shootdowns>,
    /// The targets.
    checks: Vec<Check>,
    /// The notes under the header.
    notes: Vec<String>,
}

fn find(
    comparisons: &[Comparison],
    scenario: Scenario,
    load: plinth_bench::Load,
) -> Option<&Comparison> {
    comparisons
        .iter()
        .find(|c| c.scenario == scenario.name() && c.load == load && c.baseline == NATIVE)
}

fn checks(cfg: &Config, comparisons: &[Comparison], out: &Collected) -> Vec<Check> {
    let run = &cfg.run;
    let us = |x: f64| format!("{} µs", report::signed(x));
    let mut checks = Vec::new();
    let open_loads = [run.low_load(), run.high_load()];
    if cfg.has(Scenario::Function) {
        for load in open_loads {
            let c = find(comparisons, Scenario::Function, load);
            checks.push(Check::of(
                format!(
                    "Function: added p50 at {} (function − native)",
                    load.label()
                ),
                c.and_then(|c| c.p50_added_us.as_ref()),
                us,
                format!("≤ +{TARGET_ADDED_P50_US:.0} µs"),
                |v| v <= TARGET_ADDED_P50_US,
            ));
        }
        for load in open_loads {
            let c = find(comparisons, Scenario::Function, load);
            checks.push(
                Check::of(
                    format!(
                        "Function: added p99 at {} (function − native)",
                        load.label()
                    ),
                    c.and_then(|c| c.p99_added_us.as_ref()),
                    us,
                    String::new(),
                    |_| true,
                )
                .informational(),
            );
        }
        checks.push(
            Check::throughput(
                Scenario::Function.name(),
                FUNCTION,
                NATIVE,
                run.max_load(),
                comparisons,
                0.0,
            )
            .informational(),
        );
    }
    if cfg.has(Scenario::Ingress) {
        for load in open_loads {
            let c = find(comparisons, Scenario::Ingress, load);
            checks.push(
                Check::of(
                    format!(
                        "Plinth ingress: added p50 at {} (plinth − native)",
                        load.label()
                    ),
                    c.and_then(|c| c.p50_added_us.as_ref()),
                    us,
                    String::new(),
                    |_| true,
                )
                .informational(),
            );
        }
    }
    if cfg.has(Scenario::Throughput) {
        checks.push(
            Check::throughput(
                Scenario::Throughput.name(),
                FUNCTION,
                NATIVE,
                run.max_load(),
                comparisons,
                0.0,
            )
            .informational(),
        );
    }
    if cfg.has(Scenario::ColdStart) {
        checks.push(Check::of(
            format!(
                "Cold start: first call p99 ({} functions installed from the cache)",
                cfg.cold_functions
            ),
            cold::first_call_p99(&out.cold).as_ref(),
            |x| format!("{} µs", report::num(x)),
            format!("≤ {TARGET_COLD_START_P99_US:.0} µs"),
            |v| v <= TARGET_COLD_START_P99_US,
        ));
    }
    if cfg.has(Scenario::Density) {
        let limit_kib = TARGET_DENSITY_RSS_MB * 1e6 / 1024.0;
        for (cached, how) in [(false, "compiled"), (true, "read from the cache")] {
            let rss = density::rss_after_install(&out.density, cached);
            if rss.is_none() {
                continue;
            }
            let check = Check::of(
                format!(
                    "Density: Plinth RSS with {} distinct functions installed ({how})",
                    cfg.density_functions
                ),
                rss.as_ref(),
                megabytes,
                format!("≤ {TARGET_DENSITY_RSS_MB:.0} MB"),
                |v| v <= limit_kib,
            );
            // The limit is stated for 1,000 functions: fewer prove nothing about it.
            checks.push(if cfg.density_functions >= DENSITY_TARGET_FUNCTIONS {
                check
            } else {
                check.informational()
            });
        }
    }
    checks.push(
        Check::of(
            "Plinth idle RSS (function host enabled)".into(),
            out.process.idle_rss_kib.spread(Side::Candidate).as_ref(),
            megabytes,
            String::new(),
            |_| true,
        )
        .informational(),
    );
    checks
}

fn notes(
    cfg: &Config,
    pinning: Pinning,
    out: &Collected,
    summaries: &[plinth_bench::Summary],
) -> Vec<String> {
    let core = pinning
        .sut_core()
        .map_or("any core".to_owned(), |c| format!("core {c}"));
    let mut notes = vec![format!(
        "The function is fixture-hello ({} bytes, a WASI 0.2 component answering `hello`); `{NATIVE}` is a Rust \
         handler answering the same bytes and Content-Type on the same axum server (`bench-functions serve`, one \
         Tokio worker per allowed CPU, on {core}), `{FUNCTION}` is `GET {FUNCTION_PATH}` there, calling the \
         function through the function registry ({}).",
        cfg.fixture_bytes,
        match cfg.instance_reuse {
            Some(n) if n > 1 => format!(
                "`instanceReuse: {n}`: an instance serves up to {n} requests, here and in Plinth"
            ),
            _ => "a fresh instance per request, Plinth's default".to_owned(),
        }
    )];
    if cfg.has(Scenario::Ingress) {
        notes.push(format!(
            "Plinth ingress: `GET /` with `id: {FUNCTION_ID}` on Plinth's functions listener (Plinth pinned to {core}, \
             fixture-hello installed through `PUT /functions/{FUNCTION_ID}`), against the same `{NATIVE}` route: the \
             end-to-end cost of a function behind Plinth's own front door."
        ));
    }
    if cfg.has(Scenario::Throughput) {
        notes.push(match pinning {
            Pinning::Pinned { generator, sut } => format!(
                "Function, 2 cores: the server allowed on cores {generator} and {sut} with two workers, closed loop only; \
                 the generator stays on core {generator}, so it shares that core with the server: read the ratio, not \
                 the absolute rps."
            ),
            Pinning::Unpinned => {
                "Function, 2 cores: the server unpinned with one worker per CPU, closed loop only.".into()
            }
        });
    }
    // An open-loop rate above what a side sustains measures its queue, not its latency.
    for load in [cfg.run.low_load(), cfg.run.high_load()] {
        let plinth_bench::Load::Open { rate } = load else {
            continue;
        };
        let behind: Vec<String> = summaries
            .iter()
            .filter(|s| s.load == load && (s.dropped > 0 || s.rps.median < 0.95 * rate as f64))
            .map(|s| {
                format!(
                    "{} `{}` ({} rps, {} dropped)",
                    s.scenario,
                    s.target,
                    report::num(s.rps.median),
                    s.dropped
                )
            })
            .collect();
        if !behind.is_empty() {
            notes.push(format!(
                "At {} these did not keep up with the rate: {}. The rate is above what they sustain on their core \
                 (see the closed-loop rps), so their latencies there are mostly queueing.",
                load.label(),
                behind.join(", ")
            ));
        }
    }
    if out.process.idle_rss_kib.spread(Side::Candidate).is_some() {
        notes.push(report::plinth_process_note(&out.process));
    }
    notes
}

/// The "Memory and startup" section: the server's and Plinth's idle RSS, RSS under load and
/// startup.
fn memory_section(cfg: &Config, out: &Collected) -> String {
    let rows: Vec<Vec<String>> = [
        (Side::Baseline, "serve (native + fn)"),
        (Side::Candidate, PLINTH),
    ]
    .into_iter()
    .filter(|(side, _)| out.process.idle_rss_kib.spread(*side).is_some())
    .map(|(side, label)| {
        vec![
            label.to_owned(),
            opt_spread(out.process.idle_rss_kib.spread(side).as_ref(), megabytes),
            opt_spread(out.rss_under_load_kib.spread(side).as_ref(), megabytes),
            out.process
                .startup_ms
                .spread(side)
                .map_or("-".into(), |s| spread(&s)),
        ]
    })
    .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut section = String::from("### Memory and startup\n\n");
    let _ = writeln!(
        section,
        "Idle RSS is read after startup and a settle, before any client connects (Plinth: before fixture-hello is \
         installed); the server has its engine and fixture-hello loaded by then.\n"
    );
    section.push_str(&markdown_table(
        &[
            "process",
            "idle RSS",
            &format!(
                "RSS under load (max during {})",
                cfg.run.high_load().label()
            ),
            "startup ms (spawn to ready)",
        ],
        &rows,
    ));
    section.push('\n');
    section
}

/// The "TLB shootdowns" section: per scenario and target, shootdowns per call at each load,
/// median (min..max) over runs.
fn shootdowns_section(cfg: &Config, shootdowns: &[Shootdowns]) -> String {
    if shootdowns.is_empty() {
        return String::new();
    }
    let loads: Vec<(plinth_bench::Load, String)> = cfg.run.load_headings();
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for s in shootdowns {
        if !keys.contains(&(s.scenario.as_str(), s.target.as_str())) {
            keys.push((&s.scenario, &s.target));
        }
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|(scenario, target)| {
            let mut row = vec![(*scenario).to_owned(), (*target).to_owned()];
            for (load, _) in &loads {
                let values = shootdowns
                    .iter()
                    .filter(|s| s.scenario == *scenario && s.target == *target && s.load == *load)
                    .map(|s| s.per_call);
                row.push(opt_spread(plinth_bench::Spread::of(values).as_ref(), |x| {
                    format!("{x:.3}")
                }));
            }
            row
        })
        .collect();
    let mut headers = vec!["scenario", "target"];
    let labels: Vec<String> = loads.iter().map(|(l, _)| l.label()).collect();
    headers.extend(labels.iter().map(String::as_str));
    format!(
        "### TLB shootdowns per call\n\nThe machine's TLB shootdown interrupts (`/proc/interrupts`) during each measurement \
         and its warm-up, per call: how often a mapping change in the server made the kernel interrupt the other core. \
         Machine-wide, so other processes' count too.\n\n{}\n",
        markdown_table(&headers, &rows)
    )
}
