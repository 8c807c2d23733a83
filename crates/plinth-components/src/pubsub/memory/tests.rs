//! The tests run on a paused clock: a timeout elapses only once every task is idle, so
//! "nothing arrives" is decided without real waiting.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use plinth_core::ErrorKind;

use super::*;

fn message(topic: &str, data: &str) -> PublishRequest {
    PublishRequest {
        topic: topic.into(),
        data: Bytes::from(data.to_owned()),
        content_type: "text/plain".into(),
        ..Default::default()
    }
}

async fn subscribe(
    broker: &InMemoryPubSub,
    topic: &str,
    group: &str,
    max_in_flight: usize,
) -> Subscription {
    let req = SubscribeRequest {
        topic: topic.into(),
        group: group.into(),
        max_in_flight,
        ..Default::default()
    };
    match broker.subscribe(req).await {
        Ok(sub) => sub,
        Err(err) => panic!("subscribe failed: {err}"),
    }
}

async fn publish(broker: &InMemoryPubSub, topic: &str, data: &str) {
    let result = broker.publish(message(topic, data)).await;
    assert!(result.is_ok(), "publish failed: {result:?}");
}

async fn recv(sub: &mut Subscription) -> Option<Delivery> {
    tokio::time::timeout(Duration::from_secs(60), sub.receiver.recv())
        .await
        .ok()
        .flatten()
}

async fn data(sub: &mut Subscription) -> String {
    match recv(sub).await {
        Some(delivery) => {
            let data = String::from_utf8_lossy(&delivery.message.data).into_owned();
            assert!(delivery.ack().await.is_ok());
            data
        }
        None => String::from("<nothing>"),
    }
}

async fn nothing(sub: &mut Subscription) -> bool {
    tokio::time::timeout(Duration::from_secs(60), sub.receiver.recv())
        .await
        .is_err()
}

fn group(broker: &InMemoryPubSub, topic: &str, name: &str) -> Option<Arc<Group>> {
    lock(&broker.topics)
        .get(topic)
        .and_then(|g| g.get(name))
        .cloned()
}

fn queued(broker: &InMemoryPubSub, topic: &str, name: &str) -> usize {
    group(broker, topic, name)
        .map(|g| lock(&g.queue).len())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn messages_carry_an_id_topic_and_content_type() {
    let broker = InMemoryPubSub::default();
    let mut sub = subscribe(&broker, "t", "g", 1).await;
    publish(&broker, "t", "hello").await;
    let delivery = recv(&mut sub).await;
    let message = delivery
        .as_ref()
        .map(|d| d.message.clone())
        .unwrap_or_default();
    assert!(uuid::Uuid::parse_str(&message.id).is_ok_and(|id| id.get_version_num() == 4));
    assert_eq!(
        (message.topic.as_str(), message.content_type.as_str()),
        ("t", "text/plain")
    );
    assert_eq!(message.data, Bytes::from("hello"));
    assert!(broker.features().ordered && !broker.features().durable);
}

#[tokio::test(start_paused = true)]
async fn a_topic_without_groups_keeps_nothing() {
    let broker = InMemoryPubSub::default();
    publish(&broker, "t", "lost").await;
    let mut sub = subscribe(&broker, "t", "g", 1).await;
    assert!(nothing(&mut sub).await);
    publish(&broker, "t", "kept").await;
    assert_eq!(data(&mut sub).await, "kept");
}

#[tokio::test(start_paused = true)]
async fn consumers_of_a_group_compete_and_groups_each_get_everything() {
    let broker = InMemoryPubSub::default();
    let mut a1 = subscribe(&broker, "t", "a", 10).await;
    let mut a2 = subscribe(&broker, "t", "a", 10).await;
    let mut b = subscribe(&broker, "t", "b", 20).await;
    for i in 0..20 {
        publish(&broker, "t", &i.to_string()).await;
    }
    // Each consumer of group a holds 10 unsettled messages; together they have all 20 once.
    let mut held = Vec::new();
    let mut ids = HashSet::new();
    for sub in [&mut a1, &mut a2] {
        for _ in 0..10 {
            let delivery = recv(sub).await;
            assert!(
                delivery
                    .as_ref()
                    .is_some_and(|d| ids.insert(d.message.id.clone()))
            );
            held.extend(delivery);
        }
        assert!(nothing(sub).await, "in flight is bounded");
    }
    assert_eq!(ids.len(), 20);
    let b_got: Vec<String> = {
        let mut got = Vec::new();
        for _ in 0..20 {
            got.push(data(&mut b).await);
        }
        got
    };
    assert_eq!(
        b_got,
        (0..20).map(|i| i.to_string()).collect::<Vec<_>>(),
        "in publish order"
    );
    for delivery in held {
        assert!(delivery.ack().await.is_ok());
    }
    assert!(nothing(&mut a1).await && nothing(&mut a2).await && nothing(&mut b).await);
}

#[tokio::test(start_paused = true)]
async fn nack_and_drop_redeliver_first() {
    let broker = InMemoryPubSub::default();
    let mut sub = subscribe(&broker, "t", "g", 1).await;
    publish(&broker, "t", "one").await;
    publish(&broker, "t", "two").await;
    let first = recv(&mut sub).await;
    let first_id = first.as_ref().map(|d| d.message.id.clone());
    assert!(nothing(&mut sub).await, "one in flight");
    if let Some(delivery) = first {
        assert!(delivery.nack().await.is_ok());
    }
    let again = recv(&mut sub).await;
    assert_eq!(again.as_ref().map(|d| d.message.id.clone()), first_id);
    drop(again);
    assert_eq!(data(&mut sub).await, "one");
    assert_eq!(data(&mut sub).await, "two");
    assert!(nothing(&mut sub).await);
}

#[tokio::test(start_paused = true)]
async fn another_consumer_gets_what_one_gave_back() {
    let broker = InMemoryPubSub::default();
    let mut busy = subscribe(&broker, "t", "g", 1).await;
    publish(&broker, "t", "m").await;
    let held = recv(&mut busy).await;
    let mut idle = subscribe(&broker, "t", "g", 1).await;
    assert!(nothing(&mut idle).await);
    drop(held);
    // `busy` is free again too, so either consumer may win; exactly one does.
    let got = tokio::select! {
        d = recv(&mut busy) => d,
        d = recv(&mut idle) => d,
    };
    assert!(got.is_some_and(|d| d.message.data == "m"));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_the_message_for_every_group() {
    let broker = InMemoryPubSub::new(2);
    let mut fast = subscribe(&broker, "t", "fast", 10).await;
    drop(subscribe(&broker, "t", "slow", 1).await);
    publish(&broker, "t", "1").await;
    publish(&broker, "t", "2").await;
    assert_eq!(data(&mut fast).await, "1");
    assert_eq!(data(&mut fast).await, "2");
    assert_eq!(queued(&broker, "t", "slow"), 2);

    let err = broker.publish(message("t", "3")).await.err();
    assert_eq!(
        err.as_ref().map(|e| e.kind()),
        Some(ErrorKind::ResourceExhausted)
    );
    let text = err.map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(
        text.contains("\"t\"") && text.contains("\"slow\""),
        "{text}"
    );
    assert!(
        nothing(&mut fast).await,
        "no group got the rejected message"
    );
    assert_eq!(queued(&broker, "t", "slow"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_group_keeps_messages_while_its_consumers_are_away() {
    let broker = InMemoryPubSub::default();
    drop(subscribe(&broker, "t", "g", 5).await);
    publish(&broker, "t", "1").await;
    publish(&broker, "t", "2").await;
    let mut back = subscribe(&broker, "t", "g", 5).await;
    assert_eq!(data(&mut back).await, "1");
    assert_eq!(data(&mut back).await, "2");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_receiver_returns_what_it_had_not_handed_out() {
    let broker = InMemoryPubSub::default();
    let sub = subscribe(&broker, "t", "g", 3).await;
    for i in 1..=4 {
        publish(&broker, "t", &i.to_string()).await;
    }
    // Wait until the subscription's task has taken three messages into its channel.
    for _ in 0..1000 {
        if queued(&broker, "t", "g") == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(queued(&broker, "t", "g"), 1);
    drop(sub);
    assert_eq!(queued(&broker, "t", "g"), 4);
    let mut next = subscribe(&broker, "t", "g", 10).await;
    for want in ["1", "2", "3", "4"] {
        assert_eq!(data(&mut next).await, want, "publish order is kept");
    }
}

#[tokio::test(start_paused = true)]
async fn close_ends_subscriptions_and_refuses_publishing() {
    let broker = InMemoryPubSub::default();
    let mut sub = subscribe(&broker, "t", "g", 1).await;
    broker.close().await;
    assert!(recv(&mut sub).await.is_none());
    let err = broker
        .publish(message("t", "x"))
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::Unavailable));
}

#[test]
fn factory_validates_the_queue_length() {
    let spec = |v: &str| ComponentSpec::new("p", TYPE_NAME).with_metadata(MAX_QUEUE_LENGTH, v);
    assert!(factory(&spec("5")).is_ok());
    assert!(factory(&spec("0")).is_err());
    assert!(factory(&spec("many")).is_err());
    assert!(factory(&ComponentSpec::new("p", TYPE_NAME)).is_ok());
}
