//! gRPC apps: Dapr's `dapr.proto.runtime.v1.AppCallback` first; an app that answers
//! UNIMPLEMENTED for it is asked through Layotto's `spec.proto.runtime.v1.AppCallback`, so
//! Layotto apps work unchanged. The flavour the app answered with is remembered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use ::dapr::dapr::proto::common::v1 as common;
use ::dapr::dapr::proto::runtime::v1 as dpb;
use async_trait::async_trait;
use bytes::Bytes;
use dpb::app_callback_client::AppCallbackClient as DaprCallback;
use dpb::app_callback_health_check_client::AppCallbackHealthCheckClient;
use plinth_core::{Error, Result};
use plinth_proto::runtime::v1::app_callback_client::AppCallbackClient as LayottoCallback;
use plinth_runtime::app::{
    AppBindingEvent, AppBindingReply, AppStatus, AppSubscription, BulkSubscribe, InvokeRequest,
    InvokeResponse, RouteRule,
};
use plinth_runtime::pubsub::{Outcome, TopicEvent};
use tonic::Code;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::{API_TOKEN_HEADER, AppOptions, DELIVERY_TIMEOUT, LIST_TIMEOUT, forwardable};

const UNKNOWN: u8 = 0;
const DAPR: u8 = 1;
const LAYOTTO: u8 = 2;

/// The gRPC connection to the app.
#[derive(Debug)]
pub struct GrpcApp {
    dapr: DaprCallback<Channel>,
    layotto: LayottoCallback<Channel>,
    health: AppCallbackHealthCheckClient<Channel>,
    address: String,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    flavour: AtomicU8,
}

impl GrpcApp {
    /// A lazily connected channel; it reconnects by itself when the app restarts.
    pub fn new(options: &AppOptions) -> Result<Self> {
        let address = format!("http://{}:{}", options.host, options.port);
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| Error::invalid_argument(format!("app address {address}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        let limit = options.max_body_size;
        let token = match &options.token {
            Some(t) => Some(t.parse().map_err(|_| {
                Error::invalid_argument("APP_API_TOKEN holds characters a header cannot carry")
            })?),
            None => None,
        };
        Ok(Self {
            dapr: DaprCallback::new(channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            layotto: LayottoCallback::new(channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            health: AppCallbackHealthCheckClient::new(channel),
            address,
            token,
            flavour: AtomicU8::new(UNKNOWN),
        })
    }

    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert(API_TOKEN_HEADER, token.clone());
        }
        request
    }

    fn flavour(&self) -> u8 {
        self.flavour.load(Ordering::Relaxed)
    }

    async fn deliver_layotto(&self, event: &TopicEvent) -> std::result::Result<Outcome, Code> {
        let request = self.request(crate::layotto::event_request(event), DELIVERY_TIMEOUT);
        match self.layotto.clone().on_topic_event(request).await {
            Ok(resp) => Ok(crate::layotto::outcome_of(resp.into_inner().status)),
            Err(status) if status.code() == Code::Unimplemented => Err(Code::Unimplemented),
            Err(status) => Ok(failed(&status)),
        }
    }
}

fn failed(status: &tonic::Status) -> Outcome {
    Outcome::Error(format!(
        "app answered {:?}: {}",
        status.code(),
        status.message()
    ))
}

fn unavailable(status: &tonic::Status) -> Error {
    Error::unavailable(format!(
        "app not answering ({:?}): {}",
        status.code(),
        status.message()
    ))
}

/// Event attributes beyond the ones `TopicEventRequest` has fields for.
fn extensions(raw: &[u8]) -> Option<prost_types::Struct> {
    let serde_json::Value::Object(map) = serde_json::from_slice(raw).ok()? else {
        return None;
    };
    if !map.contains_key("specversion") {
        return None;
    }
    let fields: BTreeMap<String, prost_types::Value> = map
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "id" | "source"
                    | "type"
                    | "specversion"
                    | "datacontenttype"
                    | "data"
                    | "data_base64"
            )
        })
        .map(|(k, v)| (k, crate::dapr::convert::json_to_prost(v)))
        .collect();
    Some(prost_types::Struct { fields })
}

fn metadata_from(headers: &[(String, String)]) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (k, v) in headers {
        if k.ends_with("-bin") {
            continue;
        }
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(k.as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) {
            map.append(key, value);
        }
    }
    map
}

fn headers_from(map: &MetadataMap) -> Vec<(String, String)> {
    map.iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                let k = k.as_str();
                forwardable(k)
                    .then(|| v.to_str().ok().map(|v| (k.to_string(), v.to_string())))
                    .flatten()
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

fn verb_of(verb: &str) -> i32 {
    use common::http_extension::Verb;
    Verb::from_str_name(verb).unwrap_or(Verb::Post) as i32
}

#[async_trait]
impl plinth_runtime::app::AppChannel for GrpcApp {
    fn protocol(&self) -> &'static str {
        "grpc"
    }

    fn address(&self) -> &str {
        &self.address
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse> {
        let message = common::InvokeRequest {
            method: req.method,
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: req.data.to_vec(),
            }),
            content_type: req.content_type,
            http_extension: Some(common::HttpExtension {
                verb: verb_of(&req.verb),
                querystring: req.query,
            }),
        };
        // The caller's headers first; the deadline and the app's token go on top of them.
        let mut request =
            tonic::Request::from_parts(metadata_from(&req.headers), Default::default(), message);
        request.set_timeout(plinth_runtime::invoke::APP_CALL_TIMEOUT);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert(API_TOKEN_HEADER, token.clone());
        }
        match self.dapr.clone().on_invoke(request).await {
            Ok(resp) => {
                let headers = headers_from(resp.metadata());
                let resp = resp.into_inner();
                Ok(InvokeResponse {
                    status: AppStatus::Grpc {
                        code: 0,
                        message: String::new(),
                    },
                    content_type: resp.content_type,
                    data: resp.data.map(|a| Bytes::from(a.value)).unwrap_or_default(),
                    headers,
                })
            }
            Err(status) => Ok(InvokeResponse {
                status: AppStatus::Grpc {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                },
                content_type: String::new(),
                data: Bytes::new(),
                headers: headers_from(status.metadata()),
            }),
        }
    }

    async fn list_subscriptions(&self) -> Result<Vec<AppSubscription>> {
        match self
            .dapr
            .clone()
            .list_topic_subscriptions(self.request((), LIST_TIMEOUT))
            .await
        {
            Ok(resp) => {
                self.flavour.store(DAPR, Ordering::Relaxed);
                return Ok(resp
                    .into_inner()
                    .subscriptions
                    .into_iter()
                    .map(|s| {
                        let routes = s.routes.unwrap_or_default();
                        AppSubscription {
                            pubsub: s.pubsub_name,
                            topic: s.topic,
                            metadata: s.metadata.into_iter().collect(),
                            rules: routes
                                .rules
                                .into_iter()
                                .map(|r| RouteRule {
                                    matches: r.r#match,
                                    path: r.path,
                                })
                                .collect(),
                            default_path: routes.default,
                            dead_letter_topic: Some(s.dead_letter_topic).filter(|t| !t.is_empty()),
                            bulk: s.bulk_subscribe.filter(|b| b.enabled).map(|b| {
                                BulkSubscribe::new(
                                    b.max_messages_count.into(),
                                    b.max_await_duration_ms.into(),
                                )
                            }),
                        }
                    })
                    .collect());
            }
            Err(status) if status.code() == Code::Unimplemented => {}
            Err(status) => return Err(unavailable(&status)),
        }
        match self
            .layotto
            .clone()
            .list_topic_subscriptions(self.request((), LIST_TIMEOUT))
            .await
        {
            Ok(resp) => {
                self.flavour.store(LAYOTTO, Ordering::Relaxed);
                tracing::info!(app = %self.address, "the app speaks Layotto's AppCallback");
                Ok(resp
                    .into_inner()
                    .subscriptions
                    .into_iter()
                    .map(|s| AppSubscription {
                        pubsub: s.pubsub_name,
                        topic: s.topic,
                        metadata: s.metadata.into_iter().collect(),
                        ..Default::default()
                    })
                    .collect())
            }
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::info!(app = %self.address, "the app lists no subscriptions (neither Dapr's nor Layotto's AppCallback)");
                Ok(Vec::new())
            }
            Err(status) => Err(unavailable(&status)),
        }
    }

    async fn deliver(&self, event: &TopicEvent, path: &str) -> Outcome {
        if self.flavour() == LAYOTTO {
            return self
                .deliver_layotto(event)
                .await
                .unwrap_or(Outcome::Unimplemented);
        }
        let mut message = crate::dapr::convert::event_request(event);
        message.path = path.to_string();
        message.extensions = extensions(&event.raw);
        let request = self.request(message, DELIVERY_TIMEOUT);
        match self.dapr.clone().on_topic_event(request).await {
            Ok(resp) => crate::dapr::convert::outcome_of(resp.into_inner().status),
            Err(status) if status.code() == Code::Unimplemented => {
                if self.flavour() == UNKNOWN {
                    // Not known to speak Dapr's service: try Layotto's.
                    match self.deliver_layotto(event).await {
                        Ok(outcome) => {
                            self.flavour.store(LAYOTTO, Ordering::Relaxed);
                            outcome
                        }
                        Err(_) => Outcome::Unimplemented,
                    }
                } else {
                    Outcome::Unimplemented
                }
            }
            Err(status) => failed(&status),
        }
    }

    async fn deliver_bulk(&self, events: &[TopicEvent], path: &str) -> Vec<Outcome> {
        let Some(first) = events.first() else {
            return Vec::new();
        };
        let entries = events
            .iter()
            .enumerate()
            .map(|(i, e)| dpb::TopicEventBulkRequestEntry {
                entry_id: format!("{i}-{}", e.id),
                content_type: "application/cloudevents+json".into(),
                metadata: e.metadata.clone().into_iter().collect(),
                event: Some(dpb::topic_event_bulk_request_entry::Event::CloudEvent(
                    dpb::TopicEventCeRequest {
                        id: e.id.clone(),
                        source: e.source.clone(),
                        r#type: e.event_type.clone(),
                        spec_version: e.spec_version.clone(),
                        data_content_type: e.data_content_type.clone(),
                        data: e.data.to_vec(),
                        extensions: extensions(&e.raw),
                    },
                )),
            })
            .collect::<Vec<_>>();
        let ids: Vec<String> = entries.iter().map(|e| e.entry_id.clone()).collect();
        let request = self.request(
            dpb::TopicEventBulkRequest {
                id: uuid::Uuid::new_v4().to_string(),
                entries,
                metadata: Default::default(),
                topic: first.topic.clone(),
                pubsub_name: first.pubsub_name.clone(),
                r#type: "com.dapr.event.sent".into(),
                path: path.to_string(),
            },
            DELIVERY_TIMEOUT,
        );
        let outcome_all = |o: Outcome| vec![o; events.len()];
        match self.dapr.clone().on_bulk_topic_event(request).await {
            Ok(resp) => {
                let statuses = resp.into_inner().statuses;
                ids.iter()
                    .map(|id| match statuses.iter().find(|s| &s.entry_id == id) {
                        Some(s) => crate::dapr::convert::outcome_of(s.status),
                        None => Outcome::Error(format!(
                            "the app's bulk answer has no status for entry {id}"
                        )),
                    })
                    .collect()
            }
            Err(status) if status.code() == Code::Unimplemented => {
                outcome_all(Outcome::Unimplemented)
            }
            Err(status) => outcome_all(failed(&status)),
        }
    }

    async fn input_bindings(&self, configured: &[(String, String)]) -> Result<Vec<String>> {
        match self
            .dapr
            .clone()
            .list_input_bindings(self.request((), LIST_TIMEOUT))
            .await
        {
            Ok(resp) => {
                let wanted = resp.into_inner().bindings;
                for name in &wanted {
                    if !configured.iter().any(|(n, _)| n == name) {
                        tracing::warn!(binding = %name, "the app lists an input binding that is not configured");
                    }
                }
                Ok(configured
                    .iter()
                    .filter(|(n, _)| wanted.contains(n))
                    .map(|(n, _)| n.clone())
                    .collect())
            }
            Err(status) if status.code() == Code::Unimplemented => Ok(Vec::new()),
            Err(status) => Err(unavailable(&status)),
        }
    }

    async fn on_binding_event(&self, event: AppBindingEvent) -> Result<AppBindingReply> {
        let request = self.request(
            dpb::BindingEventRequest {
                name: event.name,
                data: event.data.to_vec(),
                metadata: event.metadata.into_iter().collect(),
            },
            DELIVERY_TIMEOUT,
        );
        let resp = self
            .dapr
            .clone()
            .on_binding_event(request)
            .await
            .map_err(|s| {
                Error::unavailable(format!("app answered {:?}: {}", s.code(), s.message()))
            })?
            .into_inner();
        use dpb::binding_event_response::BindingEventConcurrency as C;
        Ok(AppBindingReply {
            store_name: resp.store_name,
            states: resp
                .states
                .into_iter()
                .map(|s| (s.key, Bytes::from(s.value)))
                .collect(),
            to: resp.to,
            data: Bytes::from(resp.data),
            parallel: resp.concurrency == C::Parallel as i32,
        })
    }

    async fn health(&self) -> Result<()> {
        match self
            .health
            .clone()
            .health_check(self.request((), LIST_TIMEOUT))
            .await
        {
            Ok(_) => Ok(()),
            // An app without the health service is not unhealthy for lacking it.
            Err(status) if status.code() == Code::Unimplemented => Ok(()),
            Err(status) => Err(unavailable(&status)),
        }
    }
}
