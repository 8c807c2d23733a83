//! What both models' tests share.

use std::path::PathBuf;

/// Where scripts/build-functions.sh leaves the guest binaries.
pub(crate) fn functions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plinth-functions")
}

/// The binary of guest crate `name` (guest/components/NAME or guest/modules/NAME).
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = functions_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guest functions first with scripts/build-functions.sh (the test command does)",
            path.display()
        )
    })
}
