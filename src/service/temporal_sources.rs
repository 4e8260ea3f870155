//! The temporal evolution of entities across the federation (5.7.3, 5.7.4 with 4.3.6): the
//! instances held here are merged with those of the registered sources that offer
//! `retrieveTemporal` or `queryTemporal` and may hold the entities. Sources are asked the caller's
//! question in the normalized representation (system times included when the time property is
//! one of them); their instances are read as records like this broker's own, so that every
//! representation, lastN and paging apply to the whole. For an aggregated query the periods are
//! computed again over the instances of every place (buckets of different places cannot be added
//! up); a source that cuts its answer (6.3.10) contributes the instances it returned.

use super::entities::Target;
use super::query::Page;
use super::temporal::{Cut, TemporalPage};
use super::AppState;
use crate::error::{ErrorKind, NgsiResult};
use crate::federation::forward::{Answer, Call, Failure, Reach};
use crate::federation::ops::Operation;
use crate::federation::Registration;
use crate::model::parse::{Nulls, Reader};
use crate::query::EntityQuery;
use crate::store::history::{self, TimeProperty};
use crate::temporal::render::{Content, TemporalEntity};
use crate::temporal::TemporalQuery;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The temporal parameters of a request that its sources are given as they came (selectors and
/// filters are given from the parsed query; representation options are not given, as sources
/// answer normalized, nor paging, asked for separately).
pub const TEMPORAL_PARAMS: &[&str] = &[
    "attrs",
    "datasetId",
    "timerel",
    "timeAt",
    "endTimeAt",
    "timeproperty",
    "lastN",
];

/// Temporal entities from the sources, by id, with the warnings of those that failed.
#[derive(Default)]
struct GatheredTemporal {
    entities: BTreeMap<String, TemporalEntity>,
    counted: usize,
    warnings: Vec<String>,
}

impl AppState {
    /// Retrieves the temporal evolution of one entity here and at its sources (5.7.3).
    pub async fn retrieve_temporal_distributed(
        &self,
        target: &Target,
        query: &TemporalQuery,
        params: &[(String, String)],
        reach: &Reach,
    ) -> NgsiResult<(TemporalEntity, Option<Cut>, Vec<String>)> {
        let sources =
            self.sources_for(&target.tenant, &[Operation::RetrieveTemporal], reach, |r| {
                r.may_hold(&target.id, &target.types)
            });
        if sources.is_empty() {
            let (te, cut) = self.retrieve_temporal(target, query).await?;
            return Ok((te, cut, Vec::new()));
        }
        let path = ["temporal", "entities", target.id.as_str()];
        let (local, gathered) = tokio::join!(
            self.retrieve_temporal(target, query),
            self.gather_temporal(&sources, &path, params.to_vec(), query, reach)
        );
        let GatheredTemporal {
            mut entities,
            warnings,
            ..
        } = gathered;
        let (mut merged, cut) = match local {
            Ok((te, cut)) => (Some(te), cut),
            Err(e) if e.kind == ErrorKind::ResourceNotFound => (None, None),
            Err(e) => return Err(e),
        };
        if let Some(remote) = entities.remove(&target.id) {
            merged = Some(
                self.merge_evolutions(&target.tenant, merged, remote, query)
                    .await?,
            );
        }
        match merged {
            Some(mut te) => {
                trim(&mut te, query);
                Ok((te, cut, warnings))
            }
            None => Err(crate::error::NgsiError::not_found(format!(
                "there is no temporal entity with id '{}'",
                target.id
            ))
            .with_warnings(warnings)),
        }
    }

    /// Queries the temporal evolution of entities here and at the sources (5.7.4): each is asked
    /// for the first `offset + limit` entities; the union is paged in id order.
    pub async fn query_temporal_distributed(
        &self,
        tenant: &str,
        selection: EntityQuery,
        query: &TemporalQuery,
        (page, count): (Page, bool),
        temporal: &[(String, String)],
        reach: &Reach,
    ) -> NgsiResult<(TemporalPage, Vec<String>)> {
        let sources = self.sources_for(tenant, &[Operation::QueryTemporal], reach, |r| {
            r.names(&selection.selectors, &query.attrs)
        });
        if sources.is_empty() {
            let result = self
                .query_temporal(tenant, selection, query, page, count, None)
                .await?;
            return Ok((result, Vec::new()));
        }
        let ctx = self
            .contexts
            .active(reach.context.clone().map(Value::String).as_ref())
            .await?;
        let want = (page.offset + page.limit).min(self.settings.max_page_size);
        let mut asked = super::distributed::query_params(&selection, &ctx);
        asked.extend(temporal.iter().cloned());
        asked.push(("limit".to_string(), want.max(1).to_string()));
        if count {
            asked.push(("count".to_string(), "true".to_string()));
        }
        let first = Page {
            offset: 0,
            limit: want,
        };
        let (local, gathered) = tokio::join!(
            self.query_temporal(tenant, selection, query, first, count, None),
            self.gather_temporal(&sources, &["temporal", "entities"], asked, query, reach)
        );
        let local = local?;
        let GatheredTemporal {
            entities: mut remote,
            counted,
            warnings,
        } = gathered;
        let mut seen = local.seen + counted;
        let mut all: BTreeMap<String, TemporalEntity> = BTreeMap::new();
        for te in local.entities {
            let id = te.entity.id.clone();
            let te = match remote.remove(&id) {
                Some(r) => {
                    seen = seen.saturating_sub(1);
                    self.merge_evolutions(tenant, Some(te), r, query).await?
                }
                None => te,
            };
            all.insert(id, te);
        }
        for (id, r) in remote {
            let te = self.merge_evolutions(tenant, None, r, query).await?;
            all.insert(id, te);
        }
        let mut entities: Vec<TemporalEntity> = all
            .into_values()
            .skip(page.offset)
            .take(page.limit)
            .collect();
        for te in &mut entities {
            trim(te, query);
        }
        if !count {
            seen = seen.max(page.offset + entities.len());
        }
        Ok((
            TemporalPage {
                entities,
                seen,
                cut: local.cut,
            },
            warnings,
        ))
    }

    /// One entity's evolution here (if held) and at the sources: the records together; for an
    /// aggregated query, the periods computed again over this broker's instances and the
    /// sources' (the buckets of different places cannot be added up: distinctCount, stddev).
    async fn merge_evolutions(
        &self,
        tenant: &str,
        here: Option<TemporalEntity>,
        remote: TemporalEntity,
        query: &TemporalQuery,
    ) -> NgsiResult<TemporalEntity> {
        let Some(aq) = query.aggregate_query() else {
            return Ok(match here {
                Some(here) => combine(here, remote),
                None => remote,
            });
        };
        let id = remote.entity.id.clone();
        let mut h = query.history.clone();
        h.last_n = None;
        let mut records: Vec<_> = self
            .store
            .history_many(tenant, std::slice::from_ref(&id), &h)
            .await?
            .into_iter()
            .flat_map(|(_, records)| records)
            .filter(|r| {
                r.attr
                    .as_ref()
                    .is_some_and(|a| query.attrs.is_empty() || query.attrs.contains(a))
                    && query
                        .dataset_ids
                        .as_ref()
                        .is_none_or(|d| d.contains(&r.dataset_id))
            })
            .collect();
        let mut merged = match here {
            Some(here) => combine(
                here,
                TemporalEntity {
                    content: Content::Instances(Vec::new()),
                    ..remote.clone()
                },
            ),
            None => TemporalEntity {
                content: Content::Instances(Vec::new()),
                ..remote.clone()
            },
        };
        if let Content::Instances(theirs) = remote.content {
            for r in theirs {
                if !records.iter().any(|m| m.instance_id == r.instance_id) {
                    records.push(r);
                }
            }
        }
        let records = h.select(records);
        let mut buckets = crate::store::aggregate::aggregate(&aq, &records);
        if let Some(n) = query.history.last_n {
            super::temporal::keep_last_buckets(&mut buckets, n);
        }
        merged.content = Content::Buckets(buckets);
        merged.emptied.clear();
        Ok(merged)
    }

    /// Asks each source `GET /{path}` with `params` and reads the temporal entities it answers.
    async fn gather_temporal(
        &self,
        sources: &[Arc<Registration>],
        path: &[&str],
        mut params: Vec<(String, String)>,
        query: &TemporalQuery,
        reach: &Reach,
    ) -> GatheredTemporal {
        if query.history.time_property != TimeProperty::ObservedAt {
            params.push(("options".to_string(), "sysAttrs".to_string()));
        }
        if query.aggregate_query().is_some() {
            // lastN counts the periods of the aggregation here, not the sources' instances.
            params.retain(|(k, _)| k != "lastN");
        }
        let calls = sources.iter().map(|r| {
            let mut params = params.clone();
            if r.local_only() {
                params.push(("local".to_string(), "true".to_string()));
            }
            async move {
                let call = Call {
                    method: reqwest::Method::GET,
                    path,
                    params: &params,
                    body: None,
                };
                self.send_to_source(r, call, reach).await
            }
        });
        let mut gathered = GatheredTemporal::default();
        for (r, outcome) in sources.iter().zip(join_all(calls).await) {
            let read = match outcome {
                Ok(Answer::NotFound) => continue,
                Ok(Answer::Json { body, link, count }) => {
                    gathered.counted += count.unwrap_or(0);
                    self.read_temporal(body, link, reach).await
                }
                Err(e) => Err(e),
            };
            match read {
                Ok(list) => {
                    for te in list {
                        let id = te.entity.id.clone();
                        let te = match gathered.entities.remove(&id) {
                            Some(before) => combine(before, te),
                            None => te,
                        };
                        gathered.entities.insert(id, te);
                    }
                }
                Err(e) => {
                    tracing::warn!(registration = %r.record.id, error = %e, "a context source did not contribute");
                    gathered.warnings.push(e.warning(r));
                }
            }
        }
        gathered
    }

    /// Reads a source's temporal answer (one entity or an array) in the normalized
    /// representation, with the @context it carries, its Link or the caller's.
    async fn read_temporal(
        &self,
        body: Value,
        link: Option<String>,
        reach: &Reach,
    ) -> Result<Vec<TemporalEntity>, Failure> {
        let items = match body {
            Value::Array(items) => items,
            one @ Value::Object(_) => vec![one],
            other => {
                return Err(Failure::invalid(format!(
                    "the answer is not a temporal entity or an array of them: {other}"
                )))
            }
        };
        let now = Utc::now();
        let mut out = Vec::new();
        for item in items {
            let context = item
                .get("@context")
                .cloned()
                .or_else(|| link.clone().map(Value::String))
                .or_else(|| reach.context.clone().map(Value::String));
            let ctx = self
                .contexts
                .active(context.as_ref())
                .await
                .map_err(|e| Failure::invalid(e.detail))?;
            let reader = Reader::new(&ctx, now, Nulls::Forbidden).temporal();
            let te = temporal_entity(&reader, &item, now)
                .map_err(|e| Failure::invalid(format!("a temporal entity of the answer: {e}")))?;
            out.push(te);
        }
        Ok(out)
    }
}

/// Members of a temporal entity that are not attributes.
const ENTITY_MEMBERS: &[&str] = &["id", "type", "@context", "scope", "createdAt", "modifiedAt"];

/// A temporal entity of a source's answer as records like this broker's own: each instance
/// read as an attribute and recorded with its own instanceId and system times when it gives
/// them.
fn temporal_entity(
    reader: &Reader<'_>,
    item: &Value,
    now: DateTime<Utc>,
) -> Result<TemporalEntity, String> {
    let obj = item.as_object().ok_or("not a JSON object")?;
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .ok_or("it has no id")?
        .to_string();
    let types = match obj.get("type") {
        Some(t) => reader.types(t).map_err(|e| e.under("type").to_string())?,
        None => Vec::new(),
    };
    let mut records = Vec::new();
    for (name, value) in obj
        .iter()
        .filter(|(k, _)| !ENTITY_MEMBERS.contains(&k.as_str()))
    {
        let iri = reader.name(name).map_err(|e| e.detail)?;
        let instances: Vec<&Value> = match value {
            Value::Array(list) => list.iter().collect(),
            one => vec![one],
        };
        for instance in instances {
            let mut instance = instance.clone();
            let own = instance
                .as_object_mut()
                .ok_or("an instance is not an object")?;
            if own.contains_key("deletedAt") {
                // A deletion the source recorded: nothing this broker can show as an instance.
                continue;
            }
            let instance_id = own
                .remove("instanceId")
                .and_then(|v| v.as_str().map(str::to_string));
            let time = |v: Option<Value>| {
                v.and_then(|v| {
                    v.as_str()
                        .and_then(|t| crate::model::validate::date_time("", t).ok())
                })
            };
            let created = time(own.remove("createdAt"));
            let modified = time(own.remove("modifiedAt"));
            for mut a in reader
                .attribute(name, &iri, &instance)
                .map_err(|e| e.under(name).to_string())?
            {
                a.created_at = created.unwrap_or(now);
                a.modified_at = modified.unwrap_or(a.created_at);
                let mut record = history::written(&iri, &a);
                if let Some(id) = &instance_id {
                    record.instance_id = id.clone();
                }
                records.push(record);
            }
        }
    }
    let input = crate::model::parse::EntityInput {
        id: Some(id),
        types,
        ..Default::default()
    };
    let entity = super::entities::new_entity(input, now).map_err(|e| e.detail)?;
    Ok(TemporalEntity {
        entity: Arc::new(entity),
        content: Content::Instances(records),
        emptied: Vec::new(),
    })
}

/// One entity's evolution from two places: types united, records together (an instance both
/// have, by instanceId, once).
fn combine(mut here: TemporalEntity, other: TemporalEntity) -> TemporalEntity {
    let mut entity = (*here.entity).clone();
    for t in &other.entity.types {
        if !entity.types.contains(t) {
            entity.types.push(t.clone());
        }
    }
    here.entity = Arc::new(entity);
    if let (Content::Instances(mine), Content::Instances(theirs)) =
        (&mut here.content, other.content)
    {
        for r in theirs {
            if !mine.iter().any(|m| m.instance_id == r.instance_id) {
                mine.push(r);
            }
        }
    }
    here.emptied.retain(|a| {
        !matches!(&here.content, Content::Instances(rs) if rs.iter().any(|r| r.attr.as_deref() == Some(a)))
    });
    here
}

/// Puts merged records in the order, and within the bounds and lastN, of the query, as the
/// store does for this broker's own.
fn trim(te: &mut TemporalEntity, query: &TemporalQuery) {
    if let Content::Instances(records) = &mut te.content {
        *records = query.history.select(std::mem::take(records));
    }
}
