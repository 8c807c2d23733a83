//! The function host's front doors: HTTP ingress on the functions listener, and the
//! management routes on the admin listener (`/functions`, and Layotto's `/wasm/*`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use plinth_core::{Error, Result};
use plinth_runtime::app::{AppStatus, InvokeRequest};
use plinth_wasm::config::FunctionSpec;
use plinth_wasm::registry::InstallMode;
use plinth_wasm::{FunctionConfig, FunctionRegistry};
use serde::Deserialize;
use serde_json::json;

use crate::app::forwardable;
use crate::auth::ApiToken;

/// The largest `.wasm` the management routes accept.
pub const MAX_UPLOAD: usize = 64 << 20;

/// The header that picks a function on the ingress, as in Layotto.
const ID_HEADER: &str = "id";

/// What the function routes share.
#[derive(Debug, Clone)]
pub struct FunctionsState {
    /// The installed functions.
    pub registry: Arc<FunctionRegistry>,
    /// Required for every change.
    pub token: ApiToken,
    /// The largest request body the ingress reads.
    pub max_body: usize,
    /// Function resources by id: the config a function installed later under that id gets
    /// (limits, grants, subscriptions), unless the install gives its own.
    pub resources: Arc<HashMap<String, FunctionSpec>>,
}

/// The functions listener: a request goes to the function its `id` header names, else to
/// `/fn/{id}/...` (the function then sees the path after the id).
pub fn ingress_router(state: FunctionsState) -> axum::Router {
    axum::Router::new()
        .fallback(ingress)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The management routes, merged into the admin listener.
pub fn admin_router(state: FunctionsState) -> axum::Router {
    axum::Router::new()
        .route("/functions", get(list))
        .route(
            "/functions/{id}",
            get(describe).put(install).delete(uninstall),
        )
        .route("/wasm/install", post(layotto_install))
        .route("/wasm/uninstall", post(layotto_uninstall))
        .route("/wasm/update", post(layotto_update))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(state)
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn error_of(e: &Error) -> Response {
    error_response(crate::status::http_status(e.kind()), e.to_string())
}

async fn ingress(State(s): State<FunctionsState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let (id, method) = match parts.headers.get(ID_HEADER).map(|v| v.to_str()) {
        Some(Ok(id)) => (id.to_string(), path.trim_start_matches('/').to_string()),
        Some(Err(_)) => {
            return error_response(StatusCode::BAD_REQUEST, "the id header is not valid text");
        }
        None => match path.strip_prefix("/fn/") {
            Some(rest) => {
                let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
                (id.to_string(), tail.to_string())
            }
            None => {
                return error_response(
                    StatusCode::NOT_FOUND,
                    "name the function with the `id` header or the path /fn/{id}/...",
                );
            }
        },
    };
    let data = match axum::body::to_bytes(body, s.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body exceeds {} bytes", s.max_body),
            );
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| forwardable(k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let invoke = InvokeRequest {
        method,
        verb: parts.method.as_str().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        content_type,
        data,
        headers,
    };
    match s.registry.call(&id, "", invoke).await {
        Ok(resp) => {
            let status = match resp.status {
                AppStatus::Http(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                AppStatus::Grpc { code: 0, .. } => StatusCode::OK,
                AppStatus::Grpc { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut out = Response::new(Body::from(resp.data));
            *out.status_mut() = status;
            let h = out.headers_mut();
            for (k, v) in &resp.headers {
                if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v))
                    && forwardable(k.as_str())
                {
                    h.append(k, v);
                }
            }
            if !resp.content_type.is_empty()
                && let Ok(v) = HeaderValue::try_from(&resp.content_type)
            {
                h.insert(header::CONTENT_TYPE, v);
            }
            out
        }
        Err(e) => error_response(crate::status::function_http_status(e.kind()), e.to_string()),
    }
}

fn authorized(s: &FunctionsState, headers: &HeaderMap) -> Option<Response> {
    (!s.token.admits(headers))
        .then(|| error_response(StatusCode::UNAUTHORIZED, ApiToken::rejection(headers)))
}

async fn list(State(s): State<FunctionsState>) -> Response {
    Json(json!({ "functions": s.registry.list() })).into_response()
}

async fn describe(State(s): State<FunctionsState>, Path(id): Path<String>) -> Response {
    match s.registry.describe(&id) {
        Some(info) => Json(info).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            format!("function {id:?} is not installed"),
        ),
    }
}

/// The config of a function installed under `id` through the admin API: its resource's, if
/// a Function resource of that name was loaded, with the query's parameters on top.
fn config_from_query(s: &FunctionsState, id: &str, query: Option<&str>) -> Result<FunctionConfig> {
    let mut config = s
        .resources
        .get(id)
        .map(FunctionSpec::config)
        .unwrap_or_default();
    let bad = |key: &str, e: String| Error::invalid_argument(format!("query parameter {key}: {e}"));
    let mut grants_env = Vec::new();
    let mut grants_dirs = Vec::new();
    let mut stores = Vec::new();
    let mut variables = std::collections::BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let number = || value.parse::<u64>().map_err(|e| bad(&key, e.to_string()));
        match key.as_ref() {
            "appId" => config.app_id = Some(value.to_string()).filter(|v| !v.is_empty()),
            "memoryBytes" => config.limits.memory_bytes = number()?,
            "cpuMs" => config.limits.cpu_ms = number()?,
            "timeoutMs" => config.limits.timeout_ms = number()?,
            "maxConcurrency" => {
                config.limits.max_concurrency =
                    u32::try_from(number()?).map_err(|e| bad(&key, e.to_string()))?
            }
            "instanceReuse" => {
                config.limits.instance_reuse =
                    u32::try_from(number()?).map_err(|e| bad(&key, e.to_string()))?
            }
            "env" => grants_env.push(value.to_string()),
            "dir" | "dirs" => grants_dirs.push(value.to_string()),
            "secretStore" | "secretStores" => {
                stores.extend(value.split(',').filter(|v| !v.is_empty()).map(String::from))
            }
            "network" => {
                config.grants.network = value
                    .parse::<bool>()
                    .map_err(|e| bad(&key, e.to_string()))?
            }
            "pluginConfig" => config.plugin_config = Some(value.to_string()),
            "variable" | "variables" => match value.split_once('=') {
                Some((name, v)) if !name.is_empty() => {
                    variables.insert(name.to_string(), v.to_string());
                }
                _ => {
                    return Err(bad(
                        &key,
                        format!("{value:?} is not KEY=VALUE (a wasi:config variable)"),
                    ));
                }
            },
            other => {
                return Err(Error::invalid_argument(format!(
                    "unknown query parameter {other:?}: expected appId, memoryBytes, cpuMs, timeoutMs, maxConcurrency, instanceReuse, env, dir, secretStores, network, pluginConfig or variable"
                )));
            }
        }
    }
    if !grants_env.is_empty() {
        config.grants.env = grants_env;
    }
    if !grants_dirs.is_empty() {
        config.grants.dirs = grants_dirs;
    }
    if !stores.is_empty() {
        config.grants.secret_stores = stores;
    }
    if !variables.is_empty() {
        config.variables = variables;
    }
    config.validate().map_err(Error::invalid_argument)?;
    Ok(config)
}

async fn install(
    State(s): State<FunctionsState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = authorized(&s, &headers) {
        return denied;
    }
    let config = match config_from_query(&s, &id, query.as_deref()) {
        Ok(c) => c,
        Err(e) => return error_of(&e),
    };
    let existed = s.registry.get(&id).is_some();
    match s
        .registry
        .install(&id, body.to_vec(), config, InstallMode::Upsert)
        .await
    {
        Ok(info) => {
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (status, Json(info)).into_response()
        }
        Err(e) => error_of(&e),
    }
}

async fn uninstall(
    State(s): State<FunctionsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = authorized(&s, &headers) {
        return denied;
    }
    match s.registry.uninstall(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error_of(&e),
    }
}

/// Layotto's `/wasm/install` body.
#[derive(Debug, Deserialize)]
struct LayottoInstall {
    name: String,
    #[serde(default)]
    instance_num: Option<i64>,
    vm_config: Option<LayottoVmConfig>,
}

/// Layotto's `vm_config`: the module is a file on the sidecar's machine.
#[derive(Debug, Deserialize)]
struct LayottoVmConfig {
    #[serde(default)]
    engine: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    url: String,
}

/// Layotto's `/wasm/uninstall` and `/wasm/update` body.
#[derive(Debug, Deserialize)]
struct LayottoName {
    name: String,
    #[serde(default)]
    instance_num: Option<i64>,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| Error::invalid_argument(format!("invalid request body: {e}")))
}

/// Layotto's answer: an empty JSON object on success, `{"error": ...}` otherwise.
fn layotto_answer<T>(result: Result<T>) -> Response {
    match result {
        Ok(_) => Json(json!({})).into_response(),
        Err(e) => error_of(&e),
    }
}

/// Layotto's instance count becomes the function's concurrency bound.
fn instance_num(n: Option<i64>) -> Result<Option<u32>> {
    match n {
        None => Ok(None),
        Some(n) if n > 0 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        Some(_) => Err(Error::invalid_argument(
            "instance_num should be greater than 0",
        )),
    }
}

async fn layotto_install(
    State(s): State<FunctionsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = authorized(&s, &headers) {
        return denied;
    }
    let result = async {
        let req: LayottoInstall = parse_json(&body)?;
        let vm = req
            .vm_config
            .ok_or_else(|| Error::invalid_argument("vm_config is required"))?;
        if !vm.url.is_empty() && vm.path.is_empty() {
            return Err(Error::unimplemented(
                "vm_config.url: Plinth loads modules from vm_config.path only; upload bytes with PUT /functions/{id}",
            ));
        }
        if vm.path.is_empty() {
            return Err(Error::invalid_argument("vm_config.path is required"));
        }
        if !vm.engine.is_empty() {
            tracing::debug!(engine = %vm.engine, "vm_config.engine ignored: Plinth runs wasmtime");
        }
        let path = PathBuf::from(&vm.path);
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            Error::invalid_argument(format!("vm_config.path {}: {e}", path.display()))
        })?;
        let mut config = config_from_query(&s, &req.name, None)?;
        if let Some(n) = instance_num(req.instance_num)? {
            config.limits.max_concurrency = n;
        }
        s.registry
            .install(&req.name, bytes, config, InstallMode::Create)
            .await
    }
    .await;
    layotto_answer(result)
}

async fn layotto_uninstall(
    State(s): State<FunctionsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = authorized(&s, &headers) {
        return denied;
    }
    let result = async {
        let req: LayottoName = parse_json(&body)?;
        s.registry.uninstall(&req.name).await
    }
    .await;
    layotto_answer(result)
}

async fn layotto_update(
    State(s): State<FunctionsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = authorized(&s, &headers) {
        return denied;
    }
    let result = async {
        let req: LayottoName = parse_json(&body)?;
        let n = instance_num(req.instance_num)?
            .ok_or_else(|| Error::invalid_argument("can't get instance_num property"))?;
        let Some(current) = s.registry.get(&req.name) else {
            return Err(Error::not_found(format!(
                "function {:?} is not installed",
                req.name
            )));
        };
        let mut config = current.config.clone();
        config.limits.max_concurrency = n;
        s.registry.reconfigure(&req.name, config).await
    }
    .await;
    layotto_answer(result)
}
