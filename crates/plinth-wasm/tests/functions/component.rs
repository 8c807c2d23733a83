//! Components: the guest crates of guest/components, loaded into a real engine over an
//! in-memory runtime, called through `Function::call` as the registry calls them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use plinth_core::component::configuration::ConfigurationItem;
use plinth_core::component::state::{Consistency, SetRequest};
use plinth_core::{Error, ErrorKind, Metadata, Result};
use plinth_runtime::app::{AppStatus, InvokeRequest, InvokeResponse};
use plinth_runtime::invoke::LocalFunctions;
use plinth_runtime::state::StateApi;
use plinth_runtime::{Options, Runtime};
use plinth_wasm::component::{ComponentFunction, MAX_RESPONSE_BODY};
use plinth_wasm::engine::Compiled;
use plinth_wasm::{
    EngineOptions, Function, FunctionConfig, FunctionEnv, Grants, Limits, WasmEngine,
};

use crate::common::{fixture, functions_dir};

/// The host's app id in these tests.
pub(crate) const APP_ID: &str = "component-tests";

/// A private directory under the test target's tmp dir.
fn private_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = functions_dir()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(format!(
            "component-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The functions installed in a test, as the invoke building block reaches them. Records
/// the caller each call was made on behalf of.
#[derive(Debug, Default)]
struct Functions {
    installed: RwLock<HashMap<String, Arc<Function>>>,
    callers: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl LocalFunctions for Functions {
    fn contains(&self, id: &str) -> bool {
        self.installed.read().is_ok_and(|m| m.contains_key(id))
    }

    async fn call(&self, id: &str, caller: &str, req: InvokeRequest) -> Result<InvokeResponse> {
        let function = self
            .installed
            .read()
            .ok()
            .and_then(|m| m.get(id).cloned())
            .ok_or_else(|| Error::not_found(format!("no function {id:?}")))?;
        if let Ok(mut callers) = self.callers.lock() {
            callers.push((id.to_string(), caller.to_string()));
        }
        function.call(req).await
    }
}

/// An engine, a runtime with in-memory components, and the functions installed on it.
pub(crate) struct Host {
    engine: Arc<WasmEngine>,
    pub(crate) runtime: Arc<Runtime>,
    functions: Arc<Functions>,
}

impl Host {
    pub(crate) async fn new() -> Self {
        Self::with(32, functions_dir().join("../component-test-cache")).await
    }

    async fn with_cache(cache_dir: PathBuf) -> Self {
        Self::with(32, cache_dir).await
    }

    async fn with(pool_size: u32, cache_dir: PathBuf) -> Self {
        let engine = WasmEngine::new(EngineOptions {
            pool_size,
            cache_dir,
            ..Default::default()
        })
        .expect("engine");
        let runtime = Runtime::start(Options {
            app_id: APP_ID.into(),
            ..Default::default()
        })
        .await
        .expect("runtime");
        runtime.host.wait_initialised().await;
        let functions = Arc::new(Functions::default());
        runtime.invoke.set_functions(functions.clone());
        Self {
            engine,
            runtime,
            functions,
        }
    }

    /// Load guest crate `name` as function `id`, without installing it.
    pub(crate) async fn load(
        &self,
        name: &str,
        id: &str,
        config: FunctionConfig,
    ) -> Result<Function> {
        let (compiled, _) = self.engine.compile(&fixture(name))?;
        let env = FunctionEnv::new(self.runtime.clone(), id, &config);
        Function::load(&self.engine, compiled, id, 1, String::new(), config, env).await
    }

    /// Load and install guest crate `name` as function `id`.
    pub(crate) async fn install(
        &self,
        name: &str,
        id: &str,
        config: FunctionConfig,
    ) -> Arc<Function> {
        let function = Arc::new(self.load(name, id, config).await.expect("load"));
        self.functions
            .installed
            .write()
            .expect("lock")
            .insert(id.to_string(), function.clone());
        function
    }

    /// State as app `app_id` sees it.
    pub(crate) fn state(&self, app_id: &str) -> StateApi {
        StateApi::new(self.runtime.host.clone(), app_id)
    }

    pub(crate) async fn read(&self, app_id: &str, key: &str) -> Option<String> {
        self.state(app_id)
            .get("statestore", key, Metadata::new(), Consistency::Unspecified)
            .await
            .expect("state get")
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
    }

    /// Save `value` under `key` in `statestore` as app `app_id` does.
    pub(crate) async fn write(&self, app_id: &str, key: &str, value: &str) {
        let item = SetRequest {
            key: key.into(),
            value: value.to_owned().into(),
            ..Default::default()
        };
        self.state(app_id)
            .save("statestore", vec![item])
            .await
            .expect("state save");
    }
}

pub(crate) fn get(path_and_query: &str) -> InvokeRequest {
    let (method, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    InvokeRequest {
        method: method.trim_start_matches('/').into(),
        verb: "GET".into(),
        query: query.into(),
        ..Default::default()
    }
}

pub(crate) fn body(resp: &InvokeResponse) -> String {
    String::from_utf8_lossy(&resp.data).into_owned()
}

/// The `name=value` lines fixture-abi answers with.
pub(crate) fn lines(resp: &InvokeResponse) -> HashMap<String, String> {
    body(resp)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An assertion that the `name=value` line of `resp`'s body says `value`.
pub(crate) fn expect_line(resp: &InvokeResponse) -> impl Fn(&str, &str) + '_ {
    let got = lines(resp);
    move |name, value| {
        assert_eq!(
            got.get(name).map(String::as_str),
            Some(value),
            "{name} in\n{}",
            body(resp)
        )
    }
}

fn limits(f: impl FnOnce(&mut Limits)) -> FunctionConfig {
    let mut config = FunctionConfig::default();
    f(&mut config.limits);
    config
}

fn expect_err(result: Result<InvokeResponse>) -> Error {
    match result {
        Ok(resp) => panic!("expected an error, got {:?}: {}", resp.status, body(&resp)),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookstore_function1_asks_function2_for_the_stock() {
    let host = Host::new().await;
    host.runtime
        .state
        .save(
            "statestore",
            vec![SetRequest {
                key: "book1".into(),
                value: "100".into(),
                ..Default::default()
            }],
        )
        .await
        .expect("stock");
    let function1 = host
        .install("function1", "function1", FunctionConfig::default())
        .await;
    host.install("function2", "function2", FunctionConfig::default())
        .await;

    let resp = function1.call(get("/?name=book1")).await.expect("call");
    assert_eq!(resp.status, AppStatus::Http(200));
    assert_eq!(body(&resp), "There are 100 inventories for book1.");
    assert!(
        resp.content_type.starts_with("text/plain"),
        "{}",
        resp.content_type
    );

    let missing = function1.call(get("/?name=book2")).await.expect("call");
    assert_eq!(missing.status, AppStatus::Http(404));
    // Through the invoke building block, function2 is called as the host's app.
    let callers = host.functions.callers.lock().expect("lock").clone();
    assert_eq!(callers[0], ("function2".to_string(), APP_ID.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_import_works_under_the_functions_app_id() {
    let host = Host::new().await;
    host.install("fixture-abi", "echo-fn", FunctionConfig::default())
        .await;
    let item = |value: &str| ConfigurationItem {
        key: "abi-config".into(),
        content: value.into(),
        ..Default::default()
    };
    let config = &host.runtime.configuration;
    config
        .save("configstore", "abi-app", vec![item("blue")])
        .await
        .expect("config");
    config
        .save("configstore", APP_ID, vec![item("red")])
        .await
        .expect("config");

    let grants = Grants {
        secret_stores: vec!["secretstore".into()],
        ..Default::default()
    };
    let abi = host
        .install(
            "fixture-abi",
            "abi",
            FunctionConfig {
                app_id: Some("abi-app".into()),
                grants,
                ..Default::default()
            },
        )
        .await;
    let resp = abi
        .call(get("/imports?target=echo-fn&secret=HOME"))
        .await
        .expect("call");
    assert_eq!(resp.status, AppStatus::Http(200), "{}", body(&resp));
    let expect = expect_line(&resp);
    expect("state.set", "ok");
    expect("state.get", "v1:etag=true");
    expect("state.delete", "ok");
    expect("state.after-delete", "none");
    expect("state.kept", "ok");
    expect("state.unknown-store", "err:invalid-argument");
    expect("invoke", "200:method=POST");
    expect("pubsub", "ok");
    expect(
        "lock",
        "true,false,UnlockStatus::LockBelongsToOthers,UnlockStatus::Success",
    );
    expect("sequencer", "1,2");
    expect("configuration", "abi-config=blue");
    expect("secret", &std::env::var("HOME").unwrap_or_default());
    expect("log", "ok");

    // Keys went under the function's own app id, not the host's.
    assert_eq!(
        host.read("abi-app", "abi-kept").await.as_deref(),
        Some("kept")
    );
    assert_eq!(host.read(APP_ID, "abi-kept").await, None);
    // And the callee saw the function's app id as its caller.
    let callers = host.functions.callers.lock().expect("lock").clone();
    assert_eq!(
        callers,
        vec![("echo-fn".to_string(), "abi-app".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_need_a_grant() {
    let host = Host::new().await;
    let abi = host
        .install("fixture-abi", "abi", FunctionConfig::default())
        .await;
    let resp = abi
        .call(get("/imports?target=nobody&secret=HOME"))
        .await
        .expect("call");
    let got = lines(&resp);
    assert_eq!(got["secret"], "err:permission-denied");
    // An unknown target is an error the function sees, not a failure of the function.
    assert!(got["invoke"].starts_with("err:"), "{}", got["invoke"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arrive_as_http_and_responses_come_back() {
    let host = Host::new().await;
    let abi = host
        .install("fixture-abi", "abi", FunctionConfig::default())
        .await;
    let resp = abi
        .call(InvokeRequest {
            method: "echo".into(),
            verb: "put".into(),
            query: "status=201&a=b c".into(),
            content_type: "text/plain".into(),
            data: "the body".into(),
            headers: vec![
                ("x-custom".into(), "v".into()),
                ("bad header".into(), "x".into()),
            ],
        })
        .await
        .expect("call");
    assert_eq!(resp.status, AppStatus::Http(201));
    assert!(
        resp.headers.contains(&("x-echo".into(), "yes".into())),
        "{:?}",
        resp.headers
    );
    let got = lines(&resp);
    assert_eq!(got["method"], "PUT");
    assert_eq!(got["path"], "/echo");
    assert_eq!(got["query"], "status=201&a=b%20c");
    assert_eq!(got["header.x-custom"], "v");
    assert_eq!(got["header.content-type"], "text/plain");
    assert_eq!(got["body"], "the body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_opens_nothing_by_default() {
    let host = Host::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let abi = host
        .install("fixture-abi", "abi", FunctionConfig::default())
        .await;
    let resp = abi
        .call(get(&format!("/sandbox?connect=127.0.0.1:{port}")))
        .await
        .expect("call");
    let got = lines(&resp);
    assert_eq!(got["env.count"], "0", "{}", body(&resp));
    assert_eq!(got["env.GREETING"], "absent");
    assert!(got["file"].starts_with("err:"), "{}", got["file"]);
    assert!(got["write"].starts_with("err:"), "{}", got["write"]);
    assert!(got["connect"].starts_with("err:"), "{}", got["connect"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_opens_what_is_granted() {
    let host = Host::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let dir = private_dir("sandbox");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("hello.txt"), "hello from the host").expect("file");
    let grant = |mode: &str| Grants {
        env: vec!["GREETING=hi".into(), "HOME".into()],
        dirs: vec![format!("{}:/data{mode}", dir.display())],
        network: true,
        ..Default::default()
    };

    let read_only = host
        .install(
            "fixture-abi",
            "ro",
            FunctionConfig {
                grants: grant(""),
                ..Default::default()
            },
        )
        .await;
    let resp = read_only
        .call(get(&format!("/sandbox?connect=127.0.0.1:{port}")))
        .await
        .expect("call");
    let got = lines(&resp);
    assert_eq!(got["env.count"], "2", "{}", body(&resp));
    assert_eq!(got["env.GREETING"], "hi");
    assert_eq!(got["file"], "hello from the host");
    assert!(got["write"].starts_with("err:"), "{}", got["write"]);
    assert_eq!(got["connect"], "ok");
    assert!(!dir.join("out.txt").exists());

    let read_write = host
        .install(
            "fixture-abi",
            "rw",
            FunctionConfig {
                grants: grant(":rw"),
                ..Default::default()
            },
        )
        .await;
    let got = lines(&read_write.call(get("/sandbox")).await.expect("call"));
    assert_eq!(got["write"], "ok");
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).expect("written"),
        "written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grants_fail_the_load() {
    let host = Host::new().await;
    for (grants, field) in [
        (
            Grants {
                env: vec!["DAPR_API_TOKEN".into()],
                ..Default::default()
            },
            "grants.env",
        ),
        (
            Grants {
                env: vec!["=x".into()],
                ..Default::default()
            },
            "grants.env",
        ),
        (
            Grants {
                dirs: vec!["/no/such/dir:/data".into()],
                ..Default::default()
            },
            "grants.dirs",
        ),
        (
            Grants {
                dirs: vec!["nocolon".into()],
                ..Default::default()
            },
            "grants.dirs",
        ),
    ] {
        let err = host
            .load(
                "fixture-hello",
                "bad",
                FunctionConfig {
                    grants,
                    ..Default::default()
                },
            )
            .await
            .expect_err("bad grant");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.message().contains(field), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_by_the_budget() {
    let host = Host::new().await;
    let spin = host
        .install("fixture-limits", "spin", limits(|l| l.cpu_ms = 50))
        .await;
    let err = expect_err(spin.call(get("/spin")).await);
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("execution-time budget of 50ms"),
        "{err}"
    );
    assert!(err.message().contains("\"spin\""), "{err}");
    // The function still answers afterwards.
    assert_eq!(body(&spin.call(get("/")).await.expect("call")), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_is_stopped_by_the_memory_cap() {
    let host = Host::new().await;
    let alloc = host
        .install(
            "fixture-limits",
            "alloc",
            limits(|l| l.memory_bytes = 8 << 20),
        )
        .await;
    let err = expect_err(alloc.call(get("/alloc")).await);
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("memory limit of 8388608 bytes"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_an_internal_error_with_its_message() {
    let host = Host::new().await;
    let f = host
        .install("fixture-limits", "trap", FunctionConfig::default())
        .await;
    let err = expect_err(f.call(get("/panic")).await);
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(
        err.message().starts_with("function \"trap\" trapped: "),
        "{err}"
    );
    assert!(err.message().contains("unreachable"), "{err}");
    assert!(err.message().contains("boom"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_responses_are_clear_errors() {
    let host = Host::new().await;
    let f = host
        .install("fixture-limits", "broken", FunctionConfig::default())
        .await;

    let err = expect_err(f.call(get("/unset")).await);
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(
        err.message().contains("without setting its response"),
        "{err}"
    );

    let err = expect_err(f.call(get("/unfinished")).await);
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(
        err.message().contains("did not finish its response body"),
        "{err}"
    );

    let err = expect_err(
        f.call(get(&format!("/big?bytes={}", MAX_RESPONSE_BODY + 1)))
            .await,
    );
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(err.message().contains("larger than"), "{err}");

    // A body many times the host's buffer streams through.
    let resp = f.call(get("/big?bytes=3000000")).await.expect("big body");
    assert_eq!(resp.data.len(), 3_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_clock_timeout_stops_a_waiting_function() {
    let host = Host::new().await;
    let f = host
        .install("fixture-limits", "sleepy", limits(|l| l.timeout_ms = 100))
        .await;
    let err = expect_err(f.call(get("/sleep?ms=30000")).await);
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(f.stats.in_flight.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_functions_do_not_starve_the_others() {
    let host = Host::new().await;
    let budget = limits(|l| {
        l.cpu_ms = 4_000;
        l.timeout_ms = 60_000;
    });
    let spin1 = host
        .install("fixture-limits", "spin1", budget.clone())
        .await;
    let spin2 = host.install("fixture-limits", "spin2", budget).await;
    let hello = host
        .install("fixture-hello", "hello", FunctionConfig::default())
        .await;
    let (watch1, watch2) = (spin1.clone(), spin2.clone());
    let s1 = tokio::spawn(async move { spin1.call(get("/spin")).await });
    let s2 = tokio::spawn(async move { spin2.call(get("/spin")).await });
    // Both spinners are running before the others call.
    while watch1.stats.in_flight.load(Ordering::Relaxed) == 0
        || watch2.stats.in_flight.load(Ordering::Relaxed) == 0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..20 {
        let resp = hello.call(get("/")).await.expect("hello answers");
        assert_eq!(body(&resp), "hello");
    }
    assert!(
        !s1.is_finished() && !s2.is_finished(),
        "the spinners should still be running while the others answer"
    );
    for spinner in [s1, s2] {
        let err = expect_err(spinner.await.expect("join"));
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_queues_requests() {
    let host = Host::new().await;
    let f = host
        .install(
            "fixture-limits",
            "single",
            limits(|l| {
                l.max_concurrency = 1;
                l.timeout_ms = 60_000;
            }),
        )
        .await;
    let first = tokio::spawn({
        let f = f.clone();
        async move { f.call(get("/sleep?ms=3000")).await }
    });
    while f.stats.in_flight.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = tokio::spawn({
        let f = f.clone();
        async move { f.call(get("/")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The second request waits for the slot the first one holds.
    assert!(!first.is_finished());
    assert!(
        !second.is_finished(),
        "the second request ran beside the first"
    );
    assert_eq!(f.stats.in_flight.load(Ordering::Relaxed), 1);
    first.await.expect("join").expect("first");
    assert_eq!(body(&second.await.expect("join").expect("second")), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_is_resource_exhausted() {
    let host = Host::with(1, functions_dir().join("../component-test-cache")).await;
    assert!(host.engine.pooling());
    let sleepy = host
        .install("fixture-limits", "sleepy", FunctionConfig::default())
        .await;
    let hello = host
        .install("fixture-hello", "hello", FunctionConfig::default())
        .await;
    let held = tokio::spawn({
        let sleepy = sleepy.clone();
        async move { sleepy.call(get("/sleep?ms=1000")).await }
    });
    // Wait until the sleeper holds the pool's only instance.
    let in_use = || {
        host.engine
            .engine()
            .pooling_allocator_metrics()
            .map_or(0, |m| m.component_instances())
    };
    while in_use() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = expect_err(hello.call(get("/")).await);
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(err.message().contains("instance pool (1)"), "{err}");
    held.await.expect("join").expect("the sleeper answers");
    assert_eq!(
        body(&hello.call(get("/")).await.expect("a free slot again")),
        "hello"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_a_fresh_instance_by_default() {
    let host = Host::new().await;
    let abi = host
        .install("fixture-abi", "abi", FunctionConfig::default())
        .await;
    for _ in 0..3 {
        let resp = abi.call(get("/counter")).await.expect("call");
        assert_eq!(body(&resp), "1");
    }
}

/// Component instances in use in the engine's pool, idle warm ones included.
fn instances_in_use(host: &Host) -> u64 {
    host.engine
        .engine()
        .pooling_allocator_metrics()
        .map_or(0, |m| m.component_instances())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_serves_up_to_its_reuse_bound() {
    let host = Host::new().await;
    let abi = host
        .install("fixture-abi", "abi", limits(|l| l.instance_reuse = 3))
        .await;
    let mut counts = Vec::new();
    for _ in 0..7 {
        counts.push(body(&abi.call(get("/counter")).await.expect("call")));
    }
    assert_eq!(counts, ["1", "2", "3", "1", "2", "3", "1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_failed_is_not_reused() {
    let host = Host::new().await;
    let f = host
        .install(
            "fixture-limits",
            "limits",
            limits(|l| l.instance_reuse = 100),
        )
        .await;
    assert_eq!(body(&f.call(get("/")).await.expect("call")), "ok");
    assert_eq!(
        instances_in_use(&host),
        1,
        "the answered instance is kept warm"
    );
    // A trap, a response never set and a body never finished each take the warm instance
    // and drop it.
    for failing in ["/panic", "/unset", "/unfinished"] {
        expect_err(f.call(get(failing)).await);
        assert_eq!(instances_in_use(&host), 0, "after {failing}");
        assert_eq!(body(&f.call(get("/")).await.expect("call")), "ok");
        assert_eq!(
            instances_in_use(&host),
            1,
            "after {failing} and a good call"
        );
    }
    // Unloading drops the idle instances.
    drop(
        host.functions
            .installed
            .write()
            .expect("lock")
            .remove("limits"),
    );
    drop(f);
    assert_eq!(instances_in_use(&host), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_make_room_in_a_full_pool() {
    let host = Host::with(1, functions_dir().join("../component-test-cache")).await;
    let reuse = || limits(|l| l.instance_reuse = 100);
    let abi = host.install("fixture-abi", "abi", reuse()).await;
    let hello = host.install("fixture-hello", "hello", reuse()).await;
    assert_eq!(body(&abi.call(get("/counter")).await.expect("call")), "1");
    assert_eq!(body(&abi.call(get("/counter")).await.expect("call")), "2");
    // abi's idle instance holds the pool's only slot: hello's request takes it over.
    assert_eq!(body(&hello.call(get("/")).await.expect("call")), "hello");
    assert_eq!(body(&abi.call(get("/counter")).await.expect("call")), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_run_at_load_and_unload() {
    let host = Host::new().await;
    let f = host
        .install("fixture-lifecycle", "life", FunctionConfig::default())
        .await;
    let resp = f.call(get("/")).await.expect("call");
    // start ran once, in an instance of its own: requests do not see its globals.
    assert_eq!(body(&resp), "starts=1;destroyed=;global=false");
    f.unload().await;
    assert_eq!(host.read(APP_ID, "destroyed").await.as_deref(), Some("yes"));

    let failing = FunctionConfig {
        grants: Grants {
            env: vec!["FAIL_START=the database is not ready".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let err = host
        .load("fixture-lifecycle", "life2", failing)
        .await
        .expect_err("start fails");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message().contains("the database is not ready"), "{err}");
    assert_eq!(host.read(APP_ID, "starts").await.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_compile_of_the_same_bytes_hits_the_cache() {
    let dir = private_dir("cache");
    let host = Host::with_cache(dir.clone()).await;
    let bytes = fixture("fixture-hello");
    let (_, first) = host.engine.compile(&bytes).expect("compile");
    let (compiled, second) = host.engine.compile(&bytes).expect("compile");
    assert!(!first.cached);
    assert!(second.cached);
    let Compiled::Component(component) = compiled else {
        panic!("a component");
    };
    let config = FunctionConfig::default();
    let env = FunctionEnv::new(host.runtime.clone(), "cached", &config);
    let f = ComponentFunction::new(&host.engine, component, &config, env)
        .await
        .expect("load");
    assert_eq!(body(&f.handle(get("/")).await.expect("call")), "hello");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused_without_a_panic() {
    let host = Host::new().await;
    for bytes in [
        &b"not wasm at all"[..],
        &b"\0asm\x0d\0\x01\0garbage after a component preamble"[..],
        &b"\0asm\x01\0\0\0\xff\xff"[..],
    ] {
        let err = host.engine.compile(bytes).expect_err("garbage");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    // Components that compile but are not functions.
    let config = FunctionConfig::default();
    for (wat, reason) in [
        ("(component)", "does not export wasi:http/incoming-handler"),
        (
            r#"(component (import "acme:nope/thing" (instance (export "f" (func)))))"#,
            "imports what Plinth does not provide",
        ),
    ] {
        let component = wasmtime::component::Component::new(
            host.engine.engine(),
            wat::parse_str(wat).expect("wat"),
        )
        .expect("component");
        let env = FunctionEnv::new(host.runtime.clone(), "odd", &config);
        let err = ComponentFunction::new(&host.engine, component, &config, env)
            .await
            .expect_err("not a function");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.message().contains(reason), "{err}");
    }
}

#[tokio::test]
async fn a_refused_pool_reservation_falls_back_to_on_demand_allocation() {
    // Millions of 4 GiB memory reservations exceed any machine's address space.
    let host = Host::with(50_000_000, private_dir("fallback")).await;
    assert!(!host.engine.pooling(), "the pool should have been refused");
    let f = host
        .load("fixture-hello", "hello", FunctionConfig::default())
        .await
        .expect("load");
    let resp = f.call(get("/")).await.expect("call");
    assert_eq!(resp.status, AppStatus::Http(200));
    // The default pool is accepted here.
    assert!(Host::new().await.engine.pooling());
}

#[test]
fn a_cache_directory_others_can_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = private_dir("shared-cache");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = WasmEngine::new(EngineOptions {
        cache_dir: dir.clone(),
        ..Default::default()
    })
    .expect_err("a world-writable cache");
    assert!(
        err.message().contains("writable by group or others"),
        "{err}"
    );
    // A new directory is created private.
    let fresh = dir.join("fresh");
    WasmEngine::new(EngineOptions {
        cache_dir: fresh.clone(),
        ..Default::default()
    })
    .expect("a fresh cache");
    let mode = std::fs::metadata(&fresh)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let _ = std::fs::remove_dir_all(&dir);
}
