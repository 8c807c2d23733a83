//! HTTP apps, as Dapr calls them: `GET /dapr/subscribe` for subscriptions, events POSTed to
//! their route as CloudEvents, `OPTIONS /{binding}` to ask whether the app takes an input
//! binding and `POST /{binding}` to deliver it, and invocations passed through verb, path,
//! query, headers and body.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plinth_core::{Error, Result};
use plinth_runtime::app::passthrough::{boxed, full, over_limit};
use plinth_runtime::app::{
    AppBindingEvent, AppBindingReply, AppStatus, AppSubscription, BulkSubscribe,
    ConfigurationUpdate, HttpBody, HttpCall, InvokeRequest, InvokeResponse, RouteRule,
    strip_hop_by_hop,
};
use plinth_runtime::pubsub::{Outcome, TopicEvent};
use serde::Deserialize;

use super::{API_TOKEN_HEADER, AppOptions, DELIVERY_TIMEOUT, LIST_TIMEOUT, forwardable};

/// The HTTP connection pool to the app.
#[derive(Debug, Clone)]
pub struct HttpApp {
    client: Client<HttpConnector, HttpBody>,
    base: String,
    token: Option<HeaderValue>,
    max_body: usize,
    health_path: String,
}

/// One `/dapr/subscribe` entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    #[serde(alias = "pubsubName")]
    pubsubname: String,
    topic: String,
    #[serde(default)]
    route: String,
    #[serde(default)]
    routes: Option<Routes>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
    #[serde(default)]
    dead_letter_topic: String,
    #[serde(default)]
    bulk_subscribe: Option<BulkConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkConfig {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    max_messages_count: i64,
    #[serde(default)]
    max_await_duration_ms: i64,
}

/// An HTTP subscriber's answer to a batch.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkReply {
    #[serde(default)]
    statuses: Vec<BulkStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkStatus {
    entry_id: String,
    #[serde(default)]
    status: String,
}

#[derive(Debug, Deserialize)]
struct Routes {
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    default: String,
}

#[derive(Debug, Deserialize)]
struct Rule {
    #[serde(default, rename = "match")]
    matches: String,
    path: String,
}

/// What an HTTP subscriber may answer.
#[derive(Debug, Deserialize)]
struct EventReply {
    #[serde(default)]
    status: String,
}

/// What an HTTP app may answer to a binding event.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindingReply {
    #[serde(default)]
    store_name: String,
    #[serde(default)]
    state: Vec<BindingState>,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    concurrency: String,
}

#[derive(Debug, Deserialize)]
struct BindingState {
    key: String,
    value: serde_json::Value,
}

/// Bytes percent-encoded in a path sent to the app: everything but RFC 3986's unreserved
/// and sub-delimiter characters, `:`, `@`, `/`, and `%` (a caller's escapes stay as sent).
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@')
    .remove(b'/')
    .remove(b'%');

fn encode_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH).to_string()
}

impl HttpApp {
    /// A pooled client to `http://host:port`.
    pub fn new(options: &AppOptions) -> Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let token = match &options.token {
            Some(t) => Some(HeaderValue::from_str(t).map_err(|_| {
                Error::invalid_argument("APP_API_TOKEN holds characters a header cannot carry")
            })?),
            None => None,
        };
        let health_path = options
            .health_check
            .as_ref()
            .map(|h| h.path.clone())
            .unwrap_or_else(|| "/healthz".into());
        Ok(Self {
            client,
            base: format!("http://{}:{}", options.host, options.port),
            token,
            max_body: options.max_body_size,
            health_path,
        })
    }

    fn uri(&self, path: &str, query: &str) -> Result<Uri> {
        let path = path.trim_start_matches('/');
        let mut uri = format!("{}/{}", self.base, encode_path(path));
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(query);
        }
        uri.parse()
            .map_err(|e| Error::invalid_argument(format!("cannot call the app at {uri:?}: {e}")))
    }

    /// Send a request and read the answer, within `timeout` and the body limit.
    async fn send(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        if body.len() > self.max_body {
            return Err(Error::resource_exhausted(format!(
                "the request body ({} bytes) is over the limit of {} bytes",
                body.len(),
                self.max_body
            )));
        }
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(full(body))
            .map_err(|e| Error::invalid_argument(format!("cannot build the app request: {e}")))?;
        *request.headers_mut() = headers;
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert(API_TOKEN_HEADER, token.clone());
        }
        let max = self.max_body;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| {
                Error::unavailable(format!("the app at {} is not reachable: {e}", self.base))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Error::resource_exhausted(format!(
                        "the app's answer is over the limit of {max} bytes"
                    ))
                } else {
                    Error::unavailable(format!("reading the app's answer failed: {e}"))
                }
            })?;
            Ok((parts.status, parts.headers, body.to_bytes()))
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| {
            Error::timeout(format!(
                "the app did not answer within {}s",
                timeout.as_secs()
            ))
        })?
    }

    /// The event as the CloudEvent an HTTP subscriber receives: the envelope from the broker,
    /// or, for raw payloads, one built around them.
    fn envelope(event: &TopicEvent) -> Bytes {
        plinth_runtime::pubsub::cloudevent::http_envelope(event)
    }
}

fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v))
        {
            map.append(name, value);
        }
    }
    map
}

fn json_bytes(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

#[async_trait]
impl plinth_runtime::app::AppChannel for HttpApp {
    fn protocol(&self) -> &'static str {
        "http"
    }

    fn address(&self) -> &str {
        &self.base
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse> {
        let method = Method::from_bytes(req.verb.as_bytes())
            .map_err(|_| Error::invalid_argument(format!("{:?} is not an HTTP verb", req.verb)))?;
        let uri = self.uri(&req.method, &req.query)?;
        let mut headers = header_map(&req.headers);
        if !req.content_type.is_empty()
            && let Ok(v) = HeaderValue::from_str(&req.content_type)
        {
            headers.insert(http::header::CONTENT_TYPE, v);
        }
        let (status, headers, body) = self
            .send(
                method,
                uri,
                headers,
                req.data,
                plinth_runtime::invoke::APP_CALL_TIMEOUT,
            )
            .await?;
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(InvokeResponse {
            status: AppStatus::Http(status.as_u16()),
            content_type,
            data: body,
            headers: headers
                .iter()
                .filter(|(k, _)| forwardable(k.as_str()))
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
        })
    }

    fn passes_http(&self) -> bool {
        true
    }

    async fn forward_http(&self, call: HttpCall) -> Result<http::Response<HttpBody>> {
        let uri = self.uri(&call.method, call.request.uri().query().unwrap_or_default())?;
        let (mut parts, body) = call.request.into_parts();
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        // The client sets the framing (content-length, or chunked) from the body.
        parts.headers.remove(http::header::CONTENT_LENGTH);
        parts.headers.remove(http::header::HOST);
        strip_hop_by_hop(&mut parts.headers);
        if let Some(token) = &self.token {
            parts.headers.insert(API_TOKEN_HEADER, token.clone());
        }
        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|e| {
                if over_limit(&e) {
                    Error::resource_exhausted(format!(
                        "the request body is over the limit of {} bytes",
                        self.max_body
                    ))
                } else {
                    Error::unavailable(format!("the app at {} is not reachable: {e}", self.base))
                }
            })?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(http::Response::from_parts(parts, boxed(body)))
    }

    async fn list_subscriptions(&self) -> Result<Vec<AppSubscription>> {
        let (status, _, body) = self
            .send(
                Method::GET,
                self.uri("dapr/subscribe", "")?,
                HeaderMap::new(),
                Bytes::new(),
                LIST_TIMEOUT,
            )
            .await?;
        if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(Error::unavailable(format!(
                "GET /dapr/subscribe answered {status}"
            )));
        }
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Vec::new());
        }
        let listed: Vec<Subscription> = serde_json::from_slice(&body).map_err(|e| {
            Error::invalid_argument(format!("GET /dapr/subscribe answered invalid JSON: {e}"))
        })?;
        Ok(listed
            .into_iter()
            .map(|s| {
                let (rules, default) = match s.routes {
                    Some(r) => (r.rules, r.default),
                    None => (Vec::new(), String::new()),
                };
                AppSubscription {
                    pubsub: s.pubsubname,
                    topic: s.topic,
                    metadata: s.metadata.into_iter().collect(),
                    rules: rules
                        .into_iter()
                        .map(|r| RouteRule {
                            matches: r.matches,
                            path: r.path,
                        })
                        .collect(),
                    default_path: if default.is_empty() { s.route } else { default },
                    dead_letter_topic: Some(s.dead_letter_topic).filter(|t| !t.is_empty()),
                    bulk: s
                        .bulk_subscribe
                        .filter(|b| b.enabled)
                        .map(|b| BulkSubscribe::new(b.max_messages_count, b.max_await_duration_ms)),
                }
            })
            .collect())
    }

    async fn deliver(&self, event: &TopicEvent, path: &str) -> Outcome {
        let path = if path.is_empty() { &event.topic } else { path };
        let uri = match self.uri(path, "") {
            Ok(u) => u,
            Err(e) => return Outcome::Error(e.to_string()),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents+json"),
        );
        for (k, v) in [("pubsubname", &event.pubsub_name), ("topic", &event.topic)] {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.insert(k, v);
            }
        }
        let body = Self::envelope(event);
        match self
            .send(Method::POST, uri, headers, body, DELIVERY_TIMEOUT)
            .await
        {
            Err(e) => Outcome::Error(e.to_string()),
            Ok((status, _, _)) if status == StatusCode::NOT_FOUND => Outcome::Drop,
            Ok((status, _, _)) if !status.is_success() => {
                Outcome::Error(format!("the app answered {status}"))
            }
            Ok((_, _, body)) => match serde_json::from_slice::<EventReply>(&body) {
                // An empty or unparsable body is a success.
                Err(_) => Outcome::Success,
                Ok(reply) => Outcome::from_status_word(&reply.status),
            },
        }
    }

    async fn deliver_bulk(&self, events: &[TopicEvent], path: &str) -> Vec<Outcome> {
        let Some(first) = events.first() else {
            return Vec::new();
        };
        let path = if path.is_empty() { &first.topic } else { path };
        let all = |o: Outcome| vec![o; events.len()];
        let uri = match self.uri(path, "") {
            Ok(u) => u,
            Err(e) => return all(Outcome::Error(e.to_string())),
        };
        let ids: Vec<String> = events
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i}-{}", e.id))
            .collect();
        let entries: Vec<serde_json::Value> = events
            .iter()
            .zip(&ids)
            .map(|(e, id)| {
                let envelope: serde_json::Value =
                    serde_json::from_slice(&Self::envelope(e)).unwrap_or_default();
                serde_json::json!({
                    "entryId": id,
                    "event": envelope,
                    "contentType": "application/cloudevents+json",
                    "metadata": e.metadata,
                })
            })
            .collect();
        let body = serde_json::json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "entries": entries,
            "metadata": {},
            "pubsubname": first.pubsub_name,
            "topic": first.topic,
            "type": "com.dapr.event.sent",
        });
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents-batch+json"),
        );
        match self
            .send(
                Method::POST,
                uri,
                headers,
                json_bytes(&body),
                DELIVERY_TIMEOUT,
            )
            .await
        {
            Err(e) => all(Outcome::Error(e.to_string())),
            Ok((status, _, _)) if status == StatusCode::NOT_FOUND => all(Outcome::Drop),
            Ok((status, _, _)) if !status.is_success() => {
                all(Outcome::Error(format!("the app answered {status}")))
            }
            Ok((_, _, body)) => match serde_json::from_slice::<BulkReply>(&body) {
                // As for single events, an answer without statuses acknowledges the batch.
                Err(_) => all(Outcome::Success),
                Ok(reply) if reply.statuses.is_empty() => all(Outcome::Success),
                Ok(reply) => ids
                    .iter()
                    .map(
                        |id| match reply.statuses.iter().find(|s| &s.entry_id == id) {
                            Some(s) => Outcome::from_status_word(&s.status),
                            None => Outcome::Error(format!(
                                "the app's bulk answer has no status for entry {id}"
                            )),
                        },
                    )
                    .collect(),
            },
        }
    }

    async fn input_bindings(&self, configured: &[(String, String)]) -> Result<Vec<String>> {
        let mut taken = Vec::new();
        for (name, route) in configured {
            let (status, _, _) = self
                .send(
                    Method::OPTIONS,
                    self.uri(route, "")?,
                    HeaderMap::new(),
                    Bytes::new(),
                    LIST_TIMEOUT,
                )
                .await?;
            if status != StatusCode::NOT_FOUND {
                taken.push(name.clone());
            }
        }
        Ok(taken)
    }

    async fn on_binding_event(&self, event: AppBindingEvent) -> Result<AppBindingReply> {
        let route = if event.route.is_empty() {
            &event.name
        } else {
            &event.route
        };
        let mut headers = header_map(
            &event
                .metadata
                .iter()
                .filter(|(k, _)| forwardable(&k.to_ascii_lowercase()))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect::<Vec<_>>(),
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let (status, _, body) = self
            .send(
                Method::POST,
                self.uri(route, "")?,
                headers,
                event.data,
                DELIVERY_TIMEOUT,
            )
            .await?;
        if !status.is_success() {
            return Err(Error::unavailable(format!(
                "the app answered {status} to binding {:?}",
                event.name
            )));
        }
        let reply: BindingReply = serde_json::from_slice(&body).unwrap_or_default();
        Ok(AppBindingReply {
            store_name: reply.store_name,
            states: reply
                .state
                .into_iter()
                .map(|s| (s.key, json_bytes(&s.value)))
                .collect(),
            to: reply.to,
            data: reply.data.as_ref().map(json_bytes).unwrap_or_default(),
            parallel: reply.concurrency.eq_ignore_ascii_case("parallel"),
        })
    }

    async fn on_configuration_update(&self, update: ConfigurationUpdate) -> Result<()> {
        for (key, (value, version, metadata)) in &update.items {
            let body = serde_json::json!({
                "id": update.id,
                "items": { key: { "value": value, "version": version, "metadata": metadata } },
            });
            let path = format!("configuration/{}/{}", update.store, key);
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let (status, _, _) = self
                .send(
                    Method::POST,
                    self.uri(&path, "")?,
                    headers,
                    json_bytes(&body),
                    DELIVERY_TIMEOUT,
                )
                .await?;
            if !status.is_success() {
                return Err(Error::unavailable(format!(
                    "the app answered {status} to the configuration change of {key:?}"
                )));
            }
        }
        Ok(())
    }

    async fn health(&self) -> Result<()> {
        let (status, _, _) = self
            .send(
                Method::GET,
                self.uri(&self.health_path.clone(), "")?,
                HeaderMap::new(),
                Bytes::new(),
                LIST_TIMEOUT,
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Error::unavailable(format!(
                "GET {} answered {status}",
                self.health_path
            )))
        }
    }
}
