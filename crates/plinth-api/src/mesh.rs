//! The mesh in the listeners: the mesh listener itself, registration with name resolution,
//! remote invocation for the building block, and Dapr's gRPC proxying (a call to any gRPC
//! service carrying `dapr-app-id` metadata goes to that app's gRPC server, streams and all).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use plinth_core::{Error, Result};
use plinth_mesh::resolve::{Registration, RegistrationGuard};
use plinth_mesh::server::Inbound;
use plinth_mesh::{Mesh, MeshOptions, MeshSetup};
use plinth_runtime::Runtime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Layer, Service};

use crate::app::API_TOKEN_HEADER;

/// The metadata naming the app a proxied gRPC call is for.
const APP_ID_METADATA: &str = "dapr-app-id";

/// Plinth's own APIs: calls to them are never proxied, whatever their metadata. Any other
/// service (the apps' own, health and reflection included) is proxied when the call names an
/// app, as Dapr does.
const OWN_SERVICES: &[&str] = &[
    "/dapr.proto.runtime.v1.Dapr/",
    "/spec.proto.runtime.v1.Runtime/",
    "/spec.proto.runtime.v1.Lifecycle/",
    "/plinth.admin.v1.Functions/",
];

/// The started mesh.
#[derive(Debug)]
pub(crate) struct Started {
    /// The registration with name resolution, dropped at shutdown so peers stop calling.
    pub(crate) registration: Arc<std::sync::Mutex<Option<RegistrationGuard>>>,
}

/// Build the mesh from config and make it the building block's way to other apps. Fails on
/// invalid config, naming the file and field.
pub(crate) fn build(
    rt: &Arc<Runtime>,
    address: IpAddr,
    max_body: usize,
) -> Result<(Mesh, MeshSetup)> {
    let mut setup = MeshSetup::load(
        &rt.loaded.mesh,
        &rt.app_id,
        &rt.namespace,
        address.is_loopback(),
    )?;
    let http_endpoints = std::mem::take(&mut setup.http_endpoints);
    let mesh = Mesh::new(MeshOptions {
        app_id: rt.app_id.clone(),
        namespace: rt.namespace.clone(),
        trust_domain: setup.trust_domain.clone(),
        transport: setup.transport.clone(),
        resolver: setup.resolver.clone(),
        refresh_interval: setup.refresh_interval,
        policies: setup.policies.clone(),
        defaults: setup.defaults.clone(),
        dapr_policies: rt.loaded.mesh.app_policies.clone(),
        http_endpoints,
        max_body,
        metrics: rt.metrics.clone(),
    })?;
    rt.invoke.set_remote(Arc::new(mesh.clone()));
    Ok((mesh, setup))
}

/// Serve the mesh listener and register this sidecar with name resolution.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start(
    rt: &Arc<Runtime>,
    mesh: &Mesh,
    setup: MeshSetup,
    listener: TcpListener,
    grpc_app: Option<SocketAddr>,
    max_body: usize,
    proxy: &GrpcProxySlot,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: watch::Receiver<bool>,
) -> Result<Started> {
    let bound = listener.local_addr().map_err(Error::from)?;
    let app = rt.app.clone();
    let inbound = Arc::new(Inbound::new(
        &rt.app_id,
        &rt.namespace,
        &setup.trust_domain,
        setup.transport.clone(),
        rt.invoke.clone(),
        setup.access.clone(),
        Arc::new(move || app.health().is_none_or(|h| h.is_healthy())),
        grpc_app,
        max_body,
        mesh,
    ));
    if let plinth_mesh::client::Transport::Tls(tls) = &setup.transport {
        let reload = tls.spawn_reload();
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            reload.abort();
        });
    }
    let _ = proxy.set(GrpcProxy {
        mesh: mesh.clone(),
        inbound: inbound.clone(),
        app_id: rt.app_id.clone(),
        namespace: rt.namespace.clone(),
    });
    tasks.spawn(plinth_mesh::server::serve(listener, inbound, stop.clone()));

    let registration = Arc::new(std::sync::Mutex::new(None));
    if let Some(resolver) = setup.resolver.clone() {
        let address = if bound.ip().is_unspecified() {
            tracing::warn!(%bound, "the mesh listens on every address; registering it as 127.0.0.1");
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), bound.port())
        } else {
            bound
        };
        let me = Registration {
            app_id: rt.app_id.clone(),
            namespace: rt.namespace.clone(),
            address,
        };
        // The first attempt is made before Plinth says it started, so that peers can find
        // it from then on. A registry that is down does not stop startup: registration is
        // retried until it works, as a component that is DOWN is.
        let first =
            tokio::time::timeout(Duration::from_secs(5), resolver.register(me.clone())).await;
        match first {
            Ok(Ok(guard)) => {
                tracing::info!(resolver = resolver.name(), address = %me.address, "registered with name resolution");
                if let Ok(mut slot) = registration.lock() {
                    *slot = Some(guard);
                }
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                tracing::warn!(resolver = resolver.name(), %error, "cannot register with name resolution; retrying");
                let slot = registration.clone();
                let mut stop = stop.clone();
                tasks.spawn(async move {
                    let mut wait = Duration::from_millis(200);
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                        match resolver.register(me.clone()).await {
                            Ok(guard) => {
                                tracing::info!(resolver = resolver.name(), address = %me.address, "registered with name resolution");
                                if let Ok(mut slot) = slot.lock() {
                                    *slot = Some(guard);
                                }
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(resolver = resolver.name(), error = %e, "cannot register with name resolution; retrying");
                            }
                        }
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                });
            }
        }
    }
    Ok(Started { registration })
}

/// Set once the mesh has started; the gRPC listeners' proxy layer reads it.
pub(crate) type GrpcProxySlot = Arc<OnceLock<GrpcProxy>>;

/// What proxied gRPC calls go through.
#[derive(Debug)]
pub(crate) struct GrpcProxy {
    mesh: Mesh,
    inbound: Arc<Inbound>,
    app_id: String,
    namespace: String,
}

impl GrpcProxy {
    async fn call(
        &self,
        target: &str,
        req: Request<plinth_mesh::client::Body>,
    ) -> Result<Response<plinth_mesh::client::Body>> {
        let local = match target.split_once('.') {
            Some((id, ns)) => id == self.app_id && ns == self.namespace,
            None => target == self.app_id,
        };
        if local {
            self.inbound.forward_local_grpc(req).await
        } else {
            self.mesh.proxy_grpc(target, &self.app_id, req).await
        }
    }
}

/// Proxies calls to services Plinth does not serve, when they carry `dapr-app-id`.
#[derive(Debug, Clone)]
pub(crate) struct GrpcProxyLayer {
    slot: GrpcProxySlot,
}

impl GrpcProxyLayer {
    pub(crate) fn new(slot: GrpcProxySlot) -> Self {
        Self { slot }
    }
}

impl<S> Layer<S> for GrpcProxyLayer {
    type Service = GrpcProxyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcProxyService {
            inner,
            slot: self.slot.clone(),
        }
    }
}

/// The service of a [`GrpcProxyLayer`].
#[derive(Debug, Clone)]
pub(crate) struct GrpcProxyService<S> {
    inner: S,
    slot: GrpcProxySlot,
}

impl<S, B> Service<Request<B>> for GrpcProxyService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let target = req
            .headers()
            .get(APP_ID_METADATA)
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let proxied = target.filter(|_| !OWN_SERVICES.iter().any(|p| path.starts_with(p)));
        let Some(target) = proxied else {
            return Box::pin(self.inner.call(req));
        };
        let slot = self.slot.clone();
        Box::pin(async move {
            let Some(proxy) = slot.get() else {
                return Ok(error_response(Error::unavailable(
                    "the mesh is not started",
                )));
            };
            let (mut parts, body) = req.into_parts();
            // The caller's token is for this sidecar, never for another app.
            parts.headers.remove(API_TOKEN_HEADER);
            let body: plinth_mesh::client::Body = body.map_err(Into::into).boxed_unsync();
            match proxy.call(&target, Request::from_parts(parts, body)).await {
                Ok(response) => Ok(response.map(tonic::body::Body::new)),
                Err(e) => Ok(error_response(e)),
            }
        })
    }
}

fn error_response(err: Error) -> Response<tonic::body::Body> {
    crate::status::to_status(err).into_http()
}
