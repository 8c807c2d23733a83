//! State stores.

pub mod memory;
pub mod redis;
