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

/// A component's background task, such as the periodic deletion of expired rows: started
/// at most once (a re-init after DOWN does not start a second), aborted by `stop` or when
/// the component is dropped.
#[derive(Debug, Default)]
pub(crate) struct Background(Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Background {
    /// Spawn `task()` unless it is already running.
    pub(crate) fn start_once<F>(&self, task: impl FnOnce() -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut slot = lock(&self.0);
        if slot.is_none() {
            *slot = Some(tokio::spawn(task()));
        }
    }

    /// A handle to the running task, for tests that watch it end.
    #[cfg(test)]
    pub(crate) fn abort_handle(&self) -> Option<tokio::task::AbortHandle> {
        lock(&self.0)
            .as_ref()
            .map(tokio::task::JoinHandle::abort_handle)
    }

    /// Abort the task, if any.
    pub(crate) fn stop(&self) {
        if let Some(handle) = lock(&self.0).take() {
            handle.abort();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}
