//! The geometry columns (PostgreSQL store): the EWKB twinlink writes for a GeoJSON geometry is read
//! by PostGIS as the same geometry its own GeoJSON reader makes of it, in two dimensions, with
//! SRID 4326, for every GeoJSON geometry type.

use crate::common;
use serde_json::json;

#[actix_web::test]
async fn postgis_reads_the_written_ewkb_as_the_geojson_geometry() {
    let Some(url) = common::fresh_database_url().await else {
        return; // The embedded store has no geometry column.
    };
    let client = common::sql_client(&url).await;
    let geometries = [
        json!({"type": "Point", "coordinates": [2.35, 48.85]}),
        json!({"type": "Point", "coordinates": [-73.98, 40.75, 12.5]}),
        json!({"type": "LineString", "coordinates": [[0, 0], [1, 1], [2, 0.5]]}),
        json!({"type": "Polygon", "coordinates": [
            [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
            [[2, 2], [2, 4], [4, 4], [2, 2]]
        ]}),
        json!({"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]}),
        json!({"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[2, 2], [3, 3]]]}),
        json!({"type": "MultiPolygon", "coordinates": [
            [[[0, 0], [1, 0], [1, 1], [0, 0]]],
            [[[5, 5], [6, 5], [6, 6], [5, 5]]]
        ]}),
        json!({"type": "GeometryCollection", "geometries": [
            {"type": "Point", "coordinates": [1, 2]},
            {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}
        ]}),
        json!({"type": "MultiPoint", "coordinates": []}),
    ];
    for g in geometries {
        let ewkb = twinlink::store::postgres::ewkb::from_geojson(&g).expect("a geometry");
        let row = client
            .query_one(
                "SELECT ST_AsText(w), ST_SRID(w),
                        ST_AsText(ST_Force2D(ST_GeomFromGeoJSON($2::text)))
                 FROM (SELECT ST_GeomFromEWKB($1::bytea) AS w) x",
                &[&ewkb, &g.to_string()],
            )
            .await
            .unwrap_or_else(|e| panic!("PostGIS reads the EWKB of {g}: {e}"));
        let (written, srid, expected): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(written, expected, "{g}");
        assert_eq!(srid, 4326, "{g}");
    }
    drop(client);
    common::drop_database(&url);
}
