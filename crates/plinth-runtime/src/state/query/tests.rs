use plinth_core::ErrorKind;
use serde_json::json;

use super::*;

fn ok(text: &str) -> Query {
    parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The error message, asserting the kind is INVALID_ARGUMENT.
fn err(text: &str) -> String {
    match parse(text.as_bytes()) {
        Ok(q) => panic!("{text} parsed as {q:?}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            e.message().to_string()
        }
    }
}

fn key(path: &str) -> KeyPath {
    KeyPath::parse(path).expect("path")
}

#[test]
fn dapr_documentation_example() {
    let q = ok(r#"{
        "filter": {
            "OR": [
                {"EQ": {"person.org": "Dev Ops"}},
                {"AND": [
                    {"EQ": {"person.org": "Finance"}},
                    {"IN": {"state": ["CA", "WA"]}}
                ]}
            ]
        },
        "sort": [
            {"key": "state", "order": "DESC"},
            {"key": "person.id"}
        ],
        "page": {"limit": 3, "token": "6"}
    }"#);
    assert_eq!(
        q.filter,
        Some(Filter::Or(vec![
            Filter::Compare {
                op: Comparison::Eq,
                key: key("person.org"),
                value: json!("Dev Ops"),
            },
            Filter::And(vec![
                Filter::Compare {
                    op: Comparison::Eq,
                    key: key("person.org"),
                    value: json!("Finance"),
                },
                Filter::In {
                    key: key("state"),
                    values: vec![json!("CA"), json!("WA")],
                },
            ]),
        ]))
    );
    assert_eq!(
        q.sort,
        vec![
            Sorting {
                key: key("state"),
                order: Order::Desc
            },
            Sorting {
                key: key("person.id"),
                order: Order::Asc
            },
        ]
    );
    assert_eq!(q.page.limit.map(NonZeroUsize::get), Some(3));
    assert_eq!(q.page.token.as_deref(), Some("6"));
}

#[test]
fn every_comparison() {
    for (name, op) in [
        ("EQ", Comparison::Eq),
        ("NEQ", Comparison::Neq),
        ("GT", Comparison::Gt),
        ("GTE", Comparison::Gte),
        ("LT", Comparison::Lt),
        ("LTE", Comparison::Lte),
    ] {
        let q = ok(&format!(r#"{{"filter": {{"{name}": {{"a.b": 5}}}}}}"#));
        assert_eq!(
            q.filter,
            Some(Filter::Compare {
                op,
                key: key("a.b"),
                value: json!(5)
            })
        );
    }
}

#[test]
fn empty_parts_mean_everything() {
    for text in [
        "{}",
        r#"{"filter": {}}"#,
        r#"{"filter": null, "sort": null, "page": null}"#,
        r#"{"sort": [], "page": {}}"#,
        r#"{"page": {"limit": 0, "token": ""}}"#,
    ] {
        assert_eq!(ok(text), Query::default(), "{text}");
    }
}

#[test]
fn errors_name_the_bad_part() {
    let cases = [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (r#"{"filters": {}}"#, "filters: unknown field"),
        (
            r#"{"filter": {"XOR": []}}"#,
            "filter.XOR: unknown operator \"XOR\"",
        ),
        (r#"{"filter": {"eq": {"a": 1}}}"#, "unknown operator \"eq\""),
        (
            r#"{"filter": {"EQ": {"a": 1}, "IN": {"b": [1]}}}"#,
            "filter: must be an object with exactly one operator, got 2 entries",
        ),
        (r#"{"filter": "a"}"#, "filter: must be an object"),
        (
            r#"{"filter": {"EQ": {"a": 1, "b": 2}}}"#,
            "filter.EQ: must be an object with exactly one key/value pair",
        ),
        (r#"{"filter": {"EQ": []}}"#, "filter.EQ: must be an object"),
        (
            r#"{"filter": {"IN": {"a": 1}}}"#,
            "filter.IN.a: must be an array",
        ),
        (
            r#"{"filter": {"AND": [{"EQ": {"a": 1}}]}}"#,
            "filter.AND: must have at least two operands, got 1",
        ),
        (
            r#"{"filter": {"OR": {"EQ": {"a": 1}}}}"#,
            "filter.OR: must be an array",
        ),
        (
            r#"{"filter": {"OR": [{"EQ": {"a": 1}}, {"AND": [{"EQ": {"b": 1}}, {"NOPE": {}}]}]}}"#,
            "filter.OR[1].AND[1].NOPE: unknown operator",
        ),
        (
            r#"{"filter": {"EQ": {"a..b": 1}}}"#,
            "key \"a..b\" is not a dotted path",
        ),
        (
            r#"{"filter": {"EQ": {"": 1}}}"#,
            "key \"\" is not a dotted path",
        ),
        (
            r#"{"filter": {"GT": {"a": [1]}}}"#,
            "filter.GT.a: must be a number or a string",
        ),
        (r#"{"sort": {"key": "a"}}"#, "sort: must be an array"),
        (
            r#"{"sort": [{"order": "ASC"}]}"#,
            "sort[0].key: is required",
        ),
        (r#"{"sort": [{"key": 1}]}"#, "sort[0].key: must be a string"),
        (
            r#"{"sort": [{"key": "a"}, {"key": "b", "order": "UP"}]}"#,
            "sort[1].order: \"UP\"",
        ),
        (
            r#"{"sort": [{"key": "a", "dir": "ASC"}]}"#,
            "sort[0].dir: unknown field",
        ),
        (
            r#"{"page": {"limit": -1}}"#,
            "page.limit: -1 is not a positive integer",
        ),
        (
            r#"{"page": {"limit": 2.5}}"#,
            "page.limit: 2.5 is not a positive integer",
        ),
        (
            r#"{"page": {"limit": "10"}}"#,
            "page.limit: must be a positive integer",
        ),
        (r#"{"page": {"token": 5}}"#, "page.token: must be a string"),
        (r#"{"page": {"size": 5}}"#, "page.size: unknown field"),
        (r#"{"page": 5}"#, "page: must be an object"),
    ];
    for (text, expected) in cases {
        let message = err(text);
        assert!(
            message.contains(expected),
            "{text}: {message:?} does not contain {expected:?}"
        );
        assert!(message.starts_with("invalid query: "), "{message}");
    }
}

#[test]
fn order_is_case_insensitive_and_defaults_to_ascending() {
    let q = ok(r#"{"sort": [{"key": "a", "order": "desc"}, {"key": "b", "order": ""}]}"#);
    assert_eq!(q.sort[0].order, Order::Desc);
    assert_eq!(q.sort[1].order, Order::Asc);
}
