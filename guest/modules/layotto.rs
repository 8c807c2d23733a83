//! Layotto's two host functions beyond proxy-wasm, as a Layotto function declares them itself
//! (the proxy-wasm SDK does not know them), and `proxy_get_id`'s buffer. Shared by the
//! examples in this directory through `#[path]`, so that each stays one small crate.

#![allow(dead_code)] // each example uses part of it

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, Bytes};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Read `key` from state store `store`; the host allocates the value in this module's
    /// memory (through `proxy_on_memory_allocate`) and writes its address and length.
    fn proxy_get_state(
        store_ptr: *const u8,
        store_len: usize,
        key_ptr: *const u8,
        key_len: usize,
        value_ptr: *mut *mut u8,
        value_len: *mut usize,
    ) -> u32;

    /// Call `method` of service (or function) `id` with `param`; the answer comes back the
    /// same way as a state value.
    fn proxy_invoke_service(
        id_ptr: *const u8,
        id_len: usize,
        method_ptr: *const u8,
        method_len: usize,
        param_ptr: *const u8,
        param_len: usize,
        result_ptr: *mut *mut u8,
        result_len: *mut usize,
    ) -> u32;
}

/// A host status other than Ok (the raw proxy-wasm code: 1 NotFound, 10 InternalFailure, ...).
#[derive(Debug, Clone, Copy)]
pub struct HostStatus(pub u32);

/// Take ownership of bytes the host allocated for us; null means empty.
fn take(ptr: *mut u8, len: usize) -> Bytes {
    if ptr.is_null() || len == 0 {
        return Bytes::new();
    }
    // SAFETY: the host allocated `len` bytes at `ptr` with `proxy_on_memory_allocate`, the
    // SDK's allocator (a boxed slice of exactly `len` bytes), and handed them over.
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

/// Layotto's `proxy_get_state`.
pub fn get_state(store: &str, key: &str) -> Result<Bytes, HostStatus> {
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
    // SAFETY: every pointer and length describes a live buffer or out-parameter.
    let status = unsafe {
        proxy_get_state(
            store.as_ptr(),
            store.len(),
            key.as_ptr(),
            key.len(),
            &mut ptr,
            &mut len,
        )
    };
    match status {
        0 => Ok(take(ptr, len)),
        s => Err(HostStatus(s)),
    }
}

/// Layotto's `proxy_invoke_service`.
pub fn invoke_service(id: &str, method: &str, param: &[u8]) -> Result<Bytes, HostStatus> {
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
    // SAFETY: as in `get_state`.
    let status = unsafe {
        proxy_invoke_service(
            id.as_ptr(),
            id.len(),
            method.as_ptr(),
            method.len(),
            param.as_ptr(),
            param.len(),
            &mut ptr,
            &mut len,
        )
    };
    match status {
        0 => Ok(take(ptr, len)),
        s => Err(HostStatus(s)),
    }
}

/// Announce this module's routing id, as Layotto's `proxy_get_id` export must: into the
/// call-data buffer (type 8).
pub fn announce_id(id: &str) {
    let _ = hostcalls::set_buffer(BufferType::CallData, 0, id.len(), id.as_bytes());
}

/// The value of `name` in a query string (`a=1&name=book1`), or `None`.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
