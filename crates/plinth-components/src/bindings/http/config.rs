//! Metadata of `bindings.http`.

use std::time::Duration;

use http::Uri;
use plinth_core::{ComponentSpec, Result};

/// Component metadata: the base URL requests go to (required, `http` or `https`).
pub const URL: &str = "url";
/// Component and request metadata: how long a call may take, response body included.
pub const RESPONSE_TIMEOUT: &str = "responseTimeout";
/// Component metadata: the largest response body accepted (`1048576`, `512Ki`, `16Mi`).
pub const MAX_RESPONSE_BODY_SIZE: &str = "maxResponseBodySize";
/// Component metadata: whether a status of 400 or more is returned as an error (default
/// true); when false, such responses come back like any other.
pub const ERROR_IF_NOT_2XX: &str = "errorIfNot2XX";

/// The default of [`RESPONSE_TIMEOUT`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of [`MAX_RESPONSE_BODY_SIZE`]: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY_SIZE: usize = 16 * 1024 * 1024;

/// The settings of an HTTP binding.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpBindingConfig {
    /// The base URL, checked to be `http` or `https` with a host.
    pub url: String,
    /// The default time limit of a call.
    pub response_timeout: Duration,
    /// The largest response body accepted.
    pub max_response_body_size: usize,
    /// Whether statuses of 400 and above are errors.
    pub error_if_not_2xx: bool,
}

impl std::fmt::Debug for HttpBindingConfig {
    // The URL may carry credentials or tokens in its user info or query.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBindingConfig")
            .field("response_timeout", &self.response_timeout)
            .field("max_response_body_size", &self.max_response_body_size)
            .field("error_if_not_2xx", &self.error_if_not_2xx)
            .finish_non_exhaustive()
    }
}

impl HttpBindingConfig {
    /// Read the settings from component metadata.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let url = spec.require(URL)?;
        let field = format!("metadata.{URL}");
        // The problem is reported without the URL itself, which may hold credentials.
        let uri: Uri = url
            .parse()
            .map_err(|e| spec.invalid(&field, format!("is not a valid URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(spec.invalid(&field, "must be an http:// or https:// URL"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(spec.invalid(&field, "has no host"));
        }
        let response_timeout = spec.duration_or(RESPONSE_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT)?;
        if response_timeout.is_zero() {
            return Err(spec.invalid(
                &format!("metadata.{RESPONSE_TIMEOUT}"),
                "must be more than 0",
            ));
        }
        let max_response_body_size = match spec.get(MAX_RESPONSE_BODY_SIZE) {
            None => DEFAULT_MAX_RESPONSE_BODY_SIZE,
            Some(raw) => parse_size(raw).ok_or_else(|| {
                spec.invalid(
                    &format!("metadata.{MAX_RESPONSE_BODY_SIZE}"),
                    format!("{raw:?} is not a size such as 1048576, 512Ki or 16Mi"),
                )
            })?,
        };
        Ok(Self {
            url: url.to_owned(),
            response_timeout,
            max_response_body_size,
            error_if_not_2xx: spec.bool_or(ERROR_IF_NOT_2XX, true)?,
        })
    }
}

/// A byte count with an optional Kubernetes-style suffix (`K`, `Ki`, `M`, `Mi`, `G`, `Gi`).
pub(super) fn parse_size(raw: &str) -> Option<usize> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: usize = number.parse().ok()?;
    let scale: usize = match unit {
        "" => 1,
        "K" => 1000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}
