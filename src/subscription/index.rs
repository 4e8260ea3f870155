//! The live subscriptions of a tenant indexed by what a change must carry to concern them: its
//! entity id, or one of its types. Matching a change then looks at the few subscriptions it can
//! concern instead of every subscription of the tenant (with 1,000 subscriptions of one entity
//! each and 5,000 changes a second, five million matches a second otherwise).

use crate::query::boolean::BoolExpr;
use crate::query::EntityQuery;
use std::collections::{HashMap, HashSet};

/// What an entity must have for a subscription to possibly concern it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Anchor {
    /// This id.
    Id(String),
    /// This type (expanded).
    Type(String),
    /// Nothing in particular: every change is a candidate.
    Any,
}

/// The anchors of a subscription's entity selectors: an entity that matches the query has at
/// least one of them (an entity matches a selector with ids by its id, one with a type expression
/// by a type the expression needs, one with neither by anything).
pub fn anchors(query: &EntityQuery) -> Vec<Anchor> {
    if query.selectors.is_empty() {
        return vec![Anchor::Any];
    }
    let mut out = Vec::new();
    for s in &query.selectors {
        if !s.ids.is_empty() {
            out.extend(s.ids.iter().cloned().map(Anchor::Id));
        } else if let Some(types) = &s.types {
            out.extend(needed_types(types).into_iter().map(Anchor::Type));
        } else {
            return vec![Anchor::Any];
        }
    }
    out
}

/// Types one of which every entity that satisfies the expression has: an atom's own; any of an
/// alternative's branches' sets; one conjunct's set (all must hold, so the first will do).
fn needed_types(expr: &BoolExpr<String>) -> Vec<String> {
    match expr {
        BoolExpr::Atom(t) => vec![t.clone()],
        BoolExpr::Or(items) => items.iter().flat_map(needed_types).collect(),
        BoolExpr::And(items) => items.first().map(needed_types).unwrap_or_default(),
    }
}

/// Values (live subscriptions) by key, and the keys by anchor.
#[derive(Debug)]
pub struct Index<V> {
    entries: HashMap<String, (V, Vec<Anchor>)>,
    by_id: HashMap<String, HashSet<String>>,
    by_type: HashMap<String, HashSet<String>>,
    any: HashSet<String>,
}

impl<V> Default for Index<V> {
    fn default() -> Self {
        Index {
            entries: HashMap::new(),
            by_id: HashMap::new(),
            by_type: HashMap::new(),
            any: HashSet::new(),
        }
    }
}

impl<V: Clone> Index<V> {
    /// Adds (or replaces) the value of `key`, found by changes with one of `anchors` (none: kept
    /// for [`Self::get`] and [`Self::iter`], never a candidate).
    pub fn insert(&mut self, key: String, anchors: Vec<Anchor>, value: V) {
        self.remove(&key);
        for a in &anchors {
            match a {
                Anchor::Id(id) => self.by_id.entry(id.clone()).or_default(),
                Anchor::Type(t) => self.by_type.entry(t.clone()).or_default(),
                Anchor::Any => &mut self.any,
            }
            .insert(key.clone());
        }
        self.entries.insert(key, (value, anchors));
    }

    /// Removes the value of `key`.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let (value, anchors) = self.entries.remove(key)?;
        for a in anchors {
            let (map, k) = match a {
                Anchor::Id(id) => (&mut self.by_id, id),
                Anchor::Type(t) => (&mut self.by_type, t),
                Anchor::Any => {
                    self.any.remove(key);
                    continue;
                }
            };
            if let Some(keys) = map.get_mut(&k) {
                keys.remove(key);
                if keys.is_empty() {
                    map.remove(&k);
                }
            }
        }
        Some(value)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Every key and value.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter().map(|(k, (v, _))| (k, v))
    }

    /// The values a change of the entity with this id and these types can concern.
    pub fn candidates(&self, id: &str, types: &[String]) -> Vec<V> {
        let mut keys: HashSet<&String> = self.any.iter().collect();
        keys.extend(self.by_id.get(id).into_iter().flatten());
        for t in types {
            keys.extend(self.by_type.get(t).into_iter().flatten());
        }
        keys.into_iter()
            .filter_map(|k| self.get(k).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Selector;

    fn selector(ids: &[&str], types: Option<BoolExpr<String>>) -> Selector {
        Selector {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            id_pattern: None,
            types,
        }
    }

    fn atom(t: &str) -> BoolExpr<String> {
        BoolExpr::Atom(t.to_string())
    }

    fn query(selectors: Vec<Selector>) -> EntityQuery {
        EntityQuery {
            selectors,
            ..EntityQuery::default()
        }
    }

    #[test]
    fn anchors_follow_ids_then_the_types_an_expression_needs() {
        let q = query(vec![
            selector(&["urn:a"], Some(atom("T"))),
            selector(&[], Some(BoolExpr::Or(vec![atom("A"), atom("B")]))),
            selector(&[], Some(BoolExpr::And(vec![atom("C"), atom("D")]))),
        ]);
        assert_eq!(
            anchors(&q),
            vec![
                Anchor::Id("urn:a".into()),
                Anchor::Type("A".into()),
                Anchor::Type("B".into()),
                Anchor::Type("C".into()),
            ]
        );
        assert_eq!(anchors(&query(vec![])), vec![Anchor::Any]);
        let pattern_only = query(vec![selector(&["urn:x"], None), selector(&[], None)]);
        assert_eq!(anchors(&pattern_only), vec![Anchor::Any]);
    }

    #[test]
    fn candidates_are_found_by_id_type_or_anything_and_forgotten_on_removal() {
        let mut index = Index::default();
        index.insert("by-id".into(), vec![Anchor::Id("urn:a".into())], 1);
        index.insert("by-type".into(), vec![Anchor::Type("T".into())], 2);
        index.insert("any".into(), vec![Anchor::Any], 3);
        index.insert("unanchored".into(), Vec::new(), 5);
        let sorted = |mut v: Vec<i32>| {
            v.sort();
            v
        };
        assert_eq!(
            sorted(index.candidates("urn:a", &["T".into()])),
            vec![1, 2, 3]
        );
        assert_eq!(sorted(index.candidates("urn:b", &["U".into()])), vec![3]);
        index.insert("by-id".into(), vec![Anchor::Type("U".into())], 4);
        assert_eq!(sorted(index.candidates("urn:a", &["U".into()])), vec![3, 4]);
        assert_eq!(index.remove("any"), Some(3));
        assert_eq!(index.remove("by-id"), Some(4));
        assert_eq!(
            sorted(index.candidates("urn:a", &["U".into(), "T".into()])),
            vec![2]
        );
        assert!(index.by_id.is_empty() && index.any.is_empty());
        assert_eq!(
            index.get("unanchored"),
            Some(&5),
            "kept, though never a candidate"
        );
    }
}
