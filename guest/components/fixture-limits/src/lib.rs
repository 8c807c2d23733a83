//! Misbehaves on request, straight on `wasi:http` (without the SDK, which never would):
//!
//! - `/spin`: loops forever.
//! - `/alloc`: allocates (and touches) memory without bound.
//! - `/panic`: panics with the message `boom`.
//! - `/sleep?ms=N`: waits N ms on the WASI clock (time in the host, not in the guest).
//! - `/unset`: returns without setting its response.
//! - `/unfinished`: sets its response, writes part of the body, and drops it unfinished.
//! - `/big?bytes=N`: answers a body of N bytes.
//! - anything else: `ok`.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Limits;

fn param(query: &str, name: &str) -> u64 {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn answer(out: ResponseOutparam, len: u64, finish: bool) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("stream");
    let chunk = [b'x'; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if stream.blocking_write_and_flush(&chunk[..n]).is_err() {
            return;
        }
        left -= n as u64;
    }
    drop(stream);
    if finish {
        let _ = OutgoingBody::finish(body, None);
    }
}

impl Guest for Limits {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match path {
            "/spin" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/alloc" => {
                let mut blocks = Vec::new();
                loop {
                    let mut block = vec![0u8; 1 << 20];
                    block[0] = 1;
                    blocks.push(std::hint::black_box(block));
                }
            }
            "/panic" => panic!("boom"),
            "/sleep" => {
                wasi::clocks::monotonic_clock::subscribe_duration(param(query, "ms") * 1_000_000)
                    .block();
                answer(out, 0, true);
            }
            "/unset" => drop(out),
            "/unfinished" => answer(out, 10, false),
            "/big" => answer(out, param(query, "bytes"), true),
            _ => {
                let response = OutgoingResponse::new(Fields::new());
                let body = response.body().expect("body");
                ResponseOutparam::set(out, Ok(response));
                let stream = body.write().expect("stream");
                let _ = stream.blocking_write_and_flush(b"ok");
                drop(stream);
                let _ = OutgoingBody::finish(body, None);
            }
        }
    }
}

wasi::http::proxy::export!(Limits);
