//! Layotto gRPC API tests: the real `plinth` binary over TCP with a generated client.

#[path = "../common/mod.rs"]
mod common;

mod state;
