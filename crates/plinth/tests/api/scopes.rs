//! Dapr's resource scoping end to end: component `scopes`, and pub/sub topic scopes
//! (`publishingScopes`, `subscriptionScopes`, `allowedTopics`, `protectedTopics`) over both
//! gRPC APIs, with resource files written to a scratch directory.

use std::collections::HashMap;
use std::time::Duration;

use ::dapr::dapr::proto::runtime::v1 as dpb;
use dpb::dapr_client::DaprClient;
use plinth_proto::runtime::v1 as lpb;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::common::{Plinth, scratch, unique, write};

const WAIT: Duration = Duration::from_secs(10);

/// A running Plinth whose `pubsub` is scoped, and the names the scopes use.
struct Scoped {
    plinth: Plinth,
    app: String,
    /// Allowed to publish and subscribe.
    orders: String,
    /// Allowed topic, but not in this app's scopes.
    payments: String,
    /// Protected; this app may publish to it (its scope lists it) but not subscribe.
    audit: String,
    /// Not in `allowedTopics`.
    stray: String,
}

async fn start_scoped() -> Scoped {
    let app = unique("scoped-app");
    let (orders, payments, audit, stray) = (
        unique("orders"),
        unique("payments"),
        unique("audit"),
        unique("stray"),
    );
    let dir = scratch("scopes");
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
  metadata:
  - name: publishingScopes
    value: "{app}={orders},{audit};someone-else={payments}"
  - name: subscriptionScopes
    value: "{app}={orders}"
  - name: allowedTopics
    value: "{orders}, {payments}, {audit}"
  - name: protectedTopics
    value: "{audit}"
"#
        ),
    );
    write(
        &dir,
        "resources/state.yaml",
        &format!(
            r#"apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: mine
spec:
  type: state.in-memory
scopes: [{app}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: theirs
spec:
  type: state.in-memory
scopes: [someone-else]
"#
        ),
    );
    let plinth = Plinth::start_ready_with(
        &["--app-id", &app, "--resources-path", "resources"],
        Some(&dir),
    )
    .await;
    Scoped {
        plinth,
        app,
        orders,
        payments,
        audit,
        stray,
    }
}

async fn dapr(plinth: &Plinth) -> DaprClient<Channel> {
    DaprClient::connect(format!("http://{}", plinth.dapr_grpc))
        .await
        .expect("connect to the Dapr listener")
}

async fn layotto_publish(plinth: &Plinth, topic: &str) -> Result<(), Status> {
    plinth
        .client()
        .await
        .publish_event(lpb::PublishEventRequest {
            pubsub_name: "pubsub".into(),
            topic: topic.into(),
            data: b"{}".to_vec(),
            data_content_type: "application/json".into(),
            metadata: HashMap::new(),
        })
        .await
        .map(|_| ())
}

async fn dapr_publish(plinth: &Plinth, topic: &str) -> Result<(), Status> {
    dapr(plinth)
        .await
        .publish_event(dpb::PublishEventRequest {
            pubsub_name: "pubsub".into(),
            topic: topic.into(),
            data: b"{}".to_vec(),
            data_content_type: "application/json".into(),
            metadata: HashMap::new(),
        })
        .await
        .map(|_| ())
}

/// The status is PERMISSION_DENIED and its message names the app and the topic.
#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: Result<T, Status>, app: &str, topic: &str) {
    let status = result.expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(app) && status.message().contains(topic),
        "{status:?}"
    );
}

#[tokio::test]
async fn publishing_outside_the_topic_scopes_is_permission_denied_on_both_apis() {
    let s = start_scoped().await;
    let p = &s.plinth;
    for topic in [&s.orders, &s.audit] {
        layotto_publish(p, topic)
            .await
            .expect("Layotto publish allowed");
        dapr_publish(p, topic).await.expect("Dapr publish allowed");
    }
    // Not in this app's publishing scope; not in allowedTopics at all.
    for topic in [&s.payments, &s.stray] {
        assert_denied(layotto_publish(p, topic).await, &s.app, topic);
        assert_denied(dapr_publish(p, topic).await, &s.app, topic);
    }
    let bulk = dapr(p)
        .await
        .bulk_publish_event(dpb::BulkPublishRequest {
            pubsub_name: "pubsub".into(),
            topic: s.payments.clone(),
            entries: vec![dpb::BulkPublishRequestEntry {
                entry_id: "1".into(),
                event: b"{}".to_vec(),
                content_type: "application/json".into(),
                metadata: HashMap::new(),
            }],
            metadata: HashMap::new(),
        })
        .await;
    assert_denied(bulk, &s.app, &s.payments);

    // Dapr's HTTP API answers the same denial with 403 ERR_PUBSUB_FORBIDDEN.
    let http = p.dapr_http();
    for topic in [&s.payments, &s.stray] {
        let message = http
            .post_json(
                &format!("/v1.0/publish/pubsub/{topic}"),
                &serde_json::json!({"a": 1}),
            )
            .await
            .assert_error(403, "ERR_PUBSUB_FORBIDDEN");
        assert!(message.contains(topic.as_str()), "{message}");
    }
    let resp = http
        .post_json(
            &format!("/v1.0/publish/pubsub/{}", s.orders),
            &serde_json::json!({"a": 1}),
        )
        .await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    http.post_json(
        &format!("/v1.0-alpha1/publish/bulk/pubsub/{}", s.payments),
        &serde_json::json!([{"entryId": "1", "event": {"a": 1}, "contentType": "application/json"}]),
    )
    .await
    .assert_error(403, "ERR_PUBSUB_FORBIDDEN");
}

/// Open a Dapr `SubscribeTopicEventsAlpha1` stream; `Err` when Plinth refuses it.
async fn dapr_stream(
    plinth: &Plinth,
    topic: &str,
) -> Result<
    (
        mpsc::Sender<dpb::SubscribeTopicEventsRequestAlpha1>,
        tonic::Streaming<dpb::SubscribeTopicEventsResponseAlpha1>,
    ),
    Status,
> {
    use dpb::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In;
    use dpb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out;
    let (tx, rx) = mpsc::channel(4);
    tx.send(dpb::SubscribeTopicEventsRequestAlpha1 {
        subscribe_topic_events_request_type: Some(In::InitialRequest(
            dpb::SubscribeTopicEventsRequestInitialAlpha1 {
                pubsub_name: "pubsub".into(),
                topic: topic.into(),
                metadata: HashMap::new(),
                dead_letter_topic: None,
            },
        )),
    })
    .await
    .expect("queue the initial request");
    let mut c = dapr(plinth).await;
    let mut responses = timeout(
        WAIT,
        c.subscribe_topic_events_alpha1(ReceiverStream::new(rx)),
    )
    .await
    .expect("an answer in time")?
    .into_inner();
    let first = timeout(WAIT, responses.message())
        .await
        .expect("initial response in time")?;
    match first.and_then(|m| m.subscribe_topic_events_response_type) {
        Some(Out::InitialResponse(_)) => Ok((tx, responses)),
        other => panic!("expected the initial response, got {other:?}"),
    }
}

/// Open a Layotto `SubscribeTopicEvents` stream; `Err` when Plinth refuses it.
async fn layotto_stream(plinth: &Plinth, topic: &str) -> Result<(), Status> {
    use lpb::subscribe_topic_events_request::SubscribeTopicEventsRequestType as In;
    let (tx, rx) = mpsc::channel(4);
    tx.send(lpb::SubscribeTopicEventsRequest {
        subscribe_topic_events_request_type: Some(In::InitialRequest(
            lpb::SubscribeTopicEventsRequestInitial {
                pubsub_name: "pubsub".into(),
                topic: topic.into(),
                metadata: HashMap::new(),
                dead_letter_topic: None,
            },
        )),
    })
    .await
    .expect("queue the initial request");
    let mut c = plinth.client().await;
    let mut responses = timeout(WAIT, c.subscribe_topic_events(ReceiverStream::new(rx)))
        .await
        .expect("an answer in time")?
        .into_inner();
    timeout(WAIT, responses.message())
        .await
        .expect("initial response in time")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_subscriptions_outside_the_topic_scopes_are_refused() {
    use dpb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out;
    let s = start_scoped().await;
    let p = &s.plinth;
    // Not in this app's subscription scope; protected; not allowed at all.
    for topic in [&s.payments, &s.audit, &s.stray] {
        assert_denied(dapr_stream(p, topic).await.map(|_| ()), &s.app, topic);
        assert_denied(layotto_stream(p, topic).await, &s.app, topic);
    }

    // The allowed one works: it receives what is published.
    let (_requests, mut events) = dapr_stream(p, &s.orders).await.expect("allowed");
    layotto_publish(p, &s.orders).await.expect("publish");
    let msg = timeout(WAIT, events.message())
        .await
        .expect("an event in time")
        .expect("stream");
    match msg.and_then(|m| m.subscribe_topic_events_response_type) {
        Some(Out::EventMessage(event)) => assert_eq!(event.topic, s.orders),
        other => panic!("expected an event, got {other:?}"),
    }
    layotto_stream(p, &s.orders)
        .await
        .expect("allowed on the Layotto API too");
}

#[tokio::test]
async fn components_scoped_to_other_apps_are_not_loaded() {
    let s = start_scoped().await;
    let mut c = dapr(&s.plinth).await;
    let meta = c
        .get_metadata(dpb::GetMetadataRequest::default())
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(meta.id, s.app);
    let mut names: Vec<&str> = meta
        .registered_components
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    names.sort_unstable();
    // Only what this app is scoped to; no embedded defaults either.
    assert_eq!(names, ["mine", "pubsub"]);
    let theirs = c
        .get_state(dpb::GetStateRequest {
            store_name: "theirs".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("not loaded for this app");
    assert_eq!(theirs.code(), Code::InvalidArgument, "{theirs:?}");
    assert!(theirs.message().contains("not configured"), "{theirs:?}");
}

#[test]
fn malformed_topic_scopes_stop_startup_naming_the_field() {
    let dir = scratch("bad-scopes");
    write(
        &dir,
        "resources/pubsub.yaml",
        r#"apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  metadata:
  - name: subscriptionScopes
    value: "app1:orders"
"#,
    );
    let failed = Plinth::start_failure(&["--resources-path", "resources"], &[], Some(&dir));
    assert_ne!(failed.code, Some(0));
    assert!(
        failed.output.contains("pubsub.yaml")
            && failed.output.contains("metadata.subscriptionScopes")
            && failed.output.contains("app1:orders"),
        "{}",
        failed.output
    );
}
