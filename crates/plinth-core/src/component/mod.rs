//! One trait per building block. Components are thin adapters over a backend; they know
//! nothing of wire formats or of key prefixing, which the building blocks own.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{ComponentSpec, Result};

pub mod binding;
pub mod configuration;
pub mod file;
pub mod lock;
pub mod pubsub;
pub mod secrets;
pub mod sequencer;
pub mod state;

pub use binding::{Binding, InputBinding, OutputBinding};
pub use configuration::ConfigurationStore;
pub use file::FileStore;
pub use lock::LockStore;
pub use pubsub::PubSub;
pub use secrets::SecretStore;
pub use sequencer::Sequencer;
pub use state::StateStore;

/// What every component shares: a lifecycle and a health probe.
#[async_trait]
pub trait Component: Send + Sync + Debug + 'static {
    /// Connect to the backend. A failure leaves the component DOWN; the runtime retries with
    /// backoff. Must be idempotent.
    async fn init(&self) -> Result<()> {
        Ok(())
    }

    /// Check that the backend answers. Used by readiness; must be cheap.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Take new metadata in place, keeping the component's data (an in-memory store's
    /// contents, a sequencer's counters). Returns `Ok(false)` when the component cannot, and
    /// must be rebuilt from the spec instead, which is the default. Must validate `spec` as
    /// the factory would.
    async fn reconfigure(&self, _spec: &ComponentSpec) -> Result<bool> {
        Ok(false)
    }

    /// Release connections. Called once on shutdown or replacement.
    async fn close(&self) {}
}

/// A built component of one of the building-block kinds.
#[derive(Debug, Clone)]
pub enum Instance {
    /// `state.*`
    State(Arc<dyn StateStore>),
    /// `pubsub.*`
    PubSub(Arc<dyn PubSub>),
    /// `lock.*`
    Lock(Arc<dyn LockStore>),
    /// `sequencer.*`
    Sequencer(Arc<dyn Sequencer>),
    /// `configuration.*`
    Configuration(Arc<dyn ConfigurationStore>),
    /// `file.*`
    File(Arc<dyn FileStore>),
    /// `secretstores.*`
    Secrets(Arc<dyn SecretStore>),
    /// `bindings.*`: input, output or both.
    Binding(Binding),
}

impl Instance {
    /// The component, seen through its shared lifecycle trait.
    pub fn component(&self) -> &dyn Component {
        match self {
            Instance::State(c) => c.as_ref(),
            Instance::PubSub(c) => c.as_ref(),
            Instance::Lock(c) => c.as_ref(),
            Instance::Sequencer(c) => c.as_ref(),
            Instance::Configuration(c) => c.as_ref(),
            Instance::File(c) => c.as_ref(),
            Instance::Secrets(c) => c.as_ref(),
            Instance::Binding(b) => b.component(),
        }
    }

    /// The kind name as used in type prefixes.
    pub fn kind(&self) -> &'static str {
        match self {
            Instance::State(_) => "state",
            Instance::PubSub(_) => "pubsub",
            Instance::Lock(_) => "lock",
            Instance::Sequencer(_) => "sequencer",
            Instance::Configuration(_) => "configuration",
            Instance::File(_) => "file",
            Instance::Secrets(_) => "secretstores",
            Instance::Binding(_) => "bindings",
        }
    }
}
