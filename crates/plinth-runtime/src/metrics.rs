//! The one metrics registry every layer registers into, served as `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets from 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Labels of an API call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `layotto`, `dapr`, `dapr-http`, `admin`.
    pub api: &'static str,
    /// The rpc or route (`GetState`).
    pub method: String,
    /// The gRPC code name or HTTP status class.
    pub code: &'static str,
}

/// Labels of an API call's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcMethod {
    /// `layotto`, `dapr`, `dapr-http`, `admin`.
    pub api: &'static str,
    /// The rpc or route.
    pub method: String,
}

/// Labels of a component operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentOp {
    /// The component's name.
    pub component: String,
    /// The operation (`get`, `set`, `publish`, ...).
    pub operation: &'static str,
}

/// Labels of a component operation's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentOutcome {
    /// The component's name.
    pub component: String,
    /// The operation.
    pub operation: &'static str,
    /// `ok` or the error kind.
    pub outcome: &'static str,
}

/// Labels of a pub/sub delivery.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// `success`, `retry`, `drop`, `dead_letter`, `parked`, `unimplemented`.
    pub outcome: &'static str,
}

/// Labels of an input-binding event's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BindingEventLabels {
    /// The binding.
    pub binding: String,
    /// `success`, `error`, `reply_retry`, `reply_failed`.
    pub outcome: &'static str,
}

/// Labels naming a component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentName {
    /// The component's name.
    pub component: String,
}

/// Labels of a subscription.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
}

/// Every metric Plinth exports, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// API calls by api, method and code.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// API call latency by api and method.
    pub rpc_latency: Family<RpcMethod, Histogram>,
    /// Component operations by outcome.
    pub component_ops: Family<ComponentOutcome, Counter>,
    /// Component operation latency.
    pub component_latency: Family<ComponentOp, Histogram>,
    /// 1 when a component is UP, 0 otherwise.
    pub component_up: Family<ComponentName, Gauge>,
    /// Pub/sub deliveries by outcome.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Messages parked (retrying at the slowest interval) right now.
    pub parked: Family<TopicLabels, Gauge>,
    /// Messages published.
    pub published: Family<TopicLabels, Counter>,
    /// Input-binding events by outcome.
    pub binding_events: Family<BindingEventLabels, Counter>,
    /// Retries issued by the resilience layer.
    pub retries: Family<ComponentName, Counter>,
    /// Circuit breaker state per component: 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<ComponentName, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with Plinth's metrics under the `plinth` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("plinth");
        let rpc_requests = Family::default();
        let rpc_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let component_ops = Family::default();
        let component_latency =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let component_up = Family::default();
        let deliveries = Family::default();
        let parked = Family::default();
        let published = Family::default();
        let binding_events = Family::default();
        let retries = Family::default();
        let breaker_state = Family::default();
        registry.register(
            "api_requests",
            "API calls by api, method and result code",
            rpc_requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "API call latency",
            rpc_latency.clone(),
        );
        registry.register(
            "component_operations",
            "Component operations by outcome",
            component_ops.clone(),
        );
        registry.register(
            "component_operation_duration_seconds",
            "Component operation latency, including retries",
            component_latency.clone(),
        );
        registry.register(
            "component_up",
            "1 when the component is UP",
            component_up.clone(),
        );
        registry.register(
            "pubsub_deliveries",
            "Deliveries to subscribers by outcome",
            deliveries.clone(),
        );
        registry.register(
            "pubsub_parked_messages",
            "Messages parked after their maximum attempts",
            parked.clone(),
        );
        registry.register("pubsub_published", "Messages published", published.clone());
        registry.register(
            "binding_input_events",
            "Input-binding events delivered to the app, by outcome",
            binding_events.clone(),
        );
        registry.register(
            "resilience_retries",
            "Retries of component calls",
            retries.clone(),
        );
        registry.register(
            "resilience_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            rpc_requests,
            rpc_latency: rpc_latency.clone(),
            component_ops,
            component_latency,
            component_up,
            deliveries,
            parked,
            published,
            binding_events,
            retries,
            breaker_state,
        }
    }

    /// Record one API call.
    pub fn record_rpc(
        &self,
        api: &'static str,
        method: &str,
        code: &'static str,
        elapsed: Duration,
    ) {
        self.rpc_requests
            .get_or_create(&RpcLabels {
                api,
                method: method.to_string(),
                code,
            })
            .inc();
        self.rpc_latency
            .get_or_create(&RpcMethod {
                api,
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Record one component operation.
    pub fn record_component(
        &self,
        component: &str,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.component_ops
            .get_or_create(&ComponentOutcome {
                component: component.to_string(),
                operation,
                outcome,
            })
            .inc();
        self.component_latency
            .get_or_create(&ComponentOp {
                component: component.to_string(),
                operation,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Record one pub/sub delivery outcome.
    pub fn record_delivery(&self, pubsub: &str, topic: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                pubsub: pubsub.to_string(),
                topic: topic.to_string(),
                outcome,
            })
            .inc();
    }

    /// Record the outcome of one input-binding event.
    pub fn record_binding_event(&self, binding: &str, outcome: &'static str) {
        self.binding_events
            .get_or_create(&BindingEventLabels {
                binding: binding.to_string(),
                outcome,
            })
            .inc();
    }

    /// Let a later layer register its own metrics.
    pub fn register<M: prometheus_client::registry::Metric>(
        &self,
        name: &str,
        help: &str,
        metric: M,
    ) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

/// Shared handle to the metrics.
pub type SharedMetrics = Arc<Metrics>;

/// The metrics label of an HTTP status's class: `1xx` to `5xx` (anything else counts as
/// `5xx`).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
