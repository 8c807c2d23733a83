//! Test support shared by Plinth's crates (a dev-dependency only).
//!
//! [`FaultProxy`] stands between a client and a server on loopback and can cut every
//! connection and refuse new ones, then let them through again: a network outage, or a
//! server (a broker, an app) that died and came back, as the client sees it, without
//! stopping the server. It can also freeze its connections: they stay open but nothing
//! passes, a server that hangs or a network that drops every packet.
//!
//! [`TestPki`] makes a throwaway CA, server and client certificates (and an unrelated CA)
//! with the `openssl` command line, for TLS tests against private servers.

#![forbid(unsafe_code)]

mod pki;

pub use pki::{CertFiles, TestPki};

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP proxy on 127.0.0.1 to one upstream address.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: String,
    state: Arc<Mutex<State>>,
    /// While `true`, every connection holds what it reads, in both directions.
    frozen: watch::Sender<bool>,
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
            frozen: watch::channel(false).0,
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

    /// Freeze every connection, open or new, until [`FaultProxy::thaw`]: connections are
    /// still accepted and stay open, but nothing passes either way (bytes and ends of
    /// stream are held, not lost). A server that stopped answering, or a network that
    /// drops every packet, shorter than any keep-alive or heartbeat timeout.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Let through, in order, what [`FaultProxy::freeze`] held, and pass bytes again.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
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
        let frozen = self.frozen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let upstream = upstream.clone();
                let frozen = frozen.subscribe();
                let conn = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = server.set_nodelay(true);
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        // Ends when both sides closed, or at the first error of either.
                        let _ = tokio::try_join!(
                            pipe(client_read, server_write, frozen.clone()),
                            pipe(server_read, client_write, frozen),
                        );
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

/// Copy one direction until its end of stream (passed on as a shutdown), holding what was
/// read while the proxy is frozen.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return Err(io::ErrorKind::BrokenPipe.into()); // the proxy is gone
        }
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// An echo server on an ephemeral port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, data: &[u8]) {
        stream.write_all(data).await.expect("write");
        let mut buf = vec![0; data.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .expect("the echo in time")
            .expect("read");
        assert_eq!(buf, data);
    }

    #[tokio::test]
    async fn cut_refuses_and_restore_lets_through() {
        let proxy = FaultProxy::start(echo().await.to_string()).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut stream, b"before").await;
        assert_eq!(proxy.cut(), 1);
        let mut buf = [0; 1];
        assert_eq!(stream.read(&mut buf).await.unwrap_or(0), 0, "closed");
        assert!(TcpStream::connect(proxy.addr()).await.is_err(), "refused");
        proxy.restore().await;
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut stream, b"after").await;
    }

    #[tokio::test]
    async fn freeze_holds_bytes_until_thaw() {
        let proxy = FaultProxy::start(echo().await.to_string()).await;
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut open, b"before").await;
        proxy.freeze();
        let mut new = TcpStream::connect(proxy.addr())
            .await
            .expect("accepted while frozen");
        for stream in [&mut open, &mut new] {
            stream.write_all(b"held").await.expect("write");
            let mut buf = [0; 4];
            let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf));
            assert!(read.await.is_err(), "nothing passes while frozen");
        }
        proxy.thaw();
        for stream in [&mut open, &mut new] {
            let mut buf = [0; 4];
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
                .await
                .expect("what was held, in time")
                .expect("read");
            assert_eq!(&buf, b"held");
            round_trip(stream, b"after").await;
        }
    }

    #[test]
    fn the_pki_has_its_files_and_goes_away() {
        let pki = TestPki::new();
        let dir = pki.dir().to_owned();
        for files in [&pki.ca, &pki.other_ca, &pki.server, &pki.client] {
            assert!(files.cert.is_file() && files.key.is_file(), "{files:?}");
            assert!(files.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(files.key_pem.contains("PRIVATE KEY-----"));
        }
        assert_ne!(pki.ca.cert_pem, pki.other_ca.cert_pem);
        drop(pki);
        assert!(!dir.exists());
    }
}
