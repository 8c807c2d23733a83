//! The file building block: name validation, paging rules and streaming.

use std::sync::Arc;

use plinth_core::component::file::{ByteStream, FileList, FileMeta, ListRequest};
use plinth_core::{Error, Metadata, Result};

use crate::components::ComponentHost;

/// Page size when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The file API every front door calls.
#[derive(Debug, Clone)]
pub struct FileApi {
    host: Arc<ComponentHost>,
}

/// A name must stay inside the store: relative, no `..`, no NUL, no backslash.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument("file name is empty"));
    }
    if name.len() > 1024 {
        return Err(Error::invalid_argument(
            "file name is longer than 1024 bytes",
        ));
    }
    if name.contains('\0') || name.contains('\\') {
        return Err(Error::invalid_argument(format!(
            "file name {name:?} contains a NUL or backslash"
        )));
    }
    if name.starts_with('/') || name.split('/').any(|part| part == ".." || part == ".") {
        return Err(Error::invalid_argument(format!(
            "file name {name:?} escapes the store (absolute or contains . or ..)"
        )));
    }
    Ok(())
}

impl FileApi {
    /// Files over the host's components.
    pub fn new(host: Arc<ComponentHost>) -> Self {
        Self { host }
    }

    /// Write a file from a stream of chunks. The upload is not timed out as a whole (it runs
    /// at the client's pace); the store bounds each chunk's wait.
    pub async fn put(
        &self,
        store: &str,
        name: &str,
        metadata: &Metadata,
        body: ByteStream,
    ) -> Result<()> {
        validate_name(name)?;
        let handle = self.host.file(store)?;
        handle.component.put(name, metadata, body).await
    }

    /// Read a file as a stream of chunks.
    pub async fn get(&self, store: &str, name: &str, metadata: &Metadata) -> Result<ByteStream> {
        validate_name(name)?;
        let handle = self.host.file(store)?;
        let (n, m) = (name.to_string(), metadata.clone());
        handle
            .call(
                "get",
                (n, m),
                |c, (n, m)| async move { c.get(&n, &m).await },
            )
            .await
    }

    /// List a page of files under `prefix`. A negative page size is an error; zero means the
    /// default.
    pub async fn list(
        &self,
        store: &str,
        prefix: &str,
        page_size: i64,
        marker: &str,
        metadata: Metadata,
    ) -> Result<FileList> {
        if page_size < 0 {
            return Err(Error::invalid_argument(format!(
                "page size must not be negative, got {page_size}"
            )));
        }
        if !prefix.is_empty() {
            validate_name(prefix.trim_end_matches('/'))?;
        }
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => u32::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE),
        };
        let handle = self.host.file(store)?;
        let req = ListRequest {
            prefix: prefix.to_string(),
            page_size,
            marker: marker.to_string(),
            metadata,
        };
        handle
            .call("list", req, |c, r| async move { c.list(r).await })
            .await
    }

    /// Delete a file.
    pub async fn delete(&self, store: &str, name: &str, metadata: &Metadata) -> Result<()> {
        validate_name(name)?;
        let handle = self.host.file(store)?;
        let (n, m) = (name.to_string(), metadata.clone());
        handle
            .call("delete", (n, m), |c, (n, m)| async move {
                c.delete(&n, &m).await
            })
            .await
    }

    /// A file's metadata.
    pub async fn stat(&self, store: &str, name: &str, metadata: &Metadata) -> Result<FileMeta> {
        validate_name(name)?;
        let handle = self.host.file(store)?;
        let (n, m) = (name.to_string(), metadata.clone());
        handle
            .call(
                "stat",
                (n, m),
                |c, (n, m)| async move { c.stat(&n, &m).await },
            )
            .await
    }
}
