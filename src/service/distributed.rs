//! Distributed reads (4.3.6): retrieving and querying entities consult the registrations of the
//! tenant that may hold data the request asks for, in parallel with the local store, and merge
//! the fragments of each entity (see [`crate::federation::merge`]). Filters (q, geoQ, scopeQ,
//! attrs) and paging are applied to the assembled entities, never pushed down to a source that
//! may hold only a fragment of an entity (4.3.6.7): one whose registration names attributes, or
//! any source when entities may be split (5.7.2.4: `splitEntities=true`, or the deployment's
//! `--split-entities`). Sources of whole entities run the filters and send one page. Without matching registrations, or with
//! `local=true`, both are the local operations unchanged. Writes are in
//! [`super::forwarding`].

use super::entities::{new_entity, Target};
use super::query::{Page, QueryResult};
use super::AppState;
use crate::error::{NgsiError, NgsiResult};
use crate::federation::forward::{Answer, Call, Failure, Reach};
use crate::federation::merge::merge;
use crate::federation::ops::Operation;
use crate::federation::Registration;
use crate::ld::ActiveContext;
use crate::model::parse::{Nulls, Reader};
use crate::model::Entity;
use crate::query::{EntityQuery, Selector};
use crate::store::entity_maps::MapEntry;
use chrono::Utc;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::sync::Arc;

impl AppState {
    /// The live registrations of the tenant that serve `op` and pass `wanted`; none when the
    /// request stays local, has looped back here (its Via names this broker) or the tenant has
    /// no registrations.
    pub(crate) fn sources_for(
        &self,
        tenant: &str,
        ops: &[Operation],
        reach: &Reach,
        wanted: impl Fn(&Registration) -> bool,
    ) -> Vec<Arc<Registration>> {
        let all = self.registry.of(tenant);
        if all.is_empty() || reach.local || self.sources.looped(reach) {
            return Vec::new();
        }
        let now = Utc::now();
        all.iter()
            .filter(|r| {
                r.is_live(now)
                    && ops.iter().any(|op| r.serves(*op))
                    && !self.sources.resting(r)
                    && reach.csf.as_ref().is_none_or(|csf| r.satisfies(csf))
                    && wanted(r)
            })
            .cloned()
            .collect()
    }

    /// Retrieves an entity (5.7.1) from the local store and the sources that may hold part of
    /// it; `attrs` (expanded, empty for all) narrows what is asked of each source. With `places`
    /// (the entry of an entity map in use, 5.5.14), only the registrations it names are asked.
    /// Answers where the entity was found (the places of an entity map entry).
    pub async fn retrieve_distributed(
        &self,
        target: &Target,
        attrs: &[String],
        reach: &Reach,
        places: Option<&[String]>,
    ) -> NgsiResult<Retrieved> {
        // A source that offers no retrieval by id is asked by query for the one id (5.7.1 is
        // served by any of retrieveEntity, queryEntity and queryBatch at the source).
        let ways = [
            Operation::RetrieveEntity,
            Operation::QueryEntity,
            Operation::QueryBatch,
        ];
        let sources = self.sources_for(&target.tenant, &ways, reach, |r| {
            r.may_hold(&target.id, &target.types) && places.is_none_or(|p| p.contains(&r.record.id))
        });
        if sources.is_empty() {
            return Ok(Retrieved {
                entity: self.retrieve_entity(target).await?,
                warnings: Vec::new(),
                places: vec![LOCAL.to_string()],
            });
        }
        let ctx = self.caller_context(reach).await?;
        let asks = sources.iter().filter_map(|r| {
            let mut params = Vec::new();
            let narrowed = narrowed(r, &[], attrs);
            if let Some(names) = &narrowed {
                if names.is_empty() {
                    return None;
                }
                params.push(("attrs".to_string(), compacted(names, &ctx)));
            }
            let by_id = r.serves(Operation::RetrieveEntity);
            let types = if target.types.is_empty() && !by_id {
                r.types_of(&target.id)
            } else {
                target.types.clone()
            };
            if !types.is_empty() {
                params.push(("type".to_string(), compacted(&types, &ctx)));
            }
            if r.local_only() {
                params.push(("local".to_string(), "true".to_string()));
            }
            let id = target.id.clone();
            Some(async move {
                if by_id {
                    self.ask(r.clone(), vec!["entities", &id], params, None, reach)
                        .await
                } else {
                    params.push(("id".to_string(), id));
                    self.ask_query(r.clone(), params, reach).await
                }
            })
        });
        let (local, answers) =
            tokio::join!(self.store.get(&target.tenant, &target.id), join_all(asks));
        let mut assembled = indexmap::IndexMap::new();
        if let Some(e) = local?
            .filter(|e| target.types.is_empty() || e.types.iter().any(|t| target.types.contains(t)))
        {
            assembled.insert(e.id.clone(), Found::local(&e));
        }
        let mut warnings = Vec::new();
        for mut answer in answers {
            answer.entities.retain(|f| f.id == target.id);
            assemble(&mut assembled, &mut warnings, answer);
        }
        match assembled.swap_remove(&target.id) {
            Some(Found { entity, places }) => Ok(Retrieved {
                entity: Arc::new(entity),
                warnings,
                places,
            }),
            None => Err(NgsiError::not_found(format!(
                "there is no entity with id '{}'",
                target.id
            ))
            .with_warnings(warnings)),
        }
    }

    /// The live registrations of the tenant that a query may need: those that serve queries and
    /// name what the query selects.
    fn query_sources(
        &self,
        tenant: &str,
        query: &EntityQuery,
        reach: &Reach,
    ) -> Vec<Arc<Registration>> {
        let ways = [Operation::QueryEntity, Operation::QueryBatch];
        self.sources_for(tenant, &ways, reach, |r| {
            r.names(&query.selectors, &query.attrs)
        })
    }

    /// Runs a query (5.7.2) over the local store and the sources that may hold matching
    /// entities (see [`AppState::gather`]), paged in id order.
    pub async fn query_distributed(
        &self,
        tenant: &str,
        query: EntityQuery,
        page: Page,
        count: bool,
        reach: &Reach,
    ) -> NgsiResult<QueryResult> {
        let sources = self.query_sources(tenant, &query, reach);
        if sources.is_empty() {
            return self.query_entities(tenant, query, page, count).await;
        }
        Ok(self
            .gather(tenant, query, page, count, &sources, reach)
            .await?
            .page(page))
    }

    /// Every entity that matches a query here and at its sources, up to the largest page per
    /// place, in the order of the query's pages, with the places that hold each: the candidates
    /// of an entity map (5.14.4).
    pub(crate) async fn query_candidates(
        &self,
        tenant: &str,
        query: EntityQuery,
        reach: &Reach,
    ) -> NgsiResult<(Vec<Found>, Vec<String>)> {
        let every = Page {
            offset: 0,
            limit: self.settings.max_page_size,
        };
        let sources = self.query_sources(tenant, &query, reach);
        if sources.is_empty() {
            let found = self.query_entities(tenant, query, every, false).await?;
            return Ok((
                found.entities.iter().map(|e| Found::local(e)).collect(),
                Vec::new(),
            ));
        }
        let gathered = self
            .gather(tenant, query, every, false, &sources, reach)
            .await?;
        let mut found = gathered.found;
        found.sort_by(|a, b| a.entity.id.cmp(&b.entity.id));
        Ok((found, gathered.warnings))
    }

    /// The matches of a query among the local store and the sources: candidates are the entities
    /// the selectors pick, here and at each source; they are assembled by id, then filtered by
    /// the whole query. Sources of whole entities run the query themselves for the first
    /// `offset + limit` (see [`AppState::gather_whole`]).
    async fn gather(
        &self,
        tenant: &str,
        query: EntityQuery,
        page: Page,
        count: bool,
        sources: &[Arc<Registration>],
        reach: &Reach,
    ) -> NgsiResult<Gathered> {
        if query.order.is_some() {
            return Err(NgsiError::bad_data(
                "ordering (orderBy) is not supported for a query that registered context sources take part in; add local=true to order the entities held here",
            ));
        }
        let mut query = query;
        if let Some(q) = query.q.as_mut() {
            self.resolve_links(tenant, q).await?;
        }
        let ctx = self.caller_context(reach).await?;
        let split = reach.split_entities.unwrap_or(self.settings.split_entities);
        if !split
            && sources
                .iter()
                .all(|r| r.attributes_for(&query.selectors).is_none())
        {
            return self
                .gather_whole(tenant, &query, page, count, sources, &ctx, reach)
                .await;
        }
        let cap = self.settings.max_page_size;
        let mut base = selector_params(&query.selectors, &ctx);
        if !base.iter().any(|(k, _)| k == "type") {
            if query.attrs.is_empty() {
                // A source answers no query without a type or attrs (5.7.2); the local part stands.
                let want = (page.offset + page.limit).min(cap);
                let (local, seen) = self.store.query(tenant, &query, 0, want, count).await?;
                let found: Vec<Found> = local.iter().map(|e| Found::local(e)).collect();
                return Ok(Gathered {
                    seen: if count { seen } else { seen.max(found.len()) },
                    found,
                    warnings: Vec::new(),
                });
            }
            base.push(("attrs".to_string(), compacted(&query.attrs, &ctx)));
        }
        let candidates = EntityQuery {
            selectors: query.selectors.clone(),
            ..EntityQuery::default()
        };
        let asks = sources.iter().map(|r| {
            let mut params = base.clone();
            // A source of fragments is asked for the entities and attributes it holds.
            if !params.iter().any(|(k, _)| k == "id") {
                if let Some(ids) = r.ids_for(&query.selectors) {
                    params.push(("id".to_string(), ids.join(",")));
                }
            }
            if !params.iter().any(|(k, _)| k == "attrs") {
                if let Some(names) = narrowed(r, &query.selectors, &[]).filter(|n| !n.is_empty()) {
                    params.push(("attrs".to_string(), compacted(&names, &ctx)));
                }
            }
            params.push(("limit".to_string(), cap.to_string()));
            if r.local_only() {
                params.push(("local".to_string(), "true".to_string()));
            }
            self.ask_query(r.clone(), params, reach)
        });
        let (local, answers) = tokio::join!(
            self.store.query(tenant, &candidates, 0, cap, false),
            join_all(asks)
        );
        let mut assembled: indexmap::IndexMap<String, Found> = local?
            .0
            .iter()
            .map(|e| (e.id.clone(), Found::local(e)))
            .collect();
        let mut warnings = Vec::new();
        for answer in answers {
            assemble(&mut assembled, &mut warnings, answer);
        }
        let found: Vec<Found> = assembled
            .into_values()
            .filter(|f| query.matches(&f.entity))
            .collect();
        Ok(Gathered {
            seen: found.len(),
            found,
            warnings,
        })
    }

    /// The matches of a query over sources that hold whole entities (their registrations name
    /// no attributes, and the deployment or the query rules split entities out, 5.7.2.4): each
    /// source and the local store run the whole query (filters, attrs) for the first
    /// `offset + limit` entities, and the answers are merged. The count adds the counts each
    /// gave, less the entities seen in more than one place.
    #[allow(clippy::too_many_arguments)]
    async fn gather_whole(
        &self,
        tenant: &str,
        query: &EntityQuery,
        page: Page,
        count: bool,
        sources: &[Arc<Registration>],
        ctx: &ActiveContext,
        reach: &Reach,
    ) -> NgsiResult<Gathered> {
        let want = (page.offset + page.limit).min(self.settings.max_page_size);
        // One more than the page needs tells whether a next page exists.
        let ask = (want + 1).min(self.settings.max_page_size);
        let mut base = query_params(query, ctx);
        base.push(("limit".to_string(), ask.to_string()));
        if count {
            base.push(("count".to_string(), "true".to_string()));
        }
        let asks = sources.iter().map(|r| {
            let mut params = base.clone();
            if r.local_only() {
                params.push(("local".to_string(), "true".to_string()));
            }
            self.ask_query(r.clone(), params, reach)
        });
        let (local, answers) = tokio::join!(
            self.store.query(tenant, query, 0, want, count),
            join_all(asks)
        );
        let (local, mut seen) = local?;
        let mut warnings = Vec::new();
        let mut assembled: indexmap::IndexMap<String, Found> = local
            .iter()
            .map(|e| (e.id.clone(), Found::local(e)))
            .collect();
        for answer in answers {
            let before = assembled.len();
            let given = answer.entities.len();
            let counted = answer.count.unwrap_or(given);
            assemble(&mut assembled, &mut warnings, answer);
            // Entities already here from another place are counted once.
            seen += counted.saturating_sub(given - (assembled.len() - before));
        }
        let found: Vec<Found> = assembled.into_values().collect();
        if !count {
            seen = seen.max(found.len());
        }
        Ok(Gathered {
            found,
            seen,
            warnings,
        })
    }

    /// Re-reads candidates of an entity map (5.5.9.3) from the places the map names for each, and
    /// only from those (5.5.14: the map decides which registrations match), and checks them
    /// against the query, whose linked entity paths are resolved already. One answer per
    /// candidate, in order, and the warnings of the sources that failed.
    pub(crate) async fn recheck(
        &self,
        tenant: &str,
        candidates: &[&MapEntry],
        query: &EntityQuery,
        reach: &Reach,
    ) -> NgsiResult<(Vec<Recheck>, Vec<String>)> {
        let registrations = self.registry.of(tenant);
        let stays = reach.local || self.sources.looped(reach);
        let now = Utc::now();
        let mut asked: indexmap::IndexMap<&str, Vec<&str>> = indexmap::IndexMap::new();
        let mut local = Vec::new();
        for entry in candidates {
            for place in entry.places() {
                if place == LOCAL {
                    local.push(entry.id());
                } else {
                    asked.entry(place.as_str()).or_default().push(entry.id());
                }
            }
        }
        // Entities held where they cannot be asked now: nothing is known of them.
        let mut unknown: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut to_ask = Vec::new();
        for (place, ids) in &asked {
            let registration = registrations.iter().find(|r| r.record.id == *place);
            match registration {
                _ if stays => unknown.extend(ids),
                Some(r)
                    if r.is_live(now)
                        && (r.serves(Operation::QueryEntity)
                            || r.serves(Operation::QueryBatch)) =>
                {
                    if self.sources.resting(r) {
                        unknown.extend(ids);
                    } else {
                        to_ask.push((r.clone(), ids));
                    }
                }
                // A registration deleted or expired since: its source no longer holds anything.
                _ => {}
            }
        }
        let mut asks = Vec::with_capacity(to_ask.len());
        if !to_ask.is_empty() {
            let ctx = self.caller_context(reach).await?;
            for (r, ids) in to_ask {
                let mut params = recheck_params(ids, query, &ctx);
                if r.local_only() {
                    params.push(("local".to_string(), "true".to_string()));
                }
                asks.push(self.ask_query(r, params, reach));
            }
        }
        let reads = local.iter().map(|id| self.store.get(tenant, id));
        let (local, answers) = tokio::join!(join_all(reads), join_all(asks));
        let mut assembled: indexmap::IndexMap<String, Found> = indexmap::IndexMap::new();
        for e in local
            .into_iter()
            .collect::<NgsiResult<Vec<_>>>()?
            .into_iter()
            .flatten()
        {
            assembled.insert(e.id.clone(), Found::local(&e));
        }
        let mut warnings = Vec::new();
        for answer in answers {
            if answer.warning.is_some() {
                if let Some(ids) = asked.get(answer.registration.record.id.as_str()) {
                    unknown.extend(ids);
                }
            }
            assemble(&mut assembled, &mut warnings, answer);
        }
        let checks = candidates
            .iter()
            .map(|entry| match assembled.swap_remove(entry.id()) {
                Some(found) if query.matches(&found.entity) => Recheck::Matches(found.entity),
                _ if unknown.contains(entry.id()) => Recheck::Unknown,
                _ => Recheck::Gone,
            })
            .collect();
        Ok((checks, warnings))
    }

    /// The active context of the caller, with which names are compacted for the sources (which
    /// get the same context as a Link).
    async fn caller_context(&self, reach: &Reach) -> NgsiResult<Arc<ActiveContext>> {
        let link = reach.context.clone().map(Value::String);
        self.contexts.active(link.as_ref()).await
    }

    /// Asks one source a query given as the parameters of `GET /entities`: so, when it offers
    /// queryEntity, else as the body of `POST /entityOperations/query` (queryBatch).
    async fn ask_query(
        &self,
        registration: Arc<Registration>,
        params: Vec<(String, String)>,
        reach: &Reach,
    ) -> Contribution {
        if registration.serves(Operation::QueryEntity) {
            return self
                .ask(registration, vec!["entities"], params, None, reach)
                .await;
        }
        let (body, params) = query_body(params);
        let path = vec!["entityOperations", "query"];
        self.ask(registration, path, params, Some(body), reach)
            .await
    }

    /// Asks one source and reads the entities it answers with; a source that fails or answers
    /// with something that is not NGSI-LD contributes nothing (and is logged).
    async fn ask(
        &self,
        registration: Arc<Registration>,
        path: Vec<&str>,
        params: Vec<(String, String)>,
        body: Option<Value>,
        reach: &Reach,
    ) -> Contribution {
        let call = Call {
            method: if body.is_some() {
                reqwest::Method::POST
            } else {
                reqwest::Method::GET
            },
            path: &path,
            params: &params,
            body: body.as_ref(),
        };
        let answer = self.send_to_source(&registration, call, reach).await;
        let entities = match answer {
            Ok(Answer::NotFound) => Ok((Vec::new(), None)),
            Ok(Answer::Json { body, link, count }) => self
                .read_entities(
                    body,
                    link.or_else(|| reach.context.clone()).map(Value::String),
                )
                .await
                .map(|entities| (entities, count))
                .map_err(Failure::invalid),
            Err(e) => Err(e),
        };
        match entities {
            Ok((entities, count)) => Contribution {
                registration,
                entities,
                count,
                warning: None,
            },
            Err(e) => {
                tracing::warn!(registration = %registration.record.id, error = %e, "a context source did not contribute");
                Contribution {
                    warning: Some(e.warning(&registration)),
                    registration,
                    entities: Vec::new(),
                    count: None,
                }
            }
        }
    }

    /// Reads the entities a source sent (one entity or an array: an answer, a notification's
    /// data) with the @context each carries, else `context` (the answer's Link, or the one the
    /// request was sent with; the core context when None).
    pub(crate) async fn read_entities(
        &self,
        json: Value,
        context: Option<Value>,
    ) -> Result<Vec<Entity>, String> {
        let items = match json {
            Value::Array(items) => items,
            one @ Value::Object(_) => vec![one],
            other => {
                return Err(format!(
                    "the answer is not an entity or an array of entities: {other}"
                ))
            }
        };
        let now = Utc::now();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let context = item.get("@context").cloned().or_else(|| context.clone());
            let ctx = self
                .contexts
                .active(context.as_ref())
                .await
                .map_err(|e| e.detail)?;
            let input = Reader::new(&ctx, now, Nulls::Forbidden)
                .entity(&item, true)
                .map_err(|e| format!("an entity of the answer is not valid NGSI-LD: {e}"))?;
            out.push(new_entity(input, now).map_err(|e| e.detail)?);
        }
        Ok(out)
    }
}

/// The place of this broker's own store in an entity map (5.2.39).
pub const LOCAL: &str = "@none";

/// An entity assembled from the places that hold (part of) it: [`LOCAL`] for the local store,
/// otherwise the ids of the registrations whose sources answered with it.
pub(crate) struct Found {
    /// The assembled entity.
    pub entity: Entity,
    /// Where its parts came from.
    pub places: Vec<String>,
}

impl Found {
    /// An entity of the local store.
    pub fn local(e: &Entity) -> Found {
        Found {
            entity: e.clone(),
            places: vec![LOCAL.to_string()],
        }
    }
}

/// A retrieved entity (5.7.1), the warnings of the sources that failed, and where it was found.
pub struct Retrieved {
    /// The entity, its fragments merged.
    pub entity: Arc<Entity>,
    /// NGSILD-Warning values of the sources that failed (6.3.17).
    pub warnings: Vec<String>,
    /// [`LOCAL`] and the ids of the registrations whose sources contributed.
    pub places: Vec<String>,
}

/// What re-reading a candidate of an entity map found (see [`AppState::recheck`]).
pub(crate) enum Recheck {
    /// It still matches the query: the entity, assembled from its places.
    Matches(Entity),
    /// It is gone from every place that held it, or no longer matches: the map drops it.
    Gone,
    /// A place that holds it could not be asked (it failed, is cooling down, or the request
    /// stays local): nothing is known, and the map keeps it.
    Unknown,
}

/// The matches of a distributed query before paging.
struct Gathered {
    found: Vec<Found>,
    /// Matches seen: the total when counted, else at least one past the page when there is a
    /// next page.
    seen: usize,
    warnings: Vec<String>,
}

impl Gathered {
    /// The page of the matches in id order (the order of a federated query).
    fn page(self, page: Page) -> QueryResult {
        let mut matches = self.found;
        matches.sort_by(|a, b| a.entity.id.cmp(&b.entity.id));
        let entities = matches
            .into_iter()
            .skip(page.offset)
            .take(page.limit)
            .map(|f| Arc::new(f.entity))
            .collect();
        QueryResult {
            entities,
            seen: self.seen,
            warnings: self.warnings,
        }
    }
}

/// What one source contributed to a read: the entities (or fragments) it answered with, and the
/// total it counted (NGSILD-Results-Count) when asked to.
struct Contribution {
    registration: Arc<Registration>,
    entities: Vec<Entity>,
    count: Option<usize>,
    /// The NGSILD-Warning value when the source failed.
    warning: Option<String>,
}

/// Adds a source's entities to those assembled so far, merging the fragments of one entity and
/// recording the source's registration among the places of each. A failed source's warning goes
/// to `warnings`.
fn assemble(
    assembled: &mut indexmap::IndexMap<String, Found>,
    warnings: &mut Vec<String>,
    answer: Contribution,
) {
    warnings.extend(answer.warning);
    let place = &answer.registration.record.id;
    for fragment in answer.entities {
        match assembled.get_mut(&fragment.id) {
            Some(found) => {
                merge(&mut found.entity, fragment, answer.registration.mode);
                if !found.places.contains(place) {
                    found.places.push(place.clone());
                }
            }
            None => {
                assembled.insert(
                    fragment.id.clone(),
                    Found {
                        entity: fragment,
                        places: vec![place.clone()],
                    },
                );
            }
        }
    }
}

/// A whole query (selectors and filters) as the parameters of `GET /entities` at a source,
/// names compacted with the caller's context.
pub fn query_params(query: &EntityQuery, ctx: &ActiveContext) -> Vec<(String, String)> {
    let mut params = selector_params(&query.selectors, ctx);
    params.extend(filter_params(query, ctx));
    params
}

/// The query's filters as a source reads them with the caller's context: q, geoQ, scopeQ and
/// attrs, names compacted as the caller wrote them.
fn filter_params(query: &EntityQuery, ctx: &ActiveContext) -> Vec<(String, String)> {
    let mut params = Vec::new();
    if let Some(q) = &query.q {
        params.push(("q".to_string(), q.compacted(ctx).to_string()));
    }
    if let Some(geo) = &query.geo {
        for (k, v) in geo.to_params() {
            let v = match k {
                "geoproperty" => ctx.compact(&v).into_owned(),
                _ => v,
            };
            params.push((k.to_string(), v));
        }
    }
    if let Some(scope) = &query.scope {
        params.push(("scopeQ".to_string(), scope.to_string()));
    }
    if !query.attrs.is_empty() {
        params.push(("attrs".to_string(), compacted(&query.attrs, ctx)));
    }
    params
}

/// What a source is asked to re-read candidates of an entity map: their ids, with the query's
/// types, or else its attrs, or else its filters (a source answers no query without a
/// restriction, 5.7.2).
fn recheck_params(ids: &[&str], query: &EntityQuery, ctx: &ActiveContext) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = selector_params(&query.selectors, ctx)
        .into_iter()
        .filter(|(k, _)| k == "type")
        .collect();
    if params.is_empty() {
        if query.attrs.is_empty() {
            params.extend(filter_params(query, ctx));
        } else {
            params.push(("attrs".to_string(), compacted(&query.attrs, ctx)));
        }
    }
    params.push(("id".to_string(), ids.join(",")));
    params.push(("limit".to_string(), ids.len().to_string()));
    params
}

/// The attributes to ask a source for: those it names for the selected entities, within the
/// requested ones (`requested` empty: all). None: no narrowing (the source names every
/// attribute and the caller asked for all).
fn narrowed(
    registration: &Registration,
    selectors: &[Selector],
    requested: &[String],
) -> Option<Vec<String>> {
    match registration.attributes_for(selectors) {
        None if requested.is_empty() => None,
        None => Some(requested.to_vec()),
        Some(names) => {
            let mut names: Vec<String> = names
                .into_iter()
                .filter(|n| requested.is_empty() || requested.contains(n))
                .collect();
            names.sort();
            Some(names)
        }
    }
}

/// A query given as `GET /entities` parameters, as a Query (5.2.23) for `POST
/// /entityOperations/query` and the parameters that stay in the URL (limit, offset, count,
/// local).
fn query_body(params: Vec<(String, String)>) -> (Value, Vec<(String, String)>) {
    let mut body = serde_json::Map::new();
    body.insert("type".into(), json!("Query"));
    let mut url = Vec::new();
    let mut geo = serde_json::Map::new();
    let (mut ids, mut selector) = (Vec::new(), serde_json::Map::new());
    for (k, v) in params {
        match k.as_str() {
            "type" | "idPattern" => {
                selector.insert(k, json!(v));
            }
            "id" => ids.extend(v.split(',').map(str::to_string)),
            "attrs" => {
                body.insert(k, json!(v.split(',').collect::<Vec<_>>()));
            }
            "q" | "scopeQ" => {
                body.insert(k, json!(v));
            }
            "geometry" | "georel" | "geoproperty" => {
                geo.insert(k, json!(v));
            }
            "coordinates" => {
                geo.insert(k, serde_json::from_str(&v).unwrap_or(json!(v)));
            }
            _ => url.push((k, v)),
        }
    }
    let entities: Vec<Value> = if ids.is_empty() {
        (!selector.is_empty())
            .then(|| Value::Object(selector.clone()))
            .into_iter()
            .collect()
    } else {
        ids.into_iter()
            .map(|id| {
                let mut one = selector.clone();
                one.remove("idPattern");
                one.insert("id".into(), json!(id));
                Value::Object(one)
            })
            .collect()
    };
    if !entities.is_empty() {
        body.insert("entities".into(), Value::Array(entities));
    }
    if !geo.is_empty() {
        body.insert("geoQ".into(), Value::Object(geo));
    }
    (Value::Object(body), url)
}

/// Names compacted with the caller's context, comma-separated.
fn compacted(names: &[String], ctx: &ActiveContext) -> String {
    names
        .iter()
        .map(|n| ctx.compact(n).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// The query parameters that ask a source for the candidates of the selectors: every type they
/// name, their ids, and the id pattern of a single selector (a superset of what they select,
/// which the assembled entities are filtered by afterwards).
fn selector_params(selectors: &[Selector], ctx: &ActiveContext) -> Vec<(String, String)> {
    let mut types: Vec<String> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for s in selectors {
        if let Some(t) = &s.types {
            for atom in t.atoms() {
                if !types.contains(atom) {
                    types.push(atom.clone());
                }
            }
        }
        ids.extend(s.ids.iter().cloned());
    }
    let mut params = Vec::new();
    if !types.is_empty() {
        params.push(("type".to_string(), compacted(&types, ctx)));
    }
    if !ids.is_empty() && selectors.iter().all(|s| !s.ids.is_empty()) {
        params.push(("id".to_string(), ids.join(",")));
    }
    if let [only] = selectors {
        if let (Some(p), true) = (&only.id_pattern, only.ids.is_empty()) {
            params.push(("idPattern".to_string(), p.as_str().to_string()));
        }
    }
    params
}
