//! File stores.

pub mod local;
