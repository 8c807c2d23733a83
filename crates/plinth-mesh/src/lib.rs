//! The mesh data plane: how one Plinth reaches another app's Plinth.
//!
//! - [`resolve`]: name resolution, app id → the mesh addresses of its sidecars (static,
//!   a shared SQLite file, DNS).
//!
//! Remote invocation goes sidecar to sidecar over HTTP/2 on the mesh listener.

pub mod resolve;
