//! The mesh data plane: how one Plinth reaches another app's Plinth.
//!
//! - [`resolve`]: name resolution, app id → the mesh addresses of its sidecars (static,
//!   a shared SQLite file, DNS).
//! - [`tls`]: mutual TLS between sidecars, SPIFFE identities in certificates, hot reload.
//! - `testing` (feature `testing`): a CA and SPIFFE certificates written to files, for
//!   tests and benchmarks.
//!
//! Remote invocation goes sidecar to sidecar over HTTP/2 on the mesh listener.

pub mod resolve;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
