//! Configuration stores.

pub mod memory;
