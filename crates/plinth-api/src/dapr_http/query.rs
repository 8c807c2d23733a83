//! State query: `POST|PUT /v1.0-alpha1/state/{store}/query` with Dapr's query language in
//! the body; `metadata.*` parameters pass to the store. The answer is Dapr's
//! `{results: [{key, data, etag, error}], token, metadata}`, with each value as JSON.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use plinth_core::Metadata;
use serde::Serialize;

use super::error::ApiError;
use super::extract::{Body, Path, Query, check_json_content_type};
use super::{DaprHttpState, require};
use crate::status::{DaprComponent, DaprHttpOp};

#[derive(Debug, Serialize)]
pub(super) struct Answer {
    results: Vec<Item>,
    #[serde(skip_serializing_if = "String::is_empty")]
    token: String,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata,
}

#[derive(Debug, Serialize)]
struct Item {
    key: String,
    data: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(super) async fn query(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    query: Query,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Answer>, ApiError> {
    check_json_content_type(&headers)?;
    require(&s.rt, DaprComponent::StateStore, &store)?;
    let page =
        s.rt.state
            .query(&store, &body, query.metadata())
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::StateQuery, &e))?;
    let results = page
        .results
        .into_iter()
        .map(|item| Item {
            key: item.key,
            // Values saved over HTTP are JSON; anything else comes back as a string.
            data: serde_json::from_slice(&item.data).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&item.data).into_owned())
            }),
            etag: item.etag,
            error: item.error,
        })
        .collect();
    Ok(Json(Answer {
        results,
        token: page.token.unwrap_or_default(),
        metadata: page.metadata,
    }))
}
