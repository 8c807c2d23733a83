//! The callbacks a module exports, checked once at load (names, types, ABI version) and
//! called in Layotto's order.

use wasmtime::{AsContextMut, ExternType, FuncType, Instance, Module, ValType};

/// The ABI version a module declares with a `proxy_abi_version_*` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AbiVersion {
    /// No marker: Layotto's host does not look for one and speaks 0.1.0.
    Unmarked,
    V0_1_0,
    V0_2_0,
    V0_2_1,
}

/// How the module wants to be initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Init {
    /// A WASI reactor: `_initialize`, then `main(0, 0)` when exported too.
    Initialize { main: bool },
    /// `_start`, as Layotto calls it.
    Start,
    /// Neither.
    None,
}

/// What the module exports, checked.
#[derive(Debug, Clone)]
pub(crate) struct Exports {
    pub(crate) abi: AbiVersion,
    pub(crate) init: Init,
    /// `proxy_on_memory_allocate`, or `malloc` in its absence.
    pub(crate) allocator: &'static str,
    /// Whether `proxy_on_request_headers` takes `end_of_stream` (ABI 0.2.x and Layotto's
    /// own modules) or not (ABI 0.1.0).
    pub(crate) headers_eos: bool,
    pub(crate) get_id: bool,
    pub(crate) vm_start: bool,
    pub(crate) configure: bool,
    pub(crate) request_headers: bool,
    pub(crate) request_body: bool,
    pub(crate) done: bool,
    pub(crate) delete: bool,
}

fn show(f: &FuncType) -> String {
    let list = |types: &mut dyn Iterator<Item = ValType>| {
        types.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    };
    format!(
        "({}) -> ({})",
        list(&mut f.params()),
        list(&mut f.results())
    )
}

fn matches(f: &FuncType, params: usize, result: bool) -> bool {
    f.params().len() == params
        && f.params().all(|t| matches!(t, ValType::I32))
        && if result {
            f.results().len() == 1 && f.results().all(|t| matches!(t, ValType::I32))
        } else {
            f.results().len() == 0
        }
}

impl Exports {
    /// Check the exports of `module`: the required ones are present, every callback this host
    /// calls has the ABI's type, and the declared ABI version is one this host speaks.
    pub(crate) fn inspect(module: &Module) -> Result<Self, String> {
        let func = |name: &str| match module.get_export(name) {
            Some(ExternType::Func(f)) => Ok(Some(f)),
            Some(_) => Err(format!("its export {name} is not a function")),
            None => Ok(None),
        };
        // Checks `name`'s type when exported; whether it is.
        let check = |name: &str, params: usize, result: bool| -> Result<bool, String> {
            match func(name)? {
                None => Ok(false),
                Some(f) if matches(&f, params, result) => Ok(true),
                Some(f) => Err(format!(
                    "its export {name} has type {}, where the proxy-wasm ABI has ({}) -> ({})",
                    show(&f),
                    vec!["i32"; params].join(", "),
                    if result { "i32" } else { "" },
                )),
            }
        };

        let mut versions = Vec::new();
        for e in module.exports() {
            if let Some(v) = e.name().strip_prefix("proxy_abi_version_") {
                versions.push(match v {
                    "0_1_0" => AbiVersion::V0_1_0,
                    "0_2_0" => AbiVersion::V0_2_0,
                    "0_2_1" => AbiVersion::V0_2_1,
                    other => {
                        return Err(format!(
                            "it declares proxy-wasm ABI {}, where this host speaks 0.1.0 and 0.2.x",
                            other.replace('_', ".")
                        ));
                    }
                });
            }
        }
        let abi = match versions.as_slice() {
            [] => AbiVersion::Unmarked,
            [v] => *v,
            _ => return Err("it declares more than one proxy-wasm ABI version".into()),
        };

        match module.get_export("memory") {
            Some(ExternType::Memory(m)) if !m.is_64() => {}
            Some(ExternType::Memory(_)) => {
                return Err("its memory is 64-bit; proxy-wasm modules are wasm32".into());
            }
            _ => return Err("it exports no memory named \"memory\"".into()),
        }
        if !check("proxy_on_context_create", 2, false)? {
            return Err("it does not export proxy_on_context_create".into());
        }
        let allocator = if check("proxy_on_memory_allocate", 1, true)? {
            "proxy_on_memory_allocate"
        } else if check("malloc", 1, true)? {
            "malloc"
        } else {
            return Err(
                "it exports no allocator (proxy_on_memory_allocate or malloc) for the host to hand it data"
                    .into(),
            );
        };
        let request_headers = match func("proxy_on_request_headers")? {
            None => None,
            Some(f) if matches(&f, 3, true) => Some(true),
            Some(f) if matches(&f, 2, true) => Some(false),
            Some(f) => {
                return Err(format!(
                    "its export proxy_on_request_headers has type {}, where the proxy-wasm ABI has (i32, i32) -> (i32) in 0.1.0 and (i32, i32, i32) -> (i32) in 0.2.x",
                    show(&f)
                ));
            }
        };
        let request_body = check("proxy_on_request_body", 3, true)?;
        if request_headers.is_none() && !request_body {
            return Err(
                "it exports neither proxy_on_request_headers nor proxy_on_request_body, so it cannot serve a request"
                    .into(),
            );
        }
        let init = if check("_initialize", 0, false)? {
            Init::Initialize {
                main: check("main", 2, true)?,
            }
        } else if check("_start", 0, false)? {
            Init::Start
        } else {
            Init::None
        };
        Ok(Self {
            abi,
            init,
            allocator,
            headers_eos: request_headers.unwrap_or(true),
            get_id: check("proxy_get_id", 0, false)?,
            vm_start: check("proxy_on_vm_start", 2, true)?,
            configure: check("proxy_on_configure", 2, true)?,
            request_headers: request_headers.is_some(),
            request_body,
            done: check("proxy_on_done", 1, true)?,
            delete: check("proxy_on_delete", 1, false)?,
        })
    }
}

/// A call into the guest failed.
#[derive(Debug)]
pub(crate) struct CallError {
    /// The export called.
    pub(crate) export: &'static str,
    pub(crate) error: wasmtime::Error,
}

/// Call export `name` of `instance`, whose type [`Exports::inspect`] checked.
pub(crate) async fn call<P, R>(
    mut store: impl AsContextMut<Data: Send>,
    instance: &Instance,
    name: &'static str,
    params: P,
) -> Result<R, CallError>
where
    P: wasmtime::WasmParams + Sync,
    R: wasmtime::WasmResults + Sync,
{
    let fail = |error| CallError {
        export: name,
        error,
    };
    let f = instance
        .get_typed_func::<P, R>(&mut store, name)
        .map_err(fail)?;
    f.call_async(&mut store, params).await.map_err(fail)
}
