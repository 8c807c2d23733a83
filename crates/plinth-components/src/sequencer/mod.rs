//! Sequencers.

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
pub mod mysql;
pub mod postgres;
pub mod redis;
