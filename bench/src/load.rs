//! Load generators: open loop at a fixed rate and closed loop at a fixed
//! concurrency.
//!
//! Both drive a caller-supplied `FnMut() -> Future` from a single task, so
//! they are meant to run on a `current_thread` Tokio runtime pinned to its own
//! core (see [`crate::pin`]). In-flight calls live in one
//! [`FuturesUnordered`], which keeps the generator free of locks and
//! cross-thread wake-ups.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// Highest latency the histograms track, in microseconds (one hour); larger
/// values are clamped.
const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// How long to wait for calls still in flight after the schedule ends before
/// counting them as timed out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Below this distance to the next send time the open-loop dispatcher
/// busy-polls instead of sleeping: Tokio's timer has millisecond resolution,
/// which would otherwise be charged to every request as queueing delay.
const SPIN_WINDOW: Duration = Duration::from_millis(2);

/// The offered load of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Load {
    /// Open loop: requests are sent on a fixed schedule of `rate` per second,
    /// whether or not earlier ones have completed.
    Open {
        /// Requests per second.
        rate: u64,
    },
    /// Closed loop: `concurrency` callers each send their next request as soon
    /// as the previous one completes; measures maximum throughput.
    Closed {
        /// Number of requests kept in flight.
        concurrency: usize,
    },
}

impl Load {
    /// Short human-readable label, e.g. `1,000 rps` or `closed c=64`.
    pub fn label(&self) -> String {
        match self {
            Load::Open { rate } => format!("{} rps", thousands(*rate)),
            Load::Closed { concurrency } => format!("closed c={concurrency}"),
        }
    }
}

/// Formats an integer with `,` thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parameters of an open-loop run.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Requests per second; must be positive.
    pub rate: u64,
    /// Length of the sending schedule.
    pub duration: Duration,
    /// Upper bound on requests in flight. A request whose send time comes
    /// while the bound is reached is not sent and counts as dropped.
    pub max_in_flight: usize,
}

/// Parameters of a closed-loop run.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    /// Requests kept in flight; must be positive.
    pub concurrency: usize,
    /// How long new requests are started for.
    pub duration: Duration,
}

/// What one load run observed.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Latency of successful calls in microseconds. Open loop: from the
    /// intended send time (corrected for coordinated omission). Closed loop:
    /// from the actual send time.
    pub histogram: Histogram<u64>,
    /// Open loop only: how late each call was actually sent relative to its
    /// intended time, µs. Large values mean the generator itself (or the
    /// machine) stalled; those stalls are included in `histogram`.
    pub send_lag: Histogram<u64>,
    /// Calls started.
    pub started: u64,
    /// Calls that completed successfully.
    pub completed: u64,
    /// Calls that failed or did not finish within the drain timeout.
    pub errors: u64,
    /// Open loop only: scheduled calls never started because
    /// `max_in_flight` calls were outstanding.
    pub dropped: u64,
    /// From the first send time to the last completion.
    pub elapsed: Duration,
    /// First error message seen, for diagnostics.
    pub first_error: Option<String>,
}

impl LoadOutcome {
    fn new() -> Self {
        Self {
            histogram: new_histogram(),
            send_lag: new_histogram(),
            started: 0,
            completed: 0,
            errors: 0,
            dropped: 0,
            elapsed: Duration::ZERO,
            first_error: None,
        }
    }

    /// Successful calls per second over [`LoadOutcome::elapsed`].
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        }
    }

    fn record_lag(&mut self, intended: Instant, now: Instant) {
        self.send_lag
            .saturating_record(micros(now.saturating_duration_since(intended)).max(1));
    }

    fn record<E: std::fmt::Display>(
        &mut self,
        started: Instant,
        done: Instant,
        result: Result<(), E>,
    ) {
        match result {
            Ok(()) => {
                self.completed += 1;
                let us = micros(done.saturating_duration_since(started));
                self.histogram.saturating_record(us.max(1));
            }
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, message: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A histogram covering 1 µs to one hour with three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy `new_with_bounds`' preconditions.
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Runs `call` open loop: the i-th request is due at `start + i / rate` and
/// its latency is measured from that due time, so a stalled server is charged
/// for every request it delayed, not only the one it was busy with
/// (coordinated-omission correction).
pub async fn open_loop<F, Fut, E>(cfg: OpenLoop, mut call: F) -> LoadOutcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut out = LoadOutcome::new();
    let rate = cfg.rate.max(1);
    let total = u64::try_from(cfg.duration.as_nanos() * u128::from(rate) / 1_000_000_000)
        .unwrap_or(u64::MAX);
    let due = |start: Instant, i: u64| {
        start
            + Duration::from_nanos(
                u64::try_from(u128::from(i) * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX),
            )
    };

    let mut in_flight = FuturesUnordered::new();
    let start = Instant::now();
    let mut next = 0u64;
    while next < total {
        let now = Instant::now();
        while next < total && due(start, next) <= now {
            let intended = due(start, next);
            next += 1;
            if in_flight.len() >= cfg.max_in_flight {
                out.dropped += 1;
                continue;
            }
            out.started += 1;
            out.record_lag(intended, now);
            let fut = call();
            in_flight.push(async move {
                let result = fut.await;
                (intended, Instant::now(), result)
            });
        }
        if next >= total {
            break;
        }
        let next_due = due(start, next);
        tokio::select! {
            biased;
            Some((intended, done, result)) = in_flight.next(), if !in_flight.is_empty() => {
                out.record(intended, done, result);
            }
            () = wait_until(next_due) => {}
        }
    }
    drain(&mut in_flight, &mut out).await;
    out.elapsed = Instant::now().saturating_duration_since(start);
    out
}

/// Runs `call` closed loop: keeps `concurrency` calls in flight for
/// `duration`, then waits for the stragglers. Latency is measured from each
/// call's actual start; throughput is the figure of interest.
pub async fn closed_loop<F, Fut, E>(cfg: ClosedLoop, mut call: F) -> LoadOutcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut out = LoadOutcome::new();
    let mut in_flight = FuturesUnordered::new();
    let mut launch = |in_flight: &mut FuturesUnordered<_>, out: &mut LoadOutcome| {
        out.started += 1;
        let fut = call();
        let started = Instant::now();
        in_flight.push(async move {
            let result = fut.await;
            (started, Instant::now(), result)
        });
    };

    let start = Instant::now();
    let deadline = start + cfg.duration;
    for _ in 0..cfg.concurrency.max(1) {
        launch(&mut in_flight, &mut out);
    }
    while let Some((started, done, result)) = in_flight.next().await {
        out.record(started, done, result);
        if done < deadline {
            launch(&mut in_flight, &mut out);
        }
    }
    out.elapsed = Instant::now().saturating_duration_since(start);
    out
}

/// Waits for the calls still in flight, up to [`DRAIN_TIMEOUT`]; the rest
/// count as errors.
async fn drain<S, E>(in_flight: &mut S, out: &mut LoadOutcome)
where
    S: futures::Stream<Item = (Instant, Instant, Result<(), E>)> + Unpin,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, in_flight.next()).await {
            Ok(Some((intended, done, result))) => out.record(intended, done, result),
            Ok(None) => return,
            Err(_) => break,
        }
    }
    let abandoned = out.started - out.completed - out.errors;
    for _ in 0..abandoned {
        out.fail(format!(
            "no response within {DRAIN_TIMEOUT:?} after the schedule ended"
        ));
    }
}

/// Completes at `at`: sleeps while the target is far, then yields to the
/// runtime (which polls the I/O driver on every yield) until it is reached.
async fn wait_until(at: Instant) {
    let now = Instant::now();
    if at > now + SPIN_WINDOW {
        tokio::time::sleep_until(at - SPIN_WINDOW).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn open_loop_sends_on_schedule() {
        let cfg = OpenLoop {
            rate: 2_000,
            duration: Duration::from_millis(200),
            max_in_flight: 16,
        };
        let out = open_loop(cfg, || async { Ok::<(), String>(()) }).await;
        assert_eq!(out.started + out.dropped, 400);
        assert_eq!(out.completed, out.started);
        assert_eq!(out.errors, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn open_loop_charges_stalls_to_later_requests() {
        // One slow call with room for only one in flight: the schedule keeps
        // running, later requests are dropped, and nothing is hidden.
        let cfg = OpenLoop {
            rate: 1_000,
            duration: Duration::from_millis(100),
            max_in_flight: 1,
        };
        let out = open_loop(cfg, || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<(), String>(())
        })
        .await;
        assert_eq!(out.started + out.dropped, 100);
        assert!(out.dropped > 50, "dropped {}", out.dropped);
        assert!(out.histogram.min() >= 20_000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn closed_loop_counts_errors() {
        let cfg = ClosedLoop {
            concurrency: 4,
            duration: Duration::from_millis(50),
        };
        let mut n = 0u32;
        let out = closed_loop(cfg, move || {
            n += 1;
            let fail = n.is_multiple_of(2);
            async move {
                tokio::task::yield_now().await;
                if fail { Err("boom") } else { Ok(()) }
            }
        })
        .await;
        assert!(out.completed > 0);
        assert!(out.errors > 0);
        assert_eq!(out.completed + out.errors, out.started);
        assert_eq!(out.first_error.as_deref(), Some("boom"));
    }
}
