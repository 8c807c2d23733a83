//! Layotto proxy-wasm modules: Layotto's bookstore pair built from guest/modules, and small
//! modules written in WAT for what the pair does not reach.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use plinth_core::component::state::SetRequest;
use plinth_core::{Error, ErrorKind, Result};
use plinth_runtime::app::{AppStatus, InvokeRequest, InvokeResponse};
use plinth_runtime::invoke::LocalFunctions;
use plinth_runtime::{Options, Runtime};
use plinth_wasm::engine::{Compiled, EngineOptions};
use plinth_wasm::{Function, FunctionConfig, FunctionEnv, WasmEngine};

use crate::common::fixture;

/// Layotto's 43 `env` functions with their parameters (all return an i32 status), as its
/// host registers them.
const LAYOTTO: [(&str, &str); 43] = [
    ("proxy_log", "i32 i32 i32"),
    ("proxy_set_effective_context", "i32"),
    ("proxy_get_property", "i32 i32 i32 i32"),
    ("proxy_set_property", "i32 i32 i32 i32"),
    ("proxy_get_buffer_bytes", "i32 i32 i32 i32 i32"),
    ("proxy_set_buffer_bytes", "i32 i32 i32 i32 i32"),
    ("proxy_get_header_map_pairs", "i32 i32 i32"),
    ("proxy_set_header_map_pairs", "i32 i32 i32"),
    ("proxy_get_header_map_value", "i32 i32 i32 i32 i32"),
    ("proxy_replace_header_map_value", "i32 i32 i32 i32 i32"),
    ("proxy_add_header_map_value", "i32 i32 i32 i32 i32"),
    ("proxy_remove_header_map_value", "i32 i32 i32"),
    ("proxy_set_tick_period_milliseconds", "i32"),
    ("proxy_get_current_time_nanoseconds", "i32"),
    ("proxy_resume_downstream", ""),
    ("proxy_resume_upstream", ""),
    ("proxy_open_grpc_stream", "i32 i32 i32 i32 i32 i32 i32"),
    ("proxy_send_grpc_call_message", "i32 i32 i32 i32"),
    ("proxy_cancel_grpc_call", "i32"),
    ("proxy_close_grpc_call", "i32"),
    ("proxy_grpc_call", "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32"),
    (
        "proxy_dispatch_grpc_call",
        "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32",
    ),
    ("proxy_resume_http_request", ""),
    ("proxy_resume_http_response", ""),
    (
        "proxy_send_http_response",
        "i32 i32 i32 i32 i32 i32 i32 i32",
    ),
    ("proxy_http_call", "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32"),
    (
        "proxy_dispatch_http_call",
        "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32",
    ),
    ("proxy_define_metric", "i32 i32 i32 i32"),
    ("proxy_remove_metric", "i32"),
    ("proxy_increment_metric", "i32 i64"),
    ("proxy_record_metric", "i32 i64"),
    ("proxy_get_metric", "i32 i32"),
    ("proxy_register_shared_queue", "i32 i32 i32"),
    ("proxy_remove_shared_queue", "i32"),
    ("proxy_resolve_shared_queue", "i32 i32 i32"),
    ("proxy_dequeue_shared_queue", "i32 i32 i32"),
    ("proxy_enqueue_shared_queue", "i32 i32 i32"),
    ("proxy_get_shared_data", "i32 i32 i32 i32 i32"),
    ("proxy_set_shared_data", "i32 i32 i32 i32 i32"),
    ("proxy_done", ""),
    ("proxy_call_foreign_function", "i32 i32 i32 i32 i32 i32"),
    ("proxy_get_state", "i32 i32 i32 i32 i32 i32"),
    ("proxy_invoke_service", "i32 i32 i32 i32 i32 i32 i32 i32"),
];

/// ABI 0.1.0/0.2.x names Layotto does not register, which the upstream SDKs import.
const SPEC_ONLY: [(&str, &str); 14] = [
    ("proxy_get_log_level", "i32"),
    ("proxy_get_configuration", "i32 i32"),
    ("proxy_get_buffer_status", "i32 i32 i32"),
    ("proxy_get_header_map_size", "i32 i32"),
    (
        "proxy_send_local_response",
        "i32 i32 i32 i32 i32 i32 i32 i32",
    ),
    ("proxy_continue_request", ""),
    ("proxy_continue_response", ""),
    ("proxy_continue_stream", "i32"),
    ("proxy_close_stream", "i32"),
    ("proxy_get_status", "i32 i32 i32"),
    ("proxy_grpc_stream", "i32 i32 i32 i32 i32 i32 i32 i32 i32"),
    ("proxy_grpc_send", "i32 i32 i32 i32"),
    ("proxy_grpc_cancel", "i32"),
    ("proxy_grpc_close", "i32"),
];

/// The functions without meaning in Plinth: they answer Unimplemented (12).
const UNIMPLEMENTED: [&str; 35] = [
    "proxy_set_property",
    "proxy_set_tick_period_milliseconds",
    "proxy_resume_downstream",
    "proxy_resume_upstream",
    "proxy_open_grpc_stream",
    "proxy_send_grpc_call_message",
    "proxy_cancel_grpc_call",
    "proxy_close_grpc_call",
    "proxy_grpc_call",
    "proxy_dispatch_grpc_call",
    "proxy_resume_http_request",
    "proxy_resume_http_response",
    "proxy_http_call",
    "proxy_dispatch_http_call",
    "proxy_define_metric",
    "proxy_remove_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_register_shared_queue",
    "proxy_remove_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_done",
    "proxy_call_foreign_function",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_get_status",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
];

const UNIMPLEMENTED_STATUS: u8 = 12;
const INVALID_MEMORY_ACCESS: u8 = 6;

/// Function calls by id, as the registry will route them: by the id a module announces.
#[derive(Debug, Default)]
struct Routes(RwLock<HashMap<String, Arc<Function>>>);

#[async_trait]
impl LocalFunctions for Routes {
    fn contains(&self, id: &str) -> bool {
        self.0.read().unwrap().contains_key(id)
    }

    async fn call(&self, id: &str, _caller: &str, req: InvokeRequest) -> Result<InvokeResponse> {
        let f = self.0.read().unwrap().get(id).cloned();
        match f {
            Some(f) => f.call(req).await,
            None => Err(Error::not_found(format!("no function {id:?}"))),
        }
    }
}

struct Host {
    runtime: Arc<Runtime>,
    engine: Arc<WasmEngine>,
    routes: Arc<Routes>,
}

async fn host() -> Host {
    let runtime = Runtime::start(Options {
        app_id: "bookstore".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    runtime.host.wait_initialised().await;
    let engine = WasmEngine::new(EngineOptions {
        pool_size: 16,
        max_memory_bytes: 128 << 20,
        cache_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plinth-wasm-cache"),
    })
    .unwrap();
    let routes = Arc::new(Routes::default());
    runtime.invoke.set_functions(routes.clone());
    Host {
        runtime,
        engine,
        routes,
    }
}

impl Host {
    async fn load_compiled(
        &self,
        id: &str,
        compiled: Compiled,
        config: FunctionConfig,
    ) -> Result<Function> {
        let env = FunctionEnv::new(self.runtime.clone(), id, &config);
        Function::load(&self.engine, compiled, id, 1, String::new(), config, env).await
    }

    async fn load_fixture(&self, name: &str) -> Arc<Function> {
        let (compiled, _) = self.engine.compile(&fixture(name)).unwrap();
        let f = Arc::new(
            self.load_compiled(name, compiled, FunctionConfig::default())
                .await
                .unwrap(),
        );
        if let Some(id) = f.announced_id() {
            self.routes
                .0
                .write()
                .unwrap()
                .insert(id.to_string(), f.clone());
        }
        f
    }

    async fn load_wat(&self, text: &str, config: FunctionConfig) -> Result<Function> {
        let module =
            wasmtime::Module::new(self.engine.engine(), wat::parse_str(text).expect("wat"))
                .expect("module");
        self.load_compiled("wat", Compiled::Module(module), config)
            .await
    }
}

fn get(query: &str) -> InvokeRequest {
    InvokeRequest {
        verb: "GET".into(),
        query: query.into(),
        ..Default::default()
    }
}

fn post(body: &str) -> InvokeRequest {
    InvokeRequest {
        verb: "POST".into(),
        data: body.to_string().into(),
        content_type: "text/plain".into(),
        ..Default::default()
    }
}

fn status(resp: &InvokeResponse) -> u16 {
    match resp.status {
        AppStatus::Http(s) => s,
        ref other => panic!("not an HTTP status: {other:?}"),
    }
}

fn text(resp: &InvokeResponse) -> &str {
    std::str::from_utf8(&resp.data).unwrap()
}

/// A module with one page of memory, a bump allocator, a root context and `body` (imports
/// go first in `body`, then functions).
fn module(imports: &str, body: &str) -> String {
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  {body}
)"#
    )
}

/// `env` imports named after themselves.
fn imports(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(name, params)| {
            format!(r#"(import "env" "{name}" (func ${name} (param {params}) (result i32)))"#)
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

const SET_BUFFER: (&str, &str) = ("proxy_set_buffer_bytes", "i32 i32 i32 i32 i32");
const GET_BUFFER: (&str, &str) = ("proxy_get_buffer_bytes", "i32 i32 i32 i32 i32");

/// Echoes the request body (the query string for a GET without one) into the response.
fn echo(abi: &str) -> String {
    module(
        &imports(&[SET_BUFFER, GET_BUFFER]),
        &format!(
            r#"(func (export "proxy_abi_version_{abi}"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (drop (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 0) (local.get 1) (i32.const 16) (i32.const 20)))
    (drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) (i32.load (i32.const 16)) (i32.load (i32.const 20))))
    (i32.const 0))"#
        ),
    )
}

#[tokio::test]
async fn every_layotto_and_abi_import_links_and_the_unimplemented_answer_12() {
    let host = host().await;
    let all: Vec<(&str, &str)> = LAYOTTO.iter().chain(SPEC_ONLY.iter()).copied().collect();
    assert_eq!(all.len(), 57);
    // On the request's headers, call every unimplemented function with zeros and put the
    // statuses into the response body.
    let calls: String = UNIMPLEMENTED
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let params = all.iter().find(|(n, _)| n == name).unwrap().1;
            let args: String = params
                .split_whitespace()
                .map(|t| format!("({t}.const 0) "))
                .collect();
            format!(
                "(i32.store8 (i32.const {}) (call ${name} {args}))\n    ",
                2048 + i
            )
        })
        .collect();
    let wat = module(
        &imports(&all),
        &format!(
            r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {calls}(drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 2048) (i32.const {n})))
    (i32.const 0))"#,
            n = UNIMPLEMENTED.len()
        ),
    );
    let f = host
        .load_wat(&wat, FunctionConfig::default())
        .await
        .unwrap();
    let resp = f.call(get("")).await.unwrap();
    assert_eq!(status(&resp), 200);
    assert_eq!(&resp.data[..], &[UNIMPLEMENTED_STATUS; 35][..]);
}

#[tokio::test]
async fn abi_0_2_shapes_of_grpc_call_and_resolve_shared_queue_link_too() {
    let host = host().await;
    // ABI 0.2.x gives these two other parameters than Layotto's host; the Rust SDK imports
    // them so.
    let wat = module(
        &imports(&[
            SET_BUFFER,
            (
                "proxy_grpc_call",
                "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32",
            ),
            ("proxy_resolve_shared_queue", "i32 i32 i32 i32 i32"),
        ]),
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.store8 (i32.const 2048) (call $proxy_grpc_call (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
    (i32.store8 (i32.const 2049) (call $proxy_resolve_shared_queue (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
    (drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 2048) (i32.const 2)))
    (i32.const 0))"#,
    );
    let f = host
        .load_wat(&wat, FunctionConfig::default())
        .await
        .unwrap();
    let resp = f.call(get("")).await.unwrap();
    assert_eq!(&resp.data[..], &[UNIMPLEMENTED_STATUS; 2][..]);
}

#[tokio::test]
async fn the_bookstore_pair_answers_through_function_to_function_invocation() {
    let host = host().await;
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
        .unwrap();
    let front = host.load_fixture("layotto-function1").await;
    let stock = host.load_fixture("layotto-function2").await;
    assert_eq!(front.announced_id(), Some("id_1"));
    assert_eq!(stock.announced_id(), Some("id_2"));

    // As Layotto's test does it: GET /?name=book1 to id_1, which invokes id_2.
    let resp = host
        .runtime
        .invoke
        .invoke("id_1", get("name=book1"))
        .await
        .unwrap();
    assert_eq!(status(&resp), 200, "{}", text(&resp));
    assert_eq!(text(&resp), "There are 100 inventories for book1.");

    // id_2 on its own: a POST body naming the book, or a GET query.
    let resp = stock.call(post("book1")).await.unwrap();
    assert_eq!(text(&resp), "100");
    let resp = stock.call(get("name=book1")).await.unwrap();
    assert_eq!(text(&resp), "100");
    // A missing key is an empty value, as in Layotto.
    let resp = host
        .runtime
        .invoke
        .invoke("id_1", get("name=book2"))
        .await
        .unwrap();
    assert_eq!(text(&resp), "There are  inventories for book2.");

    // Without the parameter, id_1 pauses without answering: 500 with its message.
    let resp = front.call(get("title=book1")).await.unwrap();
    assert_eq!(status(&resp), 500);
    assert_eq!(text(&resp), "the parameter 'name' is missing");

    front.unload().await;
    stock.unload().await;
}

#[tokio::test]
async fn proxy_get_id_is_read_once_at_load() {
    let host = host().await;
    let announce = |id: &str| {
        module(
            &imports(&[SET_BUFFER]),
            &format!(
                r#"(data (i32.const 1024) "{id}")
  (func (export "proxy_get_id")
    (drop (call $proxy_set_buffer_bytes (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const {len}))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))"#,
                len = id.len()
            ),
        )
    };
    let f = host
        .load_wat(&announce("bookshop"), FunctionConfig::default())
        .await
        .unwrap();
    assert_eq!(f.announced_id(), Some("bookshop"));
    let f = host
        .load_wat(&echo("0_2_1"), FunctionConfig::default())
        .await
        .unwrap();
    assert_eq!(f.announced_id(), None);
    let e = host
        .load_wat(&announce(""), FunctionConfig::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.message().contains("proxy_get_id announced an empty id"),
        "{e}"
    );
}

#[tokio::test]
async fn a_request_without_a_body_brings_its_query_string_as_the_body() {
    let host = host().await;
    let f = host
        .load_wat(&echo("0_2_1"), FunctionConfig::default())
        .await
        .unwrap();
    let resp = f.call(get("name=book1&x=2")).await.unwrap();
    assert_eq!(text(&resp), "name=book1&x=2");
    // Any verb: Layotto looks only at whether there is a body.
    let mut delete = get("name=book1");
    delete.verb = "DELETE".into();
    assert_eq!(text(&f.call(delete).await.unwrap()), "name=book1");
    // A body wins over the query.
    let mut req = post("the body");
    req.query = "name=book1".into();
    assert_eq!(text(&f.call(req).await.unwrap()), "the body");
    // Neither: no body callback, an empty answer.
    let resp = f.call(get("")).await.unwrap();
    assert_eq!((status(&resp), text(&resp)), (200, ""));
}

#[tokio::test]
async fn bad_pointers_and_lengths_are_invalid_memory_access_not_a_panic() {
    let host = host().await;
    let calls = [
        // (import, arguments): each with a pointer or length outside the one-page memory.
        (
            "proxy_log",
            "(i32.const 2) (i32.const 0xFFFFFFF0) (i32.const 100)",
        ),
        ("proxy_log", "(i32.const 2) (i32.const 0) (i32.const -1)"),
        ("proxy_log", "(i32.const 2) (i32.const -1) (i32.const 2)"),
        (
            "proxy_get_buffer_bytes",
            "(i32.const 0) (i32.const 0) (i32.const 10) (i32.const -4) (i32.const 20)",
        ),
        (
            "proxy_get_buffer_bytes",
            "(i32.const 0) (i32.const 0) (i32.const 10) (i32.const 16) (i32.const 65534)",
        ),
        (
            "proxy_set_buffer_bytes",
            "(i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0x7FFFFFFF) (i32.const 10)",
        ),
        (
            "proxy_get_header_map_pairs",
            "(i32.const 0) (i32.const 65536) (i32.const 20)",
        ),
        (
            "proxy_get_header_map_value",
            "(i32.const 0) (i32.const 70000) (i32.const 4) (i32.const 16) (i32.const 20)",
        ),
        (
            "proxy_add_header_map_value",
            "(i32.const 2) (i32.const 0) (i32.const 4) (i32.const 65534) (i32.const 4)",
        ),
        (
            "proxy_set_header_map_pairs",
            "(i32.const 2) (i32.const 65535) (i32.const 8)",
        ),
        ("proxy_get_current_time_nanoseconds", "(i32.const 65532)"),
        (
            "proxy_get_property",
            "(i32.const 0) (i32.const -1) (i32.const 16) (i32.const 20)",
        ),
        (
            "proxy_send_http_response",
            "(i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0xFFFFFF00) (i32.const 0x200) (i32.const 0) (i32.const 0) (i32.const 0)",
        ),
        (
            "proxy_get_shared_data",
            "(i32.const 0) (i32.const 1) (i32.const 16) (i32.const 20) (i32.const 65536)",
        ),
        (
            "proxy_set_shared_data",
            "(i32.const 0) (i32.const 1) (i32.const 65535) (i32.const 2) (i32.const 0)",
        ),
        (
            "proxy_get_state",
            "(i32.const 0x10000) (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 20)",
        ),
        (
            "proxy_get_state",
            "(i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16) (i32.const -2)",
        ),
        (
            "proxy_invoke_service",
            "(i32.const 0) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 65530) (i32.const 100) (i32.const 16) (i32.const 20)",
        ),
    ];
    let used: Vec<(&str, &str)> = LAYOTTO
        .iter()
        .filter(|(n, _)| *n == SET_BUFFER.0 || calls.iter().any(|(c, _)| c == n))
        .copied()
        .collect();
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            format!(
                "(i32.store8 (i32.const {}) (call ${name} {args}))\n    ",
                2048 + i
            )
        })
        .collect();
    let wat = module(
        &imports(&used),
        &format!(
            r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {body}(drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 2048) (i32.const {n})))
    (i32.const 0))"#,
            n = calls.len()
        ),
    );
    let f = host
        .load_wat(&wat, FunctionConfig::default())
        .await
        .unwrap();
    let resp = f.call(post("some body")).await.unwrap();
    assert_eq!(status(&resp), 200);
    for (i, (name, args)) in calls.iter().enumerate() {
        assert_eq!(resp.data[i], INVALID_MEMORY_ACCESS, "{name} {args}");
    }
}

fn config(memory_bytes: u64, cpu_ms: u64) -> FunctionConfig {
    let mut c = FunctionConfig::default();
    c.limits.memory_bytes = memory_bytes;
    c.limits.cpu_ms = cpu_ms;
    c
}

fn on_headers(body: &str) -> String {
    module(
        "",
        &format!(
            r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {body}
    (i32.const 0))"#
        ),
    )
}

#[tokio::test]
async fn a_module_that_spins_is_stopped_by_its_execution_time_budget() {
    let host = host().await;
    let f = host
        .load_wat(&on_headers("(loop $l (br $l))"), config(1 << 20, 20))
        .await
        .unwrap();
    let e = f.call(get("")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted, "{e}");
    assert!(e.message().contains("execution-time budget"), "{e}");
    assert!(e.message().contains("limits.cpuMs"), "{e}");
    assert!(e.message().contains("proxy_on_request_headers"), "{e}");
    assert_eq!(f.stats.failed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_module_that_grows_its_memory_without_bound_is_stopped_at_its_memory_limit() {
    let host = host().await;
    let grow =
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))\n    unreachable";
    let f = host
        .load_wat(&on_headers(grow), config(2 << 20, 5_000))
        .await
        .unwrap();
    let e = f.call(get("")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted, "{e}");
    assert!(e.message().contains("memory limit of 2097152 bytes"), "{e}");
    assert!(e.message().contains("limits.memoryBytes"), "{e}");
}

#[tokio::test]
async fn a_module_that_traps_is_an_internal_error_naming_the_callback() {
    let host = host().await;
    let f = host
        .load_wat(&on_headers("unreachable"), FunctionConfig::default())
        .await
        .unwrap();
    let e = f.call(get("")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    assert!(
        e.message()
            .starts_with("function \"wat\" trapped in proxy_on_request_headers"),
        "{e}"
    );
    // Trapping while starting refuses the load.
    let wat = module(
        "",
        r#"(func (export "_start") unreachable)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))"#,
    );
    let e = host
        .load_wat(&wat, FunctionConfig::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("trapped in _start"), "{e}");
}

/// Records what the callbacks saw: [headers called, num_headers, end_of_stream of the
/// headers (0.2.x only), body size, end_of_stream of the body].
fn recorder(abi: &str, headers_eos: bool) -> String {
    let (params, eos) = if headers_eos {
        (
            "(param i32 i32 i32)",
            "(i32.store8 (i32.const 2050) (local.get 2))",
        )
    } else {
        (
            "(param i32 i32)",
            "(i32.store8 (i32.const 2050) (i32.const 9))",
        )
    };
    module(
        &imports(&[SET_BUFFER]),
        &format!(
            r#"(func (export "proxy_abi_version_{abi}"))
  (func (export "proxy_on_request_headers") {params} (result i32)
    (i32.store8 (i32.const 2048) (i32.const 1))
    (i32.store8 (i32.const 2049) (local.get 1))
    {eos}
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (i32.store8 (i32.const 2051) (local.get 1))
    (i32.store8 (i32.const 2052) (local.get 2))
    (drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 2048) (i32.const 5)))
    (i32.const 0))"#
        ),
    )
}

#[tokio::test]
async fn abi_0_1_0_and_0_2_x_modules_are_both_driven() {
    let host = host().await;
    let mut req = get("x=1");
    req.headers = vec![("accept".into(), "text/plain".into())];
    // 0.1.0: proxy_on_request_headers(context, headers); :method, :path and accept.
    let f = host
        .load_wat(&recorder("0_1_0", false), FunctionConfig::default())
        .await
        .unwrap();
    assert_eq!(f.announced_id(), None);
    let resp = f.call(req.clone()).await.unwrap();
    assert_eq!(&resp.data[..], &[1, 3, 9, 3, 1]);
    // 0.2.x: proxy_on_request_headers(context, headers, end_of_stream), set as Layotto sets
    // it: the request has no body of its own.
    for abi in ["0_2_0", "0_2_1"] {
        let f = host
            .load_wat(&recorder(abi, true), FunctionConfig::default())
            .await
            .unwrap();
        let resp = f.call(req.clone()).await.unwrap();
        assert_eq!(&resp.data[..], &[1, 3, 1, 3, 1], "{abi}");
        let mut with_body = post("abcd");
        with_body.headers = req.headers.clone();
        let resp = f.call(with_body).await.unwrap();
        // :method, :path, accept and content-type; not the end after the headers.
        assert_eq!(&resp.data[..], &[1, 4, 0, 4, 1], "{abi}");
    }
}

#[tokio::test]
async fn modules_missing_what_the_abi_requires_are_refused_at_load() {
    let host = host().await;
    let headers = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))"#;
    let cases = [
        (
            r#"(module (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#
                .to_string(),
            "it does not export proxy_on_context_create",
        ),
        (
            r#"(module
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param i32 i32)))"#
                .to_string(),
            "it exports no memory",
        ),
        (
            r#"(module (memory (export "memory") 1)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#
                .to_string(),
            "it exports no allocator",
        ),
        (
            module("", ""),
            "neither proxy_on_request_headers nor proxy_on_request_body",
        ),
        (
            module(
                "",
                r#"(func (export "proxy_on_request_body") (param i32) (result i32) (i32.const 0))"#,
            ),
            "its export proxy_on_request_body has type (i32) -> (i32)",
        ),
        (
            module(
                "",
                r#"(func (export "proxy_on_request_headers") (param i32) (result i32) (i32.const 0))"#,
            ),
            "its export proxy_on_request_headers has type (i32) -> (i32)",
        ),
        (
            module(
                "",
                &format!(r#"(func (export "proxy_abi_version_0_3_0")) {headers}"#),
            ),
            "it declares proxy-wasm ABI 0.3.0",
        ),
        (
            module(
                r#"(import "env" "proxy_teleport" (func (param i32) (result i32)))"#,
                headers,
            ),
            "it imports env.proxy_teleport, which neither Layotto nor the proxy-wasm ABI defines",
        ),
        (
            module(
                r#"(import "env" "proxy_log" (func (param i32) (result i32)))"#,
                headers,
            ),
            "proxy_log",
        ),
        (
            module(
                "",
                &format!(
                    r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0)) {headers}"#
                ),
            ),
            "proxy_on_configure returned false",
        ),
    ];
    for (wat, expected) in cases {
        let e = host
            .load_wat(&wat, FunctionConfig::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains(expected), "{expected:?} not in {e}");
    }
}

#[tokio::test]
async fn a_local_response_and_response_headers_become_the_answer() {
    let host = host().await;
    // proxy_send_http_response(404, "", "nope", {x-why: gone}) on the headers.
    let local = module(
        &imports(&[(
            "proxy_send_http_response",
            "i32 i32 i32 i32 i32 i32 i32 i32",
        )]),
        r#"(data (i32.const 1024) "nope")
  (data (i32.const 1100) "\01\00\00\00\05\00\00\00\04\00\00\00x-why\00gone\00")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_send_http_response (i32.const 404) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const 4) (i32.const 1100) (i32.const 23) (i32.const -1)))
    (i32.const 1))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) unreachable)"#,
    );
    let f = host
        .load_wat(&local, FunctionConfig::default())
        .await
        .unwrap();
    let resp = f.call(post("not read")).await.unwrap();
    assert_eq!(status(&resp), 404);
    assert_eq!(text(&resp), "nope");
    assert_eq!(
        resp.headers,
        vec![("x-why".to_string(), "gone".to_string())]
    );

    // :status and content-type set on the response headers, the body from the buffer.
    let headers = module(
        &imports(&[
            SET_BUFFER,
            ("proxy_replace_header_map_value", "i32 i32 i32 i32 i32"),
        ]),
        r#"(data (i32.const 1024) ":status201content-typeapplication/jsoncreated")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_replace_header_map_value (i32.const 2) (i32.const 1024) (i32.const 7) (i32.const 1031) (i32.const 3)))
    (drop (call $proxy_replace_header_map_value (i32.const 2) (i32.const 1034) (i32.const 12) (i32.const 1046) (i32.const 16)))
    (drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1062) (i32.const 7)))
    (i32.const 0))"#,
    );
    let f = host
        .load_wat(&headers, FunctionConfig::default())
        .await
        .unwrap();
    let resp = f.call(get("")).await.unwrap();
    assert_eq!(status(&resp), 201);
    assert_eq!(resp.content_type, "application/json");
    assert_eq!(text(&resp), "created");
}

#[tokio::test]
async fn the_plugin_config_reaches_proxy_on_configure() {
    let host = host().await;
    // Keeps the configuration's size from proxy_on_configure and answers the configuration.
    let wat = module(
        &imports(&[SET_BUFFER, GET_BUFFER]),
        r#"(global $size (mut i32) (i32.const -1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (global.set $size (local.get 1))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (global.get $size) (i32.const 16) (i32.const 20)))
    (drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) (i32.load (i32.const 16)) (i32.load (i32.const 20))))
    (i32.const 0))"#,
    );
    let c = FunctionConfig {
        plugin_config: Some(r#"{"greeting":"hello"}"#.into()),
        ..Default::default()
    };
    let f = host.load_wat(&wat, c).await.unwrap();
    let resp = f.call(get("")).await.unwrap();
    assert_eq!(text(&resp), r#"{"greeting":"hello"}"#);
}

#[tokio::test]
async fn wasi_gives_only_what_is_granted() {
    let host = host().await;
    // [environ_sizes_get's errno, the number of variables, fd_prestat_get(3)'s errno,
    // fd_write(stdout)'s errno, the bytes it wrote]: stdout goes to the log.
    let wat = module(
        &format!(
            r#"(import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  {}"#,
            imports(&[SET_BUFFER])
        ),
        r#"(data (i32.const 1024) "hello\n")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.store8 (i32.const 2048) (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (i32.store8 (i32.const 2049) (i32.load (i32.const 16)))
    (i32.store8 (i32.const 2050) (call $fd_prestat_get (i32.const 3) (i32.const 24)))
    (i32.store (i32.const 32) (i32.const 1024))
    (i32.store (i32.const 36) (i32.const 6))
    (i32.store8 (i32.const 2051) (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))
    (i32.store8 (i32.const 2052) (i32.load (i32.const 40)))
    (drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 2048) (i32.const 5)))
    (i32.const 0))"#,
    );
    const EBADF: u8 = 8;
    let f = host
        .load_wat(&wat, FunctionConfig::default())
        .await
        .unwrap();
    assert_eq!(
        &f.call(get("")).await.unwrap().data[..],
        &[0, 0, EBADF, 0, 6]
    );

    let mut granted = FunctionConfig::default();
    granted.grants.env = vec!["GREETING=hello".into()];
    granted.grants.dirs = vec![format!("{}:/data", env!("CARGO_TARGET_TMPDIR"))];
    let f = host.load_wat(&wat, granted).await.unwrap();
    assert_eq!(&f.call(get("")).await.unwrap().data[..], &[0, 1, 0, 0, 6]);

    // API tokens are never passed on, and a grant that does not parse is refused.
    for (env, dirs) in [
        (vec!["DAPR_API_TOKEN".to_string()], vec![]),
        (vec![], vec!["no-guest-path".to_string()]),
        (vec![], vec!["/nonexistent/plinth:/data".to_string()]),
    ] {
        let mut bad = FunctionConfig::default();
        bad.grants.env = env;
        bad.grants.dirs = dirs;
        let e = host.load_wat(&wat, bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains("grants."), "{e}");
    }
}

#[tokio::test]
async fn shared_data_outlives_a_request_and_the_root_context_ends_on_unload() {
    let host = host().await;
    // Response: [get "counter", set it with the CAS read, set it with a stale CAS, get
    // "ended"], then the value of "counter" when there was one. proxy_on_done of the root
    // context, run on unload, sets "ended".
    let wat = module(
        &imports(&[
            SET_BUFFER,
            ("proxy_get_shared_data", "i32 i32 i32 i32 i32"),
            ("proxy_set_shared_data", "i32 i32 i32 i32 i32"),
        ]),
        r#"(data (i32.const 1024) "countervalueended")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.store8 (i32.const 2048) (call $proxy_get_shared_data (i32.const 1024) (i32.const 7) (i32.const 16) (i32.const 20) (i32.const 24)))
    (i32.store8 (i32.const 2049) (call $proxy_set_shared_data (i32.const 1024) (i32.const 7) (i32.const 1031) (i32.const 5) (i32.load (i32.const 24))))
    (i32.store8 (i32.const 2050) (call $proxy_set_shared_data (i32.const 1024) (i32.const 7) (i32.const 1031) (i32.const 5) (i32.const 12345)))
    (i32.store8 (i32.const 2051) (call $proxy_get_shared_data (i32.const 1036) (i32.const 5) (i32.const 40) (i32.const 44) (i32.const 48)))
    (drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 2048) (i32.const 4)))
    (drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const -1) (i32.const 0) (i32.load (i32.const 16)) (i32.load (i32.const 20))))
    (i32.const 0))
  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (if (i32.eq (local.get $ctx) (i32.const 1))
      (then (drop (call $proxy_set_shared_data (i32.const 1036) (i32.const 5) (i32.const 1036) (i32.const 5) (i32.const 0)))))
    (i32.const 1))"#,
    );
    const OK: u8 = 0;
    const NOT_FOUND: u8 = 1;
    const CAS_MISMATCH: u8 = 8;
    let f = host
        .load_wat(&wat, FunctionConfig::default())
        .await
        .unwrap();
    let first = f.call(get("")).await.unwrap();
    assert_eq!(&first.data[..], &[NOT_FOUND, OK, CAS_MISMATCH, NOT_FOUND]);
    let second = f.call(get("")).await.unwrap();
    assert_eq!(&second.data[..], b"\x00\x00\x08\x01value");
    // Another function does not see this one's data.
    let other = host
        .load_wat(&wat, FunctionConfig::default())
        .await
        .unwrap();
    assert_eq!(
        &other.call(get("")).await.unwrap().data[..],
        &[NOT_FOUND, OK, CAS_MISMATCH, NOT_FOUND]
    );
    // Unloading runs proxy_on_done for the root context; the function's data keeps what it
    // did (the function itself still answers here, as nothing removed it from a registry).
    f.unload().await;
    let third = f.call(get("")).await.unwrap();
    assert_eq!(&third.data[..4], &[OK, OK, CAS_MISMATCH, OK]);
}

#[tokio::test]
async fn concurrent_requests_each_have_their_own_instance() {
    let host = host().await;
    let f = Arc::new(
        host.load_wat(&echo("0_2_1"), FunctionConfig::default())
            .await
            .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let f = f.clone();
        tasks.spawn(async move {
            let query = format!("n={i}");
            let resp = f.call(get(&query)).await.unwrap();
            assert_eq!(text(&resp), query);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}
