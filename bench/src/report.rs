//! Output: Markdown tables on stdout and JSON files under `bench/results/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::load::Load;
use crate::stats::{Comparison, Metric, Side, Spread, Summary};

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

/// One results table per load level: for each scenario a baseline row, a
/// candidate row and a ratio row (candidate / baseline, paired by run).
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
            if s.side == Side::Candidate
                && let Some(c) = comparisons
                    .iter()
                    .find(|c| c.load == *load && c.scenario == s.scenario)
            {
                let mut row = vec![s.scenario.clone(), "ratio".into()];
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

/// A target to meet, evaluated on medians.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The measured value, formatted.
    pub value: String,
    /// The limit, formatted.
    pub target: String,
    /// Whether the median meets the limit.
    pub pass: bool,
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
                if c.pass { "PASS".into() } else { "FAIL".into() },
            ]
        })
        .collect();
    markdown_table(
        &["target", "measured (median (min..max))", "limit", "result"],
        &rows,
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
