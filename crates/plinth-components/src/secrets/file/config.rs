//! Metadata of `secretstores.local.file`.

use std::path::PathBuf;

use plinth_core::{ComponentSpec, Result};

/// Component metadata: the JSON file that holds the secrets (required).
pub const SECRETS_FILE: &str = "secretsFile";
/// Component metadata: what joins the keys of nested objects (default `:`).
pub const NESTED_SEPARATOR: &str = "nestedSeparator";
/// Component metadata: whether each top-level key is one secret with several values.
pub const MULTI_VALUED: &str = "multiValued";

/// The settings of a file secret store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSecretsConfig {
    /// The JSON file, read by `init`.
    pub secrets_file: PathBuf,
    /// Joins nested keys: `{"db": {"password": "x"}}` holds `db:password`.
    pub nested_separator: String,
    /// Each top-level key is one secret whose values are its nested entries (flattened).
    pub multi_valued: bool,
}

impl FileSecretsConfig {
    /// Read the settings from component metadata.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        Ok(Self {
            secrets_file: PathBuf::from(spec.require(SECRETS_FILE)?),
            nested_separator: spec.get(NESTED_SEPARATOR).unwrap_or(":").to_owned(),
            multi_valued: spec.bool_or(MULTI_VALUED, false)?,
        })
    }
}
