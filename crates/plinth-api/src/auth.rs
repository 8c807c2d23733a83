//! The API token (`DAPR_API_TOKEN`): when set, callers must present it in the
//! `dapr-api-token` header or gRPC metadata. Exempt, per the listener table: gRPC health
//! checks, the HTTP API's `healthz` routes, and the admin listener's probes, info and
//! metrics. The comparison takes the same time wherever the two tokens differ.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{HeaderMap, Request, Response};
use subtle::ConstantTimeEq as _;
use tower::{Layer, Service};

use crate::app::API_TOKEN_HEADER;

/// The token callers must present, if any.
#[derive(Clone, Default)]
pub struct ApiToken(Option<Arc<[u8]>>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.write_str(if self.0.is_some() {
            "ApiToken(set)"
        } else {
            "ApiToken(none)"
        })
    }
}

impl ApiToken {
    /// A required token; an empty one means none.
    pub fn new(token: Option<String>) -> Self {
        Self(
            token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::from(t.into_bytes())),
        )
    }

    /// Whether a token is required.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `headers` carry the token (always true when none is required).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.0 else {
            return true;
        };
        let Some(given) = headers.get(API_TOKEN_HEADER) else {
            return false;
        };
        // `ct_eq` on slices of different lengths is false without comparing contents; the
        // length of the token is not the secret.
        bool::from(given.as_bytes().ct_eq(expected))
    }

    /// The message for a caller without the right token.
    pub fn rejection(headers: &HeaderMap) -> &'static str {
        if headers.contains_key(API_TOKEN_HEADER) {
            "the dapr-api-token does not match"
        } else {
            "this API requires a dapr-api-token"
        }
    }
}

/// Requires the token on every gRPC call except `grpc.health.v1`.
#[derive(Debug, Clone)]
pub(crate) struct GrpcAuthLayer {
    token: ApiToken,
}

impl GrpcAuthLayer {
    pub(crate) fn new(token: ApiToken) -> Self {
        Self { token }
    }
}

impl<S> Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service [`GrpcAuthLayer`] wraps around the gRPC router.
#[derive(Debug, Clone)]
pub(crate) struct GrpcAuth<S> {
    inner: S,
    token: ApiToken,
}

impl<S, B, R> Service<Request<B>> for GrpcAuth<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    R: Default,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<R>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let exempt = req.uri().path().starts_with("/grpc.health.v1.Health/");
        if exempt || self.token.admits(req.headers()) {
            return Either::Left(self.inner.call(req));
        }
        let status = tonic::Status::unauthenticated(ApiToken::rejection(req.headers()));
        Either::Right(ready(Ok(status.into_http())))
    }
}
