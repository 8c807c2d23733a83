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
