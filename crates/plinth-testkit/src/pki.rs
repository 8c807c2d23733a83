//! A throwaway PKI made with the `openssl` command line at test time: no
//! certificate-generation crate to build for tests alone, and `openssl` comes with the
//! TLS-enabled servers (Redis, NATS, Mosquitto) these tests start anyway.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A certificate and its private key: their files and their PEM text.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate's file (PEM).
    pub cert: PathBuf,
    /// The private key's file (PEM, unencrypted).
    pub key: PathBuf,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

/// A temporary directory, removed on drop, holding EC (P-256) certificates valid for a
/// day:
///
/// - [`TestPki::ca`], a self-signed CA, which signed
/// - [`TestPki::server`], for `localhost` and `127.0.0.1`, and
/// - [`TestPki::client`], for `client` (a client certificate for mutual TLS);
/// - [`TestPki::other_ca`], a second self-signed CA that signed nothing here: trusting it
///   instead of `ca` must fail.
///
/// Servers read the files through their absolute paths ([`CertFiles::cert`],
/// [`CertFiles::key`]); clients usually take the PEM text. Needs the `openssl` command.
#[derive(Debug)]
pub struct TestPki {
    dir: PathBuf,
    /// The CA that signed `server` and `client`.
    pub ca: CertFiles,
    /// A CA unrelated to the others.
    pub other_ca: CertFiles,
    /// The server's certificate: subject alternative names `DNS:localhost`, `IP:127.0.0.1`.
    pub server: CertFiles,
    /// The client's certificate: subject alternative name `DNS:client`.
    pub client: CertFiles,
}

impl TestPki {
    /// Make the certificates in a new temporary directory; panics, with `openssl`'s
    /// output, when that fails.
    pub fn new() -> Self {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "plinth-pki-{}-{nanos}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        ca(&dir, "ca");
        ca(&dir, "other-ca");
        signed(&dir, "ca", "server", "DNS:localhost,IP:127.0.0.1");
        signed(&dir, "ca", "client", "DNS:client");
        Self {
            ca: CertFiles::read(&dir, "ca"),
            other_ca: CertFiles::read(&dir, "other-ca"),
            server: CertFiles::read(&dir, "server"),
            client: CertFiles::read(&dir, "client"),
            dir,
        }
    }

    /// The directory holding the files (`<name>.crt`, `<name>.key`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl CertFiles {
    fn read(dir: &Path, name: &str) -> Self {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let read = |path: &Path| {
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        };
        Self {
            cert_pem: read(&cert),
            key_pem: read(&key),
            cert,
            key,
        }
    }
}

/// Run `openssl` with `args` in `dir`, panicking with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line must be installed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA `<name>.crt` / `<name>.key`.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN=plinth test CA {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// `<name>.crt` / `<name>.key`, signed by the CA `<ca>.crt`, with subject alternative
/// names `san`.
fn signed(dir: &Path, ca: &str, name: &str, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\n"),
    )
    .expect("write the extensions file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}
