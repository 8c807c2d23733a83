//! Certificates for tests and benchmarks: a CA and SPIFFE leaf certificates written as PEM
//! files, ready for [`MeshTls::load`](crate::tls::MeshTls::load).
//!
//! Built with the `testing` feature (and always in this crate's tests). Keys are ECDSA P-256
//! and certificates never expire in practice; nothing here is meant for production.

use std::fmt;
use std::path::{Path, PathBuf};

use plinth_core::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::tls::{Identity, TlsFiles};

/// A certificate authority whose certificate is written to `ca.pem` in its directory.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    ca_file: PathBuf,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

fn rcgen_error(what: &str, e: rcgen::Error) -> Error {
    Error::internal(format!("generating {what}: {e}")).with_source(e)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents)
        .map_err(|e| Error::from(e).context(format!("writing {}", path.display())))
}

/// Generate a CA and write its certificate to `dir/ca.pem` (`dir` must exist).
pub fn write_ca(dir: &Path) -> Result<Ca> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| rcgen_error("the CA parameters", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "plinth mesh test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().map_err(|e| rcgen_error("the CA key", e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| rcgen_error("the CA certificate", e))?;
    let ca_file = dir.join("ca.pem");
    write(&ca_file, &cert.pem())?;
    Ok(Ca {
        issuer: Issuer::new(params, key),
        ca_file,
    })
}

impl Ca {
    /// The CA certificate's file.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A leaf certificate and key for `id`, as PEM text (certificate, key).
    pub fn issue_pem(&self, id: &Identity) -> Result<(String, String)> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| rcgen_error("the leaf parameters", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, id.app_id.clone());
        let uri = rcgen::string::Ia5String::try_from(id.to_string())
            .map_err(|e| Error::invalid_argument(format!("{id} is not ASCII: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // A sidecar both serves and calls with the same certificate.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(|e| rcgen_error("the leaf key", e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| rcgen_error("the leaf certificate", e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issue a certificate for `id` and write it to `dir/<name>.pem` and its key to
    /// `dir/<name>.key`; the returned files point at this CA's `ca.pem` and carry `id`'s
    /// trust domain.
    pub fn issue(&self, id: &Identity, dir: &Path, name: &str) -> Result<TlsFiles> {
        let (cert, key) = self.issue_pem(id)?;
        let cert_file = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}.key"));
        write(&cert_file, &cert)?;
        write(&key_file, &key)?;
        let mut files = TlsFiles::new(cert_file, key_file, self.ca_file.clone());
        files.trust_domain = id.trust_domain.clone();
        Ok(files)
    }
}
