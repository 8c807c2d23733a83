//! The function host through its real interfaces: components and proxy-wasm modules built by
//! scripts/build-functions.sh, loaded into an engine over an in-memory runtime.

mod common;
mod component;
mod proxywasm;
mod wasi;
