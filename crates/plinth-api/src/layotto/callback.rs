//! Conversions for Layotto's app callback (`spec.proto.runtime.v1.AppCallback`): the gRPC
//! app channel and the streaming subscription both speak it.

use plinth_proto::runtime::v1 as pb;
use plinth_runtime::pubsub::{Outcome, TopicEvent};

pub(crate) fn outcome_of(status: i32) -> Outcome {
    use pb::topic_event_response::TopicEventResponseStatus as S;
    match S::try_from(status) {
        Ok(S::Success) => Outcome::Success,
        Ok(S::Retry) => Outcome::Retry,
        Ok(S::Drop) => Outcome::Drop,
        Err(_) => Outcome::Error(format!("unknown status {status} from the app")),
    }
}

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
        metadata: event.metadata.clone(),
    }
}
