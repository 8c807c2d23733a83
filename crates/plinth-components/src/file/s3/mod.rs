//! `file.s3`: files as objects in one bucket of Amazon S3 or an S3-compatible store (MinIO,
//! Ceph, OSS's S3 endpoint, moto).
//!
//! Data layout: a file named `a/b.txt` is the object with key `a/b.txt` in the configured
//! bucket; there are no directory objects. Uploads of up to one part (5 MiB) are one PUT;
//! larger ones are multipart uploads of 5 MiB parts, at most [`UPLOAD_CONCURRENCY`] parts in
//! flight, so memory stays bounded whatever the file's size. S3 makes an object visible only
//! when its PUT or multipart upload completes, so readers never see a partial file; a
//! failed or abandoned multipart upload is aborted.
//!
//! Every request has a bounded time ([`REQUEST_TIMEOUT`]; a download's stream instead must
//! deliver each chunk within it) and at most [`MAX_RETRIES`] retries, and a backend that
//! cannot be reached, refuses the credentials or lacks the bucket is UNAVAILABLE.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    Attribute, BackoffConfig, ClientOptions, GetOptions, ObjectMeta, ObjectStore, PutPayload,
    RetryConfig, WriteMultipart,
};
use plinth_core::component::file::{
    ByteStream, FileInfo, FileList, FileMeta, FileStore, ListRequest,
};
use plinth_core::component::{Component, Instance};
use plinth_core::{ComponentSpec, Error, Metadata, Result};

use crate::util::rfc3339;

mod config;
#[cfg(test)]
mod tests;

pub use config::{
    ACCESS_KEY, BUCKET, DEFAULT_REGION, DISABLE_SSL, ENDPOINT, FORCE_PATH_STYLE, INSECURE_SSL,
    REGION, S3FileConfig, SECRET_KEY, SESSION_TOKEN,
};

/// The type name this component registers under.
pub const TYPE_NAME: &str = "file.s3";

/// The longest one request may take; for a download, the longest wait for its next chunk.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of a failed request (connection errors, 5xx, throttling) before giving up.
pub const MAX_RETRIES: usize = 2;
/// The size of a multipart upload's parts (S3's minimum), and the most an upload buffers
/// before it switches from a single PUT to a multipart upload.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts of one upload in flight at once; an upload holds at most this many parts plus one.
pub const UPLOAD_CONCURRENCY: usize = 2;
/// The page size when a list request leaves it at 0 (S3's maximum).
const DEFAULT_PAGE_SIZE: usize = 1000;
/// The metadata key of an object's entity tag in `stat` and `list`, as Layotto names it.
pub const ETAG: &str = "ETag";

/// Build a `file.s3` store from its metadata.
pub fn factory(spec: &ComponentSpec) -> Result<Instance> {
    let config = S3FileConfig::from_spec(spec)?;
    let store = S3FileStore::new(&config)
        .map_err(|e| spec.invalid("metadata", format!("the S3 client does not build: {e}")))?;
    Ok(Instance::File(Arc::new(store)))
}

/// A file store in an S3 bucket.
#[derive(Debug)]
pub struct S3FileStore {
    client: AmazonS3,
    bucket: String,
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("file {name:?} does not exist"))
}

/// Map an object_store error of an operation on `name` (`what` says which operation).
fn s3_error(err: object_store::Error, what: &str, name: &str) -> Error {
    use object_store::Error as E;
    let message = format!("{what} {name:?}: {err}");
    match err {
        E::NotFound { .. } => not_found(name),
        E::InvalidPath { .. } => Error::invalid_argument(message),
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            Error::failed_precondition(message)
        }
        E::NotSupported { .. } | E::NotImplemented | E::UnknownConfigurationKey { .. } => {
            Error::unimplemented(message)
        }
        // Refused credentials, a missing bucket, connection failures, throttling and 5xx:
        // the backend is not usable as configured, which is what UNAVAILABLE tells the
        // runtime (start the component DOWN and retry).
        other => Error::unavailable(message).with_source(other),
    }
}

fn timed_out(what: &str, name: &str) -> Error {
    Error::unavailable(format!(
        "{what} {name:?}: S3 did not answer within {}s",
        REQUEST_TIMEOUT.as_secs()
    ))
}

/// Run one backend call with [`REQUEST_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    name: &str,
    call: impl Future<Output = object_store::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| s3_error(e, what, name)),
        Err(_) => Err(timed_out(what, name)),
    }
}

/// An object key from a file name: the name itself, when S3 and object_store can address
/// it unchanged.
fn key(name: &str) -> Result<Path> {
    let invalid = || {
        Error::invalid_argument(format!(
            "file name {name:?} is not a valid object key (no empty, '.' or '..' segments, no \
             leading or trailing '/', no control characters)"
        ))
    };
    let path = Path::parse(name).map_err(|_| invalid())?;
    // `parse` strips leading and trailing slashes; such names would alias others.
    if name.is_empty() || path.as_ref() != name {
        return Err(invalid());
    }
    Ok(path)
}

fn file_info(meta: ObjectMeta) -> FileInfo {
    let mut metadata = Metadata::new();
    if let Some(etag) = meta.e_tag {
        metadata.insert(ETAG.to_owned(), etag);
    }
    FileInfo {
        name: meta.location.as_ref().to_owned(),
        size: meta.size,
        last_modified: rfc3339(meta.last_modified),
        metadata,
    }
}

/// Aborts a multipart upload that did not complete, including when the upload's future is
/// dropped halfway, so that no parts are left behind to be billed.
struct Upload {
    writer: Option<WriteMultipart>,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let (Some(writer), Ok(runtime)) =
            (self.writer.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                if let Err(err) = writer.abort().await {
                    tracing::warn!(error = %err, "aborting an abandoned multipart upload failed");
                }
            });
        }
    }
}

impl S3FileStore {
    /// A store for the bucket the config names. Building connects to nothing; `init` checks
    /// that the bucket answers.
    pub fn new(config: &S3FileConfig) -> object_store::Result<Self> {
        let options = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // Downloads stream for as long as they take; each call and each chunk is bounded
            // by REQUEST_TIMEOUT instead.
            .with_timeout_disabled()
            .with_allow_http(config.allow_http)
            .with_allow_invalid_certificates(config.insecure_ssl);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: MAX_RETRIES,
            retry_timeout: REQUEST_TIMEOUT,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_client_options(options)
            .with_retry(retry)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(!config.force_path_style);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some((id, secret, token)) = &config.credentials {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
            if let Some(token) = token {
                builder = builder.with_token(token);
            }
        }
        Ok(Self {
            client: builder.build()?,
            bucket: config.bucket.clone(),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// One list request for a single key: it needs the bucket, the credentials and the
    /// ListBucket permission that `list` needs, and transfers next to nothing.
    async fn probe(&self) -> Result<()> {
        let opts = PaginatedListOptions {
            max_keys: Some(1),
            ..Default::default()
        };
        bounded(
            "listing",
            &self.bucket,
            self.client.list_paginated(None, opts),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context("bucket"))
    }

    /// Upload a body larger than one part, starting with the part already read.
    async fn put_multipart(
        &self,
        name: &str,
        path: &Path,
        buffered: Vec<Bytes>,
        mut body: ByteStream,
    ) -> Result<()> {
        let upload = bounded("uploading", name, self.client.put_multipart(path)).await?;
        let mut guard = Upload {
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
        };
        let Some(writer) = guard.writer.as_mut() else {
            return Err(Error::internal("the multipart upload vanished"));
        };
        let streamed = async {
            for chunk in buffered {
                writer.put(chunk);
            }
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| e.context(format!("uploading file {name:?}")))?;
                // Back pressure: never more than UPLOAD_CONCURRENCY parts in flight.
                bounded(
                    "uploading",
                    name,
                    writer.wait_for_capacity(UPLOAD_CONCURRENCY),
                )
                .await?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        let Some(writer) = guard.writer.take() else {
            return Err(Error::internal("the multipart upload vanished"));
        };
        if let Err(err) = streamed {
            // Abort before answering, so a failed upload has left nothing behind once the
            // caller hears of it.
            if let Err(abort) = bounded("aborting the upload of", name, writer.abort()).await {
                tracing::warn!(error = %abort, "aborting a failed multipart upload failed");
            }
            return Err(err);
        }
        // `finish` aborts the upload itself when completing fails.
        bounded("uploading", name, writer.finish()).await?;
        Ok(())
    }
}

#[async_trait]
impl Component for S3FileStore {
    async fn init(&self) -> Result<()> {
        self.probe().await
    }

    async fn ping(&self) -> Result<()> {
        self.probe().await
    }
}

#[async_trait]
impl FileStore for S3FileStore {
    async fn put(&self, name: &str, _metadata: &Metadata, mut body: ByteStream) -> Result<()> {
        let path = key(name)?;
        // Read up to one part: a small file is a single PUT, a larger one a multipart upload.
        let mut buffered = Vec::new();
        let mut size = 0;
        while size < PART_SIZE {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|e| e.context(format!("uploading file {name:?}")))?;
                    size += chunk.len();
                    buffered.push(chunk);
                }
                None => {
                    let payload: PutPayload = buffered.into_iter().collect();
                    bounded("uploading", name, self.client.put(&path, payload)).await?;
                    return Ok(());
                }
            }
        }
        self.put_multipart(name, &path, buffered, body).await
    }

    async fn get(&self, name: &str, _metadata: &Metadata) -> Result<ByteStream> {
        let path = key(name)?;
        let result = bounded("reading", name, self.client.get(&path)).await?;
        let name = name.to_owned();
        let chunks = result.into_stream();
        // Each chunk must arrive within REQUEST_TIMEOUT: a stalled download fails instead of
        // hanging, whatever the file's size.
        let stream = futures::stream::try_unfold((chunks, name), |(mut chunks, name)| async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, chunks.next()).await {
                Err(_) => Err(timed_out("reading", &name)),
                Ok(None) => Ok(None),
                Ok(Some(Err(e))) => Err(s3_error(e, "reading", &name)),
                Ok(Some(Ok(chunk))) => Ok(Some((chunk, (chunks, name)))),
            }
        });
        Ok(stream.boxed())
    }

    async fn list(&self, req: ListRequest) -> Result<FileList> {
        if req.prefix.starts_with('/') || req.prefix.contains('\\') {
            return Err(Error::invalid_argument(format!(
                "prefix {:?} must be relative and use / to separate directories",
                req.prefix
            )));
        }
        let page_size = match usize::try_from(req.page_size) {
            Ok(0) | Err(_) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(DEFAULT_PAGE_SIZE),
        };
        // S3 lists every key that starts with the prefix, recursively and sorted, after
        // `start-after`: exactly the file API's listing.
        let opts = PaginatedListOptions {
            offset: (!req.marker.is_empty()).then(|| req.marker.clone()),
            max_keys: Some(page_size),
            ..Default::default()
        };
        let prefix = (!req.prefix.is_empty()).then_some(req.prefix.as_str());
        let page = bounded(
            "listing",
            &req.prefix,
            self.client.list_paginated(prefix, opts),
        )
        .await?;
        let mut files: Vec<FileInfo> = page.result.objects.into_iter().map(file_info).collect();
        files.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let marker = files.last().map(|f| f.name.clone()).unwrap_or_default();
        Ok(FileList {
            files,
            marker,
            truncated: page.page_token.is_some(),
        })
    }

    async fn delete(&self, name: &str, _metadata: &Metadata) -> Result<()> {
        let path = key(name)?;
        // S3 deletes a missing key without complaint; the file API reports it as NotFound.
        bounded("deleting", name, self.client.head(&path)).await?;
        bounded("deleting", name, self.client.delete(&path)).await
    }

    async fn stat(&self, name: &str, _metadata: &Metadata) -> Result<FileMeta> {
        let path = key(name)?;
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        let result = bounded("reading", name, self.client.get_opts(&path, options)).await?;
        let mut metadata = std::collections::HashMap::new();
        if let Some(etag) = &result.meta.e_tag {
            metadata.insert(ETAG.to_owned(), vec![etag.clone()]);
        }
        for (attribute, value) in &result.attributes {
            let key = match attribute {
                Attribute::ContentType => "Content-Type".to_owned(),
                Attribute::ContentEncoding => "Content-Encoding".to_owned(),
                Attribute::ContentDisposition => "Content-Disposition".to_owned(),
                Attribute::ContentLanguage => "Content-Language".to_owned(),
                Attribute::CacheControl => "Cache-Control".to_owned(),
                Attribute::StorageClass => "Storage-Class".to_owned(),
                // User metadata (x-amz-meta-*) under its own name.
                Attribute::Metadata(key) => key.to_string(),
                _ => continue,
            };
            metadata.insert(key, vec![value.to_string()]);
        }
        Ok(FileMeta {
            size: result.meta.size,
            last_modified: rfc3339(result.meta.last_modified),
            metadata,
        })
    }
}
