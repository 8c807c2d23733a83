//! Layotto proxy-wasm modules.
