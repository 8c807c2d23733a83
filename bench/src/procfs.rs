//! Process statistics from `/proc`: resident set size, CPU time, CPU
//! affinity, steal and the CPU model.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A process to read statistics of: a child by pid, or the benchmark itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    /// `/proc/self`.
    Current,
    /// `/proc/<pid>`.
    Pid(u32),
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Proc::Current => format!("/proc/self/{file}"),
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }

    fn status_field(self, name: &str) -> anyhow::Result<String> {
        let path = self.path("status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(':')
                    .map(|v| v.trim().to_owned())
            })
            .with_context(|| format!("{path} has no {name} line"))
    }

    /// Resident set size (`VmRSS`) in KiB.
    pub fn rss_kib(self) -> anyhow::Result<u64> {
        let value = self.status_field("VmRSS")?;
        let kib = value.strip_suffix("kB").unwrap_or(&value).trim();
        kib.parse()
            .with_context(|| format!("unexpected VmRSS value {value:?}"))
    }

    /// The CPUs the process may run on (`Cpus_allowed_list`), e.g. `1` or
    /// `0-1`.
    pub fn cpus_allowed(self) -> anyhow::Result<String> {
        self.status_field("Cpus_allowed_list")
    }

    /// User plus system CPU time consumed so far, in clock ticks.
    pub fn cpu_ticks(self) -> anyhow::Result<u64> {
        let path = self.path("stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name (field 2) may contain spaces; fields are counted
        // from the last ')'. After it come state (3), ..., utime (14), stime (15).
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
            bail!("{path}: too few fields");
        };
        Ok(utime.parse::<u64>()? + stime.parse::<u64>()?)
    }
}

/// Clock ticks per second for [`Proc::cpu_ticks`] (`getconf CLK_TCK`,
/// falling back to the usual 100).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The CPU model (`model name` in `/proc/cpuinfo`).
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_owned())
    })
}

/// Measures the CPU used by a process over an interval, as a fraction of one
/// core (1.0 = one core fully busy).
#[derive(Debug)]
pub struct CpuMeter {
    proc: Proc,
    ticks_per_sec: u64,
    start_ticks: Option<u64>,
    start: Instant,
}

impl CpuMeter {
    /// Starts measuring `proc`.
    pub fn start(proc: Proc, ticks_per_sec: u64) -> Self {
        Self {
            proc,
            ticks_per_sec,
            start_ticks: proc.cpu_ticks().ok(),
            start: Instant::now(),
        }
    }

    /// CPU used since [`CpuMeter::start`]; `None` if `/proc` could not be read.
    pub fn finish(self) -> Option<f64> {
        let elapsed = self.start.elapsed().as_secs_f64();
        let used = self.proc.cpu_ticks().ok()?.checked_sub(self.start_ticks?)?;
        (elapsed > 0.0).then(|| used as f64 / self.ticks_per_sec as f64 / elapsed)
    }
}

/// Measures the share of CPU time the hypervisor stole from this machine
/// over an interval (`steal` in `/proc/stat`), a noise indicator on VMs.
#[derive(Debug)]
pub struct StealMeter {
    start: Option<(u64, u64)>,
}

impl StealMeter {
    /// Starts measuring.
    pub fn start() -> Self {
        Self {
            start: steal_and_total(),
        }
    }

    /// Stolen fraction of all CPU time since [`StealMeter::start`].
    pub fn finish(self) -> Option<f64> {
        let (steal0, total0) = self.start?;
        let (steal1, total1) = steal_and_total()?;
        let total = total1.checked_sub(total0)?;
        (total > 0).then(|| steal1.saturating_sub(steal0) as f64 / total as f64)
    }
}

/// `(steal, total)` ticks from the aggregate `cpu` line of `/proc/stat`.
fn steal_and_total() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]; guest
    // time is already included in user.
    let steal = *ticks.get(7)?;
    let total = ticks.iter().take(8).sum();
    Some((steal, total))
}

/// Samples a process's RSS on a background thread and keeps the maximum.
///
/// A thread rather than a task so that reading `/proc` never stalls the load
/// generator's event loop.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Option<u64>>,
}

impl RssSampler {
    /// Starts sampling `proc` every `every`.
    pub fn start(proc: Proc, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut max = proc.rss_kib().ok();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                if let Ok(kib) = proc.rss_kib() {
                    max = Some(max.map_or(kib, |m| m.max(kib)));
                }
            }
            max
        });
        Self { stop, handle }
    }

    /// Stops sampling and returns the largest RSS seen, in KiB.
    pub fn finish(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stats() {
        assert!(Proc::Current.rss_kib().unwrap() > 0);
        assert!(!Proc::Current.cpus_allowed().unwrap().is_empty());
        Proc::Current.cpu_ticks().unwrap();
        let steal = StealMeter::start();
        std::thread::sleep(Duration::from_millis(20));
        assert!(steal.finish().is_none_or(|s| (0.0..=1.0).contains(&s)));
        let sampler = RssSampler::start(Proc::Current, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(sampler.finish().unwrap() > 0);
    }
}
