//! The caller's side of the mesh: [`Mesh`] is what the invocation building block calls for
//! apps this sidecar does not serve. A call is rate-limited, routed, maybe delayed or
//! aborted by an injected fault, then attempted through the target's circuit breaker on a
//! balanced instance, and retried within its budget and deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use plinth_core::{Error, ErrorKind, Result};
use plinth_runtime::app::{
    AppStatus, HttpCall, InvokeAnswer, InvokeRequest, InvokeResponse, passthrough,
};
use plinth_runtime::invoke::RemoteApps;
use plinth_runtime::resilience::PolicyConfig;
use tokio::time::Instant;

use crate::balance::{EndpointSet, Verdict};
use crate::channel::{Attempt, Channel, HttpEndpoint, answer_status};
use crate::client::Transport;
use crate::config::{RetryOn, TrafficPolicySpec};
use crate::metrics::MeshMetrics;
use crate::replay::Replay;
use crate::resolve::Resolver;
use crate::target::CallView as _;
use crate::target::{SharedTarget, Target};
use crate::tls::Identity;

/// Layotto's per-call deadline header, in milliseconds.
pub const RPC_REQUEST_TIMEOUT: &str = "rpc_request_timeout";

/// At most this many targets are kept (policies built on demand and resolved instance
/// sets); past it, the least recently used unconfigured ones are forgotten.
const MAX_TARGETS: usize = 4096;

/// The verbs retried after a request may have reached the app (RFC 9110 idempotent
/// methods).
const IDEMPOTENT: &[&str] = &["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

/// What the mesh is built from.
#[derive(Debug)]
pub struct MeshOptions {
    /// This sidecar's app id.
    pub app_id: String,
    /// Its namespace.
    pub namespace: String,
    /// Its trust domain (mTLS identities).
    pub trust_domain: String,
    /// How to reach peers.
    pub transport: Transport,
    /// Name resolution; `None` when none is configured.
    pub resolver: Option<Arc<dyn Resolver>>,
    /// How often instances are resolved again.
    pub refresh_interval: Duration,
    /// Traffic policies by target, with the file each came from.
    pub policies: Vec<(String, String, TrafficPolicySpec)>,
    /// The policy of targets no TrafficPolicy names.
    pub defaults: TrafficPolicySpec,
    /// Dapr Resiliency policies by app id.
    pub dapr_policies: std::collections::BTreeMap<String, PolicyConfig>,
    /// HTTPEndpoints by name.
    pub http_endpoints: Vec<HttpEndpoint>,
    /// The largest answer body read.
    pub max_body: usize,
    /// The shared metrics registry.
    pub metrics: plinth_runtime::metrics::SharedMetrics,
}

/// The resolved instances of one app, refreshed in the background while it is used.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) app_id: String,
    pub(crate) set: EndpointSet,
    last_used: Mutex<Instant>,
}

/// Remote invocation: the mesh's client side.
#[derive(Debug, Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    app_id: String,
    namespace: String,
    trust_domain: String,
    transport: Arc<Transport>,
    resolver: Option<Arc<dyn Resolver>>,
    refresh_interval: Duration,
    configured: HashMap<String, SharedTarget>,
    defaults: TrafficPolicySpec,
    dapr_policies: std::collections::BTreeMap<String, PolicyConfig>,
    dynamic: Mutex<HashMap<String, (SharedTarget, Instant)>>,
    clusters: Mutex<HashMap<(String, String), Arc<Cluster>>>,
    http_endpoints: HashMap<String, Arc<HttpEndpoint>>,
    max_body: usize,
    metrics: MeshMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mesh {
    /// Build the mesh; policies are validated here (errors name the file and field).
    pub fn new(options: MeshOptions) -> Result<Self> {
        let metrics = MeshMetrics::register(&options.metrics);
        let mut configured = HashMap::new();
        for (source, name, spec) in &options.policies {
            let target = spec.target.clone().unwrap_or_else(|| name.clone());
            if configured.contains_key(&target) {
                return Err(Error::invalid_argument(format!(
                    "{source}: TrafficPolicy {name:?}: another TrafficPolicy already names target {target:?}"
                )));
            }
            let policy = Target::new(
                &target,
                spec,
                options.dapr_policies.get(&target),
                &metrics,
                source,
            )?;
            configured.insert(target, Arc::new(policy));
        }
        // Validate the defaults once, so a bad one stops startup rather than every call.
        Target::new(
            "defaults",
            &options.defaults,
            None,
            &metrics,
            "mesh.defaults",
        )?;
        let http_endpoints = options
            .http_endpoints
            .into_iter()
            .map(|e| (e.name().to_string(), Arc::new(e)))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                app_id: options.app_id,
                namespace: options.namespace,
                trust_domain: options.trust_domain,
                transport: Arc::new(options.transport),
                resolver: options.resolver,
                refresh_interval: options.refresh_interval,
                configured,
                defaults: options.defaults,
                dapr_policies: options.dapr_policies,
                dynamic: Mutex::new(HashMap::new()),
                clusters: Mutex::new(HashMap::new()),
                http_endpoints,
                max_body: options.max_body,
                metrics,
            }),
        })
    }

    pub(crate) fn metrics(&self) -> &MeshMetrics {
        &self.inner.metrics
    }

    /// Proxy a gRPC call (streams and all) to `target`'s gRPC app through its sidecar: the
    /// Dapr way of calling another app's gRPC services with `dapr-app-id` metadata. The
    /// target's rate limit applies; a streamed call is not retried.
    pub async fn proxy_grpc(
        &self,
        target: &str,
        caller: &str,
        req: http::Request<crate::client::Body>,
    ) -> Result<http::Response<crate::client::Body>> {
        let (id, ns) = self.split(target);
        let (id, ns) = (id.to_string(), ns.to_string());
        let policy = self.policy(&id)?;
        if let Err(e) = policy.admit() {
            policy.metrics.rate_limited();
            return Err(e);
        }
        if let Some(breaker) = &policy.breaker {
            breaker.admit()?;
        }
        let started = Instant::now();
        let cluster = self.cluster(&id, &ns).await;
        let result = match cluster {
            Ok(cluster) => self.proxy_to(&cluster, target, caller, req).await,
            Err(e) => Err(e),
        };
        if let Some(breaker) = &policy.breaker {
            breaker.record(matches!(&result, Err(e) if instance_failure(e).is_some()));
        }
        policy
            .metrics
            .record(result.as_ref().map(|r| Some(r.status().as_u16())), started);
        result
    }

    async fn proxy_to(
        &self,
        cluster: &Cluster,
        target: &str,
        caller: &str,
        req: http::Request<crate::client::Body>,
    ) -> Result<http::Response<crate::client::Body>> {
        let Some(call) = cluster.set.pick(&[]) else {
            return Err(Error::unavailable(format!(
                "app {target:?} has no instance"
            )));
        };
        let (mut parts, body) = req.into_parts();
        crate::wire::retarget(&mut parts, &call.endpoint.addr.to_string())?;
        crate::wire::strip(&mut parts.headers);
        for (name, value) in [
            (crate::wire::PROXY, "grpc"),
            (crate::wire::TARGET, target),
            (crate::wire::CALLER, caller),
        ] {
            let value = http::HeaderValue::try_from(value)
                .map_err(|_| Error::invalid_argument(format!("{value:?} is not a header value")))?;
            parts.headers.insert(name, value);
        }
        let result = call
            .endpoint
            .conn
            .send(
                &self.inner.transport,
                http::Request::from_parts(parts, body),
            )
            .await;
        let (verdict, result) = match result {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                if let Some(kind) = parts
                    .headers
                    .get(crate::wire::ERROR)
                    .and_then(|v| v.to_str().ok())
                {
                    let kind = kind.to_string();
                    let body = read_body(body, 64 * 1024).await.unwrap_or_default();
                    let err = crate::wire::error(&kind, &body);
                    let verdict = if instance_failure(&err).is_some() {
                        Verdict::Failed
                    } else {
                        Verdict::Ok
                    };
                    (verdict, Err(err))
                } else {
                    use http_body_util::BodyExt as _;
                    (
                        Verdict::Ok,
                        Ok(http::Response::from_parts(
                            parts,
                            body.map_err(Into::into).boxed_unsync(),
                        )),
                    )
                }
            }
            Err(e) => (Verdict::Failed, Err(e.into_error())),
        };
        cluster.set.report(&call, verdict);
        result
    }

    /// The policy of `name`: its TrafficPolicy, else one built from the defaults (and
    /// Resiliency) on first use.
    fn policy(&self, name: &str) -> Result<SharedTarget> {
        if let Some(t) = self.inner.configured.get(name) {
            return Ok(t.clone());
        }
        let mut dynamic = lock(&self.inner.dynamic);
        if let Some((t, used)) = dynamic.get_mut(name) {
            *used = Instant::now();
            return Ok(t.clone());
        }
        if dynamic.len() >= MAX_TARGETS
            && let Some(oldest) = dynamic
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            dynamic.remove(&oldest);
        }
        let target = Arc::new(Target::new(
            name,
            &self.inner.defaults,
            self.inner.dapr_policies.get(name),
            &self.inner.metrics,
            "mesh.defaults",
        )?);
        dynamic.insert(name.to_string(), (target.clone(), Instant::now()));
        Ok(target)
    }

    /// The instances of `app_id` in `namespace`, resolving them on first use.
    async fn cluster(&self, app_id: &str, namespace: &str) -> Result<Arc<Cluster>> {
        let key = (app_id.to_string(), namespace.to_string());
        if let Some(c) = lock(&self.inner.clusters).get(&key) {
            *lock(&c.last_used) = Instant::now();
            return Ok(c.clone());
        }
        let Some(resolver) = &self.inner.resolver else {
            return Err(Error::unavailable(format!(
                "app {app_id:?} is not reachable: this sidecar serves app {:?}, and no name resolution is configured (nameResolution in the Configuration) to find other apps",
                self.inner.app_id
            )));
        };
        let addrs = resolve(resolver.as_ref(), app_id, namespace).await?;
        if addrs.is_empty() {
            return Err(Error::unavailable(format!(
                "app {app_id:?} is not reachable: the {} name resolver knows no instance of it in namespace {namespace:?}",
                resolver.name()
            )));
        }
        let policy = self.policy(app_id)?;
        let expected = Identity {
            trust_domain: self.inner.trust_domain.clone(),
            namespace: namespace.to_string(),
            app_id: app_id.to_string(),
        };
        let ejections = self
            .inner
            .metrics
            .ejections
            .get_or_create(&MeshMetrics::target(app_id))
            .clone();
        let set = EndpointSet::new(
            policy.load_balancer,
            policy.outlier.clone(),
            move || Some(expected.clone()),
            move || {
                ejections.inc();
            },
        );
        set.update(addrs);
        let cluster = Arc::new(Cluster {
            app_id: app_id.to_string(),
            set,
            last_used: Mutex::new(Instant::now()),
        });
        {
            let mut clusters = lock(&self.inner.clusters);
            if let Some(existing) = clusters.get(&key) {
                // Another call resolved it meanwhile.
                return Ok(existing.clone());
            }
            if clusters.len() >= MAX_TARGETS
                && let Some(oldest) = clusters
                    .iter()
                    .min_by_key(|(_, c)| *lock(&c.last_used))
                    .map(|(k, _)| k.clone())
            {
                clusters.remove(&oldest);
            }
            clusters.insert(key, cluster.clone());
        }
        self.inner
            .metrics
            .instances
            .get_or_create(&MeshMetrics::target(app_id))
            .set(cluster.set.snapshot().len() as i64);
        spawn_refresh(
            Arc::downgrade(&cluster),
            resolver.clone(),
            namespace.to_string(),
            self.inner.refresh_interval,
            self.inner.metrics.clone(),
        );
        if let Some(hc) = &policy.health_check {
            crate::health::spawn(
                Arc::downgrade(&cluster),
                hc.clone(),
                self.inner.transport.clone(),
                self.inner.app_id.clone(),
            );
        }
        Ok(cluster)
    }

    /// Split `app.namespace` (the namespace defaults to ours).
    fn split<'a>(&'a self, target: &'a str) -> (&'a str, &'a str) {
        match target.split_once('.') {
            Some((id, ns)) if !id.is_empty() && !ns.is_empty() => (id, ns),
            _ => (target, &self.inner.namespace),
        }
    }

    /// A call read whole (the gRPC front doors), answered whole.
    async fn call(&self, target: &str, caller: &str, req: InvokeRequest) -> Result<InvokeResponse> {
        match self.run(target, caller, Replay::whole(req)?, true).await? {
            InvokeAnswer::Buffered(answer) => Ok(answer),
            InvokeAnswer::Http(_) => Err(Error::internal("an answer to be read whole streamed")),
        }
    }

    /// Route, limit and attempt a call. With `whole`, a streamed answer is read whole
    /// (within the call's deadline and the body limit).
    async fn run(
        &self,
        target: &str,
        caller: &str,
        mut req: Replay,
        whole: bool,
    ) -> Result<InvokeAnswer> {
        let started = Instant::now();
        // A URL, or an HTTPEndpoint's name, is a non-Plinth HTTP service.
        let (name, channel): (&str, Option<Arc<dyn Channel>>) =
            if target.starts_with("http://") || target.starts_with("https://") {
                (target, Some(Arc::new(HttpEndpoint::from_url(target)?)))
            } else if let Some(e) = self.inner.http_endpoints.get(target) {
                (target, Some(e.clone() as Arc<dyn Channel>))
            } else {
                (self.split(target).0, None)
            };
        // URLs get the defaults under one label; they are not app ids.
        let policy = self.policy(
            if channel.is_some() && !self.inner.http_endpoints.contains_key(target) {
                "http-url"
            } else {
                name
            },
        )?;
        if let Err(e) = policy.admit() {
            policy.metrics.rate_limited();
            return Err(e);
        }
        let routed = policy.route(&req);
        if let Err(e) = routed.admit(&policy.name) {
            policy.metrics.rate_limited();
            return Err(e);
        }
        let mut timeout = routed.timeout.unwrap_or(policy.timeout);
        if let Some(ms) = req
            .header(RPC_REQUEST_TIMEOUT)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
        {
            timeout = timeout.min(Duration::from_millis(ms));
        }
        let deadline = started + timeout;
        let (delay, abort) = policy.fault();
        if let Some(d) = delay {
            tokio::time::sleep_until((Instant::now() + d).min(deadline)).await;
        }
        if let Some(status) = abort {
            policy.metrics.record(Ok(Some(status)), started);
            return Ok(InvokeAnswer::Buffered(InvokeResponse {
                status: AppStatus::Http(status),
                content_type: "text/plain".into(),
                data: Bytes::from_static(b"fault injected by the mesh"),
                headers: vec![("x-plinth-fault".into(), "abort".into())],
            }));
        }
        ensure_traceparent(&mut req.headers);
        tracing::trace!(target_app = %policy.name, route = routed.route, destination = %routed.destination, "routed");
        let destination: Arc<dyn Channel> = match channel {
            Some(c) if routed.destination == policy.name => c,
            _ => {
                let dest = routed.destination.as_str();
                if let Some(e) = self.inner.http_endpoints.get(dest) {
                    e.clone()
                } else {
                    let (id, ns) = self.split(dest);
                    let (id, ns) = (id.to_string(), ns.to_string());
                    match self.cluster(&id, &ns).await {
                        Ok(cluster) => cluster as Arc<dyn Channel>,
                        Err(e) => {
                            policy.metrics.record(Err(&e), started);
                            return Err(e);
                        }
                    }
                }
            }
        };
        let retried = policy.retry.as_ref().is_some_and(|r| {
            r.max_retries > 0 && (IDEMPOTENT.contains(&req.verb.as_str()) || r.non_idempotent)
        });
        if retried {
            req.keep_for_retries().await?;
        }
        // Each attempt ends by the call's deadline, so the call does too; a timeout names
        // the call's whole budget.
        let result = match self
            .attempts(&policy, destination.as_ref(), caller, &mut req, deadline)
            .await
        {
            Ok(InvokeAnswer::Http(response)) if whole => {
                let read = read_whole(response, self.inner.max_body);
                match tokio::time::timeout_at(deadline, read).await {
                    Ok(r) => r.map(InvokeAnswer::Buffered),
                    Err(_) => Err(Error::timeout("reading the answer")),
                }
            }
            other => other,
        };
        let result = result.map_err(|e| {
            if e.kind() == ErrorKind::Timeout {
                Error::timeout(format!(
                    "{:?} did not answer within {}ms",
                    routed.destination,
                    timeout.as_millis()
                ))
            } else {
                e
            }
        });
        let status = match &result {
            Ok(answer) => match answer_status(answer) {
                AppStatus::Http(code) => Some(code),
                AppStatus::Grpc { .. } => None,
            },
            Err(_) => None,
        };
        policy
            .metrics
            .record(result.as_ref().map(|_| status), started);
        result
    }

    /// Attempts through the breaker, retried as the policy allows.
    async fn attempts(
        &self,
        policy: &Target,
        channel: &dyn Channel,
        caller: &str,
        req: &mut Replay,
        deadline: Instant,
    ) -> Result<InvokeAnswer> {
        let idempotent = IDEMPOTENT.contains(&req.verb.as_str());
        if let Some(retry) = &policy.retry {
            retry.deposit();
        }
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut attempt = 0u32;
        loop {
            if let Some(breaker) = &policy.breaker {
                breaker.admit()?;
            }
            let now = Instant::now();
            let per_try = policy
                .per_try_timeout
                .map_or(deadline, |t| (now + t).min(deadline));
            let outcome = channel
                .attempt(Attempt {
                    caller,
                    req: &mut *req,
                    deadline: per_try,
                    tried: &tried,
                    transport: &self.inner.transport,
                    max_body: self.inner.max_body,
                })
                .await;
            let failed = outcome.verdict == Verdict::Failed;
            if let Some(breaker) = &policy.breaker {
                breaker.record(failed);
            }
            if !failed {
                return outcome.result;
            }
            let Some(retry) = &policy.retry else {
                return outcome.result;
            };
            let class = outcome.class.unwrap_or(RetryOn::ServerError);
            let safe = class == RetryOn::ConnectFailure || idempotent || retry.non_idempotent;
            if attempt >= retry.max_retries
                || !safe
                || !retry.retries_on(class)
                || !req.can_resend()
            {
                return outcome.result;
            }
            let wait = retry.delay(attempt);
            if Instant::now() + wait >= deadline || !retry.withdraw() {
                return outcome.result;
            }
            if let Some(addr) = outcome.addr {
                tried.push(addr);
            }
            attempt += 1;
            policy.metrics.retried();
            tracing::debug!(target = %policy.name, attempt, ?class, "retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl RemoteApps for Mesh {
    async fn invoke(
        &self,
        target: &str,
        caller: &str,
        req: InvokeRequest,
    ) -> Result<InvokeResponse> {
        self.call(target, caller, req).await
    }

    async fn invoke_http(
        &self,
        target: &str,
        caller: &str,
        call: HttpCall,
    ) -> Result<InvokeAnswer> {
        self.run(target, caller, Replay::passed(call), false).await
    }
}

/// A streamed HTTP answer read whole, for a caller that takes answers whole.
async fn read_whole(
    response: http::Response<crate::client::Body>,
    max: usize,
) -> Result<InvokeResponse> {
    let (parts, mut body) = response.into_parts();
    let mut data = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::unavailable(format!("reading the answer: {e}")))?;
        if let Ok(chunk) = frame.into_data() {
            if data.len() + chunk.len() > max {
                return Err(Error::resource_exhausted(format!(
                    "the answer is over the limit of {max} bytes"
                )));
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(whole_answer(&parts, data.freeze()))
}

/// An HTTP answer's head and body as an answer read whole.
fn whole_answer(parts: &http::response::Parts, data: Bytes) -> InvokeResponse {
    InvokeResponse {
        status: AppStatus::Http(parts.status.as_u16()),
        content_type: passthrough::content_type(&parts.headers),
        data,
        headers: passthrough::forwarded(&parts.headers),
    }
}

/// Add a W3C `traceparent` when the caller sent none, so both sidecars and the app see one
/// trace.
fn ensure_traceparent(headers: &mut http::HeaderMap) {
    if headers.contains_key("traceparent") {
        return;
    }
    let trace: u128 = rand::random::<u128>().max(1);
    let span: u64 = rand::random::<u64>().max(1);
    if let Ok(v) = http::HeaderValue::try_from(format!("00-{trace:032x}-{span:016x}-01")) {
        headers.insert("traceparent", v);
    }
}

async fn resolve(
    resolver: &dyn Resolver,
    app_id: &str,
    namespace: &str,
) -> Result<Vec<SocketAddr>> {
    match tokio::time::timeout(Duration::from_secs(5), resolver.resolve(app_id, namespace)).await {
        Ok(r) => r,
        Err(_) => Err(Error::unavailable(format!(
            "the {} name resolver did not answer within 5s",
            resolver.name()
        ))),
    }
}

/// Resolve `cluster`'s app again every `interval` while the cluster is in use.
fn spawn_refresh(
    cluster: Weak<Cluster>,
    resolver: Arc<dyn Resolver>,
    namespace: String,
    interval: Duration,
    metrics: MeshMetrics,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(c) = cluster.upgrade() else {
                return;
            };
            match resolve(resolver.as_ref(), &c.app_id, &namespace).await {
                // An empty answer is kept: the app scaled to zero, and calls say so.
                Ok(addrs) => {
                    c.set.update(addrs);
                    metrics
                        .instances
                        .get_or_create(&MeshMetrics::target(&c.app_id))
                        .set(c.set.snapshot().len() as i64);
                }
                Err(e) => {
                    tracing::warn!(app = %c.app_id, error = %e, "name resolution failed; keeping the last instances")
                }
            }
        }
    });
}

/// Whether an error from the called sidecar says the instance (not the request) failed.
pub(crate) fn instance_failure(e: &Error) -> Option<RetryOn> {
    match e.kind() {
        ErrorKind::Unavailable => Some(RetryOn::GatewayError),
        ErrorKind::Timeout => Some(RetryOn::Timeout),
        _ => None,
    }
}

/// Read a body within `limit` bytes.
pub(crate) async fn read_body(body: hyper::body::Incoming, limit: usize) -> Result<Bytes> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::resource_exhausted(format!("the answer is over the limit of {limit} bytes"))
            } else {
                Error::unavailable(format!("reading the answer: {e}"))
            }
        })
}
