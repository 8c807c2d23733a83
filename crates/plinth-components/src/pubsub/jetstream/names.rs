//! Names on the broker and on the wire: topics as subjects, the streams and consumers
//! Plinth derives from them, and how metadata travels in message headers.

use plinth_core::{Error, Metadata, Result};

/// The longest topic taken, in bytes: a subject travels in every protocol line.
const MAX_TOPIC_BYTES: usize = 1024;
/// The most characters of a topic or group kept in a derived name; the hash keeps
/// truncated names distinct.
const NAME_PART_CHARS: usize = 96;

/// The header holding the content type.
pub(crate) const CONTENT_TYPE: &str = "Content-Type";
/// Each publish metadata entry travels as a header `Plinth-Metadata-<key>`.
pub(crate) const METADATA_PREFIX: &str = "Plinth-Metadata-";
/// JetStream's de-duplication header.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// Refuse a topic that is not a literal NATS subject: tokens separated by `.`, none empty,
/// no whitespace or control characters, no wildcards (`*`, `>`), not in the `$` namespace
/// the server reserves for its own APIs.
pub(crate) fn check_topic(topic: &str) -> Result<()> {
    let problem = if topic.len() > MAX_TOPIC_BYTES {
        Some(format!("is longer than {MAX_TOPIC_BYTES} bytes"))
    } else if topic.starts_with('$') {
        Some("starts with '$', which NATS reserves for its own APIs".to_owned())
    } else if topic.split('.').any(str::is_empty) {
        Some("has an empty token (a leading, trailing or doubled '.')".to_owned())
    } else if topic.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace".to_owned())
    } else if topic.contains(['*', '>']) {
        Some("contains a wildcard ('*' or '>')".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::invalid_argument(format!(
            "topic {topic:?} is not a valid NATS subject: it {problem}"
        ))),
    }
}

/// Whether the subject filter `pattern` (with `*` and `>` wildcards) matches the literal
/// subject `subject`.
pub(crate) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// FNV-1a, 64 bits: stable across processes, platforms and Rust versions, unlike std's
/// hasher, so every Plinth derives the same names.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A NUL byte between parts: ("ab", "c") and ("a", "bc") differ.
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for byte in part.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The first 8 hex digits of the FNV-1a hash of `parts` (joined with NUL bytes).
fn short_hash(parts: &[&str]) -> String {
    format!("{:08x}", fnv1a(parts) >> 32)
}

/// Keep ASCII letters, digits, `-` and `_`; replace anything else with `_`; keep at most
/// [`NAME_PART_CHARS`] characters.
fn sanitize(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(NAME_PART_CHARS)
        .collect()
}

/// The name of the stream Plinth creates for `topic` when no stream captures it:
/// `plinth-<topic>-<hash>`, where `<topic>` keeps letters, digits, `-` and `_` (anything
/// else becomes `_`, at most 96 characters) and `<hash>` is the first 8 hex digits of the
/// FNV-1a 64-bit hash of the topic, so distinct topics never share a stream.
pub fn stream_name(topic: &str) -> String {
    format!("plinth-{}-{}", sanitize(topic), short_hash(&[topic]))
}

/// The name of the durable consumer of `base` (the `durableName`, or else the consumer
/// group) on `topic`: `<base>-<topic>-<hash>`, both parts sanitized as in [`stream_name`],
/// the hash taken over both.
pub fn consumer_name(base: &str, topic: &str) -> String {
    format!(
        "{}-{}-{}",
        sanitize(base),
        sanitize(topic),
        short_hash(&[base, topic])
    )
}

fn hex(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n & 0xf)])
}

/// Escape every byte `keep` refuses, and `%`, as `%XX`.
fn percent_encode(raw: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c != '%' && keep(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push('%');
                out.push(hex(byte >> 4));
                out.push(hex(byte));
            }
        }
    }
    out
}

/// Undo `%XX` escapes; a malformed escape is kept as it is.
pub(crate) fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%'
            && let Some(value) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(byte);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A header name for a metadata key: HTTP token characters kept, anything else escaped.
pub(crate) fn metadata_header(key: &str) -> String {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$&'*+-.^_`|~".contains(c);
    format!("{METADATA_PREFIX}{}", percent_encode(key, token))
}

/// A header value: line breaks and other control characters escaped (a header value
/// cannot hold them).
pub(crate) fn header_value(value: &str) -> String {
    percent_encode(value, |c| !c.is_control())
}

/// The metadata carried in `headers` under [`METADATA_PREFIX`].
pub(crate) fn metadata_from_headers(headers: &async_nats::HeaderMap) -> Metadata {
    let mut metadata = Metadata::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if let Some(key) = name.strip_prefix(METADATA_PREFIX)
            && let Some(value) = values.first()
        {
            metadata.insert(percent_decode(key), percent_decode(value.as_str()));
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_must_be_literal_subjects() {
        for ok in ["orders", "orders.new", "a-b_c.D9", "ünïcode.topic"] {
            assert!(check_topic(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a b", "a\tb", "a.*", "a.>", "a*b", ".a", "a.", "a..b", "$JS.API", "a\nb",
        ] {
            let err = check_topic(bad).expect_err(bad);
            assert_eq!(err.kind(), plinth_core::ErrorKind::InvalidArgument);
            assert!(err.message().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(check_topic(&"a".repeat(MAX_TOPIC_BYTES + 1)).is_err());
    }

    #[test]
    fn subject_patterns() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(subject_matches(">", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
    }

    #[test]
    fn derived_names_are_valid_stable_and_distinct() {
        let a = stream_name("orders.new");
        assert!(a.starts_with("plinth-orders_new-"), "{a}");
        assert_eq!(a, stream_name("orders.new"), "deterministic");
        // Sanitizing maps both to orders_new; the hash keeps them apart.
        assert_ne!(a, stream_name("orders_new"));
        let long = "x".repeat(300);
        assert!(stream_name(&long).len() < 120);
        assert_ne!(stream_name(&long), stream_name(&format!("{long}y")));
        for name in [
            a,
            stream_name("a b*c>d/e\\f"),
            consumer_name("my.app", "orders.new"),
        ] {
            assert!(super::super::config::is_valid_name(&name), "{name}");
        }
        assert_ne!(consumer_name("a.b", "t"), consumer_name("a_b", "t"));
        assert_ne!(consumer_name("a", "b.t"), consumer_name("a.b", "t"));
        // The documented layout (docs/components/pubsub.jetstream.md).
        assert_eq!(stream_name("orders.new"), "plinth-orders_new-e6369d83");
    }

    #[test]
    fn metadata_headers_round_trip() {
        let mut headers = async_nats::HeaderMap::new();
        let entries = [
            ("seq", "7"),
            ("with space: and %", "line\r\nbreak %41"),
            ("ünï", "ünï"),
        ];
        for (key, value) in entries {
            headers.insert(metadata_header(key).as_str(), header_value(value).as_str());
        }
        headers.insert(CONTENT_TYPE, "text/plain");
        let back = metadata_from_headers(&headers);
        assert_eq!(back.len(), 3);
        for (key, value) in entries {
            assert_eq!(back.get(key).map(String::as_str), Some(value), "{key}");
        }
    }
}
