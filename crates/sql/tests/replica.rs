//! Routing checked on the servers: what `route` sends to any server really runs on a hot standby, and
//! the writes it keeps on the primary really fail there.

use pgpilot_sql::{analyze, route, FunctionCatalog, Route};
use pgpilot_testkit::{Cluster, HIDDEN_WRITERS};

const SETUP: &str = "
CREATE TABLE t (id int PRIMARY KEY, x int);
INSERT INTO t VALUES (1, 1), (2, 2);
CREATE SEQUENCE s;
CREATE FUNCTION pure(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
CREATE FUNCTION tenant() RETURNS text LANGUAGE sql STABLE AS $$SELECT current_setting('app.tenant', true)$$;
CREATE VIEW v_plain AS SELECT * FROM t WHERE x > 0;
CREATE VIEW v_random AS SELECT random() AS r, clock_timestamp() AS at;
";

/// Hidden writers one step further away, after [`HIDDEN_WRITERS`].
const HIDDEN_FURTHER: &str = "
CREATE VIEW v_wr_outer AS SELECT * FROM v_wr;
CREATE DOMAIN dw_outer AS dw;
CREATE FUNCTION fdef_outer() RETURNS int LANGUAGE sql IMMUTABLE BEGIN ATOMIC SELECT fdef(); END;
";

/// Routed to any server, and a standby runs them.
const REPLICA_OK: &[&str] = &[
    "SELECT * FROM t WHERE id = 1",
    "SELECT count(*), pure(1), tenant() FROM t",
    "SELECT now(), CURRENT_TIMESTAMP, current_user, random(), clock_timestamp()",
    "WITH r AS (SELECT * FROM t) SELECT * FROM r ORDER BY random() LIMIT 1",
    "SELECT * FROM t a JOIN LATERAL (SELECT * FROM t b WHERE b.id = a.id) c ON true",
    "EXPLAIN INSERT INTO t VALUES (3, 3)",
    "EXPLAIN SELECT nextval('s')",
    "BEGIN READ ONLY; SELECT * FROM t; COMMIT",
    "START TRANSACTION READ ONLY, ISOLATION LEVEL REPEATABLE READ; SELECT 1; COMMIT",
    "SHOW TimeZone",
    "SET search_path = public",
    "SELECT 1; SELECT * FROM t",
    // Views without volatile functions, or with read-only ones; built-in operators and casts, STABLE
    // ones included.
    "SELECT * FROM v_plain",
    "SELECT * FROM v_random",
    "SELECT now() < current_date, '2024-01-01'::date::timestamptz, 1 + 2",
];

/// Routed to the primary, and a standby refuses them.
const REPLICA_REFUSES: &[&str] = &[
    "INSERT INTO t VALUES (10, 10)",
    "UPDATE t SET x = 5 WHERE id = 1",
    "DELETE FROM t WHERE id = 2",
    "MERGE INTO t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN UPDATE SET x = 0",
    "SELECT * FROM t WHERE id = 1 FOR UPDATE",
    "SELECT * FROM t FOR NO KEY UPDATE",
    "SELECT * FROM t FOR SHARE",
    "SELECT * FROM t FOR KEY SHARE",
    "SELECT * INTO t_copy FROM t",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "SELECT nextval('s')",
    "SELECT setval('s', 5)",
    "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
    "CREATE TABLE u (id int)",
    "CREATE TEMP TABLE scratch (id int)",
    "EXPLAIN ANALYZE INSERT INTO t VALUES (11, 11)",
    "VACUUM t",
    "LISTEN jobs",
    "NOTIFY jobs",
    "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY; SELECT 1; COMMIT",
    "BEGIN; INSERT INTO t VALUES (12, 12); COMMIT",
    "SELECT * FROM t; UPDATE t SET x = 1",
    // Writes behind code the text does not name.
    "SELECT * FROM v_wr",
    "SELECT * FROM v_wr_outer",
    "SELECT 1 ### 2",
    "SELECT 1::wt",
    "SELECT 1::dw",
    "SELECT 1::dw_outer",
    "SELECT wagg(id) FROM t",
    "SELECT fdef()",
    "SELECT fdef_outer()",
];

#[tokio::test]
async fn routes_hold_on_a_real_standby() {
    let primary = Cluster::start();
    for sql in [SETUP, HIDDEN_WRITERS, HIDDEN_FURTHER] {
        primary.psql("postgres", sql);
    }
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);

    let (admin, connection) =
        tokio_postgres::connect(&primary.admin_url(), tokio_postgres::NoTls).await.expect("primary");
    tokio::spawn(connection);
    let functions = FunctionCatalog::load(&admin).await.expect("functions");
    assert!(functions.has_implicit_writers());
    let public = vec!["public".to_string()];
    for name in ["wagg", "fdef", "fdef_outer", "wr"] {
        let f = pgpilot_sql::FuncRef::new(None, name);
        assert_eq!(functions.volatility(&f, &public), pgpilot_sql::Volatility::Volatile, "{name}");
    }
    let (standby, connection) =
        tokio_postgres::connect(&replica.admin_url(), tokio_postgres::NoTls).await.expect("replica");
    tokio::spawn(connection);
    let path = vec!["public".to_string()];

    for sql in REPLICA_OK {
        assert_eq!(route(&analyze(sql), &functions, &path), Route::AnyServer, "{sql}");
        if let Err(e) = standby.batch_execute(sql).await {
            panic!("the standby refused {sql:?}, which route() sends to replicas: {e}");
        }
    }
    for sql in REPLICA_REFUSES {
        assert!(matches!(route(&analyze(sql), &functions, &path), Route::Primary(_)), "{sql}");
        assert!(standby.batch_execute(sql).await.is_err(), "the standby ran {sql:?}");
        // Leave no aborted transaction behind for the next statement.
        standby.batch_execute("ROLLBACK").await.expect("rollback");
    }
}
