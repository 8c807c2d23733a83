//! Credentials and TLS against private `nats-server`s these tests start (the shared server
//! has neither): one requiring a token, one TLS-only requiring client certificates from a
//! throwaway CA ([`plinth_testkit::TestPki`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plinth_core::ErrorKind;
use plinth_testkit::TestPki;

use super::*;
use crate::pubsub::testing::{publish, recv_within, subscribe};

/// A private nats-server with JetStream in a directory of its own; killed and removed on
/// drop.
struct PrivateNats {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl PrivateNats {
    /// Start one with `args`.
    fn start(args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("plinth-nats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // A free port: bound, read, released; nats-server takes it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
                "js",
            ])
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian's nats-server) must be installed");
        let server = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spec(url: String) -> ComponentSpec {
    ComponentSpec::new("js-auth", TYPE_NAME)
        .with_metadata("natsURL", url)
        .with_metadata("timeout", "3s")
}

fn built(spec: &ComponentSpec) -> JetStreamPubSub {
    JetStreamPubSub::new(spec.name.clone(), Config::from_spec(spec).expect("valid"))
}

/// Publish one message and receive it: the connection works end to end.
async fn round_trip(broker: &JetStreamPubSub) {
    let topic = format!("auth.{}", uuid::Uuid::new_v4().simple());
    let mut sub = subscribe(broker, &topic, "g", 1).await;
    publish(broker, &topic, "secured").await;
    let delivery = recv_within(&mut sub, Duration::from_secs(10))
        .await
        .expect("a delivery");
    assert_eq!(delivery.message.data, "secured");
    delivery.ack().await.expect("ack");
}

const TOKEN: &str = "s3cr3t-t0ken";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_authenticates_and_a_wrong_one_is_unauthenticated() {
    let server = PrivateNats::start(&["--auth", TOKEN]);
    let url = format!("nats://127.0.0.1:{}", server.port);

    let broker = built(&spec(url.clone()).with_metadata("token", TOKEN));
    broker.init().await.expect("the token is accepted");
    round_trip(&broker).await;
    broker.close().await;

    let in_url = built(&spec(format!("nats://{TOKEN}@127.0.0.1:{}", server.port)));
    in_url.init().await.expect("a token in the URL is accepted");
    in_url.close().await;

    let wrong = built(&spec(url.clone()).with_metadata("token", "wrong-t0ken"));
    let err = wrong.init().await.expect_err("a wrong token");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!err.message().contains("wrong-t0ken"), "{err}");

    let none = built(&spec(url));
    let err = none.init().await.expect_err("no token");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_private_ca() {
    let pki = TestPki::new();
    let path = |path: &Path| path.display().to_string();
    let server = PrivateNats::start(&[
        "--tls",
        "--tlscert",
        &path(&pki.server.cert),
        "--tlskey",
        &path(&pki.server.key),
        "--tlsverify",
        "--tlscacert",
        &path(&pki.ca.cert),
    ]);
    let url = format!("tls://127.0.0.1:{}", server.port);
    // The CA and the key inline (PEM), the certificate as a file path (as Dapr passes it).
    let good = spec(url.clone())
        .with_metadata("caCert", &pki.ca.cert_pem)
        .with_metadata("tls_client_cert", path(&pki.client.cert))
        .with_metadata("tls_client_key", &pki.client.key_pem);
    let broker = built(&good);
    broker.init().await.expect("connects over mutual TLS");
    round_trip(&broker).await;
    broker.close().await;

    let untrusted = built(&good.clone().with_metadata("caCert", &pki.other_ca.cert_pem));
    let err = untrusted
        .init()
        .await
        .expect_err("the server's CA is not trusted");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("TLS"), "{err}");

    // Mozilla's roots do not hold the private CA.
    let mut no_ca = good.clone();
    no_ca.metadata.remove("caCert");
    assert!(built(&no_ca).init().await.is_err());

    let mut no_client_cert = good;
    no_client_cert.metadata.remove("tls_client_cert");
    no_client_cert.metadata.remove("tls_client_key");
    assert!(
        built(&no_client_cert).init().await.is_err(),
        "the server requires a client certificate"
    );
}
