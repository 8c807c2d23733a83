//! `file.s3` against moto's S3 server at `PLINTH_TEST_S3` (default `http://127.0.0.1:19000`,
//! started by `scripts/services/s3.sh`). Every test works in a bucket of its own, created
//! here and deleted with its objects at the end.

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use plinth_core::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn endpoint() -> String {
    std::env::var("PLINTH_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:19000".into())
}

/// One unsigned path-style request to the test server (moto accepts any credentials, and
/// none): the status code and the body.
async fn raw_request(method: &str, path: &str) -> (u16, String) {
    let endpoint = endpoint();
    let host = endpoint
        .strip_prefix("http://")
        .unwrap_or(&endpoint)
        .trim_end_matches('/');
    let mut conn = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| {
            panic!("no S3 server at {endpoint} ({e}); start one with scripts/services/s3.sh")
        });
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    (status, text)
}

fn spec(bucket: &str) -> ComponentSpec {
    ComponentSpec::new("files", TYPE_NAME)
        .with_metadata(BUCKET, bucket)
        .with_metadata(ENDPOINT, endpoint())
        .with_metadata(REGION, "us-east-1")
        .with_metadata(ACCESS_KEY, "plinth")
        .with_metadata(SECRET_KEY, "plinth-secret")
        .with_metadata(FORCE_PATH_STYLE, "true")
}

/// A store over a fresh bucket.
struct Fixture {
    store: S3FileStore,
}

impl Fixture {
    async fn new() -> Self {
        let bucket = format!("plinth-test-{}", uuid::Uuid::new_v4());
        let (status, _) = raw_request("PUT", &format!("/{bucket}")).await;
        assert_eq!(status, 200, "creating bucket {bucket}");
        let config = S3FileConfig::from_spec(&spec(&bucket)).expect("config");
        let store = S3FileStore::new(&config).expect("client");
        store.init().await.expect("init");
        Self { store }
    }

    async fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        let body = futures::stream::iter([Ok(Bytes::copy_from_slice(data))]).boxed();
        self.store.put(name, &Metadata::new(), body).await
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>> {
        let stream = self.store.get(name, &Metadata::new()).await?;
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok(chunks.concat())
    }

    async fn list(&self, prefix: &str, page_size: u32, marker: &str) -> FileList {
        let req = ListRequest {
            prefix: prefix.into(),
            page_size,
            marker: marker.into(),
            ..Default::default()
        };
        self.store.list(req).await.expect("list")
    }

    /// Delete every object, then the bucket.
    async fn cleanup(self) {
        loop {
            let page = self.list("", 1000, "").await;
            for file in &page.files {
                self.store
                    .delete(&file.name, &Metadata::new())
                    .await
                    .expect("delete");
            }
            if page.files.is_empty() {
                break;
            }
        }
        let (status, _) = raw_request("DELETE", &format!("/{}", self.store.bucket())).await;
        assert_eq!(status, 204, "deleting bucket {}", self.store.bucket());
    }
}

fn kind<T>(result: Result<T>) -> Option<ErrorKind> {
    result.err().map(|e| e.kind())
}

#[test]
fn config_reads_dapr_and_layotto_keys() {
    let config = S3FileConfig::from_spec(
        &ComponentSpec::new("c", TYPE_NAME)
            .with_metadata(BUCKET, "b")
            .with_metadata(ENDPOINT, "minio:9000")
            .with_metadata(DISABLE_SSL, "true")
            .with_metadata("accessKeyID", "id")
            .with_metadata("accessKeySecret", "secret")
            .with_metadata(SESSION_TOKEN, "token"),
    )
    .expect("config");
    assert_eq!(config.endpoint.as_deref(), Some("http://b.minio:9000"));
    assert!(config.allow_http);
    assert!(!config.force_path_style);
    assert_eq!(config.region, DEFAULT_REGION);
    assert_eq!(
        config.credentials,
        Some(("id".into(), "secret".into(), Some("token".into())))
    );
    assert!(
        !format!("{config:?}").contains("secret"),
        "credentials are redacted"
    );

    let path_style = S3FileConfig::from_spec(
        &ComponentSpec::new("c", TYPE_NAME)
            .with_metadata(BUCKET, "b")
            .with_metadata(ENDPOINT, "https://s3.example.com/")
            .with_metadata(FORCE_PATH_STYLE, "true"),
    )
    .expect("config");
    assert_eq!(
        path_style.endpoint.as_deref(),
        Some("https://s3.example.com")
    );
    assert!(!path_style.allow_http);
    assert_eq!(path_style.credentials, None);
}

#[test]
fn config_errors_name_the_field() {
    let base = || ComponentSpec::new("files", TYPE_NAME).with_metadata(BUCKET, "b");
    for (spec, field) in [
        (ComponentSpec::new("files", TYPE_NAME), "metadata.bucket"),
        (base().with_metadata(BUCKET, "a/b"), "metadata.bucket"),
        (
            base().with_metadata(ENDPOINT, "ftp://x"),
            "metadata.endpoint",
        ),
        (
            base().with_metadata(FORCE_PATH_STYLE, "maybe"),
            "metadata.forcePathStyle",
        ),
        (base().with_metadata(ACCESS_KEY, "id"), "metadata.secretKey"),
        (base().with_metadata(SECRET_KEY, "s"), "metadata.accessKey"),
    ] {
        let err = factory(&spec).expect_err(field);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains(field), "{field}: {}", err.message());
        assert!(err.message().contains("\"files\""), "{}", err.message());
    }
}

#[test]
fn names_map_to_keys_unchanged_or_are_rejected() {
    assert_eq!(
        key("a/b c/ü.txt").map(|p| p.to_string()).ok(),
        Some("a/b c/ü.txt".into())
    );
    for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\u{1}b"] {
        assert_eq!(kind(key(bad)), Some(ErrorKind::InvalidArgument), "{bad:?}");
    }
}

#[tokio::test]
async fn small_and_multipart_uploads_read_back() {
    let fx = Fixture::new().await;
    fx.put("small.txt", b"hello").await.expect("put");
    assert_eq!(fx.get("small.txt").await.expect("get"), b"hello");
    fx.put("empty", b"").await.expect("put empty");
    assert_eq!(fx.get("empty").await.expect("get empty"), b"");

    // Three parts and a bit, in odd-sized chunks: the multipart path.
    let big: Vec<u8> = (0..PART_SIZE * 3 + 12_345)
        .map(|i| (i % 251) as u8)
        .collect();
    let chunks: Vec<Result<Bytes>> = big
        .chunks(700_001)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    fx.store
        .put(
            "dir/big.bin",
            &Metadata::new(),
            futures::stream::iter(chunks).boxed(),
        )
        .await
        .expect("multipart put");
    assert_eq!(fx.get("dir/big.bin").await.expect("get big"), big);
    let meta = fx
        .store
        .stat("dir/big.bin", &Metadata::new())
        .await
        .expect("stat");
    assert_eq!(meta.size, big.len() as u64);
    // A multipart ETag names its part count.
    let etag = &meta.metadata[ETAG][0];
    assert!(etag.ends_with("-4\""), "{etag}");

    // Replacing shrinks it.
    fx.put("dir/big.bin", b"small now").await.expect("replace");
    assert_eq!(fx.get("dir/big.bin").await.expect("get"), b"small now");
    fx.cleanup().await;
}

#[tokio::test]
async fn a_failed_upload_leaves_no_object() {
    let fx = Fixture::new().await;
    fx.put("kept", b"old").await.expect("put");
    for size in [10, PART_SIZE + 10] {
        let chunks: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from(vec![1u8; size])),
            Err(Error::unavailable("client went away")),
        ];
        let err = fx
            .store
            .put(
                "kept",
                &Metadata::new(),
                futures::stream::iter(chunks).boxed(),
            )
            .await
            .expect_err("failed upload");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(fx.get("kept").await.expect("get"), b"old", "size {size}");
    }
    let names: Vec<String> = fx
        .list("", 100, "")
        .await
        .files
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["kept"]);
    fx.cleanup().await;
}

#[tokio::test]
async fn list_pages_by_string_prefix_and_marker() {
    let fx = Fixture::new().await;
    for name in ["a/1", "a/2", "a/sub/3", "ab", "b"] {
        fx.put(name, name.as_bytes()).await.expect("put");
    }
    let names = |l: &FileList| l.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    let first = fx.list("a", 2, "").await;
    assert_eq!(names(&first), ["a/1", "a/2"]);
    assert!(first.truncated);
    assert_eq!(first.marker, "a/2");
    let second = fx.list("a", 2, &first.marker).await;
    assert_eq!(names(&second), ["a/sub/3", "ab"]);
    let third = fx.list("a", 2, &second.marker).await;
    assert!(third.files.is_empty() && !third.truncated, "{third:?}");
    assert_eq!(
        names(&fx.list("a/", 0, "").await),
        ["a/1", "a/2", "a/sub/3"]
    );
    let all = fx.list("", 10, "").await;
    assert_eq!(all.files.len(), 5);
    assert!(!all.truncated);
    assert_eq!(all.files[0].size, 3);
    assert!(all.files[0].metadata.contains_key(ETAG));
    assert!(chrono::DateTime::parse_from_rfc3339(&all.files[0].last_modified).is_ok());
    fx.cleanup().await;
}

#[tokio::test]
async fn missing_objects_are_not_found() {
    let fx = Fixture::new().await;
    let md = Metadata::new();
    assert_eq!(kind(fx.get("nope").await), Some(ErrorKind::NotFound));
    assert_eq!(
        kind(fx.store.stat("nope", &md).await),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        kind(fx.store.delete("nope", &md).await),
        Some(ErrorKind::NotFound)
    );
    fx.put("there", b"x").await.expect("put");
    fx.store.delete("there", &md).await.expect("delete");
    assert_eq!(
        kind(fx.store.delete("there", &md).await),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        kind(fx.put("a//b", b"x").await),
        Some(ErrorKind::InvalidArgument)
    );
    fx.cleanup().await;
}

#[tokio::test]
async fn a_missing_bucket_is_unavailable() {
    let bucket = format!("plinth-test-missing-{}", uuid::Uuid::new_v4());
    let config = S3FileConfig::from_spec(&spec(&bucket)).expect("config");
    let store = S3FileStore::new(&config).expect("client");
    let err = store.init().await.expect_err("no such bucket");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = S3FileConfig::from_spec(
        &spec("b").with_metadata(ENDPOINT, format!("http://127.0.0.1:{port}")),
    )
    .expect("config");
    let store = S3FileStore::new(&config).expect("client");
    // Retries are few and short: this fails well within the request bound.
    let err = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), store.init())
        .await
        .expect("init gives up within its bound")
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = fx_get_err(&store).await;
    assert_eq!(err, ErrorKind::Unavailable);
}

async fn fx_get_err(store: &S3FileStore) -> ErrorKind {
    match store.get("x", &Metadata::new()).await {
        Ok(_) => panic!("read from nowhere"),
        Err(e) => e.kind(),
    }
}
