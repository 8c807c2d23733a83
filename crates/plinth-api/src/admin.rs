//! The admin listener: actuator probes and info, run-time log levels, and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plinth_runtime::Runtime;
use serde::Deserialize;
use serde_json::json;

/// Changes log filtering at run time (implemented by the binary over its subscriber).
pub trait LogControl: Send + Sync + std::fmt::Debug {
    /// Set `target` (a module path such as `plinth_runtime`, or empty for all) to `level`.
    fn set_level(&self, target: &str, level: &str) -> Result<(), String>;
}

/// What the admin handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The runtime.
    pub rt: Arc<Runtime>,
    /// Whether every listener is bound and serving.
    pub listeners_ready: Arc<AtomicBool>,
    /// Whether the process is shutting down.
    pub shutting_down: Arc<AtomicBool>,
    /// Log control, if the binary offers it.
    pub log: Option<Arc<dyn LogControl>>,
    /// Required for every change (probes, info and metrics stay open).
    pub token: crate::auth::ApiToken,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/actuator/health/liveness", get(liveness))
        .route("/actuator/health/readiness", get(readiness))
        .route("/actuator/info", get(info))
        .route("/actuator/logger", post(logger))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Liveness never depends on a backend: a backend outage must not get Plinth restarted.
async fn liveness() -> Json<serde_json::Value> {
    Json(json!({ "status": "UP" }))
}

async fn readiness(State(s): State<AdminState>) -> Response {
    let components = s.rt.host.health();
    let listeners = s.listeners_ready.load(Ordering::Acquire);
    let stopping = s.shutting_down.load(Ordering::Acquire);
    let ready = listeners && !stopping && s.rt.components_ready();
    let body = json!({
        "status": if ready { "UP" } else { "DOWN" },
        "listeners": if stopping { "STOPPING" } else if listeners { "UP" } else { "INIT" },
        "components": components,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn info(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let components: Vec<_> = s
        .rt
        .host
        .all()
        .iter()
        .map(|h| json!({ "name": h.spec().name, "type": h.spec().type_name, "version": h.spec().version }))
        .collect();
    Json(json!({
        "app": { "name": "plinth", "version": env!("CARGO_PKG_VERSION") },
        "appId": s.rt.app_id,
        "uptimeSeconds": s.rt.started.elapsed().as_secs(),
        "embeddedDefault": s.rt.loaded.embedded,
        "components": components,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoggerRequest {
    /// Module path, e.g. `plinth_runtime::pubsub`; empty or absent for every target.
    #[serde(default)]
    logger: String,
    /// `trace`, `debug`, `info`, `warn`, `error` or `off`.
    level: String,
}

async fn logger(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !s.token.admits(&headers) {
        let message = crate::auth::ApiToken::rejection(&headers);
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": message }))).into_response();
    }
    let req: LoggerRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": format!("body must be {{\"logger\": \"target\", \"level\": \"debug\"}}: {e}") })))
                .into_response()
        }
    };
    let level = req.level.to_ascii_lowercase();
    if !matches!(
        level.as_str(),
        "trace" | "debug" | "info" | "warn" | "error" | "off"
    ) {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": format!("level {:?} is not trace, debug, info, warn, error or off", req.level) })))
            .into_response();
    }
    if !req
        .logger
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "logger must be a module path such as plinth_runtime::pubsub" })),
        )
            .into_response();
    }
    let Some(log) = &s.log else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            Json(json!({ "error": "log levels cannot be changed in this process" })),
        )
            .into_response();
    };
    match log.set_level(&req.logger, &level) {
        Ok(()) => {
            tracing::info!(logger = %req.logger, level = %level, "log level changed");
            Json(json!({ "logger": req.logger, "level": level })).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.rt.metrics.encode(),
    )
        .into_response()
}
