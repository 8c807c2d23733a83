//! State: `GET|DELETE /v1.0/state/{store}/{key}`, `POST|PUT /v1.0/state/{store}`,
//! `/bulk` and `/transaction`.
//!
//! Dapr stores a value saved over HTTP as its JSON encoding (a string `"abc"` is the five
//! bytes `"abc"`), and answers a GET with the stored bytes as they are. Plinth keeps the
//! JSON text exactly as sent, so numbers and key order survive.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use plinth_core::Metadata;
use plinth_core::component::state::{
    Concurrency, Consistency, DeleteRequest, SetRequest, StateOptions, TransactionOp,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::ApiError;
use super::extract::{Json, Path, Query};
use super::{DaprHttpState, FixedKey, metadata_headers, no_content, require};
use crate::status::{DaprComponent, DaprHttpOp};

/// One item of a save, or the request of a transaction operation.
#[derive(Debug, Deserialize)]
pub(super) struct StateItem {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Option<Box<RawValue>>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    options: Option<Options>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Options {
    #[serde(default)]
    concurrency: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct BulkGetRequest {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    parallelism: i64,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Debug, Serialize)]
pub(super) struct BulkGetItem {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct TransactionRequest {
    #[serde(default)]
    operations: Vec<Operation>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Operation {
    #[serde(default)]
    operation: String,
    #[serde(default)]
    request: Option<StateItem>,
}

fn concurrency(value: Option<&str>, field: &str) -> Result<Concurrency, ApiError> {
    match value.unwrap_or_default() {
        "" => Ok(Concurrency::Unspecified),
        "first-write" => Ok(Concurrency::FirstWrite),
        "last-write" => Ok(Concurrency::LastWrite),
        other => Err(ApiError::malformed(format!(
            "{field}: {other:?} is not \"first-write\" or \"last-write\""
        ))),
    }
}

fn consistency(value: Option<&str>, field: &str) -> Result<Consistency, ApiError> {
    match value.unwrap_or_default() {
        "" => Ok(Consistency::Unspecified),
        "eventual" => Ok(Consistency::Eventual),
        "strong" => Ok(Consistency::Strong),
        other => Err(ApiError::malformed(format!(
            "{field}: {other:?} is not \"eventual\" or \"strong\""
        ))),
    }
}

fn options(options: Option<Options>, field: &str) -> Result<StateOptions, ApiError> {
    let o = options.unwrap_or_default();
    Ok(StateOptions {
        concurrency: concurrency(
            o.concurrency.as_deref(),
            &format!("{field}.options.concurrency"),
        )?,
        consistency: consistency(
            o.consistency.as_deref(),
            &format!("{field}.options.consistency"),
        )?,
    })
}

/// Request metadata under the query's `metadata.*`, which wins, as in Dapr.
fn merged(metadata: Option<Metadata>, query: &Metadata) -> Metadata {
    let mut metadata = metadata.unwrap_or_default();
    metadata.extend(query.iter().map(|(k, v)| (k.clone(), v.clone())));
    metadata
}

fn required_key(item: &StateItem, field: &str) -> Result<(), ApiError> {
    if item.key.is_empty() {
        return Err(ApiError::malformed(format!("{field}.key is required")));
    }
    Ok(())
}

/// An empty ETag means none, as on the gRPC APIs.
fn etag(etag: Option<String>) -> Option<String> {
    etag.filter(|e| !e.is_empty())
}

fn set_request(item: StateItem, query: &Metadata, field: &str) -> Result<SetRequest, ApiError> {
    required_key(&item, field)?;
    // An absent value is JSON null, which is what Dapr stores for it.
    let value = match item.value {
        Some(raw) => Bytes::copy_from_slice(raw.get().as_bytes()),
        None => Bytes::from_static(b"null"),
    };
    Ok(SetRequest {
        options: options(item.options, field)?,
        key: item.key,
        value,
        etag: etag(item.etag),
        metadata: merged(item.metadata, query),
    })
}

fn delete_request(
    item: StateItem,
    query: &Metadata,
    field: &str,
) -> Result<DeleteRequest, ApiError> {
    required_key(&item, field)?;
    Ok(DeleteRequest {
        options: options(item.options, field)?,
        key: item.key,
        etag: etag(item.etag),
        metadata: merged(item.metadata, query),
    })
}

/// Stored bytes as a JSON value for a bulk answer: JSON as it is (what HTTP saved), other
/// text as a JSON string, and anything else (bytes saved over gRPC) as a base64 string.
fn json_data(data: &[u8]) -> Box<RawValue> {
    if let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(data) {
        return raw;
    }
    let text = match std::str::from_utf8(data) {
        Ok(text) => text.to_string(),
        Err(_) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(data)
        }
    };
    // Serialising a string cannot fail; JSON null stands in all the same.
    serde_json::value::to_raw_value(&text).unwrap_or_default()
}

pub(super) async fn get(
    State(s): State<DaprHttpState>,
    Path((store, key)): Path<(String, String)>,
    query: Query,
) -> Result<Response, ApiError> {
    get_key(s, store, key, query).await
}

pub(super) async fn get_named<K: FixedKey>(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    get_key(s, store, K::KEY.to_string(), query).await
}

async fn get_key(
    s: DaprHttpState,
    store: String,
    key: String,
    query: Query,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::StateStore, &store)?;
    let consistency = consistency(query.get("consistency"), "consistency")?;
    let got =
        s.rt.state
            .get(&store, &key, query.metadata(), consistency)
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::StateGet, &e))?;
    let Some(value) = got else {
        return Ok(no_content());
    };
    let mut headers = HeaderMap::new();
    // Dapr answers `application/json`; a content type the store kept is more precise.
    let content_type = value
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or(HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Some(etag) = value
        .etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        headers.insert(header::ETAG, etag);
    }
    metadata_headers(&mut headers, &value.metadata);
    Ok((StatusCode::OK, headers, value.data).into_response())
}

pub(super) async fn delete(
    State(s): State<DaprHttpState>,
    Path((store, key)): Path<(String, String)>,
    headers: HeaderMap,
    query: Query,
) -> Result<Response, ApiError> {
    delete_key(s, store, key, &headers, query).await
}

pub(super) async fn delete_named<K: FixedKey>(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    headers: HeaderMap,
    query: Query,
) -> Result<Response, ApiError> {
    delete_key(s, store, K::KEY.to_string(), &headers, query).await
}

async fn delete_key(
    s: DaprHttpState,
    store: String,
    key: String,
    headers: &HeaderMap,
    query: Query,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::StateStore, &store)?;
    let if_match = match headers.get(header::IF_MATCH) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::malformed("If-Match: the ETag is not visible ASCII"))?
                .to_string(),
        ),
        None => None,
    };
    let req = DeleteRequest {
        key,
        etag: etag(if_match),
        metadata: query.metadata(),
        options: StateOptions {
            concurrency: concurrency(query.get("concurrency"), "concurrency")?,
            consistency: consistency(query.get("consistency"), "consistency")?,
        },
    };
    s.rt.state
        .delete(&store, req)
        .await
        .map_err(|e| ApiError::op(DaprHttpOp::StateDelete, &e))?;
    Ok(no_content())
}

pub(super) async fn save(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    query: Query,
    body: Result<Json<Vec<StateItem>>, ApiError>,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::StateStore, &store)?;
    let Json(items) = body?;
    if items.is_empty() {
        return Ok(no_content());
    }
    let metadata = query.metadata();
    let items = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| set_request(item, &metadata, &format!("[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    s.rt.state
        .save(&store, items)
        .await
        .map_err(|e| ApiError::op(DaprHttpOp::StateSave, &e))?;
    Ok(no_content())
}

pub(super) async fn bulk_get(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    query: Query,
    body: Result<Json<BulkGetRequest>, ApiError>,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::StateStore, &store)?;
    let Json(req) = body?;
    if req.parallelism < 0 {
        return Err(ApiError::malformed(format!(
            "parallelism must not be negative, got {}",
            req.parallelism
        )));
    }
    let metadata = merged(req.metadata, &query.metadata());
    let items = if req.keys.is_empty() {
        Vec::new()
    } else {
        s.rt.state
            .bulk_get(&store, req.keys, metadata)
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::StateBulkGet, &e))?
    };
    let items: Vec<BulkGetItem> = items
        .into_iter()
        .map(|item| {
            let mut out = BulkGetItem {
                key: item.key,
                data: None,
                etag: None,
                metadata: Metadata::new(),
                error: item.error.unwrap_or_default(),
            };
            if out.error.is_empty()
                && let Some(v) = item.value
            {
                out.data = Some(json_data(&v.data));
                out.etag = v.etag;
                out.metadata = v.metadata;
            }
            out
        })
        .collect();
    Ok(axum::Json(items).into_response())
}

pub(super) async fn transaction(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    query: Query,
    body: Result<Json<TransactionRequest>, ApiError>,
) -> Result<Response, ApiError> {
    require(&s.rt, DaprComponent::StateStore, &store)?;
    let Json(req) = body?;
    let query = query.metadata();
    let mut ops = Vec::with_capacity(req.operations.len());
    for (i, op) in req.operations.into_iter().enumerate() {
        let field = format!("operations[{i}].request");
        let item = op
            .request
            .ok_or_else(|| ApiError::malformed(format!("{field} is missing")))?;
        ops.push(match op.operation.to_ascii_lowercase().as_str() {
            "upsert" => TransactionOp::Upsert(set_request(item, &query, &field)?),
            "delete" => TransactionOp::Delete(delete_request(item, &query, &field)?),
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    format!(
                        "operations[{i}].operation: operation type {other:?} not supported: use \"upsert\" or \"delete\""
                    ),
                ));
            }
        });
    }
    s.rt.state
        .transact(&store, ops, merged(req.metadata, &query))
        .await
        .map_err(|e| ApiError::op(DaprHttpOp::StateTransaction, &e))?;
    Ok(no_content())
}
