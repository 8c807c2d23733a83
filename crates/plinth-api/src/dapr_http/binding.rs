//! Output bindings: `POST|PUT /v1.0/bindings/{name}` with `{data, metadata, operation}`.
//! The answer's body is the binding's data; its metadata travels in `metadata.<key>`
//! headers, as Dapr sends it.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use plinth_core::component::binding::BindingRequest;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use super::extract::{Json, Path};
use super::{DaprHttpState, metadata_headers, require};
use crate::status::{DaprComponent, DaprHttpOp};

/// A binding invocation.
#[derive(Debug, Deserialize)]
pub(super) struct InvokeRequest {
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    operation: String,
}

pub(super) async fn invoke(
    State(s): State<DaprHttpState>,
    Path(name): Path<String>,
    body: Result<Json<InvokeRequest>, ApiError>,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::Binding, &name)?;
    let Json(req) = body?;
    // Dapr sends the JSON encoding of `data` (a string arrives with its quotes); no data is
    // an empty payload rather than the text `null`.
    let data = match req.data {
        Some(raw) if raw.get() != "null" => Bytes::copy_from_slice(raw.get().as_bytes()),
        _ => Bytes::new(),
    };
    let out =
        s.rt.binding
            .invoke(
                &name,
                BindingRequest {
                    operation: req.operation,
                    data,
                    metadata: req.metadata.unwrap_or_default(),
                },
            )
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::InvokeBinding, &e))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    metadata_headers(&mut headers, &out.metadata);
    Ok((StatusCode::OK, headers, out.data).into_response())
}
