//! Plinth's benchmark harness.
//!
//! Every benchmark binary in this crate measures the same way:
//!
//! - **Open loop with coordinated-omission correction** ([`load::open_loop`]):
//!   requests are due on a fixed schedule and latency is recorded from the
//!   due time into an HdrHistogram (µs), so a stall is charged to every
//!   request it delays. In-flight calls are bounded; calls that could not be
//!   started are counted as dropped, never silently skipped.
//! - **Closed loop** ([`load::closed_loop`]) at a stated concurrency for
//!   maximum throughput.
//! - **Pinning** ([`pin`]): the generator runs on one core (re-executed under
//!   `taskset`), systems under test on another, on a `current_thread`
//!   runtime.
//! - **Several runs with the baseline in the same session**, interleaved
//!   (baseline run 1, candidate run 1, baseline run 2, ...), reported as
//!   median and spread ([`stats`]) and as ratios paired by run. A scenario
//!   may have more than one baseline (e.g. the app called directly and
//!   [`haproxy`] in front of it); the candidate is compared with each.
//! - **Process statistics** ([`procfs`]): RSS idle and under load, CPU use of
//!   the SUT and the generator.
//! - **Output** ([`report`]): Markdown tables on stdout, JSON in
//!   `bench/results/<name>.json`.

#![forbid(unsafe_code)]

pub mod cli;
pub mod haproxy;
pub mod load;
pub mod payload;
pub mod pin;
pub mod procfs;
pub mod report;
pub mod session;
pub mod stats;
pub mod sut;

pub use cli::{Candidate, CommonArgs, RunConfig};
pub use haproxy::{BackendTls, HaproxySpec, ListenTls};
pub use load::{ClosedLoop, Load, LoadOutcome, OpenLoop};
pub use pin::Pinning;
pub use procfs::{Proc, RssSampler};
pub use session::{Phase, ProcessSeries, Report, Results, Session};
pub use stats::{Comparison, Measurement, Series, Side, Spread, Summary};
pub use sut::{Readiness, StopSignal, Sut, SutSpec};
