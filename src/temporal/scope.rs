//! Scope validity over time (4.18, 5.7.4.4 step 4): a scope is valid from the time it was set
//! until it is replaced or removed. Built from an entity's Scope history records, a
//! [`ScopeTimeline`] tells which scopes a temporal query's scopeQ matches within its time range,
//! when those were valid (the instances a match returns) and which scope was valid when the range
//! starts (shown with the entity).

use crate::model::Attribute;
use crate::query::boolean::BoolExpr;
use crate::query::ScopePattern;
use crate::store::history::{HistoryQuery, InstanceChange};
use chrono::{DateTime, Utc};
use std::ops::Bound;

/// When a scope record took effect: its observedAt (the Core API copies modifiedAt there), or
/// for a deletion its deletedAt.
fn set_at(r: &InstanceChange) -> DateTime<Utc> {
    r.observed_at.or(r.deleted_at).unwrap_or(r.modified_at)
}

/// The scopes a record sets; `None` for a deletion.
fn scopes_of(r: &InstanceChange) -> Option<Vec<String>> {
    let a: Attribute = r.value.as_ref()?.parse()?;
    crate::model::parse::scopes(&a.value).ok()
}

/// A time span `[start, end)` in which an entity had one set of scopes (`None`: unbounded).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// From (inclusive).
    pub start: Option<DateTime<Utc>>,
    /// Until (exclusive).
    pub end: Option<DateTime<Utc>>,
    /// The scopes valid in the span.
    pub scopes: Vec<String>,
}

impl Span {
    /// Whether the span holds an instant.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t < e)
    }

    /// Whether some instant of the span lies within the query's time range.
    fn meets(&self, range: &HistoryQuery) -> bool {
        let before_end = match (self.start, range.to) {
            (Some(s), Bound::Excluded(to)) => s < to,
            (Some(s), Bound::Included(to)) => s <= to,
            _ => true,
        };
        let after_start = match (self.end, range.from) {
            (Some(e), Bound::Included(from) | Bound::Excluded(from)) => e > from,
            _ => true,
        };
        before_end && after_start
    }
}

/// Which scopes an entity had when.
#[derive(Debug, Clone, Default)]
pub struct ScopeTimeline {
    /// The scope records in the order they took effect.
    records: Vec<InstanceChange>,
    /// The spans with a scope, in time order.
    spans: Vec<Span>,
}

impl ScopeTimeline {
    /// The timeline of an entity from its Scope history records; an entity without any (its
    /// scope predates the recording of scope history) had its `current` scope all along.
    pub fn new(mut records: Vec<InstanceChange>, current: Option<&[String]>) -> ScopeTimeline {
        records.sort_by_key(set_at);
        let mut spans: Vec<Span> = Vec::new();
        if records.is_empty() {
            spans.extend(current.map(|scopes| Span {
                start: None,
                end: None,
                scopes: scopes.to_vec(),
            }));
        }
        for r in &records {
            let t = set_at(r);
            if let Some(open) = spans.last_mut().filter(|s| s.end.is_none()) {
                open.end = Some(t);
            }
            spans.extend(scopes_of(r).map(|scopes| Span {
                start: Some(t),
                end: None,
                scopes,
            }));
        }
        spans.retain(|s| s.start.is_none() || s.start != s.end);
        ScopeTimeline { records, spans }
    }

    /// The spans within the query's time range whose scopes satisfy `scope_q`.
    pub fn matching(&self, scope_q: &BoolExpr<ScopePattern>, range: &HistoryQuery) -> Vec<Span> {
        self.spans
            .iter()
            .filter(|s| s.meets(range))
            .filter(|s| scope_q.eval(&|p: &ScopePattern| s.scopes.iter().any(|sc| p.matches(sc))))
            .cloned()
            .collect()
    }

    /// The record of the scope valid when the range starts, if it was set before then (so that
    /// the range itself does not select it).
    pub fn valid_at_start(&self, range: &HistoryQuery) -> Option<&InstanceChange> {
        let from = match range.from {
            Bound::Included(t) | Bound::Excluded(t) => t,
            Bound::Unbounded => return None,
        };
        self.records
            .iter()
            .rev()
            .find(|r| set_at(r) < from)
            .filter(|r| r.value.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::{scope_changes, scope_instance, written, SCOPE_IRI};
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap()
    }

    fn set(scopes: &[&str], at: DateTime<Utc>) -> InstanceChange {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        written(SCOPE_IRI, &scope_instance(&scopes, at))
    }

    fn between(from: u32, to: u32) -> HistoryQuery {
        HistoryQuery {
            from: Bound::Included(t(from)),
            to: Bound::Excluded(t(to)),
            ..HistoryQuery::default()
        }
    }

    fn q(text: &str) -> BoolExpr<ScopePattern> {
        crate::query::parse_scope(text).unwrap()
    }

    #[test]
    fn a_replaced_scope_is_valid_until_the_replacement() {
        let timeline = ScopeTimeline::new(vec![set(&["/S"], t(12)), set(&["/R"], t(10))], None);
        let r = timeline.matching(&q("/R"), &between(11, 13));
        assert_eq!((r[0].start, r[0].end), (Some(t(10)), Some(t(12))));
        assert!(r[0].contains(t(11)) && !r[0].contains(t(12)));
        let s = timeline.matching(&q("/S"), &between(11, 13));
        assert_eq!((s[0].start, s[0].end), (Some(t(12)), None));
        assert!(timeline.matching(&q("/R"), &between(12, 13)).is_empty());
        assert_eq!(
            timeline.valid_at_start(&between(11, 13)).map(set_at),
            Some(t(10))
        );
    }

    #[test]
    fn a_scope_set_after_the_range_or_removed_before_it_never_matches() {
        let late = ScopeTimeline::new(vec![set(&["/Z"], t(14))], None);
        assert!(late.matching(&q("/#"), &between(12, 13)).is_empty());
        assert!(late.valid_at_start(&between(12, 13)).is_none());
        let with_scope = crate::model::Entity {
            id: "urn:ngsi-ld:Room:1".into(),
            types: vec![],
            scope: Some(vec!["/A".into()]),
            attrs: Default::default(),
            created_at: t(9),
            modified_at: t(9),
            expires_at: None,
        };
        let mut records = scope_changes(None, Some(&with_scope), t(9));
        records.extend(scope_changes(Some(&with_scope), None, t(11)));
        let removed = ScopeTimeline::new(records, None);
        assert!(removed.matching(&q("/A"), &between(12, 13)).is_empty());
        assert_eq!(removed.matching(&q("/A"), &between(10, 13)).len(), 1);
        assert!(removed.valid_at_start(&between(12, 13)).is_none());
    }

    #[test]
    fn conjunctions_need_both_scopes_at_once_and_old_scopes_hold_always() {
        let both = ScopeTimeline::new(vec![set(&["/A/B", "/C"], t(10))], None);
        assert_eq!(both.matching(&q("(/A/B;/C)"), &between(12, 13)).len(), 1);
        let apart = ScopeTimeline::new(vec![set(&["/A/B"], t(10)), set(&["/C"], t(11))], None);
        assert!(apart.matching(&q("(/A/B;/C)"), &between(9, 13)).is_empty());
        let legacy = ScopeTimeline::new(Vec::new(), Some(&["/A".to_string()]));
        assert_eq!(
            legacy.matching(&q("/A"), &HistoryQuery::default())[0].start,
            None
        );
    }
}
