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

/// The HTTP status of a function that could not answer, on the functions listener. Unlike
/// [`http_status`], a function stopped by a limit is a server-side failure (5xx), not the
/// caller's rate: memory and execution-time limits and traps answer 500, the wall-clock
/// timeout 504, an unknown function 404.
pub fn function_http_status(kind: ErrorKind) -> http::StatusCode {
    use http::StatusCode as S;
    match kind {
        ErrorKind::ResourceExhausted | ErrorKind::Internal => S::INTERNAL_SERVER_ERROR,
        other => http_status(other),
    }
}

/// What a Dapr HTTP route was doing when a building block failed; it picks Dapr's
/// `errorCode` for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaprHttpOp {
    /// `GET /v1.0/state/{store}/{key}`.
    StateGet,
    /// `POST /v1.0/state/{store}/bulk`.
    StateBulkGet,
    /// `POST /v1.0/state/{store}`.
    StateSave,
    /// `DELETE /v1.0/state/{store}/{key}`.
    StateDelete,
    /// `POST /v1.0/state/{store}/transaction`.
    StateTransaction,
    /// `POST /v1.0/publish/{pubsub}/{topic}`.
    Publish,
    /// `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`.
    BulkPublish,
    /// `POST /v1.0/bindings/{name}`.
    InvokeBinding,
    /// `GET /v1.0/secrets/{store}/{key}` and `/bulk`.
    GetSecret,
    /// `GET /v1.0/configuration/{store}`.
    GetConfiguration,
    /// `POST /v1.0-alpha1/lock/{store}`.
    TryLock,
    /// `POST /v1.0-alpha1/unlock/{store}`.
    Unlock,
    /// `POST /v1.0-alpha1/state/{store}/query`.
    StateQuery,
    /// `GET /v1.0/configuration/{store}/subscribe`.
    SubscribeConfiguration,
    /// `/v1.0/invoke/{app-id}/method/{method}`.
    Invoke,
}

impl DaprHttpOp {
    /// Dapr's `errorCode` for a failure of this operation.
    fn error_code(self) -> &'static str {
        match self {
            DaprHttpOp::StateGet => "ERR_STATE_GET",
            DaprHttpOp::StateBulkGet => "ERR_STATE_BULK_GET",
            DaprHttpOp::StateSave => "ERR_STATE_SAVE",
            DaprHttpOp::StateDelete => "ERR_STATE_DELETE",
            DaprHttpOp::StateTransaction => "ERR_STATE_TRANSACTION",
            DaprHttpOp::Publish | DaprHttpOp::BulkPublish => "ERR_PUBSUB_PUBLISH_MESSAGE",
            DaprHttpOp::InvokeBinding => "ERR_INVOKE_OUTPUT_BINDING",
            DaprHttpOp::GetSecret => "ERR_SECRET_GET",
            DaprHttpOp::GetConfiguration => "ERR_CONFIGURATION_GET",
            DaprHttpOp::TryLock => "ERR_TRY_LOCK",
            DaprHttpOp::Unlock => "ERR_UNLOCK",
            DaprHttpOp::StateQuery => "ERR_STATE_QUERY",
            DaprHttpOp::SubscribeConfiguration => "ERR_CONFIGURATION_SUBSCRIBE",
            DaprHttpOp::Invoke => "ERR_DIRECT_INVOKE",
        }
    }
}

/// The HTTP status and Dapr `errorCode` of a building-block error on a Dapr HTTP route.
/// The status is the kind's ([`http_status`]); the code is the operation's, except where
/// Dapr answers a condition with a code of its own.
/// [`dapr_http_error`] for one error: a rate limit on an invocation (the mesh's) is 429,
/// where any other bound an invocation hits (its body size) is 413.
pub fn dapr_http_error_of(op: DaprHttpOp, err: &Error) -> (http::StatusCode, &'static str) {
    if matches!(op, DaprHttpOp::Invoke)
        && err.kind() == ErrorKind::ResourceExhausted
        && err.message().starts_with(plinth_core::error::RATE_LIMITED)
    {
        return (http::StatusCode::TOO_MANY_REQUESTS, "ERR_DIRECT_INVOKE");
    }
    dapr_http_error(op, err.kind())
}

pub fn dapr_http_error(op: DaprHttpOp, kind: ErrorKind) -> (http::StatusCode, &'static str) {
    use DaprHttpOp as Op;
    use http::StatusCode as S;
    match (op, kind) {
        (Op::Publish | Op::BulkPublish, ErrorKind::PermissionDenied) => {
            (S::FORBIDDEN, "ERR_PUBSUB_FORBIDDEN")
        }
        // A bulk publish the building block refuses whole: entry ids empty or repeated.
        (Op::BulkPublish, ErrorKind::InvalidArgument) => (S::BAD_REQUEST, "ERR_PUBSUB_EVENTS_SER"),
        // Lock requests missing their resource, owner or a valid expiry.
        (Op::TryLock | Op::Unlock, ErrorKind::InvalidArgument) => {
            (S::BAD_REQUEST, "ERR_MALFORMED_REQUEST")
        }
        // An invocation body, or the app's answer, over --max-body-size.
        (Op::Invoke, ErrorKind::ResourceExhausted) => (S::PAYLOAD_TOO_LARGE, "ERR_DIRECT_INVOKE"),
        (Op::GetSecret, ErrorKind::PermissionDenied) => (S::FORBIDDEN, "ERR_PERMISSION_DENIED"),
        // A store without transactions (Dapr answers 500) or without TTL.
        (Op::StateTransaction, ErrorKind::Unimplemented) => {
            (S::INTERNAL_SERVER_ERROR, "ERR_STATE_STORE_NOT_SUPPORTED")
        }
        (Op::StateSave, ErrorKind::Unimplemented) => {
            (S::NOT_IMPLEMENTED, "ERR_STATE_STORE_NOT_SUPPORTED")
        }
        _ => (http_status(kind), op.error_code()),
    }
}

/// The kinds of component a Dapr HTTP route names in its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaprComponent {
    /// A state store.
    StateStore,
    /// A pub/sub.
    PubSub,
    /// An output binding.
    Binding,
    /// A secret store.
    SecretStore,
    /// A configuration store.
    ConfigurationStore,
    /// A lock store.
    LockStore,
}

/// Dapr's status and `errorCode` when a route names a component that is not loaded:
/// `none_of_kind` when no component of that kind is loaded at all.
pub fn dapr_http_missing(
    component: DaprComponent,
    none_of_kind: bool,
) -> (http::StatusCode, &'static str) {
    use DaprComponent as C;
    use http::StatusCode as S;
    match (component, none_of_kind) {
        (C::StateStore, false) => (S::BAD_REQUEST, "ERR_STATE_STORE_NOT_FOUND"),
        (C::StateStore, true) => (S::INTERNAL_SERVER_ERROR, "ERR_STATE_STORE_NOT_CONFIGURED"),
        (C::PubSub, false) => (S::NOT_FOUND, "ERR_PUBSUB_NOT_FOUND"),
        (C::PubSub, true) => (S::BAD_REQUEST, "ERR_PUBSUB_NOT_CONFIGURED"),
        // Dapr's own choice of status for an unknown secret store.
        (C::SecretStore, false) => (S::UNAUTHORIZED, "ERR_SECRET_STORE_NOT_FOUND"),
        (C::SecretStore, true) => (S::INTERNAL_SERVER_ERROR, "ERR_SECRET_STORES_NOT_CONFIGURED"),
        (C::ConfigurationStore, false) => (S::BAD_REQUEST, "ERR_CONFIGURATION_STORE_NOT_FOUND"),
        (C::ConfigurationStore, true) => (
            S::INTERNAL_SERVER_ERROR,
            "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
        ),
        (C::LockStore, false) => (S::BAD_REQUEST, "ERR_LOCK_STORE_NOT_FOUND"),
        (C::LockStore, true) => (S::INTERNAL_SERVER_ERROR, "ERR_LOCK_STORE_NOT_CONFIGURED"),
        // Dapr fails the invocation itself for an unknown binding.
        (C::Binding, _) => (S::INTERNAL_SERVER_ERROR, "ERR_INVOKE_OUTPUT_BINDING"),
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
