//! The numbers and names of Layotto's proxy-wasm ABI: status codes, buffer and map types, and
//! the host functions a module may import from `env`.
//!
//! Layotto runs modules on mosn's proxy-wasm host (`proxy-wasm-go-host`, Layotto's fork),
//! which registers the same 43 functions whatever ABI version a module declares: the
//! `proxy_abi_version_0_1_0` set as mosn names it, plus Layotto's `proxy_get_state` and
//! `proxy_invoke_service`. Modules built with the upstream SDKs for ABI 0.2.x import a few
//! names of their own ([`SPEC_ONLY`]); Plinth links those too.

/// A host function's status, as the guest sees it (`proxy_status_t`). Values not listed
/// (3 SerializationFailure, 4 ParseFailure, 5 BadExpression, 9 ResultMismatch,
/// 11 BrokenConnection) are never returned by Plinth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    InvalidMemoryAccess = 6,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// `proxy_action_t`, returned by the request callbacks.
pub(crate) const ACTION_CONTINUE: i32 = 0;

/// Buffer types (`proxy_buffer_type_t`).
pub(crate) mod buffer {
    pub(crate) const HTTP_REQUEST_BODY: i32 = 0;
    pub(crate) const HTTP_RESPONSE_BODY: i32 = 1;
    // 2 downstream data, 3 upstream data, 4 HTTP call response body and 5 gRPC receive
    // buffer exist in the ABI but never here.
    pub(crate) const GRPC_RECEIVE_BUFFER: i32 = 5;
    pub(crate) const VM_CONFIGURATION: i32 = 6;
    pub(crate) const PLUGIN_CONFIGURATION: i32 = 7;
    /// Layotto's call data: where `proxy_get_id` leaves the routing id. (ABI 0.2.x calls
    /// type 8 the foreign-function arguments.)
    pub(crate) const CALL_DATA: i32 = 8;
}

/// Map types (`proxy_map_type_t`).
pub(crate) mod map {
    pub(crate) const HTTP_REQUEST_HEADERS: i32 = 0;
    pub(crate) const HTTP_REQUEST_TRAILERS: i32 = 1;
    pub(crate) const HTTP_RESPONSE_HEADERS: i32 = 2;
    pub(crate) const HTTP_RESPONSE_TRAILERS: i32 = 3;
    // 4 gRPC initial metadata, 5 gRPC trailing metadata, 6 HTTP call response headers and
    // 7 HTTP call response trailers exist in the ABI but never here.
    pub(crate) const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
}

/// The 43 functions Layotto registers in `env`, in the order it registers them (its fork of
/// proxy-wasm-go-host, `internal/imports/v1/imports.go`).
pub const LAYOTTO_IMPORTS: [&str; 43] = [
    "proxy_log",
    "proxy_set_effective_context",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_add_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_current_time_nanoseconds",
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
    "proxy_send_http_response",
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
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_done",
    "proxy_call_foreign_function",
    "proxy_get_state",
    "proxy_invoke_service",
];

/// Names from the proxy-wasm specification (ABI 0.1.0 and 0.2.x) that Layotto does not
/// register. The upstream SDKs import several of them (the Rust SDK 0.2.x imports
/// `proxy_send_local_response`, `proxy_continue_stream`, `proxy_grpc_stream`, ...), so
/// Plinth links them all.
pub const SPEC_ONLY: [&str; 14] = [
    "proxy_get_log_level",
    "proxy_get_configuration",
    "proxy_get_buffer_status",
    "proxy_get_header_map_size",
    "proxy_send_local_response",
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

/// The functions that have no meaning in Plinth's function host: there are no L4 streams,
/// no timers, no outbound HTTP or gRPC from a function (it calls out through
/// `proxy_invoke_service`), no pause and resume (a request runs to its end in one pass), no
/// shared queues, metrics or foreign functions. Each returns Unimplemented (12) without
/// looking at its arguments, whatever signature the module declares for it (ABI 0.2.x
/// gives `proxy_grpc_call` and `proxy_resolve_shared_queue` other parameters than Layotto).
pub const UNIMPLEMENTED: [&str; 35] = [
    // Layotto's 43
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
    // ABI 0.1.0 / 0.2.x only
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

/// Root context id: Layotto's default `root_context_id`.
pub(crate) const ROOT_CONTEXT: i32 = 1;
/// The HTTP context of a request. Each request has its own instance, so one id does.
pub(crate) const HTTP_CONTEXT: i32 = 2;

/// `proxy_log_level_t`, 0 (trace) to 5 (critical).
pub(crate) const LOG_CRITICAL: i32 = 5;
