//! CloudEvents 1.0 envelopes with Dapr's fields and defaults.

use bytes::Bytes;
use plinth_core::{Error, Metadata, Result};
use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// The content type of a structured CloudEvent.
pub const CLOUDEVENT_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The event type Dapr stamps on published events.
pub const DEFAULT_TYPE: &str = "com.dapr.event.sent";
/// The data content type when the publisher names none.
pub const DEFAULT_DATA_CONTENT_TYPE: &str = "text/plain";
/// Publish metadata that sends the payload as is, without an envelope.
pub const RAW_PAYLOAD: &str = "rawPayload";

/// Whether a content type is JSON (`application/json`, `…+json`).
pub fn is_json(content_type: &str) -> bool {
    let base = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    base == "application/json" || base == "text/json" || base.ends_with("+json")
}

fn is_text(content_type: &str) -> bool {
    let base = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    base.starts_with("text/") || base == "application/xml" || base.ends_with("+xml")
}

/// What the publisher sent.
#[derive(Debug, Clone)]
pub struct Publication<'a> {
    /// The app publishing.
    pub app_id: &'a str,
    /// The pub/sub component.
    pub pubsub: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The payload.
    pub data: &'a [u8],
    /// Its content type, possibly empty.
    pub content_type: &'a str,
    /// Publish metadata; `cloudevent.id`, `cloudevent.source`, `cloudevent.type` override
    /// those fields, `traceparent` and `tracestate` are carried.
    pub metadata: &'a Metadata,
}

/// An envelope under construction. Values are kept as raw JSON so that the publisher's data
/// goes on the broker byte for byte: re-encoding through `serde_json::Value` would turn
/// integers beyond 64 bits and long decimals into floats, changing the data.
type Envelope = BTreeMap<String, Box<RawValue>>;

fn raw_string(value: &str) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| Error::internal(format!("encoding CloudEvent: {e}")))
}

/// Wrap a payload in a CloudEvent, or complete a CloudEvent the publisher sent. Returns the
/// bytes to put on the broker and their content type.
pub fn envelope(p: &Publication<'_>) -> Result<(Bytes, String)> {
    let mut event: Envelope = if p.content_type.starts_with(CLOUDEVENT_CONTENT_TYPE) {
        serde_json::from_slice(p.data).map_err(|_| {
            Error::invalid_argument(
                "data is declared application/cloudevents+json but is not a JSON object",
            )
        })?
    } else {
        let content_type = if p.content_type.is_empty() {
            DEFAULT_DATA_CONTENT_TYPE
        } else {
            p.content_type
        };
        let mut map = Envelope::new();
        map.insert("datacontenttype".into(), raw_string(content_type)?);
        if is_json(content_type) {
            let data: Box<RawValue> = serde_json::from_slice(p.data).map_err(|e| {
                Error::invalid_argument(format!(
                    "data is declared {content_type} but is not valid JSON: {e}"
                ))
            })?;
            map.insert("data".into(), data);
        } else if is_text(content_type) {
            let text = std::str::from_utf8(p.data).map_err(|_| {
                Error::invalid_argument(format!("data is declared {content_type} but is not UTF-8"))
            })?;
            map.insert("data".into(), raw_string(text)?);
        } else {
            use base64::Engine as _;
            map.insert(
                "data_base64".into(),
                raw_string(&base64::engine::general_purpose::STANDARD.encode(p.data))?,
            );
        }
        map
    };
    let md = |k: &str| p.metadata.get(k).filter(|v| !v.is_empty()).cloned();
    let mut defaults = vec![
        (
            "id",
            md("cloudevent.id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        ),
        (
            "source",
            md("cloudevent.source").unwrap_or_else(|| p.app_id.to_string()),
        ),
        (
            "type",
            md("cloudevent.type").unwrap_or_else(|| DEFAULT_TYPE.to_string()),
        ),
        ("specversion", "1.0".to_string()),
        (
            "time",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    ];
    if let Some(tp) = md("traceparent") {
        defaults.push(("traceparent", tp.clone()));
        defaults.push(("traceid", tp));
    }
    if let Some(ts) = md("tracestate") {
        defaults.push(("tracestate", ts));
    }
    for (key, value) in defaults {
        if !event.contains_key(key) {
            event.insert(key.to_string(), raw_string(&value)?);
        }
    }
    // Topic and pub/sub are facts of this publication, not the publisher's to choose.
    event.insert("topic".into(), raw_string(p.topic)?);
    event.insert("pubsubname".into(), raw_string(p.pubsub)?);
    let bytes = serde_json::to_vec(&event)
        .map_err(|e| Error::internal(format!("encoding CloudEvent: {e}")))?;
    Ok((Bytes::from(bytes), CLOUDEVENT_CONTENT_TYPE.to_string()))
}

/// An event as subscribers receive it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicEvent {
    /// CloudEvent id.
    pub id: String,
    /// CloudEvent source.
    pub source: String,
    /// CloudEvent type.
    pub event_type: String,
    /// CloudEvent spec version.
    pub spec_version: String,
    /// The content type of `data`.
    pub data_content_type: String,
    /// The payload, decoded from the envelope.
    pub data: Bytes,
    /// The topic.
    pub topic: String,
    /// The pub/sub component.
    pub pubsub_name: String,
    /// Broker metadata.
    pub metadata: Metadata,
    /// The whole envelope as it was on the broker (for HTTP apps and dead letters).
    pub raw: Bytes,
    /// The envelope's content type on the broker.
    pub raw_content_type: String,
}

/// Read a message from the broker into an event. A payload that is not a CloudEvent (raw
/// publication, or another producer) becomes an event with generated fields. JSON data is
/// handed over exactly as it was published.
pub fn parse(
    pubsub: &str,
    topic: &str,
    id: &str,
    raw: Bytes,
    content_type: &str,
    metadata: Metadata,
) -> TopicEvent {
    let parsed = serde_json::from_slice::<Envelope>(&raw)
        .ok()
        .filter(|map| map.contains_key("specversion"));
    let Some(map) = parsed else {
        return TopicEvent {
            id: if id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                id.to_string()
            },
            source: String::new(),
            event_type: DEFAULT_TYPE.into(),
            spec_version: "1.0".into(),
            data_content_type: if content_type.is_empty() {
                "application/octet-stream".into()
            } else {
                content_type.into()
            },
            data: raw.clone(),
            topic: topic.into(),
            pubsub_name: pubsub.into(),
            metadata,
            raw,
            raw_content_type: content_type.into(),
        };
    };
    let text = |k: &str| {
        map.get(k)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .unwrap_or_default()
    };
    let data_content_type = text("datacontenttype");
    let data = if map.contains_key("data_base64") {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(text("data_base64"))
            .map(Bytes::from)
            .unwrap_or_default()
    } else {
        match map.get("data").map(|v| v.get()) {
            None | Some("null") => Bytes::new(),
            Some(json) if json.starts_with('"') && !is_json(&data_content_type) => {
                Bytes::from(serde_json::from_str::<String>(json).unwrap_or_default())
            }
            Some(json) => Bytes::copy_from_slice(json.as_bytes()),
        }
    };
    TopicEvent {
        id: text("id"),
        source: text("source"),
        event_type: text("type"),
        spec_version: text("specversion"),
        data_content_type,
        data,
        topic: topic.into(),
        pubsub_name: pubsub.into(),
        metadata,
        raw,
        raw_content_type: CLOUDEVENT_CONTENT_TYPE.into(),
    }
}

/// The body an HTTP subscriber (an app, a function) receives for `event`: the envelope as it
/// was on the broker when it is a CloudEvent, else a CloudEvent built around the payload
/// (`data_base64`), so a subscriber always gets `application/cloudevents+json`.
pub fn http_envelope(event: &TopicEvent) -> Bytes {
    let is_envelope =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&event.raw)
            .map(|m| m.contains_key("specversion"))
            .unwrap_or(false);
    if is_envelope {
        return event.raw.clone();
    }
    use base64::Engine as _;
    let mut ce = serde_json::json!({
        "specversion": event.spec_version,
        "id": event.id,
        "source": event.source,
        "type": event.event_type,
        "datacontenttype": event.data_content_type,
        "topic": event.topic,
        "pubsubname": event.pubsub_name,
    });
    ce["data_base64"] =
        serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(&event.data));
    Bytes::from(serde_json::to_vec(&ce).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(data: &[u8], content_type: &str) -> serde_json::Value {
        let md = Metadata::new();
        let p = Publication {
            app_id: "app",
            pubsub: "ps",
            topic: "t",
            data,
            content_type,
            metadata: &md,
        };
        let (bytes, ct) = envelope(&p).expect("envelope");
        assert_eq!(ct, CLOUDEVENT_CONTENT_TYPE);
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn wraps_json_text_and_binary() {
        let ev = publish(br#"{"a":1}"#, "application/json");
        assert_eq!(ev["data"]["a"], 1);
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(ev["type"], DEFAULT_TYPE);
        assert_eq!(ev["source"], "app");
        assert_eq!(ev["topic"], "t");
        assert_eq!(ev["pubsubname"], "ps");
        let ev = publish(b"hello", "");
        assert_eq!(ev["data"], "hello");
        assert_eq!(ev["datacontenttype"], "text/plain");
        let ev = publish(&[0, 159, 146, 150], "application/octet-stream");
        assert!(ev.get("data_base64").is_some());
    }

    #[test]
    fn round_trips() {
        for (data, ct) in [
            (&br#"{"a":1}"#[..], "application/json"),
            (b"hello", "text/plain"),
            (&[0u8, 1, 2][..], "application/octet-stream"),
        ] {
            let md = Metadata::new();
            let p = Publication {
                app_id: "app",
                pubsub: "ps",
                topic: "t",
                data,
                content_type: ct,
                metadata: &md,
            };
            let (bytes, ct2) = envelope(&p).expect("envelope");
            let ev = parse("ps", "t", "", bytes, &ct2, Metadata::new());
            assert_eq!(&ev.data[..], data);
            assert_eq!(ev.data_content_type, ct);
        }
    }

    #[test]
    fn json_data_is_kept_byte_for_byte() {
        // Beyond 64 bits and beyond f64 precision: re-encoding would change both.
        let data = br#"{ "big": 123456789012345678901234567890, "pi": 3.14159265358979323846264338327950288, "z": 1, "a": 2 }"#;
        let md = Metadata::new();
        let p = Publication {
            app_id: "app",
            pubsub: "ps",
            topic: "t",
            data,
            content_type: "application/json",
            metadata: &md,
        };
        let (bytes, ct) = envelope(&p).expect("envelope");
        let ev = parse("ps", "t", "", bytes, &ct, Metadata::new());
        assert_eq!(
            std::str::from_utf8(&ev.data).ok(),
            std::str::from_utf8(data).ok()
        );
    }

    #[test]
    fn completes_a_cloudevent_sent_by_the_publisher() {
        let md = Metadata::new();
        let data = br#"{"id":"mine","specversion":"1.0","type":"custom","source":"me","datacontenttype":"application/json","data":{"n":1}}"#;
        let p = Publication {
            app_id: "app",
            pubsub: "ps",
            topic: "t",
            data,
            content_type: CLOUDEVENT_CONTENT_TYPE,
            metadata: &md,
        };
        let (bytes, ct) = envelope(&p).expect("envelope");
        let ev = parse("ps", "t", "", bytes, &ct, Metadata::new());
        assert_eq!(
            (ev.id.as_str(), ev.event_type.as_str(), ev.source.as_str()),
            ("mine", "custom", "me")
        );
        assert_eq!(&ev.data[..], br#"{"n":1}"#);
        let not_an_object = Publication {
            data: b"[1,2]",
            ..p
        };
        assert!(envelope(&not_an_object).is_err());
    }

    #[test]
    fn rejects_bad_json() {
        let md = Metadata::new();
        let p = Publication {
            app_id: "a",
            pubsub: "p",
            topic: "t",
            data: b"{nope",
            content_type: "application/json",
            metadata: &md,
        };
        assert!(envelope(&p).is_err());
    }
}
