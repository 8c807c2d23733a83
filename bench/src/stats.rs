//! Per-run measurements and their aggregation over runs: medians, spreads,
//! and paired comparisons against the baseline.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{Load, LoadOutcome};

/// Which side of the comparison a measurement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The reference measured in the same session (e.g. a bare tonic server).
    Baseline,
    /// The system being evaluated (e.g. Plinth).
    Candidate,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value recorded.
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles off `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One measured run of one scenario at one load against one SUT.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Scenario name, e.g. `SayHello`.
    pub scenario: String,
    /// Offered load.
    pub load: Load,
    /// Baseline or candidate.
    pub side: Side,
    /// SUT label.
    pub target: String,
    /// Run number, from 1.
    pub run: u32,
    /// Configured measurement length in seconds.
    pub duration_secs: f64,
    /// Calls started.
    pub started: u64,
    /// Calls completed successfully.
    pub completed: u64,
    /// Calls that failed or timed out.
    pub errors: u64,
    /// Open loop: calls never started because the in-flight bound was hit.
    pub dropped: u64,
    /// First error message, if any.
    pub first_error: Option<String>,
    /// Achieved successful calls per second.
    pub rps: f64,
    /// Latency in microseconds (open loop: from the intended send time).
    pub latency_us: Percentiles,
    /// Open loop: how late calls were sent relative to schedule, µs.
    pub send_lag_us: Option<Percentiles>,
    /// Largest SUT RSS sampled during the run, KiB.
    pub sut_rss_max_kib: Option<u64>,
    /// SUT CPU use during the run, in cores (of all its processes).
    pub sut_cpu: Option<f64>,
    /// A SUT of several processes: each one's CPU use during the run, in
    /// cores, in the order measured (empty for a single process).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sut_cpu_each: Vec<Option<f64>>,
    /// Load generator CPU use during the run, in cores.
    pub generator_cpu: Option<f64>,
    /// Share of the machine's CPU time stolen by the hypervisor during the
    /// run.
    pub steal: Option<f64>,
}

impl Measurement {
    /// Builds a measurement from a load outcome; the optional statistics are
    /// left empty for the caller to fill in.
    pub fn from_outcome(
        scenario: &str,
        load: Load,
        side: Side,
        target: &str,
        run: u32,
        duration_secs: f64,
        outcome: &LoadOutcome,
    ) -> Self {
        Self {
            scenario: scenario.to_owned(),
            load,
            side,
            target: target.to_owned(),
            run,
            duration_secs,
            started: outcome.started,
            completed: outcome.completed,
            errors: outcome.errors,
            dropped: outcome.dropped,
            first_error: outcome.first_error.clone(),
            rps: outcome.rps(),
            latency_us: Percentiles::of(&outcome.histogram),
            send_lag_us: match load {
                Load::Open { .. } => Some(Percentiles::of(&outcome.send_lag)),
                Load::Closed { .. } => None,
            },
            sut_rss_max_kib: None,
            sut_cpu: None,
            sut_cpu_each: Vec::new(),
            generator_cpu: None,
            steal: None,
        }
    }
}

/// Median and range of a quantity over runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`, or `None` if there are none (NaNs and
    /// infinities are ignored).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// A quantity read off a [`Measurement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Achieved requests per second.
    Rps,
    /// Median latency, µs.
    P50,
    /// 90th percentile latency, µs.
    P90,
    /// 99th percentile latency, µs.
    P99,
    /// 99.9th percentile latency, µs.
    P999,
    /// Maximum latency, µs.
    Max,
}

impl Metric {
    /// All metrics, in table order.
    pub const ALL: [Metric; 6] = [
        Metric::Rps,
        Metric::P50,
        Metric::P90,
        Metric::P99,
        Metric::P999,
        Metric::Max,
    ];

    /// Column title.
    pub fn title(self) -> &'static str {
        match self {
            Metric::Rps => "rps",
            Metric::P50 => "p50 µs",
            Metric::P90 => "p90 µs",
            Metric::P99 => "p99 µs",
            Metric::P999 => "p99.9 µs",
            Metric::Max => "max µs",
        }
    }

    /// The value in `m`.
    pub fn value(self, m: &Measurement) -> f64 {
        let l = &m.latency_us;
        match self {
            Metric::Rps => m.rps,
            Metric::P50 => l.p50 as f64,
            Metric::P90 => l.p90 as f64,
            Metric::P99 => l.p99 as f64,
            Metric::P999 => l.p999 as f64,
            Metric::Max => l.max as f64,
        }
    }
}

/// The runs of one scenario at one load against one side, aggregated.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Offered load.
    pub load: Load,
    /// Baseline or candidate.
    pub side: Side,
    /// SUT label.
    pub target: String,
    /// Number of runs.
    pub runs: usize,
    /// Errors over all runs.
    pub errors: u64,
    /// Dropped calls over all runs.
    pub dropped: u64,
    /// Achieved rps.
    pub rps: Spread,
    /// Latency percentiles, µs.
    pub p50_us: Spread,
    /// 90th percentile, µs.
    pub p90_us: Spread,
    /// 99th percentile, µs.
    pub p99_us: Spread,
    /// 99.9th percentile, µs.
    pub p999_us: Spread,
    /// Maximum, µs.
    pub max_us: Spread,
    /// SUT CPU use, cores.
    pub sut_cpu: Option<Spread>,
    /// Generator CPU use, cores.
    pub generator_cpu: Option<Spread>,
    /// Peak SUT RSS, KiB.
    pub sut_rss_max_kib: Option<Spread>,
    /// Open loop: p99 of the send lag, µs.
    pub send_lag_p99_us: Option<Spread>,
    /// Hypervisor steal share.
    pub steal: Option<Spread>,
}

impl Summary {
    /// The spread of `metric`.
    pub fn metric(&self, metric: Metric) -> Spread {
        match metric {
            Metric::Rps => self.rps,
            Metric::P50 => self.p50_us,
            Metric::P90 => self.p90_us,
            Metric::P99 => self.p99_us,
            Metric::P999 => self.p999_us,
            Metric::Max => self.max_us,
        }
    }
}

/// Candidate against one baseline for one scenario at one load, paired by
/// run (run *i* of the candidate against run *i* of the baseline, which were
/// measured back to back).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// Offered load.
    pub load: Load,
    /// Label of the baseline compared with (a scenario may have several).
    pub baseline: String,
    /// candidate / baseline achieved rps.
    pub rps_ratio: Option<Spread>,
    /// candidate / baseline p50.
    pub p50_ratio: Option<Spread>,
    /// candidate / baseline p99.
    pub p99_ratio: Option<Spread>,
    /// candidate − baseline p50, µs.
    pub p50_added_us: Option<Spread>,
    /// candidate − baseline p99, µs.
    pub p99_added_us: Option<Spread>,
}

/// Per-run values of a quantity that is not a load measurement (e.g. idle
/// RSS), for both sides.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// `(run, value)` of the baseline.
    pub baseline: Vec<(u32, f64)>,
    /// `(run, value)` of the candidate.
    pub candidate: Vec<(u32, f64)>,
}

impl Series {
    /// Adds the value of `side` in `run`.
    pub fn push(&mut self, side: Side, run: u32, value: f64) {
        match side {
            Side::Baseline => self.baseline.push((run, value)),
            Side::Candidate => self.candidate.push((run, value)),
        }
    }

    /// Raises the value of `side` in `run` to `value` (adds it if there is
    /// none yet): for maxima over several measurements of a run.
    pub fn keep_max(&mut self, side: Side, run: u32, value: f64) {
        let values = match side {
            Side::Baseline => &mut self.baseline,
            Side::Candidate => &mut self.candidate,
        };
        match values.iter_mut().find(|(r, _)| *r == run) {
            Some((_, v)) => *v = v.max(value),
            None => values.push((run, value)),
        }
    }

    /// Spread of one side.
    pub fn spread(&self, side: Side) -> Option<Spread> {
        let values = match side {
            Side::Baseline => &self.baseline,
            Side::Candidate => &self.candidate,
        };
        Spread::of(values.iter().map(|(_, v)| *v))
    }

    /// Spread of candidate / baseline, paired by run.
    pub fn ratio(&self) -> Option<Spread> {
        Spread::of(pair(&self.baseline, &self.candidate).map(|(b, c)| c / b))
    }
}

fn pair<'a>(
    baseline: &'a [(u32, f64)],
    candidate: &'a [(u32, f64)],
) -> impl Iterator<Item = (f64, f64)> + 'a {
    baseline.iter().filter_map(move |(run, b)| {
        candidate
            .iter()
            .find(|(r, _)| r == run)
            .map(|(_, c)| (*b, *c))
    })
}

/// Aggregates `measurements` by (scenario, load, side, target), in order of
/// first appearance.
pub fn summarize(measurements: &[Measurement]) -> Vec<Summary> {
    groups(measurements, |m| {
        (m.scenario.clone(), m.load, m.side, m.target.clone())
    })
    .into_iter()
    .filter_map(|group| {
        let first = group.first()?;
        let spread = |f: &dyn Fn(&Measurement) -> f64| Spread::of(group.iter().map(|m| f(m)));
        let opt =
            |f: &dyn Fn(&Measurement) -> Option<f64>| Spread::of(group.iter().filter_map(|m| f(m)));
        Some(Summary {
            scenario: first.scenario.clone(),
            load: first.load,
            side: first.side,
            target: first.target.clone(),
            runs: group.len(),
            errors: group.iter().map(|m| m.errors).sum(),
            dropped: group.iter().map(|m| m.dropped).sum(),
            rps: spread(&|m| Metric::Rps.value(m))?,
            p50_us: spread(&|m| Metric::P50.value(m))?,
            p90_us: spread(&|m| Metric::P90.value(m))?,
            p99_us: spread(&|m| Metric::P99.value(m))?,
            p999_us: spread(&|m| Metric::P999.value(m))?,
            max_us: spread(&|m| Metric::Max.value(m))?,
            sut_cpu: opt(&|m| m.sut_cpu),
            generator_cpu: opt(&|m| m.generator_cpu),
            sut_rss_max_kib: opt(&|m| m.sut_rss_max_kib.map(|k| k as f64)),
            send_lag_p99_us: opt(&|m| m.send_lag_us.map(|l| l.p99 as f64)),
            steal: opt(&|m| m.steal),
        })
    })
    .collect()
}

/// Pairs candidate and baseline runs for every (scenario, load) measured on
/// both sides: one comparison per baseline target, in order of first
/// appearance.
pub fn compare(measurements: &[Measurement]) -> Vec<Comparison> {
    groups(measurements, |m| (m.scenario.clone(), m.load))
        .into_iter()
        .flat_map(|group| {
            let candidate: Vec<&Measurement> = group
                .iter()
                .copied()
                .filter(|m| m.side == Side::Candidate)
                .collect();
            if candidate.is_empty() {
                return Vec::new();
            }
            groups(
                group.iter().copied().filter(|m| m.side == Side::Baseline),
                |m| m.target.clone(),
            )
            .into_iter()
            .filter_map(|baseline| pair_runs(&baseline, &candidate))
            .collect()
        })
        .collect()
}

/// The candidate's runs against one baseline's, paired by run.
fn pair_runs(baseline: &[&Measurement], candidate: &[&Measurement]) -> Option<Comparison> {
    let first = baseline.first()?;
    let runs = |ms: &[&Measurement], metric: Metric| -> Vec<(u32, f64)> {
        ms.iter().map(|m| (m.run, metric.value(m))).collect()
    };
    let paired = |metric: Metric, f: fn(f64, f64) -> f64| {
        let b = runs(baseline, metric);
        let c = runs(candidate, metric);
        Spread::of(pair(&b, &c).map(|(b, c)| f(b, c)))
    };
    let ratio = |b: f64, c: f64| if b > 0.0 { c / b } else { f64::NAN };
    let added = |b: f64, c: f64| c - b;
    Some(Comparison {
        scenario: first.scenario.clone(),
        load: first.load,
        baseline: first.target.clone(),
        rps_ratio: paired(Metric::Rps, ratio),
        p50_ratio: paired(Metric::P50, ratio),
        p99_ratio: paired(Metric::P99, ratio),
        p50_added_us: paired(Metric::P50, added),
        p99_added_us: paired(Metric::P99, added),
    })
}

/// Groups measurements by `key`, keeping the order in which keys first
/// appear.
fn groups<'a, K: Ord>(
    measurements: impl IntoIterator<Item = &'a Measurement>,
    key: impl Fn(&Measurement) -> K,
) -> Vec<Vec<&'a Measurement>> {
    let mut order: BTreeMap<K, usize> = BTreeMap::new();
    let mut out: Vec<Vec<&Measurement>> = Vec::new();
    for m in measurements {
        let next = out.len();
        let idx = *order.entry(key(m)).or_insert(next);
        if idx == next {
            out.push(Vec::new());
        }
        out[idx].push(m);
    }
    out
}

/// Candidate − baseline latency per scenario and load, µs, paired by run: what the
/// candidate adds on top of the baseline it was measured next to.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    /// The scenario.
    pub scenario: String,
    /// The load level.
    pub load: Load,
    /// Added p50 over the runs.
    pub p50_us: Option<Spread>,
    /// Added p90 over the runs.
    pub p90_us: Option<Spread>,
    /// Added p99 over the runs.
    pub p99_us: Option<Spread>,
}

/// [`Added`] latency for every scenario and load the candidate was measured at, pairing
/// each candidate run with the baseline run of the same number.
pub fn added_latency(measurements: &[Measurement]) -> Vec<Added> {
    let mut out: Vec<Added> = Vec::new();
    for m in measurements.iter().filter(|m| m.side == Side::Candidate) {
        if out
            .iter()
            .any(|a| a.scenario == m.scenario && a.load == m.load)
        {
            continue;
        }
        let pairs: Vec<(&Measurement, &Measurement)> = measurements
            .iter()
            .filter(|c| c.side == Side::Candidate && c.scenario == m.scenario && c.load == m.load)
            .filter_map(|c| {
                measurements
                    .iter()
                    .find(|b| {
                        b.side == Side::Baseline
                            && b.scenario == c.scenario
                            && b.load == c.load
                            && b.run == c.run
                    })
                    .map(|b| (b, c))
            })
            .collect();
        let diff = |f: fn(&Measurement) -> u64| {
            Spread::of(pairs.iter().map(|(b, c)| f(c) as f64 - f(b) as f64))
        };
        out.push(Added {
            scenario: m.scenario.clone(),
            load: m.load,
            p50_us: diff(|m| m.latency_us.p50),
            p90_us: diff(|m| m.latency_us.p90),
            p99_us: diff(|m| m.latency_us.p99),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_odd_even() {
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of([4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Spread::of([]).is_none());
    }

    fn m(side: Side, run: u32, rps: f64, p99: u64) -> Measurement {
        on(side, "t", run, rps, p99)
    }

    fn on(side: Side, target: &str, run: u32, rps: f64, p99: u64) -> Measurement {
        let mut m = Measurement::from_outcome(
            "S",
            Load::Open { rate: 10 },
            side,
            target,
            run,
            1.0,
            &crate::load::LoadOutcome {
                histogram: crate::load::new_histogram(),
                send_lag: crate::load::new_histogram(),
                started: 0,
                completed: 0,
                errors: 0,
                dropped: 0,
                elapsed: std::time::Duration::ZERO,
                first_error: None,
            },
        );
        m.rps = rps;
        m.latency_us.p99 = p99;
        m
    }

    #[test]
    fn comparisons_pair_runs() {
        let ms = vec![
            m(Side::Baseline, 1, 100.0, 100),
            m(Side::Candidate, 1, 80.0, 150),
            m(Side::Baseline, 2, 50.0, 200),
            m(Side::Candidate, 2, 50.0, 210),
            m(Side::Baseline, 3, 100.0, 100),
            m(Side::Candidate, 3, 90.0, 130),
        ];
        let summaries = summarize(&ms);
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0].side, Side::Baseline);
        assert_eq!(summaries[0].rps.median, 100.0);
        let c = &compare(&ms)[0];
        let rps = c.rps_ratio.unwrap();
        assert_eq!((rps.median, rps.min), (0.9, 0.8));
        let added = c.p99_added_us.unwrap();
        assert_eq!((added.median, added.min), (30.0, 10.0));
        // p50 is 0 on both sides: no meaningful ratio.
        assert!(c.p50_ratio.is_none());
        assert_eq!(c.p50_added_us.unwrap().median, 0.0);
    }

    #[test]
    fn the_candidate_is_compared_with_each_baseline() {
        let ms = vec![
            on(Side::Baseline, "app", 1, 100.0, 100),
            on(Side::Baseline, "haproxy", 1, 50.0, 200),
            on(Side::Candidate, "plinth", 1, 40.0, 260),
            on(Side::Baseline, "app", 2, 100.0, 100),
            on(Side::Baseline, "haproxy", 2, 40.0, 220),
            on(Side::Candidate, "plinth", 2, 40.0, 250),
        ];
        let summaries = summarize(&ms);
        let targets: Vec<&str> = summaries.iter().map(|s| s.target.as_str()).collect();
        assert_eq!(targets, ["app", "haproxy", "plinth"]);
        let comparisons = compare(&ms);
        assert_eq!(comparisons.len(), 2);
        let (app, haproxy) = (&comparisons[0], &comparisons[1]);
        assert_eq!(
            (app.baseline.as_str(), haproxy.baseline.as_str()),
            ("app", "haproxy")
        );
        assert_eq!(app.rps_ratio.unwrap().median, 0.4);
        assert_eq!(haproxy.rps_ratio.unwrap().median, 0.9);
        assert_eq!(haproxy.p99_added_us.unwrap().median, 45.0);
        // Nothing to compare without a candidate.
        assert!(compare(&ms[..2]).is_empty());
    }
}
