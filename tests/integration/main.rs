//! twinlink's integration tests, in one test binary: the black-box API suites (each starts the real
//! server on a random loopback port), the `twinlink` binary's own tests (durability, crash under load, migrate,
//! outage) and the JSON-LD reference and store differential checks. One binary instead of one per
//! file keeps linking time and disk use of a test build small (a debug test binary links all of
//! twinlink and its dependencies). Run on the embedded store by default and on PostgreSQL with
//! `TWINLINK_TEST_STORE=postgres` (see `common`); `scripts/test.sh` runs both.

mod common;

mod attribute_kinds;
mod auth;
mod authorization;
mod bad_input;
mod batch_api;
mod concurrent_writes;
mod contexts;
mod crash_under_load;
mod csource_subscriptions;
mod data_models;
mod disk_full;
mod durability;
mod entities_api;
mod entities_lifecycle;
mod entity_maps;
mod failover;
mod federation;
mod federation_sources;
mod geometry_column;
mod harness;
mod history;
mod history_differential;
mod jsonld_contexts;
mod ld_reference;
mod linked_entities;
mod metrics;
mod migrate;
mod mqtt_ingest;
mod outage;
mod outbound;
mod overload;
mod proofs;
mod purge;
mod query_api;
mod receiver_outage;
mod registrations;
mod remote_subscriptions;
mod request_audit;
mod store_differential;
mod subscriptions;
mod temporal_api;
mod tenancy;
mod transient;
