//! The mesh data plane: how one Plinth reaches another app's Plinth.
//!
//! - [`resolve`]: name resolution, app id → the mesh addresses of its sidecars (static,
//!   a shared SQLite file, DNS).
//! - [`tls`]: mutual TLS between sidecars, SPIFFE identities in certificates, hot reload.
//! - [`acl`]: Dapr's `accessControl`, which callers may invoke which methods, enforced by the
//!   callee's sidecar.
//! - `testing` (feature `testing`): a CA and SPIFFE certificates written to files, for
//!   tests and benchmarks.
//!
//! Remote invocation goes sidecar to sidecar over HTTP/2 on the mesh listener.

pub mod acl;
pub mod resolve;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
