//! In-memory indexes of one tenant of the embedded store: entities by id (ordered, for stable
//! pages), ids by type, and an R-tree of `location` envelopes. They only narrow the candidates;
//! the query evaluator (`EntityQuery::matches`) decides, so an index can never change an answer.

use crate::model::{expiry, Entity};
use crate::query::boolean::BoolExpr;
use crate::query::geo::{envelope, geometry_of, LOCATION};
use crate::query::EntityQuery;
use chrono::{DateTime, Utc};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::RTree;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

/// An R-tree entry: the envelope of one `location` instance, its entity id and parsed geometry
/// (so that a geoQ is decided here without parsing GeoJSON again).
type Located = GeomWithData<Rectangle<[f64; 2]>, (String, Arc<geo::Geometry<f64>>)>;

/// Which entities a query looks at (see `TenantIndex::plan`).
enum Plan<'a> {
    /// These ids, in order.
    Ids(BTreeSet<String>),
    /// The ids whose `location` satisfies the geoQ, in order (the geoQ is decided).
    GeoIds(BTreeSet<String>),
    /// The ids of one type, in order, borrowed from the index.
    Type(&'a BTreeSet<String>),
    /// Every entity in id order.
    Scan,
}

/// One tenant's entities and indexes.
#[derive(Default)]
pub struct TenantIndex {
    entities: BTreeMap<String, Arc<Entity>>,
    by_type: HashMap<String, BTreeSet<String>>,
    locations: RTree<Located>,
    /// Each transient entity's next expiry (see [`Entity::next_expiry`]) and id, earliest first:
    /// what the reaper has to do, and whether a read must prune what has expired.
    expiries: BTreeSet<(DateTime<Utc>, String)>,
}

fn located(e: &Entity) -> Vec<Located> {
    e.attrs
        .get(LOCATION)
        .into_iter()
        .flatten()
        .filter(|a| a.kind == crate::model::AttrKind::GeoProperty)
        .filter_map(|a| geometry_of(&a.value))
        .filter_map(|g| {
            let bbox = envelope(&g)?;
            Some(GeomWithData::new(
                Rectangle::from_corners(bbox.lower(), bbox.upper()),
                (e.id.clone(), Arc::new(g)),
            ))
        })
        .collect()
}

impl TenantIndex {
    /// The entity with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Entity>> {
        self.entities.get(id)
    }

    /// How many entities the tenant has (transient ones not yet reaped included), without
    /// reading them: for the metrics.
    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    /// Every entity in id order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Entity>> {
        self.entities.values()
    }

    /// Adds or replaces an entity and its index entries.
    pub fn put(&mut self, entity: Arc<Entity>) {
        self.remove(&entity.id.clone());
        for t in &entity.types {
            self.by_type
                .entry(t.clone())
                .or_default()
                .insert(entity.id.clone());
        }
        for l in located(&entity) {
            self.locations.insert(l);
        }
        if let Some(t) = entity.next_expiry() {
            self.expiries.insert((t, entity.id.clone()));
        }
        self.entities.insert(entity.id.clone(), entity);
    }

    /// Removes an entity and its index entries.
    pub fn remove(&mut self, id: &str) {
        let Some(old) = self.entities.remove(id) else {
            return;
        };
        for t in &old.types {
            if let Some(ids) = self.by_type.get_mut(t) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_type.remove(t);
                }
            }
        }
        for l in located(&old) {
            self.locations.remove(&l);
        }
        if let Some(t) = old.next_expiry() {
            self.expiries.remove(&(t, id.to_string()));
        }
    }

    /// The ids of at most `limit` entities with something expired at `now`, earliest first.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<String> {
        self.expiries
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The matches of a query among the plan's candidates past `after`, as they stand at `now`:
    /// while something has expired that the reaper has not removed yet, every candidate is seen
    /// through [`expiry::live`] and checked against the whole query (an index entry may be one of
    /// what expired).
    fn matches<'a>(
        &'a self,
        query: &'a EntityQuery,
        plan: &'a Plan<'a>,
        after: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = Arc<Entity>> + 'a {
        let prune = self.expiries.first().is_some_and(|(t, _)| *t <= now);
        self.candidates(plan, after).filter_map(move |e| {
            if !prune {
                return Self::hit(query, plan, e).then(|| e.clone());
            }
            let live = expiry::live(e, now)?;
            query.matches(&live).then_some(live)
        })
    }

    /// How to enumerate candidates, cheapest first: the R-tree hits of a geoQ (few), explicit ids
    /// (few), the ids of a single type (walked in place, in order, so a page stops early), or every
    /// entity. The evaluator checks every candidate against the whole query.
    fn plan(&self, query: &EntityQuery) -> Plan<'_> {
        let geo = query.geo.as_ref().filter(|g| g.geoproperty == LOCATION);
        if let Some((g, bbox)) = geo.and_then(|g| g.bbox().map(|b| (g, b))) {
            let window = rstar::AABB::from_corners(bbox.lower(), bbox.upper());
            return Plan::GeoIds(
                self.locations
                    .locate_in_envelope_intersecting(&window)
                    .filter(|l| g.matches_geometry(&l.data.1))
                    .map(|l| l.data.0.clone())
                    .collect(),
            );
        }
        if !query.selectors.is_empty() && query.selectors.iter().all(|s| !s.ids.is_empty()) {
            return Plan::Ids(
                query
                    .selectors
                    .iter()
                    .flat_map(|s| s.ids.iter().cloned())
                    .collect(),
            );
        }
        if let [selector] = query.selectors.as_slice() {
            if let (true, Some(BoolExpr::Atom(t))) = (selector.ids.is_empty(), &selector.types) {
                return match self.by_type.get(t) {
                    Some(ids) => Plan::Type(ids),
                    None => Plan::Ids(BTreeSet::new()),
                };
            }
        }
        Plan::Scan
    }

    /// The entities a plan looks at, in id order, from the first id past `after` (every one
    /// without it).
    fn candidates<'a>(
        &'a self,
        plan: &'a Plan<'a>,
        after: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Entity>> + 'a> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let by_id = |ids: &'a BTreeSet<String>| {
            ids.range::<str, _>((from, Bound::Unbounded))
                .filter_map(|id| self.entities.get(id))
        };
        match plan {
            Plan::Ids(ids) | Plan::GeoIds(ids) => Box::new(by_id(ids)),
            Plan::Type(ids) => Box::new(by_id(ids)),
            Plan::Scan => Box::new(
                self.entities
                    .range::<str, _>((from, Bound::Unbounded))
                    .map(|(_, e)| e),
            ),
        }
    }

    /// Whether an entity the plan enumerates satisfies the query (a plan from the R-tree has
    /// decided the geoQ).
    fn hit(query: &EntityQuery, plan: &Plan<'_>, e: &Entity) -> bool {
        if matches!(plan, Plan::GeoIds(_)) {
            query.matches_except_geo(e)
        } else {
            query.matches(e)
        }
    }

    /// Runs a query: the page `[offset, offset+limit)` of matches in id order (or the query's
    /// order, which needs every match: `seen` is then the total), and the number of
    /// matches seen: all of them when `count` is asked, otherwise the scan stops at the first match
    /// past the page (enough to know whether a next page exists).
    pub fn query(
        &self,
        query: &EntityQuery,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> (Vec<Arc<Entity>>, usize) {
        let plan = self.plan(query);
        let candidates = self.matches(query, &plan, None, Utc::now());
        if query.order.is_some() {
            // Another order than ids: every match is needed before the page is known.
            let matches: Vec<Arc<Entity>> = candidates.collect();
            return query.ordered_page(matches, offset, limit);
        }
        let mut page = Vec::new();
        let mut seen = 0usize;
        for e in candidates {
            if seen >= offset && page.len() < limit {
                page.push(e);
            }
            seen += 1;
            if !count && seen > offset + limit {
                break;
            }
        }
        (page, seen)
    }

    /// The ids of at most `limit` matches past the id `after`, in id order (see
    /// [`crate::store::IdPage`]).
    pub fn matching_ids(
        &self,
        query: &EntityQuery,
        after: Option<&str>,
        limit: usize,
    ) -> crate::store::IdPage {
        let plan = self.plan(query);
        let ids: Vec<String> = self
            .matches(query, &plan, after, Utc::now())
            .take(limit)
            .map(|e| e.id.clone())
            .collect();
        let next = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
        crate::store::IdPage { ids, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ld::ActiveContext;
    use crate::model::parse::{Nulls, Reader};
    use crate::query::{geo, parse_types, Selector};
    use serde_json::{json, Value};

    fn entity(ctx: &ActiveContext, i: usize) -> Arc<Entity> {
        let kind = ["Building", "Vehicle", "Streetlight"][i % 3];
        let body = json!({
            "id": format!("urn:ngsi-ld:{kind}:{i:04}"),
            "type": kind,
            "n": i,
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [(i % 37) as f64 * 0.1, (i % 23) as f64 * 0.1]}}
        });
        let input = Reader::new(ctx, chrono::Utc::now(), Nulls::Forbidden)
            .entity(&body, true)
            .unwrap();
        Arc::new(Entity {
            id: input.id.unwrap(),
            types: input.types,
            scope: None,
            attrs: input.attrs,
            created_at: chrono::Utc::now(),
            modified_at: chrono::Utc::now(),
            expires_at: None,
        })
    }

    /// The indexes only narrow candidates: every answer equals a plain scan with the evaluator.
    #[test]
    fn indexed_answers_equal_a_full_scan() {
        let ctx = ActiveContext::build(&[&json!({"@vocab": "https://example.org/", "location": "https://uri.etsi.org/ngsi-ld/location"})], &HashMap::<String, Arc<Value>>::new()).unwrap();
        let mut index = TenantIndex::default();
        let all: Vec<Arc<Entity>> = (0..500).map(|i| entity(&ctx, i)).collect();
        for e in &all {
            index.put(e.clone());
        }
        for e in all.iter().step_by(7) {
            index.remove(&e.id);
        }
        let mut live: Vec<&Arc<Entity>> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 7 != 0)
            .map(|(_, e)| e)
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        let queries = [
            ("Building", None),
            ("Building|Vehicle", None),
            (
                "Streetlight",
                Some(("near;maxDistance==60000", "[1.0,1.0]")),
            ),
            (
                "Vehicle",
                Some(("within", "[[[0,0],[2,0],[2,1],[0,1],[0,0]]]")),
            ),
        ];
        for (types, g) in queries {
            let q = EntityQuery {
                selectors: vec![Selector {
                    types: parse_types(types, &ctx).unwrap(),
                    ..Selector::default()
                }],
                geo: g.map(|(rel, coords)| {
                    let shape = if rel == "within" { "Polygon" } else { "Point" };
                    geo::parse(rel, shape, coords, None, &ctx).unwrap()
                }),
                ..EntityQuery::default()
            };
            let expected: Vec<&str> = live
                .iter()
                .filter(|e| q.matches(e))
                .map(|e| e.id.as_str())
                .collect();
            let (page, seen) = index.query(&q, 0, 10_000, true);
            let got: Vec<&str> = page.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(got, expected, "{types} {g:?}");
            assert_eq!(seen, expected.len());
            assert!(!expected.is_empty(), "the data set exercises {types} {g:?}");
            let (first, seen) = index.query(&q, 1, 2, false);
            assert_eq!(
                first.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
                expected[1..3.min(expected.len())].to_vec()
            );
            assert_eq!(
                seen > 3,
                expected.len() > 3,
                "one match past the page tells a next page exists"
            );
        }
    }
}
