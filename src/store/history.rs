//! Temporal history: what one write did to each attribute instance, computed from the entity
//! before and after it, independently of the store that keeps it. Both stores write these records
//! in the transaction that writes the entity, and answer [`HistoryQuery`]s from them.
//!
//! A record is kept for every attribute instance (attribute IRI + datasetId) that a write created
//! or whose content changed — kind, value, observedAt, unitCode, objectType or sub-attributes; the
//! system timestamps alone do not count — and for every instance that was removed (with
//! `deleted_at`). Deleting an entity also records an entity-level record (`attr` is `None`).
//!
//! The entity's Scope has a history too (4.5.6: a temporal Property whose instances carry
//! observedAt): it is recorded under the reserved attribute [`SCOPE_IRI`], one instance (its
//! value the list of scopes, observedAt a copy of modifiedAt) whenever a write sets or changes
//! the scope, and a deletion record when a write removes it.

pub use super::json_text::JsonText;
use crate::model::validate::date_time;
pub use crate::model::SCOPE_IRI;
use crate::model::{format_time, AttrKind, Attribute, Entity};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::{Bound, RangeBounds};

/// One history record: an attribute instance as a write left it, or its deletion, or (with `attr`
/// `None`) the deletion of the whole entity. Times are kept to the microsecond, as PostgreSQL does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceChange {
    /// The attribute's expanded name; `None` for an entity-level record.
    pub attr: Option<String>,
    /// The instance's datasetId; `None` for the default instance.
    pub dataset_id: Option<String>,
    /// A fresh `urn:ngsi-ld:<uuid>` naming this record.
    pub instance_id: String,
    /// The attribute kind; `None` for an entity-level record.
    pub kind: Option<AttrKind>,
    /// The whole instance in its stored (serde) form; `None` when deleted. For an entity-level
    /// record, the entity's `types` and `scope`, so that a deleted entity stays findable by type.
    pub value: Option<JsonText>,
    /// The value member when it is a number (for aggregations).
    pub num: Option<f64>,
    /// The instance's observedAt, when it has one (never on deletions).
    pub observed_at: Option<DateTime<Utc>>,
    /// When the instance (or entity) was created.
    pub created_at: DateTime<Utc>,
    /// When this record was made: the instance's modifiedAt, or the deletion time.
    pub modified_at: DateTime<Utc>,
    /// When the instance (or entity) was deleted; `None` unless this records a deletion.
    pub deleted_at: Option<DateTime<Utc>>,
    /// When the storage of the instance ends (its `expiresAt`, 4.22): from then on the record is
    /// not served either. An entity's own expiry is not copied to its instances: their history
    /// outlives it, as it outlives a deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The timestamp of a record that a [`HistoryQuery`] selects and orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeProperty {
    /// observedAt (the NGSI-LD default `timeproperty`; records without one are left out).
    ObservedAt,
    /// createdAt.
    CreatedAt,
    /// modifiedAt: when the record was made (every record has one).
    #[default]
    ModifiedAt,
    /// deletedAt (only deletion records have one).
    DeletedAt,
}

impl TimeProperty {
    /// The record's value of this timestamp.
    pub fn of(self, r: &InstanceChange) -> Option<DateTime<Utc>> {
        match self {
            TimeProperty::ObservedAt => r.observed_at,
            TimeProperty::CreatedAt => Some(r.created_at),
            TimeProperty::ModifiedAt => Some(r.modified_at),
            TimeProperty::DeletedAt => r.deleted_at,
        }
    }
}

/// Which history records of one entity to read.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// Only this attribute (expanded name); `None` for every attribute and the entity-level records.
    pub attr: Option<String>,
    /// The timestamp that `from`/`to` bound and that orders the result.
    pub time_property: TimeProperty,
    /// Lower bound of the time property.
    pub from: Bound<DateTime<Utc>>,
    /// Upper bound of the time property.
    pub to: Bound<DateTime<Utc>>,
    /// Only the last N records (by the time property) of each attribute.
    pub last_n: Option<usize>,
}

impl Default for HistoryQuery {
    /// Everything, by modifiedAt.
    fn default() -> HistoryQuery {
        HistoryQuery {
            attr: None,
            time_property: TimeProperty::default(),
            from: Bound::Unbounded,
            to: Bound::Unbounded,
            last_n: None,
        }
    }
}

impl HistoryQuery {
    /// Whether a time lies within the bounds (taken to the microsecond, as PostgreSQL does).
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        (self.from.map(micros), self.to.map(micros)).contains(&t)
    }

    /// Keeps the records the query selects, ordered by the time property, then attribute, datasetId
    /// and instanceId (absent ones first), with `last_n` applied per attribute.
    pub fn select(&self, records: Vec<InstanceChange>) -> Vec<InstanceChange> {
        let tp = self.time_property;
        let now = Utc::now();
        let mut kept: Vec<(DateTime<Utc>, InstanceChange)> = records
            .into_iter()
            .filter(|r| self.attr.is_none() || r.attr == self.attr)
            .filter(|r| r.expires_at.is_none_or(|t| t > now))
            .filter_map(|r| tp.of(&r).filter(|t| self.contains(*t)).map(|t| (t, r)))
            .collect();
        kept.sort_by(|(ta, a), (tb, b)| order(*ta, a, *tb, b));
        if let Some(n) = self.last_n {
            let mut left: HashMap<Option<String>, usize> = HashMap::new();
            let mut keep = vec![false; kept.len()];
            for (i, (_, r)) in kept.iter().enumerate().rev() {
                let seen = left.entry(r.attr.clone()).or_default();
                if *seen < n {
                    *seen += 1;
                    keep[i] = true;
                }
            }
            let mut keep = keep.into_iter();
            kept.retain(|_| keep.next() == Some(true));
        }
        kept.into_iter().map(|(_, r)| r).collect()
    }
}

/// Which history records a temporal deletion removes.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryRemoval {
    /// Every record of the entity.
    Entity,
    /// The records of one attribute (expanded name): of every datasetId (`None`), or of one
    /// (`Some(None)`: the default instance).
    Attribute {
        /// The attribute.
        attr: String,
        /// Which datasetId.
        dataset_id: Option<Option<String>>,
    },
    /// The records observed at the same time as given instances (attribute, datasetId,
    /// observedAt), which temporal provision replaces.
    Observations(Vec<(String, Option<String>, DateTime<Utc>)>),
    /// The one record with this instanceId of this attribute.
    Instance {
        /// The attribute.
        attr: String,
        /// The record's instanceId.
        instance_id: String,
    },
}

impl HistoryRemoval {
    /// Whether a record is removed.
    pub fn matches(&self, r: &InstanceChange) -> bool {
        match self {
            HistoryRemoval::Entity => true,
            HistoryRemoval::Attribute { attr, dataset_id } => {
                r.attr.as_deref() == Some(attr.as_str())
                    && dataset_id.as_ref().is_none_or(|d| *d == r.dataset_id)
            }
            HistoryRemoval::Observations(items) => items.iter().any(|(attr, dataset_id, t)| {
                r.attr.as_deref() == Some(attr.as_str())
                    && r.dataset_id == *dataset_id
                    && r.observed_at == Some(*t)
            }),
            HistoryRemoval::Instance { attr, instance_id } => {
                r.attr.as_deref() == Some(attr.as_str()) && r.instance_id == *instance_id
            }
        }
    }

    /// The attribute whose records are concerned, if only one.
    pub fn attr(&self) -> Option<&str> {
        match self {
            HistoryRemoval::Entity | HistoryRemoval::Observations(_) => None,
            HistoryRemoval::Attribute { attr, .. } | HistoryRemoval::Instance { attr, .. } => {
                Some(attr)
            }
        }
    }
}

/// The order of history results (PostgreSQL sorts the same way, with `COLLATE "C"`).
fn order(ta: DateTime<Utc>, a: &InstanceChange, tb: DateTime<Utc>, b: &InstanceChange) -> Ordering {
    ta.cmp(&tb)
        .then_with(|| a.attr.cmp(&b.attr))
        .then_with(|| a.dataset_id.cmp(&b.dataset_id))
        .then_with(|| a.instance_id.cmp(&b.instance_id))
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// A fresh `urn:ngsi-ld:<uuid>` instanceId for a history record.
pub fn fresh_instance_id() -> String {
    format!("urn:ngsi-ld:{}", uuid::Uuid::new_v4())
}

/// Whether two instances carry the same content, ignoring createdAt and modifiedAt at every level.
fn same_content(a: &Attribute, b: &Attribute) -> bool {
    a.kind == b.kind
        && a.value == b.value
        && a.dataset_id == b.dataset_id
        && a.observed_at == b.observed_at
        && a.unit_code == b.unit_code
        && a.object_type == b.object_type
        && a.sub.len() == b.sub.len()
        && a.sub
            .iter()
            .all(|(name, s)| b.sub.get(name).is_some_and(|t| same_content(s, t)))
}

/// The record of instance `a` of attribute `name` as written (also used by the temporal API to
/// record instances it is given directly).
pub fn written(name: &str, a: &Attribute) -> InstanceChange {
    InstanceChange {
        attr: Some(name.to_string()),
        dataset_id: a.dataset_id.clone(),
        instance_id: fresh_instance_id(),
        kind: Some(a.kind),
        value: Some(JsonText::of(a)),
        num: a.value.as_f64(),
        observed_at: a
            .observed_at
            .as_deref()
            .and_then(|t| date_time("observedAt", t).ok())
            .map(micros),
        created_at: micros(a.created_at),
        modified_at: micros(a.modified_at),
        deleted_at: None,
        expires_at: a.expires_at.map(micros),
    }
}

fn deleted(name: &str, a: &Attribute, now: DateTime<Utc>) -> InstanceChange {
    InstanceChange {
        attr: Some(name.to_string()),
        dataset_id: a.dataset_id.clone(),
        instance_id: fresh_instance_id(),
        kind: Some(a.kind),
        value: None,
        num: None,
        observed_at: None,
        created_at: micros(a.created_at),
        modified_at: micros(now),
        deleted_at: Some(micros(now)),
        expires_at: None,
    }
}

/// The entity Scope `scope` as a temporal Property instance set at `at` (4.5.6): its value the
/// list of scopes, observedAt a copy of modifiedAt.
pub fn scope_instance(scope: &[String], at: DateTime<Utc>) -> Attribute {
    Attribute {
        kind: AttrKind::Property,
        value: json!(scope),
        dataset_id: None,
        observed_at: Some(format_time(&at)),
        unit_code: None,
        object_type: None,
        created_at: at,
        modified_at: at,
        expires_at: None,
        sub: crate::model::NameMap::default(),
    }
}

/// The Scope records of a write that turned `old` into `new` at `now` (see [`scope_instance`]):
/// an instance when the scope was set or changed, a deletion when it was removed.
pub fn scope_changes(
    old: Option<&Entity>,
    new: Option<&Entity>,
    now: DateTime<Utc>,
) -> Vec<InstanceChange> {
    let before = old.and_then(|o| o.scope.as_ref());
    match new.and_then(|n| n.scope.as_ref().map(|s| (n, s))) {
        Some((n, after)) if before != Some(after) => {
            vec![written(SCOPE_IRI, &scope_instance(after, n.modified_at))]
        }
        Some(_) => Vec::new(),
        None => before
            .map(|_| deleted(SCOPE_IRI, &scope_instance(&[], now), now))
            .into_iter()
            .collect(),
    }
}

/// The history records of a store write decided on `current` (see [`changes`]).
pub fn records_of(current: Option<&Entity>, write: &super::Write) -> Vec<InstanceChange> {
    match write {
        super::Write::Keep => Vec::new(),
        super::Write::Put(e) => changes(current, Some(e), e.modified_at),
        super::Write::Delete => changes(current, None, Utc::now()),
    }
}

/// The history records of a write that turned `old` into `new` (`None`: no entity) at `now`, the
/// time deletions are recorded with: attribute instances, then the Scope (see
/// [`scope_changes`]), then deletions. Unchanged instances produce nothing.
pub fn changes(
    old: Option<&Entity>,
    new: Option<&Entity>,
    now: DateTime<Utc>,
) -> Vec<InstanceChange> {
    let mut out = Vec::new();
    if let Some(new) = new {
        for (name, instances) in &new.attrs {
            for a in instances {
                let before = old.and_then(|o| o.instance(name, a.dataset_id.as_deref()));
                if !before.is_some_and(|b| same_content(b, a)) {
                    out.push(written(name, a));
                }
            }
        }
    }
    out.extend(scope_changes(old, new, now));
    if let Some(old) = old {
        for (name, instances) in &old.attrs {
            for a in instances {
                let gone = new.is_none_or(|n| n.instance(name, a.dataset_id.as_deref()).is_none());
                if gone {
                    out.push(deleted(name, a, now));
                }
            }
        }
        if new.is_none() {
            out.push(InstanceChange {
                attr: None,
                dataset_id: None,
                instance_id: fresh_instance_id(),
                kind: None,
                value: Some(JsonText::of(
                    &json!({ "types": old.types, "scope": old.scope }),
                )),
                num: None,
                observed_at: None,
                created_at: micros(old.created_at),
                modified_at: micros(now),
                deleted_at: Some(micros(now)),
                expires_at: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::Value;

    const TEMP: &str = "https://example.org/temperature";
    const NAME: &str = "https://example.org/name";

    fn t(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, s).unwrap()
    }

    fn attr(value: Value, dataset_id: Option<&str>, at: DateTime<Utc>) -> Attribute {
        Attribute {
            kind: AttrKind::Property,
            value,
            dataset_id: dataset_id.map(str::to_string),
            observed_at: None,
            unit_code: None,
            object_type: None,
            created_at: at,
            modified_at: at,
            expires_at: None,
            sub: crate::model::NameMap::default(),
        }
    }

    fn entity(attrs: Vec<(&str, Vec<Attribute>)>, at: DateTime<Utc>) -> Entity {
        Entity {
            id: "urn:ngsi-ld:Room:1".into(),
            types: vec!["https://example.org/Room".into()],
            scope: None,
            attrs: attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect(),
            created_at: t(0),
            modified_at: at,
            expires_at: None,
        }
    }

    fn summary(records: &[InstanceChange]) -> Vec<(Option<&str>, Option<&str>, bool)> {
        records
            .iter()
            .map(|r| {
                (
                    r.attr.as_deref(),
                    r.dataset_id.as_deref(),
                    r.deleted_at.is_some(),
                )
            })
            .collect()
    }

    #[test]
    fn creation_records_every_instance_with_its_content() {
        let mut temp = attr(json!(21.5), None, t(0));
        temp.observed_at = Some("2024-05-01T11:59:00.123456789Z".into());
        let e = entity(
            vec![
                (
                    TEMP,
                    vec![temp.clone(), attr(json!(22), Some("urn:ds:b"), t(0))],
                ),
                (NAME, vec![attr(json!("kitchen"), None, t(0))]),
            ],
            t(0),
        );
        let records = changes(None, Some(&e), t(0));
        assert_eq!(
            summary(&records),
            vec![
                (Some(TEMP), None, false),
                (Some(TEMP), Some("urn:ds:b"), false),
                (Some(NAME), None, false)
            ]
        );
        let first = &records[0];
        assert_eq!(first.kind, Some(AttrKind::Property));
        assert_eq!(first.value, Some(JsonText::of(&temp)));
        assert_eq!(first.num, Some(21.5));
        assert_eq!(
            first.observed_at,
            Some(
                Utc.with_ymd_and_hms(2024, 5, 1, 11, 59, 0).unwrap()
                    + chrono::Duration::microseconds(123456)
            )
        );
        assert_eq!((first.created_at, first.modified_at), (t(0), t(0)));
        assert_eq!(records[1].num, Some(22.0));
        assert_eq!(records[2].num, None);
        assert!(records
            .iter()
            .all(|r| r.instance_id.starts_with("urn:ngsi-ld:")));
        assert_ne!(records[0].instance_id, records[1].instance_id);
    }

    /// An entity with a two-instance temperature (default and `urn:ds:b`) and a name.
    fn kitchen() -> Entity {
        entity(
            vec![
                (
                    TEMP,
                    vec![
                        attr(json!(20), None, t(0)),
                        attr(json!(1), Some("urn:ds:b"), t(0)),
                    ],
                ),
                (NAME, vec![attr(json!("kitchen"), None, t(0))]),
            ],
            t(0),
        )
    }

    #[test]
    fn only_changed_instances_are_recorded() {
        let old = kitchen();
        let mut new = old.clone();
        new.attrs[TEMP][1] = attr(json!(2), Some("urn:ds:b"), t(5));
        new.attrs[TEMP][1].created_at = t(0); // as a replacing write keeps it
                                              // Rewritten with the same content: only the system timestamps differ.
        new.attrs[NAME][0].modified_at = t(5);
        new.modified_at = t(5);
        let records = changes(Some(&old), Some(&new), t(5));
        assert_eq!(
            summary(&records),
            vec![(Some(TEMP), Some("urn:ds:b"), false)]
        );
        assert_eq!(records[0].modified_at, t(5));
        assert_eq!(records[0].created_at, t(0));
        assert!(changes(Some(&old), Some(&old), t(5)).is_empty());
    }

    #[test]
    fn observed_at_unit_code_and_sub_attributes_are_content() {
        let old = entity(vec![(TEMP, vec![attr(json!(20), None, t(0))])], t(0));
        let edits: [fn(&mut Attribute); 4] = [
            |a| a.observed_at = Some("2024-05-01T12:00:00Z".into()),
            |a| a.unit_code = Some("CEL".into()),
            |a| a.kind = AttrKind::JsonProperty,
            |a| {
                a.sub
                    .insert(NAME.into(), attr(json!("x"), None, a.created_at));
            },
        ];
        for edit in edits {
            let mut new = old.clone();
            edit(&mut new.attrs[TEMP][0]);
            assert_eq!(changes(Some(&old), Some(&new), t(1)).len(), 1);
        }
        let mut with_sub = old.clone();
        with_sub.attrs[TEMP][0]
            .sub
            .insert(NAME.into(), attr(json!("x"), None, t(0)));
        let mut sub_touched = with_sub.clone();
        sub_touched.attrs[TEMP][0].sub[NAME].modified_at = t(9);
        assert!(changes(Some(&with_sub), Some(&sub_touched), t(9)).is_empty());
        sub_touched.attrs[TEMP][0].sub[NAME].value = json!("y");
        assert_eq!(changes(Some(&with_sub), Some(&sub_touched), t(9)).len(), 1);
    }

    #[test]
    fn removed_instances_and_attributes_are_recorded_as_deleted() {
        let old = kitchen();
        let mut new = old.clone();
        new.attrs[TEMP].remove(1);
        new.attrs.shift_remove(NAME);
        let records = changes(Some(&old), Some(&new), t(7));
        assert_eq!(
            summary(&records),
            vec![
                (Some(TEMP), Some("urn:ds:b"), true),
                (Some(NAME), None, true)
            ]
        );
        for r in &records {
            assert_eq!(
                (r.value.is_none(), r.num, r.observed_at),
                (true, None, None)
            );
            assert_eq!(
                (r.modified_at, r.deleted_at, r.created_at),
                (t(7), Some(t(7)), t(0))
            );
            assert_eq!(r.kind, Some(AttrKind::Property));
        }
    }

    #[test]
    fn entity_deletion_deletes_every_instance_and_records_the_entity() {
        let old = entity(vec![(TEMP, vec![attr(json!(20), None, t(0))])], t(3));
        let records = changes(Some(&old), None, t(8));
        assert_eq!(
            summary(&records),
            vec![(Some(TEMP), None, true), (None, None, true)]
        );
        let e = &records[1];
        assert_eq!(
            (e.kind, e.deleted_at, e.created_at),
            (None, Some(t(8)), t(0))
        );
        assert_eq!(
            e.value.as_ref().map(JsonText::json),
            Some(json!({"types": ["https://example.org/Room"], "scope": null}))
        );
        assert!(changes(None, None, t(8)).is_empty());
    }

    #[test]
    fn scope_changes_are_instances_observed_when_made_and_its_removal_a_deletion() {
        let mut old = kitchen();
        old.scope = Some(vec!["/A".into()]);
        let set = changes(None, Some(&old), t(0));
        assert_eq!(summary(&set).last(), Some(&(Some(SCOPE_IRI), None, false)));
        let mut new = old.clone();
        new.modified_at = t(4);
        assert!(
            changes(Some(&old), Some(&new), t(4)).is_empty(),
            "same scope"
        );
        new.scope = Some(vec!["/B".into(), "/C".into()]);
        let changed = changes(Some(&old), Some(&new), t(4));
        assert_eq!(summary(&changed), vec![(Some(SCOPE_IRI), None, false)]);
        let r = &changed[0];
        assert_eq!((r.observed_at, r.modified_at), (Some(t(4)), t(4)));
        let a: Attribute = r.value.as_ref().unwrap().parse().unwrap();
        assert_eq!(a.value, json!(["/B", "/C"]));
        assert_eq!(a.observed_at, Some(format_time(&t(4))));
        new.scope = None;
        let removed = changes(Some(&old), Some(&new), t(6));
        assert_eq!(summary(&removed), vec![(Some(SCOPE_IRI), None, true)]);
        let gone = changes(Some(&old), None, t(8));
        assert!(summary(&gone).contains(&(Some(SCOPE_IRI), None, true)));
    }

    #[test]
    fn queries_filter_order_and_keep_the_last_n_per_attribute() {
        let mut records = Vec::new();
        for s in [3, 1, 2] {
            let e = entity(
                vec![
                    (TEMP, vec![attr(json!(s), None, t(s))]),
                    (NAME, vec![attr(json!(s), None, t(s))]),
                ],
                t(s),
            );
            records.extend(changes(None, Some(&e), t(s)));
        }
        let q = HistoryQuery {
            attr: Some(TEMP.into()),
            ..HistoryQuery::default()
        };
        let nums = |rs: &[InstanceChange]| rs.iter().map(|r| r.num.unwrap()).collect::<Vec<_>>();
        assert_eq!(nums(&q.select(records.clone())), vec![1.0, 2.0, 3.0]);
        let q = HistoryQuery {
            from: Bound::Excluded(t(1)),
            ..HistoryQuery::default()
        };
        let all = q.select(records.clone());
        assert_eq!(nums(&all), vec![2.0, 2.0, 3.0, 3.0]);
        assert_eq!(
            all[0].attr.as_deref(),
            Some(NAME),
            "attribute order breaks time ties"
        );
        let q = HistoryQuery {
            to: Bound::Included(t(2)),
            last_n: Some(1),
            ..HistoryQuery::default()
        };
        assert_eq!(nums(&q.select(records.clone())), vec![2.0, 2.0]);
        let q = HistoryQuery {
            time_property: TimeProperty::ObservedAt,
            ..HistoryQuery::default()
        };
        assert!(q.select(records).is_empty(), "no record has an observedAt");
    }
}
