//! Pub/sub: `POST /v1.0/publish/{pubsub}/{topic}` (the body is the event, the
//! `Content-Type` its content type) and `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_runtime::pubsub::BulkEntry;
use plinth_runtime::pubsub::cloudevent::is_json;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use super::extract::{Body, Json, Path, Query};
use super::{DaprHttpState, no_content, require};
use crate::status::{DaprComponent, DaprHttpOp, dapr_http_error};

/// Dapr's code for bulk entries that cannot be turned into bytes.
const EVENTS_SER: &str = "ERR_PUBSUB_EVENTS_SER";

pub(super) async fn publish(
    State(s): State<DaprHttpState>,
    Path((pubsub, topic)): Path<(String, String)>,
    headers: HeaderMap,
    query: Query,
    body: Result<Body, ApiError>,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::PubSub, &pubsub)?;
    let Body(data) = body?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    s.rt.pubsub
        .publish(&pubsub, &topic, &data, &content_type, query.metadata())
        .await
        .map_err(|e| ApiError::op(DaprHttpOp::Publish, &e))?;
    Ok(no_content())
}

/// A publish whose path ends before the topic.
pub(super) async fn no_topic(
    State(s): State<DaprHttpState>,
    Path(pubsub): Path<String>,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::PubSub, &pubsub)?;
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "ERR_TOPIC_NAME_EMPTY",
        format!("topic is empty in pubsub {pubsub:?}"),
    ))
}

/// One entry of a bulk publish.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    #[serde(default)]
    entry_id: String,
    #[serde(default)]
    event: Option<Box<RawValue>>,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// An entry's event as bytes, by its content type, as Dapr converts them: base64 text for
/// `application/octet-stream`, a string for text and XML, the JSON itself for JSON.
fn event_bytes(entry: &Entry, index: usize) -> Result<Vec<u8>, ApiError> {
    let mismatch = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            EVENTS_SER,
            format!(
                "[{index}] (entryId {:?}): event does not match contentType {:?}: {why}",
                entry.entry_id, entry.content_type
            ),
        )
    };
    let raw = entry.event.as_deref().map(RawValue::get).unwrap_or("null");
    let ct = essence(&entry.content_type);
    let as_string =
        || serde_json::from_str::<String>(raw).map_err(|_| mismatch("expected a string"));
    if ct == "application/octet-stream" {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(as_string()?)
            .map_err(|e| mismatch(&format!("not base64: {e}")))
    } else if ct.starts_with("text/") || ct == "application/xml" {
        Ok(as_string()?.into_bytes())
    } else if is_json(&ct) {
        Ok(raw.as_bytes().to_vec())
    } else {
        Err(mismatch(
            "use application/json, application/cloudevents+json, text/*, application/xml or application/octet-stream",
        ))
    }
}

pub(super) async fn bulk_publish(
    State(s): State<DaprHttpState>,
    Path((pubsub, topic)): Path<(String, String)>,
    query: Query,
    body: Result<Json<Vec<Entry>>, ApiError>,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::PubSub, &pubsub)?;
    let Json(entries) = body.map_err(|e| e.recode_malformed(EVENTS_SER))?;
    let entries = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            Ok(BulkEntry {
                event: event_bytes(entry, i)?,
                entry_id: entry.entry_id.clone(),
                content_type: entry.content_type.clone(),
                metadata: entry.metadata.clone().unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let failed =
        s.rt.pubsub
            .bulk_publish(&pubsub, &topic, entries, query.metadata())
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::BulkPublish, &e))?;
    let Some((_, first)) = failed.first() else {
        return Ok(no_content());
    };
    // Dapr's partial failure: the failed entries, and the error code, in the body.
    let (status, code) = dapr_http_error(DaprHttpOp::Publish, first.kind());
    let failed_entries: Vec<_> = failed
        .iter()
        .map(|(entry_id, e)| serde_json::json!({ "entryId": entry_id, "error": e.message() }))
        .collect();
    let body = serde_json::json!({ "failedEntries": failed_entries, "errorCode": code });
    Ok((status, axum::Json(body)).into_response())
}
