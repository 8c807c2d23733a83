//! The draft WASI interfaces (`wasi:keyvalue`, `wasi:config`) through guest/components/
//! fixture-wasi, called as the registry calls functions: buckets are state stores under the
//! function's app id, config values its `variables`.

use std::collections::BTreeMap;
use std::sync::Arc;

use plinth_core::ErrorKind;
use plinth_runtime::app::AppStatus;
use plinth_wasm::{Function, FunctionConfig};

use crate::component::{APP_ID, Host, body, expect_line, get, lines};

/// The app id the keyvalue tests' function runs under.
const KV_APP: &str = "kv-app";

async fn kv_function(host: &Host, max_concurrency: u32) -> Arc<Function> {
    let mut config = FunctionConfig {
        app_id: Some(KV_APP.into()),
        ..Default::default()
    };
    config.limits.max_concurrency = max_concurrency;
    host.install("fixture-wasi", "kv", config).await
}

async fn call(function: &Function, path: &str) -> String {
    let resp = function.call(get(path)).await.expect("call");
    body(&resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_is_a_state_store_under_the_functions_app_id() {
    let host = Host::new().await;
    let kv = kv_function(&host, 8).await;
    let resp = kv.call(get("/kv")).await.expect("call");
    assert_eq!(resp.status, AppStatus::Http(200), "{}", body(&resp));
    let expect = expect_line(&resp);
    expect("unknown-store", "err:no-such-store");
    expect("open", "ok");
    expect("set", "ok");
    expect("get", "v1");
    expect("exists", "true");
    expect("delete", "ok");
    expect("exists-after-delete", "false");
    expect("get-after-delete", "none");
    expect("delete-missing", "ok");
    expect("kept", "ok");
    let list = &lines(&resp)["list-keys"];
    assert!(
        list.starts_with("err:other:") && list.contains("not supported by the state API"),
        "{list}"
    );

    // The key is the one plinth:runtime/state and the APIs use for app kv-app.
    assert_eq!(
        host.read(KV_APP, "wasi-kept").await.as_deref(),
        Some("kept")
    );
    assert_eq!(host.read(APP_ID, "wasi-kept").await, None);

    // A store that is not a state store is no bucket either.
    let resp = call(&kv, "/incr?store=configstore&key=n").await;
    assert_eq!(resp, "err:no-such-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_get_set_and_delete_many_keys() {
    let host = Host::new().await;
    let kv = kv_function(&host, 8).await;
    let resp = kv.call(get("/batch")).await.expect("call");
    let got = lines(&resp);
    assert_eq!(got["set-many"], "ok", "{}", body(&resp));
    assert_eq!(got["get-many"], "batch-1:one,batch-2:two,none");
    assert_eq!(got["delete-many"], "ok");
    assert_eq!(got["get-many-after-delete"], "none,batch-2:two,none");
    assert_eq!(host.read(KV_APP, "batch-2").await.as_deref(), Some("two"));
    assert_eq!(host.read(KV_APP, "batch-1").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increment_adds_to_a_decimal_counter() {
    let host = Host::new().await;
    let kv = kv_function(&host, 8).await;
    assert_eq!(call(&kv, "/incr?key=c&delta=5").await, "5");
    assert_eq!(call(&kv, "/incr?key=c&delta=2").await, "7");
    assert_eq!(call(&kv, "/incr?key=c&delta=0").await, "7");
    assert_eq!(host.read(KV_APP, "c").await.as_deref(), Some("7"));

    // A counter the app keeps through the state API counts on.
    host.write(KV_APP, "from-app", "41").await;
    assert_eq!(call(&kv, "/incr?key=from-app").await, "42");

    // A value that is not a number is left alone.
    host.write(KV_APP, "word", "seven").await;
    let resp = kv.call(get("/incr?key=word")).await.expect("call");
    assert_eq!(resp.status, AppStatus::Http(500));
    let err = body(&resp);
    assert!(
        err.starts_with("err:other:") && err.contains("not a non-negative decimal integer"),
        "{err}"
    );
    assert_eq!(host.read(KV_APP, "word").await.as_deref(), Some("seven"));

    // Past u64::MAX is an error, not a wrap.
    let max = u64::MAX.to_string();
    assert_eq!(call(&kv, &format!("/incr?key=big&delta={max}")).await, max);
    let err = call(&kv, "/incr?key=big&delta=1").await;
    assert!(err.contains("overflows"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_lose_no_update() {
    const CALLS: u64 = 64;
    let host = Host::new().await;
    let kv = kv_function(&host, 16).await;
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let kv = kv.clone();
            tokio::spawn(async move { call(&kv, "/incr?key=shared").await })
        })
        .collect();
    let mut seen = Vec::new();
    for c in calls {
        let answer = c.await.expect("join");
        seen.push(
            answer
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("increment failed: {answer}")),
        );
    }
    seen.sort_unstable();
    // Every increment saw a value of its own: none was overwritten by another.
    assert_eq!(seen, (1..=CALLS).collect::<Vec<_>>());
    assert_eq!(host.read(KV_APP, "shared").await, Some(CALLS.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_config_reads_the_functions_variables_in_every_version() {
    let host = Host::new().await;
    let variables = BTreeMap::from([
        ("region".to_string(), "eu".to_string()),
        ("greeting".to_string(), "hello world".to_string()),
    ]);
    let f = host
        .install(
            "fixture-wasi",
            "cfg",
            FunctionConfig {
                variables,
                ..Default::default()
            },
        )
        .await;
    let resp = f.call(get("/config?key=region")).await.expect("call");
    let got = lines(&resp);
    for version in ["draft", "runtime", "rc1"] {
        assert_eq!(got[&format!("{version}.get")], "eu", "{}", body(&resp));
        assert_eq!(
            got[&format!("{version}.get-all")],
            "greeting:hello world,region:eu"
        );
    }
    let resp = f.call(get("/config?key=colour")).await.expect("call");
    let got = lines(&resp);
    for version in ["draft", "runtime", "rc1"] {
        assert_eq!(got[&format!("{version}.get")], "none", "{}", body(&resp));
    }

    // Without variables: nothing set, and no error.
    let bare = host
        .install("fixture-wasi", "bare", FunctionConfig::default())
        .await;
    let got = lines(&bare.call(get("/config?key=region")).await.expect("call"));
    assert_eq!(got["rc1.get"], "none");
    assert_eq!(got["rc1.get-all"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_without_a_key_fails_the_load() {
    let host = Host::new().await;
    let config = FunctionConfig {
        variables: BTreeMap::from([(String::new(), "x".to_string())]),
        ..Default::default()
    };
    let err = host
        .load("fixture-wasi", "cfg", config)
        .await
        .expect_err("empty key");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.message().contains("variables"), "{err}");
}
