//! Delivery outcomes through the app callback: what Plinth does with SUCCESS, RETRY, DROP and
//! UNIMPLEMENTED, with and without a dead-letter topic.
//!
//! "Nothing else was delivered" is decided without waiting: with `maxInFlight: 1` the broker
//! hands out the next message only after the previous one is settled, and a message returned
//! unsettled goes back ahead of later ones, so a marker published afterwards arriving next
//! proves the earlier message was acknowledged. Once every message has a final outcome in
//! `/metrics` (counted after the app answered), nothing can be redelivered.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::app::{Delivery, PUBSUB, Reply, TestApp, always, reply, summary};
use crate::common::unique;
use crate::support::{
    WAIT, outcome_count, publish, start_for, wait_metric, wait_outcome, wait_subscribed,
};

const POISON: &[u8] = b"poison";
const MARKER: &[u8] = b"marker";

fn poison_gets(r: Reply) -> crate::app::Handler {
    reply(move |d| {
        if d.event.data == POISON {
            r
        } else {
            Reply::Success
        }
    })
}

fn on<'a>(deliveries: &'a [Delivery], topic: &str) -> Vec<&'a Delivery> {
    deliveries
        .iter()
        .filter(|d| d.event.topic == topic)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_delivers_each_event_once_as_a_cloudevent() {
    let topic = unique("orders");
    let mut app = TestApp::builder().subscribe(&topic, &[]).start().await;
    let app_id = unique("app");
    let plinth = start_for(&app, &["--app-id", &app_id]);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = plinth.client().await;

    let mut sent: HashMap<Vec<u8>, &str> = HashMap::new();
    for i in 0..50u8 {
        let (data, content_type) = match i % 3 {
            0 => (format!("text {i}").into_bytes(), "text/plain"),
            1 => (format!("{{\"n\":{i}}}").into_bytes(), "application/json"),
            _ => (vec![0xff, 0x00, i, 0x80], "application/octet-stream"),
        };
        publish(&mut c, &topic, &data, content_type).await;
        sent.insert(data, content_type);
    }

    let got = app.next_n(50, WAIT).await;
    let mut ids = HashSet::new();
    let mut datas = HashSet::new();
    for d in &got {
        let e = &d.event;
        assert_eq!(e.spec_version, "1.0");
        assert_eq!(e.r#type, "com.dapr.event.sent");
        assert_eq!(e.source, app_id);
        assert_eq!(e.topic, topic);
        assert_eq!(e.pubsub_name, PUBSUB);
        assert_eq!(
            sent.get(&e.data).copied(),
            Some(e.data_content_type.as_str()),
            "data and content type as published: {e:?}"
        );
        assert_eq!(d.attempt, 1, "{e:?}");
        assert!(!e.id.is_empty());
        assert!(ids.insert(e.id.clone()), "duplicate id {}", e.id);
        datas.insert(e.data.clone());
    }
    assert_eq!(datas.len(), 50, "every published event arrived");

    // All 50 settled as SUCCESS, so nothing is left to redeliver: exactly once.
    wait_outcome(&plinth, &topic, "success", 50).await;
    assert!(app.try_next().is_none(), "an event was delivered twice");
    assert_eq!(outcome_count(&plinth, &topic, "retry").await, 0.0);
    wait_metric(
        &plinth,
        "plinth_pubsub_published_total",
        &[("pubsub", PUBSUB), ("topic", &topic)],
        50.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_redelivers_until_success() {
    let topic = unique("retry");
    let handler = reply(|d| {
        if d.event.data != MARKER && d.attempt <= 2 {
            Reply::Retry
        } else {
            Reply::Success
        }
    });
    let mut app = TestApp::builder()
        .subscribe(
            &topic,
            &[("retryInitialInterval", "10ms"), ("maxInFlight", "1")],
        )
        .handler(handler)
        .start()
        .await;
    let plinth = start_for(&app, &[]);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = plinth.client().await;
    for i in 0..5 {
        publish(&mut c, &topic, format!("m{i}").as_bytes(), "text/plain").await;
    }
    publish(&mut c, &topic, MARKER, "text/plain").await;

    // One at a time: each message three times (RETRY, RETRY, SUCCESS), in publish order, and
    // the marker's first attempt succeeds.
    let got = app.next_n(5 * 3 + 1, WAIT).await;
    let mut expected: Vec<(String, u32)> = (0..5)
        .flat_map(|i| (1..=3).map(move |a| (format!("m{i}"), a)))
        .collect();
    expected.push(("marker".into(), 1));
    let seen: Vec<(String, u32)> = got
        .iter()
        .map(|d| {
            (
                String::from_utf8_lossy(&d.event.data).into_owned(),
                d.attempt,
            )
        })
        .collect();
    assert_eq!(seen, expected);
    for chunk in got[..15].chunks(3) {
        assert!(
            chunk.iter().all(|d| d.event.id == chunk[0].event.id),
            "a redelivery keeps the event id: {:?}",
            summary(chunk)
        );
    }
    let ids: HashSet<_> = got.iter().map(|d| d.event.id.clone()).collect();
    assert_eq!(ids.len(), 6);

    wait_outcome(&plinth, &topic, "success", 6).await;
    assert_eq!(outcome_count(&plinth, &topic, "retry").await, 10.0);
    assert!(app.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_goes_to_the_dead_letter_topic_with_the_original_event() {
    let (topic, dlq) = (unique("drop"), unique("drop-dlq"));
    let mut app = TestApp::builder()
        .subscribe(
            &topic,
            &[("deadLetterTopic", dlq.as_str()), ("maxInFlight", "1")],
        )
        .subscribe(&dlq, &[])
        .handler(reply({
            let topic = topic.clone();
            move |d| {
                if d.event.topic == topic && d.event.data == POISON {
                    Reply::Drop
                } else {
                    Reply::Success
                }
            }
        }))
        .start()
        .await;
    let plinth = start_for(&app, &[]);
    wait_subscribed(&plinth, &[&topic, &dlq]).await;
    let mut c = plinth.client().await;
    publish(&mut c, &topic, POISON, "application/octet-stream").await;
    publish(&mut c, &topic, MARKER, "text/plain").await;

    let got = app.next_n(3, WAIT).await;
    let main = on(&got, &topic);
    let dead = on(&got, &dlq);
    assert_eq!(main.len(), 2, "{:?}", summary(&got));
    assert_eq!(
        (main[0].event.data.as_slice(), main[0].attempt),
        (POISON, 1)
    );
    assert_eq!(
        main[1].event.data, MARKER,
        "the dropped event was not redelivered"
    );
    assert_eq!(dead.len(), 1, "{:?}", summary(&got));
    let (original, dead) = (&main[0].event, &dead[0].event);
    assert_eq!(
        dead.id, original.id,
        "the dead letter keeps the original id"
    );
    assert_eq!(dead.data, POISON);
    assert_eq!(dead.data_content_type, "application/octet-stream");
    assert_eq!(dead.source, original.source);
    assert_eq!(dead.pubsub_name, PUBSUB);

    wait_outcome(&plinth, &topic, "dead_letter", 1).await;
    wait_outcome(&plinth, &topic, "success", 1).await;
    wait_outcome(&plinth, &dlq, "success", 1).await;
    assert_eq!(outcome_count(&plinth, &topic, "drop").await, 0.0);
    assert!(app.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_go_to_the_dead_letter_topic() {
    let (topic, dlq) = (unique("exhaust"), unique("exhaust-dlq"));
    let meta = [
        ("deadLetterTopic", dlq.as_str()),
        ("maxDeliveryAttempts", "3"),
        ("retryInitialInterval", "10ms"),
        ("maxInFlight", "1"),
    ];
    let mut app = TestApp::builder()
        .subscribe(&topic, &meta)
        .subscribe(&dlq, &[])
        .start()
        .await;
    let topic2 = topic.clone();
    app.set_handler(reply(move |d| {
        if d.event.topic == topic2 && d.event.data == POISON {
            Reply::Retry
        } else {
            Reply::Success
        }
    }));
    let plinth = start_for(&app, &[]);
    wait_subscribed(&plinth, &[&topic, &dlq]).await;
    let mut c = plinth.client().await;
    publish(&mut c, &topic, POISON, "text/plain").await;
    publish(&mut c, &topic, MARKER, "text/plain").await;

    let got = app.next_n(5, WAIT).await;
    let main: Vec<(&[u8], u32)> = on(&got, &topic)
        .iter()
        .map(|d| (d.event.data.as_slice(), d.attempt))
        .collect();
    assert_eq!(
        main,
        [(POISON, 1), (POISON, 2), (POISON, 3), (MARKER, 1)],
        "exactly maxDeliveryAttempts attempts"
    );
    let dead = on(&got, &dlq);
    assert_eq!(dead.len(), 1, "{:?}", summary(&got));
    assert_eq!(dead[0].event.id, got[0].event.id);
    assert_eq!(dead[0].event.data, POISON);
    assert_eq!(dead[0].event.data_content_type, "text/plain");

    wait_outcome(&plinth, &topic, "dead_letter", 1).await;
    wait_outcome(&plinth, &dlq, "success", 1).await;
    wait_outcome(&plinth, &topic, "success", 1).await;
    assert_eq!(outcome_count(&plinth, &topic, "retry").await, 3.0);
    assert!(app.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_without_dead_letter_topic_park_the_event() {
    let topic = unique("park");
    let meta = [
        ("maxDeliveryAttempts", "2"),
        ("retryInitialInterval", "10ms"),
        ("retryMaxInterval", "200ms"),
    ];
    let mut app = TestApp::builder()
        .subscribe(&topic, &meta)
        .handler(always(Reply::Retry))
        .start()
        .await;
    let plinth = start_for(&app, &[]);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = plinth.client().await;
    publish(&mut c, &topic, b"stuck", "text/plain").await;

    // Parked, not acked: still redelivered, now at the slowest interval.
    let got = app.next_n(4, WAIT).await;
    assert!(
        got.iter().all(|d| d.event.id == got[0].event.id),
        "{:?}",
        summary(&got)
    );
    assert_eq!(
        got.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for pair in got[1..].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(200),
            "a parked event waits retryMaxInterval between attempts, waited {gap:?}"
        );
    }
    let parked = [("pubsub", PUBSUB), ("topic", topic.as_str())];
    wait_metric(&plinth, "plinth_pubsub_parked_messages", &parked, 1.0).await;

    // The subscriber recovers: the parked event is delivered and no longer counted.
    app.set_handler(always(Reply::Success));
    wait_outcome(&plinth, &topic, "success", 1).await;
    wait_metric(&plinth, "plinth_pubsub_parked_messages", &parked, 0.0).await;
    while let Some(d) = app.try_next() {
        assert_eq!(
            d.event.id, got[0].event.id,
            "only the parked event was in flight"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_without_dead_letter_topic_acks_and_counts() {
    let topic = unique("drop-nodlq");
    let mut app = TestApp::builder()
        .subscribe(&topic, &[("maxInFlight", "1")])
        .handler(poison_gets(Reply::Drop))
        .start()
        .await;
    let plinth = start_for(&app, &[]);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = plinth.client().await;
    publish(&mut c, &topic, POISON, "text/plain").await;
    publish(&mut c, &topic, MARKER, "text/plain").await;

    let got = app.next_n(2, WAIT).await;
    let seen: Vec<(&[u8], u32)> = got
        .iter()
        .map(|d| (d.event.data.as_slice(), d.attempt))
        .collect();
    assert_eq!(
        seen,
        [(POISON, 1), (MARKER, 1)],
        "the dropped event is acked, not redelivered"
    );

    wait_outcome(&plinth, &topic, "drop", 1).await;
    wait_outcome(&plinth, &topic, "success", 1).await;
    assert_eq!(outcome_count(&plinth, &topic, "retry").await, 0.0);
    assert!(app.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unimplemented_acks_without_dead_letter() {
    let (topic, dlq) = (unique("unimpl"), unique("unimpl-dlq"));
    let topic2 = topic.clone();
    let handler = reply(move |d| {
        if d.event.topic == topic2 {
            Reply::Fail(tonic::Code::Unimplemented)
        } else {
            Reply::Success
        }
    });
    let mut app = TestApp::builder()
        .subscribe(
            &topic,
            &[("deadLetterTopic", dlq.as_str()), ("maxInFlight", "1")],
        )
        .subscribe(&dlq, &[("maxInFlight", "1")])
        .handler(handler)
        .start()
        .await;
    let plinth = start_for(&app, &[]);
    wait_subscribed(&plinth, &[&topic, &dlq]).await;
    let mut c = plinth.client().await;
    publish(&mut c, &topic, b"first", "text/plain").await;
    publish(&mut c, &topic, b"second", "text/plain").await;

    let got = app.next_n(2, WAIT).await;
    let seen: Vec<(&[u8], &str, u32)> = got
        .iter()
        .map(|d| (d.event.data.as_slice(), d.event.topic.as_str(), d.attempt))
        .collect();
    assert_eq!(
        seen,
        [
            (&b"first"[..], topic.as_str(), 1),
            (&b"second"[..], topic.as_str(), 1)
        ],
        "acked, not redelivered"
    );
    wait_outcome(&plinth, &topic, "unimplemented", 2).await;

    // Had either been dead-lettered (before its ack), it would be ahead of this marker.
    publish(&mut c, &dlq, MARKER, "text/plain").await;
    let next = app.next(WAIT).await;
    assert_eq!(
        (next.event.topic.as_str(), next.event.data.as_slice()),
        (dlq.as_str(), MARKER),
        "no dead letter"
    );
    wait_outcome(&plinth, &dlq, "success", 1).await;
    assert_eq!(outcome_count(&plinth, &topic, "dead_letter").await, 0.0);
    assert!(app.try_next().is_none());
}
