//! Layotto's bookstore, front half: a Layotto proxy-wasm function that runs unchanged on
//! Plinth. Routed as `id_1` (announced through `proxy_get_id`). It reads `name` from the
//! request body, which for a GET without a body is the query string (`?name=book1`), asks
//! function `id_2` for that book's stock through Layotto's `proxy_invoke_service`, and
//! answers `There are 100 inventories for book1.`
//!
//! Built with the upstream proxy-wasm SDK, the module also imports the ABI 0.2 names the SDK
//! declares (`proxy_send_local_response`, `proxy_grpc_stream`, ...), which Plinth links and
//! Layotto does not: Layotto's own demo uses a trimmed copy of the SDK for that reason.

#[path = "../../layotto.rs"]
mod layotto;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

/// Layotto calls `_start` once the module is instantiated: register the HTTP context.
#[unsafe(no_mangle)]
pub extern "C" fn _start() {
    proxy_wasm::set_http_context(|_, _| Box::new(Front));
}

/// Layotto routes requests whose `id` header names this id to this module.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_id() {
    layotto::announce_id("id_1");
}

struct Front;

impl Context for Front {}

impl Front {
    /// Stop with `message` as the body: Layotto leaves the request unanswered, Plinth
    /// answers 500 with this body.
    fn fail(&self, message: &str) -> Action {
        let _ = hostcalls::log(LogLevel::Error, message);
        self.set_http_response_body(0, usize::MAX, message.as_bytes());
        Action::Pause
    }
}

impl HttpContext for Front {
    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let Some(name) = std::str::from_utf8(&body)
            .ok()
            .and_then(|b| layotto::query_param(b, "name"))
        else {
            return self.fail("the parameter 'name' is missing");
        };
        match layotto::invoke_service("id_2", "stock", name.as_bytes()) {
            Ok(stock) => {
                let answer = format!(
                    "There are {} inventories for {name}.",
                    String::from_utf8_lossy(&stock)
                );
                self.set_http_response_body(0, usize::MAX, answer.as_bytes());
                Action::Continue
            }
            Err(status) => self.fail(&format!("invoking id_2 failed with status {}", status.0)),
        }
    }
}
