//! Black-box tests of the query API of GS CIM 009 V1.9.1: query entities (5.7.2, GET /entities and
//! POST /entityOperations/query) with type expressions (4.17), id lists and idPattern, attrs, q (4.9),
//! geoQ (4.10), scopeQ (4.19), lang (4.15), pick/omit (4.21), the representations of 4.5, pagination
//! and counting (5.5.9, 6.3.10, 6.3.13), GeoJSON (6.3.15), tenants (4.14) and the discovery resources
//! (5.7.5–5.7.10).
//!
//! Every test loads the same realistic data set, generated here from a seeded PRNG (several hundred
//! AirQualityObserved, ParkingSpot, Streetlight and Device entities) through batch upsert, and
//! compares the broker's answers with answers computed independently from the generated structs:
//! plain Rust filters, a haversine distance and a point-in-polygon written below. Nothing expected
//! is ever copied from the broker.

use crate::common;

use common::{assert_problem, assert_problem_one_of, read, TestServer};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

// ------------------------------------------------------------------------------------------------
// The data set
// ------------------------------------------------------------------------------------------------

/// SplitMix64: small, seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// (longitude, latitude)
type Pt = (f64, f64);

#[derive(Clone, Debug)]
enum Geo {
    Point(Pt),
    /// Exterior ring first, then holes; every ring closed.
    Polygon(Vec<Vec<Pt>>),
}

const SCOPES: [&str; 10] = [
    "/Madrid",
    "/Madrid/Centro",
    "/Madrid/Centro/Sol",
    "/Madrid/Centro/Lavapies",
    "/Madrid/Retiro",
    "/Madrid/Retiro/Parque",
    "/Madrid/Chamberi",
    "/Barcelona",
    "/Barcelona/Gracia",
    "/Sevilla/Triana",
];

const DATASET_A: &str = "urn:ngsi-ld:Dataset:sensorA";
const DATASET_B: &str = "urn:ngsi-ld:Dataset:sensorB";

/// One generated entity, as plain data.
#[derive(Clone, Debug, Default)]
struct Gen {
    id: String,
    types: Vec<&'static str>,
    scopes: Vec<&'static str>,
    location: Option<Geo>,
    /// no2 in tenths of a unit, and the observedAt minute (from 2024-03-01T00:00:00Z).
    no2: Option<(i64, u32)>,
    pm10: Option<i64>,
    operational_status: Option<&'static str>,
    ref_device: Option<String>,
    calibrated: Option<bool>,
    /// dateObserved as a minute (a DateTime value).
    date_observed: Option<u32>,
    category: Option<Vec<&'static str>>,
    total_spots: Option<i64>,
    /// A languageMap, in order.
    name: Option<Vec<(&'static str, String)>>,
    /// Instances: datasetId (None: default instance) and value.
    illuminance: Vec<(Option<&'static str>, i64)>,
    /// power.watts and profile.
    config: Option<(i64, &'static str)>,
    power_state: Option<&'static str>,
    serial_number: Option<String>,
    /// batteryLevel in tenths.
    battery_level: Option<i64>,
}

/// A minute since 2024-03-01T00:00:00Z as an RFC 3339 UTC DateTime.
fn time(minute: u32) -> String {
    let day = 1 + minute / 1440;
    let hour = (minute % 1440) / 60;
    let min = minute % 60;
    format!("2024-03-{day:02}T{hour:02}:{min:02}:00Z")
}

fn geojson(g: &Geo) -> Value {
    match g {
        Geo::Point((x, y)) => json!({"type": "Point", "coordinates": [x, y]}),
        Geo::Polygon(rings) => json!({
            "type": "Polygon",
            "coordinates": rings
                .iter()
                .map(|r| r.iter().map(|(x, y)| json!([x, y])).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        }),
    }
}

impl Gen {
    fn has_type(&self, t: &str) -> bool {
        self.types.contains(&t)
    }

    /// The entity in normalized form, as sent.
    fn json(&self) -> Value {
        let mut e = serde_json::Map::new();
        e.insert("id".into(), json!(self.id));
        e.insert(
            "type".into(),
            if self.types.len() == 1 {
                json!(self.types[0])
            } else {
                json!(self.types)
            },
        );
        match self.scopes.len() {
            0 => {}
            1 => {
                e.insert("scope".into(), json!(self.scopes[0]));
            }
            _ => {
                e.insert("scope".into(), json!(self.scopes));
            }
        }
        for (name, kind, _) in self.attrs() {
            let value = match name {
                "location" => {
                    json!({"type": "GeoProperty", "value": geojson(self.location.as_ref().unwrap())})
                }
                "no2" => {
                    let (v, t) = self.no2.unwrap();
                    json!({"type": "Property", "value": v as f64 / 10.0, "observedAt": time(t), "unitCode": "GQ"})
                }
                "pm10" => {
                    json!({"type": "Property", "value": self.pm10.unwrap(), "unitCode": "GQ"})
                }
                "operationalStatus" => {
                    json!({"type": "Property", "value": self.operational_status.unwrap()})
                }
                "refDevice" => {
                    json!({"type": "Relationship", "object": self.ref_device.as_ref().unwrap()})
                }
                "calibrated" => json!({"type": "Property", "value": self.calibrated.unwrap()}),
                "dateObserved" => json!({
                    "type": "Property",
                    "value": {"@type": "DateTime", "@value": time(self.date_observed.unwrap())}
                }),
                "category" => json!({"type": "Property", "value": self.category.as_ref().unwrap()}),
                "totalSpots" => json!({"type": "Property", "value": self.total_spots.unwrap()}),
                "name" => {
                    let map: serde_json::Map<String, Value> = self
                        .name
                        .as_ref()
                        .unwrap()
                        .iter()
                        .map(|(l, t)| (l.to_string(), json!(t)))
                        .collect();
                    json!({"type": "LanguageProperty", "languageMap": map})
                }
                "illuminance" => {
                    let instances: Vec<Value> = self
                        .illuminance
                        .iter()
                        .map(|(d, v)| match d {
                            None => json!({"type": "Property", "value": v, "unitCode": "LUX"}),
                            Some(d) => json!({"type": "Property", "value": v, "unitCode": "LUX", "datasetId": d}),
                        })
                        .collect();
                    if instances.len() == 1 {
                        instances[0].clone()
                    } else {
                        Value::Array(instances)
                    }
                }
                "config" => {
                    let (w, p) = self.config.unwrap();
                    json!({"type": "Property", "value": {"power": {"watts": w}, "profile": p}})
                }
                "powerState" => json!({"type": "Property", "value": self.power_state.unwrap()}),
                "serialNumber" => {
                    json!({"type": "Property", "value": self.serial_number.as_ref().unwrap()})
                }
                "batteryLevel" => {
                    json!({"type": "Property", "value": self.battery_level.unwrap() as f64 / 10.0})
                }
                other => unreachable!("{other} ({kind})"),
            };
            e.insert(name.into(), value);
        }
        Value::Object(e)
    }

    /// The attributes the entity has: name, NGSI-LD kind, number of instances.
    fn attrs(&self) -> Vec<(&'static str, &'static str, usize)> {
        let mut v = Vec::new();
        let mut add = |present: bool, name, kind, n| {
            if present {
                v.push((name, kind, n));
            }
        };
        add(self.location.is_some(), "location", "GeoProperty", 1);
        add(self.no2.is_some(), "no2", "Property", 1);
        add(self.pm10.is_some(), "pm10", "Property", 1);
        add(
            self.operational_status.is_some(),
            "operationalStatus",
            "Property",
            1,
        );
        add(self.ref_device.is_some(), "refDevice", "Relationship", 1);
        add(self.calibrated.is_some(), "calibrated", "Property", 1);
        add(self.date_observed.is_some(), "dateObserved", "Property", 1);
        add(self.category.is_some(), "category", "Property", 1);
        add(self.total_spots.is_some(), "totalSpots", "Property", 1);
        add(self.name.is_some(), "name", "LanguageProperty", 1);
        add(
            !self.illuminance.is_empty(),
            "illuminance",
            "Property",
            self.illuminance.len(),
        );
        add(self.config.is_some(), "config", "Property", 1);
        add(self.power_state.is_some(), "powerState", "Property", 1);
        add(self.serial_number.is_some(), "serialNumber", "Property", 1);
        add(self.battery_level.is_some(), "batteryLevel", "Property", 1);
        v
    }

    fn point(&self) -> Option<Pt> {
        match &self.location {
            Some(Geo::Point(p)) => Some(*p),
            _ => None,
        }
    }

    fn rings(&self) -> Option<&Vec<Vec<Pt>>> {
        match &self.location {
            Some(Geo::Polygon(r)) => Some(r),
            _ => None,
        }
    }
}

/// Sizes of the generated data set.
struct Sizes {
    devices: usize,
    air: usize,
    parking: usize,
    lights: usize,
}

const FULL: Sizes = Sizes {
    devices: 40,
    air: 240,
    parking: 160,
    lights: 200,
};

fn generate(seed: u64, sizes: &Sizes) -> Vec<Gen> {
    let mut r = Rng(seed);
    let mut out = Vec::new();
    let scopes = |r: &mut Rng| -> Vec<&'static str> {
        match r.below(10) {
            0..=2 => vec![],
            3..=7 => vec![r.pick(&SCOPES)],
            _ => {
                let a = r.pick(&SCOPES);
                let mut b = r.pick(&SCOPES);
                while b == a {
                    b = r.pick(&SCOPES);
                }
                vec![a, b]
            }
        }
    };
    let point = |r: &mut Rng| -> Pt {
        (
            round6(r.between(-3.75, -3.65)),
            round6(r.between(40.38, 40.46)),
        )
    };
    let device = |r: &mut Rng| format!("urn:ngsi-ld:Device:D{:03}", r.below(sizes.devices as u64));

    for i in 0..sizes.devices {
        let mut g = Gen {
            id: format!("urn:ngsi-ld:Device:D{i:03}"),
            types: vec!["Device"],
            scopes: scopes(&mut r),
            ..Gen::default()
        };
        if r.chance(0.9) {
            g.serial_number = Some(format!("SN-{:04}", r.below(10_000)));
        }
        if r.chance(0.7) {
            g.battery_level = Some(r.below(1001) as i64);
        }
        out.push(g);
    }
    for i in 0..sizes.air {
        let mut g = Gen {
            id: format!("urn:ngsi-ld:AirQualityObserved:AQ{i:04}"),
            types: if r.chance(0.2) {
                vec!["AirQualityObserved", "Sensor"]
            } else {
                vec!["AirQualityObserved"]
            },
            scopes: scopes(&mut r),
            location: Some(Geo::Point(point(&mut r))),
            ..Gen::default()
        };
        if r.chance(0.95) {
            g.no2 = Some((r.below(2001) as i64, r.below(7 * 1440) as u32));
        }
        if r.chance(0.8) {
            g.pm10 = Some(r.below(151) as i64);
        }
        if r.chance(0.9) {
            g.operational_status = Some(r.pick(&["ok", "warning", "alert", "maintenance"]));
        }
        if r.chance(0.9) {
            g.ref_device = Some(device(&mut r));
        }
        if r.chance(0.7) {
            g.calibrated = Some(r.chance(0.5));
        }
        if r.chance(0.85) {
            g.date_observed = Some(r.below(7 * 1440) as u32);
        }
        out.push(g);
    }
    for i in 0..sizes.parking {
        let (x, y) = point(&mut r);
        let side = round6(r.between(0.0005, 0.003));
        let (x1, y1) = (round6(x + side), round6(y + side));
        let mut rings = vec![vec![(x, y), (x1, y), (x1, y1), (x, y1), (x, y)]];
        if r.chance(0.35) {
            let (hx, hy) = (round6(x + side / 4.0), round6(y + side / 4.0));
            let (hx1, hy1) = (round6(x + 3.0 * side / 4.0), round6(y + 3.0 * side / 4.0));
            rings.push(vec![(hx, hy), (hx, hy1), (hx1, hy1), (hx1, hy), (hx, hy)]);
        }
        let mut g = Gen {
            id: format!("urn:ngsi-ld:ParkingSpot:P{i:03}"),
            types: vec!["ParkingSpot"],
            scopes: scopes(&mut r),
            location: Some(Geo::Polygon(rings)),
            ..Gen::default()
        };
        if r.chance(0.9) {
            g.operational_status = Some(r.pick(&["free", "occupied", "closed"]));
        }
        if r.chance(0.8) {
            g.category = Some(
                r.pick(&[
                    &["onStreet"][..],
                    &["onStreet", "forDisabled"][..],
                    &["offStreet"][..],
                    &["offStreet", "forDisabled", "forElectricCharging"][..],
                ])
                .to_vec(),
            );
        }
        if r.chance(0.9) {
            g.total_spots = Some(1 + r.below(12) as i64);
        }
        out.push(g);
    }
    for i in 0..sizes.lights {
        let mut g = Gen {
            id: format!("urn:ngsi-ld:Streetlight:S{i:03}"),
            types: if r.chance(0.1) {
                vec!["Streetlight", "Device"]
            } else {
                vec!["Streetlight"]
            },
            scopes: scopes(&mut r),
            location: Some(Geo::Point(point(&mut r))),
            ..Gen::default()
        };
        g.name = match r.below(10) {
            0..=5 => Some(vec![
                ("en", format!("Lamp {i}")),
                ("es", format!("Farola {i}")),
            ]),
            6 | 7 => Some(vec![("es", format!("Farola {i}"))]),
            8 => Some(vec![
                ("en", format!("Lamp {i}")),
                ("es", format!("Farola {i}")),
                ("fr", format!("Lampadaire {i}")),
            ]),
            _ => None,
        };
        if r.chance(0.85) {
            g.illuminance = match r.below(4) {
                0 | 1 => vec![(None, r.below(1001) as i64)],
                2 => vec![
                    (Some(DATASET_A), r.below(1001) as i64),
                    (Some(DATASET_B), r.below(1001) as i64),
                ],
                _ => vec![
                    (None, r.below(1001) as i64),
                    (Some(DATASET_A), r.below(1001) as i64),
                ],
            };
        }
        if r.chance(0.6) {
            g.config = Some((
                r.pick(&[60, 100, 150, 200]),
                r.pick(&["eco", "night", "full"]),
            ));
        }
        if r.chance(0.9) {
            g.power_state = Some(r.pick(&["on", "off"]));
        }
        if r.chance(0.3) {
            g.ref_device = Some(device(&mut r));
        }
        out.push(g);
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Geometry, written here independently of the broker
// ------------------------------------------------------------------------------------------------

/// The haversine mean Earth radius in metres.
const EARTH: f64 = 6_371_008.8;

fn haversine(a: Pt, b: Pt) -> f64 {
    let (la1, la2) = (a.1.to_radians(), b.1.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.0 - a.0).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH * h.sqrt().asin()
}

/// Ray casting: whether `p` is inside the closed ring (boundary cases are measure zero here).
fn in_ring(p: Pt, ring: &[Pt]) -> bool {
    let mut inside = false;
    for w in ring.windows(2) {
        let (a, b) = (w[0], w[1]);
        if (a.1 > p.1) != (b.1 > p.1) {
            let x = a.0 + (p.1 - a.1) * (b.0 - a.0) / (b.1 - a.1);
            if p.0 < x {
                inside = !inside;
            }
        }
    }
    inside
}

fn in_polygon(p: Pt, rings: &[Vec<Pt>]) -> bool {
    in_ring(p, &rings[0]) && !rings[1..].iter().any(|h| in_ring(p, h))
}

fn orient(a: Pt, b: Pt, c: Pt) -> f64 {
    (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0)
}

fn segments_cross(p1: Pt, p2: Pt, q1: Pt, q2: Pt) -> bool {
    let (d1, d2) = (orient(q1, q2, p1), orient(q1, q2, p2));
    let (d3, d4) = (orient(p1, p2, q1), orient(p1, p2, q2));
    (d1 > 0.0) != (d2 > 0.0) && (d3 > 0.0) != (d4 > 0.0)
}

/// Whether two closed rings (as filled areas) share a point.
fn rings_intersect(a: &[Vec<Pt>], b: &[Pt]) -> bool {
    let ext = &a[0];
    ext.windows(2)
        .any(|e| b.windows(2).any(|f| segments_cross(e[0], e[1], f[0], f[1])))
        || in_ring(ext[0], b)
        || in_polygon(b[0], a)
}

/// Distance in metres from `q` to a geometry: haversine for points; for polygons, 0 inside, else
/// the planar distance to the nearest edge in a local equirectangular projection (an approximation,
/// so callers allow a tolerance).
fn distance(q: Pt, g: &Geo) -> f64 {
    match g {
        Geo::Point(p) => haversine(q, *p),
        Geo::Polygon(rings) => {
            if in_polygon(q, rings) {
                return 0.0;
            }
            let k = EARTH * std::f64::consts::PI / 180.0;
            let cx = q.1.to_radians().cos();
            let proj = |p: Pt| ((p.0 - q.0) * k * cx, (p.1 - q.1) * k);
            rings
                .iter()
                .flat_map(|r| r.windows(2))
                .map(|w| {
                    let (a, b) = (proj(w[0]), proj(w[1]));
                    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                    let t = (-(a.0 * dx + a.1 * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
                    ((a.0 + t * dx).powi(2) + (a.1 + t * dy).powi(2)).sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        }
    }
}

fn ring_json(ring: &[Pt]) -> String {
    let pts: Vec<String> = ring.iter().map(|(x, y)| format!("[{x},{y}]")).collect();
    format!("[[{}]]", pts.join(","))
}

/// A convex pentagon over the middle of the area.
const PENTAGON: [Pt; 6] = [
    (-3.72, 40.40),
    (-3.68, 40.40),
    (-3.665, 40.425),
    (-3.70, 40.445),
    (-3.735, 40.425),
    (-3.72, 40.40),
];

/// A rectangle in the south-west of the area.
const RECT: [Pt; 5] = [
    (-3.74, 40.39),
    (-3.71, 40.39),
    (-3.71, 40.41),
    (-3.74, 40.41),
    (-3.74, 40.39),
];

// ------------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------------

fn query_string(params: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

fn ids_of(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("an array of entities, got {body}"))
        .iter()
        .map(|e| {
            e["id"]
                .as_str()
                .unwrap_or_else(|| panic!("entity without id: {e}"))
                .to_string()
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn count_header(h: &HeaderMap) -> Option<usize> {
    h.get("NGSILD-Results-Count")
        .map(|v| v.to_str().unwrap().parse().expect("a count"))
}

/// The `Link` headers of a response with the given rel, as their URL (a path with query).
fn links(h: &HeaderMap, rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    for value in h.get_all("Link") {
        for link in value.to_str().unwrap().split(',') {
            let mut parts = link.split(';').map(str::trim);
            let target = parts.next().unwrap_or("");
            let matches = parts.any(|p| {
                p.strip_prefix("rel=")
                    .is_some_and(|r| r.trim_matches('"') == rel)
            });
            if matches {
                let url = target
                    .strip_prefix('<')
                    .and_then(|t| t.strip_suffix('>'))
                    .unwrap_or_else(|| panic!("a <URL> in {link}"));
                out.push(url.to_string());
            }
        }
    }
    out
}

fn same_ids(what: &str, got: &[String], want: &[String]) {
    if got != want {
        let g: BTreeSet<&String> = got.iter().collect();
        let w: BTreeSet<&String> = want.iter().collect();
        let missing: Vec<_> = w.difference(&g).take(8).collect();
        let extra: Vec<_> = g.difference(&w).take(8).collect();
        panic!(
            "{what}: got {} entities ({} distinct), expected {}; missing {missing:?}; unexpected {extra:?}",
            got.len(),
            g.len(),
            want.len()
        );
    }
}

struct Fixture {
    s: TestServer,
    data: Vec<Gen>,
}

async fn upsert_all(s: &TestServer, tenant: Option<&str>, data: &[Gen]) {
    for chunk in data.chunks(100) {
        let body = Value::Array(chunk.iter().map(Gen::json).collect());
        let mut b = s
            .req(Method::POST, "/entityOperations/upsert")
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(t) = tenant {
            b = b.header("NGSILD-Tenant", t);
        }
        let (status, _, body) = read(b.send().await.unwrap()).await;
        assert_eq!(status, 201, "loading the data set: {body}");
        let created: Vec<String> = body
            .as_array()
            .expect("201 of upsert lists the created ids")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let want: Vec<String> = chunk.iter().map(|g| g.id.clone()).collect();
        assert_eq!(sorted(created), sorted(want), "every entity was created");
    }
}

async fn loaded() -> Fixture {
    let s = TestServer::start().await;
    let data = generate(0x5EED_2024, &FULL);
    upsert_all(&s, None, &data).await;
    Fixture { s, data }
}

impl Fixture {
    fn gen(&self, id: &str) -> &Gen {
        self.data.iter().find(|g| g.id == id).unwrap()
    }

    /// Ids of the generated entities satisfying `f`, sorted.
    fn expect(&self, f: impl Fn(&Gen) -> bool) -> Vec<String> {
        sorted(
            self.data
                .iter()
                .filter(|g| f(g))
                .map(|g| g.id.clone())
                .collect(),
        )
    }

    async fn get(
        &self,
        tenant: Option<&str>,
        params: &[(&str, &str)],
        accept: Option<&str>,
    ) -> (u16, HeaderMap, Value) {
        let mut b = self
            .s
            .req(Method::GET, &format!("/entities?{}", query_string(params)));
        if let Some(t) = tenant {
            b = b.header("NGSILD-Tenant", t);
        }
        if let Some(a) = accept {
            b = b.header("Accept", a);
        }
        read(b.send().await.unwrap()).await
    }

    /// Runs GET /entities with these parameters (plus limit=1000&count=true), asserts 200 and that
    /// the count header matches, and returns the body.
    async fn all(&self, tenant: Option<&str>, params: &[(&str, &str)]) -> Vec<Value> {
        let mut p = params.to_vec();
        p.push(("limit", "1000"));
        p.push(("count", "true"));
        let (status, headers, body) = self.get(tenant, &p, None).await;
        assert_eq!(status, 200, "{params:?}: {body}");
        let list = body
            .as_array()
            .unwrap_or_else(|| panic!("{params:?}: {body}"))
            .clone();
        assert_eq!(
            count_header(&headers),
            Some(list.len()),
            "{params:?}: NGSILD-Results-Count"
        );
        list
    }

    async fn ids(&self, params: &[(&str, &str)]) -> Vec<String> {
        sorted(ids_of(&Value::Array(self.all(None, params).await)))
    }

    /// Asserts that the query answers exactly the entities satisfying `f` (and that these are some
    /// but not all of the data set, so that the check means something). Returns how many.
    async fn check(&self, params: &[(&str, &str)], f: impl Fn(&Gen) -> bool) -> usize {
        let want = self.expect(f);
        assert!(
            !want.is_empty() && want.len() < self.data.len(),
            "{params:?}: the data set should give a non-trivial answer, expected {} of {}",
            want.len(),
            self.data.len()
        );
        let got = self.ids(params).await;
        same_ids(&format!("{params:?}"), &got, &want);
        want.len()
    }
}

/// A stored entity as a comparable value: top-level arrays (types, scopes, instances) sorted.
fn normalize(e: &Value) -> Value {
    let mut out = e.clone();
    if let Some(obj) = out.as_object_mut() {
        for (_, v) in obj.iter_mut() {
            if let Value::Array(items) = v {
                items.sort_by_key(|i| i.to_string());
            }
        }
    }
    out
}

fn tenths(v: i64) -> f64 {
    v as f64 / 10.0
}

// ------------------------------------------------------------------------------------------------
// Selection: types, ids, idPattern, attrs
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn query_results_are_the_stored_entities() {
    let f = loaded().await;
    for t in ["AirQualityObserved", "ParkingSpot", "Streetlight", "Device"] {
        let got = f.all(None, &[("type", t)]).await;
        let want: BTreeMap<&str, &Gen> = f
            .data
            .iter()
            .filter(|g| g.has_type(t))
            .map(|g| (g.id.as_str(), g))
            .collect();
        assert_eq!(got.len(), want.len(), "type={t}");
        for e in &got {
            let id = e["id"].as_str().unwrap();
            let g = want
                .get(id)
                .unwrap_or_else(|| panic!("type={t} returned {id}"));
            assert_eq!(normalize(e), normalize(&g.json()), "type={t}: {id}");
        }
    }
}

#[actix_web::test]
async fn type_expressions_select_by_type() {
    let f = loaded().await;
    f.check(&[("type", "Streetlight")], |g| g.has_type("Streetlight"))
        .await;
    f.check(&[("type", "Sensor")], |g| g.has_type("Sensor"))
        .await;
    f.check(&[("type", "Streetlight,ParkingSpot")], |g| {
        g.has_type("Streetlight") || g.has_type("ParkingSpot")
    })
    .await;
    f.check(&[("type", "Streetlight|ParkingSpot")], |g| {
        g.has_type("Streetlight") || g.has_type("ParkingSpot")
    })
    .await;
    f.check(&[("type", "AirQualityObserved;Sensor")], |g| {
        g.has_type("AirQualityObserved") && g.has_type("Sensor")
    })
    .await;
    f.check(&[("type", "Streetlight;Device")], |g| {
        g.has_type("Streetlight") && g.has_type("Device")
    })
    .await;
    f.check(&[("type", "(AirQualityObserved;Sensor)|Device")], |g| {
        (g.has_type("AirQualityObserved") && g.has_type("Sensor")) || g.has_type("Device")
    })
    .await;
    f.check(
        &[("type", "Device;(Streetlight|AirQualityObserved)")],
        |g| g.has_type("Device") && (g.has_type("Streetlight") || g.has_type("AirQualityObserved")),
    )
    .await;
    // A full IRI is the same type as its compact name.
    f.check(
        &[(
            "type",
            "https://uri.etsi.org/ngsi-ld/default-context/ParkingSpot",
        )],
        |g| g.has_type("ParkingSpot"),
    )
    .await;
    // A type nothing has: an empty answer, not an error.
    assert!(f.ids(&[("type", "Bicycle")]).await.is_empty());
    assert!(f
        .ids(&[("type", "Streetlight;ParkingSpot")])
        .await
        .is_empty());
}

#[actix_web::test]
async fn id_lists_and_id_patterns_narrow_the_types() {
    let f = loaded().await;
    let wanted = [
        "urn:ngsi-ld:AirQualityObserved:AQ0003",
        "urn:ngsi-ld:AirQualityObserved:AQ0150",
        "urn:ngsi-ld:Streetlight:S010",
        "urn:ngsi-ld:AirQualityObserved:AQ9999",
    ];
    let list = wanted.join(",");
    let got = f
        .ids(&[("id", &list), ("type", "AirQualityObserved")])
        .await;
    assert_eq!(
        got,
        vec![
            "urn:ngsi-ld:AirQualityObserved:AQ0003".to_string(),
            "urn:ngsi-ld:AirQualityObserved:AQ0150".to_string()
        ],
        "ids of other types and unknown ids are not returned"
    );
    let got = f
        .ids(&[("id", &list), ("type", "AirQualityObserved,Streetlight")])
        .await;
    assert_eq!(got.len(), 3);

    f.check(
        &[
            ("type", "Streetlight"),
            ("idPattern", "^urn:ngsi-ld:Streetlight:S01[0-9]$"),
        ],
        |g| g.has_type("Streetlight") && g.id.starts_with("urn:ngsi-ld:Streetlight:S01"),
    )
    .await;
    f.check(
        &[("type", "Streetlight,Device"), ("idPattern", "[05]$")],
        |g| {
            (g.has_type("Streetlight") || g.has_type("Device"))
                && (g.id.ends_with('0') || g.id.ends_with('5'))
        },
    )
    .await;
    // id and q together
    let got = f
        .ids(&[
            ("id", &list),
            ("type", "AirQualityObserved"),
            ("q", "no2>=0"),
        ])
        .await;
    let want = f.expect(|g| {
        wanted.contains(&g.id.as_str()) && g.has_type("AirQualityObserved") && g.no2.is_some()
    });
    same_ids("id + q", &got, &want);
}

#[actix_web::test]
async fn attrs_keeps_entities_with_at_least_one_and_projects_to_them() {
    let f = loaded().await;
    f.check(&[("attrs", "pm10,batteryLevel")], |g| {
        g.pm10.is_some() || g.battery_level.is_some()
    })
    .await;
    f.check(&[("type", "Streetlight"), ("attrs", "config")], |g| {
        g.has_type("Streetlight") && g.config.is_some()
    })
    .await;
    let got = f.all(None, &[("attrs", "pm10,batteryLevel")]).await;
    for e in &got {
        let g = f.gen(e["id"].as_str().unwrap());
        let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want: BTreeSet<&str> = ["id", "type"].into();
        if g.pm10.is_some() {
            want.insert("pm10");
        }
        if g.battery_level.is_some() {
            want.insert("batteryLevel");
        }
        let extra: Vec<_> = keys.difference(&want).filter(|k| **k != "scope").collect();
        assert!(
            extra.is_empty(),
            "{}: attrs projects away {extra:?}: {e}",
            g.id
        );
        assert!(want.is_subset(&keys), "{}: {e}", g.id);
        if let Some(v) = g.pm10 {
            assert_eq!(e["pm10"]["value"], v);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// q
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn q_compares_numbers_with_every_operator() {
    let f = loaded().await;
    let no2 = |g: &Gen| g.no2.map(|(v, _)| v);
    // a value that occurs in the data, for == and the boundaries of > and >=
    let some = f.data.iter().find_map(no2).unwrap();
    let lit = format!("{}", tenths(some));
    f.check(&[("q", &format!("no2=={lit}"))], |g| no2(g) == Some(some))
        .await;
    f.check(&[("q", &format!("no2!={lit}"))], |g| {
        no2(g).is_some_and(|v| v != some)
    })
    .await;
    f.check(&[("q", &format!("no2>{lit}"))], |g| {
        no2(g).is_some_and(|v| v > some)
    })
    .await;
    f.check(&[("q", &format!("no2>={lit}"))], |g| {
        no2(g).is_some_and(|v| v >= some)
    })
    .await;
    f.check(&[("q", &format!("no2<{lit}"))], |g| {
        no2(g).is_some_and(|v| v < some)
    })
    .await;
    f.check(&[("q", &format!("no2<={lit}"))], |g| {
        no2(g).is_some_and(|v| v <= some)
    })
    .await;
    f.check(&[("q", "pm10>100")], |g| g.pm10.is_some_and(|v| v > 100))
        .await;
    f.check(&[("q", "pm10<=5")], |g| g.pm10.is_some_and(|v| v <= 5))
        .await;
    f.check(&[("q", "batteryLevel<20.5")], |g| {
        g.battery_level.is_some_and(|v| v < 205)
    })
    .await;
    f.check(&[("q", "totalSpots>=10")], |g| {
        g.total_spots.is_some_and(|v| v >= 10)
    })
    .await;
    // integers and decimals compare as numbers
    let pm = f.data.iter().find_map(|g| g.pm10).unwrap();
    f.check(&[("q", &format!("pm10=={pm}.0"))], |g| g.pm10 == Some(pm))
        .await;
    f.check(&[("type", "AirQualityObserved"), ("q", "no2>150")], |g| {
        g.has_type("AirQualityObserved") && no2(g).is_some_and(|v| v > 1500)
    })
    .await;
}

#[actix_web::test]
async fn q_ranges_and_value_lists() {
    let f = loaded().await;
    f.check(&[("q", "pm10==20..40")], |g| {
        g.pm10.is_some_and(|v| (20..=40).contains(&v))
    })
    .await;
    f.check(&[("q", "pm10!=20..40")], |g| {
        g.pm10.is_some_and(|v| !(20..=40).contains(&v))
    })
    .await;
    f.check(&[("q", "no2==10.5..30")], |g| {
        g.no2.is_some_and(|(v, _)| (105..=300).contains(&v))
    })
    .await;
    f.check(&[("q", "pm10==1,2,3,50,149")], |g| {
        g.pm10.is_some_and(|v| [1, 2, 3, 50, 149].contains(&v))
    })
    .await;
    f.check(&[("q", "operationalStatus==\"ok\",\"alert\"")], |g| {
        matches!(g.operational_status, Some("ok" | "alert"))
    })
    .await;
    f.check(
        &[("q", "operationalStatus!=\"ok\",\"free\",\"closed\"")],
        |g| {
            g.operational_status
                .is_some_and(|s| !["ok", "free", "closed"].contains(&s))
        },
    )
    .await;
    f.check(&[("q", "operationalStatus==\"a\"..\"n\"")], |g| {
        g.operational_status
            .is_some_and(|s| ("a"..="n").contains(&s))
    })
    .await;
    f.check(&[("q", "config[power.watts]==60,100")], |g| {
        g.config.is_some_and(|(w, _)| w == 60 || w == 100)
    })
    .await;
}

#[actix_web::test]
async fn q_strings_regular_expressions_booleans_and_date_times() {
    let f = loaded().await;
    let status = |g: &Gen| g.operational_status;
    f.check(&[("q", "operationalStatus==\"warning\"")], |g| {
        status(g) == Some("warning")
    })
    .await;
    f.check(&[("q", "operationalStatus!=\"warning\"")], |g| {
        status(g).is_some_and(|s| s != "warning")
    })
    .await;
    f.check(&[("q", "operationalStatus>\"o\"")], |g| {
        status(g).is_some_and(|s| s > "o")
    })
    .await;
    f.check(&[("q", "operationalStatus<=\"free\"")], |g| {
        status(g).is_some_and(|s| s <= "free")
    })
    .await;
    f.check(&[("q", "serialNumber~=^SN-0")], |g| {
        g.serial_number
            .as_ref()
            .is_some_and(|s| s.starts_with("SN-0"))
    })
    .await;
    f.check(&[("q", "operationalStatus~=in")], |g| {
        status(g).is_some_and(|s| s.contains("in"))
    })
    .await;
    f.check(&[("q", "operationalStatus!~=o")], |g| {
        status(g).is_some_and(|s| !s.contains('o'))
    })
    .await;
    f.check(&[("q", "serialNumber~=[05]$")], |g| {
        g.serial_number
            .as_ref()
            .is_some_and(|s| s.ends_with('0') || s.ends_with('5'))
    })
    .await;
    f.check(&[("q", "calibrated==true")], |g| g.calibrated == Some(true))
        .await;
    f.check(&[("q", "calibrated!=true")], |g| {
        g.calibrated == Some(false)
    })
    .await;
    f.check(&[("q", "powerState==\"on\"")], |g| {
        g.power_state == Some("on")
    })
    .await;
    // a DateTime value ({"@type": "DateTime", "@value": ...})
    f.check(&[("q", "dateObserved>=2024-03-03T00:00:00Z")], |g| {
        g.date_observed.is_some_and(|m| m >= 2 * 1440)
    })
    .await;
    f.check(
        &[(
            "q",
            "dateObserved==2024-03-02T00:00:00Z..2024-03-04T12:00:00Z",
        )],
        |g| {
            g.date_observed
                .is_some_and(|m| (1440..=3 * 1440 + 720).contains(&m))
        },
    )
    .await;
    // an array value: any element
    f.check(&[("q", "category==\"forDisabled\"")], |g| {
        g.category
            .as_ref()
            .is_some_and(|c| c.contains(&"forDisabled"))
    })
    .await;
    f.check(
        &[("q", "category==\"forElectricCharging\",\"onStreet\"")],
        |g| {
            g.category
                .as_ref()
                .is_some_and(|c| c.contains(&"forElectricCharging") || c.contains(&"onStreet"))
        },
    )
    .await;
}

#[actix_web::test]
async fn q_observed_at_compound_values_relationships_and_dataset_instances() {
    let f = loaded().await;
    let observed = |g: &Gen| g.no2.map(|(_, t)| t);
    f.check(&[("q", "no2.observedAt>=2024-03-04T00:00:00Z")], |g| {
        observed(g).is_some_and(|t| t >= 3 * 1440)
    })
    .await;
    // an offset other than Z is the same instant
    f.check(&[("q", "no2.observedAt>=2024-03-04T01:30:00+01:30")], |g| {
        observed(g).is_some_and(|t| t >= 3 * 1440)
    })
    .await;
    f.check(&[("q", "no2.observedAt<2024-03-02T12:00:00Z")], |g| {
        observed(g).is_some_and(|t| t < 1440 + 720)
    })
    .await;
    f.check(
        &[(
            "q",
            "no2.observedAt==2024-03-02T00:00:00Z..2024-03-03T00:00:00Z;no2>100",
        )],
        |g| {
            g.no2
                .is_some_and(|(v, t)| (1440..=2 * 1440).contains(&t) && v > 1000)
        },
    )
    .await;
    // compound values
    f.check(&[("q", "config[power.watts]>=150")], |g| {
        g.config.is_some_and(|(w, _)| w >= 150)
    })
    .await;
    f.check(&[("q", "config[profile]==\"eco\"")], |g| {
        g.config.is_some_and(|(_, p)| p == "eco")
    })
    .await;
    f.check(&[("q", "config[profile]")], |g| g.config.is_some())
        .await;
    // Relationships compare by object
    let device = f.data.iter().find_map(|g| g.ref_device.clone()).unwrap();
    f.check(&[("q", &format!("refDevice==\"{device}\""))], |g| {
        g.ref_device.as_deref() == Some(device.as_str())
    })
    .await;
    f.check(
        &[(
            "q",
            "refDevice==\"urn:ngsi-ld:Device:D001\",\"urn:ngsi-ld:Device:D002\",\"urn:ngsi-ld:Device:D003\"",
        )],
        |g| {
            g.ref_device.as_deref().is_some_and(|d| {
                ["urn:ngsi-ld:Device:D001", "urn:ngsi-ld:Device:D002", "urn:ngsi-ld:Device:D003"]
                    .contains(&d)
            })
        },
    )
    .await;
    f.check(
        &[
            ("type", "Streetlight"),
            ("q", &format!("refDevice!=\"{device}\"")),
        ],
        |g| {
            g.has_type("Streetlight")
                && g.ref_device
                    .as_deref()
                    .is_some_and(|d| d != device.as_str())
        },
    )
    .await;
    // multi-attributes: some instance (any datasetId) satisfies the term
    let lux = |g: &Gen| g.illuminance.iter().map(|(_, v)| *v).collect::<Vec<_>>();
    f.check(&[("q", "illuminance>900")], |g| {
        lux(g).iter().any(|v| *v > 900)
    })
    .await;
    f.check(&[("q", "illuminance<100")], |g| {
        lux(g).iter().any(|v| *v < 100)
    })
    .await;
    f.check(&[("q", "illuminance>700;illuminance<300")], |g| {
        lux(g).iter().any(|v| *v > 700) && lux(g).iter().any(|v| *v < 300)
    })
    .await;
}

#[actix_web::test]
async fn q_existence_negation_and_precedence() {
    let f = loaded().await;
    let no2 = |g: &Gen| g.no2.map(|(v, _)| v);
    f.check(
        &[("type", "AirQualityObserved"), ("q", "!operationalStatus")],
        |g| g.has_type("AirQualityObserved") && g.operational_status.is_none(),
    )
    .await;
    f.check(&[("q", "calibrated")], |g| g.calibrated.is_some())
        .await;
    f.check(
        &[("type", "AirQualityObserved"), ("q", "!pm10;no2<50")],
        |g| g.has_type("AirQualityObserved") && g.pm10.is_none() && no2(g).is_some_and(|v| v < 500),
    )
    .await;
    f.check(
        &[
            ("type", "AirQualityObserved"),
            ("q", "!calibrated|calibrated==false"),
        ],
        |g| g.has_type("AirQualityObserved") && g.calibrated != Some(true),
    )
    .await;
    // ; binds tighter than |
    f.check(
        &[("q", "operationalStatus==\"alert\"|no2>150;pm10<30")],
        |g| {
            g.operational_status == Some("alert")
                || (no2(g).is_some_and(|v| v > 1500) && g.pm10.is_some_and(|v| v < 30))
        },
    )
    .await;
    f.check(
        &[("q", "(operationalStatus==\"alert\"|no2>150);pm10<30")],
        |g| {
            (g.operational_status == Some("alert") || no2(g).is_some_and(|v| v > 1500))
                && g.pm10.is_some_and(|v| v < 30)
        },
    )
    .await;
    f.check(
        &[(
            "q",
            "pm10<30;(operationalStatus==\"alert\"|(no2>150;calibrated==true))",
        )],
        |g| {
            g.pm10.is_some_and(|v| v < 30)
                && (g.operational_status == Some("alert")
                    || (no2(g).is_some_and(|v| v > 1500) && g.calibrated == Some(true)))
        },
    )
    .await;
    f.check(&[("q", "totalSpots>10|batteryLevel>95|pm10>145")], |g| {
        g.total_spots.is_some_and(|v| v > 10)
            || g.battery_level.is_some_and(|v| v > 950)
            || g.pm10.is_some_and(|v| v > 145)
    })
    .await;
    // q together with type, attrs and scopeQ: all must hold
    f.check(
        &[
            ("type", "AirQualityObserved"),
            ("attrs", "pm10"),
            ("q", "no2>100"),
            ("scopeQ", "/Madrid/#"),
        ],
        |g| {
            g.has_type("AirQualityObserved")
                && g.pm10.is_some()
                && no2(g).is_some_and(|v| v > 1000)
                && g.scopes
                    .iter()
                    .any(|s| *s == "/Madrid" || s.starts_with("/Madrid/"))
        },
    )
    .await;
}

// ------------------------------------------------------------------------------------------------
// geoQ
// ------------------------------------------------------------------------------------------------

impl Fixture {
    /// Checks a `near` query: every entity surely in range is returned, nothing surely out of range
    /// is (points are exact; polygon distances are approximated here, so 1 % + 1 m either way).
    async fn check_near(
        &self,
        params: &[(&str, &str)],
        q: Pt,
        max: Option<f64>,
        min: Option<f64>,
        filter: impl Fn(&Gen) -> bool,
    ) {
        let ok = |d: f64, slack: f64| {
            max.is_none_or(|m| d <= m + slack) && min.is_none_or(|m| d >= m - slack)
        };
        let (mut sure, mut maybe) = (BTreeSet::new(), BTreeSet::new());
        for g in self.data.iter().filter(|g| filter(g)) {
            let Some(loc) = &g.location else { continue };
            let d = distance(q, loc);
            let tol = match loc {
                Geo::Point(_) => 0.01,
                Geo::Polygon(_) => 1.0 + d * 0.01,
            };
            if ok(d, -tol) {
                sure.insert(g.id.clone());
            }
            if ok(d, tol) {
                maybe.insert(g.id.clone());
            }
        }
        assert!(!sure.is_empty(), "{params:?}: no entity surely matches");
        let got: BTreeSet<String> = self.ids(params).await.into_iter().collect();
        let missing: Vec<_> = sure.difference(&got).collect();
        let extra: Vec<_> = got.difference(&maybe).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{params:?}: missing {missing:?}, unexpected {extra:?}"
        );
    }
}

#[actix_web::test]
async fn geo_near_with_max_and_min_distance_in_metres() {
    let f = loaded().await;
    let c = (-3.70, 40.42);
    let coords = "[-3.7,40.42]";
    let points = |g: &Gen| g.has_type("Streetlight") || g.has_type("AirQualityObserved");
    for max in [500.0, 1500.0, 3000.0] {
        let georel = format!("near;maxDistance=={max}");
        f.check_near(
            &[
                ("type", "Streetlight,AirQualityObserved"),
                ("georel", &georel),
                ("geometry", "Point"),
                ("coordinates", coords),
            ],
            c,
            Some(max),
            None,
            points,
        )
        .await;
    }
    f.check_near(
        &[
            ("type", "Streetlight"),
            ("georel", "near;minDistance==4500"),
            ("geometry", "Point"),
            ("coordinates", coords),
        ],
        c,
        None,
        Some(4500.0),
        |g| g.has_type("Streetlight"),
    )
    .await;
    // polygons: the distance to the nearest point of the polygon
    f.check_near(
        &[
            ("type", "ParkingSpot"),
            ("georel", "near;maxDistance==1500"),
            ("geometry", "Point"),
            ("coordinates", coords),
        ],
        c,
        Some(1500.0),
        None,
        |g| g.has_type("ParkingSpot"),
    )
    .await;
    // every type at once, with q
    f.check_near(
        &[
            ("q", "operationalStatus"),
            ("georel", "near;maxDistance==2000"),
            ("geometry", "Point"),
            ("coordinates", "[-3.68,40.44]"),
        ],
        (-3.68, 40.44),
        Some(2000.0),
        None,
        |g| g.operational_status.is_some(),
    )
    .await;
    // the metre: a point 0.01° of latitude north is ~1112 m away
    let g0 = f.data.iter().find(|g| g.has_type("Streetlight")).unwrap();
    let (x, y) = g0.point().unwrap();
    let north = format!("[{x},{}]", round6(y + 0.01));
    let d = haversine((x, y), (x, round6(y + 0.01)));
    assert!((1100.0..1125.0).contains(&d));
    let got = f
        .ids(&[
            ("id", &g0.id),
            ("type", "Streetlight"),
            (
                "georel",
                &format!("near;maxDistance=={}", (d + 2.0).round()),
            ),
            ("geometry", "Point"),
            ("coordinates", &north),
        ])
        .await;
    assert_eq!(got, vec![g0.id.clone()]);
    let got = f
        .ids(&[
            ("id", &g0.id),
            ("type", "Streetlight"),
            (
                "georel",
                &format!("near;maxDistance=={}", (d - 2.0).round()),
            ),
            ("geometry", "Point"),
            ("coordinates", &north),
        ])
        .await;
    assert!(got.is_empty(), "{} m is not within {} m", d, d - 2.0);
}

#[actix_web::test]
async fn geo_within_intersects_and_disjoint_with_polygons() {
    let f = loaded().await;
    let pentagon = ring_json(&PENTAGON);
    let rect = ring_json(&RECT);
    let inside_pentagon = |g: &Gen| match &g.location {
        Some(Geo::Point(p)) => in_ring(*p, &PENTAGON),
        Some(Geo::Polygon(r)) => r[0].iter().all(|p| in_ring(*p, &PENTAGON)),
        None => false,
    };
    let meets = |g: &Gen, q: &[Pt]| match &g.location {
        Some(Geo::Point(p)) => in_ring(*p, q),
        Some(Geo::Polygon(r)) => rings_intersect(r, q),
        None => false,
    };
    f.check(
        &[
            ("type", "Streetlight,AirQualityObserved"),
            ("georel", "within"),
            ("geometry", "Polygon"),
            ("coordinates", &pentagon),
        ],
        |g| (g.has_type("Streetlight") || g.has_type("AirQualityObserved")) && inside_pentagon(g),
    )
    .await;
    let n = f
        .check(
            &[
                ("type", "ParkingSpot"),
                ("georel", "within"),
                ("geometry", "Polygon"),
                ("coordinates", &pentagon),
            ],
            |g| g.has_type("ParkingSpot") && inside_pentagon(g),
        )
        .await;
    // the data set has spots across the pentagon's edge: intersecting but not within
    let crossing = f.expect(|g| g.rings().is_some() && meets(g, &PENTAGON) && !inside_pentagon(g));
    assert!(!crossing.is_empty() && n > 0);
    f.check(
        &[
            ("type", "ParkingSpot"),
            ("georel", "intersects"),
            ("geometry", "Polygon"),
            ("coordinates", &pentagon),
        ],
        |g| g.has_type("ParkingSpot") && meets(g, &PENTAGON),
    )
    .await;
    f.check(
        &[
            ("type", "ParkingSpot,Streetlight"),
            ("georel", "intersects"),
            ("geometry", "Polygon"),
            ("coordinates", &rect),
        ],
        |g| (g.has_type("ParkingSpot") || g.has_type("Streetlight")) && meets(g, &RECT),
    )
    .await;
    // disjoint: only entities that have a location can be disjoint from anything
    f.check(
        &[
            ("type", "ParkingSpot,Streetlight,AirQualityObserved"),
            ("georel", "disjoint"),
            ("geometry", "Polygon"),
            ("coordinates", &rect),
        ],
        |g| g.location.is_some() && !meets(g, &RECT),
    )
    .await;
    // with the geoproperty named explicitly, and a q
    f.check(
        &[
            ("q", "powerState==\"off\""),
            ("georel", "within"),
            ("geometry", "Polygon"),
            ("coordinates", &pentagon),
            ("geoproperty", "location"),
        ],
        |g| g.power_state == Some("off") && inside_pentagon(g),
    )
    .await;
}

#[actix_web::test]
async fn geo_contains_and_equals() {
    let f = loaded().await;
    let contains = |g: &Gen, q: Pt| match &g.location {
        Some(Geo::Point(p)) => *p == q,
        Some(Geo::Polygon(r)) => in_polygon(q, r),
        None => false,
    };
    // the centre of a spot without a hole, and of one with a hole
    let plain = f
        .data
        .iter()
        .find(|g| g.rings().is_some_and(|r| r.len() == 1))
        .unwrap();
    let holed = f
        .data
        .iter()
        .find(|g| g.rings().is_some_and(|r| r.len() == 2))
        .unwrap();
    let centre = |g: &Gen| {
        let r = &g.rings().unwrap()[0];
        ((r[0].0 + r[2].0) / 2.0, (r[0].1 + r[2].1) / 2.0)
    };
    for (spot, contained) in [(plain, true), (holed, false)] {
        let c = centre(spot);
        let coords = format!("[{},{}]", c.0, c.1);
        let want = f.expect(|g| g.has_type("ParkingSpot") && contains(g, c));
        assert_eq!(want.contains(&spot.id), contained);
        let got = f
            .ids(&[
                ("type", "ParkingSpot"),
                ("georel", "contains"),
                ("geometry", "Point"),
                ("coordinates", &coords),
            ])
            .await;
        same_ids(&format!("contains {coords}"), &got, &want);
        // the hole's centre is disjoint from the holed spot
        let got = f
            .ids(&[
                ("id", &spot.id),
                ("type", "ParkingSpot"),
                ("georel", "disjoint"),
                ("geometry", "Point"),
                ("coordinates", &coords),
            ])
            .await;
        assert_eq!(
            got.is_empty(),
            contained,
            "disjoint {coords} from {}",
            spot.id
        );
    }
    // a point in a spot's annulus (between its hole and its edge) is contained
    let r = &holed.rings().unwrap()[0];
    let annulus = (
        r[0].0 + (r[2].0 - r[0].0) / 8.0,
        r[0].1 + (r[2].1 - r[0].1) / 2.0,
    );
    let got = f
        .ids(&[
            ("id", &holed.id),
            ("type", "ParkingSpot"),
            ("georel", "contains"),
            ("geometry", "Point"),
            ("coordinates", &format!("[{},{}]", annulus.0, annulus.1)),
        ])
        .await;
    assert_eq!(got, vec![holed.id.clone()]);

    // equals: a streetlight's exact point; a spot's exact polygon
    let light = f
        .data
        .iter()
        .filter(|g| g.has_type("Streetlight"))
        .nth(17)
        .unwrap();
    let (x, y) = light.point().unwrap();
    let coords = format!("[{x},{y}]");
    let want = f.expect(|g| g.point() == Some((x, y)));
    let got = f
        .ids(&[
            ("type", "Streetlight,AirQualityObserved,ParkingSpot"),
            ("georel", "equals"),
            ("geometry", "Point"),
            ("coordinates", &coords),
        ])
        .await;
    same_ids("equals Point", &got, &want);
    let got = f
        .ids(&[
            ("type", "Streetlight"),
            ("georel", "contains"),
            ("geometry", "Point"),
            ("coordinates", &coords),
        ])
        .await;
    same_ids("a point contains itself", &got, &want);
    let ring = ring_json(&plain.rings().unwrap()[0]);
    let got = f
        .ids(&[
            ("type", "ParkingSpot"),
            ("georel", "equals"),
            ("geometry", "Polygon"),
            ("coordinates", &ring),
        ])
        .await;
    assert_eq!(got, vec![plain.id.clone()]);
}

// ------------------------------------------------------------------------------------------------
// scopeQ, lang, projection and representations
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn scope_queries() {
    let f = loaded().await;
    let under = |s: &str, root: &str| s == root || s.starts_with(&format!("{root}/"));
    let child = |s: &str, root: &str| {
        s.strip_prefix(&format!("{root}/"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    };
    f.check(&[("scopeQ", "/Madrid/#")], |g| {
        g.scopes.iter().any(|s| under(s, "/Madrid"))
    })
    .await;
    f.check(&[("scopeQ", "/Madrid/+")], |g| {
        g.scopes.iter().any(|s| child(s, "/Madrid"))
    })
    .await;
    f.check(&[("scopeQ", "/Madrid/Centro")], |g| {
        g.scopes.contains(&"/Madrid/Centro")
    })
    .await;
    f.check(&[("scopeQ", "/Madrid")], |g| g.scopes.contains(&"/Madrid"))
        .await;
    f.check(&[("scopeQ", "/Madrid/Centro/#")], |g| {
        g.scopes.iter().any(|s| under(s, "/Madrid/Centro"))
    })
    .await;
    f.check(&[("scopeQ", "/+/Retiro")], |g| {
        g.scopes.iter().any(|s| {
            let parts: Vec<&str> = s.split('/').collect();
            parts.len() == 3 && parts[2] == "Retiro"
        })
    })
    .await;
    f.check(&[("scopeQ", "/Barcelona/#,/Sevilla/#")], |g| {
        g.scopes
            .iter()
            .any(|s| under(s, "/Barcelona") || under(s, "/Sevilla"))
    })
    .await;
    f.check(&[("scopeQ", "/Madrid/#;/Barcelona/#")], |g| {
        g.scopes.iter().any(|s| under(s, "/Madrid"))
            && g.scopes.iter().any(|s| under(s, "/Barcelona"))
    })
    .await;
    f.check(
        &[
            ("type", "Streetlight"),
            ("scopeQ", "/Madrid/Retiro/#|/Madrid/Chamberi"),
        ],
        |g| {
            g.has_type("Streetlight")
                && g.scopes
                    .iter()
                    .any(|s| under(s, "/Madrid/Retiro") || *s == "/Madrid/Chamberi")
        },
    )
    .await;
    f.check(&[("scopeQ", "/#")], |g| !g.scopes.is_empty()).await;
}

#[actix_web::test]
async fn a_literal_plus_in_the_query_string() {
    // Query strings are form-decoded, as the common HTTP clients encode them (a space becomes `+`,
    // a plus `%2B`). A scope pattern never holds a space, so scopeQ=/Madrid/+ written by hand keeps
    // its one-level wildcard; elsewhere a plus is sent encoded, e.g. a `%2B01:00` offset.
    let f = loaded().await;
    let want = f.expect(|g| {
        g.scopes.iter().any(|s| {
            s.strip_prefix("/Madrid/")
                .is_some_and(|rest| !rest.contains('/'))
        })
    });
    let (status, _, body) = read(
        f.s.req(Method::GET, "/entities?scopeQ=/Madrid/+&limit=1000")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "scopeQ=/Madrid/+: {body}");
    same_ids("scopeQ=/Madrid/+", &sorted(ids_of(&body)), &want);

    let want = f.expect(|g| g.no2.is_some_and(|(_, t)| t >= 3 * 1440));
    let (status, _, body) = read(
        f.s.req(
            Method::GET,
            "/entities?q=no2.observedAt%3E=2024-03-04T01:00:00%2B01:00&limit=1000",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "q with a +01:00 offset: {body}");
    same_ids("observedAt with +01:00", &sorted(ids_of(&body)), &want);
}

#[actix_web::test]
async fn lang_turns_language_properties_into_properties_in_that_language() {
    let f = loaded().await;
    for lang in ["en", "es", "fr"] {
        let got = f
            .all(
                None,
                &[("type", "Streetlight"), ("attrs", "name"), ("lang", lang)],
            )
            .await;
        let want = f.expect(|g| g.has_type("Streetlight") && g.name.is_some());
        same_ids(
            &format!("lang={lang}"),
            &sorted(ids_of(&Value::Array(got.clone()))),
            &want,
        );
        for e in &got {
            let g = f.gen(e["id"].as_str().unwrap());
            let map = g.name.as_ref().unwrap();
            let name = &e["name"];
            assert_eq!(name["type"], "Property", "{}: {name}", g.id);
            assert!(name.get("languageMap").is_none(), "{name}");
            match map.iter().find(|(l, _)| *l == lang) {
                Some((_, text)) => {
                    assert_eq!(name["value"], json!(text), "{}", g.id);
                    assert_eq!(name["lang"], lang, "{}", g.id);
                }
                None => {
                    // not available: some other language is given, saying which
                    let tag = name["lang"].as_str().unwrap_or_else(|| panic!("{name}"));
                    let (_, text) = map.iter().find(|(l, _)| *l == tag).unwrap();
                    assert_eq!(name["value"], json!(text));
                }
            }
        }
    }
    // with keyValues, the text itself
    let got = f
        .all(
            None,
            &[
                ("type", "Streetlight"),
                ("q", "name"),
                ("lang", "es"),
                ("options", "keyValues"),
            ],
        )
        .await;
    assert!(!got.is_empty());
    for e in &got {
        let g = f.gen(e["id"].as_str().unwrap());
        let es = &g
            .name
            .as_ref()
            .unwrap()
            .iter()
            .find(|(l, _)| *l == "es")
            .unwrap()
            .1;
        assert_eq!(e["name"], json!(es), "{}", g.id);
    }
    // without lang, the languageMap
    let got = f.all(None, &[("type", "Streetlight"), ("q", "name")]).await;
    for e in &got {
        let g = f.gen(e["id"].as_str().unwrap());
        assert_eq!(e["name"], g.json()["name"]);
    }
}

#[actix_web::test]
async fn pick_and_omit_project_the_results() {
    let f = loaded().await;
    let got = f
        .all(
            None,
            &[("type", "AirQualityObserved"), ("pick", "id,no2,refDevice")],
        )
        .await;
    assert_eq!(
        got.len(),
        f.expect(|g| g.has_type("AirQualityObserved")).len(),
        "pick does not filter"
    );
    for e in &got {
        let g = f.gen(e["id"].as_str().unwrap());
        let full = g.json();
        let mut want = serde_json::Map::new();
        for k in ["id", "no2", "refDevice"] {
            if let Some(v) = full.get(k) {
                want.insert(k.into(), v.clone());
            }
        }
        assert_eq!(e, &Value::Object(want), "{}", g.id);
    }
    let got = f
        .all(
            None,
            &[("type", "ParkingSpot"), ("omit", "location,category,scope")],
        )
        .await;
    assert_eq!(got.len(), f.expect(|g| g.has_type("ParkingSpot")).len());
    for e in &got {
        let g = f.gen(e["id"].as_str().unwrap());
        let mut want = g.json();
        let obj = want.as_object_mut().unwrap();
        obj.remove("location");
        obj.remove("category");
        obj.remove("scope");
        assert_eq!(normalize(e), normalize(&want), "{}", g.id);
    }
    // pick with q: q filters on attributes that are not picked
    let got = f
        .all(
            None,
            &[
                ("type", "ParkingSpot"),
                ("q", "totalSpots>6"),
                ("pick", "type,operationalStatus"),
            ],
        )
        .await;
    let want = f.expect(|g| g.has_type("ParkingSpot") && g.total_spots.is_some_and(|v| v > 6));
    assert_eq!(got.len(), want.len());
    for e in &got {
        assert!(
            e.get("id").is_none() && e.get("totalSpots").is_none(),
            "{e}"
        );
        assert_eq!(e["type"], "ParkingSpot");
    }
}

#[actix_web::test]
async fn key_values_and_concise_representations() {
    let f = loaded().await;
    let got = f
        .all(
            None,
            &[
                ("type", "AirQualityObserved,ParkingSpot,Streetlight,Device"),
                ("options", "keyValues"),
            ],
        )
        .await;
    assert_eq!(got.len(), f.data.len());
    for e in &got {
        let g = f.gen(e["id"].as_str().unwrap());
        let full = g.json();
        for (name, kind, instances) in g.attrs() {
            if instances > 1 {
                continue;
            }
            let want = match kind {
                "Relationship" => full[name]["object"].clone(),
                "LanguageProperty" => json!({"languageMap": full[name]["languageMap"]}),
                _ => full[name]["value"].clone(),
            };
            assert_eq!(e[name], want, "{} {name}: {e}", g.id);
        }
        assert_eq!(e["type"], full["type"]);
    }

    let got = f
        .all(
            None,
            &[
                ("type", "AirQualityObserved,Streetlight"),
                ("format", "concise"),
            ],
        )
        .await;
    for e in &got {
        let g = f.gen(e["id"].as_str().unwrap());
        if let Some((v, t)) = g.no2 {
            assert_eq!(
                e["no2"],
                json!({"value": tenths(v), "observedAt": time(t), "unitCode": "GQ"}),
                "{}",
                g.id
            );
        }
        if let Some(s) = g.operational_status {
            assert_eq!(e["operationalStatus"], json!(s), "{}", g.id);
        }
        if let Some(b) = g.calibrated {
            assert_eq!(e["calibrated"], json!(b), "{}", g.id);
        }
        if let Some(d) = &g.ref_device {
            assert_eq!(e["refDevice"], json!({"object": d}), "{}", g.id);
        }
        if let Some(map) = &g.name {
            let m: serde_json::Map<String, Value> =
                map.iter().map(|(l, t)| (l.to_string(), json!(t))).collect();
            assert_eq!(e["name"], json!({"languageMap": m}), "{}", g.id);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Counting and pagination
// ------------------------------------------------------------------------------------------------

/// One page of `type=Streetlight&count=true`: asserts 200 and the count; returns headers and ids.
async fn page(f: &Fixture, limit: usize, offset: usize, total: usize) -> (HeaderMap, Vec<String>) {
    let (limit, offset) = (limit.to_string(), offset.to_string());
    let (status, headers, body) = f
        .get(
            None,
            &[
                ("type", "Streetlight"),
                ("count", "true"),
                ("limit", &limit),
                ("offset", &offset),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count_header(&headers), Some(total), "count on every page");
    (headers, ids_of(&body))
}

#[actix_web::test]
async fn pages_cover_the_result_set_exactly_once_in_a_stable_order() {
    let f = loaded().await;
    let want = f.expect(|g| g.has_type("Streetlight"));
    let total = want.len();
    let limit = 7;
    let mut walk = Vec::new();
    let mut offset = 0;
    while offset < total {
        let (_, ids) = page(&f, limit, offset, total).await;
        assert_eq!(ids.len(), limit.min(total - offset), "page at {offset}");
        walk.extend(ids);
        offset += limit;
    }
    same_ids("pages", &sorted(walk.clone()), &want);
    // the same walk again gives the same order
    let mut again = Vec::new();
    for offset in (0..total).step_by(limit) {
        again.extend(page(&f, limit, offset, total).await.1);
    }
    assert_eq!(walk, again, "the order is stable");
    // a page with another size lines up with the first walk
    let (_, ids) = page(&f, 13, 26, total).await;
    assert_eq!(ids, walk[26..39].to_vec());

    // following the next links from the first page visits the same sequence
    let (headers, mut seen) = page(&f, limit, 0, total).await;
    assert!(
        links(&headers, "prev").is_empty(),
        "no prev on the first page"
    );
    let origin = f.s.base.trim_end_matches("/ngsi-ld/v1").to_string();
    let mut next = links(&headers, "next");
    let mut hops = 0;
    while let Some(url) = next.first().cloned() {
        assert_eq!(next.len(), 1);
        let r =
            f.s.client
                .get(format!("{origin}{url}"))
                .send()
                .await
                .unwrap();
        let (status, headers, body) = read(r).await;
        assert_eq!(status, 200, "{url}: {body}");
        let prev = links(&headers, "prev");
        assert_eq!(prev.len(), 1, "{url}: a prev link");
        seen.extend(ids_of(&body));
        next = links(&headers, "next");
        hops += 1;
        assert!(hops <= total, "the next links end");
    }
    assert_eq!(seen, walk, "next links walk the result set once");

    // prev of the second page leads back to the first
    let (headers, _) = page(&f, limit, limit, total).await;
    let prev = links(&headers, "prev");
    let r =
        f.s.client
            .get(format!("{origin}{}", prev[0]))
            .send()
            .await
            .unwrap();
    let (_, _, body) = read(r).await;
    assert_eq!(ids_of(&body), walk[..limit].to_vec());

    // past the end: an empty page, still counted
    let (headers, ids) = page(&f, limit, total + 5, total).await;
    assert!(ids.is_empty());
    assert!(links(&headers, "next").is_empty());
}

#[actix_web::test]
async fn count_limit_zero_and_the_default_page_size() {
    let f = loaded().await;
    let want = f.expect(|g| g.has_type("AirQualityObserved") && g.pm10.is_some_and(|v| v > 20));
    let (status, headers, body) = f
        .get(
            None,
            &[
                ("type", "AirQualityObserved"),
                ("q", "pm10>20"),
                ("limit", "0"),
                ("count", "true"),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!([]));
    assert_eq!(count_header(&headers), Some(want.len()));

    // without count, no count header; without limit, the default page size (20)
    let (status, headers, body) = f
        .get(
            None,
            &[("type", "AirQualityObserved"), ("q", "pm10>20")],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(count_header(&headers), None);
    assert_eq!(ids_of(&body).len(), 20);
    assert_eq!(
        links(&headers, "next").len(),
        1,
        "more than one page: a next link"
    );
    let (_, headers, _) = f
        .get(
            None,
            &[
                ("type", "AirQualityObserved"),
                ("q", "pm10>20"),
                ("count", "false"),
            ],
            None,
        )
        .await;
    assert_eq!(count_header(&headers), None);

    // a result set that fits in one page has no next link
    let (_, headers, body) = f
        .get(
            None,
            &[
                ("type", "AirQualityObserved"),
                ("q", "pm10>20"),
                ("limit", "1000"),
            ],
            None,
        )
        .await;
    assert_eq!(ids_of(&body).len(), want.len());
    assert!(links(&headers, "next").is_empty());
    assert!(links(&headers, "prev").is_empty());
}

#[actix_web::test]
async fn limits_out_of_range_are_refused() {
    let s = TestServer::start_with(|st| st.max_page_size = 100).await;
    let data = generate(
        7,
        &Sizes {
            devices: 5,
            air: 5,
            parking: 5,
            lights: 5,
        },
    );
    upsert_all(&s, None, &data).await;
    let get = |q: &str| {
        s.req(Method::GET, &format!("/entities?type=Streetlight&{q}"))
            .send()
    };
    let (status, _, body) = read(get("limit=100").await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_problem_one_of(
        get("limit=101").await.unwrap(),
        400,
        &["BadRequestData", "InvalidRequest"],
    )
    .await;
    assert_problem_one_of(
        get("limit=0").await.unwrap(),
        400,
        &["BadRequestData", "InvalidRequest"],
    )
    .await;
    assert_problem_one_of(
        get("limit=-1").await.unwrap(),
        400,
        &["BadRequestData", "InvalidRequest"],
    )
    .await;
    assert_problem_one_of(
        get("limit=ten").await.unwrap(),
        400,
        &["BadRequestData", "InvalidRequest"],
    )
    .await;
    assert_problem_one_of(
        get("offset=-3").await.unwrap(),
        400,
        &["BadRequestData", "InvalidRequest"],
    )
    .await;
    assert_problem_one_of(
        get("count=yes").await.unwrap(),
        400,
        &["BadRequestData", "InvalidRequest"],
    )
    .await;
}

// ------------------------------------------------------------------------------------------------
// GeoJSON and POST /entityOperations/query
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn geo_json_answers_a_feature_collection() {
    let f = loaded().await;
    let (status, headers, body) = f
        .get(
            None,
            &[("type", "ParkingSpot,Device"), ("limit", "1000")],
            Some("application/geo+json"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers["Content-Type"]
            .to_str()
            .unwrap()
            .starts_with("application/geo+json"),
        "{headers:?}"
    );
    assert_eq!(body["type"], "FeatureCollection");
    let features = body["features"].as_array().unwrap();
    let want = f.expect(|g| g.has_type("ParkingSpot") || g.has_type("Device"));
    same_ids("features", &sorted(ids_of(&body["features"])), &want);
    for feature in features {
        let g = f.gen(feature["id"].as_str().unwrap());
        assert_eq!(feature["type"], "Feature");
        match &g.location {
            Some(loc) => assert_eq!(feature["geometry"], geojson(loc), "{}", g.id),
            None => assert_eq!(feature["geometry"], Value::Null, "{}", g.id),
        }
        let props = &feature["properties"];
        assert_eq!(props["type"], g.json()["type"], "{}", g.id);
        if let Some(n) = g.total_spots {
            assert_eq!(props["totalSpots"]["value"], n);
        }
        if let Some(sn) = &g.serial_number {
            assert_eq!(props["serialNumber"]["value"], json!(sn));
        }
    }
    // with keyValues and a geo-query
    let (status, _, body) = f
        .get(
            None,
            &[
                ("type", "Streetlight"),
                ("georel", "within"),
                ("geometry", "Polygon"),
                ("coordinates", &ring_json(&PENTAGON)),
                ("options", "keyValues"),
                ("limit", "1000"),
            ],
            Some("application/geo+json"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let want =
        f.expect(|g| g.has_type("Streetlight") && g.point().is_some_and(|p| in_ring(p, &PENTAGON)));
    same_ids("geo+json within", &sorted(ids_of(&body["features"])), &want);
    for feature in body["features"].as_array().unwrap() {
        let g = f.gen(feature["id"].as_str().unwrap());
        if let Some(p) = g.power_state {
            assert_eq!(feature["properties"]["powerState"], p);
        }
    }
}

async fn post_query(s: &TestServer, query: &str, body: &Value) -> (u16, HeaderMap, Value) {
    read(
        s.send(
            Method::POST,
            &format!("/entityOperations/query{query}"),
            "application/json",
            body,
        )
        .await,
    )
    .await
}

#[actix_web::test]
async fn post_query_answers_like_get() {
    let f = loaded().await;
    let pentagon: Value = serde_json::from_str(&ring_json(&PENTAGON)).unwrap();
    let cases: Vec<(Vec<(&str, String)>, Value)> = vec![
        (
            vec![("type", "Streetlight".into()), ("q", "illuminance>500".into())],
            json!({"type": "Query", "entities": [{"type": "Streetlight"}], "q": "illuminance>500"}),
        ),
        (
            vec![("type", "AirQualityObserved;Sensor".into()), ("attrs", "pm10".into())],
            json!({"type": "Query", "entities": [{"type": "AirQualityObserved;Sensor"}], "attrs": ["pm10"]}),
        ),
        (
            vec![
                ("type", "ParkingSpot".into()),
                ("idPattern", "P0[0-4][0-9]$".into()),
                ("q", "operationalStatus==\"free\"".into()),
            ],
            json!({"type": "Query", "entities": [{"type": "ParkingSpot", "idPattern": "P0[0-4][0-9]$"}], "q": "operationalStatus==\"free\""}),
        ),
        (
            vec![
                ("type", "Streetlight,AirQualityObserved".into()),
                ("georel", "near;maxDistance==1500".into()),
                ("geometry", "Point".into()),
                ("coordinates", "[-3.7,40.42]".into()),
            ],
            json!({"type": "Query", "entities": [{"type": "Streetlight,AirQualityObserved"}],
                   "geoQ": {"georel": "near;maxDistance==1500", "geometry": "Point", "coordinates": [-3.7, 40.42]}}),
        ),
        (
            vec![
                ("type", "ParkingSpot".into()),
                ("georel", "within".into()),
                ("geometry", "Polygon".into()),
                ("coordinates", ring_json(&PENTAGON)),
            ],
            json!({"type": "Query", "entities": [{"type": "ParkingSpot"}],
                   "geoQ": {"georel": "within", "geometry": "Polygon", "coordinates": pentagon}}),
        ),
        (
            vec![("scopeQ", "/Madrid/Centro/#".into()), ("q", "!refDevice".into())],
            json!({"type": "Query", "scopeQ": "/Madrid/Centro/#", "q": "!refDevice"}),
        ),
        (
            vec![("attrs", "serialNumber,totalSpots".into())],
            json!({"type": "Query", "attrs": ["serialNumber", "totalSpots"]}),
        ),
        (
            vec![
                ("id", "urn:ngsi-ld:Streetlight:S001,urn:ngsi-ld:Streetlight:S002,urn:ngsi-ld:Device:D001".into()),
                ("type", "Streetlight".into()),
            ],
            json!({"type": "Query", "entities": [{"id": ["urn:ngsi-ld:Streetlight:S001", "urn:ngsi-ld:Streetlight:S002", "urn:ngsi-ld:Device:D001"], "type": "Streetlight"}]}),
        ),
    ];
    for (params, body) in &cases {
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let get = f.ids(&p).await;
        assert!(!get.is_empty(), "{params:?}");
        let (status, headers, answer) = post_query(&f.s, "?limit=1000&count=true", body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(count_header(&headers), Some(get.len()), "{body}");
        same_ids(&body.to_string(), &sorted(ids_of(&answer)), &get);
    }
    // several selectors: any may match
    let body = json!({"type": "Query", "entities": [
        {"type": "Device"},
        {"type": "ParkingSpot", "idPattern": "P00[0-9]$"},
        {"id": "urn:ngsi-ld:Streetlight:S150", "type": "Streetlight"}
    ]});
    let (status, _, answer) = post_query(&f.s, "?limit=1000", &body).await;
    assert_eq!(status, 200, "{answer}");
    let want = f.expect(|g| {
        g.has_type("Device")
            || (g.has_type("ParkingSpot")
                && g.id.len() == "urn:ngsi-ld:ParkingSpot:P000".len()
                && g.id.starts_with("urn:ngsi-ld:ParkingSpot:P00"))
            || g.id == "urn:ngsi-ld:Streetlight:S150"
    });
    same_ids("several selectors", &sorted(ids_of(&answer)), &want);
    // the same page and representation parameters as GET
    let (status, headers, answer) = post_query(
        &f.s,
        "?limit=5&offset=5&count=true&options=keyValues",
        &json!({"type": "Query", "entities": [{"type": "Device"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        count_header(&headers),
        Some(f.expect(|g| g.has_type("Device")).len())
    );
    let (_, _, get) = f
        .get(
            None,
            &[
                ("type", "Device"),
                ("limit", "5"),
                ("offset", "5"),
                ("options", "keyValues"),
            ],
            None,
        )
        .await;
    assert_eq!(answer, get);
}

// ------------------------------------------------------------------------------------------------
// Bad input
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn bad_queries_are_refused_with_useful_messages() {
    let f = loaded().await;
    let fx = &f;
    let bad = move |params: Vec<(&'static str, &'static str)>| {
        let f = fx;
        async move {
            let r =
                f.s.req(Method::GET, &format!("/entities?{}", query_string(&params)))
                    .send()
                    .await
                    .unwrap();
            assert_problem_one_of(r, 400, &["BadRequestData", "InvalidRequest"]).await
        }
    };
    // q syntax errors name the position
    for (q, position) in [
        ("no2>>3", 5),
        ("(no2>3", 1),
        ("no2==", 6),
        ("no2>3;;pm10<2", 7),
    ] {
        let body = bad(vec![("type", "AirQualityObserved"), ("q", q)]).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("position"), "q={q}: {detail}");
        assert!(
            detail.contains(&position.to_string()),
            "q={q} is wrong at {position}: {detail}"
        );
    }
    bad(vec![("q", "no2~=(unclosed")]).await;
    // geo-queries
    let point = "[-3.7,40.42]";
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "nearby"),
        ("geometry", "Point"),
        ("coordinates", point),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "near"),
        ("geometry", "Point"),
        ("coordinates", point),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "near;maxDistance==-5"),
        ("geometry", "Point"),
        ("coordinates", point),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "near;maxDistance==far"),
        ("geometry", "Point"),
        ("coordinates", point),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "within;maxDistance==5"),
        ("geometry", "Polygon"),
        ("coordinates", "[[[0,0],[1,0],[1,1],[0,0]]]"),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "near;maxDistance==10"),
        ("geometry", "Circle"),
        ("coordinates", point),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "near;maxDistance==10"),
        ("geometry", "Point"),
        ("coordinates", "[200,40]"),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "near;maxDistance==10"),
        ("geometry", "Point"),
        ("coordinates", "[-3.7,95]"),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "near;maxDistance==10"),
        ("geometry", "Point"),
        ("coordinates", "[-3.7]"),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "near;maxDistance==10"),
        ("geometry", "Point"),
        ("coordinates", "[-3.7,40.42"),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "within"),
        ("geometry", "Polygon"),
        ("coordinates", "[[[0,0],[1,0],[1,1],[0,1]]]"),
    ])
    .await;
    bad(vec![
        ("type", "Streetlight"),
        ("georel", "within"),
        ("geometry", "Polygon"),
        ("coordinates", point),
    ])
    .await;
    bad(vec![("type", "Streetlight"), ("georel", "within")]).await;
    bad(vec![
        ("type", "Streetlight"),
        ("geometry", "Point"),
        ("coordinates", point),
    ])
    .await;
    // other selectors
    bad(vec![("scopeQ", "Madrid")]).await;
    bad(vec![("scopeQ", "/Madrid//Centro")]).await;
    bad(vec![("type", "(Streetlight")]).await;
    bad(vec![("type", "Streetlight;")]).await;
    bad(vec![("type", "Streetlight"), ("idPattern", "(")]).await;
    bad(vec![("type", "Streetlight"), ("id", "not a uri")]).await;
    bad(vec![("attrs", "pm10,,no2")]).await;
    bad(vec![
        ("type", "Streetlight"),
        ("pick", "name"),
        ("omit", "location"),
    ])
    .await;
    bad(vec![("type", "Streetlight"), ("options", "fancy")]).await;
    // an unknown parameter is InvalidRequest
    let r =
        f.s.req(Method::GET, "/entities?type=Streetlight&colour=red")
            .send()
            .await
            .unwrap();
    assert_problem(r, 400, "InvalidRequest").await;
    // a query must select something
    let r = f.s.req(Method::GET, "/entities").send().await.unwrap();
    assert_problem(r, 400, "BadRequestData").await;
    let r =
        f.s.req(Method::GET, "/entities?limit=5&count=true")
            .send()
            .await
            .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
    // POST query: the same checks on the body
    for body in [
        json!({"type": "Query", "q": "no2>>3"}),
        json!({"type": "Query", "entities": [{"type": "Streetlight"}], "geoQ": {"georel": "nearby", "geometry": "Point", "coordinates": [-3.7, 40.42]}}),
        json!({"type": "Query", "entities": [{"type": "Streetlight"}], "geoQ": {"georel": "within", "geometry": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}}),
        json!({"type": "Query", "scopeQ": "Madrid"}),
        json!({"type": "Query", "entities": []}),
        json!({"type": "Query", "entities": [{"idPattern": ".*"}]}),
        json!({"type": "Subscription", "entities": [{"type": "Streetlight"}]}),
        json!([{"type": "Streetlight"}]),
    ] {
        let (status, _, answer) = post_query(&f.s, "", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let r =
        f.s.send(
            Method::POST,
            "/entityOperations/query?colour=red",
            "application/json",
            &json!({"type": "Query", "entities": [{"type": "Streetlight"}]}),
        )
        .await;
    assert_problem(r, 400, "InvalidRequest").await;
}

#[actix_web::test]
async fn a_post_query_must_select_something() {
    let f = loaded().await;
    let (status, _, answer) = post_query(&f.s, "", &json!({"type": "Query"})).await;
    assert_eq!(
        status,
        400,
        "a Query with no entities, attrs, q, geoQ or scopeQ restricts nothing (5.7.2.4); got {} entities",
        answer.as_array().map_or(0, Vec::len)
    );
}

// ------------------------------------------------------------------------------------------------
// Tenants
// ------------------------------------------------------------------------------------------------

#[actix_web::test]
async fn queries_see_only_their_tenant() {
    let f = loaded().await;
    // the same ids, other content, in another tenant
    let other = generate(
        99,
        &Sizes {
            devices: 10,
            air: 30,
            parking: 10,
            lights: 20,
        },
    );
    upsert_all(&f.s, Some("cityb"), &other).await;

    let q = [("type", "Streetlight"), ("q", "powerState==\"on\"")];
    let in_default = sorted(ids_of(&Value::Array(f.all(None, &q).await)));
    same_ids(
        "default tenant",
        &in_default,
        &f.expect(|g| g.has_type("Streetlight") && g.power_state == Some("on")),
    );
    let in_b = sorted(ids_of(&Value::Array(f.all(Some("cityb"), &q).await)));
    let want_b: Vec<String> = sorted(
        other
            .iter()
            .filter(|g| g.has_type("Streetlight") && g.power_state == Some("on"))
            .map(|g| g.id.clone())
            .collect(),
    );
    same_ids("tenant cityb", &in_b, &want_b);
    // the entity bodies are the tenant's own
    for e in f
        .all(Some("cityb"), &[("type", "AirQualityObserved")])
        .await
    {
        let g = other.iter().find(|g| g.id == e["id"]).unwrap();
        assert_eq!(normalize(&e), normalize(&g.json()));
    }
    // discovery too
    let (status, _, types) = read(
        f.s.req(Method::GET, "/types/Streetlight")
            .header("NGSILD-Tenant", "cityb")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        types["entityCount"],
        other.iter().filter(|g| g.has_type("Streetlight")).count()
    );
    // POST query honours the tenant header
    let r =
        f.s.req(Method::POST, "/entityOperations/query?count=true&limit=0")
            .header("Content-Type", "application/json")
            .header("NGSILD-Tenant", "cityb")
            .body(json!({"type": "Query", "entities": [{"type": "Device"}]}).to_string())
            .send()
            .await
            .unwrap();
    let (status, headers, _) = read(r).await;
    assert_eq!(status, 200);
    assert_eq!(
        count_header(&headers),
        Some(other.iter().filter(|g| g.has_type("Device")).count())
    );
    // an unknown tenant
    let r =
        f.s.req(Method::GET, "/entities?type=Streetlight")
            .header("NGSILD-Tenant", "nowhere")
            .send()
            .await
            .unwrap();
    assert_problem(r, 404, "NonexistentTenant").await;
    let r =
        f.s.req(Method::GET, "/types")
            .header("NGSILD-Tenant", "nowhere")
            .send()
            .await
            .unwrap();
    assert_problem(r, 404, "NonexistentTenant").await;
}

// ------------------------------------------------------------------------------------------------
// Discovery
// ------------------------------------------------------------------------------------------------

/// What the data set says of each type: entity count, and attribute name -> kinds.
fn type_facts(
    data: &[Gen],
) -> BTreeMap<&'static str, (usize, BTreeMap<&'static str, BTreeSet<&'static str>>)> {
    let mut out: BTreeMap<_, (usize, BTreeMap<_, BTreeSet<_>>)> = BTreeMap::new();
    for g in data {
        for t in &g.types {
            let entry = out.entry(*t).or_default();
            entry.0 += 1;
            for (name, kind, _) in g.attrs() {
                entry.1.entry(name).or_default().insert(kind);
            }
        }
    }
    out
}

/// What the data set says of each attribute: entities having it, instances, kinds, types.
struct AttrFacts {
    entities: usize,
    instances: usize,
    kinds: BTreeSet<&'static str>,
    types: BTreeSet<&'static str>,
}

fn attr_facts(data: &[Gen]) -> BTreeMap<&'static str, AttrFacts> {
    let mut out: BTreeMap<&'static str, AttrFacts> = BTreeMap::new();
    for g in data {
        for (name, kind, n) in g.attrs() {
            let a = out.entry(name).or_insert(AttrFacts {
                entities: 0,
                instances: 0,
                kinds: BTreeSet::new(),
                types: BTreeSet::new(),
            });
            a.entities += 1;
            a.instances += n;
            a.kinds.insert(kind);
            a.types.extend(g.types.iter().copied());
        }
    }
    out
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array, got {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn set(items: impl IntoIterator<Item = impl ToString>) -> BTreeSet<String> {
    items.into_iter().map(|s| s.to_string()).collect()
}

const DEFAULT_VOCAB: &str = "https://uri.etsi.org/ngsi-ld/default-context/";

fn attr_iri(name: &str) -> String {
    if name == "location" {
        "https://uri.etsi.org/ngsi-ld/location".into()
    } else {
        format!("{DEFAULT_VOCAB}{name}")
    }
}

#[actix_web::test]
async fn types_discovery_matches_the_data() {
    let f = loaded().await;
    let facts = type_facts(&f.data);

    let (status, body) = f.s.get_json("/types").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "EntityTypeList");
    assert!(
        body["id"].as_str().is_some_and(|i| i.starts_with("urn:")),
        "{body}"
    );
    assert_eq!(strings(&body["typeList"]), set(facts.keys()));

    let (status, body) = f.s.get_json("/types?details=true").await;
    assert_eq!(status, 200, "{body}");
    let list = body.as_array().unwrap();
    assert_eq!(list.len(), facts.len());
    for t in list {
        let name = t["typeName"].as_str().unwrap();
        let (_, attrs) = &facts[name];
        assert_eq!(t["type"], "EntityType");
        assert_eq!(t["id"], format!("{DEFAULT_VOCAB}{name}"));
        assert_eq!(strings(&t["attributeNames"]), set(attrs.keys()), "{name}");
    }

    for (name, (count, attrs)) in &facts {
        let (status, body) = f.s.get_json(&format!("/types/{name}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["type"], "EntityTypeInfo");
        assert_eq!(body["id"], format!("{DEFAULT_VOCAB}{name}"));
        assert_eq!(body["typeName"], *name);
        assert_eq!(body["entityCount"], *count, "{name}");
        let details = body["attributeDetails"].as_array().unwrap();
        assert_eq!(details.len(), attrs.len(), "{name}: {body}");
        for d in details {
            let attr = d["attributeName"].as_str().unwrap();
            assert_eq!(d["type"], "Attribute");
            assert_eq!(d["id"], attr_iri(attr));
            assert_eq!(
                strings(&d["attributeTypes"]),
                set(&attrs[attr]),
                "{name}.{attr}"
            );
        }
    }
    // by full IRI too
    let (status, body) =
        f.s.get_json(&format!(
            "/types/{}",
            urlencode(&format!("{DEFAULT_VOCAB}ParkingSpot"))
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entityCount"], facts["ParkingSpot"].0);
    let r = f.s.req(Method::GET, "/types/Bicycle").send().await.unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[actix_web::test]
async fn attributes_discovery_matches_the_data() {
    let f = loaded().await;
    let facts = attr_facts(&f.data);

    let (status, body) = f.s.get_json("/attributes").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "AttributeList");
    assert_eq!(strings(&body["attributeList"]), set(facts.keys()));

    let (status, body) = f.s.get_json("/attributes?details=true").await;
    assert_eq!(status, 200, "{body}");
    let list = body.as_array().unwrap();
    assert_eq!(list.len(), facts.len());
    let check = |a: &Value| {
        let name = a["attributeName"].as_str().unwrap();
        let fact = &facts[name];
        assert_eq!(a["type"], "Attribute");
        assert_eq!(a["id"], attr_iri(name));
        assert_eq!(strings(&a["attributeTypes"]), set(&fact.kinds), "{name}");
        assert_eq!(strings(&a["typeNames"]), set(&fact.types), "{name}");
        if fact.instances == fact.entities {
            assert_eq!(a["attributeCount"], fact.entities, "{name}");
        }
    };
    for a in list {
        check(a);
    }
    for name in [
        "no2",
        "operationalStatus",
        "refDevice",
        "location",
        "name",
        "category",
    ] {
        let (status, body) = f.s.get_json(&format!("/attributes/{name}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["attributeName"], name);
        check(&body);
    }
    let r =
        f.s.req(Method::GET, "/attributes/colour")
            .send()
            .await
            .unwrap();
    assert_problem(r, 404, "ResourceNotFound").await;
}

#[actix_web::test]
async fn attribute_count_counts_attribute_instances() {
    // Table 5.2.28-1: attributeCount is the "number of attribute instances with this attribute name";
    // the illuminance of many streetlights has two instances (datasetIds).
    let f = loaded().await;
    let facts = attr_facts(&f.data);
    let lux = &facts["illuminance"];
    assert!(lux.instances > lux.entities);
    let (status, body) = f.s.get_json("/attributes/illuminance").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attributeCount"], lux.instances, "{body}");
}

// ------------------------------------------------------------------------------------------------
// Entity ordering (4.23, 5.2.43)
// ------------------------------------------------------------------------------------------------

/// Walks an ordered query page by page (limit 17) and returns the ids in the order served.
async fn ordered_walk(f: &Fixture, params: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (o, l) = (offset.to_string(), "17".to_string());
        let mut p = params.to_vec();
        p.push(("offset", &o));
        p.push(("limit", &l));
        let (status, _, body) = f.get(None, &p, None).await;
        assert_eq!(status, 200, "{params:?}: {body}");
        let ids = ids_of(&body);
        if ids.is_empty() {
            return out;
        }
        out.extend(ids);
        offset += 17;
    }
}

#[actix_web::test]
async fn order_by_attributes_members_and_directions() {
    let f = loaded().await;
    let air: Vec<&Gen> = f
        .data
        .iter()
        .filter(|g| g.has_type("AirQualityObserved"))
        .collect();
    // pm10 ascending: numbers in order, ties by id, entities without pm10 last (4.23.2).
    let by_pm10 = |desc: bool| {
        let mut v = air.clone();
        v.sort_by(|a, b| match (a.pm10, b.pm10) {
            (Some(x), Some(y)) if desc => y.cmp(&x).then(a.id.cmp(&b.id)),
            (Some(x), Some(y)) => x.cmp(&y).then(a.id.cmp(&b.id)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.id.cmp(&b.id),
        });
        v.iter().map(|g| g.id.clone()).collect::<Vec<_>>()
    };
    assert!(air.iter().any(|g| g.pm10.is_none()) && air.iter().any(|g| g.pm10.is_some()));
    let asc = ordered_walk(&f, &[("type", "AirQualityObserved"), ("orderBy", "pm10")]).await;
    assert_eq!(asc, by_pm10(false), "orderBy=pm10");
    let asc = ordered_walk(
        &f,
        &[("type", "AirQualityObserved"), ("orderBy", "pm10;asc")],
    )
    .await;
    assert_eq!(asc, by_pm10(false), "orderBy=pm10;asc");
    let desc = ordered_walk(
        &f,
        &[("type", "AirQualityObserved"), ("orderBy", "pm10;desc")],
    )
    .await;
    assert_eq!(desc, by_pm10(true), "orderBy=pm10;desc");

    // id;desc is the reverse id order; id (ascending) the default order.
    let mut ids: Vec<String> = air.iter().map(|g| g.id.clone()).collect();
    ids.sort();
    let plain = ordered_walk(&f, &[("type", "AirQualityObserved"), ("orderBy", "id")]).await;
    assert_eq!(plain, ids);
    ids.reverse();
    let rev = ordered_walk(
        &f,
        &[("type", "AirQualityObserved"), ("orderBy", "id;desc")],
    )
    .await;
    assert_eq!(rev, ids);

    // Several keys: operationalStatus (a string) descending, then pm10 ascending.
    let mut v = air.clone();
    let rank = |g: &Gen| g.pm10.map_or((1, 0), |p| (0, p));
    v.sort_by(|a, b| {
        match (a.operational_status, b.operational_status) {
            (Some(x), Some(y)) => y.cmp(x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then(rank(a).cmp(&rank(b)))
        .then(a.id.cmp(&b.id))
    });
    let want: Vec<String> = v.iter().map(|g| g.id.clone()).collect();
    let got = ordered_walk(
        &f,
        &[
            ("type", "AirQualityObserved"),
            ("orderBy", "operationalStatus;desc,pm10"),
        ],
    )
    .await;
    assert_eq!(got, want, "orderBy=operationalStatus;desc,pm10");

    // The ordering member of a POST query orders the same way.
    let r =
        f.s.req(Method::POST, "/entityOperations/query?limit=1000")
            .header("Content-Type", "application/json")
            .body(
                json!({"type": "Query", "entities": [{"type": "AirQualityObserved"}],
                       "ordering": {"orderBy": ["pm10;desc"]}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
    let (status, _, body) = read(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids_of(&body), by_pm10(true), "POST ordering");
}

#[actix_web::test]
async fn order_by_distance_from_a_reference_point() {
    let f = loaded().await;
    let from: Pt = (-3.70, 40.42);
    let located: Vec<(&Gen, f64)> = f
        .data
        .iter()
        .filter(|g| g.has_type("AirQualityObserved"))
        .map(|g| (g, haversine(from, g.point().expect("air quality points"))))
        .collect();
    let coords = format!("[{},{}]", from.0, from.1);
    for (style, desc) in [("dist-asc", false), ("dist-desc", true)] {
        let order = format!("location;{style}");
        let got = ordered_walk(
            &f,
            &[
                ("type", "AirQualityObserved"),
                ("orderBy", &order),
                ("orderFrom", &coords),
            ],
        )
        .await;
        assert_eq!(
            sorted(got.clone()),
            sorted(located.iter().map(|(g, _)| g.id.clone()).collect())
        );
        let distance = |id: &str| located.iter().find(|(g, _)| g.id == id).unwrap().1;
        for w in got.windows(2) {
            let (a, b) = (distance(&w[0]), distance(&w[1]));
            // A millimetre of slack for the two haversine implementations.
            let in_order = if desc { a + 1e-3 >= b } else { a <= b + 1e-3 };
            assert!(
                in_order,
                "{style}: {} ({a} m) before {} ({b} m)",
                w[0], w[1]
            );
        }
    }
    // Distance ordering needs its reference; the reference must be coordinates.
    let (status, _, body) = f
        .get(
            None,
            &[
                ("type", "AirQualityObserved"),
                ("orderBy", "location;dist-asc"),
            ],
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["type"],
        "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    );
    let (status, _, body) = f
        .get(
            None,
            &[
                ("type", "AirQualityObserved"),
                ("orderBy", "location;dist-asc"),
                ("orderFrom", "north"),
            ],
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let r =
        f.s.req(Method::POST, "/entityOperations/query")
            .header("Content-Type", "application/json")
            .body(
                json!({"type": "Query", "entities": [{"type": "AirQualityObserved"}],
                       "ordering": {"orderBy": ["location;dist-asc"], "coordinates": "8,40"}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
}

#[actix_web::test]
async fn order_collation_and_bad_ordering_requests() {
    let s = TestServer::start().await;
    for (i, name) in ["b", "á", "A", "Zebra", "Ähre"].iter().enumerate() {
        let r = s
            .create(
                &json!({"id": format!("urn:ngsi-ld:Word:{i}"), "type": "Word",
                            "name": {"type": "Property", "value": name}}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let names = |body: &Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"]["value"].as_str().unwrap().to_string())
            .collect()
    };
    // Code point order: upper case, then lower case, then the accented letters (U+00C1 < U+00E1).
    let mut code_points: Vec<String> = ["b", "á", "A", "Zebra", "Ähre"].map(String::from).to_vec();
    code_points.sort();
    let (status, body) = s.get_json("/entities?type=Word&orderBy=name").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), code_points);
    // The root collation ranks accented letters with their base letter, case after accents.
    let (status, body) = s
        .get_json("/entities?type=Word&orderBy=name&collation=und")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), ["A", "á", "Ähre", "b", "Zebra"]);
    for bad in [
        "/entities?type=Word&orderBy=name&collation=!!nope",
        "/entities?type=Word&orderBy=name;sideways",
        "/entities?type=Word&orderBy=id;dist-asc&orderFrom=[1,2]",
        "/entities?type=Word&orderBy=name[",
    ] {
        let r = s.req(Method::GET, bad).send().await.unwrap();
        assert_problem(r, 400, "BadRequestData").await;
    }
}

#[actix_web::test]
async fn query_wide_queries_expand_values_and_readable_page_links() {
    let s = TestServer::start().await;
    for (id, ty, category) in [
        ("urn:ngsi-ld:Shop:1", "Shop", Some("commercial")),
        ("urn:ngsi-ld:Shop:2", "Shop", None),
        ("urn:ngsi-ld:Park:1", "Park", None),
    ] {
        let mut e = json!({"id": id, "type": ty});
        if let Some(c) = category {
            e["category"] = json!({"type": "VocabProperty", "vocab": c});
        }
        assert_eq!(s.create(&e).await.status(), 201);
    }
    // type=* is every type and implies local=true (6.4.3.2), which local=false contradicts.
    let (status, body) = s.get_json("/entities?type=*").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids_of(&body).len(), 3);
    let r = s
        .req(Method::GET, "/entities?type=*&local=false")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
    // A q on system attributes alone does not narrow a query (5.7.2.4); a malformed csf is refused.
    for path in [
        "/entities?q=modifiedAt%3E%222020-01-01T00:00:00Z%22",
        "/entities?type=Shop&csf=))bad((",
    ] {
        let r = s.req(Method::GET, path).send().await.unwrap();
        assert_problem(r, 400, "BadRequestData").await;
    }
    // The vocab is stored expanded: the short term matches only with expandValues (4.9).
    let (_, body) = s
        .get_json("/entities?type=Shop&q=category==commercial")
        .await;
    assert_eq!(ids_of(&body), Vec::<String>::new());
    let (_, body) = s
        .get_json("/entities?type=Shop&q=category==commercial&expandValues=category")
        .await;
    assert_eq!(ids_of(&body), ["urn:ngsi-ld:Shop:1"]);
    // Pagination links carry parameters as readable as the client wrote them.
    let (status, headers, _) = s
        .get_with(
            "/entities?type=Shop&idPattern=urn:ngsi-ld:Shop:.*&limit=1",
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        links(&headers, "next"),
        ["/ngsi-ld/v1/entities?idPattern=urn:ngsi-ld:Shop:.*&limit=1&offset=1&type=Shop"]
    );
}

/// A query page on PostgreSQL is served from the instance's cache of decoded entities when the
/// rows' versions match (`src/store/postgres/cache.rs`); what another instance writes to the
/// shared database must show at once, and an instance without the cache answers the same.
#[actix_web::test]
async fn query_pages_show_what_another_instance_wrote_on_postgresql() {
    let a = TestServer::start().await;
    let Some(url) = a.database_url.clone() else {
        return; // The embedded store is one instance's own.
    };
    let b = TestServer::start_with(|s| s.database_url = Some(url.clone())).await;
    let uncached = TestServer::start_with(|s| {
        s.database_url = Some(url.clone());
        s.entity_cache = 0;
    })
    .await;
    let room = |n: u32, t: f64| {
        json!({"id": format!("urn:ngsi-ld:Room:{n}"), "type": "Room",
               "temperature": {"type": "Property", "value": t}})
    };
    let r = a
        .send(
            Method::POST,
            "/entityOperations/create",
            "application/json",
            &json!([room(1, 20.0), room(2, 20.0), room(3, 20.0)]),
        )
        .await;
    assert_eq!(r.status(), 201);
    let temperatures = |s: &TestServer, q: &str| {
        let url = s.url(&format!("/entities?type=Room&q={q}"));
        let client = s.client.clone();
        async move {
            let body: Value = client
                .get(url)
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("JSON");
            body.as_array()
                .expect("an array")
                .iter()
                .map(|e| {
                    (
                        e["id"].as_str().unwrap_or("").to_string(),
                        e["temperature"]["value"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let id = |n: u32| format!("urn:ngsi-ld:Room:{n}");
    // Twice, so that the second page comes from a's cache.
    for _ in 0..2 {
        assert_eq!(
            temperatures(&a, "temperature>10").await,
            vec![
                (id(1), json!(20.0)),
                (id(2), json!(20.0)),
                (id(3), json!(20.0))
            ]
        );
    }
    let r = b
        .send(
            Method::PATCH,
            &format!("/entities/{}/attrs", id(1)),
            "application/json",
            &json!({"temperature": {"type": "Property", "value": 30.0}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let r = b
        .client
        .delete(b.url(&format!("/entities/{}", id(2))))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 204);
    for s in [&a, &uncached] {
        assert_eq!(
            temperatures(s, "temperature>10").await,
            vec![(id(1), json!(30.0)), (id(3), json!(20.0))]
        );
        assert_eq!(
            temperatures(s, "temperature>25").await,
            vec![(id(1), json!(30.0))]
        );
    }
}
