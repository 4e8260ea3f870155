//! Merging the fragments of one entity that the broker and its sources hold (4.3.6.2, 4.3.6.7):
//! types and scopes are united; of two instances of an attribute with the same datasetId, the one
//! observed last wins, a proxied (exclusive or redirect) source wins over what is held here, and
//! an auxiliary source never wins: it only fills in what nobody else has.

use super::registration::Mode;
use crate::model::{Attribute, Entity};

/// Merges `fragment`, received from a source of this mode, into `entity`.
pub fn merge(entity: &mut Entity, fragment: Entity, mode: Mode) {
    for t in fragment.types {
        if !entity.types.contains(&t) {
            entity.types.push(t);
        }
    }
    if let Some(scopes) = fragment.scope {
        let mine = entity.scope.get_or_insert_with(Vec::new);
        for s in scopes {
            if !mine.contains(&s) {
                mine.push(s);
            }
        }
    }
    for (name, instances) in fragment.attrs {
        let mine = entity.attrs.entry(name).or_default();
        for instance in instances {
            match mine
                .iter_mut()
                .find(|a| a.dataset_id == instance.dataset_id)
            {
                None => mine.push(instance),
                Some(held) => {
                    if wins(&instance, held, mode) {
                        *held = instance;
                    }
                }
            }
        }
    }
}

/// Whether a source's instance replaces the one held.
fn wins(candidate: &Attribute, held: &Attribute, mode: Mode) -> bool {
    match mode {
        Mode::Auxiliary => false,
        Mode::Exclusive | Mode::Redirect => true,
        Mode::Inclusive => match (&candidate.observed_at, &held.observed_at) {
            (Some(c), Some(h)) => observed(c) > observed(h),
            (Some(_), None) => true,
            _ => false,
        },
    }
}

fn observed(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    crate::model::validate::date_time("observedAt", text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrKind, NameMap};
    use serde_json::json;

    fn entity(types: &[&str], attrs: &[(&str, i64, Option<&str>)]) -> Entity {
        let now = chrono::Utc::now();
        let mut map: NameMap<Vec<Attribute>> = NameMap::default();
        for (name, value, observed_at) in attrs {
            map.entry(name.to_string()).or_default().push(Attribute {
                kind: AttrKind::Property,
                value: json!(value),
                dataset_id: None,
                observed_at: observed_at.map(str::to_string),
                unit_code: None,
                object_type: None,
                created_at: now,
                modified_at: now,
                expires_at: None,
                sub: NameMap::default(),
            });
        }
        Entity {
            id: "urn:ngsi-ld:V:1".into(),
            types: types.iter().map(|t| t.to_string()).collect(),
            scope: None,
            attrs: map,
            created_at: now,
            modified_at: now,
            expires_at: None,
        }
    }

    fn value(e: &Entity, name: &str) -> i64 {
        e.attrs[name][0].value.as_i64().unwrap()
    }

    #[test]
    fn fragments_unite_and_the_last_observation_wins() {
        let mut e = entity(
            &["V"],
            &[
                ("speed", 1, Some("2024-01-01T00:00:00Z")),
                ("fuel", 5, None),
            ],
        );
        merge(
            &mut e,
            entity(
                &["V", "W"],
                &[
                    ("speed", 2, Some("2024-01-02T00:00:00Z")),
                    ("fuel", 6, None),
                    ("brand", 7, None),
                ],
            ),
            Mode::Inclusive,
        );
        assert_eq!(e.types, vec!["V", "W"]);
        assert_eq!(value(&e, "speed"), 2, "observed later");
        assert_eq!(value(&e, "fuel"), 5, "no observation: the one held stays");
        assert_eq!(value(&e, "brand"), 7, "added");
        merge(
            &mut e,
            entity(&["V"], &[("speed", 3, Some("2023-01-01T00:00:00Z"))]),
            Mode::Inclusive,
        );
        assert_eq!(value(&e, "speed"), 2, "observed earlier: not taken");
    }

    #[test]
    fn proxied_sources_win_and_auxiliary_ones_only_fill_in() {
        let mut e = entity(&["V"], &[("speed", 1, Some("2024-01-02T00:00:00Z"))]);
        merge(
            &mut e,
            entity(
                &["V"],
                &[("speed", 9, Some("2020-01-01T00:00:00Z")), ("x", 4, None)],
            ),
            Mode::Auxiliary,
        );
        assert_eq!((value(&e, "speed"), value(&e, "x")), (1, 4));
        merge(
            &mut e,
            entity(&["V"], &[("speed", 8, None)]),
            Mode::Exclusive,
        );
        assert_eq!(value(&e, "speed"), 8);
    }
}
