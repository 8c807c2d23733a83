//! Metadata of `pubsub.redis`: the shared Redis connection keys plus Dapr's Redis Streams
//! keys (`consumerID`, `processingTimeout`, `redeliverInterval`, `queueDepth`, `concurrency`,
//! `maxLenApprox`, `streamTTL`) and `maxMessageBytes`.

use std::time::Duration;

use plinth_core::metadata::parse_duration;
use plinth_core::{ComponentSpec, Result};

use super::super::common::{consumer_id, max_message_bytes};
use crate::redis_client::RedisSettings;

/// Component metadata: how long a message may stay pending on a consumer that no longer
/// renews it before another consumer of the group takes it over.
pub(crate) const PROCESSING_TIMEOUT: &str = "processingTimeout";
/// Component metadata: how often each subscription looks for messages to take over.
pub(crate) const REDELIVER_INTERVAL: &str = "redeliverInterval";
/// Component metadata (Dapr's): the size of Dapr's in-process queue. Accepted, unused.
pub(crate) const QUEUE_DEPTH: &str = "queueDepth";
/// Component metadata (Dapr's): Dapr's number of workers. Accepted, unused.
pub(crate) const CONCURRENCY: &str = "concurrency";
/// Component metadata: trim each stream to about this many entries on publish.
pub(crate) const MAX_LEN_APPROX: &str = "maxLenApprox";
/// Component metadata: trim entries older than this from each stream on publish.
pub(crate) const STREAM_TTL: &str = "streamTTL";

/// The default of [`PROCESSING_TIMEOUT`] (Dapr documents 15s).
pub(crate) const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_secs(15);
/// The default of [`REDELIVER_INTERVAL`]: shorter than Dapr's so that messages of a crashed
/// consumer come back within about `processingTimeout` + 5s; one cheap `XAUTOCLAIM` per
/// subscription per interval.
pub(crate) const DEFAULT_REDELIVER_INTERVAL: Duration = Duration::from_secs(5);
/// The default of `maxMessageBytes`: Redis's own limit on one bulk string
/// (`proto-max-bulk-len`, 512 MiB).
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;
/// The smallest `processingTimeout`: held messages are renewed every third of it.
pub(crate) const MIN_PROCESSING_TIMEOUT: Duration = Duration::from_secs(1);
/// The smallest `redeliverInterval`.
pub(crate) const MIN_REDELIVER_INTERVAL: Duration = Duration::from_millis(100);
/// The largest `processingTimeout` and `redeliverInterval`.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// A consumer with nothing pending is deleted once idle for 10 × `processingTimeout`, and
/// never sooner than this: a live consumer touches the group at least once per read.
pub(crate) const MIN_CONSUMER_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// How long one `XREADGROUP` blocks: also the longest a subscription waits before it notices
/// a wake-up (a nack) while all its free permits are in a blocked read.
pub(crate) const READ_BLOCK: Duration = Duration::from_secs(1);

const DEFAULT_QUEUE_DEPTH: usize = 100;
const DEFAULT_CONCURRENCY: usize = 10;

/// How streams are trimmed on publish (`XADD ... MAXLEN ~` or `MINID ~`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trim {
    /// Nothing is trimmed: a stream keeps every entry, acknowledged or not, until it is
    /// deleted.
    Never,
    /// `maxLenApprox`: about this many entries.
    MaxLen(u64),
    /// `streamTTL`: entries younger than this.
    MaxAge(Duration),
}

/// The parsed metadata of a `pubsub.redis` component. Its Debug output holds no secret (the
/// connection settings redact theirs).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where and how to connect.
    pub(crate) redis: RedisSettings,
    /// `consumerID`: the consumer group of every subscription, instead of the app id.
    pub(crate) consumer_id: Option<String>,
    /// `processingTimeout`.
    pub(crate) processing_timeout: Duration,
    /// `redeliverInterval`.
    pub(crate) redeliver_interval: Duration,
    /// `queueDepth`, accepted for Dapr compatibility.
    pub(crate) queue_depth: usize,
    /// `concurrency`, accepted for Dapr compatibility.
    pub(crate) concurrency: usize,
    /// `maxLenApprox` or `streamTTL`.
    pub(crate) trim: Trim,
    /// `maxMessageBytes`.
    pub(crate) max_message_bytes: usize,
    /// Idle consumers with nothing pending are deleted after this long.
    pub(crate) consumer_expiry: Duration,
    /// How long one blocking read waits.
    pub(crate) read_block: Duration,
}

impl Config {
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let redis = RedisSettings::from_spec(spec)?;
        let processing_timeout =
            dapr_millis_duration(spec, PROCESSING_TIMEOUT, DEFAULT_PROCESSING_TIMEOUT)?;
        let redeliver_interval =
            dapr_millis_duration(spec, REDELIVER_INTERVAL, DEFAULT_REDELIVER_INTERVAL)?;
        for (key, value, min) in [
            (
                PROCESSING_TIMEOUT,
                processing_timeout,
                MIN_PROCESSING_TIMEOUT,
            ),
            (
                REDELIVER_INTERVAL,
                redeliver_interval,
                MIN_REDELIVER_INTERVAL,
            ),
        ] {
            if value.is_zero() {
                return Err(spec.invalid(
                    &format!("metadata.{key}"),
                    "must be positive: Plinth does not turn redelivery off (Dapr's \"0\"), \
                     since nacked messages come back through it",
                ));
            }
            if value < min || value > MAX_INTERVAL {
                return Err(spec.invalid(
                    &format!("metadata.{key}"),
                    format!("must be between {min:?} and {MAX_INTERVAL:?}"),
                ));
            }
        }
        let queue_depth = positive(spec, QUEUE_DEPTH, DEFAULT_QUEUE_DEPTH)?;
        let concurrency = positive(spec, CONCURRENCY, DEFAULT_CONCURRENCY)?;
        let max_len: u64 = spec.parse_or(MAX_LEN_APPROX, 0)?;
        let ttl = match spec.get(STREAM_TTL) {
            None => Duration::ZERO,
            Some(raw) => parse_ttl(raw).ok_or_else(|| {
                spec.invalid(
                    &format!("metadata.{STREAM_TTL}"),
                    format!("{raw:?} is not a duration (such as 30m, 12h or 7d)"),
                )
            })?,
        };
        let trim = match (max_len, ttl.is_zero()) {
            (0, true) => Trim::Never,
            (n, true) => Trim::MaxLen(n),
            (0, false) => Trim::MaxAge(ttl),
            (_, false) => {
                return Err(spec.invalid(
                    &format!("metadata.{STREAM_TTL}"),
                    format!("cannot be used together with {MAX_LEN_APPROX}: set one of them"),
                ));
            }
        };
        if ttl > Duration::ZERO && ttl < Duration::from_secs(1) {
            return Err(spec.invalid(&format!("metadata.{STREAM_TTL}"), "must be at least 1s"));
        }
        Ok(Self {
            redis,
            consumer_id: consumer_id(spec),
            processing_timeout,
            redeliver_interval,
            queue_depth,
            concurrency,
            trim,
            max_message_bytes: max_message_bytes(spec, DEFAULT_MAX_MESSAGE_BYTES)?,
            consumer_expiry: (processing_timeout * 10).max(MIN_CONSUMER_EXPIRY),
            read_block: READ_BLOCK,
        })
    }
}

/// A duration the way Dapr's Redis pub/sub reads `processingTimeout` and
/// `redeliverInterval`: a bare number is milliseconds (for legacy reasons), anything else a
/// duration string (`15s`, `1m30s`).
fn dapr_millis_duration(spec: &ComponentSpec, key: &str, default: Duration) -> Result<Duration> {
    match spec.get(key) {
        None => Ok(default),
        Some(raw) => match raw.parse::<u64>() {
            Ok(ms) => Ok(Duration::from_millis(ms)),
            Err(_) => parse_duration(raw).ok_or_else(|| {
                spec.invalid(
                    &format!("metadata.{key}"),
                    format!("{raw:?} is not a duration (such as 15s, or milliseconds)"),
                )
            }),
        },
    }
}

/// `streamTTL`: a duration, with days (`7d`) as in Dapr's examples.
fn parse_ttl(raw: &str) -> Option<Duration> {
    match raw.strip_suffix('d') {
        Some(days) => {
            let days: f64 = days.trim().parse().ok()?;
            if !(days.is_finite() && days >= 0.0) {
                return None;
            }
            Duration::try_from_secs_f64(days * 86_400.0).ok()
        }
        None => parse_duration(raw),
    }
}

fn positive(spec: &ComponentSpec, key: &str, default: usize) -> Result<usize> {
    let value = spec.parse_or(key, default)?;
    if value == 0 {
        return Err(spec.invalid(&format!("metadata.{key}"), "must be positive"));
    }
    Ok(value)
}
