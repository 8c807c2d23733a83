//! Secret stores.

use std::collections::HashMap;

use async_trait::async_trait;

use super::Component;
use crate::{Metadata, Result};

/// A secret: one or more named values (a flat secret has one entry under its own name).
pub type Secret = HashMap<String, String>;

/// A secret store.
#[async_trait]
pub trait SecretStore: Component {
    /// One secret; NotFound when it does not exist or is not allowed.
    async fn get(&self, name: &str, metadata: &Metadata) -> Result<Secret>;

    /// Every secret the store may return in bulk.
    async fn bulk_get(&self, metadata: &Metadata) -> Result<HashMap<String, Secret>>;
}
