//! Test support shared by Plinth's crates (a dev-dependency only).
//!
//! [`FaultProxy`] stands between a client and a server on loopback and can cut every
//! connection and refuse new ones, then let them through again: a network outage, or a
//! server (a broker, an app) that died and came back, as the client sees it, without
//! stopping the server.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy on 127.0.0.1 to one upstream address.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: String,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    accept: Option<JoinHandle<()>>,
    conns: Vec<JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Listen on an ephemeral port of 127.0.0.1 and forward to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> Self {
        Self::start_on(0, upstream).await
    }

    /// Listen on `port` of 127.0.0.1 (0: ephemeral) and forward to `upstream`.
    pub async fn start_on(port: u16, upstream: impl Into<String>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind the fault proxy on port {port}: {e}"));
        let addr = listener.local_addr().expect("the proxy's address");
        let this = Self {
            addr,
            upstream: upstream.into(),
            state: Arc::default(),
        };
        this.serve(listener);
        this
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Close every open connection (both sides) and refuse new ones until
    /// [`FaultProxy::restore`]; returns how many connections were open.
    pub fn cut(&self) -> usize {
        let mut state = lock(&self.state);
        if let Some(accept) = state.accept.take() {
            accept.abort();
        }
        abort_all(&mut state.conns)
    }

    /// Close every open connection but keep accepting new ones; returns how many were open.
    pub fn reset(&self) -> usize {
        abort_all(&mut lock(&self.state).conns)
    }

    /// Accept connections again, on the same port, after [`FaultProxy::cut`].
    pub async fn restore(&self) {
        if lock(&self.state).accept.is_some() {
            return;
        }
        // The port was ours a moment ago; nothing else binds it on a test machine but a
        // stray ephemeral connection, so retry briefly.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind the fault proxy on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let state = Arc::clone(&self.state);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = server.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut state = lock(&state);
                state.conns.retain(|c| !c.is_finished());
                state.conns.push(conn);
            }
        });
        lock(&self.state).accept = Some(accept);
    }
}

/// Abort every connection task; returns how many were still open.
fn abort_all(conns: &mut Vec<JoinHandle<()>>) -> usize {
    let open = conns.iter().filter(|c| !c.is_finished()).count();
    for conn in conns.drain(..) {
        conn.abort();
    }
    open
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
