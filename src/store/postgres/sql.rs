//! Query translation: the parts of an `EntityQuery` that PostgreSQL can answer with its indexes,
//! as a WHERE clause. The clause may select a superset (`exact == false`); the query evaluator then
//! decides on the rows it returns, so the SQL can only make queries faster, never change answers.

use crate::query::boolean::BoolExpr;
use crate::query::EntityQuery;
use tokio_postgres::types::ToSql;

/// A WHERE clause with its parameters.
pub struct Translation {
    /// Conditions joined with AND (`$n` placeholders numbered from 2; `$1` is the tenant).
    pub conditions: Vec<String>,
    /// Parameter values for `$2...`.
    pub params: Vec<Box<dyn ToSql + Sync + Send>>,
    /// Whether the conditions select exactly the matching entities (then paging and counting can
    /// happen in SQL).
    pub exact: bool,
}

impl Translation {
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len() + 1)
    }
}

fn types_sql(t: &mut Translation, expr: &BoolExpr<String>) -> String {
    match expr {
        BoolExpr::Atom(ty) => {
            let p = t.param(vec![ty.clone()]);
            format!("types @> {p}")
        }
        BoolExpr::And(items) => format!(
            "({})",
            items
                .iter()
                .map(|i| types_sql(t, i))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
        BoolExpr::Or(items) => format!(
            "({})",
            items
                .iter()
                .map(|i| types_sql(t, i))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
    }
}

/// Translates what can be pushed down.
pub fn translate(query: &EntityQuery) -> Translation {
    let mut t = Translation {
        conditions: Vec::new(),
        params: Vec::new(),
        exact: true,
    };
    if !query.selectors.is_empty() {
        let mut alternatives = Vec::new();
        for s in &query.selectors {
            let mut parts = Vec::new();
            if !s.ids.is_empty() {
                let p = t.param(s.ids.clone());
                parts.push(format!("id = ANY({p})"));
            } else if s.id_pattern.is_some() {
                // The regex dialects of Rust and PostgreSQL differ: the evaluator checks patterns.
                t.exact = false;
            }
            if let Some(types) = &s.types {
                parts.push(types_sql(&mut t, types));
            }
            alternatives.push(if parts.is_empty() {
                "true".to_string()
            } else {
                parts.join(" AND ")
            });
        }
        t.conditions
            .push(format!("({})", alternatives.join(" OR ")));
    }
    if !query.attrs.is_empty() {
        let p = t.param(query.attrs.clone());
        t.conditions.push(format!("(body -> 'attrs') ?| {p}"));
    }
    if query.q.is_some() || query.geo.is_some() || query.scope.is_some() {
        t.exact = false;
    }
    t
}
