//! Runtime metadata: the attributes an app sets at run time, and what is loaded, as the
//! Dapr metadata API reports them. Every front door (Dapr gRPC `GetMetadata`, Dapr HTTP
//! `GET /v1.0/metadata`) renders the same [`MetadataSnapshot`].

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use plinth_core::component::Instance;

use crate::components::{ComponentHost, Hosted};
use crate::config::SubscriptionResource;

/// The runtime version the metadata API reports (`runtimeVersion`, `daprRuntimeVersion`).
pub const RUNTIME_VERSION: &str = concat!("plinth-", env!("CARGO_PKG_VERSION"));

/// The extended attribute Dapr always reports with the runtime version.
pub const RUNTIME_VERSION_KEY: &str = "daprRuntimeVersion";

/// How a subscription came to be, as Dapr's metadata API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// A `Subscription` resource.
    Declarative,
    /// Asked for by the app's callback.
    Programmatic,
    /// A streaming client's.
    Streaming,
}

/// One subscription as the metadata API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// Subscription metadata.
    pub metadata: BTreeMap<String, String>,
    /// The dead-letter topic, empty when none.
    pub dead_letter_topic: String,
    /// Where it came from.
    pub kind: SubscriptionKind,
}

/// How Plinth reaches the app, as the metadata API reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppConnection {
    /// The app's port, when Plinth has one.
    pub port: Option<u16>,
    /// The app channel's protocol.
    pub protocol: String,
    /// The address Plinth calls the app on.
    pub channel_address: String,
    /// `--app-max-concurrency`, when set.
    pub max_concurrency: Option<usize>,
}

/// Everything the metadata API reports, assembled in one place for every front door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataSnapshot {
    /// The app id.
    pub id: String,
    /// [`RUNTIME_VERSION`].
    pub runtime_version: &'static str,
    /// Every loaded component, by name.
    pub components: Vec<RegisteredComponent>,
    /// Attributes set through the API, plus [`RUNTIME_VERSION_KEY`].
    pub extended: BTreeMap<String, String>,
    /// Known subscriptions.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// The app channel.
    pub app_connection: AppConnection,
}

/// One loaded component as the metadata API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredComponent {
    /// The component's name.
    pub name: String,
    /// Its full type, e.g. `state.in-memory`.
    pub type_name: String,
    /// Its version, e.g. `v1`.
    pub version: String,
    /// What it can do beyond the basics (Dapr's capability names, e.g. `ETAG`).
    pub capabilities: Vec<String>,
}

/// Attributes set through the metadata API, and the list of loaded components.
#[derive(Debug)]
pub struct MetadataApi {
    host: Arc<ComponentHost>,
    app_id: String,
    subscriptions: Vec<SubscriptionInfo>,
    // Attributes live as long as the process, like Dapr's: they are not persisted.
    attributes: RwLock<BTreeMap<String, String>>,
    app_connection: RwLock<AppConnection>,
}

impl MetadataApi {
    /// The metadata API over `host` for app `app_id`, listing the declarative
    /// `subscriptions`, with no attributes set and no app channel yet.
    pub fn new(
        host: Arc<ComponentHost>,
        app_id: &str,
        subscriptions: &[SubscriptionResource],
        app_max_concurrency: Option<usize>,
    ) -> Self {
        let subscriptions = subscriptions
            .iter()
            .map(|s| SubscriptionInfo {
                pubsub: s.pubsubname.clone(),
                topic: s.topic.clone(),
                metadata: s.metadata.clone(),
                dead_letter_topic: s.dead_letter_topic.clone().unwrap_or_default(),
                kind: SubscriptionKind::Declarative,
            })
            .collect();
        Self {
            host,
            app_id: app_id.to_string(),
            subscriptions,
            attributes: RwLock::default(),
            app_connection: RwLock::new(AppConnection {
                max_concurrency: app_max_concurrency.filter(|n| *n > 0),
                ..AppConnection::default()
            }),
        }
    }

    /// Record the app channel once the listeners know it: `protocol` and the address and
    /// port Plinth calls the app on (no port when there is no app channel).
    pub fn set_app_channel(&self, protocol: &str, address: &str, port: Option<u16>) {
        let mut app = self
            .app_connection
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        app.protocol = protocol.to_string();
        app.channel_address = address.to_string();
        app.port = port;
    }

    /// What the metadata API reports right now.
    pub fn snapshot(&self) -> MetadataSnapshot {
        let mut extended = self.attributes();
        extended.insert(RUNTIME_VERSION_KEY.into(), RUNTIME_VERSION.into());
        MetadataSnapshot {
            id: self.app_id.clone(),
            runtime_version: RUNTIME_VERSION,
            components: self.components(),
            extended,
            subscriptions: self.subscriptions.clone(),
            app_connection: self
                .app_connection
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Set (or replace) an attribute.
    pub fn set(&self, key: String, value: String) {
        self.attributes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, value);
    }

    /// Every attribute set so far.
    pub fn attributes(&self) -> BTreeMap<String, String> {
        self.attributes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every loaded component, by name.
    pub fn components(&self) -> Vec<RegisteredComponent> {
        let mut all: Vec<_> = self.host.all().iter().map(|h| registered(h)).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

fn registered(hosted: &Hosted) -> RegisteredComponent {
    let spec = hosted.spec();
    RegisteredComponent {
        name: spec.name.clone(),
        type_name: spec.type_name.clone(),
        version: spec.version.clone(),
        capabilities: capabilities(hosted.instance()),
    }
}

/// Dapr's capability names for what a component's features say it supports.
fn capabilities(instance: &Instance) -> Vec<String> {
    let mut caps = Vec::new();
    if let Instance::State(store) = instance {
        let f = store.features();
        for (on, name) in [
            (f.etag, "ETAG"),
            (f.transactional, "TRANSACTIONAL"),
            (f.ttl, "TTL"),
            (f.query, "QUERY_API"),
        ] {
            if on {
                caps.push(name.to_string());
            }
        }
    }
    caps
}
