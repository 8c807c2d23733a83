//! Sequencers.

pub mod memory;
pub mod mysql;
pub mod postgres;
pub mod redis;
