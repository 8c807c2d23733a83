//! Density: many distinct functions installed into one Plinth process through its admin
//! API, and what that costs in memory and time.
//!
//! One run starts Plinth (pinned like the servers), reads its RSS, installs `count` distinct
//! binaries of fixture-hello one after the other with `PUT /functions/{id}`, reads its RSS
//! again after a settle, checks that Plinth lists them all and that a sample of them
//! answers on the functions listener, and stops it. The first run starts with an empty
//! cache of compiled code, so every install compiles; the later runs install the same
//! binaries over the cache the first filled, as Plinth does after a restart (compiling a
//! thousand binaries takes minutes, reading them from the cache seconds).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use plinth_bench::report::{markdown_table, megabytes, num, opt_spread};
use plinth_bench::{RssSampler, Spread, Sut, SutSpec};
use serde::Serialize;

use super::binaries::{distinct, quantile};
use crate::{Hello, HttpClient, admin_install, admin_list_len, http_client, uri};

/// How often RSS is sampled while installing.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// What one density run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DensityRun {
    /// Distinct functions installed.
    pub(crate) functions: usize,
    /// Whether the functions were read from the cache (a previous run compiled them).
    pub(crate) from_cache: bool,
    /// Size of each binary, bytes.
    pub(crate) binary_bytes: usize,
    /// Plinth's RSS after startup, before any install, KiB.
    pub(crate) rss_before_kib: u64,
    /// The largest RSS sampled while installing, KiB.
    pub(crate) rss_peak_kib: Option<u64>,
    /// RSS once every function is installed (after a settle), KiB.
    pub(crate) rss_after_install_kib: u64,
    /// What the RSS after install is made of (`RssAnon`, `RssFile`, `RssShmem`), KiB.
    pub(crate) rss_after_install_parts: Option<RssParts>,
    /// RSS after the sample of functions has answered, KiB.
    pub(crate) rss_after_calls_kib: u64,
    /// Each install's `compileMs` as the admin API reports it.
    pub(crate) compile_ms: Vec<f64>,
    /// Each install's `loadMs` as the admin API reports it.
    pub(crate) load_ms: Vec<f64>,
    /// Each `PUT /functions/{id}` as the client sees it, ms.
    pub(crate) put_ms: Vec<f64>,
    /// From the first install's request to the last one's answer, s.
    pub(crate) install_wall_secs: f64,
    /// Functions `GET /functions` lists afterwards.
    pub(crate) listed: usize,
    /// Ids of the functions called (each answered correctly).
    pub(crate) answered: Vec<String>,
}

/// The parts of a process's RSS, KiB: anonymous memory (heap, stacks, instance memories),
/// file pages (the executable, and compiled code mapped from the cache) and shared memory
/// (memfd-backed images of linear memories).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RssParts {
    pub(crate) anon_kib: u64,
    pub(crate) file_kib: u64,
    pub(crate) shmem_kib: u64,
}

impl RssParts {
    /// Reads `/proc/<pid>/status`; `None` where the kernel does not break RSS down.
    fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(':')?.trim();
                value
                    .strip_suffix("kB")
                    .unwrap_or(value)
                    .trim()
                    .parse()
                    .ok()
            })
        };
        Some(Self {
            anon_kib: field("RssAnon")?,
            file_kib: field("RssFile")?,
            shmem_kib: field("RssShmem")?,
        })
    }
}

/// The id of the `i`th density function.
fn id(i: usize) -> String {
    format!("density-{i}")
}

/// `n` indices spread evenly over `0..count`, first and last included.
fn sample(count: usize, n: usize) -> Vec<usize> {
    match (count, n) {
        (0, _) | (_, 0) => Vec::new(),
        (_, 1) => vec![0],
        _ => {
            let n = n.min(count);
            let mut v: Vec<usize> = (0..n).map(|k| k * (count - 1) / (n - 1)).collect();
            v.dedup();
            v
        }
    }
}

/// One density run: starts `spec` pinned to `core`, installs `count` distinct copies of
/// `fixture` (`tag` makes them distinct from other invocations'), calls `checks` of them.
/// With `from_cache`, `spec`'s cache holds them already (an earlier run compiled them).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    spec: &SutSpec,
    core: Option<usize>,
    fixture: &[u8],
    count: usize,
    checks: usize,
    settle: Duration,
    tag: &str,
    from_cache: bool,
) -> anyhow::Result<DensityRun> {
    let mut plinth = Sut::start(spec, core)?;
    std::thread::sleep(settle);
    let rss_before_kib = plinth.proc().rss_kib()?;
    let admin = plinth
        .listener("admin")
        .context("Plinth announced no admin listener")?;
    let ingress = plinth.addr();
    let proc = plinth.proc();
    let plinth_pid = plinth.pid();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client: HttpClient = http_client();
    let mut out = DensityRun {
        functions: count,
        from_cache,
        binary_bytes: fixture.len(),
        rss_before_kib,
        rss_peak_kib: None,
        rss_after_install_kib: 0,
        rss_after_install_parts: None,
        rss_after_calls_kib: 0,
        compile_ms: Vec::with_capacity(count),
        load_ms: Vec::with_capacity(count),
        put_ms: Vec::with_capacity(count),
        install_wall_secs: 0.0,
        listed: 0,
        answered: Vec::new(),
    };
    let result = rt.block_on(async {
        let sampler = RssSampler::start(proc, RSS_SAMPLE_EVERY);
        let started = Instant::now();
        for i in 0..count {
            let bytes = distinct(fixture, &format!("density-{tag}-{i}"));
            out.binary_bytes = bytes.len();
            let put = Instant::now();
            let info = admin_install(&client, admin, &id(i), None, bytes).await?;
            out.put_ms.push(put.elapsed().as_secs_f64() * 1e3);
            ensure!(
                info.compiled_from_cache == from_cache,
                "{}: compiledFromCache is {}, expected {from_cache} (the cache was {})",
                id(i),
                info.compiled_from_cache,
                if from_cache {
                    "filled by the first run"
                } else {
                    "empty: are the binaries distinct?"
                }
            );
            out.compile_ms.push(info.compile_ms);
            out.load_ms.push(info.load_ms);
            if (i + 1) % 100 == 0 || i + 1 == count {
                eprintln!(
                    "  density: {}/{count} installed, RSS {}",
                    i + 1,
                    proc.rss_kib()
                        .map_or("?".into(), |kib| megabytes(kib as f64))
                );
            }
        }
        out.install_wall_secs = started.elapsed().as_secs_f64();
        out.rss_peak_kib = sampler.finish();
        tokio::time::sleep(settle).await;
        out.rss_after_install_kib = proc.rss_kib()?;
        out.rss_after_install_parts = RssParts::of(plinth_pid);
        out.listed = admin_list_len(&client, admin).await?;
        ensure!(
            out.listed == count,
            "Plinth lists {} functions after {count} installs",
            out.listed
        );
        for i in sample(count, checks) {
            let call = Hello::new(client.clone(), uri(ingress, "/")?, Some(&id(i)))?;
            call.check(&format!("plinth {}", id(i))).await?;
            out.answered.push(id(i));
        }
        out.rss_after_calls_kib = proc.rss_kib()?;
        anyhow::Ok(())
    });
    drop(rt);
    if let Err(e) = result {
        let alive = plinth.check_alive();
        let e = match alive {
            Ok(()) => e.context(format!("Plinth's last output:\n{}", plinth.log_tail())),
            Err(exited) => e.context(format!("{exited:#}")),
        };
        plinth.stop_or_warn();
        return Err(e);
    }
    plinth.stop_or_warn();
    Ok(out)
}

/// The RSS after install over the runs whose functions came from the cache (`cached`) or
/// were compiled, KiB: the density target's figure.
pub(crate) fn rss_after_install(runs: &[DensityRun], cached: bool) -> Option<Spread> {
    Spread::of(
        runs.iter()
            .filter(|r| r.from_cache == cached)
            .map(|r| r.rss_after_install_kib as f64),
    )
}

/// The figures of the density table for `runs`, in the order of [`ROWS`].
fn column(runs: &[&DensityRun]) -> Vec<String> {
    let of = |f: &dyn Fn(&DensityRun) -> Option<f64>| Spread::of(runs.iter().filter_map(|r| f(r)));
    let mb = |s: Option<Spread>| opt_spread(s.as_ref(), megabytes);
    let ms = |x: f64| format!("{} ms", num(x));
    let secs = |x: f64| format!("{} s", num(x));
    let kb = |x: f64| format!("{} kB", num(x * 1.024));
    let total = |v: &[f64]| v.iter().sum::<f64>() / 1e3;
    let p50_p99 = |values: fn(&DensityRun) -> &[f64]| {
        format!(
            "{} / {}",
            opt_spread(of(&|r| quantile(values(r), 0.5)).as_ref(), ms),
            opt_spread(of(&|r| quantile(values(r), 0.99)).as_ref(), ms)
        )
    };
    let part =
        |f: fn(&RssParts) -> u64| mb(of(&|r| r.rss_after_install_parts.map(|p| f(&p) as f64)));
    vec![
        mb(of(&|r| Some(r.rss_before_kib as f64))),
        mb(of(&|r| Some(r.rss_after_install_kib as f64))),
        opt_spread(
            of(&|r| {
                Some(
                    r.rss_after_install_kib.saturating_sub(r.rss_before_kib) as f64
                        / r.functions.max(1) as f64,
                )
            })
            .as_ref(),
            kb,
        ),
        format!(
            "{} / {} / {}",
            part(|p| p.anon_kib),
            part(|p| p.file_kib),
            part(|p| p.shmem_kib)
        ),
        mb(of(&|r| r.rss_peak_kib.map(|k| k as f64))),
        mb(of(&|r| Some(r.rss_after_calls_kib as f64))),
        opt_spread(of(&|r| Some(total(&r.compile_ms))).as_ref(), secs),
        p50_p99(|r| &r.compile_ms),
        opt_spread(of(&|r| Some(total(&r.load_ms))).as_ref(), secs),
        p50_p99(|r| &r.load_ms),
        p50_p99(|r| &r.put_ms),
        opt_spread(of(&|r| Some(r.install_wall_secs)).as_ref(), secs),
    ]
}

/// The rows of the density table.
const ROWS: [&str; 12] = [
    "Plinth RSS before installing",
    "**Plinth RSS with every function installed**",
    "… per function: (after − before) / n",
    "… anonymous / file-backed / shared (RssAnon / RssFile / RssShmem)",
    "largest RSS while installing",
    "RSS after the sample answered",
    "`compileMs`, total (compiling, or reading the cache)",
    "`compileMs` per function, p50 / p99",
    "`loadMs`, total (linking)",
    "`loadMs` per function, p50 / p99",
    "`PUT /functions/{id}` per function, p50 / p99 (client)",
    "all installs, wall time",
];

/// The "Density" section: one row per figure, a column for the run that compiled every
/// function and one for the runs that read them from the cache, each cell median
/// (min..max) over its runs.
pub(crate) fn section(runs: &[DensityRun]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let compiled: Vec<&DensityRun> = runs.iter().filter(|r| !r.from_cache).collect();
    let cached: Vec<&DensityRun> = runs.iter().filter(|r| r.from_cache).collect();
    let mut headers = vec!["measure".to_owned()];
    let mut columns = Vec::new();
    for (group, label) in [
        (&compiled, "empty cache: compiled"),
        (&cached, "warm cache: as after a restart"),
    ] {
        if !group.is_empty() {
            headers.push(format!("{label} ({} run(s))", group.len()));
            columns.push(column(group));
        }
    }
    let rows: Vec<Vec<String>> = ROWS
        .iter()
        .enumerate()
        .map(|(i, label)| {
            std::iter::once((*label).to_owned())
                .chain(columns.iter().map(|c| c[i].clone()))
                .collect()
        })
        .collect();
    let mut out = format!(
        "### Density ({} distinct functions in one Plinth)\n\n",
        first.functions
    );
    let _ = writeln!(
        out,
        "Each run installs {} distinct {}-byte binaries of fixture-hello through `PUT /functions/{{id}}` into a \
         fresh Plinth, one at a time. The first run starts with an empty cache of compiled code, so each binary is \
         compiled; the later ones start Plinth over the cache the first filled, as after a restart, so each is read \
         from it. Every run, Plinth listed all of them afterwards and those called ({}) answered correctly. Cells \
         are median (min..max) over the runs of their column.\n",
        first.functions,
        first.binary_bytes,
        first.answered.join(", "),
    );
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    out.push_str(&markdown_table(&headers, &rows));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_evenly() {
        assert_eq!(sample(1000, 5), [0, 249, 499, 749, 999]);
        assert_eq!(sample(3, 10), [0, 1, 2]);
        assert_eq!(sample(10, 1), [0]);
        assert!(sample(0, 3).is_empty());
        assert!(sample(5, 0).is_empty());
    }
}
