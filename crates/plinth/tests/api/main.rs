//! Layotto gRPC API tests: the real `plinth` binary over TCP with a generated client.

mod backend;
#[path = "../common/mod.rs"]
mod common;
mod upstream;

mod admin;
mod binding;
mod configuration;
mod cross_process;
mod dapr;
mod dapr_http;
mod errors;
mod faults;
mod file;
mod functions;
mod lifecycle;
mod lock;
mod mesh;
mod mesh_streaming;
mod ops;
mod parity;
mod query;
mod resiliency;
mod scopes;
mod secrets;
mod sequencer;
mod state;
mod token;
