//! `bindings.http`: calls an HTTP endpoint (Dapr's `bindings.http` output binding).
//!
//! The operation is the method (`get`, `head`, `post`, `put`, `patch`, `delete`, `options`,
//! `trace`, and `create`, which Dapr keeps as another name for `post`). Request metadata
//! `path` is appended to the base URL; `responseTimeout` overrides the component's time
//! limit; every other entry is sent as a header, except entries that are not valid header
//! names or values and hop-by-hop headers. The response's body is the data, and its
//! metadata holds `statusCode`, `status` (`200 OK`) and the response headers, named as Go
//! writes them (`Content-Type`), several values of one header joined with `, `. A status of
//! 400 or more is an error unless `errorIfNot2XX` is false. Error messages never include the
//! URL, which may carry credentials.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plinth_core::component::binding::{Binding, BindingRequest, BindingResponse, OutputBinding};
use plinth_core::component::{Component, Instance};
use plinth_core::metadata::parse_duration;
use plinth_core::{ComponentSpec, Error, ErrorKind, Metadata, Result};

mod config;
#[cfg(test)]
mod tests;

pub use config::{
    DEFAULT_MAX_RESPONSE_BODY_SIZE, DEFAULT_RESPONSE_TIMEOUT, ERROR_IF_NOT_2XX, HttpBindingConfig,
    MAX_RESPONSE_BODY_SIZE, RESPONSE_TIMEOUT, URL,
};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "bindings.http";

/// Request metadata: the path appended to the base URL.
pub const PATH: &str = "path";

/// The operations, as Dapr names them.
const OPERATIONS: &[&str] = &[
    "create", "get", "head", "post", "put", "patch", "delete", "options", "trace",
];

/// Request metadata that is never sent as a header: Plinth's own keys and headers that
/// belong to the connection, which the client manages.
const NOT_HEADERS: &[&str] = &[
    PATH,
    RESPONSE_TIMEOUT,
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Build a `bindings.http` binding from its metadata (`url`, `responseTimeout`,
/// `maxResponseBodySize`, `errorIfNot2XX`).
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = HttpBindingConfig::from_spec(spec)?;
    Ok(Instance::Binding(Binding::output_only(Arc::new(
        HttpBinding::new(config)?,
    ))))
}

/// An output binding that makes HTTP requests.
#[derive(Debug)]
pub struct HttpBinding {
    config: HttpBindingConfig,
    client: HttpsClient,
}

fn method_of(operation: &str) -> Result<Method> {
    let method = match operation {
        "create" | "post" => Method::POST,
        "get" => Method::GET,
        "head" => Method::HEAD,
        "put" => Method::PUT,
        "patch" => Method::PATCH,
        "delete" => Method::DELETE,
        "options" => Method::OPTIONS,
        "trace" => Method::TRACE,
        _ => {
            return Err(Error::invalid_argument(format!(
                "http binding: unsupported operation {operation:?}; supported: {}",
                OPERATIONS.join(", ")
            )));
        }
    };
    Ok(method)
}

/// The headers to send: every metadata entry that makes a valid header and is not reserved.
fn headers_of(metadata: &Metadata) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (key, value) in metadata {
        let key = key.trim();
        if NOT_HEADERS
            .iter()
            .any(|reserved| reserved.eq_ignore_ascii_case(key))
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// A header name as Go's `CanonicalHeaderKey` writes it: `content-type` → `Content-Type`.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Response metadata: the status and every header with a printable value.
fn metadata_of(status: StatusCode, headers: &HeaderMap) -> Metadata {
    let mut metadata = Metadata::new();
    for name in headers.keys() {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            metadata.insert(canonical(name.as_str()), values.join(", "));
        }
    }
    metadata.insert("statusCode".to_owned(), status.as_u16().to_string());
    metadata.insert("status".to_owned(), status.to_string());
    metadata
}

fn status_error(method: &Method, status: StatusCode) -> Error {
    let kind = match status.as_u16() {
        400 => ErrorKind::InvalidArgument,
        404 => ErrorKind::NotFound,
        500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    Error::new(
        kind,
        format!("http binding: {method} returned status {status}"),
    )
}

fn too_large(method: &Method, limit: usize) -> Error {
    Error::resource_exhausted(format!(
        "http binding: the response to {method} is larger than {limit} bytes"
    ))
}

impl HttpBinding {
    /// A binding with its own connection pool. TLS uses the ring provider and Mozilla's
    /// roots (webpki-roots), so it does not depend on the host's certificate store.
    pub fn new(config: HttpBindingConfig) -> Result<Self> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| Error::internal(format!("http binding: TLS setup failed: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { config, client })
    }

    /// The URL of a call: the base URL, plus `path` when given.
    fn target(&self, metadata: &Metadata) -> Result<Uri> {
        let url = match metadata.get(PATH).filter(|p| !p.is_empty()) {
            Some(path) => format!(
                "{}/{}",
                self.config.url.trim_end_matches('/'),
                path.trim_start_matches('/')
            ),
            None => self.config.url.clone(),
        };
        url.parse().map_err(|e| {
            Error::invalid_argument(format!(
                "http binding: metadata {PATH} does not make a valid URL: {e}"
            ))
        })
    }

    fn timeout(&self, metadata: &Metadata) -> Result<Duration> {
        match metadata
            .get(RESPONSE_TIMEOUT)
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
        {
            None => Ok(self.config.response_timeout),
            Some(raw) => parse_duration(raw).filter(|d| !d.is_zero()).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "metadata {RESPONSE_TIMEOUT}: {raw:?} is not a duration"
                ))
            }),
        }
    }

    /// Send the request and read the response body, refusing bodies over the limit.
    async fn call(
        &self,
        method: &Method,
        request: Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes)> {
        let limit = self.config.max_response_body_size;
        let response = self.client.request(request).await.map_err(|e| {
            Error::unavailable(format!("http binding: {method} request failed: {e}")).with_source(e)
        })?;
        let (parts, body) = response.into_parts();
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(too_large(method, limit));
        }
        let body = Limited::new(body, limit).collect().await.map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                too_large(method, limit)
            } else {
                Error::unavailable(format!(
                    "http binding: reading the response to {method} failed: {e}"
                ))
            }
        })?;
        Ok((parts, body.to_bytes()))
    }
}

#[async_trait]
impl Component for HttpBinding {}

#[async_trait]
impl OutputBinding for HttpBinding {
    fn operations(&self) -> Vec<String> {
        OPERATIONS.iter().map(|op| op.to_string()).collect()
    }

    async fn invoke(&self, req: BindingRequest) -> Result<BindingResponse> {
        let method = method_of(&req.operation)?;
        let uri = self.target(&req.metadata)?;
        let timeout = self.timeout(&req.metadata)?;
        let mut request = Request::new(Full::new(req.data));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers_of(&req.metadata);

        let (parts, data) = tokio::time::timeout(timeout, self.call(&method, request))
            .await
            .map_err(|_| {
                Error::timeout(format!(
                    "http binding: {method} took longer than {timeout:?}"
                ))
            })??;
        if self.config.error_if_not_2xx && parts.status.as_u16() >= 400 {
            return Err(status_error(&method, parts.status));
        }
        Ok(BindingResponse {
            data,
            metadata: metadata_of(parts.status, &parts.headers),
        })
    }
}
