//! Metadata of `file.s3`: Dapr's `bindings.aws.s3` keys, with Layotto's credential names as
//! aliases.

use plinth_core::{ComponentSpec, Result};

/// The bucket that holds the files (required).
pub const BUCKET: &str = "bucket";
/// The region; also signs requests to S3-compatible stores.
pub const REGION: &str = "region";
/// The store's URL (`https://minio:9000`); absent means AWS S3 in `region`.
pub const ENDPOINT: &str = "endpoint";
/// The access key id (Layotto: `accessKeyID`).
pub const ACCESS_KEY: &str = "accessKey";
/// The secret access key (Layotto: `accessKeySecret`).
pub const SECRET_KEY: &str = "secretKey";
/// A session token for temporary credentials.
pub const SESSION_TOKEN: &str = "sessionToken";
/// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted style.
pub const FORCE_PATH_STYLE: &str = "forcePathStyle";
/// Plain HTTP for an endpoint given without a scheme.
pub const DISABLE_SSL: &str = "disableSSL";
/// Accept invalid TLS certificates (tests against self-signed stores only).
pub const INSECURE_SSL: &str = "insecureSSL";

/// The region when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The parsed metadata of a `file.s3` component.
#[derive(Clone, PartialEq, Eq)]
pub struct S3FileConfig {
    /// The bucket.
    pub bucket: String,
    /// The region.
    pub region: String,
    /// The full endpoint URL, scheme included, with the bucket in the host for
    /// virtual-hosted style; `None` for AWS.
    pub endpoint: Option<String>,
    /// Whether plain HTTP is allowed.
    pub allow_http: bool,
    /// Whether invalid certificates are accepted.
    pub insecure_ssl: bool,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// Static credentials: access key id, secret, optional session token. `None` uses the
    /// environment's credentials (web identity or the instance metadata endpoint).
    pub credentials: Option<(String, String, Option<String>)>,
}

// Credentials stay out of logs.
impl std::fmt::Debug for S3FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3FileConfig")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .field("insecure_ssl", &self.insecure_ssl)
            .field("force_path_style", &self.force_path_style)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn flag(spec: &ComponentSpec, key: &str) -> Result<bool> {
    match spec.get(key) {
        None => Ok(false),
        Some(raw) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(spec.invalid(
                &format!("metadata.{key}"),
                format!("{raw:?} is not a boolean (true or false)"),
            )),
        },
    }
}

impl S3FileConfig {
    /// Read the settings from component metadata.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let bucket = spec.require(BUCKET)?.to_owned();
        if bucket.contains(['/', '\\']) || bucket.chars().any(char::is_whitespace) {
            return Err(spec.invalid(
                &format!("metadata.{BUCKET}"),
                "is not a bucket name (no slashes or spaces)",
            ));
        }
        let region = spec.get(REGION).unwrap_or(DEFAULT_REGION).to_owned();
        let disable_ssl = flag(spec, DISABLE_SSL)?;
        let insecure_ssl = flag(spec, INSECURE_SSL)?;
        let force_path_style = flag(spec, FORCE_PATH_STYLE)?;

        let mut allow_http = disable_ssl;
        let endpoint = match spec.get(ENDPOINT) {
            None => None,
            Some(raw) => {
                let (scheme, rest) = match raw.split_once("://") {
                    Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
                    None if disable_ssl => ("http".to_owned(), raw),
                    None => ("https".to_owned(), raw),
                };
                let host = rest.trim_end_matches('/');
                if !matches!(scheme.as_str(), "http" | "https") || host.is_empty() {
                    return Err(spec.invalid(
                        &format!("metadata.{ENDPOINT}"),
                        format!("{raw:?} is not an http(s) URL"),
                    ));
                }
                allow_http |= scheme == "http";
                // Virtual-hosted style puts the bucket in the host name, as the AWS SDKs do
                // with a custom endpoint.
                Some(if force_path_style {
                    format!("{scheme}://{host}")
                } else {
                    format!("{scheme}://{bucket}.{host}")
                })
            }
        };

        let access_key = spec.get_any(&[ACCESS_KEY, "accessKeyID"]);
        let secret_key = spec.get_any(&[SECRET_KEY, "accessKeySecret"]);
        let credentials = match (access_key, secret_key) {
            (None, None) => None,
            (Some(id), Some(secret)) => Some((
                id.to_owned(),
                secret.to_owned(),
                spec.get(SESSION_TOKEN).map(str::to_owned),
            )),
            (Some(_), None) => {
                return Err(spec.invalid(
                    &format!("metadata.{SECRET_KEY}"),
                    "is required with accessKey",
                ));
            }
            (None, Some(_)) => {
                return Err(spec.invalid(
                    &format!("metadata.{ACCESS_KEY}"),
                    "is required with secretKey",
                ));
            }
        };

        Ok(Self {
            bucket,
            region,
            endpoint,
            allow_http,
            insecure_ssl,
            force_path_style,
            credentials,
        })
    }
}
