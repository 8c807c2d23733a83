//! An invocation as the incoming HTTP request a component handles, and the response it
//! writes back as the invocation's answer.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Full};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use plinth_core::{Error, Result};
use plinth_runtime::app::{AppStatus, InvokeRequest, InvokeResponse};
use tokio::sync::oneshot;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The largest response body a function may answer with.
pub const MAX_RESPONSE_BODY: usize = 16 << 20;

/// The authority of every request a function receives: functions are addressed by id, not
/// by host name.
const AUTHORITY: &str = "localhost";

/// What a path may not carry unencoded (beyond controls): the path stays a path.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^');
/// What a query may not carry unencoded.
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^');

/// The channel a response comes back on, from `response-outparam.set`.
pub(crate) type ResponseReceiver =
    oneshot::Receiver<std::result::Result<http::Response<HyperOutgoingBody>, ErrorCode>>;

/// `req` as an HTTP request to `/{method}?{query}`: its verb (POST when empty), its
/// headers (ones that are not valid HTTP are left out), its content type and its body.
pub(crate) fn to_http(id: &str, req: InvokeRequest) -> Result<http::Request<Full<Bytes>>> {
    let verb = if req.verb.is_empty() {
        "POST".to_string()
    } else {
        req.verb.to_ascii_uppercase()
    };
    let method = Method::from_bytes(verb.as_bytes())
        .map_err(|_| Error::invalid_argument(format!("{:?} is not an HTTP verb", req.verb)))?;
    let mut target = String::with_capacity(req.method.len() + req.query.len() + 2);
    target.push('/');
    target.extend(utf8_percent_encode(
        req.method.trim_start_matches('/'),
        PATH,
    ));
    if !req.query.is_empty() {
        target.push('?');
        target.extend(utf8_percent_encode(&req.query, QUERY));
    }
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(AUTHORITY)
        .path_and_query(target.as_str())
        .build()
        .map_err(|e| {
            Error::invalid_argument(format!(
                "function {id:?}: method {:?} does not make a request path: {e}",
                req.method
            ))
        })?;
    let mut builder = http::Request::builder().method(method).uri(uri);
    if let Some(headers) = builder.headers_mut() {
        for (name, value) in &req.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue;
            };
            if name == HOST || name == CONTENT_LENGTH {
                continue;
            }
            headers.append(name, value);
        }
        if !req.content_type.is_empty()
            && !headers.contains_key(CONTENT_TYPE)
            && let Ok(value) = HeaderValue::from_str(&req.content_type)
        {
            headers.insert(CONTENT_TYPE, value);
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(req.data.len()));
    }
    builder
        .body(Full::new(req.data))
        .map_err(|e| Error::invalid_argument(format!("function {id:?}: {e}")))
}

/// Wait for the response the guest sets, and read its body up to [`MAX_RESPONSE_BODY`].
pub(crate) async fn collect(id: &str, rx: ResponseReceiver) -> Result<InvokeResponse> {
    let response = match rx.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => {
            return Err(Error::internal(format!(
                "function {id:?} answered with an error instead of a response: {code:?}"
            )));
        }
        Err(_) => {
            return Err(Error::internal(format!(
                "function {id:?} returned without setting its response (wasi:http response-outparam.set was never called)"
            )));
        }
    };
    let (parts, mut body) = response.into_parts();
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Error::internal(format!(
                "function {id:?} did not finish its response body: {e}"
            ))
        })?;
        if let Ok(chunk) = frame.into_data() {
            if data.len() + chunk.len() > MAX_RESPONSE_BODY {
                return Err(Error::resource_exhausted(format!(
                    "function {id:?} answered with a body larger than {MAX_RESPONSE_BODY} bytes"
                )));
            }
            data.extend_from_slice(&chunk);
        }
    }
    let mut content_type = String::new();
    let mut headers = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == CONTENT_TYPE {
            content_type = value;
        } else if name != CONTENT_LENGTH {
            headers.push((name.as_str().to_string(), value));
        }
    }
    Ok(InvokeResponse {
        status: AppStatus::Http(parts.status.as_u16()),
        content_type,
        data: Bytes::from(data),
        headers,
    })
}
