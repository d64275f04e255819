//! What a failed request leaves behind, as PostgreSQL leaves it, under transaction pooling: a
//! statement prepared before the error stays, one whose Parse failed or was skipped does not, and
//! what pgpilot answers itself fails where the server would have.

mod common;

use common::*;
use pgpilot_testkit::Cluster;

/// A gateway whose single server every client shares, one after another.
async fn one_server(pg: &Cluster) -> pgpilot_gateway::Gateway {
    servers(pg, 1).await
}

/// A gateway with a pool of `size` servers.
async fn servers(pg: &Cluster, size: usize) -> pgpilot_gateway::Gateway {
    let mut config = config_for(pg);
    config.pgpilot.default_pool_size = size;
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

/// Sends `request` and returns the tags of the answer up to its ReadyForQuery, with the SQLSTATE
/// of an error or the first value of a row after the tag ("E:42P01", "D:1").
async fn exchange(s: &mut tokio::net::TcpStream, request: Vec<u8>) -> Vec<String> {
    use tokio::io::AsyncWriteExt;
    s.write_all(&request).await.unwrap();
    let mut got = Vec::new();
    loop {
        got.extend(read_until_any(s).await);
        let messages = backend_messages(&got);
        let complete: usize = messages.iter().map(|(_, body)| body.len() + 5).sum();
        if complete == got.len() && messages.last().is_some_and(|(tag, _)| *tag == b'Z') {
            // ParameterStatus may come at any time (a server the client lands on tells its
            // settings): not part of the answer.
            let answer = messages.iter().filter(|(tag, _)| *tag != b'S');
            return answer.map(|(tag, body)| describe(*tag, body)).collect();
        }
    }
}

fn describe(tag: u8, body: &[u8]) -> String {
    let tag = tag as char;
    match tag {
        'E' => {
            let code = body.split(|b| *b == 0).find_map(|f| f.strip_prefix(b"C")).unwrap_or_default();
            format!("E:{}", String::from_utf8_lossy(code))
        }
        'D' => format!("D:{}", String::from_utf8_lossy(&body[6..])),
        'Z' => format!("Z:{}", body[0] as char),
        _ => tag.to_string(),
    }
}

/// libpq's PQprepare is a Parse and a Sync. PostgreSQL checks the statement there (a table that
/// does not exist fails it), and a statement whose Parse failed does not exist: its name is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_of_a_missing_table_fails_and_leaves_its_name_free() {
    let pg = Cluster::start();
    let gw = one_server(&pg).await;
    let mut s = raw_login(addr(&gw)).await;
    let failed = exchange(&mut s, [parse("s1", "SELECT * FROM nosuch"), sync()].concat()).await;
    assert_eq!(failed, ["E:42P01", "Z:I"]);
    let prepared = exchange(&mut s, [parse("s1", "SELECT 1"), sync()].concat()).await;
    assert_eq!(prepared, ["1", "Z:I"]);
    let ran = exchange(&mut s, [bind_execute("s1"), sync()].concat()).await;
    assert_eq!(ran, ["2", "D:1", "C", "Z:I"]);
}

/// A PQprepare while every server is busy is answered without one after a check of its grammar,
/// which refuses several commands in one prepared statement, as PostgreSQL does (42601), and
/// acknowledges one (helper-163).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_of_several_commands_fails_while_every_server_is_busy() {
    let pg = Cluster::start();
    let gw = one_server(&pg).await;
    let busy = connect(&gw).await;
    busy.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let mut s = raw_login(addr(&gw)).await;
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        busy.batch_execute("COMMIT").await.unwrap();
    };
    let several = exchange(&mut s, [parse("m", "SELECT 1; SELECT 2"), sync()].concat());
    let (several, ()) = tokio::join!(several, release);
    assert_eq!(several, ["E:42601", "Z:I"]);
    busy.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let one = exchange(&mut s, [parse("m", "SELECT 2"), sync()].concat()).await;
    assert_eq!(one, ["1", "Z:I"], "acknowledged without the busy server");
    busy.batch_execute("COMMIT").await.unwrap();
    assert_eq!(exchange(&mut s, [bind_execute("m"), sync()].concat()).await, ["2", "D:2", "C", "Z:I"]);
}

/// A statement acknowledged while every server was busy is checked by the first server given it,
/// at its first Bind: if that server refuses the text (a table that does not exist), the client
/// gets the server's error there, and the name is free again, as PostgreSQL's refused Parse never
/// took it (helper-177: the name stayed taken, 42P05 on every Parse of it after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_acknowledged_while_servers_were_busy_is_free_again_when_its_text_is_refused() {
    let pg = Cluster::start();
    let gw = one_server(&pg).await;
    let busy = connect(&gw).await;
    busy.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let mut s = raw_login(addr(&gw)).await;
    let acknowledged =
        exchange(&mut s, [parse("g1", "SELECT nosuchcol FROM nosuchtable"), sync()].concat()).await;
    assert_eq!(acknowledged, ["1", "Z:I"], "acknowledged without the busy server");
    busy.batch_execute("COMMIT").await.unwrap();
    assert_eq!(exchange(&mut s, [bind_execute("g1"), sync()].concat()).await, ["E:42P01", "Z:I"]);
    let again = exchange(&mut s, [parse("g1", "SELECT 'g1ok'"), sync()].concat()).await;
    assert_eq!(again, ["1", "Z:I"], "the name is free");
    assert_eq!(exchange(&mut s, [bind_execute("g1"), sync()].concat()).await, ["2", "D:g1ok", "C", "Z:I"]);
    // A statement skipped after an error is not refused: its name stays.
    busy.batch_execute("BEGIN; SELECT 1").await.unwrap();
    assert_eq!(exchange(&mut s, [parse("g2", "SELECT 2"), sync()].concat()).await, ["1", "Z:I"]);
    busy.batch_execute("COMMIT").await.unwrap();
    let skipped = [parse("", "SELECT 1/0"), bind_execute(""), bind_execute("g2"), sync()].concat();
    assert_eq!(exchange(&mut s, skipped).await, ["1", "E:22012", "Z:I"]);
    assert_eq!(exchange(&mut s, [bind_execute("g2"), sync()].concat()).await, ["2", "D:2", "C", "Z:I"]);
}

/// After an error PostgreSQL skips the rest of the batch up to its Sync: a Parse of the unnamed
/// statement there does not happen, and the unnamed statement stays the one that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_parse_of_the_unnamed_statement_leaves_the_one_before() {
    let pg = Cluster::start();
    let gw = one_server(&pg).await;
    let mut s = raw_login(addr(&gw)).await;
    let first = [parse("", "SELECT 1/0"), bind_execute(""), parse("", "SELECT 42"), sync()].concat();
    // The division of constants fails as it is planned, at the Bind.
    assert_eq!(exchange(&mut s, first).await, ["1", "E:22012", "Z:I"]);
    // Another client uses the server in between.
    let other = connect(&gw).await;
    other.simple_query("SELECT 7").await.unwrap();
    assert_eq!(exchange(&mut s, [bind_execute(""), sync()].concat()).await, ["E:22012", "Z:I"]);
}

/// DEALLOCATE in a failed transaction is refused (25P02) and deallocates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_in_a_failed_transaction_keeps_the_statements() {
    let pg = Cluster::start();
    let gw = one_server(&pg).await;
    let c = connect(&gw).await;
    c.batch_execute("PREPARE sq AS SELECT 5").await.unwrap();
    let named = c.prepare("SELECT 6").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(first_value(&c, "SELECT 1/0").await, Err("22012".into()));
    for deallocate in ["DEALLOCATE ALL", "DEALLOCATE sq"] {
        assert_eq!(first_value(&c, deallocate).await, Err("25P02".into()), "{deallocate}");
    }
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(first_value(&c, "EXECUTE sq").await, Ok("5".into()));
    assert_eq!(c.query_one(&named, &[]).await.unwrap().get::<_, i32>(0), 6);
}

/// DEALLOCATE of a name the client no longer has fails (26000), though a copy of the statement
/// it deallocated is still on a server pgpilot used for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deallocate_fails_as_in_postgresql() {
    let pg = Cluster::start();
    let gw = servers(&pg, 2).await;
    let c = connect(&gw).await;
    let busy = connect(&gw).await;
    c.batch_execute("PREPARE q1 AS SELECT 1").await.unwrap();
    // Run it on both servers, so both hold a copy.
    busy.batch_execute("BEGIN").await.unwrap();
    assert_eq!(first_value(&c, "EXECUTE q1").await, Ok("1".into()));
    busy.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(first_value(&c, "EXECUTE q1").await, Ok("1".into()));
    assert_eq!(first_value(&busy, "SELECT 2").await, Ok("2".into()));
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(first_value(&c, "DEALLOCATE q1").await, Ok(String::new()));
    for _ in 0..4 {
        assert_eq!(first_value(&c, "DEALLOCATE q1").await, Err("26000".into()));
    }
    assert_eq!(first_value(&c, "EXECUTE q1").await, Err("26000".into()));
}

/// DEALLOCATE among other statements of a Query counts in their order, and stands though a later
/// statement fails: the statement is gone on every server, as in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_among_other_statements_drops_the_statement_everywhere() {
    let pg = Cluster::start();
    let gw = servers(&pg, 2).await;
    let c = connect(&gw).await;
    let other = connect(&gw).await;
    for (name, request) in [
        ("d1", "DEALLOCATE d1; SELECT 1"),
        ("d2", "DEALLOCATE d2; SELECT 1/0"),
        ("d3", "DEALLOCATE ALL; SELECT 1/0"),
        ("d4", "PREPARE d4 AS SELECT 4; DEALLOCATE d4"),
    ] {
        if !request.starts_with("PREPARE") {
            c.batch_execute(&format!("PREPARE {name} AS SELECT 1")).await.unwrap();
        }
        let _ = first_value(&c, request).await;
        // Whichever server the client lands on, with the other one busy or not.
        for busy in [false, true] {
            if busy {
                other.batch_execute("BEGIN").await.unwrap();
            }
            let run = first_value(&c, &format!("EXECUTE {name}")).await;
            assert_eq!(run, Err("26000".into()), "{request}, other server busy: {busy}");
            if busy {
                other.batch_execute("COMMIT").await.unwrap();
            }
        }
    }
}

/// A Parse of a name in use inside a failed transaction gets 25P02, as PostgreSQL checks the
/// transaction before the name; outside one, 42P05.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_parse_in_a_failed_transaction_gets_25p02() {
    let pg = Cluster::start();
    let gw = one_server(&pg).await;
    let mut s = raw_login(addr(&gw)).await;
    assert_eq!(exchange(&mut s, [parse("s1", "SELECT 1"), sync()].concat()).await, ["1", "Z:I"]);
    assert_eq!(exchange(&mut s, [parse("s1", "SELECT 2"), sync()].concat()).await, ["E:42P05", "Z:I"]);
    assert_eq!(exchange(&mut s, query_message("BEGIN")).await, ["C", "Z:T"]);
    assert_eq!(exchange(&mut s, query_message("SELECT 1/0")).await, ["E:22012", "Z:E"]);
    assert_eq!(exchange(&mut s, [parse("s1", "SELECT 2"), sync()].concat()).await, ["E:25P02", "Z:E"]);
    // Texts that end the transaction, and an empty one, are let through that check.
    for text in ["COMMIT", "ROLLBACK", "", "-- nothing"] {
        let refused = exchange(&mut s, [parse("s1", text), sync()].concat()).await;
        assert_eq!(refused, ["E:42P05", "Z:E"], "{text:?}");
    }
}

/// DEALLOCATE sent with the extended protocol (pgJDBC, Npgsql) of a name the client no longer has
/// fails with 26000 on whichever server it lands, and leaves no server believed to hold what it
/// does not: the next client's statement of that name runs everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_deallocate_of_a_name_gone_fails_and_leaves_the_servers_known() {
    let pg = Cluster::start();
    let gw = servers(&pg, 2).await;
    let mut s = raw_login(addr(&gw)).await;
    let busy = connect(&gw).await;
    assert_eq!(exchange(&mut s, query_message("PREPARE sq AS SELECT 5")).await, ["C", "Z:I"]);
    for hold in [true, false, true, false] {
        if hold {
            busy.batch_execute("BEGIN").await.unwrap();
        }
        assert_eq!(exchange(&mut s, query_message("EXECUTE sq")).await, ["T", "D:5", "C", "Z:I"]);
        if hold {
            busy.batch_execute("COMMIT").await.unwrap();
        }
    }
    let deallocate = [parse("", "DEALLOCATE sq"), bind_execute(""), sync()].concat();
    assert_eq!(exchange(&mut s, deallocate.clone()).await, ["1", "2", "C", "Z:I"]);
    for hold in [true, false, true, false] {
        if hold {
            busy.batch_execute("BEGIN").await.unwrap();
        }
        assert_eq!(exchange(&mut s, deallocate.clone()).await, ["1", "2", "E:26000", "Z:I"]);
        if hold {
            busy.batch_execute("COMMIT").await.unwrap();
        }
    }
    drop(s);
    let next = connect(&gw).await;
    next.batch_execute("PREPARE sq AS SELECT 7").await.unwrap();
    for hold in [true, false, true, false] {
        if hold {
            busy.batch_execute("BEGIN").await.unwrap();
        }
        assert_eq!(first_value(&next, "EXECUTE sq").await, Ok("7".into()), "held: {hold}");
        if hold {
            busy.batch_execute("COMMIT").await.unwrap();
        }
    }
}

/// A client's SQL-prepared statement that pgpilot prepares again on a server that lacks it, and
/// that PREPARE fails there (a lock timeout, a table dropped): the client's EXECUTE gets that
/// error, as PostgreSQL's EXECUTE would have given it, not "does not exist" (26000) or, in a
/// transaction, "current transaction is aborted" (25P02) (helper-163).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prepare_again_gives_the_client_its_error() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE lt (a int); CREATE TABLE dt (a int)");
    let gw = servers(&pg, 3).await;
    let a = connect(&gw).await;
    a.batch_execute(
        "SET lock_timeout = '200ms'; PREPARE sp AS SELECT a FROM lt; PREPARE dp AS SELECT a FROM dt",
    )
    .await
    .unwrap();
    // The server holding a's statements is held by b: a's next requests go to servers without them.
    let b = connect(&gw).await;
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let (direct, conn) =
        tokio_postgres::connect(&pg.conninfo("postgres", "postgres"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    direct.batch_execute("BEGIN; LOCK lt IN ACCESS EXCLUSIVE MODE").await.unwrap();
    assert_eq!(
        first_value(&a, "EXECUTE sp").await,
        Err("55P03".into()),
        "the lock timeout, as PostgreSQL says"
    );
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(first_value(&a, "EXECUTE sp").await, Err("55P03".into()), "in a transaction too");
    a.batch_execute("ROLLBACK").await.unwrap();
    direct.batch_execute("ROLLBACK; DROP TABLE dt").await.unwrap();
    assert_eq!(first_value(&a, "EXECUTE dp").await, Err("42P01".into()), "the table is gone");
    assert_eq!(first_value(&a, "EXECUTE sp").await, Ok(String::new()), "the lock is gone: it runs");
    let b_pid = first_value(&b, "SELECT pg_backend_pid()").await.unwrap();
    let a_pid = first_value(&a, "SELECT pg_backend_pid()").await.unwrap();
    assert_ne!(a_pid, b_pid, "a ran on servers other than the one b holds");
    b.batch_execute("COMMIT").await.unwrap();
    gw.shutdown().await;
}

/// A SQL PREPARE of a name the client holds from a protocol Parse fails with 42P05, as in
/// PostgreSQL, where both share one namespace (it was let through, since pgpilot keeps the Parse
/// under a name of its own); the protocol statement stays, and another client on the same server
/// may PREPARE that name for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_prepare_of_a_name_held_by_a_parse_fails_with_42p05() {
    let pg = Cluster::start();
    let gw = one_server(&pg).await;
    let mut s = raw_login(addr(&gw)).await;
    assert_eq!(exchange(&mut s, [parse("s1", "SELECT 1"), sync()].concat()).await, ["1", "Z:I"]);
    let refused = exchange(&mut s, query_message("PREPARE s1 AS SELECT 2")).await;
    assert_eq!(refused, ["E:42P05", "Z:I"]);
    assert_eq!(exchange(&mut s, query_message("BEGIN")).await, ["C", "Z:T"]);
    let refused = exchange(&mut s, query_message("PREPARE s1 AS SELECT 2")).await;
    assert_eq!(refused, ["E:42P05", "Z:E"], "in a transaction");
    let refused = exchange(&mut s, query_message("PREPARE s1 AS SELECT 2")).await;
    assert_eq!(refused, ["E:25P02", "Z:E"], "in the failed transaction");
    assert_eq!(exchange(&mut s, query_message("ROLLBACK")).await, ["C", "Z:I"]);
    let run = exchange(&mut s, [bind_execute("s1"), sync()].concat()).await;
    assert_eq!(run, ["2", "D:1", "C", "Z:I"], "the protocol statement stays");
    // Another client on the same server: the name is free for it.
    let other = connect(&gw).await;
    assert_eq!(first_value(&other, "PREPARE s1 AS SELECT 3").await, Ok(String::new()));
    assert_eq!(first_value(&other, "EXECUTE s1").await, Ok("3".into()));
    drop(other);
    let run = exchange(&mut s, [bind_execute("s1"), sync()].concat()).await;
    assert_eq!(run, ["2", "D:1", "C", "Z:I"], "still the client's own");
    gw.shutdown().await;
}
