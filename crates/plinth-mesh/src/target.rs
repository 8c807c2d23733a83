//! A target's traffic policy, built once from its `TrafficPolicy` (or the mesh's defaults)
//! and Dapr's Resiliency: routes, the call deadline, retries with their budget, the circuit
//! breaker, the rate limit and injected faults.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use plinth_core::{Error, Result};
use plinth_runtime::resilience::{Backoff, BreakerConfig, CircuitBreaker, PolicyConfig};
use rand::Rng as _;
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::config::{
    FaultSpec, HealthCheckSpec, LoadBalancer, OutlierSpec, RateLimitSpec, RetryOn, RetrySpec,
    RouteSpec, TrafficPolicySpec,
};
use crate::metrics::{MeshMetrics, TargetMetrics};

/// The deadline of a call no policy bounds, as for calls to the local app.
pub(crate) const DEFAULT_TIMEOUT: Duration = plinth_runtime::invoke::APP_CALL_TIMEOUT;

/// Retries of one target, with the budget all its calls share.
#[derive(Debug)]
pub(crate) struct Retry {
    pub(crate) max_retries: u32,
    backoff: Backoff,
    pub(crate) non_idempotent: bool,
    retry_on: Vec<RetryOn>,
    budget: TpsBudget,
}

impl Retry {
    fn new(spec: &RetrySpec) -> Self {
        Self {
            max_retries: spec.max_retries,
            backoff: Backoff::Exponential {
                initial: spec.initial_interval,
                max: spec.max_interval,
            },
            non_idempotent: spec.non_idempotent,
            retry_on: spec.retry_on.clone().unwrap_or_else(|| {
                vec![
                    RetryOn::ConnectFailure,
                    RetryOn::Timeout,
                    RetryOn::GatewayError,
                ]
            }),
            budget: TpsBudget::new(
                Duration::from_secs(10),
                10,
                spec.budget_ratio.clamp(0.0, 1000.0),
            ),
        }
    }

    /// From Dapr's Resiliency: its retry count and backoff, our defaults for the rest.
    fn from_dapr(config: &plinth_runtime::resilience::RetryConfig) -> Self {
        Self {
            max_retries: config.max_retries.unwrap_or(u32::MAX),
            backoff: config.backoff.clone(),
            non_idempotent: false,
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::Timeout,
                RetryOn::GatewayError,
            ],
            budget: TpsBudget::new(Duration::from_secs(10), 10, config.budget_ratio),
        }
    }

    pub(crate) fn retries_on(&self, class: RetryOn) -> bool {
        self.retry_on.contains(&class)
            || (class == RetryOn::GatewayError && self.retry_on.contains(&RetryOn::ServerError))
    }

    /// Count a call toward the budget.
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }

    /// Take a retry from the budget.
    pub(crate) fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }

    /// The wait before retry number `attempt` (from 0).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        match self.backoff {
            Backoff::Constant(d) => d,
            Backoff::Exponential { initial, max } => {
                let cap = initial.saturating_mul(1u32 << attempt.min(16)).min(max);
                // Full jitter spreads the retries of many callers.
                cap.mul_f64(rand::rng().random::<f64>())
            }
        }
    }
}

/// A rate limit: its rate (for messages) and its bucket.
type Limiter = (f64, DefaultDirectRateLimiter);

/// Build a token bucket; `at` names the field in errors.
fn build_limiter(spec: Option<&RateLimitSpec>, at: &str) -> Result<Option<Limiter>> {
    let Some(rl) = spec else {
        return Ok(None);
    };
    let rps = rl.requests_per_second;
    if !(rps.is_finite() && rps > 0.0 && rps <= 1e9) {
        return Err(Error::invalid_argument(format!(
            "{at}.requestsPerSecond: {rps} must be above 0"
        )));
    }
    let burst = rl.burst.unwrap_or((rps.ceil() as u32).max(1));
    let burst = NonZeroU32::new(burst)
        .ok_or_else(|| Error::invalid_argument(format!("{at}.burst must be at least 1")))?;
    let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rps))
        .ok_or_else(|| {
            Error::invalid_argument(format!("{at}.requestsPerSecond: {rps} is out of range"))
        })?
        .allow_burst(burst);
    Ok(Some((rps, RateLimiter::direct(quota))))
}

/// Take a token from `limiter`, if there is one: an error naming `what` when empty.
fn take(limiter: Option<&Limiter>, what: &str) -> Result<()> {
    match limiter {
        Some((rate, bucket)) if bucket.check().is_err() => Err(Error::resource_exhausted(format!(
            "{}: calls to {what} are limited to {rate} a second",
            plinth_core::error::RATE_LIMITED,
        ))),
        _ => Ok(()),
    }
}

/// A call as its policy reads it (routes, deadlines): read whole, or passed through.
pub(crate) trait CallView {
    /// The verb.
    fn verb(&self) -> &str;
    /// The app's method (the path after `/`).
    fn method(&self) -> &str;
    /// The first value of header `name` (lower case).
    fn header(&self, name: &str) -> Option<&str>;
    /// Whether any value of header `name` (any case) is `value`.
    fn has_header(&self, name: &str, value: &str) -> bool;
}

/// A compiled route.
#[derive(Debug)]
pub(crate) struct Route {
    name: String,
    spec: RouteSpec,
    total_weight: u64,
    limiter: Option<Limiter>,
}

impl Route {
    fn matches(&self, req: &dyn CallView) -> bool {
        let m = &self.spec.matches;
        let path = format!("/{}", req.method().trim_start_matches('/'));
        let norm = |p: &str| format!("/{}", p.trim_start_matches('/'));
        if let Some(exact) = &m.path
            && path != norm(exact)
        {
            return false;
        }
        if let Some(prefix) = &m.path_prefix
            && !path.starts_with(&norm(prefix))
        {
            return false;
        }
        if !m.methods.is_empty() && !m.methods.iter().any(|v| v.eq_ignore_ascii_case(req.verb())) {
            return false;
        }
        m.headers
            .iter()
            .all(|(name, value)| req.has_header(name, value))
    }

    /// A cluster by weight.
    fn choose(&self) -> Option<&str> {
        if self.total_weight == 0 {
            return None;
        }
        let mut roll = rand::rng().random_range(0..self.total_weight);
        for c in &self.spec.clusters {
            if roll < u64::from(c.weight) {
                return Some(&c.app);
            }
            roll -= u64::from(c.weight);
        }
        None
    }
}

/// Where a call goes after routing.
#[derive(Debug)]
pub(crate) struct Routed<'a> {
    /// The route's name, or `default`.
    pub(crate) route: &'a str,
    /// The app id (or HTTPEndpoint) the call goes to.
    pub(crate) destination: String,
    /// The route's deadline, if it has its own.
    pub(crate) timeout: Option<Duration>,
    limiter: Option<&'a Limiter>,
}

impl Routed<'_> {
    /// Take a token from the route's rate limit, if it has one.
    pub(crate) fn admit(&self, target: &str) -> Result<()> {
        take(
            self.limiter,
            &format!("{target:?} on route {:?}", self.route),
        )
    }
}

/// One target's policy.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) timeout: Duration,
    pub(crate) per_try_timeout: Option<Duration>,
    pub(crate) retry: Option<Retry>,
    pub(crate) breaker: Option<CircuitBreaker>,
    limiter: Option<Limiter>,
    pub(crate) fault: Option<FaultSpec>,
    routes: Vec<Route>,
    pub(crate) load_balancer: LoadBalancer,
    pub(crate) health_check: Option<HealthCheckSpec>,
    pub(crate) outlier: Option<OutlierSpec>,
    /// Its series, kept.
    pub(crate) metrics: TargetMetrics,
}

impl Target {
    /// Build `name`'s policy from its TrafficPolicy `spec` and Dapr's Resiliency `dapr`
    /// (whose timeout, retry and breaker apply where the TrafficPolicy sets none).
    pub(crate) fn new(
        name: &str,
        spec: &TrafficPolicySpec,
        dapr: Option<&PolicyConfig>,
        metrics: &MeshMetrics,
        source: &str,
    ) -> Result<Self> {
        let label = MeshMetrics::target(name);
        let breaker_config = match (&spec.circuit_breaker, dapr.and_then(|d| d.breaker.clone())) {
            (Some(b), _) => Some(BreakerConfig {
                consecutive_failures: b.consecutive_failures.max(1),
                open_for: b.open_for,
                half_open_probes: b.half_open_probes.max(1),
            }),
            (None, dapr) => dapr,
        };
        let breaker = breaker_config.map(|config| {
            CircuitBreaker::new(
                name,
                config,
                metrics.breaker_state.get_or_create(&label).clone(),
            )
        });
        let retry = match (&spec.retry, dapr.and_then(|d| d.retry.as_ref())) {
            (Some(r), _) => Some(Retry::new(r)),
            (None, Some(d)) => Some(Retry::from_dapr(d)),
            (None, None) => None,
        };
        let limiter = build_limiter(
            spec.rate_limit.as_ref(),
            &format!("{source}: TrafficPolicy {name:?}: rateLimit"),
        )?;
        if let Some(fault) = &spec.fault {
            for (what, percent) in [
                (
                    "fault.delay.percent",
                    fault.delay.as_ref().map(|d| d.percent),
                ),
                (
                    "fault.abort.percent",
                    fault.abort.as_ref().map(|a| a.percent),
                ),
            ] {
                if let Some(p) = percent
                    && !(0.0..=100.0).contains(&p)
                {
                    return Err(Error::invalid_argument(format!(
                        "{source}: TrafficPolicy {name:?}: {what}: {p} is not between 0 and 100"
                    )));
                }
            }
            if let Some(abort) = &fault.abort
                && !(400..=599).contains(&abort.http_status)
            {
                return Err(Error::invalid_argument(format!(
                    "{source}: TrafficPolicy {name:?}: fault.abort.httpStatus: {} is not a 4xx or 5xx status",
                    abort.http_status
                )));
            }
        }
        let mut routes = Vec::new();
        for (i, r) in spec.routes.iter().enumerate() {
            for (j, c) in r.clusters.iter().enumerate() {
                if c.app.is_empty() {
                    return Err(Error::invalid_argument(format!(
                        "{source}: TrafficPolicy {name:?}: routes[{i}].clusters[{j}].app is empty"
                    )));
                }
            }
            let total_weight = r.clusters.iter().map(|c| u64::from(c.weight)).sum();
            if !r.clusters.is_empty() && total_weight == 0 {
                return Err(Error::invalid_argument(format!(
                    "{source}: TrafficPolicy {name:?}: routes[{i}].clusters: the weights add up to 0"
                )));
            }
            routes.push(Route {
                name: r.name.clone().unwrap_or_else(|| format!("route-{i}")),
                spec: r.clone(),
                total_weight,
                limiter: build_limiter(
                    r.rate_limit.as_ref(),
                    &format!("{source}: TrafficPolicy {name:?}: routes[{i}].rateLimit"),
                )?,
            });
        }
        let timeout = spec
            .timeout
            .or_else(|| dapr.map(|d| d.timeout))
            .unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(Error::invalid_argument(format!(
                "{source}: TrafficPolicy {name:?}: timeout must be above 0"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            timeout,
            per_try_timeout: spec.per_try_timeout.filter(|t| !t.is_zero()),
            retry,
            breaker,
            limiter,
            fault: spec.fault.clone(),
            routes,
            load_balancer: spec.load_balancer.unwrap_or_default(),
            health_check: spec.health_check.clone(),
            outlier: spec.outlier_detection.clone(),
            metrics: TargetMetrics::new(name, metrics),
        })
    }

    /// Take a token from the rate limit: an error when there is none.
    pub(crate) fn admit(&self) -> Result<()> {
        match &self.limiter {
            Some((rate, limiter)) if limiter.check().is_err() => {
                Err(Error::resource_exhausted(format!(
                    "rate limit exceeded: calls to {:?} are limited to {rate} a second",
                    self.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// Where `req` goes: the first matching route's cluster, else the target itself.
    pub(crate) fn route(&self, req: &dyn CallView) -> Routed<'_> {
        for route in &self.routes {
            if route.matches(req) {
                return Routed {
                    route: &route.name,
                    destination: route.choose().unwrap_or(&self.name).to_string(),
                    timeout: route.spec.timeout,
                    limiter: route.limiter.as_ref(),
                };
            }
        }
        Routed {
            route: "default",
            destination: self.name.clone(),
            timeout: None,
            limiter: None,
        }
    }

    /// An injected fault for this call: a delay to wait, then maybe a status to answer.
    pub(crate) fn fault(&self) -> (Option<Duration>, Option<u16>) {
        let Some(fault) = &self.fault else {
            return (None, None);
        };
        let mut rng = rand::rng();
        let hit =
            |percent: f64, rng: &mut rand::rngs::ThreadRng| rng.random::<f64>() * 100.0 < percent;
        let delay = fault
            .delay
            .as_ref()
            .filter(|d| hit(d.percent, &mut rng))
            .map(|d| d.duration);
        let abort = fault
            .abort
            .as_ref()
            .filter(|a| hit(a.percent, &mut rng))
            .map(|a| a.http_status);
        (delay, abort)
    }
}

/// Shared handle.
pub(crate) type SharedTarget = Arc<Target>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteMatch, WeightedCluster};

    fn req(method: &str, verb: &str, headers: &[(&str, &str)]) -> crate::replay::Replay {
        crate::replay::Replay::whole(plinth_runtime::app::InvokeRequest {
            method: method.into(),
            verb: verb.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .expect("a valid request")
    }

    #[test]
    fn routes_match_on_path_verb_and_headers_and_split_by_weight() {
        let spec = TrafficPolicySpec {
            routes: vec![
                RouteSpec {
                    name: Some("canary".into()),
                    matches: RouteMatch {
                        path_prefix: Some("orders".into()),
                        methods: vec!["GET".into()],
                        headers: [("x-canary".to_string(), "1".to_string())].into(),
                        ..Default::default()
                    },
                    clusters: vec![WeightedCluster {
                        app: "orders-v2".into(),
                        weight: 1,
                    }],
                    timeout: None,
                    rate_limit: Some(RateLimitSpec {
                        requests_per_second: 0.001,
                        burst: Some(1),
                    }),
                },
                RouteSpec {
                    name: Some("split".into()),
                    matches: RouteMatch {
                        path: Some("/split".into()),
                        ..Default::default()
                    },
                    clusters: vec![
                        WeightedCluster {
                            app: "a".into(),
                            weight: 3,
                        },
                        WeightedCluster {
                            app: "b".into(),
                            weight: 1,
                        },
                    ],
                    timeout: Some(Duration::from_secs(1)),
                    rate_limit: None,
                },
            ],
            ..Default::default()
        };
        let metrics = MeshMetrics::register(&Default::default());
        let t = Target::new("orders", &spec, None, &metrics, "test").expect("policy");
        let r = t.route(&req("/orders/1", "GET", &[("x-canary", "1")]));
        assert_eq!((r.route, r.destination.as_str()), ("canary", "orders-v2"));
        // The route's own rate limit: one call, then refused naming the route.
        r.admit("orders").expect("first");
        let err = r.admit("orders").expect_err("second");
        assert!(err.to_string().contains("\"canary\""), "{err}");
        let r = t.route(&req("orders/1", "POST", &[("x-canary", "1")]));
        assert_eq!((r.route, r.destination.as_str()), ("default", "orders"));
        let r = t.route(&req("orders/1", "GET", &[]));
        assert_eq!(r.destination, "orders");
        let a = (0..4000)
            .filter(|_| t.route(&req("split", "POST", &[])).destination == "a")
            .count();
        assert!((2700..3300).contains(&a), "{a} of 4000 went to a");
        assert_eq!(
            t.route(&req("split", "POST", &[])).timeout,
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn bad_policies_are_refused_with_the_field() {
        let metrics = MeshMetrics::register(&Default::default());
        let spec: TrafficPolicySpec = serde_json::from_value(serde_json::json!({
            "rateLimit": {"requestsPerSecond": 0}
        }))
        .expect("spec");
        let err = Target::new("x", &spec, None, &metrics, "f.yaml").expect_err("zero rate");
        assert!(
            err.to_string().contains("rateLimit.requestsPerSecond"),
            "{err}"
        );
        let spec: TrafficPolicySpec = serde_json::from_value(serde_json::json!({
            "fault": {"abort": {"httpStatus": 200}}
        }))
        .expect("spec");
        let err = Target::new("x", &spec, None, &metrics, "f.yaml").expect_err("200");
        assert!(err.to_string().contains("fault.abort.httpStatus"), "{err}");
    }

    #[test]
    fn the_rate_limit_refuses_calls_over_the_burst() {
        let metrics = MeshMetrics::register(&Default::default());
        let spec: TrafficPolicySpec = serde_json::from_value(serde_json::json!({
            "rateLimit": {"requestsPerSecond": 1, "burst": 3}
        }))
        .expect("spec");
        let t = Target::new("x", &spec, None, &metrics, "f").expect("policy");
        let admitted = (0..10).filter(|_| t.admit().is_ok()).count();
        assert_eq!(admitted, 3);
        let err = t.admit().expect_err("over");
        assert_eq!(err.kind(), plinth_core::ErrorKind::ResourceExhausted);
    }
}
