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
use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::{Parser, ValueEnum};
use plinth_bench::report::{self, Check, ProcessExtra};
use plinth_bench::stats::{self, Series, Side};
use plinth_bench::{
    Candidate, CommonArgs, Proc, ProcessSeries, Readiness, Report, RunConfig, Session, StopSignal,
    Sut, SutSpec, pin,
};
use plinth_proto::runtime::v1::runtime_client::RuntimeClient;
use plinth_proto::runtime::v1::{GetStateRequest, SaveStateRequest, SayHelloRequest, StateItem};
use serde::Serialize;
use tonic::transport::Channel;

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
    #[command(flatten)]
    common: CommonArgs,
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
    /// Result name (`<results-dir>/<name>.json`).
    #[arg(long, default_value = "core")]
    name: String,
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
    #[serde(flatten)]
    run: RunConfig,
    scenarios: Vec<Scenario>,
    value_size: usize,
}

impl Config {
    fn resolve(args: &Args) -> anyhow::Result<Self> {
        ensure!(!args.scenarios.is_empty(), "no scenarios selected");
        Ok(Self {
            run: RunConfig::resolve(&args.common)?,
            scenarios: args.scenarios.clone(),
            value_size: args.value_size,
        })
    }
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
    Ok(RuntimeClient::new(
        plinth_bench::sut::grpc_channel(addr).await?,
    ))
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
    let common = &args.common;
    // Before any thread exists: re-exec under taskset if pinning.
    let pinning = pin::pin_generator(!common.no_pin, common.generator_core, common.sut_core);
    let cfg = Config::resolve(&args)?;
    let run_cfg = &cfg.run;

    let baseline = SutSpec {
        label: "bare".into(),
        program: run_cfg.bare_bin.clone(),
        args: vec!["--port".into(), "0".into()],
        readiness: Readiness::ListeningLine,
        startup_timeout: common.startup_timeout(),
        stop_signal: StopSignal::Term,
    };
    let candidate = match run_cfg.candidate {
        Candidate::Bare => SutSpec {
            label: "bare#2".into(),
            ..baseline.clone()
        },
        Candidate::Plinth => SutSpec::plinth(
            run_cfg.plinth_bin.clone(),
            "grpc",
            common.plinth_arg.iter().cloned(),
            common.startup_timeout(),
        ),
    };

    let generator_cpus = Proc::Current.cpus_allowed().unwrap_or_default();
    eprintln!(
        "bench-core: {} vs {}, {} run(s), generator on CPUs {generator_cpus}, SUTs on {}",
        candidate.label,
        baseline.label,
        run_cfg.runs,
        pinning
            .sut_core()
            .map_or("any core".to_owned(), |c| format!("core {c}")),
    );

    let value: Vec<u8> = (0..cfg.value_size).map(|i| b'a' + (i % 26) as u8).collect();
    let phases = run_cfg.phases();
    let mut session = Session::new(pinning, run_cfg.max_in_flight);
    let mut process = ProcessSeries::default();
    let mut rss_under_load = Series::default();

    for run in 1..=run_cfg.runs {
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
        std::thread::sleep(Duration::from_secs_f64(run_cfg.settle_secs));
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
                    eprintln!(
                        "  {} at {}: SayHello answered {hello:?}",
                        t.sut.label(),
                        t.sut.addr()
                    );
                }
                t.client = Some(client);
            }
            for scenario in &cfg.scenarios {
                for phase in &phases {
                    for t in &mut targets {
                        let client = t.client.clone().context("client not connected")?;
                        let call = Call::new(*scenario, &args, &value);
                        let m = session
                            .measure(
                                scenario.name(),
                                t.side,
                                t.sut.label(),
                                run,
                                t.sut.proc(),
                                *phase,
                                || call.clone().send(client.clone()),
                            )
                            .await;
                        eprintln!("{}", report::progress_line(m, run_cfg.runs, 9));
                        if phase.load == run_cfg.high_load()
                            && let Some(kib) = m.sut_rss_max_kib
                        {
                            rss_under_load.keep_max(t.side, run, kib as f64);
                        }
                        t.sut.check_alive()?;
                    }
                }
            }
            anyhow::Ok(())
        })?;

        drop(rt);
        for t in targets {
            drop(t.client);
            t.sut.stop_or_warn();
        }
    }

    let results = session.results();
    let checks = checks(
        &cfg,
        &candidate.label,
        &baseline.label,
        &results.comparisons,
        &process,
    );

    let extra = ProcessExtra {
        process,
        rss_under_load_kib: rss_under_load,
        checks,
    };
    let report = Report::new(
        &args.name,
        &baseline.label,
        &candidate.label,
        cfg,
        generator_cpus,
        pinning,
        results,
        extra,
    );
    report.finish_process(
        &format!("Plinth core: {} vs {}", candidate.label, baseline.label),
        &report.config.run,
        pinning,
        &[],
        &args.common.results_dir(),
    )
}

fn checks(
    cfg: &Config,
    candidate: &str,
    baseline: &str,
    comparisons: &[stats::Comparison],
    process: &ProcessSeries,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for &scenario in &cfg.scenarios {
        checks.push(Check::added_p99(
            scenario.name(),
            candidate,
            baseline,
            cfg.run.low_load(),
            comparisons,
            TARGET_ADDED_P99_US,
        ));
    }
    for &scenario in &cfg.scenarios {
        checks.push(Check::throughput(
            scenario.name(),
            candidate,
            baseline,
            cfg.run.max_load(),
            comparisons,
            TARGET_THROUGHPUT_RATIO,
        ));
    }
    checks.push(Check::of(
        format!("idle RSS of {candidate}"),
        process.idle_rss_kib.spread(Side::Candidate).as_ref(),
        report::megabytes,
        format!("≤ {TARGET_IDLE_RSS_MB:.0} MB"),
        |kib| kib * 1024.0 / 1e6 <= TARGET_IDLE_RSS_MB,
    ));
    checks
}
