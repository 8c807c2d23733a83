//! `bench-functions serve`: the server of the warm-latency scenarios. One axum HTTP server
//! with two routes answering the same bytes: `/native`, a Rust handler, and `/fn`, the
//! `fixture-hello` function called through the function host's registry. Whatever `/fn`
//! costs more than `/native` is the function host's share.
//!
//! It runs as Plinth and the bare server do: a multi-threaded Tokio runtime with one worker
//! per CPU it may use (one when pinned), `TCP_NODELAY` on every connection. It prints
//! `LISTENING <addr>` once it accepts connections and exits on SIGTERM.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::serve::ListenerExt as _;
use plinth_runtime::app::{AppStatus, InvokeRequest, InvokeResponse};
use plinth_wasm::registry::InstallMode;
use plinth_wasm::{EngineOptions, FunctionConfig, FunctionRegistry, WasmEngine};

use crate::{FUNCTION_ID, FUNCTION_PATH, HELLO_BODY, HELLO_CONTENT_TYPE, NATIVE_PATH};

/// The largest request body either route reads.
const MAX_BODY: usize = 4 << 20;

/// Options of `bench-functions serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Where the function host caches compiled code (created private to this user).
    #[arg(long)]
    engine_cache: PathBuf,
    /// The function served at `/fn` (fixture-hello.wasm).
    #[arg(long)]
    fixture: PathBuf,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to bind; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// `limits.instanceReuse` of the function [default: Plinth's own].
    #[arg(long)]
    instance_reuse: Option<u32>,
}

/// Runs the server until SIGTERM.
pub(crate) fn main(args: ServeArgs) -> anyhow::Result<()> {
    // One worker per CPU this process may use, as Plinth and the bare server size theirs.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let bytes = super::binaries::read_fixture(&args.fixture)?;
    let runtime = plinth_runtime::Runtime::start(plinth_runtime::Options {
        app_id: "bench".into(),
        ..Default::default()
    })
    .await
    .context("starting the runtime")?;
    let engine = WasmEngine::new(EngineOptions {
        cache_dir: args.engine_cache,
        ..Default::default()
    })
    .context("starting the wasm engine")?;
    let registry = FunctionRegistry::new(engine, runtime);
    let mut config = FunctionConfig::default();
    if let Some(n) = args.instance_reuse {
        config.limits.instance_reuse = n;
    }
    registry
        .install(FUNCTION_ID, bytes, config, InstallMode::Create)
        .await
        .with_context(|| format!("installing {}", args.fixture.display()))?;

    let app = Router::new()
        .route(NATIVE_PATH, any(native))
        .route(FUNCTION_PATH, any(function))
        .with_state(registry);
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "LISTENING {}", listener.local_addr()?)?;
    stdout.flush()?;
    axum::serve(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app,
    )
    .with_graceful_shutdown(shutdown())
    .await?;
    Ok(())
}

/// The native handler: reads the request as `/fn` does and answers what fixture-hello
/// answers.
async fn native(req: Request) -> Response {
    if axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .is_err()
    {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    (
        [(header::CONTENT_TYPE, HELLO_CONTENT_TYPE)],
        Body::from(HELLO_BODY),
    )
        .into_response()
}

/// Hop-by-hop headers, and the ones carried in other fields, are not passed to the
/// function, as Plinth's ingress does with `plinth_api::app::forwardable` (copied here so
/// the benchmark does not build the API crate; the benchmark's requests carry none of the
/// names that differ).
fn passes(name: &str) -> bool {
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "host"
            | "content-length"
            | "content-type"
    )
}

/// The function: the request as an invocation of `hello`, its answer as the response.
async fn function(State(registry): State<Arc<FunctionRegistry>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(data) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let invoke = InvokeRequest {
        method: String::new(),
        verb: parts.method.as_str().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        data,
        headers: parts
            .headers
            .iter()
            .filter(|(k, _)| passes(k.as_str()))
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
    };
    match registry.call(FUNCTION_ID, "", invoke).await {
        Ok(answer) => response(answer),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn response(answer: InvokeResponse) -> Response {
    let status = match answer.status {
        AppStatus::Http(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        AppStatus::Grpc { code: 0, .. } => StatusCode::OK,
        AppStatus::Grpc { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut out = Response::new(Body::from(answer.data));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    for (k, v) in &answer.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v))
            && passes(k.as_str())
        {
            headers.append(k, v);
        }
    }
    if let Ok(v) = HeaderValue::try_from(&answer.content_type)
        && !answer.content_type.is_empty()
    {
        headers.insert(header::CONTENT_TYPE, v);
    }
    out
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
