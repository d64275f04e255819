//! Transaction pooling keeps session state honest: named prepared statements follow the client to
//! whichever server it lands on, SET values are replayed and never leak, pinning effects pin.

mod common;

use std::time::Duration;

use common::*;
use pgpilot_testkit::Cluster;

/// A gateway with a tiny pool, so clients keep landing on different servers.
async fn small_pool(pg: &Cluster, size: usize, max_prepared: usize) -> pgpilot_gateway::Gateway {
    let mut config = config_for(pg);
    config.pgpilot.default_pool_size = size;
    config.pgpilot.max_prepared_statements = max_prepared;
    start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_survive_server_changes_and_eviction() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 2).await;
    // Each client prepares more statements than a server may keep, then uses them all, while other
    // clients churn the servers.
    let mut tasks = Vec::new();
    for client in 0..8 {
        let c = connect(&gw).await;
        tasks.push(tokio::spawn(async move {
            let stmts = [
                c.prepare("SELECT $1::int + 1").await.unwrap(),
                c.prepare("SELECT $1::int + 2").await.unwrap(),
                c.prepare("SELECT $1::int + 3").await.unwrap(),
            ];
            for i in 0..60i32 {
                let k = (i as usize + client) % 3;
                let v: i32 = c.query_one(&stmts[k], &[&i]).await.unwrap().get(0);
                assert_eq!(v, i + k as i32 + 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_execute_deallocate_across_servers() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 3, 100).await;
    let a = connect(&gw).await;
    let b = connect(&gw).await;
    // Two clients use the same SQL name for different statements.
    a.batch_execute("PREPARE q(int) AS SELECT $1 * 10").await.unwrap();
    b.batch_execute("PREPARE q(int) AS SELECT $1 * 100").await.unwrap();
    for i in 1..20 {
        let ra = a.simple_query(&format!("EXECUTE q({i})")).await.unwrap();
        let rb = b.simple_query(&format!("EXECUTE q({i})")).await.unwrap();
        assert_eq!(first_value(&ra), (i * 10).to_string());
        assert_eq!(first_value(&rb), (i * 100).to_string());
    }
    a.batch_execute("DEALLOCATE q").await.unwrap();
    let err = a.simple_query("EXECUTE q(1)").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("26000"), "{err}");
    assert_eq!(first_value(&b.simple_query("EXECUTE q(2)").await.unwrap()), "200");
    gw.shutdown().await;
}

fn first_value(msgs: &[tokio_postgres::SimpleQueryMessage]) -> String {
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_each_client_and_never_leak() {
    let pg = Cluster::start();
    for i in 0..6 {
        pg.psql("postgres", &format!("CREATE SCHEMA s{i}; CREATE TABLE s{i}.mine AS SELECT {i} AS owner"));
    }
    let gw = small_pool(&pg, 2, 100).await;
    let zones = ["UTC", "Asia/Tokyo", "Europe/Paris", "America/New_York", "Australia/Sydney", "Africa/Cairo"];
    let mut tasks = Vec::new();
    for (i, zone) in zones.into_iter().enumerate() {
        let c = connect(&gw).await;
        tasks.push(tokio::spawn(async move {
            c.batch_execute(&format!("SET search_path = s{i}, public; SET TimeZone = '{zone}'")).await.unwrap();
            for _ in 0..40 {
                let row = c
                    .query_one("SELECT current_setting('search_path'), current_setting('TimeZone'), (SELECT owner FROM mine)", &[])
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, String>(0), format!("s{i}, public"));
                assert_eq!(row.get::<_, String>(1), zone);
                assert_eq!(row.get::<_, i32>(2), i as i32);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A client that never SET anything sees the server defaults, whatever the servers ran before.
    let fresh = connect(&gw).await;
    for _ in 0..10 {
        let row = fresh
            .query_one("SELECT current_setting('search_path'), current_setting('TimeZone')", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "\"$user\", public");
        assert_ne!(row.get::<_, String>(1), "Asia/Tokyo");
    }
    gw.shutdown().await;
}

async fn simple(c: &tokio_postgres::Client, sql: &str) -> String {
    first_value(&c.simple_query(sql).await.unwrap())
}

/// max_prepared_statements = 0 turns off statement rewriting only: SET values still follow their
/// client and never reach another, and a SQL PREPARE keeps its client on its server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_statement_rewriting_settings_still_never_leak() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 0).await;
    let first = connect(&gw).await;
    first.batch_execute("SET search_path = elsewhere, public; SET TimeZone = 'Asia/Tokyo'").await.unwrap();
    let second = connect(&gw).await;
    assert_eq!(simple(&second, "SHOW search_path").await, "\"$user\", public");
    assert_ne!(simple(&second, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(simple(&first, "SHOW search_path").await, "elsewhere, public");
    assert_eq!(simple(&first, "SHOW TimeZone").await, "Asia/Tokyo");

    second.batch_execute("PREPARE mine AS SELECT 42").await.unwrap();
    assert_eq!(simple(&second, "EXECUTE mine").await, "42");
    second.batch_execute("DEALLOCATE mine; PREPARE mine AS SELECT 43").await.unwrap();
    assert_eq!(simple(&second, "EXECUTE mine").await, "43");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_inside_a_transaction_counts_only_if_it_commits() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    let c = connect(&gw).await;
    c.batch_execute("BEGIN; SET search_path = pg_catalog; ROLLBACK").await.unwrap();
    c.batch_execute("BEGIN; SET LOCAL work_mem = '1MB'; COMMIT").await.unwrap();
    c.batch_execute("BEGIN; SET statement_timeout = '7s'; COMMIT").await.unwrap();
    let other = connect(&gw).await;
    other.batch_execute("SET statement_timeout = '9s'").await.unwrap();
    for _ in 0..10 {
        let row = c.query_one("SELECT current_setting('search_path'), current_setting('work_mem'), current_setting('statement_timeout')", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "\"$user\", public");
        assert_eq!(row.get::<_, String>(1), "4MB");
        assert_eq!(row.get::<_, String>(2), "7s");
        let t: String = other.query_one("SHOW statement_timeout", &[]).await.unwrap().get(0);
        assert_eq!(t, "9s");
    }
    c.batch_execute("RESET statement_timeout").await.unwrap();
    let t: String = c.query_one("SHOW statement_timeout", &[]).await.unwrap().get(0);
    assert_eq!(t, "0");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_effects_pin_the_client() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 3, 100).await;
    let c = connect(&gw).await;
    c.batch_execute("CREATE TEMP TABLE scratch(x int); INSERT INTO scratch VALUES (1)").await.unwrap();
    for _ in 0..10 {
        let n: i64 = c.query_one("SELECT count(*) FROM scratch", &[]).await.unwrap().get(0);
        assert_eq!(n, 1, "the temp table stays visible: the client is pinned");
        let _ = connect(&gw).await.simple_query("SELECT 1").await.unwrap();
    }
    let clients = psql(&gw, "pgpilot", "SHOW CLIENTS").unwrap();
    assert!(clients.contains("temporary_table"), "{clients}");
    let metrics = std::process::Command::new("curl")
        .arg("-s")
        .arg(format!("http://{}/metrics", gw.http_addr().unwrap()))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&metrics.stdout)
        .contains("pgpilot_client_pins_total{reason=\"temporary_table\"}"));
    // A session advisory lock pins too.
    let l = connect(&gw).await;
    l.batch_execute("SELECT pg_advisory_lock(42)").await.unwrap();
    let pid: i32 = l.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    for _ in 0..5 {
        let p: i32 = l.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        assert_eq!(p, pid);
    }
    drop(l);
    // After the pinned client leaves, its server is reset: the lock is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let check = connect(&gw).await;
    let free: bool = check.query_one("SELECT pg_try_advisory_lock(42)", &[]).await.unwrap().get(0);
    assert!(free, "the advisory lock leaked to the next client");
    check.batch_execute("SELECT pg_advisory_unlock_all()").await.unwrap();
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_is_delivered() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    let (listener, mut conn) =
        tokio_postgres::connect(&conninfo(&gw, "postgres", "postgres"), tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = futures::StreamExt::next(&mut stream).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();
    let sender = connect(&gw).await;
    for i in 0..3 {
        sender.batch_execute(&format!("NOTIFY jobs, 'job {i}'")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("notification delivered")
            .unwrap();
        assert_eq!(got, format!("job {i}"));
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_inside_extended_batches_keep_the_session_in_step() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let c = connect(&gw).await;
    let good = c.prepare("SELECT $1::int").await.unwrap();
    assert!(c.prepare("SELECT * FROM missing_table").await.is_err());
    let v: i32 = c.query_one(&good, &[&5]).await.unwrap().get(0);
    assert_eq!(v, 5);
    // Division by zero inside a transaction, then rollback, then normal work.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    assert!(tx.query_one("SELECT 1 / 0", &[]).await.is_err());
    tx.rollback().await.unwrap();
    let v: i32 = c.query_one(&good, &[&6]).await.unwrap().get(0);
    assert_eq!(v, 6);
    // A statement dropped from the server between uses is prepared again transparently.
    let other = connect(&gw).await;
    other.batch_execute("DISCARD ALL").await.unwrap();
    let v: i32 = c.query_one(&good, &[&7]).await.unwrap().get(0);
    assert_eq!(v, 7);
    gw.shutdown().await;
}

/// After DDL changes what a prepared `SELECT *` returns, PostgreSQL refuses the old plan with
/// SQLSTATE 0A000. pgpilot drops its stale server copy; a request that describes its result (as libpq
/// does for every prepared execution) outside a transaction is prepared again and re-run, unseen.
/// Inside a transaction, or without a Describe, the client gets PostgreSQL's error, and preparing
/// again (what drivers do on it) reaches the new plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_result_type_changed_is_prepared_again() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE r(id int primary key, v text); INSERT INTO r VALUES (1, 'a')");
    let gw = small_pool(&pg, 1, 100).await;
    let mut raw = raw_login(addr(&gw)).await;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::parse(&mut out, b"s1", b"SELECT * FROM r WHERE id = 1", &[0, 0]);
    pgpilot_wire::frontend::target(&mut out, b'D', b'S', b"s1");
    pgpilot_wire::frontend::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    read_until_ready(&mut raw).await;
    // Bind, Describe portal, Execute, Sync: libpq's PQexecPrepared. Returns the columns of the
    // RowDescription, or the SQLSTATE of an error.
    let run = async |raw: &mut tokio::net::TcpStream, query: Option<&str>| -> Result<i16, String> {
        let mut out = bytes::BytesMut::new();
        if let Some(q) = query {
            pgpilot_wire::frontend::query(&mut out, q);
        }
        pgpilot_wire::frontend::bind(&mut out, b"", b"s1", &[0, 0, 0, 0, 0, 0]);
        pgpilot_wire::frontend::target(&mut out, b'D', b'P', b"");
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        pgpilot_wire::frontend::sync(&mut out);
        raw.write_all(&out).await.unwrap();
        let mut got = Vec::new();
        let ready = if query.is_some() { 2 } else { 1 };
        while backend_messages(&got).iter().filter(|m| m.0 == b'Z').count() < ready {
            got.extend(read_until_any(raw).await);
        }
        let msgs = backend_messages(&got);
        if let Some((_, e)) = msgs.iter().find(|m| m.0 == b'E') {
            let code = e.split(|b| *b == 0).find(|f| f.first() == Some(&b'C')).unwrap();
            return Err(String::from_utf8_lossy(&code[1..]).into_owned());
        }
        assert!(msgs.iter().any(|m| m.0 == b'D'), "no row: {msgs:?}");
        Ok(msgs.iter().find(|m| m.0 == b'T').map(|t| i16::from_be_bytes([t.1[0], t.1[1]])).unwrap())
    };
    assert_eq!(run(&mut raw, None).await, Ok(2));
    pg.psql("postgres", "ALTER TABLE r ADD COLUMN extra int DEFAULT 7");
    assert_eq!(run(&mut raw, None).await, Ok(3), "not re-run after re-preparing");
    assert_eq!(run(&mut raw, None).await, Ok(3));

    // Inside a transaction the error is the client's; the statement works again after it.
    pg.psql("postgres", "ALTER TABLE r ADD COLUMN more int DEFAULT 8");
    assert_eq!(run(&mut raw, Some("BEGIN")).await, Err("0A000".into()));
    raw.write_all(b"Q\0\0\0\x0dROLLBACK\0").await.unwrap();
    read_until_ready(&mut raw).await;
    assert_eq!(run(&mut raw, None).await, Ok(4));

    // A driver that executes without describing (tokio-postgres) gets the error, then prepares again.
    let c = connect(&gw).await;
    let stmt = c.prepare("SELECT * FROM r WHERE id = $1").await.unwrap();
    assert_eq!(c.query_one(&stmt, &[&1i32]).await.unwrap().get::<_, i32>(0), 1);
    pg.psql("postgres", "ALTER TABLE r DROP COLUMN more");
    let err = c.query(&stmt, &[&1i32]).await.expect_err("a stale row type must not reach the client");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED), "{err}");
    let again = c.prepare("SELECT * FROM r WHERE id = $1").await.unwrap();
    assert_eq!(again.columns().len(), 3);
    assert_eq!(c.query_one(&again, &[&1i32]).await.unwrap().get::<_, i32>(2), 7);
    gw.shutdown().await;
}

/// A client's own Parse is planned anew by PostgreSQL: one that pgpilot answers from a server copy
/// prepared before DDL changed the result type must not fail where PostgreSQL would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_prepare_outside_a_transaction_never_meets_a_stale_server_copy() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE fresh(id int primary key, v int); INSERT INTO fresh VALUES (1, 5)");
    let gw = small_pool(&pg, 1, 100).await;
    let text = "SELECT v FROM fresh WHERE id = $1";
    let first = connect(&gw).await;
    assert_eq!(first.query_one(text, &[&1i32]).await.unwrap().get::<_, i32>(0), 5);
    // The server now holds pgpilot's copy of the text; DDL straight on PostgreSQL outdates it.
    pg.psql("postgres", "ALTER TABLE fresh ALTER COLUMN v TYPE bigint");
    // Parse, Describe, Sync (a driver's prepare) on a new connection.
    let second = connect(&gw).await;
    let stmt = second.prepare(text).await.expect("a fresh prepare after DDL");
    assert_eq!(stmt.columns()[0].type_(), &tokio_postgres::types::Type::INT8);
    assert_eq!(second.query_one(&stmt, &[&1i32]).await.unwrap().get::<_, i64>(0), 5);

    // Parse, Bind, Describe, Execute, Sync in one batch (pgJDBC), after another change.
    pg.psql("postgres", "ALTER TABLE fresh ALTER COLUMN v TYPE numeric");
    let batch = |prefix: Option<&str>| {
        let mut out = bytes::BytesMut::new();
        if let Some(q) = prefix {
            pgpilot_wire::frontend::query(&mut out, q);
        }
        pgpilot_wire::frontend::parse(&mut out, b"j1", text.as_bytes(), &[0, 0]);
        pgpilot_wire::frontend::bind(&mut out, b"", b"j1", &[0, 0, 0, 1, 0, 0, 0, 1, b'1', 0, 0]);
        pgpilot_wire::frontend::target(&mut out, b'D', b'P', b"");
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        pgpilot_wire::frontend::sync(&mut out);
        out
    };
    let answer = async |prefix: Option<&str>| {
        let mut raw = raw_login(addr(&gw)).await;
        raw.write_all(&batch(prefix)).await.unwrap();
        let mut got = Vec::new();
        let ready = if prefix.is_some() { 2 } else { 1 };
        while backend_messages(&got).iter().filter(|m| m.0 == b'Z').count() < ready {
            got.extend(read_until_any(&mut raw).await);
        }
        backend_messages(&got).into_iter().map(|(tag, body)| (tag, body.to_vec())).collect::<Vec<_>>()
    };
    let msgs = answer(None).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"12TDCZ".to_vec(), "one ParseComplete, no error: {msgs:?}");
    let row = &msgs.iter().find(|m| m.0 == b'D').unwrap().1;
    assert!(row.ends_with(b"5"), "{row:?}");

    // Parse, Describe, Flush, and the rest only once the description arrived (asyncpg).
    pg.psql("postgres", "ALTER TABLE fresh ALTER COLUMN v TYPE bigint");
    let mut raw = raw_login(addr(&gw)).await;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::parse(&mut out, b"a1", text.as_bytes(), &[0, 0]);
    pgpilot_wire::frontend::target(&mut out, b'D', b'S', b"a1");
    out.extend_from_slice(b"H\0\0\0\x04");
    raw.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    while !backend_messages(&got).iter().any(|m| matches!(m.0, b'T' | b'E')) {
        got.extend(read_until_any(&mut raw).await);
    }
    let tags = message_tags(&got);
    assert_eq!(tags, b"1tT".to_vec(), "{:?}", backend_messages(&got));
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::bind(&mut out, b"", b"a1", &[0, 0, 0, 1, 0, 0, 0, 1, b'1', 0, 0]);
    out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
    pgpilot_wire::frontend::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    while !backend_messages(&got).iter().any(|m| m.0 == b'Z') {
        got.extend(read_until_any(&mut raw).await);
    }
    let tags = message_tags(&got);
    assert_eq!(tags, b"2DCZ".to_vec(), "{:?}", backend_messages(&got));
    drop(raw);

    // Inside a transaction (pgJDBC's first execution there): the Parse is planned afresh.
    pg.psql("postgres", "ALTER TABLE fresh ALTER COLUMN v TYPE int");
    let msgs = answer(Some("BEGIN")).await;
    assert!(!msgs.iter().any(|m| m.0 == b'E'), "{msgs:?}");
    assert!(msgs.iter().find(|m| m.0 == b'D').unwrap().1.ends_with(b"5"), "{msgs:?}");
    gw.shutdown().await;
}

/// Raw protocol: whatever arrives next.
async fn show(c: &tokio_postgres::Client, setting: &str) -> String {
    c.query_one(&format!("SELECT current_setting('{setting}')"), &[]).await.unwrap().get(0)
}

/// Runs `check` while another client holds the server `c` used last, so `c` lands on another one.
async fn on_another_server(
    gw: &pgpilot_gateway::Gateway,
    c: &tokio_postgres::Client,
    setting: &str,
) -> String {
    let holder = connect(gw).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let value = show(c, setting).await;
    holder.batch_execute("COMMIT").await.unwrap();
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_do_not_outlive_their_client() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let info = conninfo(&gw, "postgres", "postgres");
    let opts = try_connect(&format!("{info} options='-c statement_timeout=4321 -c search_path=elsewhere'"))
        .await
        .unwrap();
    assert_eq!(show(&opts, "statement_timeout").await, "4321ms");
    drop(opts);
    // The only server of the pool had the first client's values: the next client must not see them.
    let plain = connect(&gw).await;
    assert_eq!(show(&plain, "statement_timeout").await, "0");
    assert_eq!(show(&plain, "search_path").await, "\"$user\", public");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_values_are_replayed_as_set_config_takes_them() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    let c = connect(&gw).await;
    c.simple_query("SELECT set_config('search_path', 'a, public', false)").await.unwrap();
    // A list given to set_config is one string; `SET search_path = 'a, public'` would name one schema.
    assert_eq!(on_another_server(&gw, &c, "search_path").await, "a, public");
    // Quoted names are the same function (as an ORM or code generator writes them).
    c.simple_query("SELECT \"set_config\"('work_mem', '77MB', false)").await.unwrap();
    c.simple_query("SELECT pg_catalog.\"set_config\"('search_path', 'b, public', false)").await.unwrap();
    assert_eq!(on_another_server(&gw, &c, "work_mem").await, "77MB");
    assert_eq!(on_another_server(&gw, &c, "search_path").await, "b, public");
    let other = connect(&gw).await;
    for _ in 0..3 {
        assert_eq!(show(&other, "work_mem").await, "4MB", "another client's quoted set_config leaked");
        assert_eq!(show(&other, "search_path").await, "\"$user\", public");
    }
    drop(other);
    c.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE").await.unwrap();
    assert_eq!(on_another_server(&gw, &c, "default_transaction_isolation").await, "serializable");
    drop(c);
    let fresh = connect(&gw).await;
    assert_eq!(show(&fresh, "default_transaction_isolation").await, "read committed");
    // A set_config that never runs sets nothing, here or on the client's next server.
    for never in [
        "SELECT set_config('work_mem', '34MB', false) WHERE false",
        "SELECT CASE WHEN 1 = 2 THEN set_config('work_mem', '35MB', false) END",
    ] {
        fresh.simple_query(never).await.unwrap();
        assert_eq!(show(&fresh, "work_mem").await, "4MB", "{never}");
        assert_eq!(on_another_server(&gw, &fresh, "work_mem").await, "4MB", "{never}");
    }
    // asyncpg's type lookup sets jit with a bound value: the client is not pinned, and the value
    // goes with it to its next server.
    let jit = fresh.prepare("SELECT set_config('jit', $1, false)").await.unwrap();
    fresh.query_one(&jit, &[&"off"]).await.unwrap();
    assert_eq!(on_another_server(&gw, &fresh, "jit").await, "off");
    let pinned = psql(&gw, "pgpilot", "SHOW CLIENTS").unwrap();
    assert!(!pinned.contains("dynamic_set_config"), "{pinned}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_authorization_and_do_blocks_pin_the_client() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE ROLE limited");
    let gw = small_pool(&pg, 2, 100).await;
    let a = connect(&gw).await;
    a.batch_execute("SET SESSION AUTHORIZATION limited").await.unwrap();
    let b = connect(&gw).await;
    b.batch_execute("DO $$ BEGIN PERFORM set_config('statement_timeout', '1234', false); END $$")
        .await
        .unwrap();

    for _ in 0..5 {
        assert_eq!(show(&a, "session_authorization").await, "limited");
        assert_eq!(show(&b, "statement_timeout").await, "1234ms");
    }
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Their servers were reset when they left: nothing reaches the next clients.
    for _ in 0..2 {
        let c = connect(&gw).await;
        assert_eq!(show(&c, "session_authorization").await, "postgres");
        assert_eq!(show(&c, "statement_timeout").await, "0");
    }
    // A quoted name is the same function (as an ORM or code generator writes it).
    let locker = connect(&gw).await;
    locker.simple_query("SELECT \"pg_advisory_lock\"(109)").await.unwrap();
    let clients = psql(&gw, "pgpilot", "SHOW CLIENTS").unwrap();
    assert!(clients.contains("advisory"), "a quoted advisory lock pins its client: {clients}");
    drop(locker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = pg.psql("postgres", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'");
    assert_eq!(held, "0", "the advisory lock outlived its client");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_run_as_a_prepared_statement_keeps_other_statements_working() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let a = connect(&gw).await;
    let doubled = a.prepare("SELECT $1::int * 2").await.unwrap();
    assert_eq!(a.query_one(&doubled, &[&21i32]).await.unwrap().get::<_, i32>(0), 42);
    let b = connect(&gw).await;
    let deallocate = b.prepare("DEALLOCATE ALL").await.unwrap();
    b.execute(&deallocate, &[]).await.unwrap();
    // The server lost pgpilot's copy too: it is prepared again, unseen.
    assert_eq!(a.query_one(&doubled, &[&21i32]).await.unwrap().get::<_, i32>(0), 42);
    gw.shutdown().await;
}

/// Statements pgpilot made on a server dropped where pgpilot cannot see it (among other
/// statements, in a function, by pgpilot's own name) are prepared again at their next use: other
/// clients' statements keep working, and never fail for good. (A DO block that may deallocate
/// pins its client, whose server is reset when it leaves.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_deallocated_behind_pgpilots_back_are_prepared_again() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let mut a = connect(&gw).await;
    let doubled = a.prepare("SELECT $1::int * 2").await.unwrap();
    assert_eq!(a.query_one(&doubled, &[&21i32]).await.unwrap().get::<_, i32>(0), 42);
    let b = connect(&gw).await;
    b.batch_execute(
        "CREATE FUNCTION drop_all() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$",
    )
    .await
    .unwrap();
    let own_name = "SELECT name FROM pg_prepared_statements WHERE name LIKE 'pgpilot%' LIMIT 1";
    for (i, drop_them) in ["SELECT 1; DEALLOCATE ALL", "SELECT drop_all()", "by name"].into_iter().enumerate()
    {
        if drop_them == "by name" {
            let name: String = b.query_one(own_name, &[]).await.unwrap().get(0);
            b.batch_execute(&format!("DEALLOCATE \"{name}\"")).await.unwrap();
        } else {
            b.batch_execute(drop_them).await.unwrap();
        }
        // Outside a transaction the request runs again, unseen.
        let v: i32 = a.query_one(&doubled, &[&(i as i32)]).await.unwrap().get(0);
        assert_eq!(v, 2 * i as i32, "after {drop_them}");
    }
    // A fresh prepare of a text whose server copy was lost is prepared again too, unseen.
    b.batch_execute("SELECT drop_all()").await.unwrap();
    let c = connect(&gw).await;
    let again = c.prepare("SELECT $1::int * 2").await.expect("a fresh prepare after DEALLOCATE ALL");
    assert_eq!(c.query_one(&again, &[&4i32]).await.unwrap().get::<_, i32>(0), 8);
    drop(c);
    // Inside a transaction the client gets PostgreSQL's error once; the next use works.
    b.batch_execute("SELECT drop_all()").await.unwrap();
    drop(b);
    let tx = a.transaction().await.unwrap();
    let e = tx.query_one(&doubled, &[&5i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("26000"), "{e}");
    tx.rollback().await.unwrap();
    assert_eq!(a.query_one(&doubled, &[&5i32]).await.unwrap().get::<_, i32>(0), 10);
    gw.shutdown().await;
}

/// After DDL changed a shared statement's result type, a new client preparing the same text
/// (Parse, Describe: asyncpg, tokio-postgres) meets the server's stale copy once at most, and
/// its driver's next prepare gets the new row type (each new client failed until the server
/// connection closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_met_by_a_describe_is_prepared_again() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE wide(id int primary key, v text); INSERT INTO wide VALUES (1, 'a')");
    let gw = small_pool(&pg, 1, 100).await;
    let sql = "SELECT * FROM wide WHERE id = $1";
    let first = connect(&gw).await;
    let stmt = first.prepare(sql).await.unwrap();
    assert_eq!(first.query(&stmt, &[&1i32]).await.unwrap().len(), 1);
    pg.psql("postgres", "ALTER TABLE wide ADD COLUMN extra int DEFAULT 7");
    for client in 0..3 {
        let c = connect(&gw).await;
        let prepared = match c.prepare(sql).await {
            Ok(p) => p,
            // At most the first meets the stale copy; its driver prepares again.
            Err(e) if client == 0 => {
                assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
                c.prepare(sql).await.expect("prepared again after the stale copy went")
            }
            Err(e) => panic!("client {client}: {e}"),
        };
        assert_eq!(prepared.columns().len(), 3, "client {client}");
        let row = c.query_one(&prepared, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(2), 7, "client {client}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_learns_that_a_shared_statements_result_type_changed() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE w(id int primary key, v int); INSERT INTO w VALUES (1, 10)");
    pg.psql("postgres", "CREATE SCHEMA other; CREATE TABLE other.w(id int, v text, x text); INSERT INTO other.w VALUES (1, 'o', 'x')");
    let gw = small_pool(&pg, 1, 100).await;
    let a = connect(&gw).await;
    let b = connect(&gw).await;
    let sa = a.prepare("SELECT * FROM w WHERE id = $1").await.unwrap();
    let sb = b.prepare("SELECT * FROM w WHERE id = $1").await.unwrap();
    assert_eq!(b.query_one(&sb, &[&1i32]).await.unwrap().get::<_, i32>(1), 10);
    pg.psql("postgres", "ALTER TABLE w ALTER COLUMN v TYPE real");
    let stale = tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED;
    let err = a.query(&sa, &[&1i32]).await.expect_err("A's row type changed");
    assert_eq!(err.code(), Some(&stale), "{err}");
    // B shares the server's copy, which A's use prepared afresh: B must be told as well, never given
    // rows it would read with the old row type.
    let err = b.query(&sb, &[&1i32]).await.expect_err("B's row type changed too");
    assert_eq!(err.code(), Some(&stale), "{err}");
    let again = b.prepare("SELECT * FROM w WHERE id = $1").await.unwrap();
    assert_eq!(b.query_one(&again, &[&1i32]).await.unwrap().get::<_, f32>(1), 10.0);
    // The same text under another search_path is another statement.
    let c = connect(&gw).await;
    c.batch_execute("SET search_path = other").await.unwrap();
    let sc = c.prepare("SELECT * FROM w WHERE id = $1").await.unwrap();
    assert_eq!(sc.columns().len(), 3);
    assert_eq!(c.query_one(&sc, &[&1i32]).await.unwrap().get::<_, &str>(1), "o");
    assert_eq!(b.query_one(&again, &[&1i32]).await.unwrap().get::<_, f32>(1), 10.0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_prepare_sent_as_a_protocol_statement_stays_with_its_client() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    let a = connect(&gw).await;
    // psycopg with prepare_threshold=0 sends the PREPARE itself through Parse/Bind/Execute.
    let prepare = a.prepare("PREPARE s AS SELECT 'A secret'").await.unwrap();
    a.execute(&prepare, &[]).await.unwrap();
    for _ in 0..5 {
        let b = connect(&gw).await;
        let err = b.simple_query("EXECUTE s").await.expect_err("another client ran A's statement");
        assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME), "{err}");
        b.batch_execute("PREPARE s AS SELECT 'B'").await.unwrap();
        assert_eq!(first_value(&b.simple_query("EXECUTE s").await.unwrap()), "B");
    }
    assert_eq!(first_value(&a.simple_query("EXECUTE s").await.unwrap()), "A secret");
    // helper-146: pgJDBC sends DEALLOCATE the same way; with the statement gone the client is let
    // go (it stayed pinned for its session, and a few such JDBC connections held a whole pool).
    let deallocate = a.prepare("DEALLOCATE s").await.unwrap();
    a.execute(&deallocate, &[]).await.unwrap();
    let registry = gw.shared().registry.clone();
    let unpinned = || registry.all().iter().all(|c| c.pinned.lock().is_none());
    assert!(eventually(Duration::from_secs(5), unpinned).await, "the client stayed pinned after DEALLOCATE");
    gw.shutdown().await;
}

/// Bind of the unnamed statement to the unnamed portal with one text parameter, Execute, Sync.
fn bind_execute_sync(value: &str) -> Vec<u8> {
    let mut body = vec![0, 0, 0, 0, 0, 1];
    body.extend_from_slice(&(value.len() as u32).to_be_bytes());
    body.extend_from_slice(value.as_bytes());
    body.extend_from_slice(&[0, 0]);
    let mut out = message(b'B', &body);
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    out.extend(message(b'S', &[]));
    out
}

/// The first DataRow's first column as text, or the SQLSTATE of an ErrorResponse.
fn first_value_or_error(bytes: &[u8]) -> String {
    for (tag, body) in backend_messages(bytes) {
        match tag {
            b'D' => {
                let len = u32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
                return String::from_utf8_lossy(&body[6..6 + len]).into_owned();
            }
            b'E' => {
                let code = body.split(|&b| b == 0).find(|f| f.first() == Some(&b'C')).unwrap();
                return format!("error {}", String::from_utf8_lossy(&code[1..]));
            }
            _ => {}
        }
    }
    panic!("no row and no error")
}

/// libpq's PQprepare("") then PQexecPrepared(""), pg8000's run(): the unnamed statement is parsed
/// in one transaction and bound in the next, which may land on a server whose unnamed statement
/// another client has replaced since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_statement_bound_in_a_later_transaction_is_the_clients_own() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let mut a = raw_login(addr(&gw)).await;
    let mut b = raw_login(addr(&gw)).await;
    let mut c = raw_login(addr(&gw)).await;
    let sync = message(b'S', &[]);
    let mut prepare_a = parse("", "SELECT 'A:' || $1::text");
    prepare_a.extend(&sync);
    a.write_all(&prepare_a).await.unwrap();
    read_until_ready(&mut a).await;
    // Another client's unnamed statement takes the only server's slot.
    let mut run_b = parse("", "SELECT 'B:' || $1::text");
    run_b.extend(bind_execute_sync("b"));
    b.write_all(&run_b).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut b).await), "B:b");
    a.write_all(&bind_execute_sync("a")).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut a).await), "A:a", "client A ran B's statement");
    // A client that never parsed one gets PostgreSQL's error, not another client's statement.
    c.write_all(&bind_execute_sync("c")).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut c).await), "error 26000");
    gw.shutdown().await;
}

/// asyncpg's fetch('EXECUTE q(7)') sends the SQL-level EXECUTE as a prepared statement: the
/// client's own PREPAREd `q` must be the one on the server then, not another client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_execute_sent_as_a_protocol_statement_runs_the_clients_own() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let a = connect(&gw).await;
    let b = connect(&gw).await;
    a.batch_execute("PREPARE q(int) AS SELECT $1 * 10").await.unwrap();
    b.batch_execute("PREPARE q(int) AS SELECT $1 * 100").await.unwrap();
    for _ in 0..5 {
        let from_a: i32 = a.query_one("EXECUTE q(7)", &[]).await.unwrap().get(0);
        let from_b: i32 = b.query_one("EXECUTE q(7)", &[]).await.unwrap().get(0);
        assert_eq!((from_a, from_b), (70, 700), "a client ran the other's statement");
    }
    gw.shutdown().await;
}

/// Raw protocol: reads until the messages read end with one of tag `last`.
async fn read_until_tag(s: &mut tokio::net::TcpStream, last: u8) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while backend_messages(&got).last().is_none_or(|(t, _)| *t != last) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no answer: {:?}", backend_messages(&got)))
            .unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// psycopg's pipeline mode Flushes between statements and Syncs at the end: after a statement
/// fails, what the client sends before its Sync is skipped by the server, and must not be waited
/// for (the session hung, holding its server) nor answered (a skipped Parse prepared nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_after_an_error_and_before_sync_are_skipped_as_the_server_skips_them() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let mut c = raw_login(addr(&gw)).await;
    let flush = message(b'H', &[]);
    let sync = message(b'S', &[]);
    let mut first = parse("a", "SELECT 1");
    first.extend(bind_execute("a"));
    first.extend(&flush);
    c.write_all(&first).await.unwrap();
    read_until_tag(&mut c, b'C').await;
    let mut failing = parse("", "SELECT 1/0");
    failing.extend(bind_execute(""));
    failing.extend(&flush);
    c.write_all(&failing).await.unwrap();
    read_until_tag(&mut c, b'E').await;
    let mut skipped = parse("c", "SELECT 3");
    skipped.extend(bind_execute("c"));
    skipped.extend(&sync);
    c.write_all(&skipped).await.unwrap();
    let tags: Vec<u8> = backend_messages(&read_until_ready(&mut c).await).iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, vec![b'Z'], "only ReadyForQuery answers a skipped batch tail");
    let mut again = bind_execute("c");
    again.extend(&sync);
    c.write_all(&again).await.unwrap();
    assert_eq!(
        first_value_or_error(&read_until_ready(&mut c).await),
        "error 26000",
        "the skipped Parse prepared c"
    );
    let mut fine = bind_execute("a");
    fine.extend(&sync);
    c.write_all(&fine).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut c).await), "1");
    // All in one write, the Parse of a text the server holds already (pgpilot answers it itself).
    let pipeline = [parse("", "SELECT 1/0"), bind_execute(""), parse("d", "SELECT 1"), sync.clone()].concat();
    c.write_all(&pipeline).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut c).await), "error 22012");
    c.write_all(&[bind_execute("d"), sync.clone()].concat()).await.unwrap();
    assert_eq!(
        first_value_or_error(&read_until_ready(&mut c).await),
        "error 26000",
        "the skipped Parse of a known text prepared d"
    );
    // Pipelined past the Sync, before the error came back: the server tells the client's name.
    let pipeline = [
        parse("", "SELECT 1/0"),
        bind_execute(""),
        parse("e", "SELECT 5"),
        sync.clone(),
        bind_execute("e"),
        sync.clone(),
    ]
    .concat();
    c.write_all(&pipeline).await.unwrap();
    let mut both = read_until_ready(&mut c).await;
    while backend_messages(&both).iter().filter(|(t, _)| *t == b'Z').count() < 2 {
        both.extend(read_until_ready(&mut c).await);
    }
    assert_eq!(first_value_or_error(&both), "error 22012");
    let second_ready = backend_messages(&both).iter().position(|(t, _)| *t == b'Z').unwrap();
    let answer: Vec<u8> = backend_messages(&both)[second_ready + 1..]
        .iter()
        .flat_map(|(t, body)| [&[*t][..], &((body.len() + 4) as u32).to_be_bytes(), body].concat())
        .collect();
    assert_eq!(first_value_or_error(&answer), "error 26000");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("prepared statement \"e\" does not exist"), "{text}");
    // The session gave its server back: another client gets the pool's only one.
    let other = connect(&gw).await;
    let answered = tokio::time::timeout(Duration::from_secs(5), other.simple_query("SELECT 1")).await;
    assert!(answered.is_ok_and(|r| r.is_ok()), "the pool's only server was never released");
    gw.shutdown().await;
}

/// What a client's settings are after savepoints, a ROLLBACK later in the same query, or COMMIT
/// AND CHAIN is what the server kept, on whichever server the client's next transaction lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_savepoints_and_rollbacks_as_the_server_kept_them() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    let c = connect(&gw).await;
    let cases = [
        ("BEGIN; SET search_path TO c1; SAVEPOINT s; SET search_path TO c2; ROLLBACK TO s; COMMIT", "c1"),
        ("BEGIN; SET search_path TO c3; ROLLBACK; SELECT 1", "c1"),
        ("BEGIN; SET search_path TO c4; COMMIT AND CHAIN; SET search_path TO c9; ROLLBACK", "c4"),
        ("BEGIN; SET search_path TO c5; SAVEPOINT a; SAVEPOINT b; SET search_path TO c6; RELEASE b; ROLLBACK TO a; COMMIT", "c5"),
        // One Query is one implicit transaction: the error undoes the SET.
        ("SET search_path TO c7; SELECT 1/0", "c5"),
    ];
    for (sql, expected) in cases {
        let _ = c.batch_execute(sql).await;
        assert_eq!(show(&c, "search_path").await, expected, "after {sql}");
        assert_eq!(
            on_another_server(&gw, &c, "search_path").await,
            expected,
            "after {sql}, on another server"
        );
    }
    gw.shutdown().await;
}

/// RESET, RESET ALL and DISCARD ALL give back the values the client logged in with, as
/// PostgreSQL does, not the server's defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_gives_back_the_startup_values() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    let info = conninfo(&gw, "postgres", "postgres");
    let options = "application_name=startname options='-c search_path=boot -c statement_timeout=4321'";
    let c = try_connect(&format!("{info} {options}")).await.unwrap();
    for reset in ["RESET search_path", "RESET ALL", "DISCARD ALL"] {
        c.batch_execute("SET search_path = changed; SET statement_timeout = 5").await.unwrap();
        c.batch_execute(reset).await.unwrap();
        assert_eq!(show(&c, "search_path").await, "boot", "after {reset}");
        assert_eq!(
            on_another_server(&gw, &c, "search_path").await,
            "boot",
            "after {reset}, on another server"
        );
        let timeout = if reset == "RESET search_path" { "5ms" } else { "4321ms" };
        assert_eq!(show(&c, "statement_timeout").await, timeout, "after {reset}");
        assert_eq!(show(&c, "application_name").await, "startname", "after {reset}");
    }
    gw.shutdown().await;
}

/// In session pooling the server stays with the client: after a RESET of a setting the client
/// logged in with, pgpilot gives the server the login value back before the next statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_in_session_pooling_gives_back_the_startup_values() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.pool_mode = pgpilot_gateway::config::PoolMode::Session;
    let gw = start(config).await;
    let info = conninfo(&gw, "postgres", "postgres");
    let options = "application_name=startname options='-c search_path=boot -c statement_timeout=4321'";
    let c = try_connect(&format!("{info} {options}")).await.unwrap();
    c.batch_execute("SET search_path = changed; SET statement_timeout = 5; SET application_name = x")
        .await
        .unwrap();
    for setting in ["search_path", "statement_timeout", "application_name"] {
        c.batch_execute(&format!("RESET {setting}")).await.unwrap();
    }
    c.batch_execute("BEGIN; COMMIT").await.unwrap();
    assert_eq!(show(&c, "search_path").await, "boot");
    assert_eq!(show(&c, "statement_timeout").await, "4321ms");
    assert_eq!(show(&c, "application_name").await, "startname");
    gw.shutdown().await;
}

/// A Close pgpilot sends to make room (max_prepared_statements) is skipped by the server when an
/// earlier statement of the same batch failed: the statement stays there while pgpilot's registry
/// forgot it. Preparing it there again must not fail with 42P05 "already exists".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_left_on_the_server_by_a_skipped_close_is_prepared_again_cleanly() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 1).await;
    let mut c = raw_login(addr(&gw)).await;
    let sync = message(b'S', &[]);
    let mut first = parse("a", "SELECT 1");
    first.extend(bind_execute("a"));
    first.extend(&sync);
    c.write_all(&first).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut c).await), "1");
    // One write: the failure comes before b's Parse, which evicts a (max_prepared_statements = 1).
    let mut failing = parse("", "SELECT 1/0");
    failing.extend(bind_execute(""));
    failing.extend(parse("b", "SELECT 2"));
    failing.extend(bind_execute("b"));
    failing.extend(&sync);
    c.write_all(&failing).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut c).await), "error 22012");
    let mut again = bind_execute("a");
    again.extend(&sync);
    c.write_all(&again).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut c).await), "1", "a could not be used again");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_outlives_reset_all_as_in_postgresql_and_never_its_client() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE ROLE tenant");
    let gw = small_pool(&pg, 2, 100).await;
    let a = connect(&gw).await;
    a.batch_execute("SET ROLE tenant").await.unwrap();
    a.batch_execute("RESET ALL").await.unwrap();
    // PostgreSQL's RESET ALL leaves a SET ROLE in place.
    assert_eq!(show(&a, "role").await, "tenant");
    assert_eq!(on_another_server(&gw, &a, "role").await, "tenant");
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let c = connect(&gw).await;
        let user: String = c.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
        assert_eq!(user, "postgres", "a departed client's role reached the next client");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_authorization_default_ends_a_set_role_on_every_server() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE ROLE tenant");
    let gw = small_pool(&pg, 2, 100).await;
    let a = connect(&gw).await;
    a.batch_execute("SET ROLE tenant").await.unwrap();
    assert_eq!(on_another_server(&gw, &a, "role").await, "tenant");
    a.batch_execute("SET SESSION AUTHORIZATION DEFAULT").await.unwrap();
    assert_eq!(show(&a, "role").await, "none");
    assert_eq!(on_another_server(&gw, &a, "role").await, "none");
    for _ in 0..3 {
        let user: String = a.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
        assert_eq!(user, "postgres");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_settings_a_server_refuses_runs_nothing_under_anothers() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let first = connect(&gw).await;
    first.batch_execute("SET myapp.tenant_id = 'secret-1'").await.unwrap();
    // The pool's one server now holds the first client's tenant.
    let info = conninfo(&gw, "postgres", "postgres");
    // Refused at login, as PostgreSQL refuses it (a pool checking connections as it opens them
    // kept ones that failed at their first statement), and with PostgreSQL's SQLSTATE.
    for options in ["-c nosuch_parameter=1", "-c work_mem=zzz"] {
        let err = try_connect(&format!("{info} options='{options}'")).await.expect_err("logged in");
        let message = format!("{err:?}");
        let code = if options.contains("nosuch") { "42704" } else { "22023" };
        assert_eq!(sqlstate(&err).as_deref(), Some(code), "{message}");
        assert!(message.contains(options[3..].split('=').next().unwrap()), "{message}");
    }
    // A malformed options string is refused as PostgreSQL refuses it, not dropped unseen.
    for options in ["foo", "-c work_mem"] {
        let err = try_connect(&format!("{info} options='{options}'")).await.expect_err(options);
        assert_eq!(sqlstate(&err).as_deref(), Some("42601"), "{err:?}");
    }
    // Taken once, a set of settings is not tried again: the login still works.
    for _ in 0..2 {
        let ok = try_connect(&format!("{info} options='-c work_mem=8MB'")).await.unwrap();
        assert_eq!(show(&ok, "work_mem").await, "8MB");
    }
    // That server was closed: the next client starts clean, and the first still has its tenant.
    let next = connect(&gw).await;
    let tenant: Option<String> =
        next.query_one("SELECT current_setting('myapp.tenant_id', true)", &[]).await.unwrap().get(0);
    assert_eq!(tenant.as_deref().unwrap_or(""), "");
    assert_eq!(show(&first, "myapp.tenant_id").await, "secret-1");
    gw.shutdown().await;
}

/// A SQL PREPARE of a name the client has prepared already fails as in PostgreSQL (42P05) and
/// keeps the first statement, on whichever server the client lands. PREPARE is not
/// transactional: one made in a transaction that rolled back is there, and a second one fails
/// and aborts the transaction it runs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_prepare_of_a_name_in_use_fails_as_in_postgresql() {
    let pg = Cluster::start();
    for size in [1, 2] {
        let gw = small_pool(&pg, size, 100).await;
        let c = connect(&gw).await;
        // With two servers, two other clients take turns holding the one `c` used last (the only
        // idle one), so `c` moves at each turn.
        let holders = [connect(&gw).await, connect(&gw).await];
        let turn = std::cell::Cell::new(0);
        let (turn, holders) = (&turn, &holders);
        let move_c = || async move {
            if size > 1 {
                let t = turn.replace(turn.get() + 1);
                holders[t % 2].batch_execute("BEGIN; SELECT 1").await.unwrap();
                holders[(t + 1) % 2].batch_execute("COMMIT").await.unwrap();
            }
        };
        let already = |e: tokio_postgres::Error, name: &str| {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
            assert_eq!(db.code().code(), "42P05", "{e}");
            assert_eq!(db.message(), format!("prepared statement \"{name}\" already exists"));
        };
        let pid = simple(&c, "SELECT pg_backend_pid()").await;
        move_c().await;
        // Two servers may be idle (the holders' logins opened them): the turns go on until `c`
        // has moved, which they make sure of from then on.
        let mut stayed = simple(&c, "SELECT pg_backend_pid()").await == pid;
        for _ in 0..4 {
            if !stayed || size == 1 {
                break;
            }
            move_c().await;
            stayed = simple(&c, "SELECT pg_backend_pid()").await == pid;
        }
        assert_eq!(stayed, size == 1, "moved");
        c.batch_execute("PREPARE p5 AS SELECT 1").await.unwrap();
        move_c().await;
        already(c.batch_execute("PREPARE p5 AS SELECT 2").await.unwrap_err(), "p5");
        move_c().await;
        assert_eq!(simple(&c, "EXECUTE p5").await, "1", "pool size {size}");

        c.batch_execute("BEGIN").await.unwrap();
        c.batch_execute("PREPARE p3 AS SELECT 3").await.unwrap();
        c.batch_execute("ROLLBACK").await.unwrap();
        move_c().await;
        assert_eq!(simple(&c, "EXECUTE p3").await, "3", "pool size {size}");
        move_c().await;
        c.batch_execute("BEGIN").await.unwrap();
        already(c.batch_execute("PREPARE p3 AS SELECT 33").await.unwrap_err(), "p3");
        let aborted = c.batch_execute("SELECT 1").await.unwrap_err();
        assert_eq!(sqlstate(&aborted).as_deref(), Some("25P02"), "{aborted}");
        c.batch_execute("ROLLBACK").await.unwrap();
        move_c().await;
        assert_eq!(simple(&c, "EXECUTE p3").await, "3", "pool size {size}");
        // The same name may be prepared again once deallocated.
        c.batch_execute("DEALLOCATE p5").await.unwrap();
        move_c().await;
        c.batch_execute("PREPARE p5 AS SELECT 5").await.unwrap();
        assert_eq!(simple(&c, "EXECUTE p5").await, "5", "pool size {size}");
        // Shutdown waits for transactions in progress.
        for h in holders {
            h.batch_execute("COMMIT").await.unwrap();
        }
        gw.shutdown().await;
    }
}

/// Raw protocol: a client whose client_encoding is LATIN1.
async fn latin1_client(gw: &pgpilot_gateway::Gateway) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let params = [("user", "postgres"), ("database", "postgres"), ("client_encoding", "LATIN1")];
    let mut s = tokio::net::TcpStream::connect(addr(gw)).await.unwrap();
    s.write_all(&startup_packet_with(3 << 16, &params)).await.unwrap();
    read_until_ready(&mut s).await;
    s
}

/// Raw protocol: runs `sql` (bytes in the client's encoding) and returns the first column of its
/// first row as the server sent it; panics on an error.
async fn raw_value(s: &mut tokio::net::TcpStream, sql: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut body = sql.to_vec();
    body.push(0);
    s.write_all(&message(b'Q', &body)).await.unwrap();
    let reply = read_until_ready(s).await;
    let mut value = Vec::new();
    for (tag, body) in backend_messages(&reply) {
        assert_ne!(tag, b'E', "{:?} failed: {}", String::from_utf8_lossy(sql), String::from_utf8_lossy(body));
        if tag == b'D' && value.is_empty() {
            let len = i32::from_be_bytes(body[2..6].try_into().unwrap());
            value = body[6..6 + len.max(0) as usize].to_vec();
        }
    }
    value
}

/// Statements of a LATIN1 client are not UTF-8 once they hold a non-ASCII byte; they are still
/// read: SET ROLE is tracked (it follows its client and never reaches another), a setting whose
/// value pgpilot cannot replay as written keeps its client on its server, and so does a
/// temporary table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_that_are_not_utf8_still_keep_session_state_with_its_client() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE ROLE tenant_b");
    // One server: the next client gets the LATIN1 client's server.
    let gw = small_pool(&pg, 1, 100).await;
    let mut l = latin1_client(&gw).await;
    raw_value(&mut l, b"SET ROLE tenant_b -- f\xfcr").await;
    let other = connect(&gw).await;
    assert_eq!(simple(&other, "SELECT current_user").await, "postgres", "the role leaked");
    assert_eq!(raw_value(&mut l, b"SELECT current_user").await, b"tenant_b", "the role was lost");
    drop(l);
    gw.shutdown().await;

    let gw = small_pool(&pg, 2, 100).await;
    let mut l = latin1_client(&gw).await;
    raw_value(&mut l, b"SET myapp.tenant_id = 'Z\xfcrich'").await;
    // LATIN1 bytes that happen to be valid UTF-8 ('\xc3\xa9' is "Ã©", not "é") pin too: read as
    // UTF-8 and replayed, the value would change.
    let mut w = latin1_client(&gw).await;
    raw_value(&mut w, b"SET myapp.city = '\xc3\xa9'").await;
    assert_eq!(raw_value(&mut w, b"SELECT current_setting('myapp.city')").await, b"\xc3\xa9");
    let clients = psql(&gw, "pgpilot", "SHOW CLIENTS").unwrap();
    assert_eq!(clients.matches("undecoded_text").count(), 2, "{clients}");
    drop(w);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut t = latin1_client(&gw).await;
    raw_value(&mut t, b"CREATE TEMP TABLE tt(a text) -- \xe9").await;
    let clients = psql(&gw, "pgpilot", "SHOW CLIENTS").unwrap();
    assert_eq!(clients.matches("undecoded_text").count(), 1, "{clients}");
    assert_eq!(clients.matches("temporary_table").count(), 1, "{clients}");
    // Both are pinned, each to one of the two servers: nobody else gets those.
    assert_eq!(raw_value(&mut l, b"SELECT current_setting('myapp.tenant_id')").await, b"Z\xfcrich");
    assert_eq!(raw_value(&mut t, b"SELECT count(*) FROM tt").await, b"0");
    drop((l, t));
    // Their servers were reset when they left: nothing reaches the next clients.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = connect(&gw).await;
    let b = connect(&gw).await;
    a.batch_execute("BEGIN").await.unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    for c in [&a, &b] {
        let row = c
            .query_one(
                "SELECT coalesce(current_setting('myapp.tenant_id', true), ''), to_regclass('tt') IS NULL",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "", "the setting leaked");
        assert!(row.get::<_, bool>(1), "the temporary table leaked");
    }
    drop((a, b));
    gw.shutdown().await;
}

/// Named statements are the client's, kept by pgpilot: a Parse under a name in use fails with
/// 42P05 and keeps the first statement (aborting a transaction it runs in), and a Close the
/// server skips after an error closes nothing, as in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_of_a_name_in_use_and_a_skipped_close_leave_the_statement_as_postgresql_does() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    let mut c = raw_login(addr(&gw)).await;
    let sync = message(b'S', &[]);
    let send = async |c: &mut tokio::net::TcpStream, parts: &[Vec<u8>]| {
        c.write_all(&parts.concat()).await.unwrap();
        read_until_tag(c, b'Z').await
    };
    send(&mut c, &[parse("keep", "SELECT 'old'"), sync.clone()]).await;
    let again = send(&mut c, &[parse("keep", "SELECT 'new'"), sync.clone()]).await;
    assert_eq!(first_value_or_error(&again), "error 42P05");
    assert!(String::from_utf8_lossy(&again).contains("prepared statement \"keep\" already exists"));
    let run = send(&mut c, &[bind_execute("keep"), sync.clone()]).await;
    assert_eq!(first_value_or_error(&run), "old");
    // In a transaction the failed Parse aborts it.
    send(&mut c, &[message(b'Q', b"BEGIN\0")]).await;
    let failed = send(&mut c, &[parse("keep", "SELECT 'new'"), sync.clone()]).await;
    assert_eq!(first_value_or_error(&failed), "error 42P05");
    let after = send(&mut c, &[message(b'Q', b"SELECT 1\0")]).await;
    assert_eq!(first_value_or_error(&after), "error 25P02");
    send(&mut c, &[message(b'Q', b"ROLLBACK\0")]).await;
    // A Close after an error in the same batch is skipped by the server: the statement stays.
    let close = message(b'C', b"Skeep\0");
    let skipped = send(&mut c, &[parse("", "SELECT 1/0"), bind_execute(""), close, sync.clone()]).await;
    assert_eq!(first_value_or_error(&skipped), "error 22012");
    let run = send(&mut c, &[bind_execute("keep"), sync.clone()]).await;
    assert_eq!(first_value_or_error(&run), "old");
    gw.shutdown().await;
}

/// A SQL PREPARE a departed client left on a server does not collide with another client's
/// PREPARE of the name sent through Parse/Bind/Execute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_clients_sql_prepare_leaves_the_name_free_for_the_next() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let a = connect(&gw).await;
    a.batch_execute("PREPARE leak_x AS SELECT 1").await.unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = connect(&gw).await;
    let prepare = b.prepare("PREPARE leak_x AS SELECT 2").await.unwrap();
    b.execute(&prepare, &[]).await.expect("the departed client's statement was in the way");
    assert_eq!(first_value(&b.simple_query("EXECUTE leak_x").await.unwrap()), "2");
    gw.shutdown().await;
}

/// A client that sends Terminate right behind its last transaction (one whose settings pgpilot
/// then reads back: a SET inside it) leaves its server to the pool, not closed: the server
/// finishes the request, as PostgreSQL does before it ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_terminating_behind_its_last_request_leaves_its_server_to_the_pool() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let pid = async || -> i32 {
        let c = connect(&gw).await;
        c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
    };
    let before = pid().await;
    for _ in 0..3 {
        let mut raw = raw_login(addr(&gw)).await;
        let mut request = message(b'Q', b"BEGIN; SET myapp.x = 'v'; COMMIT\0");
        request.extend(message(b'X', &[]));
        raw.write_all(&request).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pid().await, before, "the server was closed instead of going back to the pool");
    gw.shutdown().await;
}

/// A Bind or Describe of a name the client made with SQL PREPARE runs the client's own
/// statement, never another client's of the same name left on the server; a client that has no
/// statement of that name gets "does not exist", at the start of a batch and inside one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_bind_of_a_sql_prepared_name_runs_the_clients_own_statement() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let mut a = raw_login(addr(&gw)).await;
    let mut b = raw_login(addr(&gw)).await;
    let mut c = raw_login(addr(&gw)).await;
    let rows = |bytes: &[u8]| -> Vec<String> {
        backend_messages(bytes)
            .into_iter()
            .filter_map(|(tag, body)| match tag {
                b'D' => Some(String::from_utf8_lossy(&body[6..]).into_owned()),
                b'E' => body
                    .split(|&b| b == 0)
                    .find_map(|field| field.strip_prefix(b"C"))
                    .map(|code| format!("error {}", String::from_utf8_lossy(code))),
                _ => None,
            })
            .collect()
    };
    let ask = async |s: &mut tokio::net::TcpStream, bytes: Vec<u8>| {
        s.write_all(&bytes).await.unwrap();
        rows(&read_until_tag(s, b'Z').await)
    };
    let sync = message(b'S', &[]);
    ask(&mut a, query_message("PREPARE s AS SELECT 'from A'::text")).await;
    ask(&mut b, query_message("PREPARE s AS SELECT 'from B'::text")).await;
    assert_eq!(ask(&mut b, query_message("EXECUTE s")).await, ["from B"]);
    // A's statement is the server's now (one server for all).
    assert_eq!(ask(&mut a, query_message("EXECUTE s")).await, ["from A"]);
    let bind_s = [bind_execute("s"), sync.clone()].concat();
    assert_eq!(ask(&mut b, bind_s.clone()).await, ["from B"], "B's Bind ran A's statement");
    assert_eq!(ask(&mut a, bind_s.clone()).await, ["from A"], "A's Bind ran B's statement");
    let mut describe = message(b'D', b"Ss\0");
    describe.extend_from_slice(&sync);
    b.write_all(&describe).await.unwrap();
    let described = read_until_tag(&mut b, b'Z').await;
    assert!(backend_messages(&described).iter().any(|(t, _)| *t == b'T'), "B's statement was not described");
    assert_eq!(ask(&mut b, bind_s.clone()).await, ["from B"]);
    // C never prepared s: neither at the start of a batch nor after a statement of its own.
    assert_eq!(ask(&mut c, bind_s.clone()).await, ["error 26000"]);
    ask(&mut a, query_message("EXECUTE s")).await;
    let mid_batch =
        [parse("", "SELECT 'from C'"), bind_execute(""), bind_execute("s"), sync.clone()].concat();
    assert_eq!(ask(&mut c, mid_batch).await, ["from C", "error 26000"], "C ran another's statement");
    assert_eq!(ask(&mut a, query_message("EXECUTE s")).await, ["from A"]);
    // One namespace, as in PostgreSQL: a protocol Parse of the name fails, a protocol Close ends it.
    let parse_s = [parse("s", "SELECT 'parsed'"), bind_execute("s"), sync.clone()].concat();
    assert_eq!(ask(&mut a, parse_s).await, ["error 42P05"]);
    assert_eq!(ask(&mut a, [message(b'C', b"Ss\0"), sync.clone()].concat()).await, Vec::<String>::new());
    assert_eq!(ask(&mut a, query_message("PREPARE s AS SELECT 'A again'::text")).await, Vec::<String>::new());
    assert_eq!(ask(&mut a, query_message("EXECUTE s")).await, ["A again"]);
    assert_eq!(ask(&mut b, query_message("EXECUTE s")).await, ["from B"]);
    gw.shutdown().await;
}

/// asyncpg's prepare(): Parse, Describe and Flush, with the Sync only when the statement runs.
/// The server is not held meanwhile: with a pool of one, another client's query runs while the
/// statement waits, and the statement then runs on whichever server is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_without_sync_does_not_hold_its_server() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let mut a = raw_login(addr(&gw)).await;
    let prepare = [parse("s1", "SELECT 41 + 1"), message(b'D', b"Ss1\0"), message(b'H', &[])].concat();
    a.write_all(&prepare).await.unwrap();
    let described = read_until_tag(&mut a, b'T').await;
    let tags: Vec<u8> = backend_messages(&described).iter().map(|(t, _)| *t).filter(|t| *t != b'S').collect();
    assert_eq!(tags, [b'1', b't', b'T']);
    let b = connect(&gw).await;
    let other = tokio::time::timeout(Duration::from_secs(5), b.simple_query("SELECT 1")).await;
    assert!(other.is_ok_and(|r| r.is_ok()), "the only server stayed with the prepared, unsynced statement");
    // The client's own Sync ends the batch it began: answered, and the statement runs after it.
    a.write_all(&message(b'S', &[])).await.unwrap();
    let ready = read_until_ready(&mut a).await;
    assert_eq!(backend_messages(&ready).iter().map(|(t, _)| *t).collect::<Vec<_>>(), [b'Z']);
    a.write_all(&[bind_execute("s1"), message(b'S', &[])].concat()).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut a).await), "42");
    a.write_all(&[bind_execute("s1"), message(b'S', &[])].concat()).await.unwrap();
    assert_eq!(first_value_or_error(&read_until_ready(&mut a).await), "42");
    gw.shutdown().await;
}

/// pgJDBC binds with a format per column of the row type it learned. After DDL added a column,
/// such a Bind on a server copy pgpilot prepares afresh (another server, or one evicted) is a
/// protocol violation (08P01) to PostgreSQL; the client must get 0A000, as it would from its own
/// connection, since that is the error drivers prepare again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_of_the_old_row_type_on_a_fresh_copy_fails_as_a_changed_result_type() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE reshape(id int, v int); INSERT INTO reshape VALUES (1, 5)");
    // One server keeping one statement: another client's statement evicts the first one's copy.
    let gw = small_pool(&pg, 1, 1).await;
    let text = b"SELECT * FROM reshape";
    let bind_execute = |formats: u16| {
        let mut out = bytes::BytesMut::new();
        let mut rest = vec![0, 0, 0, 0];
        rest.extend_from_slice(&formats.to_be_bytes());
        rest.extend(std::iter::repeat_n([0u8, 0], formats as usize).flatten());
        pgpilot_wire::frontend::bind(&mut out, b"", b"r1", &rest);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        pgpilot_wire::frontend::sync(&mut out);
        out
    };
    let mut raw = raw_login(addr(&gw)).await;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::parse(&mut out, b"r1", text, &[0, 0]);
    pgpilot_wire::frontend::target(&mut out, b'D', b'S', b"r1");
    pgpilot_wire::frontend::sync(&mut out);
    out.extend_from_slice(&bind_execute(2));
    raw.write_all(&out).await.unwrap();
    let mut got = read_until_ready(&mut raw).await;
    while backend_messages(&got).iter().filter(|m| m.0 == b'Z').count() < 2 {
        got.extend(read_until_any(&mut raw).await);
    }
    let tags: Vec<u8> = backend_messages(&got).iter().map(|m| m.0).filter(|t| *t != b'S').collect();
    assert_eq!(tags, b"1tTZ2DCZ".to_vec(), "prepared and run");

    let other = connect(&gw).await;
    other.query("SELECT $1::int + 1", &[&1i32]).await.unwrap();
    pg.psql("postgres", "ALTER TABLE reshape ADD COLUMN extra int DEFAULT 7");
    raw.write_all(&bind_execute(2)).await.unwrap();
    let got = read_until_ready(&mut raw).await;
    let msgs = backend_messages(&got);
    let error = msgs.iter().find(|m| m.0 == b'E').unwrap_or_else(|| panic!("no error: {msgs:?}"));
    assert!(String::from_utf8_lossy(error.1).contains("C0A000"), "{:?}", String::from_utf8_lossy(error.1));
    // Prepared again by the client, the statement has its new row type.
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::target(&mut out, b'C', b'S', b"r1");
    pgpilot_wire::frontend::parse(&mut out, b"r1", text, &[0, 0]);
    out.extend_from_slice(&bind_execute(3));
    raw.write_all(&out).await.unwrap();
    let got = read_until_ready(&mut raw).await;
    let tags: Vec<u8> = backend_messages(&got).iter().map(|m| m.0).filter(|t| *t != b'S').collect();
    assert_eq!(tags, b"312DCZ".to_vec(), "{:?}", String::from_utf8_lossy(&got));
    gw.shutdown().await;
}

/// The same inside a transaction, begun by a request of its own (asyncpg) or by an unnamed BEGIN
/// in the request that binds (pgJDBC): the fresh copy was bound unchecked, and its rows reached
/// the client with values under the wrong columns, in every transaction after the DDL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_transaction_a_fresh_copy_with_another_row_type_fails_as_a_changed_result_type() {
    use pgpilot_wire::frontend;
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE retype_tx(id int, c_1 int, c_2 int); INSERT INTO retype_tx VALUES (1, 2, 3)",
    );
    // One server keeping one statement: another client's statement evicts the first one's copy.
    let gw = small_pool(&pg, 1, 1).await;
    let other = connect(&gw).await;
    let text = b"SELECT * FROM retype_tx";
    let mut raw = raw_login(addr(&gw)).await;
    let mut prepare = bytes::BytesMut::new();
    frontend::parse(&mut prepare, b"r1", text, &[0, 0]);
    frontend::target(&mut prepare, b'D', b'S', b"r1");
    frontend::sync(&mut prepare);
    raw.write_all(&prepare).await.unwrap();
    until_ready_for_query(&mut raw, 1).await;
    let ddls = [
        "ALTER TABLE retype_tx DROP COLUMN c_1, ADD COLUMN c_3 int",
        "ALTER TABLE retype_tx ALTER COLUMN c_2 TYPE bigint",
    ];
    for (round, ddl) in ddls.into_iter().enumerate() {
        other.query(&format!("SELECT $1::int + {round}"), &[&1i32]).await.unwrap();
        pg.psql("postgres", ddl);
        let mut out = bytes::BytesMut::new();
        if round == 0 {
            frontend::query(&mut out, "BEGIN");
            raw.write_all(&out).await.unwrap();
            until_ready_for_query(&mut raw, 1).await;
            out.clear();
        } else {
            frontend::parse(&mut out, b"", b"BEGIN", &[0, 0]);
            frontend::bind(&mut out, b"", b"", &[0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        }
        frontend::bind(&mut out, b"", b"r1", &[0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        frontend::sync(&mut out);
        raw.write_all(&out).await.unwrap();
        let got = until_ready_for_query(&mut raw, 1).await;
        let msgs = backend_messages(&got);
        assert!(!msgs.iter().any(|m| m.0 == b'D'), "rows after {ddl}: {:?}", String::from_utf8_lossy(&got));
        let error =
            msgs.iter().find(|m| m.0 == b'E').unwrap_or_else(|| panic!("no error after {ddl}: {msgs:?}"));
        assert!(
            String::from_utf8_lossy(error.1).contains("C0A000"),
            "{:?}",
            String::from_utf8_lossy(error.1)
        );
        assert_eq!(msgs.last().map(|m| m.1), Some(&b"E"[..]), "the transaction failed, as in PostgreSQL");
        let mut out = bytes::BytesMut::new();
        frontend::query(&mut out, "ROLLBACK");
        frontend::target(&mut out, b'C', b'S', b"r1");
        out.extend_from_slice(&prepare);
        raw.write_all(&out).await.unwrap();
        until_ready_for_query(&mut raw, 2).await;
    }
    // Prepared and described again, it runs in a transaction with its new row type.
    let mut out = bytes::BytesMut::new();
    frontend::query(&mut out, "BEGIN");
    frontend::bind(&mut out, b"", b"r1", &[0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
    frontend::sync(&mut out);
    frontend::query(&mut out, "COMMIT");
    raw.write_all(&out).await.unwrap();
    let got = until_ready_for_query(&mut raw, 3).await;
    let msgs = backend_messages(&got);
    assert_eq!(msgs.iter().filter(|m| m.0 == b'D').count(), 1, "{:?}", String::from_utf8_lossy(&got));
    assert!(!msgs.iter().any(|m| m.0 == b'E'), "{:?}", String::from_utf8_lossy(&got));
    gw.shutdown().await;
}

/// pgJDBC never describes its statement: it describes the portal of its first execution and
/// decodes every later result with that. A fresh copy with another row type (after DDL) must fail
/// its Bind there too; its rows came back under the old description, values under the wrong
/// columns, in transactions and outside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_type_learned_from_a_portal_description_is_checked_too() {
    use pgpilot_wire::frontend;
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE retype_portal(id int, c_1 int, c_2 int); INSERT INTO retype_portal VALUES (1, 2, 3)",
    );
    // One server keeping one statement: another client's statement evicts the first one's copy.
    let gw = small_pool(&pg, 1, 1).await;
    let other = connect(&gw).await;
    let mut raw = raw_login(addr(&gw)).await;
    // The first execution describes the portal; later ones do not (the fields are cached).
    let run = |out: &mut bytes::BytesMut, first: bool| {
        if first {
            frontend::parse(out, b"S_1", b"SELECT * FROM retype_portal", &[0, 0]);
        }
        frontend::bind(out, b"", b"S_1", &[0, 0, 0, 0, 0, 0]);
        if first {
            frontend::target(out, b'D', b'P', b"");
        }
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        frontend::sync(out);
    };
    let mut out = bytes::BytesMut::new();
    run(&mut out, true);
    raw.write_all(&out).await.unwrap();
    until_ready_for_query(&mut raw, 1).await;
    let ddls = [
        "ALTER TABLE retype_portal DROP COLUMN c_1, ADD COLUMN c_3 int",
        "ALTER TABLE retype_portal ALTER COLUMN c_2 TYPE bigint",
    ];
    for (round, ddl) in ddls.into_iter().enumerate() {
        other.query(&format!("SELECT $1::int + {round}"), &[&1i32]).await.unwrap();
        pg.psql("postgres", ddl);
        let in_transaction = round == 1;
        let mut out = bytes::BytesMut::new();
        if in_transaction {
            frontend::query(&mut out, "BEGIN");
        }
        run(&mut out, false);
        raw.write_all(&out).await.unwrap();
        let got = until_ready_for_query(&mut raw, 1 + usize::from(in_transaction)).await;
        let msgs = backend_messages(&got);
        assert!(!msgs.iter().any(|m| m.0 == b'D'), "rows after {ddl}: {:?}", String::from_utf8_lossy(&got));
        let error =
            msgs.iter().find(|m| m.0 == b'E').unwrap_or_else(|| panic!("no error after {ddl}: {msgs:?}"));
        assert!(
            String::from_utf8_lossy(error.1).contains("C0A000"),
            "{:?}",
            String::from_utf8_lossy(error.1)
        );
        if in_transaction {
            // The transaction failed: another Bind gets PostgreSQL's 25P02, not 0A000 again.
            let mut out = bytes::BytesMut::new();
            run(&mut out, false);
            raw.write_all(&out).await.unwrap();
            let got = until_ready_for_query(&mut raw, 1).await;
            assert!(String::from_utf8_lossy(&got).contains("C25P02"), "{:?}", String::from_utf8_lossy(&got));
        }
        // The driver prepares it again (pgJDBC does, on 0A000), and reads the new rows.
        let mut out = bytes::BytesMut::new();
        if in_transaction {
            frontend::query(&mut out, "ROLLBACK");
        }
        frontend::target(&mut out, b'C', b'S', b"S_1");
        run(&mut out, true);
        raw.write_all(&out).await.unwrap();
        let got = until_ready_for_query(&mut raw, 1 + usize::from(in_transaction)).await;
        let rows = data_rows(&got);
        assert_eq!(rows, 1, "after {ddl}: {:?}", String::from_utf8_lossy(&got));
    }
    gw.shutdown().await;
}

/// DDL inside a transaction that rolls back changes nothing for other clients: PostgreSQL runs
/// their statements as before. The 0A000 one client met inside it made every other client's
/// statement fail, once or for good (the row type read inside the transaction was kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_rolled_back_leaves_other_clients_statements_working() {
    use pgpilot_wire::frontend;
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE undone(id int, c int); INSERT INTO undone VALUES (1, 2)");
    let gw = small_pool(&pg, 1, 5).await;
    let text = b"SELECT * FROM undone";
    let prepare = {
        let mut out = bytes::BytesMut::new();
        frontend::parse(&mut out, b"u1", text, &[0, 0]);
        frontend::target(&mut out, b'D', b'S', b"u1");
        frontend::sync(&mut out);
        out
    };
    let run = {
        let mut out = bytes::BytesMut::new();
        frontend::bind(&mut out, b"", b"u1", &[0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        frontend::sync(&mut out);
        out
    };
    let (mut a, mut b) = (raw_login(addr(&gw)).await, raw_login(addr(&gw)).await);
    for c in [&mut a, &mut b] {
        c.write_all(&prepare).await.unwrap();
        until_ready_for_query(c, 1).await;
    }
    let mut ddl = bytes::BytesMut::new();
    frontend::query(&mut ddl, "BEGIN; ALTER TABLE undone ALTER COLUMN c TYPE bigint");
    ddl.extend_from_slice(&run);
    a.write_all(&ddl).await.unwrap();
    let got = until_ready_for_query(&mut a, 2).await;
    assert!(String::from_utf8_lossy(&got).contains("C0A000"), "{:?}", String::from_utf8_lossy(&got));
    let mut rollback = bytes::BytesMut::new();
    frontend::query(&mut rollback, "ROLLBACK");
    a.write_all(&rollback).await.unwrap();
    until_ready_for_query(&mut a, 1).await;
    for round in 0..3 {
        b.write_all(&run).await.unwrap();
        let got = until_ready_for_query(&mut b, 1).await;
        let rows = data_rows(&got);
        assert_eq!(rows, 1, "round {round}: {:?}", String::from_utf8_lossy(&got));
    }
    gw.shutdown().await;
}

/// psycopg 3.0/3.1 evicts statements from its cache with `DEALLOCATE name` sent with the extended
/// protocol (by default after 100 statements, in pipeline mode always): it failed with 26000 and
/// the statement lived on (inside a transaction, the transaction failed too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_sent_with_the_extended_protocol_drops_the_statement() {
    use pgpilot_wire::frontend;
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 10).await;
    let mut raw = raw_login(addr(&gw)).await;
    let run = |statement: &[u8]| {
        let mut out = bytes::BytesMut::new();
        frontend::bind(&mut out, b"", statement, &[0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        out
    };
    let deallocate = |sql: &str| {
        let mut out = bytes::BytesMut::new();
        frontend::parse(&mut out, b"", sql.as_bytes(), &[0, 0]);
        frontend::bind(&mut out, b"", b"", &[0, 0, 0, 0, 0, 0]);
        frontend::target(&mut out, b'D', b'P', b"");
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        out
    };
    let tags = |got: &[u8]| backend_messages(got).iter().map(|m| m.0).collect::<Vec<u8>>();
    for (in_transaction, sql) in [(false, "DEALLOCATE _pg3_0"), (true, "DEALLOCATE PREPARE \"_pg3_0\"")] {
        let mut out = bytes::BytesMut::new();
        frontend::parse(&mut out, b"_pg3_0", b"SELECT 1", &[0, 0]);
        out.extend_from_slice(&run(b"_pg3_0"));
        frontend::sync(&mut out);
        if in_transaction {
            frontend::query(&mut out, "BEGIN");
        }
        out.extend_from_slice(&deallocate(sql));
        frontend::sync(&mut out);
        raw.write_all(&out).await.unwrap();
        let got = until_ready_for_query(&mut raw, 2 + usize::from(in_transaction)).await;
        let answer = tags(&got);
        assert!(answer.ends_with(b"12nCZ"), "{sql}: {:?}", backend_messages(&got));
        assert!(String::from_utf8_lossy(&got).contains("DEALLOCATE\0"), "{sql}");
        // Gone, as in PostgreSQL: running it fails, and the transaction with it.
        let mut out = run(b"_pg3_0");
        frontend::sync(&mut out);
        raw.write_all(&out).await.unwrap();
        let got = until_ready_for_query(&mut raw, 1).await;
        assert!(String::from_utf8_lossy(&got).contains("C26000"), "{:?}", backend_messages(&got));
        if in_transaction {
            let mut out = bytes::BytesMut::new();
            frontend::query(&mut out, "ROLLBACK");
            raw.write_all(&out).await.unwrap();
            until_ready_for_query(&mut raw, 1).await;
        }
    }
    // A name the client never prepared: the server's answer, as PostgreSQL's.
    let mut out = deallocate("DEALLOCATE nosuch");
    frontend::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    let got = until_ready_for_query(&mut raw, 1).await;
    assert!(String::from_utf8_lossy(&got).contains("C26000"), "{:?}", backend_messages(&got));
    gw.shutdown().await;
}

/// Raw protocol: how many DataRows the bytes hold.
fn data_rows(got: &[u8]) -> usize {
    backend_messages(got).into_iter().filter(|m| m.0 == b'D').count()
}

/// Raw protocol: reads until `n` ReadyForQuery messages came, whatever their status.
async fn until_ready_for_query(s: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while backend_messages(&got).iter().filter(|m| m.0 == b'Z').count() < n {
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(read > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..read]);
    }
    got
}

/// A driver that described its statement once (lib/pq, sqlx, pgx) decodes every later result with
/// that row type. After DDL changed it, PostgreSQL refuses the client's next Bind with 0A000; a
/// copy pgpilot prepares afresh on another server must not run under the old description instead
/// (lib/pq read an int8 column as 0, sqlx panicked on a dropped column). A fresh copy whose row
/// type did not change runs as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_copy_of_a_described_statement_with_another_row_type_fails_as_a_changed_result_type() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE retype(a int, b text); INSERT INTO retype VALUES (1, 'x')");
    // One server keeping one statement: another client's statement evicts the first one's copy.
    let gw = small_pool(&pg, 1, 1).await;
    let other = connect(&gw).await;
    let text = b"SELECT * FROM retype";
    let mut bind_execute = bytes::BytesMut::new();
    pgpilot_wire::frontend::bind(&mut bind_execute, b"", b"r1", &[0, 0, 0, 0, 0, 0]);
    bind_execute.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
    pgpilot_wire::frontend::sync(&mut bind_execute);
    let mut raw = raw_login(addr(&gw)).await;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::parse(&mut out, b"r1", text, &[0, 0]);
    pgpilot_wire::frontend::target(&mut out, b'D', b'S', b"r1");
    pgpilot_wire::frontend::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    read_until_ready(&mut raw).await;
    let tags_of = |got: &[u8]| -> Vec<u8> {
        backend_messages(got).iter().map(|m| m.0).filter(|t| *t != b'S').collect()
    };
    for (round, ddl) in
        ["", "ALTER TABLE retype ALTER COLUMN a TYPE bigint", "ALTER TABLE retype DROP COLUMN b"]
            .into_iter()
            .enumerate()
    {
        other.query(&format!("SELECT $1::int + {round}"), &[&1i32]).await.unwrap();
        if !ddl.is_empty() {
            pg.psql("postgres", ddl);
        }
        raw.write_all(&bind_execute).await.unwrap();
        let got = read_until_ready(&mut raw).await;
        if ddl.is_empty() {
            assert_eq!(tags_of(&got), b"2DCZ".to_vec(), "unchanged: {:?}", String::from_utf8_lossy(&got));
            continue;
        }
        let msgs = backend_messages(&got);
        let error =
            msgs.iter().find(|m| m.0 == b'E').unwrap_or_else(|| panic!("no error after {ddl}: {msgs:?}"));
        assert!(
            String::from_utf8_lossy(error.1).contains("C0A000"),
            "{:?}",
            String::from_utf8_lossy(error.1)
        );
        // Prepared and described again by the client, the statement runs with its new row type.
        let mut out = bytes::BytesMut::new();
        pgpilot_wire::frontend::target(&mut out, b'C', b'S', b"r1");
        pgpilot_wire::frontend::parse(&mut out, b"r1", text, &[0, 0]);
        pgpilot_wire::frontend::target(&mut out, b'D', b'S', b"r1");
        out.extend_from_slice(&bind_execute);
        raw.write_all(&out).await.unwrap();
        let got = read_until_ready(&mut raw).await;
        assert_eq!(tags_of(&got), b"31tT2DCZ".to_vec(), "after {ddl}: {:?}", String::from_utf8_lossy(&got));
    }
    // A copy that no longer prepares: the client gets the server's error, and goes on.
    other.query("SELECT $1::int + 9", &[&1i32]).await.unwrap();
    pg.psql("postgres", "DROP TABLE retype");
    raw.write_all(&bind_execute).await.unwrap();
    let got = read_until_ready(&mut raw).await;
    let msgs = backend_messages(&got);
    let error = msgs.iter().find(|m| m.0 == b'E').unwrap_or_else(|| panic!("no error: {msgs:?}"));
    assert!(String::from_utf8_lossy(error.1).contains("C42P01"), "{:?}", String::from_utf8_lossy(error.1));
    raw.write_all(&query_message("SELECT 1")).await.unwrap();
    assert_eq!(tags_of(&read_until_ready(&mut raw).await), b"TDCZ".to_vec());
    gw.shutdown().await;
}

/// pgx binds with a format per result column and describes the portal. After DDL changed the
/// statement's row type, that request is not run again unseen (its formats are for the old
/// columns: 08P01, or formats on the wrong columns): it gets 0A000 as from PostgreSQL, each time
/// until the client prepares again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_with_a_format_per_column_after_ddl_fails_as_a_changed_result_type() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE per_column(a int, b text); INSERT INTO per_column VALUES (1, 'x')");
    let gw = small_pool(&pg, 1, 100).await;
    let mut raw = raw_login(addr(&gw)).await;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::parse(&mut out, b"x1", b"SELECT * FROM per_column", &[0, 0]);
    pgpilot_wire::frontend::target(&mut out, b'D', b'S', b"x1");
    pgpilot_wire::frontend::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    read_until_ready(&mut raw).await;
    let mut run = bytes::BytesMut::new();
    // No parameters, two result formats (binary int, text), then Describe portal, Execute, Sync.
    pgpilot_wire::frontend::bind(&mut run, b"", b"x1", &[0, 0, 0, 0, 0, 2, 0, 1, 0, 0]);
    pgpilot_wire::frontend::target(&mut run, b'D', b'P', b"");
    run.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
    pgpilot_wire::frontend::sync(&mut run);
    raw.write_all(&run).await.unwrap();
    let tags = message_tags(&read_until_ready(&mut raw).await);
    assert_eq!(tags, b"2TDCZ".to_vec());
    for ddl in ["ALTER TABLE per_column ALTER COLUMN a TYPE bigint", "ALTER TABLE per_column DROP COLUMN b"] {
        pg.psql("postgres", ddl);
        for attempt in 0..2 {
            raw.write_all(&run).await.unwrap();
            let got = read_until_ready(&mut raw).await;
            let msgs = backend_messages(&got);
            let error =
                msgs.iter().find(|m| m.0 == b'E').unwrap_or_else(|| panic!("{ddl} #{attempt}: {msgs:?}"));
            assert!(
                String::from_utf8_lossy(error.1).contains("C0A000"),
                "{ddl} #{attempt}: {:?}",
                String::from_utf8_lossy(error.1)
            );
        }
    }
    gw.shutdown().await;
}

/// As in PostgreSQL, a startup parameter of its own wins over the same setting in `options`
/// (pgJDBC always sends TimeZone, whatever its options say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_parameter_wins_over_the_same_setting_in_options() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let mut raw = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    let params = [
        ("user", "postgres"),
        ("database", "postgres"),
        ("options", "-c TimeZone=Asia/Tokyo -c DateStyle=SQL"),
        ("TimeZone", "Europe/Paris"),
    ];
    raw.write_all(&startup_packet_with(3 << 16, &params)).await.unwrap();
    let welcome = read_until_ready(&mut raw).await;
    let shown = String::from_utf8_lossy(&welcome);
    assert!(shown.contains("TimeZone\0Europe/Paris\0"), "{shown:?}");
    assert!(shown.contains("DateStyle\0SQL"), "{shown:?}");
    raw.write_all(&query_message("SHOW timezone")).await.unwrap();
    let answer = read_until_ready(&mut raw).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("Europe/Paris"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    gw.shutdown().await;
}

/// pgJDBC's answer to 0A000: it closes the statement the server refused and prepares it anew, in
/// one batch (Close, Parse, Bind, Describe, Execute, Sync). A Parse behind only Close messages
/// still begins its batch: met by a server copy made before DDL, it is planned afresh unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_behind_a_close_never_meets_a_stale_server_copy() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE reprep(id int, v int); INSERT INTO reprep VALUES (1, 5)");
    let gw = small_pool(&pg, 1, 100).await;
    let text = "SELECT * FROM reprep WHERE id = $1";
    let first = connect(&gw).await;
    first.prepare(text).await.unwrap();
    pg.psql("postgres", "ALTER TABLE reprep ADD COLUMN extra int DEFAULT 7");
    let mut raw = raw_login(addr(&gw)).await;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::target(&mut out, b'C', b'S', b"S_1");
    pgpilot_wire::frontend::parse(&mut out, b"S_2", text.as_bytes(), &[0, 0]);
    pgpilot_wire::frontend::bind(&mut out, b"", b"S_2", &[0, 0, 0, 1, 0, 0, 0, 1, b'1', 0, 0]);
    pgpilot_wire::frontend::target(&mut out, b'D', b'P', b"");
    out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
    pgpilot_wire::frontend::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    let got = read_until_ready(&mut raw).await;
    let tags: Vec<u8> = backend_messages(&got).iter().map(|m| m.0).filter(|t| *t != b'S').collect();
    assert_eq!(tags, b"312TDCZ".to_vec(), "{:?}", String::from_utf8_lossy(&got));
    let row = backend_messages(&got).into_iter().find(|m| m.0 == b'D').unwrap().1.to_vec();
    assert!(row.starts_with(&[0, 3]), "three columns: {row:?}");
    gw.shutdown().await;
}

/// Whether `c` gets a server within 2 s (with a pool of one: whether another client holds it).
async fn answers_quickly(c: &tokio_postgres::Client) -> bool {
    tokio::time::timeout(Duration::from_secs(2), c.simple_query("SELECT 1")).await.is_ok()
}

/// A client pinned by its WITH HOLD cursors alone is let go once they are closed (Django's
/// iterator() in autocommit declares one per query); one pinned for a lasting reason stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_its_hold_cursors_lets_a_client_go() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let a = connect(&gw).await;
    let b = connect(&gw).await;
    a.batch_execute("DECLARE c1 CURSOR WITH HOLD FOR SELECT generate_series(1, 3)").await.unwrap();
    a.batch_execute("DECLARE c2 CURSOR WITH HOLD FOR SELECT 1").await.unwrap();
    a.batch_execute("FETCH ALL FROM c1").await.unwrap();
    a.batch_execute("CLOSE c1").await.unwrap();
    assert!(!answers_quickly(&b).await, "one cursor is still open: the only server stays with its client");
    a.batch_execute("CLOSE c2").await.unwrap();
    assert!(answers_quickly(&b).await, "every cursor closed: the server goes back to the pool");
    a.query("DECLARE c3 CURSOR WITH HOLD FOR SELECT $1::int", &[&1i32]).await.unwrap();
    a.batch_execute("CLOSE ALL").await.unwrap();
    assert!(answers_quickly(&b).await, "extended DECLARE, then CLOSE ALL");
    // LISTEN lasts: closing the cursor declared with it changes nothing.
    a.batch_execute("DECLARE c4 CURSOR WITH HOLD FOR SELECT 1; LISTEN somewhere").await.unwrap();
    a.batch_execute("CLOSE c4").await.unwrap();
    assert!(!answers_quickly(&b).await, "LISTEN keeps the client pinned");
    drop(a);
    assert!(answers_quickly(&b).await);
    gw.shutdown().await;
}

/// LISTEN, temporary objects and session advisory locks pin a client only while the server holds
/// them: once they end (UNLISTEN, DROP, ON COMMIT DROP, a rollback, an unlock, DISCARD, a lock
/// never taken) the client is let go, or long-lived application pools that used such a thing
/// once would hold every server for nothing (helper-144: an ORM's staging table ON COMMIT DROP
/// starved every other client). What still exists keeps the pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_ends_when_what_pinned_the_client_is_gone() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE stock (id int PRIMARY KEY, qty int)");
    let gw = small_pool(&pg, 1, 100).await;
    let a = connect(&gw).await;
    let b = connect(&gw).await;
    let ended: &[&[&str]] = &[
        &[
            "BEGIN",
            "CREATE TEMP TABLE stage (id int, qty int) ON COMMIT DROP",
            "INSERT INTO stage VALUES (1, 5)",
            "INSERT INTO stock SELECT * FROM stage ON CONFLICT (id) DO UPDATE SET qty = excluded.qty",
            "COMMIT",
        ],
        &["BEGIN; CREATE TEMP TABLE t2 (x int) ON COMMIT DROP; COMMIT"],
        &["CREATE TEMP TABLE t3 (x int)", "DROP TABLE t3"],
        &["BEGIN", "CREATE TEMP TABLE t4 (x int)", "ROLLBACK"],
        &["CREATE TEMP TABLE t5 (x int)", "DISCARD TEMP"],
        &["CREATE TEMP TABLE t6 (x int)", "DISCARD ALL"],
        &["CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "DROP FUNCTION pg_temp.f()"],
        &["LISTEN ch", "UNLISTEN ch"],
        &["LISTEN ch; LISTEN other", "UNLISTEN *"],
        &["BEGIN", "LISTEN ch", "ROLLBACK"],
        &["SELECT pg_advisory_lock(7)", "SELECT pg_advisory_unlock(7)"],
        &["SELECT pg_advisory_lock(7); SELECT pg_advisory_lock_shared(8)", "SELECT pg_advisory_unlock_all()"],
    ];
    for requests in ended {
        for request in requests.iter() {
            a.batch_execute(request).await.unwrap_or_else(|e| panic!("{request}: {e}"));
        }
        assert!(answers_quickly(&b).await, "{requests:?}: nothing left, no pin");
    }
    // Sent with the extended protocol, as drivers do.
    a.query("SELECT pg_advisory_lock($1)", &[&9i64]).await.unwrap();
    assert!(!answers_quickly(&b).await, "a lock held pins");
    a.query("SELECT pg_advisory_unlock($1)", &[&9i64]).await.unwrap();
    assert!(answers_quickly(&b).await, "unlocked with the extended protocol");
    // A lock another session holds is not taken: nothing pins.
    let holder = try_connect(&pg.conninfo("postgres", "postgres")).await.unwrap();
    holder.batch_execute("SELECT pg_advisory_lock(11)").await.unwrap();
    let taken: bool = a.query_one("SELECT pg_try_advisory_lock(11)", &[]).await.unwrap().get(0);
    assert!(!taken);
    assert!(answers_quickly(&b).await, "a try that took nothing");
    // What is still there keeps the pin, and other state ending beside it changes nothing.
    a.batch_execute("CREATE TEMP TABLE kept (x int); LISTEN ch").await.unwrap();
    a.batch_execute("UNLISTEN ch").await.unwrap();
    assert!(!answers_quickly(&b).await, "the temporary table is still there");
    a.batch_execute("DROP TABLE kept").await.unwrap();
    assert!(answers_quickly(&b).await, "and now nothing is");
    // A pin that cannot be checked lasts (LOAD runs a library's code in the session).
    a.batch_execute("LISTEN ch; LOAD 'plpgsql'").await.unwrap();
    a.batch_execute("UNLISTEN ch").await.unwrap();
    assert!(!answers_quickly(&b).await, "LOAD pins for the session");
    drop(a);
    assert!(answers_quickly(&b).await);
    gw.shutdown().await;
}

/// A WITH HOLD cursor that never came to be (its DECLARE failed, or its transaction rolled back)
/// or that a rolled-back transaction closed (PostgreSQL does not undo a CLOSE) pins nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_cursors_that_never_came_to_be_or_are_closed_let_the_client_go() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let a = connect(&gw).await;
    let b = connect(&gw).await;
    for failing in [
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1/0",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1; SELECT 1/0",
        "BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; SELECT 1/0; COMMIT",
    ] {
        a.batch_execute(failing).await.unwrap_err();
        a.batch_execute("ROLLBACK").await.unwrap();
        assert!(answers_quickly(&b).await, "{failing}: no cursor, no pin");
    }
    a.batch_execute("BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; ROLLBACK").await.unwrap();
    assert!(answers_quickly(&b).await, "declared in a transaction rolled back");
    a.batch_execute("BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1").await.unwrap();
    a.batch_execute("ROLLBACK").await.unwrap();
    assert!(answers_quickly(&b).await, "declared in a transaction rolled back by a later request");
    a.batch_execute("DECLARE c CURSOR WITH HOLD FOR SELECT 1").await.unwrap();
    a.batch_execute("BEGIN; CLOSE c; ROLLBACK").await.unwrap();
    let gone = a.simple_query("FETCH c").await.unwrap_err();
    assert_eq!(sqlstate(&gone).as_deref(), Some("34000"), "PostgreSQL closed it: {gone}");
    assert!(answers_quickly(&b).await, "closed in a transaction rolled back");
    a.batch_execute("BEGIN; DECLARE \"Ç\" CURSOR WITH HOLD FOR SELECT 1; COMMIT").await.unwrap();
    a.batch_execute("CLOSE ç").await.unwrap_err();
    assert!(!answers_quickly(&b).await, "Ç is still open: ç is another name");
    a.batch_execute("CLOSE \"Ç\"").await.unwrap();
    assert!(answers_quickly(&b).await, "closed under its own name");
    a.batch_execute("BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT").await.unwrap();
    assert!(!answers_quickly(&b).await, "a cursor committed pins");
    drop(a);
    assert!(answers_quickly(&b).await);
    gw.shutdown().await;
}

/// `SET search_path = pg_temp` makes an unqualified CREATE a temporary object: its client is
/// pinned, and no other client ever sees it (PostgreSQL: 42P01 for everyone else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_created_with_pg_temp_leading_the_search_path_pin_their_client() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    for (set, create) in [
        ("SET search_path = pg_temp, public", "CREATE TABLE secret AS SELECT 'private'::text AS v"),
        (
            "SELECT set_config('search_path', 'pg_temp', false)",
            "CREATE TABLE secret (v text); INSERT INTO secret VALUES ('private')",
        ),
        ("SET search_path = \"$user\", pg_temp, public", "SELECT 'private'::text AS v INTO secret"),
        (
            "BEGIN; SET LOCAL search_path = pg_temp; CREATE TABLE secret AS SELECT 'private'::text AS v",
            "COMMIT",
        ),
        // Each its own request: the path is read back after the COMMIT, and the CREATE comes
        // before the answer.
        ("BEGIN|SET search_path = pg_temp|COMMIT", "CREATE TABLE secret AS SELECT 'private'::text AS v"),
    ] {
        let a = connect(&gw).await;
        for request in set.split('|') {
            a.batch_execute(request).await.unwrap();
        }
        a.batch_execute(create).await.unwrap();
        for _ in 0..6 {
            let v: String = a.query_one("SELECT v FROM pg_temp.secret", &[]).await.unwrap().get(0);
            assert_eq!(v, "private", "{set}: the client keeps its table");
            let other = connect(&gw).await;
            let err = other.query_one("SELECT v FROM pg_temp.secret", &[]).await.unwrap_err();
            assert_eq!(sqlstate(&err).as_deref(), Some("42P01"), "{set}: another client read it");
        }
        let clients = psql(&gw, "pgpilot", "SHOW CLIENTS").unwrap();
        assert!(clients.contains("temporary_table"), "{set}: {clients}");
    }
    gw.shutdown().await;
}

/// A session advisory lock taken through SQL PREPARE and EXECUTE pins like one taken directly:
/// its holder keeps it, and nobody else gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_lock_taken_by_an_executed_statement_pins_its_client() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 3, 100).await;
    let a = connect(&gw).await;
    a.batch_execute("PREPARE take_lock AS SELECT pg_advisory_lock(4242)").await.unwrap();
    a.batch_execute("EXECUTE take_lock").await.unwrap();
    let b = connect(&gw).await;
    b.batch_execute("PREPARE take(bigint) AS SELECT pg_advisory_lock($1); EXECUTE take(4343)").await.unwrap();
    for _ in 0..4 {
        let other = connect(&gw).await;
        for key in [4242i64, 4343] {
            let got: bool = other.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await.unwrap().get(0);
            assert!(!got, "lock {key} is held by its client");
        }
    }
    let released: bool = a.query_one("SELECT pg_advisory_unlock(4242)", &[]).await.unwrap().get(0);
    assert!(released, "the holder still holds it");
    gw.shutdown().await;
}

/// application_name_add_host: the server and the client see "name - host:port" from login on, as
/// with PgBouncer; a later SET is the client's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_add_host_adds_the_clients_address_at_login() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.application_name_add_host = true;
    config.pgpilot.default_pool_size = 1;
    let gw = start(config).await;
    let c = try_connect(&format!("{} application_name=myapp", conninfo(&gw, "postgres", "postgres")))
        .await
        .unwrap();
    let named = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, String>(0) }
    };
    let shown = named("SHOW application_name").await;
    let prefix = "myapp - 127.0.0.1:";
    assert!(shown.starts_with(prefix) && shown[prefix.len()..].parse::<u16>().is_ok(), "{shown}");
    let seen =
        named("SELECT application_name::text FROM pg_stat_activity WHERE pid = pg_backend_pid()").await;
    assert_eq!(seen, shown, "the server sees the name with the host");
    let listed = psql(&gw, "pgpilot", "SHOW CLIENTS").unwrap();
    assert!(listed.contains(&shown), "{listed}");
    c.batch_execute("SET application_name = 'later'").await.unwrap();
    assert_eq!(named("SHOW application_name").await, "later");
    gw.shutdown().await;
}

/// A FunctionCall message (the protocol's fast-path calls, libpq's PQfn) of set_config or an
/// advisory lock changes the session where pgpilot cannot follow it: the client keeps its server,
/// and nothing reaches other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_that_change_the_session_pin_the_client() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let mut raw = raw_login(addr(&gw)).await;
    // F: set_config (OID 2078), three text arguments, a text result.
    let mut body = 2078u32.to_be_bytes().to_vec();
    body.extend(1u16.to_be_bytes());
    body.extend(0u16.to_be_bytes());
    body.extend(3u16.to_be_bytes());
    for arg in ["search_path", "s9, public", "false"] {
        body.extend((arg.len() as i32).to_be_bytes());
        body.extend(arg.as_bytes());
    }
    body.extend(0u16.to_be_bytes());
    use tokio::io::AsyncWriteExt;
    raw.write_all(&message(b'F', &body)).await.unwrap();
    let answer = read_until_ready(&mut raw).await;
    assert!(backend_messages(&answer).iter().any(|(tag, _)| *tag == b'V'), "{answer:?}");
    let clients = psql(&gw, "pgpilot", "SHOW CLIENTS").unwrap();
    assert!(clients.contains("function_call_set_config"), "{clients}");
    // The pool's only server is the pinned client's: another client waits rather than reading
    // s9 (query_wait_timeout would fail it); once the first leaves, the server is reset.
    drop(raw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = connect(&gw).await;
    assert_eq!(show(&other, "search_path").await, "\"$user\", public");
    gw.shutdown().await;
}

/// asyncpg prepares and describes its statements inside its transactions, so the server copy's
/// row type counts only until the transaction ends, and the next transaction describes the copy
/// again before its Bind. After a migration changed the table behind it, that Describe of the
/// stale copy failed the client's transaction: the client saw 25P02 instead of PostgreSQL's 0A000,
/// never learned to prepare again, and every later transaction of it failed the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_met_inside_a_transaction_fails_the_bind_with_0a000_and_is_prepared_again() {
    use pgpilot_wire::frontend;
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE migrated(id int, a int, b text); INSERT INTO migrated VALUES (1, 2, 'b')",
    );
    let gw = small_pool(&pg, 1, 100).await;
    let mut raw = raw_login(addr(&gw)).await;
    let text = b"SELECT * FROM migrated WHERE id = $1";
    let transaction = |prepare: Option<&[u8]>| {
        let mut out = bytes::BytesMut::new();
        frontend::query(&mut out, "BEGIN");
        if let Some(name) = prepare {
            frontend::parse(&mut out, name, text, &[0, 0]);
            frontend::target(&mut out, b'D', b'S', name);
            frontend::sync(&mut out);
        }
        let name = prepare.unwrap_or(b"s1");
        frontend::bind(&mut out, b"", name, &[0, 0, 0, 1, 0, 0, 0, 1, b'1', 0, 0]);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        frontend::sync(&mut out);
        out
    };
    raw.write_all(&transaction(Some(b"s1"))).await.unwrap();
    let got = until_ready_for_query(&mut raw, 3).await;
    assert_eq!(data_rows(&got), 1, "{:?}", String::from_utf8_lossy(&got));
    raw.write_all(b"Q\0\0\0\x0bCOMMIT\0").await.unwrap();
    until_ready_for_query(&mut raw, 1).await;

    pg.psql("postgres", "ALTER TABLE migrated DROP COLUMN b");
    // Until the client prepares again, each of its transactions fails so, as in PostgreSQL.
    for attempt in 0..2 {
        raw.write_all(&transaction(None)).await.unwrap();
        let got = until_ready_for_query(&mut raw, 2).await;
        let msgs = backend_messages(&got);
        let error = msgs.iter().find(|m| m.0 == b'E').map(|m| String::from_utf8_lossy(m.1).into_owned());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("C0A000")),
            "attempt {attempt}: PostgreSQL fails the Bind with 0A000, got {error:?}"
        );
        assert_eq!(msgs.last().map(|m| m.1), Some(&b"E"[..]), "the transaction failed, as in PostgreSQL");
        raw.write_all(b"Q\0\0\0\x0dROLLBACK\0").await.unwrap();
        until_ready_for_query(&mut raw, 1).await;
    }
    // A driver that is told prepares again, under a new name.
    raw.write_all(&transaction(Some(b"s2"))).await.unwrap();
    let got = until_ready_for_query(&mut raw, 3).await;
    let msgs = backend_messages(&got);
    assert!(!msgs.iter().any(|m| m.0 == b'E'), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(data_rows(&got), 1, "{:?}", String::from_utf8_lossy(&got));
    raw.write_all(b"Q\0\0\0\x0bCOMMIT\0").await.unwrap();
    until_ready_for_query(&mut raw, 1).await;
    gw.shutdown().await;
}

/// A client that prepared its statement after a migration must not fail on another server's copy
/// prepared before it: PostgreSQL would have planned the client's own Parse after the DDL. asyncpg,
/// preparing again after 0A000, kept meeting such copies (known with the old row type) and failing
/// with "cached plan must not change result type" in its transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_after_ddl_never_fails_on_an_older_copy() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE migrated2(id int, a int); INSERT INTO migrated2 VALUES (1, 2)");
    let gw = small_pool(&pg, 2, 100).await;
    let text = "SELECT * FROM migrated2 WHERE id = 1";
    // Two clients in transactions at once, on both servers: each server gets a described copy.
    let (mut a, mut b) = (connect(&gw).await, connect(&gw).await);
    let (ta, tb) = (a.transaction().await.unwrap(), b.transaction().await.unwrap());
    for t in [&ta, &tb] {
        let stmt = t.prepare(text).await.unwrap();
        assert_eq!(t.query(&stmt, &[]).await.unwrap().len(), 1);
    }
    ta.commit().await.unwrap();
    tb.commit().await.unwrap();
    pg.psql("postgres", "ALTER TABLE migrated2 ADD COLUMN b text DEFAULT 'b'");
    // Prepared after the migration inside a transaction, as asyncpg does: three columns.
    let mut c = connect(&gw).await;
    let t = c.transaction().await.unwrap();
    let stmt = t.prepare(text).await.unwrap();
    assert_eq!(stmt.columns().len(), 3);
    t.commit().await.unwrap();
    // Another client keeps a server busy now and then, so c's transactions land on both.
    let busy = connect(&gw).await;
    let holder = tokio::spawn(async move {
        for _ in 0..40 {
            busy.batch_execute("BEGIN; SELECT pg_sleep(0.02); COMMIT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
    });
    for round in 0..30 {
        let t = c.transaction().await.unwrap();
        let rows = t.query(&stmt, &[]).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(rows[0].len(), 3);
        t.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holder.await.unwrap();
    gw.shutdown().await;
}

/// pgJDBC's case (a black-box check found it): a column dropped and another added since a client
/// described its statement leaves as many columns, of other names and types. A check of the
/// shared server copy fails (its plan is refused, 0A000) and the copy is prepared afresh; that
/// fresh copy's row type is checked too, and the client, which knows the old one, gets 0A000 as
/// from its own copy in PostgreSQL, never the new rows to decode with the old description.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_prepared_afresh_after_a_failed_check_is_checked_too() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE rw(id int, secret text, note text); INSERT INTO rw VALUES (1, 'SECRET', 'hello')",
    );
    let gw = small_pool(&pg, 1, 100).await;
    let sql = "SELECT * FROM rw";
    let (c0, c1, c2) = (connect(&gw).await, connect(&gw).await, connect(&gw).await);
    let (s0, s1, s2) =
        (c0.prepare(sql).await.unwrap(), c1.prepare(sql).await.unwrap(), c2.prepare(sql).await.unwrap());
    for (c, s) in [(&c0, &s0), (&c1, &s1), (&c2, &s2)] {
        assert_eq!(c.query_one(s, &[]).await.unwrap().get::<_, &str>(1), "SECRET");
    }
    pg.psql("postgres", "ALTER TABLE rw ADD COLUMN extra int DEFAULT 0");
    for (c, s) in [(&c2, &s2), (&c0, &s0)] {
        c.batch_execute("BEGIN; SELECT 1").await.unwrap();
        let err = c.query(s, &[]).await.expect_err("the row type changed");
        assert_eq!(sqlstate(&err).as_deref(), Some("0A000"), "{err}");
        c.batch_execute("ROLLBACK").await.unwrap();
    }
    pg.psql("postgres", "ALTER TABLE rw DROP COLUMN id");
    let err = c1.query(&s1, &[]).await.expect_err("c1 knows (id, secret, note): PostgreSQL refuses");
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"), "{err}");
    let again = c1.prepare(sql).await.unwrap();
    let row = c1.query_one(&again, &[]).await.unwrap();
    assert_eq!((row.get::<_, &str>(0), row.get::<_, &str>(1), row.get::<_, i32>(2)), ("SECRET", "hello", 0));
    gw.shutdown().await;
}

/// A client that prepared and described its statement after DDL is judged by that row type: when
/// another client then meets an older server copy (0A000, which tells pgpilot the statement's
/// result type changed), the first one's next Bind, in a transaction too, still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_described_after_ddl_is_not_failed_when_another_meets_an_older_copy() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE later(id int); INSERT INTO later VALUES (1)");
    let gw = small_pool(&pg, 2, 100).await;
    let sql = "SELECT * FROM later";
    let (holder, old, new) = (connect(&gw).await, connect(&gw).await, connect(&gw).await);
    // A server held by `holder` in a transaction: the other client's statement runs on the other.
    let hold = || holder.batch_execute("BEGIN; SELECT 1");
    let release = || holder.batch_execute("COMMIT");
    hold().await.unwrap();
    let s_old = old.prepare(sql).await.unwrap();
    old.query_one(&s_old, &[]).await.unwrap();
    release().await.unwrap();
    pg.psql("postgres", "ALTER TABLE later ADD COLUMN v int DEFAULT 5");
    // `new` prepares after the change, on whichever server; then `old` meets its copy from before.
    let s_new = new.prepare(sql).await.unwrap();
    assert_eq!(s_new.columns().len(), 2);
    assert_eq!(new.query_one(&s_new, &[]).await.unwrap().get::<_, i32>(1), 5);
    for _ in 0..2 {
        hold().await.unwrap();
        let _ = old.query(&s_old, &[]).await;
        release().await.unwrap();
    }
    for round in 0..4 {
        if round % 2 == 1 {
            hold().await.unwrap();
        }
        new.batch_execute("BEGIN").await.unwrap();
        let row = new.query_one(&s_new, &[]).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(row.get::<_, i32>(1), 5);
        new.batch_execute("COMMIT").await.unwrap();
        if round % 2 == 1 {
            release().await.unwrap();
        }
    }
    gw.shutdown().await;
}

/// Two names the client prepared with the same text (asyncpg's explicit `prepare` beside its
/// statement cache's entry of the same query) each keep the row type they were described with:
/// after DDL the one prepared again learns the new type, the other still fails with 0A000 as in
/// PostgreSQL, never given rows of the new type to decode with the old description.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_keeps_the_row_type_it_was_described_with() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE two(k int, c1 int DEFAULT 1); INSERT INTO two(k) VALUES (1)");
    let gw = small_pool(&pg, 2, 100).await;
    let sql = "SELECT * FROM two WHERE k = $1";
    let c = connect(&gw).await;
    let (explicit, cached) = (c.prepare(sql).await.unwrap(), c.prepare(sql).await.unwrap());
    for stmt in [&explicit, &cached] {
        assert_eq!(c.query_one(stmt, &[&1i32]).await.unwrap().get::<_, i32>(1), 1);
    }
    pg.psql("postgres", "ALTER TABLE two DROP COLUMN c1, ADD COLUMN pin int DEFAULT 4242");
    let err = c.query(&cached, &[&1i32]).await.expect_err("the row type changed");
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"), "{err}");
    let again = c.prepare(sql).await.unwrap();
    assert_eq!(c.query_one(&again, &[&1i32]).await.unwrap().get::<_, i32>(1), 4242);
    let err = c.query(&explicit, &[&1i32]).await.expect_err("described as (k, c1): PostgreSQL refuses");
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"), "{err}");
    gw.shutdown().await;
}

/// A copy prepared inside a transaction that altered the table and rolled back keeps the undone
/// row type on its server: it is dropped at the rollback, so the next client that uses the
/// statement, in a transaction too, gets rows as from PostgreSQL and not a spurious 0A000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_prepared_in_a_rolled_back_transaction_are_not_used_again() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE rb(k int, c1 int DEFAULT 1); INSERT INTO rb(k) VALUES (1)");
    let gw = small_pool(&pg, 1, 100).await;
    let sql = "SELECT * FROM rb";
    let (a, b) = (connect(&gw).await, connect(&gw).await);
    let sa = a.prepare(sql).await.unwrap();
    assert_eq!(a.query_one(&sa, &[]).await.unwrap().len(), 2);
    b.batch_execute("BEGIN; ALTER TABLE rb ADD COLUMN c2 int DEFAULT 2").await.unwrap();
    let sb = b.prepare(sql).await.unwrap();
    assert_eq!(b.query_one(&sb, &[]).await.unwrap().len(), 3);
    b.batch_execute("ROLLBACK").await.unwrap();
    for round in 0..2 {
        a.batch_execute("BEGIN").await.unwrap();
        let row = a.query_one(&sa, &[]).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(row.len(), 2);
        a.batch_execute("COMMIT").await.unwrap();
    }
    gw.shutdown().await;
}

/// PostgreSQL reads a statement's literals and folds its constants under the settings in force
/// when it is prepared (TimeZone, DateStyle, standard_conforming_strings, extra_float_digits...).
/// Clients share server copies of statements: one prepared under another client's settings would
/// read `'03/04/2024'` as another day. A copy is shared only among clients with the same values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_statement_reads_its_literals_under_the_clients_own_settings() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let sql = "SELECT '2024-01-15 12:00:00'::timestamptz::text, '03/04/2024'::date::text, \
               length('a\\\\b'), (0.1::float8 + 0.2::float8)::text";
    let read = |row: tokio_postgres::Row| {
        (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, i32>(2), row.get::<_, String>(3))
    };
    let plain = connect(&gw).await;
    let first = read(plain.query_one(sql, &[]).await.unwrap());
    assert_eq!(first.0, "2024-01-15 12:00:00+00");
    assert_eq!(first.1, "2024-03-04");
    assert_eq!(first.2, 4);
    let other = connect(&gw).await;
    other
        .batch_execute(
            "SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'ISO, DMY'; \
             SET standard_conforming_strings = off; SET extra_float_digits = 0",
        )
        .await
        .unwrap();
    let theirs = read(other.query_one(sql, &[]).await.unwrap());
    assert_eq!(
        theirs,
        ("2024-01-15 12:00:00+09".into(), "2024-04-03".into(), 3, "0.3".into()),
        "read under the first client's settings"
    );
    // And the first client still gets its own reading on the same (only) server.
    assert_eq!(read(plain.query_one(sql, &[]).await.unwrap()), first);
    gw.shutdown().await;
}

/// More settings decide how a statement's text is read when it is prepared: `x = NULL` is
/// rewritten by transform_null_equals, an array literal's `NULL` read by array_nulls (and the text
/// converted from the client's encoding). A server copy is shared only under the same values
/// (helper-177: a client got another client's reading of the same statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_statement_is_parsed_under_the_clients_own_transforms() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let sql = "SELECT count(*) FILTER (WHERE x = NULL), \
               cardinality(array_remove('{NULL,1}'::text[], NULL)) FROM (VALUES (NULL::int), (1)) v(x)";
    let read = |row: tokio_postgres::Row| (row.get::<_, i64>(0), row.get::<_, i32>(1));
    let plain = connect(&gw).await;
    assert_eq!(read(plain.query_one(sql, &[]).await.unwrap()), (0, 1));
    let other = connect(&gw).await;
    other.batch_execute("SET transform_null_equals = on").await.unwrap();
    assert_eq!(
        read(other.query_one(sql, &[]).await.unwrap()),
        (1, 1),
        "read under the first client's settings"
    );
    // Set in one query with other statements, they are read back from the server before pgpilot
    // knows them: a statement prepared meanwhile is the client's own.
    other
        .batch_execute(
            "SET transform_null_equals = off; SET array_nulls = off; SET transform_null_equals = on",
        )
        .await
        .unwrap();
    assert_eq!(read(other.query_one(sql, &[]).await.unwrap()), (1, 2));
    let again = sql.replace("SELECT", "SELECT /* again */");
    other.batch_execute("RESET ALL; SET transform_null_equals = on").await.unwrap();
    assert_eq!(read(other.query_one(again.as_str(), &[]).await.unwrap()), (1, 1));
    assert_eq!(read(plain.query_one(again.as_str(), &[]).await.unwrap()), (0, 1));
    assert_eq!(read(plain.query_one(sql, &[]).await.unwrap()), (0, 1));
    gw.shutdown().await;
}

/// A driver encodes and escapes its next statement by what it was told last. After a reset
/// outside a transaction the server reports its own defaults; the client is told its login
/// values again before the ReadyForQuery, as PostgreSQL tells them (helper-177: psycopg, told
/// UTF8, sent 'café' as UTF-8 to a server pgpilot had set back to LATIN1, and 'cafÃ©' was stored).
/// Inside a transaction the server holds its defaults until the end: the client keeps what it
/// was told then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reset_the_client_writes_in_the_encoding_it_was_told_last() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let login = [("user", "postgres"), ("database", "postgres"), ("client_encoding", "LATIN1")];
    let mut a = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    a.write_all(&startup_packet_with(3 << 16, &login)).await.unwrap();
    read_until_ready(&mut a).await;
    let length_of = |text: &[u8]| {
        let mut body = b"SELECT length('".to_vec();
        body.extend_from_slice(text);
        body.extend_from_slice(b"')\0");
        message(b'Q', &body)
    };
    for reset in ["DISCARD ALL", "RESET ALL", "RESET client_encoding"] {
        a.write_all(&query_message(reset)).await.unwrap();
        let told = read_until_ready(&mut a).await;
        assert_eq!(last_told(&told, "client_encoding").as_deref(), Some("LATIN1"), "after {reset}");
        a.write_all(&length_of(b"caf\xe9")).await.unwrap();
        assert_eq!(first_value_or_error(&read_until_ready(&mut a).await), "4", "after {reset}");
    }
    let mut told = Vec::new();
    for step in ["BEGIN", "RESET ALL", "COMMIT"] {
        a.write_all(&query_message(step)).await.unwrap();
        told.extend(read_until_tag(&mut a, b'Z').await);
    }
    assert_eq!(
        last_told(&told, "client_encoding").as_deref(),
        Some("UTF8"),
        "the server's, in the transaction"
    );
    a.write_all(&length_of("café".as_bytes())).await.unwrap();
    let answer = read_until_ready(&mut a).await;
    assert_eq!(last_told(&answer, "client_encoding"), None, "nothing told since");
    assert_eq!(first_value_or_error(&answer), "4", "read as the UTF-8 it was told");
    gw.shutdown().await;
}

/// A SET after a RESET of the same setting in one request is what stays (`RESET x; SET x = ...`),
/// for reported settings (ParameterStatus) and others, and after RESET ALL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_after_a_reset_in_the_same_request_stays() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    let info = conninfo(&gw, "postgres", "postgres");
    let c = try_connect(&format!("{info} application_name=login_app")).await.unwrap();
    let cases = [
        ("RESET application_name; SET application_name TO 'x'", "application_name", "x"),
        ("RESET TimeZone; SET TimeZone TO 'Asia/Tokyo'", "TimeZone", "Asia/Tokyo"),
        ("RESET ALL; SET application_name = 'y'", "application_name", "y"),
        ("RESET work_mem; SET work_mem = '5MB'", "work_mem", "5MB"),
    ];
    for (sql, setting, value) in cases {
        c.batch_execute(sql).await.unwrap();
        assert_eq!(show(&c, setting).await, value, "after {sql}");
        assert_eq!(on_another_server(&gw, &c, setting).await, value, "after {sql}, on another server");
    }
    gw.shutdown().await;
}

/// After DISCARD ALL the server reports its own defaults (ParameterStatus) and the client's values
/// are its login ones again: it is told them before the ReadyForQuery, and its next request runs
/// under them, also on a server that has them already (psycopg reads dates by the DateStyle it
/// was told).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_discard_all_the_client_is_told_its_login_values_again() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let login = [("user", "postgres"), ("database", "postgres"), ("DateStyle", "SQL, DMY")];
    let mut a = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    a.write_all(&startup_packet_with(3 << 16, &login)).await.unwrap();
    read_until_ready(&mut a).await;
    a.write_all(&query_message("DISCARD ALL")).await.unwrap();
    let told = read_until_ready(&mut a).await;
    assert_eq!(last_told(&told, "DateStyle").as_deref(), Some("SQL, DMY"), "told its login value at once");
    // Another client with the same login values leaves the only server with them.
    let b = try_connect(&format!("{} options='-c DateStyle=SQL,DMY'", conninfo(&gw, "postgres", "postgres")))
        .await
        .unwrap();
    b.simple_query("SELECT 1").await.unwrap();
    drop(b);
    a.write_all(&query_message("SELECT '2024-01-15'::date")).await.unwrap();
    let answer = read_until_ready(&mut a).await;
    assert_eq!(first_value_or_error(&answer), "15/01/2024", "under its own DateStyle");
    assert!(matches!(last_told(&answer, "DateStyle").as_deref(), None | Some("SQL, DMY")));
    gw.shutdown().await;
}

/// Login settings are reported back as PostgreSQL spells them (`sql, dmy` is `SQL, DMY`, `utf8`
/// is `UTF8`), to the first client with them and to the next: psycopg reads dates only by
/// DateStyle's canonical names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_settings_are_reported_in_postgresqls_spelling() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = small_pool(&pg, 2, 100).await;
    let login = [
        ("user", "postgres"),
        ("database", "postgres"),
        ("DateStyle", "sql, dmy"),
        ("client_encoding", "utf8"),
    ];
    for round in 0..2 {
        let mut c = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
        c.write_all(&startup_packet_with(3 << 16, &login)).await.unwrap();
        let welcome = read_until_ready(&mut c).await;
        assert_eq!(last_told(&welcome, "DateStyle").as_deref(), Some("SQL, DMY"), "client {round}");
        assert_eq!(last_told(&welcome, "client_encoding").as_deref(), Some("UTF8"), "client {round}");
    }
    gw.shutdown().await;
}

/// The value of the last ParameterStatus for `name` among the messages in `bytes`.
fn last_told(bytes: &[u8], name: &str) -> Option<String> {
    let prefix = format!("{name}\0");
    backend_messages(bytes).into_iter().rev().find_map(|(t, body)| {
        (t == b'S' && body.starts_with(prefix.as_bytes()))
            .then(|| String::from_utf8_lossy(&body[prefix.len()..body.len() - 1]).into_owned())
    })
}

/// A RESET inside a transaction that rolls back (or a savepoint rolled back to) did not happen:
/// the client keeps its value, and the server keeps it too, so it never reaches the next client of
/// that server (a role leaked so to another client, who then ran as it). A RESET that commits
/// holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_undone_by_a_rollback_keeps_the_value_and_never_leaks() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE ROLE r_alpha; CREATE ROLE r_beta; CREATE SCHEMA sa");
    let gw = small_pool(&pg, 1, 100).await;
    let a = connect(&gw).await;
    let b = connect(&gw).await;
    for undo in [
        "BEGIN; RESET ROLE; SELECT 1; ROLLBACK",
        "BEGIN; SET ROLE TO DEFAULT; ROLLBACK",
        "BEGIN; SAVEPOINT s; RESET ROLE; ROLLBACK TO s; COMMIT",
    ] {
        a.batch_execute("SET ROLE r_alpha").await.unwrap();
        // Statement by statement, as a driver sends them.
        for statement in undo.split("; ") {
            a.batch_execute(statement).await.unwrap();
        }
        assert_eq!(
            current_user(&b).await,
            "postgres",
            "{undo}: the next client of the server ran as r_alpha"
        );
        b.batch_execute("SET ROLE r_beta").await.unwrap();
        assert_eq!(current_user(&a).await, "r_alpha", "{undo}: the client lost its role");
        b.batch_execute("RESET ROLE").await.unwrap();
        a.batch_execute("RESET ROLE").await.unwrap();
    }
    // In one query string too.
    a.batch_execute("SET ROLE r_alpha").await.unwrap();
    a.batch_execute("BEGIN; RESET ROLE; ROLLBACK").await.unwrap();
    assert_eq!(current_user(&b).await, "postgres", "one string: the next client ran as r_alpha");
    assert_eq!(current_user(&a).await, "r_alpha", "one string: the client lost its role");
    a.batch_execute("RESET ROLE").await.unwrap();
    a.batch_execute("SET search_path = sa").await.unwrap();
    for statement in ["BEGIN", "RESET ALL", "ROLLBACK"] {
        a.batch_execute(statement).await.unwrap();
    }
    assert_eq!(show(&b, "search_path").await, "\"$user\", public", "a search_path leaked");
    assert_eq!(show(&a, "search_path").await, "sa");
    // Committed, the reset holds.
    for statement in ["BEGIN", "RESET search_path", "COMMIT"] {
        a.batch_execute(statement).await.unwrap();
    }
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    assert_eq!(show(&a, "search_path").await, "\"$user\", public");
    gw.shutdown().await;
}

async fn current_user(c: &tokio_postgres::Client) -> String {
    first_value(&c.simple_query("SELECT current_user").await.unwrap())
}

/// A column added and dropped again: PostgreSQL runs the client's statement once more (its own
/// copy's row type is the table's again). pgpilot's copy prepared while the column existed kept
/// that row type, and every Bind of the client on that server failed with 0A000 (lib/pq,
/// helper-128: every third execution on three servers). The copy is prepared afresh instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_and_dropped_again_lets_the_statement_run_again() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE roundtrip(a int); INSERT INTO roundtrip VALUES (1)");
    let gw = small_pool(&pg, 1, 10).await;
    let c = connect(&gw).await;
    let star = c.prepare("SELECT * FROM roundtrip").await.unwrap();
    assert_eq!(c.query_one(&star, &[]).await.unwrap().get::<_, i32>(0), 1);
    pg.psql("postgres", "ALTER TABLE roundtrip ADD COLUMN b int");
    for _ in 0..2 {
        let e = c.query(&star, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
    }
    pg.psql("postgres", "ALTER TABLE roundtrip DROP COLUMN b");
    for _ in 0..3 {
        let row = c.query_one(&star, &[]).await.unwrap_or_else(|e| panic!("after the DROP: {e}"));
        assert_eq!(row.get::<_, i32>(0), 1);
    }
    gw.shutdown().await;
}

async fn read_only_seen(clients: &[tokio_postgres::Client]) -> Vec<String> {
    futures::future::join_all(clients.iter().map(|c| show(c, "default_transaction_read_only"))).await
}

/// helper-149: an operator makes the cluster read-only (ALTER SYSTEM + reload) and back.
/// pgpilot gave every server the value each client had seen reported at login, which kept most
/// clients writable, and the client attached when the change was announced stayed read-only
/// after it was undone. A client's own choice still follows it to every server, and no further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_made_read_only_is_read_only_for_every_client_and_then_for_none() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE ro_check(x int)");
    let gw = small_pool(&pg, 3, 100).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(&gw).await);
    }
    assert!(read_only_seen(&clients).await.iter().all(|v| v == "off"));
    let reload = |value: &str| {
        pg.psql("postgres", &format!("ALTER SYSTEM SET default_transaction_read_only = {value}"));
        pg.psql("postgres", "SELECT pg_reload_conf()");
    };
    reload("on");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let seen = read_only_seen(&clients).await;
        assert!(seen.iter().all(|v| v == "on"), "the cluster is read-only, clients see {seen:?}");
    }
    for c in &clients {
        let err = c.batch_execute("INSERT INTO ro_check VALUES (1)").await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("25006"), "{err}");
    }
    reload("off");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let seen = read_only_seen(&clients).await;
        assert!(seen.iter().all(|v| v == "off"), "the cluster is writable again, clients see {seen:?}");
    }
    for c in &clients {
        c.batch_execute("INSERT INTO ro_check VALUES (1)").await.unwrap();
    }
    // A client's own choice follows it to another server, and does not stay behind.
    clients[0].batch_execute("SET default_transaction_read_only = on").await.unwrap();
    assert_eq!(on_another_server(&gw, &clients[0], "default_transaction_read_only").await, "on");
    for _ in 0..5 {
        let seen = read_only_seen(&clients).await;
        assert_eq!(seen, ["on", "off", "off", "off"]);
    }
    clients[0].batch_execute("RESET default_transaction_read_only").await.unwrap();
    assert_eq!(on_another_server(&gw, &clients[0], "default_transaction_read_only").await, "off");
    gw.shutdown().await;
}

/// helper-146: a client's tiny statement_timeout, left on a server, cancelled the next client's
/// settings sync (one query string, timed as a whole by PostgreSQL), which ended that client with
/// FATAL 57014 though it never set a timeout. The sync lifts it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_statement_timeout_does_not_cut_the_settings_sync_short() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let hurried = connect(&gw).await;
    // Many settings make the next client's sync (a RESET of each) take longer than the timeout.
    let settings: Vec<String> = (0..1000).map(|i| format!("SET myapp.setting_{i} = 'v{i}'")).collect();
    hurried.batch_execute(&settings.join("; ")).await.unwrap();
    hurried.batch_execute("SET statement_timeout = '1ms'").await.unwrap();
    hurried.simple_query("SELECT 1").await.unwrap();
    let other = connect(&gw).await;
    other.batch_execute("SET work_mem = '5MB'").await.unwrap();
    for _ in 0..3 {
        hurried.simple_query("SELECT 1").await.unwrap();
        let timeout = other.query_one("SELECT current_setting('statement_timeout')", &[]).await;
        assert_eq!(timeout.expect("the other client's query ran").get::<_, String>(0), "0");
    }
    assert_eq!(show(&hurried, "statement_timeout").await, "1ms");
    gw.shutdown().await;
}

/// helper-149: a server that ended (a restart, an administrator) while pgpilot gave it a client's
/// settings, before the client's request was sent, ended the client with that FATAL. Nothing of
/// the client's ran there: it goes on with another server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ending_during_the_settings_sync_moves_the_request() {
    let pg = Cluster::start();
    let gw = small_pool(&pg, 1, 100).await;
    let a = connect(&gw).await;
    a.batch_execute("SET work_mem = '5MB'").await.unwrap();
    let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    // Stopped, the server takes B's settings sync (a RESET of A's work_mem) without answering;
    // the termination is handled as it wakes, in answer to the sync.
    signal("-STOP");
    let b = connect(&gw).await;
    let request =
        tokio::spawn(async move { b.query_one("SELECT 42", &[]).await.map(|r| r.get::<_, i32>(0)) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    signal("-CONT");
    let answer = tokio::time::timeout(Duration::from_secs(10), request).await.expect("answered").unwrap();
    assert_eq!(answer.expect("the request moved to another server"), 42);
    gw.shutdown().await;
}
