//! Service invocation: `{VERB} /v1.0/invoke/{app-id}/method/{method...}` and, as Dapr does,
//! any unmatched path carrying a `dapr-app-id` header. The verb, the rest of the path (as
//! sent, percent-encoding kept), the query, the headers and the body go to the app; its
//! status, headers and body come back as they are. Where the target is an HTTP app (here or
//! through the mesh) both bodies stream; a function or a gRPC app gets the call read whole.
//! A gRPC app's error status becomes the HTTP status its code maps to, with Dapr's
//! `{"errorCode", "message"}` body.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body as ResponseBody;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use plinth_runtime::app::passthrough::{boxed, strip_for_app};
use plinth_runtime::app::{AppStatus, HttpCall, InvokeAnswer};

use super::DaprHttpState;
use super::error::ApiError;
use super::extract::{BodyLimit, too_large};
use crate::status::{DaprHttpOp, http_of_grpc_code};

/// The header naming the target app for invocations on plain paths.
pub(super) const APP_ID_HEADER: &str = "dapr-app-id";

/// Marks a response passed through from the app: its body streams, whatever its length.
#[derive(Debug, Clone, Copy)]
pub(super) struct PassedThrough;

/// `/v1.0/invoke/{app-id}/method/{method...}`: the target and the method, raw. The target
/// may be a URL (`http://host:port`), as in Dapr, for services without a sidecar.
fn split(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1.0/invoke/")?;
    if rest.starts_with("http://") || rest.starts_with("https://") {
        let at = rest.find("/method/")?;
        return Some((&rest[..at], &rest[at + "/method/".len()..]));
    }
    let (app, rest) = rest.split_once('/')?;
    let method = rest.strip_prefix("method/")?;
    Some((app, method))
}

/// Whether `path` is an invocation whose target is a URL (the router's `{app}` segment
/// cannot hold one).
pub(super) fn is_url_target(path: &str) -> bool {
    path.strip_prefix("/v1.0/invoke/")
        .is_some_and(|rest| rest.starts_with("http://") || rest.starts_with("https://"))
}

pub(super) async fn invoke(
    State(s): State<DaprHttpState>,
    req: Request,
) -> Result<Response, ApiError> {
    let Some((app, method)) = split(req.uri().path()) else {
        return Err(ApiError::malformed(format!(
            "{} is not /v1.0/invoke/{{app-id}}/method/{{method}}",
            req.uri().path()
        )));
    };
    let (app, method) = (percent_decode(app), method.to_string());
    call(&s, &app, method, req).await
}

/// Dapr's other form: an unmatched path with `dapr-app-id` names the method itself.
pub(super) async fn by_header(
    s: &DaprHttpState,
    app: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let method = req.uri().path().trim_start_matches('/').to_string();
    call(s, app, method, req).await
}

/// Pass the call through: the body streams to the app (within the listener's limit) and the
/// app's answer streams back.
async fn call(
    s: &DaprHttpState,
    app: &str,
    method: String,
    req: Request,
) -> Result<Response, ApiError> {
    let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
    let (mut parts, body) = req.into_parts();
    // A declared length over the limit is refused before any of the body is read.
    if let Some(limit) = limit
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|declared| declared > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large(Some(limit)));
    }
    strip_for_app(&mut parts.headers);
    parts.headers.remove(APP_ID_HEADER);
    parts.extensions = Default::default();
    // A chunked body can outgrow the limit while it streams; the call then fails wherever it
    // was, and the caller is told why.
    let over = Arc::new(AtomicBool::new(false));
    let body = match limit {
        Some(limit) => {
            let over = over.clone();
            boxed(Limited::new(body, limit).map_err(move |e| {
                if e.is::<LengthLimitError>() {
                    over.store(true, Ordering::Relaxed);
                }
                e
            }))
        }
        None => boxed(body),
    };
    let call = HttpCall {
        method,
        request: Request::from_parts(parts, body),
    };
    let answer = match s.rt.invoke.invoke_http(app, call).await {
        Ok(answer) => answer,
        Err(_) if over.load(Ordering::Relaxed) => return Err(too_large(limit)),
        Err(e) => return Err(ApiError::op(DaprHttpOp::Invoke, &e)),
    };
    let answer = match answer {
        InvokeAnswer::Http(response) => {
            let (mut parts, body) = response.into_parts();
            parts.extensions = Default::default();
            parts.extensions.insert(PassedThrough);
            return Ok(Response::from_parts(parts, ResponseBody::new(body)));
        }
        InvokeAnswer::Buffered(answer) => answer,
    };
    let status = match &answer.status {
        AppStatus::Http(code) => StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY),
        AppStatus::Grpc { code: 0, .. } => StatusCode::OK,
        AppStatus::Grpc { code, message } => {
            let status = http_of_grpc_code(tonic::Code::from_i32(*code));
            return Ok(ApiError::new(status, "ERR_DIRECT_INVOKE", message.clone()).into_response());
        }
    };
    let mut response = Response::new(ResponseBody::from(answer.data));
    *response.status_mut() = status;
    let out = response.headers_mut();
    for (k, v) in &answer.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v))
        {
            out.append(name, value);
        }
    }
    if !answer.content_type.is_empty()
        && let Ok(v) = HeaderValue::from_str(&answer.content_type)
    {
        out.insert(header::CONTENT_TYPE, v);
    }
    Ok(response)
}

/// Decode `%XX` escapes in an app id (ids are plain names; anything undecodable stays).
fn percent_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .unwrap_or_else(|_| raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_target_and_keeps_the_method_raw() {
        assert_eq!(
            split("/v1.0/invoke/orders/method/a/b%20c"),
            Some(("orders", "a/b%20c"))
        );
        assert_eq!(split("/v1.0/invoke/orders/method/"), Some(("orders", "")));
        assert_eq!(split("/v1.0/invoke/orders"), None);
        assert_eq!(split("/v1.0/invoke/orders/other/x"), None);
        assert_eq!(
            split("/v1.0/invoke/http://127.0.0.1:8080/method/a/b"),
            Some(("http://127.0.0.1:8080", "a/b"))
        );
        assert!(is_url_target("/v1.0/invoke/https://x/method/y"));
        assert!(!is_url_target("/v1.0/invoke/orders/method/y"));
        assert_eq!(percent_decode("my%2Dapp"), "my-app");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
