//! The state query language (Dapr's `QueryStateAlpha1`) as a typed model, with the
//! evaluation rules every store that filters JSON documents itself shares.
//!
//! The building block parses and validates the caller's JSON once; a store receives a
//! [`Query`] and either translates it to its own query language or, like the in-memory
//! store, evaluates it with [`Filter::matches`] and [`Query::compare`].
//!
//! Keys are dotted paths into the stored JSON value (`person.org`), without Dapr's
//! internal `value.` prefix, as Dapr's API takes them.

use std::cmp::Ordering;
use std::fmt;
use std::num::NonZeroUsize;

use bytes::Bytes;
use serde_json::{Number, Value};

use crate::Metadata;

/// A dotted path into a JSON document: `shape.color.code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath(Vec<String>);

impl KeyPath {
    /// A path from its segments; `None` when there are none or one is empty.
    pub fn new(segments: Vec<String>) -> Option<Self> {
        (!segments.is_empty() && segments.iter().all(|s| !s.is_empty())).then_some(Self(segments))
    }

    /// Parse `a.b.c`; `None` when the path is empty or has an empty segment (`a..b`).
    pub fn parse(path: &str) -> Option<Self> {
        Self::new(path.split('.').map(str::to_string).collect())
    }

    /// The segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The value at this path, following nested objects; `None` when a segment is missing
    /// or leads into something that is not an object.
    pub fn lookup<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        self.0
            .iter()
            .try_fold(doc, |v, segment| v.as_object()?.get(segment))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A comparison of one key with one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `EQ`: the key's value equals the operand.
    Eq,
    /// `NEQ`: the key is absent or its value differs from the operand.
    Neq,
    /// `GT`: greater than (numbers with numbers, strings with strings).
    Gt,
    /// `GTE`: greater than or equal.
    Gte,
    /// `LT`: less than.
    Lt,
    /// `LTE`: less than or equal.
    Lte,
}

impl Comparison {
    /// The operator's name in the query language.
    pub fn name(self) -> &'static str {
        match self {
            Comparison::Eq => "EQ",
            Comparison::Neq => "NEQ",
            Comparison::Gt => "GT",
            Comparison::Gte => "GTE",
            Comparison::Lt => "LT",
            Comparison::Lte => "LTE",
        }
    }
}

/// A filter tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `{"EQ": {"key": value}}` and the other comparisons.
    Compare {
        /// Which comparison.
        op: Comparison,
        /// The key compared.
        key: KeyPath,
        /// The operand.
        value: Value,
    },
    /// `{"IN": {"key": [v1, v2]}}`: the key's value equals one of the operands.
    In {
        /// The key compared.
        key: KeyPath,
        /// The operands; none matches nothing.
        values: Vec<Value>,
    },
    /// `{"AND": [f1, f2, ...]}`: every operand matches.
    And(Vec<Filter>),
    /// `{"OR": [f1, f2, ...]}`: at least one operand matches.
    Or(Vec<Filter>),
}

impl Filter {
    /// Whether a JSON document matches.
    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Filter::Compare { op, key, value } => {
                let found = key.lookup(doc);
                match op {
                    Comparison::Eq => found.is_some_and(|v| json_eq(v, value)),
                    Comparison::Neq => !found.is_some_and(|v| json_eq(v, value)),
                    Comparison::Gt => ordered(found, value).is_some_and(Ordering::is_gt),
                    Comparison::Gte => ordered(found, value).is_some_and(Ordering::is_ge),
                    Comparison::Lt => ordered(found, value).is_some_and(Ordering::is_lt),
                    Comparison::Lte => ordered(found, value).is_some_and(Ordering::is_le),
                }
            }
            Filter::In { key, values } => key
                .lookup(doc)
                .is_some_and(|v| values.iter().any(|operand| json_eq(v, operand))),
            Filter::And(filters) => filters.iter().all(|f| f.matches(doc)),
            Filter::Or(filters) => filters.iter().any(|f| f.matches(doc)),
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Ascending, the default.
    #[default]
    Asc,
    /// Descending.
    Desc,
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sorting {
    /// The key sorted on.
    pub key: KeyPath,
    /// The direction.
    pub order: Order,
}

/// Which page of the results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The most results in one answer; `None` returns them all.
    pub limit: Option<NonZeroUsize>,
    /// Where to continue, as a previous answer's token said. Tokens belong to the store
    /// that issued them, which validates them.
    pub token: Option<String>,
}

/// A validated query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// The filter; `None` matches every document.
    pub filter: Option<Filter>,
    /// Sort keys, most significant first; empty leaves the order to the store (which must
    /// still be stable between pages).
    pub sort: Vec<Sorting>,
    /// Pagination.
    pub page: Page,
}

impl Query {
    /// Whether a document matches the filter.
    pub fn matches(&self, doc: &Value) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(doc))
    }

    /// Order two documents by the sort keys, then by their keys, so the order is total and
    /// the same on every call (which offset-based page tokens rely on). Within one sort key,
    /// values of different JSON types order as: absent, null, booleans, numbers, strings,
    /// arrays, objects.
    pub fn compare(&self, a: (&str, &Value), b: (&str, &Value)) -> Ordering {
        self.sort
            .iter()
            .map(|s| {
                let o = sort_order(s.key.lookup(a.1), s.key.lookup(b.1));
                match s.order {
                    Order::Asc => o,
                    Order::Desc => o.reverse(),
                }
            })
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.0.cmp(b.0))
    }
}

/// A query for a store: the query and the key prefix of the calling app.
#[derive(Debug, Clone, Default)]
pub struct QueryRequest {
    /// The validated query.
    pub query: Query,
    /// Only keys starting with this belong to the caller (`appid||`; empty when the store's
    /// `keyPrefix` is `none`). Stores return full keys; the building block strips the prefix.
    pub key_prefix: String,
    /// Request metadata.
    pub metadata: Metadata,
}

/// One matching value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryItem {
    /// The key (as stored by the store; without the prefix once the building block has it).
    pub key: String,
    /// The value's bytes.
    pub data: Bytes,
    /// Its ETag, when the store has ETags.
    pub etag: Option<String>,
    /// A per-item error.
    pub error: Option<String>,
}

/// A page of results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResponse {
    /// The matching values, in order.
    pub results: Vec<QueryItem>,
    /// The token for the next page; `None` when this page is the last.
    pub token: Option<String>,
    /// Response metadata.
    pub metadata: Metadata,
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|other| json_eq(v, other)))
        }
        _ => a == b,
    }
}

/// The order of a document's value against a range operand: numbers with numbers and
/// strings with strings; anything else does not compare (and so never matches).
fn ordered(found: Option<&Value>, operand: &Value) -> Option<Ordering> {
    match (found?, operand) {
        (Value::Number(x), Value::Number(y)) => Some(number_cmp(x, y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn type_rank(v: Option<&Value>) -> u8 {
    match v {
        None => 0,
        Some(Value::Null) => 1,
        Some(Value::Bool(_)) => 2,
        Some(Value::Number(_)) => 3,
        Some(Value::String(_)) => 4,
        Some(Value::Array(_)) => 5,
        Some(Value::Object(_)) => 6,
    }
}

fn sort_order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => number_cmp(x, y),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        // Arrays and objects have no natural order: they tie, and the keys decide.
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Compare numbers exactly when both are integers, as floats otherwise.
fn number_cmp(x: &Number, y: &Number) -> Ordering {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return a.cmp(&b);
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return a.cmp(&b);
    }
    // One is a u64 above i64::MAX and the other a negative i64.
    if x.is_i64() && y.is_u64() {
        return Ordering::Less;
    }
    if x.is_u64() && y.is_i64() {
        return Ordering::Greater;
    }
    let (a, b) = (
        x.as_f64().unwrap_or(f64::NAN),
        y.as_f64().unwrap_or(f64::NAN),
    );
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(path: &str) -> KeyPath {
        KeyPath::parse(path).expect("a valid path")
    }

    fn eq(path: &str, value: Value) -> Filter {
        Filter::Compare {
            op: Comparison::Eq,
            key: key(path),
            value,
        }
    }

    #[test]
    fn paths() {
        let doc = json!({"person": {"org": "A", "id": 3}, "list": [1]});
        assert_eq!(key("person.org").lookup(&doc), Some(&json!("A")));
        assert_eq!(key("person.missing").lookup(&doc), None);
        assert_eq!(key("person.org.deeper").lookup(&doc), None);
        assert_eq!(key("list.0").lookup(&doc), None);
        assert!(KeyPath::parse("").is_none());
        assert!(KeyPath::parse("a..b").is_none());
        assert!(KeyPath::parse(".a").is_none());
        assert_eq!(key("a.b").to_string(), "a.b");
    }

    #[test]
    fn comparisons() {
        let doc = json!({"n": 10, "s": "m", "f": 1.5});
        assert!(
            eq("n", json!(10.0)).matches(&doc),
            "numbers compare by value"
        );
        assert!(!eq("n", json!("10")).matches(&doc), "no coercion");
        assert!(!eq("missing", json!(null)).matches(&doc));
        let cmp = |op, path: &str, value| Filter::Compare {
            op,
            key: key(path),
            value,
        };
        assert!(cmp(Comparison::Neq, "missing", json!(1)).matches(&doc));
        assert!(!cmp(Comparison::Neq, "n", json!(10)).matches(&doc));
        assert!(cmp(Comparison::Gt, "n", json!(9)).matches(&doc));
        assert!(cmp(Comparison::Gte, "n", json!(10)).matches(&doc));
        assert!(!cmp(Comparison::Lt, "n", json!(10)).matches(&doc));
        assert!(cmp(Comparison::Lte, "f", json!(1.5)).matches(&doc));
        assert!(cmp(Comparison::Gt, "s", json!("a")).matches(&doc));
        assert!(
            !cmp(Comparison::Gt, "s", json!(1)).matches(&doc),
            "mixed types"
        );
        assert!(!cmp(Comparison::Lt, "missing", json!(1)).matches(&doc));
        let big = json!({"n": u64::MAX});
        assert!(cmp(Comparison::Gt, "n", json!(-1)).matches(&big));
        assert!(cmp(Comparison::Gt, "n", json!(i64::MAX)).matches(&big));
    }

    #[test]
    fn nesting() {
        let doc = json!({"org": "B", "state": "WA"});
        let f = Filter::Or(vec![
            eq("org", json!("A")),
            Filter::And(vec![
                eq("org", json!("B")),
                Filter::In {
                    key: key("state"),
                    values: vec![json!("CA"), json!("WA")],
                },
            ]),
        ]);
        assert!(f.matches(&doc));
        assert!(!f.matches(&json!({"org": "B", "state": "TX"})));
        assert!(
            !Filter::In {
                key: key("state"),
                values: vec![]
            }
            .matches(&doc)
        );
    }

    #[test]
    fn order_is_total_and_stable() {
        let q = Query {
            sort: vec![Sorting {
                key: key("a"),
                order: Order::Desc,
            }],
            ..Default::default()
        };
        let (one, two, s, none) = (
            json!({"a": 1}),
            json!({"a": 2}),
            json!({"a": "x"}),
            json!({}),
        );
        assert_eq!(q.compare(("k1", &one), ("k2", &two)), Ordering::Greater);
        assert_eq!(
            q.compare(("k1", &s), ("k2", &two)),
            Ordering::Less,
            "strings after numbers"
        );
        assert_eq!(q.compare(("k1", &none), ("k2", &one)), Ordering::Greater);
        assert_eq!(
            q.compare(("k1", &one), ("k2", &one)),
            Ordering::Less,
            "ties by key"
        );
        assert_eq!(
            Query::default().compare(("b", &one), ("a", &two)),
            Ordering::Greater
        );
    }
}
