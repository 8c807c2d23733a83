//! Placeholder until the mTLS module lands.

use plinth_core::{Error, Result};
use tokio::net::TcpStream;

/// A sidecar's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Trust domain.
    pub trust_domain: String,
    /// Namespace.
    pub namespace: String,
    /// App id.
    pub app_id: String,
}

/// mTLS.
#[derive(Debug, Clone)]
pub struct MeshTls;

impl MeshTls {
    /// Connect.
    pub async fn connect(&self, _tcp: TcpStream, _expected: &Identity) -> Result<TcpStream> {
        Err(Error::unimplemented("tls"))
    }
    /// Accept.
    pub async fn accept(&self, _tcp: TcpStream) -> Result<(TcpStream, Identity)> {
        Err(Error::unimplemented("tls"))
    }
}

/// Files.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    /// Cert.
    pub cert_file: std::path::PathBuf,
    /// Key.
    pub key_file: std::path::PathBuf,
    /// CA.
    pub ca_file: std::path::PathBuf,
    /// Trust domain.
    #[serde(default = "public")]
    pub trust_domain: String,
}

fn public() -> String {
    "public".into()
}

impl MeshTls {
    /// Load.
    pub fn load(_files: &TlsFiles, _me: &Identity) -> Result<Self> {
        Err(Error::unimplemented("tls"))
    }
    /// Reload.
    pub fn spawn_reload(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async {})
    }
}
