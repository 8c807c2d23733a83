//! Bindings: `bindings.http` (output) and `bindings.cron` (input, with a `delete` output
//! operation).

pub mod cron;
pub mod http;
