//! Pub/sub brokers.

mod common;
pub mod jetstream;
pub mod memory;
