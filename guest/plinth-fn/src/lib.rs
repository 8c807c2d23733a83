//! Write Plinth functions in Rust. (Being written.)
