//! Runtime metadata: the attributes an app sets at run time, and what is loaded, as the
//! Dapr metadata API reports them.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use plinth_core::component::Instance;

use crate::components::{ComponentHost, Hosted};

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
    // Attributes live as long as the process, like Dapr's: they are not persisted.
    attributes: RwLock<BTreeMap<String, String>>,
}

impl MetadataApi {
    /// The metadata API over `host`, with no attributes set.
    pub fn new(host: Arc<ComponentHost>) -> Self {
        Self {
            host,
            attributes: RwLock::default(),
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
