//! A circuit breaker as a tower layer: opens after consecutive backend failures, fails fast
//! while open, then lets a bounded number of probes through (half-open) and closes when they
//! succeed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use plinth_core::{Error, Result};
use prometheus_client::metrics::gauge::Gauge;
use tower::{Layer, Service};

use super::is_backend_failure;

/// Breaker settings (Dapr's `policies.circuitBreakers.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive backend failures that open the breaker.
    pub consecutive_failures: u32,
    /// How long the breaker stays open before probing.
    pub open_for: Duration,
    /// Probes allowed at once while half-open; that many successes close it.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Probes pass.
    HalfOpen,
    /// Calls fail fast.
    Open,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

/// Shared breaker state for one target.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    name: Arc<str>,
    config: Arc<BreakerConfig>,
    inner: Arc<Mutex<Inner>>,
    gauge: Gauge,
}

impl CircuitBreaker {
    /// A closed breaker for target `name`.
    pub fn new(name: &str, config: BreakerConfig, gauge: Gauge) -> Self {
        Self {
            name: name.into(),
            config: Arc::new(config),
            inner: Arc::new(Mutex::new(Inner::Closed { failures: 0 })),
            gauge,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() >= *until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a plain value; a poisoned lock still holds a usable one.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, inner: &mut Inner, next: Inner) {
        self.gauge.set(match next {
            Inner::Closed { .. } => 0,
            Inner::HalfOpen { .. } => 1,
            Inner::Open { .. } => 2,
        });
        *inner = next;
    }

    /// Ask to make a call: Ok when it may proceed. Every admitted call must be
    /// [`record`](Self::record)ed.
    pub fn admit(&self) -> Result<()> {
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { until } => {
                if Instant::now() >= *until {
                    self.set(
                        &mut inner,
                        Inner::HalfOpen {
                            in_flight: 1,
                            successes: 0,
                        },
                    );
                    Ok(())
                } else {
                    Err(self.open_error())
                }
            }
            Inner::HalfOpen { in_flight, .. } => {
                if *in_flight < self.config.half_open_probes {
                    *in_flight += 1;
                    Ok(())
                } else {
                    Err(self.open_error())
                }
            }
        }
    }

    fn open_error(&self) -> Error {
        Error::unavailable(format!(
            "circuit breaker for {:?} is open after repeated failures",
            self.name
        ))
    }

    /// Record an admitted call's outcome.
    pub fn record(&self, failed: bool) {
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { failures } => {
                if !failed {
                    *failures = 0;
                } else {
                    *failures += 1;
                    if *failures >= self.config.consecutive_failures {
                        tracing::warn!(target = %self.name, "circuit breaker opened");
                        self.set(
                            &mut inner,
                            Inner::Open {
                                until: Instant::now() + self.config.open_for,
                            },
                        );
                    }
                }
            }
            Inner::HalfOpen {
                in_flight,
                successes,
            } => {
                *in_flight = in_flight.saturating_sub(1);
                if failed {
                    tracing::warn!(target = %self.name, "circuit breaker probe failed; open again");
                    self.set(
                        &mut inner,
                        Inner::Open {
                            until: Instant::now() + self.config.open_for,
                        },
                    );
                } else {
                    *successes += 1;
                    if *successes >= self.config.half_open_probes {
                        tracing::info!(target = %self.name, "circuit breaker closed");
                        self.set(&mut inner, Inner::Closed { failures: 0 });
                    }
                }
            }
            // A call admitted before the breaker opened finished late; it changes nothing.
            Inner::Open { .. } => {}
        }
    }
}

/// Wraps a service in a [`CircuitBreaker`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: CircuitBreaker,
}

impl CircuitBreakerLayer {
    /// A layer sharing `breaker`'s state.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// The service a [`CircuitBreakerLayer`] produces.
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: CircuitBreaker,
}

impl<S, Req, T> Service<Req> for CircuitBreakerService<S>
where
    S: Service<Req, Response = T, Error = Error>,
    S::Future: Send + 'static,
    T: Send + 'static,
{
    type Response = T;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Err(err) = self.breaker.admit() {
            return Box::pin(async move { Err(err) });
        }
        let fut = self.inner.call(req);
        let breaker = self.breaker.clone();
        Box::pin(async move {
            let result = fut.await;
            breaker.record(matches!(&result, Err(e) if is_backend_failure(e)));
            result
        })
    }
}
