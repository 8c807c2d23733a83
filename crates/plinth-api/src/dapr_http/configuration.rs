//! Configuration: `GET /v1.0/configuration/{store}` (and `/v1.0-alpha1`) with repeated
//! `key` parameters (none means every item) answers `{key: {value, version, metadata}}`,
//! or 204 when no item matches, as Dapr does.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use plinth_core::Metadata;
use plinth_core::component::configuration::ConfigurationQuery;
use serde::Serialize;

use super::error::ApiError;
use super::extract::{Path, Query};
use super::{DaprHttpState, no_content, require};
use crate::status::{DaprComponent, DaprHttpOp};

#[derive(Debug, Serialize)]
struct Item {
    #[serde(skip_serializing_if = "String::is_empty")]
    value: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata,
}

pub(super) async fn get(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::ConfigurationStore, &store)?;
    let request = ConfigurationQuery {
        keys: query.all("key"),
        metadata: query.metadata(),
        ..ConfigurationQuery::default()
    };
    let items =
        s.rt.configuration
            .get(&store, request)
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::GetConfiguration, &e))?;
    if items.is_empty() {
        return Ok(no_content());
    }
    // Dapr's items carry no group or label: `value` is the item's content.
    let items: BTreeMap<String, Item> = items
        .into_iter()
        .map(|i| {
            (
                i.key,
                Item {
                    value: i.content,
                    version: i.version,
                    metadata: i.metadata,
                },
            )
        })
        .collect();
    Ok(Json(items).into_response())
}
