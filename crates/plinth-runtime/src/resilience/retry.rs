//! Retries with backoff and a budget, as a `tower::retry::Policy`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use plinth_core::{Error, Result};
use prometheus_client::metrics::counter::Counter;
use tower::retry::budget::{Budget, TpsBudget};

use super::is_backend_failure;

/// How the wait between attempts grows.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// The same wait each time.
    Constant(Duration),
    /// Doubling from `initial` up to `max`, with full jitter.
    Exponential {
        /// The first wait.
        initial: Duration,
        /// The largest wait.
        max: Duration,
    },
}

/// Retry settings (Dapr's `policies.retries.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt; `None` retries until the budget says no.
    pub max_retries: Option<u32>,
    /// Wait between attempts.
    pub backoff: Backoff,
    /// Retries may add at most this fraction of the call rate on top of it (budget).
    pub budget_ratio: f32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: Some(3),
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(2),
            },
            budget_ratio: 0.2,
        }
    }
}

/// The retry policy with its shared budget. Each call clones it, carrying its own attempt
/// count; the budget is shared by all calls to the component.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: Arc<RetryConfig>,
    budget: Arc<TpsBudget>,
    attempt: u32,
    retries: Counter,
}

impl RetryPolicy {
    /// A policy with a fresh budget.
    pub fn new(config: RetryConfig, retries: Counter) -> Self {
        // A floor of 10 retries a second keeps low-traffic components retrying.
        let budget = TpsBudget::new(Duration::from_secs(10), 10, config.budget_ratio);
        Self {
            config: Arc::new(config),
            budget: Arc::new(budget),
            attempt: 0,
            retries,
        }
    }

    fn delay(&self) -> Duration {
        match self.config.backoff {
            Backoff::Constant(d) => d,
            Backoff::Exponential { initial, max } => {
                let exp = initial.saturating_mul(1u32 << self.attempt.min(16));
                let cap = exp.min(max);
                // Full jitter spreads retries of many callers.
                cap.mul_f64(rand::random::<f64>())
            }
        }
    }
}

impl<T> tower::retry::Policy<(), T, Error> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(&mut self, _req: &mut (), result: &mut Result<T>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(err) if !is_backend_failure(err) => None,
            Err(_) => {
                if self
                    .config
                    .max_retries
                    .is_some_and(|max| self.attempt >= max)
                {
                    return None;
                }
                if !self.budget.withdraw() {
                    return None;
                }
                let delay = self.delay();
                self.attempt += 1;
                self.retries.inc();
                Some(Box::pin(tokio::time::sleep(delay)))
            }
        }
    }

    fn clone_request(&mut self, _req: &()) -> Option<()> {
        Some(())
    }
}
