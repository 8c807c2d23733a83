//! A local HTTP/1.1 server for `bindings.http` to call. It records every request and answers
//! by path:
//!
//! - `/status/NNN`: status NNN, body `status NNN`;
//! - `/hold`: counts the request as held and answers 200 `released` once [`Upstream::release`]
//!   is called;
//! - anything else: 200, body `echo:` + the request body, header `x-upstream: <name>`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::sync::{mpsc, watch};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

/// A running test HTTP server on 127.0.0.1, stopped on drop.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Recorded>,
    held: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Bind 127.0.0.1:0 and serve; `name` comes back in the `x-upstream` header.
    pub(crate) async fn start(name: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let (tx, requests) = mpsc::unbounded_channel();
        let held = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let (held2, name) = (held.clone(), name.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (tx, held, released, name) =
                    (tx.clone(), held2.clone(), released.clone(), name.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (tx, held, mut released, name) =
                        (tx.clone(), held.clone(), released.clone(), name.clone());
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let query = req.uri().query().unwrap_or_default().to_string();
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_string(),
                                    v.to_str().unwrap_or_default().to_string(),
                                )
                            })
                            .collect();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().to_vec())
                            .unwrap_or_default();
                        let _ = tx.send(Recorded {
                            method,
                            path: path.clone(),
                            query,
                            headers,
                            body: body.clone(),
                        });
                        let response = if let Some(code) = path.strip_prefix("/status/") {
                            let code: u16 = code.parse().unwrap_or(500);
                            Response::builder()
                                .status(code)
                                .body(Full::new(Bytes::from(format!("status {code}"))))
                        } else if path == "/hold" {
                            held.fetch_add(1, Ordering::SeqCst);
                            let _ = released.wait_for(|r| *r).await;
                            Response::builder()
                                .status(200)
                                .body(Full::new(Bytes::from_static(b"released")))
                        } else {
                            let mut echo = b"echo:".to_vec();
                            echo.extend_from_slice(&body);
                            Response::builder()
                                .status(200)
                                .header("x-upstream", name)
                                .body(Full::new(Bytes::from(echo)))
                        };
                        Ok::<_, Infallible>(response.expect("response"))
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            held,
            release,
            task,
        }
    }

    /// How many requests `/hold` is holding.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// The base URL, `http://127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request the server received, waiting at most `timeout`.
    pub(crate) async fn next_request(&mut self, timeout: Duration) -> Recorded {
        tokio::time::timeout(timeout, self.requests.recv())
            .await
            .unwrap_or_else(|_| panic!("no request reached the upstream within {timeout:?}"))
            .expect("upstream stopped")
    }

    /// Whether a request arrived (without waiting).
    pub(crate) fn try_next_request(&mut self) -> Option<Recorded> {
        self.requests.try_recv().ok()
    }

    /// Wait until `n` requests to `/hold` are being held, at most `timeout`.
    pub(crate) async fn wait_held(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.held.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} requests held after {timeout:?}",
                self.held.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Answer every held request, and every later one to `/hold` at once.
    pub(crate) fn release(&self) {
        self.release.send_replace(true);
    }
}
