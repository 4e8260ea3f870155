//! geoQ (4.10) as query parameters: georel, geometry, coordinates and, when a fourth part is
//! given, geoproperty (the parts of the input split at 0xFF) through `query::geo::parse`. An error
//! must span characters of the parameter it names; a parsed query must evaluate against an entity,
//! give its bounding box and print back.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use twinlink::query::geo;

fuzz_target!(|data: &[u8]| {
    let Some(parts) = common::split(data) else {
        return;
    };
    let [georel, geometry, coordinates, rest @ ..] = parts.as_slice() else {
        return;
    };
    let geoproperty = rest.first().copied();
    match geo::parse(georel, geometry, coordinates, geoproperty, common::ctx()) {
        Ok(query) => {
            let _ = query.matches(common::entity());
            let _ = query.bbox();
            let _ = query.to_params();
            let _ = query.to_json(common::ctx());
            if let Some(g) = geo::geometry_of(&query.geojson) {
                let _ = geo::envelope(&g);
                let _ = geo::near_box(&g, 1000.0);
            }
        }
        Err(e) => {
            let text = match e.input {
                "georel" => *georel,
                "geometry" => *geometry,
                "coordinates" => *coordinates,
                "geoproperty" => geoproperty.unwrap_or_default(),
                other => panic!("an error of an unknown input {other}: {e}"),
            };
            common::check_span(&e, text);
        }
    }
});
