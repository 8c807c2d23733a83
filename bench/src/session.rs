//! A benchmark session: the measurement protocol shared by every benchmark
//! (warm-up, load, CPU and RSS sampling) and the results collected so far.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::load::{self, ClosedLoop, Load, OpenLoop};
use crate::pin::Pinning;
use crate::procfs::{self, CpuMeter, Proc, RssSampler, StealMeter};
use crate::stats::{self, Comparison, Measurement, Series, Side, Summary};

/// How often RSS is sampled during a measurement.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// One load phase: what to offer, for how long, after what warm-up.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Offered load.
    pub load: Load,
    /// Measured length.
    pub duration: Duration,
    /// Unrecorded load at the same level before measuring (connections,
    /// allocator and caches settle).
    pub warmup: Duration,
}

/// Collects the measurements of one benchmark binary run.
#[derive(Debug)]
pub struct Session {
    max_in_flight: usize,
    ticks_per_sec: u64,
    pinning: Pinning,
    measurements: Vec<Measurement>,
}

impl Session {
    /// A session whose open-loop runs keep at most `max_in_flight` calls
    /// outstanding.
    pub fn new(pinning: Pinning, max_in_flight: usize) -> Self {
        Self {
            max_in_flight: max_in_flight.max(1),
            ticks_per_sec: procfs::clock_ticks_per_sec(),
            pinning,
            measurements: Vec::new(),
        }
    }

    /// The pinning in effect.
    pub fn pinning(&self) -> Pinning {
        self.pinning
    }

    /// Every measurement so far, in the order taken.
    pub fn measurements(&self) -> &[Measurement] {
        &self.measurements
    }

    /// Every measurement so far, aggregated per scenario, load and side, and compared
    /// candidate against baseline.
    pub fn results(&self) -> Results {
        let measurements = self.measurements.clone();
        let summaries = stats::summarize(&measurements);
        let comparisons = stats::compare(&measurements);
        Results {
            measurements,
            summaries,
            comparisons,
        }
    }

    /// Warms up, then measures `call` under `phase` against the SUT process
    /// `sut` (for CPU and RSS), records the result and returns it.
    #[allow(clippy::too_many_arguments)]
    pub async fn measure<F, Fut, E>(
        &mut self,
        scenario: &str,
        side: Side,
        target: &str,
        run: u32,
        sut: Proc,
        phase: Phase,
        call: F,
    ) -> &Measurement
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        self.measure_group(scenario, side, target, run, &[sut], phase, call)
            .await
    }

    /// [`Session::measure`] against a SUT made of several processes (e.g. two
    /// proxies in a row): the measurement's `sut_cpu` is their sum and
    /// `sut_rss_max_kib` the sum of their maxima; with more than one process,
    /// `sut_cpu_each` has each one's CPU, in the order of `procs`.
    #[allow(clippy::too_many_arguments)]
    pub async fn measure_group<F, Fut, E>(
        &mut self,
        scenario: &str,
        side: Side,
        target: &str,
        run: u32,
        procs: &[Proc],
        phase: Phase,
        mut call: F,
    ) -> &Measurement
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        if !phase.warmup.is_zero() {
            self.drive(phase.load, phase.warmup, &mut call).await;
        }
        let rss: Vec<RssSampler> = procs
            .iter()
            .map(|p| RssSampler::start(*p, RSS_SAMPLE_EVERY))
            .collect();
        let sut_cpu: Vec<CpuMeter> = procs
            .iter()
            .map(|p| CpuMeter::start(*p, self.ticks_per_sec))
            .collect();
        let gen_cpu = CpuMeter::start(Proc::Current, self.ticks_per_sec);
        let steal = StealMeter::start();
        let outcome = self.drive(phase.load, phase.duration, &mut call).await;
        let steal = steal.finish();
        let generator_cpu = gen_cpu.finish();
        let sut_cpu: Vec<Option<f64>> = sut_cpu.into_iter().map(CpuMeter::finish).collect();
        let rss: Vec<Option<u64>> = rss.into_iter().map(RssSampler::finish).collect();

        let mut m = Measurement::from_outcome(
            scenario,
            phase.load,
            side,
            target,
            run,
            phase.duration.as_secs_f64(),
            &outcome,
        );
        m.sut_cpu = sut_cpu.iter().copied().sum();
        if sut_cpu.len() > 1 {
            m.sut_cpu_each = sut_cpu;
        }
        m.generator_cpu = generator_cpu;
        m.sut_rss_max_kib = rss.into_iter().sum();
        m.steal = steal;
        self.measurements.push(m);
        let last = self.measurements.len() - 1;
        &self.measurements[last]
    }

    async fn drive<F, Fut, E>(
        &self,
        load: Load,
        duration: Duration,
        call: &mut F,
    ) -> load::LoadOutcome
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        match load {
            Load::Open { rate } => {
                load::open_loop(
                    OpenLoop {
                        rate,
                        duration,
                        max_in_flight: self.max_in_flight,
                    },
                    call,
                )
                .await
            }
            Load::Closed { concurrency } => {
                load::closed_loop(
                    ClosedLoop {
                        concurrency,
                        duration,
                    },
                    call,
                )
                .await
            }
        }
    }
}

/// A session's measurements with what is computed from them.
#[derive(Debug, Clone)]
pub struct Results {
    /// Every run, in the order measured.
    pub measurements: Vec<Measurement>,
    /// Runs aggregated per scenario, load and side.
    pub summaries: Vec<Summary>,
    /// Candidate against baseline, paired by run.
    pub comparisons: Vec<Comparison>,
}

/// Everything a benchmark writes to its JSON result file.
#[derive(Debug, Serialize)]
pub struct Report<C: Serialize, X: Serialize> {
    /// Benchmark name (also the file name).
    pub name: String,
    /// Seconds since the Unix epoch when the report was written.
    pub unix_time: u64,
    /// Label of the baseline SUT.
    pub baseline: String,
    /// Label of the candidate SUT.
    pub candidate: String,
    /// Benchmark configuration as run.
    pub config: C,
    /// Cores the generator was allowed to use (`Cpus_allowed_list`).
    pub generator_cpus: String,
    /// Cores the SUTs were pinned to, if any.
    pub sut_core: Option<usize>,
    /// Every run, in the order measured.
    pub measurements: Vec<Measurement>,
    /// Runs aggregated per scenario, load and side.
    pub summaries: Vec<Summary>,
    /// Candidate against baseline, paired by run.
    pub comparisons: Vec<Comparison>,
    /// Benchmark-specific extras (RSS series, target checks, ...).
    pub extra: X,
}

impl<C: Serialize, X: Serialize> Report<C, X> {
    /// The report `name` of `results`, written now: `baseline` against `candidate`, with
    /// the generator on `generator_cpus` and the SUTs pinned as `pinning` says.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        baseline: &str,
        candidate: &str,
        config: C,
        generator_cpus: String,
        pinning: Pinning,
        results: Results,
        extra: X,
    ) -> Self {
        Self {
            name: name.to_owned(),
            unix_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            baseline: baseline.to_owned(),
            candidate: candidate.to_owned(),
            config,
            generator_cpus,
            sut_core: pinning.sut_core(),
            measurements: results.measurements,
            summaries: results.summaries,
            comparisons: results.comparisons,
            extra,
        }
    }
}

/// Per-run series kept by most benchmarks next to the load measurements.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessSeries {
    /// RSS after startup, before any load, KiB.
    pub idle_rss_kib: Series,
    /// Time from spawn to ready, milliseconds.
    pub startup_ms: Series,
}
