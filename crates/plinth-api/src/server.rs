//! Listeners and graceful shutdown: binds every listener (port 0 picks an ephemeral port),
//! logs each bound address, serves until asked to stop, then drains in-flight requests
//! within a deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::serve::ListenerExt as _;
use dapr::dapr::proto::runtime::v1::dapr_server::DaprServer;
use plinth_core::{Error, Result};
use plinth_proto::runtime::v1::lifecycle_server::LifecycleServer;
use plinth_proto::runtime::v1::runtime_server::RuntimeServer;
use plinth_runtime::Runtime;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::admin::{self, AdminState, LogControl};
use crate::app::{self, AppOptions, AppProtocol, HealthCheck};
use crate::dapr::DaprService;
use crate::dapr_http::{self, DaprHttpShared, DaprHttpState};
use crate::layotto::{LayottoService, LifecycleService};
use crate::telemetry::RpcTelemetryLayer;

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// The address every listener binds (`--listen-address`).
    pub address: IpAddr,
    /// Layotto's gRPC port (`--grpc-port`).
    pub grpc_port: u16,
    /// The Dapr gRPC port (`--dapr-grpc-port`); serves the same services.
    pub dapr_grpc_port: u16,
    /// Dapr's HTTP API port (`--dapr-http-port`).
    pub dapr_http_port: u16,
    /// The admin port (`--admin-port`).
    pub admin_port: u16,
    /// The app's port (`--app-port`), if any; a Layotto config's `grpc_callback_port`
    /// otherwise.
    pub app_port: Option<u16>,
    /// The app's protocol (`--app-protocol`); HTTP unless given, or implied by a Layotto
    /// config.
    pub app_protocol: Option<AppProtocol>,
    /// The app's host (`--app-channel-address`).
    pub app_host: String,
    /// Sent to the app as `dapr-api-token` (`APP_API_TOKEN`).
    pub app_token: Option<String>,
    /// App health checks (`--enable-app-health-check`).
    pub app_health_check: Option<HealthCheck>,
    /// The API token callers must present (`DAPR_API_TOKEN`).
    pub api_token: crate::auth::ApiToken,
    /// Largest gRPC message accepted or sent, and largest HTTP body in either direction.
    pub max_message_size: usize,
    /// Also serve the gRPC services on this Unix socket (`--grpc-uds`).
    pub grpc_uds: Option<std::path::PathBuf>,
    /// The functions' HTTP ingress port (`--functions-port`).
    pub functions_port: u16,
    /// A directory of `.wasm` files kept installed (`--functions-dir`).
    pub functions_dir: Option<std::path::PathBuf>,
    /// The wasm engine: pool size, memory ceiling, cache directory.
    pub wasm_engine: plinth_wasm::EngineOptions,
    /// The mesh listener's port (`--mesh-port`): other sidecars call this app here.
    pub mesh_port: u16,
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            address: IpAddr::from([127, 0, 0, 1]),
            grpc_port: 34904,
            dapr_grpc_port: 50001,
            dapr_http_port: 3500,
            admin_port: 34999,
            app_port: None,
            app_protocol: None,
            app_host: "127.0.0.1".into(),
            app_token: None,
            app_health_check: None,
            api_token: Default::default(),
            max_message_size: 4 * 1024 * 1024,
            grpc_uds: None,
            functions_port: 2045,
            functions_dir: None,
            wasm_engine: plinth_wasm::EngineOptions::default(),
            mesh_port: 50002,
        }
    }
}

/// A running Plinth: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct Server {
    /// Bound addresses by listener name (`grpc`, `dapr-grpc`, `dapr-http`, `admin`).
    pub addresses: Vec<(&'static str, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    shutting_down: Arc<AtomicBool>,
    shutdown_request: Arc<Notify>,
    tasks: JoinSet<()>,
    rt: Arc<Runtime>,
    _subscriptions: plinth_runtime::app::subscriptions::Subscriptions,
    _input_bindings: plinth_runtime::app::bindings::InputBindings,
    /// The installed functions.
    pub functions: Arc<plinth_wasm::FunctionRegistry>,
    mesh: crate::mesh::Started,
}

/// Bind a Unix socket, replacing a stale socket file but never any other kind of file.
fn bind_uds(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::invalid_argument(format!(
                "--grpc-uds {}: a file that is not a socket is in the way",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    tokio::net::UnixListener::bind(path).map_err(|e| {
        Error::unavailable(format!(
            "cannot bind the gRPC Unix socket {}: {e}",
            path.display()
        ))
    })
}

async fn bind(address: IpAddr, port: u16, name: &'static str) -> Result<TcpListener> {
    let addr = SocketAddr::new(address, port);
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot bind the {name} listener on {addr}: {e}")))
}

/// Start the function host: the engine, the registry, and the functions declared by
/// `Function` resources. A resource that does not parse, or whose module does not load,
/// stops startup with a message naming it.
async fn start_functions(
    rt: &Arc<Runtime>,
    options: &ListenOptions,
) -> Result<(
    Arc<plinth_wasm::FunctionRegistry>,
    crate::functions::FunctionsState,
)> {
    use plinth_wasm::config::FunctionSpec;
    let engine = plinth_wasm::WasmEngine::new(options.wasm_engine.clone())?;
    let registry = plinth_wasm::FunctionRegistry::new(engine, rt.clone());
    let mut resources = std::collections::HashMap::new();
    for r in &rt.loaded.functions {
        let invalid = |e: String| {
            Error::invalid_argument(format!("{}: Function {:?}: {e}", r.source, r.name))
        };
        plinth_wasm::registry::validate_id(&r.name).map_err(|e| invalid(e.to_string()))?;
        let spec: FunctionSpec =
            serde_json::from_value(r.spec.clone()).map_err(|e| invalid(format!("spec: {e}")))?;
        if let Some(module) = &spec.module {
            let path = r.dir.join(module);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| invalid(format!("spec.module {}: {e}", path.display())))?;
            registry
                .install(
                    &r.name,
                    bytes,
                    spec.config(),
                    plinth_wasm::registry::InstallMode::Create,
                )
                .await
                .map_err(|e| invalid(e.to_string()))?;
        }
        resources.insert(r.name.clone(), spec);
    }
    let state = crate::functions::FunctionsState {
        registry: registry.clone(),
        token: options.api_token.clone(),
        max_body: options.max_message_size,
        resources: Arc::new(resources),
    };
    Ok((registry, state))
}

impl Server {
    /// Bind every listener and start serving.
    pub async fn start(
        rt: Arc<Runtime>,
        options: ListenOptions,
        log: Option<Arc<dyn LogControl>>,
    ) -> Result<Self> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shutting_down = Arc::new(AtomicBool::new(false));
        let listeners_ready = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let mut addresses = Vec::new();

        let shutdown_request = Arc::new(Notify::new());
        let (functions, functions_state) = start_functions(&rt, &options).await?;
        let (mesh, mesh_setup) =
            crate::mesh::build(&rt, options.address, options.max_message_size)?;
        let grpc_proxy = crate::mesh::GrpcProxySlot::default();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<RuntimeServer<LayottoService>>()
            .await;
        health_reporter
            .set_serving::<DaprServer<DaprService>>()
            .await;
        // The dapr crate does not export its descriptor set, so Dapr's service is served but
        // not advertised by reflection.
        // Advertise exactly the services this listener serves: the descriptor set also holds
        // AppCallback, which is the app's service (Plinth calls it), not Plinth's.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(plinth_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(plinth_proto::runtime::v1::runtime_server::SERVICE_NAME)
            .with_service_name(plinth_proto::runtime::v1::lifecycle_server::SERVICE_NAME)
            .with_service_name(plinth_proto::admin::v1::functions_server::SERVICE_NAME)
            .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
            .with_service_name(tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME)
            .build_v1()
            .map_err(|e| Error::internal(format!("building gRPC reflection: {e}")))?;
        let runtime_service =
            RuntimeServer::new(LayottoService::new(rt.clone(), shutdown_rx.clone()))
                .max_decoding_message_size(options.max_message_size)
                .max_encoding_message_size(options.max_message_size);
        let lifecycle_service = LifecycleServer::new(LifecycleService::new(rt.clone()));
        let config_subscriptions = crate::config_subscriptions::ConfigSubscriptions::default();
        let dapr_service = DaprServer::new(DaprService::new(
            rt.clone(),
            shutdown_rx.clone(),
            shutdown_request.clone(),
            config_subscriptions.clone(),
        ))
        .max_decoding_message_size(options.max_message_size)
        .max_encoding_message_size(options.max_message_size);

        let router = tonic::transport::Server::builder()
            .layer(
                tower::ServiceBuilder::new()
                    .layer(RpcTelemetryLayer::new(rt.metrics.clone()))
                    .layer(crate::auth::GrpcAuthLayer::new(options.api_token.clone()))
                    .layer(crate::mesh::GrpcProxyLayer::new(grpc_proxy.clone()))
                    .into_inner(),
            )
            .add_service(health_service)
            .add_service(reflection)
            .add_service(runtime_service)
            .add_service(lifecycle_service)
            .add_service(
                plinth_proto::admin::v1::functions_server::FunctionsServer::new(
                    crate::functions_grpc::FunctionsService::new(functions.clone()),
                )
                .max_decoding_message_size(crate::functions::MAX_UPLOAD)
                .max_encoding_message_size(options.max_message_size),
            )
            .add_service(dapr_service);

        for (name, port) in [
            ("grpc", options.grpc_port),
            ("dapr-grpc", options.dapr_grpc_port),
        ] {
            let listener = bind(options.address, port, name).await?;
            let addr = listener.local_addr().map_err(Error::from)?;
            tracing::info!(listener = name, address = %addr, "listening");
            addresses.push((name, addr));
            let (router, mut stop) = (router.clone(), shutdown_rx.clone());
            tasks.spawn(async move {
                let signal = async move { crate::stopped(&mut stop).await };
                // Small request/response messages must not wait for delayed ACKs (Nagle).
                let incoming = tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(Duration::from_secs(60)));
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                    tracing::error!(listener = name, error = %e, "gRPC listener failed");
                }
            });
        }

        if let Some(path) = &options.grpc_uds {
            let listener = bind_uds(path)?;
            tracing::info!(listener = "grpc-uds", address = %path.display(), "listening");
            let (router, mut stop) = (router.clone(), shutdown_rx.clone());
            let path = path.clone();
            tasks.spawn(async move {
                let signal = async move { crate::stopped(&mut stop).await };
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                    tracing::error!(listener = "grpc-uds", error = %e, "gRPC listener failed");
                }
                let _ = std::fs::remove_file(&path);
            });
        }

        let http_listener = bind(options.address, options.dapr_http_port, "dapr-http").await?;
        let http_addr = http_listener.local_addr().map_err(Error::from)?;
        tracing::info!(listener = "dapr-http", address = %http_addr, "listening");
        addresses.push(("dapr-http", http_addr));
        let http_app = dapr_http::router(
            DaprHttpState::new(DaprHttpShared {
                rt: rt.clone(),
                listeners_ready: listeners_ready.clone(),
                shutting_down: shutting_down.clone(),
                shutdown_request: shutdown_request.clone(),
                config_subscriptions,
                token: options.api_token.clone(),
            }),
            options.max_message_size,
        );
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let signal = async move { crate::stopped(&mut stop).await };
            // Small request/response exchanges must not wait for delayed ACKs (Nagle).
            let listener = http_listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on a dapr-http connection");
                }
            });
            if let Err(e) = axum::serve(listener, http_app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::error!(listener = "dapr-http", error = %e, "HTTP listener failed");
            }
        });

        let functions_listener = bind(options.address, options.functions_port, "functions").await?;
        let functions_addr = functions_listener.local_addr().map_err(Error::from)?;
        tracing::info!(listener = "functions", address = %functions_addr, "listening");
        addresses.push(("functions", functions_addr));
        let ingress = crate::functions::ingress_router(functions_state.clone());
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let signal = async move { crate::stopped(&mut stop).await };
            let listener = functions_listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on a functions connection");
                }
            });
            if let Err(e) = axum::serve(listener, ingress)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::error!(listener = "functions", error = %e, "functions listener failed");
            }
        });
        if let Some(dir) = &options.functions_dir {
            let mut watcher = plinth_wasm::watch::DirWatcher::new(
                functions.clone(),
                dir.clone(),
                functions_state.resources.clone(),
            )?;
            watcher.scan().await;
            tasks.spawn(watcher.run(shutdown_rx.clone()));
        }

        let admin_listener = bind(options.address, options.admin_port, "admin").await?;
        let admin_addr = admin_listener.local_addr().map_err(Error::from)?;
        tracing::info!(listener = "admin", address = %admin_addr, "listening");
        addresses.push(("admin", admin_addr));
        let admin_state = AdminState {
            rt: rt.clone(),
            listeners_ready: listeners_ready.clone(),
            shutting_down: shutting_down.clone(),
            log,
            token: options.api_token.clone(),
        };
        let app = admin::router(admin_state).merge(crate::functions::admin_router(functions_state));
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let signal = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(admin_listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::error!(listener = "admin", error = %e, "admin listener failed");
            }
        });

        let mesh_listener = bind(options.address, options.mesh_port, "mesh").await?;
        let mesh_addr = mesh_listener.local_addr().map_err(Error::from)?;
        tracing::info!(listener = "mesh", address = %mesh_addr, "listening");
        addresses.push(("mesh", mesh_addr));

        let app_port = options.app_port.or(rt.loaded.settings.app_port);
        let implied = match rt.loaded.settings.app_protocol.as_deref() {
            Some(p) => Some(AppProtocol::parse(p)?),
            None => None,
        };
        let protocol = options
            .app_protocol
            .or(implied)
            .unwrap_or(AppProtocol::Http);
        rt.metadata
            .set_app_channel(protocol.name(), &options.app_host, app_port);
        if let Some(port) = app_port {
            let app_options = AppOptions {
                protocol,
                host: options.app_host.clone(),
                port,
                token: options.app_token.clone(),
                max_body_size: options.max_message_size,
                health_check: options.app_health_check.clone(),
            };
            let channel = app::connect(&app_options)?;
            tracing::info!(app = %channel.address(), protocol = channel.protocol(), "app channel");
            let health = app::watch_health(
                channel.clone(),
                app_options.health_check.clone(),
                shutdown_rx.clone(),
            );
            rt.app.set(channel, health)?;
        }
        let grpc_app = match (protocol, app_port) {
            (AppProtocol::Grpc, Some(port)) => {
                tokio::net::lookup_host((options.app_host.as_str(), port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
            }
            _ => None,
        };
        let mesh = crate::mesh::start(
            &rt,
            &mesh,
            mesh_setup,
            mesh_listener,
            grpc_app,
            options.max_message_size,
            &grpc_proxy,
            &mut tasks,
            shutdown_rx.clone(),
        )
        .await?;
        let subscriptions =
            plinth_runtime::app::subscriptions::start(rt.clone(), shutdown_rx.clone());
        let input_bindings = plinth_runtime::app::bindings::start(rt.clone(), shutdown_rx.clone());

        // Announce the start once every component has had its first init attempt, so that
        // the first calls do not fail on components still initialising.
        rt.host.wait_initialised().await;
        listeners_ready.store(true, Ordering::Release);
        tracing::info!(app_id = %rt.app_id, components = rt.host.all().len(), "plinth started");
        Ok(Self {
            addresses,
            shutdown,
            shutting_down,
            shutdown_request,
            tasks,
            rt,
            _subscriptions: subscriptions,
            _input_bindings: input_bindings,
            functions,
            mesh,
        })
    }

    /// The bound address of a listener.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
    }

    /// Resolves when a client asked Plinth to stop (Dapr's `Shutdown` rpc); the caller then
    /// calls [`Server::shutdown`] as it would for a signal.
    pub async fn shutdown_requested(&self) {
        self.shutdown_request.notified().await;
    }

    /// Stop accepting, let in-flight requests finish within `grace`, then close components.
    pub async fn shutdown(mut self, grace: Duration) {
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: draining in-flight requests"
        );
        self.shutting_down.store(true, Ordering::Release);
        // Leave name resolution first, so peers stop sending calls here.
        if let Ok(mut registration) = self.mesh.registration.lock() {
            registration.take();
        }
        let _ = self.shutdown.send(true);
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("grace period over; abandoning requests still in flight");
            self.tasks.abort_all();
        }
        self.rt.shutdown().await;
        tracing::info!("plinth stopped");
    }
}
