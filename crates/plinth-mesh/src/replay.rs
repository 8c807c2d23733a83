//! A call's request as the mesh holds it across attempts. A call read whole can be sent
//! again as often as retries allow. A call passed through streams its body once; when its
//! policy retries it and the body is small and of known length, the body is read first so
//! that it, too, can be sent again.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body::Body as _;
use plinth_core::{Error, Result};
use plinth_runtime::app::passthrough::collect;
use plinth_runtime::app::{HttpCall, InvokeRequest};

use crate::client::{Body, full};
use crate::target::CallView;

/// Bodies up to this size (known from their length) are kept to be sent again on a retry.
/// Larger or unknown-length ones stream once.
pub(crate) const REPLAY_LIMIT: u64 = 64 * 1024;

/// A call's request, kept across attempts.
#[derive(Debug)]
pub(crate) struct Replay {
    /// The verb.
    pub(crate) verb: Method,
    /// The app's method (the path after `/`), unencoded.
    pub(crate) method: String,
    /// The raw query, without `?`.
    pub(crate) query: String,
    /// The headers to pass on.
    pub(crate) headers: HeaderMap,
    body: ReplayBody,
}

#[derive(Debug)]
enum ReplayBody {
    /// Sent again on each attempt.
    Kept(Bytes),
    /// Streamed once; `None` once sent.
    Once(Option<Body>),
}

impl Replay {
    /// A call read whole.
    pub(crate) fn whole(req: InvokeRequest) -> Result<Self> {
        let verb = Method::from_bytes(req.verb.as_bytes())
            .map_err(|_| Error::invalid_argument(format!("{:?} is not an HTTP verb", req.verb)))?;
        let mut headers = HeaderMap::with_capacity(req.headers.len() + 5);
        for (k, v) in &req.headers {
            // Names the front doors pass on are valid; a value that is not is dropped, as
            // the local app channel drops it.
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v))
            {
                headers.append(name, value);
            }
        }
        if !req.content_type.is_empty()
            && let Ok(v) = HeaderValue::try_from(&req.content_type)
        {
            headers.insert(http::header::CONTENT_TYPE, v);
        }
        Ok(Self {
            verb,
            method: req.method,
            query: req.query,
            headers,
            body: ReplayBody::Kept(req.data),
        })
    }

    /// A call passed through: its body streams once, until
    /// [`keep_for_retries`](Self::keep_for_retries).
    pub(crate) fn passed(call: HttpCall) -> Self {
        let (parts, body) = call.request.into_parts();
        Self {
            verb: parts.method,
            method: call.method,
            query: parts.uri.query().unwrap_or_default().to_string(),
            headers: parts.headers,
            body: ReplayBody::Once(Some(body)),
        }
    }

    /// Read a streamed body of known length up to [`REPLAY_LIMIT`], so that a retry can
    /// send it again. Larger bodies keep streaming (and are sent once).
    pub(crate) async fn keep_for_retries(&mut self) -> Result<()> {
        let small = match &self.body {
            ReplayBody::Once(Some(body)) => body
                .size_hint()
                .exact()
                .is_some_and(|len| len <= REPLAY_LIMIT),
            _ => false,
        };
        if small
            && let ReplayBody::Once(Some(body)) =
                std::mem::replace(&mut self.body, ReplayBody::Once(None))
        {
            self.body = ReplayBody::Kept(collect(body).await?);
        }
        Ok(())
    }

    /// The headers and body of one more attempt; `None` once a streamed body was sent.
    pub(crate) fn next(&mut self) -> Option<(HeaderMap, Body)> {
        match &mut self.body {
            ReplayBody::Kept(bytes) => Some((self.headers.clone(), full(bytes.clone()))),
            ReplayBody::Once(body) => body
                .take()
                .map(|body| (std::mem::take(&mut self.headers), body)),
        }
    }

    /// Whether [`next`](Self::next) has one more attempt to give.
    pub(crate) fn can_resend(&self) -> bool {
        match &self.body {
            ReplayBody::Kept(_) => true,
            ReplayBody::Once(body) => body.is_some(),
        }
    }
}

impl CallView for Replay {
    fn verb(&self) -> &str {
        self.verb.as_str()
    }

    fn method(&self) -> &str {
        &self.method
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn has_header(&self, name: &str, value: &str) -> bool {
        self.headers
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn passed(body: Body) -> Replay {
        let request = http::Request::builder()
            .method("PUT")
            .uri("/x?a=1")
            .header("x-h", "v")
            .body(body)
            .expect("request");
        Replay::passed(HttpCall {
            method: "orders/1".into(),
            request,
        })
    }

    #[tokio::test]
    async fn a_small_body_is_kept_for_retries() {
        let mut r = passed(full(Bytes::from_static(b"hello")));
        assert_eq!(
            (r.verb(), r.method(), r.query.as_str()),
            ("PUT", "orders/1", "a=1")
        );
        r.keep_for_retries().await.expect("kept");
        for _ in 0..2 {
            let (headers, body) = r.next().expect("again");
            assert_eq!(headers["x-h"], "v");
            let bytes = body.collect().await.expect("body").to_bytes();
            assert_eq!(bytes, Bytes::from_static(b"hello"));
        }
        assert!(r.can_resend());
    }

    #[tokio::test]
    async fn an_unknown_length_body_streams_once() {
        let stream = http_body_util::StreamBody::new(futures::stream::iter([Ok::<_, BoxErr>(
            http_body::Frame::data(Bytes::from_static(b"chunk")),
        )]));
        let mut r = passed(plinth_runtime::app::passthrough::boxed(stream));
        r.keep_for_retries().await.expect("kept");
        let (headers, _) = r.next().expect("once");
        assert_eq!(headers["x-h"], "v");
        assert!(!r.can_resend());
        assert!(r.next().is_none());
    }

    type BoxErr = plinth_runtime::app::passthrough::BoxError;
}
