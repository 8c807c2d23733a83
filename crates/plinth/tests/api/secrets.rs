use std::collections::HashMap;
use std::time::Duration;

use pb::runtime_client::RuntimeClient;
use plinth_proto::runtime::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Plinth, scratch, unique, write};
use crate::upstream::Upstream;

type Client = RuntimeClient<Channel>;

const READY: Duration = Duration::from_secs(10);

async fn get_secret(
    c: &mut Client,
    store: &str,
    key: &str,
) -> Result<HashMap<String, String>, tonic::Status> {
    c.get_secret(pb::GetSecretRequest {
        store_name: store.into(),
        key: key.into(),
        metadata: HashMap::new(),
    })
    .await
    .map(|r| r.into_inner().data)
}

async fn bulk(c: &mut Client, store: &str) -> HashMap<String, HashMap<String, String>> {
    c.get_bulk_secret(pb::GetBulkSecretRequest {
        store_name: store.into(),
        metadata: HashMap::new(),
    })
    .await
    .expect("bulk secrets")
    .into_inner()
    .data
    .into_iter()
    .map(|(k, v)| (k, v.secrets))
    .collect()
}

/// A variable name unique to this run (environment names cannot hold `-`).
fn var(tag: &str) -> String {
    unique(tag).replace('-', "_").to_ascii_uppercase()
}

#[tokio::test]
async fn the_env_store_returns_variables_but_never_tokens() {
    let (name, value) = (var("MY_TEST_SECRET"), unique("value"));
    let (dapr_token, plinth_token) = (unique("dapr-token"), unique("plinth-token"));
    let plinth = Plinth::start_with_env(
        &[],
        &[
            (&name, &value),
            ("DAPR_CLIENT_TOKEN", &dapr_token),
            ("PLINTH_API_TOKEN", &plinth_token),
            ("APP_API_TOKEN", &dapr_token),
        ],
    );
    plinth.wait_ready(READY).await;
    let mut c = plinth.client().await;
    assert_eq!(
        get_secret(&mut c, "secretstore", &name)
            .await
            .expect("secret"),
        HashMap::from([(name.clone(), value.clone())])
    );

    let unset = var("NOT_SET");
    let missing = get_secret(&mut c, "secretstore", &unset)
        .await
        .expect_err("unset variable");
    assert_eq!(missing.code(), Code::NotFound);
    for token in ["DAPR_CLIENT_TOKEN", "PLINTH_API_TOKEN", "APP_API_TOKEN"] {
        let err = get_secret(&mut c, "secretstore", token)
            .await
            .expect_err(token);
        // The same answer as a variable that does not exist, so that existence does not leak.
        assert_eq!(err.code(), Code::NotFound, "{token}: {err:?}");
        assert_eq!(
            err.message().replace(token, "NAME"),
            missing.message().replace(&unset, "NAME"),
            "{token}"
        );
        assert!(!err.message().contains(&dapr_token) && !err.message().contains(&plinth_token));
    }
    // No prefix or allowlist: bulk reads return nothing, so the environment cannot be dumped.
    assert!(bulk(&mut c, "secretstore").await.is_empty());

    let err = get_secret(&mut c, "secretstore", "")
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = get_secret(&mut c, "nope", &name)
        .await
        .expect_err("unknown store");
    assert_eq!(err.code(), Code::InvalidArgument);

    // Nothing logged carries a secret or a token.
    for line in plinth.logs.try_iter() {
        assert!(
            !line.contains(&value) && !line.contains(&dapr_token) && !line.contains(&plinth_token),
            "secret in log: {line}"
        );
    }
}

#[tokio::test]
async fn env_stores_with_a_prefix_or_allowlist_read_in_bulk_but_never_tokens() {
    let dir = scratch("env-secrets");
    let (prefix, other) = (format!("{}_", var("APPX")), var("UNRELATED"));
    write(
        &dir,
        "resources/secrets.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: prefixed
spec:
  type: secretstores.local.env
  version: v1
  metadata:
    - name: prefix
      value: {prefix}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: daprprefixed
spec:
  type: secretstores.local.env
  version: v1
  metadata:
    - name: prefix
      value: DAPR_
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: allowlisted
spec:
  type: secretstores.local.env
  version: v1
  metadata:
    - name: allowlist
      value: \"{other}, PLINTH_API_TOKEN\"
"
        ),
    );
    let (db, api) = (format!("{prefix}DB"), format!("{prefix}API"));
    let token = unique("token");
    let dapr_other = unique("dapr-other");
    let plinth = Plinth::try_start_with_env(
        &["--resources-path", "resources"],
        &[
            (&db, "db-pass"),
            (&api, "api-key"),
            (&other, "other-value"),
            ("DAPR_CLIENT_TOKEN", &token),
            ("PLINTH_API_TOKEN", &token),
            ("DAPR_OTHER", &dapr_other),
        ],
        Some(&dir),
    )
    .expect("plinth starts");
    plinth.wait_ready(READY).await;
    let mut c = plinth.client().await;

    let all = bulk(&mut c, "prefixed").await;
    assert_eq!(all.len(), 2, "{:?}", all.keys().collect::<Vec<_>>());
    assert_eq!(
        all["DB"],
        HashMap::from([("DB".to_string(), "db-pass".to_string())])
    );
    assert_eq!(all["API"]["API"], "api-key");
    assert_eq!(
        get_secret(&mut c, "prefixed", "DB").await.expect("DB")["DB"],
        "db-pass"
    );
    assert_eq!(
        get_secret(&mut c, "prefixed", &other)
            .await
            .expect_err("outside the prefix")
            .code(),
        Code::NotFound
    );

    // A prefix of DAPR_ still never reaches Dapr's variables or tokens.
    assert!(bulk(&mut c, "daprprefixed").await.is_empty());
    assert_eq!(
        get_secret(&mut c, "daprprefixed", "API_TOKEN")
            .await
            .expect_err("token")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        get_secret(&mut c, "daprprefixed", "OTHER")
            .await
            .expect_err("DAPR_ variable")
            .code(),
        Code::NotFound
    );

    // Allowlisting a token does not expose it either.
    let allowed = bulk(&mut c, "allowlisted").await;
    assert_eq!(allowed.keys().collect::<Vec<_>>(), [&other]);
    assert_eq!(
        get_secret(&mut c, "allowlisted", "PLINTH_API_TOKEN")
            .await
            .expect_err("token")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        get_secret(&mut c, "allowlisted", &db)
            .await
            .expect_err("not allowlisted")
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn the_file_store_flattens_nested_keys() {
    let dir = scratch("file-secrets");
    write(
        &dir,
        "secrets.json",
        r#"{"db": {"password": "s3cret", "user": "admin", "replicas": [{"host": "r1"}]}, "token": "abc", "port": 5432, "debug": true}"#,
    );
    write(
        &dir,
        "resources/secrets.yaml",
        "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: filesecrets
spec:
  type: secretstores.local.file
  version: v1
  metadata:
    - name: secretsFile
      value: secrets.json
",
    );
    let plinth = Plinth::start_ready_with(&["--resources-path", "resources"], Some(&dir)).await;
    let mut c = plinth.client().await;
    assert_eq!(
        get_secret(&mut c, "filesecrets", "db:password")
            .await
            .expect("nested"),
        HashMap::from([("db:password".into(), "s3cret".into())])
    );
    assert_eq!(
        get_secret(&mut c, "filesecrets", "db:replicas:0:host")
            .await
            .expect("array")["db:replicas:0:host"],
        "r1"
    );
    assert_eq!(
        get_secret(&mut c, "filesecrets", "token")
            .await
            .expect("top level")["token"],
        "abc"
    );
    assert_eq!(
        get_secret(&mut c, "filesecrets", "port")
            .await
            .expect("number")["port"],
        "5432"
    );
    assert_eq!(
        get_secret(&mut c, "filesecrets", "db")
            .await
            .expect_err("an object is not a secret")
            .code(),
        Code::NotFound
    );
    let all = bulk(&mut c, "filesecrets").await;
    let mut names: Vec<_> = all.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "db:password",
            "db:replicas:0:host",
            "db:user",
            "debug",
            "port",
            "token"
        ]
    );
}

fn binding_with_secret_url(store_yaml: &str, secret_name: &str) -> String {
    format!(
        "{store_yaml}---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: webhook
spec:
  type: bindings.http
  version: v1
  metadata:
    - name: url
      secretKeyRef:
        name: {secret_name}
        key: {secret_name}
auth:
  secretStore: envsecrets
"
    )
}

const ENV_STORE: &str = "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: envsecrets
spec:
  type: secretstores.local.env
  version: v1
";

#[tokio::test]
async fn secret_key_refs_are_injected_into_component_metadata() {
    let mut upstream = Upstream::start("secret-url").await;
    let dir = scratch("secret-ref");
    let secret = var("WEBHOOK_URL");
    write(
        &dir,
        "resources/components.yaml",
        &binding_with_secret_url(ENV_STORE, &secret),
    );
    let url = upstream.url();
    let plinth = Plinth::try_start_with_env(
        &["--resources-path", "resources"],
        &[(&secret, &url)],
        Some(&dir),
    )
    .expect("plinth starts");
    plinth.wait_ready(READY).await;
    let mut c = plinth.client().await;
    let resp = c
        .invoke_binding(pb::InvokeBindingRequest {
            name: "webhook".into(),
            operation: "post".into(),
            data: b"via secret".to_vec(),
            metadata: HashMap::new(),
        })
        .await
        .expect("invoke")
        .into_inner();
    assert_eq!(resp.data, b"echo:via secret");
    let seen = upstream.next_request(Duration::from_secs(5)).await;
    assert_eq!(seen.body, b"via secret");
    // The injected value is a secret: it is not logged.
    for line in plinth.logs.try_iter() {
        assert!(!line.contains(&url), "secret in log: {line}");
    }
}

#[tokio::test]
async fn a_missing_secret_stops_startup_naming_file_component_and_field() {
    let dir = scratch("secret-ref-missing");
    let secret = var("NOT_SET_ANYWHERE");
    write(
        &dir,
        "resources/components.yaml",
        &binding_with_secret_url(ENV_STORE, &secret),
    );
    let failed = Plinth::start_failure(&["--resources-path", "resources"], &[], Some(&dir));
    assert!(
        matches!(failed.code, Some(c) if c != 0),
        "exit code {:?}: {}",
        failed.code,
        failed.output
    );
    let out = &failed.output;
    assert!(
        out.contains("resources/components.yaml"),
        "names the file: {out}"
    );
    assert!(out.contains("webhook"), "names the component: {out}");
    assert!(out.contains("metadata.url"), "names the field: {out}");
    assert!(out.contains(&secret), "names the secret: {out}");

    // A reference without auth.secretStore is a config error too.
    let yaml = binding_with_secret_url(ENV_STORE, &secret)
        .replace("auth:\n  secretStore: envsecrets\n", "");
    write(&dir, "resources/components.yaml", &yaml);
    let failed = Plinth::start_failure(&["--resources-path", "resources"], &[], Some(&dir));
    assert!(
        matches!(failed.code, Some(c) if c != 0),
        "exit code {:?}",
        failed.code
    );
    assert!(
        failed.output.contains("webhook")
            && failed.output.contains("metadata.url")
            && failed.output.contains("secretStore"),
        "{}",
        failed.output
    );
    let _ = std::fs::remove_dir_all(&dir);
}
