use std::time::{Duration, Instant};

use plinth_proto::runtime::v1 as pb;
use serde_json::Value;
use tonic::Code;

use crate::common::{Plinth, scratch, unique, write};

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The readiness entry of component `name`.
fn component<'a>(readiness: &'a Value, name: &str) -> &'a Value {
    readiness["components"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("component {name} not listed: {readiness}"))
}

/// Poll readiness until `done` holds for its (status, body), at most `timeout`.
async fn poll_readiness(
    plinth: &Plinth,
    timeout: Duration,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = plinth.admin_get("/actuator/health/readiness").await;
        let body = json(&body);
        if done(status, &body) {
            return (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "readiness never reached the expected state: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const EMBEDDED: [(&str, &str); 7] = [
    ("statestore", "state.in-memory"),
    ("pubsub", "pubsub.in-memory"),
    ("lockstore", "lock.in-memory"),
    ("sequencer", "sequencer.in-memory"),
    ("configstore", "configuration.in-memory"),
    ("filestore", "file.local"),
    ("secretstore", "secretstores.local.env"),
];

#[tokio::test]
async fn liveness_readiness_and_info() {
    let plinth = Plinth::start();
    let (status, body) = plinth.admin_get("/actuator/health/liveness").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "UP");

    plinth.wait_ready(Duration::from_secs(10)).await;
    let (status, body) = plinth.admin_get("/actuator/health/readiness").await;
    assert_eq!(status, 200, "{body}");
    let ready = json(&body);
    assert_eq!(ready["status"], "UP");
    assert_eq!(ready["listeners"], "UP");
    assert_eq!(
        ready["components"].as_array().map(Vec::len),
        Some(EMBEDDED.len()),
        "{ready}"
    );
    for (name, type_name) in EMBEDDED {
        let c = component(&ready, name);
        assert_eq!(c["status"], "UP", "{c}");
        assert_eq!(c["type"], type_name, "{c}");
    }

    let (status, body) = plinth.admin_get("/actuator/info").await;
    assert_eq!(status, 200, "{body}");
    let info = json(&body);
    assert_eq!(info["app"]["name"], "plinth");
    assert!(
        info["app"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{info}"
    );
    assert_eq!(info["appId"], "plinth");
    assert_eq!(info["embeddedDefault"], true);
    assert!(info["uptimeSeconds"].is_u64(), "{info}");
    let listed: Vec<_> = info["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| (c["name"].clone(), c["type"].clone()))
        .collect();
    for (name, type_name) in EMBEDDED {
        assert!(
            listed.contains(&(Value::from(name), Value::from(type_name))),
            "{name} missing from {info}"
        );
    }

    let (status, _) = plinth.admin_get("/actuator/nope").await;
    assert_eq!(status, 404);
}

/// Resources with a file store whose root lies beneath a regular file, so its init keeps
/// failing, plus a healthy state store.
fn broken_file_store(ignore_errors: bool) -> std::path::PathBuf {
    let dir = scratch("down");
    write(
        &dir,
        "blocker",
        "a regular file, so no directory can be made beneath it",
    );
    write(
        &dir,
        "resources/components.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: brokenfiles
spec:
  type: file.local
  version: v1
  ignoreErrors: {ignore_errors}
  metadata:
    - name: rootPath
      value: blocker/files
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  version: v1
"
        ),
    );
    dir
}

#[tokio::test]
async fn readiness_names_a_down_component_and_recovers() {
    let dir = broken_file_store(false);
    let plinth = Plinth::start_with(&["--resources-path", "resources"], Some(&dir));
    let (status, ready) = poll_readiness(&plinth, Duration::from_secs(10), |_, body| {
        component(body, "brokenfiles")["status"] == "DOWN"
    })
    .await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "DOWN");
    let broken = component(&ready, "brokenfiles");
    assert_eq!(broken["type"], "file.local");
    assert!(
        broken["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a DOWN component says why: {broken}"
    );
    assert_eq!(component(&ready, "statestore")["status"], "UP");

    // Liveness never depends on a component.
    assert_eq!(plinth.admin_get("/actuator/health/liveness").await.0, 200);
    // The DOWN component fails fast; the others serve.
    let mut c = plinth.client().await;
    let err = c
        .get_file_meta(pb::GetFileMetaRequest {
            request: Some(pb::FileRequest {
                store_name: "brokenfiles".into(),
                name: "a.txt".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("DOWN store");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    c.get_state(pb::GetStateRequest {
        store_name: "statestore".into(),
        key: unique("k"),
        ..Default::default()
    })
    .await
    .expect("state still serves");

    // Remove the obstacle: the component is retried and comes UP by itself.
    std::fs::remove_file(dir.join("blocker")).expect("remove blocker");
    let (status, ready) =
        poll_readiness(&plinth, Duration::from_secs(20), |status, _| status == 200).await;
    assert_eq!(status, 200);
    assert_eq!(component(&ready, "brokenfiles")["status"], "UP");
}

#[tokio::test]
async fn ignore_errors_keeps_a_down_component_out_of_readiness() {
    let dir = broken_file_store(true);
    let plinth = Plinth::start_with(&["--resources-path", "resources"], Some(&dir));
    let (status, ready) = poll_readiness(&plinth, Duration::from_secs(10), |_, body| {
        component(body, "brokenfiles")["status"] == "DOWN"
    })
    .await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "UP");
    assert_eq!(component(&ready, "brokenfiles")["ignoreErrors"], true);
}

#[tokio::test]
async fn log_levels_change_at_run_time() {
    // An app port nobody listens on: Plinth keeps retrying the app's callback and logs each
    // failure at DEBUG, which the default level (INFO) hides.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let plinth = Plinth::start_with(
        &["--app-port", &closed.to_string(), "--app-protocol", "grpc"],
        None,
    );

    for (body, what) in [
        (
            r#"{"logger": "plinth_api", "level": "verbose"}"#,
            "unknown level",
        ),
        (r#"{"logger": "plinth_api"}"#, "no level"),
        (r#"not json"#, "not JSON"),
        (
            r#"{"logger": "plinth_api", "level": "debug", "extra": 1}"#,
            "unknown field",
        ),
        (
            r#"{"logger": "bad logger!", "level": "debug"}"#,
            "bad logger name",
        ),
    ] {
        let (status, resp) = plinth.admin_post("/actuator/logger", body).await;
        assert_eq!(status, 400, "{what}: {resp}");
        assert!(
            json(&resp)["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {resp}"
        );
    }

    let (status, resp) = plinth
        .admin_post(
            "/actuator/logger",
            r#"{"logger": "plinth_runtime", "level": "DEBUG"}"#,
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let resp = json(&resp);
    assert_eq!(resp["logger"], "plinth_runtime");
    assert_eq!(resp["level"], "debug");
    let line = plinth.wait_log("app not answering yet", Duration::from_secs(15));
    assert_eq!(json(&line)["level"], "DEBUG", "{line}");
}

#[tokio::test]
async fn metrics_count_api_calls_and_component_operations() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let key = unique("metric");
    c.get_state(pb::GetStateRequest {
        store_name: "statestore".into(),
        key: key.clone(),
        ..Default::default()
    })
    .await
    .expect("get");
    c.get_state(pb::GetStateRequest {
        store_name: "nope".into(),
        key,
        ..Default::default()
    })
    .await
    .expect_err("unknown store");

    let (status, text) = plinth.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = text.lines().collect();
    let find = |prefix: &str, labels: &[&str]| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(prefix) && labels.iter().all(|lab| l.contains(lab)))
            .collect()
    };
    let ok = find(
        "plinth_api_requests_total{",
        &["api=\"layotto\"", "method=\"GetState\"", "code=\"OK\""],
    );
    assert_eq!(ok.len(), 1, "{text}");
    assert!(ok[0].ends_with(" 1"), "one successful GetState: {}", ok[0]);
    let invalid = find(
        "plinth_api_requests_total{",
        &["method=\"GetState\"", "code=\"INVALID_ARGUMENT\""],
    );
    assert_eq!(invalid.len(), 1, "{text}");
    let ops = find(
        "plinth_component_operations_total{",
        &[
            "component=\"statestore\"",
            "operation=\"get\"",
            "outcome=\"ok\"",
        ],
    );
    assert_eq!(ops.len(), 1, "{text}");
    assert!(ops[0].ends_with(" 1"), "{}", ops[0]);
    assert!(
        !find(
            "plinth_api_request_duration_seconds",
            &["method=\"GetState\""]
        )
        .is_empty(),
        "{text}"
    );
    assert!(
        !find("plinth_component_up{", &["component=\"statestore\""]).is_empty(),
        "{text}"
    );
}
