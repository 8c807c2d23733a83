//! Lock stores.

pub mod memory;
