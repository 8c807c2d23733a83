//! `bench-core`: the "Plinth core" benchmark.
//!
//! SayHello, GetState (1 KB value, saved beforehand) and SaveState (1 KB
//! value) through Plinth against a bare tonic server answering the same
//! payloads, both called by the same tonic client. Each run starts both
//! processes fresh, samples their idle RSS, then for every scenario measures
//! open loop at a low and a high rate and closed loop at a fixed concurrency,
//! alternating baseline and Plinth measurement by measurement.
//!
//! Results go to stdout as Markdown and to `bench/results/<name>.json`.
//! Target checks are informational: the exit status is 0 unless something
//! failed to run.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use clap::{Parser, ValueEnum};
use plinth_bench::report::{self, Check};
use plinth_bench::stats::{self, Series, Side};
use plinth_bench::{
    Load, Phase, Pinning, Proc, ProcessSeries, Readiness, Report, Session, Sut, SutSpec, pin,
};
use plinth_proto::runtime::v1::runtime_client::RuntimeClient;
use plinth_proto::runtime::v1::{GetStateRequest, SaveStateRequest, SayHelloRequest, StateItem};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// Added p99 latency per call allowed at the low rate, µs.
const TARGET_ADDED_P99_US: f64 = 100.0;
/// Closed-loop throughput required relative to the bare server.
const TARGET_THROUGHPUT_RATIO: f64 = 0.7;
/// Idle RSS allowed for Plinth, decimal megabytes.
const TARGET_IDLE_RSS_MB: f64 = 15.0;

/// Key read by the GetState scenario (saved before measuring).
const GET_KEY: &str = "bench-get";
/// Key written by the SaveState scenario.
const SAVE_KEY: &str = "bench-save";

/// Plinth core benchmark: Plinth vs. a bare tonic server.
#[derive(Debug, Parser)]
#[command(name = "bench-core", args_override_self = true)]
struct Args {
    /// The `plinth` binary [default: $CARGO_TARGET_DIR or <workspace>/target, then release/plinth].
    #[arg(long)]
    plinth_bin: Option<PathBuf>,
    /// The `bare-server` binary [default: next to this executable].
    #[arg(long)]
    bare_bin: Option<PathBuf>,
    /// System under test compared against the bare server; `bare` runs the
    /// bare server on both sides to check the harness (ratios ≈ 1).
    #[arg(long, value_enum, default_value_t = Candidate::Plinth)]
    candidate: Candidate,
    /// Extra argument for `plinth run` (repeatable), e.g. `--plinth-arg=--config=x.yaml`.
    #[arg(long, allow_hyphen_values = true)]
    plinth_arg: Vec<String>,
    /// Runs per measurement [default: 3].
    #[arg(long)]
    runs: Option<u32>,
    /// Low open-loop rate, requests per second.
    #[arg(long, default_value_t = 1_000)]
    low_rate: u64,
    /// High open-loop rate, requests per second.
    #[arg(long, default_value_t = 10_000)]
    high_rate: u64,
    /// Seconds per low-rate run [default: 10; --quick: 1].
    #[arg(long)]
    low_secs: Option<f64>,
    /// Seconds per high-rate run [default: 5; --quick: 1].
    #[arg(long)]
    high_secs: Option<f64>,
    /// Seconds per closed-loop (max throughput) run [default: 5; --quick: 1].
    #[arg(long)]
    max_secs: Option<f64>,
    /// Unrecorded warm-up before each run, seconds [default: 1; --quick: 0.2].
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Closed-loop concurrency.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop: most requests in flight; later ones are dropped (counted).
    #[arg(long, default_value_t = 1_000)]
    max_in_flight: usize,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::SayHello, Scenario::GetState, Scenario::SaveState])]
    scenarios: Vec<Scenario>,
    /// State value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// `service_name` sent with SayHello.
    #[arg(long, default_value = "helloworld")]
    hello_service: String,
    /// State store name.
    #[arg(long, default_value = "statestore")]
    store: String,
    /// Smoke run of about a minute: 3 runs of 1 s each, short warm-up.
    #[arg(long)]
    quick: bool,
    /// Do not pin generator and SUTs to cores.
    #[arg(long)]
    no_pin: bool,
    /// Core for the load generator.
    #[arg(long, default_value_t = 0)]
    generator_core: usize,
    /// Core for the systems under test.
    #[arg(long, default_value_t = 1)]
    sut_core: usize,
    /// Seconds allowed for a SUT to become ready.
    #[arg(long, default_value_t = 15.0)]
    startup_timeout_secs: f64,
    /// Directory for the JSON result [default: bench/results].
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Result name (`<results-dir>/<name>.json`).
    #[arg(long, default_value = "core")]
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Candidate {
    Plinth,
    Bare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
enum Scenario {
    SayHello,
    GetState,
    SaveState,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::SayHello => "SayHello",
            Scenario::GetState => "GetState",
            Scenario::SaveState => "SaveState",
        }
    }
}

/// The configuration as run, recorded in the JSON result.
#[derive(Debug, Clone, Serialize)]
struct Config {
    candidate: Candidate,
    plinth_bin: PathBuf,
    bare_bin: PathBuf,
    runs: u32,
    low_rate: u64,
    high_rate: u64,
    low_secs: f64,
    high_secs: f64,
    max_secs: f64,
    warmup_secs: f64,
    settle_secs: f64,
    concurrency: usize,
    max_in_flight: usize,
    scenarios: Vec<Scenario>,
    value_size: usize,
    quick: bool,
    cpu_model: Option<String>,
    git_revision: Option<String>,
}

impl Config {
    fn resolve(args: &Args) -> anyhow::Result<Self> {
        let quick = args.quick;
        let pick = |v: Option<f64>, normal: f64, smoke: f64| {
            v.unwrap_or(if quick { smoke } else { normal })
        };
        let cfg = Self {
            candidate: args.candidate,
            plinth_bin: args.plinth_bin.clone().unwrap_or_else(default_plinth_bin),
            bare_bin: match &args.bare_bin {
                Some(p) => p.clone(),
                None => sibling_exe("bare-server")?,
            },
            runs: args.runs.unwrap_or(3),
            low_rate: args.low_rate,
            high_rate: args.high_rate,
            low_secs: pick(args.low_secs, 10.0, 1.0),
            high_secs: pick(args.high_secs, 5.0, 1.0),
            max_secs: pick(args.max_secs, 5.0, 1.0),
            warmup_secs: pick(args.warmup_secs, 1.0, 0.2),
            settle_secs: if quick { 0.2 } else { 0.5 },
            concurrency: args.concurrency,
            max_in_flight: args.max_in_flight,
            scenarios: args.scenarios.clone(),
            value_size: args.value_size,
            quick,
            cpu_model: cpu_model(),
            git_revision: git_revision(),
        };
        ensure!(cfg.runs >= 1, "--runs must be at least 1");
        ensure!(
            cfg.low_rate > 0 && cfg.high_rate > 0,
            "rates must be positive"
        );
        ensure!(cfg.concurrency > 0, "--concurrency must be positive");
        for (flag, secs) in [
            ("--low-secs", cfg.low_secs),
            ("--high-secs", cfg.high_secs),
            ("--max-secs", cfg.max_secs),
        ] {
            ensure!(secs.is_finite() && secs > 0.0, "{flag} must be positive");
        }
        ensure!(
            cfg.warmup_secs.is_finite() && cfg.warmup_secs >= 0.0,
            "--warmup-secs must not be negative"
        );
        ensure!(!cfg.scenarios.is_empty(), "no scenarios selected");
        for bin in [&cfg.bare_bin, &cfg.plinth_bin] {
            if bin == &cfg.plinth_bin && cfg.candidate == Candidate::Bare {
                continue;
            }
            ensure!(
                bin.is_file(),
                "{} not found; build it with `cargo build --release -p plinth -p plinth-bench` (or pass --plinth-bin/--bare-bin)",
                bin.display()
            );
        }
        Ok(cfg)
    }

    fn phases(&self) -> [Phase; 3] {
        let warmup = Duration::from_secs_f64(self.warmup_secs);
        [
            Phase {
                load: Load::Open {
                    rate: self.low_rate,
                },
                duration: Duration::from_secs_f64(self.low_secs),
                warmup,
            },
            Phase {
                load: Load::Open {
                    rate: self.high_rate,
                },
                duration: Duration::from_secs_f64(self.high_secs),
                warmup,
            },
            Phase {
                load: Load::Closed {
                    concurrency: self.concurrency,
                },
                duration: Duration::from_secs_f64(self.max_secs),
                warmup,
            },
        ]
    }
}

fn default_plinth_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("release").join("plinth")
}

fn sibling_exe(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating own executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    Ok(dir.join(name))
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_owned())
    })
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()?;
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !rev.is_empty()).then_some(rev)
}

/// Benchmark-specific part of the JSON result.
#[derive(Debug, Serialize)]
struct Extra {
    process: ProcessSeries,
    /// Per run, the largest RSS sampled during the high-rate runs, KiB.
    rss_under_load_kib: Series,
    checks: Vec<Check>,
}

/// The request each scenario sends; cloned per call so both sides pay the
/// same client-side cost.
#[derive(Debug, Clone)]
enum Call {
    SayHello(SayHelloRequest),
    GetState(GetStateRequest, usize),
    SaveState(SaveStateRequest),
}

impl Call {
    fn new(scenario: Scenario, args: &Args, value: &[u8]) -> Self {
        match scenario {
            Scenario::SayHello => Call::SayHello(SayHelloRequest {
                service_name: args.hello_service.clone(),
                name: "bench".into(),
                data: None,
            }),
            Scenario::GetState => Call::GetState(
                GetStateRequest {
                    store_name: args.store.clone(),
                    key: GET_KEY.into(),
                    ..Default::default()
                },
                value.len(),
            ),
            Scenario::SaveState => Call::SaveState(save_request(&args.store, SAVE_KEY, value)),
        }
    }

    async fn send(self, mut client: RuntimeClient<Channel>) -> anyhow::Result<()> {
        match self {
            Call::SayHello(req) => {
                client.say_hello(req).await?;
            }
            Call::GetState(req, expected) => {
                let got = client.get_state(req).await?.into_inner().data.len();
                ensure!(
                    got == expected,
                    "GetState returned {got} bytes, expected {expected}"
                );
            }
            Call::SaveState(req) => {
                client.save_state(req).await?;
            }
        }
        Ok(())
    }
}

fn save_request(store: &str, key: &str, value: &[u8]) -> SaveStateRequest {
    SaveStateRequest {
        store_name: store.to_owned(),
        states: vec![StateItem {
            key: key.to_owned(),
            value: value.to_vec(),
            ..Default::default()
        }],
    }
}

/// A started SUT with its client.
#[derive(Debug)]
struct Target {
    side: Side,
    sut: Sut,
    client: Option<RuntimeClient<Channel>>,
}

async fn connect(addr: SocketAddr) -> anyhow::Result<RuntimeClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(RuntimeClient::new(channel))
}

/// Checks that the SUT answers every scenario correctly and stores the
/// value GetState reads.
async fn preflight(
    client: &mut RuntimeClient<Channel>,
    args: &Args,
    value: &[u8],
) -> anyhow::Result<String> {
    let hello = client
        .say_hello(SayHelloRequest {
            service_name: args.hello_service.clone(),
            name: "bench".into(),
            data: None,
        })
        .await
        .context("SayHello")?
        .into_inner()
        .hello;
    ensure!(!hello.is_empty(), "SayHello answered an empty greeting");
    client
        .save_state(save_request(&args.store, GET_KEY, value))
        .await
        .context("SaveState")?;
    let got = client
        .get_state(GetStateRequest {
            store_name: args.store.clone(),
            key: GET_KEY.into(),
            ..Default::default()
        })
        .await
        .context("GetState")?
        .into_inner();
    ensure!(
        got.data == value,
        "GetState returned {} bytes, not the {} saved",
        got.data.len(),
        value.len()
    );
    Ok(hello)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before any thread exists: re-exec under taskset if pinning.
    let pinning = pin::pin_generator(!args.no_pin, args.generator_core, args.sut_core);
    let cfg = Config::resolve(&args)?;

    let baseline = SutSpec {
        label: "bare".into(),
        program: cfg.bare_bin.clone(),
        args: vec!["--port".into(), "0".into()],
        readiness: Readiness::ListeningLine,
        startup_timeout: Duration::from_secs_f64(args.startup_timeout_secs),
    };
    let candidate = match cfg.candidate {
        Candidate::Bare => SutSpec {
            label: "bare#2".into(),
            ..baseline.clone()
        },
        Candidate::Plinth => SutSpec {
            label: "plinth".into(),
            program: cfg.plinth_bin.clone(),
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
            ]
            .into_iter()
            .chain(["--log-format", "json", "--log-level", "info"])
            .map(String::from)
            .chain(args.plinth_arg.iter().cloned())
            .collect(),
            readiness: Readiness::PlinthJsonLogs {
                serve_listener: "grpc".into(),
                admin_listener: "admin".into(),
                readiness_path: "/actuator/health/readiness".into(),
            },
            startup_timeout: Duration::from_secs_f64(args.startup_timeout_secs),
        },
    };

    let generator_cpus = Proc::Current.cpus_allowed().unwrap_or_default();
    eprintln!(
        "bench-core: {} vs {}, {} run(s), generator on CPUs {generator_cpus}, SUTs on {}",
        candidate.label,
        baseline.label,
        cfg.runs,
        pinning
            .sut_core()
            .map_or("any core".to_owned(), |c| format!("core {c}")),
    );

    let value: Vec<u8> = (0..cfg.value_size).map(|i| b'a' + (i % 26) as u8).collect();
    let phases = cfg.phases();
    let mut session = Session::new(pinning, cfg.max_in_flight);
    let mut process = ProcessSeries::default();
    let mut rss_under_load = Series::default();

    for run in 1..=cfg.runs {
        let mut targets = Vec::new();
        for (side, spec) in [(Side::Baseline, &baseline), (Side::Candidate, &candidate)] {
            let sut = Sut::start(spec, pinning.sut_core())?;
            if run == 1
                && let Ok(cpus) = sut.proc().cpus_allowed()
            {
                eprintln!("  {} pid {} on CPUs {cpus}", sut.label(), sut.pid());
            }
            process
                .startup_ms
                .push(side, run, sut.startup_time().as_secs_f64() * 1e3);
            targets.push(Target {
                side,
                sut,
                client: None,
            });
        }
        // Idle RSS: after startup, before any client connects.
        std::thread::sleep(Duration::from_secs_f64(cfg.settle_secs));
        for t in &targets {
            let kib = t
                .sut
                .proc()
                .rss_kib()
                .with_context(|| format!("reading RSS of {}", t.sut.label()))?;
            process.idle_rss_kib.push(t.side, run, kib as f64);
        }

        // A fresh runtime per run: dropping it at the end of the run closes
        // every client connection, so the SUTs can shut down gracefully.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            for t in &mut targets {
                let mut client = connect(t.sut.addr()).await?;
                let hello = preflight(&mut client, &args, &value)
                    .await
                    .with_context(|| format!("preflight against {} failed", t.sut.label()))?;
                if run == 1 {
                    eprintln!("  {} at {}: SayHello answered {hello:?}", t.sut.label(), t.sut.addr());
                }
                t.client = Some(client);
            }
            for scenario in &cfg.scenarios {
                for phase in &phases {
                    for t in &mut targets {
                        let client = t.client.clone().context("client not connected")?;
                        let call = Call::new(*scenario, &args, &value);
                        let m = session
                            .measure(scenario.name(), t.side, t.sut.label(), run, t.sut.proc(), *phase, || {
                                call.clone().send(client.clone())
                            })
                            .await;
                        eprintln!(
                            "  run {run}/{} {:<9} {:<13} {:<7} p50 {:>6} µs  p99 {:>6} µs  {:>8.0} rps  dropped {} errors {}{}",
                            cfg.runs,
                            m.scenario,
                            m.load.label(),
                            m.target,
                            m.latency_us.p50,
                            m.latency_us.p99,
                            m.rps,
                            m.dropped,
                            m.errors,
                            m.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
                        );
                        if phase.load == (Load::Open { rate: cfg.high_rate })
                            && let Some(kib) = m.sut_rss_max_kib
                        {
                            update_max(&mut rss_under_load, t.side, run, kib as f64);
                        }
                        t.sut.check_alive()?;
                    }
                }
            }
            anyhow::Ok(())
        })?;

        drop(rt);
        for t in targets {
            let label = t.sut.label().to_owned();
            drop(t.client);
            match t.sut.stop(Duration::from_secs(5)) {
                Ok(status) if !status.success() => {
                    eprintln!("  warning: {label} exited with {status} on SIGTERM")
                }
                Ok(_) => {}
                Err(e) => eprintln!("  warning: {e:#}"),
            }
        }
    }

    let measurements = session.measurements().to_vec();
    let summaries = stats::summarize(&measurements);
    let comparisons = stats::compare(&measurements);
    let checks = checks(&cfg, &candidate.label, &comparisons, &process);

    print_report(
        &cfg,
        &baseline.label,
        &candidate.label,
        pinning,
        &generator_cpus,
        &summaries,
        &comparisons,
        &process,
        &rss_under_load,
        &checks,
    );

    let results_dir = args
        .results_dir
        .clone()
        .unwrap_or_else(report::default_results_dir);
    let report = Report {
        name: args.name.clone(),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        baseline: baseline.label.clone(),
        candidate: candidate.label.clone(),
        config: cfg,
        generator_cpus,
        sut_core: pinning.sut_core(),
        measurements,
        summaries,
        comparisons,
        extra: Extra {
            process,
            rss_under_load_kib: rss_under_load,
            checks,
        },
    };
    let path = report::write_json(&results_dir, &args.name, &report)?;
    println!("JSON: {}", path.display());
    Ok(())
}

fn update_max(series: &mut Series, side: Side, run: u32, value: f64) {
    let values = match side {
        Side::Baseline => &mut series.baseline,
        Side::Candidate => &mut series.candidate,
    };
    match values.iter_mut().find(|(r, _)| *r == run) {
        Some((_, v)) => *v = v.max(value),
        None => values.push((run, value)),
    }
}

fn checks(
    cfg: &Config,
    candidate: &str,
    comparisons: &[stats::Comparison],
    process: &ProcessSeries,
) -> Vec<Check> {
    let low = Load::Open { rate: cfg.low_rate };
    let max = Load::Closed {
        concurrency: cfg.concurrency,
    };
    let find = |load: Load, scenario: Scenario| {
        comparisons
            .iter()
            .find(|c| c.load == load && c.scenario == scenario.name())
    };
    // A missing value (no successful calls on a side) fails its check.
    let check = |name: String,
                 value: Option<&stats::Spread>,
                 fmt: fn(f64) -> String,
                 target: String,
                 ok: &dyn Fn(f64) -> bool| Check {
        name,
        value: report::opt_spread(value, fmt),
        target,
        pass: value.is_some_and(|v| ok(v.median)),
    };

    let mut checks = Vec::new();
    for &scenario in &cfg.scenarios {
        let c = find(low, scenario);
        checks.push(check(
            format!(
                "{}: added p99 at {} ({candidate} − bare)",
                scenario.name(),
                low.label()
            ),
            c.and_then(|c| c.p99_added_us.as_ref()),
            |x| format!("{} µs", report::signed(x)),
            format!("≤ +{TARGET_ADDED_P99_US:.0} µs"),
            &|v| v <= TARGET_ADDED_P99_US,
        ));
    }
    for &scenario in &cfg.scenarios {
        let c = find(max, scenario);
        checks.push(check(
            format!(
                "{}: throughput {candidate}/bare ({})",
                scenario.name(),
                max.label()
            ),
            c.and_then(|c| c.rps_ratio.as_ref()),
            report::ratio,
            format!("≥ {TARGET_THROUGHPUT_RATIO:.2}×"),
            &|v| v >= TARGET_THROUGHPUT_RATIO,
        ));
    }
    checks.push(check(
        format!("idle RSS of {candidate}"),
        process.idle_rss_kib.spread(Side::Candidate).as_ref(),
        report::megabytes,
        format!("≤ {TARGET_IDLE_RSS_MB:.0} MB"),
        &|kib| kib * 1024.0 / 1e6 <= TARGET_IDLE_RSS_MB,
    ));
    checks
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    cfg: &Config,
    baseline: &str,
    candidate: &str,
    pinning: Pinning,
    generator_cpus: &str,
    summaries: &[stats::Summary],
    comparisons: &[stats::Comparison],
    process: &ProcessSeries,
    rss_under_load: &Series,
    checks: &[Check],
) {
    println!("## Plinth core: {candidate} vs {baseline}\n");
    let sut_cpus = match pinning {
        Pinning::Pinned { sut, .. } => format!("core {sut}"),
        Pinning::Unpinned => "unpinned".into(),
    };
    let steal = stats::Spread::of(summaries.iter().filter_map(|s| s.steal.map(|st| st.max)));
    println!(
        "- {} run(s) per cell, baseline and {candidate} measured alternately; cells are median (min..max) over runs; \
         `ratio` rows are {candidate}/{baseline}, paired by run.",
        cfg.runs
    );
    println!(
        "- Open-loop latency is measured from each call's intended send time (coordinated omission corrected), in µs; \
         `send lag` is how late the generator actually sent, i.e. the generator's and machine's own stalls."
    );
    println!(
        "- Generator: one thread on CPUs {generator_cpus}; SUTs: {sut_cpus}. CPU columns in cores (the open-loop \
         generator busy-polls, so it shows ~1)."
    );
    println!(
        "- Machine: {}; hypervisor steal up to {} of CPU time during a run. Revision: {}.\n",
        cfg.cpu_model.as_deref().unwrap_or("unknown CPU"),
        steal.map_or("?".into(), |s| format!("{:.1}%", s.max * 100.0)),
        cfg.git_revision.as_deref().unwrap_or("unknown"),
    );
    let loads = [
        (
            Load::Open { rate: cfg.low_rate },
            format!(
                "Open loop, {} ({} s per run)",
                Load::Open { rate: cfg.low_rate }.label(),
                cfg.low_secs
            ),
        ),
        (
            Load::Open {
                rate: cfg.high_rate,
            },
            format!(
                "Open loop, {} ({} s per run)",
                Load::Open {
                    rate: cfg.high_rate
                }
                .label(),
                cfg.high_secs
            ),
        ),
        (
            Load::Closed {
                concurrency: cfg.concurrency,
            },
            format!(
                "Maximum throughput, closed loop, concurrency {} ({} s per run)",
                cfg.concurrency, cfg.max_secs
            ),
        ),
    ];
    print!("{}", report::load_tables(&loads, summaries, comparisons));

    println!("### Memory and startup\n");
    let mut rows = Vec::new();
    for (side, label) in [(Side::Baseline, baseline), (Side::Candidate, candidate)] {
        let mb = |s: Option<stats::Spread>| {
            s.map_or("-".into(), |s| report::spread_with(&s, report::megabytes))
        };
        rows.push(vec![
            label.to_owned(),
            mb(process.idle_rss_kib.spread(side)),
            mb(rss_under_load.spread(side)),
            process
                .startup_ms
                .spread(side)
                .map_or("-".into(), |s| report::spread(&s)),
        ]);
    }
    let ratio =
        |s: Option<stats::Spread>| s.map_or("-".into(), |s| report::spread_with(&s, report::ratio));
    rows.push(vec![
        "ratio".into(),
        ratio(process.idle_rss_kib.ratio()),
        ratio(rss_under_load.ratio()),
        ratio(process.startup_ms.ratio()),
    ]);
    let under_load = format!(
        "RSS under load (max during {})",
        Load::Open {
            rate: cfg.high_rate
        }
        .label()
    );
    println!(
        "{}",
        report::markdown_table(
            &[
                "process",
                "idle RSS",
                &under_load,
                "startup ms (spawn to ready)"
            ],
            &rows
        )
    );

    println!("### Targets (informational)\n");
    println!("{}", report::checks_table(checks));
    if checks.iter().any(|c| !c.pass) {
        println!(
            "Some targets were missed (see FAIL above); absolute figures on shared machines are indicative only.\n"
        );
    }
    let errors: u64 = summaries.iter().map(|s| s.errors + s.dropped).sum();
    if errors > 0 {
        println!(
            "Warning: {errors} call(s) failed or were dropped; see the errors/dropped columns.\n"
        );
    }
}
