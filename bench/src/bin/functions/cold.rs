//! Cold start: how long the first request to a just-installed function takes when its code
//! is already in the cache of precompiled code, and, separately, how long compiling a
//! binary the first time takes.
//!
//! One run is one `bench-functions cold-start` process, pinned to the SUT core like the
//! servers: it makes `count` distinct binaries of fixture-hello, compiles each into a fresh
//! cache (the compile times), then starts a fresh engine over that cache and, one function
//! at a time, installs it (loaded from the cache) and times its first call and its second.
//! Before that loop one undecorated function is installed and called a few times, so
//! what the process does once (the first store, the first pool slot, the epoch thread) is
//! not charged to the first function measured.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use plinth_bench::report::{markdown_table, megabytes, num, opt_spread};
use plinth_bench::{Proc, Spread};
use plinth_runtime::app::{AppStatus, InvokeRequest};
use plinth_wasm::registry::InstallMode;
use plinth_wasm::{EngineOptions, FunctionConfig, FunctionRegistry, WasmEngine};
use serde::{Deserialize, Serialize};

use super::binaries::{distinct, per_run, per_run_total, read_fixture};
use crate::HELLO_BODY;

/// The line of `bench-functions cold-start`'s stdout that carries its result.
const RESULT_PREFIX: &str = "COLD-START ";

/// Calls of the warm-up function before the measured installs.
const WARMUP_CALLS: usize = 20;

/// Options of `bench-functions cold-start`.
#[derive(Debug, clap::Args)]
pub(crate) struct ColdArgs {
    /// The binary to make distinct copies of (fixture-hello.wasm).
    #[arg(long)]
    fixture: PathBuf,
    /// A fresh directory for the cache of precompiled code.
    #[arg(long)]
    cache_dir: PathBuf,
    /// Distinct functions to compile, install and call.
    #[arg(long)]
    count: usize,
    /// Tells this run's binaries from any other's (part of each custom section).
    #[arg(long)]
    tag: String,
}

/// What one cold-start run measured, per function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ColdRun {
    /// Distinct functions measured.
    pub(crate) functions: usize,
    /// Size of each binary, bytes.
    pub(crate) binary_bytes: usize,
    /// The first compile of each binary (a cache miss; the code is written to the cache and
    /// mapped from it), ms.
    pub(crate) compile_ms: Vec<f64>,
    /// `install` from the cache as its caller sees it, µs.
    pub(crate) install_us: Vec<f64>,
    /// The registry's own figure for reading the cached code (`compileMs`), ms.
    pub(crate) cache_load_ms: Vec<f64>,
    /// The registry's own figure for linking and pre-instantiating (`loadMs`), ms.
    pub(crate) load_ms: Vec<f64>,
    /// The first call after the install: the cold start, µs.
    pub(crate) first_call_us: Vec<f64>,
    /// The call after it, µs.
    pub(crate) second_call_us: Vec<f64>,
    /// `install` plus the first call, µs.
    pub(crate) install_and_call_us: Vec<f64>,
    /// The process's RSS with every function installed, KiB.
    pub(crate) rss_kib: Option<u64>,
}

/// Runs one cold-start measurement and prints its result on stdout.
pub(crate) fn main(args: ColdArgs) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(measure(&args))?;
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&result)?);
    Ok(())
}

fn hello_request() -> InvokeRequest {
    InvokeRequest {
        method: String::new(),
        verb: "GET".into(),
        query: String::new(),
        content_type: String::new(),
        data: Bytes::new(),
        headers: Vec::new(),
    }
}

/// One call of `id`, checked: status 200 and fixture-hello's body. Returns its latency in µs.
async fn timed_call(registry: &FunctionRegistry, id: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let answer = registry.call(id, "", hello_request()).await?;
    let us = started.elapsed().as_secs_f64() * 1e6;
    ensure!(
        answer.status == AppStatus::Http(200),
        "function {id}: status {:?}, expected 200",
        answer.status
    );
    ensure!(
        answer.data.as_ref() == HELLO_BODY,
        "function {id}: body {:?}, expected {:?}",
        String::from_utf8_lossy(&answer.data),
        String::from_utf8_lossy(HELLO_BODY)
    );
    Ok(us)
}

fn engine(cache_dir: &Path) -> anyhow::Result<std::sync::Arc<WasmEngine>> {
    Ok(WasmEngine::new(EngineOptions {
        cache_dir: cache_dir.to_owned(),
        ..Default::default()
    })?)
}

async fn measure(args: &ColdArgs) -> anyhow::Result<ColdRun> {
    ensure!(args.count > 0, "--count must be positive");
    let fixture = read_fixture(&args.fixture)?;
    let binaries: Vec<Vec<u8>> = (0..args.count)
        .map(|i| distinct(&fixture, &format!("cold-{}-{i}", args.tag)))
        .collect();

    // 1. Precompile every binary into the cache: the first-compile times.
    let compiler = engine(&args.cache_dir)?;
    let mut compile_ms = Vec::with_capacity(args.count);
    for (i, bytes) in binaries.iter().enumerate() {
        let (_, stats) = compiler
            .compile(bytes)
            .with_context(|| format!("compiling binary {i}"))?;
        ensure!(
            !stats.cached,
            "binary {i} was already in the fresh cache {}",
            args.cache_dir.display()
        );
        compile_ms.push(stats.elapsed.as_secs_f64() * 1e3);
    }
    drop(compiler);

    // 2. A fresh engine over that cache, as after a restart.
    let runtime = plinth_runtime::Runtime::start(plinth_runtime::Options {
        app_id: "bench".into(),
        ..Default::default()
    })
    .await
    .context("starting the runtime")?;
    let registry = FunctionRegistry::new(engine(&args.cache_dir)?, runtime);
    registry
        .install(
            "warmup",
            fixture.clone(),
            FunctionConfig::default(),
            InstallMode::Create,
        )
        .await
        .context("installing the warm-up function")?;
    for _ in 0..WARMUP_CALLS {
        timed_call(&registry, "warmup").await?;
    }

    let mut run = ColdRun {
        functions: args.count,
        binary_bytes: binaries.first().map_or(0, Vec::len),
        compile_ms,
        install_us: Vec::with_capacity(args.count),
        cache_load_ms: Vec::with_capacity(args.count),
        load_ms: Vec::with_capacity(args.count),
        first_call_us: Vec::with_capacity(args.count),
        second_call_us: Vec::with_capacity(args.count),
        install_and_call_us: Vec::with_capacity(args.count),
        rss_kib: None,
    };
    for (i, bytes) in binaries.into_iter().enumerate() {
        let id = format!("cold-{i}");
        let started = Instant::now();
        let info = registry
            .install(&id, bytes, FunctionConfig::default(), InstallMode::Create)
            .await
            .with_context(|| format!("installing {id}"))?;
        let install_us = started.elapsed().as_secs_f64() * 1e6;
        if !info.compiled_from_cache {
            bail!("{id} was compiled again instead of being loaded from the cache");
        }
        let first = timed_call(&registry, &id).await?;
        let second = timed_call(&registry, &id).await?;
        run.install_us.push(install_us);
        run.cache_load_ms.push(info.compile_ms);
        run.load_ms.push(info.load_ms);
        run.first_call_us.push(first);
        run.second_call_us.push(second);
        run.install_and_call_us.push(install_us + first);
    }
    run.rss_kib = Proc::Current.rss_kib().ok();
    Ok(run)
}

/// Runs `bench-functions cold-start` (this executable, `exe`) pinned to `core`, and reads its
/// result.
pub(crate) fn run_subprocess(
    exe: &Path,
    core: Option<usize>,
    fixture: &Path,
    cache_dir: &Path,
    count: usize,
    tag: &str,
) -> anyhow::Result<ColdRun> {
    let out = plinth_bench::pin::pinned_command(core, exe)
        .arg("cold-start")
        .arg("--fixture")
        .arg(fixture)
        .arg("--cache-dir")
        .arg(cache_dir)
        .arg("--count")
        .arg(count.to_string())
        .arg("--tag")
        .arg(tag)
        .stdin(std::process::Stdio::null())
        .output()
        .context("starting bench-functions cold-start")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "bench-functions cold-start failed ({}):\n{}",
            out.status,
            stderr.trim_end()
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .with_context(|| format!("bench-functions cold-start printed no result:\n{stdout}"))?;
    serde_json::from_str(line).context("reading the cold-start result")
}

/// The per-run spread of the p99 of the first call, µs: the cold-start target's figure.
pub(crate) fn first_call_p99(runs: &[ColdRun]) -> Option<Spread> {
    per_run(runs, |r| &r.first_call_us, 0.99)
}

/// One row of the cold-start table.
struct Measure {
    label: &'static str,
    values: fn(&ColdRun) -> &[f64],
    fmt: fn(f64) -> String,
    /// Whether the total over a run's functions is shown (in seconds; the values are ms).
    total: bool,
}

impl Measure {
    fn new(label: &'static str, values: fn(&ColdRun) -> &[f64], fmt: fn(f64) -> String) -> Self {
        Self {
            label,
            values,
            fmt,
            total: false,
        }
    }

    fn with_total(self) -> Self {
        Self {
            total: true,
            ..self
        }
    }
}

fn ms(x: f64) -> String {
    format!("{} ms", num(x))
}

fn us(x: f64) -> String {
    format!("{} µs", num(x))
}

/// The "Cold start" section: per measure, p50, p99 and max over the functions of a run,
/// and the total where it means something; each cell median (min..max) over runs.
pub(crate) fn section(runs: &[ColdRun]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let rows_of = [
        Measure::new("first compile (cache miss)", |r| &r.compile_ms, ms).with_total(),
        Measure::new("install from the cache", |r| &r.install_us, us),
        Measure::new(
            "… of which reading cached code (compileMs)",
            |r| &r.cache_load_ms,
            ms,
        ),
        Measure::new("… of which linking (loadMs)", |r| &r.load_ms, ms),
        Measure::new("**first call (cold start)**", |r| &r.first_call_us, us),
        Measure::new("second call", |r| &r.second_call_us, us),
        Measure::new("install + first call", |r| &r.install_and_call_us, us),
    ];
    let rows: Vec<Vec<String>> = rows_of
        .iter()
        .map(|m| {
            let cell = |q: f64| opt_spread(per_run(runs, m.values, q).as_ref(), m.fmt);
            vec![
                m.label.to_owned(),
                cell(0.5),
                cell(0.99),
                cell(1.0),
                if m.total {
                    opt_spread(per_run_total(runs, m.values).as_ref(), |ms| {
                        format!("{} s", num(ms / 1e3))
                    })
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let rss = Spread::of(runs.iter().filter_map(|r| r.rss_kib.map(|k| k as f64)));
    let mut out = format!(
        "### Cold start ({} distinct functions per run, {} run(s))\n\n",
        first.functions,
        runs.len()
    );
    let _ = writeln!(
        out,
        "Each run: {} distinct {}-byte binaries of fixture-hello are compiled into a fresh cache, then a fresh \
         engine installs each from the cache and calls it twice, in one process pinned like the servers \
         (in-process calls, no HTTP). Cells are median (min..max) over runs of each run's percentile over \
         its functions. Process RSS with all {} installed: {}.\n",
        first.functions,
        first.binary_bytes,
        first.functions,
        opt_spread(rss.as_ref(), megabytes),
    );
    out.push_str(&markdown_table(
        &["measure", "p50", "p99", "max", "total"],
        &rows,
    ));
    out.push('\n');
    out
}
