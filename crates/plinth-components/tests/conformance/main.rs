//! The component-level conformance suites: one module per building block, each running the
//! same cases against every implementation of this crate, in-memory included.
//!
//! Backends are this machine's real services, reached over real connections; a missing
//! backend fails its cases loudly (see `common` for the addresses and their overrides).
//! Every case works under a fresh uuid prefix and removes what it created, so runs can share
//! the services.

mod common;

mod configuration;
mod file;
mod lock;
mod pubsub;
mod sequencer;
mod state;
