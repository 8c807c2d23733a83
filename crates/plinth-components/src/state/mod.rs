//! State stores.

pub mod memory;
