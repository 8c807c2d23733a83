//! The app channel over HTTP: subscriptions from `/dapr/subscribe` with CEL routes, the
//! delivery outcome table as HTTP apps express it, and service invocation from both gRPC
//! front doors with verbs, paths, queries, headers and statuses passed through.

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as dpb;
use dpb::dapr_client::DaprClient;
use plinth_proto::runtime::v1 as pb;
use serde_json::json;
use tonic::transport::Channel;

use super::app::PUBSUB;
use super::common::{Plinth, unique};
use super::http_app::HttpApp;
use super::support::{wait_outcome, wait_subscribed};

async fn dapr(plinth: &Plinth) -> DaprClient<Channel> {
    DaprClient::connect(format!("http://{}", plinth.dapr_grpc))
        .await
        .expect("connect to the Dapr API")
}

fn start(app: &HttpApp, extra: &[&str]) -> Plinth {
    let port = app.port.to_string();
    let mut args = vec!["--app-port", port.as_str(), "--app-protocol", "http"];
    args.extend_from_slice(extra);
    Plinth::start_with(&args, None)
}

async fn publish(c: &mut DaprClient<Channel>, topic: &str, data: &str, metadata: &[(&str, &str)]) {
    c.publish_event(dpb::PublishEventRequest {
        pubsub_name: PUBSUB.into(),
        topic: topic.into(),
        data: data.as_bytes().to_vec(),
        data_content_type: "application/json".into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .await
    .unwrap_or_else(|e| panic!("publish to {topic}: {e}"));
}

#[tokio::test]
async fn events_reach_the_path_their_cel_rules_select() {
    let topic = unique("routed");
    let mut app = HttpApp::start(json!([{
        "pubsubname": PUBSUB,
        "topic": topic,
        "routes": {
            "rules": [
                {"match": "event.type == \"widget\"", "path": "/widgets"},
                {"match": "event.data.price > 100", "path": "/expensive"},
            ],
            "default": "/other",
        },
    }]))
    .await;
    let plinth = start(&app, &[]);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = dapr(&plinth).await;

    publish(
        &mut c,
        &topic,
        r#"{"price": 1}"#,
        &[("cloudevent.type", "widget")],
    )
    .await;
    let seen = app.next().await;
    assert_eq!(seen.path, "/widgets");
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.header("content-type"),
        Some("application/cloudevents+json")
    );
    let event = seen.json();
    assert_eq!(event["type"], "widget");
    assert_eq!(event["topic"], topic.as_str());
    assert_eq!(event["pubsubname"], PUBSUB);
    assert_eq!(event["data"], json!({"price": 1}));

    publish(&mut c, &topic, r#"{"price": 500}"#, &[]).await;
    assert_eq!(app.next().await.path, "/expensive");
    publish(&mut c, &topic, r#"{"price": 5}"#, &[]).await;
    assert_eq!(app.next().await.path, "/other");
}

#[tokio::test]
async fn http_answers_follow_the_outcome_table() {
    let topic = unique("outcomes");
    let dlq = unique("outcomes-dlq");
    let mut app = HttpApp::start(json!([
        {"pubsubname": PUBSUB, "topic": topic, "route": "/orders", "deadLetterTopic": dlq,
         "metadata": {"maxDeliveryAttempts": "3", "retryInitialInterval": "10ms"}},
        {"pubsubname": PUBSUB, "topic": dlq, "route": "/dead"},
    ]))
    .await;
    // The event's data says how to answer; a retry succeeds on the second attempt.
    let retried = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = retried.clone();
    app.answer(move |seen| {
        if seen.path != "/orders" {
            return (200, vec![], String::new());
        }
        let data = seen.json()["data"]["do"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match data.as_str() {
            "empty" => (200, vec![], String::new()),
            "garbage" => (200, vec![], "not json".into()),
            "success" => (200, vec![], r#"{"status":"SUCCESS"}"#.into()),
            "drop" => (200, vec![], r#"{"status":"DROP"}"#.into()),
            "missing" => (404, vec![], String::new()),
            "retry-once" if !flag.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                (200, vec![], r#"{"status":"RETRY"}"#.into())
            }
            "retry-once" => (200, vec![], String::new()),
            "error-once" => (500, vec![], "boom".into()),
            _ => (200, vec![], String::new()),
        }
    });
    let plinth = start(&app, &[]);
    wait_subscribed(&plinth, &[&topic, &dlq]).await;
    let mut c = dapr(&plinth).await;

    for what in ["empty", "garbage", "success"] {
        publish(&mut c, &topic, &format!(r#"{{"do":"{what}"}}"#), &[]).await;
    }
    wait_outcome(&plinth, &topic, "success", 3).await;

    publish(&mut c, &topic, r#"{"do":"retry-once"}"#, &[]).await;
    wait_outcome(&plinth, &topic, "success", 4).await;
    wait_outcome(&plinth, &topic, "retry", 1).await;

    for what in ["drop", "missing"] {
        publish(&mut c, &topic, &format!(r#"{{"do":"{what}"}}"#), &[]).await;
        let dead = app.next_at("/dead").await.json();
        assert_eq!(dead["data"]["do"], what, "{dead}");
    }
    // A 500 on every attempt: retried up to the maximum, then dead-lettered.
    publish(&mut c, &topic, r#"{"do":"error-once"}"#, &[]).await;
    let dead = app.next_at("/dead").await.json();
    assert_eq!(dead["data"]["do"], "error-once");
    wait_outcome(&plinth, &topic, "dead_letter", 3).await;
}

#[tokio::test]
async fn invocation_passes_verb_path_query_headers_body_and_status() {
    let mut app = HttpApp::start(json!([])).await;
    app.answer(|seen| match seen.path.as_str() {
        "/orders/42" => (
            201,
            vec![
                ("x-answer", "yes".into()),
                ("content-type", "application/json".into()),
            ],
            format!(r#"{{"got":{}}}"#, String::from_utf8_lossy(&seen.body)),
        ),
        "/teapot" => (418, vec![], "short and stout".into()),
        _ => (404, vec![], "no such method".into()),
    });
    let plinth = start(&app, &["--app-id", "orders"]);
    let mut c = dapr(&plinth).await;

    let mut request = tonic::Request::new(dpb::InvokeServiceRequest {
        id: "orders".into(),
        message: Some(common::InvokeRequest {
            method: "orders/42".into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: br#"{"n":1}"#.to_vec(),
            }),
            content_type: "application/json".into(),
            http_extension: Some(common::HttpExtension {
                verb: common::http_extension::Verb::Put as i32,
                querystring: "a=1&b=two".into(),
            }),
        }),
    });
    request
        .metadata_mut()
        .insert("x-trace", "t-1".parse().expect("ascii"));
    let response = c.invoke_service(request).await.expect("invoke");
    assert_eq!(
        response
            .metadata()
            .get("x-answer")
            .and_then(|v| v.to_str().ok()),
        Some("yes")
    );
    let response = response.into_inner();
    assert_eq!(response.content_type, "application/json");
    assert_eq!(
        response.data.expect("data").value,
        br#"{"got":{"n":1}}"#.to_vec()
    );
    let seen = app.next().await;
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path, "/orders/42");
    assert_eq!(seen.query, "a=1&b=two");
    assert_eq!(seen.header("x-trace"), Some("t-1"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("dapr-caller-app-id"), Some("orders"));
    assert_eq!(seen.body.as_ref(), br#"{"n":1}"#);

    // Layotto's InvokeService reaches the same app; no verb means POST.
    let mut layotto = plinth.client().await;
    let answer = layotto
        .invoke_service(pb::InvokeServiceRequest {
            id: "orders".into(),
            message: Some(pb::CommonInvokeRequest {
                method: "orders/42".into(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: b"7".to_vec(),
                }),
                content_type: "text/plain".into(),
                http_extension: None,
            }),
        })
        .await
        .expect("layotto invoke")
        .into_inner();
    assert_eq!(answer.data.expect("data").value, br#"{"got":7}"#.to_vec());
    assert_eq!(app.next().await.method, "POST");

    // The app's statuses become gRPC codes, with its body in the message.
    let invoke = |method: &str| dpb::InvokeServiceRequest {
        id: "orders".into(),
        message: Some(common::InvokeRequest {
            method: method.into(),
            http_extension: Some(common::HttpExtension {
                verb: common::http_extension::Verb::Get as i32,
                querystring: String::new(),
            }),
            ..Default::default()
        }),
    };
    let err = c.invoke_service(invoke("nope")).await.expect_err("404");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("no such method"), "{err}");
    let err = c.invoke_service(invoke("teapot")).await.expect_err("418");
    assert_eq!(err.code(), tonic::Code::Unknown, "{err}");

    // Another app needs the mesh; an empty message is a bad request.
    let mut other = invoke("orders/42");
    other.id = "billing".into();
    let err = c.invoke_service(other).await.expect_err("remote");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("billing"), "{err}");
    let err = c
        .invoke_service(dpb::InvokeServiceRequest {
            id: "orders".into(),
            message: None,
        })
        .await
        .expect_err("no message");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn invoking_without_an_app_channel_is_a_failed_precondition() {
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let err = c
        .invoke_service(dpb::InvokeServiceRequest {
            id: "plinth".into(),
            message: Some(common::InvokeRequest {
                method: "anything".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("no app");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("--app-port"), "{err}");
}

#[tokio::test]
async fn app_api_token_goes_to_the_app_and_nowhere_else() {
    let mut app = HttpApp::start(json!([])).await;
    let port = app.port.to_string();
    let plinth = Plinth::start_with_env(
        &[
            "--app-port",
            &port,
            "--app-protocol",
            "http",
            "--app-id",
            "tok",
        ],
        &[("APP_API_TOKEN", "app-secret-1")],
    );
    let mut c = dapr(&plinth).await;
    let mut request = tonic::Request::new(dpb::InvokeServiceRequest {
        id: "tok".into(),
        message: Some(common::InvokeRequest {
            method: "hello".into(),
            ..Default::default()
        }),
    });
    // A caller's token is never forwarded as the app's.
    request
        .metadata_mut()
        .insert("dapr-api-token", "caller-token".parse().expect("ascii"));
    c.invoke_service(request).await.expect("invoke");
    let seen = app.next_at("/hello").await;
    assert_eq!(seen.header("dapr-api-token"), Some("app-secret-1"));
    let metadata = c
        .get_metadata(dpb::GetMetadataRequest {})
        .await
        .expect("metadata")
        .into_inner();
    let text = format!("{metadata:?}");
    assert!(!text.contains("app-secret-1"), "{text}");
}

#[tokio::test]
async fn a_dapr_grpc_app_is_invoked_and_gets_routed_events() {
    use super::dapr_app::{Call, DaprApp};
    let topic = unique("grpc-routed");
    let mut app = DaprApp::start(
        vec![dpb::TopicSubscription {
            pubsub_name: PUBSUB.into(),
            topic: topic.clone(),
            routes: Some(dpb::TopicRoutes {
                rules: vec![dpb::TopicRule {
                    r#match: "event.data.kind == \"a\"".into(),
                    path: "kind-a".into(),
                }],
                default: "fallback".into(),
            }),
            ..Default::default()
        }],
        vec![],
        Default::default(),
    )
    .await;
    let port = app.port.to_string();
    // `--app-health-check` on: the app has no health service, which is not unhealthy.
    let plinth = Plinth::start_with(
        &[
            "--app-port",
            &port,
            "--app-protocol",
            "grpc",
            "--app-id",
            "grpcapp",
            "--enable-app-health-check",
            "--app-health-probe-interval",
            "1",
        ],
        None,
    );
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = dapr(&plinth).await;

    publish(
        &mut c,
        &topic,
        r#"{"kind":"a"}"#,
        &[("cloudevent.type", "t.a")],
    )
    .await;
    publish(&mut c, &topic, r#"{"kind":"b"}"#, &[]).await;
    let mut paths = Vec::new();
    for _ in 0..2 {
        match app.next().await {
            Call::Event(e) => {
                let kind =
                    serde_json::from_slice::<serde_json::Value>(&e.data).expect("json")["kind"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                assert_eq!(e.topic, topic);
                let ext = e.extensions.expect("extensions");
                assert!(ext.fields.contains_key("pubsubname"), "{ext:?}");
                paths.push((kind, e.path));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    paths.sort();
    assert_eq!(
        paths,
        vec![
            ("a".into(), "kind-a".into()),
            ("b".into(), "fallback".into())
        ]
    );

    // Invocation from the Dapr API: verb and query travel in the HTTP extension, metadata
    // both ways.
    let mut request = tonic::Request::new(dpb::InvokeServiceRequest {
        id: "grpcapp".into(),
        message: Some(common::InvokeRequest {
            method: "say".into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: b"hi".to_vec(),
            }),
            content_type: "text/plain".into(),
            http_extension: Some(common::HttpExtension {
                verb: common::http_extension::Verb::Get as i32,
                querystring: "q=1".into(),
            }),
        }),
    });
    request
        .metadata_mut()
        .insert("x-trace", "t-2".parse().expect("ascii"));
    let response = c.invoke_service(request).await.expect("invoke");
    assert_eq!(
        response
            .metadata()
            .get("x-from-app")
            .and_then(|v| v.to_str().ok()),
        Some("grpc")
    );
    assert_eq!(
        response.into_inner().data.expect("data").value,
        b"say 1 q=1".to_vec()
    );
    match app.next().await {
        Call::Invoke(req, metadata) => {
            assert_eq!(req.data.expect("data").value, b"hi".to_vec());
            assert_eq!(
                metadata.get("x-trace").and_then(|v| v.to_str().ok()),
                Some("t-2")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The app's gRPC error comes back as it is.
    let err = c
        .invoke_service(dpb::InvokeServiceRequest {
            id: "grpcapp".into(),
            message: Some(common::InvokeRequest {
                method: "fail".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("app error");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert_eq!(err.message(), "not you");
}

#[tokio::test]
async fn bulk_subscriptions_deliver_batches_with_per_entry_outcomes() {
    let topic = unique("bulk");
    let mut app = HttpApp::start(json!([{
        "pubsubname": PUBSUB, "topic": topic, "route": "/batch",
        "metadata": {"retryInitialInterval": "10ms"},
        "bulkSubscribe": {"enabled": true, "maxMessagesCount": 3, "maxAwaitDurationMs": 300},
    }]))
    .await;
    let retried = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = retried.clone();
    app.answer(move |seen| {
        let body = seen.json();
        let statuses: Vec<serde_json::Value> = body["entries"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        let retry = e["event"]["data"]["n"] == 2
                            && !flag.swap(true, std::sync::atomic::Ordering::SeqCst);
                        json!({"entryId": e["entryId"], "status": if retry { "RETRY" } else { "SUCCESS" }})
                    })
                    .collect()
            })
            .unwrap_or_default();
        (200, vec![], json!({ "statuses": statuses }).to_string())
    });
    let plinth = start(&app, &[]);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = dapr(&plinth).await;
    for n in 1..=3 {
        publish(&mut c, &topic, &format!(r#"{{"n":{n}}}"#), &[]).await;
    }
    // Three events in batches (at most three per call), then the retried one again.
    let mut delivered = Vec::new();
    while delivered.len() < 4 {
        let seen = app.next_at("/batch").await;
        assert_eq!(
            seen.header("content-type"),
            Some("application/cloudevents-batch+json")
        );
        let body = seen.json();
        assert_eq!(body["topic"], topic.as_str());
        let entries = body["entries"].as_array().expect("entries").clone();
        assert!((1..=3).contains(&entries.len()), "{body}");
        for e in entries {
            assert!(
                e["entryId"].as_str().is_some_and(|id| !id.is_empty()),
                "{e}"
            );
            delivered.push(e["event"]["data"]["n"].as_i64().expect("n"));
        }
    }
    delivered.sort();
    assert_eq!(delivered, vec![1, 2, 2, 3]);
    wait_outcome(&plinth, &topic, "success", 3).await;
    wait_outcome(&plinth, &topic, "retry", 1).await;
}

fn cron_resources(tag: &str, route: Option<&str>) -> std::path::PathBuf {
    let dir = super::common::scratch(tag);
    let route = route
        .map(|r| format!("\n  - name: route\n    value: {r}"))
        .unwrap_or_default();
    super::common::write(
        &dir.join("resources"),
        "components.yaml",
        &format!(
            r#"apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: tick
spec:
  type: bindings.cron
  version: v1
  metadata:
  - name: schedule
    value: "@every 50ms"{route}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  version: v1
"#
        ),
    );
    dir
}

#[tokio::test]
async fn a_cron_input_binding_reaches_a_grpc_app_and_its_reply_is_saved() {
    use super::dapr_app::{Call, DaprApp};
    let key = unique("last-tick");
    let mut app = DaprApp::start(
        vec![],
        vec!["tick".into()],
        dpb::BindingEventResponse {
            store_name: "statestore".into(),
            states: vec![common::StateItem {
                key: key.clone(),
                value: b"ticked".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await;
    let dir = cron_resources("cron-grpc", None);
    let port = app.port.to_string();
    let plinth = Plinth::start_with(
        &[
            "--app-port",
            &port,
            "--app-protocol",
            "grpc",
            "--app-id",
            "cronapp",
            "--resources-path",
            "resources",
        ],
        Some(&dir),
    );
    let event = loop {
        if let Call::Binding(e) = app.next().await {
            break e;
        }
    };
    assert_eq!(event.name, "tick");
    assert!(event.metadata.contains_key("readTimeUTC"), "{event:?}");
    // The reply's state is saved under the app's prefix, before the event is acknowledged:
    // the next event proves the first was settled.
    while !matches!(app.next().await, Call::Binding(_)) {}
    let got = dapr(&plinth)
        .await
        .get_state(dpb::GetStateRequest {
            store_name: "statestore".into(),
            key,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.data, b"ticked".to_vec());
}

#[tokio::test]
async fn a_cron_input_binding_reaches_an_http_app_on_its_route() {
    let mut app = HttpApp::start(json!([])).await;
    app.answer(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        (_, "/cron-hits") => (200, vec![], String::new()),
        _ => (404, vec![], String::new()),
    });
    let dir = cron_resources("cron-http", Some("/cron-hits"));
    let port = app.port.to_string();
    let _plinth = Plinth::start_with(
        &[
            "--app-port",
            &port,
            "--app-protocol",
            "http",
            "--resources-path",
            "resources",
        ],
        Some(&dir),
    );
    // Plinth asks first (OPTIONS), then POSTs each firing.
    let probe = app.next_at("/cron-hits").await;
    assert_eq!(probe.method, "OPTIONS");
    let hit = app.next_at("/cron-hits").await;
    assert_eq!(hit.method, "POST");
    assert!(hit.header("readtimeutc").is_some(), "{:?}", hit.headers);
}

#[tokio::test]
async fn http_invocation_passes_everything_through_both_ways() {
    let mut app = HttpApp::start(json!([])).await;
    app.answer(|seen| match seen.path.as_str() {
        "/orders/a%20b" => (
            202,
            vec![
                ("x-answer", "yes".into()),
                ("content-type", "text/plain".into()),
            ],
            format!("{} {}", seen.method, String::from_utf8_lossy(&seen.body)),
        ),
        "/plain" => (200, vec![], "plain".into()),
        _ => (404, vec![], "no such method".into()),
    });
    let plinth = start(&app, &["--app-id", "shop"]);
    let http = plinth.dapr_http();
    for verb in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
        let resp = http
            .request(
                verb,
                "/v1.0/invoke/shop/method/orders/a%20b?x=1&y=2",
                &[("x-trace", "t-3"), ("content-type", "text/plain")],
                "body",
            )
            .await;
        assert_eq!(resp.status, 202, "{verb}: {}", resp.text());
        assert_eq!(resp.header("x-answer"), Some("yes"));
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        assert_eq!(resp.text(), format!("{verb} body"));
        let seen = app.next().await;
        assert_eq!(seen.method.as_str(), verb);
        assert_eq!(seen.query, "x=1&y=2");
        assert_eq!(seen.header("x-trace"), Some("t-3"));
        assert_eq!(seen.header("dapr-caller-app-id"), Some("shop"));
    }
    // The app's own statuses pass through, bodies included.
    let resp = http.get("/v1.0/invoke/shop/method/missing").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.text(), "no such method");
    // Dapr's other form: the app id in a header, the method as the path.
    let resp = http
        .request("GET", "/plain", &[("dapr-app-id", "shop")], "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "plain");
    // Another app is the mesh's; Dapr's error body says so.
    let resp = http.get("/v1.0/invoke/billing/method/x").await;
    let message = resp.assert_error(503, "ERR_DIRECT_INVOKE");
    assert!(message.contains("billing"), "{message}");
}

#[tokio::test]
async fn http_configuration_subscriptions_post_changes_to_the_app() {
    let mut app = HttpApp::start(json!([])).await;
    let plinth = start(&app, &[]);
    let http = plinth.dapr_http();
    let key = unique("cfg");
    let resp = http
        .get(&format!(
            "/v1.0/configuration/configstore/subscribe?key={key}"
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let id = resp.json()["id"].as_str().expect("id").to_string();
    // Change the item through Layotto's API; the app hears of it on its route.
    let mut layotto = plinth.client().await;
    layotto
        .save_configuration(pb::SaveConfigurationRequest {
            store_name: "configstore".into(),
            app_id: "plinth".into(),
            items: vec![pb::ConfigurationItem {
                key: key.clone(),
                content: "v1".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("save configuration");
    let seen = app
        .next_at(&format!("/configuration/configstore/{key}"))
        .await;
    assert_eq!(seen.method, "POST");
    let body = seen.json();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["items"][&key]["value"], "v1", "{body}");

    let resp = http
        .get(&format!("/v1.0/configuration/configstore/{id}/unsubscribe"))
        .await;
    assert_eq!(resp.json()["ok"], true, "{}", resp.text());
    let resp = http
        .get(&format!("/v1.0/configuration/configstore/{id}/unsubscribe"))
        .await;
    assert_eq!(resp.json()["ok"], false, "{}", resp.text());

    // One registry for both of Dapr's APIs: gRPC ends a subscription HTTP made.
    let resp = http
        .get(&format!(
            "/v1.0/configuration/configstore/subscribe?key={key}"
        ))
        .await;
    let id = resp.json()["id"].as_str().expect("id").to_string();
    let ended = dapr(&plinth)
        .await
        .unsubscribe_configuration(dpb::UnsubscribeConfigurationRequest {
            store_name: "configstore".into(),
            id: id.clone(),
        })
        .await
        .expect("unsubscribe over gRPC")
        .into_inner();
    assert!(ended.ok, "{}", ended.message);
    let resp = http
        .get(&format!("/v1.0/configuration/configstore/{id}/unsubscribe"))
        .await;
    assert_eq!(resp.json()["ok"], false, "{}", resp.text());
}

#[tokio::test]
async fn the_http_api_requires_the_token_except_healthz() {
    let mut app = HttpApp::start(json!([])).await;
    let port = app.port.to_string();
    let plinth = Plinth::start_with_env(
        &[
            "--app-port",
            &port,
            "--app-protocol",
            "http",
            "--app-id",
            "sec",
        ],
        &[("DAPR_API_TOKEN", "http-token-1")],
    );
    let http = plinth.dapr_http();
    for path in ["/v1.0/healthz", "/v1.0/healthz/outbound"] {
        assert_eq!(http.get(path).await.status, 204, "{path}");
    }
    let resp = http.get("/v1.0/metadata").await;
    resp.assert_error(401, "ERR_API_TOKEN");
    let resp = http
        .request("GET", "/v1.0/metadata", &[("dapr-api-token", "nope")], "")
        .await;
    resp.assert_error(401, "ERR_API_TOKEN");
    let resp = http
        .request(
            "GET",
            "/v1.0/metadata",
            &[("dapr-api-token", "http-token-1")],
            "",
        )
        .await;
    assert_eq!(resp.status, 200);
    assert!(!resp.text().contains("http-token-1"));
    // The caller's token is for Plinth: the app never sees it.
    let resp = http
        .request(
            "POST",
            "/v1.0/invoke/sec/method/echo",
            &[("dapr-api-token", "http-token-1")],
            "x",
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(app.next_at("/echo").await.header("dapr-api-token"), None);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_where_they_are_held() {
    let mut app = HttpApp::start(json!([])).await;
    app.answer(|seen| match seen.path.as_str() {
        "/big" => (200, vec![], "y".repeat(4096)),
        _ => (200, vec![], "ok".into()),
    });
    let plinth = start(&app, &["--app-id", "lim", "--max-body-size", "2Ki"]);
    let http = plinth.dapr_http();
    // Request over the limit: refused before the app sees it.
    http.request(
        "POST",
        "/v1.0/invoke/lim/method/small",
        &[],
        "x".repeat(4096),
    )
    .await
    .assert_error(413, "ERR_BODY_READ");
    // The app's answer over the limit streams back to an HTTP caller: it is passed
    // through, never held whole.
    let resp = http.get("/v1.0/invoke/lim/method/big").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "y".repeat(4096));
    let _ = app.next_at("/big").await;
    // Over gRPC the answer is read whole, so both bounds hold.
    let mut c = dapr(&plinth).await;
    let call = |method: &str, size: usize| dpb::InvokeServiceRequest {
        id: "lim".into(),
        message: Some(common::InvokeRequest {
            method: method.into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: vec![b'x'; size],
            }),
            ..Default::default()
        }),
    };
    let err = c
        .invoke_service(call("small", 4096))
        .await
        .expect_err("big request");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let err = c
        .invoke_service(call("big", 1))
        .await
        .expect_err("big answer");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    c.invoke_service(call("small", 16))
        .await
        .expect("within the limit");
}

#[tokio::test]
async fn deliveries_wait_while_the_app_is_unhealthy() {
    let topic = unique("health");
    let mut app = HttpApp::start(json!([
        {"pubsubname": PUBSUB, "topic": topic, "route": "/ev"},
    ]))
    .await;
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    app.answer(move |seen| match seen.path.as_str() {
        "/healthz" if !flag.load(std::sync::atomic::Ordering::SeqCst) => {
            (503, vec![], "starting".into())
        }
        _ => (200, vec![], String::new()),
    });
    let plinth = start(
        &app,
        &[
            "--enable-app-health-check",
            "--app-health-probe-interval",
            "1",
            "--app-health-threshold",
            "1",
        ],
    );
    // Both happen at startup, in either order.
    let (mut subscribed, mut unhealthy) = (false, false);
    while !(subscribed && unhealthy) {
        let f = super::support::wait_log(&plinth, "`subscribed` and `the app is unhealthy`", |f| {
            f["message"] == "the app is unhealthy; deliveries wait"
                || (f["message"] == "subscribed" && f["topic"] == topic.as_str())
        })
        .await;
        if f["message"] == "subscribed" {
            subscribed = true;
        } else {
            unhealthy = true;
        }
    }
    let mut c = dapr(&plinth).await;
    publish(&mut c, &topic, r#"{"n":1}"#, &[]).await;
    // Held back: retried, not delivered.
    wait_outcome(&plinth, &topic, "retry", 1).await;
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = app.next_at("/ev").await;
    assert_eq!(seen.json()["data"]["n"], 1);
    super::support::wait_log(&plinth, "`healthy again`", |f| {
        f["message"] == "the app is healthy again"
    })
    .await;
}

#[tokio::test]
async fn a_dapr_grpc_app_gets_bulk_events_through_on_bulk_topic_event() {
    use super::dapr_app::{Call, DaprApp};
    let topic = unique("grpc-bulk");
    let mut app = DaprApp::start(
        vec![dpb::TopicSubscription {
            pubsub_name: PUBSUB.into(),
            topic: topic.clone(),
            bulk_subscribe: Some(dpb::BulkSubscribeConfig {
                enabled: true,
                max_messages_count: 2,
                max_await_duration_ms: 300,
            }),
            ..Default::default()
        }],
        vec![],
        Default::default(),
    )
    .await;
    let port = app.port.to_string();
    let plinth = Plinth::start_with(&["--app-port", &port, "--app-protocol", "grpc"], None);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = dapr(&plinth).await;
    for data in [r#""a""#, r#""drop""#, r#""b""#] {
        publish(&mut c, &topic, data, &[]).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match app.next().await {
            Call::Bulk(req) => {
                assert_eq!(req.topic, topic);
                assert!((1..=2).contains(&req.entries.len()), "{req:?}");
                for e in req.entries {
                    assert!(!e.entry_id.is_empty());
                    match e.event {
                        Some(dpb::topic_event_bulk_request_entry::Event::CloudEvent(ce)) => {
                            seen.push(String::from_utf8_lossy(&ce.data).into_owned())
                        }
                        other => panic!("not a CloudEvent: {other:?}"),
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, vec![r#""a""#, r#""b""#, r#""drop""#]);
    wait_outcome(&plinth, &topic, "success", 2).await;
    wait_outcome(&plinth, &topic, "drop", 1).await;
}
