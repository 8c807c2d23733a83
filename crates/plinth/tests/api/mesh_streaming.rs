//! Bodies stream through both sidecars: a Dapr HTTP invocation of another app's HTTP app is
//! passed through without either sidecar holding the request or the answer whole. Each
//! check would hang (and fail on its bound) if a sidecar buffered: the app answers only after
//! the client saw part of the answer, and the client sends the rest of its body only after
//! the app saw the first part.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::sync::{Notify, mpsc};

use crate::mesh::{Mesh, WAIT};

/// The sidecars' `--max-body-size`.
const LIMIT: usize = 1 << 20;

type Chunks = StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// A body the test feeds chunk by chunk.
fn chunked() -> (mpsc::Sender<Result<Frame<Bytes>, Infallible>>, Chunks) {
    let (tx, rx) = mpsc::channel(4);
    (
        tx,
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}

/// The byte at `i` of a download.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// What the app signals the test.
#[derive(Default)]
struct Signals {
    /// The app got the first chunk of an upload.
    first_chunk: Notify,
    /// The test saw the first chunk of the answer; the app may send the rest.
    release: Notify,
    /// Calls to `/flaky` so far.
    flaky: AtomicUsize,
}

/// The app behind the called sidecar:
/// - `POST /upload`: answers `len:N sum:S` once the whole body is in; it signals
///   `first_chunk` as soon as the first chunk arrives;
/// - `GET /download/N`: N bytes of [`pattern`], chunked (no length);
/// - `GET /trickle`: `first;` at once, then `rest` after `release`;
/// - `POST /flaky`: 503 on the first call, then echoes the body.
async fn app(signals: Arc<Signals>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let signals = signals.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let signals = signals.clone();
                async move { Ok::<_, Infallible>(route(req, signals).await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(text: impl Into<Bytes>) -> AppBody {
    http_body_util::Full::new(text.into()).boxed()
}

async fn route(req: Request<Incoming>, signals: Arc<Signals>) -> Response<AppBody> {
    let path = req.uri().path().to_string();
    if path == "/upload" {
        let mut body = req.into_body();
        let (mut len, mut sum, mut first) = (0usize, 0u64, true);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Response::builder()
                    .status(400)
                    .body(full("broken body"))
                    .expect("response");
            };
            if let Ok(data) = frame.into_data() {
                if first && !data.is_empty() {
                    first = false;
                    signals.first_chunk.notify_one();
                }
                len += data.len();
                sum += data.iter().map(|b| u64::from(*b)).sum::<u64>();
            }
        }
        return Response::new(full(format!("len:{len} sum:{sum}")));
    }
    if let Some(n) = path.strip_prefix("/download/") {
        let n: usize = n.parse().expect("a length");
        let (tx, body) = chunked();
        tokio::spawn(async move {
            let mut at = 0;
            while at < n {
                let end = (at + 64 * 1024).min(n);
                let chunk: Vec<u8> = (at..end).map(pattern).collect();
                if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                    return;
                }
                at = end;
            }
        });
        return Response::new(body.boxed());
    }
    if path == "/trickle" {
        let (tx, body) = chunked();
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                .await;
            signals.release.notified().await;
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"rest")))).await;
        });
        return Response::new(body.boxed());
    }
    if path == "/flaky" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if signals.flaky.fetch_add(1, Ordering::SeqCst) == 0 {
            return Response::builder()
                .status(503)
                .body(full("not yet"))
                .expect("response");
        }
        return Response::new(full(body));
    }
    Response::builder()
        .status(404)
        .body(full("no such route"))
        .expect("response")
}

/// An HTTP/1.1 connection to the calling sidecar's Dapr HTTP port.
async fn connect<B>(plinth: &crate::common::Plinth) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(plinth.dapr_http)
        .await
        .expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

#[tokio::test]
async fn bodies_stream_through_both_sidecars() {
    let mesh = Mesh::new("mesh-stream");
    let cfg = mesh.config("stream", "", "");
    let policy = mesh.resources(
        "policies",
        "apiVersion: plinth.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: store
spec:
  retry:
    maxRetries: 2
    nonIdempotent: true
    retryOn: [5xx]
",
    );
    let signals = Arc::new(Signals::default());
    let port = app(signals.clone()).await;
    let limit = LIMIT.to_string();
    let _callee = mesh.start("store", Some(port), &cfg, &["--max-body-size", &limit]);
    let caller = mesh.start(
        "front",
        None,
        &cfg,
        &[
            "--max-body-size",
            &limit,
            "--resources-path",
            policy.to_str().expect("path"),
        ],
    );

    // An answer eight times the body limit, chunked, arrives whole and in order.
    let mut client = connect::<http_body_util::Empty<Bytes>>(&caller).await;
    let n = 8 * LIMIT;
    let resp = client
        .send_request(
            Request::get(format!("/v1.0/invoke/store/method/download/{n}"))
                .header("host", "plinth")
                .body(http_body_util::Empty::new())
                .expect("request"),
        )
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    let got = bounded("the download", resp.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)));

    // The answer's first chunk reaches the client while the app still holds the rest.
    let resp = client
        .send_request(
            Request::get("/v1.0/invoke/store/method/trickle")
                .header("host", "plinth")
                .body(http_body_util::Empty::new())
                .expect("request"),
        )
        .await
        .expect("trickle");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = bounded("the first chunk", body.frame())
        .await
        .expect("a frame")
        .expect("data")
        .into_data()
        .expect("data");
    assert_eq!(first, Bytes::from_static(b"first;"));
    signals.release.notify_one();
    let rest = bounded("the rest", body.collect())
        .await
        .expect("rest")
        .to_bytes();
    assert_eq!(rest, Bytes::from_static(b"rest"));

    // The request's first chunk reaches the app before the client sends the rest.
    let mut client = connect::<Chunks>(&caller).await;
    let (tx, body) = chunked();
    let call = client.send_request(
        Request::post("/v1.0/invoke/store/method/upload")
            .header("host", "plinth")
            .body(body)
            .expect("request"),
    );
    let call = tokio::spawn(call);
    let half = vec![7u8; 300 * 1024];
    tx.send(Ok(Frame::data(Bytes::from(half.clone()))))
        .await
        .expect("send");
    bounded("the app's first chunk", signals.first_chunk.notified()).await;
    tx.send(Ok(Frame::data(Bytes::from(half.clone()))))
        .await
        .expect("send");
    drop(tx);
    let resp = bounded("the upload", call)
        .await
        .expect("join")
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        text,
        Bytes::from(format!("len:{} sum:{}", 2 * half.len(), 7 * 2 * half.len()))
    );

    // A chunked body that grows past the limit is refused with 413, and the app never
    // gets a whole body.
    let mut client = connect::<Chunks>(&caller).await;
    let (tx, body) = chunked();
    let call = tokio::spawn(
        client.send_request(
            Request::post("/v1.0/invoke/store/method/upload")
                .header("host", "plinth")
                .body(body)
                .expect("request"),
        ),
    );
    for _ in 0..3 {
        if tx
            .send(Ok(Frame::data(Bytes::from(vec![1u8; LIMIT / 2]))))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let resp = bounded("the refusal", call)
        .await
        .expect("join")
        .expect("an answer");
    assert_eq!(resp.status(), 413);

    // A declared length over the limit is refused before any of it is read.
    let resp = caller
        .dapr_http()
        .request(
            "POST",
            "/v1.0/invoke/store/method/upload",
            &[],
            "x".repeat(LIMIT + 1),
        )
        .await;
    assert_eq!(resp.status, 413, "{}", resp.text());

    // A small body is kept for a retry: the app's 503 is retried with the same body.
    let resp = caller
        .dapr_http()
        .request("POST", "/v1.0/invoke/store/method/flaky", &[], "again")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "again");
    assert_eq!(signals.flaky.load(Ordering::SeqCst), 2);
}
