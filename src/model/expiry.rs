//! Transient entities and attributes (GS CIM 009 V1.9.1 clause 4.22): an entity, an attribute
//! instance or a sub-attribute with `expiresAt` is stored only until then. Every read shows the
//! stored state through [`live`], so nothing expired is ever served, whether or not the reaper
//! (which removes it from the current state later) has run yet.

use super::{Attribute, Entity};
use chrono::{DateTime, SecondsFormat, Utc};
use std::sync::Arc;

impl Entity {
    /// The earliest `expiresAt` anywhere in the entity (its own, an instance's or a
    /// sub-attribute's): when its stored state next changes by itself. The stores index it so
    /// that the reaper finds what is due without scanning.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        let instances = self.attrs.values().flatten().filter_map(next_in_attribute);
        self.expires_at.into_iter().chain(instances).min()
    }
}

fn next_in_attribute(a: &Attribute) -> Option<DateTime<Utc>> {
    let subs = a.sub.values().filter_map(next_in_attribute);
    a.expires_at.into_iter().chain(subs).min()
}

/// The entity as it stands at `now`: `None` once the entity itself has expired, otherwise without
/// the instances and sub-attributes that have (an attribute left with no instance is gone). The
/// stored entity is shared as it is when nothing in it has expired.
pub fn live(entity: &Arc<Entity>, now: DateTime<Utc>) -> Option<Arc<Entity>> {
    match entity.next_expiry() {
        None => Some(entity.clone()),
        Some(t) if t > now => Some(entity.clone()),
        Some(_) if entity.expires_at.is_some_and(|t| t <= now) => None,
        Some(_) => {
            let mut pruned = Entity::clone(entity);
            pruned.attrs.retain(|_, instances| {
                instances.retain_mut(|a| keep_attribute(a, now));
                !instances.is_empty()
            });
            Some(Arc::new(pruned))
        }
    }
}

/// Whether an attribute (or sub-attribute) is still stored at `now`, pruning its expired
/// sub-attributes.
fn keep_attribute(a: &mut Attribute, now: DateTime<Utc>) -> bool {
    if a.expires_at.is_some_and(|t| t <= now) {
        return false;
    }
    a.sub.retain(|_, sub| keep_attribute(sub, now));
    true
}

/// How an `expiresAt` is shown: UTC with `Z`, fractional seconds only when it has them (a value
/// given as `2030-01-01T00:00:00Z` comes back as written).
pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrKind, NameMap};
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn entity() -> Entity {
        let t0 = at("2030-01-01T00:00:00Z");
        let mut durable = Attribute::bare(AttrKind::Property, json!(1), t0);
        let mut note = Attribute::bare(AttrKind::Property, json!("n"), t0);
        note.expires_at = Some(at("2030-01-01T00:00:10Z"));
        durable.sub.insert("note".into(), note);
        let mut transient = Attribute::bare(AttrKind::Property, json!(2), t0);
        transient.dataset_id = Some("urn:d:1".into());
        transient.expires_at = Some(at("2030-01-01T00:00:20Z"));
        let mut only_transient = Attribute::bare(AttrKind::Property, json!(3), t0);
        only_transient.expires_at = Some(at("2030-01-01T00:00:30Z"));
        let mut attrs = NameMap::default();
        attrs.insert("speed".into(), vec![durable, transient]);
        attrs.insert("flash".into(), vec![only_transient]);
        Entity {
            id: "urn:e:1".into(),
            types: vec!["T".into()],
            scope: None,
            attrs,
            created_at: t0,
            modified_at: t0,
            expires_at: Some(at("2030-01-01T00:01:00Z")),
        }
    }

    #[test]
    fn next_expiry_is_the_earliest_anywhere() {
        assert_eq!(entity().next_expiry(), Some(at("2030-01-01T00:00:10Z")));
    }

    #[test]
    fn live_prunes_what_has_expired_and_nothing_else() {
        let e = Arc::new(entity());
        let before = live(&e, at("2030-01-01T00:00:09Z")).unwrap();
        assert!(
            Arc::ptr_eq(&before, &e),
            "nothing expired: the stored entity is shared"
        );
        let mid = live(&e, at("2030-01-01T00:00:20Z")).unwrap();
        assert!(
            mid.attrs["speed"][0].sub.is_empty(),
            "expired sub-attribute pruned"
        );
        assert_eq!(
            mid.attrs["speed"].len(),
            1,
            "expired dataset instance pruned"
        );
        assert!(mid.attrs.contains_key("flash"), "not yet expired");
        let late = live(&e, at("2030-01-01T00:00:30Z")).unwrap();
        assert!(
            !late.attrs.contains_key("flash"),
            "attribute with no instance left is gone"
        );
        assert!(
            live(&e, at("2030-01-01T00:01:00Z")).is_none(),
            "the entity expired"
        );
    }

    #[test]
    fn format_keeps_whole_seconds_as_written() {
        assert_eq!(format(&at("2100-01-01T00:00:00Z")), "2100-01-01T00:00:00Z");
        assert_eq!(
            format(&at("2100-01-01T00:00:00.250Z")),
            "2100-01-01T00:00:00.250Z"
        );
    }
}
