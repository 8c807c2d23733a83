//! Remote invocation through the mesh: several Plinth processes on loopback, each serving an
//! app, finding each other through a shared SQLite registry and calling each other from
//! every front door; traffic policy (balancing, failover, retries, timeouts, breakers, rate
//! limits), protocol conversion, gRPC proxying, mTLS and access control.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ::dapr::dapr::proto::common::v1 as common;
use ::dapr::dapr::proto::runtime::v1 as dpb;
use dpb::app_callback_client::AppCallbackClient;
use dpb::app_callback_server::{AppCallback, AppCallbackServer};
use dpb::dapr_client::DaprClient;
use plinth_proto::runtime::v1 as lpb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;

use crate::common::{Plinth, scratch, write};
use crate::upstream::Upstream;

/// Bound on anything a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// A test's mesh: a directory holding the shared registry and the config files.
pub(crate) struct Mesh {
    dir: PathBuf,
}

impl Mesh {
    pub(crate) fn new(tag: &str) -> Self {
        Self { dir: scratch(tag) }
    }

    /// A Configuration with the shared SQLite registry and `mesh` (YAML under `spec.mesh`,
    /// indented by four spaces) plus `extra` spec sections (indented by two).
    pub(crate) fn config(&self, name: &str, mesh: &str, extra: &str) -> PathBuf {
        let registry = self.dir.join("registry.db");
        write(
            &self.dir,
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: plinth.dev/v1alpha1
kind: Configuration
metadata:
  name: {name}
spec:
  nameResolution:
    component: sqlite
    configuration:
      connectionString: {registry}
      updateInterval: 1s
  mesh:
    refreshInterval: 100ms
{mesh}
{extra}
",
                registry = registry.display()
            ),
        )
    }

    /// A resources directory holding `yaml`.
    pub(crate) fn resources(&self, name: &str, yaml: &str) -> PathBuf {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).expect("resources dir");
        write(&dir, "resources.yaml", yaml);
        dir
    }

    /// Start the calling sidecar, app `front` without an app, with `config` and the
    /// resources in `resources`.
    fn caller(&self, config: &Path, resources: &Path) -> Plinth {
        self.start(
            "front",
            None,
            config,
            &["--resources-path", resources.to_str().expect("path")],
        )
    }

    /// Start a Plinth for `app_id` (with its app on `app_port`). It registers itself with
    /// the registry before it says it started.
    pub(crate) fn start(
        &self,
        app_id: &str,
        app_port: Option<u16>,
        config: &Path,
        extra: &[&str],
    ) -> Plinth {
        let port = app_port.map(|p| p.to_string());
        let mut args = vec![
            "--app-id",
            app_id,
            "--config",
            config.to_str().expect("path"),
        ];
        if let Some(port) = &port {
            args.extend(["--app-port", port.as_str()]);
        }
        args.extend(extra);
        Plinth::start_with(&args, None)
    }
}

/// The next call the app got from another app, skipping its own sidecar's calls (the
/// subscription discovery `GET /dapr/subscribe`).
async fn next_call(app: &mut Upstream) -> crate::upstream::Recorded {
    loop {
        let seen = app.next_request(WAIT).await;
        if !seen.path.starts_with("/dapr/") {
            return seen;
        }
    }
}

/// Whether a call from another app is waiting (the sidecar's own calls do not count).
fn has_call(app: &mut Upstream) -> bool {
    while let Some(seen) = app.try_next_request() {
        if !seen.path.starts_with("/dapr/") {
            return true;
        }
    }
    false
}

/// Wait until `plinth`'s metrics contain `needle`.
async fn wait_metric(plinth: &Plinth, needle: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, metrics) = plinth.admin_get("/metrics").await;
        if metrics.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "no {needle} in {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(seen: &'a crate::upstream::Recorded, name: &str) -> &'a str {
    seen.headers
        .get(name)
        .map(String::as_str)
        .unwrap_or_default()
}

async fn dapr_client(plinth: &Plinth) -> DaprClient<tonic::transport::Channel> {
    DaprClient::connect(format!("http://{}", plinth.dapr_grpc))
        .await
        .expect("connect to the Dapr gRPC API")
}

fn dapr_invoke(id: &str, method: &str, verb: i32, data: &[u8]) -> dpb::InvokeServiceRequest {
    dpb::InvokeServiceRequest {
        id: id.into(),
        message: Some(common::InvokeRequest {
            method: method.into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: data.to_vec(),
            }),
            content_type: "text/plain".into(),
            http_extension: Some(common::HttpExtension {
                verb,
                querystring: "via=dapr-grpc".into(),
            }),
        }),
    }
}

#[tokio::test]
async fn every_front_door_reaches_a_remote_app() {
    let mesh = Mesh::new("mesh-doors");
    let cfg = mesh.config("doors", "", "");
    let mut orders = Upstream::start("orders-1").await;
    let _callee = mesh.start("orders", Some(orders.addr.port()), &cfg, &[]);
    let caller = mesh.start("shop", None, &cfg, &[]);
    let http = caller.dapr_http();

    // Dapr HTTP: verb, path, query, headers, body and W3C trace context pass through.
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let resp = http
        .request(
            "PUT",
            "/v1.0/invoke/orders/method/items/42?color=red&size=%20L",
            &[
                ("x-custom", "1"),
                ("traceparent", trace),
                ("content-type", "text/plain"),
            ],
            "hello",
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "echo:hello");
    assert_eq!(resp.header("x-upstream"), Some("orders-1"));
    let seen = next_call(&mut orders).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("PUT", "/items/42")
    );
    assert_eq!(seen.query, "color=red&size=%20L");
    assert_eq!(header(&seen, "x-custom"), "1");
    assert_eq!(header(&seen, "traceparent"), trace);
    assert_eq!(header(&seen, "content-type"), "text/plain");
    assert_eq!(header(&seen, "dapr-caller-app-id"), "shop");
    assert_eq!(header(&seen, "dapr-callee-app-id"), "orders");
    assert!(
        !seen.headers.keys().any(|k| k.starts_with("plinth-")),
        "{:?}",
        seen.headers
    );

    // The app's status comes back as it is.
    let resp = http.get("/v1.0/invoke/orders/method/status/418").await;
    assert_eq!(resp.status, 418);
    assert_eq!(resp.text(), "status 418");
    next_call(&mut orders).await;

    // A plain path with dapr-app-id; a trace context is started when the caller sent none.
    let resp = http
        .request("POST", "/plain/path", &[("dapr-app-id", "orders")], "x")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = next_call(&mut orders).await;
    assert_eq!(seen.path, "/plain/path");
    assert!(
        header(&seen, "traceparent").starts_with("00-"),
        "{:?}",
        seen.headers
    );

    // Dapr gRPC InvokeService, to an HTTP app: the HTTP extension gives verb and query.
    let mut dapr = dapr_client(&caller).await;
    let answer = dapr
        .invoke_service(dapr_invoke("orders", "grpc/hi", 4, b"g"))
        .await
        .expect("dapr invoke")
        .into_inner();
    assert_eq!(answer.data.map(|d| d.value), Some(b"echo:g".to_vec()));
    let seen = next_call(&mut orders).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("PUT", "/grpc/hi")
    );
    assert_eq!(seen.query, "via=dapr-grpc");

    // An HTTP status other than 2xx is the gRPC caller's error.
    let err = dapr
        .invoke_service(dapr_invoke("orders", "status/503", 1, b""))
        .await
        .expect_err("503");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    next_call(&mut orders).await;

    // Layotto InvokeService, with its metadata passed on as headers.
    let mut layotto = caller.client().await;
    let mut request = tonic::Request::new(lpb::InvokeServiceRequest {
        id: "orders".into(),
        message: Some(lpb::CommonInvokeRequest {
            method: "layotto".into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: b"l".to_vec(),
            }),
            content_type: "text/plain".into(),
            http_extension: Some(lpb::HttpExtension {
                verb: 3,
                querystring: String::new(),
            }),
        }),
    });
    request
        .metadata_mut()
        .insert("x-layotto", "yes".parse().expect("value"));
    let answer = layotto
        .invoke_service(request)
        .await
        .expect("layotto invoke")
        .into_inner();
    assert_eq!(answer.data.map(|d| d.value), Some(b"echo:l".to_vec()));
    let seen = next_call(&mut orders).await;
    assert_eq!(header(&seen, "x-layotto"), "yes");

    // An app nobody serves is unavailable, and says which.
    let resp = http.get("/v1.0/invoke/nobody/method/x").await;
    let message = resp.assert_error(503, "ERR_DIRECT_INVOKE");
    assert!(message.contains("nobody"), "{message}");

    // The caller's metrics count the calls per target.
    let (_, metrics) = caller.admin_get("/metrics").await;
    assert!(
        metrics.contains("plinth_mesh_requests_total{target=\"orders\",outcome=\"2xx\"}"),
        "{metrics}"
    );
}

/// `n` instances of `app`, each with its own upstream named `app-i`.
async fn instances(
    mesh: &Mesh,
    app: &str,
    n: usize,
    cfg: &Path,
    extra: &[&str],
) -> Vec<(Upstream, Plinth)> {
    let mut out = Vec::new();
    for i in 0..n {
        let upstream = Upstream::start(&format!("{app}-{i}")).await;
        let plinth = mesh.start(app, Some(upstream.addr.port()), cfg, extra);
        out.push((upstream, plinth));
    }
    out
}

/// Call `app` until every one of `n` instances is known to the caller (the registry is
/// read again every 100 ms), returning who answered each of `calls` calls.
async fn spread(caller: &Plinth, path: &str, calls: usize) -> HashMap<String, usize> {
    let http = caller.dapr_http();
    let mut counts = HashMap::new();
    for _ in 0..calls {
        let resp = http.get(path).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        *counts
            .entry(resp.header("x-upstream").unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    counts
}

async fn wait_instances(caller: &Plinth, app: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = spread(caller, &format!("/v1.0/invoke/{app}/method/who"), 20).await;
        if seen.len() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {seen:?} of {n} instances answer"
        );
    }
}

#[tokio::test]
async fn round_robin_spreads_calls_and_fails_over_when_an_instance_dies() {
    let mesh = Mesh::new("mesh-lb");
    let cfg = mesh.config("lb", "", "");
    let policy = mesh.resources(
        "policy",
        "apiVersion: plinth.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: catalog
spec:
  loadBalancer: round-robin
  retry:
    maxRetries: 2
  outlierDetection:
    consecutiveFailures: 1
    baseEjectionTime: 60s
",
    );
    let mut catalog = instances(&mesh, "catalog", 3, &cfg, &[]).await;
    let caller = mesh.caller(&cfg, &policy);
    wait_instances(&caller, "catalog", 3).await;
    let counts = spread(&caller, "/v1.0/invoke/catalog/method/who", 30).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 10), "round robin: {counts:?}");

    // Kill one instance outright: its registration stays until it expires, but connection
    // failures are retried on another instance and eject it.
    let (_, mut dead) = catalog.remove(0);
    dead.kill();
    let counts = spread(&caller, "/v1.0/invoke/catalog/method/who", 30).await;
    assert!(!counts.contains_key("catalog-0"), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 30);
    let (_, metrics) = caller.admin_get("/metrics").await;
    assert!(
        metrics.contains("plinth_mesh_ejections_total{target=\"catalog\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn health_checks_keep_calls_off_instances_whose_app_is_unhealthy() {
    let mesh = Mesh::new("mesh-health");
    let cfg = mesh.config("health", "", "");
    let policy = mesh.resources(
        "policy",
        "apiVersion: plinth.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: stock
spec:
  loadBalancer: round-robin
  healthCheck:
    interval: 100ms
    timeout: 1s
    unhealthyThreshold: 1
    healthyThreshold: 1
",
    );
    let ok = Upstream::start("stock-ok").await;
    let _ok = mesh.start("stock", Some(ok.addr.port()), &cfg, &[]);
    // This instance's sidecar is up, but its app fails its health checks.
    let sick = Upstream::start("stock-sick").await;
    let _sick = mesh.start(
        "stock",
        Some(sick.addr.port()),
        &cfg,
        &[
            "--enable-app-health-check",
            "--app-health-check-path",
            "/status/503",
            "--app-health-probe-interval",
            "1",
            "--app-health-threshold",
            "1",
        ],
    );
    let caller = mesh.caller(&cfg, &policy);
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = spread(&caller, "/v1.0/invoke/stock/method/who", 10).await;
        if counts.len() == 1 && counts.contains_key("stock-ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "calls still reach the sick instance: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = spread(&caller, "/v1.0/invoke/stock/method/who", 20).await;
    assert_eq!(counts.get("stock-ok"), Some(&20), "{counts:?}");
}

#[tokio::test]
async fn least_request_and_p2c_prefer_idle_instances() {
    let mesh = Mesh::new("mesh-lr");
    let cfg = mesh.config("lr", "", "");
    let policy = mesh.resources(
        "policy",
        "apiVersion: plinth.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: slow
spec:
  loadBalancer: least-request
",
    );
    let slow = instances(&mesh, "slow", 2, &cfg, &[]).await;
    let caller = mesh.caller(&cfg, &policy);
    wait_instances(&caller, "slow", 2).await;
    // Hold one call on whichever instance gets it; every later call goes to the other.
    let http = caller.dapr_http();
    let held = tokio::spawn(async move { http.get("/v1.0/invoke/slow/method/hold").await });
    let deadline = Instant::now() + WAIT;
    let busy = loop {
        if let Some(i) = slow.iter().position(|(u, _)| u.held() == 1) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the held call reached no instance"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let counts = spread(&caller, "/v1.0/invoke/slow/method/who", 10).await;
    assert_eq!(
        counts.get(&format!("slow-{}", 1 - busy)),
        Some(&10),
        "{counts:?}"
    );
    slow[busy].0.release();
    assert_eq!(held.await.expect("held call").status, 200);
}

#[tokio::test]
async fn retries_timeouts_breakers_and_rate_limits() {
    let mesh = Mesh::new("mesh-policy");
    let cfg = mesh.config("policy", "", "");
    let policy = mesh.resources(
        "policy",
        "apiVersion: plinth.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: flaky
spec:
  timeout: 400ms
  retry:
    maxRetries: 2
    initialInterval: 1ms
  circuitBreaker:
    consecutiveFailures: 6
    openFor: 500ms
---
apiVersion: plinth.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: limited
spec:
  target: flaky-limited
  rateLimit:
    requestsPerSecond: 0.01
    burst: 2
",
    );
    let mut flaky = Upstream::start("flaky").await;
    let _callee = mesh.start("flaky", Some(flaky.addr.port()), &cfg, &[]);
    let mut limited = Upstream::start("limited").await;
    let _limited = mesh.start("flaky-limited", Some(limited.addr.port()), &cfg, &[]);
    let caller = mesh.caller(&cfg, &policy);
    let http = caller.dapr_http();

    // An idempotent call answered 503 is tried three times; a POST once.
    let resp = http.get("/v1.0/invoke/flaky/method/status/503").await;
    assert_eq!(resp.status, 503);
    for _ in 0..3 {
        assert_eq!(next_call(&mut flaky).await.path, "/status/503");
    }
    let resp = http
        .request("POST", "/v1.0/invoke/flaky/method/status/503", &[], "")
        .await;
    assert_eq!(resp.status, 503);
    next_call(&mut flaky).await;
    assert!(!has_call(&mut flaky), "a POST was retried");

    // The deadline: a call held by the app times out, whatever the retries.
    let resp = http.get("/v1.0/invoke/flaky/method/hold").await;
    let message = resp.assert_error(504, "ERR_DIRECT_INVOKE");
    assert!(message.contains("400ms"), "{message}");
    // Layotto's rpc_request_timeout shortens it.
    let mut layotto = caller.client().await;
    let mut request = tonic::Request::new(lpb::InvokeServiceRequest {
        id: "flaky".into(),
        message: Some(lpb::CommonInvokeRequest {
            method: "hold".into(),
            ..Default::default()
        }),
    });
    request
        .metadata_mut()
        .insert("rpc_request_timeout", "50".parse().expect("value"));
    let err = layotto.invoke_service(request).await.expect_err("timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("50ms"), "{err:?}");
    flaky.release();
    while has_call(&mut flaky) {}

    // The breaker opens after six failures in a row (one GET with retries, one POST, the
    // timeouts... counted afresh here), fails fast while open, then lets a probe through.
    for _ in 0..6 {
        http.request("POST", "/v1.0/invoke/flaky/method/status/500", &[], "")
            .await;
    }
    while has_call(&mut flaky) {}
    let resp = http
        .request("POST", "/v1.0/invoke/flaky/method/echo", &[], "x")
        .await;
    let message = resp.assert_error(503, "ERR_DIRECT_INVOKE");
    assert!(message.contains("circuit breaker"), "{message}");
    assert!(!has_call(&mut flaky), "an open breaker let a call through");
    let (_, metrics) = caller.admin_get("/metrics").await;
    assert!(
        metrics.contains("plinth_mesh_circuit_breaker_state{target=\"flaky\"} 2"),
        "{metrics}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = http
            .request("POST", "/v1.0/invoke/flaky/method/echo", &[], "x")
            .await;
        if resp.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never closed: {}",
            resp.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = caller.admin_get("/metrics").await;
    assert!(
        metrics.contains("plinth_mesh_circuit_breaker_state{target=\"flaky\"} 0"),
        "{metrics}"
    );

    // The rate limit: a burst of two, then 429 / RESOURCE_EXHAUSTED.
    let statuses: Vec<u16> = futures::future::join_all(
        (0..3).map(|_| async { http.get("/v1.0/invoke/flaky-limited/method/x").await.status }),
    )
    .await;
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 200, 429], "{statuses:?}");
    let err = dapr_client(&caller)
        .await
        .invoke_service(dapr_invoke("flaky-limited", "x", 1, b""))
        .await
        .expect_err("limited");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let (_, metrics) = caller.admin_get("/metrics").await;
    assert!(
        metrics.contains("plinth_mesh_rate_limited_total{target=\"flaky-limited\"} 2"),
        "{metrics}"
    );
    while has_call(&mut limited) {}
}

#[tokio::test]
async fn routes_split_by_weight_and_faults_are_injected() {
    let mesh = Mesh::new("mesh-routes");
    let cfg = mesh.config("routes", "", "");
    let policy = mesh.resources(
        "policy",
        "apiVersion: plinth.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: cart
spec:
  routes:
  - name: canary
    match:
      headers:
        x-canary: \"1\"
    clusters:
    - app: cart-v2
  - match:
      pathPrefix: /split
    clusters:
    - app: cart
      weight: 1
    - app: cart-v2
      weight: 1
---
apiVersion: plinth.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: broken
spec:
  target: cart-broken
  fault:
    abort:
      httpStatus: 503
",
    );
    let v1 = Upstream::start("cart-v1").await;
    let _v1 = mesh.start("cart", Some(v1.addr.port()), &cfg, &[]);
    let v2 = Upstream::start("cart-v2").await;
    let _v2 = mesh.start("cart-v2", Some(v2.addr.port()), &cfg, &[]);
    let caller = mesh.caller(&cfg, &policy);
    let http = caller.dapr_http();
    let resp = http.get("/v1.0/invoke/cart/method/x").await;
    assert_eq!(resp.header("x-upstream"), Some("cart-v1"));
    let resp = http
        .request(
            "GET",
            "/v1.0/invoke/cart/method/x",
            &[("x-canary", "1")],
            "",
        )
        .await;
    assert_eq!(resp.header("x-upstream"), Some("cart-v2"));
    let counts = spread(&caller, "/v1.0/invoke/cart/method/split", 60).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.values().all(|&n| n >= 10), "{counts:?}");
    let resp = http.get("/v1.0/invoke/cart-broken/method/x").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("x-plinth-fault"), Some("abort"));
}

/// A gRPC app: Dapr's AppCallback (echoing invocations) and gRPC health (a streaming rpc
/// to proxy).
async fn grpc_app() -> u16 {
    #[derive(Debug)]
    struct App;
    #[tonic::async_trait]
    impl AppCallback for App {
        async fn on_invoke(
            &self,
            request: tonic::Request<common::InvokeRequest>,
        ) -> Result<tonic::Response<common::InvokeResponse>, tonic::Status> {
            let (metadata, _, req) = request.into_parts();
            if req.method == "missing" {
                return Err(tonic::Status::not_found("no such thing"));
            }
            let caller = metadata
                .get("dapr-caller-app-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let mut data = format!("{}:{caller}:", req.method).into_bytes();
            data.extend(req.data.map(|d| d.value).unwrap_or_default());
            Ok(tonic::Response::new(common::InvokeResponse {
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: data,
                }),
                content_type: "text/plain".into(),
            }))
        }
        async fn list_topic_subscriptions(
            &self,
            _: tonic::Request<()>,
        ) -> Result<tonic::Response<dpb::ListTopicSubscriptionsResponse>, tonic::Status> {
            Ok(tonic::Response::new(Default::default()))
        }
        async fn on_topic_event(
            &self,
            _: tonic::Request<dpb::TopicEventRequest>,
        ) -> Result<tonic::Response<dpb::TopicEventResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("no"))
        }
        async fn list_input_bindings(
            &self,
            _: tonic::Request<()>,
        ) -> Result<tonic::Response<dpb::ListInputBindingsResponse>, tonic::Status> {
            Ok(tonic::Response::new(Default::default()))
        }
        async fn on_binding_event(
            &self,
            _: tonic::Request<dpb::BindingEventRequest>,
        ) -> Result<tonic::Response<dpb::BindingEventResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("no"))
        }
        async fn on_bulk_topic_event(
            &self,
            _: tonic::Request<dpb::TopicEventBulkRequest>,
        ) -> Result<tonic::Response<dpb::TopicEventBulkResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("no"))
        }
        async fn on_job_event(
            &self,
            _: tonic::Request<dpb::JobEventRequest>,
        ) -> Result<tonic::Response<dpb::JobEventResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("no"))
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tokio::spawn(async move {
        let _keep = reporter;
        let _ = tonic::transport::Server::builder()
            .add_service(AppCallbackServer::new(App))
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    port
}

#[tokio::test]
async fn protocols_convert_both_ways_and_grpc_calls_are_proxied() {
    let mesh = Mesh::new("mesh-proto");
    let cfg = mesh.config("proto", "", "");
    let mut web = Upstream::start("web").await;
    let endpoint = mesh.resources(
        "endpoints",
        &format!(
            "apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata:
  name: legacy
spec:
  baseUrl: {}/api
  headers:
  - name: x-endpoint
    value: legacy
",
            web.url()
        ),
    );
    let app_port = grpc_app().await;
    let _grpc = mesh.start("ledger", Some(app_port), &cfg, &["--app-protocol", "grpc"]);
    let caller = mesh.caller(&cfg, &endpoint);

    // HTTP invoke of a gRPC app (Dapr's AppCallback behind the callee's sidecar).
    let http = caller.dapr_http();
    let resp = http
        .request("POST", "/v1.0/invoke/ledger/method/post", &[], "10")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "post:front:10");
    let resp = http.get("/v1.0/invoke/ledger/method/missing").await;
    assert_eq!(resp.status, 404, "{}", resp.text());

    // gRPC InvokeService of an HTTP/1.1 service: an HTTPEndpoint, and a URL.
    let mut dapr = dapr_client(&caller).await;
    let answer = dapr
        .invoke_service(dapr_invoke("legacy", "orders", 3, b"e"))
        .await
        .expect("endpoint")
        .into_inner();
    assert_eq!(answer.data.map(|d| d.value), Some(b"echo:e".to_vec()));
    let seen = next_call(&mut web).await;
    assert_eq!(seen.path, "/api/orders");
    assert_eq!(header(&seen, "x-endpoint"), "legacy");
    let resp = http
        .get(&format!("/v1.0/invoke/{}/method/direct", web.url()))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(next_call(&mut web).await.path, "/direct");

    // gRPC proxying: any service, unary and streaming, with dapr-app-id metadata.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", caller.dapr_grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut callback = AppCallbackClient::new(channel.clone());
    let mut request = tonic::Request::new(common::InvokeRequest {
        method: "proxied".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("dapr-app-id", "ledger".parse().expect("value"));
    let answer = callback
        .on_invoke(request)
        .await
        .expect("proxied")
        .into_inner();
    assert_eq!(
        answer.data.map(|d| d.value),
        Some(b"proxied:front:".to_vec())
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("dapr-app-id", "ledger".parse().expect("value"));
    let mut stream = health.watch(request).await.expect("watch").into_inner();
    let first = stream.message().await.expect("stream").expect("a status");
    assert_eq!(
        first.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // An app id nobody serves is UNAVAILABLE.
    let mut request = tonic::Request::new(common::InvokeRequest::default());
    request
        .metadata_mut()
        .insert("dapr-app-id", "nobody".parse().expect("value"));
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", caller.dapr_grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let err = AppCallbackClient::new(channel)
        .on_invoke(request)
        .await
        .expect_err("nobody");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn bad_mesh_config_stops_startup_naming_the_field() {
    let mesh = Mesh::new("mesh-bad");
    let cfg = mesh.config("bad", "    loadBalancer: fastest\n", "");
    let failed = Plinth::start_failure(&["--config", cfg.to_str().expect("path")], &[], None);
    assert!(failed.output.contains("spec.mesh"), "{}", failed.output);
    let policy = mesh.resources(
        "policy",
        "apiVersion: plinth.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: x
spec:
  loadBalancer: fastest
",
    );
    let cfg = mesh.config("ok", "", "");
    let failed = Plinth::start_failure(
        &[
            "--config",
            cfg.to_str().expect("path"),
            "--resources-path",
            policy.to_str().expect("path"),
        ],
        &[],
        None,
    );
    assert!(failed.output.contains("loadBalancer"), "{}", failed.output);
    assert!(failed.output.contains("fastest"), "{}", failed.output);
}

/// `mesh.tls` lines (under `spec.mesh`) for `app` with a certificate from `ca`.
fn tls_section(ca: &plinth_mesh::testing::Ca, dir: &Path, app: &str) -> String {
    let id = plinth_mesh::tls::Identity::new("public", "default", app);
    let files = ca.issue(&id, dir, app).expect("issue a certificate");
    format!(
        "    tls:\n      certFile: {}\n      keyFile: {}\n      caFile: {}\n",
        files.cert_file.display(),
        files.key_file.display(),
        files.ca_file.display()
    )
}

#[tokio::test]
async fn mtls_identifies_callers_and_refuses_strangers() {
    let mesh = Mesh::new("mesh-mtls");
    let ca = plinth_mesh::testing::write_ca(&mesh.dir).expect("CA");
    let other_dir = mesh.dir.join("other-ca");
    std::fs::create_dir_all(&other_dir).expect("dir");
    let other_ca = plinth_mesh::testing::write_ca(&other_dir).expect("second CA");

    let mut orders = Upstream::start("orders").await;
    let orders_cfg = mesh.config(
        "orders",
        &tls_section(&ca, &mesh.dir, "orders"),
        "  accessControl:
    defaultAction: deny
    policies:
    - appId: shop
      defaultAction: deny
      namespace: default
      operations:
      - name: /allowed/*
        httpVerb: [GET]
        action: allow
",
    );
    let callee = mesh.start("orders", Some(orders.addr.port()), &orders_cfg, &[]);
    let shop = mesh.start(
        "shop",
        None,
        &mesh.config("shop", &tls_section(&ca, &mesh.dir, "shop"), ""),
        &[],
    );
    let guest = mesh.start(
        "guest",
        None,
        &mesh.config("guest", &tls_section(&ca, &mesh.dir, "guest"), ""),
        &[],
    );

    // Accepted: the caller's id comes from its certificate.
    let resp = shop
        .dapr_http()
        .get("/v1.0/invoke/orders/method/allowed/1")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = next_call(&mut orders).await;
    assert_eq!(header(&seen, "dapr-caller-app-id"), "shop");

    // Access control: another verb, another path, another app.
    for (who, verb, path) in [
        (&shop, "POST", "/v1.0/invoke/orders/method/allowed/1"),
        (&shop, "GET", "/v1.0/invoke/orders/method/other"),
        (&guest, "GET", "/v1.0/invoke/orders/method/allowed/1"),
    ] {
        let resp = who.dapr_http().request(verb, path, &[], "").await;
        let message = resp.assert_error(403, "ERR_DIRECT_INVOKE");
        assert!(message.contains("access control"), "{message}");
    }
    let err = dapr_client(&guest)
        .await
        .invoke_service(dapr_invoke("orders", "allowed/1", 1, b""))
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(!has_call(&mut orders), "a refused call reached the app");

    // A sidecar whose certificate another CA signed is refused at the handshake.
    let stranger = mesh.start(
        "stranger",
        None,
        &mesh.config(
            "stranger",
            &tls_section(&other_ca, &other_dir, "stranger"),
            "",
        ),
        &[],
    );
    let resp = stranger
        .dapr_http()
        .get("/v1.0/invoke/orders/method/allowed/1")
        .await;
    assert_ne!(resp.status, 200, "{}", resp.text());
    assert!(!has_call(&mut orders), "a stranger's call reached the app");
    // The callee counts the refused handshake once its side of it is over.
    wait_metric(&callee, "outcome=\"tls_rejected\"").await;
    let (_, metrics) = callee.admin_get("/metrics").await;
    assert!(
        metrics.contains(
            "plinth_mesh_inbound_requests_total{caller=\"guest\",outcome=\"permission_denied\"}"
        ),
        "{metrics}"
    );

    // A caller that resolves `orders` to a sidecar proving another app id refuses it.
    let static_cfg = write(
        &mesh.dir,
        "impostor.yaml",
        &format!(
            "apiVersion: plinth.dev/v1alpha1
kind: Configuration
metadata:
  name: impostor
spec:
  nameResolution:
    component: static
    configuration:
      apps:
        orders: [\"{}\"]
  mesh:
{}",
            guest.mesh,
            tls_section(&ca, &mesh.dir, "fooled")
        ),
    );
    let fooled = Plinth::start_with(
        &[
            "--app-id",
            "fooled",
            "--config",
            static_cfg.to_str().expect("path"),
        ],
        None,
    );
    let resp = fooled
        .dapr_http()
        .get("/v1.0/invoke/orders/method/allowed/1")
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    let body = resp.text();
    assert!(body.contains("spiffe://public/ns/default/guest"), "{body}");
    assert!(body.contains("spiffe://public/ns/default/orders"), "{body}");

    // A sidecar whose own certificate names another app does not start.
    let wrong = write(
        &mesh.dir,
        "wrong.yaml",
        &format!(
            "apiVersion: plinth.dev/v1alpha1
kind: Configuration
metadata:
  name: wrong
spec:
  mesh:
{}",
            tls_section(&ca, &mesh.dir, "someone-else")
        ),
    );
    let failed = Plinth::start_failure(
        &["--app-id", "me", "--config", wrong.to_str().expect("path")],
        &[],
        None,
    );
    assert!(failed.output.contains("spec.mesh.tls"), "{}", failed.output);
    assert!(failed.output.contains("someone-else"), "{}", failed.output);
}
