//! Message conversions between Dapr's protos and the building blocks' model. Dapr's messages
//! share names with Layotto's but are different wire types, so they convert here, not there.

use ::dapr::dapr::proto::common::v1 as common;
use ::dapr::dapr::proto::runtime::v1 as pb;
use plinth_core::component::configuration::ConfigurationItem;
use plinth_core::component::state::{
    Concurrency, Consistency, DeleteRequest, SetRequest, StateOptions,
};
use plinth_runtime::metadata::{MetadataSnapshot, SubscriptionKind};
use plinth_runtime::pubsub::{Outcome, TopicEvent};
use tonic::Status;

pub(super) fn consistency(value: i32) -> Result<Consistency, Status> {
    use common::state_options::StateConsistency as C;
    match C::try_from(value) {
        Ok(C::ConsistencyUnspecified) => Ok(Consistency::Unspecified),
        Ok(C::ConsistencyEventual) => Ok(Consistency::Eventual),
        Ok(C::ConsistencyStrong) => Ok(Consistency::Strong),
        Err(_) => Err(Status::invalid_argument(format!(
            "consistency {value} is not a known value"
        ))),
    }
}

pub(super) fn options(options: Option<common::StateOptions>) -> Result<StateOptions, Status> {
    use common::state_options::StateConcurrency as C;
    let Some(o) = options else {
        return Ok(StateOptions::default());
    };
    let concurrency = match C::try_from(o.concurrency) {
        Ok(C::ConcurrencyUnspecified) => Concurrency::Unspecified,
        Ok(C::ConcurrencyFirstWrite) => Concurrency::FirstWrite,
        Ok(C::ConcurrencyLastWrite) => Concurrency::LastWrite,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "concurrency {} is not a known value",
                o.concurrency
            )));
        }
    };
    Ok(StateOptions {
        concurrency,
        consistency: consistency(o.consistency)?,
    })
}

/// An empty ETag means "none", as Dapr's SDKs send it.
fn etag(etag: Option<common::Etag>) -> Option<String> {
    etag.map(|e| e.value).filter(|e| !e.is_empty())
}

pub(super) fn set_request(item: common::StateItem) -> Result<SetRequest, Status> {
    Ok(SetRequest {
        options: options(item.options)?,
        key: item.key,
        value: item.value.into(),
        etag: etag(item.etag),
        metadata: item.metadata,
    })
}

pub(super) fn delete_request(item: common::StateItem) -> Result<DeleteRequest, Status> {
    Ok(DeleteRequest {
        options: options(item.options)?,
        key: item.key,
        etag: etag(item.etag),
        metadata: item.metadata,
    })
}

/// Dapr's configuration item has no group or label: `value` is the building block's content.
pub(super) fn config_item_out(item: ConfigurationItem) -> (String, common::ConfigurationItem) {
    (
        item.key,
        common::ConfigurationItem {
            value: item.content,
            version: item.version,
            metadata: item.metadata,
        },
    )
}

pub(crate) fn outcome_of(status: i32) -> Outcome {
    use pb::topic_event_response::TopicEventResponseStatus as S;
    match S::try_from(status) {
        Ok(S::Success) => Outcome::Success,
        Ok(S::Retry) => Outcome::Retry,
        Ok(S::Drop) => Outcome::Drop,
        Err(_) => Outcome::Error(format!("unknown status {status} from the subscriber")),
    }
}

/// Dapr's event message. `path` (an HTTP route) and `extensions` have no source in the
/// building block's event and stay empty.
pub(crate) fn event_request(event: &TopicEvent) -> pb::TopicEventRequest {
    pb::TopicEventRequest {
        id: event.id.clone(),
        source: event.source.clone(),
        r#type: event.event_type.clone(),
        spec_version: event.spec_version.clone(),
        data_content_type: event.data_content_type.clone(),
        data: event.data.to_vec(),
        topic: event.topic.clone(),
        pubsub_name: event.pubsub_name.clone(),
        path: String::new(),
        extensions: None,
    }
}

/// A JSON value as protobuf's `Value`.
pub(crate) fn json_to_prost(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_prost).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, json_to_prost(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The metadata snapshot every front door shares, as Dapr's `GetMetadataResponse`.
pub(super) fn metadata(m: MetadataSnapshot) -> pb::GetMetadataResponse {
    let registered_components = m
        .components
        .into_iter()
        .map(|c| pb::RegisteredComponents {
            name: c.name,
            r#type: c.type_name,
            version: c.version,
            capabilities: c.capabilities,
        })
        .collect();
    let subscriptions = m
        .subscriptions
        .into_iter()
        .map(|s| pb::PubsubSubscription {
            pubsub_name: s.pubsub,
            topic: s.topic,
            metadata: s.metadata.into_iter().collect(),
            rules: None,
            dead_letter_topic: s.dead_letter_topic,
            r#type: match s.kind {
                SubscriptionKind::Declarative => pb::PubsubSubscriptionType::Declarative,
                SubscriptionKind::Programmatic => pb::PubsubSubscriptionType::Programmatic,
                SubscriptionKind::Streaming => pb::PubsubSubscriptionType::Streaming,
            } as i32,
        })
        .collect();
    let app = m.app_connection;
    pb::GetMetadataResponse {
        id: m.id,
        registered_components,
        extended_metadata: m.extended.into_iter().collect(),
        subscriptions,
        app_connection_properties: Some(pb::AppConnectionProperties {
            port: app.port.map(i32::from).unwrap_or_default(),
            protocol: app.protocol,
            channel_address: app.channel_address,
            max_concurrency: app
                .max_concurrency
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX))
                .unwrap_or_default(),
            health: None,
        }),
        runtime_version: m.runtime_version.into(),
        // Plinth has no actor runtime.
        actor_runtime: Some(pb::ActorRuntime {
            runtime_status: pb::actor_runtime::ActorRuntimeStatus::Disabled as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}
