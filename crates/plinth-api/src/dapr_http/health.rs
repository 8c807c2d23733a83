//! `GET /v1.0/healthz` (204 when Plinth is ready, 500 otherwise, as Dapr), `GET
//! /v1.0/healthz/outbound` (204 once the APIs serve, which Dapr's SDKs wait for) and
//! `POST /v1.0/shutdown`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use plinth_runtime::components::Status;

use super::error::ApiError;
use super::extract::Query;
use super::{DaprHttpState, no_content};

pub(super) async fn healthz(
    State(s): State<DaprHttpState>,
    query: Query,
) -> Result<Response, ApiError> {
    let mut not_ready = Vec::new();
    if !s.listeners_ready.load(Ordering::Acquire) {
        not_ready.push("listeners are starting".to_string());
    }
    if s.shutting_down.load(Ordering::Acquire) {
        not_ready.push("listeners are stopping".to_string());
    }
    for c in s.rt.host.health() {
        if !c.ignore_errors && c.status != Status::Up {
            let status = match c.status {
                Status::Init => "INIT",
                Status::Up => "UP",
                Status::Down => "DOWN",
            };
            not_ready.push(match c.reason {
                Some(reason) => format!("{} is {status} ({reason})", c.name),
                None => format!("{} is {status}", c.name),
            });
        }
    }
    if !not_ready.is_empty() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_HEALTH_NOT_READY",
            format!("plinth is not ready: {}", not_ready.join(", ")),
        ));
    }
    // Name resolvers ask with `appid` whether this sidecar is still the app they expect.
    if let Some(app_id) = query.get("appid")
        && app_id != s.rt.app_id
    {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_HEALTH_APPID_NOT_MATCH",
            format!("app id {app_id:?} does not match this sidecar's"),
        ));
    }
    Ok(no_content())
}

pub(super) async fn outbound(State(s): State<DaprHttpState>) -> Result<Response, ApiError> {
    let serving =
        s.listeners_ready.load(Ordering::Acquire) && !s.shutting_down.load(Ordering::Acquire);
    if !serving {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_OUTBOUND_HEALTH_NOT_READY",
            "plinth outbound is not ready",
        ));
    }
    Ok(no_content())
}

/// Answer, then stop as for SIGTERM: the shutdown drains in-flight requests, this one
/// included.
pub(super) async fn shutdown(State(s): State<DaprHttpState>) -> Response {
    s.shutdown_request.notify_one();
    no_content()
}
