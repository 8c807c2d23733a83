//! Dapr's error answer, `{"errorCode": "ERR_...", "message": "..."}`, for building-block
//! errors (mapped in `crate::status`) and for requests that never reach a building block.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_core::Error;

use crate::status::{DaprComponent, DaprHttpOp, dapr_http_missing};

/// Dapr's code for a body that does not decode, or a field that is missing or wrong.
pub(super) const MALFORMED_REQUEST: &str = "ERR_MALFORMED_REQUEST";
/// Dapr's code for a body that cannot be read; Plinth also answers it, with 413, for a body
/// over the limit.
pub(super) const BODY_READ: &str = "ERR_BODY_READ";
/// Dapr's code for an API it does not implement.
pub(super) const API_UNIMPLEMENTED: &str = "ERR_API_UNIMPLEMENTED";
/// Plinth's code for a path no route serves (Dapr hands those to service invocation).
pub(super) const NOT_FOUND: &str = "ERR_NOT_FOUND";
/// Plinth's code for a route asked with a verb it does not serve.
pub(super) const METHOD_NOT_ALLOWED: &str = "ERR_METHOD_NOT_ALLOWED";

/// A Dapr error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An answer with `status`, Dapr `code` and a message naming what was wrong.
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `ERR_MALFORMED_REQUEST`.
    pub(super) fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, MALFORMED_REQUEST, message)
    }

    /// A building block's error while doing `op`.
    pub(super) fn op(op: DaprHttpOp, err: &Error) -> Self {
        let (status, code) = crate::status::dapr_http_error_of(op, err);
        Self::new(status, code, err.message())
    }

    /// A route named a component that is not loaded.
    pub(super) fn missing(
        component: DaprComponent,
        name: &str,
        what: &str,
        configured: &[String],
    ) -> Self {
        let (status, code) = dapr_http_missing(component, configured.is_empty());
        let message = if configured.is_empty() {
            format!("{what} {name:?} is not found: no {what} is configured")
        } else {
            format!("{what} {name:?} is not found; configured: {configured:?}")
        };
        Self::new(status, code, message)
    }

    /// The same answer under another code, for routes where Dapr names a malformed body
    /// with a code of its own.
    pub(super) fn recode_malformed(mut self, code: &'static str) -> Self {
        if self.code == MALFORMED_REQUEST {
            self.code = code;
        }
        self
    }

    /// The HTTP status.
    #[cfg(test)]
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    /// The Dapr error code.
    #[cfg(test)]
    pub(super) fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    #[cfg(test)]
    pub(super) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::debug!(status = self.status.as_u16(), code = self.code, message = %self.message, "dapr http error");
        let body = serde_json::json!({ "errorCode": self.code, "message": self.message });
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.to_string(),
        )
            .into_response()
    }
}
