//! Pub/sub brokers.

mod common;
pub mod memory;
pub mod redis;
pub mod mqtt3;
