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
    // A caller's token never reaches a function; its other headers do.
    let resp = admin
        .request(
            "PUT",
            "/functions/abi",
            &[("dapr-api-token", TOKEN)],
            guest("fixture-abi"),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let echoed = ingress(&plinth)
        .request(
            "GET",
            "/fn/abi/echo",
            &[("dapr-api-token", TOKEN), ("x-visible", "yes")],
            "",
        )
        .await
        .text();
    assert!(echoed.contains("header.x-visible=yes"), "{echoed}");
    assert!(!echoed.contains(TOKEN), "{echoed}");
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

/// PUT `wasm` as function `id` (with `query`), expecting `status`.
async fn put(
    plinth: &Plinth,
    id: &str,
    query: &str,
    wasm: Vec<u8>,
    status: u16,
) -> serde_json::Value {
    let resp = admin(plinth)
        .request("PUT", &format!("/functions/{id}{query}"), &[], wasm)
        .await;
    assert_eq!(resp.status, status, "PUT {id}{query}: {}", resp.text());
    resp.json()
}

#[tokio::test]
async fn the_functions_directory_serves_the_bookstore_and_follows_changes() {
    let dir = scratch("fn-dir");
    let fns = dir.join("fns");
    std::fs::create_dir_all(&fns).expect("mkdir");
    for name in ["function1", "function2"] {
        std::fs::write(fns.join(format!("{name}.wasm")), guest(name)).expect("copy");
    }
    // A file that is not wasm is skipped with a warning; Plinth starts anyway.
    std::fs::write(fns.join("broken.wasm"), b"not wasm").expect("write");
    let plinth = Plinth::start_ready_with(&["--functions-dir", "fns"], Some(&dir)).await;
    let book = crate::common::unique("book");
    save_state(&plinth, &book, b"100").await;

    let ingress = ingress(&plinth);
    for (path, headers) in [
        (format!("/?name={book}"), vec![("id", "function1")]),
        (format!("/fn/function1/?name={book}"), vec![]),
    ] {
        let resp = ingress.request("GET", &path, &headers, "").await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(
            resp.text(),
            format!("There are 100 inventories for {book}.")
        );
    }
    let listing = admin(&plinth).get("/functions").await.json();
    let ids: Vec<&str> = listing["functions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(ids, ["function1", "function2"], "{listing}");
    assert_eq!(listing["functions"][0]["kind"], "component");

    // Replaced: the new code serves under the same id.
    let v1 = version_of(&listing, "function2").expect("version");
    std::fs::write(fns.join("function2.wasm"), guest("fixture-hello")).expect("replace");
    wait_listing(&plinth, "function2 reloaded", |l| {
        version_of(l, "function2").is_some_and(|v| v > v1)
    })
    .await;
    let resp = ingress
        .request("GET", "/", &[("id", "function2")], "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_ne!(resp.text(), "100");

    // Deleted: gone.
    std::fs::remove_file(fns.join("function1.wasm")).expect("rm");
    wait_listing(&plinth, "function1 removed", |l| {
        version_of(l, "function1").is_none()
    })
    .await;
    error(
        &ingress
            .request("GET", "/", &[("id", "function1")], "")
            .await,
        404,
    );
}

#[tokio::test]
async fn admin_http_and_grpc_install_update_and_uninstall() {
    let plinth = Plinth::start_ready().await;
    let created = put(&plinth, "hello", "", guest("fixture-hello"), 201).await;
    assert_eq!(created["id"], "hello");
    assert_eq!(created["kind"], "component");
    assert_eq!(created["status"], "running");
    let ingress = ingress(&plinth);
    let hello = ingress.request("GET", "/", &[("id", "hello")], "").await;
    assert_eq!(hello.status, 200, "{}", hello.text());

    // Updating while a request runs: the request finishes on the version it started on.
    put(&plinth, "slow", "", guest("fixture-limits"), 201).await;
    let slow = {
        let ingress = ingress.clone();
        tokio::spawn(async move {
            ingress
                .request("GET", "/fn/slow/sleep?ms=1500", &[], "")
                .await
        })
    };
    wait_listing(&plinth, "the slow request running", |l| {
        l["functions"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["id"] == "slow"))
            .is_some_and(|f| f["inFlight"] == 1)
    })
    .await;
    let updated = put(
        &plinth,
        "slow",
        "?maxConcurrency=3",
        guest("fixture-hello"),
        200,
    )
    .await;
    assert_eq!(
        updated["config"]["limits"]["maxConcurrency"], 3,
        "{updated}"
    );
    let new = ingress.request("GET", "/fn/slow/sleep?ms=0", &[], "").await;
    assert_eq!(
        new.text(),
        hello.text(),
        "the new version answers new requests"
    );
    let old = slow.await.expect("join");
    assert_eq!(old.status, 200, "{}", old.text());
    assert_eq!(
        old.text(),
        "",
        "the old version finished the request it had started"
    );

    // gRPC: the same registry.
    let mut client = FunctionsClient::connect(format!("http://{}", plinth.grpc))
        .await
        .expect("connect");
    let listed = client
        .list(apb::ListFunctionsRequest {})
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<&str> = listed.functions.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["hello", "slow"]);
    let installed = client
        .install(apb::InstallFunctionRequest {
            id: "hello2".into(),
            wasm: guest("fixture-hello"),
            config_json: r#"{"limits": {"cpuMs": 50}}"#.into(),
            mode: apb::InstallMode::Create as i32,
            variables: Default::default(),
        })
        .await
        .expect("install")
        .into_inner();
    assert_eq!(installed.kind, "component");
    let info: serde_json::Value = serde_json::from_str(&installed.info_json).expect("json");
    assert_eq!(info["config"]["limits"]["cpuMs"], 50, "{info}");
    assert_eq!(
        info["compiledFromCache"], true,
        "same bytes as hello: {info}"
    );
    let err = client
        .install(apb::InstallFunctionRequest {
            id: "hello2".into(),
            wasm: guest("fixture-hello"),
            config_json: String::new(),
            mode: apb::InstallMode::Create as i32,
            variables: Default::default(),
        })
        .await
        .expect_err("exists");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    let err = client
        .install(apb::InstallFunctionRequest {
            id: "hello3".into(),
            wasm: b"junk".to_vec(),
            config_json: String::new(),
            mode: 0,
            variables: Default::default(),
        })
        .await
        .expect_err("junk");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let resp = ingress.request("GET", "/", &[("id", "hello2")], "").await;
    assert_eq!(resp.text(), hello.text());
    client
        .uninstall(apb::UninstallFunctionRequest {
            id: "hello2".into(),
        })
        .await
        .expect("uninstall");
    let err = client
        .uninstall(apb::UninstallFunctionRequest {
            id: "hello2".into(),
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    let resp = admin(&plinth).delete("/functions/hello", &[]).await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    error(
        &ingress.request("GET", "/", &[("id", "hello")], "").await,
        404,
    );
}

/// The `name=value` lines fixture-wasi answers with.
fn lines(resp: &HttpResponse) -> std::collections::HashMap<String, String> {
    resp.text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn variables_reach_wasi_config_from_the_admin_http_and_grpc_apis() {
    let plinth = Plinth::start_ready().await;
    let ingress = ingress(&plinth);
    let installed = put(
        &plinth,
        "cfg",
        "?variable=region=eu&variable=greeting=a%3Db%20c&variable=empty=",
        guest("fixture-wasi"),
        201,
    )
    .await;
    assert_eq!(
        installed["config"]["variables"]["region"], "eu",
        "{installed}"
    );
    let resp = ingress
        .request("GET", "/fn/cfg/config?key=greeting", &[], "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = lines(&resp);
    assert_eq!(got["draft.get"], "a=b c", "{}", resp.text());
    assert_eq!(got["rc1.get-all"], "empty:,greeting:a=b c,region:eu");
    let missing = ingress
        .request("GET", "/fn/cfg/config?key=colour", &[], "")
        .await;
    assert_eq!(lines(&missing)["draft.get"], "none", "{}", missing.text());

    // wasi:keyvalue reaches the state API under the function's app id.
    let kv = ingress.request("GET", "/fn/cfg/kv", &[], "").await;
    assert_eq!(lines(&kv)["kept"], "ok", "{}", kv.text());
    let app_id = installed["appId"].as_str().expect("appId").to_string();
    let state = DaprHttp::new(plinth.dapr_http)
        .get("/v1.0/state/statestore/wasi-kept")
        .await;
    assert_eq!(state.status, 200, "{app_id}: {}", state.text());
    assert_eq!(state.text(), "kept");

    // A variable that is not KEY=VALUE, or has no key, is refused before anything loads.
    for bad in ["?variable=region", "?variable==eu"] {
        let resp = admin(&plinth)
            .request(
                "PUT",
                &format!("/functions/cfg2{bad}"),
                &[],
                guest("fixture-wasi"),
            )
            .await;
        let msg = error(&resp, 400);
        assert!(
            msg.contains("query parameter variable") && msg.contains("KEY=VALUE"),
            "{bad}: {msg}"
        );
    }
    error(&admin(&plinth).get("/functions/cfg2").await, 404);

    // gRPC: the variables field, on top of config_json's.
    let mut client = FunctionsClient::connect(format!("http://{}", plinth.grpc))
        .await
        .expect("connect");
    client
        .install(apb::InstallFunctionRequest {
            id: "cfg3".into(),
            wasm: guest("fixture-wasi"),
            config_json: r#"{"variables": {"region": "us", "tier": "gold"}}"#.into(),
            mode: apb::InstallMode::Create as i32,
            variables: [("region".to_string(), "ap".to_string())].into(),
        })
        .await
        .expect("install");
    let resp = ingress
        .request("GET", "/fn/cfg3/config?key=region", &[], "")
        .await;
    let got = lines(&resp);
    assert_eq!(got["runtime.get"], "ap", "{}", resp.text());
    assert_eq!(got["draft.get-all"], "region:ap,tier:gold");
    let err = client
        .install(apb::InstallFunctionRequest {
            id: "cfg4".into(),
            wasm: guest("fixture-wasi"),
            config_json: String::new(),
            mode: 0,
            variables: [(String::new(), "x".to_string())].into(),
        })
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("variables"), "{err:?}");
}

#[tokio::test]
async fn a_function_resource_gives_its_variables_to_wasi_config() {
    let dir = scratch("fn-variables");
    std::fs::create_dir_all(dir.join("resources")).expect("mkdir");
    std::fs::write(dir.join("resources/cfg.wasm"), guest("fixture-wasi")).expect("copy");
    write(
        &dir,
        "resources/cfg.yaml",
        "apiVersion: plinth.dev/v1alpha1\nkind: Function\nmetadata:\n  name: cfg\nspec:\n  module: cfg.wasm\n  variables:\n    region: eu\n    port: \"8080\"\n",
    );
    let plinth = Plinth::start_ready_with(&["--resources-path", "resources"], Some(&dir)).await;
    let resp = ingress(&plinth)
        .request("GET", "/fn/cfg/config?key=port", &[], "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = lines(&resp);
    assert_eq!(got["draft.get"], "8080", "{}", resp.text());
    assert_eq!(got["rc1.get-all"], "port:8080,region:eu");
    drop(plinth);

    // Values are strings: a number is refused with the file and the field named.
    write(
        &dir,
        "resources/cfg.yaml",
        "apiVersion: plinth.dev/v1alpha1\nkind: Function\nmetadata:\n  name: cfg\nspec:\n  module: cfg.wasm\n  variables:\n    port: 8080\n",
    );
    let failed = Plinth::start_failure(&["--resources-path", "resources"], &[], Some(&dir));
    assert!(
        failed.output.contains("cfg.yaml") && failed.output.contains("variables"),
        "{}",
        failed.output
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn limits_and_traps_fail_the_call_and_nothing_else() {
    let plinth = Plinth::start_ready().await;
    let limits = guest("fixture-limits");
    put(
        &plinth,
        "bad",
        "?cpuMs=200&memoryBytes=8388608",
        limits.clone(),
        201,
    )
    .await;
    let ingress = ingress(&plinth);
    for (path, status, needle) in [
        ("/fn/bad/spin", 500, "execution-time budget"),
        ("/fn/bad/alloc", 500, "memory limit of 8388608 bytes"),
        ("/fn/bad/panic", 500, "trapped"),
    ] {
        let msg = error(&ingress.get(path).await, status);
        assert!(msg.contains(needle) && msg.contains("bad"), "{path}: {msg}");
    }
    // The wall clock covers time outside the guest too.
    put(&plinth, "sleepy", "?timeoutMs=100", limits.clone(), 201).await;
    let msg = error(&ingress.get("/fn/sleepy/sleep?ms=5000").await, 504);
    assert!(msg.contains("timeout"), "{msg}");

    // Through service invocation the caller gets the matching gRPC error.
    {
        use plinth_proto::runtime::v1 as pb;
        let invoke = |method: &str| pb::InvokeServiceRequest {
            id: "bad".into(),
            message: Some(pb::CommonInvokeRequest {
                method: method.into(),
                ..Default::default()
            }),
        };
        let mut client = plinth.client().await;
        let err = client
            .invoke_service(invoke("spin"))
            .await
            .expect_err("spin");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        let err = client
            .invoke_service(invoke("panic"))
            .await
            .expect_err("panic");
        assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
        assert!(err.message().contains("boom"), "{err:?}");
        let ok = client
            .invoke_service(invoke("fine"))
            .await
            .expect("ok")
            .into_inner();
        assert_eq!(ok.data.expect("data").value, b"ok".to_vec());
    }
    // The function itself still serves.
    let resp = ingress.get("/fn/bad/fine").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok"));

    // Each outcome is counted per function.
    let (status, metrics) = plinth.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"plinth_function_calls_total{function="bad",outcome="ok"} 2"#,
        r#"plinth_function_calls_total{function="bad",outcome="resource_exhausted"} 3"#,
        r#"plinth_function_calls_total{function="bad",outcome="internal"} 2"#,
        r#"plinth_function_calls_total{function="sleepy",outcome="timeout"} 1"#,
        "plinth_functions_installed 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn spinning_functions_do_not_hold_up_the_apis() {
    use plinth_proto::runtime::v1 as pb;
    let plinth = Plinth::start_ready().await;
    // A budget long enough that the spinners are still running when the API calls below
    // are done, unless those calls had to wait for them.
    for id in ["spin1", "spin2"] {
        put(
            &plinth,
            id,
            "?cpuMs=4000&timeoutMs=30000",
            guest("fixture-limits"),
            201,
        )
        .await;
    }
    save_state(&plinth, "spin-key", b"v").await;
    let spinners: Vec<_> = ["spin1", "spin2"]
        .into_iter()
        .map(|id| {
            let ingress = ingress(&plinth);
            tokio::spawn(async move { ingress.get(&format!("/fn/{id}/spin")).await })
        })
        .collect();
    wait_listing(&plinth, "both spinning", |l| {
        l["functions"]
            .as_array()
            .is_some_and(|a| a.iter().filter(|f| f["inFlight"] == 1).count() == 2)
    })
    .await;
    let mut client = plinth.client().await;
    for i in 0..50 {
        let hello = client
            .say_hello(pb::SayHelloRequest {
                service_name: "helloworld".into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("SayHello {i}: {e:?}"));
        assert!(!hello.into_inner().hello.is_empty());
        let got = client
            .get_state(pb::GetStateRequest {
                store_name: "statestore".into(),
                key: "spin-key".into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("GetState {i}: {e:?}"))
            .into_inner();
        assert_eq!(got.data, b"v".to_vec());
    }
    assert!(
        spinners.iter().all(|s| !s.is_finished()),
        "the API calls waited for the spinners to stop"
    );
    for s in spinners {
        let resp = s.await.expect("join");
        let msg = error(&resp, 500);
        assert!(msg.contains("execution-time budget"), "{msg}");
    }
}

#[tokio::test]
async fn a_function_subscribed_to_a_topic_receives_its_events() {
    let dir = scratch("fn-events");
    std::fs::write(dir.join("events.wasm"), guest("fixture-events")).expect("copy");
    let topic = crate::common::unique("fn-topic");
    write(
        &dir,
        "resources/events.yaml",
        &format!(
            "apiVersion: plinth.dev/v1alpha1\nkind: Function\nmetadata:\n  name: events\nspec:\n  module: ../events.wasm\n  subscriptions:\n    - pubsubname: pubsub\n      topic: {topic}\n      route: /incoming\n"
        ),
    );
    let plinth = Plinth::start_ready_with(&["--resources-path", "resources"], Some(&dir)).await;
    let http = plinth.dapr_http();
    for n in 1..=3 {
        let resp = http
            .post_json(
                &format!("/v1.0/publish/pubsub/{topic}"),
                &serde_json::json!({ "n": n }),
            )
            .await;
        assert_eq!(resp.status, 204, "{}", resp.text());
    }
    // The function keeps each event under events-{topic}-{n}: wait for the third.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    for n in 1..=3 {
        let key = format!("events-{topic}-{n}");
        loop {
            let resp = http.get(&format!("/v1.0/state/statestore/{key}")).await;
            if resp.status == 200 {
                seen.push(resp.json());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "event {n} not delivered: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut ns: Vec<i64> = seen
        .iter()
        .map(|ce| {
            assert_eq!(ce["topic"], topic.as_str(), "{ce}");
            assert_eq!(ce["pubsubname"], "pubsub", "{ce}");
            ce["data"]["n"].as_i64().expect("n")
        })
        .collect();
    ns.sort();
    assert_eq!(ns, [1, 2, 3]);
}
