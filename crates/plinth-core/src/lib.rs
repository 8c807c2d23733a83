//! Plinth's core: the error type every layer shares, the component model (one trait per
//! building block, with capability flags), the resource/config model and the registry of
//! component factories keyed by type (`state.in-memory`, `lock.redis`, ...).
//!
//! Components know nothing of wire formats; building blocks (in `plinth-runtime`) hold the
//! semantics that do not depend on a backend; front doors (in `plinth-api`) translate.

pub mod component;
pub mod error;
pub mod metadata;
pub mod registry;
pub mod spec;

pub use error::{Error, ErrorKind, Result};
pub use metadata::Metadata;
pub use spec::ComponentSpec;
