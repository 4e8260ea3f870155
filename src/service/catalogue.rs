//! The federation's catalogue of entity types and attributes (5.7.5–5.7.10 with 4.3.6): what
//! this broker holds, merged with what the registered context sources that offer the matching
//! type or attribute reads say they hold. Each source is asked the same question the caller
//! asked (a list, the details, or one type or attribute) and its answer is read with the @context
//! it came with; counts add up, names, kinds and types are united.

use super::query::{AttributeInfo, TypeInfo};
use super::AppState;
use crate::error::{ErrorKind, NgsiResult};
use crate::federation::forward::{Answer, Call, Reach};
use crate::federation::ops::Operation;
use crate::ld::ActiveContext;
use futures_util::future::join_all;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What a catalogue read asks: every name, the details of every name, or one name (expanded).
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// `GET /types` or `GET /attributes`.
    List,
    /// The same with `details=true`.
    Details,
    /// `GET /types/{type}` or `GET /attributes/{attrId}`.
    One(&'a str),
}

/// A catalogue with the warnings (6.3.17) of the sources that failed.
pub struct Merged<T> {
    /// Entries by expanded name.
    pub entries: BTreeMap<String, T>,
    /// NGSILD-Warning values.
    pub warnings: Vec<String>,
}

impl AppState {
    /// The entity types here and at the sources (5.7.5–5.7.7).
    pub async fn entity_types_distributed(
        &self,
        tenant: &str,
        ask: Ask<'_>,
        reach: &Reach,
    ) -> NgsiResult<Merged<TypeInfo>> {
        let op = match ask {
            Ask::List => Operation::RetrieveEntityTypes,
            Ask::Details => Operation::RetrieveEntityTypeDetails,
            Ask::One(_) => Operation::RetrieveEntityTypeInfo,
        };
        let (local, answers) = tokio::join!(
            self.entity_types(tenant),
            self.ask_catalogue(tenant, op, "types", ask, reach)
        );
        let mut entries = local_or_empty(local, answers.any())?;
        for (body, ctx) in &answers.bodies {
            for item in items(body, "typeList") {
                let Some(name) = item_name(item, "typeName") else {
                    continue;
                };
                let entry = entries.entry(ctx.expand(&name).into_owned()).or_default();
                entry.entity_count +=
                    item.get("entityCount").and_then(Value::as_u64).unwrap_or(0) as usize;
                for a in strings(item.get("attributeNames")) {
                    entry
                        .attributes
                        .entry(ctx.expand(a).into_owned())
                        .or_default();
                }
                for detail in item
                    .get("attributeDetails")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(a) = detail.get("attributeName").and_then(Value::as_str) {
                        let kinds = entry
                            .attributes
                            .entry(ctx.expand(a).into_owned())
                            .or_default();
                        kinds.extend(known_kinds(detail.get("attributeTypes")));
                    }
                }
            }
        }
        Ok(Merged {
            entries,
            warnings: answers.warnings,
        })
    }

    /// The attributes here and at the sources (5.7.8–5.7.10).
    pub async fn attributes_distributed(
        &self,
        tenant: &str,
        ask: Ask<'_>,
        reach: &Reach,
    ) -> NgsiResult<Merged<AttributeInfo>> {
        let op = match ask {
            Ask::List => Operation::RetrieveAttrTypes,
            Ask::Details => Operation::RetrieveAttrTypeDetails,
            Ask::One(_) => Operation::RetrieveAttrTypeInfo,
        };
        let (local, answers) = tokio::join!(
            self.attributes(tenant),
            self.ask_catalogue(tenant, op, "attributes", ask, reach)
        );
        let mut entries = local_or_empty(local, answers.any())?;
        for (body, ctx) in &answers.bodies {
            for item in items(body, "attributeList") {
                let Some(name) = item_name(item, "attributeName") else {
                    continue;
                };
                let entry = entries.entry(ctx.expand(&name).into_owned()).or_default();
                entry.instance_count += item
                    .get("attributeCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as usize;
                entry.kinds.extend(known_kinds(item.get("attributeTypes")));
                for t in strings(item.get("typeNames")) {
                    entry.types.insert(ctx.expand(t).into_owned());
                }
            }
        }
        Ok(Merged {
            entries,
            warnings: answers.warnings,
        })
    }

    /// Asks every live source of the tenant that offers `op` the caller's catalogue question
    /// below `/{resource}`, in parallel; a source that fails or has no such name adds nothing.
    async fn ask_catalogue(
        &self,
        tenant: &str,
        op: Operation,
        resource: &str,
        ask: Ask<'_>,
        reach: &Reach,
    ) -> Answers {
        let sources = self.sources_for(tenant, &[op], reach, |_| true);
        if sources.is_empty() {
            return Answers::default();
        }
        let Ok(caller) = self
            .contexts
            .active(reach.context.clone().map(Value::String).as_ref())
            .await
        else {
            return Answers::default();
        };
        let one = match ask {
            Ask::One(iri) => Some(caller.compact(iri).into_owned()),
            _ => None,
        };
        let mut path = vec![resource];
        if let Some(name) = &one {
            path.push(name);
        }
        let params = match ask {
            Ask::Details => vec![("details".to_string(), "true".to_string())],
            _ => Vec::new(),
        };
        let calls = sources.iter().map(|r| {
            let call = Call {
                method: reqwest::Method::GET,
                path: &path,
                params: &params,
                body: None,
            };
            self.send_to_source(r, call, reach)
        });
        let mut answers = Answers::default();
        for (r, outcome) in sources.iter().zip(join_all(calls).await) {
            match outcome {
                Ok(Answer::Json { body, link, .. }) => {
                    let context = body
                        .get("@context")
                        .cloned()
                        .or_else(|| link.map(Value::String))
                        .or_else(|| reach.context.clone().map(Value::String));
                    match self.contexts.active(context.as_ref()).await {
                        Ok(ctx) => answers.bodies.push((body, ctx)),
                        Err(e) => answers.warnings.push(
                            crate::federation::forward::Failure::invalid(e.detail).warning(r),
                        ),
                    }
                }
                Ok(Answer::NotFound) => {}
                Err(e) => {
                    tracing::warn!(registration = %r.record.id, error = %e, "a context source did not contribute");
                    answers.warnings.push(e.warning(r));
                }
            }
        }
        answers
    }
}

/// The sources' answers, each with the @context to read it with, and the warnings of the sources
/// that failed.
#[derive(Default)]
struct Answers {
    bodies: Vec<(Value, Arc<ActiveContext>)>,
    warnings: Vec<String>,
}

impl Answers {
    /// Whether some source answered.
    fn any(&self) -> bool {
        !self.bodies.is_empty()
    }
}

/// This broker's own catalogue; a tenant that does not exist here has none, which is no error
/// when a source answered for it.
fn local_or_empty<T>(
    local: NgsiResult<BTreeMap<String, T>>,
    sources_answered: bool,
) -> NgsiResult<BTreeMap<String, T>> {
    match local {
        Err(e) if e.kind == ErrorKind::NonexistentTenant && sources_answered => Ok(BTreeMap::new()),
        other => other,
    }
}

/// The entries of an answer: the names of a list (`list_member`), the objects of a details
/// array, or one object.
fn items<'a>(body: &'a Value, list_member: &str) -> Vec<&'a Value> {
    match body {
        Value::Array(items) => items.iter().collect(),
        Value::Object(o) => match o.get(list_member).and_then(Value::as_array) {
            Some(names) => names.iter().collect(),
            None => vec![body],
        },
        _ => Vec::new(),
    }
}

/// The name of an entry: the string itself (a list), or its `member`.
fn item_name(item: &Value, member: &str) -> Option<String> {
    match item {
        Value::String(s) => Some(s.clone()),
        other => other.get(member)?.as_str().map(str::to_string),
    }
}

/// The strings of a JSON array (or one string).
fn strings(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The attribute kinds of an answer that this broker knows by name (Property, Relationship,
/// ...); anything else a source says is left out.
fn known_kinds(value: Option<&Value>) -> BTreeSet<&'static str> {
    strings(value)
        .into_iter()
        .filter_map(|k| crate::model::AttrKind::from_name(k).map(|kind| kind.name()))
        .collect()
}
