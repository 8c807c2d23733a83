//! Message conversions between Layotto's protos and the building blocks' model.

use plinth_core::component::configuration::ConfigurationItem;
use plinth_core::component::state::{
    Concurrency, Consistency, DeleteRequest, SetRequest, StateOptions,
};
use plinth_proto::runtime::v1 as pb;
use tonic::Status;

pub(super) fn consistency(value: i32) -> Result<Consistency, Status> {
    use pb::state_options::StateConsistency as C;
    match C::try_from(value) {
        Ok(C::ConsistencyUnspecified) => Ok(Consistency::Unspecified),
        Ok(C::ConsistencyEventual) => Ok(Consistency::Eventual),
        Ok(C::ConsistencyStrong) => Ok(Consistency::Strong),
        Err(_) => Err(Status::invalid_argument(format!(
            "consistency {value} is not a known value"
        ))),
    }
}

pub(super) fn options(options: Option<pb::StateOptions>) -> Result<StateOptions, Status> {
    use pb::state_options::StateConcurrency as C;
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

pub(super) fn set_request(item: pb::StateItem) -> Result<SetRequest, Status> {
    Ok(SetRequest {
        options: options(item.options)?,
        key: item.key,
        value: item.value.into(),
        etag: item.etag.map(|e| e.value).filter(|e| !e.is_empty()),
        metadata: item.metadata,
    })
}

pub(super) fn delete_request(item: pb::StateItem) -> Result<DeleteRequest, Status> {
    Ok(DeleteRequest {
        options: options(item.options)?,
        key: item.key,
        etag: item.etag.map(|e| e.value).filter(|e| !e.is_empty()),
        metadata: item.metadata,
    })
}

pub(super) fn config_item_out(item: ConfigurationItem) -> pb::ConfigurationItem {
    pb::ConfigurationItem {
        key: item.key,
        content: item.content,
        group: item.group,
        label: item.label,
        tags: item.tags,
        metadata: item.metadata,
    }
}

pub(super) fn config_item_in(item: pb::ConfigurationItem) -> ConfigurationItem {
    ConfigurationItem {
        key: item.key,
        content: item.content,
        group: item.group,
        label: item.label,
        tags: item.tags,
        metadata: item.metadata,
        version: String::new(),
    }
}
