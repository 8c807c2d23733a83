//! Configuration stores.

pub mod memory;
pub mod redis;
