//! Layotto's bookstore, back half: a Layotto proxy-wasm function that runs unchanged on
//! Plinth. Routed as `id_2` (announced through `proxy_get_id`). Its request body is a book's
//! name (as `id_1` sends it through `proxy_invoke_service`), or a query string with `name=`
//! when called directly; it answers the book's stock, read with Layotto's `proxy_get_state`
//! from state store `statestore`.
//!
//! Built with the upstream proxy-wasm SDK, the module also imports the ABI 0.2 names the SDK
//! declares (`proxy_send_local_response`, `proxy_grpc_stream`, ...), which Plinth links and
//! Layotto does not: Layotto's own demo uses a trimmed copy of the SDK for that reason.

#[path = "../../layotto.rs"]
mod layotto;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

const STORE: &str = "statestore";

/// Layotto calls `_start` once the module is instantiated: register the HTTP context.
#[unsafe(no_mangle)]
pub extern "C" fn _start() {
    proxy_wasm::set_http_context(|_, _| Box::new(Stock));
}

/// Layotto routes requests whose `id` header names this id to this module.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_id() {
    layotto::announce_id("id_2");
}

struct Stock;

impl Context for Stock {}

impl Stock {
    fn fail(&self, message: &str) -> Action {
        let _ = hostcalls::log(LogLevel::Error, message);
        self.set_http_response_body(0, usize::MAX, message.as_bytes());
        Action::Pause
    }
}

impl HttpContext for Stock {
    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let Ok(body) = std::str::from_utf8(&body) else {
            return self.fail("the book's name is not UTF-8");
        };
        let name = layotto::query_param(body, "name").unwrap_or(body);
        if name.is_empty() {
            return self.fail("the book's name is missing");
        }
        match layotto::get_state(STORE, name) {
            Ok(stock) => {
                self.set_http_response_body(0, usize::MAX, &stock);
                Action::Continue
            }
            Err(status) => self.fail(&format!("reading {name:?} failed with status {}", status.0)),
        }
    }
}
