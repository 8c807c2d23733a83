//! Output bindings.

pub mod http;
