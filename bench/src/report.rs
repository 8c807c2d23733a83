//! Output: Markdown tables on stdout and JSON files under `bench/results/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::RunConfig;
use crate::load::Load;
use crate::pin::Pinning;
use crate::session::{ProcessSeries, Report};
use crate::stats::{Comparison, Measurement, Metric, Series, Side, Spread, Summary};

/// Default directory for JSON results: `bench/results` in this crate.
pub fn default_results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}

/// Writes `value` as pretty JSON to `<dir>/<name>.json`, creating `dir`.
pub fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let json = serde_json::to_vec_pretty(value)?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Renders a Markdown table with padded columns.
pub fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count().max(3)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("|");
        for (i, w) in widths.iter().enumerate().take(cols) {
            let cell = cells.next().unwrap_or("");
            let pad = w.saturating_sub(cell.chars().count());
            // Numbers read better right-aligned; the first column is a label.
            if i == 0 {
                let _ = write!(s, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{cell} |", " ".repeat(pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&mut headers.iter().copied());
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if i == 0 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {}: |", &dashes[1..]);
        }
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// Formats a number with precision suited to its size.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `median (min..max)`, or just the value when there is one run.
pub fn spread(s: &Spread) -> String {
    spread_with(s, num)
}

/// Like [`spread`] with a custom number format.
pub fn spread_with(s: &Spread, f: impl Fn(f64) -> String) -> String {
    if s.n <= 1 || s.min == s.max {
        f(s.median)
    } else {
        format!("{} ({}..{})", f(s.median), f(s.min), f(s.max))
    }
}

/// Like [`spread_with`], `-` for `None`.
pub fn opt_spread(s: Option<&Spread>, f: impl Fn(f64) -> String) -> String {
    s.map_or_else(|| "-".to_owned(), |s| spread_with(s, f))
}

/// A ratio as `0.93×`.
pub fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

/// A signed difference, e.g. `+12`.
pub fn signed(x: f64) -> String {
    if x >= 0.0 {
        format!("+{}", num(x))
    } else {
        num(x)
    }
}

/// KiB as decimal megabytes, e.g. `9.3 MB`.
pub fn megabytes(kib: f64) -> String {
    format!("{:.1} MB", kib * 1024.0 / 1e6)
}

/// One results table per load level: for each scenario a row per baseline,
/// a candidate row and a ratio row per baseline (candidate / baseline,
/// paired by run; labelled `ratio vs <baseline>` when there are several).
pub fn load_tables(
    loads: &[(Load, String)],
    summaries: &[Summary],
    comparisons: &[Comparison],
) -> String {
    let mut out = String::new();
    let mut headers = vec!["scenario", "target"];
    headers.extend(Metric::ALL.iter().map(|m| m.title()));
    headers.extend(["send lag p99 µs", "SUT cpu", "gen cpu", "dropped", "errors"]);
    for (load, heading) in loads {
        let mut rows = Vec::new();
        for s in summaries.iter().filter(|s| s.load == *load) {
            let mut row = vec![s.scenario.clone(), s.target.clone()];
            row.extend(Metric::ALL.iter().map(|m| spread(&s.metric(*m))));
            row.push(s.send_lag_p99_us.as_ref().map_or("-".into(), spread));
            row.push(s.sut_cpu.as_ref().map_or("-".into(), spread));
            row.push(s.generator_cpu.as_ref().map_or("-".into(), spread));
            row.push(s.dropped.to_string());
            row.push(s.errors.to_string());
            rows.push(row);
            if s.side != Side::Candidate {
                continue;
            }
            let against: Vec<&Comparison> = comparisons
                .iter()
                .filter(|c| c.load == *load && c.scenario == s.scenario)
                .collect();
            for c in &against {
                // With several baselines, say which one each ratio is over.
                let label = match against.len() {
                    1 => "ratio".to_owned(),
                    _ => format!("ratio vs {}", c.baseline),
                };
                let mut row = vec![s.scenario.clone(), label];
                row.push(opt_spread(c.rps_ratio.as_ref(), ratio));
                row.push(opt_spread(c.p50_ratio.as_ref(), ratio));
                row.push(String::new());
                row.push(opt_spread(c.p99_ratio.as_ref(), ratio));
                rows.push(row);
            }
        }
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "### {heading}\n");
        out.push_str(&markdown_table(&headers, &rows));
        out.push('\n');
    }
    out
}

/// A target to meet, evaluated on medians, or a figure shown next to the
/// targets for information only.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The measured value, formatted.
    pub value: String,
    /// The limit, formatted (`-` for information only).
    pub target: String,
    /// Whether the median meets the limit (always true for information
    /// only: there is no limit to miss).
    pub pass: bool,
    /// Shown for information, not a target.
    pub informational: bool,
}

impl Check {
    /// Checks the median of `value` with `ok`; a missing value (no
    /// successful calls on a side) fails.
    pub fn of(
        name: String,
        value: Option<&Spread>,
        fmt: fn(f64) -> String,
        target: String,
        ok: impl Fn(f64) -> bool,
    ) -> Self {
        Self {
            name,
            value: opt_spread(value, fmt),
            target,
            pass: value.is_some_and(|v| ok(v.median)),
            informational: false,
        }
    }

    /// The same figure for information only: no limit, never a failure.
    pub fn informational(self) -> Self {
        Self {
            target: "-".into(),
            pass: true,
            informational: true,
            ..self
        }
    }

    /// Added p99 at `load` (candidate − baseline, paired by run) at most
    /// `limit_us`; `baseline` is the label of the baseline compared with.
    pub fn added_p99(
        scenario: &str,
        candidate: &str,
        baseline: &str,
        load: Load,
        comparisons: &[Comparison],
        limit_us: f64,
    ) -> Self {
        let c = find(comparisons, scenario, load, baseline);
        Self::of(
            format!(
                "{scenario}: added p99 at {} ({candidate} − {baseline})",
                load.label()
            ),
            c.and_then(|c| c.p99_added_us.as_ref()),
            |x| format!("{} µs", signed(x)),
            format!("≤ +{limit_us:.0} µs"),
            |v| v <= limit_us,
        )
    }

    /// Throughput at `load` at least `min_ratio` × the baseline's;
    /// `baseline` is the label of the baseline compared with.
    pub fn throughput(
        scenario: &str,
        candidate: &str,
        baseline: &str,
        load: Load,
        comparisons: &[Comparison],
        min_ratio: f64,
    ) -> Self {
        let c = find(comparisons, scenario, load, baseline);
        Self::of(
            format!(
                "{scenario}: throughput {candidate}/{baseline} ({})",
                load.label()
            ),
            c.and_then(|c| c.rps_ratio.as_ref()),
            ratio,
            format!("≥ {min_ratio:.2}×"),
            |v| v >= min_ratio,
        )
    }
}

fn find<'a>(
    comparisons: &'a [Comparison],
    scenario: &str,
    load: Load,
    baseline: &str,
) -> Option<&'a Comparison> {
    comparisons
        .iter()
        .find(|c| c.load == load && c.scenario == scenario && c.baseline == baseline)
}

/// The opening of a benchmark's Markdown report: title, how to read the
/// cells, where things ran, the machine, then the benchmark's own `notes`
/// (one bullet each).
#[allow(clippy::too_many_arguments)]
pub fn header(
    title: &str,
    cfg: &RunConfig,
    baseline: &str,
    candidate: &str,
    pinning: Pinning,
    generator_cpus: &str,
    summaries: &[Summary],
    notes: &[String],
) -> String {
    let mut out = format!("## {title}\n\n");
    let sut_cpus = match pinning {
        Pinning::Pinned { sut, .. } => format!("core {sut}"),
        Pinning::Unpinned => "unpinned".into(),
    };
    let steal = Spread::of(summaries.iter().filter_map(|s| s.steal.map(|st| st.max)));
    let _ = writeln!(
        out,
        "- {} run(s) per cell, baseline and {candidate} measured alternately; cells are median (min..max) over runs; \
         `ratio` rows are {candidate}/{baseline}, paired by run.",
        cfg.runs
    );
    let _ = writeln!(
        out,
        "- Open-loop latency is measured from each call's intended send time (coordinated omission corrected), in µs; \
         `send lag` is how late the generator actually sent, i.e. the generator's and machine's own stalls."
    );
    let _ = writeln!(
        out,
        "- Generator: one thread on CPUs {generator_cpus}; SUTs: {sut_cpus}. CPU columns in cores (the open-loop \
         generator busy-polls, so it shows ~1)."
    );
    let _ = writeln!(
        out,
        "- Machine: {}; hypervisor steal up to {} of CPU time during a run. Revision: {}.",
        cfg.cpu_model.as_deref().unwrap_or("unknown CPU"),
        steal.map_or("?".into(), |s| format!("{:.1}%", s.max * 100.0)),
        cfg.git_revision.as_deref().unwrap_or("unknown"),
    );
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    out.push('\n');
    out
}

/// What a benchmark's Markdown report says besides the figures of its [`Report`].
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    /// The title.
    pub title: &'a str,
    /// The run configuration.
    pub run_cfg: &'a RunConfig,
    /// Where the generator and the SUTs ran.
    pub pinning: Pinning,
    /// The benchmark's notes: a bullet each, after the [`header`]'s own.
    pub notes: &'a [String],
    /// The benchmark's own sections, between the [`load_tables`] and the targets.
    pub sections: &'a [String],
    /// The targets.
    pub checks: &'a [Check],
}

/// The end of a benchmark: prints its Markdown report on stdout (the [`header`], the
/// [`load_tables`], the benchmark's own sections and the [`targets_section`]), then writes
/// `report` as JSON to `<dir>/<name>.json` and prints where.
pub fn finish<C: Serialize, X: Serialize>(
    report: &Report<C, X>,
    text: &Text<'_>,
    dir: &Path,
) -> anyhow::Result<()> {
    print!(
        "{}",
        header(
            text.title,
            text.run_cfg,
            &report.baseline,
            &report.candidate,
            text.pinning,
            &report.generator_cpus,
            &report.summaries,
            text.notes,
        )
    );
    print!(
        "{}",
        load_tables(
            &text.run_cfg.load_headings(),
            &report.summaries,
            &report.comparisons
        )
    );
    for section in text.sections {
        print!("{section}");
    }
    print!("{}", targets_section(text.checks, &report.summaries));
    let path = write_json(dir, &report.name, report)?;
    println!("JSON: {}", path.display());
    Ok(())
}

/// The extras of a benchmark of Plinth against a client in the benchmark process that calls
/// the backend itself (bench-stores, bench-pubsub): that client has no process of its own,
/// so Plinth's cost shows as added latency rather than as ratios of processes.
#[derive(Debug, Serialize)]
pub struct DirectExtra {
    /// Plinth's idle RSS and startup time per run (the direct client has no process of its
    /// own: its side is "baseline" with no values).
    pub process: ProcessSeries,
    /// Added latency (Plinth − direct), µs, per scenario and load.
    pub added: Vec<crate::stats::Added>,
    /// The targets.
    pub checks: Vec<Check>,
    /// The benchmark's notes under the header.
    pub notes: Vec<String>,
}

impl<C: Serialize> Report<C, DirectExtra> {
    /// [`finish`] with the notes and targets of the extras, and the [`added_section`] (its
    /// scenario column headed `scenario_heading`) as the benchmark's own section.
    pub fn finish_direct(
        &self,
        title: &str,
        run_cfg: &RunConfig,
        pinning: Pinning,
        scenario_heading: &str,
        dir: &Path,
    ) -> anyhow::Result<()> {
        let added = added_section(
            &self.extra.added,
            &self.candidate,
            &self.baseline,
            scenario_heading,
        );
        let text = Text {
            title,
            run_cfg,
            pinning,
            notes: &self.extra.notes,
            sections: &[added],
            checks: &self.extra.checks,
        };
        finish(self, &text, dir)
    }
}

/// The extras of a benchmark of two processes (bench-core, bench-dapr): their memory and
/// startup side by side.
#[derive(Debug, Serialize)]
pub struct ProcessExtra {
    /// Idle RSS and startup time per run and side.
    pub process: ProcessSeries,
    /// Per run, the largest RSS sampled during the high-rate runs (of the scenarios the
    /// benchmark compares the two processes on), KiB.
    pub rss_under_load_kib: Series,
    /// The targets.
    pub checks: Vec<Check>,
}

impl<C: Serialize> Report<C, ProcessExtra> {
    /// [`finish`] with the benchmark's `notes`, the targets of the extras, and the
    /// [`process_section`] as the benchmark's own section.
    pub fn finish_process(
        &self,
        title: &str,
        run_cfg: &RunConfig,
        pinning: Pinning,
        notes: &[String],
        dir: &Path,
    ) -> anyhow::Result<()> {
        let process = process_section(
            run_cfg,
            &self.baseline,
            &self.candidate,
            &self.extra.process,
            &self.extra.rss_under_load_kib,
        );
        let text = Text {
            title,
            run_cfg,
            pinning,
            notes,
            sections: &[process],
            checks: &self.extra.checks,
        };
        finish(self, &text, dir)
    }
}

/// `Plinth idle RSS <median>, startup <median> ms.`: the candidate's process figures, for a
/// note.
pub fn plinth_process_note(process: &ProcessSeries) -> String {
    format!(
        "Plinth idle RSS {}, startup {} ms.",
        opt_spread(
            process.idle_rss_kib.spread(Side::Candidate).as_ref(),
            megabytes
        ),
        opt_spread(process.startup_ms.spread(Side::Candidate).as_ref(), num),
    )
}

/// The "Memory and startup" section: idle RSS, RSS under load (the maximum
/// during the high-rate runs) and spawn-to-ready time per side, with ratios.
pub fn process_section(
    cfg: &RunConfig,
    baseline: &str,
    candidate: &str,
    process: &ProcessSeries,
    rss_under_load: &Series,
) -> String {
    let mut rows = Vec::new();
    for (side, label) in [(Side::Baseline, baseline), (Side::Candidate, candidate)] {
        let mb = |s: Option<Spread>| s.map_or("-".into(), |s| spread_with(&s, megabytes));
        rows.push(vec![
            label.to_owned(),
            mb(process.idle_rss_kib.spread(side)),
            mb(rss_under_load.spread(side)),
            process
                .startup_ms
                .spread(side)
                .map_or("-".into(), |s| spread(&s)),
        ]);
    }
    let ratio_of = |s: Option<Spread>| s.map_or("-".into(), |s| spread_with(&s, ratio));
    rows.push(vec![
        "ratio".into(),
        ratio_of(process.idle_rss_kib.ratio()),
        ratio_of(rss_under_load.ratio()),
        ratio_of(process.startup_ms.ratio()),
    ]);
    let under_load = format!("RSS under load (max during {})", cfg.high_load().label());
    format!(
        "### Memory and startup\n\n{}\n",
        markdown_table(
            &[
                "process",
                "idle RSS",
                &under_load,
                "startup ms (spawn to ready)"
            ],
            &rows
        )
    )
}

/// The "Targets" section with PASS/FAIL, and a warning when calls failed or
/// were dropped.
pub fn targets_section(checks: &[Check], summaries: &[Summary]) -> String {
    let mut out = format!("### Targets (informational)\n\n{}\n", checks_table(checks));
    if checks.iter().any(|c| !c.pass) {
        out.push_str(
            "Some targets were missed (see FAIL above); absolute figures on shared machines are indicative only.\n\n",
        );
    }
    let errors: u64 = summaries.iter().map(|s| s.errors + s.dropped).sum();
    if errors > 0 {
        let _ = writeln!(
            out,
            "Warning: {errors} call(s) failed or were dropped; see the errors/dropped columns.\n"
        );
    }
    out
}

/// One progress line (stderr) for a measured run.
pub fn progress_line(m: &Measurement, runs: u32, scenario_width: usize) -> String {
    format!(
        "  run {}/{runs} {:<scenario_width$} {:<13} {:<7} p50 {:>6} µs  p99 {:>6} µs  {:>8.0} rps  dropped {} errors {}{}",
        m.run,
        m.scenario,
        m.load.label(),
        m.target,
        m.latency_us.p50,
        m.latency_us.p99,
        m.rps,
        m.dropped,
        m.errors,
        m.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    )
}

/// Renders checks as a Markdown table with PASS/FAIL.
pub fn checks_table(checks: &[Check]) -> String {
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.value.clone(),
                c.target.clone(),
                match (c.informational, c.pass) {
                    (true, _) => "info".into(),
                    (false, true) => "PASS".into(),
                    (false, false) => "FAIL".into(),
                },
            ]
        })
        .collect();
    markdown_table(
        &["target", "measured (median (min..max))", "limit", "result"],
        &rows,
    )
}

/// The Markdown section of [`crate::stats::Added`] latency: `candidate − baseline`, per
/// scenario (`scenario_heading` names the column) and load.
pub fn added_section(
    added: &[crate::stats::Added],
    candidate: &str,
    baseline: &str,
    scenario_heading: &str,
) -> String {
    let us = |s: &Option<Spread>| opt_spread(s.as_ref(), signed);
    let rows: Vec<Vec<String>> = added
        .iter()
        .map(|a| {
            vec![
                a.scenario.clone(),
                a.load.label(),
                us(&a.p50_us),
                us(&a.p90_us),
                us(&a.p99_us),
            ]
        })
        .collect();
    format!(
        "### Added latency ({candidate} − {baseline}, paired by run)\n\n{}\n",
        markdown_table(
            &[
                scenario_heading,
                "load",
                "added p50 µs",
                "added p90 µs",
                "added p99 µs"
            ],
            &rows
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned() {
        let t = markdown_table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "| a   |  bb |\n| --- | --: |\n| xyz |   1 |\n");
    }

    #[test]
    fn spreads_format() {
        let s = Spread {
            median: 12.34,
            min: 10.0,
            max: 150.0,
            n: 3,
        };
        assert_eq!(spread(&s), "12.3 (10.0..150)");
        assert_eq!(signed(-3.0), "-3.00");
        assert_eq!(megabytes(10_000.0), "10.2 MB");
    }
}
