//! Secrets: `GET /v1.0/secrets/{store}/{key}` answers `{name: value}`, and
//! `GET /v1.0/secrets/{store}/bulk` answers `{secret: {name: value}}`; both take
//! `metadata.*` query parameters.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::{Path, Query};
use super::{DaprHttpState, require};
use crate::status::{DaprComponent, DaprHttpOp};

pub(super) async fn get(
    State(s): State<DaprHttpState>,
    Path((store, key)): Path<(String, String)>,
    query: Query,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::SecretStore, &store)?;
    let secret =
        s.rt.secrets
            .get(&store, &key, query.metadata())
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::GetSecret, &e))?;
    Ok(Json(secret).into_response())
}

pub(super) async fn bulk_get(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::SecretStore, &store)?;
    let all =
        s.rt.secrets
            .bulk_get(&store, query.metadata())
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::GetSecret, &e))?;
    Ok(Json(all).into_response())
}
