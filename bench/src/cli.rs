//! Options every benchmark binary takes (binaries, load levels, run lengths,
//! pinning) and their resolved form, recorded in the JSON result.
//!
//! A binary flattens [`CommonArgs`] into its own `clap` parser and adds its
//! scenarios and payload options.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::ValueEnum;
use serde::Serialize;

use crate::load::Load;
use crate::session::Phase;

/// What is compared against the bare server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidate {
    /// Plinth.
    Plinth,
    /// A second bare server: a harness self-test whose ratios should be ≈ 1.
    Bare,
}

/// Options shared by every benchmark binary.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The `plinth` binary [default: $CARGO_TARGET_DIR or <workspace>/target, then release/plinth].
    #[arg(long)]
    pub plinth_bin: Option<PathBuf>,
    /// The `bare-server` binary [default: next to this executable].
    #[arg(long)]
    pub bare_bin: Option<PathBuf>,
    /// System under test compared against the bare server; `bare` runs the
    /// bare server on both sides to check the harness (ratios ≈ 1).
    #[arg(long, value_enum, default_value_t = Candidate::Plinth)]
    pub candidate: Candidate,
    /// Extra argument for `plinth run` (repeatable), e.g. `--plinth-arg=--config=x.yaml`.
    #[arg(long, allow_hyphen_values = true)]
    pub plinth_arg: Vec<String>,
    /// Runs per measurement [default: 3].
    #[arg(long)]
    pub runs: Option<u32>,
    /// Low open-loop rate, requests per second.
    #[arg(long, default_value_t = 1_000)]
    pub low_rate: u64,
    /// High open-loop rate, requests per second.
    #[arg(long, default_value_t = 10_000)]
    pub high_rate: u64,
    /// Seconds per low-rate run [default: 10; --quick: 1].
    #[arg(long)]
    pub low_secs: Option<f64>,
    /// Seconds per high-rate run [default: 5; --quick: 1].
    #[arg(long)]
    pub high_secs: Option<f64>,
    /// Seconds per closed-loop (max throughput) run [default: 5; --quick: 1].
    #[arg(long)]
    pub max_secs: Option<f64>,
    /// Unrecorded warm-up before each run, seconds [default: 1; --quick: 0.2].
    #[arg(long)]
    pub warmup_secs: Option<f64>,
    /// Closed-loop concurrency.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: most requests in flight; later ones are dropped (counted).
    #[arg(long, default_value_t = 1_000)]
    pub max_in_flight: usize,
    /// Smoke run: 3 runs of 1 s each, short warm-up.
    #[arg(long)]
    pub quick: bool,
    /// Do not pin generator and SUTs to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Core for the load generator.
    #[arg(long, default_value_t = 0)]
    pub generator_core: usize,
    /// Core for the systems under test.
    #[arg(long, default_value_t = 1)]
    pub sut_core: usize,
    /// Seconds allowed for a SUT to become ready.
    #[arg(long, default_value_t = 15.0)]
    pub startup_timeout_secs: f64,
    /// Directory for the JSON result [default: bench/results].
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
}

impl CommonArgs {
    /// How long a SUT may take to become ready.
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.startup_timeout_secs)
    }

    /// Where the JSON result goes.
    pub fn results_dir(&self) -> PathBuf {
        self.results_dir
            .clone()
            .unwrap_or_else(crate::report::default_results_dir)
    }
}

/// The shared configuration as run.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// What is compared against the bare server.
    pub candidate: Candidate,
    /// The `plinth` binary.
    pub plinth_bin: PathBuf,
    /// The `bare-server` binary.
    pub bare_bin: PathBuf,
    /// Runs per measurement.
    pub runs: u32,
    /// Low open-loop rate, rps.
    pub low_rate: u64,
    /// High open-loop rate, rps.
    pub high_rate: u64,
    /// Seconds per low-rate run.
    pub low_secs: f64,
    /// Seconds per high-rate run.
    pub high_secs: f64,
    /// Seconds per closed-loop run.
    pub max_secs: f64,
    /// Warm-up before each run, seconds.
    pub warmup_secs: f64,
    /// Pause between startup and the idle RSS reading, seconds.
    pub settle_secs: f64,
    /// Closed-loop concurrency.
    pub concurrency: usize,
    /// Open-loop bound on calls in flight.
    pub max_in_flight: usize,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// `git describe` of the bench crate's checkout.
    pub git_revision: Option<String>,
}

impl RunConfig {
    /// Applies the `--quick` defaults and checks the values.
    pub fn resolve(args: &CommonArgs) -> anyhow::Result<Self> {
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
            quick,
            cpu_model: crate::procfs::cpu_model(),
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

    /// The open loop at the low rate.
    pub fn low_load(&self) -> Load {
        Load::Open {
            rate: self.low_rate,
        }
    }

    /// The open loop at the high rate.
    pub fn high_load(&self) -> Load {
        Load::Open {
            rate: self.high_rate,
        }
    }

    /// The closed loop.
    pub fn max_load(&self) -> Load {
        Load::Closed {
            concurrency: self.concurrency,
        }
    }

    /// Low rate, high rate, closed loop: what every scenario is measured at.
    pub fn phases(&self) -> [Phase; 3] {
        let warmup = Duration::from_secs_f64(self.warmup_secs);
        [
            (self.low_load(), self.low_secs),
            (self.high_load(), self.high_secs),
            (self.max_load(), self.max_secs),
        ]
        .map(|(load, secs)| Phase {
            load,
            duration: Duration::from_secs_f64(secs),
            warmup,
        })
    }

    /// A heading per load level, for [`crate::report::load_tables`].
    pub fn load_headings(&self) -> Vec<(Load, String)> {
        vec![
            (
                self.low_load(),
                format!(
                    "Open loop, {} ({} s per run)",
                    self.low_load().label(),
                    self.low_secs
                ),
            ),
            (
                self.high_load(),
                format!(
                    "Open loop, {} ({} s per run)",
                    self.high_load().label(),
                    self.high_secs
                ),
            ),
            (
                self.max_load(),
                format!(
                    "Maximum throughput, closed loop, concurrency {} ({} s per run)",
                    self.concurrency, self.max_secs
                ),
            ),
        ]
    }
}

/// `$CARGO_TARGET_DIR/release/plinth`, or the workspace's `target/`.
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

/// An executable in the same directory as this one.
fn sibling_exe(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating own executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    Ok(dir.join(name))
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
