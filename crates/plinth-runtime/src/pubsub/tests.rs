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

mod topic_scopes {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use plinth_components::pubsub::memory::InMemoryPubSub;
    use plinth_core::component::pubsub::{
        PubSubFeatures, PublishRequest, SubscribeRequest, Subscription,
    };
    use plinth_core::component::{Component, Instance, PubSub};
    use plinth_core::registry::Registry;
    use plinth_core::{ComponentSpec, Error, ErrorKind, Result};

    use crate::components::{ComponentHost, Status};
    use crate::metrics::Metrics;
    use crate::pubsub::{
        BulkEntry, EventHandler, Outcome, PubSubApi, SubscriptionSpec, TopicEvent,
    };

    /// A broker that, like many real ones, rejects metadata keys it does not know.
    #[derive(Debug)]
    struct Strict(InMemoryPubSub);

    fn only_known_keys(spec: &ComponentSpec) -> Result<()> {
        match spec
            .metadata
            .keys()
            .find(|k| k.as_str() != "maxQueueLength")
        {
            Some(k) => Err(spec.invalid(&format!("metadata.{k}"), "unknown key")),
            None => Ok(()),
        }
    }

    fn strict(spec: &ComponentSpec) -> Result<Instance> {
        only_known_keys(spec)?;
        Ok(Instance::PubSub(Arc::new(Strict(InMemoryPubSub::new(100)))))
    }

    #[async_trait]
    impl Component for Strict {
        async fn reconfigure(&self, spec: &ComponentSpec) -> Result<bool> {
            only_known_keys(spec)?;
            Ok(true)
        }
    }

    #[async_trait]
    impl PubSub for Strict {
        fn features(&self) -> PubSubFeatures {
            self.0.features()
        }
        async fn publish(&self, req: PublishRequest) -> Result<()> {
            self.0.publish(req).await
        }
        async fn subscribe(&self, req: SubscribeRequest) -> Result<Subscription> {
            self.0.subscribe(req).await
        }
    }

    #[derive(Debug)]
    struct Ignore;

    #[async_trait]
    impl EventHandler for Ignore {
        async fn handle(&self, _event: TopicEvent) -> Outcome {
            Outcome::Success
        }
    }

    fn scoped() -> ComponentSpec {
        ComponentSpec::new("ps", "pubsub.strict")
            .with_metadata("maxQueueLength", "10")
            .with_metadata("publishingScopes", "app=orders,orders-dead;other=")
            .with_metadata("subscriptionScopes", "app=orders")
            .with_metadata("protectedTopics", "secret")
    }

    async fn host(spec: ComponentSpec) -> Result<Arc<ComponentHost>> {
        let mut registry = Registry::new();
        registry.register("pubsub.strict", strict);
        let host = ComponentHost::new(registry, BTreeMap::new(), Arc::new(Metrics::new()));
        host.add_all(vec![spec])?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while host.get("ps").map(|h| h.status().0) != Some(Status::Up) {
            assert!(tokio::time::Instant::now() < deadline, "component not UP");
            tokio::task::yield_now().await;
        }
        Ok(host)
    }

    fn api(host: &Arc<ComponentHost>, app_id: &str) -> PubSubApi {
        PubSubApi::new(host.clone(), app_id, Arc::new(Metrics::new()), None)
    }

    fn sub(topic: &str, dead_letter: Option<&str>) -> SubscriptionSpec {
        SubscriptionSpec::new(
            "ps".into(),
            topic.into(),
            Default::default(),
            dead_letter.map(Into::into),
        )
        .expect("spec")
    }

    fn denied(result: Result<impl std::fmt::Debug>, app: &str, topic: &str) -> Error {
        let err = result.expect_err("denied");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(
            err.message().contains(&format!("app id {app:?}"))
                && err.message().contains(&format!("topic {topic:?}")),
            "{err}"
        );
        err
    }

    #[tokio::test]
    async fn publish_and_every_subscription_source_are_checked() {
        let host = host(scoped())
            .await
            .expect("the component never sees the scope keys");
        let (app, other, third) = (api(&host, "app"), api(&host, "other"), api(&host, "third"));

        app.publish("ps", "orders", b"x", "text/plain", Default::default())
            .await
            .expect("app may publish to orders");
        denied(
            app.publish("ps", "payments", b"x", "text/plain", Default::default())
                .await,
            "app",
            "payments",
        );
        denied(
            other
                .publish("ps", "orders", b"x", "text/plain", Default::default())
                .await,
            "other",
            "orders",
        );
        third
            .publish("ps", "payments", b"x", "text/plain", Default::default())
            .await
            .expect("an app without scopes may publish anywhere unprotected");
        denied(
            third
                .publish("ps", "secret", b"x", "text/plain", Default::default())
                .await,
            "third",
            "secret",
        );
        let entries = vec![BulkEntry {
            entry_id: "1".into(),
            event: b"x".to_vec(),
            content_type: "text/plain".into(),
            ..Default::default()
        }];
        denied(
            other
                .bulk_publish("ps", "orders", entries, Default::default())
                .await,
            "other",
            "orders",
        );

        let handler: Arc<dyn EventHandler> = Arc::new(Ignore);
        let _ok = app
            .subscribe(sub("orders", Some("orders-dead")), handler.clone())
            .await
            .expect("app may subscribe to orders");
        denied(
            app.subscribe(sub("payments", None), handler.clone()).await,
            "app",
            "payments",
        );
        denied(
            app.subscribe_durably(sub("payments", None), handler.clone()),
            "app",
            "payments",
        );
        denied(
            third.subscribe_durably(sub("secret", None), handler.clone()),
            "third",
            "secret",
        );
        // The dead-letter topic must be publishable, or dead-lettering would fail later.
        let dlq = denied(
            app.subscribe(sub("orders", Some("payments")), handler.clone())
                .await,
            "app",
            "payments",
        );
        assert!(dlq.message().starts_with("dead-letter topic: "), "{dlq}");
    }

    #[tokio::test]
    async fn invalid_scopes_stop_the_build_and_a_reconfiguration() {
        let bad = ComponentSpec::new("ps", "pubsub.strict")
            .with_metadata("publishingScopes", "app:orders");
        let err = host(bad.clone()).await.expect_err("malformed scopes");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string().contains("metadata.publishingScopes"),
            "{err}"
        );

        let host = host(scoped()).await.expect("host");
        let err = host.replace(bad).await.expect_err("malformed scopes");
        assert!(
            err.to_string().contains("metadata.publishingScopes"),
            "{err}"
        );
        // A valid change takes effect at once; the component still never sees the keys.
        let opened = scoped().with_metadata("subscriptionScopes", "app=orders,payments");
        host.replace(opened).await.expect("reconfigure");
        let app = api(&host, "app");
        let _sub = app
            .subscribe(sub("payments", None), Arc::new(Ignore))
            .await
            .expect("allowed after the change");
    }
}
