//! Configuration stores.

pub mod memory;
pub mod postgres;
pub mod redis;
