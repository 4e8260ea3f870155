//! The test harness itself (PostgreSQL store): a test server drops the database made for it when
//! it is dropped, so that a full run does not leave a PostGIS database per test behind, and leaves
//! alone a database a test gave it.

use crate::common;

use common::TestServer;

/// Whether the test cluster has a database of this URL's name.
async fn exists(url: &str) -> bool {
    let (base, name) = url.rsplit_once('/').expect("database URL ends in /<db>");
    let client = common::sql_client(&format!("{base}/postgres")).await;
    client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("look up the database")
        .get::<_, i64>(0)
        == 1
}

#[actix_web::test]
async fn a_test_server_drops_its_own_database_and_only_that() {
    let own = TestServer::start().await;
    let Some(url) = own.database_url.clone() else {
        return; // The embedded store's data directory goes with its temporary directory.
    };
    assert!(
        exists(&url).await,
        "the server's database exists while it runs"
    );
    let given = common::fresh_database_url()
        .await
        .expect("PostgreSQL store");
    let guest = TestServer::start_with(|s| s.database_url = Some(given.clone())).await;
    drop(guest);
    assert!(
        exists(&given).await,
        "a database the test gave is left alone"
    );
    drop(own);
    assert!(
        !exists(&url).await,
        "the server's own database is dropped with it"
    );
}
