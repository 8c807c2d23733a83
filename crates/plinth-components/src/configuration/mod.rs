//! Configuration stores.

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
pub mod postgres;
pub mod redis;
