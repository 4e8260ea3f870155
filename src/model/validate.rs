//! Validation rules shared by every operation: what a valid entity id, name, timestamp and geometry
//! are. Each returns a BadRequestData error naming the offending input.

use crate::error::{NgsiError, NgsiResult};
use chrono::{DateTime, NaiveDateTime, Utc};
use geojson::{GeometryValue, Position};
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

/// Checks that `value` is a GeoJSON geometry NGSI-LD accepts, with positions in range and rings
/// closed.
pub fn geometry(what: &str, value: &Value) -> NgsiResult<()> {
    let bad =
        |why: String| NgsiError::bad_data(format!("{what} is not a valid GeoJSON geometry: {why}"));
    // Deserialized from the borrowed value: no copy of the coordinates.
    let geometry = <geojson::Geometry as serde::Deserialize>::deserialize(value)
        .map_err(|e| bad(e.to_string()))?;
    check_geometry(&geometry.value).map_err(bad)
}

fn check_geometry(value: &GeometryValue) -> Result<(), String> {
    use GeometryValue as G;
    match value {
        G::Point { coordinates } => position(coordinates),
        G::MultiPoint { coordinates } => coordinates.iter().try_for_each(position),
        G::LineString { coordinates } => line(coordinates),
        G::MultiLineString { coordinates } => coordinates.iter().try_for_each(|l| line(l)),
        G::Polygon { coordinates } => polygon(coordinates),
        G::MultiPolygon { coordinates } => coordinates.iter().try_for_each(|p| polygon(p)),
        G::GeometryCollection { geometries } => {
            geometries.iter().try_for_each(|g| check_geometry(&g.value))
        }
    }
}

fn position(p: &Position) -> Result<(), String> {
    let p = p.as_slice();
    if !(2..=3).contains(&p.len()) {
        return Err(format!(
            "a position has {} numbers; it needs 2 (longitude, latitude) or 3",
            p.len()
        ));
    }
    if !p.iter().all(|v| v.is_finite())
        || !(-180.0..=180.0).contains(&p[0])
        || !(-90.0..=90.0).contains(&p[1])
    {
        return Err(format!(
            "the position {p:?} is outside longitude -180..180 / latitude -90..90"
        ));
    }
    Ok(())
}

fn line(l: &[Position]) -> Result<(), String> {
    if l.len() < 2 {
        return Err("a LineString needs at least 2 positions".into());
    }
    l.iter().try_for_each(position)
}

fn polygon(rings: &[Vec<Position>]) -> Result<(), String> {
    if rings.is_empty() {
        return Err("a Polygon needs at least one ring".into());
    }
    for ring in rings {
        if ring.len() < 4 {
            return Err("a Polygon ring needs at least 4 positions".into());
        }
        if ring.first().map(Position::as_slice) != ring.last().map(Position::as_slice) {
            return Err("a Polygon ring must end where it starts".into());
        }
        ring.iter().try_for_each(position)?;
    }
    Ok(())
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
    }
}
