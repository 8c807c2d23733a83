//! The last hop of a remote call, one protocol per [`Channel`]: a peer Plinth over the mesh
//! protocol (HTTP/2, see [`crate::wire`]), or a non-Plinth HTTP service (an HTTPEndpoint or a
//! URL) over HTTP/1.1 or HTTP/2. A protocol such as Dubbo or Bolt is one more
//! implementation. The policy around it (retries, breaker, deadline) is the same for all.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plinth_core::{Error, Result};
use plinth_runtime::app::passthrough::{boxed, strip_for_app};
use plinth_runtime::app::{AppStatus, InvokeAnswer, strip_hop_by_hop};
use tokio::time::Instant;

use crate::balance::Verdict;
use crate::client::{Body, SendError, Transport};
use crate::config::{HttpEndpointSpec, RetryOn};
use crate::mesh::{Cluster, instance_failure};
use crate::replay::Replay;
use crate::wire;

/// One attempt's inputs.
#[derive(Debug)]
pub(crate) struct Attempt<'a> {
    pub(crate) caller: &'a str,
    pub(crate) req: &'a mut Replay,
    /// When this attempt must have its answer's head.
    pub(crate) deadline: Instant,
    /// Instances earlier attempts of this call failed on.
    pub(crate) tried: &'a [SocketAddr],
    pub(crate) transport: &'a Transport,
    pub(crate) max_body: usize,
}

/// How an attempt ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Whether it counts as a failure (breaker, ejection, retry).
    pub(crate) verdict: Verdict,
    /// What kind of failure, for `retryOn`.
    pub(crate) class: Option<RetryOn>,
    /// The instance tried.
    pub(crate) addr: Option<SocketAddr>,
    /// The answer or the error the caller gets if this is the last attempt.
    pub(crate) result: Result<InvokeAnswer>,
}

impl Outcome {
    fn judge(addr: Option<SocketAddr>, result: Result<InvokeAnswer>, unsent: bool) -> Self {
        let class = match &result {
            Ok(answer) => match answer_status(answer) {
                AppStatus::Http(502..=504) => Some(RetryOn::GatewayError),
                AppStatus::Http(500..=599) => Some(RetryOn::ServerError),
                // gRPC UNAVAILABLE.
                AppStatus::Grpc { code: 14, .. } => Some(RetryOn::GatewayError),
                _ => None,
            },
            Err(_) if unsent => Some(RetryOn::ConnectFailure),
            Err(e) => instance_failure(e),
        };
        Self {
            verdict: if class.is_some() {
                Verdict::Failed
            } else {
                Verdict::Ok
            },
            class,
            addr,
            result,
        }
    }
}

/// How the app ended a call, whether its answer streams or was read whole.
pub(crate) fn answer_status(answer: &InvokeAnswer) -> AppStatus {
    match answer {
        InvokeAnswer::Http(r) => AppStatus::Http(r.status().as_u16()),
        InvokeAnswer::Buffered(r) => r.status.clone(),
    }
}

/// A protocol the mesh calls targets with.
#[async_trait]
pub(crate) trait Channel: Send + Sync + std::fmt::Debug {
    /// Make one attempt of the call.
    async fn attempt(&self, attempt: Attempt<'_>) -> Outcome;
}

/// The error of an attempt whose streamed body went with an earlier one.
fn spent() -> SendError {
    SendError::Sent(Error::unavailable(
        "the request body was streamed to an earlier attempt and cannot be sent again",
    ))
}

#[async_trait]
impl Channel for Cluster {
    async fn attempt(&self, a: Attempt<'_>) -> Outcome {
        let Attempt {
            caller,
            req,
            deadline,
            tried,
            transport,
            max_body,
        } = a;
        let Some(call) = self.set.pick(tried) else {
            return Outcome {
                verdict: Verdict::Failed,
                class: Some(RetryOn::ConnectFailure),
                addr: None,
                result: Err(Error::unavailable(format!(
                    "app {:?} has no instance left",
                    self.app_id
                ))),
            };
        };
        let addr = call.endpoint.addr;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let send = async {
            // Connect first: a body that streams once is taken only for a live connection.
            let sender = call.endpoint.conn.ready(transport).await?;
            let (headers, body) = req.next().ok_or_else(spent)?;
            let authority = addr.to_string();
            let http = wire::Call {
                authority: &authority,
                target: &self.app_id,
                caller,
                verb: &req.verb,
                method: &req.method,
                query: &req.query,
                timeout: remaining,
            }
            .request(headers, body)
            .map_err(SendError::Sent)?;
            let resp = call.endpoint.conn.send_on(sender, http).await?;
            wire::answer_http(resp, max_body)
                .await
                .map_err(SendError::Sent)
        };
        let (result, unsent) = match tokio::time::timeout_at(deadline, send).await {
            Ok(Ok(answer)) => (Ok(answer), false),
            Ok(Err(SendError::Connect(e))) => (Err(e), true),
            Ok(Err(SendError::Sent(e))) => (Err(e), false),
            Err(_) => (
                Err(Error::timeout(format!(
                    "app {:?} at {addr} did not answer within {}ms",
                    self.app_id,
                    remaining.as_millis()
                ))),
                false,
            ),
        };
        let outcome = Outcome::judge(Some(addr), result, unsent);
        self.set.report(&call, outcome.verdict);
        outcome
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// One client for every HTTP endpoint: HTTP/1.1 and HTTP/2, plain or TLS (the system's
/// webpki roots), with keep-alive pools per host.
fn http_client() -> Result<HttpsClient> {
    static CLIENT: OnceLock<std::result::Result<HttpsClient, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth();
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            Ok(Client::builder(TokioExecutor::new()).build(connector))
        })
        .clone()
        .map_err(|e| Error::internal(format!("building the HTTP client: {e}")))
}

/// A non-Plinth HTTP service: Dapr's `HTTPEndpoint`, or a URL given as the target.
#[derive(Debug)]
pub struct HttpEndpoint {
    name: String,
    base: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpEndpoint {
    /// From an `HTTPEndpoint` resource.
    pub fn new(name: &str, spec: &HttpEndpointSpec, source: &str) -> Result<Self> {
        let at = |field: &str| format!("{source}: HTTPEndpoint {name:?}: spec.{field}");
        let base = spec.base_url.trim_end_matches('/').to_string();
        let uri: http::Uri = base
            .parse()
            .map_err(|e| Error::invalid_argument(format!("{}: {e}", at("baseUrl"))))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(Error::invalid_argument(format!(
                "{}: {:?} is not an http:// or https:// URL",
                at("baseUrl"),
                spec.base_url
            )));
        }
        let mut headers = Vec::new();
        for (i, h) in spec.headers.iter().enumerate() {
            let name = HeaderName::try_from(h.name.to_ascii_lowercase()).map_err(|_| {
                Error::invalid_argument(format!(
                    "{}: not a header name",
                    at(&format!("headers[{i}].name"))
                ))
            })?;
            let value = HeaderValue::try_from(&h.value).map_err(|_| {
                Error::invalid_argument(format!(
                    "{}: not a header value",
                    at(&format!("headers[{i}].value"))
                ))
            })?;
            headers.push((name, value));
        }
        Ok(Self {
            name: name.to_string(),
            base,
            headers,
        })
    }

    /// A URL given as the invocation's target.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::new(
            url,
            &HttpEndpointSpec {
                base_url: url.to_string(),
                headers: Vec::new(),
            },
            "target",
        )
        .map_err(|e| Error::invalid_argument(e.message().replace("target: HTTPEndpoint ", "")))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, a: Attempt<'_>) -> std::result::Result<InvokeAnswer, (Error, bool)> {
        let sent = |e: Error| (e, false);
        let req = a.req;
        let mut uri = format!("{}/{}", self.base, req.method.trim_start_matches('/'));
        if !req.query.is_empty() {
            uri.push('?');
            uri.push_str(&req.query);
        }
        let uri: http::Uri = uri
            .parse()
            .map_err(|e| sent(Error::invalid_argument(format!("cannot call {uri:?}: {e}"))))?;
        let client = http_client().map_err(sent)?;
        let (mut headers, body) = req.next().ok_or_else(|| sent(spent().into_error()))?;
        strip_for_app(&mut headers);
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        let mut request = Request::new(body);
        *request.method_mut() = req.verb.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers;
        let response = client.request(request).await.map_err(|e| {
            let err = Error::unavailable(format!("calling {uri}: {e}"));
            (err, e.is_connect())
        })?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(InvokeAnswer::Http(http::Response::from_parts(
            parts,
            boxed(body),
        )))
    }
}

#[async_trait]
impl Channel for HttpEndpoint {
    async fn attempt(&self, a: Attempt<'_>) -> Outcome {
        let deadline = a.deadline;
        let (result, unsent) = match tokio::time::timeout_at(deadline, self.send(a)).await {
            Ok(Ok(r)) => (Ok(r), false),
            Ok(Err((e, unsent))) => (Err(e), unsent),
            Err(_) => (
                Err(Error::timeout(format!(
                    "{} did not answer in time",
                    self.base
                ))),
                false,
            ),
        };
        Outcome::judge(None, result, unsent)
    }
}
