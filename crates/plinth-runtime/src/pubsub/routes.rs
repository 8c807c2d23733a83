//! Content-based routing of events to the app's paths, with rules written in CEL (the
//! Common Expression Language, as Dapr's `routes.rules[].match`). Expressions see one
//! variable, `event`: the CloudEvent's attributes (`id`, `source`, `type`, `specversion`,
//! `datacontenttype`, `subject`, `time`, `topic`, `pubsubname`, extensions) and `data`,
//! parsed when it is JSON. The `cel` crate parses and evaluates them; CEL is a real
//! language with its own grammar and typing, not something to hand-write.

use std::collections::HashMap;
use std::sync::Arc;

use plinth_core::{Error, Result};

use super::TopicEvent;
use crate::app::RouteRule;

/// A compiled rule.
struct Rule {
    source: String,
    program: Option<cel::Program>,
    path: String,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("match", &self.source)
            .field("path", &self.path)
            .finish()
    }
}

/// A subscription's routes: rules in order, then the default path.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    rules: Arc<Vec<Rule>>,
    default: String,
}

impl Routes {
    /// Compile `rules`; a rule that does not parse is an error naming it.
    pub fn compile(rules: &[RouteRule], default: &str) -> Result<Self> {
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let source = rule.matches.trim();
            let program = if source.is_empty() {
                None
            } else {
                Some(cel::Program::compile(source).map_err(|e| {
                    Error::invalid_argument(format!(
                        "route rule {source:?} (path {:?}) is not valid CEL: {e}",
                        rule.path
                    ))
                })?)
            };
            compiled.push(Rule {
                source: source.to_string(),
                program,
                path: rule.path.clone(),
            });
        }
        Ok(Self {
            rules: Arc::new(compiled),
            default: default.to_string(),
        })
    }

    /// Whether there are rules to evaluate (otherwise every event takes the default path).
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The path for `event`: the first matching rule's, else the default. `None` when
    /// nothing matches and there is no default. A rule that fails to evaluate (a missing
    /// field, a type mismatch) does not match.
    pub fn select(&self, event: &TopicEvent) -> Option<String> {
        if self.rules.is_empty() {
            return Some(self.default.clone());
        }
        let mut context = cel::Context::default();
        if let Err(err) = context.add_variable("event", event_value(event)) {
            tracing::warn!(topic = %event.topic, id = %event.id, error = %err, "the event cannot be routed; no rule matches");
            return (!self.default.is_empty()).then(|| self.default.clone());
        }
        for rule in self.rules.iter() {
            let matched = match &rule.program {
                None => true,
                Some(p) => match p.execute(&context) {
                    Ok(cel::Value::Bool(b)) => b,
                    Ok(other) => {
                        tracing::debug!(rule = %rule.source, value = ?other, "route rule is not boolean; not matched");
                        false
                    }
                    Err(err) => {
                        tracing::debug!(rule = %rule.source, error = %err, "route rule failed; not matched");
                        false
                    }
                },
            };
            if matched {
                return Some(rule.path.clone());
            }
        }
        (!self.default.is_empty()).then(|| self.default.clone())
    }
}

/// The `event` variable: the envelope's attributes with `data` decoded.
fn event_value(event: &TopicEvent) -> cel::Value {
    let mut map: HashMap<String, cel::Value> = HashMap::new();
    if let Ok(serde_json::Value::Object(envelope)) =
        serde_json::from_slice::<serde_json::Value>(&event.raw)
        && envelope.contains_key("specversion")
    {
        for (k, v) in envelope {
            map.insert(k, json_value(v));
        }
    }
    let mut put = |k: &str, v: &str| {
        map.entry(k.to_string())
            .or_insert_with(|| cel::Value::String(Arc::new(v.to_string())));
    };
    put("id", &event.id);
    put("source", &event.source);
    put("type", &event.event_type);
    put("specversion", &event.spec_version);
    put("datacontenttype", &event.data_content_type);
    put("topic", &event.topic);
    put("pubsubname", &event.pubsub_name);
    if !map.contains_key("data") {
        let data = serde_json::from_slice::<serde_json::Value>(&event.data)
            .map(json_value)
            .unwrap_or_else(|_| match std::str::from_utf8(&event.data) {
                Ok(s) => cel::Value::String(Arc::new(s.to_string())),
                Err(_) => cel::Value::Bytes(Arc::new(event.data.to_vec())),
            });
        map.insert("data".into(), data);
    }
    cel::Value::from(map)
}

/// JSON to CEL, with integers as `int` (CEL's literal type) when they fit.
fn json_value(v: serde_json::Value) -> cel::Value {
    match v {
        serde_json::Value::Null => cel::Value::Null,
        serde_json::Value::Bool(b) => cel::Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => match n.as_u64() {
                Some(u) => cel::Value::UInt(u),
                None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        serde_json::Value::String(s) => cel::Value::String(Arc::new(s)),
        serde_json::Value::Array(items) => {
            cel::Value::List(Arc::new(items.into_iter().map(json_value).collect()))
        }
        serde_json::Value::Object(obj) => {
            let map: HashMap<String, cel::Value> =
                obj.into_iter().map(|(k, v)| (k, json_value(v))).collect();
            cel::Value::from(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::pubsub::cloudevent;

    fn event(envelope: &str) -> TopicEvent {
        cloudevent::parse(
            "pubsub",
            "orders",
            "1",
            Bytes::from(envelope.to_string()),
            "application/cloudevents+json",
            Default::default(),
        )
    }

    fn rule(m: &str, p: &str) -> RouteRule {
        RouteRule {
            matches: m.into(),
            path: p.into(),
        }
    }

    #[test]
    fn first_matching_rule_wins_then_default() {
        let routes = Routes::compile(
            &[
                rule(r#"event.type == "widget""#, "/widgets"),
                rule("event.data.price > 100", "/expensive"),
                rule(r#"event.data.tags.exists(t, t == "x")"#, "/tagged"),
            ],
            "/other",
        )
        .unwrap();
        let widget = event(
            r#"{"specversion":"1.0","id":"1","source":"s","type":"widget","datacontenttype":"application/json","data":{"price":500}}"#,
        );
        assert_eq!(routes.select(&widget).as_deref(), Some("/widgets"));
        let pricey = event(
            r#"{"specversion":"1.0","id":"1","source":"s","type":"gadget","datacontenttype":"application/json","data":{"price":500}}"#,
        );
        assert_eq!(routes.select(&pricey).as_deref(), Some("/expensive"));
        let tagged = event(
            r#"{"specversion":"1.0","id":"1","source":"s","type":"gadget","data":{"price":1,"tags":["y","x"]}}"#,
        );
        assert_eq!(routes.select(&tagged).as_deref(), Some("/tagged"));
        // No price at all: the rule errors, which is no match.
        let other =
            event(r#"{"specversion":"1.0","id":"1","source":"s","type":"thing","data":"hi"}"#);
        assert_eq!(routes.select(&other).as_deref(), Some("/other"));
    }

    #[test]
    fn no_match_without_default_is_none() {
        let routes = Routes::compile(&[rule(r#"event.type == "a""#, "/a")], "").unwrap();
        let e = event(r#"{"specversion":"1.0","id":"1","source":"s","type":"b","data":1}"#);
        assert_eq!(routes.select(&e), None);
    }

    #[test]
    fn invalid_cel_is_an_error_naming_the_rule() {
        let err = Routes::compile(&[rule("event.type ==", "/a")], "").unwrap_err();
        assert!(err.message().contains("event.type =="), "{err}");
    }

    #[test]
    fn topic_and_extensions_are_visible() {
        let routes = Routes::compile(
            &[rule(
                r#"event.topic == "orders" && event.priority == "high""#,
                "/p",
            )],
            "",
        )
        .unwrap();
        let e = event(
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","priority":"high","data":{}}"#,
        );
        assert_eq!(routes.select(&e).as_deref(), Some("/p"));
    }
}
