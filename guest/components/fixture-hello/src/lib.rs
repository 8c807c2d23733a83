//! The smallest function: answers `hello`. The baseline of the function benchmarks.

fn hello(_: plinth_fn::Request) -> &'static str {
    "hello"
}

plinth_fn::http_handler!(hello);
