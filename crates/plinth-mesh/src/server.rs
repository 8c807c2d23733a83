//! The callee's side: the mesh listener. It takes calls from other sidecars (over mTLS, or
//! plain TCP where configured), checks who calls and whether the access-control policy lets
//! them, and hands the call to this sidecar's app through the invocation building block, or,
//! for proxied gRPC, streams it to the app's gRPC server as is.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use plinth_core::{Error, Result};
use plinth_runtime::app::passthrough::{boxed, strip_for_app};
use plinth_runtime::app::{HttpCall, InvokeAnswer};
use plinth_runtime::invoke::{APP_CALL_TIMEOUT, InvokeApi};
use plinth_runtime::metrics::status_class;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::acl::AccessControl;
use crate::client::{Body, PeerConn, Transport, full};
use crate::io::Coalesce;
use crate::metrics::{CallerOutcome, MeshMetrics};
use crate::tls::Identity;
use crate::wire;
use prometheus_client::metrics::counter::Counter;

/// What the mesh listener serves with.
pub struct Inbound {
    /// This sidecar's app id.
    pub app_id: String,
    /// Its namespace.
    pub namespace: String,
    /// The trust domain of callers on plain TCP (for access control).
    pub trust_domain: String,
    /// mTLS or plain TCP.
    pub transport: Transport,
    /// The invocation building block, to reach the app.
    pub invoke: InvokeApi,
    /// Dapr's `accessControl`, when configured.
    pub access: Option<AccessControl>,
    /// Whether the app is healthy (its health checks), for peers' active checks.
    pub app_healthy: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The app's gRPC server, for proxied gRPC calls (apps speaking gRPC).
    pub grpc_app: Option<SocketAddr>,
    /// The largest request body read.
    pub max_body: usize,
    pub(crate) metrics: MeshMetrics,
    grpc_conn: Option<PeerConn>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("app_id", &self.app_id)
            .field("namespace", &self.namespace)
            .field("transport", &self.transport)
            .field("grpc_app", &self.grpc_app)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// Serve the mesh for `app_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app_id: &str,
        namespace: &str,
        trust_domain: &str,
        transport: Transport,
        invoke: InvokeApi,
        access: Option<AccessControl>,
        app_healthy: Arc<dyn Fn() -> bool + Send + Sync>,
        grpc_app: Option<SocketAddr>,
        max_body: usize,
        mesh: &crate::Mesh,
    ) -> Self {
        Self {
            app_id: app_id.to_string(),
            namespace: namespace.to_string(),
            trust_domain: trust_domain.to_string(),
            transport,
            invoke,
            access,
            app_healthy,
            grpc_app,
            max_body,
            metrics: mesh.metrics().clone(),
            grpc_conn: grpc_app.map(|a| PeerConn::new(a, None)),
        }
    }
}

/// Serve mesh connections from `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "mesh listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let inbound = inbound.clone();
        tokio::spawn(async move {
            match &inbound.transport {
                Transport::Plain => {
                    connection(TokioIo::new(Coalesce::new(tcp)), None, peer, inbound).await
                }
                Transport::Tls(tls) => {
                    let accepted =
                        tokio::time::timeout(Duration::from_secs(5), tls.accept(tcp)).await;
                    match accepted {
                        Ok(Ok((stream, identity))) => {
                            connection(
                                TokioIo::new(Coalesce::new(stream)),
                                Some(identity),
                                peer,
                                inbound,
                            )
                            .await
                        }
                        Ok(Err(e)) => {
                            inbound
                                .metrics
                                .inbound
                                .get_or_create(&CallerOutcome {
                                    caller: "unknown".into(),
                                    outcome: "tls_rejected".into(),
                                })
                                .inc();
                            tracing::warn!(%peer, error = %e, "mesh: TLS handshake refused")
                        }
                        Err(_) => tracing::warn!(%peer, "mesh: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn connection<I>(io: I, identity: Option<Identity>, peer: SocketAddr, inbound: Arc<Inbound>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let identity = identity.map(Arc::new);
    let counters = Arc::new(Counters::default());
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (inbound, identity, counters) = (inbound.clone(), identity.clone(), counters.clone());
        async move {
            let response = handle(&inbound, identity.as_deref(), &counters, req).await;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20);
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(%peer, error = %e, "mesh connection ended");
    }
}

/// The inbound counters one connection has used, kept, so that its calls count without
/// building labels. A connection carries one caller under mTLS, a few at most otherwise.
#[derive(Debug, Default)]
struct Counters(std::sync::Mutex<Vec<(String, &'static str, Counter)>>);

impl Counters {
    /// At most this many (caller, outcome) pairs are kept per connection.
    const KEPT: usize = 16;

    fn inc(&self, metrics: &MeshMetrics, caller: &str, outcome: &'static str) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, counter)) = kept.iter().find(|(c, o, _)| c == caller && *o == outcome) {
            counter.inc();
            return;
        }
        let counter = metrics
            .inbound
            .get_or_create(&CallerOutcome {
                caller: caller.to_string(),
                outcome: outcome.to_string(),
            })
            .clone();
        counter.inc();
        if kept.len() < Self::KEPT {
            kept.push((caller.to_string(), outcome, counter));
        }
    }
}

async fn handle(
    inbound: &Inbound,
    identity: Option<&Identity>,
    counters: &Counters,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.uri().path() == wire::HEALTH_PATH && !req.headers().contains_key(wire::TARGET) {
        let mut r = Response::new(full(Bytes::new()));
        if !(inbound.app_healthy)() {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        return r;
    }
    // With mTLS the caller is who its certificate says; on plain TCP, who it says it is
    // (`plinth-caller`).
    let caller = match identity {
        Some(id) => Cow::Borrowed(id),
        None => Cow::Owned(Identity {
            trust_domain: inbound.trust_domain.clone(),
            namespace: inbound.namespace.clone(),
            app_id: req
                .headers()
                .get(wire::CALLER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown")
                .to_string(),
        }),
    };
    let result = if req.headers().contains_key(wire::PROXY) {
        proxy(inbound, &caller, req).await
    } else {
        invoke(inbound, &caller, req).await
    };
    let (outcome, response) = match result {
        Ok(r) => (status_class(r.status().as_u16()), r),
        Err(e) => (e.kind().as_str(), wire::error_response(&e)),
    };
    counters.inc(&inbound.metrics, &caller.app_id, outcome);
    response
}

/// Whether the call is for this sidecar's app.
fn check_target(inbound: &Inbound, target: &str) -> Result<()> {
    let (id, ns) = match target.split_once('.') {
        Some((id, ns)) => (id, ns),
        None => (target, inbound.namespace.as_str()),
    };
    if id != inbound.app_id || ns != inbound.namespace {
        return Err(Error::unavailable(format!(
            "this sidecar serves app {:?} in namespace {:?}, not {target:?}",
            inbound.app_id, inbound.namespace
        )));
    }
    Ok(())
}

fn check_access(
    inbound: &Inbound,
    caller: &Identity,
    verb: Option<&str>,
    method: &str,
) -> Result<()> {
    if let Some(acl) = &inbound.access
        && !acl.allows(caller, verb, method)
    {
        return Err(Error::permission_denied(format!(
            "access control: app {:?} may not call {} {method} on app {:?}",
            caller.app_id,
            verb.unwrap_or("gRPC"),
            inbound.app_id
        )));
    }
    Ok(())
}

/// An invocation for this sidecar's app: passed through to an HTTP app (streaming both
/// ways), read whole for a gRPC app.
async fn invoke(
    inbound: &Inbound,
    caller: &Identity,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let (mut parts, body) = req.into_parts();
    let head = wire::head(&parts)?;
    check_target(inbound, &head.target)?;
    check_access(inbound, caller, Some(parts.method.as_str()), &head.method)?;
    let timeout = head
        .timeout
        .unwrap_or(APP_CALL_TIMEOUT)
        .min(APP_CALL_TIMEOUT);
    wire::strip(&mut parts.headers);
    strip_for_app(&mut parts.headers);
    let call = HttpCall {
        method: head.method,
        request: Request::from_parts(parts, boxed(Limited::new(body, inbound.max_body))),
    };
    let answer = tokio::time::timeout(
        timeout,
        inbound
            .invoke
            .invoke_http_as(&inbound.app_id, &caller.app_id, call),
    )
    .await
    .map_err(|_| {
        Error::timeout(format!(
            "app {:?} did not answer within {}ms",
            inbound.app_id,
            timeout.as_millis()
        ))
    })??;
    Ok(match answer {
        InvokeAnswer::Http(response) => {
            let (mut parts, body) = response.into_parts();
            // What the app sends is the app's; the mesh's own headers are the sidecar's.
            wire::strip(&mut parts.headers);
            Response::from_parts(parts, body)
        }
        InvokeAnswer::Buffered(answer) => wire::response(answer),
    })
}

/// A proxied gRPC call: streamed to the app's gRPC server as it came.
async fn proxy(
    inbound: &Inbound,
    caller: &Identity,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let target = req
        .headers()
        .get(wire::TARGET)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    check_target(inbound, &target)?;
    check_access(inbound, caller, None, req.uri().path())?;
    let (mut parts, body) = req.into_parts();
    crate::wire::strip(&mut parts.headers);
    parts.headers.insert(
        plinth_runtime::invoke::headers::CALLER_APP_ID,
        http::HeaderValue::try_from(&caller.app_id)
            .map_err(|_| Error::invalid_argument("the caller's app id is not a header value"))?,
    );
    let body: Body = body.map_err(Into::into).boxed_unsync();
    forward_grpc(
        inbound.grpc_conn.as_ref(),
        &inbound.app_id,
        Request::from_parts(parts, body),
    )
    .await
}

impl Inbound {
    /// Stream a gRPC call for this sidecar's own app to its gRPC server.
    pub async fn forward_local_grpc(&self, req: Request<Body>) -> Result<Response<Body>> {
        forward_grpc(self.grpc_conn.as_ref(), &self.app_id, req).await
    }
}

/// Stream a gRPC call to the app's gRPC server.
pub(crate) async fn forward_grpc(
    conn: Option<&PeerConn>,
    app_id: &str,
    req: Request<Body>,
) -> Result<Response<Body>> {
    let Some(conn) = conn else {
        return Err(Error::failed_precondition(format!(
            "app {app_id:?} does not speak gRPC: start its Plinth with --app-protocol grpc to proxy gRPC calls to it"
        )));
    };
    let (mut parts, body) = req.into_parts();
    wire::retarget(&mut parts, app_id)?;
    let response = conn
        .send(&Transport::Plain, Request::from_parts(parts, body))
        .await
        .map_err(|e| e.into_error())?;
    Ok(response.map(|b| b.map_err(Into::into).boxed_unsync()))
}
