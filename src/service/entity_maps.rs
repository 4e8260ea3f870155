//! Entity maps (5.14, 5.5.14, 5.5.9.3): a query that asks for a map has the ids of its matching
//! entities recorded, each with the places that hold it (`@none` for the local store, otherwise
//! the ids of the registrations whose sources answered with it). Later pages of the query that
//! reference the map are answered from its candidates only, in its order, re-reading each from
//! the places the map names and re-checking the query; a candidate that is gone or no longer
//! matches is skipped and removed from the map, and the page fills up from later candidates.
//! Maps are kept per tenant in the store, expire (never served afterwards, removed on access
//! and by a periodic sweep) and live at most the configured maximum.

use super::distributed::{Found, Recheck, LOCAL};
use super::entities::Target;
use super::query::{Page, QueryResult};
use super::temporal::TemporalPage;
use super::AppState;
use crate::error::{NgsiError, NgsiResult};
use crate::federation::forward::Reach;
use crate::query::EntityQuery;
use crate::store::entity_maps::{EntityMap, MapEntry};
use crate::temporal::TemporalQuery;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// At most this many candidates of a map are re-read at once while a page is filled.
const RECHECK_CHUNK: usize = 500;

/// How often expired maps are removed from the store.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// What a read asks of entity maps (5.5.14; Table 6.4.3.2-1 `entityMap` and
/// `entityMapLifetime`, Table 6.4.3.2-2 `NGSILD-EntityMap`).
#[derive(Debug, Default, Clone)]
pub struct MapRequest {
    /// The id of the map the request references (the `NGSILD-EntityMap` header).
    pub reference: Option<String>,
    /// `entityMap=true`: the answer names the map the read used, a new one if need be.
    pub wanted: bool,
    /// `entityMapLifetime`: how long the requester would like a new map to live.
    pub lifetime: Option<TimeDelta>,
}

impl MapRequest {
    /// Whether the read uses a map at all.
    fn involved(&self) -> bool {
        self.reference.is_some() || self.wanted
    }
}

/// The map a read used, which its answer names (`NGSILD-EntityMap`).
#[derive(Debug, Clone, PartialEq)]
pub struct MapUsed {
    /// The map's id.
    pub id: String,
    /// Whether the read created it (a query then answers 201 Created).
    pub created: bool,
}

/// The entry of an assembled entity in a map: its id and where it was found.
fn entry(found: &Found) -> MapEntry {
    MapEntry(found.entity.id.clone(), found.places.clone())
}

impl AppState {
    /// When a new map expires: after the suggested lifetime, or the configured default, and
    /// never later than the configured maximum (Table 6.4.3.2-1: the broker may override the
    /// suggestion).
    fn map_expiry(&self, lifetime: Option<TimeDelta>, now: DateTime<Utc>) -> DateTime<Utc> {
        let max = self.settings.entity_map_max_lifetime;
        now + lifetime
            .unwrap_or(self.settings.entity_map_lifetime)
            .clamp(TimeDelta::zero(), max)
    }

    /// Stores a new map of these candidates.
    async fn create_map(
        &self,
        tenant: &str,
        entries: Vec<MapEntry>,
        lifetime: Option<TimeDelta>,
    ) -> NgsiResult<EntityMap> {
        let map = EntityMap {
            id: format!("urn:ngsi-ld:EntityMap:{}", uuid::Uuid::new_v4().simple()),
            expires_at: self.map_expiry(lifetime, Utc::now()),
            entries,
        };
        self.store.create_entity_map(tenant, &map).await?;
        Ok(map)
    }

    /// The live map a read references, if it references one that exists and has not expired.
    async fn referenced_map(
        &self,
        tenant: &str,
        maps: &MapRequest,
    ) -> NgsiResult<Option<EntityMap>> {
        match &maps.reference {
            Some(id) => self.store.entity_map(tenant, id, Utc::now()).await,
            None => Ok(None),
        }
    }

    /// After a read that used no live map: a new map of `entries` when the read references a
    /// map that is gone or asks for one ("a new EntityMap shall be created", 5.5.14), else none.
    async fn map_if_asked(
        &self,
        tenant: &str,
        maps: &MapRequest,
        entries: impl FnOnce() -> Vec<MapEntry>,
    ) -> NgsiResult<Option<MapUsed>> {
        if !maps.involved() {
            return Ok(None);
        }
        let map = self.create_map(tenant, entries(), maps.lifetime).await?;
        Ok(Some(MapUsed {
            id: map.id,
            created: true,
        }))
    }

    /// Create EntityMap for Query Entities (5.14.4): a map of every entity that matches the
    /// query here and at the sources (up to the largest page per place), in id order, and the
    /// warnings of the sources that failed.
    pub async fn create_query_map(
        &self,
        tenant: &str,
        query: EntityQuery,
        lifetime: Option<TimeDelta>,
        reach: &Reach,
    ) -> NgsiResult<(EntityMap, Vec<String>)> {
        let (map, _, warnings) = self.map_of_query(tenant, query, lifetime, reach).await?;
        Ok((map, warnings))
    }

    /// A new map of a query's candidates (see [`AppState::create_query_map`]), with the
    /// candidates as found.
    async fn map_of_query(
        &self,
        tenant: &str,
        query: EntityQuery,
        lifetime: Option<TimeDelta>,
        reach: &Reach,
    ) -> NgsiResult<(EntityMap, Vec<Found>, Vec<String>)> {
        let (found, warnings) = self.query_candidates(tenant, query, reach).await?;
        let map = self
            .create_map(tenant, found.iter().map(entry).collect(), lifetime)
            .await?;
        Ok((map, found, warnings))
    }

    /// Create EntityMap for Query Temporal Evolution of Entities (5.14.5): a map of the entities
    /// that match the selection and have instances the temporal query selects. Temporal
    /// queries stay local, so every entry is held here.
    pub async fn create_temporal_map(
        &self,
        tenant: &str,
        selection: EntityQuery,
        query: &TemporalQuery,
        lifetime: Option<TimeDelta>,
    ) -> NgsiResult<EntityMap> {
        let entries = self.temporal_candidates(tenant, selection, query).await?;
        self.create_map(tenant, entries, lifetime).await
    }

    /// The entities of a temporal query that may be in a map of it: those whose evolution has
    /// instances in the query's range, up to the largest page, in id order.
    async fn temporal_candidates(
        &self,
        tenant: &str,
        selection: EntityQuery,
        query: &TemporalQuery,
    ) -> NgsiResult<Vec<MapEntry>> {
        let every = Page {
            offset: 0,
            limit: self.settings.max_page_size,
        };
        let found = self
            .query_temporal(tenant, selection, query, every, false, None)
            .await?;
        Ok(found
            .entities
            .iter()
            .map(|te| MapEntry(te.entity.id.clone(), vec![LOCAL.to_string()]))
            .collect())
    }

    /// Retrieve EntityMap (5.14.1).
    pub async fn entity_map(&self, tenant: &str, id: &str) -> NgsiResult<EntityMap> {
        self.store
            .entity_map(tenant, id, Utc::now())
            .await?
            .ok_or_else(|| unknown_map(id))
    }

    /// Update EntityMap (5.14.2): only `expiresAt` can change, capped at the configured maximum
    /// lifetime from now; the output-only members (`id`, `type`, `entityMap`, `linkedMaps`) are
    /// ignored.
    pub async fn update_entity_map(
        &self,
        tenant: &str,
        id: &str,
        fragment: &Value,
    ) -> NgsiResult<()> {
        let obj = fragment
            .as_object()
            .ok_or_else(|| NgsiError::bad_data("an EntityMap fragment must be a JSON object"))?;
        let mut expires_at = None;
        for (name, value) in obj {
            match name.as_str() {
                "expiresAt" => {
                    let text = value.as_str().ok_or_else(|| {
                        NgsiError::bad_data(format!("expiresAt must be a DateTime string, not {value}"))
                    })?;
                    expires_at = Some(crate::model::validate::date_time("expiresAt", text)?);
                }
                "type" if value != "EntityMap" => {
                    return Err(NgsiError::bad_data(format!(
                        "an EntityMap's type is \"EntityMap\", not {value}"
                    )))
                }
                "id" | "type" | "entityMap" | "linkedMaps" => {}
                other => {
                    return Err(NgsiError::bad_data(format!(
                        "'{other}' is not a member of an EntityMap (5.2.39); only expiresAt can be updated"
                    )))
                }
            }
        }
        let now = Utc::now();
        let updated = match expires_at {
            Some(t) => {
                let latest = now + self.settings.entity_map_max_lifetime;
                self.store
                    .set_entity_map_expiry(tenant, id, t.min(latest), now)
                    .await?
            }
            None => self.store.entity_map(tenant, id, now).await?.is_some(),
        };
        if updated {
            Ok(())
        } else {
            Err(unknown_map(id))
        }
    }

    /// Delete EntityMap (5.14.3).
    pub async fn delete_entity_map(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        if self.store.delete_entity_map(tenant, id, Utc::now()).await? {
            Ok(())
        } else {
            Err(unknown_map(id))
        }
    }

    /// Runs a query (5.7.2) as its map request says (5.5.14): from the live map it references;
    /// with a new map of its candidates when it references one that is gone or asks for one (the
    /// page is then taken from the candidates just found); as a plain distributed query
    /// otherwise.
    pub async fn query_mapped(
        &self,
        tenant: &str,
        mut query: EntityQuery,
        page: Page,
        count: bool,
        reach: &Reach,
        maps: &MapRequest,
    ) -> NgsiResult<(QueryResult, Option<MapUsed>)> {
        if !maps.involved() {
            let result = self
                .query_distributed(tenant, query, page, count, reach)
                .await?;
            return Ok((result, None));
        }
        if let Some(map) = self.referenced_map(tenant, maps).await? {
            if let Some(q) = query.q.as_mut() {
                self.resolve_links(tenant, q).await?;
            }
            let result = self
                .map_page(tenant, &map, &query, page, count, reach)
                .await?;
            return Ok((result, Some(used(map))));
        }
        let (map, found, warnings) = self
            .map_of_query(tenant, query, maps.lifetime, reach)
            .await?;
        // The candidates were just found matching: the first page is taken from them.
        let result = QueryResult {
            seen: found.len(),
            entities: found
                .into_iter()
                .skip(page.offset)
                .take(page.limit)
                .map(|f| Arc::new(f.entity))
                .collect(),
            warnings,
        };
        Ok((
            result,
            Some(MapUsed {
                id: map.id,
                created: true,
            }),
        ))
    }

    /// Runs a temporal query (5.7.4) as its map request says (5.5.14): the entities come from
    /// the live map it references, or from a new map of its candidates when it references one
    /// that is gone or asks for one; without maps, it is the plain temporal query.
    pub async fn query_temporal_mapped(
        &self,
        tenant: &str,
        selection: EntityQuery,
        query: &TemporalQuery,
        (page, count): (Page, bool),
        maps: &MapRequest,
        (forwarded, reach): (&[(String, String)], &Reach),
    ) -> NgsiResult<(TemporalPage, Option<MapUsed>, Vec<String>)> {
        if !maps.involved() {
            let (found, warnings) = self
                .query_temporal_distributed(
                    tenant,
                    selection,
                    query,
                    (page, count),
                    forwarded,
                    reach,
                )
                .await?;
            return Ok((found, None, warnings));
        }
        let (map, created) = match self.referenced_map(tenant, maps).await? {
            Some(map) => (map, false),
            None => {
                let map = self
                    .create_temporal_map(tenant, selection.clone(), query, maps.lifetime)
                    .await?;
                (map, true)
            }
        };
        let found = self
            .query_temporal(tenant, selection, query, page, count, Some(&map))
            .await?;
        Ok((
            found,
            Some(MapUsed {
                id: map.id,
                created,
            }),
            Vec::new(),
        ))
    }

    /// Retrieves an entity (5.7.1) as its map request says (5.7.1.4): with the live map it
    /// references, only the registrations the map names for the entity are asked; otherwise the
    /// entity is retrieved as usual, and a new map of it made when the request references a map
    /// that is gone or asks for one.
    pub async fn retrieve_mapped(
        &self,
        target: &Target,
        attrs: &[String],
        reach: &Reach,
        maps: &MapRequest,
    ) -> NgsiResult<(super::distributed::Retrieved, Option<MapUsed>)> {
        if let Some(map) = self.referenced_map(&target.tenant, maps).await? {
            let places: Vec<String> = map
                .entries
                .iter()
                .find(|e| e.id() == target.id)
                .map(|e| e.places().to_vec())
                .unwrap_or_default();
            let found = self
                .retrieve_distributed(target, attrs, reach, Some(&places))
                .await?;
            return Ok((found, Some(used(map))));
        }
        let found = self
            .retrieve_distributed(target, attrs, reach, None)
            .await?;
        let used = self
            .map_if_asked(&target.tenant, maps, || {
                vec![MapEntry(target.id.clone(), found.places.clone())]
            })
            .await?;
        Ok((found, used))
    }

    /// Records an entity retrieved by the temporal API (5.7.3.4) in a map, as its map request
    /// says: a live map it references is named as it is; a new map of the entity is made when
    /// the request references a map that is gone or asks for one. Temporal retrieval is local,
    /// so the map has no registrations to narrow.
    pub async fn temporal_retrieval_map(
        &self,
        target: &Target,
        maps: &MapRequest,
    ) -> NgsiResult<Option<MapUsed>> {
        if let Some(map) = self.referenced_map(&target.tenant, maps).await? {
            return Ok(Some(used(map)));
        }
        self.map_if_asked(&target.tenant, maps, || {
            vec![MapEntry(target.id.clone(), vec![LOCAL.to_string()])]
        })
        .await
    }

    /// A page of a query answered from an entity map (5.5.9.3): the map's candidates in its
    /// order (those the query's ids name, when it names ids), each re-read from the places that
    /// hold it and checked against the query; those gone or no longer matching are removed from
    /// the map. The page fills up from later candidates; `count` checks every candidate. The
    /// query's linked entity paths are resolved already.
    pub(crate) async fn map_page(
        &self,
        tenant: &str,
        map: &EntityMap,
        query: &EntityQuery,
        page: Page,
        count: bool,
        reach: &Reach,
    ) -> NgsiResult<QueryResult> {
        // The ids the request narrows the map to (5.5.14: later requests may name ids).
        let named: Option<Vec<&String>> = (!query.selectors.is_empty()
            && query.selectors.iter().all(|s| !s.ids.is_empty()))
        .then(|| query.selectors.iter().flat_map(|s| &s.ids).collect());
        let mut candidates = map.entries.iter().filter(|e| {
            named
                .as_ref()
                .is_none_or(|n| n.iter().any(|id| *id == e.id()))
        });
        let wanted = if count {
            usize::MAX
        } else {
            page.offset + page.limit + 1
        };
        let chunk_max = RECHECK_CHUNK.min(self.settings.max_page_size).max(1);
        let (mut entities, mut warnings, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        let mut seen = 0;
        while seen < wanted {
            let chunk: Vec<&MapEntry> = candidates
                .by_ref()
                .take((wanted - seen).min(chunk_max))
                .collect();
            if chunk.is_empty() {
                break;
            }
            let (checks, failed) = self.recheck(tenant, &chunk, query, reach).await?;
            warnings.extend(failed);
            for (entry, check) in chunk.iter().zip(checks) {
                match check {
                    Recheck::Matches(entity) => {
                        if seen >= page.offset && entities.len() < page.limit {
                            entities.push(Arc::new(entity));
                        }
                        seen += 1;
                    }
                    Recheck::Gone => gone.push(entry.id().to_string()),
                    Recheck::Unknown => {}
                }
            }
        }
        if !gone.is_empty() {
            self.store.prune_entity_map(tenant, &map.id, gone).await?;
        }
        Ok(QueryResult {
            entities,
            seen,
            warnings,
        })
    }
}

/// A live map a read referenced and used.
fn used(map: EntityMap) -> MapUsed {
    MapUsed {
        id: map.id,
        created: false,
    }
}

/// ResourceNotFound for a map this tenant does not have (or no longer: it expired).
fn unknown_map(id: &str) -> NgsiError {
    NgsiError::not_found(format!(
        "there is no entity map with id '{id}' (it may have expired)"
    ))
}
