use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use plinth_proto::runtime::v1 as pb;
use serde_json::Value;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::binding::{invoke, start_with_http_binding};
use crate::common::{Plinth, scratch, unique, write};
use crate::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_then_exits_cleanly() {
    let upstream = Upstream::start("slow").await;
    let mut plinth = start_with_http_binding(&upstream.url()).await;
    const IN_FLIGHT: usize = 8;
    let mut calls = Vec::with_capacity(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let mut c = plinth.client().await;
        calls.push(tokio::spawn(async move {
            invoke(&mut c, "post", b"slow", &[("path", "/hold")]).await
        }));
    }
    // Every call has reached the upstream and waits there.
    upstream.wait_held(IN_FLIGHT, Duration::from_secs(10)).await;

    plinth.terminate();
    // The drain begins: the gRPC listener closes and refuses new connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(plinth.grpc).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the gRPC listener still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "in-flight calls were cut off instead of drained"
    );

    // Let the upstream answer: every in-flight call completes OK.
    upstream.release();
    for call in calls {
        let resp = call
            .await
            .expect("task")
            .expect("in-flight call completes OK");
        assert_eq!(resp.data, b"released");
    }
    // Exit 0, well within the 5 s grace period the harness sets.
    let code = tokio::task::block_in_place(|| plinth.wait_exit(Duration::from_secs(5)));
    assert_eq!(code, Some(0));
    assert!(tokio::net::TcpStream::connect(plinth.grpc).await.is_err());
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    let plinth = Plinth::start_ready().await;
    let mut health = HealthClient::new(plinth.channel().await);
    for service in ["", "spec.proto.runtime.v1.Runtime"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner();
        assert_eq!(
            resp.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), Code::NotFound);
    // The Dapr gRPC port serves the same services.
    let mut dapr = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", plinth.dapr_grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect dapr port"),
    );
    let resp = dapr
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("check")
        .into_inner();
    assert_eq!(resp.status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn reflection_lists_the_runtime_service() {
    let plinth = Plinth::start_ready().await;
    let mut client = ServerReflectionClient::new(plinth.channel().await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "spec.proto.runtime.v1.Runtime".into(),
            )),
        },
    ];
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection")
        .into_inner();
    let first = stream.message().await.expect("answer").expect("a list");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("not a service list: {first:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "spec.proto.runtime.v1.Runtime",
        "spec.proto.runtime.v1.Lifecycle",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // AppCallback is the app's service, which Plinth calls; Plinth does not serve it.
    assert!(
        !names.iter().any(|n| n.ends_with("AppCallback")),
        "{names:?}"
    );
    let second = stream.message().await.expect("answer").expect("a file");
    let Some(MessageResponse::FileDescriptorResponse(files)) = second.message_response else {
        panic!("not a file descriptor: {second:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

fn plinth_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .output()
        .expect("run plinth")
}

#[test]
fn help_prints_usage() {
    let out = plinth_command(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: plinth"), "{text}");
    assert!(text.contains("run"), "{text}");

    let out = plinth_command(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: plinth run"), "{text}");
    for flag in [
        "--grpc-port",
        "--resources-path",
        "--layotto-config",
        "--shutdown-grace-period",
        "--admin-port",
    ] {
        assert!(text.contains(flag), "{flag} missing: {text}");
    }

    let out = plinth_command(&["run", "--grpc-port", "not-a-port"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grpc-port"));
}

/// Start with one resources file holding `yaml`; it must fail. Returns what it printed.
fn failing_resources(file: &str, yaml: &str) -> String {
    let dir = scratch("bad-config");
    write(&dir, &format!("resources/{file}"), yaml);
    let failed = Plinth::start_failure(&["--resources-path", "resources"], &[], Some(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(failed.code, Some(c) if c != 0),
        "exit code {:?}: {}",
        failed.code,
        failed.output
    );
    failed.output
}

fn component(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[test]
fn invalid_config_stops_startup_naming_file_component_and_field() {
    let out = failing_resources(
        "broken.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: [unclosed\n",
    );
    assert!(
        out.contains("broken.yaml") && out.contains("YAML"),
        "bad YAML: {out}"
    );

    let out = failing_resources(
        "unknown.yaml",
        &component("mystore", "  type: state.nosuch\n  version: v1\n"),
    );
    for needle in ["unknown.yaml", "mystore", "spec.type", "state.nosuch"] {
        assert!(
            out.contains(needle),
            "unknown type: {needle} missing: {out}"
        );
    }

    let out = failing_resources(
        "badmeta.yaml",
        &component(
            "hook",
            "  type: bindings.http\n  version: v1\n  metadata:\n    - name: url\n      value: ftp://example.invalid\n",
        ),
    );
    for needle in ["badmeta.yaml", "hook", "metadata.url"] {
        assert!(
            out.contains(needle),
            "bad metadata: {needle} missing: {out}"
        );
    }

    let out = failing_resources(
        "missing.yaml",
        &component("files", "  type: secretstores.local.file\n  version: v1\n"),
    );
    for needle in ["missing.yaml", "files", "metadata.secretsFile"] {
        assert!(
            out.contains(needle),
            "missing metadata: {needle} missing: {out}"
        );
    }

    let out = failing_resources(
        "timeout.yaml",
        &component("slow", "  type: state.in-memory\n  initTimeout: soon\n"),
    );
    for needle in ["timeout.yaml", "slow", "spec.initTimeout"] {
        assert!(
            out.contains(needle),
            "bad initTimeout: {needle} missing: {out}"
        );
    }

    let out = failing_resources(
        "typo.yaml",
        &component("typo", "  type: state.in-memory\n  metdata: []\n"),
    );
    for needle in ["typo.yaml", "typo", "metdata"] {
        assert!(
            out.contains(needle),
            "unknown field: {needle} missing: {out}"
        );
    }

    let twice = format!(
        "{}---\n{}",
        component("same", "  type: state.in-memory\n"),
        component("same", "  type: lock.in-memory\n")
    );
    let out = failing_resources("twice.yaml", &twice);
    for needle in ["twice.yaml", "same", "metadata.name"] {
        assert!(
            out.contains(needle),
            "duplicate name: {needle} missing: {out}"
        );
    }

    // A resources path that does not exist, and a Layotto config that is not JSON.
    let failed = Plinth::start_failure(&["--resources-path", "does-not-exist"], &[], None);
    assert!(matches!(failed.code, Some(c) if c != 0), "{failed:?}");
    assert!(
        failed.output.contains("does-not-exist"),
        "{}",
        failed.output
    );
    let dir = scratch("bad-layotto");
    write(&dir, "config.json", "{ not json");
    let failed = Plinth::start_failure(&["--layotto-config", "config.json"], &[], Some(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(failed.code, Some(c) if c != 0), "{failed:?}");
    assert!(
        failed.output.contains("config.json") && failed.output.contains("JSON"),
        "{}",
        failed.output
    );
}

#[tokio::test]
async fn a_layotto_config_brings_up_its_components() {
    let dir = scratch("layotto");
    let config = serde_json::json!({
        "servers": [{
            "default_log_path": "stdout",
            "listeners": [{
                "name": "grpc",
                "address": "127.0.0.1:34904",
                "bind_port": true,
                "filter_chains": [{
                    "filters": [{
                        "type": "grpc",
                        "config": {
                            "server_name": "runtime",
                            "grpc_config": {
                                "hellos": { "quick_start_demo": { "type": "helloworld", "hello": "greeting" } },
                                "state": { "state_demo": { "type": "in-memory", "metadata": {} } },
                                "lock": { "lock_demo": { "type": "in-memory" } },
                                "sequencer": { "sequencer_demo": { "type": "in-memory" } },
                                "config_store": { "config_demo": { "type": "in-memory" } },
                                "pub_subs": { "pub_subs_demo": { "type": "in-memory" } },
                                "file": { "file_demo": { "type": "local", "metadata": { "rootPath": "layotto-files" } } },
                                "secret_store": { "secret_demo": { "type": "local.env" } },
                                "app": { "app_id": "layotto-app" }
                            }
                        }
                    }]
                }]
            }]
        }]
    });
    write(
        &dir,
        "config.json",
        &serde_json::to_string_pretty(&config).expect("json"),
    );
    let plinth = Plinth::start_ready_with(&["--layotto-config", "config.json"], Some(&dir)).await;

    let (_, body) = plinth.admin_get("/actuator/health/readiness").await;
    let ready: Value = serde_json::from_str(&body).expect("json");
    let mut listed: Vec<(String, String, String)> = ready["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().into(),
                c["type"].as_str().unwrap_or_default().into(),
                c["status"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    listed.sort();
    let up = |n: &str, t: &str| (n.to_string(), t.to_string(), "UP".to_string());
    assert_eq!(
        listed,
        [
            up("config_demo", "configuration.in-memory"),
            up("file_demo", "file.local"),
            up("lock_demo", "lock.in-memory"),
            up("pub_subs_demo", "pubsub.in-memory"),
            up("secret_demo", "secretstores.local.env"),
            up("sequencer_demo", "sequencer.in-memory"),
            up("state_demo", "state.in-memory"),
        ]
    );
    let (_, info) = plinth.admin_get("/actuator/info").await;
    let info: Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["appId"], "layotto-app");
    assert_eq!(info["embeddedDefault"], false);

    // Each component serves under its Layotto name.
    let mut c = plinth.client().await;
    let key = unique("k");
    c.save_state(pb::SaveStateRequest {
        store_name: "state_demo".into(),
        states: vec![pb::StateItem {
            key: key.clone(),
            value: b"v".to_vec(),
            ..Default::default()
        }],
    })
    .await
    .expect("save");
    let got = c
        .get_state(pb::GetStateRequest {
            store_name: "state_demo".into(),
            key: key.clone(),
            ..Default::default()
        })
        .await
        .expect("get");
    assert_eq!(got.into_inner().data, b"v");
    let locked = c
        .try_lock(pb::TryLockRequest {
            store_name: "lock_demo".into(),
            resource_id: key.clone(),
            lock_owner: "me".into(),
            expire: 10,
        })
        .await
        .expect("lock");
    assert!(locked.into_inner().success);
    let id = c
        .get_next_id(pb::GetNextIdRequest {
            store_name: "sequencer_demo".into(),
            key: key.clone(),
            ..Default::default()
        })
        .await
        .expect("id");
    assert_eq!(id.into_inner().next_id, 1);
    c.save_configuration(pb::SaveConfigurationRequest {
        store_name: "config_demo".into(),
        items: vec![pb::ConfigurationItem {
            key: key.clone(),
            content: "c".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("save configuration");
    c.publish_event(pb::PublishEventRequest {
        pubsub_name: "pub_subs_demo".into(),
        topic: unique("t"),
        data: b"e".to_vec(),
        ..Default::default()
    })
    .await
    .expect("publish");
    let first = pb::PutFileRequest {
        store_name: "file_demo".into(),
        name: format!("{key}.txt"),
        data: b"file".to_vec(),
        metadata: HashMap::new(),
    };
    c.put_file(tokio_stream::iter(vec![first]))
        .await
        .expect("put file");
    assert_eq!(
        std::fs::read(dir.join("layotto-files").join(format!("{key}.txt"))).expect("on disk"),
        b"file"
    );
    // Only the config's components exist.
    let err = c
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key,
            ..Default::default()
        })
        .await
        .expect_err("no embedded store");
    assert_eq!(err.code(), Code::InvalidArgument);
    let hello = c
        .say_hello(pb::SayHelloRequest {
            service_name: "quick_start_demo".into(),
            ..Default::default()
        })
        .await
        .expect("hello");
    assert!(!hello.into_inner().hello.is_empty());
}
