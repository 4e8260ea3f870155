//! Differential test of the history of the two stores: random histories (numbers, strings and
//! both in one attribute, datasetIds, records without observedAt, deletion records, entity
//! deletions, ties of time) are written to the embedded store and to PostgreSQL, then random
//! history reads (attribute, time property, open, closed and half-open bounds, lastN) and random
//! aggregations (time property, bounds, attributes, period lengths, every method) are asked of
//! both. The answers must be the same: the same records in the same order (and those that
//! `HistoryQuery::select` picks from the generated records), the same buckets with the same
//! counts, times and (to 1e-9, relatively) numbers.
//!
//! Runs on a new database copied from the test database (`common::new_database`), kept when the
//! test fails. Seeded: the seed is printed, and `TWINLINK_DIFF_SEED` replays it;
//! `TWINLINK_DIFF_ENTITIES` and `TWINLINK_DIFF_QUERIES` change the size.

use crate::common;
use chrono::{DateTime, Duration, TimeZone, Utc};
use common::rng::{self, env_number, Rng};
use serde_json::{json, Value};
use std::ops::Bound;
use twinlink::model::{AttrKind, Attribute};
use twinlink::store::aggregate::{AggrMethod, AggregateQuery, Bucket};
use twinlink::store::embedded::EmbeddedStore;
use twinlink::store::history::{self, HistoryQuery, InstanceChange, TimeProperty};
use twinlink::store::postgres::PgStore;
use twinlink::store::{Decision, Store, Write};

const TENANT: &str = "history";
const ATTRS: [&str; 3] = [
    "https://example.org/temperature",
    "https://example.org/status",
    "https://example.org/mixed",
];
const DATASETS: [Option<&str>; 2] = [None, Some("urn:ngsi-ld:Dataset:a")];
const STATUSES: [&str; 3] = ["ok", "warn", "fail"];
const TIME_PROPERTIES: [TimeProperty; 4] = [
    TimeProperty::ObservedAt,
    TimeProperty::CreatedAt,
    TimeProperty::ModifiedAt,
    TimeProperty::DeletedAt,
];
/// Period lengths: the whole range (0), a quarter of an hour, an hour, a day, a week.
const PERIODS: [i64; 5] = [
    0,
    900_000_000,
    3_600_000_000,
    86_400_000_000,
    604_800_000_000,
];

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap()
}

/// A time within two days of [`base`]: on the minute (so that records tie) or to the microsecond.
fn time(rng: &mut Rng) -> DateTime<Utc> {
    let minute = rng.below(2 * 24 * 60) as i64;
    let micros = if rng.chance(0.5) {
        0
    } else {
        rng.below(60_000_000) as i64
    };
    base() + Duration::minutes(minute) + Duration::microseconds(micros)
}

fn value(rng: &mut Rng, attr: &str) -> Value {
    let number = |rng: &mut Rng| json!(rng.below(200) as f64 / 4.0 - 10.0);
    match attr {
        "https://example.org/temperature" => number(rng),
        "https://example.org/status" => json!(rng.pick(&STATUSES)),
        _ if rng.chance(0.5) => json!(rng.below(5) as i64),
        _ => json!(rng.pick(&STATUSES)),
    }
}

/// One random history record of an attribute instance: written, or (one in ten) deleted.
fn record(rng: &mut Rng) -> InstanceChange {
    let attr = *rng.pick(&ATTRS);
    let observed = time(rng);
    let modified = observed + Duration::seconds(rng.below(600) as i64);
    let a = Attribute {
        kind: AttrKind::Property,
        value: value(rng, attr),
        dataset_id: rng.pick(&DATASETS).map(str::to_string),
        observed_at: (!rng.chance(0.1)).then(|| twinlink::model::format_time(&observed)),
        unit_code: None,
        object_type: None,
        created_at: base() - Duration::days(rng.below(3) as i64),
        modified_at: modified,
        // Some instances are transient (4.22): expired ones are served by neither store.
        expires_at: rng.chance(0.1).then(|| {
            // To the microsecond, as the stores keep times (PostgreSQL's timestamptz).
            let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
            if rng.chance(0.5) {
                now - Duration::days(1)
            } else {
                now + Duration::days(1)
            }
        }),
        sub: Default::default(),
    };
    let mut r = history::written(attr, &a);
    if rng.chance(0.1) {
        r.value = None;
        r.num = None;
        r.observed_at = None;
        r.deleted_at = Some(r.modified_at);
    }
    r
}

/// The record of a deletion of the whole entity.
fn entity_deletion(rng: &mut Rng) -> InstanceChange {
    let at = time(rng);
    InstanceChange {
        attr: None,
        dataset_id: None,
        instance_id: history::fresh_instance_id(),
        kind: None,
        value: Some(history::JsonText::of(
            &json!({"types": ["https://example.org/Sensor"], "scope": null}),
        )),
        num: None,
        observed_at: None,
        created_at: base(),
        modified_at: at,
        deleted_at: Some(at),
        expires_at: None,
    }
}

fn bound(rng: &mut Rng, times: &[DateTime<Utc>]) -> Bound<DateTime<Utc>> {
    // Often exactly at a recorded time, to test the edges.
    let t = if rng.chance(0.5) && !times.is_empty() {
        *rng.pick(times)
    } else {
        time(rng)
    };
    match rng.below(3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(t),
        _ => Bound::Excluded(t),
    }
}

fn history_query(rng: &mut Rng, times: &[DateTime<Utc>]) -> HistoryQuery {
    let (a, b) = (bound(rng, times), bound(rng, times));
    let start = |b: &Bound<DateTime<Utc>>| match b {
        Bound::Included(t) | Bound::Excluded(t) => Some(*t),
        Bound::Unbounded => None,
    };
    // Mostly from <= to; sometimes the other way round (an empty range).
    let (from, to) = if rng.chance(0.9) && start(&a) > start(&b) {
        (b, a)
    } else {
        (a, b)
    };
    HistoryQuery {
        attr: rng.chance(0.6).then(|| rng.pick(&ATTRS).to_string()),
        time_property: *rng.pick(&TIME_PROPERTIES),
        from,
        to,
        last_n: rng.chance(0.3).then(|| 1 + rng.below(4)),
    }
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        (a, b) => a == b,
    }
}

/// Whether two stores' buckets agree: the same groups and counts exactly, the numbers closely.
fn same_buckets(a: &[Bucket], b: &[Bucket]) -> bool {
    let key = |x: &Bucket| (x.attr.clone(), x.dataset_id.clone(), x.start);
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by_key(key);
    b.sort_by_key(key);
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            key(x) == key(y)
                && (x.first, x.last, x.total_count, x.distinct_count)
                    == (y.first, y.last, y.total_count, y.distinct_count)
                && [
                    (x.sum, y.sum),
                    (x.avg, y.avg),
                    (x.min, y.min),
                    (x.max, y.max),
                    (x.stddev, y.stddev),
                    (x.sumsq, y.sumsq),
                ]
                .into_iter()
                .all(|(p, q)| close(p, q))
        })
}

/// The start of a differential run: a new database, the seed (printed with how to replay it) and
/// the sizes (`TWINLINK_DIFF_ENTITIES`, `TWINLINK_DIFF_QUERIES`, else the defaults given).
async fn differential_run(
    name: &str,
    entities: usize,
    queries: usize,
) -> (String, u64, usize, usize) {
    let url = common::new_database().await;
    let seed = rng::seed();
    let n_entities = env_number("TWINLINK_DIFF_ENTITIES").map_or(entities, |n| n as usize);
    let n_queries = env_number("TWINLINK_DIFF_QUERIES").map_or(queries, |n| n as usize);
    println!(
        "{name}: seed {seed} (replay with TWINLINK_DIFF_SEED={seed}), {n_entities} entities, {n_queries} queries"
    );
    (url, seed, n_entities, n_queries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_read_and_aggregate_histories_alike() {
    let (url, seed, n_entities, n_queries) =
        differential_run("history_differential", 40, 600).await;
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let embedded =
        Store::new(EmbeddedStore::open(&dir.path().join("data")).expect("open the embedded store"));
    let postgres = Store::new(
        PgStore::connect(&url, 4)
            .await
            .expect("connect to the test database"),
    );

    // The histories, written in a few writes per entity, the same records to both stores.
    let ids: Vec<String> = (0..n_entities)
        .map(|i| format!("urn:ngsi-ld:Sensor:h{i:03}"))
        .collect();
    let mut written: Vec<Vec<InstanceChange>> = Vec::new();
    for id in &ids {
        let mut mine = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let mut batch: Vec<InstanceChange> =
                (0..rng.below(60)).map(|_| record(&mut rng)).collect();
            if rng.chance(0.05) {
                batch.push(entity_deletion(&mut rng));
            }
            for store in [&embedded, &postgres] {
                let records = batch.clone();
                store
                    .modify_recorded(TENANT, id, move |_| {
                        Ok(Decision {
                            write: Write::Keep,
                            records: Some(records),
                            removal: None,
                            result: (),
                        })
                    })
                    .await
                    .unwrap_or_else(|e| panic!("writing the history of {id}: {e}"));
            }
            mine.extend(batch);
        }
        written.push(mine);
    }
    let times: Vec<DateTime<Utc>> = written
        .iter()
        .flatten()
        .flat_map(|r| {
            [
                r.observed_at,
                Some(r.created_at),
                Some(r.modified_at),
                r.deleted_at,
            ]
        })
        .flatten()
        .collect();

    let mut failures = Vec::new();
    let (mut nonempty, mut buckets) = (0, 0);
    for n in 0..n_queries {
        let query = history_query(&mut rng, &times);
        let e = rng.below(ids.len());
        if n % 2 == 0 {
            // A history read of one entity, and of a few at once.
            let reference = query.select(written[e].clone());
            let a = embedded.history(TENANT, &ids[e], &query).await.unwrap();
            let b = postgres.history(TENANT, &ids[e], &query).await.unwrap();
            nonempty += usize::from(!reference.is_empty());
            if a != reference || b != reference {
                failures.push(format!(
                    "history of {} with {query:?}: {} records expected, embedded {}, PostgreSQL {}",
                    ids[e],
                    reference.len(),
                    a.len(),
                    b.len()
                ));
            }
            let some: Vec<String> = ids[e..].iter().take(3).cloned().collect();
            let a = embedded.history_many(TENANT, &some, &query).await.unwrap();
            let b = postgres.history_many(TENANT, &some, &query).await.unwrap();
            if a != b {
                failures.push(format!("history of {some:?} with {query:?} differs"));
            }
        } else {
            let attrs: Vec<String> = ATTRS
                .iter()
                .filter(|_| rng.chance(0.3))
                .map(|a| a.to_string())
                .collect();
            let query = AggregateQuery {
                history: HistoryQuery {
                    attr: None,
                    last_n: None,
                    ..query
                },
                attrs,
                period_micros: *rng.pick(&PERIODS),
                methods: AggrMethod::ALL.to_vec(),
            };
            let some: Vec<String> = ids[e..].iter().take(2).cloned().collect();
            let a = embedded.aggregate(TENANT, &some, &query).await.unwrap();
            let b = postgres.aggregate(TENANT, &some, &query).await.unwrap();
            buckets += a.iter().map(|(_, b)| b.len()).sum::<usize>();
            let agree = a.len() == b.len()
                && a.iter()
                    .zip(&b)
                    .all(|((x, xs), (y, ys))| x == y && same_buckets(xs, ys));
            if !agree {
                failures.push(format!(
                    "aggregation of {some:?} with {query:?}:\n  embedded {a:?}\n  PostgreSQL {b:?}"
                ));
            }
        }
    }
    println!(
        "history_differential: {} records; {nonempty} non-empty history reads, {buckets} buckets",
        written.iter().map(Vec::len).sum::<usize>()
    );
    rng::conclude(&url, seed, &failures);
    // The generated queries must find something often, or the test proves little.
    assert!(nonempty * 3 >= n_queries / 2, "{nonempty} non-empty reads");
    assert!(buckets >= n_queries / 2, "{buckets} buckets");
}

/// The buckets with only the values of `methods` (a store may leave the others out).
fn only(methods: &[AggrMethod], buckets: &[Bucket]) -> Vec<Bucket> {
    let asked = |m: AggrMethod| methods.contains(&m);
    buckets
        .iter()
        .map(|b| {
            let keep = |m: AggrMethod, v: Option<f64>| v.filter(|_| asked(m));
            Bucket {
                total_count: if asked(AggrMethod::TotalCount) {
                    b.total_count
                } else {
                    0
                },
                distinct_count: if asked(AggrMethod::DistinctCount) {
                    b.distinct_count
                } else {
                    0
                },
                sum: keep(AggrMethod::Sum, b.sum),
                avg: keep(AggrMethod::Avg, b.avg),
                min: keep(AggrMethod::Min, b.min),
                max: keep(AggrMethod::Max, b.max),
                stddev: keep(AggrMethod::Stddev, b.stddev),
                sumsq: keep(AggrMethod::Sumsq, b.sumsq),
                ..b.clone()
            }
        })
        .collect()
}

/// A removal of some of an entity's records, picked among `records` (those written so far).
fn removal(rng: &mut Rng, records: &[InstanceChange]) -> Option<history::HistoryRemoval> {
    let r = records
        .iter()
        .filter(|r| r.attr.is_some())
        .nth(rng.below(records.len().max(1)))?;
    let attr = r.attr.clone()?;
    Some(match rng.below(3) {
        0 => history::HistoryRemoval::Instance {
            attr,
            instance_id: r.instance_id.clone(),
        },
        1 => history::HistoryRemoval::Observations(vec![(
            attr,
            r.dataset_id.clone(),
            r.observed_at?,
        )]),
        _ => history::HistoryRemoval::Attribute {
            attr,
            dataset_id: rng.chance(0.5).then(|| r.dataset_id.clone()),
        },
    })
}

/// An aggregation roll-ups can answer: bounds on the hour (or none, for one period), a period of
/// whole hours or days, any methods but distinctCount (asked for now and then, which the records
/// must answer).
fn rollup_query(rng: &mut Rng) -> AggregateQuery {
    const HOUR: i64 = 3_600_000_000;
    let period = *rng.pick(&[0, HOUR, 2 * HOUR, 6 * HOUR, 24 * HOUR, 48 * HOUR]);
    let hours = |rng: &mut Rng| base() + Duration::hours(rng.below(50) as i64 - 1);
    let from = if period == 0 && rng.chance(0.3) {
        Bound::Unbounded
    } else {
        Bound::Included(hours(rng))
    };
    let to = if rng.chance(0.3) {
        Bound::Unbounded
    } else {
        Bound::Excluded(hours(rng))
    };
    let mut methods: Vec<AggrMethod> = AggrMethod::ALL
        .into_iter()
        .filter(|m| *m != AggrMethod::DistinctCount && rng.chance(0.5))
        .collect();
    if methods.is_empty() || rng.chance(0.05) {
        methods.push(*rng.pick(&AggrMethod::ALL));
    }
    AggregateQuery {
        history: HistoryQuery {
            attr: None,
            time_property: TimeProperty::ObservedAt,
            from,
            to,
            last_n: None,
        },
        attrs: ATTRS
            .iter()
            .filter(|_| rng.chance(0.3))
            .map(|a| a.to_string())
            .collect(),
        period_micros: period,
        methods,
    }
}

/// Roll-ups against the records (issue 20 item 3): random histories, some with records that will
/// expire and with removals of instances, observations and attributes among the writes, are
/// written to both stores; then random aggregations that roll-ups can answer are asked of the
/// roll-ups and computed from the records the test wrote (the reference, `aggregate::aggregate`).
/// The roll-ups must answer every entity whose periods hold no record that will expire, exactly
/// as the records do (numbers to 1e-9, relatively); the store's answer (roll-ups or records) must
/// be the reference's for every entity. An embedded store written before roll-ups existed builds
/// them when it opens (checked by dropping the table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_answer_aggregations_as_the_records_do() {
    let (url, seed, n_entities, n_queries) = differential_run("rollup differential", 30, 300).await;
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let embedded = Store::new(EmbeddedStore::open(&data).expect("open the embedded store"));
    let postgres = Store::new(
        PgStore::connect(&url, 4)
            .await
            .expect("connect to the test database"),
    );
    let ids: Vec<String> = (0..n_entities)
        .map(|i| format!("urn:ngsi-ld:Sensor:r{i:03}"))
        .collect();
    let mut kept: Vec<Vec<InstanceChange>> = Vec::new();
    for id in &ids {
        // Most entities have no record that will expire, so that roll-ups answer for them.
        let transient = rng.chance(0.3);
        let mut mine: Vec<InstanceChange> = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let batch: Vec<InstanceChange> = (0..rng.below(80))
                .map(|_| {
                    let mut r = record(&mut rng);
                    if !transient {
                        r.expires_at = None;
                    }
                    r
                })
                .collect();
            let which = if rng.chance(0.4) {
                removal(&mut rng, &mine)
            } else {
                None
            };
            for store in [&embedded, &postgres] {
                let (records, which) = (batch.clone(), which.clone());
                store
                    .modify_recorded(TENANT, id, move |_| {
                        Ok(Decision {
                            write: Write::Keep,
                            records: Some(records),
                            removal: which.map(|which| twinlink::store::Removal {
                                which,
                                if_none: None,
                            }),
                            result: (),
                        })
                    })
                    .await
                    .unwrap_or_else(|e| panic!("writing the history of {id}: {e}"));
            }
            // Removals take records written before, never those of their own write.
            if let Some(which) = &which {
                mine.retain(|r| !which.matches(r));
            }
            mine.extend(batch);
        }
        kept.push(mine);
    }

    // The migration's building of the rows of an older history gives the rows the writes kept.
    let sql = common::sql_client(&url).await;
    let migration = include_str!("../../migrations/0019_history_rollups.sql");
    let (_, build) = migration
        .split_once("-- The rows of the history written before this version.")
        .expect("the migration builds the rows of older history");
    sql.batch_execute(&format!(
        "CREATE TEMP TABLE kept AS SELECT * FROM history_rollups; DELETE FROM history_rollups; {build}"
    ))
    .await
    .expect("building the roll-ups of the history");
    let differing: i64 = sql
        .query_one(
            "SELECT count(*) FROM kept k FULL JOIN history_rollups r
               USING (tenant, entity_id, grain, attr, dataset_id, start)
             WHERE (k.n, k.n_num, k.min, k.max, k.first, k.last, k.expiring)
                   IS DISTINCT FROM (r.n, r.n_num, r.min, r.max, r.first, r.last, r.expiring)
                OR abs(k.sum - r.sum) > 1e-9 * greatest(abs(k.sum), abs(r.sum), 1)
                OR abs(k.sumsq - r.sumsq) > 1e-9 * greatest(abs(k.sumsq), abs(r.sumsq), 1)
                OR abs(k.m2 - r.m2) > 1e-9 * greatest(abs(k.m2), abs(r.m2), 1)",
            &[],
        )
        .await
        .expect("comparing the roll-ups")
        .get(0);
    assert_eq!(
        differing, 0,
        "rows built by the migration differ from those kept by the writes"
    );

    let (mut counts, mut failures) = (RollupCounts::default(), Vec::new());
    let stores = [("embedded", &embedded), ("PostgreSQL", &postgres)];
    compare_rollups(
        &mut rng,
        stores,
        &ids,
        &kept,
        n_queries / 2,
        &mut counts,
        &mut failures,
    )
    .await;
    // An embedded store from before roll-ups: the table dropped, then the store reopened.
    drop(embedded);
    {
        // The store's write lanes let go of the file as their tasks see it dropped.
        let mut tries = 0;
        let db = loop {
            match redb::Database::create(data.join("twinlink.redb")) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the redb file: {e}"),
            }
        };
        let txn = db.begin_write().unwrap();
        let table: redb::TableDefinition<&[u8], &[u8]> =
            redb::TableDefinition::new("history_rollups");
        assert!(txn.delete_table(table).unwrap(), "a roll-up table to drop");
        txn.commit().unwrap();
    }
    let embedded = Store::new(EmbeddedStore::open(&data).expect("reopen the embedded store"));

    let stores = [
        ("embedded, roll-ups built on opening", &embedded),
        ("PostgreSQL", &postgres),
    ];
    compare_rollups(
        &mut rng,
        stores,
        &ids,
        &kept,
        n_queries / 2,
        &mut counts,
        &mut failures,
    )
    .await;
    println!(
        "rollup differential: {} records kept; {} answers from roll-ups ({} buckets), {} from records",
        kept.iter().map(Vec::len).sum::<usize>(),
        counts.from_rollups,
        counts.buckets,
        counts.from_records
    );
    rng::conclude(&url, seed, &failures);
    // The roll-ups must answer often, with buckets, or the test proves little.
    assert!(
        counts.from_rollups >= n_queries,
        "{} answers from roll-ups",
        counts.from_rollups
    );
    assert!(
        counts.buckets >= n_queries,
        "{} buckets from roll-ups",
        counts.buckets
    );
}

/// Counts of [`compare_rollups`]: entity answers from roll-ups, their buckets, and entity
/// answers the roll-ups left to the records.
#[derive(Default)]
struct RollupCounts {
    from_rollups: usize,
    buckets: usize,
    from_records: usize,
}

/// Asks `n_queries` random aggregations of roll-ups and of the stores, and compares them with the
/// records kept (see [`rollups_answer_aggregations_as_the_records_do`]).
async fn compare_rollups(
    rng: &mut Rng,
    stores: [(&str, &Store); 2],
    ids: &[String],
    kept: &[Vec<InstanceChange>],
    n_queries: usize,
    counts: &mut RollupCounts,
    failures: &mut Vec<String>,
) {
    for _ in 0..n_queries {
        let query = rollup_query(rng);
        let e = rng.below(ids.len());
        let some: Vec<String> = ids[e..].iter().take(3).cloned().collect();
        let reference: Vec<Vec<Bucket>> = (e..e + some.len())
            .map(|i| {
                let all = twinlink::store::aggregate::aggregate(
                    &query,
                    &query.history.select(kept[i].clone()),
                );
                only(&query.methods, &all)
            })
            .collect();
        let distinct = query.methods.contains(&AggrMethod::DistinctCount);
        for (name, store) in stores {
            let rolled = store
                .aggregate_from_rollups(TENANT, &some, &query)
                .await
                .unwrap();
            match (rolled, distinct) {
                (None, true) => {}
                (Some(_), true) | (None, false) => failures.push(format!(
                    "{name}: roll-ups {} for {query:?}",
                    if distinct { "answered" } else { "declined" }
                )),
                (Some(answers), false) => {
                    for (i, (id, answer)) in answers.iter().enumerate() {
                        let expiring = kept[e + i].iter().any(|r| {
                            r.expires_at.is_some()
                                && r.value.is_some()
                                && r.attr.as_ref().is_some_and(|a| {
                                    query.attrs.is_empty() || query.attrs.contains(a)
                                })
                                && r.observed_at.is_some_and(|t| query.history.contains(t))
                        });
                        match answer {
                            Some(b)
                                if !expiring
                                    && same_buckets(&only(&query.methods, b), &reference[i]) =>
                            {
                                counts.from_rollups += 1;
                                counts.buckets += b.len();
                            }
                            None if expiring => counts.from_records += 1,
                            _ => failures.push(format!(
                                "{name}: roll-ups of {id} with {query:?} (a record that will \
                                 expire: {expiring}):\n  got {answer:?}\n  records give {:?}",
                                reference[i]
                            )),
                        }
                    }
                }
            }
            let answered = store.aggregate(TENANT, &some, &query).await.unwrap();
            for ((id, got), want) in answered.iter().zip(&reference) {
                let got = only(&query.methods, got);
                if !same_buckets(&got, want) {
                    failures.push(format!(
                        "{name}: aggregation of {id} with {query:?}:\n  got {got:?}\n  records give {want:?}"
                    ));
                }
            }
        }
    }
}
