//! The guest binaries the benchmark installs, and small statistics over per-function
//! samples.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plinth_bench::Spread;

/// Name of the custom section that makes each installed binary distinct.
const SECTION_NAME: &str = "plinth-bench";

/// `$CARGO_TARGET_DIR/tmp/plinth-functions/fixture-hello.wasm` (or under the workspace's
/// `target/`), where `scripts/build-functions.sh` leaves it.
pub(crate) fn default_fixture() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target
        .join("tmp")
        .join("plinth-functions")
        .join("fixture-hello.wasm")
}

/// Reads the fixture, saying how to build it when it is missing.
pub(crate) fn read_fixture(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading {}; build the guest functions with scripts/build-functions.sh (bench/run.sh functions does)",
            path.display()
        )
    })?;
    anyhow::ensure!(
        bytes.starts_with(b"\0asm"),
        "{} is not a WebAssembly binary",
        path.display()
    );
    Ok(bytes)
}

/// `base` with a custom section (id 0) appended whose payload is `tag`: a binary that
/// behaves exactly as `base` but has its own content hash, so the function host compiles
/// and caches it separately. Custom sections may follow any section, in core modules and
/// components alike.
pub(crate) fn distinct(base: &[u8], tag: &str) -> Vec<u8> {
    let mut content = Vec::with_capacity(SECTION_NAME.len() + tag.len() + 5);
    leb128(&mut content, SECTION_NAME.len());
    content.extend_from_slice(SECTION_NAME.as_bytes());
    content.extend_from_slice(tag.as_bytes());
    let mut out = Vec::with_capacity(base.len() + content.len() + 6);
    out.extend_from_slice(base);
    out.push(0);
    leb128(&mut out, content.len());
    out.extend_from_slice(&content);
    out
}

/// Unsigned LEB128, as section sizes and name lengths are encoded.
fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The `q` quantile of `values` by nearest rank (the smallest value with at least `q` of
/// the values at or below it), as the harness's histograms read percentiles.
pub(crate) fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Over runs: the spread of each run's `q` quantile of `values(run)`.
pub(crate) fn per_run<R>(runs: &[R], values: impl Fn(&R) -> &[f64], q: f64) -> Option<Spread> {
    Spread::of(runs.iter().filter_map(|r| quantile(values(r), q)))
}

/// Over runs: the spread of each run's total of `values(run)`.
pub(crate) fn per_run_total<R>(runs: &[R], values: impl Fn(&R) -> &[f64]) -> Option<Spread> {
    Spread::of(runs.iter().map(|r| values(r).iter().sum::<f64>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_encodes() {
        let mut out = Vec::new();
        leb128(&mut out, 0);
        leb128(&mut out, 127);
        leb128(&mut out, 128);
        leb128(&mut out, 624_485);
        assert_eq!(out, [0x00, 0x7f, 0x80, 0x01, 0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn distinct_appends_a_custom_section() {
        let base = b"\0asm\x01\0\0\0".to_vec();
        let a = distinct(&base, "a-1");
        let b = distinct(&base, "a-2");
        assert_ne!(a, b);
        assert!(a.starts_with(&base));
        // id 0, size, name length, name, payload.
        let section = &a[base.len()..];
        assert_eq!(section[0], 0);
        assert_eq!(section[1] as usize, 1 + SECTION_NAME.len() + 3);
        assert_eq!(section[2] as usize, SECTION_NAME.len());
        assert!(section.ends_with(b"plinth-bencha-1"));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(100.0));
        assert_eq!(quantile(&v, 0.99), Some(198.0));
        assert_eq!(quantile(&v, 1.0), Some(200.0));
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
