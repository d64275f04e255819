//! What a failed request leaves behind, as PostgreSQL leaves it, under transaction pooling: a
//! statement prepared before the error stays, one whose Parse failed or was skipped does not, and
//! what pgpilot answers itself fails where the server would have.

mod common;

use common::*;
use pgpilot_testkit::Cluster;

/// A gateway whose single server every client shares, one after another.
async fn one_server(pg: &Cluster) -> pgpilot_gateway::Gateway {
    let mut config = config_for(pg);
    config.pgpilot.default_pool_size = 1;
    start(config).await
}

async fn first_value(c: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
    let messages = c.simple_query(sql).await.map_err(|e| sqlstate(&e).unwrap_or_else(|| e.to_string()))?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default())
}

/// `PREPARE x ...; SELECT 1/0` fails, but PostgreSQL keeps x: the client can run it, and when the
/// client leaves, the next client on that server neither sees it nor is refused its own x.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_before_an_error_stays_the_clients_own() {
    let pg = Cluster::start();
    let gw = one_server(&pg).await;
    let a = connect(&gw).await;
    let failed = first_value(&a, "PREPARE lk1 AS SELECT 5; SELECT 1/0").await;
    assert_eq!(failed, Err("22012".into()));
    assert_eq!(first_value(&a, "EXECUTE lk1").await, Ok("5".into()), "PostgreSQL keeps the statement");
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let b = connect(&gw).await;
    assert_eq!(first_value(&b, "EXECUTE lk1").await, Err("26000".into()), "another client's statement ran");
    assert_eq!(first_value(&b, "PREPARE lk1 AS SELECT 6").await, Ok(String::new()));
    assert_eq!(first_value(&b, "EXECUTE lk1").await, Ok("6".into()));
    let names = first_value(&b, "SELECT string_agg(name, ',') FROM pg_prepared_statements").await;
    assert_eq!(names, Ok("lk1".into()), "the server holds only this client's statement");
    gw.shutdown().await;
}
