use std::io::Write;
use std::time::Duration;

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    path
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-config-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

#[test]
fn embedded_default_when_nothing_declared() {
    let loaded = load(&Sources::default(), "app").expect("load");
    assert!(loaded.embedded);
    let names: Vec<_> = loaded
        .components
        .iter()
        .map(|d| d.spec.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "statestore",
            "pubsub",
            "lockstore",
            "sequencer",
            "configstore",
            "filestore",
            "secretstore"
        ]
    );
}

#[test]
fn multi_document_components_with_secret_refs() {
    let dir = tempdir("multi");
    write(
        &dir,
        "components.yaml",
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: cache
spec:
  type: state.in-memory
  version: v1
  initTimeout: 2s
  metadata:
  - name: keyPrefix
    value: name
  - name: password
    secretKeyRef:
      name: db
      key: pass
auth:
  secretStore: secretstore
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: other-app-only
spec:
  type: state.in-memory
scopes: [someone-else]
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders
spec:
  pubsubname: pubsub
  topic: orders
  deadLetterTopic: orders-dead
  routes:
    default: /orders
"#,
    );
    let loaded = load(
        &Sources {
            resources: vec![dir.clone()],
            ..Default::default()
        },
        "app",
    )
    .expect("load");
    assert!(!loaded.embedded);
    assert_eq!(loaded.components.len(), 1, "out-of-scope component skipped");
    let c = &loaded.components[0];
    assert_eq!(c.spec.type_name, "state.in-memory");
    assert_eq!(c.spec.init_timeout, Duration::from_secs(2));
    assert_eq!(
        c.secret_refs,
        vec![SecretRef {
            field: "password".into(),
            store: "secretstore".into(),
            name: "db".into(),
            key: "pass".into()
        }]
    );
    assert_eq!(loaded.subscriptions.len(), 1);
    assert_eq!(
        loaded.subscriptions[0].dead_letter_topic.as_deref(),
        Some("orders-dead")
    );
}

#[test]
fn metadata_with_nothing_under_it_is_empty() {
    let dir = tempdir("null-metadata");
    write(
        &dir,
        "c.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: bus\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata:\n",
    );
    let sources = Sources {
        resources: vec![dir.clone()],
        ..Sources::default()
    };
    let loaded = load(&sources, "app").expect("metadata: null is an empty list");
    let bus = loaded
        .components
        .iter()
        .find(|c| c.spec.name == "bus")
        .expect("the component");
    assert!(bus.spec.metadata.is_empty());
}

#[test]
fn errors_name_file_component_and_field() {
    let dir = tempdir("bad");
    let path = write(
        &dir,
        "bad.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.in-memory\n  initTimeout: soon\n",
    );
    let err = load(
        &Sources {
            resources: vec![path.clone()],
            ..Default::default()
        },
        "app",
    )
    .expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("bad.yaml") && msg.contains("\"s\"") && msg.contains("initTimeout"),
        "{msg}"
    );

    let path = write(
        &dir,
        "typo.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  typo: state.in-memory\n",
    );
    let err = load(
        &Sources {
            resources: vec![path],
            ..Default::default()
        },
        "app",
    )
    .expect_err("must fail");
    assert!(err.to_string().contains("typo"), "{err}");

    let path = write(&dir, "garbage.yaml", "{ not: [yaml");
    assert!(
        load(
            &Sources {
                resources: vec![path],
                ..Default::default()
            },
            "app"
        )
        .is_err()
    );
}

#[test]
fn resiliency_targets_components() {
    let dir = tempdir("res");
    write(
        &dir,
        "res.yaml",
        r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: r
spec:
  policies:
    timeouts:
      fast: 250ms
    retries:
      three:
        policy: constant
        duration: 10ms
        maxRetries: 3
    circuitBreakers:
      cb:
        maxRequests: 1
        timeout: 5s
        trip: consecutiveFailures > 4
  targets:
    components:
      statestore:
        outbound:
          timeout: fast
          retry: three
          circuitBreaker: cb
    apps:
      orders:
        timeout: fast
        retry: three
      billing:
        circuitBreaker: cb
"#,
    );
    let loaded = load(
        &Sources {
            resources: vec![dir],
            ..Default::default()
        },
        "app",
    )
    .expect("load");
    let p = loaded.policies.get("statestore").expect("policy");
    assert_eq!(p.timeout, Duration::from_millis(250));
    assert_eq!(p.retry.as_ref().and_then(|r| r.max_retries), Some(3));
    assert_eq!(p.breaker.as_ref().map(|b| b.consecutive_failures), Some(5));
    // App targets are the mesh's; an app without a timeout policy keeps the invocation's.
    let orders = loaded.mesh.app_policies.get("orders").expect("orders");
    assert_eq!(orders.timeout, Duration::from_millis(250));
    assert_eq!(orders.retry.as_ref().and_then(|r| r.max_retries), Some(3));
    let billing = loaded.mesh.app_policies.get("billing").expect("billing");
    assert_eq!(billing.timeout, crate::invoke::APP_CALL_TIMEOUT);
    assert!(billing.breaker.is_some());
    assert!(!loaded.policies.contains_key("orders"));
    assert_eq!(resource::trip("consecutiveFailures >= 3"), Some(3));
    assert_eq!(resource::trip("requests > 3"), None);
}

#[test]
fn layotto_config_json() {
    let dir = tempdir("layotto");
    let path = write(
        &dir,
        "config.json",
        r#"{"servers":[{"listeners":[{"filter_chains":[{"filters":[{"type":"grpc","config":{"server_name":"runtime","grpc_config":{
            "hellos": {"quick_start_demo": {"type": "helloworld", "hello": "greeting"}},
            "state": {"state_demo": {"type": "in-memory", "metadata": {}}},
            "sequencer": {"sequencer_demo": {"type": "in-memory", "biggerThan": {"key1": 100}}},
            "secret_store": {"secret_demo": {"type": "local.env", "metadata": {}}},
            "lock": {"lock_demo": {"type": "in-memory", "secret_ref": [{"store_name": "secret_demo", "key": "K", "sub_key": "", "inject_as": "password"}]}},
            "app": {"app_id": "app1", "grpc_callback_port": 9999}
        }}}]}]}]}]}"#,
    );
    let loaded = load(
        &Sources {
            layotto: Some(path),
            ..Default::default()
        },
        "plinth",
    )
    .expect("load");
    assert_eq!(loaded.settings.app_id.as_deref(), Some("app1"));
    assert_eq!(loaded.settings.app_port, Some(9999));
    let types: Vec<_> = loaded
        .components
        .iter()
        .map(|d| d.spec.type_name.as_str())
        .collect();
    assert!(
        types.contains(&"state.in-memory")
            && types.contains(&"sequencer.in-memory")
            && types.contains(&"secretstores.local.env")
    );
    let seq = loaded
        .components
        .iter()
        .find(|d| d.spec.name == "sequencer_demo")
        .expect("seq");
    assert_eq!(
        seq.spec
            .structured
            .get("biggerThan")
            .and_then(|v| v.get("key1"))
            .and_then(|v| v.as_i64()),
        Some(100)
    );
    assert!(loaded.components.iter().all(|d| d.spec.app_id == "app1"));
}

fn tags(app_id: &str) -> Tags {
    Tags {
        app_id: app_id.into(),
        namespace: "prod".into(),
        pod_name: Some("orders-0".into()),
    }
}

#[test]
fn template_tags_expand_as_in_dapr() {
    let t = tags("orders");
    assert_eq!(t.expand("plain").as_deref(), Ok("plain"));
    assert_eq!(t.expand("{appID}").as_deref(), Ok("orders"));
    // Dapr's {namespace} is the namespace joined to the app id.
    assert_eq!(t.expand("{namespace}").as_deref(), Ok("prod.orders"));
    assert_eq!(
        t.expand("{podName}-{appID}").as_deref(),
        Ok("orders-0-orders")
    );
    assert_eq!(
        t.expand("{ {appid} {appID}} {unknown}").as_deref(),
        Ok("{ {appid} orders} {unknown}"),
        "only the exact tags are replaced"
    );
    // Every {uuid} is a fresh one.
    let two = t.expand("{uuid}/{uuid}").expect("expand");
    let (a, b) = two.split_once('/').expect("two parts");
    assert!(
        uuid::Uuid::parse_str(a).is_ok() && uuid::Uuid::parse_str(b).is_ok(),
        "{two}"
    );
    assert_ne!(a, b);
    // What a tag expands to is not expanded again.
    let odd = Tags {
        pod_name: Some("{appID}".into()),
        ..tags("orders")
    };
    assert_eq!(odd.expand("{podName}").as_deref(), Ok("{appID}"));
    let no_pod = Tags {
        pod_name: None,
        ..tags("orders")
    };
    let err = no_pod.expand("x-{podName}").expect_err("POD_NAME unset");
    assert!(err.contains("POD_NAME"), "{err}");
    assert_eq!(tags::DEFAULT_NAMESPACE, "default");
}

#[test]
fn template_tags_in_component_metadata_use_the_final_app_id() {
    let dir = tempdir("tags");
    write(
        &dir,
        "config.yaml",
        "apiVersion: plinth.dev/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  appId: from-config\n",
    );
    write(
        &dir,
        "components.yaml",
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: bus
spec:
  type: pubsub.in-memory
  metadata:
  - name: consumerID
    value: "{namespace}-{podName}"
  - name: clientID
    value: "{appID}-{uuid}"
  - name: other
    value: "{uuid}"
  - name: fromEnv
    envRef: PATH
"#,
    );
    let sources = Sources {
        config: Some(dir.join("config.yaml")),
        resources: vec![dir.join("components.yaml")],
        ..Default::default()
    };
    let loaded = load_with(&sources, "cli-id", tags).expect("load");
    let md = &loaded.components[0].spec.metadata;
    assert_eq!(md["consumerID"], "prod.from-config-orders-0");
    let client = md["clientID"].strip_prefix("from-config-").expect("app id");
    assert!(uuid::Uuid::parse_str(client).is_ok(), "{client}");
    assert_ne!(client, md["other"], "a fresh uuid per occurrence");

    let no_pod = |app_id: &str| Tags {
        pod_name: None,
        ..tags(app_id)
    };
    let err = load_with(&sources, "cli-id", no_pod).expect_err("{podName} without POD_NAME");
    let msg = err.to_string();
    assert!(
        msg.contains("components.yaml")
            && msg.contains("\"bus\"")
            && msg.contains("metadata.consumerID")
            && msg.contains("POD_NAME"),
        "{msg}"
    );
}

#[test]
fn scopes_apply_to_the_final_app_id() {
    let dir = tempdir("scopes");
    let component = |name: &str, type_name: &str, scopes: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_name}\n{scopes}---\n"
        )
    };
    let mut text = String::new();
    // The same name for two apps, each seeing its own.
    text += &component("store", "state.in-memory", "scopes: [a]\n");
    text += &component("store", "lock.in-memory", "scopes: [b, c]\n");
    text += &component("everyone", "sequencer.in-memory", "");
    // Scoped away: never validated, so another app's settings cannot stop this one.
    text += "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: theirs\nspec:\n  type: state.in-memory\n  unknownField: 1\nscopes: [b]\n---\n";
    text += "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: pubsub\n  topic: t\nscopes: [b]\n";
    write(&dir, "all.yaml", &text);
    let load_as = |app_id: &str| {
        load(
            &Sources {
                resources: vec![dir.clone()],
                ..Default::default()
            },
            app_id,
        )
    };
    let summary = |loaded: &Loaded| -> Vec<String> {
        loaded
            .components
            .iter()
            .map(|d| format!("{}={}", d.spec.name, d.spec.type_name))
            .collect()
    };
    let a = load_as("a").expect("load a");
    assert_eq!(
        summary(&a),
        ["store=state.in-memory", "everyone=sequencer.in-memory"]
    );
    assert!(a.subscriptions.is_empty());
    assert!(a.components.iter().all(|d| d.spec.app_id == "a"));
    let c = load_as("c").expect("load c");
    assert_eq!(
        summary(&c),
        ["store=lock.in-memory", "everyone=sequencer.in-memory"]
    );
    let b = load_as("b").expect_err("b's own component is invalid");
    assert!(b.to_string().contains("theirs"), "{b}");

    // A Configuration's appId decides, not the id Plinth was started with.
    write(
        &dir,
        "config.yaml",
        "apiVersion: plinth.dev/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  appId: a\n",
    );
    let via_config = load(
        &Sources {
            config: Some(dir.join("config.yaml")),
            resources: vec![dir.join("all.yaml")],
            ..Default::default()
        },
        "c",
    )
    .expect("load");
    assert_eq!(
        summary(&via_config),
        ["store=state.in-memory", "everyone=sequencer.in-memory"]
    );
}

#[test]
fn components_scoped_to_other_apps_do_not_bring_the_embedded_defaults() {
    let dir = tempdir("scoped-away");
    write(
        &dir,
        "store.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\nscopes: [someone-else]\n",
    );
    let loaded = load(
        &Sources {
            resources: vec![dir],
            ..Default::default()
        },
        "app",
    )
    .expect("load");
    assert!(loaded.components.is_empty());
    assert!(!loaded.embedded);
}
