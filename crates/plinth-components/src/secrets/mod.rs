//! Secret stores.

pub mod env;
pub mod file;
