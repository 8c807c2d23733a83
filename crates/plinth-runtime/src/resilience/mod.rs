//! Resilience for component calls, as tower layers: a timeout per attempt, retries with a
//! budget and backoff, and a circuit breaker. One [`Policy`] is built per component from
//! Dapr's Resiliency resource (or the defaults) and every call to the component goes through
//! it. The mesh reuses the same layers for remote targets.
//!
//! The stack, outermost first: circuit breaker → retry → timeout → the call.

mod breaker;
mod retry;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use plinth_core::{Error, Result};
use tower::{Layer, Service, ServiceExt};

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, CircuitBreakerLayer};
pub use retry::{Backoff, RetryConfig, RetryPolicy};

use crate::metrics::{ComponentName, SharedMetrics};

/// The default timeout of one attempt of a component call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a component's calls are wrapped in.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Timeout of each attempt.
    pub timeout: Duration,
    /// Retries, if any.
    pub retry: Option<RetryConfig>,
    /// Circuit breaker, if any.
    pub breaker: Option<BreakerConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            retry: None,
            breaker: None,
        }
    }
}

/// A built policy for one component: holds the shared breaker state and retry budget.
#[derive(Debug, Clone)]
pub struct Policy {
    name: Arc<str>,
    timeout: Duration,
    retry: Option<RetryPolicy>,
    breaker: Option<CircuitBreaker>,
    metrics: SharedMetrics,
}

impl Policy {
    /// Build the policy of component `name`.
    pub fn new(name: &str, config: &PolicyConfig, metrics: SharedMetrics) -> Self {
        let labels = ComponentName {
            component: name.to_string(),
        };
        Self {
            name: name.into(),
            timeout: config.timeout,
            retry: config
                .retry
                .clone()
                .map(|r| RetryPolicy::new(r, metrics.retries.get_or_create(&labels).clone())),
            breaker: config.breaker.clone().map(|b| {
                CircuitBreaker::new(
                    name,
                    b,
                    metrics.breaker_state.get_or_create(&labels).clone(),
                )
            }),
            metrics,
        }
    }

    /// The breaker's state, if the policy has one.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.breaker.as_ref().map(CircuitBreaker::state)
    }

    /// Run `call` (which may be invoked again on retry) through the stack, recording the
    /// operation's outcome and latency.
    ///
    /// Returns a boxed `'static` future: callers hold it across awaits inside spawned tasks
    /// and tonic handlers, and a borrowing future trips rustc's higher-ranked `Send` checks.
    pub fn call<T, F, Fut>(&self, operation: &'static str, call: F) -> BoxFuture<'static, Result<T>>
    where
        F: Fn() -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let this = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = this.run(call).await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => kind_label(e),
            };
            this.metrics
                .record_component(&this.name, operation, outcome, started.elapsed());
            result
        })
    }

    fn run<T, F, Fut>(&self, call: F) -> BoxFuture<'static, Result<T>>
    where
        F: Fn() -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let timeout = self.timeout;
        let name = self.name.clone();
        let attempt = tower::service_fn(move |()| {
            let fut = call();
            let name = name.clone();
            async move {
                match tokio::time::timeout(timeout, fut).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::timeout(format!(
                        "component {name:?} did not answer within {}ms",
                        timeout.as_millis()
                    ))),
                }
            }
        });
        match (self.breaker.clone(), self.retry.clone()) {
            (None, None) => Box::pin(attempt.oneshot(())),
            (None, Some(retry)) => Box::pin(
                tower::retry::RetryLayer::new(retry)
                    .layer(attempt)
                    .oneshot(()),
            ),
            (Some(breaker), None) => {
                Box::pin(CircuitBreakerLayer::new(breaker).layer(attempt).oneshot(()))
            }
            (Some(breaker), Some(retry)) => {
                let stack = tower::ServiceBuilder::new()
                    .layer(CircuitBreakerLayer::new(breaker))
                    .layer(tower::retry::RetryLayer::new(retry))
                    .service(attempt);
                Box::pin(stack.oneshot(()))
            }
        }
    }
}

/// A stable label for an error kind.
pub fn kind_label(err: &Error) -> &'static str {
    use plinth_core::ErrorKind::*;
    match err.kind() {
        InvalidArgument => "invalid_argument",
        NotFound => "not_found",
        EtagMismatch => "etag_mismatch",
        EtagInvalid => "etag_invalid",
        Unimplemented => "unimplemented",
        Unavailable => "unavailable",
        Timeout => "timeout",
        AlreadyExists => "already_exists",
        FailedPrecondition => "failed_precondition",
        PermissionDenied => "permission_denied",
        Unauthenticated => "unauthenticated",
        ResourceExhausted => "resource_exhausted",
        Internal => "internal",
    }
}

/// Whether an error says the backend (not the request) failed: these count against the
/// circuit breaker and are retried.
pub fn is_backend_failure(err: &Error) -> bool {
    err.kind().is_retryable() || err.kind() == plinth_core::ErrorKind::Internal
}

// Keep the `Service` import used for the layer impls in submodules.
#[allow(dead_code)]
fn _assert_service<S: Service<()>>(_: &S) {}

#[cfg(test)]
mod tests;
