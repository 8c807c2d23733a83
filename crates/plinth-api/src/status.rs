//! The one place where Plinth's errors become gRPC codes and HTTP statuses.

use plinth_core::{Error, ErrorKind};
use tonic::{Code, Status};

/// The gRPC code of an error kind.
pub fn grpc_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::EtagInvalid => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::EtagMismatch => Code::Aborted,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The HTTP status of an error kind.
pub fn http_status(kind: ErrorKind) -> http::StatusCode {
    use http::StatusCode as S;
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::EtagInvalid => S::BAD_REQUEST,
        ErrorKind::NotFound => S::NOT_FOUND,
        ErrorKind::EtagMismatch => S::CONFLICT,
        ErrorKind::Unimplemented => S::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => S::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => S::GATEWAY_TIMEOUT,
        ErrorKind::AlreadyExists => S::CONFLICT,
        ErrorKind::FailedPrecondition => S::PRECONDITION_FAILED,
        ErrorKind::PermissionDenied => S::FORBIDDEN,
        ErrorKind::Unauthenticated => S::UNAUTHORIZED,
        ErrorKind::ResourceExhausted => S::TOO_MANY_REQUESTS,
        ErrorKind::Internal => S::INTERNAL_SERVER_ERROR,
    }
}

/// An error as a gRPC status; the message is the error's own (never secrets or payloads).
pub fn to_status(err: Error) -> Status {
    Status::new(grpc_code(err.kind()), err.message().to_string())
}

/// A gRPC status from an app or peer, as an error.
pub fn from_status(status: &Status) -> Error {
    let kind = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::Aborted => ErrorKind::EtagMismatch,
        Code::Unimplemented => ErrorKind::Unimplemented,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded | Code::Cancelled => ErrorKind::Timeout,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, status.message().to_string())
}

/// Shorthand for handlers: map a building-block result into a tonic result.
pub(crate) trait IntoStatus<T> {
    fn status(self) -> Result<T, Status>;
}

impl<T> IntoStatus<T> for plinth_core::Result<T> {
    fn status(self) -> Result<T, Status> {
        self.map_err(to_status)
    }
}

/// The gRPC code for an app's HTTP status, for gRPC callers of an HTTP app.
pub fn grpc_code_of_http(status: u16) -> Code {
    match status {
        200..=299 => Code::Ok,
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        500..=599 => Code::Internal,
        _ => Code::Unknown,
    }
}

/// The HTTP status for a gRPC app's code, for HTTP callers of a gRPC app.
pub fn http_of_grpc_code(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        Code::Cancelled => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
        Code::InvalidArgument | Code::OutOfRange => S::BAD_REQUEST,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => S::BAD_REQUEST,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
    }
}
