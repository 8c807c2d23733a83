//! Metadata: `GET /v1.0/metadata` renders the runtime's metadata snapshot (the one Dapr's
//! gRPC `GetMetadata` renders too) in the shape of Dapr's HTTP answer; `PUT
//! /v1.0/metadata/{key}` sets an attribute to the body.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use plinth_runtime::metadata::SubscriptionKind;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::extract::{Body, Path};
use super::{DaprHttpState, no_content};

pub(super) async fn get(State(s): State<DaprHttpState>) -> Response {
    let m = s.rt.metadata.snapshot();
    let components: Vec<Value> = m
        .components
        .into_iter()
        .map(|c| {
            let mut out = Map::new();
            out.insert("name".into(), c.name.into());
            out.insert("type".into(), c.type_name.into());
            if !c.version.is_empty() {
                out.insert("version".into(), c.version.into());
            }
            if !c.capabilities.is_empty() {
                out.insert("capabilities".into(), c.capabilities.into());
            }
            Value::Object(out)
        })
        .collect();
    let subscriptions: Vec<Value> = m
        .subscriptions
        .into_iter()
        .map(|sub| {
            let mut out = Map::new();
            out.insert("pubsubname".into(), sub.pubsub.into());
            out.insert("topic".into(), sub.topic.into());
            if !sub.metadata.is_empty() {
                out.insert("metadata".into(), json!(sub.metadata));
            }
            out.insert("deadLetterTopic".into(), sub.dead_letter_topic.into());
            let kind = match sub.kind {
                SubscriptionKind::Declarative => "DECLARATIVE",
                SubscriptionKind::Programmatic => "PROGRAMMATIC",
                SubscriptionKind::Streaming => "STREAMING",
            };
            out.insert("type".into(), kind.into());
            Value::Object(out)
        })
        .collect();
    let app = m.app_connection;
    let mut connection = Map::new();
    if let Some(port) = app.port {
        connection.insert("port".into(), port.into());
    }
    if !app.protocol.is_empty() {
        connection.insert("protocol".into(), app.protocol.into());
    }
    if !app.channel_address.is_empty() {
        connection.insert("channelAddress".into(), app.channel_address.into());
    }
    if let Some(n) = app.max_concurrency {
        connection.insert("maxConcurrency".into(), n.into());
    }
    let mut doc = Map::new();
    doc.insert("id".into(), m.id.into());
    doc.insert("runtimeVersion".into(), m.runtime_version.into());
    doc.insert("components".into(), components.into());
    doc.insert("extended".into(), json!(m.extended));
    if !subscriptions.is_empty() {
        doc.insert("subscriptions".into(), subscriptions.into());
    }
    doc.insert("appConnectionProperties".into(), Value::Object(connection));
    // Plinth has no actor runtime.
    doc.insert(
        "actorRuntime".into(),
        json!({ "runtimeStatus": "DISABLED", "hostReady": false }),
    );
    Json(Value::Object(doc)).into_response()
}

pub(super) async fn put(
    State(s): State<DaprHttpState>,
    Path(key): Path<String>,
    body: Result<Body, ApiError>,
) -> Result<Response, ApiError> {
    let Body(value) = body?;
    let value = String::from_utf8(value.to_vec())
        .map_err(|_| ApiError::malformed("the metadata value (the body) is not UTF-8 text"))?;
    s.rt.metadata.set(key, value);
    Ok(no_content())
}
