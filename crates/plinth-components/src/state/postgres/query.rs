//! Translation of the state query model to SQL over the JSON in the `value` column.
//!
//! Values are bytes; each query parses them with a function it creates in the session's
//! temporary schema (`pg_temp`), which answers NULL for values that are not UTF-8 JSON, so
//! those never match and nothing is left behind in the database. Every path, operand,
//! prefix, limit and offset is a bind parameter; only the validated table name is SQL text.
//!
//! The rules are the in-memory store's (`Filter::matches`, `Query::compare`): equality by
//! JSON value (numbers by value, no coercion), GT/GTE/LT/LTE only between two numbers or
//! two strings (strings by code point), NEQ true when the path is absent, sort by type rank
//! (absent, null, boolean, number, string, array, object) then by value, ties and the
//! unsorted order broken by key.

use plinth_core::component::state::query::{Comparison, Filter, KeyPath, Order, Query};
use serde_json::Value;
use tokio_postgres::types::ToSql;

/// Created per query on the query's connection; `pg_temp` functions live as long as the
/// session and are seen by no other.
pub(super) const TRY_JSONB: &str = "CREATE OR REPLACE FUNCTION pg_temp.plinth_try_jsonb(v bytea)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN convert_from(v, 'UTF8')::jsonb;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$";

/// A parameter of the generated statement.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// SQL text and its parameters, numbered from `$1` in the order they were pushed.
#[derive(Default)]
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) params: Vec<Param>,
}

impl std::fmt::Debug for Sql {
    // Parameters are app data: show only how many there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql")
            .field("text", &self.text)
            .field("params", &self.params.len())
            .finish()
    }
}

impl Sql {
    /// Push a parameter and return its placeholder.
    fn bind(&mut self, param: Param) -> String {
        self.params.push(param);
        format!("${}", self.params.len())
    }

    /// `doc #> path`, the JSON at a path (NULL when absent).
    fn path(&mut self, key: &KeyPath) -> String {
        let p = self.bind(Box::new(key.segments().to_vec()));
        format!("(doc #> {p}::text[])")
    }
}

/// The statement selecting one page (one row more than the limit, to tell whether another
/// page follows) of `key, value, etag` under `prefix`, live rows only.
pub(super) fn select(table: &str, prefix: &str, query: &Query, offset: i64) -> Sql {
    let mut sql = Sql::default();
    let prefix = sql.bind(Box::new(prefix.to_owned()));
    let filter = match &query.filter {
        Some(filter) => condition(&mut sql, filter),
        None => "true".to_owned(),
    };
    let mut order = Vec::new();
    for sorting in &query.sort {
        let e = sql.path(&sorting.key);
        let dir = match sorting.order {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        };
        order.push(format!(
            "CASE jsonb_typeof({e}) WHEN 'null' THEN 1 WHEN 'boolean' THEN 2 WHEN 'number' THEN 3 \
             WHEN 'string' THEN 4 WHEN 'array' THEN 5 WHEN 'object' THEN 6 ELSE 0 END {dir}"
        ));
        order.push(format!(
            "CASE WHEN jsonb_typeof({e}) = 'boolean' THEN ({e})::boolean END {dir}"
        ));
        order.push(format!(
            "CASE WHEN jsonb_typeof({e}) = 'number' THEN ({e})::numeric END {dir}"
        ));
        order.push(format!(
            "CASE WHEN jsonb_typeof({e}) = 'string' THEN {e} #>> '{{}}' END COLLATE \"C\" {dir}"
        ));
    }
    order.push("key COLLATE \"C\" ASC".to_owned());
    let limit = match query.page.limit {
        Some(limit) => {
            let n = i64::try_from(limit.get()).unwrap_or(i64::MAX - 1) + 1;
            let p = sql.bind(Box::new(n));
            format!(" LIMIT {p}")
        }
        None => String::new(),
    };
    let offset = sql.bind(Box::new(offset));
    sql.text = format!(
        "SELECT key, value, etag FROM (
           SELECT key, value, etag, pg_temp.plinth_try_jsonb(value) AS doc FROM {table}
           WHERE starts_with(key, {prefix}::text)
             AND (expires_at IS NULL OR expires_at > now())
         ) s
         WHERE doc IS NOT NULL AND ({filter})
         ORDER BY {order}{limit} OFFSET {offset}",
        order = order.join(", ")
    );
    sql
}

/// A boolean SQL expression that is true exactly when `filter` matches; never NULL.
fn condition(sql: &mut Sql, filter: &Filter) -> String {
    match filter {
        Filter::Compare { op, key, value } => {
            let e = sql.path(key);
            match op {
                Comparison::Eq => {
                    let v = sql.bind(Box::new(value.clone()));
                    format!("coalesce({e} = {v}::jsonb, false)")
                }
                Comparison::Neq => {
                    let v = sql.bind(Box::new(value.clone()));
                    format!("NOT coalesce({e} = {v}::jsonb, false)")
                }
                Comparison::Gt | Comparison::Gte | Comparison::Lt | Comparison::Lte => {
                    let sym = match op {
                        Comparison::Gt => ">",
                        Comparison::Gte => ">=",
                        Comparison::Lt => "<",
                        _ => "<=",
                    };
                    match value {
                        Value::Number(_) => {
                            let v = sql.bind(Box::new(value.clone()));
                            // CASE, unlike AND, guarantees the cast only sees numbers.
                            format!(
                                "CASE WHEN jsonb_typeof({e}) = 'number' THEN ({e})::numeric {sym} ({v}::jsonb)::numeric ELSE false END"
                            )
                        }
                        Value::String(s) => {
                            let v = sql.bind(Box::new(s.clone()));
                            format!(
                                "CASE WHEN jsonb_typeof({e}) = 'string' THEN ({e} #>> '{{}}') COLLATE \"C\" {sym} {v}::text COLLATE \"C\" ELSE false END"
                            )
                        }
                        // Only numbers and strings are ordered.
                        _ => "false".to_owned(),
                    }
                }
            }
        }
        Filter::In { key, values } => {
            let e = sql.path(key);
            let v = sql.bind(Box::new(values.clone()));
            format!("coalesce({e} = ANY({v}::jsonb[]), false)")
        }
        Filter::And(filters) => join(sql, filters, " AND ", "true"),
        Filter::Or(filters) => join(sql, filters, " OR ", "false"),
    }
}

fn join(sql: &mut Sql, filters: &[Filter], with: &str, empty: &str) -> String {
    if filters.is_empty() {
        return empty.to_owned();
    }
    let parts: Vec<String> = filters
        .iter()
        .map(|f| format!("({})", condition(sql, f)))
        .collect();
    parts.join(with)
}
