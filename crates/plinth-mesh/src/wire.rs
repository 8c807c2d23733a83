//! The mesh protocol between sidecars: an invocation is one HTTP/2 request.
//!
//! - The verb is the request's method, the query its query, the body its body, and the
//!   caller's headers (already filtered by the front door) its headers.
//! - `plinth-target` names the app the caller means, `plinth-method` the method
//!   (percent-encoded, decoded exactly), `plinth-caller` the calling app (believed only on
//!   plain TCP: with mTLS the caller is the identity in its certificate), and
//!   `plinth-timeout-ms` what is left of the caller's deadline.
//! - The answer carries the app's status and headers. A gRPC app's status travels in
//!   `plinth-grpc-status` and `plinth-grpc-message`; a failure of the called sidecar itself
//!   (the app is not there, access denied) in `plinth-error` (an error kind), with the
//!   message as the body.
//! - `plinth-proxy: grpc` marks a raw gRPC call proxied for `dapr-app-id` callers: the
//!   callee passes it, streams and all, to its gRPC app.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use plinth_core::{Error, ErrorKind, Result};
use plinth_runtime::app::{AppStatus, InvokeAnswer, InvokeResponse};

use crate::client::{Body, full};

/// The app the caller means.
pub const TARGET: &str = "plinth-target";
/// The method, percent-encoded.
pub const METHOD: &str = "plinth-method";
/// The calling app, on plain TCP.
pub const CALLER: &str = "plinth-caller";
/// What is left of the caller's deadline, in milliseconds.
pub const TIMEOUT_MS: &str = "plinth-timeout-ms";
/// A gRPC app's status code.
pub const GRPC_STATUS: &str = "plinth-grpc-status";
/// A gRPC app's status message, percent-encoded.
pub const GRPC_MESSAGE: &str = "plinth-grpc-message";
/// The kind of a failure of the called sidecar.
pub const ERROR: &str = "plinth-error";
/// Marks a proxied gRPC call.
pub const PROXY: &str = "plinth-proxy";
/// The path a peer's health check asks: whether its app is healthy.
pub const HEALTH_PATH: &str = "/.plinth/health";

/// Point a proxied request at `authority`, keeping its path and query, over HTTP/2.
pub(crate) fn retarget(parts: &mut http::request::Parts, authority: &str) -> Result<()> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = format!("http://{authority}{path}")
        .parse()
        .map_err(|e| Error::invalid_argument(format!("cannot proxy {path:?}: {e}")))?;
    parts.version = http::Version::HTTP_2;
    Ok(())
}

/// Remove Plinth's own headers (`plinth-*`) from `headers`.
pub(crate) fn strip(headers: &mut HeaderMap) {
    plinth_runtime::app::passthrough::remove_prefixed(headers, "plinth-");
}

/// Everything but unreserved characters and `/` is escaped.
const METHOD_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(raw: &str) -> String {
    utf8_percent_encode(raw, METHOD_SET).to_string()
}

fn decode(raw: &str) -> Result<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::invalid_argument(format!("{raw:?} is not percent-encoded UTF-8")))
}

/// One call on the mesh: who calls whom, and what.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    /// The peer sidecar's address.
    pub(crate) authority: &'a str,
    /// The app the caller means.
    pub(crate) target: &'a str,
    /// The calling app.
    pub(crate) caller: &'a str,
    pub(crate) verb: &'a Method,
    /// The app's method (the path after `/`), unencoded.
    pub(crate) method: &'a str,
    /// The raw query, without `?`.
    pub(crate) query: &'a str,
    /// What is left of the caller's deadline.
    pub(crate) timeout: Duration,
}

impl Call<'_> {
    /// The HTTP/2 request, with the caller's `headers` (Plinth's own removed) and `body`.
    pub(crate) fn request(&self, mut headers: HeaderMap, body: Body) -> Result<Request<Body>> {
        let encoded = encode(self.method.trim_start_matches('/'));
        let mut uri = String::with_capacity(self.authority.len() + encoded.len() + 16);
        uri.push_str("http://");
        uri.push_str(self.authority);
        uri.push('/');
        uri.push_str(&encoded);
        if !self.query.is_empty() {
            uri.push('?');
            uri.push_str(self.query);
        }
        let uri: http::Uri = uri
            .parse()
            .map_err(|e| Error::invalid_argument(format!("cannot call {uri:?}: {e}")))?;
        strip(&mut headers);
        let value = |name: &str, value: &str| {
            HeaderValue::try_from(value)
                .map_err(|_| Error::invalid_argument(format!("{value:?} cannot be sent as {name}")))
        };
        headers.insert(TARGET, value(TARGET, self.target)?);
        headers.insert(CALLER, value(CALLER, self.caller)?);
        headers.insert(METHOD, value(METHOD, &encoded)?);
        headers.insert(
            TIMEOUT_MS,
            HeaderValue::from(u64::try_from(self.timeout.as_millis().max(1)).unwrap_or(u64::MAX)),
        );
        let mut request = Request::new(body);
        *request.method_mut() = self.verb.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// What the called sidecar reads from a mesh request's head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) target: String,
    /// The app's method, decoded.
    pub(crate) method: String,
    pub(crate) timeout: Option<Duration>,
}

/// Read a mesh request's head.
pub(crate) fn head(parts: &http::request::Parts) -> Result<Head> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let target = header(TARGET)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::invalid_argument(format!("a mesh request needs {TARGET}")))?
        .to_string();
    let method = match header(METHOD) {
        Some(m) => decode(m)?,
        None => decode(parts.uri.path().trim_start_matches('/'))?,
    };
    let timeout = header(TIMEOUT_MS)
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_millis);
    Ok(Head {
        target,
        method,
        timeout,
    })
}

/// The app's answer as a mesh response.
pub(crate) fn response(answer: InvokeResponse) -> Response<Body> {
    let (status, grpc) = match &answer.status {
        AppStatus::Http(code) => (
            StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY),
            None,
        ),
        AppStatus::Grpc { code, message } => (StatusCode::OK, Some((*code, message.clone()))),
    };
    let mut response = Response::new(full(answer.data));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (k, v) in &answer.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v))
            && !k.starts_with("plinth-")
        {
            headers.append(name, value);
        }
    }
    if !answer.content_type.is_empty()
        && let Ok(v) = HeaderValue::try_from(&answer.content_type)
    {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    if let Some((code, message)) = grpc {
        headers.insert(GRPC_STATUS, HeaderValue::from(code));
        if let Ok(v) = HeaderValue::try_from(encode(&message)) {
            headers.insert(GRPC_MESSAGE, v);
        }
    }
    response
}

/// A failure of the called sidecar as a mesh response.
pub(crate) fn error_response(err: &Error) -> Response<Body> {
    let status = match err.kind() {
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = Response::new(full(Bytes::from(err.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(ERROR, HeaderValue::from_static(err.kind().as_str()));
    response
}

/// The error a `plinth-error` response carries.
pub(crate) fn error(kind: &str, body: &[u8]) -> Error {
    Error::new(
        ErrorKind::from_name(kind).unwrap_or(ErrorKind::Internal),
        String::from_utf8_lossy(body).into_owned(),
    )
}

/// A mesh response (head and buffered body) as the app's answer, or the called sidecar's
/// failure as an error.
pub(crate) fn answer(parts: &http::response::Parts, body: Bytes) -> Result<InvokeResponse> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(kind) = header(ERROR) {
        return Err(error(kind, &body));
    }
    let status = match header(GRPC_STATUS).and_then(|c| c.parse::<i32>().ok()) {
        Some(code) => AppStatus::Grpc {
            code,
            message: header(GRPC_MESSAGE)
                .and_then(|m| decode(m).ok())
                .unwrap_or_default(),
        },
        None => AppStatus::Http(parts.status.as_u16()),
    };
    Ok(InvokeResponse {
        status,
        content_type: header(http::header::CONTENT_TYPE.as_str())
            .unwrap_or_default()
            .to_string(),
        data: body,
        headers: parts
            .headers
            .iter()
            .filter(|(k, _)| {
                let k = k.as_str();
                !k.starts_with("plinth-") && k != "content-type" && k != "content-length"
            })
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
    })
}

/// A mesh response to a call passed through: the app's HTTP answer streams on; a gRPC
/// app's answer is read whole (within `max_body`); the called sidecar's failure is an error.
pub(crate) async fn answer_http(
    response: Response<hyper::body::Incoming>,
    max_body: usize,
) -> Result<InvokeAnswer> {
    let (mut parts, body) = response.into_parts();
    if parts.headers.contains_key(ERROR) || parts.headers.contains_key(GRPC_STATUS) {
        let limit = if parts.headers.contains_key(ERROR) {
            64 * 1024
        } else {
            max_body
        };
        let body = crate::mesh::read_body(body, limit).await?;
        return answer(&parts, body).map(InvokeAnswer::Buffered);
    }
    strip(&mut parts.headers);
    Ok(InvokeAnswer::Http(Response::from_parts(
        parts,
        plinth_runtime::app::passthrough::boxed(body),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_runtime::app::InvokeRequest;

    #[test]
    fn a_request_survives_the_round_trip() {
        let req = InvokeRequest {
            method: "orders/a b%2F/é".into(),
            verb: "PUT".into(),
            query: "x=1&y=%20".into(),
            content_type: "application/json".into(),
            data: Bytes::from_static(b"{}"),
            headers: vec![
                ("x-one".into(), "1".into()),
                ("plinth-target".into(), "forged".into()),
            ],
        };
        let mut replay = crate::replay::Replay::whole(req.clone()).expect("replay");
        let (headers, body) = replay.next().expect("a body");
        let http = Call {
            authority: "127.0.0.1:1",
            target: "orders",
            caller: "shop",
            verb: &replay.verb,
            method: &replay.method,
            query: &replay.query,
            timeout: Duration::from_millis(1500),
        }
        .request(headers, body)
        .expect("request");
        let (parts, _) = http.into_parts();
        let got = head(&parts).expect("head");
        assert_eq!(got.target, "orders");
        assert_eq!(got.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(got.method, req.method);
        assert_eq!(parts.method, "PUT");
        assert_eq!(parts.uri.query(), Some(req.query.as_str()));
        assert_eq!(parts.headers["content-type"], "application/json");
        assert_eq!(parts.headers["x-one"], "1");
        assert_eq!(parts.headers[TARGET], "orders");
        assert_eq!(parts.headers[CALLER], "shop");
    }

    #[test]
    fn answers_and_failures_survive_the_round_trip() {
        let answer_in = InvokeResponse {
            status: AppStatus::Grpc {
                code: 5,
                message: "no such order: ü".into(),
            },
            content_type: "text/plain".into(),
            data: Bytes::from_static(b"x"),
            headers: vec![("x-two".into(), "2".into())],
        };
        let (parts, _) = response(answer_in).into_parts();
        let got = answer(&parts, Bytes::from_static(b"x")).expect("answer");
        assert_eq!(
            got.status,
            AppStatus::Grpc {
                code: 5,
                message: "no such order: ü".into()
            }
        );
        assert_eq!(got.headers, vec![("x-two".to_string(), "2".to_string())]);

        let (parts, _) = error_response(&Error::permission_denied("no")).into_parts();
        let err = answer(&parts, Bytes::from_static(b"no")).expect_err("error");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert_eq!(err.to_string(), "no");
    }
}
