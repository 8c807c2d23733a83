//! `file.local`: files in a local directory.
//!
//! Data layout: a file named `a/b.txt` is the file `<rootPath>/a/b.txt`; directories are
//! created as needed. An upload writes `.<name>.tmp-<uuid>` beside its target and renames it
//! into place once complete, so readers never see a partial file; an upload that fails or is
//! abandoned removes its temporary file. Listings show regular files only (no symbolic
//! links, no uploads in progress). Empty directories are left behind by deletes, because
//! removing them could race with an upload creating a file in them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use plinth_core::component::file::{
    ByteStream, FileInfo, FileList, FileMeta, FileStore, ListRequest,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Metadata, Result};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::util::rfc3339_system;

mod config;
mod names;
#[cfg(test)]
mod tests;

pub use config::{DEFAULT_ROOT_PATH, LocalFileConfig, ROOT_PATH};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "file.local";

/// The size of the chunks `get` streams.
const CHUNK_SIZE: usize = 64 * 1024;
/// The page size when a list request leaves it at 0.
const DEFAULT_PAGE_SIZE: usize = 1000;

/// Build a `file.local` store from its metadata (`rootPath`).
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = LocalFileConfig::from_spec(spec)?;
    Ok(Instance::File(Arc::new(LocalFileStore::new(config))))
}

/// A file store in a local directory.
#[derive(Debug)]
pub struct LocalFileStore {
    root: PathBuf,
}

/// Removes an upload's temporary file unless the upload completed, including when the
/// upload's future is dropped halfway.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the file may not have been created yet.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("file {name:?} does not exist"))
}

/// Map an error of reading or deleting `name`: any way of not being a file is NotFound.
fn read_error(err: std::io::Error, name: &str) -> Error {
    use std::io::ErrorKind as Io;
    match err.kind() {
        Io::NotFound | Io::NotADirectory | Io::IsADirectory => not_found(name),
        _ => Error::from(err).context(format!("file {name:?}")),
    }
}

fn write_error(err: std::io::Error, name: &str) -> Error {
    use std::io::ErrorKind as Io;
    match err.kind() {
        Io::NotADirectory | Io::IsADirectory | Io::DirectoryNotEmpty | Io::AlreadyExists => {
            Error::failed_precondition(format!(
                "file {name:?} conflicts with an existing file or directory"
            ))
        }
        _ => Error::from(err).context(format!("writing file {name:?}")),
    }
}

impl LocalFileStore {
    /// A store over the directory the config names.
    pub fn new(config: LocalFileConfig) -> Self {
        Self {
            root: config.root_path,
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        names::check_name(name)?;
        Ok(self.root.join(name))
    }

    async fn write(&self, name: &str, target: &Path, mut body: ByteStream) -> Result<()> {
        let (Some(dir), Some(file_name)) = (target.parent(), target.file_name()) else {
            return Err(Error::invalid_argument(format!(
                "file name {name:?} has no file part"
            )));
        };
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| write_error(e, name))?;
        let mut temp = TempFile {
            path: dir.join(names::temp_name(&file_name.to_string_lossy())),
            armed: true,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.path)
            .await
            .map_err(|e| write_error(e, name))?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| e.context(format!("uploading file {name:?}")))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| write_error(e, name))?;
        }
        // tokio writes in the background; flushing waits for every write to land.
        file.flush().await.map_err(|e| write_error(e, name))?;
        drop(file);
        tokio::fs::rename(&temp.path, target)
            .await
            .map_err(|e| write_error(e, name))?;
        temp.armed = false;
        Ok(())
    }
}

/// Every regular file under `root/start` as a `/`-separated path relative to `root`, whose
/// path starts with `prefix`.
fn walk(root: &Path, start: &str, prefix: &str) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut dirs = vec![start.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(root.join(&dir)) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            // Names that no request could address are not listed.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if names::is_temp(&name) || name.contains('\\') {
                continue;
            }
            let path = format!("{dir}{name}");
            let kind = entry.file_type()?;
            if kind.is_dir() {
                let path = format!("{path}/");
                if path.starts_with(prefix) || prefix.starts_with(&path) {
                    dirs.push(path);
                }
            } else if kind.is_file() && path.starts_with(prefix) {
                found.push(path);
            }
        }
    }
    Ok(found)
}

fn info(root: &Path, name: String) -> std::io::Result<FileInfo> {
    let meta = std::fs::metadata(root.join(&name))?;
    Ok(FileInfo {
        name,
        size: meta.len(),
        last_modified: rfc3339_system(meta.modified()),
        metadata: Metadata::new(),
    })
}

/// One page of the files under `prefix`, sorted by name, after `marker`.
fn list_page(root: &Path, req: &ListRequest) -> Result<FileList> {
    let start = req
        .prefix
        .rsplit_once('/')
        .map(|(dirs, _)| format!("{dirs}/"))
        .unwrap_or_default();
    let mut names = walk(root, &start, &req.prefix)?;
    names.retain(|n| *n > req.marker);
    names.sort_unstable();
    let page_size = match usize::try_from(req.page_size) {
        Ok(0) | Err(_) => DEFAULT_PAGE_SIZE,
        Ok(size) => size,
    };
    let truncated = names.len() > page_size;
    names.truncate(page_size);
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        match info(root, name) {
            Ok(file) => files.push(file),
            // Deleted since the walk.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    let marker = files.last().map(|f| f.name.clone()).unwrap_or_default();
    Ok(FileList {
        files,
        marker,
        truncated,
    })
}

#[async_trait]
impl Component for LocalFileStore {
    async fn init(&self) -> Result<()> {
        tokio::fs::create_dir_all(&self.root).await.map_err(|e| {
            Error::from(e).context(format!("creating the root directory {:?}", self.root))
        })
    }

    async fn ping(&self) -> Result<()> {
        match tokio::fs::metadata(&self.root).await {
            Ok(meta) if meta.is_dir() => Ok(()),
            _ => Err(Error::unavailable(format!(
                "the root directory {:?} is missing",
                self.root
            ))),
        }
    }
}

#[async_trait]
impl FileStore for LocalFileStore {
    async fn put(&self, name: &str, _metadata: &Metadata, body: ByteStream) -> Result<()> {
        let target = self.path(name)?;
        self.write(name, &target, body).await
    }

    async fn get(&self, name: &str, _metadata: &Metadata) -> Result<ByteStream> {
        let path = self.path(name)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| read_error(e, name))?;
        let meta = file.metadata().await.map_err(|e| read_error(e, name))?;
        if !meta.is_file() {
            return Err(not_found(name));
        }
        Ok(ReaderStream::with_capacity(file, CHUNK_SIZE)
            .map_err(Error::from)
            .boxed())
    }

    async fn list(&self, req: ListRequest) -> Result<FileList> {
        names::check_prefix(&req.prefix)?;
        let root = self.root.clone();
        // Directory walks are blocking calls; keep them off the async workers.
        tokio::task::spawn_blocking(move || list_page(&root, &req))
            .await
            .map_err(|e| Error::internal(format!("listing files failed: {e}")))?
    }

    async fn delete(&self, name: &str, _metadata: &Metadata) -> Result<()> {
        let path = self.path(name)?;
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| read_error(e, name))
    }

    async fn stat(&self, name: &str, _metadata: &Metadata) -> Result<FileMeta> {
        let path = self.path(name)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| read_error(e, name))?;
        if !meta.is_file() {
            return Err(not_found(name));
        }
        Ok(FileMeta {
            size: meta.len(),
            last_modified: rfc3339_system(meta.modified()),
            metadata: Default::default(),
        })
    }
}
