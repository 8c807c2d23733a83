//! Plinth's benchmark harness
