use std::collections::HashMap;

use pb::runtime_client::RuntimeClient;
use plinth_proto::runtime::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use crate::backend::{s3_endpoint, s3_request};
use crate::common::{Plinth, scratch, unique, write};

type Client = RuntimeClient<Channel>;

const STORE: &str = "filestore";
const CHUNK: usize = 64 * 1024;

fn file_request(name: &str) -> pb::FileRequest {
    pb::FileRequest {
        store_name: STORE.into(),
        name: name.into(),
        metadata: HashMap::new(),
    }
}

/// Upload `data` in `CHUNK`-sized messages; the first names the store and file.
async fn put(c: &mut Client, name: &str, data: &[u8]) -> Result<(), tonic::Status> {
    let mut messages: Vec<pb::PutFileRequest> = data
        .chunks(CHUNK)
        .map(|chunk| pb::PutFileRequest {
            data: chunk.to_vec(),
            ..Default::default()
        })
        .collect();
    if messages.is_empty() {
        messages.push(pb::PutFileRequest::default());
    }
    messages[0].store_name = STORE.into();
    messages[0].name = name.into();
    c.put_file(tokio_stream::iter(messages)).await.map(|_| ())
}

async fn get(c: &mut Client, name: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = c
        .get_file(pb::GetFileRequest {
            store_name: STORE.into(),
            name: name.into(),
            metadata: HashMap::new(),
        })
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert!(
            chunk.data.len() <= CHUNK,
            "a GetFile message of {} bytes",
            chunk.data.len()
        );
        data.extend_from_slice(&chunk.data);
    }
    Ok(data)
}

async fn list(
    c: &mut Client,
    prefix: &str,
    page_size: i32,
    marker: &str,
) -> Result<pb::ListFileResp, tonic::Status> {
    c.list_file(pb::ListFileRequest {
        request: Some(file_request(prefix)),
        page_size,
        marker: marker.into(),
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_large_file_streams_in_and_out_unchanged() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let name = format!("{}/big.bin", unique("dir"));
    // 5 MiB, not a multiple of the chunk size, with content that shows reordering.
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 12345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    put(&mut c, &name, &data).await.expect("put");
    let back = get(&mut c, &name).await.expect("get");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the file came back different");

    let meta = c
        .get_file_meta(pb::GetFileMetaRequest {
            request: Some(file_request(&name)),
        })
        .await
        .expect("meta")
        .into_inner();
    assert_eq!(meta.size, data.len() as i64);
    assert!(meta.last_modified.ends_with('Z'), "{}", meta.last_modified);

    // The embedded store writes below the process's working directory.
    let on_disk =
        std::fs::read(plinth.dir.join(".plinth/files").join(&name)).expect("file on disk");
    assert_eq!(on_disk.len(), data.len());

    // Replacing with an empty file works too.
    put(&mut c, &name, b"").await.expect("put empty");
    assert!(get(&mut c, &name).await.expect("get empty").is_empty());
    let meta = c
        .get_file_meta(pb::GetFileMetaRequest {
            request: Some(file_request(&name)),
        })
        .await
        .expect("meta")
        .into_inner();
    assert_eq!(meta.size, 0);
}

#[tokio::test]
async fn list_pages_with_marker() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let dir = unique("list");
    let mut expected: Vec<String> = (0..25).map(|i| format!("{dir}/f{i:02}.txt")).collect();
    let mut sizes = HashMap::new();
    for (i, name) in expected.iter().enumerate() {
        let content = "x".repeat(i + 1);
        put(&mut c, name, content.as_bytes()).await.expect("put");
        sizes.insert(name.clone(), content.len() as i64);
    }
    // A file outside the prefix is not listed.
    put(&mut c, &format!("{}/x.txt", unique("elsewhere")), b"x")
        .await
        .expect("put elsewhere");
    expected.sort();

    let mut seen = Vec::new();
    let mut marker = String::new();
    let mut pages = Vec::new();
    loop {
        let page = list(&mut c, &format!("{dir}/"), 10, &marker)
            .await
            .expect("list");
        assert!(page.files.len() <= 10);
        pages.push((page.files.len(), page.is_truncated));
        seen.extend(page.files.iter().map(|f| f.file_name.clone()));
        for f in &page.files {
            assert_eq!(
                Some(&f.size),
                sizes.get(&f.file_name),
                "size of {}",
                f.file_name
            );
        }
        if !page.is_truncated {
            break;
        }
        assert_eq!(
            page.marker,
            page.files
                .last()
                .map(|f| f.file_name.clone())
                .unwrap_or_default()
        );
        marker = page.marker;
        assert!(pages.len() < 10, "paging does not end");
    }
    assert_eq!(pages, [(10, true), (10, true), (5, false)]);
    assert_eq!(seen, expected);

    // Page size 0 means the default, which holds all 25.
    let all = list(&mut c, &format!("{dir}/"), 0, "")
        .await
        .expect("list default");
    assert_eq!(all.files.len(), 25);
    assert!(!all.is_truncated);

    let err = list(&mut c, &format!("{dir}/"), -1, "")
        .await
        .expect_err("negative page size");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn delete_then_get_is_not_found() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let name = format!("{}.txt", unique("gone"));
    put(&mut c, &name, b"short-lived").await.expect("put");
    assert_eq!(get(&mut c, &name).await.expect("get"), b"short-lived");
    c.del_file(pb::DelFileRequest {
        request: Some(file_request(&name)),
    })
    .await
    .expect("delete");
    let err = get(&mut c, &name).await.expect_err("get after delete");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = c
        .get_file_meta(pb::GetFileMetaRequest {
            request: Some(file_request(&name)),
        })
        .await
        .expect_err("meta after delete");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = c
        .del_file(pb::DelFileRequest {
            request: Some(file_request(&name)),
        })
        .await
        .expect_err("delete twice");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn names_that_escape_the_store_are_rejected() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    // Something the escapes would reach if they were followed.
    std::fs::write(plinth.dir.join("outside.txt"), b"outside").expect("write outside");
    for name in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "../../outside.txt",
        "..",
        "a/./b",
        "",
    ] {
        let err = put(&mut c, name, b"x").await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "put {name:?}: {err:?}");
        let err = get(&mut c, name).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "get {name:?}: {err:?}");
        let err = c
            .get_file_meta(pb::GetFileMetaRequest {
                request: Some(file_request(name)),
            })
            .await
            .expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "meta {name:?}: {err:?}");
        let err = c
            .del_file(pb::DelFileRequest {
                request: Some(file_request(name)),
            })
            .await
            .expect_err(name);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "delete {name:?}: {err:?}"
        );
    }
    for prefix in ["../", "/etc/", "a/../../"] {
        let err = list(&mut c, prefix, 10, "").await.expect_err(prefix);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "list {prefix:?}: {err:?}"
        );
    }
    assert_eq!(
        std::fs::read(plinth.dir.join("outside.txt")).expect("still there"),
        b"outside"
    );
    assert!(!plinth.dir.join("x").exists() && !plinth.dir.join(".plinth/x").exists());

    let err = c
        .list_file(pb::ListFileRequest {
            request: None,
            page_size: 10,
            marker: String::new(),
        })
        .await
        .expect_err("no request");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .get_file(pb::GetFileRequest {
            store_name: "nope".into(),
            name: "a.txt".into(),
            metadata: HashMap::new(),
        })
        .await
        .expect_err("unknown store");
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// The same API over `file.s3`, against the S3 test server, in a bucket of the test's own.
#[tokio::test]
async fn file_s3_through_the_api() {
    let bucket = unique("plinth-api");
    assert_eq!(
        s3_request("PUT", &format!("/{bucket}")),
        200,
        "create bucket"
    );
    let dir = scratch("file-s3");
    write(
        &dir,
        "resources/files.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {STORE}
spec:
  type: file.s3
  metadata:
    - name: bucket
      value: {bucket}
    - name: endpoint
      value: {endpoint}
    - name: region
      value: us-east-1
    - name: accessKey
      value: plinth
    - name: secretKey
      value: plinth-secret
    - name: forcePathStyle
      value: \"true\"
",
            endpoint = s3_endpoint()
        ),
    );
    let plinth = Plinth::start_ready_with(&["--resources-path", "resources"], Some(&dir)).await;
    let mut c = plinth.client().await;

    // Larger than one part: a multipart upload, streamed back in API-sized messages.
    let data: Vec<u8> = (0..6 * 1024 * 1024 + 777u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let names = ["d/a.bin", "d/b.txt", "d/c/e.txt", "other.txt"];
    put(&mut c, names[0], &data).await.expect("put large");
    for name in &names[1..] {
        put(&mut c, name, name.as_bytes()).await.expect("put");
    }
    let back = get(&mut c, names[0]).await.expect("get");
    assert!(back == data, "the file came back different");

    let meta = c
        .get_file_meta(pb::GetFileMetaRequest {
            request: Some(file_request(names[0])),
        })
        .await
        .expect("meta")
        .into_inner();
    assert_eq!(meta.size, data.len() as i64);
    assert!(meta.last_modified.ends_with('Z'), "{}", meta.last_modified);
    let etag = meta
        .response
        .and_then(|r| r.metadata.get("ETag").cloned())
        .expect("an ETag");
    assert_eq!(etag.value.len(), 1, "{etag:?}");

    let first = list(&mut c, "d/", 2, "").await.expect("list");
    let first_names: Vec<_> = first.files.iter().map(|f| f.file_name.as_str()).collect();
    assert_eq!(first_names, ["d/a.bin", "d/b.txt"]);
    assert!(first.is_truncated);
    assert_eq!(first.files[0].size, data.len() as i64);
    let rest = list(&mut c, "d/", 2, &first.marker).await.expect("list");
    let rest_names: Vec<_> = rest.files.iter().map(|f| f.file_name.as_str()).collect();
    assert_eq!(rest_names, ["d/c/e.txt"]);
    assert!(!rest.is_truncated);

    for name in names {
        c.del_file(pb::DelFileRequest {
            request: Some(file_request(name)),
        })
        .await
        .expect("delete");
    }
    let err = get(&mut c, names[0]).await.expect_err("get after delete");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = c
        .del_file(pb::DelFileRequest {
            request: Some(file_request(names[1])),
        })
        .await
        .expect_err("delete twice");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    drop(plinth);
    assert_eq!(
        s3_request("DELETE", &format!("/{bucket}")),
        204,
        "delete bucket"
    );
}
