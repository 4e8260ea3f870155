//! Validation rules shared by every operation: what a valid entity id, name, timestamp and geometry
//! are. Each returns a BadRequestData error naming the offending input; the geometry reader's
//! also points at the member at fault (a [`BodyError`]), as a geometry is JSON.

use crate::error::{NgsiError, NgsiResult};
use crate::syntax::body::{BodyError, BodyResult};
use chrono::{DateTime, NaiveDateTime, Utc};
use geo::{
    Coord, Geometry, GeometryCollection, LineString, MultiLineString, MultiPoint, MultiPolygon,
    Point, Polygon,
};
use serde_json::Value;
use std::sync::LazyLock;

/// Characters an NGSI-LD name may not contain (they would break the query languages), besides
/// white space and control characters.
fn forbidden_in_name(c: char) -> bool {
    matches!(
        c,
        '<' | '>' | '"' | '\'' | '=' | ';' | '(' | ')' | '\\' | '{' | '}' | '`' | '|' | '^'
    ) || c.is_whitespace()
        || c.is_control()
}

/// ASCII bytes for which `forbidden` holds, as a table (names and ids are checked byte by byte).
fn ascii_table(forbidden: fn(char) -> bool) -> [bool; 128] {
    std::array::from_fn(|b| forbidden(char::from(b as u8)))
}

/// Refuses a JSON document (raw bytes) with the character U+0000 in a string: JSON can only
/// carry it as the escape `\u0000`, PostgreSQL's text and jsonb cannot hold it, and both stores
/// must accept the same data. Checked once on the raw body, before it is read as NGSI-LD.
pub fn no_nul_character(json: &[u8]) -> NgsiResult<()> {
    for at in memchr::memmem::find_iter(json, b"\\u0000") {
        // An escape only when the backslash is not itself escaped.
        let backslashes = json[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return Err(NgsiError::bad_data(
                "the JSON contains the character U+0000 (\\u0000) in a string, which twinlink does not store; remove it",
            ));
        }
    }
    Ok(())
}

static NAME_ASCII: LazyLock<[bool; 128]> = LazyLock::new(|| ascii_table(forbidden_in_name));
static URI_ASCII: LazyLock<[bool; 128]> = LazyLock::new(|| ascii_table(forbidden_in_uri));

/// The first character of `text` for which `forbidden` holds (the table answers for ASCII).
fn first_forbidden(text: &str, table: &[bool; 128], forbidden: fn(char) -> bool) -> Option<char> {
    if text.is_ascii() {
        text.bytes().find(|b| table[*b as usize]).map(char::from)
    } else {
        text.chars().find(|c| forbidden(*c))
    }
}

/// Characters no URI contains unescaped, besides white space and control characters.
fn forbidden_in_uri(c: char) -> bool {
    matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`')
        || c.is_whitespace()
        || c.is_control()
}

/// Checks that `id` is an absolute URI, as NGSI-LD requires of entity ids.
pub fn uri(what: &str, id: &str) -> NgsiResult<()> {
    // An absolute URI (RFC 3986 4.3): a scheme, a colon, and no character URIs never contain.
    let scheme_ok = id.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let bad = !scheme_ok || first_forbidden(id, &URI_ASCII, forbidden_in_uri).is_some();
    if bad {
        return Err(NgsiError::bad_data(format!(
            "{what} '{id}' is not a valid URI"
        )));
    }
    Ok(())
}

/// Characters that make an id look like another (invisible, bidirectional controls, fillers,
/// noncharacters): an entity id containing one is refused so that ids stay unambiguous.
fn deceptive(c: char) -> bool {
    let u = c as u32;
    matches!(u,
        0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFE00..=0xFE0F | 0xE0100..=0xE01EF
        | 0xFDD0..=0xFDEF | 0x115F | 0x1160 | 0x3164 | 0xFFA0 | 0x2800 | 0x00AD | 0x180E)
        || (u & 0xFFFE) == 0xFFFE
}

/// Checks an entity id: an absolute URI without invisible or deceptive characters.
pub fn entity_id(what: &str, id: &str) -> NgsiResult<()> {
    if let Some(c) = id.chars().find(|c| !c.is_ascii() && deceptive(*c)) {
        return Err(NgsiError::bad_data(format!(
            "{what} '{id}' contains the invisible or deceptive character U+{:04X}",
            c as u32
        )));
    }
    if id == crate::model::NGSI_LD_NULL {
        return Err(NgsiError::bad_data(format!(
            "{what} cannot be the NGSI-LD Null {id}"
        )));
    }
    uri(what, id)
}

/// Parses an NGSI-LD DateTime that must be in UTC (ending in `Z`), as observedAt requires.
pub fn utc_date_time(what: &str, text: &str) -> NgsiResult<DateTime<Utc>> {
    if !text.ends_with('Z') {
        return Err(NgsiError::bad_data(format!(
            "{what} '{text}' must be a UTC DateTime ending in Z, such as 2024-05-01T12:00:00Z"
        )));
    }
    date_time(what, text)
}

/// Checks an attribute or type name (clause 4.6.2 forbids characters that break query syntax).
pub fn name(what: &str, name: &str) -> NgsiResult<()> {
    if name.is_empty() {
        return Err(NgsiError::bad_data(format!(
            "an empty {what} is not allowed"
        )));
    }
    if name.starts_with('@') {
        return Err(NgsiError::bad_data(format!(
            "the {what} '{name}' starts with '@', which is reserved for JSON-LD keywords"
        )));
    }
    if let Some(c) = first_forbidden(name, &NAME_ASCII, forbidden_in_name) {
        return Err(NgsiError::bad_data(format!(
            "the {what} '{name}' contains the character {c:?}, which NGSI-LD names may not contain"
        )));
    }
    Ok(())
}

/// Parses an NGSI-LD DateTime (ISO 8601; without a zone it is taken as UTC).
pub fn date_time(what: &str, text: &str) -> NgsiResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    Err(NgsiError::bad_data(format!(
        "{what} '{text}' is not an ISO 8601 DateTime such as 2024-05-01T12:00:00Z"
    )))
}

/// The GeoJSON geometry types (RFC 7946 3.1) a GeoProperty may hold.
pub const GEOMETRY_TYPES: [&str; 7] = [
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
];

/// The geometry types given by coordinates: all but GeometryCollection, the ones a geo-query
/// takes (clause 4.10).
const COORDINATE_GEOMETRY_TYPES: &[&str] = GEOMETRY_TYPES.split_last().expect("not empty").1;

/// Checks that `value` is a GeoJSON geometry object NGSI-LD accepts (see [`geometry_of_type`];
/// a GeometryCollection's geometries each). `what` names the value in the problem; the pointer
/// is relative to the geometry object (`/coordinates/0/1`).
pub fn geometry(what: &str, value: &Value) -> BodyResult<()> {
    geometry_object(value).map(drop).map_err(|e| BodyError {
        problem: format!("{what} is not a valid GeoJSON geometry: {}", e.problem),
        ..e
    })
}

fn geometry_object(value: &Value) -> BodyResult<Geometry<f64>> {
    let Value::Object(obj) = value else {
        return Err(BodyError::whole(format!(
            "it must be a JSON object, not {value}"
        )));
    };
    let geometry_type = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| BodyError::member("type", "it has no type member naming the geometry"))?;
    if geometry_type == "GeometryCollection" {
        let Some(Value::Array(members)) = obj.get("geometries") else {
            return Err(BodyError::member(
                "geometries",
                "a GeometryCollection needs an array of geometries",
            ));
        };
        return members
            .iter()
            .enumerate()
            .map(|(i, g)| geometry_object(g).map_err(|e| e.under(i).under("geometries")))
            .collect::<Result<_, _>>()
            .map(|g| Geometry::GeometryCollection(GeometryCollection(g)));
    }
    coordinate_geometry_type(geometry_type).map_err(|why| BodyError::member("type", why))?;
    let coords = obj.get("coordinates").ok_or_else(|| {
        BodyError::member(
            "coordinates",
            format!("the {geometry_type} has no coordinates member"),
        )
    })?;
    geometry_of_type(geometry_type, coords).map_err(|e| e.under("coordinates"))
}

/// Reads a geometry given as its GeoJSON type and coordinates (a geo-query, a reference point of
/// distance ordering, the coordinates of a GeoJSON object): positions of 2 or 3 numbers within
/// longitude -180..180 and latitude -90..90, LineStrings of 2 positions or more, Polygon rings
/// closed and of 4 positions or more, Multi- geometries not empty. The one geometry reader of the
/// broker; the problem says what is wrong in words, the pointer where, relative to the
/// coordinates (`/0/2/1`: the latitude of the third position of the first ring).
pub fn geometry_of_type(geometry_type: &str, coords: &Value) -> BodyResult<Geometry<f64>> {
    let g = match geometry_type {
        "Point" => Geometry::Point(Point(position(coords, "the Point")?)),
        "MultiPoint" => Geometry::MultiPoint(MultiPoint(
            positions(coords, 1, "the MultiPoint")?
                .into_iter()
                .map(Point)
                .collect(),
        )),
        "LineString" => Geometry::LineString(line_string(coords, "the LineString")?),
        "MultiLineString" => Geometry::MultiLineString(MultiLineString(each(
            coords,
            "the MultiLineString",
            "LineStrings",
            |i, l| line_string(l, &format!("LineString {i} of the MultiLineString")),
        )?)),
        "Polygon" => Geometry::Polygon(polygon(coords, "the Polygon")?),
        "MultiPolygon" => Geometry::MultiPolygon(MultiPolygon(each(
            coords,
            "the MultiPolygon",
            "Polygons",
            |i, p| polygon(p, &format!("Polygon {i} of the MultiPolygon")),
        )?)),
        other => return Err(BodyError::whole(unsupported_geometry(other))),
    };
    Ok(g)
}

/// Checks that `geometry_type` is one given by coordinates (all but GeometryCollection), so that
/// a geo-query can tell a bad type from bad coordinates; the error suggests the right spelling.
pub fn coordinate_geometry_type(geometry_type: &str) -> Result<(), String> {
    if COORDINATE_GEOMETRY_TYPES.contains(&geometry_type) {
        Ok(())
    } else {
        Err(unsupported_geometry(geometry_type))
    }
}

/// Why `geometry_type` is not one of the coordinate geometry types.
fn unsupported_geometry(geometry_type: &str) -> String {
    let hint = COORDINATE_GEOMETRY_TYPES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(geometry_type))
        .map(|t| format!(" (did you mean {t}?)"))
        .unwrap_or_default();
    format!(
        "geometry '{geometry_type}' is not supported{hint}; it must be one of {}",
        COORDINATE_GEOMETRY_TYPES.join(", ")
    )
}

/// The items of a non-empty array, each read by `read` (given its index), errors under it.
fn each<T>(
    v: &Value,
    what: &str,
    items: &str,
    read: impl Fn(usize, &Value) -> BodyResult<T>,
) -> BodyResult<Vec<T>> {
    match v {
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, item)| read(i, item).map_err(|e| e.under(i)))
            .collect(),
        Value::Array(_) => Err(BodyError::whole(format!(
            "the coordinates of {what} are empty; it needs at least one of its {items}"
        ))),
        other => Err(BodyError::whole(format!(
            "the coordinates of {what} must be an array of {items}, not {other}"
        ))),
    }
}

fn position(v: &Value, what: &str) -> BodyResult<Coord<f64>> {
    let Value::Array(items) = v else {
        return Err(BodyError::whole(format!(
            "{what}: a position must be an array [longitude, latitude], not {v}"
        )));
    };
    if let Some(i) = items.iter().position(|n| !n.is_number()) {
        return Err(BodyError::member(
            i,
            format!("{what}: a position must be 2 or 3 numbers [longitude, latitude(, altitude)], not {v}"),
        ));
    }
    if !(2..=3).contains(&items.len()) {
        return Err(BodyError::whole(format!(
            "{what}: a position must be 2 or 3 numbers [longitude, latitude(, altitude)], not {v}"
        )));
    }
    let (lon, lat) = (items[0].as_f64(), items[1].as_f64());
    let (lon, lat) = (lon.unwrap_or(f64::NAN), lat.unwrap_or(f64::NAN));
    if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
        return Err(BodyError::member(
            0,
            format!("{what}: the position {v} has longitude {lon}, outside -180..180"),
        ));
    }
    if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
        return Err(BodyError::member(
            1,
            format!("{what}: the position {v} has latitude {lat}, outside -90..90"),
        ));
    }
    Ok(Coord { x: lon, y: lat })
}

fn positions(v: &Value, min: usize, what: &str) -> BodyResult<Vec<Coord<f64>>> {
    let Value::Array(items) = v else {
        return Err(BodyError::whole(format!(
            "the coordinates of {what} must be an array of positions, not {v}"
        )));
    };
    if items.len() < min {
        return Err(BodyError::whole(format!(
            "{what} has {} position(s); it needs at least {min}",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, p)| position(p, what).map_err(|e| e.under(i)))
        .collect()
}

fn line_string(v: &Value, what: &str) -> BodyResult<LineString<f64>> {
    Ok(LineString(positions(v, 2, what)?))
}

fn polygon(v: &Value, what: &str) -> BodyResult<Polygon<f64>> {
    let mut rings = each(v, what, "linear rings", |i, ring| {
        let name = if i == 0 {
            format!("the exterior ring of {what}")
        } else {
            format!("hole {i} of {what}")
        };
        let coords = positions(ring, 4, &name)?;
        let (first, last) = (coords[0], coords[coords.len() - 1]);
        let items = ring.as_array().map(Vec::as_slice).unwrap_or_default();
        // The third number (altitude) must match too.
        let altitude = |p: &Value| p.get(2).and_then(Value::as_f64);
        if first != last || altitude(&items[0]) != altitude(&items[items.len() - 1]) {
            return Err(BodyError::member(
                items.len() - 1,
                format!(
                    "{name} is not closed: it starts at {} but ends at {}",
                    items[0],
                    items[items.len() - 1]
                ),
            ));
        }
        Ok(LineString(coords))
    })?;
    let exterior = rings.remove(0);
    Ok(Polygon::new(exterior, rings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uris_names_and_times() {
        assert!(uri("id", "urn:ngsi-ld:Building:1").is_ok());
        assert!(uri("id", "https://example.org/a").is_ok());
        assert!(uri("id", "not a uri").is_err());
        assert!(uri("id", "plainword").is_err());
        assert!(name("attribute name", "temperature").is_ok());
        assert!(name("attribute name", "https://ex.org/temp").is_ok());
        assert!(name("attribute name", "temp(1)").is_err());
        assert!(name("attribute name", "").is_err());
        assert!(date_time("observedAt", "2024-01-01T10:00:00Z").is_ok());
        assert!(date_time("observedAt", "2024-01-01T10:00:00.123").is_ok());
        assert!(date_time("observedAt", "yesterday").is_err());
    }

    #[test]
    fn geometries() {
        assert!(geometry(
            "location",
            &json!({"type": "Point", "coordinates": [2.3, 48.8]})
        )
        .is_ok());
        assert!(geometry(
            "location",
            &json!({"type": "Point", "coordinates": [200, 48.8]})
        )
        .is_err());
        assert!(geometry("location", &json!({"type": "Point", "coordinates": "x"})).is_err());
        assert!(geometry(
            "location",
            &json!({"type": "Circle", "coordinates": [1, 2]})
        )
        .is_err());
        let open = json!({"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,1]]]});
        assert!(geometry("location", &open).is_err());
        let closed = json!({"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,1],[0,0]]]});
        assert!(geometry("location", &closed).is_ok());
        assert!(geometry(
            "location",
            &json!({"type": "LineString", "coordinates": [[0,0]]})
        )
        .is_err());
        let point = json!({"type": "Point", "coordinates": [2.3, 48.8]});
        let collection = json!({"type": "GeometryCollection", "geometries": [point, closed]});
        assert!(geometry("location", &collection).is_ok());
        let collection = json!({"type": "GeometryCollection", "geometries": [point, open]});
        let why = geometry("location", &collection).unwrap_err();
        assert!(why.problem.contains("is not closed"), "{why}");
        assert_eq!(why.pointer.to_string(), "/geometries/1/coordinates/0/3");
        // A geo-query takes every geometry type but GeometryCollection.
        assert!(geometry_of_type("GeometryCollection", &json!([])).is_err());
        let why = geometry_of_type("point", &json!([1, 2])).unwrap_err();
        assert!(why.problem.contains("did you mean Point?"), "{why}");
        let why = geometry("location", &json!({"type": "point", "coordinates": [1, 2]}));
        assert_eq!(why.unwrap_err().pointer.to_string(), "/type");
    }
}
