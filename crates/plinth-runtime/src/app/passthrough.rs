//! HTTP invocations passed through as they came: the verb, the query, the headers and a
//! streamed body go from an HTTP front door to an HTTP app (locally, or through the mesh to
//! another sidecar's app) without being read whole or converted, and the app's answer comes
//! back the same way. Where a hop cannot pass HTTP through (a function, a gRPC app), the
//! call is read into an [`InvokeRequest`] there and answered as an [`InvokeResponse`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use plinth_core::{Error, Result};

use super::{InvokeRequest, InvokeResponse};

/// A boxed body error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed request or response body.
pub type HttpBody = UnsyncBoxBody<Bytes, BoxError>;

/// The header carrying the app's API token (`APP_API_TOKEN`) to the app.
pub const API_TOKEN_HEADER: &str = "dapr-api-token";

/// A body holding `bytes`.
pub fn full(bytes: Bytes) -> HttpBody {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Any body, boxed.
pub fn boxed<B>(body: B) -> HttpBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Whether a caller's header (or gRPC metadata key) is passed on to the app, and back, when
/// a call is read whole: not hop-by-hop, not framing, not a token, not gRPC's own.
pub fn forwardable(name: &str) -> bool {
    !hop_by_hop(name)
        && !matches!(
            name,
            "host" | "content-length" | "content-type" | "expect" | API_TOKEN_HEADER
        )
        && !name.starts_with("grpc-")
        && !name.starts_with(':')
}

/// Whether `name` is an HTTP/1.1 hop-by-hop header (RFC 9110 section 7.6.1), which a proxy
/// does not pass on.
pub fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Remove hop-by-hop headers, and those the `Connection` header names, from `headers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| hop_by_hop(k.as_str())) {
        return;
    }
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// Remove from a caller's headers those not passed on to the app: hop-by-hop ones, `host`,
/// framing (the body sets its own), tokens and gRPC's own. `content-type` stays.
pub fn strip_for_app(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in ["host", "content-length", "expect", API_TOKEN_HEADER] {
        headers.remove(name);
    }
    remove_prefixed(headers, "grpc-");
}

/// Remove every header whose name starts with `prefix`.
pub fn remove_prefixed(headers: &mut HeaderMap, prefix: &str) {
    if !headers.keys().any(|k| k.as_str().starts_with(prefix)) {
        return;
    }
    let names: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(prefix))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// An HTTP invocation passed through.
#[derive(Debug)]
pub struct HttpCall {
    /// The app's method: the path after `/`, as sent (percent-encoding kept), without the
    /// query.
    pub method: String,
    /// The verb, the query (in the URI; its path is not used), the headers to pass on
    /// (hop-by-hop ones, `host` and tokens removed; `content-type` kept) and the body.
    pub request: http::Request<HttpBody>,
}

impl HttpCall {
    /// Read the call whole, for a hop that cannot pass HTTP through. A body over the front
    /// door's limit is RESOURCE_EXHAUSTED.
    pub async fn into_buffered(self) -> Result<InvokeRequest> {
        let (parts, body) = self.request.into_parts();
        let data = collect(body).await?;
        Ok(InvokeRequest {
            method: self.method,
            verb: parts.method.as_str().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: content_type(&parts.headers),
            data,
            headers: forwarded(&parts.headers),
        })
    }
}

/// The `content-type` of `headers`, empty when there is none (or it is not text).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The [`forwardable`] headers of `headers` with text values, as a call read whole carries
/// them.
pub fn forwarded(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| forwardable(k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Read a request body whole. The limit is the front door's (a `Limited` body): past it,
/// RESOURCE_EXHAUSTED.
pub async fn collect(body: HttpBody) -> Result<Bytes> {
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::resource_exhausted(
            format!("the request body is over the limit: {e}"),
        )),
        Err(e) => Err(Error::invalid_argument(format!(
            "reading the request body failed: {e}"
        ))),
    }
}

/// Whether `e`, or an error it wraps, is a body past its `Limited` limit.
pub fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The answer to an invocation: passed through from an HTTP app, or read whole (a
/// function's, a gRPC app's).
#[derive(Debug)]
pub enum InvokeAnswer {
    /// The HTTP app's response, status, headers (hop-by-hop ones removed) and streamed body.
    Http(http::Response<HttpBody>),
    /// An answer read whole.
    Buffered(InvokeResponse),
}

pin_project_lite::pin_project! {
    /// A body that holds `guard` (a concurrency permit, say) until it ends or is dropped.
    pub struct Guarded<G> {
        #[pin]
        body: HttpBody,
        guard: Option<G>,
    }
}

impl<G> Guarded<G> {
    /// `body`, holding `guard`.
    pub fn new(body: HttpBody, guard: G) -> Self {
        Self {
            body,
            guard: Some(guard),
        }
    }
}

impl<G> Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("x-kept", "2".parse().unwrap());
        h.insert("content-length", "3".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "x-kept"]);
    }

    #[tokio::test]
    async fn a_call_read_whole_keeps_what_the_app_sees() {
        let request = http::Request::builder()
            .method("PUT")
            .uri("/ignored?a=1&b=2")
            .header("content-type", "text/plain")
            .header("x-user", "u")
            .header("te", "trailers")
            .body(full(Bytes::from_static(b"hello")))
            .unwrap();
        let req = HttpCall {
            method: "orders/1".into(),
            request,
        }
        .into_buffered()
        .await
        .unwrap();
        assert_eq!(req.method, "orders/1");
        assert_eq!(req.verb, "PUT");
        assert_eq!(req.query, "a=1&b=2");
        assert_eq!(req.content_type, "text/plain");
        assert_eq!(req.data, Bytes::from_static(b"hello"));
        assert_eq!(req.headers, vec![("x-user".to_string(), "u".to_string())]);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_resource_exhausted() {
        let body = boxed(http_body_util::Limited::new(
            http_body_util::Full::new(Bytes::from_static(b"too long")),
            3,
        ));
        let err = collect(body).await.unwrap_err();
        assert_eq!(err.kind(), plinth_core::ErrorKind::ResourceExhausted);
    }
}
