//! A test app speaking HTTP, as Dapr's HTTP apps do: it answers `GET /dapr/subscribe` with a
//! configurable list, records every other request (events, invocations, binding events) on
//! a channel, and answers each with a scriptable handler.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request the app received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Seen {
    /// The body as JSON (events are CloudEvents).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {:?}", self.path, self.body))
    }

    /// A header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the app answers: status, extra headers, body.
pub(crate) type Answer = (u16, Vec<(&'static str, String)>, String);

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

struct State {
    subscriptions: serde_json::Value,
    handler: Mutex<Handler>,
    tx: mpsc::UnboundedSender<Seen>,
}

/// The running app.
pub(crate) struct HttpApp {
    pub(crate) port: u16,
    state: Arc<State>,
    rx: mpsc::UnboundedReceiver<Seen>,
}

impl HttpApp {
    /// Start an app listing `subscriptions` and answering 200 with an empty body.
    pub(crate) async fn start(subscriptions: serde_json::Value) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            subscriptions,
            handler: Mutex::new(Arc::new(|_: &Seen| (200, Vec::new(), String::new()))),
            tx,
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the app");
        let port = listener.local_addr().expect("app address").port();
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move {
                    if method == Method::GET && uri.path() == "/dapr/subscribe" {
                        return (
                            StatusCode::OK,
                            [("content-type", "application/json".to_string())],
                            state.subscriptions.to_string(),
                        )
                            .into_response();
                    }
                    let seen = Seen {
                        method,
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or_default().to_string(),
                        headers,
                        body,
                    };
                    let handler = state
                        .handler
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    let (status, extra, body) = handler(&seen);
                    let _ = state.tx.send(seen);
                    let mut response =
                        (StatusCode::from_u16(status).expect("a status"), body).into_response();
                    for (k, v) in extra {
                        response
                            .headers_mut()
                            .insert(k, v.parse().expect("a header value"));
                    }
                    response
                }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, state, rx }
    }

    /// Answer every request through `f`.
    pub(crate) fn answer(&self, f: impl Fn(&Seen) -> Answer + Send + Sync + 'static) {
        *self
            .state
            .handler
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(f);
    }

    /// The next request, within the test's bound.
    pub(crate) async fn next(&mut self) -> Seen {
        tokio::time::timeout(super::support::WAIT, self.rx.recv())
            .await
            .expect("the app got no request in time")
            .expect("the app stopped")
    }

    /// The next request for `path`, skipping others.
    pub(crate) async fn next_at(&mut self, path: &str) -> Seen {
        loop {
            let seen = self.next().await;
            if seen.path == path {
                return seen;
            }
        }
    }
}
