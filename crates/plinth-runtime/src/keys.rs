//! Key prefixing per store (`keyPrefix`), shared by state, lock and sequencer.
//!
//! - `appid` (default): `appId||key`, Dapr's layout;
//! - `name`: `storeName||key`;
//! - `none`: the key as given, Layotto's default;
//! - anything else: that literal, `literal||key`.

use plinth_core::{ComponentSpec, Error, Result};

/// The separator Dapr puts between prefix and key.
pub const SEPARATOR: &str = "||";

/// The metadata key selecting the prefix strategy.
pub const KEY_PREFIX: &str = "keyPrefix";

/// The prefix strategy's name part: the app id, the store name, a literal, or `None` for
/// `none` (and for an empty app id).
fn strategy<'a>(spec: &'a ComponentSpec, app_id: &'a str) -> Option<&'a str> {
    let prefix = match spec.get(KEY_PREFIX).unwrap_or("appid") {
        p if p.eq_ignore_ascii_case("appid") => app_id,
        p if p.eq_ignore_ascii_case("name") => spec.name.as_str(),
        p if p.eq_ignore_ascii_case("none") => return None,
        literal => literal,
    };
    (!prefix.is_empty()).then_some(prefix)
}

/// Prefix `key` as the store's `keyPrefix` says; `app_id` is the caller's app id.
pub fn prefixed(spec: &ComponentSpec, app_id: &str, key: &str) -> Result<String> {
    validate_key(key)?;
    let Some(prefix) = strategy(spec, app_id) else {
        return Ok(key.to_string());
    };
    let mut out = String::with_capacity(prefix.len() + SEPARATOR.len() + key.len());
    out.push_str(prefix);
    out.push_str(SEPARATOR);
    out.push_str(key);
    Ok(out)
}

/// What every prefixed key of this app in this store starts with (`app||`); empty under
/// `none`, where every key is the app's.
pub fn prefix(spec: &ComponentSpec, app_id: &str) -> String {
    strategy(spec, app_id)
        .map(|p| format!("{p}{SEPARATOR}"))
        .unwrap_or_default()
}

/// Strip the prefix added by [`prefixed`], for keys a store reports back.
pub fn unprefixed<'k>(spec: &ComponentSpec, app_id: &str, key: &'k str) -> &'k str {
    let Some(prefix) = strategy(spec, app_id) else {
        return key;
    };
    key.strip_prefix(prefix)
        .and_then(|k| k.strip_prefix(SEPARATOR))
        .unwrap_or(key)
}

/// Keys must be non-empty; under a prefixing strategy they may not contain the separator,
/// or one app could address another's keys.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument("key is empty"));
    }
    if key.contains(SEPARATOR) {
        return Err(Error::invalid_argument(format!(
            "key {key:?} contains the reserved separator \"||\""
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies() {
        let spec =
            |p: &str| ComponentSpec::new("store", "state.in-memory").with_metadata(KEY_PREFIX, p);
        let plain = ComponentSpec::new("store", "state.in-memory");
        assert_eq!(prefixed(&plain, "app", "k").ok().as_deref(), Some("app||k"));
        assert_eq!(
            prefixed(&spec("name"), "app", "k").ok().as_deref(),
            Some("store||k")
        );
        assert_eq!(
            prefixed(&spec("none"), "app", "k").ok().as_deref(),
            Some("k")
        );
        assert_eq!(
            prefixed(&spec("team"), "app", "k").ok().as_deref(),
            Some("team||k")
        );
        assert_eq!(unprefixed(&plain, "app", "app||k"), "k");
        assert_eq!(prefix(&plain, "app"), "app||");
        assert_eq!(prefix(&spec("name"), "app"), "store||");
        assert_eq!(prefix(&spec("none"), "app"), "");
        assert_eq!(prefix(&spec("team"), "app"), "team||");
        assert!(prefixed(&plain, "app", "").is_err());
        assert!(prefixed(&plain, "app", "other||k").is_err());
    }
}
