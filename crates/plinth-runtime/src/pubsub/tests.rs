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

mod resubscribe {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use plinth_components::pubsub::memory::InMemoryPubSub;
    use plinth_core::component::pubsub::{
        PubSubFeatures, PublishRequest, SubscribeRequest, Subscription,
    };
    use plinth_core::component::{Component, Instance, PubSub};
    use plinth_core::registry::Registry;
    use plinth_core::{ComponentSpec, Result};
    use tokio::sync::mpsc;

    use crate::components::{ComponentHost, Status};
    use crate::metrics::Metrics;
    use crate::pubsub::{
        DeliveryPolicy, EventHandler, Outcome, PubSubApi, SubscriptionSpec, TopicEvent,
    };

    /// A broker whose first subscription ends at once, as a broker connection that drops.
    #[derive(Debug)]
    struct Flaky {
        subscribes: AtomicUsize,
        inner: InMemoryPubSub,
    }

    #[async_trait]
    impl Component for Flaky {}

    #[async_trait]
    impl PubSub for Flaky {
        fn features(&self) -> PubSubFeatures {
            self.inner.features()
        }
        async fn publish(&self, req: PublishRequest) -> Result<()> {
            self.inner.publish(req).await
        }
        async fn subscribe(&self, req: SubscribeRequest) -> Result<Subscription> {
            let sub = self.inner.subscribe(req).await?;
            if self.subscribes.fetch_add(1, Ordering::SeqCst) == 0 {
                let (_, receiver) = mpsc::channel(1);
                return Ok(Subscription { receiver });
            }
            Ok(sub)
        }
    }

    fn flaky(_: &ComponentSpec) -> Result<Instance> {
        Ok(Instance::PubSub(Arc::new(Flaky {
            subscribes: AtomicUsize::new(0),
            inner: InMemoryPubSub::new(100),
        })))
    }

    #[derive(Debug)]
    struct Record(mpsc::UnboundedSender<TopicEvent>);

    #[async_trait]
    impl EventHandler for Record {
        async fn handle(&self, event: TopicEvent) -> Outcome {
            let _ = self.0.send(event);
            Outcome::Success
        }
    }

    #[tokio::test]
    async fn delivery_resumes_after_the_component_ends_a_subscription() {
        let mut registry = Registry::new();
        registry.register("pubsub.flaky", flaky);
        let metrics = Arc::new(Metrics::new());
        let host = ComponentHost::new(registry, BTreeMap::new(), metrics.clone());
        host.add_all(vec![ComponentSpec::new("ps", "pubsub.flaky")])
            .expect("add");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while host.get("ps").map(|h| h.status().0) != Some(Status::Up) {
            assert!(tokio::time::Instant::now() < deadline, "component not UP");
            tokio::task::yield_now().await;
        }
        let api = PubSubApi::new(host, "app", metrics, None);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let spec = SubscriptionSpec {
            pubsub: "ps".into(),
            topic: "t".into(),
            metadata: Default::default(),
            policy: DeliveryPolicy::default(),
        };
        let _handle = api
            .subscribe(spec, Arc::new(Record(tx)))
            .await
            .expect("subscribe");
        api.publish("ps", "t", b"hello", "text/plain", Default::default())
            .await
            .expect("publish");
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("delivered after resubscribing");
        assert_eq!(event.map(|e| e.data.to_vec()), Some(b"hello".to_vec()));
    }
}

#[test]
fn subscription_spec_folds_the_dead_letter_topic_into_metadata() {
    use super::SubscriptionSpec;
    let spec = SubscriptionSpec::new(
        "ps".into(),
        "t".into(),
        md(&[(keys::MAX_ATTEMPTS, "2")]),
        Some("dead".into()),
    )
    .expect("spec");
    assert_eq!(spec.policy.dead_letter_topic.as_deref(), Some("dead"));
    assert_eq!(
        spec.metadata
            .get(keys::DEAD_LETTER_TOPIC)
            .map(String::as_str),
        Some("dead")
    );
    assert_eq!(spec.policy.max_attempts, 2);
    let none = SubscriptionSpec::new(
        "ps".into(),
        "t".into(),
        Metadata::new(),
        Some(String::new()),
    )
    .expect("spec");
    assert!(
        none.policy.dead_letter_topic.is_none(),
        "an empty dead-letter topic means none"
    );
    assert!(SubscriptionSpec::new(String::new(), "t".into(), Metadata::new(), None).is_err());
    assert!(
        SubscriptionSpec::new(
            "ps".into(),
            "t".into(),
            md(&[(keys::MAX_ATTEMPTS, "0")]),
            None
        )
        .is_err()
    );
}
