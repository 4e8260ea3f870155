//! Query and discovery operations (5.7.2, 5.7.5–5.7.10): select entities with the query engine and
//! page through them in a stable (id) order; list the types and attributes in use.

use super::AppState;
use crate::error::NgsiResult;
use crate::model::{AttrKind, Entity};
use crate::query::boolean::BoolExpr;
use crate::query::q::{Op, Path, QExpr, QValue, Text};
use crate::query::{EntityQuery, Selector};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// At most this many entities a linked entity path resolves to.
const LINK_TARGETS: usize = 100_000;

/// Which page of results a client wants.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// At most this many entities.
    pub limit: usize,
    /// After skipping this many.
    pub offset: usize,
}

/// A page of query results and how many matches were seen.
#[derive(Debug)]
pub struct QueryResult {
    /// The page, in id order.
    pub entities: Vec<Arc<Entity>>,
    /// Matches seen: the total when counted, else enough to tell whether a next page exists.
    pub seen: usize,
    /// NGSILD-Warning values of the context sources that failed (6.3.17).
    pub warnings: Vec<String>,
}

/// What the broker knows of one entity type (for /types).
#[derive(Debug, Default)]
pub struct TypeInfo {
    /// Entities of the type.
    pub entity_count: usize,
    /// Attributes of those entities, with the attribute kinds seen.
    pub attributes: BTreeMap<String, BTreeSet<&'static str>>,
}

/// What the broker knows of one attribute (for /attributes).
#[derive(Debug, Default)]
pub struct AttributeInfo {
    /// Attribute instances with this name (attributeCount, 5.2.28).
    pub instance_count: usize,
    /// Kinds seen.
    pub kinds: BTreeSet<&'static str>,
    /// Types of the entities that have it.
    pub types: BTreeSet<String>,
}

impl AppState {
    /// Runs a query over a tenant's entities; `count` asks for the total number of matches.
    /// Linked entity paths in q are resolved first (see [`AppState::resolve_links`]).
    pub async fn query_entities(
        &self,
        tenant: &str,
        mut query: EntityQuery,
        page: Page,
        count: bool,
    ) -> NgsiResult<QueryResult> {
        self.require_tenant(tenant).await?;
        if let Some(q) = query.q.as_mut() {
            self.resolve_links(tenant, q).await?;
        }
        let (entities, seen) = self
            .store
            .query(tenant, &query, page.offset, page.limit, count)
            .await?;
        Ok(QueryResult {
            entities,
            seen,
            warnings: Vec::new(),
        })
    }

    /// Rewrites every term on a linked entity path (`rel{Type:path} op value`, 4.9) into a term on
    /// the Relationship itself: `rel==<ids of the entities of that type where "path op value"
    /// holds>` (a negated existence test becomes "no rel, or rel to none of the entities that have
    /// path"). Nested links resolve innermost first; the stores then see plain q.
    pub fn resolve_links<'a>(
        &'a self,
        tenant: &'a str,
        q: &'a mut QExpr,
    ) -> Pin<Box<dyn Future<Output = NgsiResult<()>> + Send + 'a>> {
        Box::pin(async move {
            let (path, negated) = match q {
                QExpr::And(items) | QExpr::Or(items) => {
                    for item in items {
                        self.resolve_links(tenant, item).await?;
                    }
                    return Ok(());
                }
                QExpr::NotExists(path) => (path, true),
                QExpr::Exists(path) | QExpr::Compare { path, .. } => (path, false),
            };
            let Some(link) = path.link.take() else {
                return Ok(());
            };
            let rel = Path {
                link: None,
                ..path.clone()
            };
            let mut inner = match &*q {
                QExpr::Compare { op, value, .. } => QExpr::Compare {
                    path: link.path.clone(),
                    op: *op,
                    value: value.clone(),
                },
                _ => QExpr::Exists(link.path.clone()),
            };
            self.resolve_links(tenant, &mut inner).await?;
            let selectors = link
                .hint
                .iter()
                .map(|t| Selector {
                    types: Some(BoolExpr::Atom(t.clone())),
                    ..Selector::default()
                })
                .collect();
            let targets = EntityQuery {
                selectors,
                q: Some(inner),
                ..EntityQuery::default()
            };
            let (found, _) = self
                .store
                .query(tenant, &targets, 0, LINK_TARGETS, false)
                .await?;
            let ids = QValue::List(
                found
                    .iter()
                    .map(|e| {
                        QValue::Str(Text {
                            text: e.id.clone(),
                            vocab: e.id.clone(),
                        })
                    })
                    .collect(),
            );
            *q = if negated {
                QExpr::Or(vec![
                    QExpr::NotExists(rel.clone()),
                    QExpr::Compare {
                        path: rel,
                        op: Op::Ne,
                        value: ids,
                    },
                ])
            } else {
                QExpr::Compare {
                    path: rel,
                    op: Op::Eq,
                    value: ids,
                }
            };
            Ok(())
        })
    }

    /// Every entity type in the tenant with its attributes (5.7.5–5.7.7).
    pub async fn entity_types(&self, tenant: &str) -> NgsiResult<BTreeMap<String, TypeInfo>> {
        self.require_tenant(tenant).await?;
        let mut out: BTreeMap<String, TypeInfo> = BTreeMap::new();
        for e in self.store.entities(tenant).await? {
            for t in &e.types {
                let info = out.entry(t.clone()).or_default();
                info.entity_count += 1;
                for (name, instances) in &e.attrs {
                    let kinds = info.attributes.entry(name.clone()).or_default();
                    kinds.extend(instances.iter().map(|a| a.kind.name()));
                }
            }
        }
        Ok(out)
    }

    /// Every attribute in the tenant (5.7.8–5.7.10).
    pub async fn attributes(&self, tenant: &str) -> NgsiResult<BTreeMap<String, AttributeInfo>> {
        self.require_tenant(tenant).await?;
        let mut out: BTreeMap<String, AttributeInfo> = BTreeMap::new();
        for e in self.store.entities(tenant).await? {
            for (name, instances) in &e.attrs {
                let info = out.entry(name.clone()).or_default();
                info.instance_count += instances.len();
                info.kinds.extend(
                    instances
                        .iter()
                        .map(|a: &crate::model::Attribute| AttrKind::name(a.kind)),
                );
                info.types.extend(e.types.iter().cloned());
            }
        }
        Ok(out)
    }
}
