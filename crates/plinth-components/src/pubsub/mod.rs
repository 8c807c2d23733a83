//! Pub/sub brokers.

mod common;
pub mod jetstream;
pub mod memory;
pub mod mqtt3;
pub mod rabbitmq;
pub mod redis;
#[cfg(test)]
pub(crate) mod testing;
