//! A tower layer around the gRPC listeners: per-rpc counts and latency into the shared
//! registry, decode failures reported as INVALID_ARGUMENT and oversize requests as
//! RESOURCE_EXHAUSTED.
//!
//! tonic reports a request it cannot decode (garbage bytes, invalid UTF-8 in a string field,
//! a message frame cut short by the end of the body) as INTERNAL; that blames Plinth for the
//! caller's input, so this layer rewrites exactly that case. Errors returned before the body streams travel in the response headers
//! ("trailers-only"), which is where this layer reads and rewrites them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use plinth_runtime::metrics::SharedMetrics;
use tower::{Layer, Service};

/// Adds [`RpcTelemetry`] to a service.
#[derive(Debug, Clone)]
pub(crate) struct RpcTelemetryLayer {
    metrics: SharedMetrics,
}

impl RpcTelemetryLayer {
    pub(crate) fn new(metrics: SharedMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Records every rpc.
#[derive(Debug, Clone)]
pub(crate) struct RpcTelemetry<S> {
    inner: S,
    metrics: SharedMetrics,
}

fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "CANCELLED",
        b"2" => "UNKNOWN",
        b"3" => "INVALID_ARGUMENT",
        b"4" => "DEADLINE_EXCEEDED",
        b"5" => "NOT_FOUND",
        b"6" => "ALREADY_EXISTS",
        b"7" => "PERMISSION_DENIED",
        b"8" => "RESOURCE_EXHAUSTED",
        b"9" => "FAILED_PRECONDITION",
        b"10" => "ABORTED",
        b"11" => "OUT_OF_RANGE",
        b"12" => "UNIMPLEMENTED",
        b"13" => "INTERNAL",
        b"14" => "UNAVAILABLE",
        b"15" => "DATA_LOSS",
        b"16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

impl<S, B, RB> Service<Request<B>> for RpcTelemetry<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let (api, method) = match path.rsplit_once('/') {
            Some((service, method)) if service.ends_with("spec.proto.runtime.v1.Runtime") => {
                ("layotto", method.to_string())
            }
            Some((service, method)) if service.ends_with("dapr.proto.runtime.v1.Dapr") => {
                ("dapr", method.to_string())
            }
            Some((service, method)) => (service_api(service), method.to_string()),
            None => ("grpc", path.to_string()),
        };
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut result = fut.await;
            if let Ok(resp) = &mut result {
                // "failed to decode Protobuf message" (garbage, invalid UTF-8) and "Unexpected
                // EOF decoding stream" (a frame cut short by the end of the request body); the
                // header is percent-encoded.
                let decode_failure = resp.headers().get("grpc-status").map(|v| v.as_bytes())
                    == Some(b"13")
                    && resp.headers().get("grpc-message").is_some_and(|m| {
                        let message = m.to_str().unwrap_or_default().to_ascii_lowercase();
                        message.contains("decode") || message.contains("decoding%20stream")
                    });
                if decode_failure {
                    resp.headers_mut()
                        .insert("grpc-status", HeaderValue::from_static("3"));
                }
                // A request over the size limit: tonic says OUT_OF_RANGE, gRPC's own
                // implementations (and Dapr's SDKs) say RESOURCE_EXHAUSTED.
                let too_large = resp.headers().get("grpc-status").map(|v| v.as_bytes())
                    == Some(b"11")
                    && resp.headers().get("grpc-message").is_some_and(|m| {
                        m.to_str()
                            .unwrap_or_default()
                            .contains("message%20length%20too%20large")
                    });
                if too_large {
                    resp.headers_mut()
                        .insert("grpc-status", HeaderValue::from_static("8"));
                }
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .map(|v| code_name(v.as_bytes()))
                    .unwrap_or("OK");
                metrics.record_rpc(api, &method, code, started.elapsed());
            }
            result
        })
    }
}

fn service_api(service: &str) -> &'static str {
    if service.contains("grpc.health") {
        "health"
    } else if service.contains("reflection") {
        "reflection"
    } else if service.contains("Lifecycle") {
        "layotto-lifecycle"
    } else {
        "grpc"
    }
}
