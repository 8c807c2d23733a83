//! Where subscriptions come from, and in which order app and sidecar start.

use crate::app::{AppBuilder, Reply, TestApp, reply, summary};
use crate::common::{Plinth, scratch, unique, write};
use crate::support::{WAIT, publish, wait_log, wait_outcome, wait_subscribed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_may_start_after_plinth() {
    let topic = unique("late");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
        probe.local_addr().expect("probe address").port()
    };
    let plinth = Plinth::start_with(
        &[
            "--app-port",
            &port.to_string(),
            "--app-protocol",
            "grpc",
            "--log-level",
            "info,plinth_runtime=debug",
        ],
        None,
    );
    // Plinth has asked, and nobody was there.
    wait_log(&plinth, "`app not answering yet`", |f| {
        f["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("app not answering yet"))
    })
    .await;

    let mut app = TestApp::builder()
        .subscribe(&topic, &[])
        .start_on(port)
        .await;
    app.answer_list();
    wait_subscribed(&plinth, &[&topic]).await;
    assert!(app.list_calls() >= 1);
    let mut c = plinth.client().await;
    publish(&mut c, &topic, b"hello late app", "text/plain").await;
    let d = app.next(WAIT).await;
    assert_eq!(
        (d.event.topic.as_str(), d.event.data.as_slice(), d.attempt),
        (topic.as_str(), &b"hello late app"[..], 1)
    );
    wait_outcome(&plinth, &topic, "success", 1).await;
}

/// A `pubsub.in-memory` component named `pubsub` (with `--resources-path` the embedded
/// defaults are not loaded) and a v2alpha1 Subscription to `topic` dead-lettering to `dlq`,
/// plus one to `dlq` so the dead letters can be seen.
fn resources(topic: &str, dlq: &str) -> std::path::PathBuf {
    let dir = scratch("pubsub-declarative");
    write(
        &dir,
        "resources/pubsub.yaml",
        &format!(
            r#"apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders
spec:
  pubsubname: pubsub
  topic: {topic}
  deadLetterTopic: {dlq}
  routes:
    default: /orders
  metadata:
    maxInFlight: "1"
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders-dead
spec:
  pubsubname: pubsub
  topic: {dlq}
  routes:
    default: /orders-dead
"#
        ),
    );
    dir
}

async fn declarative_subscriptions_deliver(builder: AppBuilder) {
    let (topic, dlq) = (unique("declared"), unique("declared-dlq"));
    let dir = resources(&topic, &dlq);
    let topic2 = topic.clone();
    let mut app = builder
        .handler(reply(move |d| {
            if d.event.topic == topic2 && d.event.data == b"poison" {
                Reply::Drop
            } else {
                Reply::Success
            }
        }))
        .start()
        .await;
    let port = app.port.to_string();
    let plinth = Plinth::start_with(
        &[
            "--app-port",
            &port,
            "--app-protocol",
            "grpc",
            "--resources-path",
            "resources",
        ],
        Some(&dir),
    );
    app.answer_list();
    wait_subscribed(&plinth, &[&topic, &dlq]).await;
    let mut c = plinth.client().await;
    publish(&mut c, &topic, b"poison", "text/plain").await;
    publish(&mut c, &topic, b"fine", "text/plain").await;

    let got = app.next_n(3, WAIT).await;
    let on = |t: &str| {
        got.iter()
            .filter(|d| d.event.topic == t)
            .collect::<Vec<_>>()
    };
    let (main, dead) = (on(&topic), on(&dlq));
    let main_data: Vec<&[u8]> = main.iter().map(|d| d.event.data.as_slice()).collect();
    assert_eq!(main_data, [&b"poison"[..], b"fine"], "{:?}", summary(&got));
    assert_eq!(
        dead.len(),
        1,
        "the declared deadLetterTopic receives the dropped event: {:?}",
        summary(&got)
    );
    assert_eq!(
        (dead[0].event.id.as_str(), dead[0].event.data.as_slice()),
        (main[0].event.id.as_str(), &b"poison"[..])
    );
    wait_outcome(&plinth, &topic, "dead_letter", 1).await;
    wait_outcome(&plinth, &topic, "success", 1).await;
    wait_outcome(&plinth, &dlq, "success", 1).await;
    assert!(app.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_subscription_delivers_to_an_app_listing_none() {
    declarative_subscriptions_deliver(TestApp::builder()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_subscription_delivers_to_an_app_without_list_topic_subscriptions() {
    declarative_subscriptions_deliver(TestApp::builder().without_list()).await;
}
