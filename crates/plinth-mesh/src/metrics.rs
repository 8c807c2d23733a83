//! The mesh's metrics, registered in the shared registry under `plinth_mesh_*`, labelled
//! by target (the app id or HTTPEndpoint called) or, inbound, by caller.

use plinth_runtime::metrics::SharedMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// A target.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TargetLabel {
    pub(crate) target: String,
}

/// A target and how a call ended (`2xx`..`5xx`, `grpc_<code>`, or an error kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TargetOutcome {
    pub(crate) target: String,
    pub(crate) outcome: String,
}

/// A caller and how the inbound call ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallerOutcome {
    pub(crate) caller: String,
    pub(crate) outcome: String,
}

fn latency() -> Histogram {
    Histogram::new([
        0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        10.0,
    ])
}

/// Every mesh metric.
#[derive(Debug, Clone)]
pub(crate) struct MeshMetrics {
    pub(crate) requests: Family<TargetOutcome, Counter>,
    pub(crate) latency: Family<TargetLabel, Histogram>,
    pub(crate) retries: Family<TargetLabel, Counter>,
    pub(crate) ejections: Family<TargetLabel, Counter>,
    pub(crate) breaker_state: Family<TargetLabel, Gauge>,
    pub(crate) rate_limited: Family<TargetLabel, Counter>,
    pub(crate) instances: Family<TargetLabel, Gauge>,
    pub(crate) inbound: Family<CallerOutcome, Counter>,
}

impl MeshMetrics {
    /// Register the mesh's metrics in `shared`.
    pub(crate) fn register(shared: &SharedMetrics) -> Self {
        let this = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency as fn() -> Histogram),
            retries: Family::default(),
            ejections: Family::default(),
            breaker_state: Family::default(),
            rate_limited: Family::default(),
            instances: Family::default(),
            inbound: Family::default(),
        };
        shared.register(
            "mesh_requests",
            "Calls to other apps through the mesh, by target and outcome",
            this.requests.clone(),
        );
        shared.register(
            "mesh_request_duration_seconds",
            "Latency of calls to other apps, retries included",
            this.latency.clone(),
        );
        shared.register(
            "mesh_retries",
            "Retried attempts, by target",
            this.retries.clone(),
        );
        shared.register(
            "mesh_ejections",
            "Instances ejected by outlier detection, by target",
            this.ejections.clone(),
        );
        shared.register(
            "mesh_circuit_breaker_state",
            "Circuit breaker state by target: 0 closed, 1 half-open, 2 open",
            this.breaker_state.clone(),
        );
        shared.register(
            "mesh_rate_limited",
            "Calls refused by a rate limit, by target",
            this.rate_limited.clone(),
        );
        shared.register(
            "mesh_instances",
            "Instances known of each target",
            this.instances.clone(),
        );
        shared.register(
            "mesh_inbound_requests",
            "Calls from other sidecars, by caller and outcome",
            this.inbound.clone(),
        );
        this
    }

    pub(crate) fn target(target: &str) -> TargetLabel {
        TargetLabel {
            target: target.to_string(),
        }
    }
}
