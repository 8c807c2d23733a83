//! One error type for every building block and component.
//!
//! The kind says how a front door answers (gRPC code, HTTP status); the mapping lives in
//! exactly one place, `plinth_api::status`. Messages say what was wrong and never carry
//! secrets or payloads.

use std::fmt;

/// What went wrong, independent of the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong: unknown store, empty key, bad metadata value.
    InvalidArgument,
    /// The named thing does not exist, where the API reports that as an error.
    NotFound,
    /// An ETag did not match the stored one (optimistic concurrency lost).
    EtagMismatch,
    /// An ETag was malformed for this store.
    EtagInvalid,
    /// The component or API does not support the operation.
    Unimplemented,
    /// The backend is unreachable or the component is DOWN.
    Unavailable,
    /// A call exceeded its deadline.
    Timeout,
    /// The thing being created already exists.
    AlreadyExists,
    /// The system is not in a state that allows the operation.
    FailedPrecondition,
    /// The caller may not do this.
    PermissionDenied,
    /// The caller did not authenticate.
    Unauthenticated,
    /// A bound was hit: queue full, too many in flight, rate limit.
    ResourceExhausted,
    /// A bug or an unexpected backend answer.
    Internal,
}

impl ErrorKind {
    /// A stable snake-case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::EtagMismatch => "etag_mismatch",
            ErrorKind::EtagInvalid => "etag_invalid",
            ErrorKind::Unimplemented => "unimplemented",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Internal => "internal",
        }
    }

    /// Every kind.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::EtagMismatch,
        ErrorKind::EtagInvalid,
        ErrorKind::Unimplemented,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::AlreadyExists,
        ErrorKind::FailedPrecondition,
        ErrorKind::PermissionDenied,
        ErrorKind::Unauthenticated,
        ErrorKind::ResourceExhausted,
        ErrorKind::Internal,
    ];

    /// The kind [`as_str`](Self::as_str) names, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

/// How the message of a rate-limit refusal starts, so front doors can tell it from other
/// bounds (HTTP 429 rather than 413).
pub const RATE_LIMITED: &str = "rate limit exceeded";

/// Plinth's error: a kind, a message for the caller, and an optional source for logs.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Result with Plinth's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

macro_rules! ctor {
    ($($name:ident => $kind:ident),* $(,)?) => {
        $(
            #[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
            pub fn $name(message: impl Into<String>) -> Self {
                Self::new(ErrorKind::$kind, message)
            }
        )*
    };
}

impl Error {
    /// An error of `kind` with a message for the caller.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    ctor! {
        invalid_argument => InvalidArgument,
        not_found => NotFound,
        etag_mismatch => EtagMismatch,
        etag_invalid => EtagInvalid,
        unimplemented => Unimplemented,
        unavailable => Unavailable,
        timeout => Timeout,
        already_exists => AlreadyExists,
        failed_precondition => FailedPrecondition,
        permission_denied => PermissionDenied,
        unauthenticated => Unauthenticated,
        resource_exhausted => ResourceExhausted,
        internal => Internal,
    }

    /// Attach the underlying cause (kept for logs; not shown to callers).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefix the message with context, keeping the kind.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::PermissionDenied => ErrorKind::PermissionDenied,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::InvalidInput | Io::InvalidData => ErrorKind::InvalidArgument,
            Io::TimedOut => ErrorKind::Timeout,
            Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::NotConnected => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, err.to_string()).with_source(err)
    }
}
