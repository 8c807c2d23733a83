//! `bindings.cron`: an input binding that fires on a schedule (Dapr's `bindings.cron`).
//!
//! Each firing is an event with empty data and the metadata Dapr's cron binding sends:
//! `timeZone` (`Local`, or the zone of a `CRON_TZ=` prefix) and `readTimeUTC`, the firing time
//! written as Go prints a UTC time (`2024-05-01 12:00:00.123456789 +0000 UTC`).
//!
//! A reader gets at most `max_in_flight` firings unsettled at once, and at most one more
//! waits behind them: while the app is slow, further firings are skipped, not queued. A
//! firing cannot be redelivered, so `nack` drops it, as does dropping it unsettled.
//!
//! The output operation `delete` stops the schedule: readers stay open but get no more
//! events until the component is rebuilt (replaced at run time, or Plinth restarted), which
//! starts the schedule afresh. Dapr's cron binding had this operation before Dapr 1.10.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use plinth_core::component::binding::{
    Acknowledger, Binding, BindingRequest, BindingResponse, InputBinding, InputDelivery,
    InputEvent, InputStream, OutputBinding, ReadRequest,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Metadata, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

mod config;
#[cfg(test)]
mod tests;

pub use config::{CronConfig, MIN_EVERY, SCHEDULE, Schedule, Zone};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "bindings.cron";

/// Event metadata: the time zone the schedule is read in.
pub const TIME_ZONE: &str = "timeZone";
/// Event metadata: when the schedule fired, in UTC, as Go prints times.
pub const READ_TIME_UTC: &str = "readTimeUTC";
/// The output operation that stops the schedule.
pub const DELETE: &str = "delete";

/// The most unsettled firings one reader may have, whatever it asks for.
const MAX_IN_FLIGHT_LIMIT: usize = 1024;
/// The longest single sleep: the wall clock is read again at least this often, so a clock
/// that is set back or forward delays a firing by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Build a `bindings.cron` binding from its metadata (`schedule`).
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = CronConfig::from_spec(spec)?;
    Ok(Instance::Binding(Binding::input_output(Arc::new(
        CronBinding::new(&spec.name, config),
    ))))
}

/// The source of wall-clock time that schedules are read against.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A cron input binding.
pub struct CronBinding {
    name: String,
    config: CronConfig,
    clock: Arc<dyn Clock>,
    /// Ends every reader: the component is closed.
    closed: CancellationToken,
    /// Stops firing (the `delete` operation); readers stay open.
    deleted: CancellationToken,
    skipped: Arc<AtomicU64>,
}

impl fmt::Debug for CronBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronBinding")
            .field("name", &self.name)
            .field("schedule", &self.config.schedule.as_str())
            .field("deleted", &self.deleted.is_cancelled())
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Drop for CronBinding {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl CronBinding {
    /// A binding named `name` (for logs) reading its schedule against the system clock.
    pub fn new(name: &str, config: CronConfig) -> Self {
        Self::with_clock(name, config, Arc::new(SystemClock))
    }

    /// A binding reading its schedule against `clock` (tests drive one from tokio's paused
    /// time).
    pub fn with_clock(name: &str, config: CronConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            name: name.to_owned(),
            config,
            clock,
            closed: CancellationToken::new(),
            deleted: CancellationToken::new(),
            skipped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many firings were skipped because one was already waiting for the reader.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Component for CronBinding {
    async fn close(&self) {
        self.closed.cancel();
    }
}

#[async_trait]
impl InputBinding for CronBinding {
    async fn read(&self, req: ReadRequest) -> Result<InputStream> {
        if self.closed.is_cancelled() {
            return Err(Error::unavailable(format!(
                "cron binding {:?} is closed",
                self.name
            )));
        }
        let max_in_flight = req.max_in_flight.clamp(1, MAX_IN_FLIGHT_LIMIT);
        // Every delivery in the channel holds a permit, so it never fills up.
        let (tx, receiver) = mpsc::channel(max_in_flight);
        let ticker = Ticker {
            name: self.name.clone(),
            schedule: self.config.schedule.clone(),
            clock: self.clock.clone(),
            tx,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            closed: self.closed.clone(),
            deleted: self.deleted.clone(),
            skipped: self.skipped.clone(),
        };
        tokio::spawn(ticker.run());
        Ok(InputStream { receiver })
    }
}

#[async_trait]
impl OutputBinding for CronBinding {
    fn operations(&self) -> Vec<String> {
        vec![DELETE.to_owned()]
    }

    async fn invoke(&self, req: BindingRequest) -> Result<BindingResponse> {
        if req.operation != DELETE {
            return Err(Error::invalid_argument(format!(
                "cron binding: unsupported operation {:?}; supported: {DELETE}",
                req.operation
            )));
        }
        if !self.deleted.is_cancelled() {
            tracing::info!(binding = %self.name, "cron schedule stopped by the delete operation");
        }
        self.deleted.cancel();
        Ok(BindingResponse::default())
    }
}

/// Releases its firing's place in the reader's in-flight budget when settled or dropped.
#[derive(Debug)]
struct CronAcker {
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Acknowledger for CronAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        Ok(())
    }

    // A firing cannot be redelivered: it is dropped.
    async fn nack(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// The task behind one reader.
struct Ticker {
    name: String,
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<InputDelivery>,
    in_flight: Arc<Semaphore>,
    closed: CancellationToken,
    deleted: CancellationToken,
    skipped: Arc<AtomicU64>,
}

impl Ticker {
    fn event(&self, fired: DateTime<Utc>) -> InputEvent {
        let mut metadata = Metadata::new();
        metadata.insert(TIME_ZONE.to_owned(), self.schedule.zone().name().to_owned());
        metadata.insert(READ_TIME_UTC.to_owned(), go_utc(fired));
        InputEvent {
            data: Bytes::new(),
            metadata,
        }
    }

    /// Fire until the reader goes away, the component closes, or the schedule is deleted or
    /// has no further firing; in the last two cases the stream stays open, empty, so the
    /// reader does not read again.
    async fn run(self) {
        let mut due = self.schedule.first(self.clock.now());
        let mut pending: Option<InputEvent> = None;
        while let Some(at) = due {
            let wait = (at - self.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP);
            tokio::select! {
                biased;
                _ = self.closed.cancelled() => return,
                _ = self.tx.closed() => return,
                _ = self.deleted.cancelled() => break,
                permit = self.in_flight.clone().acquire_owned(), if pending.is_some() => {
                    let (Ok(permit), Some(event)) = (permit, pending.take()) else { return };
                    let delivery = InputDelivery { event, acker: Box::new(CronAcker { _permit: permit }) };
                    if self.tx.try_send(delivery).is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    let now = self.clock.now();
                    if now < at {
                        continue;
                    }
                    if pending.is_some() {
                        self.skipped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(binding = %self.name, "cron firing skipped: the previous one is still waiting for the app");
                    } else {
                        pending = Some(self.event(now));
                    }
                    due = self.schedule.following(at, now);
                }
            }
        }
        if due.is_none() {
            tracing::info!(binding = %self.name, schedule = %self.schedule.as_str(), "cron schedule has no further firing");
        }
        tokio::select! {
            _ = self.closed.cancelled() => {}
            _ = self.tx.closed() => {}
        }
    }
}

/// A UTC time as Go's `time.Time.String` prints it: `2006-01-02 15:04:05.999999999 +0000
/// UTC`, the fraction without trailing zeros and left out when zero.
pub fn go_utc(time: DateTime<Utc>) -> String {
    let nanos = time.timestamp_subsec_nanos() % 1_000_000_000;
    let fraction = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_owned()
    };
    format!("{}{fraction} +0000 UTC", time.format("%Y-%m-%d %H:%M:%S"))
}
