//! Request parts as Dapr's HTTP API reads them: bodies within the limit, JSON bodies with
//! an acceptable content type, and `metadata.*` query parameters. Every rejection is a Dapr
//! error answer; none can panic.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use plinth_core::Metadata;
use serde::de::DeserializeOwned;

use super::error::{ApiError, BODY_READ};

/// The listener's body limit, in bytes, as a request extension.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimit(pub(super) usize);

pub(super) fn too_large(limit: Option<usize>) -> ApiError {
    let message = match limit {
        Some(limit) => format!(
            "failed to read request body: it exceeds the maximum body size of {limit} bytes"
        ),
        None => "failed to read request body: it exceeds the maximum body size".to_string(),
    };
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, BODY_READ, message)
}

/// The request body, read whole within the listener's limit (413 past it).
#[derive(Debug)]
pub(super) struct Body(pub(super) Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        // A declared length over the limit is refused before any of the body is read.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(declared), Some(limit)) = (declared, limit)
            && declared > u64::try_from(limit).unwrap_or(u64::MAX)
        {
            return Err(too_large(Some(limit)));
        }
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(too_large(limit))
            }
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                BODY_READ,
                format!("failed to read request body: {}", rejection.body_text()),
            )),
        }
    }
}

/// A JSON body, decoded into `T`. The content type must be absent, JSON, `text/plain` or
/// `application/x-www-form-urlencoded` (what curl sends by default); anything else is 415.
#[derive(Debug)]
pub(super) struct Json<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_json_content_type(req.headers())?;
        let Body(bytes) = Body::from_request(req, state).await?;
        decode_json(&bytes).map(Json)
    }
}

/// Whether a JSON-bodied route accepts the request's content type.
pub(super) fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let raw = String::from_utf8_lossy(value.as_bytes());
    let essence = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let accepted = essence.is_empty()
        || essence == "application/json"
        || essence == "text/plain"
        || essence == "application/x-www-form-urlencoded"
        || essence
            .split_once('/')
            .is_some_and(|(_, subtype)| subtype.ends_with("+json"));
    if accepted {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            super::error::MALFORMED_REQUEST,
            format!("content type {raw:?} is not JSON: send application/json"),
        ))
    }
}

/// Decode a JSON body, naming the field that was wrong.
pub(super) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed(
            "failed deserializing HTTP body: the body is empty",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::malformed(format!("failed deserializing HTTP body: {inner}"))
        } else {
            ApiError::malformed(format!("failed deserializing HTTP body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::malformed(format!("failed deserializing HTTP body: {e}")))?;
    Ok(value)
}

/// The query string's parameters in order; repeated names stay repeated. Decoding is lossy
/// rather than failing: a bad escape becomes U+FFFD.
#[derive(Debug, Default)]
pub(super) struct Query(pub(super) Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = parts
            .uri
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Query(pairs))
    }
}

impl Query {
    /// The first value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Request metadata: every `metadata.<key>` parameter, the first value of each, as Dapr
    /// reads them.
    pub(super) fn metadata(&self) -> Metadata {
        let mut metadata = Metadata::new();
        for (k, v) in &self.0 {
            if let Some(key) = k.strip_prefix("metadata.") {
                metadata.entry(key.to_string()).or_insert_with(|| v.clone());
            }
        }
        metadata
    }
}

/// Path parameters, percent-decoded; a path that does not decode is a Dapr 400.
#[derive(Debug)]
pub(super) struct Path<T>(pub(super) T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::malformed(format!("invalid path: {}", e.body_text())))
    }
}
