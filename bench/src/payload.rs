//! What the HTTP benchmarks send.

use anyhow::ensure;
use bytes::Bytes;

/// A JSON document of exactly `size` bytes: the value saved, published and
/// echoed.
pub fn json_value(size: usize) -> anyhow::Result<Bytes> {
    const HEAD: &str = r#"{"id":"bench","seq":42,"data":""#;
    const TAIL: &str = r#""}"#;
    let min = HEAD.len() + TAIL.len();
    ensure!(size >= min, "--value-size must be at least {min}");
    let mut v = String::with_capacity(size);
    v.push_str(HEAD);
    v.extend((0..size - min).map(|i| char::from(b'a' + (i % 26) as u8)));
    v.push_str(TAIL);
    Ok(Bytes::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_value_has_the_size_asked() {
        for size in [34, 100, 1024] {
            let v = json_value(size).unwrap();
            assert_eq!(v.len(), size);
            assert!(serde_json::from_slice::<serde_json::Value>(&v).is_ok());
        }
        assert!(json_value(10).is_err());
    }
}
