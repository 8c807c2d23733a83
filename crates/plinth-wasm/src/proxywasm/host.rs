//! The host functions: every `env.proxy_*` function Layotto registers, the ABI 0.2.x names
//! the upstream SDKs import, and WASI preview 1, linked for one module.
//!
//! Each function checks the guest's pointers and lengths ([`super::memory`]) and answers
//! with a status; only a trap in the guest's allocator, called to hand data over, stops the
//! call. Functions with no meaning here ([`UNIMPLEMENTED`]) answer Unimplemented (12).

use std::time::{SystemTime, UNIX_EPOCH};

use plinth_core::Metadata;
use plinth_core::component::state::Consistency;
use plinth_runtime::app::InvokeRequest;
use tracing::level_filters::LevelFilter;
use wasmtime::{ExternType, Linker, Module, Val, ValType};

use super::abi::{
    HTTP_CONTEXT, LAYOTTO_IMPORTS, LOG_CRITICAL, ROOT_CONTEXT, SPEC_ONLY, Status, UNIMPLEMENTED,
    buffer, map,
};
use super::context::{Fields, HostState, LocalResponse};
use super::memory::{
    Caller, Fault, check, copy_out, finish, read, read_string, write_u32, write_u64,
};

/// The longest log message passed on whole; longer ones are cut.
const MAX_LOG: usize = 16 << 10;

type Linked = Result<(), String>;

/// Link WASI preview 1 and the `env` functions into `linker` for `module`. A module that
/// imports an `env` name this host does not know is refused, naming it.
pub(crate) fn link(linker: &mut Linker<HostState>, module: &Module) -> Linked {
    let e = |e: wasmtime::Error| format!("{e:#}");
    wasmtime_wasi::p1::add_to_linker_async(linker, |s: &mut HostState| &mut s.wasi).map_err(e)?;
    define(linker).map_err(e)?;
    for import in module.imports().filter(|i| i.module() == "env") {
        let name = import.name();
        if UNIMPLEMENTED.contains(&name) {
            let ExternType::Func(ty) = import.ty() else {
                return Err(format!("its import env.{name} is not a function"));
            };
            let returns_status = {
                let mut results = ty.results();
                results.len() == 1 && matches!(results.next(), Some(ValType::I32))
            };
            if !returns_status {
                return Err(format!(
                    "its import env.{name} does not return a status (i32)"
                ));
            }
            linker
                .func_new("env", name, ty, |_, _, results| {
                    results[0] = Val::I32(Status::Unimplemented as i32);
                    Ok(())
                })
                .map_err(e)?;
        } else if !LAYOTTO_IMPORTS.contains(&name) && !SPEC_ONLY.contains(&name) {
            return Err(format!(
                "it imports env.{name}, which neither Layotto nor the proxy-wasm ABI defines"
            ));
        }
    }
    Ok(())
}

fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_>, level: i32, p: i32, n: i32| finish(log(&mut c, level, p, n)),
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |c: Caller<'_>, ctx: i32| finish(set_effective_context(&c, ctx)),
    )?;
    l.func_wrap("env", "proxy_get_log_level", |mut c: Caller<'_>, p: i32| {
        finish(get_log_level(&mut c, p))
    })?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_>, p: i32| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            finish(write_u64(&mut c, p, now.as_nanos() as u64).map_err(Fault::from))
        },
    )?;
    l.func_wrap_async(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_>, (p, n, rp, rn): (i32, i32, i32, i32)| {
            Box::new(async move { finish(get_property(&mut c, p, n, rp, rn).await) })
        },
    )?;
    l.func_wrap_async(
        "env",
        "proxy_get_configuration",
        |mut c: Caller<'_>, (rp, rn): (i32, i32)| {
            Box::new(async move {
                let config = c.data().shared.plugin_config.clone();
                finish(copy_out(&mut c, &config, rp, rn).await)
            })
        },
    )?;

    // Buffers.
    l.func_wrap_async(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_>, (t, s, m, rp, rn): (i32, i32, i32, i32, i32)| {
            Box::new(async move { finish(get_buffer_bytes(&mut c, t, s, m, rp, rn).await) })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_>, t: i32, s: i32, n: i32, p: i32, pn: i32| {
            finish(set_buffer_bytes(&mut c, t, s, n, p, pn))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Caller<'_>, t: i32, rn: i32, rf: i32| finish(get_buffer_status(&mut c, t, rn, rf)),
    )?;

    // Header maps.
    l.func_wrap_async(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_>, (m, rp, rn): (i32, i32, i32)| {
            Box::new(async move {
                let pairs = match fields(c.data(), m) {
                    Ok(f) => f.serialize(),
                    Err(s) => return Ok(s as i32),
                };
                finish(copy_out(&mut c, &pairs, rp, rn).await)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_>, m: i32, p: i32, n: i32| finish(set_header_map_pairs(&mut c, m, p, n)),
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: Caller<'_>, m: i32, rn: i32| {
            let size = match fields(c.data(), m) {
                Ok(f) => f.serialize().len() as u32,
                Err(s) => return Ok(s as i32),
            };
            finish(write_u32(&mut c, rn, size).map_err(Fault::from))
        },
    )?;
    l.func_wrap_async(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_>, (m, k, kn, rp, rn): (i32, i32, i32, i32, i32)| {
            Box::new(async move { finish(get_header_map_value(&mut c, m, k, kn, rp, rn).await) })
        },
    )?;
    for (name, op) in [
        ("proxy_replace_header_map_value", Edit::Replace),
        ("proxy_add_header_map_value", Edit::Add),
    ] {
        l.func_wrap(
            "env",
            name,
            move |mut c: Caller<'_>, m: i32, k: i32, kn: i32, v: i32, vn: i32| {
                finish(edit_header(&mut c, op, m, k, kn, Some((v, vn))))
            },
        )?;
    }
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_>, m: i32, k: i32, kn: i32| {
            finish(edit_header(&mut c, Edit::Remove, m, k, kn, None))
        },
    )?;

    // The local response: Layotto's name and the ABI 0.2.x one.
    for name in ["proxy_send_http_response", "proxy_send_local_response"] {
        l.func_wrap(
            "env",
            name,
            |mut c: Caller<'_>,
             code: i32,
             dp: i32,
             dn: i32,
             bp: i32,
             bn: i32,
             hp: i32,
             hn: i32,
             _grpc: i32| {
                finish(send_local_response(
                    &mut c,
                    code,
                    (dp, dn),
                    (bp, bn),
                    (hp, hn),
                ))
            },
        )?;
    }

    // Shared data, private to the function.
    l.func_wrap_async(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_>, (k, kn, rp, rn, rc): (i32, i32, i32, i32, i32)| {
            Box::new(async move { finish(get_shared_data(&mut c, k, kn, rp, rn, rc).await) })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_>, k: i32, kn: i32, v: i32, vn: i32, cas: i32| {
            finish(set_shared_data(&mut c, k, kn, v, vn, cas))
        },
    )?;

    // Layotto's own.
    l.func_wrap_async(
        "env",
        "proxy_get_state",
        |mut c: Caller<'_>, (s, sn, k, kn, rp, rn): (i32, i32, i32, i32, i32, i32)| {
            Box::new(async move { finish(get_state(&mut c, (s, sn), (k, kn), rp, rn).await) })
        },
    )?;
    l.func_wrap_async(
        "env",
        "proxy_invoke_service",
        |mut c: Caller<'_>,
         (i, iname, m, mn, p, pn, rp, rn): (i32, i32, i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                finish(invoke_service(&mut c, (i, iname), (m, mn), (p, pn), rp, rn).await)
            })
        },
    )?;
    Ok(())
}

fn log(c: &mut Caller<'_>, level: i32, ptr: i32, len: i32) -> Result<(), Fault> {
    if !(0..=LOG_CRITICAL).contains(&level) {
        return Err(Status::BadArgument.into());
    }
    let mut message = read(c, ptr, len)?;
    message.truncate(MAX_LOG);
    let text = String::from_utf8_lossy(&message);
    let id = &*c.data().shared.id;
    match level {
        0 => tracing::trace!(target: "plinth_wasm::guest", function = id, "{text}"),
        1 => tracing::debug!(target: "plinth_wasm::guest", function = id, "{text}"),
        2 => tracing::info!(target: "plinth_wasm::guest", function = id, "{text}"),
        3 => tracing::warn!(target: "plinth_wasm::guest", function = id, "{text}"),
        _ => {
            tracing::error!(target: "plinth_wasm::guest", function = id, critical = level == LOG_CRITICAL, "{text}")
        }
    }
    Ok(())
}

/// The SDKs announce the context of every callback; the root context and the request's
/// own are the only ones there are.
fn set_effective_context(c: &Caller<'_>, ctx: i32) -> Result<(), Fault> {
    if ctx == ROOT_CONTEXT || (ctx == HTTP_CONTEXT && c.data().http.is_some()) {
        Ok(())
    } else {
        Err(Status::BadArgument.into())
    }
}

fn get_log_level(c: &mut Caller<'_>, ptr: i32) -> Result<(), Fault> {
    let level = match LevelFilter::current() {
        LevelFilter::TRACE => 0,
        LevelFilter::DEBUG => 1,
        LevelFilter::INFO => 2,
        LevelFilter::WARN => 3,
        LevelFilter::ERROR => 4,
        _ => LOG_CRITICAL as u32,
    };
    Ok(write_u32(c, ptr, level)?)
}

/// The properties a function can read: its name and the request's method, path and query.
/// Paths are NUL-separated segments, as the SDKs send them.
async fn get_property(c: &mut Caller<'_>, p: i32, n: i32, rp: i32, rn: i32) -> Result<(), Fault> {
    let path = read(c, p, n)?;
    let segments: Vec<&[u8]> = path.split(|b| *b == 0).filter(|s| !s.is_empty()).collect();
    let s = c.data();
    let http = s.http.as_ref();
    let value = match segments.as_slice() {
        [b"plugin_name"] => Some(s.shared.id.to_string()),
        [b"request", b"method"] => http.map(|h| h.verb.clone()),
        [b"request", b"url_path"] => http.map(|h| h.path.clone()),
        [b"request", b"query"] => http.map(|h| h.query.clone()),
        [b"request", b"path"] => http.map(|h| {
            if h.query.is_empty() {
                h.path.clone()
            } else {
                format!("{}?{}", h.path, h.query)
            }
        }),
        _ => None,
    };
    let value = value.ok_or(Status::NotFound)?;
    copy_out(c, value.as_bytes(), rp, rn).await
}

fn buffer(s: &HostState, ty: i32) -> Result<&[u8], Status> {
    let http = || s.http.as_ref().ok_or(Status::NotFound);
    Ok(match ty {
        buffer::HTTP_REQUEST_BODY => &http()?.request_body,
        buffer::HTTP_RESPONSE_BODY => &http()?.response_body,
        2..=buffer::GRPC_RECEIVE_BUFFER => return Err(Status::NotFound),
        buffer::VM_CONFIGURATION => &[],
        buffer::PLUGIN_CONFIGURATION => &s.shared.plugin_config,
        buffer::CALL_DATA => &s.call_data,
        _ => return Err(Status::BadArgument),
    })
}

fn buffer_mut(s: &mut HostState, ty: i32) -> Result<&mut Vec<u8>, Status> {
    match ty {
        buffer::HTTP_REQUEST_BODY | buffer::HTTP_RESPONSE_BODY => {
            let http = s.http.as_mut().ok_or(Status::NotFound)?;
            Ok(if ty == buffer::HTTP_REQUEST_BODY {
                &mut http.request_body
            } else {
                &mut http.response_body
            })
        }
        2..=buffer::GRPC_RECEIVE_BUFFER => Err(Status::NotFound),
        buffer::CALL_DATA => Ok(&mut s.call_data),
        // The configurations are read-only; other types do not exist.
        _ => Err(Status::BadArgument),
    }
}

async fn get_buffer_bytes(
    c: &mut Caller<'_>,
    ty: i32,
    start: i32,
    max: i32,
    rp: i32,
    rn: i32,
) -> Result<(), Fault> {
    let bytes = {
        let buf = buffer(c.data(), ty)?;
        let start = start as u32 as usize;
        if start > buf.len() {
            return Err(Status::BadArgument.into());
        }
        let len = (max as u32 as usize).min(buf.len() - start);
        buf[start..start + len].to_vec()
    };
    copy_out(c, &bytes, rp, rn).await
}

/// Replace `size` bytes at `start` with the guest's data: `start` past the end appends,
/// `size` 0 inserts, as the ABI has it.
fn set_buffer_bytes(
    c: &mut Caller<'_>,
    ty: i32,
    start: i32,
    size: i32,
    p: i32,
    n: i32,
) -> Result<(), Fault> {
    buffer_mut(c.data_mut(), ty)?;
    let data = read(c, p, n)?;
    let max = c.data().shared.max_buffer;
    let buf = buffer_mut(c.data_mut(), ty)?;
    let start = (start as u32 as usize).min(buf.len());
    let end = start.saturating_add(size as u32 as usize).min(buf.len());
    if buf.len() - (end - start) + data.len() > max {
        return Err(Status::BadArgument.into());
    }
    buf.splice(start..end, data);
    Ok(())
}

fn get_buffer_status(c: &mut Caller<'_>, ty: i32, rn: i32, rf: i32) -> Result<(), Fault> {
    let len = buffer(c.data(), ty)?.len() as u32;
    check(c, rf, 4)?;
    write_u32(c, rn, len)?;
    write_u32(c, rf, 0)?;
    Ok(())
}

fn fields(s: &HostState, ty: i32) -> Result<&Fields, Status> {
    let http = s.http.as_ref();
    match ty {
        map::HTTP_REQUEST_HEADERS..=map::HTTP_RESPONSE_TRAILERS => {
            let h = http.ok_or(Status::NotFound)?;
            Ok(match ty {
                map::HTTP_REQUEST_HEADERS => &h.request_headers,
                map::HTTP_REQUEST_TRAILERS => &h.request_trailers,
                map::HTTP_RESPONSE_HEADERS => &h.response_headers,
                _ => &h.response_trailers,
            })
        }
        4..=map::HTTP_CALL_RESPONSE_TRAILERS => Err(Status::NotFound),
        _ => Err(Status::BadArgument),
    }
}

fn fields_mut(s: &mut HostState, ty: i32) -> Result<&mut Fields, Status> {
    match ty {
        map::HTTP_REQUEST_HEADERS..=map::HTTP_RESPONSE_TRAILERS => {
            let h = s.http.as_mut().ok_or(Status::NotFound)?;
            Ok(match ty {
                map::HTTP_REQUEST_HEADERS => &mut h.request_headers,
                map::HTTP_REQUEST_TRAILERS => &mut h.request_trailers,
                map::HTTP_RESPONSE_HEADERS => &mut h.response_headers,
                _ => &mut h.response_trailers,
            })
        }
        4..=map::HTTP_CALL_RESPONSE_TRAILERS => Err(Status::NotFound),
        _ => Err(Status::BadArgument),
    }
}

fn set_header_map_pairs(c: &mut Caller<'_>, ty: i32, p: i32, n: i32) -> Result<(), Fault> {
    fields_mut(c.data_mut(), ty)?;
    let pairs = Fields::deserialize(&read(c, p, n)?)?;
    *fields_mut(c.data_mut(), ty)? = pairs;
    Ok(())
}

async fn get_header_map_value(
    c: &mut Caller<'_>,
    ty: i32,
    k: i32,
    kn: i32,
    rp: i32,
    rn: i32,
) -> Result<(), Fault> {
    fields(c.data(), ty)?;
    let key = read_string(c, k, kn)?;
    if key.is_empty() {
        return Err(Status::BadArgument.into());
    }
    let value = fields(c.data(), ty)?
        .get(&key)
        .ok_or(Status::NotFound)?
        .to_owned();
    copy_out(c, value.as_bytes(), rp, rn).await
}

#[derive(Debug, Clone, Copy)]
enum Edit {
    Replace,
    Add,
    Remove,
}

fn edit_header(
    c: &mut Caller<'_>,
    op: Edit,
    ty: i32,
    k: i32,
    kn: i32,
    value: Option<(i32, i32)>,
) -> Result<(), Fault> {
    fields_mut(c.data_mut(), ty)?;
    let key = read_string(c, k, kn)?.to_ascii_lowercase();
    if key.is_empty() {
        return Err(Status::BadArgument.into());
    }
    let value = match value {
        Some((v, vn)) => read_string(c, v, vn)?,
        None => String::new(),
    };
    let map = fields_mut(c.data_mut(), ty)?;
    match op {
        Edit::Remove => map.remove(&key),
        Edit::Replace | Edit::Add => {
            if matches!(op, Edit::Replace) {
                map.remove(&key);
            }
            if !map.has_room(&key, &value) {
                return Err(Status::BadArgument.into());
            }
            map.add(key, value);
        }
    }
    Ok(())
}

fn send_local_response(
    c: &mut Caller<'_>,
    code: i32,
    details: (i32, i32),
    body: (i32, i32),
    headers: (i32, i32),
) -> Result<(), Fault> {
    if c.data().http.is_none() {
        return Err(Status::NotFound.into());
    }
    let status = u16::try_from(code)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or(Status::BadArgument)?;
    read(c, details.0, details.1)?;
    let body = read(c, body.0, body.1)?;
    let headers = Fields::deserialize(&read(c, headers.0, headers.1)?)?;
    if body.len() > c.data().shared.max_buffer {
        return Err(Status::BadArgument.into());
    }
    if let Some(http) = c.data_mut().http.as_mut() {
        http.local_response = Some(LocalResponse {
            status,
            body,
            headers,
        });
    }
    Ok(())
}

async fn get_shared_data(
    c: &mut Caller<'_>,
    k: i32,
    kn: i32,
    rp: i32,
    rn: i32,
    rc: i32,
) -> Result<(), Fault> {
    let key = read_string(c, k, kn)?;
    check(c, rc, 4)?;
    let found = {
        let data = c
            .data()
            .shared
            .data
            .lock()
            .map_err(|_| Status::InternalFailure)?;
        data.get(&key)
    };
    let (value, cas) = found.ok_or(Status::NotFound)?;
    copy_out(c, &value, rp, rn).await?;
    Ok(write_u32(c, rc, cas)?)
}

fn set_shared_data(
    c: &mut Caller<'_>,
    k: i32,
    kn: i32,
    v: i32,
    vn: i32,
    cas: i32,
) -> Result<(), Fault> {
    let key = read_string(c, k, kn)?;
    let value = read(c, v, vn)?;
    let mut data = c
        .data()
        .shared
        .data
        .lock()
        .map_err(|_| Status::InternalFailure)?;
    match data.set(key, value, cas as u32) {
        Status::Ok => Ok(()),
        s => Err(s.into()),
    }
}

/// Layotto's `proxy_get_state`: a missing key is an empty value, as in Layotto; a failure
/// of the store is InternalFailure, logged.
async fn get_state(
    c: &mut Caller<'_>,
    store: (i32, i32),
    key: (i32, i32),
    rp: i32,
    rn: i32,
) -> Result<(), Fault> {
    let store = read_string(c, store.0, store.1)?;
    let key = read_string(c, key.0, key.1)?;
    check(c, rp, 4)?;
    check(c, rn, 4)?;
    let shared = c.data().shared.clone();
    let value = match shared
        .env
        .state
        .get(&store, &key, Metadata::new(), Consistency::Unspecified)
        .await
    {
        Ok(found) => found.map(|r| r.data).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(function = %shared.id, store, error = %e, "proxy_get_state failed");
            return Err(Status::InternalFailure.into());
        }
    };
    copy_out(c, &value, rp, rn).await
}

/// Layotto's `proxy_invoke_service`: invoke `method` of `id` (a function or an app) with
/// `param` as a POST body, as this function's app id. A failed call or an answer other than
/// a success is InternalFailure, logged.
async fn invoke_service(
    c: &mut Caller<'_>,
    id: (i32, i32),
    method: (i32, i32),
    param: (i32, i32),
    rp: i32,
    rn: i32,
) -> Result<(), Fault> {
    let id = read_string(c, id.0, id.1)?;
    let method = read_string(c, method.0, method.1)?;
    let param = read(c, param.0, param.1)?;
    check(c, rp, 4)?;
    check(c, rn, 4)?;
    let shared = c.data().shared.clone();
    let req = InvokeRequest {
        method,
        verb: "POST".into(),
        data: param.into(),
        ..Default::default()
    };
    let answer = match shared.env.invoke(&id, req).await {
        Ok(resp) if resp.status.is_success() => resp.data,
        Ok(resp) => {
            tracing::warn!(function = %shared.id, callee = id, status = ?resp.status, "proxy_invoke_service: the callee did not succeed");
            return Err(Status::InternalFailure.into());
        }
        Err(e) => {
            tracing::warn!(function = %shared.id, callee = id, error = %e, "proxy_invoke_service failed");
            return Err(Status::InternalFailure.into());
        }
    };
    copy_out(c, &answer, rp, rn).await
}
