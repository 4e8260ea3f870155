//! Query and discovery operations (5.7.2, 5.7.5–5.7.10): select entities with the query engine and
//! page through them in a stable (id) order; list the types and attributes in use.

use super::Broker;
use crate::error::NgsiResult;
use crate::model::{AttrKind, Entity};
use crate::query::EntityQuery;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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

impl Broker {
    /// Runs a query over a tenant's entities; `count` asks for the total number of matches.
    pub async fn query_entities(
        &self,
        tenant: &str,
        query: &EntityQuery,
        page: Page,
        count: bool,
    ) -> NgsiResult<QueryResult> {
        self.require_tenant(tenant).await?;
        let (entities, seen) = self
            .store
            .query(tenant, query, page.offset, page.limit, count)
            .await?;
        Ok(QueryResult { entities, seen })
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
