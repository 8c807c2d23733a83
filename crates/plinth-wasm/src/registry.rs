//! The installed functions. (Being written.)

/// The installed functions.
#[derive(Debug, Default)]
pub struct FunctionRegistry {}
