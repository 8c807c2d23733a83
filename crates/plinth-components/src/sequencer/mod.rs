//! Sequencers.

pub mod memory;
pub mod mysql;
pub mod redis;
