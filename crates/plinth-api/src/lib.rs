//! Plinth's front doors. Each translates a wire protocol onto the building blocks in
//! `plinth-runtime` and back, and holds no building-block logic: Layotto's gRPC API
//! (`spec.proto.runtime.v1`), Dapr's gRPC API (`dapr.proto.runtime.v1`), Dapr's HTTP API
//! (`/v1.0`), the Layotto app callback Plinth calls, the admin listener (actuator,
//! metrics, function management) and the functions' HTTP ingress. Errors become gRPC and
//! HTTP statuses in one place, [`status`].

pub mod admin;
pub mod app;
pub mod auth;
pub mod config_subscriptions;
pub mod dapr;
pub mod dapr_http;
mod event_stream;
pub mod functions;
mod functions_grpc;
mod invoke;
pub mod layotto;
mod mesh;
pub mod server;
pub mod status;
mod telemetry;

pub use server::{ListenOptions, Server};

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not in the caller's future.
    let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
}
