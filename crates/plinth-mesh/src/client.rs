//! Connections to peer sidecars: one HTTP/2 connection per instance, multiplexed, made on
//! first use and again after it breaks, over mTLS or plain TCP.
//!
//! hyper-util's pooled client keys connections by URI authority only; the mesh needs each
//! connection bound to the identity the peer must prove (its app id), and HTTP/2 needs only
//! one connection per peer, so this keeps the connection itself.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use plinth_core::{Error, Result};
use tokio::net::TcpStream;

use crate::io::Coalesce;
use crate::tls::{Identity, MeshTls};

/// A request or response body the mesh carries: buffered for invocations read whole,
/// streamed for those passed through and for proxied gRPC.
pub type Body = plinth_runtime::app::HttpBody;

/// A boxed body error.
pub type BoxError = plinth_runtime::app::passthrough::BoxError;

pub use plinth_runtime::app::passthrough::full;

/// How long making a connection (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How sidecars reach each other.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Plain TCP (`h2c`).
    Plain,
    /// Mutual TLS.
    Tls(MeshTls),
}

/// Why a request did not get an answer.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made: the request never left, so it is safe to retry.
    Connect(Error),
    /// The request may have reached the peer.
    Sent(Error),
}

impl SendError {
    pub(crate) fn into_error(self) -> Error {
        match self {
            SendError::Connect(e) | SendError::Sent(e) => e,
        }
    }
}

/// The connection to one peer sidecar.
#[derive(Debug)]
pub(crate) struct PeerConn {
    addr: SocketAddr,
    /// Who the peer must prove to be (mTLS).
    expected: Option<Identity>,
    /// The live connection's sender (cloned per request: HTTP/2 multiplexes).
    sender: std::sync::Mutex<Option<SendRequest<Body>>>,
    /// Held while connecting, so that concurrent first calls make one connection.
    connecting: tokio::sync::Mutex<()>,
}

impl PeerConn {
    pub(crate) fn new(addr: SocketAddr, expected: Option<Identity>) -> Self {
        Self {
            addr,
            expected,
            sender: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn live(&self) -> Option<SendRequest<Body>> {
        let slot = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    fn forget(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// A sender on a live connection, connecting when there is none.
    async fn sender(&self, transport: &Transport) -> Result<SendRequest<Body>, SendError> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let _connecting = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(transport))
            .await
            .map_err(|_| {
                SendError::Connect(Error::unavailable(format!(
                    "connecting to the sidecar at {} timed out",
                    self.addr
                )))
            })??;
        *self.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self, transport: &Transport) -> Result<SendRequest<Body>, SendError> {
        let fail = |what: String| SendError::Connect(Error::unavailable(what));
        let tcp = TcpStream::connect(self.addr).await.map_err(|e| {
            fail(format!(
                "cannot connect to the sidecar at {}: {e}",
                self.addr
            ))
        })?;
        let _ = tcp.set_nodelay(true);
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            // Fixed, generous windows: adaptive sizing pings the peer to measure bandwidth,
            // work per request that sidecars on one network do not need.
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20);
        match transport {
            Transport::Plain => {
                let (sender, conn) = builder
                    .handshake(TokioIo::new(Coalesce::new(tcp)))
                    .await
                    .map_err(|e| fail(format!("HTTP/2 with the sidecar at {}: {e}", self.addr)))?;
                spawn_conn(self.addr, conn);
                Ok(sender)
            }
            Transport::Tls(tls) => {
                let Some(expected) = &self.expected else {
                    return Err(fail(format!(
                        "no identity is expected of the sidecar at {}",
                        self.addr
                    )));
                };
                let stream = tls
                    .connect(tcp, expected)
                    .await
                    .map_err(SendError::Connect)?;
                let (sender, conn) = builder
                    .handshake(TokioIo::new(Coalesce::new(stream)))
                    .await
                    .map_err(|e| fail(format!("HTTP/2 with the sidecar at {}: {e}", self.addr)))?;
                spawn_conn(self.addr, conn);
                Ok(sender)
            }
        }
    }

    /// Send one request and wait for the response head.
    pub(crate) async fn send(
        &self,
        transport: &Transport,
        req: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        let sender = self.ready(transport).await?;
        self.send_on(sender, req).await
    }

    /// A sender ready for one more request: connected (or connecting now) and open. A
    /// failure here means no request left.
    pub(crate) async fn ready(
        &self,
        transport: &Transport,
    ) -> Result<SendRequest<Body>, SendError> {
        let mut sender = self.sender(transport).await?;
        if let Err(e) = sender.ready().await {
            self.forget();
            return Err(SendError::Connect(Error::unavailable(format!(
                "the connection to the sidecar at {} closed: {e}",
                self.addr
            ))));
        }
        Ok(sender)
    }

    /// Send one request on `sender` (from [`ready`](Self::ready)) and wait for the
    /// response head.
    pub(crate) async fn send_on(
        &self,
        mut sender: SendRequest<Body>,
        req: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        sender.send_request(req).await.map_err(|e| {
            // A stream the peer refused, or a request not yet written, never reached the
            // app: retrying it elsewhere is safe whatever the verb.
            let unsent = e.is_canceled() || is_refused_stream(&e);
            let err = Error::unavailable(format!("calling the sidecar at {}: {e}", self.addr));
            if unsent {
                SendError::Connect(err)
            } else {
                SendError::Sent(err)
            }
        })
    }
}

/// Whether the peer refused the stream (HTTP/2 `REFUSED_STREAM`): it did not process the
/// request. hyper does not expose h2's error type, so the reason is read from the chain's
/// text.
fn is_refused_stream(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if s.to_string().contains("REFUSED_STREAM") || s.to_string().contains("refused stream") {
            return true;
        }
        source = s.source();
    }
    false
}

fn spawn_conn<T>(
    addr: SocketAddr,
    conn: hyper::client::conn::http2::Connection<T, Body, TokioExecutor>,
) where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(peer = %addr, error = %e, "mesh connection ended");
        }
    });
}
