//! Lifecycle hooks that leave traces in state store `statestore`: `start` counts itself
//! under `starts` (or fails with the value of `FAIL_START` when that variable is granted),
//! `destroy` sets `destroyed`. Requests answer what they see, including a global that
//! `start` sets: requests run in instances of their own, so they never see it.

use std::sync::atomic::{AtomicBool, Ordering};

use plinth_fn::{Request, Response, state};

static STARTED_HERE: AtomicBool = AtomicBool::new(false);

fn start() -> Result<(), String> {
    if let Ok(reason) = std::env::var("FAIL_START") {
        return Err(reason);
    }
    STARTED_HERE.store(true, Ordering::SeqCst);
    let starts = read("starts").parse::<u32>().unwrap_or(0) + 1;
    state::set("statestore", "starts", starts.to_string().as_bytes()).map_err(|e| e.to_string())
}

fn destroy() {
    let _ = state::set("statestore", "destroyed", b"yes");
}

fn read(key: &str) -> String {
    match state::get("statestore", key) {
        Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
        Ok(None) => String::new(),
        Err(e) => format!("err:{e}"),
    }
}

fn status(_: Request) -> Response {
    Response::text(format!(
        "starts={};destroyed={};global={}",
        read("starts"),
        read("destroyed"),
        STARTED_HERE.load(Ordering::SeqCst)
    ))
}

plinth_fn::http_handler!(status);
plinth_fn::lifecycle!(start = start, destroy = destroy);
