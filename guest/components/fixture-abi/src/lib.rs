//! Exercises the Runtime ABI and probes the sandbox, answering one `name=value` line per
//! probe so that tests can check each.
//!
//! - `/imports?target=ID&secret=KEY`: every `plinth:runtime` import once.
//! - `/sandbox?connect=HOST:PORT`: what WASI lets it see: environment variables, the file
//!   `/data/hello.txt`, writing `/data/out.txt`, a TCP connection.
//! - `/counter`: a global incremented per request (a fresh instance answers 1).
//! - `/echo?status=N`: the request as received.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

use plinth_fn::{
    Request, Response, configuration, invoke, lock, log, pubsub, secrets, sequencer, state,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn route(req: Request) -> Response {
    match req.path.as_str() {
        "/imports" => imports(&req),
        "/sandbox" => sandbox(&req),
        "/counter" => Response::text((COUNTER.fetch_add(1, Ordering::SeqCst) + 1).to_string()),
        "/echo" => echo(&req),
        other => Response::text(format!("no route {other}")).with_status(404),
    }
}

fn show<T>(r: plinth_fn::Result<T>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => format!("err:{}", e.kind.as_str()),
    }
}

fn imports(req: &Request) -> Response {
    let mut out = String::new();
    let mut line = |name: &str, value: String| {
        let _ = writeln!(out, "{name}={value}");
    };
    let text = |v: Vec<u8>| String::from_utf8_lossy(&v).into_owned();

    line(
        "state.set",
        show(state::set("statestore", "abi-key", b"v1"), |()| "ok".into()),
    );
    line(
        "state.get",
        show(state::get_item("statestore", "abi-key"), |i| match i {
            Some(i) => format!("{}:etag={}", text(i.value), i.etag.is_some()),
            None => "none".into(),
        }),
    );
    line(
        "state.delete",
        show(state::delete("statestore", "abi-key"), |()| "ok".into()),
    );
    line(
        "state.after-delete",
        show(state::get("statestore", "abi-key"), |v| match v {
            Some(v) => text(v),
            None => "none".into(),
        }),
    );
    line(
        "state.kept",
        show(state::set("statestore", "abi-kept", b"kept"), |()| {
            "ok".into()
        }),
    );
    line(
        "state.unknown-store",
        show(state::get("no-such-store", "k"), |_| "ok".into()),
    );

    let target = req.query_param("target").unwrap_or_default();
    line(
        "invoke",
        show(invoke::call(&target, "echo", b"ping"), |r| {
            format!(
                "{}:{}",
                r.status,
                r.text().lines().next().unwrap_or_default()
            )
        }),
    );

    line(
        "pubsub",
        show(
            pubsub::publish(
                "pubsub",
                "abi-topic",
                br#"{"a":1}"#,
                Some("application/json"),
            ),
            |()| "ok".into(),
        ),
    );

    let taken = lock::try_lock("lockstore", "abi-lock", "me", 10);
    let again = lock::try_lock("lockstore", "abi-lock", "other", 10);
    let wrong = lock::unlock("lockstore", "abi-lock", "other");
    let right = lock::unlock("lockstore", "abi-lock", "me");
    line(
        "lock",
        format!(
            "{},{},{},{}",
            show(taken, |b| b.to_string()),
            show(again, |b| b.to_string()),
            show(wrong, |s| format!("{s:?}")),
            show(right, |s| format!("{s:?}")),
        ),
    );

    let first = sequencer::next_id("sequencer", "abi-seq", sequencer::Increment::Strong);
    let second = sequencer::next_id("sequencer", "abi-seq", sequencer::Increment::Strong);
    line(
        "sequencer",
        format!(
            "{},{}",
            show(first, |i| i.to_string()),
            show(second, |i| i.to_string())
        ),
    );

    line(
        "configuration",
        show(
            configuration::get("configstore", &["abi-config"]),
            |items| {
                items
                    .iter()
                    .map(|i| format!("{}={}", i.key, i.value))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        ),
    );

    let secret = req.query_param("secret").unwrap_or_default();
    line(
        "secret",
        show(secrets::get_value("secretstore", &secret), |v| {
            v.unwrap_or_default()
        }),
    );

    log::info("fixture-abi says hello");
    line("log", "ok".into());

    Response::text(out)
}

fn sandbox(req: &Request) -> Response {
    let mut out = String::new();
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let _ = writeln!(out, "env.count={}", vars.len());
    let _ = writeln!(
        out,
        "env.GREETING={}",
        std::env::var("GREETING").unwrap_or_else(|_| "absent".into())
    );
    let _ = writeln!(
        out,
        "file={}",
        match std::fs::read_to_string("/data/hello.txt") {
            Ok(s) => s.trim().to_string(),
            Err(e) => format!("err:{:?}", e.kind()),
        }
    );
    let _ = writeln!(
        out,
        "write={}",
        match std::fs::write("/data/out.txt", b"written") {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("err:{:?}", e.kind()),
        }
    );
    if let Some(addr) = req.query_param("connect") {
        let _ = writeln!(
            out,
            "connect={}",
            match std::net::TcpStream::connect(addr.as_str()) {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("err:{:?}", e.kind()),
            }
        );
    }
    Response::text(out)
}

fn echo(req: &Request) -> Response {
    let mut out = String::new();
    let _ = writeln!(out, "method={}", req.method);
    let _ = writeln!(out, "path={}", req.path);
    let _ = writeln!(out, "query={}", req.query);
    let mut headers = req.headers.clone();
    headers.sort();
    for (k, v) in headers {
        let _ = writeln!(out, "header.{k}={v}");
    }
    let _ = writeln!(out, "body={}", req.text());
    let status = req
        .query_param("status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    Response::text(out)
        .with_status(status)
        .with_header("x-echo", "yes")
}

plinth_fn::http_handler!(route);
