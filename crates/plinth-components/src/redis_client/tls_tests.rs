//! TLS against a private, TLS-only `redis-server` this module starts: a throwaway CA and
//! server and client certificates from [`plinth_testkit::TestPki`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plinth_core::ErrorKind;
use plinth_core::component::Instance;
use plinth_core::component::state::{GetRequest, SetRequest, TransactionOp};
use plinth_core::{ComponentSpec, Metadata};
use plinth_testkit::{CertFiles, TestPki};

/// A private TLS-only Redis that requires client certificates, with its certificates; the
/// server is killed and its directory removed on drop.
struct TlsRedis {
    child: Child,
    dir: PathBuf,
    port: u16,
    pki: TestPki,
}

impl TlsRedis {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("plinth-redis-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = TestPki::new();
        // A free port: bound, read, released; redis-server takes it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&pki.server.cert)
            .arg("--tls-key-file")
            .arg(&pki.server.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca.cert)
            .args(["--tls-auth-clients", "yes"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server, built with TLS) must be installed");
        let server = Self {
            child,
            dir,
            port,
            pki,
        };
        // Ready when the port accepts connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private TLS redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// A spec of `type_name` for this server, trusting `ca` (`self.pki.ca` or
    /// `self.pki.other_ca`) and presenting the client certificate.
    fn spec(&self, type_name: &str, ca: &CertFiles) -> ComponentSpec {
        ComponentSpec::new("tls", type_name)
            .with_metadata("redisHost", format!("127.0.0.1:{}", self.port))
            .with_metadata("enableTLS", "true")
            .with_metadata("caCert", &ca.cert_pem)
            .with_metadata("clientCert", &self.pki.client.cert_pem)
            .with_metadata("clientKey", &self.pki.client.key_pem)
            .with_metadata("dialTimeout", "2s")
            .with_metadata("timeout", "2s")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn built(spec: ComponentSpec) -> Instance {
    let mut registry = plinth_core::registry::Registry::new();
    crate::register_all(&mut registry);
    let instance = registry.build(&spec).expect("builds");
    instance
        .component()
        .init()
        .await
        .expect("connects over TLS");
    instance
}

#[tokio::test]
async fn state_lock_and_sequencer_work_over_mutual_tls() {
    let server = TlsRedis::start();
    let p = format!("tls-{}||", uuid::Uuid::new_v4());

    let Instance::State(state) = built(server.spec("state.redis", &server.pki.ca)).await else {
        panic!("not a state store");
    };
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    state
        .set(SetRequest {
            key: a.clone(),
            value: Bytes::from_static(b"1"),
            ..Default::default()
        })
        .await
        .expect("set");
    state
        .transact(
            vec![TransactionOp::Upsert(SetRequest {
                key: b.clone(),
                value: Bytes::from_static(b"2"),
                ..Default::default()
            })],
            Metadata::new(),
        )
        .await
        .expect("transaction");
    let got = state
        .get(GetRequest {
            key: a.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.data, Bytes::from_static(b"1"));
    let items = state
        .bulk_get(vec![a.clone(), b.clone()], Metadata::new())
        .await
        .expect("bulk get");
    assert!(items.iter().all(|i| i.value.is_some()), "{items:?}");

    let Instance::Lock(lock) = built(server.spec("lock.redis", &server.pki.ca)).await else {
        panic!("not a lock store");
    };
    let resource = format!("{p}lock");
    assert!(
        lock.try_lock(&resource, "me", Duration::from_secs(10))
            .await
            .expect("lock")
    );
    assert!(
        !lock
            .try_lock(&resource, "you", Duration::from_secs(10))
            .await
            .expect("lock")
    );
    lock.unlock(&resource, "me").await.expect("unlock");

    let Instance::Sequencer(sequencer) =
        built(server.spec("sequencer.redis", &server.pki.ca)).await
    else {
        panic!("not a sequencer");
    };
    let key = format!("{p}seq");
    let first = sequencer.next_id(&key).await.expect("id");
    assert_eq!(sequencer.next_id(&key).await.expect("id"), first + 1);
    // The private server goes away with its data on drop.
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_unavailable_naming_tls() {
    let server = TlsRedis::start();
    let mut registry = plinth_core::registry::Registry::new();
    crate::register_all(&mut registry);
    let instance = registry
        .build(&server.spec("state.redis", &server.pki.other_ca))
        .expect("the metadata is valid");
    let err = instance
        .component()
        .init()
        .await
        .expect_err("the server's certificate is not from the trusted CA");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("TLS"), "{err}");
}

#[test]
fn tls_metadata_is_checked() {
    let spec = |pairs: &[(&str, &str)]| {
        let mut spec = ComponentSpec::new("s", "state.redis").with_metadata("redisHost", "h:1");
        for (k, v) in pairs {
            spec = spec.with_metadata(*k, *v);
        }
        super::RedisSettings::from_spec(&spec)
    };
    assert!(spec(&[("enableTLS", "true")]).is_ok());
    assert!(spec(&[("enableTLS", "true"), ("insecureSkipTLSVerify", "true")]).is_ok());
    let err = spec(&[("enableTLS", "true"), ("caCert", "not pem")]).expect_err("not PEM");
    assert!(err.to_string().contains("caCert"), "{err}");
    let pem = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
    let err = spec(&[("enableTLS", "true"), ("clientCert", pem)]).expect_err("no key");
    assert!(err.to_string().contains("clientKey"), "{err}");
    let err = spec(&[("caCert", pem)]).expect_err("TLS is off");
    assert!(err.to_string().contains("caCert"), "{err}");
}

#[tokio::test]
async fn insecure_skip_tls_verify_accepts_an_untrusted_server() {
    let server = TlsRedis::start();
    let spec = server
        .spec("sequencer.redis", &server.pki.other_ca)
        .with_metadata("insecureSkipTLSVerify", "true");
    let Instance::Sequencer(sequencer) = built(spec).await else {
        panic!("not a sequencer");
    };
    let key = format!("tls-{}", uuid::Uuid::new_v4());
    assert_eq!(sequencer.next_id(&key).await.expect("id"), 1);
}
