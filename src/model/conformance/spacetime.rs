//! The space-time checks of a twin (issue 18 item 3): its GeoProperties lie within its
//! territory (a bbox or polygon, longitude/latitude), no `observedAt` lies further in the future
//! than the clock skew allowed, and every `unitCode` is a UN/CEFACT Recommendation 20 code
//! (`smart-data-models/unit-codes.txt`, generated).

use super::{Finding, Mode, Rule, Scope};
use crate::model::{AttrKind, Attribute, Entity};
use chrono::{DateTime, TimeDelta, Utc};
use geo::{Coord, LineString, Polygon, Relate};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::LazyLock;

/// The Recommendation 20 codes, one a line.
const UNIT_CODES: &str = include_str!("../../../smart-data-models/unit-codes.txt");

static CODES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| UNIT_CODES.lines().collect());

/// Whether a code is a UN/CEFACT Recommendation 20 unit code.
pub fn is_unit_code(code: &str) -> bool {
    CODES.contains(code)
}

/// The space-time checks of a territory as given: the `territory` member of a binding set
/// through the admin API (or in a `[[data-models]]` table), whose type and mode it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Area {
    /// The territory as `[west, south, east, north]` (degrees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
    /// The territory as a ring of `[longitude, latitude]` positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<Vec<[f64; 2]>>,
    /// How far in the future (seconds past the broker's clock) an observedAt may lie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_future_seconds: Option<i64>,
    /// Whether every unitCode must be a UN/CEFACT Recommendation 20 code.
    #[serde(default)]
    pub unit_codes: bool,
}

/// One `[[territory]]` table of the configuration: the space-time checks of a tenant's entities
/// (of one type, or of every type), and what a finding does. The checks' members are those of
/// [`Area`], in the table itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TerritoryConfig {
    /// The tenant ("" the default one, "*" every tenant).
    #[serde(default)]
    pub tenant: String,
    /// The expanded entity type checked; every type when not given.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_iri: Option<String>,
    /// The territory as `[west, south, east, north]` (degrees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
    /// The territory as a ring of `[longitude, latitude]` positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<Vec<[f64; 2]>>,
    /// How far in the future (seconds past the broker's clock) an observedAt may lie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_future_seconds: Option<i64>,
    /// Whether every unitCode must be a UN/CEFACT Recommendation 20 code.
    #[serde(default)]
    pub unit_codes: bool,
    /// Refuse or flag what breaks the checks.
    pub mode: Mode,
}

impl TerritoryConfig {
    /// The checks of the table.
    pub fn area(&self) -> Area {
        Area {
            bbox: self.bbox,
            polygon: self.polygon.clone(),
            max_future_seconds: self.max_future_seconds,
            unit_codes: self.unit_codes,
        }
    }
}

/// The space-time checks of one table, ready to run.
#[derive(Debug, Clone)]
pub struct Territory {
    area: Option<Polygon<f64>>,
    max_future: Option<TimeDelta>,
    unit_codes: bool,
}

/// The name findings of these checks give as their source.
pub const SOURCE: &str = "territory";

impl Territory {
    /// The checks an area configures; an error says what is wrong with it.
    pub fn new(c: &Area) -> Result<Territory, String> {
        let ring: Option<Vec<Coord<f64>>> = match (&c.bbox, &c.polygon) {
            (Some(_), Some(_)) => {
                return Err("a territory has a bbox or a polygon, not both".into())
            }
            (Some([w, s, e, n]), None) if w < e && s < n => Some(
                [[*w, *s], [*e, *s], [*e, *n], [*w, *n], [*w, *s]]
                    .map(|[x, y]| Coord { x, y })
                    .to_vec(),
            ),
            (Some(b), None) => {
                return Err(format!(
                    "the territory bbox {b:?} is not [west, south, east, north]"
                ))
            }
            (None, Some(p)) if p.len() >= 3 => {
                Some(p.iter().map(|&[x, y]| Coord { x, y }).collect())
            }
            (None, Some(_)) => return Err("a territory polygon needs 3 positions or more".into()),
            (None, None) => None,
        };
        Ok(Territory {
            area: ring.map(|r| Polygon::new(LineString::new(r), Vec::new())),
            max_future: c.max_future_seconds.map(TimeDelta::seconds),
            unit_codes: c.unit_codes,
        })
    }

    /// The findings on the attributes of an entity within `scope`, at time `now`.
    pub fn check(&self, entity: &Entity, scope: Scope, now: DateTime<Utc>, out: &mut Vec<Finding>) {
        for (iri, instances) in &entity.attrs {
            if scope.covers(iri, Some(instances)) {
                out.extend(self.check_instances(iri, instances, now));
            }
        }
    }

    /// The finding of the first instance of an attribute (sub-attributes included) that breaks
    /// a check.
    pub fn check_instances(
        &self,
        iri: &str,
        instances: &[Attribute],
        now: DateTime<Utc>,
    ) -> Option<Finding> {
        let (rule, detail) = instances.iter().find_map(|a| self.broken(a, now))?;
        Some(Finding {
            rule,
            attribute: iri.to_string(),
            model: SOURCE.into(),
            version: String::new(),
            detail,
        })
    }

    fn broken(&self, a: &Attribute, now: DateTime<Utc>) -> Option<(Rule, String)> {
        if let (Some(area), AttrKind::GeoProperty) = (&self.area, a.kind) {
            let inside = geometry(&a.value).is_some_and(|g| area.relate(&g).is_covers());
            if !inside {
                return Some((
                    Rule::Territory,
                    "its geometry lies outside the territory".into(),
                ));
            }
        }
        if let (Some(skew), Some(observed)) = (self.max_future, &a.observed_at) {
            let at = crate::model::validate::date_time("", observed).ok()?;
            if at > now + skew {
                return Some((
                    Rule::ObservedAt,
                    format!(
                        "its observedAt {observed} lies more than {}s in the future",
                        skew.num_seconds()
                    ),
                ));
            }
        }
        if let (true, Some(code)) = (self.unit_codes, &a.unit_code) {
            if !is_unit_code(code) {
                return Some((
                    Rule::UnitCode,
                    format!("'{code}' is not a UN/CEFACT Recommendation 20 unit code"),
                ));
            }
        }
        a.sub.values().find_map(|s| self.broken(s, now))
    }
}

/// The geometry of a GeoProperty value (the parser has checked it), if it has coordinates.
fn geometry(value: &serde_json::Value) -> Option<geo::Geometry<f64>> {
    let kind = value.get("type")?.as_str()?;
    crate::model::validate::geometry_of_type(kind, value.get("coordinates")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn territory(toml_text: &str) -> Territory {
        let table: TerritoryConfig = toml::from_str(toml_text).unwrap();
        Territory::new(&table.area()).unwrap()
    }

    fn findings(t: &Territory, a: Attribute) -> Vec<Rule> {
        t.check_instances("urn:a", &[a], Utc::now())
            .map(|f| f.rule)
            .into_iter()
            .collect()
    }

    fn geo(lon: f64, lat: f64) -> Attribute {
        let mut a = Attribute::bare(
            AttrKind::GeoProperty,
            json!({"type": "Point", "coordinates": [lon, lat]}),
            Utc::now(),
        );
        a.kind = AttrKind::GeoProperty;
        a
    }

    #[test]
    fn a_point_outside_the_bbox_or_polygon_is_found() {
        let madrid = territory("mode = \"reject\"\nbbox = [-3.9, 40.3, -3.5, 40.6]");
        assert_eq!(findings(&madrid, geo(-3.7, 40.4)), []);
        assert_eq!(findings(&madrid, geo(2.17, 41.38)), [Rule::Territory]);
        let triangle =
            territory("mode = \"flag\"\npolygon = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]");
        assert_eq!(findings(&triangle, geo(1.0, 1.0)), []);
        assert_eq!(findings(&triangle, geo(9.0, 9.0)), [Rule::Territory]);
    }

    #[test]
    fn observed_at_beyond_the_skew_and_unknown_unit_codes_are_found() {
        let t = territory("mode = \"reject\"\nmax-future-seconds = 60\nunit-codes = true");
        let mut a = Attribute::bare(AttrKind::Property, json!(1), Utc::now());
        a.observed_at = Some(crate::model::format_time(
            &(Utc::now() + TimeDelta::seconds(30)),
        ));
        a.unit_code = Some("GQ".into());
        assert_eq!(findings(&t, a.clone()), []);
        a.observed_at = Some(crate::model::format_time(
            &(Utc::now() + TimeDelta::hours(1)),
        ));
        assert_eq!(findings(&t, a.clone()), [Rule::ObservedAt]);
        a.observed_at = None;
        a.unit_code = Some("ug/m3".into());
        assert_eq!(findings(&t, a), [Rule::UnitCode]);
    }

    #[test]
    fn the_code_list_holds_recommendation_20_and_every_code_of_units_json() {
        assert!(is_unit_code("MTR") && is_unit_code("C62") && !is_unit_code("XBA"));
        assert_eq!(CODES.len(), 1756);
        for (_, rule) in crate::model::conformance::rules::bundled()
            .values()
            .flat_map(|m| &m.attributes)
        {
            for code in rule.unit_codes.iter().flatten() {
                assert!(is_unit_code(code), "{code}");
            }
        }
    }

    #[test]
    fn a_bad_territory_is_refused() {
        let bad: TerritoryConfig =
            toml::from_str("mode = \"reject\"\nbbox = [1.0, 1.0, 0.0, 0.0]").unwrap();
        assert!(Territory::new(&bad.area()).is_err());
    }
}
