//! Entity ordering (4.23, OrderingParams 5.2.43): which members order a query's results, in which
//! direction, by distance from a reference geometry, and under which collation strings compare.
//! One comparator serves both stores, so that they page through the same order; ties fall back to
//! the id, so the order is total and stable.

use super::geo;
use super::q::{self, Path};
use crate::ld::ActiveContext;
use crate::model::Entity;
use crate::syntax::{ParseError, ParseResult};
use chrono::{DateTime, Utc};
use icu_collator::{options::CollatorOptions, CollatorBorrowed, CollatorPreferences};
use icu_locale_core::Locale;
use serde_json::Value;
use std::cmp::Ordering as Cmp;
use std::fmt;

/// What one orderBy item sorts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The entity id.
    Id,
    /// The entity's (first) type IRI.
    Type,
    /// The entity's (first) scope.
    Scope,
    /// The entity's createdAt.
    CreatedAt,
    /// The entity's modifiedAt.
    ModifiedAt,
    /// An attribute, sub-attribute, member or compound subitem, as a q path addresses it.
    Attribute(Path),
}

/// The sorting style of one orderBy item (4.23.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `asc` (the default).
    Asc,
    /// `desc`.
    Desc,
    /// `dist-asc`: nearest to the reference geometry first.
    DistAsc,
    /// `dist-desc`: farthest first.
    DistDesc,
}

/// One orderBy item.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// What is compared.
    pub target: Target,
    /// How.
    pub direction: Direction,
}

/// A collation (IETF RFC 6067 tag) and the collator it selects.
pub struct Collation {
    tag: String,
    collator: CollatorBorrowed<'static>,
}

impl fmt::Debug for Collation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Collation({})", self.tag)
    }
}

/// A parsed ordering: keys in priority order, the distance reference and the collation.
#[derive(Debug, Default, Clone)]
pub struct Ordering {
    /// The orderBy items, most significant first.
    pub keys: Vec<Key>,
    /// The reference geometry of distance ordering (orderFrom/orderGeometry, or the ordering's
    /// coordinates/geometry).
    pub from: Option<::geo::Geometry<f64>>,
    /// String comparison under a collation instead of code point order (shared: a collator is
    /// built once per request and cannot be copied).
    pub collation: Option<std::sync::Arc<Collation>>,
}

/// The raw ordering parameters of a request, before parsing.
#[derive(Debug, Default)]
pub struct OrderingText<'a> {
    /// orderBy items (already split at commas).
    pub order_by: Vec<&'a str>,
    /// The reference coordinates (a JSON array).
    pub coordinates: Option<Value>,
    /// The reference geometry type (default Point).
    pub geometry: Option<&'a str>,
    /// The collation tag.
    pub collation: Option<&'a str>,
}

/// Parses one collation tag; a tag that is not a well-formed locale identifier is refused.
pub fn parse_collation(tag: &str) -> ParseResult<Collation> {
    let bad = |why: String| ParseError::whole("collation", tag, why);
    let locale = Locale::try_from_str(tag).map_err(|e| {
        bad(format!(
            "'{tag}' is not a valid IETF BCP 47 language tag ({e:?}); use e.g. und, de or de-u-co-phonebk"
        ))
    })?;
    let collator = CollatorBorrowed::try_new(
        CollatorPreferences::from(&locale),
        CollatorOptions::default(),
    )
    .map_err(|e| bad(format!("'{tag}' cannot be honoured: {e}")))?;
    Ok(Collation {
        tag: tag.to_string(),
        collator,
    })
}

/// Parses the ordering of a request; no orderBy gives `None` (the default id order), and the
/// other ordering parameters are then still validated.
pub fn parse(text: &OrderingText, ctx: &ActiveContext) -> ParseResult<Option<Ordering>> {
    let collation = text
        .collation
        .map(parse_collation)
        .transpose()?
        .map(std::sync::Arc::new);
    let mut keys = Vec::new();
    for item in &text.order_by {
        keys.push(parse_key(item.trim(), ctx)?);
    }
    let by_distance = keys
        .iter()
        .any(|k| matches!(k.direction, Direction::DistAsc | Direction::DistDesc));
    let from = match (&text.coordinates, by_distance) {
        (None, true) => {
            return Err(ParseError::whole(
                "orderFrom",
                "",
                "ordering by distance (dist-asc, dist-desc) needs the reference coordinates",
            ))
        }
        (None, false) => None,
        (Some(coords), _) => Some(geo::reference(text.geometry.unwrap_or("Point"), coords)?),
    };
    // Ids are unique: ascending id first decides everything, which is the default order.
    let id_first = keys.first().is_none_or(|k| {
        k == &Key {
            target: Target::Id,
            direction: Direction::Asc,
        }
    });
    if id_first {
        return Ok(None);
    }
    Ok(Some(Ordering {
        keys,
        from,
        collation,
    }))
}

/// Reads one orderBy item (`name[;style]`); an error spans the offending part of the item.
fn parse_key(item: &str, ctx: &ActiveContext) -> ParseResult<Key> {
    let error = |span: std::ops::Range<usize>, why: String| {
        ParseError::at("orderBy", item, span, format!("'{item}': {why}"))
    };
    let (name, style) = item.split_once(';').unwrap_or((item, "asc"));
    let direction = match style.trim() {
        "asc" => Direction::Asc,
        "desc" => Direction::Desc,
        "dist-asc" => Direction::DistAsc,
        "dist-desc" => Direction::DistDesc,
        other => {
            return Err(error(
                name.len() + 1..item.len(),
                format!("sorting style '{other}' is not one of asc, desc, dist-asc, dist-desc"),
            ))
        }
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(ParseError::whole(
            "orderBy",
            item,
            format!("'{item}' names no member"),
        ));
    }
    let target = match name {
        "id" => Target::Id,
        "type" => Target::Type,
        "scope" => Target::Scope,
        "createdAt" => Target::CreatedAt,
        "modifiedAt" => Target::ModifiedAt,
        _ => Target::Attribute(q::parse_path(name, ctx).map_err(|e| {
            let mut why = format!("not an attribute path: {}", e.problem);
            if let Some(expected) = e.expected {
                why = format!("{why}, expected {expected}");
            }
            error(e.span, why)
        })?),
    };
    let by_distance = matches!(direction, Direction::DistAsc | Direction::DistDesc);
    if by_distance && !matches!(target, Target::Attribute(_)) {
        return Err(error(
            0..name.len(),
            format!("distance ordering needs a GeoProperty, not '{name}'"),
        ));
    }
    Ok(Key { target, direction })
}

/// A value an entity offers one key; the rank orders data types (4.23.2: numbers before strings
/// before booleans before anything else); absent values come last.
#[derive(Debug)]
enum SortValue {
    Number(f64),
    Text(String),
    Time(DateTime<Utc>),
    Bool(bool),
    Other(String),
}

impl SortValue {
    fn rank(&self) -> u8 {
        match self {
            SortValue::Number(_) => 0,
            SortValue::Text(_) | SortValue::Time(_) => 1,
            SortValue::Bool(_) => 2,
            SortValue::Other(_) => 3,
        }
    }

    fn of(v: &Value) -> SortValue {
        match v {
            Value::Number(n) => SortValue::Number(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => SortValue::Text(s.clone()),
            Value::Bool(b) => SortValue::Bool(*b),
            other => SortValue::Other(canonical(other)),
        }
    }
}

/// JSON text with object members sorted by name, so that objects compare alike whichever store
/// (and member order) they come from.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String((*k).clone()), canonical(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

impl Ordering {
    fn value(&self, key: &Key, e: &Entity) -> Option<SortValue> {
        let text = |s: &String| SortValue::Text(s.clone());
        match (&key.target, key.direction) {
            (Target::Attribute(path), Direction::DistAsc | Direction::DistDesc) => {
                let from = self.from.as_ref()?;
                e.attrs
                    .get(&path.attr)?
                    .iter()
                    .filter_map(|a| geo::geometry_of(&a.value))
                    .map(|g| geo::distance(from, &g))
                    .reduce(f64::min)
                    .map(SortValue::Number)
            }
            (Target::Id, _) => Some(text(&e.id)),
            (Target::Type, _) => e.types.first().map(text),
            (Target::Scope, _) => e.scope.as_ref().and_then(|s| s.first()).map(text),
            (Target::CreatedAt, _) => Some(SortValue::Time(e.created_at)),
            (Target::ModifiedAt, _) => Some(SortValue::Time(e.modified_at)),
            // Several values (array elements, the texts of a languageMap, whose member order
            // differs between stores): the least of them, so that the key is the same anywhere.
            (Target::Attribute(path), _) => path
                .first_values(e)?
                .iter()
                .map(|v| SortValue::of(v))
                .min_by(|a, b| self.compare_values(a, b)),
        }
    }

    fn compare_values(&self, a: &SortValue, b: &SortValue) -> Cmp {
        match (a, b) {
            (SortValue::Number(x), SortValue::Number(y)) => x.total_cmp(y),
            (SortValue::Text(x), SortValue::Text(y)) => match &self.collation {
                Some(c) => c.collator.compare(x, y),
                None => x.cmp(y),
            },
            (SortValue::Time(x), SortValue::Time(y)) => x.cmp(y),
            (SortValue::Bool(x), SortValue::Bool(y)) => x.cmp(y),
            (SortValue::Other(x), SortValue::Other(y)) => x.cmp(y),
            _ => a.rank().cmp(&b.rank()),
        }
    }

    fn compare_keys(&self, a: &[Option<SortValue>], b: &[Option<SortValue>]) -> Cmp {
        for (key, (x, y)) in self.keys.iter().zip(a.iter().zip(b)) {
            let order = match (x, y) {
                (None, None) => Cmp::Equal,
                (None, Some(_)) => Cmp::Greater,
                (Some(_), None) => Cmp::Less,
                (Some(x), Some(y)) => {
                    let o = self.compare_values(x, y);
                    match key.direction {
                        Direction::Desc | Direction::DistDesc => o.reverse(),
                        Direction::Asc | Direction::DistAsc => o,
                    }
                }
            };
            if order != Cmp::Equal {
                return order;
            }
        }
        Cmp::Equal
    }

    /// Sorts entities: key by key (absent values last whatever the direction), then by id. Each
    /// entity's keys are read once.
    pub fn sort<E: std::borrow::Borrow<Entity>>(&self, entities: Vec<E>) -> Vec<E> {
        let mut keyed: Vec<(Vec<Option<SortValue>>, E)> = entities
            .into_iter()
            .map(|e| {
                let keys = self
                    .keys
                    .iter()
                    .map(|k| self.value(k, e.borrow()))
                    .collect();
                (keys, e)
            })
            .collect();
        keyed.sort_by(|(ka, a), (kb, b)| {
            self.compare_keys(ka, kb)
                .then_with(|| a.borrow().id.cmp(&b.borrow().id))
        });
        keyed.into_iter().map(|(_, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(order_by: &str, collation: Option<&str>) -> ParseError {
        let text = OrderingText {
            order_by: vec![order_by],
            collation,
            ..OrderingText::default()
        };
        parse(&text, &ActiveContext::default()).unwrap_err()
    }

    #[test]
    fn errors_span_the_offending_part_of_the_item() {
        let e = error("name;upwards", None);
        assert_eq!((e.input, e.span.clone()), ("orderBy", 5..12));
        assert_eq!(
            e.to_string(),
            "orderBy: 'name;upwards': sorting style 'upwards' is not one of asc, desc, dist-asc, dist-desc at position 6"
        );
        let e = error("a[b;desc", None);
        assert_eq!(e.span, 1..2);
        assert!(
            e.to_string()
                .contains("not an attribute path: unclosed '['"),
            "{e}"
        );
        assert_eq!(error("id;dist-asc", None).span, 0..2);
        assert_eq!(error("name", Some("x-")).input, "collation");
        let e = error("location;dist-asc", None);
        assert_eq!(e.input, "orderFrom");
    }
}
