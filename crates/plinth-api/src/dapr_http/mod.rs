//! Dapr's HTTP API (`/v1.0`), translated onto the building blocks: the routes, bodies,
//! statuses and `errorCode`s of Dapr's `pkg/api/http`, one module per building block.
//!
//! Errors are Dapr's `{"errorCode", "message"}` body; building-block errors get their status
//! and code from `crate::status`. Values saved here are stored as Dapr stores them, JSON
//! encoded, so the gRPC APIs read the same bytes.

mod binding;
mod configuration;
mod error;
mod extract;
mod health;
mod invoke;
mod lock;
mod metadata;
mod pubsub;
mod query;
mod secrets;
mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use plinth_runtime::Runtime;
use plinth_runtime::metrics::SharedMetrics;
use tokio::sync::Notify;

use crate::status::DaprComponent;
use error::ApiError;

/// What the Dapr HTTP handlers share: one reference, cloned per request.
#[derive(Debug, Clone)]
pub struct DaprHttpState(Arc<DaprHttpShared>);

impl DaprHttpState {
    /// Share `shared` with every handler.
    pub fn new(shared: DaprHttpShared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for DaprHttpState {
    type Target = DaprHttpShared;

    fn deref(&self) -> &DaprHttpShared {
        &self.0
    }
}

/// The parts of [`DaprHttpState`].
#[derive(Debug)]
pub struct DaprHttpShared {
    /// The runtime.
    pub rt: Arc<Runtime>,
    /// Whether every listener is bound and serving.
    pub listeners_ready: Arc<AtomicBool>,
    /// Whether the process is shutting down.
    pub shutting_down: Arc<AtomicBool>,
    /// Notified by `POST /v1.0/shutdown`.
    pub shutdown_request: Arc<Notify>,
    /// Configuration subscriptions, shared with the Dapr gRPC API.
    pub config_subscriptions: crate::config_subscriptions::ConfigSubscriptions,
    /// The API token callers must present.
    pub token: crate::auth::ApiToken,
}

/// The metrics label of this API.
const API: &str = "dapr-http";

/// Dapr's HTTP routes, with request bodies limited to `max_body_size` bytes.
pub fn router(state: DaprHttpState, max_body_size: usize) -> Router {
    let metrics = state.rt.metrics.clone();
    Router::new()
        // State. `bulk` and `transaction` are also keys: GET and DELETE read them as such.
        .route("/v1.0/state/{store}", post(state::save).put(state::save))
        .route(
            "/v1.0/state/{store}/bulk",
            post(state::bulk_get)
                .put(state::bulk_get)
                .get(state::get_named::<Bulk>)
                .delete(state::delete_named::<Bulk>),
        )
        .route(
            "/v1.0/state/{store}/transaction",
            post(state::transaction)
                .put(state::transaction)
                .get(state::get_named::<Transaction>)
                .delete(state::delete_named::<Transaction>),
        )
        .route(
            "/v1.0/state/{store}/{key}",
            get(state::get).delete(state::delete),
        )
        .route(
            "/v1.0-alpha1/state/{store}/query",
            post(query::query).put(query::query),
        )
        // Pub/sub. The topic is the rest of the path: topics may hold slashes.
        .route(
            "/v1.0/publish/{pubsub}/{*topic}",
            post(pubsub::publish).put(pubsub::publish),
        )
        .route(
            "/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}",
            post(pubsub::bulk_publish).put(pubsub::bulk_publish),
        )
        .route(
            "/v1.0/publish/bulk/{pubsub}/{*topic}",
            post(pubsub::bulk_publish).put(pubsub::bulk_publish),
        )
        .route(
            "/v1.0/publish/{pubsub}/",
            post(pubsub::no_topic).put(pubsub::no_topic),
        )
        .route(
            "/v1.0-alpha1/publish/bulk/{pubsub}/",
            post(pubsub::no_topic).put(pubsub::no_topic),
        )
        .route(
            "/v1.0/publish/bulk/{pubsub}/",
            post(pubsub::no_topic).put(pubsub::no_topic),
        )
        // Output bindings.
        .route(
            "/v1.0/bindings/{name}",
            post(binding::invoke).put(binding::invoke),
        )
        // Secrets.
        .route("/v1.0/secrets/{store}/bulk", get(secrets::bulk_get))
        .route("/v1.0/secrets/{store}/{key}", get(secrets::get))
        // Configuration; subscriptions deliver changes to the app's configuration route.
        .route("/v1.0/configuration/{store}", get(configuration::get))
        .route(
            "/v1.0-alpha1/configuration/{store}",
            get(configuration::get),
        )
        .route(
            "/v1.0/configuration/{store}/subscribe",
            get(configuration::subscribe),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/subscribe",
            get(configuration::subscribe),
        )
        .route(
            "/v1.0/configuration/{store}/{id}/unsubscribe",
            get(configuration::unsubscribe),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/{id}/unsubscribe",
            get(configuration::unsubscribe),
        )
        // Locks.
        .route("/v1.0-alpha1/lock/{store}", post(lock::try_lock))
        .route("/v1.0-alpha1/unlock/{store}", post(lock::unlock))
        // Metadata, health, shutdown.
        .route("/v1.0/metadata", get(metadata::get))
        .route("/v1.0/metadata/{key}", put(metadata::put))
        .route("/v1.0/healthz", get(health::healthz))
        .route("/v1.0/healthz/outbound", get(health::outbound))
        .route("/v1.0/shutdown", post(health::shutdown))
        // Service invocation, every verb; unmatched paths carrying `dapr-app-id` reach it
        // through `fallback`.
        .route("/v1.0/invoke/{app}/method/{*method}", any(invoke::invoke))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(max_body_size))
        .layer(middleware::from_fn_with_state(
            Arc::new(Front {
                metrics,
                token: state.token.clone(),
                limit: max_body_size,
            }),
            front,
        ))
        .with_state(state)
}

/// Path-segment names for the state routes whose last segment is a fixed word.
trait FixedKey {
    const KEY: &'static str;
}

#[derive(Debug)]
struct Bulk;
impl FixedKey for Bulk {
    const KEY: &'static str = "bulk";
}

#[derive(Debug)]
struct Transaction;
impl FixedKey for Transaction {
    const KEY: &'static str = "transaction";
}

/// Check that `name` is a loaded component of `component`'s kind, so that a route naming
/// an unknown one gets Dapr's "not found" or "not configured" answer.
fn require(rt: &Runtime, component: DaprComponent, name: &str) -> Result<(), ApiError> {
    let (kind, what) = match component {
        DaprComponent::StateStore => ("state", "state store"),
        DaprComponent::PubSub => ("pubsub", "pubsub"),
        DaprComponent::Binding => ("bindings", "binding"),
        DaprComponent::SecretStore => ("secretstores", "secret store"),
        DaprComponent::ConfigurationStore => ("configuration", "configuration store"),
        DaprComponent::LockStore => ("lock", "lock store"),
    };
    if rt
        .host
        .get(name)
        .is_some_and(|h| h.instance().kind() == kind)
    {
        return Ok(());
    }
    let mut configured = rt.host.names_of(kind);
    configured.sort();
    Err(ApiError::missing(component, name, what, &configured))
}

/// Dapr APIs Plinth has no building block for yet, by the path's first two segments.
fn unimplemented_api(path: &str) -> Option<&'static str> {
    let mut segments = path.trim_start_matches('/').split('/');
    let version = segments.next().unwrap_or_default();
    if !version.starts_with("v1.0") {
        return None;
    }
    let api = segments.next().unwrap_or_default();
    Some(match api {
        "actors" => "actors are not supported by Plinth",
        "workflows" => "workflows are not supported by Plinth",
        "jobs" => "jobs are not supported by Plinth",
        "crypto" | "subtlecrypto" => "cryptography is not supported by Plinth",
        "conversation" => "conversation is not supported by Plinth",
        _ => return None,
    })
}

/// Unmatched paths: an invocation when `dapr-app-id` names the app, as Dapr does; Dapr's
/// unimplemented APIs answer 501, anything else 404.
async fn fallback(State(s): State<DaprHttpState>, req: axum::extract::Request) -> Response {
    if invoke::is_url_target(req.uri().path()) {
        return match invoke::invoke(State(s), req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    if let Some(app) = req
        .headers()
        .get(invoke::APP_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    {
        return match invoke::by_header(&s, &app, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    let (parts, _) = req.into_parts();
    unmatched(parts.method, parts.uri).into_response()
}

fn unmatched(method: Method, uri: axum::http::Uri) -> ApiError {
    match unimplemented_api(uri.path()) {
        Some(what) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            error::API_UNIMPLEMENTED,
            format!("{what} ({method} {})", uri.path()),
        ),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            error::NOT_FOUND,
            format!("no Dapr API serves {method} {}", uri.path()),
        ),
    }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        error::METHOD_NOT_ALLOWED,
        format!("{} does not serve {method}", uri.path()),
    )
}

/// What every request passes through, in one layer: the rpc metrics, the API token, and the
/// body limits.
#[derive(Debug)]
struct Front {
    metrics: SharedMetrics,
    token: crate::auth::ApiToken,
    limit: usize,
}

/// - Every request is counted in the rpc metrics, labelled by verb and route template (never
///   the raw path, which would make a series per key).
/// - With an API token set, every route but the health checks requires it (401 otherwise).
/// - Request bodies are limited by `--max-body-size` (the extractors read the limit from the
///   request), and answers are bounded like requests, as gRPC bounds its responses: an answer
///   over the limit becomes `500 ERR_RESPONSE_TOO_LARGE` naming its size. Answers streamed
///   from the app are not held, so they have no limit.
async fn front(State(front): State<Arc<Front>>, mut req: Request, next: Next) -> Response {
    use axum::body::HttpBody as _;
    let route = match req.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", req.method(), path.as_str()),
        None => "unmatched".to_string(),
    };
    let started = Instant::now();
    let open = matches!(req.uri().path(), "/v1.0/healthz" | "/v1.0/healthz/outbound");
    let response = if open || front.token.admits(req.headers()) {
        req.extensions_mut().insert(extract::BodyLimit(front.limit));
        let response = next.run(req).await;
        let limit = front.limit;
        match response.body().size_hint().exact() {
            Some(size)
                if size > u64::try_from(limit).unwrap_or(u64::MAX)
                    && response
                        .extensions()
                        .get::<invoke::PassedThrough>()
                        .is_none() =>
            {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_RESPONSE_TOO_LARGE",
                    format!(
                        "the answer ({size} bytes) is over the limit of {limit} bytes (--max-body-size)"
                    ),
                )
                .into_response()
            }
            _ => response,
        }
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ERR_API_TOKEN",
            crate::auth::ApiToken::rejection(req.headers()),
        )
        .into_response()
    };
    front.metrics.record_rpc(
        API,
        &route,
        status_label(response.status()),
        started.elapsed(),
    );
    response
}

/// The metrics label of a status: the code itself for those Dapr's API answers, the class
/// otherwise.
fn status_label(status: StatusCode) -> &'static str {
    const ANSWERED: [&str; 15] = [
        "200", "204", "400", "401", "403", "404", "405", "409", "413", "415", "429", "500", "501",
        "503", "504",
    ];
    let code = status.as_str();
    if let Some(known) = ANSWERED.iter().find(|c| **c == code) {
        return known;
    }
    plinth_runtime::metrics::status_class(status.as_u16())
}

/// Response metadata as `metadata.<key>` headers, as Dapr sends it; a pair no header can
/// carry is left out.
fn metadata_headers(headers: &mut HeaderMap, metadata: &plinth_core::Metadata) {
    for (k, v) in metadata {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(format!("metadata.{k}").as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
}

/// A 204 with no body.
fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
