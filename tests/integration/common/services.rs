//! The test services, found one way by every test: PostgreSQL + PostGIS and Mosquitto, which
//! `scripts/test.sh` (the README's test command) installs, starts and announces through
//! `TWINLINK_TEST_DATABASE_URL` and `TWINLINK_TEST_MQTT_URL`, and the programs of those packages
//! that some tests run themselves. A test that needs one and does not find it fails, saying what
//! is missing and how to get it: it never passes by skipping. A test that cannot run in that setup
//! at all is `#[ignore = "reason"]` instead.

use std::path::{Path, PathBuf};

/// The PostgreSQL major version `scripts/services.sh` installs (`TL_PG_VERSION`).
const PG_VERSION: &str = "15";

/// Fails the test: `what` is missing.
fn missing(what: &str) -> ! {
    panic!(
        "this test needs {what}: run it through scripts/test.sh, which installs and starts every \
         test service, or export their URLs with eval \"$(scripts/services.sh env)\""
    )
}

/// The URL of the test PostgreSQL database (PostGIS installed, a template for per-test copies).
pub fn database_url() -> String {
    std::env::var("TWINLINK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| missing("a PostgreSQL test database (TWINLINK_TEST_DATABASE_URL)"))
}

/// The URL of the test Mosquitto (`mqtt://host:port`).
pub fn mqtt_url() -> String {
    std::env::var("TWINLINK_TEST_MQTT_URL")
        .unwrap_or_else(|_| missing("the test Mosquitto (TWINLINK_TEST_MQTT_URL)"))
}

/// The host and port of the test Mosquitto.
pub fn mqtt_host_port() -> (String, u16) {
    let url = mqtt_url();
    let u = url::Url::parse(&url).unwrap_or_else(|e| panic!("TWINLINK_TEST_MQTT_URL={url}: {e}"));
    let host = u.host_str().expect("TWINLINK_TEST_MQTT_URL has a host");
    (host.to_string(), u.port().unwrap_or(1883))
}

/// The directory of the PostgreSQL server programs (initdb, pg_ctl), for tests that run a cluster
/// of their own.
pub fn postgres_bin() -> PathBuf {
    let bin = PathBuf::from(format!("/usr/lib/postgresql/{PG_VERSION}/bin"));
    if !bin.join("initdb").is_file() || !bin.join("pg_ctl").is_file() {
        missing(&format!(
            "the PostgreSQL {PG_VERSION} server programs in {}",
            bin.display()
        ));
    }
    bin
}

/// The Mosquitto broker program, for tests that run a broker of their own.
pub fn mosquitto_bin() -> &'static str {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|b| Path::new(b).is_file())
        .unwrap_or_else(|| missing("the mosquitto program (Debian package mosquitto)"))
}

/// Prometheus' `promtool`, which checks the text format of `/metrics`.
pub fn promtool_bin() -> &'static str {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|b| Path::new(b).is_file())
        .unwrap_or_else(|| missing("the promtool program (Debian package prometheus)"))
}
