//! What the broker components share: the consumer group a subscription joins, the checks
//! every publish and subscribe makes before reaching the broker, and the bound on a
//! subscription's unsettled deliveries.

use plinth_core::component::pubsub::{PublishRequest, SubscribeRequest};
use plinth_core::{ComponentSpec, Error, Result};

/// The most unsettled deliveries one subscription may have, whatever it asks for.
pub(crate) const MAX_IN_FLIGHT_LIMIT: usize = 65_536;

/// Component metadata: the largest payload a publish may carry, in bytes.
pub(crate) const MAX_MESSAGE_BYTES: &str = "maxMessageBytes";

/// Dapr's `consumerID` metadata: when set, every subscription of the component joins this
/// consumer group instead of the app id the building block passes.
pub(crate) const CONSUMER_ID: &str = "consumerID";

/// Read `consumerID` (an empty value counts as unset).
pub(crate) fn consumer_id(spec: &ComponentSpec) -> Option<String> {
    spec.get(CONSUMER_ID)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Read `maxMessageBytes`, which must be positive, with the broker's own default.
pub(crate) fn max_message_bytes(spec: &ComponentSpec, default: usize) -> Result<usize> {
    let max = spec.parse_or(MAX_MESSAGE_BYTES, default)?;
    if max == 0 {
        return Err(spec.invalid(&format!("metadata.{MAX_MESSAGE_BYTES}"), "must be positive"));
    }
    Ok(max)
}

/// Refuse a publish the broker should never see: no topic, or a payload over `max_bytes`
/// (RESOURCE_EXHAUSTED, naming the limit and the key that sets it).
pub(crate) fn check_publish(component: &str, req: &PublishRequest, max_bytes: usize) -> Result<()> {
    if req.topic.is_empty() {
        return Err(Error::invalid_argument("the topic is empty"));
    }
    if req.data.len() > max_bytes {
        return Err(Error::resource_exhausted(format!(
            "pubsub {component:?}: a message of {} bytes is over the limit of {max_bytes} bytes \
             (metadata {MAX_MESSAGE_BYTES})",
            req.data.len()
        )));
    }
    Ok(())
}

/// Refuse a subscription without a topic or group; returns the group to join (`consumerID`
/// when the component sets one) and the in-flight bound, clamped to
/// 1..=[`MAX_IN_FLIGHT_LIMIT`].
pub(crate) fn check_subscribe(
    req: &SubscribeRequest,
    consumer_id: Option<&str>,
) -> Result<(String, usize)> {
    if req.topic.is_empty() || req.group.is_empty() {
        return Err(Error::invalid_argument(
            "a subscription needs a topic and a consumer group",
        ));
    }
    let group = consumer_id.unwrap_or(&req.group).to_owned();
    Ok((group, req.max_in_flight.clamp(1, MAX_IN_FLIGHT_LIMIT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_checks_name_the_limit() {
        let req = PublishRequest {
            topic: "t".into(),
            data: vec![0; 11].into(),
            ..Default::default()
        };
        assert!(check_publish("p", &req, 11).is_ok());
        let err = check_publish("p", &req, 10).expect_err("over");
        assert_eq!(err.kind(), plinth_core::ErrorKind::ResourceExhausted);
        assert!(err.message().contains("10 bytes"), "{err}");
        let empty = PublishRequest::default();
        assert!(check_publish("p", &empty, 10).is_err());
    }

    #[test]
    fn subscribe_checks_and_group() {
        let req = SubscribeRequest {
            topic: "t".into(),
            group: "app".into(),
            max_in_flight: 0,
            ..Default::default()
        };
        assert_eq!(check_subscribe(&req, None).ok(), Some(("app".into(), 1)));
        assert_eq!(
            check_subscribe(&req, Some("shared")).ok(),
            Some(("shared".into(), 1))
        );
        let no_group = SubscribeRequest {
            group: String::new(),
            ..req
        };
        assert!(check_subscribe(&no_group, None).is_err());
    }

    #[test]
    fn max_message_bytes_must_be_positive() {
        let spec = ComponentSpec::new("p", "pubsub.x").with_metadata(MAX_MESSAGE_BYTES, "0");
        assert!(max_message_bytes(&spec, 5).is_err());
        let spec = ComponentSpec::new("p", "pubsub.x");
        assert_eq!(max_message_bytes(&spec, 5).ok(), Some(5));
    }
}
