use std::time::Duration;

use bytes::Bytes;
use plinth_core::ErrorKind;

use super::*;

/// A store in a fresh directory under the system's temp dir, removed on drop.
struct Fixture {
    store: LocalFileStore,
}

impl Fixture {
    async fn new() -> Self {
        let root = std::env::temp_dir().join(format!("plinth-file-local-{}", uuid::Uuid::new_v4()));
        let store = LocalFileStore::new(LocalFileConfig { root_path: root });
        assert!(store.init().await.is_ok());
        Self { store }
    }

    async fn put(&self, name: &str, data: &str) -> Result<()> {
        let body = futures::stream::iter([Ok(Bytes::from(data.to_owned()))]).boxed();
        self.store.put(name, &Metadata::new(), body).await
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>> {
        let stream = self.store.get(name, &Metadata::new()).await?;
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok(chunks.concat())
    }

    async fn list(&self, prefix: &str, page_size: u32, marker: &str) -> Result<FileList> {
        let req = ListRequest {
            prefix: prefix.into(),
            page_size,
            marker: marker.into(),
            ..Default::default()
        };
        self.store.list(req).await
    }

    /// Every entry of a directory, hidden ones included.
    fn entries(&self, dir: &str) -> Vec<String> {
        let Ok(read) = std::fs::read_dir(self.store.root().join(dir)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = read
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.store.root());
    }
}

fn kind<T>(result: Result<T>) -> Option<ErrorKind> {
    result.err().map(|e| e.kind())
}

#[tokio::test]
async fn put_get_replace_in_chunks() {
    let fx = Fixture::new().await;
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    let parts: Vec<Result<Bytes>> = big
        .chunks(7000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    assert!(
        fx.store
            .put(
                "dir/sub/big.bin",
                &Metadata::new(),
                futures::stream::iter(parts).boxed()
            )
            .await
            .is_ok()
    );

    let stream = fx.store.get("dir/sub/big.bin", &Metadata::new()).await;
    let chunks: Vec<Bytes> = match stream {
        Ok(stream) => stream.try_collect().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    assert!(chunks.len() >= 4 && chunks.iter().all(|c| c.len() <= CHUNK_SIZE));
    assert_eq!(chunks.concat(), big);

    assert!(fx.put("dir/sub/big.bin", "small").await.is_ok());
    assert_eq!(
        fx.get("dir/sub/big.bin").await.ok(),
        Some(b"small".to_vec())
    );
    assert_eq!(
        fx.entries("dir/sub"),
        ["big.bin"],
        "no temporary file is left"
    );
}

#[tokio::test]
async fn a_failed_upload_leaves_nothing_behind() {
    let fx = Fixture::new().await;
    assert!(fx.put("f.txt", "old").await.is_ok());
    let body = futures::stream::iter([
        Ok(Bytes::from("new")),
        Err(Error::unavailable("client went away")),
    ]);
    let err = fx.store.put("f.txt", &Metadata::new(), body.boxed()).await;
    assert_eq!(kind(err), Some(ErrorKind::Unavailable));
    assert_eq!(fx.get("f.txt").await.ok(), Some(b"old".to_vec()));
    assert_eq!(fx.entries(""), ["f.txt"]);
}

#[tokio::test]
async fn an_abandoned_upload_leaves_nothing_behind() {
    let fx = Arc::new(Fixture::new().await);
    let (started, wait_started) = tokio::sync::oneshot::channel::<()>();
    // One chunk, then a signal that it was written, then nothing ever again.
    let stalled = futures::stream::once(async move {
        let _ = started.send(());
        futures::future::pending::<Result<Bytes>>().await
    });
    let body = futures::stream::iter([Ok(Bytes::from("partial"))])
        .chain(stalled)
        .boxed();
    let upload = {
        let fx = Arc::clone(&fx);
        tokio::spawn(async move { fx.store.put("f.txt", &Metadata::new(), body).await })
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), wait_started)
            .await
            .is_ok()
    );
    assert_eq!(
        fx.entries("").len(),
        1,
        "the temporary file exists while uploading"
    );
    upload.abort();
    let _ = upload.await;
    assert!(fx.entries("").is_empty());
    assert_eq!(kind(fx.get("f.txt").await), Some(ErrorKind::NotFound));
}

#[tokio::test]
async fn names_that_could_escape_the_root_are_rejected() {
    let fx = Fixture::new().await;
    let bad = [
        "",
        "../x",
        "a/../../x",
        "/etc/passwd",
        "a\\..\\b",
        "a\0b",
        "a//b",
        "./a",
        "a/",
        "..",
        ".f.tmp-123",
    ];
    for name in bad {
        assert_eq!(
            kind(fx.put(name, "x").await),
            Some(ErrorKind::InvalidArgument),
            "put {name:?}"
        );
        assert_eq!(
            kind(fx.get(name).await),
            Some(ErrorKind::InvalidArgument),
            "get {name:?}"
        );
        let md = Metadata::new();
        assert_eq!(
            kind(fx.store.stat(name, &md).await),
            Some(ErrorKind::InvalidArgument)
        );
        assert_eq!(
            kind(fx.store.delete(name, &md).await),
            Some(ErrorKind::InvalidArgument)
        );
    }
    for prefix in ["../", "/etc/", "a/../", "a\\b", "a//"] {
        assert_eq!(
            kind(fx.list(prefix, 10, "").await),
            Some(ErrorKind::InvalidArgument),
            "{prefix:?}"
        );
    }
    assert!(fx.entries("").is_empty());
}

#[tokio::test]
async fn list_pages_through_files_under_a_prefix() {
    let fx = Fixture::new().await;
    for name in [
        "c.txt",
        "b/e/f.txt",
        "a.txt",
        "b/d.txt",
        "bb.txt",
        "b/c.txt",
    ] {
        assert!(fx.put(name, name).await.is_ok(), "{name}");
    }
    assert!(std::fs::write(fx.store.root().join(".a.txt.tmp-0000"), "x").is_ok());

    let mut names = Vec::new();
    let mut marker = String::new();
    let mut pages = 0;
    loop {
        let page = fx.list("", 2, &marker).await;
        let Ok(page) = page else {
            panic!("list failed: {page:?}");
        };
        pages += 1;
        names.extend(page.files.iter().map(|f| f.name.clone()));
        marker = page.marker;
        if !page.truncated {
            break;
        }
    }
    assert_eq!(
        names,
        [
            "a.txt",
            "b/c.txt",
            "b/d.txt",
            "b/e/f.txt",
            "bb.txt",
            "c.txt"
        ]
    );
    assert_eq!(pages, 3);

    let under = |list: Result<FileList>| -> Vec<String> {
        list.map(|l| l.files.into_iter().map(|f| f.name).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        under(fx.list("b/", 10, "").await),
        ["b/c.txt", "b/d.txt", "b/e/f.txt"]
    );
    assert_eq!(
        under(fx.list("b", 10, "").await),
        ["b/c.txt", "b/d.txt", "b/e/f.txt", "bb.txt"]
    );
    assert_eq!(under(fx.list("b/e/", 10, "").await), ["b/e/f.txt"]);
    assert!(under(fx.list("nothing/here/", 10, "").await).is_empty());

    let page = fx.list("b/", 10, "").await.unwrap_or_default();
    let first = page.files.first().cloned().unwrap_or_default();
    assert_eq!(first.size, 7);
    assert!(chrono::DateTime::parse_from_rfc3339(&first.last_modified).is_ok());
    assert!(!page.truncated);
    assert_eq!(page.marker, "b/e/f.txt");
}

#[tokio::test]
async fn stat_and_delete() {
    let fx = Fixture::new().await;
    let md = Metadata::new();
    assert!(fx.put("d/f.txt", "12345").await.is_ok());
    let meta = fx.store.stat("d/f.txt", &md).await;
    assert!(
        meta.as_ref()
            .is_ok_and(|m| m.size == 5 && m.metadata.is_empty())
    );
    let modified = meta.map(|m| m.last_modified).unwrap_or_default();
    assert!(chrono::DateTime::parse_from_rfc3339(&modified).is_ok() && modified.ends_with('Z'));

    assert_eq!(
        kind(fx.store.stat("d", &md).await),
        Some(ErrorKind::NotFound),
        "a directory"
    );
    assert_eq!(
        kind(fx.store.stat("d/f.txt/x", &md).await),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(kind(fx.get("d").await), Some(ErrorKind::NotFound));
    assert_eq!(
        kind(fx.store.delete("d", &md).await),
        Some(ErrorKind::NotFound)
    );
    assert!(fx.store.delete("d/f.txt", &md).await.is_ok());
    assert_eq!(
        kind(fx.store.delete("d/f.txt", &md).await),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        kind(fx.store.stat("d/f.txt", &md).await),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(kind(fx.get("d/f.txt").await), Some(ErrorKind::NotFound));
}

#[tokio::test]
async fn a_name_that_is_a_directory_cannot_be_written() {
    let fx = Fixture::new().await;
    assert!(fx.put("d/f.txt", "x").await.is_ok());
    assert_eq!(
        kind(fx.put("d", "x").await),
        Some(ErrorKind::FailedPrecondition)
    );
    assert_eq!(
        kind(fx.put("d/f.txt/g", "x").await),
        Some(ErrorKind::FailedPrecondition)
    );
    assert_eq!(fx.entries("d"), ["f.txt"]);
}

#[test]
fn config_defaults_and_overrides() {
    let spec = ComponentSpec::new("files", TYPE_NAME);
    assert_eq!(
        LocalFileConfig::from_spec(&spec).ok(),
        Some(LocalFileConfig {
            root_path: PathBuf::from(DEFAULT_ROOT_PATH)
        })
    );
    let spec = spec.with_metadata(ROOT_PATH, "/srv/files");
    assert_eq!(
        LocalFileConfig::from_spec(&spec).map(|c| c.root_path).ok(),
        Some(PathBuf::from("/srv/files"))
    );
}
