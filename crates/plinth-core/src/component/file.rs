//! File and object stores, streamed in chunks.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::Component;
use crate::{Metadata, Result};

/// A stream of file chunks.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// One listed file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's name relative to the store.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, RFC 3339.
    pub last_modified: String,
    /// Store-specific metadata.
    pub metadata: Metadata,
}

/// A page of a listing.
#[derive(Debug, Clone, Default)]
pub struct FileList {
    /// The files of this page, sorted by name.
    pub files: Vec<FileInfo>,
    /// Pass as `marker` to get the next page.
    pub marker: String,
    /// Whether more files follow.
    pub truncated: bool,
}

/// A list request.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// The directory or prefix to list; empty lists the store's root.
    pub prefix: String,
    /// At most this many files (the building block has validated it and set a default).
    pub page_size: u32,
    /// Start after this name.
    pub marker: String,
    /// Request metadata.
    pub metadata: Metadata,
}

/// File metadata.
#[derive(Debug, Clone, Default)]
pub struct FileMeta {
    /// Size in bytes.
    pub size: u64,
    /// Last modification, RFC 3339.
    pub last_modified: String,
    /// Store-specific metadata, possibly multi-valued.
    pub metadata: HashMap<String, Vec<String>>,
}

/// A file store. Names arrive validated by the building block (no `..`, no absolute paths).
#[async_trait]
pub trait FileStore: Component {
    /// Write a file from a stream of chunks, replacing any previous content. A failed upload
    /// leaves no partial file visible.
    async fn put(&self, name: &str, metadata: &Metadata, body: ByteStream) -> Result<()>;

    /// Read a file as a stream of chunks; NotFound when it does not exist.
    async fn get(&self, name: &str, metadata: &Metadata) -> Result<ByteStream>;

    /// List files under a prefix, a page at a time.
    async fn list(&self, req: ListRequest) -> Result<FileList>;

    /// Delete a file; NotFound when it does not exist.
    async fn delete(&self, name: &str, metadata: &Metadata) -> Result<()>;

    /// A file's size, modification time and metadata; NotFound when it does not exist.
    async fn stat(&self, name: &str, metadata: &Metadata) -> Result<FileMeta>;
}
