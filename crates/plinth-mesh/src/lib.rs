//! The mesh data plane: how one Plinth reaches another app's Plinth, and HTTP services.
//!
//! - [`resolve`]: name resolution, app id → the mesh addresses of its sidecars (static,
//!   a shared SQLite file, DNS).
//! - [`Mesh`] (the caller's side): traffic policy per target (routes, load balancing,
//!   health checks and outlier ejection, deadlines, retries, circuit breaking, rate limits,
//!   fault injection) around one [`channel`] per protocol.
//! - [`server`] (the callee's side): the mesh listener, with mTLS identities ([`tls`]) and
//!   Dapr's access control ([`acl`]).
//! - [`wire`]: the protocol between sidecars, one HTTP/2 request per call.
//! - `testing` (feature `testing`): a CA and SPIFFE certificates written to files, for
//!   tests and benchmarks.

pub mod acl;
mod balance;
mod channel;
pub mod client;
pub mod config;
mod health;
mod io;
mod mesh;
mod metrics;
mod replay;
pub mod resolve;
pub mod server;
mod setup;
mod target;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod wire;

pub use channel::HttpEndpoint;
pub use mesh::{Mesh, MeshOptions, RPC_REQUEST_TIMEOUT};
pub use setup::{DEFAULT_TRUST_DOMAIN, MeshSetup};
