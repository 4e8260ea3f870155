//! The temporal API (/temporal/entities...) black-box, over a generated history: several sensors,
//! thousands of instances across datasetIds, written through POST /temporal/entities and read back
//! with timerel, lastN, attrs, datasetId, temporalValues and aggregatedValues. Every expected
//! answer (instances, aggregates per hour) is computed here from the generated model, never from
//! the broker. Runs on the embedded store, and on PostgreSQL with `TWINLINK_TEST_STORE=postgres`,
//! where the aggregates are also compared with those of an embedded store holding the same history
//! (SQL `date_bin` aggregation against the Rust one).

use crate::common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{assert_no_content, assert_problem, assert_status, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

const SENSORS: usize = 3;
const PER_SENSOR: usize = 1500;
const DATASETS: [Option<&str>; 3] = [
    None,
    Some("urn:ngsi-ld:Dataset:a"),
    Some("urn:ngsi-ld:Dataset:b"),
];

/// One generated instance of `temperature` (humidity rides along on every fifth).
#[derive(Debug, Clone)]
struct Inst {
    sensor: usize,
    dataset: Option<&'static str>,
    at: DateTime<Utc>,
    value: f64,
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap()
}

fn sensor_id(s: usize) -> String {
    format!("urn:ngsi-ld:Sensor:t{s}")
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The history: instance i of sensor s every 53 s (offset per sensor), cycling through the
/// datasets, values from a fixed sequence with repeats.
fn model() -> Vec<Inst> {
    let mut out = Vec::new();
    for s in 0..SENSORS {
        for i in 0..PER_SENSOR {
            out.push(Inst {
                sensor: s,
                dataset: DATASETS[i % 3],
                at: base() + Duration::seconds(i as i64 * 53 + s as i64 * 11),
                value: ((i * 7919 + s * 104_729) % 400) as f64 / 10.0,
            });
        }
    }
    out
}

fn instance_json(i: &Inst) -> Value {
    let mut o = json!({"type": "Property", "value": i.value, "observedAt": iso(i.at)});
    if let Some(d) = i.dataset {
        o["datasetId"] = json!(d);
    }
    o
}

/// Writes the model: creation with the first half, the rest as added instances.
async fn load(s: &TestServer, model: &[Inst]) {
    for sensor in 0..SENSORS {
        let mine: Vec<&Inst> = model.iter().filter(|i| i.sensor == sensor).collect();
        let (first, rest) = mine.split_at(mine.len() / 2);
        let humidity: Vec<Value> = first
            .iter()
            .step_by(5)
            .map(|i| json!({"type": "Property", "value": i.value + 30.0, "observedAt": iso(i.at)}))
            .collect();
        let body = json!({
            "id": sensor_id(sensor),
            "type": "Sensor",
            "temperature": first.iter().map(|i| instance_json(i)).collect::<Vec<_>>(),
            "humidity": humidity,
        });
        let r = s
            .send(
                Method::POST,
                "/temporal/entities",
                "application/json",
                &body,
            )
            .await;
        assert_status(r, 201).await;
        let body = json!({
            "id": sensor_id(sensor),
            "type": "Sensor",
            "temperature": rest.iter().map(|i| instance_json(i)).collect::<Vec<_>>(),
        });
        let r = s
            .send(
                Method::POST,
                "/temporal/entities",
                "application/json",
                &body,
            )
            .await;
        assert_no_content(r).await;
    }
}

async fn get(s: &TestServer, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    s.get_with(path, &[]).await
}

/// (value, observedAt) pairs of a normalized temporal attribute, in the response's order.
fn pairs(attr: &Value) -> Vec<(f64, String, Option<String>)> {
    attr.as_array()
        .expect("a normalized temporal attribute is an array of instances")
        .iter()
        .map(|i| {
            assert!(i["instanceId"].is_string(), "instanceId in {i}");
            (
                i["value"].as_f64().unwrap(),
                i["observedAt"].as_str().unwrap().to_string(),
                i["datasetId"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn expected_pairs(insts: &[&Inst]) -> Vec<(f64, String, Option<String>)> {
    let mut v: Vec<&&Inst> = insts.iter().collect();
    v.sort_by_key(|i| (i.at, i.dataset));
    v.iter()
        .map(|i| (i.value, iso(i.at), i.dataset.map(str::to_string)))
        .collect()
}

#[actix_web::test]
async fn retrieval_with_timerel_last_n_and_datasets_matches_the_generated_history() {
    let s = TestServer::start().await;
    let model = model();
    load(&s, &model).await;
    let id = sensor_id(1);
    let mine: Vec<&Inst> = model.iter().filter(|i| i.sensor == 1).collect();

    // Everything of temperature.
    let (st, _, body) = get(&s, &format!("/temporal/entities/{id}?attrs=temperature")).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(pairs(&body["temperature"]), expected_pairs(&mine));
    assert!(body.get("humidity").is_none());

    // between [t0, t1): inclusive lower, exclusive upper bound.
    let (t0, t1) = (mine[100].at, mine[400].at);
    let (st, _, body) = get(
        &s,
        &format!(
            "/temporal/entities/{id}?attrs=temperature&timerel=between&timeAt={}&endTimeAt={}",
            iso(t0),
            iso(t1)
        ),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let inside: Vec<&Inst> = mine
        .iter()
        .copied()
        .filter(|i| i.at >= t0 && i.at < t1)
        .collect();
    assert_eq!(inside.len(), 300);
    assert_eq!(pairs(&body["temperature"]), expected_pairs(&inside));

    // before (exclusive) with lastN: the last 7 instances before t1.
    let (st, _, body) = get(
        &s,
        &format!(
            "/temporal/entities/{id}?attrs=temperature&timerel=before&timeAt={}&lastN=7",
            iso(t1)
        ),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let before: Vec<&Inst> = mine.iter().copied().filter(|i| i.at < t1).collect();
    assert_eq!(
        pairs(&body["temperature"]),
        expected_pairs(&before[before.len() - 7..])
    );

    // after (inclusive), one dataset, simplified.
    let ds = DATASETS[2].unwrap();
    let (st, _, body) = get(
        &s,
        &format!(
            "/temporal/entities/{id}?timerel=after&timeAt={}&datasetId={ds}&options=temporalValues",
            iso(t0)
        ),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let want: Vec<Value> = mine
        .iter()
        .filter(|i| i.at >= t0 && i.dataset == Some(ds))
        .map(|i| json!([i.value, iso(i.at)]))
        .collect();
    assert_eq!(body["temperature"]["datasetId"], ds);
    assert_eq!(body["temperature"]["type"], "Property");
    let got: Vec<Value> = body["temperature"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p[0].as_f64().unwrap(), p[1]]))
        .collect();
    assert_eq!(got, want);
    assert!(
        body.get("humidity").is_none(),
        "humidity has no datasetId b"
    );

    // The current state is the latest instance of each dataset.
    let current = s.entity(&id, "").await;
    for (k, ds) in DATASETS.iter().enumerate() {
        let latest = mine.iter().rfind(|i| i.dataset == *ds).unwrap();
        let inst = match &current["temperature"] {
            Value::Array(items) => items
                .iter()
                .find(|i| i["datasetId"].as_str() == *ds)
                .cloned()
                .unwrap(),
            one => {
                assert_eq!(k, 0);
                one.clone()
            }
        };
        assert_eq!(inst["value"].as_f64(), Some(latest.value));
    }
}

/// Aggregates of a set of numbers, as clause 4.5.19 defines them (population stddev).
fn stats(values: &[f64]) -> BTreeMap<&'static str, f64> {
    let n = values.len() as f64;
    let sum: f64 = values.iter().sum();
    let avg = sum / n;
    let distinct: HashSet<u64> = values.iter().map(|v| v.to_bits()).collect();
    BTreeMap::from([
        ("totalCount", n),
        ("distinctCount", distinct.len() as f64),
        ("sum", sum),
        ("avg", avg),
        ("min", values.iter().copied().fold(f64::INFINITY, f64::min)),
        (
            "max",
            values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ),
        (
            "stddev",
            (values.iter().map(|v| (v - avg) * (v - avg)).sum::<f64>() / n).sqrt(),
        ),
        ("sumsq", values.iter().map(|v| v * v).sum()),
    ])
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

const METHODS: &str = "totalCount,distinctCount,sum,avg,min,max,stddev,sumsq";

fn aggregate_path(id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!(
        "/temporal/entities/{id}?attrs=temperature&options=aggregatedValues&aggrMethods={METHODS}\
         &aggrPeriodDuration=PT1H&timerel=between&timeAt={}&endTimeAt={}",
        iso(from),
        iso(to)
    )
}

#[actix_web::test]
async fn hourly_aggregates_match_the_model_and_the_other_store() {
    let s = TestServer::start().await;
    let model = model();
    load(&s, &model).await;
    let from = base() + Duration::minutes(30);
    let to = base() + Duration::hours(15);
    let id = sensor_id(2);
    let (st, _, body) = get(&s, &aggregate_path(&id, from, to)).await;
    assert_eq!(st, 200, "{body}");
    let sets = body["temperature"].as_array().expect("three datasets");
    assert_eq!(sets.len(), 3);
    for set in sets {
        let ds = set["datasetId"].as_str();
        // Expected: hours from `from`, each with its instances.
        let mut hours: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for i in model
            .iter()
            .filter(|i| i.sensor == 2 && i.dataset == ds && i.at >= from && i.at < to)
        {
            hours
                .entry((i.at - from).num_hours())
                .or_default()
                .push(i.value);
        }
        for method in METHODS.split(',') {
            let triples = set[method].as_array().unwrap();
            assert_eq!(triples.len(), hours.len(), "{method} {ds:?}");
            for (triple, (h, values)) in triples.iter().zip(&hours) {
                let start = from + Duration::hours(*h);
                assert_eq!(triple[1], iso(start));
                assert_eq!(triple[2], iso(start + Duration::hours(1)));
                let want = stats(values)[method];
                let got = triple[0].as_f64().unwrap();
                assert!(
                    close(got, want),
                    "{method} {ds:?} hour {h}: {got} != {want}"
                );
            }
        }
    }

    // The same history on the other store kind gives the same numbers (PostgreSQL run only: the
    // second server is embedded).
    if std::env::var("TWINLINK_TEST_STORE").as_deref() == Ok("postgres") {
        let embedded = TestServer::start_with(|settings| settings.database_url = None).await;
        load(&embedded, &model).await;
        for sensor in 0..SENSORS {
            let path = aggregate_path(&sensor_id(sensor), from, to);
            let (_, _, a) = get(&s, &path).await;
            let (_, _, b) = get(&embedded, &path).await;
            assert_numbers_close(&a, &b);
        }
    }
}

fn assert_numbers_close(a: &Value, b: &Value) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            assert!(
                close(x.as_f64().unwrap(), y.as_f64().unwrap()),
                "{x} != {y}"
            )
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter()
                .zip(y)
                .for_each(|(x, y)| assert_numbers_close(x, y));
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            x.iter().for_each(|(k, v)| assert_numbers_close(v, &y[k]));
        }
        _ => assert_eq!(a, b),
    }
}

#[actix_web::test]
async fn queries_page_entities_and_cut_instances_with_content_range() {
    let s = TestServer::start_with(|settings| settings.max_temporal_instances = 100).await;
    let model = model();
    load(&s, &model).await;

    // Entities page through in id order with count and Link headers.
    let (st, headers, body) = get(
        &s,
        "/temporal/entities?type=Sensor&attrs=temperature&timerel=after&timeAt=2024-03-01T00:00:00Z&lastN=3&limit=2&count=true",
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(headers["ngsild-results-count"], "3");
    assert!(headers
        .get_all("link")
        .iter()
        .any(|l| l.to_str().unwrap().contains("rel=\"next\"")));
    let ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![sensor_id(0), sensor_id(1)]);
    for e in body.as_array().unwrap() {
        let sensor: usize = e["id"].as_str().unwrap()[20..].parse().unwrap();
        let mine: Vec<&Inst> = model.iter().filter(|i| i.sensor == sensor).collect();
        assert_eq!(
            pairs(&e["temperature"]),
            expected_pairs(&mine[mine.len() - 3..])
        );
    }

    // More instances than the broker returns at once: the oldest 100 and 206 Content-Range.
    let from = base() + Duration::hours(1);
    let r = s
        .req(Method::POST, "/temporal/entityOperations/query")
        .header("Content-Type", "application/json")
        .body(
            json!({
                "type": "Query",
                "entities": [{"type": "Sensor", "id": sensor_id(0)}],
                "attrs": ["temperature"],
                "temporalQ": {"timerel": "after", "timeAt": iso(from)}
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let (st, headers, body) = common::read(r).await;
    assert_eq!(st, 206, "{body}");
    let mine: Vec<&Inst> = model
        .iter()
        .filter(|i| i.sensor == 0 && i.at >= from)
        .collect();
    assert_eq!(pairs(&body[0]["temperature"]), expected_pairs(&mine[..100]));
    assert_eq!(
        headers["content-range"].to_str().unwrap(),
        format!("date-time {}-{}/*", iso(from), iso(mine[99].at))
    );
}

/// The normalized temporal representation of an entity.
/// Creates a temporal entity (5.6.11): 201.
async fn create_temporal(s: &TestServer, body: &Value) {
    let r = s
        .send(Method::POST, "/temporal/entities", "application/json", body)
        .await;
    assert_status(r, 201).await;
}

/// Deletes a temporal entity (5.6.16), then finds it gone from both representations: its
/// temporal retrieval and a second deletion are 404, and so is the entity.
async fn delete_temporal_entity(s: &TestServer, id: &str) {
    let path = format!("/temporal/entities/{id}");
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    for method in [Method::GET, Method::DELETE] {
        let r = s.req(method, &path).send().await.unwrap();
        assert_problem(r, 404, "ResourceNotFound").await;
    }
    s.assert_absent(id).await;
}

async fn all(s: &TestServer, id: &str) -> Value {
    get(s, &format!("/temporal/entities/{id}")).await.2
}

#[actix_web::test]
async fn provision_deletes_and_patches_attributes_and_instances() {
    let s = TestServer::start().await;
    let model: Vec<Inst> = model()
        .into_iter()
        .filter(|i| i.sensor == 0)
        .take(30)
        .collect();
    let id = sensor_id(0);
    let body = json!({
        "id": id, "type": "Sensor",
        "temperature": model.iter().map(instance_json).collect::<Vec<_>>(),
    });
    create_temporal(&s, &body).await;
    let temps = |b: &Value| pairs(&b["temperature"]);

    // Posting the representation again changes nothing but the values given anew.
    let mut again = body.clone();
    again["temperature"][4]["value"] = json!(-5.5);
    assert_no_content(
        s.send(
            Method::POST,
            "/temporal/entities",
            "application/json",
            &again,
        )
        .await,
    )
    .await;
    let mut want = expected_pairs(&model.iter().collect::<Vec<_>>());
    let changed = want.iter_mut().find(|p| p.1 == iso(model[4].at)).unwrap();
    changed.0 = -5.5;
    assert_eq!(temps(&all(&s, &id).await), want);

    // Patch one instance: new value, same instanceId.
    let before = all(&s, &id).await;
    let first = before["temperature"][0].clone();
    let instance = first["instanceId"].as_str().unwrap().to_string();
    let r = s
        .send(
            Method::PATCH,
            &format!("/temporal/entities/{id}/attrs/temperature/{instance}"),
            "application/json",
            &json!({"type": "Property", "value": 99.5}),
        )
        .await;
    assert_no_content(r).await;
    let after = all(&s, &id).await;
    let patched = after["temperature"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instanceId"] == instance.as_str())
        .expect("the patched instance keeps its instanceId");
    assert_eq!(patched["value"], 99.5);
    assert_eq!(patched["observedAt"], first["observedAt"]);

    // Delete it: one fewer; deleting again is 404.
    let path = format!("/temporal/entities/{id}/attrs/temperature/{instance}");
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert_eq!(temps(&all(&s, &id).await).len(), 29);
    assert_problem(
        s.req(Method::DELETE, &path).send().await.unwrap(),
        404,
        "ResourceNotFound",
    )
    .await;

    // Delete one dataset's instances, then the default instance's, then everything.
    let ds = DATASETS[1].unwrap();
    let path = format!("/temporal/entities/{id}/attrs/temperature?datasetId={ds}");
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    let left = temps(&all(&s, &id).await);
    assert!(left.iter().all(|(_, _, d)| d.as_deref() != Some(ds)));
    assert_eq!(left.len(), 19);
    let path = format!("/temporal/entities/{id}/attrs/temperature");
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert!(temps(&all(&s, &id).await)
        .iter()
        .all(|(_, _, d)| d.is_some()));
    let path = format!("/temporal/entities/{id}/attrs/temperature?deleteAll=true");
    assert_no_content(s.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert_problem(
        s.req(Method::DELETE, &path).send().await.unwrap(),
        404,
        "ResourceNotFound",
    )
    .await;

    // Adding instances to an existing entity; then deleting the temporal entity removes it all.
    let r = s
        .send(
            Method::POST,
            &format!("/temporal/entities/{id}/attrs"),
            "application/json",
            &json!({"temperature": [instance_json(&model[0]), instance_json(&model[3])]}),
        )
        .await;
    assert_no_content(r).await;
    assert_eq!(temps(&all(&s, &id).await).len(), 2);
    delete_temporal_entity(&s, &id).await;
}

#[actix_web::test]
async fn bad_temporal_parameters_are_400_bad_request_data_with_a_reason() {
    let s = TestServer::start().await;
    let body = json!({"id": sensor_id(0), "type": "Sensor",
        "temperature": {"type": "Property", "value": 1, "observedAt": "2024-03-01T00:00:00Z"}});
    create_temporal(&s, &body).await;
    let id = sensor_id(0);
    for (query, reason) in [
        ("timerel=after", "timeAt"),
        ("timerel=between&timeAt=2024-03-01T00:00:00Z", "endTimeAt"),
        ("timerel=after&timeAt=yesterday", "ISO 8601"),
        ("timerel=whenever&timeAt=2024-03-01T00:00:00Z", "timerel"),
        ("timeproperty=observedWhen", "timeproperty"),
        ("lastN=0", "positive integer"),
        ("lastN=two", "positive integer"),
        ("lastN=1.5", "positive integer"),
        ("options=aggregatedValues&aggrMethods=median", "median"),
        ("options=aggregatedValues", "aggrMethods"),
        (
            "options=aggregatedValues&aggrMethods=avg&aggrPeriodDuration=1H",
            "aggrPeriodDuration",
        ),
        (
            "options=aggregatedValues&aggrMethods=avg&aggrPeriodDuration=PT1X",
            "aggrPeriodDuration",
        ),
    ] {
        for path in [
            format!("/temporal/entities/{id}?{query}"),
            format!("/temporal/entities?type=Sensor&{query}"),
        ] {
            let r = s.req(Method::GET, &path).send().await.unwrap();
            let body = assert_problem(r, 400, "BadRequestData").await;
            assert!(
                body["detail"].as_str().unwrap().contains(reason),
                "{path}: {body}"
            );
        }
    }
}

/// Instances `n` minutes apart from `start`, values 0, 1, 2...
fn series(start: DateTime<Utc>, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"type": "Property", "value": i, "observedAt": iso(start + Duration::minutes(i as i64))})
        })
        .collect()
}

/// observedAt of a normalized temporal attribute's instances.
fn times(attr: &Value) -> Vec<String> {
    attr.as_array()
        .unwrap_or_else(|| panic!("an array of instances, not {attr}"))
        .iter()
        .map(|i| i["observedAt"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn a_cut_response_covers_one_time_range_for_all_attributes_of_an_entity() {
    const MAX: usize = 4;
    let s = TestServer::start_with(|settings| settings.max_temporal_instances = MAX).await;
    // speed on day 1, fuel on day 2: no instant in common; level overlaps speed, 2 min later.
    let day1 = base();
    let day2 = base() + Duration::days(1);
    let id = "urn:ngsi-ld:Vehicle:cut";
    let body = json!({
        "id": id, "type": "Vehicle",
        "speed": series(day1, 9),
        "fuel": series(day2, 9),
        "level": series(day1 + Duration::minutes(2), 9),
    });
    create_temporal(&s, &body).await;
    let minutes = |start: DateTime<Utc>, range: std::ops::Range<i64>| -> Vec<String> {
        range.map(|m| iso(start + Duration::minutes(m))).collect()
    };

    // Forwards: speed's first MAX instances end the range; level stops there, fuel is empty.
    let (st, headers, body) = get(&s, &format!("/temporal/entities/{id}")).await;
    assert_eq!(st, 206, "{body}");
    let end = day1 + Duration::minutes(MAX as i64 - 1);
    assert_eq!(times(&body["speed"]), minutes(day1, 0..MAX as i64));
    assert_eq!(times(&body["level"]), minutes(day1, 2..MAX as i64));
    assert_eq!(body["fuel"], json!([]));
    assert_eq!(
        headers["content-range"].to_str().unwrap(),
        format!("date-time {}-{}/*", iso(day1), iso(end))
    );

    // Backwards with lastN: fuel's last MAX instances start the range; the others are empty.
    let (st, headers, body) = get(&s, &format!("/temporal/entities/{id}?lastN=20")).await;
    assert_eq!(st, 206, "{body}");
    assert_eq!(times(&body["fuel"]), minutes(day2, 9 - MAX as i64..9));
    assert_eq!(body["speed"], json!([]));
    assert_eq!(body["level"], json!([]));
    assert_eq!(
        headers["content-range"].to_str().unwrap(),
        format!(
            "date-time {}-{}/20",
            iso(day2 + Duration::minutes(8)),
            iso(day2 + Duration::minutes(9 - MAX as i64))
        )
    );

    // Within the limit: everything, 200.
    let (st, headers, body) = get(
        &s,
        &format!("/temporal/entities/{id}?attrs=speed&lastN={MAX}"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert!(headers.get("content-range").is_none());
    assert_eq!(times(&body["speed"]), minutes(day1, 9 - MAX as i64..9));
}

#[actix_web::test]
async fn empty_answers_odd_names_and_unsupported_orderings_are_refused() {
    let s = TestServer::start().await;
    let at = base();
    // One vehicle observed on day 1 only, one on day 2 only.
    for (id, day) in [("urn:ngsi-ld:Vehicle:d1", 0), ("urn:ngsi-ld:Vehicle:d2", 1)] {
        let body = json!({"id": id, "type": "Vehicle",
            "speed": series(at + Duration::days(day), 3)});
        let r = s
            .send(
                Method::POST,
                "/temporal/entities",
                "application/json",
                &body,
            )
            .await;
        assert_status(r, 201).await;
    }
    let id = "urn:ngsi-ld:Vehicle:d1";

    // A time range leaves out the entity none of whose instances falls in it.
    let day2 = iso(at + Duration::days(1));
    let (st, _, body) = get(
        &s,
        &format!("/temporal/entities?type=Vehicle&timerel=after&timeAt={day2}"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["urn:ngsi-ld:Vehicle:d2"]);

    // pick/omit that leave no member: 404.
    for query in ["pick=unknown", "omit=id,type,speed"] {
        let r = s
            .req(Method::GET, &format!("/temporal/entities/{id}?{query}"))
            .send()
            .await
            .unwrap();
        assert_problem(r, 404, "ResourceNotFound").await;
    }

    // '.' and '..' are path segments, not attribute names, also percent-encoded twice (the HTTP
    // client resolves the plain and once-encoded forms before sending).
    for name in ["%252e%252e", "%252e"] {
        let r = s
            .req(
                Method::DELETE,
                &format!("/temporal/entities/{id}/attrs/{name}?deleteAll=true"),
            )
            .send()
            .await
            .unwrap();
        assert_problem(r, 400, "BadRequestData").await;
    }
    // The instances are still there.
    assert_eq!(times(&all(&s, id).await["speed"]).len(), 3);

    // DELETE on the collection is not an operation of the temporal API.
    let r = s
        .req(Method::DELETE, "/temporal/entities/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // Ordering only by id; csf must parse.
    for (query, status) in [
        ("orderBy=id", 200),
        ("orderBy=name", 400),
        ("orderBy=id,createdAt", 400),
        ("csf=))bad((", 400),
    ] {
        let r = s
            .req(
                Method::GET,
                &format!("/temporal/entities?type=Vehicle&{query}"),
            )
            .send()
            .await
            .unwrap();
        if status == 200 {
            assert_status(r, 200).await;
        } else {
            assert_problem(r, 400, "BadRequestData").await;
        }
    }
}

#[actix_web::test]
async fn a_deleted_language_property_is_an_ngsi_ld_null_language_map() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:lang";
    let r = s
        .create(&json!({"id": id, "type": "Vehicle",
            "name": {"type": "LanguageProperty", "languageMap": {"en": "car", "fr": "voiture"}}}))
        .await;
    assert_status(r, 201).await;
    let r = s
        .req(Method::DELETE, &format!("/entities/{id}/attrs/name"))
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    let (st, _, body) = get(
        &s,
        &format!("/temporal/entities/{id}?timeproperty=deletedAt"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let deleted = &body["name"][0];
    assert_eq!(deleted["type"], "LanguageProperty", "{body}");
    assert_eq!(deleted["languageMap"], json!({"@none": "urn:ngsi-ld:null"}));
    assert!(deleted["deletedAt"].is_string(), "{body}");
}

/// The instances of a normalized temporal attribute (one instance may come as an object).
fn instances(attr: &Value) -> Vec<Value> {
    match attr {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    }
}

#[actix_web::test]
async fn core_api_scope_changes_and_deletion_are_scope_history() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:scoped";
    let r = s
        .create(&json!({"id": id, "type": "Vehicle", "scope": "/Old",
            "speed": {"type": "Property", "value": 1, "observedAt": "2024-05-01T12:00:00Z"}}))
        .await;
    assert_status(r, 201).await;
    let r = s
        .send(
            Method::PATCH,
            &format!("/entities/{id}/attrs"),
            "application/json",
            &json!({"scope": ["/New", "/Other"]}),
        )
        .await;
    assert_no_content(r).await;

    // Each scope the Core API set is an instance of a Property observed when it was set.
    let (st, _, body) = get(&s, &format!("/temporal/entities/{id}?options=sysAttrs")).await;
    assert_eq!(st, 200, "{body}");
    let scope = instances(&body["scope"]);
    let values: Vec<&Value> = scope.iter().map(|i| &i["value"]).collect();
    assert_eq!(
        values,
        [&json!(["/Old"]), &json!(["/New", "/Other"])],
        "{body}"
    );
    for i in &scope {
        assert_eq!(i["type"], "Property", "{i}");
        assert!(i["observedAt"].is_string(), "{i}");
        assert_eq!(i["observedAt"], i["modifiedAt"], "{i}");
        let members: HashSet<&str> = i.as_object().unwrap().keys().map(String::as_str).collect();
        let allowed: HashSet<&str> = [
            "type",
            "value",
            "instanceId",
            "createdAt",
            "modifiedAt",
            "observedAt",
        ]
        .into();
        assert!(members.is_subset(&allowed), "{i}");
    }
    assert!(scope[0]["observedAt"].as_str() < scope[1]["observedAt"].as_str());
    let (_, _, only_speed) = get(&s, &format!("/temporal/entities/{id}?attrs=speed")).await;
    assert!(only_speed.get("scope").is_none(), "{only_speed}");

    // Removing the scope through the Core API is a deletion: an empty scope with deletedAt.
    let r = s
        .req(Method::DELETE, &format!("/entities/{id}/attrs/scope"))
        .send()
        .await
        .unwrap();
    assert_no_content(r).await;
    let (st, _, body) = get(
        &s,
        &format!("/temporal/entities/{id}?timeproperty=deletedAt"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let deleted = instances(&body["scope"]);
    assert_eq!(deleted.len(), 1, "{body}");
    assert_eq!(deleted[0]["type"], "Property");
    assert_eq!(deleted[0]["value"], json!([]));
    assert!(deleted[0]["deletedAt"].is_string(), "{body}");
    assert!(
        body.get("speed").is_none(),
        "speed was never deleted: {body}"
    );
    let (_, _, simplified) = get(
        &s,
        &format!("/temporal/entities/{id}?timeproperty=deletedAt&options=temporalValues"),
    )
    .await;
    assert_eq!(
        simplified["scope"]["values"],
        json!([[[], deleted[0]["deletedAt"]]]),
        "{simplified}"
    );
}

/// A vehicle of the scopeQ model: its scope instances and speed instances (minutes after 10:00).
struct Scoped {
    id: &'static str,
    scopes: Vec<(i64, Vec<&'static str>)>,
    speeds: Vec<(i64, &'static str)>,
}

fn at_minute(m: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap() + Duration::minutes(m)
}

fn scoped_model() -> Vec<Scoped> {
    let v = |id, scopes, speeds| Scoped { id, scopes, speeds };
    vec![
        v(
            "urn:ngsi-ld:Vehicle:sq-ab",
            vec![(0, vec!["/A/B"])],
            vec![(125, "ab1")],
        ),
        v(
            "urn:ngsi-ld:Vehicle:sq-x",
            vec![(0, vec!["/X"])],
            vec![(125, "x1")],
        ),
        v("urn:ngsi-ld:Vehicle:sq-bare", vec![], vec![(125, "bare1")]),
        v(
            "urn:ngsi-ld:Vehicle:sq-both",
            vec![(0, vec!["/A/B", "/C"])],
            vec![(125, "both1")],
        ),
        v(
            "urn:ngsi-ld:Vehicle:sq-mid",
            vec![(130, vec!["/M"])],
            vec![(125, "mid1"), (135, "mid2")],
        ),
        v(
            "urn:ngsi-ld:Vehicle:sq-rep",
            vec![(0, vec!["/R"]), (150, vec!["/S"])],
            vec![(135, "rep1"), (165, "rep2")],
        ),
        v(
            "urn:ngsi-ld:Vehicle:sq-late",
            vec![(240, vec!["/Z"])],
            vec![(125, "late1")],
        ),
    ]
}

/// The window of the queries: [12:00, 13:00), in minutes after 10:00.
const WINDOW: (i64, i64) = (120, 180);

/// What a scopeQ of one scope (or `/#`, any) returns, computed from the model: per entity whose
/// scope matched at some time of the window, the speeds observed in the window while it did.
fn scoped_expectation(model: &[Scoped], wanted: &str) -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut out = BTreeMap::new();
    for e in model {
        let mut spans = Vec::new();
        for (i, (start, scopes)) in e.scopes.iter().enumerate() {
            let end = e.scopes.get(i + 1).map_or(i64::MAX, |n| n.0);
            let hit = scopes.iter().any(|s| wanted == "/#" || *s == wanted);
            if hit && *start < WINDOW.1 && end > WINDOW.0 {
                spans.push((*start, end));
            }
        }
        if spans.is_empty() {
            continue;
        }
        let speeds: Vec<&str> = e
            .speeds
            .iter()
            .filter(|(t, _)| (WINDOW.0..WINDOW.1).contains(t))
            .filter(|(t, _)| spans.iter().any(|(a, b)| (*a..*b).contains(t)))
            .map(|(_, v)| *v)
            .collect();
        let scope_set_in_window = e
            .scopes
            .iter()
            .any(|(t, _)| (WINDOW.0..WINDOW.1).contains(t));
        if !speeds.is_empty() || scope_set_in_window {
            out.insert(e.id, speeds);
        }
    }
    out
}

#[actix_web::test]
async fn scope_q_on_temporal_queries_uses_the_scopes_valid_in_the_time_range() {
    let s = TestServer::start().await;
    let model = scoped_model();
    for e in &model {
        let mut body = json!({"id": e.id, "type": "Vehicle",
            "speed": e.speeds.iter().map(|(t, v)| json!({"type": "Property", "value": v,
                "observedAt": iso(at_minute(*t))})).collect::<Vec<_>>()});
        if !e.scopes.is_empty() {
            body["scope"] = e
                .scopes
                .iter()
                .map(|(t, scopes)| {
                    json!({"type": "Property", "value": scopes,
                    "observedAt": iso(at_minute(*t))})
                })
                .collect();
        }
        let r = s
            .send(
                Method::POST,
                "/temporal/entities",
                "application/json",
                &body,
            )
            .await;
        assert_status(r, 201).await;
    }
    // The current scope is the latest one given.
    let rep = s.entity("urn:ngsi-ld:Vehicle:sq-rep", "").await;
    assert_eq!(rep["scope"], "/S", "{rep}");

    let window = format!(
        "timerel=between&timeAt={}&endTimeAt={}",
        iso(at_minute(WINDOW.0)),
        iso(at_minute(WINDOW.1))
    );
    for wanted in ["/A/B", "/X", "/M", "/R", "/S", "/Z", "/Y", "/#"] {
        let scope_q = wanted.replace('#', "%23");
        let path = format!("/temporal/entities?type=Vehicle&scopeQ={scope_q}&{window}&count=true");
        let (st, headers, body) = get(&s, &path).await;
        assert_eq!(st, 200, "{path}: {body}");
        let got: BTreeMap<&str, Vec<&str>> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let speeds = instances(&e["speed"])
                    .iter()
                    .map(|i| {
                        let v = i["value"].as_str().unwrap();
                        model
                            .iter()
                            .flat_map(|m| m.speeds.iter().map(|s| s.1))
                            .find(|s| *s == v)
                            .unwrap()
                    })
                    .collect();
                let id = e["id"].as_str().unwrap();
                (model.iter().find(|m| m.id == id).unwrap().id, speeds)
            })
            .collect();
        let want = scoped_expectation(&model, wanted);
        assert_eq!(got, want, "{path}: {body}");
        assert_eq!(
            headers["NGSILD-Results-Count"].to_str().unwrap(),
            want.len().to_string(),
            "{path}"
        );
    }

    // The scope valid when the window starts is shown, although set before it.
    let path = format!("/temporal/entities?type=Vehicle&scopeQ=/A/B&{window}&limit=1");
    let (_, headers, body) = get(&s, &path).await;
    assert_eq!(body[0]["id"], "urn:ngsi-ld:Vehicle:sq-ab", "{body}");
    assert_eq!(
        instances(&body[0]["scope"])[0]["value"],
        json!(["/A/B"]),
        "{body}"
    );
    assert!(headers.get("Link").is_some(), "a next page: {headers:?}");
    let (_, _, body) = get(&s, &format!("{path}&offset=1")).await;
    assert_eq!(body[0]["id"], "urn:ngsi-ld:Vehicle:sq-both", "{body}");
}

#[actix_web::test]
async fn ngsi_ld_null_instances_in_a_temporal_representation_are_deletion_history() {
    let s = TestServer::start().await;
    let id = "urn:ngsi-ld:Vehicle:nulled";
    let (t1, t2) = ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
    let s = &s;
    let post = |body: Value| async move {
        s.send(
            Method::POST,
            "/temporal/entities",
            "application/json",
            &body,
        )
        .await
    };
    let r = post(json!({"id": id, "type": "Vehicle",
        "speed": [{"type": "Property", "value": 1, "observedAt": t1}]}))
    .await;
    assert_status(r, 201).await;
    let r = post(json!({"id": id, "type": ["Vehicle", "Truck"],
        "speed": [{"type": "Property", "value": "urn:ngsi-ld:null", "observedAt": t2}]}))
    .await;
    assert_no_content(r).await;
    let body = all(s, id).await;
    let speed = instances(&body["speed"]);
    let got: Vec<(&Value, &Value)> = speed
        .iter()
        .map(|i| (&i["value"], &i["observedAt"]))
        .collect();
    assert_eq!(
        got,
        [
            (&json!(1), &json!(t1)),
            (&json!("urn:ngsi-ld:null"), &json!(t2))
        ],
        "{body}"
    );
    let deleted_at: DateTime<Utc> = speed[1]["deletedAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(deleted_at, t2.parse::<DateTime<Utc>>().unwrap(), "{body}");
    assert!(speed[0].get("deletedAt").is_none(), "{body}");
    // A deletion has no value to aggregate.
    let (_, _, counted) = get(
        s,
        &format!("/temporal/entities/{id}?options=aggregatedValues&aggrMethods=totalCount"),
    )
    .await;
    assert_eq!(counted["speed"]["totalCount"][0][0], 1, "{counted}");
    let current = s.entity(id, "").await;
    assert!(
        current.get("speed").is_none(),
        "the deletion is the latest: {current}"
    );
    assert_eq!(current["type"], json!(["Vehicle", "Truck"]));
    // Only full instances can be deletions; a bare NGSI-LD Null member stays refused.
    let r = post(json!({"id": id, "type": "Vehicle", "speed": "urn:ngsi-ld:null"})).await;
    assert_problem(r, 400, "BadRequestData").await;
}

#[actix_web::test]
async fn temporal_queries_take_expand_values_and_refuse_linked_filters() {
    let s = TestServer::start().await;
    let shop = "urn:ngsi-ld:Shop:vocab";
    let r = s
        .create(&json!({"id": shop, "type": "Shop",
            "category": {"type": "VocabProperty", "vocab": "commercial"}}))
        .await;
    assert_status(r, 201).await;
    let window = "timerel=after&timeAt=2000-01-01T00:00:00Z&timeproperty=createdAt";
    let ids = |body: &Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let q = "/temporal/entities?type=Shop&q=category%3D%3Dcommercial";
    let (st, _, body) = get(&s, &format!("{q}&expandValues=category&{window}")).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(ids(&body), [shop]);
    let (st, _, body) = get(&s, &format!("{q}&{window}")).await;
    assert_eq!(st, 200, "{body}");
    assert!(
        ids(&body).is_empty(),
        "the vocab is an IRI, the literal is not: {body}"
    );
    let r = s
        .req(
            Method::GET,
            &format!("/temporal/entities?type=Shop&q=owner%7Bname%7D%3D%3D%22x%22&{window}"),
        )
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "BadRequestData").await;
}

/// On PostgreSQL, the transaction (xmin) that wrote entity `id`'s current row, and those of its
/// history rows, in observedAt order, and of its latest change-feed row.
async fn transactions_of(url: &str, id: &str) -> (String, Vec<String>, String) {
    let client = common::sql_client(url).await;
    let entity = client
        .query_one("SELECT xmin::text FROM entities WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    let history = client
        .query(
            "SELECT xmin::text FROM attribute_instances WHERE entity_id = $1
             ORDER BY observed_at",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let change = client
        .query_one(
            "SELECT xmin::text FROM entity_changes WHERE id = $1 ORDER BY seq DESC LIMIT 1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    (entity, history, change)
}

#[actix_web::test]
async fn temporal_provision_commits_the_entity_its_history_and_its_change_together() {
    let s = TestServer::start().await;
    let mut rx = common::receiver::Receiver::ok().await;
    let r = s
        .send(
            Method::POST,
            "/subscriptions",
            "application/json",
            &json!({"type": "Subscription", "entities": [{"type": "Sensor"}],
                    "notificationTrigger": ["entityCreated", "attributeUpdated"],
                    "notification": {"endpoint": {"uri": rx.url}}}),
        )
        .await;
    assert_status(r, 201).await;
    let id = sensor_id(0);
    let at = |i: i64| iso(base() + Duration::minutes(i));
    let instance = |i: i64| json!({"type": "Property", "value": i, "observedAt": at(i)});
    let body = json!({"id": id, "type": "Sensor", "temperature": [instance(1), instance(2)]});
    create_temporal(&s, &body).await;
    // The current state takes the latest instance, and the change is notified.
    assert_eq!(rx.next(10).await.entity()["temperature"]["value"], 2);
    if let Some(url) = &s.database_url {
        let (entity, history, change) = transactions_of(url, &id).await;
        assert_eq!(history, vec![entity.clone(), entity.clone()]);
        assert_eq!(change, entity);
    }

    // Adding instances: the new ones, the state and the change in one transaction; an instance
    // given again replaces the recorded one of the same observedAt.
    let r = s
        .send(
            Method::POST,
            &format!("/temporal/entities/{id}/attrs"),
            "application/json",
            &json!({"temperature": [json!({"type": "Property", "value": 20, "observedAt": at(2)}),
                                    instance(3)]}),
        )
        .await;
    assert_no_content(r).await;
    assert_eq!(rx.next(10).await.entity()["temperature"]["value"], 3);
    let (_, _, got) = get(&s, &format!("/temporal/entities/{id}")).await;
    assert_eq!(
        pairs(&got["temperature"])
            .into_iter()
            .map(|(v, t, _)| (v, t))
            .collect::<Vec<_>>(),
        vec![(1.0, at(1)), (20.0, at(2)), (3.0, at(3))]
    );
    if let Some(url) = &s.database_url {
        let (entity, history, change) = transactions_of(url, &id).await;
        assert_ne!(history[0], entity, "the first instance was written before");
        assert_eq!(history[1..], [entity.clone(), entity.clone()]);
        assert_eq!(change, entity);
    }

    // Deleting the temporal entity removes the state and the whole history; then it is gone.
    delete_temporal_entity(&s, &id).await;
    if let Some(url) = &s.database_url {
        let left: i64 = common::sql_client(url)
            .await
            .query_one(
                "SELECT count(*) FROM attribute_instances WHERE entity_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }
}
