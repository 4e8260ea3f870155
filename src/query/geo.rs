//! geoQ (GS CIM 009 V1.9.1 clause 4.10): the geo-query of GET /entities (`georel`, `geometry`,
//! `coordinates`, `geoproperty`), of POST /entityOperations/query and of subscriptions (`geoQ`),
//! parsed once into a [`GeoQuery`] and evaluated against expanded entities.
//!
//! Semantics. The georel relates the ENTITY geometry (the value of its GeoProperty `geoproperty`,
//! default `location`) to the QUERY geometry: `within` means the entity geometry is within the
//! query geometry, `contains` that the entity geometry contains it. Every relation but `near` is
//! the DE-9IM predicate of the same name (geo's `Relate`, on longitude/latitude as planar
//! coordinates, as GeoJSON and PostGIS `geometry` do). An entity with several instances of the
//! GeoProperty (datasetIds) matches when any instance does; an entity without it matches nothing,
//! not even `disjoint`.
//!
//! `near` is a distance on the sphere in metres (haversine, mean radius 6 371 008.8 m) between the
//! query geometry and the CLOSEST point of the entity geometry: 0 when they intersect, else the
//! least great-circle distance from the query point to the entity's points and edges (each edge
//! taken as a great-circle arc); for an extended query geometry, the least of that distance from
//! every query vertex to the entity and from every entity vertex to the query geometry, which is
//! exact for two non-intersecting sets of segments. `maxDistance` keeps distance <= max,
//! `minDistance` distance >= min (both may be given: a ring). Approximations: "inside a polygon"
//! is decided in the lon/lat plane while edges are great-circle arcs, so the two disagree slightly
//! near long edges; altitudes are ignored; the antimeridian is not wrapped for polygons.
//!
//! Validation follows the clause 4.10 grammar where it is explicit (georel names, distances are
//! positive numbers in metres, geometry names, coordinates a JSON array of positions in range,
//! rings closed with at least 4 positions) and is permissive where it is silent: `near` takes any
//! of the six geometries, both distance modifiers may be combined, a self-intersecting query
//! polygon is not refused.

use crate::ld::active::ActiveContext;
use crate::model::{validate, AttrKind, Entity};
use crate::syntax::body::{BodyError, BodyResult};
use crate::syntax::{ParseError, ParseResult};
use geo::{
    BoundingRect, Closest, Coord, CoordsIter, Distance, Geometry, Haversine, HaversineClosestPoint,
    Intersects, Line, LinesIter, Point, Relate,
};
use rstar::AABB;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;

/// The expanded IRI of the default geoproperty, `location`.
pub const LOCATION: &str = "https://uri.etsi.org/ngsi-ld/location";

/// Metres per degree of a great circle at the haversine mean radius (6 371 008.8 m).
pub const METRES_PER_DEGREE: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;

const GEORELS: &str = "near;maxDistance==<metres>, near;minDistance==<metres>, within, contains, intersects, overlaps, disjoint or equals";

/// The geo-relationship of a geo-query (clause 4.10).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GeoRel {
    /// Within `max_distance` metres and/or at least `min_distance` metres away (at least one given).
    Near {
        /// `maxDistance`: distance <= this many metres.
        max_distance: Option<f64>,
        /// `minDistance`: distance >= this many metres.
        min_distance: Option<f64>,
    },
    /// The entity geometry is within the query geometry.
    Within,
    /// The entity geometry contains the query geometry.
    Contains,
    /// They share at least one point.
    Intersects,
    /// They share interior points of the same dimension, and each has points outside the other.
    Overlaps,
    /// They share no point.
    Disjoint,
    /// They are topologically equal.
    Equals,
}

impl fmt::Display for GeoRel {
    /// The georel in request syntax, e.g. `near;maxDistance==1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeoRel::Near {
                max_distance,
                min_distance,
            } => {
                f.write_str("near")?;
                if let Some(m) = max_distance {
                    write!(f, ";maxDistance=={m}")?;
                }
                if let Some(m) = min_distance {
                    write!(f, ";minDistance=={m}")?;
                }
                Ok(())
            }
            GeoRel::Within => f.write_str("within"),
            GeoRel::Contains => f.write_str("contains"),
            GeoRel::Intersects => f.write_str("intersects"),
            GeoRel::Overlaps => f.write_str("overlaps"),
            GeoRel::Disjoint => f.write_str("disjoint"),
            GeoRel::Equals => f.write_str("equals"),
        }
    }
}

/// A parsed, validated geo-query.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoQuery {
    /// The relationship.
    pub rel: GeoRel,
    /// The query (reference) geometry, x = longitude, y = latitude.
    pub geometry: Geometry<f64>,
    /// The GeoProperty tested, as an expanded IRI ([`LOCATION`] by default).
    pub geoproperty: String,
    /// The query geometry as a GeoJSON geometry object, as given (for SQL `ST_GeomFromGeoJSON`
    /// and for printing the query back).
    pub geojson: Value,
}

/// Parses the query-parameter form of a geo-query (`georel`, `geometry`, `coordinates`,
/// `geoproperty`); `coordinates` is the JSON array text, URL-decoded or not.
pub fn parse(
    georel: &str,
    geometry: &str,
    coordinates: &str,
    geoproperty: Option<&str>,
    ctx: &ActiveContext,
) -> ParseResult<GeoQuery> {
    let rel = parse_georel(georel)?;
    let coords = parse_coordinates_text(coordinates)?;
    let shape = read_geometry(geometry, &coords, coordinates)?;
    let geoproperty = geoproperty.map(|g| parse_geoproperty(g, ctx)).transpose()?;
    Ok(build(rel, geometry, shape, coords, geoproperty))
}

/// Parses the JSON form of a geo-query (the `geoQ` member of a query body or subscription):
/// `{"georel": "...", "geometry": "Point", "coordinates": [..] or "[..]", "geoproperty": "..."}`.
/// The shape of the JSON is checked here; its texts are parsed as the parameters are. An error
/// points at the member of the geoQ object at fault (`/coordinates/0/1`).
pub fn from_json(geo_q: &Value, ctx: &ActiveContext) -> BodyResult<GeoQuery> {
    let Value::Object(map) = geo_q else {
        return Err(BodyError::whole(format!(
            "geoQ must be a JSON object with georel, geometry and coordinates, not {geo_q}"
        )));
    };
    let text = |name: &str| -> BodyResult<Option<&str>> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(BodyError::member(
                name,
                format!("geoQ {name} must be a string, not {other}"),
            )),
        }
    };
    let missing = |name: &str| BodyError::member(name, format!("geoQ has no {name} member"));
    let georel = text("georel")?.ok_or_else(|| missing("georel"))?;
    let geometry = text("geometry")?.ok_or_else(|| missing("geometry"))?;
    let geoproperty = text("geoproperty")?;
    let rel = parse_georel(georel).map_err(|e| BodyError::parsing("georel", &e))?;
    validate::coordinate_geometry_type(geometry)
        .map_err(|why| BodyError::member("geometry", why))?;
    let (coords, shape) = match map.get("coordinates") {
        None | Some(Value::Null) => return Err(missing("coordinates")),
        Some(Value::String(s)) => {
            let coords =
                parse_coordinates_text(s).map_err(|e| BodyError::parsing("coordinates", &e))?;
            // Inside a text no pointer reaches: the member, and the problem in words.
            let shape = validate::geometry_of_type(geometry, &coords)
                .map_err(|e| BodyError::member("coordinates", e.problem))?;
            (coords, shape)
        }
        Some(v @ Value::Array(_)) => {
            let shape =
                validate::geometry_of_type(geometry, v).map_err(|e| e.under("coordinates"))?;
            (v.clone(), shape)
        }
        Some(other) => {
            return Err(BodyError::member(
                "coordinates",
                format!("geoQ coordinates must be a JSON array (or its text), not {other}"),
            ))
        }
    };
    let geoproperty = geoproperty
        .map(|g| parse_geoproperty(g, ctx))
        .transpose()
        .map_err(|e| BodyError::parsing("geoproperty", &e))?;
    Ok(build(rel, geometry, shape, coords, geoproperty))
}

/// The geo-query of a georel, a geometry read from its type and coordinates, and the
/// geoproperty's IRI ([`LOCATION`] when none is given).
fn build(
    rel: GeoRel,
    geometry_type: &str,
    geometry: Geometry<f64>,
    coords: Value,
    geoproperty: Option<String>,
) -> GeoQuery {
    GeoQuery {
        rel,
        geometry,
        geoproperty: geoproperty.unwrap_or_else(|| LOCATION.to_string()),
        geojson: json!({"type": geometry_type, "coordinates": coords}),
    }
}

/// The geometry of a type (the `geometry` input, refused as a whole when unknown) and
/// coordinates (refused as a whole when they do not make one, the problem saying where in words;
/// `coordinates` is their text).
fn read_geometry(
    geometry_type: &str,
    coords: &Value,
    coordinates: &str,
) -> ParseResult<Geometry<f64>> {
    validate::coordinate_geometry_type(geometry_type)
        .map_err(|why| ParseError::whole("geometry", geometry_type, why))?;
    validate::geometry_of_type(geometry_type, coords)
        .map_err(|e| ParseError::whole("coordinates", coordinates, e.problem))
}

/// A geoproperty name, expanded; refused as given (a span of the trimmed name would be off).
fn parse_geoproperty(text: &str, ctx: &ActiveContext) -> ParseResult<String> {
    let name = text.trim();
    validate::name("geoproperty", name)
        .map_err(|e| ParseError::whole("geoproperty", text, e.detail))?;
    Ok(ctx.expand(name).into_owned())
}

/// Reads a georel: a relation name, and for `near` its `maxDistance==` or `minDistance==`
/// modifier; an error spans the offending name or modifier.
fn parse_georel(text: &str) -> ParseResult<GeoRel> {
    let error =
        |span: std::ops::Range<usize>, why: String| ParseError::at("georel", text, span, why);
    // Each `;`-separated part, trimmed, with its byte range in the text.
    let mut parts = text.split(';').scan(0, |from, part| {
        let start = *from + part.len() - part.trim_start().len();
        *from += part.len() + 1;
        Some((part.trim(), start..start + part.trim().len()))
    });
    let (name, name_span) = parts.next().unwrap_or(("", 0..0));
    let simple = match name {
        "near" => None,
        "within" => Some(GeoRel::Within),
        "contains" => Some(GeoRel::Contains),
        "intersects" => Some(GeoRel::Intersects),
        "overlaps" => Some(GeoRel::Overlaps),
        "disjoint" => Some(GeoRel::Disjoint),
        "equals" => Some(GeoRel::Equals),
        "" => {
            return Err(ParseError::whole(
                "georel",
                text,
                format!("empty; it must be one of {GEORELS}"),
            ))
        }
        other => {
            return Err(error(
                name_span,
                format!("'{other}' is not known; it must be one of {GEORELS}"),
            ))
        }
    };
    let modifiers: Vec<_> = parts.collect();
    if let Some(rel) = simple {
        if let Some((_, span)) = modifiers.first() {
            return Err(error(
                span.clone(),
                format!("only near takes maxDistance or minDistance; {name} takes no modifier"),
            ));
        }
        return Ok(rel);
    }
    let (mut max_distance, mut min_distance) = (None, None);
    for (modifier, span) in modifiers {
        let Some((key, value)) = modifier.split_once("==") else {
            return Err(error(
                span,
                format!("the modifier '{modifier}' must be maxDistance==<metres> or minDistance==<metres>"),
            ));
        };
        let key = key.trim();
        let slot = match key {
            "maxDistance" => &mut max_distance,
            "minDistance" => &mut min_distance,
            other => {
                return Err(error(
                    span,
                    format!("near knows maxDistance and minDistance, not '{other}'"),
                ))
            }
        };
        if slot.is_some() {
            return Err(error(span, format!("{key} is given twice")));
        }
        let value = value.trim();
        let number: f64 = match value.parse() {
            _ if value.is_empty() => {
                return Err(error(
                    span,
                    format!("{key} has no value; give a distance in metres"),
                ))
            }
            Ok(n) if f64::is_finite(n) => n,
            _ => {
                return Err(error(
                    span,
                    format!("{key} '{value}' is not a number of metres"),
                ))
            }
        };
        if number <= 0.0 {
            return Err(error(
                span,
                format!("{key} must be a positive number of metres, not {value}"),
            ));
        }
        *slot = Some(number);
    }
    match (max_distance, min_distance) {
        (None, None) => Err(ParseError::whole(
            "georel",
            text,
            "near needs maxDistance==<metres> and/or minDistance==<metres>",
        )),
        (Some(_), Some(_)) => Err(ParseError::whole(
            "georel",
            text,
            "near takes one of maxDistance or minDistance, not both",
        )),
        _ => Ok(GeoRel::Near {
            max_distance,
            min_distance,
        }),
    }
}

/// Reads the coordinates parameter (JSON text, already URL-decoded by the HTTP layer); a syntax
/// error spans the character where the JSON went wrong.
fn parse_coordinates_text(text: &str) -> ParseResult<Value> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ParseError::whole(
            "coordinates",
            text,
            "empty; give a JSON array such as [8.0,40.0]",
        ));
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(v @ Value::Array(_)) => Ok(v),
        Ok(other) => Err(ParseError::whole(
            "coordinates",
            text,
            format!("must be a JSON array such as [8.0,40.0], not {other}"),
        )),
        Err(e) => {
            let offset = text.len() - text.trim_start().len();
            let at = offset + json_error_offset(trimmed, &e);
            let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
            Err(ParseError::at(
                "coordinates",
                text,
                at..end,
                format!("'{trimmed}' is not a valid JSON array: {e}"),
            ))
        }
    }
}

/// The byte offset in `text` of the character a JSON syntax error reports (its line and column,
/// both from 1), or the end of the text when it ended early.
fn json_error_offset(text: &str, e: &serde_json::Error) -> usize {
    if e.is_eof() {
        return text.len();
    }
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum();
    let line = &text[line_start..];
    let column = line
        .char_indices()
        .nth(e.column().saturating_sub(1))
        .map_or(line.len(), |(i, _)| i);
    line_start + column
}

// ---- query geometry: validation with messages, and conversion ----

/// A reference geometry given as a type and JSON coordinates (for distance ordering, 4.23.3).
pub fn reference(geometry_type: &str, coordinates: &Value) -> ParseResult<Geometry<f64>> {
    let (coords, text) = match coordinates {
        Value::String(text) => (parse_coordinates_text(text)?, text.clone()),
        Value::Array(_) => (coordinates.clone(), coordinates.to_string()),
        other => {
            return Err(ParseError::whole(
                "coordinates",
                &other.to_string(),
                format!("must be a JSON array such as [8.0,40.0], not {other}"),
            ))
        }
    };
    read_geometry(geometry_type, &coords, &text)
}

// ---- entity geometries ----

/// The geometry of a stored GeoProperty value (a GeoJSON geometry object), through geojson's
/// conversion; `None` when it is not a usable geometry (stored data never fails a query).
pub fn geometry_of(value: &Value) -> Option<Geometry<f64>> {
    let g = geojson::Geometry::deserialize(value).ok()?;
    if !positions_usable(&g.value) {
        return None;
    }
    Geometry::<f64>::try_from(&g.value).ok()
}

fn positions_usable(g: &geojson::GeometryValue) -> bool {
    use geojson::GeometryValue as G;
    let ok = |p: &geojson::Position| p.len() >= 2 && p.as_slice().iter().all(|v| v.is_finite());
    match g {
        G::Point { coordinates } => ok(coordinates),
        G::MultiPoint { coordinates } | G::LineString { coordinates } => coordinates.iter().all(ok),
        G::MultiLineString { coordinates } | G::Polygon { coordinates } => {
            coordinates.iter().flatten().all(ok)
        }
        G::MultiPolygon { coordinates } => coordinates.iter().flatten().flatten().all(ok),
        G::GeometryCollection { geometries } => {
            geometries.iter().all(|g| positions_usable(&g.value))
        }
    }
}

/// The planar envelope (lon/lat bounding box) of a geometry, for an R-tree.
pub fn envelope(g: &Geometry<f64>) -> Option<AABB<[f64; 2]>> {
    let r = g.bounding_rect()?;
    Some(AABB::from_corners(
        [r.min().x, r.min().y],
        [r.max().x, r.max().y],
    ))
}

/// Great-circle distance in metres from a point to the closest point of a geometry (0 when the
/// point is on it or, for polygons, inside it in the lon/lat plane).
pub fn distance_to_point(p: Point<f64>, g: &Geometry<f64>) -> f64 {
    match g.haversine_closest_point(&p) {
        Closest::Intersection(_) => 0.0,
        Closest::SinglePoint(c) => Haversine.distance(p, c),
        // A degenerate geometry (e.g. a ring with fewer than 3 positions): its nearest vertex.
        Closest::Indeterminate => g
            .coords_iter()
            .map(|c| Haversine.distance(p, Point(c)))
            .fold(f64::INFINITY, f64::min),
    }
}

/// Distance in metres between two geometries, as `near` measures it (see the module comment).
pub fn distance(a: &Geometry<f64>, b: &Geometry<f64>) -> f64 {
    if let Geometry::Point(p) = a {
        return distance_to_point(*p, b);
    }
    if let Geometry::Point(p) = b {
        return distance_to_point(*p, a);
    }
    if guarded(|| a.intersects(b)).unwrap_or(false) {
        return 0.0;
    }
    let one_way = |from: &Geometry<f64>, to: &Geometry<f64>| {
        from.coords_iter()
            .map(|c| distance_to_point(Point(c), to))
            .fold(f64::INFINITY, f64::min)
    };
    one_way(a, b).min(one_way(b, a))
}

/// Runs a geo predicate, turning a panic inside geo (possible on degenerate or invalid input,
/// such as self-intersecting rings) into `None` instead of failing the request.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

impl GeoQuery {
    /// Whether the entity matches: any instance of its `geoproperty` attribute that is a
    /// GeoProperty with a usable geometry stands in the relation to the query geometry.
    pub fn matches(&self, e: &Entity) -> bool {
        e.attrs.get(&self.geoproperty).is_some_and(|instances| {
            instances
                .iter()
                .filter(|a| a.kind == AttrKind::GeoProperty)
                .any(|a| self.matches_value(&a.value))
        })
    }

    /// Whether one GeoJSON geometry value (as stored in a GeoProperty) matches.
    pub fn matches_value(&self, value: &Value) -> bool {
        geometry_of(value).is_some_and(|g| self.matches_geometry(&g))
    }

    /// Whether an entity geometry stands in the relation to the query geometry.
    pub fn matches_geometry(&self, entity: &Geometry<f64>) -> bool {
        let q = &self.geometry;
        match self.rel {
            GeoRel::Near {
                max_distance,
                min_distance,
            } => {
                let d = distance(q, entity);
                max_distance.is_none_or(|m| d <= m) && min_distance.is_none_or(|m| d >= m)
            }
            // Identical geometries are equal even when invalid (e.g. a self-intersecting ring),
            // where DE-9IM gives no answer.
            GeoRel::Equals if entity == q => true,
            rel => guarded(|| {
                let m = entity.relate(q);
                match rel {
                    GeoRel::Within => m.is_within(),
                    GeoRel::Contains => m.is_contains(),
                    GeoRel::Intersects => m.is_intersects(),
                    GeoRel::Overlaps => m.is_overlaps(),
                    GeoRel::Disjoint => m.is_disjoint(),
                    GeoRel::Equals => m.is_equal_topo(),
                    GeoRel::Near { .. } => unreachable!("near is handled above"),
                }
            })
            .unwrap_or(false),
        }
    }

    /// A lon/lat box every matching entity geometry's envelope intersects, for an R-tree
    /// pre-filter; `None` when no box applies (`disjoint`, `near` with only `minDistance`).
    /// For `near` it is the query envelope widened by maxDistance (converted to degrees with a 1 %
    /// margin; widened to all longitudes when it reaches a pole or the antimeridian). Caveat: an
    /// entity edge that is a long great-circle arc at high latitude bulges poleward beyond its
    /// lon/lat envelope, so such an entity could be missed by an envelope pre-filter.
    pub fn bbox(&self) -> Option<AABB<[f64; 2]>> {
        let r = self.geometry.bounding_rect()?;
        let (min, max) = (r.min(), r.max());
        match self.rel {
            GeoRel::Disjoint
            | GeoRel::Near {
                max_distance: None, ..
            } => None,
            GeoRel::Near {
                max_distance: Some(metres),
                ..
            } => near_box(&self.geometry, metres)
                .map(|[x0, y0, x1, y1]| AABB::from_corners([x0, y0], [x1, y1])),
            _ => Some(AABB::from_corners([min.x, min.y], [max.x, max.y])),
        }
    }

    /// The geometry type name (`Point`, ..., `MultiPolygon`).
    pub fn geometry_type(&self) -> &str {
        self.geojson
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The coordinates as given (a JSON array).
    pub fn coordinates(&self) -> &Value {
        &self.geojson["coordinates"]
    }

    /// The query as request parameters (values not URL-encoded), `geoproperty` (an IRI) only when
    /// it is not the default: `parse` of these gives the query back under any context.
    pub fn to_params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("georel", self.rel.to_string()),
            ("geometry", self.geometry_type().to_string()),
            ("coordinates", self.coordinates().to_string()),
        ];
        if self.geoproperty != LOCATION {
            params.push(("geoproperty", self.geoproperty.clone()));
        }
        params
    }

    /// The query as a `geoQ` JSON member (subscriptions, query bodies), geoproperty compacted.
    pub fn to_json(&self, ctx: &ActiveContext) -> Value {
        let mut v = json!({
            "georel": self.rel.to_string(),
            "geometry": self.geometry_type(),
            "coordinates": self.coordinates(),
        });
        if self.geoproperty != LOCATION {
            v["geoproperty"] = Value::String(ctx.compact(&self.geoproperty).into_owned());
        }
        v
    }
}

impl fmt::Display for GeoQuery {
    /// `georel=...&geometry=...&coordinates=...[&geoproperty=...]`, values not URL-encoded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.to_params().iter().enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// Allowance (degrees of latitude) for the poleward bulge of entity edges: `near` measures to
/// great-circle edges, which leave the lon/lat envelope the index holds. This covers edges up to
/// 0.5° of longitude long (at most 4.8e-6 rad ≈ 30 m, at 45°); longer entity edges may bulge
/// further and be missed (the caveat of `GeoQuery::bbox`).
pub const ENTITY_EDGE_BULGE: f64 = 3e-4;

/// A lon/lat box that every entity geometry within `metres` of the query geometry intersects (as
/// `near` measures: great-circle edges): the query's extent INCLUDING the poleward bulge of its
/// own edges (which `GeoQuery::bbox` leaves out), widened by the distance as `GeoQuery::bbox`
/// does, and by [`ENTITY_EDGE_BULGE`] in latitude.
pub fn near_box(geometry: &Geometry<f64>, metres: f64) -> Option<[f64; 4]> {
    let r = geometry.bounding_rect()?;
    let (mut min_x, mut max_x) = (r.min().x, r.max().x);
    let (mut min_y, mut max_y) = (r.min().y, r.max().y);
    for (a, b) in edges(geometry) {
        if (a.x - b.x).abs() >= 180.0 {
            // The shorter arc crosses the antimeridian.
            (min_x, max_x) = (-180.0, 180.0);
        }
        let (lo, hi) = arc_latitudes(a, b);
        min_y = min_y.min(lo);
        max_y = max_y.max(hi);
    }
    let deg = metres / METRES_PER_DEGREE * 1.01 + 1e-9;
    let min_lat = (min_y - deg - ENTITY_EDGE_BULGE).max(-90.0);
    let max_lat = (max_y + deg + ENTITY_EDGE_BULGE).min(90.0);
    let polar = min_lat.abs().max(max_lat.abs());
    if polar >= 89.999 {
        return Some([-180.0, min_lat, 180.0, max_lat]);
    }
    // Along any path of length d from the box, longitude changes by at most d / cos(highest
    // latitude reached).
    let dlon = deg / polar.to_radians().cos();
    if min_x - dlon < -180.0 || max_x + dlon > 180.0 {
        return Some([-180.0, min_lat, 180.0, max_lat]);
    }
    Some([min_x - dlon, min_lat, max_x + dlon, max_lat])
}

/// The edges of a query geometry, as coordinate pairs.
fn edges(geometry: &Geometry<f64>) -> Vec<(Coord<f64>, Coord<f64>)> {
    let lines: Vec<Line<f64>> = match geometry {
        Geometry::LineString(l) => l.lines_iter().collect(),
        Geometry::MultiLineString(m) => m.lines_iter().collect(),
        Geometry::Polygon(p) => p.lines_iter().collect(),
        Geometry::MultiPolygon(m) => m.lines_iter().collect(),
        _ => Vec::new(),
    };
    lines.into_iter().map(|l| (l.start, l.end)).collect()
}

/// The latitude range (degrees) of the shorter great-circle arc from `a` to `b`: its endpoints'
/// and, when the arc passes it, the highest (lowest) point of its great circle, with a tiny
/// outward margin.
pub fn arc_latitudes(a: Coord<f64>, b: Coord<f64>) -> (f64, f64) {
    type V = [f64; 3];
    let unit = |c: Coord<f64>| -> V {
        let (lon, lat) = (c.x.to_radians(), c.y.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    };
    let cross = |u: V, v: V| -> V {
        [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ]
    };
    let dot = |u: V, v: V| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
    let (lo, hi) = (a.y.min(b.y), a.y.max(b.y));
    let (pa, pb) = (unit(a), unit(b));
    let n = cross(pa, pb);
    let n_len = dot(n, n).sqrt();
    if n_len < 1e-12 {
        return (lo, hi);
    }
    let n = n.map(|c| c / n_len);
    // The highest point of the great circle: the pole direction without its component along n.
    let top = [-n[2] * n[0], -n[2] * n[1], 1.0 - n[2] * n[2]];
    let top_len = dot(top, top).sqrt();
    if top_len < 1e-12 {
        return (lo, hi);
    }
    let top = top.map(|c| c / top_len);
    let on_arc = |p: V| dot(cross(pa, p), n) >= -1e-12 && dot(cross(p, pb), n) >= -1e-12;
    let extreme = top[2].clamp(-1.0, 1.0).asin().to_degrees();
    let hi = if on_arc(top) { hi.max(extreme) } else { hi };
    let lo = if on_arc(top.map(|c| -c)) {
        lo.min(-extreme)
    } else {
        lo
    };
    (lo - 1e-9, hi + 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attribute;
    use chrono::Utc;
    use rstar::Envelope;
    use std::collections::HashMap;
    use std::sync::Arc;

    const CORE: &str = include_str!("../../context/ngsi-ld-core-context-v1.9.jsonld");

    fn ctx() -> ActiveContext {
        let core: Value = serde_json::from_str(CORE).unwrap();
        let user = json!({"area": "https://example.org/area", "ex": "https://example.org/"});
        ActiveContext::build(
            &[&user, &core["@context"]],
            &HashMap::<String, Arc<Value>>::new(),
        )
        .unwrap()
    }

    fn q(georel: &str, geometry: &str, coordinates: &str) -> GeoQuery {
        parse(georel, geometry, coordinates, None, &ctx())
            .unwrap_or_else(|e| panic!("{georel} {coordinates}: {e}"))
    }

    fn err(georel: &str, geometry: &str, coordinates: &str) -> String {
        parse(georel, geometry, coordinates, None, &ctx())
            .unwrap_err()
            .to_string()
    }

    fn geo_attr(value: Value) -> Attribute {
        Attribute {
            kind: AttrKind::GeoProperty,
            value,
            dataset_id: None,
            observed_at: None,
            unit_code: None,
            object_type: None,
            created_at: Utc::now(),
            modified_at: Utc::now(),
            expires_at: None,
            sub: crate::model::NameMap::default(),
        }
    }

    fn entity_with(name: &str, attrs: Vec<Attribute>) -> Entity {
        let mut map = crate::model::NameMap::default();
        map.insert(name.to_string(), attrs);
        Entity {
            id: "urn:ngsi-ld:Thing:1".into(),
            types: vec!["https://example.org/Thing".into()],
            scope: None,
            attrs: map,
            created_at: Utc::now(),
            modified_at: Utc::now(),
            expires_at: None,
        }
    }

    fn entity(gtype: &str, coordinates: Value) -> Entity {
        entity_with(
            LOCATION,
            vec![geo_attr(json!({"type": gtype, "coordinates": coordinates}))],
        )
    }

    fn point(lon: f64, lat: f64) -> Entity {
        entity("Point", json!([lon, lat]))
    }

    /// Square [0,10]² with the hole [4,6]².
    fn holed() -> Entity {
        entity(
            "Polygon",
            json!([
                [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
                [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
            ]),
        )
    }

    /// Two unit squares, at lon 0..1 and lon 10..11 (lat 0..1).
    fn two_squares() -> Entity {
        entity(
            "MultiPolygon",
            json!([
                [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]],
                [[[10, 0], [11, 0], [11, 1], [10, 1], [10, 0]]]
            ]),
        )
    }

    /// A meridian segment, lon 0, lat 0..2.
    fn meridian() -> Entity {
        entity("LineString", json!([[0, 0], [0, 2]]))
    }

    fn m(georel: &str, geometry: &str, coordinates: &str, e: &Entity) -> bool {
        q(georel, geometry, coordinates).matches(e)
    }

    const BIG: &str = "[[[-1,-1],[11,-1],[11,11],[-1,11],[-1,-1]]]";

    // ---- near ----

    /// Found by the fuzz target geoq (issue 20): a geoproperty with a leading control character
    /// was refused with the span of the trimmed name, which fell inside a character of the
    /// parameter as given.
    #[test]
    fn a_refused_geoproperty_spans_the_parameter_as_given() {
        let text = "\r\0ithinb[[[0\u{504}";
        let e = parse("disjoint", "Point", "[1,2]", Some(text), &ctx()).unwrap_err();
        assert_eq!((e.input, e.span), ("geoproperty", 0..text.len()));
        let e = parse("within", "Point", "[1,2]", Some(" a b "), &ctx()).unwrap_err();
        assert_eq!(e.span, 0..5);
        let q = parse("within", "Point", "[1,2]", Some(" area "), &ctx()).unwrap();
        assert_eq!(q.geoproperty, "https://example.org/area");
    }

    #[test]
    fn near_points_one_degree_of_latitude() {
        // 1° of latitude = 6 371 008.8 m × π/180 ≈ 111 195.08 m.
        let e = point(8.0, 41.0);
        assert!(m("near;maxDistance==111300", "Point", "[8,40]", &e));
        assert!(!m("near;maxDistance==111100", "Point", "[8,40]", &e));
        assert!(m("near;minDistance==111100", "Point", "[8,40]", &e));
        assert!(!m("near;minDistance==111300", "Point", "[8,40]", &e));
    }

    #[test]
    fn near_paris_london() {
        // Haversine Paris–London ≈ 343.5 km.
        let london = point(-0.1276, 51.5072);
        assert!(m(
            "near;maxDistance==344000",
            "Point",
            "[2.3522,48.8566]",
            &london
        ));
        assert!(!m(
            "near;maxDistance==343000",
            "Point",
            "[2.3522,48.8566]",
            &london
        ));
        let d = distance(
            &Geometry::Point(Point::new(2.3522, 48.8566)),
            &Geometry::Point(Point::new(-0.1276, 51.5072)),
        );
        assert!((d - 343_530.0).abs() < 10.0, "{d}");
    }

    #[test]
    fn near_boundaries_are_inclusive() {
        let e = point(8.0, 41.0);
        let d = distance(
            &Geometry::Point(Point::new(8.0, 40.0)),
            &q("within", "Point", "[8,41]").geometry,
        );
        assert!((d - 111_195.08).abs() < 0.1, "{d}");
        assert!(m(&format!("near;maxDistance=={d}"), "Point", "[8,40]", &e));
        assert!(m(&format!("near;minDistance=={d}"), "Point", "[8,40]", &e));
        let above = d * (1.0 + 1e-12);
        assert!(!m(
            &format!("near;minDistance=={above}"),
            "Point",
            "[8,40]",
            &e
        ));
    }

    #[test]
    fn near_polygon_with_hole() {
        let e = holed();
        // Inside the polygon proper: distance 0.
        assert!(m("near;maxDistance==1", "Point", "[2,5]", &e));
        assert!(!m("near;minDistance==1", "Point", "[2,5]", &e));
        // In the hole at (5,5): the nearest boundary is the hole's meridian edge lon 6 (or 4),
        // 1° of longitude at lat 5: R·asin(sin 1°·cos 5°) ≈ 110 772 m (closer than lat 4/6 edges).
        assert!(m("near;maxDistance==110900", "Point", "[5,5]", &e));
        assert!(!m("near;maxDistance==110600", "Point", "[5,5]", &e));
        assert!(m("near;minDistance==110600", "Point", "[5,5]", &e));
        // Outside: 1° of latitude south of the bottom edge.
        assert!(m("near;maxDistance==111300", "Point", "[5,-1]", &e));
        assert!(!m("near;maxDistance==111100", "Point", "[5,-1]", &e));
    }

    #[test]
    fn near_multipolygon_and_linestring() {
        // (5, 0.5) is 4° of longitude from the first square's edge lon 1: ≈ 444 763 m.
        let e = two_squares();
        assert!(m("near;maxDistance==445000", "Point", "[5,0.5]", &e));
        assert!(!m("near;maxDistance==444500", "Point", "[5,0.5]", &e));
        assert!(m("near;maxDistance==1", "Point", "[10.5,0.5]", &e));
        // Meridian segment: (1,1) is ≈ 111 178 m across; (0,3) is 1° of latitude past its end.
        let l = meridian();
        assert!(m("near;maxDistance==111250", "Point", "[1,1]", &l));
        assert!(!m("near;maxDistance==111100", "Point", "[1,1]", &l));
        assert!(m("near;maxDistance==111300", "Point", "[0,3]", &l));
        assert!(!m("near;maxDistance==111100", "Point", "[0,3]", &l));
        assert!(m("near;maxDistance==1", "Point", "[0,1]", &l));
    }

    #[test]
    fn near_with_an_extended_query_geometry() {
        // A query line along lat 60 from lon 0 to 10; the entity sits 0.01° north of its east end.
        let e = point(10.0, 60.01);
        assert!(m(
            "near;maxDistance==1200",
            "LineString",
            "[[0,60],[10,60]]",
            &e
        ));
        assert!(!m(
            "near;maxDistance==1000",
            "LineString",
            "[[0,60],[10,60]]",
            &e
        ));
        // Query polygon vs entity polygon: the squares 0..1 and 3..4 at the equator are 2° apart.
        let sq = entity("Polygon", json!([[[3, 0], [4, 0], [4, 1], [3, 1], [3, 0]]]));
        let query = "[[[0,0],[1,0],[1,1],[0,1],[0,0]]]";
        assert!(m("near;maxDistance==222500", "Polygon", query, &sq));
        assert!(!m("near;maxDistance==222000", "Polygon", query, &sq));
        // Overlapping polygons are at distance 0.
        assert!(m(
            "near;maxDistance==1",
            "Polygon",
            "[[[2,0],[3.5,0],[3.5,1],[2,1],[2,0]]]",
            &sq
        ));
    }

    // ---- DE-9IM relations ----

    #[test]
    fn point_entity() {
        let e = point(8.0, 40.0);
        assert!(m(
            "within",
            "Polygon",
            "[[[7,39],[9,39],[9,41],[7,41],[7,39]]]",
            &e
        ));
        assert!(!m(
            "within",
            "Polygon",
            "[[[0,0],[1,0],[1,1],[0,1],[0,0]]]",
            &e
        ));
        assert!(m("equals", "Point", "[8,40]", &e));
        assert!(!m("equals", "Point", "[8,40.0001]", &e));
        assert!(m("intersects", "Point", "[8,40]", &e));
        assert!(m("contains", "Point", "[8,40]", &e));
        assert!(!m("overlaps", "Point", "[8,40]", &e));
        assert!(m("disjoint", "Point", "[8,41]", &e));
        assert!(!m("disjoint", "Point", "[8,40]", &e));
        assert!(m("intersects", "LineString", "[[7,40],[9,40]]", &e));
    }

    #[test]
    fn polygon_with_hole_entity() {
        let e = holed();
        assert!(m("within", "Polygon", BIG, &e));
        assert!(!m(
            "within",
            "Polygon",
            "[[[0,0],[5,0],[5,5],[0,5],[0,0]]]",
            &e
        ));
        assert!(m("contains", "Point", "[2,2]", &e));
        assert!(
            !m("contains", "Point", "[5,5]", &e),
            "the hole is not inside"
        );
        assert!(m(
            "contains",
            "Polygon",
            "[[[1,1],[3,1],[3,3],[1,3],[1,1]]]",
            &e
        ));
        assert!(
            !m(
                "contains",
                "Polygon",
                "[[[3,3],[7,3],[7,7],[3,7],[3,3]]]",
                &e
            ),
            "covers the hole"
        );
        assert!(m("intersects", "Point", "[2,2]", &e));
        assert!(m("intersects", "Point", "[0,5]", &e), "boundary");
        assert!(!m("intersects", "Point", "[5,5]", &e));
        assert!(m("intersects", "LineString", "[[-5,5],[2,5]]", &e));
        assert!(m("disjoint", "Point", "[5,5]", &e));
        assert!(!m("disjoint", "Point", "[2,2]", &e));
        assert!(m(
            "overlaps",
            "Polygon",
            "[[[8,8],[12,8],[12,12],[8,12],[8,8]]]",
            &e
        ));
        assert!(
            !m("overlaps", "Polygon", BIG, &e),
            "within, not overlapping"
        );
        let same_rotated = "[[[10,0],[10,10],[0,10],[0,0],[10,0]],[[4,4],[6,4],[6,6],[4,6],[4,4]]]";
        assert!(m("equals", "Polygon", same_rotated, &e));
        assert!(
            !m(
                "equals",
                "Polygon",
                "[[[0,0],[10,0],[10,10],[0,10],[0,0]]]",
                &e
            ),
            "no hole"
        );
    }

    #[test]
    fn multipolygon_entity() {
        let e = two_squares();
        assert!(m("intersects", "Point", "[10.5,0.5]", &e));
        assert!(!m("intersects", "Point", "[5,0.5]", &e));
        assert!(m(
            "within",
            "Polygon",
            "[[[-1,-1],[12,-1],[12,2],[-1,2],[-1,-1]]]",
            &e
        ));
        assert!(
            !m(
                "within",
                "Polygon",
                "[[[-1,-1],[2,-1],[2,2],[-1,2],[-1,-1]]]",
                &e
            ),
            "one square only"
        );
        assert!(m("contains", "Point", "[0.5,0.5]", &e));
        assert!(m("contains", "MultiPoint", "[[0.5,0.5],[10.5,0.5]]", &e));
        assert!(!m("contains", "MultiPoint", "[[0.5,0.5],[5,0.5]]", &e));
        assert!(m(
            "overlaps",
            "Polygon",
            "[[[-1,-1],[2,-1],[2,2],[-1,2],[-1,-1]]]",
            &e
        ));
        assert!(m("disjoint", "LineString", "[[5,-1],[5,2]]", &e));
        let same = "[[[[10,0],[11,0],[11,1],[10,1],[10,0]]],[[[0,0],[1,0],[1,1],[0,1],[0,0]]]]";
        assert!(m("equals", "MultiPolygon", same, &e));
    }

    #[test]
    fn linestring_entity() {
        let e = meridian();
        assert!(m("intersects", "LineString", "[[-1,1],[1,1]]", &e));
        assert!(m(
            "within",
            "Polygon",
            "[[[-1,-1],[1,-1],[1,3],[-1,3],[-1,-1]]]",
            &e
        ));
        assert!(m("contains", "Point", "[0,1]", &e));
        assert!(
            !m("contains", "Point", "[0,0]", &e),
            "an end point is on the boundary, not inside"
        );
        assert!(m("overlaps", "LineString", "[[0,1],[0,3]]", &e));
        assert!(m("equals", "LineString", "[[0,2],[0,0]]", &e));
        assert!(m("disjoint", "Point", "[1,1]", &e));
        assert!(!m(
            "within",
            "MultiLineString",
            "[[[0,0],[0,1]],[[5,5],[6,6]]]",
            &e
        ));
    }

    #[test]
    fn entity_without_the_geoproperty_matches_nothing() {
        let e = entity_with(
            "https://example.org/other",
            vec![geo_attr(json!({"type": "Point", "coordinates": [8, 40]}))],
        );
        for rel in [
            "near;maxDistance==1000",
            "near;minDistance==1",
            "within",
            "disjoint",
            "intersects",
        ] {
            assert!(!m(rel, "Point", "[8,40]", &e), "{rel}");
        }
        // A Property that happens to hold a geometry is not a GeoProperty.
        let mut prop = geo_attr(json!({"type": "Point", "coordinates": [8, 40]}));
        prop.kind = AttrKind::Property;
        assert!(!m(
            "intersects",
            "Point",
            "[8,40]",
            &entity_with(LOCATION, vec![prop])
        ));
        // A broken stored value does not match (and does not panic).
        let broken = entity_with(
            LOCATION,
            vec![geo_attr(json!({"type": "Point", "coordinates": [8]}))],
        );
        assert!(!m("intersects", "Point", "[8,40]", &broken));
        assert!(!m("disjoint", "Point", "[8,40]", &broken));
    }

    #[test]
    fn geoproperty_is_expanded_and_any_instance_matches() {
        let mut second = geo_attr(json!({"type": "Point", "coordinates": [8, 40]}));
        second.dataset_id = Some("urn:ds:2".into());
        let e = entity_with(
            "https://example.org/area",
            vec![
                geo_attr(json!({"type": "Point", "coordinates": [100, 10]})),
                second,
            ],
        );
        let g = parse(
            "near;maxDistance==10",
            "Point",
            "[8,40]",
            Some("area"),
            &ctx(),
        )
        .unwrap();
        assert_eq!(g.geoproperty, "https://example.org/area");
        assert!(g.matches(&e));
        assert!(
            !q("near;maxDistance==10", "Point", "[8,40]").matches(&e),
            "default is location"
        );
        let l = parse("within", "Point", "[8,40]", Some("location"), &ctx()).unwrap();
        assert_eq!(l.geoproperty, LOCATION);
        let e2 = parse("within", "Point", "[8,40]", Some("ex:spot"), &ctx()).unwrap();
        assert_eq!(e2.geoproperty, "https://example.org/spot");
        let bad = parse("within", "Point", "[8,40]", Some("a;b"), &ctx()).unwrap_err();
        assert_eq!(bad.input, "geoproperty");
    }

    // ---- parse errors ----

    #[test]
    fn parse_errors_name_what_is_wrong() {
        assert!(err("nearby", "Point", "[8,40]").contains("'nearby' is not known"));
        assert!(err("", "Point", "[8,40]").contains("empty"));
        assert!(err("Within", "Point", "[8,40]").contains("not known"));
        assert!(err("within", "Point", "[8,40").contains("not a valid JSON array"));
        assert!(err("within", "Point", "").contains("empty"));
        assert!(err("within", "Point", "{\"a\":1}").contains("must be a JSON array"));
        let open = err("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,1]]]");
        assert!(open.contains("not closed"), "{open}");
        let short = err("within", "Polygon", "[[[0,0],[1,0],[0,0]]]");
        assert!(short.contains("at least 4"), "{short}");
        let hole = err(
            "within",
            "Polygon",
            "[[[0,0],[9,0],[9,9],[0,0]],[[1,1],[2,1],[2,2],[1,2]]]",
        );
        assert!(
            hole.contains("hole 1") && hole.contains("not closed"),
            "{hole}"
        );
        assert!(err("within", "Point", "[200,40]").contains("longitude 200"));
        assert!(err("within", "Point", "[8,95]").contains("latitude 95"));
        assert!(err("within", "MultiPoint", "[[8,40],[8,-91]]").contains("latitude -91"));
        assert!(err("within", "Point", "[8]").contains("2 or 3 numbers"));
        assert!(err("within", "Point", "[[8,40]]").contains("2 or 3 numbers"));
        assert!(err("within", "Point", "[\"8\",40]").contains("2 or 3 numbers"));
        assert!(err("within", "LineString", "[[8,40]]").contains("at least 2"));
        assert!(err("within", "MultiPolygon", "[]").contains("empty"));
        assert!(err("within", "MultiLineString", "[[[0,0]]]")
            .contains("LineString 0 of the MultiLineString"));
        let circle = err("within", "Circle", "[8,40]");
        assert!(
            circle.contains("'Circle' is not supported") && circle.contains("MultiPolygon"),
            "{circle}"
        );
        assert!(err("within", "point", "[8,40]").contains("did you mean Point?"));
        assert!(err("within", "GeometryCollection", "[]").contains("not supported"));
    }

    #[test]
    fn errors_name_the_input_and_span_the_offending_part() {
        let error = |georel: &str, geometry: &str, coordinates: &str| {
            let e = parse(georel, geometry, coordinates, None, &ctx()).unwrap_err();
            let text = match e.input {
                "georel" => georel,
                "geometry" => geometry,
                _ => coordinates,
            };
            (e.input, text[e.span.clone()].to_string(), e.to_string())
        };
        let (input, fragment, message) = error("near; maxDistance==abc", "Point", "[8,40]");
        assert_eq!((input, fragment.as_str()), ("georel", "maxDistance==abc"));
        assert_eq!(
            message,
            "georel: maxDistance 'abc' is not a number of metres at position 7"
        );
        assert_eq!(error("nearby", "Point", "[8,40]").0, "georel",);
        assert_eq!(error("within;x", "Point", "[8,40]").1, "x");
        // A JSON syntax error spans the character where the JSON went wrong.
        let (input, fragment, message) = error("within", "Point", " [8,40x]");
        assert_eq!((input, fragment.as_str()), ("coordinates", "x"));
        assert!(message.ends_with("at position 7"), "{message}");
        assert_eq!(error("within", "Point", "[8,40").1, "");
        let (input, fragment, _) = error("within", "Point", "[8,95]");
        assert_eq!((input, fragment.as_str()), ("coordinates", "[8,95]"));
        assert_eq!(error("within", "Pointy", "[8,40]").0, "geometry");
    }

    #[test]
    fn georel_modifier_errors() {
        assert!(err("near;maxDistance==", "Point", "[8,40]").contains("maxDistance has no value"));
        assert!(err("near", "Point", "[8,40]").contains("needs maxDistance"));
        assert!(err("near;maxDistance=1000", "Point", "[8,40]").contains("maxDistance==<metres>"));
        assert!(err("near;maxDistance==abc", "Point", "[8,40]").contains("not a number"));
        assert!(err("near;maxDistance==NaN", "Point", "[8,40]").contains("not a number"));
        assert!(err("near;maxDistance==0", "Point", "[8,40]").contains("positive"));
        assert!(err("near;minDistance==-5", "Point", "[8,40]").contains("positive"));
        assert!(err("near;distance==5", "Point", "[8,40]").contains("not 'distance'"));
        assert!(err("near;maxDistance==5;maxDistance==6", "Point", "[8,40]").contains("twice"));
        assert!(err("near;maxDistance==5;minDistance==6", "Point", "[8,40]").contains("not both"));
        assert!(err("within;maxDistance==5", "Point", "[8,40]").contains("only near"));
    }

    #[test]
    fn parse_forms() {
        let g = q("near;maxDistance==1000", "Point", " [8.0, 40.0] ");
        assert_eq!(
            g.rel,
            GeoRel::Near {
                max_distance: Some(1000.0),
                min_distance: None
            }
        );
        assert_eq!(g.geometry, Geometry::Point(Point::new(8.0, 40.0)));
        assert_eq!(g.geoproperty, LOCATION);
        let min = q("near; minDistance==10 ", "Point", "[8,40]");
        assert_eq!(
            min.rel,
            GeoRel::Near {
                max_distance: None,
                min_distance: Some(10.0)
            }
        );
        // Altitude is accepted and ignored.
        assert_eq!(
            q("equals", "Point", "[8,40,120]").geometry,
            Geometry::Point(Point::new(8.0, 40.0))
        );
        for (rel, want) in [
            ("within", GeoRel::Within),
            ("contains", GeoRel::Contains),
            ("intersects", GeoRel::Intersects),
            ("overlaps", GeoRel::Overlaps),
            ("disjoint", GeoRel::Disjoint),
            ("equals", GeoRel::Equals),
        ] {
            assert_eq!(q(rel, "Point", "[8,40]").rel, want);
        }
    }

    #[test]
    fn json_form() {
        let c = ctx();
        let a = from_json(&json!({"georel": "near;maxDistance==1000", "geometry": "Point", "coordinates": [8, 40]}), &c).unwrap();
        let b = from_json(&json!({"georel": "near;maxDistance==1000", "geometry": "Point", "coordinates": "[8,40]"}), &c).unwrap();
        assert_eq!(a, b);
        let area = from_json(&json!({"georel": "within", "geometry": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]], "geoproperty": "area"}), &c).unwrap();
        assert_eq!(area.geoproperty, "https://example.org/area");
        let e = |v: Value| from_json(&v, &c).unwrap_err().to_string();
        assert!(e(json!({"geometry": "Point", "coordinates": [8, 40]})).contains("no georel"));
        assert!(e(json!({"georel": "within", "coordinates": [8, 40]})).contains("no geometry"));
        assert!(e(json!({"georel": "within", "geometry": "Point"})).contains("no coordinates"));
        assert!(
            e(json!({"georel": "within", "geometry": "Point", "coordinates": 8}))
                .contains("JSON array")
        );
        assert!(
            e(json!({"georel": 5, "geometry": "Point", "coordinates": [8, 40]}))
                .contains("must be a string")
        );
        assert!(e(json!("within")).contains("JSON object"));
        assert!(
            e(json!({"georel": "within", "geometry": "Point", "coordinates": [8, 100]}))
                .contains("latitude 100")
        );
        // Each error points at the member at fault, into the coordinates when they are JSON.
        let at = |v: Value| from_json(&v, &c).unwrap_err().pointer.to_string();
        let ring = json!([
            [[0, 0], [1, 0], [1, 1], [0, 0]],
            [[0.2, 0.2], [0.5, 0.2], [0.5, 95], [0.2, 0.2]]
        ]);
        assert_eq!(
            at(json!({"georel": "within", "geometry": "Polygon", "coordinates": ring})),
            "/coordinates/1/2/1"
        );
        assert_eq!(
            at(json!({"georel": "within", "geometry": "Polygon", "coordinates": ring.to_string()})),
            "/coordinates"
        );
        assert_eq!(
            at(json!({"georel": "near;far", "geometry": "Point", "coordinates": [8, 40]})),
            "/georel"
        );
        assert_eq!(
            at(json!({"georel": "within", "geometry": "Circle", "coordinates": [8, 40]})),
            "/geometry"
        );
        assert_eq!(
            at(json!({"georel": "within", "geometry": "Point"})),
            "/coordinates"
        );
        assert_eq!(
            e(json!({"georel": "within", "geometry": "Point", "coordinates": [8, 40], "geoproperty": "a b"})),
            "/geoproperty: the geoproperty 'a b' contains the character ' ', which NGSI-LD names may not contain"
        );
    }

    #[test]
    fn printing_round_trips() {
        let c = ctx();
        let g = q("near;minDistance==10.5", "Point", "[8.0,40.0]");
        assert_eq!(
            g.to_string(),
            "georel=near;minDistance==10.5&geometry=Point&coordinates=[8.0,40.0]"
        );
        let area = parse(
            "within",
            "Polygon",
            "[[[0,0],[1,0],[1,1],[0,0]]]",
            Some("area"),
            &c,
        )
        .unwrap();
        assert_eq!(
            area.to_string(),
            "georel=within&geometry=Polygon&coordinates=[[[0,0],[1,0],[1,1],[0,0]]]&geoproperty=https://example.org/area"
        );
        for g in [g, area] {
            let p: HashMap<_, _> = g.to_params().into_iter().collect();
            let back = parse(
                &p["georel"],
                &p["geometry"],
                &p["coordinates"],
                p.get("geoproperty").map(String::as_str),
                &c,
            )
            .unwrap();
            assert_eq!(back, g);
            assert_eq!(from_json(&g.to_json(&c), &c).unwrap(), g);
        }
        let j = parse("within", "Point", "[1,2]", Some("area"), &c)
            .unwrap()
            .to_json(&c);
        assert_eq!(
            j,
            json!({"georel": "within", "geometry": "Point", "coordinates": [1, 2], "geoproperty": "area"})
        );
    }

    // ---- R-tree pre-filter box ----

    #[test]
    fn bbox_prefilter() {
        let within = q("within", "Polygon", "[[[0,0],[2,0],[2,3],[0,3],[0,0]]]")
            .bbox()
            .unwrap();
        assert_eq!(within, AABB::from_corners([0.0, 0.0], [2.0, 3.0]));
        assert!(q("disjoint", "Point", "[8,40]").bbox().is_none());
        assert!(q("near;minDistance==10", "Point", "[8,40]")
            .bbox()
            .is_none());
        // 111 195 m at the equator is 1° (plus the 1 % margin and the entity-edge allowance)
        // each way in latitude.
        let b = q("near;maxDistance==111195.08", "Point", "[0,0]")
            .bbox()
            .unwrap();
        let lat = 1.01 + ENTITY_EDGE_BULGE;
        assert!(
            (b.upper()[1] - lat).abs() < 1e-6 && (b.lower()[1] + lat).abs() < 1e-6,
            "{b:?}"
        );
        assert!(b.upper()[0] > 1.01 && b.upper()[0] < 1.02, "{b:?}");
        // At lat 60 longitude degrees are half as long: the box is about twice as wide.
        let b = q("near;maxDistance==111195", "Point", "[10,60]")
            .bbox()
            .unwrap();
        assert!(
            b.upper()[0] - 10.0 > 2.0 && b.upper()[0] - 10.0 < 2.2,
            "{b:?}"
        );
        // Near a pole: all longitudes, latitude clamped.
        let b = q("near;maxDistance==50000", "Point", "[0,89.9]")
            .bbox()
            .unwrap();
        assert_eq!(
            (b.lower()[0], b.upper()[0], b.upper()[1]),
            (-180.0, 180.0, 90.0)
        );
        // Across the antimeridian: all longitudes.
        let b = q("near;maxDistance==50000", "Point", "[179.9,0]")
            .bbox()
            .unwrap();
        assert_eq!((b.lower()[0], b.upper()[0]), (-180.0, 180.0));
        // Huge distance: clamped to the world.
        let b = q("near;maxDistance==30000000", "Point", "[0,0]")
            .bbox()
            .unwrap();
        assert_eq!(b, AABB::from_corners([-180.0, -90.0], [180.0, 90.0]));
    }

    #[test]
    fn envelope_and_geometry_of() {
        let g =
            geometry_of(&json!({"type": "LineString", "coordinates": [[1, 2], [3, -4]]})).unwrap();
        assert_eq!(
            envelope(&g).unwrap(),
            AABB::from_corners([1.0, -4.0], [3.0, 2.0])
        );
        assert!(geometry_of(&json!({"type": "Point", "coordinates": []})).is_none());
        assert!(geometry_of(&json!("urn:ngsi-ld:null")).is_none());
        assert!(geometry_of(&json!({"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [1, 2]}]})).is_some());
    }

    proptest::proptest! {
        /// Whatever matches `near;maxDistance` lies in the pre-filter box.
        #[test]
        fn near_matches_lie_in_the_bbox(
            lon in -180.0f64..180.0, lat in -89.0f64..89.0,
            dlon in -3.0f64..3.0, dlat in -3.0f64..3.0, max in 1000.0f64..400_000.0,
        ) {
            let g = q(&format!("near;maxDistance=={max}"), "Point", &format!("[{lon},{lat}]"));
            let (elon, elat) = ((lon + dlon).clamp(-180.0, 180.0), (lat + dlat).clamp(-90.0, 90.0));
            if g.matches(&point(elon, elat)) {
                let b = g.bbox().unwrap();
                proptest::prop_assert!(b.contains_point(&[elon, elat]), "{:?} not in {:?}", (elon, elat), b);
            }
        }
    }
}
