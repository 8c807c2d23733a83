use std::time::Duration;

use plinth_core::Metadata;

use super::{DeliveryPolicy, keys};

fn md(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_without_metadata() {
    let p = DeliveryPolicy::from_metadata(&Metadata::new()).expect("defaults");
    assert_eq!(p, DeliveryPolicy::default());
    assert_eq!(p.max_attempts, 5);
    assert!(p.dead_letter_topic.is_none());
}

#[test]
fn reads_every_key() {
    let p = DeliveryPolicy::from_metadata(&md(&[
        (keys::DEAD_LETTER_TOPIC, "dead"),
        (keys::MAX_ATTEMPTS, "3"),
        (keys::RETRY_INITIAL, "10ms"),
        (keys::RETRY_MAX, "1s"),
        (keys::MAX_IN_FLIGHT, "1"),
    ]))
    .expect("policy");
    assert_eq!(p.dead_letter_topic.as_deref(), Some("dead"));
    assert_eq!(p.max_attempts, 3);
    assert_eq!(p.initial_backoff, Duration::from_millis(10));
    assert_eq!(p.max_backoff, Duration::from_secs(1));
    assert_eq!(p.max_in_flight, 1);
}

#[test]
fn max_backoff_is_never_below_initial() {
    let p =
        DeliveryPolicy::from_metadata(&md(&[(keys::RETRY_INITIAL, "2s"), (keys::RETRY_MAX, "1s")]))
            .expect("policy");
    assert_eq!(p.max_backoff, Duration::from_secs(2));
}

#[test]
fn bad_values_name_the_key() {
    for (key, value) in [
        (keys::MAX_ATTEMPTS, "0"),
        (keys::MAX_ATTEMPTS, "many"),
        (keys::RETRY_INITIAL, "soon"),
        (keys::RETRY_MAX, "0s"),
        (keys::MAX_IN_FLIGHT, "0"),
        (keys::MAX_IN_FLIGHT, "100000"),
    ] {
        let err = DeliveryPolicy::from_metadata(&md(&[(key, value)])).expect_err(value);
        assert!(err.to_string().contains(key), "{err}");
    }
}
