//! Pub/sub brokers.

mod common;
pub mod memory;
pub mod rabbitmq;
