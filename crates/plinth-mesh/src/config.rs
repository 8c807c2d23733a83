//! The mesh's configuration: its settings (a Plinth Configuration's `spec.mesh`), the
//! `TrafficPolicy` resource (`apiVersion: plinth.dev/v1alpha1`) and Dapr's `HTTPEndpoint`.
//! These structs' docs are the reference in `docs/invocation.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use plinth_core::{Error, Result};
use serde::{Deserialize, Deserializer};

/// A duration written as Go and Dapr write them (`250ms`, `5s`, `1m`).
fn duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    plinth_core::metadata::parse_duration(&raw).ok_or_else(|| {
        serde::de::Error::custom(format!("{raw:?} is not a duration (e.g. 500ms, 5s)"))
    })
}

fn opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Read a section into `T`, naming the file and the field on error.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    source: &str,
    what: &str,
    value: &serde_json::Value,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        Error::invalid_argument(format!("{source}: {what}{at}: {}", e.inner()))
    })
}

/// The mesh's settings: `spec.mesh` of a Plinth Configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSettings {
    /// Mutual TLS between sidecars: this sidecar's certificate, key and the CA that signs
    /// every sidecar's certificate. Without it the mesh speaks plain TCP, which Plinth allows
    /// only on a loopback listen address unless `plaintext` is true.
    #[serde(default)]
    pub tls: Option<serde_json::Value>,
    /// Allow plain TCP between sidecars on a non-loopback address. Off by default: sidecars
    /// on other machines talk mTLS.
    #[serde(default)]
    pub plaintext: bool,
    /// How often each target's instances are resolved again. Default 2s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub refresh_interval: Option<Duration>,
    /// The policy of targets no `TrafficPolicy` names (load balancing, timeouts, retries,
    /// ...), in the TrafficPolicy's shape without `target` and `routes`.
    #[serde(default)]
    pub defaults: Option<serde_json::Value>,
}

/// A `TrafficPolicy`: how calls to one target (an app id or an HTTPEndpoint) are routed,
/// balanced, retried and limited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicySpec {
    /// The target app id (or HTTPEndpoint name). Default: the resource's name.
    #[serde(default)]
    pub target: Option<String>,
    /// `p2c-peak-ewma` (default), `round-robin`, `random` or `least-request`.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
    /// Active health checks of each instance.
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
    /// Passive outlier ejection: instances that keep failing are taken out for a while.
    #[serde(default)]
    pub outlier_detection: Option<OutlierSpec>,
    /// Deadline of the whole call, retries included. Default 60s; a caller's
    /// `rpc_request_timeout` (ms) may shorten it.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Deadline of each attempt. Default: the call's deadline.
    #[serde(default, deserialize_with = "opt_duration")]
    pub per_try_timeout: Option<Duration>,
    /// Retries.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// A circuit breaker per target.
    #[serde(default)]
    pub circuit_breaker: Option<BreakerSpec>,
    /// A token bucket on calls to the target; calls over it get RESOURCE_EXHAUSTED / 429.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// Fault injection, for testing callers' resilience.
    #[serde(default)]
    pub fault: Option<FaultSpec>,
    /// Routes, tried in order; the first match decides where the call goes. A call no route
    /// matches goes to the target itself.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// How a target's instances share calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency times load (linkerd2-proxy's default).
    #[default]
    P2cPeakEwma,
    /// Each instance in turn.
    RoundRobin,
    /// An instance at random.
    Random,
    /// The instance with the fewest calls in flight.
    LeastRequest,
}

/// Active health checks: `GET path` on each instance every `interval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// The path probed. For Plinth peers the default asks the peer whether its app is
    /// healthy; for HTTP endpoints it is `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Between probes. Default 5s.
    #[serde(default = "five_seconds", deserialize_with = "duration")]
    pub interval: Duration,
    /// Of one probe. Default 1s.
    #[serde(default = "one_second", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Failed probes in a row that mark an instance unhealthy. Default 3.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that mark it healthy again. Default 1.
    #[serde(default = "one")]
    pub healthy_threshold: u32,
}

/// Passive outlier ejection.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierSpec {
    /// Failures in a row (connection errors, timeouts, 5xx) that eject an instance.
    /// Default 5.
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further one of the same instance lasts that
    /// much longer. Default 30s.
    #[serde(default = "thirty_seconds", deserialize_with = "duration")]
    pub base_ejection_time: Duration,
    /// At most this share of a target's instances is ejected at once. Default 50.
    #[serde(default = "fifty")]
    pub max_ejection_percent: u32,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }
}

/// Retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Retries after the first attempt. Default 2.
    #[serde(default = "two")]
    pub max_retries: u32,
    /// The first wait between attempts; it doubles each time, with full jitter. Default 25ms.
    #[serde(default = "twenty_five_ms", deserialize_with = "duration")]
    pub initial_interval: Duration,
    /// The longest wait. Default 1s.
    #[serde(default = "one_second", deserialize_with = "duration")]
    pub max_interval: Duration,
    /// Retries may add at most this fraction of the calls to the target (the budget), on
    /// top of 10 retries a second. Default 0.2.
    #[serde(default = "budget")]
    pub budget_ratio: f32,
    /// Also retry calls that are not idempotent (POST, PATCH, gRPC calls without a verb)
    /// after they may have reached the app. A connection that was never made is retried
    /// whatever the verb. Default false.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Which failures are retried: `connect-failure`, `timeout`, `gateway-error` (502, 503,
    /// 504 and gRPC UNAVAILABLE), `5xx` (every 5xx). Default: all but `5xx`.
    #[serde(default)]
    pub retry_on: Option<Vec<RetryOn>>,
}

/// A failure a retry policy retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The connection could not be made (the request never left).
    ConnectFailure,
    /// An attempt exceeded its deadline.
    Timeout,
    /// 502, 503, 504, or gRPC UNAVAILABLE.
    GatewayError,
    /// Any 5xx.
    #[serde(rename = "5xx")]
    ServerError,
}

/// A circuit breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakerSpec {
    /// Failed calls in a row that open it. Default 5.
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    /// How long it stays open before letting probes through. Default 30s.
    #[serde(default = "thirty_seconds", deserialize_with = "duration")]
    pub open_for: Duration,
    /// Probes let through while half-open; that many successes close it. Default 1.
    #[serde(default = "one")]
    pub half_open_probes: u32,
}

/// A token bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Sustained calls per second; below 1 for slower rates (0.5 is one call every 2 s).
    pub requests_per_second: f64,
    /// Calls allowed at once above the rate. Default: `requestsPerSecond`, at least 1.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Fault injection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// Delay some calls.
    #[serde(default)]
    pub delay: Option<DelayFault>,
    /// Fail some calls without sending them.
    #[serde(default)]
    pub abort: Option<AbortFault>,
}

/// Delay `percent` of calls by `duration`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelayFault {
    /// The delay.
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// The share of calls delayed, 0 to 100. Default 100.
    #[serde(default = "hundred")]
    pub percent: f64,
}

/// Answer `percent` of calls with `httpStatus` without sending them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortFault {
    /// The HTTP status answered (gRPC callers get its gRPC code).
    pub http_status: u16,
    /// The share of calls aborted, 0 to 100. Default 100.
    #[serde(default = "hundred")]
    pub percent: f64,
}

/// A route: which calls it matches, and where they go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// A name, for metrics and logs.
    #[serde(default)]
    pub name: Option<String>,
    /// What the call must match; every condition given must hold.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Where matching calls go: app ids with weights. Default: the target.
    #[serde(default)]
    pub clusters: Vec<WeightedCluster>,
    /// This route's call deadline, instead of the policy's.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// A token bucket on this route's calls (per API method), on top of the target's.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
}

/// Route conditions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// The method (path) starts with this; a leading `/` is optional.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The method (path) is exactly this.
    #[serde(default)]
    pub path: Option<String>,
    /// The verb is one of these (upper case; gRPC calls without a verb are `POST`).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Each header (lower-case name) has exactly this value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// An app id and its share of a route's calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedCluster {
    /// The app id (or HTTPEndpoint name) calls go to.
    pub app: String,
    /// Its weight relative to the route's other clusters. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

/// Dapr's `HTTPEndpoint`: a non-Plinth HTTP service reachable by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpEndpointSpec {
    /// `http://host:port` or `https://host:port`, optionally with a path prefix.
    pub base_url: String,
    /// Headers added to every call; secret references are not supported yet.
    #[serde(default)]
    pub headers: Vec<EndpointHeader>,
}

/// A header an HTTPEndpoint adds.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointHeader {
    /// The header's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn five() -> u32 {
    5
}
fn fifty() -> u32 {
    50
}
fn hundred() -> f64 {
    100.0
}
fn budget() -> f32 {
    0.2
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn twenty_five_ms() -> Duration {
    Duration::from_millis(25)
}
