//! Helpers shared by the pub/sub tests: starting Plinth against a test app, waiting for
//! subscriptions, publishing, and reading `/metrics`.

use std::collections::HashSet;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use plinth_proto::runtime::v1 as pb;
use plinth_proto::runtime::v1::runtime_client::RuntimeClient;
use tonic::transport::Channel;

use crate::app::{PUBSUB, TestApp};
use crate::common::Plinth;

/// The bound on every wait for something that should happen.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) type Client = RuntimeClient<Channel>;

/// Plinth delivering to `app`, with `extra` arguments. The app answers Plinth's
/// ListTopicSubscriptions only once Plinth has started, so the `subscribed` lines come after
/// the startup lines the harness consumes.
pub(crate) fn start_for(app: &TestApp, extra: &[&str]) -> Plinth {
    start_via(app, app.port, extra)
}

/// [`start_for`], with Plinth reaching the app on `port` (a proxy in front of it).
pub(crate) fn start_via(app: &TestApp, port: u16, extra: &[&str]) -> Plinth {
    let port = port.to_string();
    let mut args = vec!["--app-port", port.as_str(), "--app-protocol", "grpc"];
    args.extend_from_slice(extra);
    let plinth = Plinth::start_with(&args, None);
    app.answer_list();
    plinth
}

/// Wait for a JSON log line whose `fields` satisfy `pred`; returns those fields. Polls, so
/// the async runtime (and the test app on it) keeps running.
pub(crate) async fn wait_log(
    plinth: &Plinth,
    what: &str,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match plinth.logs.try_recv() {
            Ok(line) => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if pred(&v["fields"]) {
                    return v["fields"].clone();
                }
                seen.push(line);
            }
            Err(TryRecvError::Empty) => {
                let tail = seen[seen.len().saturating_sub(20)..].join("\n");
                assert!(
                    Instant::now() < deadline,
                    "no log line {what} within {WAIT:?}; the last lines:\n{tail}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(TryRecvError::Disconnected) => panic!("plinth exited while waiting for {what}"),
        }
    }
}

/// Wait until Plinth has subscribed to every topic in `topics` (the `subscribed` log line),
/// so that what is published next is kept for the app's consumer group.
pub(crate) async fn wait_subscribed(plinth: &Plinth, topics: &[&str]) {
    let mut missing: HashSet<&str> = topics.iter().copied().collect();
    while !missing.is_empty() {
        let what = format!("`subscribed` for {missing:?}");
        let fields = wait_log(plinth, &what, |f| {
            f["message"] == "subscribed" && f["topic"].as_str().is_some_and(|t| missing.contains(t))
        })
        .await;
        let topic = fields["topic"].as_str().unwrap_or_default().to_string();
        missing.remove(topic.as_str());
    }
}

/// Publish through the Layotto API on [`PUBSUB`].
pub(crate) async fn publish(c: &mut Client, topic: &str, data: &[u8], content_type: &str) {
    try_publish(c, PUBSUB, topic, data, content_type)
        .await
        .unwrap_or_else(|e| panic!("publish to {topic}: {e:?}"));
}

/// Publish and return the status.
pub(crate) async fn try_publish(
    c: &mut Client,
    pubsub: &str,
    topic: &str,
    data: &[u8],
    content_type: &str,
) -> Result<(), tonic::Status> {
    c.publish_event(pb::PublishEventRequest {
        pubsub_name: pubsub.into(),
        topic: topic.into(),
        data: data.to_vec(),
        data_content_type: content_type.into(),
        metadata: Default::default(),
    })
    .await
    .map(|_| ())
}

/// The value of a sample in Prometheus text, matched by name and label values.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let matches = metric == name
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        if matches { value.parse().ok() } else { None }
    })
}

/// A sample of Plinth's `/metrics`.
pub(crate) async fn metric(plinth: &Plinth, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (status, body) = plinth.admin_get("/metrics").await;
    assert_eq!(status, 200, "/metrics: {body}");
    sample(&body, name, labels)
}

/// Wait until a sample of `/metrics` equals `value`.
pub(crate) async fn wait_metric(plinth: &Plinth, name: &str, labels: &[(&str, &str)], value: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = metric(plinth, name, labels).await;
        if got == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {got:?}, not {value}, after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until `topic`'s deliveries with `outcome` reach `count`.
pub(crate) async fn wait_outcome(plinth: &Plinth, topic: &str, outcome: &str, count: u32) {
    wait_metric(
        plinth,
        "plinth_pubsub_deliveries_total",
        &[("pubsub", PUBSUB), ("topic", topic), ("outcome", outcome)],
        f64::from(count),
    )
    .await;
}

/// The deliveries of `topic` with `outcome` so far (0 when none was ever counted).
pub(crate) async fn outcome_count(plinth: &Plinth, topic: &str, outcome: &str) -> f64 {
    metric(
        plinth,
        "plinth_pubsub_deliveries_total",
        &[("pubsub", PUBSUB), ("topic", topic), ("outcome", outcome)],
    )
    .await
    .unwrap_or(0.0)
}
