//! The app channel: how Plinth reaches the app it serves, whatever the app speaks.
//!
//! The building blocks (invocation, pub/sub delivery, input bindings) call the app through
//! [`AppChannel`]; the front-door crate implements it once per protocol (HTTP, and gRPC with
//! Dapr's `AppCallback` falling back to Layotto's). Nothing here knows a wire format.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use plinth_core::{Error, Metadata, Result};
use tokio::sync::watch;

use crate::pubsub::{Outcome, TopicEvent};

pub mod bindings;
pub mod passthrough;
pub mod subscriptions;

pub use passthrough::{
    API_TOKEN_HEADER, HttpBody, HttpCall, InvokeAnswer, forwardable, hop_by_hop, strip_hop_by_hop,
};

/// An invocation of one of the app's methods, as every front door describes it.
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    /// The method: for HTTP apps the path after `/`, query excluded.
    pub method: String,
    /// The HTTP verb (`GET`, `POST`, ...). gRPC callers that give none get `POST`.
    pub verb: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The body's content type.
    pub content_type: String,
    /// The body.
    pub data: Bytes,
    /// Headers (HTTP) or metadata (gRPC) to pass on, lower-case names, hop-by-hop and
    /// Plinth's own (tokens) already removed.
    pub headers: Vec<(String, String)>,
}

/// How the app ended a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppStatus {
    /// An HTTP app's status code.
    Http(u16),
    /// A gRPC app's status: 0 is OK.
    Grpc {
        /// The gRPC code.
        code: i32,
        /// Its message.
        message: String,
    },
}

impl AppStatus {
    /// Whether the app reported success.
    pub fn is_success(&self) -> bool {
        match self {
            AppStatus::Http(code) => (200..300).contains(code),
            AppStatus::Grpc { code, .. } => *code == 0,
        }
    }
}

/// The app's answer to an invocation. A non-success status is still an answer: front doors
/// pass it through (HTTP status as is; gRPC callers get it mapped).
#[derive(Debug, Clone)]
pub struct InvokeResponse {
    /// How the app ended the call.
    pub status: AppStatus,
    /// The body's content type.
    pub content_type: String,
    /// The body.
    pub data: Bytes,
    /// Response headers (HTTP) or metadata (gRPC), lower-case names.
    pub headers: Vec<(String, String)>,
}

/// One routing rule: events for which `matches` is true go to `path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteRule {
    /// A CEL expression over `event`; empty means "always".
    pub matches: String,
    /// Where matching events go.
    pub path: String,
}

/// A subscription the app declared (Dapr's `TopicSubscription` or `/dapr/subscribe` entry,
/// Layotto's `TopicSubscription`), or a declarative Subscription resource.
#[derive(Debug, Clone, Default)]
pub struct AppSubscription {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// Subscription metadata.
    pub metadata: Metadata,
    /// Rules, in order; the first match wins.
    pub rules: Vec<RouteRule>,
    /// The path when no rule matches (v1 `route`, v2 `routes.default`).
    pub default_path: String,
    /// Dead-letter topic.
    pub dead_letter_topic: Option<String>,
    /// Deliver in batches (Dapr's bulk subscribe), when enabled.
    pub bulk: Option<BulkSubscribe>,
}

/// Bulk-subscribe settings: up to `max_messages` events per call to the app, waiting at most
/// `max_await` for a batch to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSubscribe {
    /// Events per batch.
    pub max_messages: usize,
    /// How long a batch may wait to fill.
    pub max_await: std::time::Duration,
}

impl BulkSubscribe {
    /// Dapr's defaults: 100 events, 1 s.
    pub const DEFAULT_MAX_MESSAGES: usize = 100;
    /// Dapr's default wait.
    pub const DEFAULT_MAX_AWAIT_MS: u64 = 1000;

    /// From the wire's settings, where 0 or less means the default. Batches are capped at
    /// 10,000 events.
    pub fn new(max_messages: i64, max_await_ms: i64) -> Self {
        Self {
            max_messages: usize::try_from(max_messages)
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or(Self::DEFAULT_MAX_MESSAGES)
                .min(10_000),
            max_await: std::time::Duration::from_millis(
                u64::try_from(max_await_ms)
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or(Self::DEFAULT_MAX_AWAIT_MS),
            ),
        }
    }
}

/// An event from an input binding, for the app.
#[derive(Debug, Clone, Default)]
pub struct AppBindingEvent {
    /// The binding's name.
    pub name: String,
    /// Where to deliver it (HTTP apps: the binding's `route` metadata, else its name).
    pub route: String,
    /// The payload.
    pub data: Bytes,
    /// Metadata from the binding.
    pub metadata: Metadata,
}

/// The app's reply to a binding event: optional state to save and output bindings to call.
#[derive(Debug, Clone, Default)]
pub struct AppBindingReply {
    /// The state store for `states`.
    pub store_name: String,
    /// Key/values to save.
    pub states: Vec<(String, Bytes)>,
    /// Output bindings to invoke with `data`.
    pub to: Vec<String>,
    /// Their payload.
    pub data: Bytes,
    /// Invoke `to` in parallel rather than in order.
    pub parallel: bool,
}

/// A change to configuration items, pushed to an HTTP app's configuration route.
#[derive(Debug, Clone, Default)]
pub struct ConfigurationUpdate {
    /// The configuration store.
    pub store: String,
    /// The subscription id.
    pub id: String,
    /// Changed items: key to (value, version, metadata).
    pub items: BTreeMap<String, (String, String, Metadata)>,
}

/// The app, as the building blocks see it.
#[async_trait]
pub trait AppChannel: Send + Sync + fmt::Debug + 'static {
    /// `http` or `grpc`.
    fn protocol(&self) -> &'static str;

    /// Where the app is, for logs and metadata.
    fn address(&self) -> &str;

    /// Call one of the app's methods.
    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse>;

    /// Whether [`forward_http`](Self::forward_http) passes HTTP invocations through (HTTP
    /// apps do; the others are called with [`invoke`](Self::invoke)).
    fn passes_http(&self) -> bool {
        false
    }

    /// Pass an HTTP invocation through to the app, streaming both ways. `Ok` whatever
    /// status the app answered; the response's hop-by-hop headers are removed.
    async fn forward_http(&self, _call: HttpCall) -> Result<http::Response<HttpBody>> {
        Err(Error::unimplemented(format!(
            "{} apps are not called over HTTP",
            self.protocol()
        )))
    }

    /// The app's own subscriptions. `Unavailable` while the app is not answering (it may
    /// start after Plinth); an app without subscriptions answers an empty list.
    async fn list_subscriptions(&self) -> Result<Vec<AppSubscription>>;

    /// Deliver one event to `path` (empty when the subscription has no routes).
    async fn deliver(&self, event: &TopicEvent, path: &str) -> Outcome;

    /// Deliver a batch of events to `path` in one call; one outcome per event, in order.
    /// Without a bulk contract, each event is delivered on its own, concurrently.
    async fn deliver_bulk(&self, events: &[TopicEvent], path: &str) -> Vec<Outcome> {
        futures::future::join_all(events.iter().map(|e| self.deliver(e, path))).await
    }

    /// Which of `configured` (name, route) input bindings the app handles.
    async fn input_bindings(&self, configured: &[(String, String)]) -> Result<Vec<String>>;

    /// Deliver one input-binding event.
    async fn on_binding_event(&self, event: AppBindingEvent) -> Result<AppBindingReply>;

    /// Push a configuration change (HTTP apps); gRPC apps take changes over their stream.
    async fn on_configuration_update(&self, _update: ConfigurationUpdate) -> Result<()> {
        Err(Error::unimplemented(format!(
            "{} apps receive configuration changes through SubscribeConfiguration streams",
            self.protocol()
        )))
    }

    /// Probe the app. An app without a health endpoint counts as healthy.
    async fn health(&self) -> Result<()>;
}

/// The app's health as the last probe saw it; `true` until a probe says otherwise, and
/// always `true` when health checks are off.
#[derive(Debug, Clone)]
pub struct AppHealth {
    rx: watch::Receiver<bool>,
}

impl AppHealth {
    /// Always healthy.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        // Keep the value readable after the sender is gone.
        drop(tx);
        Self { rx }
    }

    /// Follow a probe's results.
    pub fn from_receiver(rx: watch::Receiver<bool>) -> Self {
        Self { rx }
    }

    /// The last result.
    pub fn is_healthy(&self) -> bool {
        *self.rx.borrow()
    }
}

/// The connection to the app, set once when the listeners start.
#[derive(Debug, Default)]
pub struct AppSlot {
    channel: std::sync::OnceLock<(Arc<dyn AppChannel>, AppHealth)>,
}

impl AppSlot {
    /// Install the channel; a second call is an error.
    pub fn set(&self, channel: Arc<dyn AppChannel>, health: AppHealth) -> Result<()> {
        self.channel
            .set((channel, health))
            .map_err(|_| Error::internal("the app channel is already set"))
    }

    /// The channel, if the app has one (`--app-port`).
    pub fn get(&self) -> Option<&Arc<dyn AppChannel>> {
        self.channel.get().map(|(c, _)| c)
    }

    /// The app's health.
    pub fn health(&self) -> Option<&AppHealth> {
        self.channel.get().map(|(_, h)| h)
    }
}
