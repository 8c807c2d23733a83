//! Pub/sub brokers.

pub mod memory;
