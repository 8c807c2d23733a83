//! The mesh's metrics, registered in the shared registry under `plinth_mesh_*`, labelled
//! by target (the app id or HTTPEndpoint called) or, inbound, by caller.

use std::sync::OnceLock;

use plinth_core::{Error, ErrorKind};
use plinth_runtime::metrics::SharedMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::time::Instant;

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

/// Outcomes of a call that succeeded: the HTTP status classes, then `ok` (gRPC apps).
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "ok"];

/// One target's series, found once and kept, so that a call records without building
/// labels. Each series appears on its first use.
#[derive(Debug)]
pub(crate) struct TargetMetrics {
    target: String,
    families: MeshMetrics,
    outcomes: [OnceLock<Counter>; CLASSES.len() + ErrorKind::ALL.len()],
    latency: OnceLock<Histogram>,
    rate_limited: OnceLock<Counter>,
    retries: OnceLock<Counter>,
}

impl TargetMetrics {
    pub(crate) fn new(target: &str, families: &MeshMetrics) -> Self {
        Self {
            target: target.to_string(),
            families: families.clone(),
            outcomes: Default::default(),
            latency: OnceLock::new(),
            rate_limited: OnceLock::new(),
            retries: OnceLock::new(),
        }
    }

    /// Count a finished call, by the app's HTTP status (`None` for a gRPC app) or the
    /// error, and observe its latency.
    pub(crate) fn record(&self, result: Result<Option<u16>, &Error>, started: Instant) {
        let slot = match result {
            Ok(Some(code)) => usize::from(code / 100).clamp(1, 5) - 1,
            Ok(None) => 5,
            Err(e) => {
                CLASSES.len()
                    + ErrorKind::ALL
                        .iter()
                        .position(|k| *k == e.kind())
                        .unwrap_or(0)
            }
        };
        self.outcomes[slot]
            .get_or_init(|| {
                let outcome = CLASSES
                    .get(slot)
                    .copied()
                    .unwrap_or_else(|| ErrorKind::ALL[slot - CLASSES.len()].as_str());
                self.families
                    .requests
                    .get_or_create(&TargetOutcome {
                        target: self.target.clone(),
                        outcome: outcome.to_string(),
                    })
                    .clone()
            })
            .inc();
        self.latency
            .get_or_init(|| {
                self.families
                    .latency
                    .get_or_create(&MeshMetrics::target(&self.target))
                    .clone()
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Count a call a rate limit refused.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited
            .get_or_init(|| {
                self.families
                    .rate_limited
                    .get_or_create(&MeshMetrics::target(&self.target))
                    .clone()
            })
            .inc();
    }

    /// Count a retried attempt.
    pub(crate) fn retried(&self) {
        self.retries
            .get_or_init(|| {
                self.families
                    .retries
                    .get_or_create(&MeshMetrics::target(&self.target))
                    .clone()
            })
            .inc();
    }
}
