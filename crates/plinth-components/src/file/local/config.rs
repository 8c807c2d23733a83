//! Metadata of `file.local`.

use std::path::PathBuf;

use plinth_core::{ComponentSpec, Result};

/// Component metadata: the directory that holds the files.
pub const ROOT_PATH: &str = "rootPath";
/// The default of [`ROOT_PATH`], relative to Plinth's working directory.
pub const DEFAULT_ROOT_PATH: &str = "./plinth-files";

/// The settings of a local file store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFileConfig {
    /// The directory that holds the files; created by `init` when missing.
    pub root_path: PathBuf,
}

impl LocalFileConfig {
    /// Read the settings from component metadata.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let root = spec.get(ROOT_PATH).unwrap_or(DEFAULT_ROOT_PATH);
        if root.contains('\0') {
            return Err(spec.invalid(&format!("metadata.{ROOT_PATH}"), "contains a NUL byte"));
        }
        Ok(Self {
            root_path: PathBuf::from(root),
        })
    }
}
