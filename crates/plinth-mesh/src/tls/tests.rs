//! mTLS over real TCP on loopback, with certificates from [`crate::testing`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use plinth_core::{ErrorKind, Result};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::verify::SpiffeServerVerifier;
use super::*;
use crate::testing::{Ca, write_ca};

fn id(app: &str) -> Identity {
    Identity::new("public", "default", app)
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    ca: Ca,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let ca = write_ca(&path).expect("CA");
    Setup {
        _dir: dir,
        dir: path,
        ca,
    }
}

fn sidecar(ca: &Ca, dir: &Path, who: &Identity) -> MeshTls {
    let files = ca.issue(who, dir, &who.app_id).expect("issue");
    MeshTls::load(&files, who).expect("load")
}

/// Serve one connection: accept, echo four bytes. Returns what the server's accept said.
async fn serve_once(
    server: MeshTls,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<Identity>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("tcp accept");
        let (mut tls, caller) = server.accept(tcp).await?;
        let mut buf = [0u8; 4];
        // The client may go away (a failed identity check); the handshake result is what counts.
        if tls.read_exact(&mut buf).await.is_ok() {
            let _ = tls.write_all(&buf).await;
            let _ = tls.flush().await;
        }
        Ok(caller)
    });
    (addr, task)
}

/// Connect, and do a round trip so a rejection by the server (which a TLS 1.3 client only
/// learns after its handshake returns) shows up on the client side too.
async fn call(
    client: &MeshTls,
    addr: std::net::SocketAddr,
    expected: &Identity,
) -> Result<CertificateDer<'static>> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let mut tls = client.connect(tcp, expected).await?;
    let server_cert = tls.get_ref().1.peer_certificates().expect("certs")[0].clone();
    round_trip(&mut tls).await?;
    Ok(server_cert)
}

async fn round_trip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
) -> Result<()> {
    tls.write_all(b"ping").await?;
    tls.flush().await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

fn leaf(files_cert: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(files_cert)
        .expect("read")
        .next()
        .expect("one")
        .expect("pem")
}

/// Overwrite a file and move its mtime forward, so the change is seen even when the write
/// lands within the file system's timestamp granularity of the previous one.
fn rewrite(path: &Path, contents: &str, bump: u64) {
    std::fs::write(path, contents).expect("write");
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(SystemTime::now() + Duration::from_secs(bump))
        .expect("set mtime");
}

#[test]
fn spiffe_ids_parse_and_print() {
    let a = Identity::from_spiffe("spiffe://public/ns/default/app-a").expect("valid");
    assert_eq!(a, id("app-a"));
    assert_eq!(a.to_string(), "spiffe://public/ns/default/app-a");
    for bad in [
        "https://public/ns/default/a",
        "spiffe://public/default/a",
        "spiffe://public/ns/default",
        "spiffe://public/ns//a",
        "spiffe:///ns/default/a",
        "spiffe://public/ns/default/a/extra",
        "spiffe://public/xs/default/a",
    ] {
        assert_eq!(Identity::from_spiffe(bad), None, "{bad}");
    }
}

#[test]
fn tls_files_section_parses_with_defaults() {
    let files: TlsFiles = serde_json::from_value(serde_json::json!({
        "certFile": "/c.pem", "keyFile": "/k.pem", "caFile": "/ca.pem"
    }))
    .expect("parse");
    assert_eq!(files.trust_domain, "public");
    assert_eq!(
        files.reload_interval().expect("default"),
        Duration::from_secs(5)
    );
    let err = serde_json::from_value::<TlsFiles>(serde_json::json!({
        "certFile": "/c.pem", "keyFile": "/k.pem", "caFile": "/ca.pem", "certfile": "x"
    }))
    .expect_err("unknown field");
    assert!(err.to_string().contains("certfile"), "{err}");
    let mut files = files;
    files.reload_interval = Some("250ms".into());
    assert_eq!(
        files.reload_interval().expect("ok"),
        Duration::from_millis(250)
    );
    files.reload_interval = Some("soon".into());
    let err = files.reload_interval().expect_err("bad");
    assert!(err.message().contains("mesh.tls.reloadInterval"), "{err}");
}

#[tokio::test]
async fn same_ca_handshake_both_sides_learn_the_other() {
    let s = setup();
    let (a, b) = (id("app-a"), id("app-b"));
    let client = sidecar(&s.ca, &s.dir, &a);
    let server = sidecar(&s.ca, &s.dir, &b);
    assert_eq!(identity_of(&leaf(&s.dir.join("app-b.pem"))).expect("id"), b);

    let (addr, accepted) = serve_once(server.clone()).await;
    call(&client, addr, &b).await.expect("call");
    assert_eq!(accepted.await.expect("join").expect("accept"), a);

    // ALPN: the client asks for h2 only and the server offers it.
    let (addr, _accepted) = serve_once(server).await;
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let tls = client.connect(tcp, &b).await.expect("connect");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn a_client_from_another_ca_is_rejected() {
    let s = setup();
    let other_dir = s.dir.join("other");
    std::fs::create_dir(&other_dir).expect("mkdir");
    let other_ca = write_ca(&other_dir).expect("CA 2");

    let server = sidecar(&s.ca, &s.dir, &id("app-b"));
    // The client trusts the server's CA but its own certificate comes from another CA.
    let mut files = other_ca
        .issue(&id("app-a"), &other_dir, "app-a")
        .expect("issue");
    files.ca_file = s.ca.ca_file().to_path_buf();
    let client = MeshTls::load(&files, &id("app-a")).expect("load");

    let (addr, accepted) = serve_once(server).await;
    let res = call(&client, addr, &id("app-b")).await;
    assert!(res.is_err(), "the client must see the rejection");
    let err = accepted.await.expect("join").expect_err("server rejects");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
}

#[tokio::test]
async fn a_server_from_another_ca_is_rejected_by_the_client() {
    let s = setup();
    let other_dir = s.dir.join("other");
    std::fs::create_dir(&other_dir).expect("mkdir");
    let other_ca = write_ca(&other_dir).expect("CA 2");
    let mut files = other_ca
        .issue(&id("app-b"), &other_dir, "app-b")
        .expect("issue");
    files.ca_file = s.ca.ca_file().to_path_buf();
    let server = MeshTls::load(&files, &id("app-b")).expect("load");
    let client = sidecar(&s.ca, &s.dir, &id("app-a"));

    let (addr, accepted) = serve_once(server).await;
    let err = call(&client, addr, &id("app-b"))
        .await
        .expect_err("client rejects");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(accepted.await.expect("join").is_err());
}

#[tokio::test]
async fn the_wrong_app_behind_an_address_is_unauthenticated() {
    let s = setup();
    let client = sidecar(&s.ca, &s.dir, &id("app-a"));
    let server = sidecar(&s.ca, &s.dir, &id("app-b"));
    let (addr, _accepted) = serve_once(server).await;
    let err = call(&client, addr, &id("app-c"))
        .await
        .expect_err("wrong app");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    let msg = err.message();
    assert!(
        msg.contains("presented spiffe://public/ns/default/app-b"),
        "{msg}"
    );
    assert!(
        msg.contains("expected spiffe://public/ns/default/app-c"),
        "{msg}"
    );

    // Same app id in another namespace or trust domain is someone else too.
    for other in [
        Identity::new("public", "prod", "app-b"),
        Identity::new("corp", "default", "app-b"),
    ] {
        let server = sidecar(&s.ca, &s.dir, &id("app-b"));
        let (addr, _accepted) = serve_once(server).await;
        let err = call(&client, addr, &other).await.expect_err("mismatch");
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{other}");
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_rejected() {
    let s = setup();
    let server = sidecar(&s.ca, &s.dir, &id("app-b"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(leaf(s.ca.ca_file())).expect("root");
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            Arc::new(roots),
            provider(),
        )))
        .with_no_client_auth();

    let (addr, accepted) = serve_once(server).await;
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let client_side = match connector.connect(name, tcp).await {
        Ok(mut tls) => round_trip(&mut tls).await,
        Err(e) => Err(e.into()),
    };
    assert!(client_side.is_err());
    let err = accepted.await.expect("join").expect_err("no client cert");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
}

#[test]
fn load_checks_identity_key_and_files() {
    let s = setup();
    let files = s.ca.issue(&id("app-a"), &s.dir, "app-a").expect("issue");

    let err = MeshTls::load(&files, &id("app-b")).expect_err("not me");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let msg = err.message();
    assert!(msg.contains("mesh.tls.certFile"), "{msg}");
    assert!(
        msg.contains(&files.cert_file.display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("spiffe://public/ns/default/app-a"), "{msg}");

    let other = s.ca.issue(&id("app-a"), &s.dir, "other").expect("issue");
    let mut mismatched = files.clone();
    mismatched.key_file = other.key_file.clone();
    let err = MeshTls::load(&mismatched, &id("app-a")).expect_err("wrong key");
    assert!(err.message().contains("mesh.tls.keyFile"), "{err}");

    let mut missing = files.clone();
    missing.ca_file = s.dir.join("nope.pem");
    let err = MeshTls::load(&missing, &id("app-a")).expect_err("no CA file");
    assert!(err.message().contains("mesh.tls.caFile"), "{err}");
    assert!(err.message().contains("nope.pem"), "{err}");

    let mut not_pem = files.clone();
    not_pem.cert_file = files.key_file.clone();
    let err = MeshTls::load(&not_pem, &id("app-a")).expect_err("a key is no certificate");
    assert!(err.message().contains("mesh.tls.certFile"), "{err}");

    std::fs::write(s.dir.join("no-san.pem"), "").expect("write");
    let mut empty = files.clone();
    empty.cert_file = s.dir.join("no-san.pem");
    let err = MeshTls::load(&empty, &id("app-a")).expect_err("empty");
    assert!(err.message().contains("holds no certificate"), "{err}");

    MeshTls::load(&files, &id("app-a")).expect("the right identity loads");
}

#[tokio::test]
async fn reload_now_serves_the_new_certificate() {
    let s = setup();
    let b = id("app-b");
    let client = sidecar(&s.ca, &s.dir, &id("app-a"));
    let server_files = s.ca.issue(&b, &s.dir, "app-b").expect("issue");
    let server = MeshTls::load(&server_files, &b).expect("load");

    let (addr, _) = serve_once(server.clone()).await;
    let before = call(&client, addr, &b).await.expect("call");

    let (cert, key) = s.ca.issue_pem(&b).expect("reissue");
    rewrite(&server_files.cert_file, &cert, 1);
    rewrite(&server_files.key_file, &key, 1);
    server.reload_now().expect("reload");

    let (addr, _) = serve_once(server.clone()).await;
    let after = call(&client, addr, &b).await.expect("call");
    assert_ne!(before, after);
    assert_eq!(after, leaf(&server_files.cert_file));
}

#[tokio::test]
async fn rotating_to_a_new_ca_takes_effect_on_each_side_after_its_reload() {
    let s = setup();
    let (a, b) = (id("app-a"), id("app-b"));
    let a_files = s.ca.issue(&a, &s.dir, "app-a").expect("issue a");
    let b_files = s.ca.issue(&b, &s.dir, "app-b").expect("issue b");
    let client = MeshTls::load(&a_files, &a).expect("load a");
    let server = MeshTls::load(&b_files, &b).expect("load b");

    // A new CA replaces the old one in place: same ca.pem, new certificates for both.
    let new_dir = s.dir.join("new");
    std::fs::create_dir(&new_dir).expect("mkdir");
    let new_ca = write_ca(&new_dir).expect("new CA");
    let new_ca_pem = std::fs::read_to_string(new_ca.ca_file()).expect("read");
    let (b_cert, b_key) = new_ca.issue_pem(&b).expect("b");
    rewrite(&b_files.cert_file, &b_cert, 1);
    rewrite(&b_files.key_file, &b_key, 1);
    rewrite(&b_files.ca_file, &new_ca_pem, 1);
    server.reload_now().expect("server reload");

    // The client still trusts only the old CA and holds an old certificate.
    let (addr, _) = serve_once(server.clone()).await;
    let err = call(&client, addr, &b).await.expect_err("old client");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");

    let (a_cert, a_key) = new_ca.issue_pem(&a).expect("a");
    rewrite(&a_files.cert_file, &a_cert, 1);
    rewrite(&a_files.key_file, &a_key, 1);
    client.reload_now().expect("client reload");
    let (addr, accepted) = serve_once(server).await;
    call(&client, addr, &b).await.expect("both rotated");
    assert_eq!(accepted.await.expect("join").expect("accept"), a);
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_configuration() {
    let s = setup();
    let b = id("app-b");
    let client = sidecar(&s.ca, &s.dir, &id("app-a"));
    let files = s.ca.issue(&b, &s.dir, "app-b").expect("issue");
    let server = MeshTls::load(&files, &b).expect("load");
    let config = server.server_config();

    // Half-written: the PEM block is cut off.
    let pem = std::fs::read_to_string(&files.cert_file).expect("read");
    rewrite(&files.cert_file, &pem[..pem.len() / 2], 1);
    let err = server.reload_now().expect_err("broken");
    assert!(err.message().contains("mesh.tls.certFile"), "{err}");
    // A certificate for someone else.
    let (other, other_key) = s.ca.issue_pem(&id("app-z")).expect("z");
    rewrite(&files.cert_file, &other, 2);
    rewrite(&files.key_file, &other_key, 2);
    let err = server.reload_now().expect_err("not me");
    assert!(err.message().contains("app-z"), "{err}");

    assert!(Arc::ptr_eq(&config, &server.server_config()));
    let (addr, _) = serve_once(server).await;
    call(&client, addr, &b)
        .await
        .expect("old certificate still serves");
}

#[tokio::test]
async fn spawn_reload_picks_up_changed_files() {
    let s = setup();
    let b = id("app-b");
    let client = sidecar(&s.ca, &s.dir, &id("app-a"));
    let mut files = s.ca.issue(&b, &s.dir, "app-b").expect("issue");
    files.reload_interval = Some("20ms".into());
    let server = MeshTls::load(&files, &b).expect("load");
    let task = server.spawn_reload();

    let (cert, key) = s.ca.issue_pem(&b).expect("reissue");
    let expected = CertificateDer::from_pem_slice(cert.as_bytes()).expect("pem");
    rewrite(&files.cert_file, &cert, 2);
    rewrite(&files.key_file, &key, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (addr, _) = serve_once(server.clone()).await;
        let seen = call(&client, addr, &b).await.expect("call");
        if seen == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reload task never swapped the certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The task ends once every handle is gone.
    drop(server);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("task ends")
        .expect("no panic");
}
