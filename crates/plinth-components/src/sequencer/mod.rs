//! Sequencers.

pub mod memory;
