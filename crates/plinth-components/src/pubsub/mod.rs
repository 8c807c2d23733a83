//! Pub/sub brokers.

mod common;
pub mod memory;
pub mod mqtt3;
pub mod rabbitmq;
pub mod redis;
