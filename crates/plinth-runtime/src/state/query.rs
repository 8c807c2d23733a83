//! Parsing of Dapr's state query language: a JSON document `{filter, sort, page}` becomes
//! a validated [`Query`], once, before any store sees it. Every error is INVALID_ARGUMENT
//! and names the part that is wrong (`filter.AND[1].EQ`, `sort[0].order`, `page.limit`).

use std::num::NonZeroUsize;

use plinth_core::component::state::query::{
    Comparison, Filter, KeyPath, Order, Page, Query, Sorting,
};
use plinth_core::{Error, Result};
use serde_json::{Map, Value};

/// The operators, as an error lists them.
const OPERATORS: &str = "EQ, NEQ, GT, GTE, LT, LTE, IN, AND, OR";

fn invalid(at: &str, problem: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("invalid query: {at}: {problem}"))
}

/// Parse and validate a query.
pub fn parse(input: &[u8]) -> Result<Query> {
    let doc: Value = serde_json::from_slice(input)
        .map_err(|e| Error::invalid_argument(format!("invalid query: not valid JSON: {e}")))?;
    let Value::Object(fields) = doc else {
        return Err(Error::invalid_argument(
            "invalid query: the query must be a JSON object with filter, sort and page",
        ));
    };
    let mut query = Query::default();
    for (name, value) in fields {
        match name.as_str() {
            "filter" => query.filter = filter_root(value)?,
            "sort" => query.sort = sort(value)?,
            "page" => query.page = page(value)?,
            other => {
                return Err(invalid(
                    other,
                    "unknown field; a query has filter, sort and page",
                ));
            }
        }
    }
    Ok(query)
}

/// An absent, null or empty filter matches everything, as in Dapr.
fn filter_root(value: Value) -> Result<Option<Filter>> {
    match value {
        Value::Null => Ok(None),
        Value::Object(m) if m.is_empty() => Ok(None),
        other => filter("filter", other).map(Some),
    }
}

fn filter(at: &str, value: Value) -> Result<Filter> {
    let (op, operand) = single(at, value, "an object with exactly one operator")?;
    let at = format!("{at}.{op}");
    let comparison = match op.as_str() {
        "EQ" => Comparison::Eq,
        "NEQ" => Comparison::Neq,
        "GT" => Comparison::Gt,
        "GTE" => Comparison::Gte,
        "LT" => Comparison::Lt,
        "LTE" => Comparison::Lte,
        "IN" => {
            let (key, values) = single(&at, operand, "an object with exactly one key")?;
            let path = key_path(&at, &key)?;
            let Value::Array(values) = values else {
                return Err(invalid(
                    &format!("{at}.{key}"),
                    format!("must be an array of values, got {}", kind(&values)),
                ));
            };
            return Ok(Filter::In { key: path, values });
        }
        "AND" | "OR" => {
            let Value::Array(operands) = operand else {
                return Err(invalid(
                    &at,
                    format!("must be an array of filters, got {}", kind(&operand)),
                ));
            };
            if operands.len() < 2 {
                return Err(invalid(
                    &at,
                    format!("must have at least two operands, got {}", operands.len()),
                ));
            }
            let filters = operands
                .into_iter()
                .enumerate()
                .map(|(i, f)| filter(&format!("{at}[{i}]"), f))
                .collect::<Result<Vec<_>>>()?;
            return Ok(if op == "AND" {
                Filter::And(filters)
            } else {
                Filter::Or(filters)
            });
        }
        other => {
            return Err(invalid(
                &at,
                format!("unknown operator {other:?}; expected one of {OPERATORS}"),
            ));
        }
    };
    let (key, value) = single(&at, operand, "an object with exactly one key/value pair")?;
    let path = key_path(&at, &key)?;
    let ranged = !matches!(comparison, Comparison::Eq | Comparison::Neq);
    if ranged && !matches!(value, Value::Number(_) | Value::String(_)) {
        return Err(invalid(
            &format!("{at}.{key}"),
            format!("must be a number or a string, got {}", kind(&value)),
        ));
    }
    Ok(Filter::Compare {
        op: comparison,
        key: path,
        value,
    })
}

/// The one entry of an object that must have exactly one.
fn single(at: &str, value: Value, what: &str) -> Result<(String, Value)> {
    let Value::Object(map) = value else {
        return Err(invalid(at, format!("must be {what}, got {}", kind(&value))));
    };
    if map.len() != 1 {
        return Err(invalid(
            at,
            format!("must be {what}, got {} entries", map.len()),
        ));
    }
    map.into_iter()
        .next()
        .ok_or_else(|| invalid(at, format!("must be {what}")))
}

fn key_path(at: &str, key: &str) -> Result<KeyPath> {
    KeyPath::parse(key).ok_or_else(|| {
        invalid(
            at,
            format!("key {key:?} is not a dotted path of non-empty names (such as person.org)"),
        )
    })
}

fn sort(value: Value) -> Result<Vec<Sorting>> {
    let entries = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(entries) => entries,
        other => {
            return Err(invalid(
                "sort",
                format!("must be an array of {{key, order}}, got {}", kind(&other)),
            ));
        }
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("sort[{i}]");
            let Value::Object(fields) = entry else {
                return Err(invalid(
                    &at,
                    format!("must be {{key, order}}, got {}", kind(&entry)),
                ));
            };
            sorting(&at, fields)
        })
        .collect()
}

fn sorting(at: &str, fields: Map<String, Value>) -> Result<Sorting> {
    let mut key = None;
    let mut order = Order::Asc;
    for (name, value) in fields {
        match name.as_str() {
            "key" => {
                let Value::String(k) = value else {
                    return Err(invalid(
                        &format!("{at}.key"),
                        format!("must be a string, got {}", kind(&value)),
                    ));
                };
                key = Some(key_path(&format!("{at}.key"), &k)?);
            }
            "order" => {
                order = match value.as_str() {
                    Some(o) if o.is_empty() || o.eq_ignore_ascii_case("ASC") => Order::Asc,
                    Some(o) if o.eq_ignore_ascii_case("DESC") => Order::Desc,
                    _ => {
                        return Err(invalid(
                            &format!("{at}.order"),
                            format!("{value} is not \"ASC\" or \"DESC\""),
                        ));
                    }
                };
            }
            other => {
                return Err(invalid(
                    &format!("{at}.{other}"),
                    "unknown field; a sort entry has key and order",
                ));
            }
        }
    }
    let key = key.ok_or_else(|| invalid(&format!("{at}.key"), "is required"))?;
    Ok(Sorting { key, order })
}

fn page(value: Value) -> Result<Page> {
    let fields = match value {
        Value::Null => return Ok(Page::default()),
        Value::Object(fields) => fields,
        other => {
            return Err(invalid(
                "page",
                format!(
                    "must be an object with limit and token, got {}",
                    kind(&other)
                ),
            ));
        }
    };
    let mut page = Page::default();
    for (name, value) in fields {
        match name.as_str() {
            // Dapr reads the limit into an integer whose zero value means "no limit", so 0
            // is accepted and means that here too.
            "limit" => {
                page.limit = match &value {
                    Value::Null => None,
                    Value::Number(n) => match n.as_u64() {
                        Some(n) => NonZeroUsize::new(usize::try_from(n).unwrap_or(usize::MAX)),
                        None => {
                            return Err(invalid(
                                "page.limit",
                                format!("{n} is not a positive integer"),
                            ));
                        }
                    },
                    other => {
                        return Err(invalid(
                            "page.limit",
                            format!("must be a positive integer, got {}", kind(other)),
                        ));
                    }
                }
            }
            "token" => {
                page.token = match value {
                    Value::Null => None,
                    Value::String(t) if t.is_empty() => None,
                    Value::String(t) => Some(t),
                    other => {
                        return Err(invalid(
                            "page.token",
                            format!(
                                "must be a string from a previous answer, got {}",
                                kind(&other)
                            ),
                        ));
                    }
                }
            }
            other => {
                return Err(invalid(
                    &format!("page.{other}"),
                    "unknown field; page has limit and token",
                ));
            }
        }
    }
    Ok(page)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
