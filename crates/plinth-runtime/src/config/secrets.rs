//! Secret references in component metadata (`secretKeyRef`, Layotto's `secret_ref`),
//! resolved from secret stores before the component is built.

use std::collections::HashMap;

use plinth_core::{ComponentSpec, Error, Result};

use crate::secrets::SecretsApi;

/// One metadata value to fetch from a secret store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The metadata field to fill.
    pub field: String,
    /// The secret store (`auth.secretStore`, or Layotto's `store_name`).
    pub store: String,
    /// The secret's name.
    pub name: String,
    /// The key inside the secret; empty means the secret's value under its own name, or its
    /// only value.
    pub key: String,
}

/// Fill `spec`'s metadata from its secret references. Errors name the component and field
/// but never a secret's value.
pub async fn resolve_secret_refs(
    spec: &mut ComponentSpec,
    refs: &[SecretRef],
    secrets: &SecretsApi,
) -> Result<()> {
    for r in refs {
        let secret: HashMap<String, String> = secrets
            .get(&r.store, &r.name, HashMap::new())
            .await
            .map_err(|e| {
                spec.invalid(
                    &format!("metadata.{}.secretKeyRef", r.field),
                    format!("secret {:?} in store {:?}: {e}", r.name, r.store),
                )
            })?;
        let value = if r.key.is_empty() {
            secret.get(&r.name).cloned().or_else(|| {
                (secret.len() == 1)
                    .then(|| secret.values().next().cloned())
                    .flatten()
            })
        } else {
            secret.get(&r.key).cloned()
        };
        let value = value.ok_or_else(|| {
            spec.invalid(
                &format!("metadata.{}.secretKeyRef", r.field),
                format!(
                    "secret {:?} in store {:?} has no key {:?}",
                    r.name, r.store, r.key
                ),
            )
        })?;
        spec.metadata.insert(r.field.clone(), value);
    }
    Ok(())
}

/// Build the error for a reference with no store to resolve it from.
pub(super) fn no_store(spec: &ComponentSpec, field: &str) -> Error {
    spec.invalid(
        &format!("metadata.{field}.secretKeyRef"),
        "no secret store named: set auth.secretStore on the component",
    )
}
