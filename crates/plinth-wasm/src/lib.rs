//! Plinth's function host: many WebAssembly functions in one process, each in its own
//! sandbox, reaching infrastructure only through the Runtime ABI.
//!
//! - [`engine`]: the one wasmtime `Engine` (pooling allocator, copy-on-write memories), the
//!   epoch ticker and the on-disk cache of precompiled code.
//! - [`limits`]: per-call memory caps and execution-time budgets.
//! - [`component`]: WASI 0.2 components exporting `wasi:http/incoming-handler` and importing
//!   `plinth:runtime` (`wit/`), the primary model.
//! - [`proxywasm`]: Layotto's proxy-wasm ABI for core modules, so Layotto functions run
//!   unchanged.
//! - [`function`]: one loaded function of either kind, with its limits.
//! - [`registry`]: the installed functions, install/update/uninstall, and routing of
//!   invocations to them.
//! - [`watch`]: a directory of `.wasm` files kept installed.

pub mod component;
pub mod config;
pub mod engine;
pub mod env;
pub mod function;
pub mod limits;
pub mod proxywasm;
pub mod registry;
pub mod watch;

pub use config::{FunctionConfig, Grants, Limits};
pub use engine::{EngineOptions, WasmEngine};
pub use env::FunctionEnv;
pub use function::{Function, Kind};
pub use registry::FunctionRegistry;
