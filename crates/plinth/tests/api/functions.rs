//! The function host through the real binary: the HTTP ingress, the admin and Layotto
//! management routes, the gRPC management service, Function resources, the functions
//! directory, service invocation of functions and pub/sub triggers. The guest binaries are
//! built by scripts/build-functions.sh (the test command runs it first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use plinth_proto::admin::v1 as apb;
use plinth_proto::admin::v1::functions_client::FunctionsClient;

use crate::common::{DaprHttp, HttpResponse, Plinth, scratch, write};

/// Where scripts/build-functions.sh leaves the guest binaries.
fn functions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plinth-functions")
}

/// The binary of guest crate `name`.
fn guest(name: &str) -> Vec<u8> {
    let path = functions_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guest functions first with scripts/build-functions.sh (the test command does)",
            path.display()
        )
    })
}

fn admin(plinth: &Plinth) -> DaprHttp {
    DaprHttp::new(plinth.admin)
}

fn ingress(plinth: &Plinth) -> DaprHttp {
    DaprHttp::new(plinth.functions)
}

/// The `error` of a JSON error answer, after checking the status.
#[track_caller]
fn error(resp: &HttpResponse, status: u16) -> String {
    assert_eq!(resp.status, status, "{}", resp.text());
    resp.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {}", resp.text()))
        .to_string()
}

#[tokio::test]
async fn management_and_ingress_refuse_bad_input_clearly() {
    let plinth = Plinth::start_ready().await;
    let admin = admin(&plinth);
    let resp = admin.get("/functions").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["functions"], serde_json::json!([]));

    let put = |path: &'static str, body: &'static [u8]| {
        let admin = admin.clone();
        async move { admin.request("PUT", path, &[], body).await }
    };
    let msg = error(&put("/functions/f1", b"hello, not wasm").await, 400);
    assert!(msg.contains("not a WebAssembly binary"), "{msg}");
    let msg = error(&put("/functions/f1", b"\0asm\x01\0\0\0\x7f\x7f").await, 400);
    assert!(msg.contains("does not compile"), "{msg}");
    let msg = error(&put("/functions/bad%20id", b"\0asm").await, 400);
    assert!(msg.contains("bad id"), "{msg}");
    let msg = error(&put("/functions/f1?memoryBytes=lots", b"\0asm").await, 400);
    assert!(msg.contains("memoryBytes"), "{msg}");
    let msg = error(&put("/functions/f1?colour=blue", b"\0asm").await, 400);
    assert!(msg.contains("colour"), "{msg}");
    let msg = error(&put("/functions/f1?cpuMs=0", b"\0asm").await, 400);
    assert!(msg.contains("cpuMs"), "{msg}");
    error(&admin.delete("/functions/nope", &[]).await, 404);
    error(&admin.get("/functions/nope").await, 404);

    let layotto = |path: &'static str, body: serde_json::Value| {
        let admin = admin.clone();
        async move { admin.post_json(path, &body).await }
    };
    let msg = error(
        &layotto("/wasm/install", serde_json::json!({"name": "id_1"})).await,
        400,
    );
    assert!(msg.contains("vm_config"), "{msg}");
    let msg = error(
        &layotto(
            "/wasm/install",
            serde_json::json!({"name": "id_1", "vm_config": {"engine": "wasmtime", "path": "/no/such/file.wasm"}}),
        )
        .await,
        400,
    );
    assert!(msg.contains("/no/such/file.wasm"), "{msg}");
    error(
        &layotto("/wasm/uninstall", serde_json::json!({"name": "id_1"})).await,
        404,
    );
    let msg = error(
        &layotto(
            "/wasm/update",
            serde_json::json!({"name": "id_1", "instance_num": 0}),
        )
        .await,
        400,
    );
    assert!(msg.contains("instance_num"), "{msg}");
    error(&admin.request("POST", "/wasm/install", &[], "{").await, 400);

    let ingress = ingress(&plinth);
    let msg = error(&ingress.get("/").await, 404);
    assert!(msg.contains("id"), "{msg}");
    let msg = error(
        &ingress.request("GET", "/", &[("id", "nope")], "").await,
        404,
    );
    assert!(msg.contains("nope"), "{msg}");
    error(&ingress.get("/fn/nope/path").await, 404);
    // Nothing was installed by any of it.
    assert_eq!(
        admin.get("/functions").await.json()["functions"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn every_change_requires_the_token_when_one_is_set() {
    const TOKEN: &str = "fn-token";
    let plinth = Plinth::start_with_env(&[], &[("DAPR_API_TOKEN", TOKEN)]);
    plinth.wait_ready(Duration::from_secs(20)).await;
    let admin = admin(&plinth);
    let wasm = guest("fixture-hello");
    for (method, path) in [
        ("PUT", "/functions/hello"),
        ("DELETE", "/functions/hello"),
        ("POST", "/wasm/install"),
        ("POST", "/wasm/uninstall"),
        ("POST", "/wasm/update"),
    ] {
        let resp = admin.request(method, path, &[], wasm.clone()).await;
        assert_eq!(resp.status, 401, "{method} {path}: {}", resp.text());
    }
    // Listing is open, like the probes.
    assert_eq!(admin.get("/functions").await.status, 200);
    let resp = admin
        .request(
            "PUT",
            "/functions/hello",
            &[("dapr-api-token", TOKEN)],
            wasm,
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    // gRPC management requires it too.
    let mut client = FunctionsClient::connect(format!("http://{}", plinth.grpc))
        .await
        .expect("connect");
    let err = client
        .list(apb::ListFunctionsRequest {})
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
}

#[test]
fn a_bad_function_resource_or_directory_stops_startup() {
    let dir = scratch("fn-bad-resource");
    write(
        &dir,
        "resources/fn.yaml",
        "apiVersion: plinth.dev/v1alpha1\nkind: Function\nmetadata:\n  name: orders\nspec:\n  module: missing.wasm\n",
    );
    let failed = Plinth::start_failure(&["--resources-path", "resources"], &[], Some(&dir));
    assert!(
        failed.output.contains("fn.yaml") && failed.output.contains("missing.wasm"),
        "{}",
        failed.output
    );
    write(
        &dir,
        "resources/fn.yaml",
        "apiVersion: plinth.dev/v1alpha1\nkind: Function\nmetadata:\n  name: orders\nspec:\n  limits:\n    memoryMegs: 3\n",
    );
    let failed = Plinth::start_failure(&["--resources-path", "resources"], &[], Some(&dir));
    assert!(
        failed.output.contains("fn.yaml") && failed.output.contains("memoryMegs"),
        "{}",
        failed.output
    );
    std::fs::remove_file(dir.join("resources/fn.yaml")).expect("rm");
    let failed = Plinth::start_failure(&["--functions-dir", "no-such-dir"], &[], Some(&dir));
    assert!(failed.output.contains("no-such-dir"), "{}", failed.output);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Poll `GET /functions` until `check` holds on the listing, for at most 20 s: the
/// functions directory is picked up asynchronously, and the listing is its readiness signal.
async fn wait_listing(
    plinth: &Plinth,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let admin = admin(plinth);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listing = admin.get("/functions").await.json();
        if check(&listing) {
            return listing;
        }
        assert!(Instant::now() < deadline, "{what}: {listing}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn version_of(listing: &serde_json::Value, id: &str) -> Option<u64> {
    listing["functions"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == id)?["version"]
        .as_u64()
}

/// Save `key` = `value` in `statestore` through the Layotto API (under the host's app id,
/// which functions share unless configured otherwise).
async fn save_state(plinth: &Plinth, key: &str, value: &[u8]) {
    use plinth_proto::runtime::v1 as pb;
    plinth
        .client()
        .await
        .save_state(pb::SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![pb::StateItem {
                key: key.into(),
                value: value.to_vec(),
                ..Default::default()
            }],
        })
        .await
        .expect("save state");
}

#[tokio::test]
async fn layotto_functions_run_unchanged_through_layottos_routes() {
    let plinth = Plinth::start_ready().await;
    let book = crate::common::unique("book");
    save_state(&plinth, &book, b"100").await;
    let admin = admin(&plinth);
    for (name, file) in [("id_2", "layotto-function2"), ("id_1", "layotto-function1")] {
        let path = functions_dir().join(format!("{file}.wasm"));
        let resp = admin
            .post_json(
                "/wasm/install",
                &serde_json::json!({
                    "name": name,
                    "instance_num": 1,
                    "vm_config": {"engine": "wasmtime", "path": path.to_str().expect("utf-8 path")},
                }),
            )
            .await;
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    }
    // Installing an id twice is refused, as in Layotto.
    let path = functions_dir().join("layotto-function1.wasm");
    let resp = admin
        .post_json(
            "/wasm/install",
            &serde_json::json!({"name": "id_1", "vm_config": {"path": path.to_str().expect("utf-8")}}),
        )
        .await;
    error(&resp, 409);

    // Layotto's quickstart: the id header, the book in the query string.
    let ingress = ingress(&plinth);
    let resp = ingress
        .request("GET", &format!("/?name={book}"), &[("id", "id_1")], "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.text(),
        format!("There are 100 inventories for {book}.")
    );

    // The same function through service invocation: Dapr HTTP and Layotto gRPC.
    let resp = plinth
        .dapr_http()
        .request(
            "POST",
            "/v1.0/invoke/id_2/method/stock",
            &[("content-type", "text/plain")],
            book.clone(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "100");
    {
        use plinth_proto::runtime::v1 as pb;
        let answer = plinth
            .client()
            .await
            .invoke_service(pb::InvokeServiceRequest {
                id: "id_2".into(),
                message: Some(pb::CommonInvokeRequest {
                    method: "stock".into(),
                    data: Some(prost_types::Any {
                        type_url: String::new(),
                        value: book.clone().into_bytes(),
                    }),
                    content_type: "text/plain".into(),
                    http_extension: None,
                }),
            })
            .await
            .expect("invoke id_2")
            .into_inner();
        assert_eq!(answer.data.expect("data").value, b"100".to_vec());
    }

    // update: the instance count is the concurrency bound, and makes a new version.
    let before = version_of(&admin.get("/functions").await.json(), "id_1").expect("listed");
    let resp = admin
        .post_json(
            "/wasm/update",
            &serde_json::json!({"name": "id_1", "instance_num": 2}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let listing = admin.get("/functions/id_1").await.json();
    assert_eq!(
        listing["config"]["limits"]["maxConcurrency"], 2,
        "{listing}"
    );
    assert_eq!(listing["kind"], "proxy-wasm", "{listing}");
    assert!(
        listing["version"].as_u64().expect("version") > before,
        "{listing}"
    );
    let resp = ingress
        .request("GET", &format!("/?name={book}"), &[("id", "id_1")], "")
        .await;
    assert_eq!(
        resp.text(),
        format!("There are 100 inventories for {book}.")
    );

    let resp = admin
        .post_json("/wasm/uninstall", &serde_json::json!({"name": "id_1"}))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = ingress.request("GET", "/", &[("id", "id_1")], "").await;
    error(&resp, 404);
}
