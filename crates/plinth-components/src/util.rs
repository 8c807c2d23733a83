//! Small helpers the components share.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

/// Lock a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the data consistent before anything that can panic, so refusing
/// service forever after one panic would only turn a bug into an outage.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A time as RFC 3339 in UTC with whole seconds and a `Z` suffix.
pub(crate) fn rfc3339(time: impl Into<DateTime<Utc>>) -> String {
    time.into().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A file time as RFC 3339, the Unix epoch when the platform does not report it.
pub(crate) fn rfc3339_system(time: std::io::Result<SystemTime>) -> String {
    rfc3339(time.unwrap_or(SystemTime::UNIX_EPOCH))
}
