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

#[derive(Debug, Serialize)]
pub(super) struct Subscribed {
    id: String,
}

/// `GET /v1.0/configuration/{store}/subscribe?key=...`: changes to the keys (all, when none
/// is given) are POSTed to the app at `/configuration/{store}/{key}` until unsubscribed.
pub(super) async fn subscribe(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    query: Query,
) -> Result<Json<Subscribed>, ApiError> {
    require(&s.rt, DaprComponent::ConfigurationStore, &store)?;
    let Some(channel) = s.rt.app.get().cloned() else {
        return Err(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_CONFIGURATION_SUBSCRIBE",
            "configuration subscriptions over HTTP deliver to the app: start Plinth with --app-port",
        ));
    };
    let request = ConfigurationQuery {
        keys: query.all("key"),
        metadata: query.metadata(),
        ..ConfigurationQuery::default()
    };
    let mut changes =
        s.rt.configuration
            .subscribe(&store, request)
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::SubscribeConfiguration, &e))?;
    let id = uuid::Uuid::new_v4().to_string();
    let registry = s.config_subscriptions.clone();
    let task = {
        let (id, store, registry) = (id.clone(), store.clone(), registry.clone());
        tokio::spawn(async move {
            while let Some(batch) = changes.recv().await {
                let items = match batch {
                    Ok(items) => items,
                    Err(err) => {
                        tracing::warn!(%store, subscription = %id, error = %err, "configuration subscription ended");
                        break;
                    }
                };
                let update = plinth_runtime::app::ConfigurationUpdate {
                    store: store.clone(),
                    id: id.clone(),
                    items: items
                        .into_iter()
                        .map(|i| (i.key, (i.content, i.version, i.metadata)))
                        .collect(),
                };
                if let Err(err) = channel.on_configuration_update(update).await {
                    tracing::warn!(%store, subscription = %id, error = %err, "configuration change not delivered to the app");
                }
            }
            registry.remove(&id);
        })
    };
    registry.insert(id.clone(), task.abort_handle());
    Ok(Json(Subscribed { id }))
}

#[derive(Debug, Serialize)]
pub(super) struct Unsubscribed {
    ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
}

/// `GET /v1.0/configuration/{store}/{id}/unsubscribe`.
pub(super) async fn unsubscribe(
    State(s): State<DaprHttpState>,
    Path((store, id)): Path<(String, String)>,
) -> Result<Json<Unsubscribed>, ApiError> {
    require(&s.rt, DaprComponent::ConfigurationStore, &store)?;
    Ok(Json(if s.config_subscriptions.cancel(&id) {
        Unsubscribed {
            ok: true,
            message: String::new(),
        }
    } else {
        Unsubscribed {
            ok: false,
            message: format!("subscription {id:?} does not exist"),
        }
    }))
}
