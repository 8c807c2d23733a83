//! Component factories keyed by type name.

use std::collections::BTreeMap;
use std::fmt;

use crate::component::Instance;
use crate::{ComponentSpec, Error, Result};

/// Builds a component from its spec. Validation of metadata happens here, synchronously,
/// so that bad config stops startup; connecting to the backend happens in `init`.
pub type Factory = fn(&ComponentSpec) -> Result<Instance>;

/// Every component type Plinth can build, keyed by `kind.name`.
#[derive(Default, Clone)]
pub struct Registry {
    factories: BTreeMap<&'static str, Factory>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a factory under a type name such as `state.in-memory`.
    pub fn register(&mut self, type_name: &'static str, factory: Factory) -> &mut Self {
        self.factories.insert(type_name, factory);
        self
    }

    /// Build a component, or say which types exist. A binding's `direction` metadata is
    /// checked against the directions its type supports.
    pub fn build(&self, spec: &ComponentSpec) -> Result<Instance> {
        let factory = self.factories.get(spec.type_name.as_str()).ok_or_else(|| {
            let kind = spec.kind();
            let known: Vec<_> = self
                .factories
                .keys()
                .filter(|t| t.split('.').next() == Some(kind))
                .collect();
            spec.invalid(
                "spec.type",
                format!(
                    "unknown component type {:?}; known {kind} types: {known:?}",
                    spec.type_name
                ),
            )
        })?;
        let instance = factory(spec)?;
        if let Instance::Binding(binding) = &instance {
            binding.check_direction(spec)?;
        }
        Ok(instance)
    }

    /// Whether a type is known.
    pub fn contains(&self, type_name: &str) -> bool {
        self.factories.contains_key(type_name)
    }

    /// All registered type names.
    pub fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }
}

/// Turn a misuse of the registry (wrong kind for a name) into a clear error.
pub fn wrong_kind(spec: &ComponentSpec, expected: &str) -> Error {
    spec.invalid(
        "spec.type",
        format!("factory did not build a {expected} component"),
    )
}
