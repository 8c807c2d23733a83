//! The file conformance suite: the same cases against every file store of this crate.
//!
//! `file.local` runs in a fresh directory under the system's temp dir. `file.s3` runs against
//! the S3 server at `PLINTH_TEST_S3` (default `http://127.0.0.1:19000`, moto, started by
//! `scripts/services/s3.sh`) and fails when it is missing; every case creates a bucket of
//! its own and deletes it, with its objects, at the end. Every case writes under a fresh uuid
//! prefix and deletes what it wrote.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use plinth_core::component::Instance;
use plinth_core::component::file::{ByteStream, FileInfo, FileList, FileStore, ListRequest};
use plinth_core::{ComponentSpec, Error, ErrorKind, Metadata};

use crate::common::{build, s3_endpoint, s3_request};

/// The size of the large file the streaming case moves in and out.
const LARGE: u64 = 50 * 1024 * 1024 + 12_345;
/// The size of the chunks the streaming case generates.
const CHUNK: usize = 64 * 1024;

/// A store under test and what to remove when the case is done.
struct Subject {
    store: Arc<dyn FileStore>,
    teardown: Teardown,
}

enum Teardown {
    Dir(PathBuf),
    Bucket(String),
}

impl Subject {
    async fn teardown(self) {
        match self.teardown {
            Teardown::Dir(dir) => {
                std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {dir:?}: {e}"))
            }
            Teardown::Bucket(bucket) => {
                // The case deleted its files; a leftover makes this fail, as it should.
                let status = s3_request("DELETE", &format!("/{bucket}")).await;
                assert_eq!(status, 204, "deleting bucket {bucket} (is it empty?)");
            }
        }
    }
}

async fn local() -> Subject {
    let dir = std::env::temp_dir().join(format!("plinth-conformance-{}", uuid::Uuid::new_v4()));
    let spec = ComponentSpec::new("conformance", "file.local")
        .with_metadata("rootPath", dir.to_string_lossy());
    Subject {
        store: instance(spec).await,
        teardown: Teardown::Dir(dir),
    }
}

async fn s3() -> Subject {
    let bucket = format!("plinth-conformance-{}", uuid::Uuid::new_v4());
    let status = s3_request("PUT", &format!("/{bucket}")).await;
    assert_eq!(status, 200, "creating bucket {bucket}");
    let spec = ComponentSpec::new("conformance", "file.s3")
        .with_metadata("bucket", &bucket)
        .with_metadata("endpoint", s3_endpoint())
        .with_metadata("region", "us-east-1")
        .with_metadata("accessKey", "plinth")
        .with_metadata("secretKey", "plinth-secret")
        .with_metadata("forcePathStyle", "true");
    Subject {
        store: instance(spec).await,
        teardown: Teardown::Bucket(bucket),
    }
}

async fn instance(spec: ComponentSpec) -> Arc<dyn FileStore> {
    match build(spec).await {
        Instance::File(store) => store,
        other => panic!("not a file store: {}", other.kind()),
    }
}

/// A fresh directory-like prefix for one case.
fn prefix() -> String {
    format!("plinth-conformance-{}/", uuid::Uuid::new_v4())
}

fn body(data: impl Into<Bytes>) -> ByteStream {
    futures::stream::iter([Ok(data.into())]).boxed()
}

async fn put(store: &dyn FileStore, name: &str, data: &[u8]) {
    store
        .put(name, &Metadata::new(), body(Bytes::copy_from_slice(data)))
        .await
        .unwrap_or_else(|e| panic!("put {name}: {e}"));
}

async fn get(store: &dyn FileStore, name: &str) -> Vec<u8> {
    let stream = store
        .get(name, &Metadata::new())
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"));
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("read");
    chunks.concat()
}

async fn list(store: &dyn FileStore, prefix: &str, page_size: u32, marker: &str) -> FileList {
    let req = ListRequest {
        prefix: prefix.into(),
        page_size,
        marker: marker.into(),
        metadata: Metadata::new(),
    };
    store.list(req).await.expect("list")
}

fn names(files: &[FileInfo]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}

async fn delete(store: &dyn FileStore, name: &str) {
    store
        .delete(name, &Metadata::new())
        .await
        .unwrap_or_else(|e| panic!("delete {name}: {e}"));
}

/// Delete every file under `p`.
async fn clean(store: &dyn FileStore, p: &str) {
    let page = list(store, p, 1000, "").await;
    for file in &page.files {
        delete(store, &file.name).await;
    }
    assert!(!page.truncated, "a case leaves fewer than 1000 files");
}

fn kind<T>(result: Result<T, Error>) -> Option<ErrorKind> {
    result.err().map(|e| e.kind())
}

async fn put_get_replace(store: &dyn FileStore, p: &str) {
    let name = format!("{p}dir/sub/file.txt");
    put(store, &name, b"first").await;
    assert_eq!(get(store, &name).await, b"first");
    // Replacing, with a shorter body, leaves only the new content.
    put(store, &name, b"2nd").await;
    assert_eq!(get(store, &name).await, b"2nd");
    // Many small chunks make one file.
    let chunks: Vec<Result<Bytes, Error>> =
        (0..100u8).map(|i| Ok(Bytes::from(vec![i; 1000]))).collect();
    let many = format!("{p}many");
    store
        .put(
            &many,
            &Metadata::new(),
            futures::stream::iter(chunks).boxed(),
        )
        .await
        .expect("put many");
    let read = get(store, &many).await;
    assert_eq!(read.len(), 100_000);
    assert!(
        read.chunks(1000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| usize::from(b) == i))
    );
    // An empty file exists and is empty.
    let empty = format!("{p}empty");
    put(store, &empty, b"").await;
    assert_eq!(get(store, &empty).await, b"");
    // A failed upload leaves the previous content.
    let failing = futures::stream::iter([
        Ok(Bytes::from_static(b"partial")),
        Err(Error::unavailable("the client went away")),
    ])
    .boxed();
    assert!(store.put(&name, &Metadata::new(), failing).await.is_err());
    assert_eq!(get(store, &name).await, b"2nd");
    clean(store, p).await;
}

async fn list_pages(store: &dyn FileStore, p: &str) {
    let mut expected: Vec<String> = ["a/1", "a/2", "a/b/3", "a/b/4", "a/c", "ab", "b"]
        .iter()
        .map(|n| format!("{p}{n}"))
        .collect();
    // Written out of order; listed sorted.
    for name in expected.iter().rev() {
        put(store, name, name.as_bytes()).await;
    }
    expected.sort();

    // Everything, two at a time, following the markers.
    let mut seen = Vec::new();
    let mut marker = String::new();
    loop {
        let page = list(store, p, 2, &marker).await;
        assert!(page.files.len() <= 2, "{:?}", names(&page.files));
        seen.extend(page.files.iter().map(|f| f.name.clone()));
        if !page.truncated {
            break;
        }
        assert_eq!(page.files.len(), 2, "a truncated page is full");
        assert_eq!(
            Some(&page.marker),
            seen.last(),
            "the marker is the last name"
        );
        marker = page.marker;
        assert!(
            seen.len() <= expected.len(),
            "paging does not end: {seen:?}"
        );
    }
    assert_eq!(seen, expected);

    // A page size of 0 means the store's default, which holds these few.
    let all = list(store, p, 0, "").await;
    assert_eq!(
        names(&all.files),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(!all.truncated);

    // Prefixes are plain string prefixes, recursive: a directory, or part of a name.
    let dir = list(store, &format!("{p}a/"), 100, "").await;
    let want: Vec<String> = ["a/1", "a/2", "a/b/3", "a/b/4", "a/c"]
        .iter()
        .map(|n| format!("{p}{n}"))
        .collect();
    assert_eq!(
        names(&dir.files),
        want.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let partial = list(store, &format!("{p}a"), 100, "").await;
    assert_eq!(partial.files.len(), 6, "{:?}", names(&partial.files));
    let page = list(store, &format!("{p}a/b"), 100, &format!("{p}a/b/3")).await;
    assert_eq!(names(&page.files), [format!("{p}a/b/4").as_str()]);
    let none = list(store, &format!("{p}nothing-here/"), 100, "").await;
    assert!(none.files.is_empty() && !none.truncated);

    // Listed sizes are the files' sizes.
    let b = all
        .files
        .iter()
        .find(|f| f.name == format!("{p}b"))
        .expect("b");
    assert_eq!(b.size, format!("{p}b").len() as u64);
    clean(store, p).await;
}

async fn delete_removes(store: &dyn FileStore, p: &str) {
    let (gone, kept) = (format!("{p}gone"), format!("{p}kept"));
    put(store, &gone, b"x").await;
    put(store, &kept, b"y").await;
    delete(store, &gone).await;
    assert_eq!(
        kind(store.get(&gone, &Metadata::new()).await),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        kind(store.stat(&gone, &Metadata::new()).await),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(names(&list(store, p, 100, "").await.files), [kept.as_str()]);
    assert_eq!(get(store, &kept).await, b"y");
    // Deleted, it can be written again.
    put(store, &gone, b"back").await;
    assert_eq!(get(store, &gone).await, b"back");
    clean(store, p).await;
}

async fn stat_meta(store: &dyn FileStore, p: &str) {
    let name = format!("{p}stat/file.bin");
    put(store, &name, &[7; 1234]).await;
    let meta = store.stat(&name, &Metadata::new()).await.expect("stat");
    assert_eq!(meta.size, 1234);
    let modified = chrono::DateTime::parse_from_rfc3339(&meta.last_modified)
        .unwrap_or_else(|e| panic!("{:?} is not RFC 3339: {e}", meta.last_modified));
    assert!(modified.timestamp() > 0);
    // Listing agrees with stat.
    let listed = list(store, &name, 10, "").await;
    assert_eq!(names(&listed.files), [name.as_str()]);
    assert_eq!(listed.files[0].size, 1234);
    assert_eq!(listed.files[0].last_modified, meta.last_modified);
    // Replacing changes the size.
    put(store, &name, b"short").await;
    assert_eq!(
        store
            .stat(&name, &Metadata::new())
            .await
            .expect("stat")
            .size,
        5
    );
    clean(store, p).await;
}

async fn missing_objects(store: &dyn FileStore, p: &str) {
    let md = Metadata::new();
    for name in [format!("{p}missing"), format!("{p}no/such/dir/file")] {
        assert_eq!(
            kind(store.get(&name, &md).await),
            Some(ErrorKind::NotFound),
            "{name}"
        );
        assert_eq!(
            kind(store.stat(&name, &md).await),
            Some(ErrorKind::NotFound),
            "{name}"
        );
        assert_eq!(
            kind(store.delete(&name, &md).await),
            Some(ErrorKind::NotFound),
            "{name}"
        );
    }
    // A "directory" (a prefix of other names) is not a file.
    put(store, &format!("{p}dir/file"), b"x").await;
    let dir = format!("{p}dir");
    assert_eq!(kind(store.get(&dir, &md).await), Some(ErrorKind::NotFound));
    assert_eq!(kind(store.stat(&dir, &md).await), Some(ErrorKind::NotFound));
    assert_eq!(
        kind(store.delete(&dir, &md).await),
        Some(ErrorKind::NotFound)
    );
    clean(store, p).await;
}

/// FNV-1a, 64 bits: a checksum with no dependency, fed chunk by chunk.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// `LARGE` deterministic bytes (xorshift), generated a chunk at a time as they are consumed.
fn large_body() -> ByteStream {
    futures::stream::unfold(
        (0u64, 0x9e37_79b9_7f4a_7c15u64),
        |(sent, mut state)| async move {
            if sent >= LARGE {
                return None;
            }
            let len = (LARGE - sent).min(CHUNK as u64) as usize;
            let mut chunk = Vec::with_capacity(len + 8);
            while chunk.len() < len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.extend_from_slice(&state.to_le_bytes());
            }
            chunk.truncate(len);
            Some((Ok(Bytes::from(chunk)), (sent + len as u64, state)))
        },
    )
    .boxed()
}

async fn large_file_streams(store: &dyn FileStore, p: &str) {
    let mut expected = Fnv::new();
    let mut chunks = large_body();
    while let Some(chunk) = chunks.next().await {
        expected.update(&chunk.expect("generated"));
    }

    let name = format!("{p}large.bin");
    store
        .put(&name, &Metadata::new(), large_body())
        .await
        .expect("put the large file");
    assert_eq!(
        store
            .stat(&name, &Metadata::new())
            .await
            .expect("stat")
            .size,
        LARGE
    );

    let mut stream = store.get(&name, &Metadata::new()).await.expect("get");
    let (mut read, mut actual, mut largest) = (0u64, Fnv::new(), 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("read the large file");
        read += chunk.len() as u64;
        largest = largest.max(chunk.len());
        actual.update(&chunk);
    }
    assert_eq!(read, LARGE);
    assert_eq!(actual.0, expected.0, "checksum of what was read back");
    // Streamed, not read whole.
    assert!(largest <= 16 * 1024 * 1024, "a chunk of {largest} bytes");
    delete(store, &name).await;
}

macro_rules! conformance {
    ($store:ident: $($case:ident),* $(,)?) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let subject = super::$store().await;
                    super::$case(subject.store.as_ref(), &super::prefix()).await;
                    subject.teardown().await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($store:ident),*) => {
        $(
            conformance!($store:
                put_get_replace,
                list_pages,
                delete_removes,
                stat_meta,
                missing_objects,
                large_file_streams,
            );
        )*
    };
}

suite!(local, s3);
