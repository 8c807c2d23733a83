//! Write Plinth functions in Rust.
//!
//! A Plinth function is a WASI 0.2 component that answers HTTP requests
//! (`wasi:http/incoming-handler`) and reaches state, other services, pub/sub, locks,
//! sequencers, configuration and secrets only through Plinth's Runtime ABI
//! (`plinth:runtime`, in the repository's `wit/runtime.wit`). This crate gives both a
//! plain-Rust face: a handler is a function from [`Request`] to [`Response`], and each
//! building block is a module of ordinary functions.
//!
//! ```no_run
//! use plinth_fn::{Request, Response, state};
//!
//! fn stock(req: Request) -> Result<Response, plinth_fn::Error> {
//!     let name = req.query_param("name").unwrap_or_default();
//!     let stock = state::get("statestore", &name)?.unwrap_or_default();
//!     Ok(Response::text(format!("{name}: {}", String::from_utf8_lossy(&stock))))
//! }
//!
//! plinth_fn::http_handler!(stock);
//! ```
//!
//! Build it as a component with `cargo build --release --target wasm32-wasip2` (crate type
//! `cdylib`), and install the `.wasm` file in Plinth.
//!
//! Every call runs in a fresh instance: globals start over at each request, so anything
//! that must outlive a request goes to [`state`]. A function may export lifecycle hooks with
//! [`lifecycle!`].

#![warn(missing_docs)]

use std::fmt;

mod serve;

#[doc(hidden)]
pub use serve::serve as __serve;
#[doc(hidden)]
pub use wasi as __wasi;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The raw bindings of the `plinth:runtime` imports, as `wit-bindgen` generates them. The
/// modules of this crate wrap them; reach for these only for what the wrappers leave out.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "imports",
        generate_all,
    });
}

use bindings::plinth::runtime as abi;

/// Why a Runtime ABI call failed: its kind and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The kind: the same kinds as Plinth's gRPC codes.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
}

/// The kind of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed (an empty key, an unknown store, ...).
    InvalidArgument,
    /// What was asked for does not exist.
    NotFound,
    /// A write's ETag does not match the stored one.
    EtagMismatch,
    /// The call is not allowed in the current state.
    FailedPrecondition,
    /// The function has not been granted this store or resource.
    PermissionDenied,
    /// The backend is down or unreachable; retrying later may succeed.
    Unavailable,
    /// The call did not finish in time.
    DeadlineExceeded,
    /// A limit was hit (size, rate, concurrency).
    ResourceExhausted,
    /// The component does not support this call.
    Unimplemented,
    /// Anything else.
    Internal,
}

impl ErrorKind {
    /// The kind's name, as in the WIT (`not-found`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::NotFound => "not-found",
            ErrorKind::EtagMismatch => "etag-mismatch",
            ErrorKind::FailedPrecondition => "failed-precondition",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DeadlineExceeded => "deadline-exceeded",
            ErrorKind::ResourceExhausted => "resource-exhausted",
            ErrorKind::Unimplemented => "unimplemented",
            ErrorKind::Internal => "internal",
        }
    }
}

impl From<abi::types::Error> for Error {
    fn from(e: abi::types::Error) -> Self {
        use abi::types::Error as E;
        let (kind, message) = match e {
            E::InvalidArgument(m) => (ErrorKind::InvalidArgument, m),
            E::NotFound(m) => (ErrorKind::NotFound, m),
            E::EtagMismatch(m) => (ErrorKind::EtagMismatch, m),
            E::FailedPrecondition(m) => (ErrorKind::FailedPrecondition, m),
            E::PermissionDenied(m) => (ErrorKind::PermissionDenied, m),
            E::Unavailable(m) => (ErrorKind::Unavailable, m),
            E::DeadlineExceeded(m) => (ErrorKind::DeadlineExceeded, m),
            E::ResourceExhausted(m) => (ErrorKind::ResourceExhausted, m),
            E::Unimplemented(m) => (ErrorKind::Unimplemented, m),
            E::Internal(m) => (ErrorKind::Internal, m),
        };
        Error { kind, message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

/// The result of a Runtime ABI call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An HTTP request to the function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The HTTP method, upper case (`GET`, `POST`, ...).
    pub method: String,
    /// The path, starting with `/`: `/` followed by the method of the invocation.
    pub path: String,
    /// The query string, without `?`; empty when there is none.
    pub query: String,
    /// The headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`, percent-decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == name).then(|| decode(v))
        })
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

/// An HTTP response from the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers. Hop-by-hop headers (`connection`, `transfer-encoding`, `host`, ...) are
    /// not allowed and are left out.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status`, no headers and no body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// 200 with a `text/plain` body.
    pub fn text(body: impl Into<String>) -> Self {
        Self::new(200)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into().into_bytes())
    }

    /// 200 with a body of the given content type.
    pub fn bytes(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new(200)
            .with_header("content-type", content_type)
            .with_body(body)
    }

    /// This response with another status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// This response with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// This response with `body`.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// What a handler may return: a [`Response`], text, or a `Result` whose error becomes a
/// response with the error's text and its [`ErrorStatus::status`] (a Runtime ABI [`Error`]
/// maps to the matching HTTP status).
pub trait IntoResponse {
    /// The response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for &str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl<T: IntoResponse, E: ErrorStatus> IntoResponse for std::result::Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(r) => r.into_response(),
            Err(e) => Response::text(e.to_string()).with_status(e.status()),
        }
    }
}

/// An error a handler may return: its text becomes the body, with [`status`](Self::status).
pub trait ErrorStatus: fmt::Display {
    /// The HTTP status it answers with; 500 unless said otherwise.
    fn status(&self) -> u16 {
        500
    }
}

impl ErrorStatus for Error {
    fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::EtagMismatch | ErrorKind::FailedPrecondition => 409,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::Unavailable => 503,
            ErrorKind::DeadlineExceeded => 504,
            ErrorKind::ResourceExhausted => 429,
            ErrorKind::Unimplemented => 501,
            ErrorKind::Internal => 500,
        }
    }
}

impl ErrorStatus for String {}
impl ErrorStatus for &str {}

/// Export `handler` (a `fn(Request) -> impl IntoResponse`) as the component's
/// `wasi:http/incoming-handler`. Use it once per crate.
///
/// ```no_run
/// fn hello(_: plinth_fn::Request) -> &'static str {
///     "hello"
/// }
/// plinth_fn::http_handler!(hello);
/// ```
#[macro_export]
macro_rules! http_handler {
    ($handler:path) => {
        #[doc(hidden)]
        struct __PlinthFnHandler;

        impl $crate::__wasi::exports::http::incoming_handler::Guest for __PlinthFnHandler {
            fn handle(
                request: $crate::__wasi::http::types::IncomingRequest,
                out: $crate::__wasi::http::types::ResponseOutparam,
            ) {
                $crate::__serve(request, out, $handler)
            }
        }

        $crate::__wasi::http::proxy::export!(__PlinthFnHandler with_types_in $crate::__wasi);
    };
}

/// Export lifecycle hooks (`plinth:runtime/lifecycle`): `start`, a
/// `fn() -> Result<(), String>` run once when the function is loaded (an error fails the
/// load with its message), and `destroy`, a `fn()` run once when it is unloaded.
///
/// Each hook runs in an instance of its own, like every request: what it leaves in globals
/// is not seen by requests; keep it in [`state`].
///
/// ```no_run
/// fn start() -> Result<(), String> {
///     plinth_fn::state::set("statestore", "ready", b"yes").map_err(|e| e.to_string())
/// }
/// fn destroy() {}
/// plinth_fn::lifecycle!(start = start, destroy = destroy);
/// ```
#[macro_export]
macro_rules! lifecycle {
    (start = $start:path, destroy = $destroy:path $(,)?) => {
        #[doc(hidden)]
        fn __plinth_fn_start() -> ::std::result::Result<(), ::std::string::String> {
            $start()
        }

        #[doc(hidden)]
        fn __plinth_fn_destroy() {
            $destroy()
        }

        #[doc(hidden)]
        mod __plinth_fn_lifecycle {
            // The lifecycle interface on its own, so that only functions that use this macro
            // export it. It is the same interface as in `wit/runtime.wit`.
            $crate::__wit_bindgen::generate!({
                inline: "
                    package plinth:runtime@0.1.0;
                    interface lifecycle {
                        start: func() -> result<_, string>;
                        destroy: func();
                    }
                    world lifecycle-hooks {
                        export lifecycle;
                    }
                ",
                world: "lifecycle-hooks",
                runtime_path: "::plinth_fn::__wit_bindgen::rt",
            });

            pub(super) struct Hooks;

            impl exports::plinth::runtime::lifecycle::Guest for Hooks {
                fn start() -> ::std::result::Result<(), ::std::string::String> {
                    super::__plinth_fn_start()
                }
                fn destroy() {
                    super::__plinth_fn_destroy()
                }
            }

            export!(Hooks);
        }
    };
}

/// Key/value state, keys under the function's app id.
pub mod state {
    use super::Result;
    use super::abi::state as raw;

    pub use raw::{Item, SetOptions};

    /// The value under `key` in state store `store`, or `None`.
    pub fn get(store: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(raw::get(store, key)?.map(|item| item.value))
    }

    /// The value under `key` with its ETag and metadata, or `None`.
    pub fn get_item(store: &str, key: &str) -> Result<Option<Item>> {
        Ok(raw::get(store, key)?)
    }

    /// Store `value` under `key`.
    pub fn set(store: &str, key: &str, value: &[u8]) -> Result<()> {
        let options = SetOptions {
            etag: None,
            metadata: Vec::new(),
        };
        Ok(raw::set(store, key, value, &options)?)
    }

    /// Store `value` under `key` with options: an ETag for a conditional write, metadata
    /// such as `ttlInSeconds`.
    pub fn set_with(store: &str, key: &str, value: &[u8], options: &SetOptions) -> Result<()> {
        Ok(raw::set(store, key, value, options)?)
    }

    /// Delete `key`; deleting a missing key succeeds.
    pub fn delete(store: &str, key: &str) -> Result<()> {
        Ok(raw::delete(store, key, None)?)
    }

    /// Delete `key` if its ETag still matches `etag`.
    pub fn delete_if(store: &str, key: &str, etag: &str) -> Result<()> {
        Ok(raw::delete(store, key, Some(etag))?)
    }
}

/// Service invocation: other functions (in-process) and apps.
pub mod invoke {
    use super::Result;
    use super::abi::invoke as raw;

    pub use raw::{Request, Response};

    impl Request {
        /// A `POST` of `data` to `method`.
        pub fn post(method: &str, data: impl Into<Vec<u8>>) -> Self {
            Request {
                method: method.to_string(),
                verb: "POST".to_string(),
                query: String::new(),
                content_type: String::new(),
                data: data.into(),
                headers: Vec::new(),
            }
        }

        /// A `GET` of `method` with a query string (without `?`).
        pub fn get(method: &str, query: &str) -> Self {
            Request {
                verb: "GET".to_string(),
                query: query.to_string(),
                ..Self::post(method, Vec::new())
            }
        }
    }

    impl Response {
        /// The body as text (invalid UTF-8 replaced).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.data).into_owned()
        }
    }

    /// Call `method` on `app_id` (a function id or an app id) with `data`, as a `POST`. The
    /// callee's answer comes back whatever its status; an error means the call did not
    /// complete.
    pub fn call(app_id: &str, method: &str, data: &[u8]) -> Result<Response> {
        Ok(raw::call(app_id, &Request::post(method, data))?)
    }

    /// Call `app_id` with a full request.
    pub fn call_with(app_id: &str, request: &Request) -> Result<Response> {
        Ok(raw::call(app_id, request)?)
    }
}

/// Publishing to pub/sub components.
pub mod pubsub {
    use super::Result;
    use super::abi::pubsub as raw;

    /// Publish `data` to `topic` on `pubsub`; returns once the broker has accepted it.
    /// Without a content type the data goes out as a CloudEvent's JSON or text.
    pub fn publish(
        pubsub: &str,
        topic: &str,
        data: &[u8],
        content_type: Option<&str>,
    ) -> Result<()> {
        Ok(raw::publish(pubsub, topic, data, content_type, &[])?)
    }

    /// [`publish`] with metadata (e.g. `rawPayload`, `ttlInSeconds`).
    pub fn publish_with(
        pubsub: &str,
        topic: &str,
        data: &[u8],
        content_type: Option<&str>,
        metadata: &[(String, String)],
    ) -> Result<()> {
        Ok(raw::publish(pubsub, topic, data, content_type, metadata)?)
    }
}

/// Distributed locks.
pub mod lock {
    use super::Result;
    use super::abi::lock as raw;

    pub use raw::UnlockStatus;

    /// Take `resource` for `owner` for `expire_seconds`; `false` when someone else holds it.
    pub fn try_lock(store: &str, resource: &str, owner: &str, expire_seconds: u32) -> Result<bool> {
        Ok(raw::try_lock(store, resource, owner, expire_seconds)?)
    }

    /// Release `resource` if `owner` holds it.
    pub fn unlock(store: &str, resource: &str, owner: &str) -> Result<UnlockStatus> {
        Ok(raw::unlock(store, resource, owner)?)
    }
}

/// Distributed ids.
pub mod sequencer {
    use super::Result;
    use super::abi::sequencer as raw;

    pub use raw::Increment;

    /// The next id under `key`.
    pub fn next_id(store: &str, key: &str, increment: Increment) -> Result<i64> {
        Ok(raw::next_id(store, key, increment)?)
    }
}

/// Configuration items.
pub mod configuration {
    use super::Result;
    use super::abi::configuration as raw;

    pub use raw::ConfigItem;

    /// The items under `keys` in `store`; every item when `keys` is empty.
    pub fn get(store: &str, keys: &[&str]) -> Result<Vec<ConfigItem>> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        Ok(raw::get(store, &keys, &[])?)
    }
}

/// Secrets, from the stores the function has been granted (`grants.secretStores`).
pub mod secrets {
    use super::Result;
    use super::abi::secrets as raw;

    /// The secret `key` in `store`: one or more name/value pairs.
    pub fn get(store: &str, key: &str) -> Result<Vec<(String, String)>> {
        Ok(raw::get(store, key)?)
    }

    /// The value of a single-valued secret (the pair named `key`, else the first).
    pub fn get_value(store: &str, key: &str) -> Result<Option<String>> {
        let mut pairs = raw::get(store, key)?;
        let at = pairs.iter().position(|(k, _)| k == key).unwrap_or(0);
        Ok((!pairs.is_empty()).then(|| pairs.swap_remove(at).1))
    }
}

/// Logs, through Plinth's log with the function's id attached.
pub mod log {
    use super::abi::logging as raw;

    pub use raw::Level;

    /// Log `message` at `level`.
    pub fn log(level: Level, message: &str) {
        raw::log(level, message)
    }

    /// Log at debug level.
    pub fn debug(message: &str) {
        raw::log(Level::Debug, message)
    }

    /// Log at info level.
    pub fn info(message: &str) {
        raw::log(Level::Info, message)
    }

    /// Log at warn level.
    pub fn warn(message: &str) {
        raw::log(Level::Warn, message)
    }

    /// Log at error level.
    pub fn error(message: &str) {
        raw::log(Level::Error, message)
    }
}
