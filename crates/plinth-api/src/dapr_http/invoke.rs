//! Service invocation: `{VERB} /v1.0/invoke/{app-id}/method/{method...}` and, as Dapr does,
//! any unmatched path carrying a `dapr-app-id` header. The verb, the rest of the path (as
//! sent, percent-encoding kept), the query, the headers and the body go to the app; its
//! status, headers and body come back as they are. A gRPC app's error status becomes the
//! HTTP status its code maps to, with Dapr's `{"errorCode", "message"}` body.

use axum::body::Body as ResponseBody;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use plinth_runtime::app::{AppStatus, InvokeRequest};

use super::DaprHttpState;
use super::error::ApiError;
use super::extract::Body;
use crate::app::forwardable;
use crate::status::{DaprHttpOp, http_of_grpc_code};

/// The header naming the target app for invocations on plain paths.
pub(super) const APP_ID_HEADER: &str = "dapr-app-id";

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
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let Some((app, target)) = split(uri.path()) else {
        return Err(ApiError::malformed(format!(
            "{} is not /v1.0/invoke/{{app-id}}/method/{{method}}",
            uri.path()
        )));
    };
    let app = percent_decode(app);
    call(&s, &app, target, method, &uri, &headers, body).await
}

/// Dapr's other form: an unmatched path with `dapr-app-id` names the method itself.
pub(super) async fn by_header(
    s: &DaprHttpState,
    app: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let target = uri.path().trim_start_matches('/');
    call(s, app, target, method, uri, headers, body).await
}

async fn call(
    s: &DaprHttpState,
    app: &str,
    target: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let forwarded = headers
        .iter()
        .filter(|(k, _)| forwardable(k.as_str()) && k.as_str() != APP_ID_HEADER)
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let request = InvokeRequest {
        method: target.to_string(),
        verb: method.as_str().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        content_type,
        data: body,
        headers: forwarded,
    };
    let answer =
        s.rt.invoke
            .invoke(app, request)
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::Invoke, &e))?;
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
