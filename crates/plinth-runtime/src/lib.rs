//! Plinth's building blocks: one implementation per block (state, pub/sub, lock, sequencer,
//! configuration, file, secrets, bindings) that every front door calls, plus the component
//! host, configuration loading, resilience layers and the metrics registry.

pub mod app;
pub mod binding;
pub mod components;
pub mod config;
pub mod configuration;
pub mod file;
pub mod invoke;
pub mod keys;
pub mod lock;
pub mod metadata;
pub mod metrics;
pub mod pubsub;
pub mod resilience;
pub mod runtime;
pub mod secrets;
pub mod sequencer;
pub mod state;

pub use runtime::{Options, Runtime};
