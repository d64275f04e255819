//! The wire protocol through the gateway: simple and extended queries, pipelining, COPY, errors,
//! notices, cancel requests, malformed input.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use pgpilot_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    // Simple protocol (psql).
    assert_eq!(psql(&gw, "postgres", "SELECT 1 + 1").unwrap(), "2");
    assert_eq!(psql(&gw, "postgres", "SELECT 'a'; SELECT 'b'").unwrap(), "a\nb");
    // Extended protocol with parameters and binary results (tokio-postgres).
    let c = connect(&gw).await;
    let row = c.query_one("SELECT $1::int8 * 2, $2::text || '!'", &[&21i64, &"hi"]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");
    // A statement prepared once and reused across transactions.
    let stmt = c.prepare("SELECT $1::int + 1").await.unwrap();
    for i in 0..20 {
        let r = c.query_one(&stmt, &[&i]).await.unwrap();
        assert_eq!(r.get::<_, i32>(0), i + 1);
    }
    // Errors come back with their SQLSTATE and the session goes on.
    let err = c.simple_query("SELECT * FROM no_such_table").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"));
    assert_eq!(c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0), 7);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_pipelining() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(id int primary key, v text)");
    let gw = start(config_for(&pg)).await;
    let mut c = connect(&gw).await;
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1, 'a')", &[]).await.unwrap();
    tx.execute("INSERT INTO t VALUES (2, 'b')", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (3, 'c')", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "2");
    // Pipelined extended queries: tokio-postgres sends them without waiting for each answer.
    let values: Vec<i32> = (0..50).collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        values.iter().map(|i| [i as _]).collect();
    let futs: Vec<_> = params.iter().map(|p| c.query_one("SELECT $1::int", p)).collect();
    let rows = futures::future::join_all(futs).await;
    for (i, r) in rows.into_iter().enumerate() {
        assert_eq!(r.unwrap().get::<_, i32>(0), i as i32);
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE items(id int, name text)");
    let gw = start(config_for(&pg)).await;
    let c = connect(&gw).await;
    let sink = c.copy_in("COPY items FROM STDIN").await.unwrap();
    let mut sink = Box::pin(sink);
    // Enough data to cross the streaming threshold in single CopyData messages.
    let big_name = "x".repeat(200_000);
    for i in 0..400 {
        let line = if i % 200 == 0 { format!("{i}\t{big_name}\n") } else { format!("{i}\tname{i}\n") };
        sink.send(bytes::Bytes::from(line)).await.unwrap();
    }
    let n = sink.as_mut().finish().await.unwrap();
    assert_eq!(n, 400);
    let expected: usize =
        (0..400).map(|i| if i % 200 == 0 { 200_000 } else { format!("name{i}").len() }).sum();
    assert_eq!(
        pg.psql("postgres", "SELECT count(*), sum(length(name)) FROM items"),
        format!("400|{expected}")
    );
    let stream = c.copy_out("COPY (SELECT id, name FROM items ORDER BY id) TO STDOUT").await.unwrap();
    let chunks: Vec<_> = stream.collect().await;
    let total: usize = chunks.into_iter().map(|c| c.unwrap().len()).sum();
    assert!(total > 400_000, "copied out {total} bytes");
    // A failed COPY leaves the session usable (tokio-postgres's own copy_in cannot recover from a
    // failed prepare even against PostgreSQL directly, so the simple protocol is used here).
    let err = c.batch_execute("COPY no_such FROM STDIN").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"));
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    gw.shutdown().await;
}

/// pg8000 sends Bind, Execute and Sync together, and its COPY data after the CopyInResponse: the
/// server ignores that Sync during COPY IN. When the data fails, the server waits for the client's
/// next Sync, and the server connection must stay with the client until then: it was released
/// while still discarding, and the next client given it hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_in_keeps_its_server_until_the_clients_sync() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE copy_fail(k text, v int)");
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 1;
    let gw = start(config).await;
    let mut raw = raw_login(addr(&gw)).await;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::parse(&mut out, b"", b"COPY copy_fail FROM STDIN", &[0, 0]);
    pgpilot_wire::frontend::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    read_until_ready(&mut raw).await;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::bind(&mut out, b"", b"", &[0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(b"H\0\0\0\x04E\0\0\0\x09\0\0\0\0\0H\0\0\0\x04");
    pgpilot_wire::frontend::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    while !backend_messages(&got).iter().any(|m| m.0 == b'G') {
        got.extend(read_until_any(&mut raw).await);
    }
    raw.write_all(&message(b'd', b"k1\tnot_an_int\n")).await.unwrap();
    let mut got = Vec::new();
    while !backend_messages(&got).iter().any(|m| m.0 == b'E') {
        got.extend(read_until_any(&mut raw).await);
    }
    assert!(String::from_utf8_lossy(&got).contains("C22P02"), "{:?}", String::from_utf8_lossy(&got));
    // The server skips to the client's Sync; meanwhile no other client may get it.
    let other = tokio::spawn({
        let conninfo = conninfo(&gw, "postgres", "postgres");
        async move {
            let c = try_connect(&conninfo).await.unwrap();
            c.simple_query("SELECT 2").await.map(|_| ())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut out = message(b'c', b"");
    out.extend_from_slice(&message(b'S', b""));
    raw.write_all(&out).await.unwrap();
    let got = read_until_ready(&mut raw).await;
    assert_eq!(backend_messages(&got).last().map(|m| m.0), Some(b'Z'));
    raw.write_all(&query_message("SELECT 1")).await.unwrap();
    let got = read_until_ready(&mut raw).await;
    let tags = message_tags(&got);
    assert_eq!(tags, b"TDCZ".to_vec(), "{:?}", String::from_utf8_lossy(&got));
    tokio::time::timeout(Duration::from_secs(5), other)
        .await
        .expect("the next client got a server still discarding")
        .unwrap()
        .unwrap();
    gw.shutdown().await;
}

/// An extended-protocol COPY FROM STDIN ended by the client (CopyDone or CopyFail) still owes the
/// server a Sync: the one sent with the Execute was ignored during COPY. A client that leaves
/// before sending it must not leave its server in the pool: the next client's query ran in the
/// abandoned transaction and committed its rows (and got its CommandComplete), or, after a
/// CopyFail, was discarded while the server skipped to a Sync and hung. Found by helper-194.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_an_ended_extended_copy_before_its_sync_leaves_no_dirty_server() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE abandoned(k int, v text)");
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 1;
    let gw = start(config).await;
    let copy_done = message(b'c', b"");
    let copy_fail = message(b'f', b"oops\0");
    let endings = [(&copy_done, false), (&copy_done, true), (&copy_fail, false), (&copy_fail, true)];
    // After the CopyInResponse came, or the whole COPY sent at once.
    for ((ending, terminate), pipelined) in endings.into_iter().flat_map(|e| [(e, false), (e, true)]) {
        let case =
            format!("CopyFail: {}, Terminate: {terminate}, pipelined: {pipelined}", *ending == copy_fail);
        let mut raw = raw_login(addr(&gw)).await;
        let mut out = parse("", "COPY abandoned FROM STDIN");
        out.extend(bind_execute(""));
        out.extend(sync());
        if !pipelined {
            raw.write_all(&out).await.unwrap();
            out.clear();
            await_copy_in(&mut raw).await;
        }
        out.extend(message(b'd', b"1\tabandoned\n"));
        out.extend(ending.clone());
        if terminate {
            out.extend(message(b'X', b""));
        }
        raw.write_all(&out).await.unwrap();
        if pipelined && !terminate {
            // pgpilot has seen the COPY begin.
            await_copy_in(&mut raw).await;
        } else if pipelined {
            // Said goodbye: read what comes until pgpilot closes.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest)).await;
        }
        drop(raw);
        let next = connect(&gw).await;
        let count = next.simple_query("SELECT count(*) FROM abandoned");
        let rows = tokio::time::timeout(Duration::from_secs(5), count)
            .await
            .unwrap_or_else(|_| panic!("the next client hung ({case})"))
            .expect("the next client's query failed");
        let counts: Vec<&str> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
                _ => None,
            })
            .collect();
        assert_eq!(counts, ["0"], "the next client's answer ({case})");
        let committed = pg.psql("postgres", "SELECT count(*) FROM abandoned");
        assert_eq!(committed, "0", "the abandoned rows were committed ({case})");
    }
    gw.shutdown().await;
}

/// Reads until the server's CopyInResponse.
async fn await_copy_in(raw: &mut tokio::net::TcpStream) {
    let mut got = Vec::new();
    while !backend_messages(&got).iter().any(|m| m.0 == b'G') {
        got.extend(read_until_any(raw).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_ends_pg_sleep() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let c = connect(&gw).await;
    let token = c.cancel_token();
    let start = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let err = c.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    gw.shutdown().await;
}

/// A cancel that arrives while pgpilot gives the client's settings to a new server (its SET waits
/// on a lock): the request is given up as cancelled (57014), not moved to another server and run
/// once the lock goes (helper-163).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_settings_sync_cancels_the_request() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE cancelled (id int)");
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 3;
    let gw = start(config).await;
    let a = connect(&gw).await;
    a.batch_execute("SET default_text_search_config = 'pg_catalog.german'").await.unwrap();
    // b holds the server that has a's setting: a's next request syncs it on another server. (a's
    // session gives that server back just after its answer: on a busy machine b came first.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = connect(&gw).await;
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let (direct, conn) =
        tokio_postgres::connect(&pg.conninfo("postgres", "postgres"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    direct.batch_execute("BEGIN; LOCK pg_catalog.pg_ts_config IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let token = a.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let started = Instant::now();
    let insert =
        tokio::time::timeout(Duration::from_secs(5), a.batch_execute("INSERT INTO cancelled VALUES (1)"));
    let err = insert.await.expect("the cancel was lost: the request still waits").unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    direct.batch_execute("ROLLBACK").await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
    let text_search = a.query_one("SHOW default_text_search_config", &[]).await.unwrap();
    assert_eq!(text_search.get::<_, String>(0), "pg_catalog.german", "the session goes on, its setting kept");
    let count = direct.query_one("SELECT count(*) FROM cancelled", &[]).await.unwrap();
    assert_eq!(count.get::<_, i64>(0), 0, "the cancelled INSERT never ran");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_parameter_status_reach_the_client() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let out = psql(
        &gw,
        "postgres",
        "DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$; SET TimeZone = 'Asia/Tokyo'; SHOW TimeZone",
    );
    assert_eq!(out.unwrap(), "Asia/Tokyo");
    let c = connect(&gw).await;
    c.batch_execute("SET application_name = 'tester'").await.unwrap();
    let r = c.query_one("SELECT current_setting('application_name')", &[]).await.unwrap();
    assert_eq!(r.get::<_, String>(0), "tester");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_close_only_that_client() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.max_message_size = 1 << 20;
    let gw = start(config).await;
    let healthy = connect(&gw).await;
    // A negative length (as an Int32; 4 GB read unsigned): refused from the header alone, with 08P01.
    let mut s = raw_login(addr(&gw)).await;
    s.write_all(b"Q\xff\xff\xff\xf0").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await.unwrap();
    assert_eq!(reply[0], b'E', "expected an ErrorResponse");
    assert!(String::from_utf8_lossy(&reply).contains("08P01"));
    // The same with part of the body already sent: the error still arrives, not a reset that
    // destroys it (the unread body is drained before the socket closes).
    let mut s = raw_login(addr(&gw)).await;
    let mut huge = b"Q\xff\xff\xff\xf0".to_vec();
    huge.resize(256 * 1024, b'x');
    let _ = s.write_all(&huge).await;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await.unwrap();
    assert!(read.is_ok(), "the connection was reset: {read:?}, read {:?}", String::from_utf8_lossy(&reply));
    assert!(String::from_utf8_lossy(&reply).contains("08P01"), "{reply:?}");
    // A length below 4, an unknown message type, and one announcing a body it never sends: an
    // unknown type is refused on its first byte, as PostgreSQL does, not after its body.
    for bad in [&b"Q\0\0\0\x02"[..], &b"?\0\0\0\x04"[..], &b"y\0\x01\x86\xa0"[..]] {
        let mut s = raw_login(addr(&gw)).await;
        s.write_all(bad).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await.unwrap();
        assert!(String::from_utf8_lossy(&reply).contains("08P01"), "{bad:?}: {reply:?}");
    }
    // A Query whose text has no end: PostgreSQL's error, and the session goes on (in a
    // transaction, which the error fails, as PostgreSQL's does).
    let mut s = raw_login(addr(&gw)).await;
    for (before, status) in [(None, b'I'), (Some("BEGIN"), b'E')] {
        if let Some(sql) = before {
            s.write_all(&query_message(sql)).await.unwrap();
            until_ready_for_query(&mut s).await;
        }
        s.write_all(&message(b'Q', b"SELECT 1")).await.unwrap();
        let got = until_ready_for_query(&mut s).await;
        let msgs = backend_messages(&got);
        assert!(String::from_utf8_lossy(msgs[0].1).contains("C08P01"), "{:?}", String::from_utf8_lossy(&got));
        assert_eq!(msgs.last().map(|m| m.1), Some(&[status][..]), "{:?}", String::from_utf8_lossy(&got));
    }
    s.write_all(&query_message("ROLLBACK")).await.unwrap();
    until_ready_for_query(&mut s).await;
    // A Sync with a body: PostgreSQL's 08P01 "invalid message format", and the session goes on.
    s.write_all(&message(b'S', b"junk")).await.unwrap();
    let got = until_ready_for_query(&mut s).await;
    assert!(
        String::from_utf8_lossy(&got).contains("Minvalid message format"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    s.write_all(&query_message("SELECT 7")).await.unwrap();
    assert!(backend_messages(&read_until_ready(&mut s).await).iter().any(|m| m.0 == b'D'));
    // A startup packet that is too long.
    let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(&[0, 0x10, 0, 0, 0, 3, 0, 0]).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("08P01"));
    // Protocol 4.0: not spoken, as PostgreSQL answers it (0A000).
    let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(&[0, 0, 0, 17, 0, 4, 0, 0, b'u', b's', b'e', b'r', 0, b'x', 0, 0, 0]).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("0A000"), "{:?}", String::from_utf8_lossy(&reply));
    // A Latin-1 application_name: told which parameter is not UTF-8 (22021), not "invalid layout".
    let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    let body = b"\0\x03\0\0user\0postgres\0application_name\0caf\xe9\0\0";
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(body);
    s.write_all(&packet).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.contains("C22021") && reply.contains("\"application_name\" is not valid UTF-8"),
        "{reply:?}"
    );
    // Everyone else is unaffected.
    assert_eq!(healthy.query_one("SELECT 5", &[]).await.unwrap().get::<_, i32>(0), 5);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssapi_encryption_is_declined_and_ssl_refused_when_off() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await.unwrap(); // GSSENCRequest
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"N");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap(); // SSLRequest
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"N");
    s.write_all(&startup_packet()).await.unwrap();
    read_until_ready(&mut s).await;
    // Asked again after the refusal, as PostgreSQL answers it: a protocol it does not speak.
    for request in [[0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]] {
        let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
        s.write_all(&request).await.unwrap();
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"N");
        s.write_all(&request).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await.unwrap();
        assert!(String::from_utf8_lossy(&reply).contains("C0A000"), "{:?}", String::from_utf8_lossy(&reply));
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_and_extended() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    pgbench(pg.addr().parse().unwrap(), &["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended"] {
        let out = pgbench(addr(&gw), &["-M", mode, "-c", "8", "-j", "2", "-t", "200", "-n"]);
        assert!(out.contains("number of transactions actually processed: 1600/1600"), "{mode}: {out}");
        assert!(out.contains("number of failed transactions: 0"), "{mode}: {out}");
    }
    gw.shutdown().await;
}

/// A client asking for protocol 3.2 (libpq 18 with max_protocol_version=latest) is told the
/// version pgpilot speaks, whole, as PostgreSQL tells it, and carries on in 3.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_protocol_request_is_answered_with_version_3_0() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let params = [("user", "postgres"), ("database", "postgres"), ("_pq_.made_up", "x")];
    let startup = startup_packet_with((3 << 16) | 2, &params);
    let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(&startup).await.unwrap();
    let got = read_until_ready(&mut s).await;
    let messages = backend_messages(&got);
    let (tag, negotiate) = messages[0];
    assert_eq!(tag, b'v', "{messages:?}");
    assert_eq!(
        u32::from_be_bytes(negotiate[..4].try_into().unwrap()),
        3 << 16,
        "the version, major and minor"
    );
    assert_eq!(u32::from_be_bytes(negotiate[4..8].try_into().unwrap()), 1);
    assert_eq!(&negotiate[8..], b"_pq_.made_up\0");
    assert!(messages.iter().any(|(t, _)| *t == b'R'), "the login went on: {messages:?}");
    gw.shutdown().await;
}

/// Large messages are buffered whole, so all clients' large messages together are bounded (twice
/// max_message_size): a client whose message would go past that budget is refused with 53200, and
/// the budget comes back when a client's message is handled or it leaves. What a client holds is
/// what it sent, not what it announced: clients stalled after announcing the largest message allowed
/// refused every other large message for as long as they stayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_of_all_clients_share_a_bounded_budget() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.max_message_size = 4 << 20;
    let gw = start(config).await;
    let query_header = |len: usize| {
        let mut m = vec![b'Q'];
        m.extend_from_slice(&((len + 4) as u32).to_be_bytes());
        m
    };
    let big = 3 << 20;
    let big_query = || query_message(&format!("SELECT 42 /*{}*/", "x".repeat(big - 20)));
    // Two clients announce the largest message allowed and send nothing more.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = raw_login(addr(&gw)).await;
        s.write_all(&query_header((4 << 20) - 100)).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut whole = raw_login(addr(&gw)).await;
    whole.write_all(&big_query()).await.unwrap();
    let got = read_until_ready(&mut whole).await;
    assert!(
        backend_messages(&got).iter().any(|(t, _)| *t == b'D'),
        "a big query refused beside stalled ones"
    );
    // (Each stalled client holds room for the first MiB of its message.)
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two clients each send all but the end of a 3 MiB query: 6 of the 8 MiB.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = raw_login(addr(&gw)).await;
        let mut start = query_header(big);
        start.extend(vec![b' '; big - 1]);
        s.write_all(&start).await.unwrap();
        holders.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = raw_login(addr(&gw)).await;
    // Refused part of the way: the rest of the write may meet a closed connection.
    let _ = refused.write_all(&big_query()).await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut answer)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(answer[0] == b'E' && text.contains("53200"), "{text}");
    // Others are not affected, and the budget comes back when a holder leaves.
    let c = connect(&gw).await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(holders.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut whole = raw_login(addr(&gw)).await;
    whole.write_all(&big_query()).await.unwrap();
    let got = read_until_ready(&mut whole).await;
    assert!(backend_messages(&got).iter().any(|(t, _)| *t == b'D'), "the big query ran once there was room");
    gw.shutdown().await;
}

/// At login a client is told the parameters PostgreSQL reports, with its own values where it set
/// them, and nothing PostgreSQL never reports (a driver would never hear of their changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_reports_what_postgresql_reports() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let params = [
        ("user", "postgres"),
        ("database", "postgres"),
        ("extra_float_digits", "2"),
        ("options", "-c statement_timeout=1234 -c TimeZone=Asia/Tokyo"),
    ];
    let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(&startup_packet_with(3 << 16, &params)).await.unwrap();
    let got = read_until_ready(&mut s).await;
    let reported: Vec<String> = backend_messages(&got)
        .into_iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, body)| String::from_utf8_lossy(body).replace('\0', "="))
        .collect();
    assert!(reported.iter().any(|p| p.starts_with("TimeZone=Asia/Tokyo")), "{reported:?}");
    assert!(reported.iter().any(|p| p.starts_with("server_version=")), "{reported:?}");
    for unreported in ["extra_float_digits", "statement_timeout", "options"] {
        assert!(!reported.iter().any(|p| p.starts_with(unreported)), "{unreported}: {reported:?}");
    }
    gw.shutdown().await;
}

/// A Parse's count of parameter types is unsigned, as PostgreSQL reads it: libpq and pgJDBC send
/// types, and a bulk INSERT or `= ANY(ARRAY[$1, ..., $40000])` has more than 32,767 of them (the
/// client was closed with "malformed Parse message").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_of_40000_typed_parameters_runs() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let mut s = raw_login(addr(&gw)).await;
    let count: u16 = 40_000;
    let list: Vec<String> = (1..=count).map(|i| format!("${i}")).collect();
    let sql = format!("SELECT count(*) FROM unnest(ARRAY[{}]) AS v WHERE v > 0", list.join(","));
    let mut parse = b"\0".to_vec();
    parse.extend_from_slice(sql.as_bytes());
    parse.push(0);
    parse.extend_from_slice(&count.to_be_bytes());
    parse.extend(std::iter::repeat_n([0u8, 0, 0, 23], count as usize).flatten());
    let mut bind = b"\0\0\0\0".to_vec();
    bind.extend_from_slice(&count.to_be_bytes());
    for _ in 0..count {
        bind.extend_from_slice(&1i32.to_be_bytes());
        bind.push(b'7');
    }
    bind.extend_from_slice(&[0, 0]);
    let mut out = message(b'P', &parse);
    out.extend(message(b'B', &bind));
    out.extend(message(b'E', b"\0\0\0\0\0"));
    out.extend(message(b'S', b""));
    s.write_all(&out).await.unwrap();
    let got = read_until_ready(&mut s).await;
    let msgs = backend_messages(&got);
    assert!(!msgs.iter().any(|m| m.0 == b'E'), "{:?}", String::from_utf8_lossy(&got));
    let row = msgs.iter().find(|m| m.0 == b'D').expect("a row");
    assert!(row.1.ends_with(b"40000"), "{:?}", String::from_utf8_lossy(row.1));
    gw.shutdown().await;
}

/// A malformed Parse, Bind, Describe or Close in an extended batch gets PostgreSQL's own ERROR
/// (08P01) and the rest of the batch is skipped to Sync; the session goes on, as it does directly
/// (transaction pooling closed the client with a FATAL "malformed Parse message").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_extended_messages_fail_as_on_postgresql_and_the_session_goes_on() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let direct: std::net::SocketAddr = pg.addr().parse().unwrap();
    let cases = [
        ("a Parse declaring two types and holding one", message(b'P', b"s\0SELECT $1\0\0\x02\0\0\0\x17")),
        ("a Parse with bytes after its types", message(b'P', b"s\0SELECT 1\0\0\0junk")),
        ("a Bind whose names do not end", message(b'B', b"portal")),
        ("a Describe whose name does not end", message(b'D', b"Sx")),
        ("a Close whose name does not end", message(b'C', b"Sx")),
    ];
    for (what, bad) in &cases {
        for in_transaction in [false, true] {
            let mut seen = Vec::new();
            for to in [direct, addr(&gw)] {
                let mut s = raw_login(to).await;
                if in_transaction {
                    s.write_all(&query_message("BEGIN")).await.unwrap();
                    until_ready_for_query(&mut s).await;
                }
                let mut out = message(b'P', b"\0SELECT 1\0\0\0");
                out.extend_from_slice(bad);
                out.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
                out.extend(message(b'E', b"\0\0\0\0\0"));
                out.extend(message(b'S', b""));
                s.write_all(&out).await.unwrap();
                let got = until_ready_for_query(&mut s).await;
                seen.push(answer_summary(&got));
                // The session goes on.
                let next = if in_transaction { "ROLLBACK; SELECT 7" } else { "SELECT 7" };
                s.write_all(&query_message(next)).await.unwrap();
                let got = until_ready_for_query(&mut s).await;
                assert!(backend_messages(&got).iter().any(|m| m.0 == b'D' && m.1.ends_with(b"7")), "{what}");
            }
            assert_eq!(seen[0], seen[1], "{what}, in a transaction: {in_transaction} (direct, then pgpilot)");
            assert!(seen[0].iter().any(|m| m == "E 08P01"), "{what}: {:?}", seen[0]);
        }
    }
    gw.shutdown().await;
}

/// Each message's type, with an error's SQLSTATE and a ReadyForQuery's status.
fn answer_summary(bytes: &[u8]) -> Vec<String> {
    backend_messages(bytes)
        .iter()
        .map(|(tag, body)| match tag {
            b'E' => {
                let code = body.split(|b| *b == 0).find(|f| f.first() == Some(&b'C')).unwrap_or_default();
                format!("E {}", String::from_utf8_lossy(code.get(1..).unwrap_or_default()))
            }
            b'Z' => format!("Z {}", body[0] as char),
            _ => (*tag as char).to_string(),
        })
        .collect()
}

/// Raw protocol: reads until a ReadyForQuery, whatever its status.
async fn until_ready_for_query(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    while !backend_messages(&got).iter().any(|m| m.0 == b'Z') {
        got.extend(read_until_any(s).await);
    }
    got
}

/// A replication connection is refused (it must never reach a pool others share); `replication`
/// set to any spelling PostgreSQL reads as false is an ordinary session, as there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_connections_are_refused_and_false_spellings_are_ordinary_sessions() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    for (value, ordinary) in [
        ("database", false),
        ("true", false),
        ("on", false),
        ("no", true),
        ("NO", true),
        ("f", true),
        ("False", true),
        ("off", true),
        ("0", true),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
        let params = [("user", "postgres"), ("database", "postgres"), ("replication", value)];
        s.write_all(&startup_packet_with(3 << 16, &params)).await.unwrap();
        let got = read_until_any(&mut s).await;
        let text = String::from_utf8_lossy(&got);
        if ordinary {
            assert!(!text.contains("C0A000"), "replication={value}: {text}");
            assert!(backend_messages(&got).iter().any(|m| m.0 == b'R'), "replication={value}: {text}");
        } else {
            assert!(text.contains("C0A000") && text.contains("replication"), "replication={value}: {text}");
        }
    }
    gw.shutdown().await;
}

/// A cluster with `setup` run in it (when not empty), a gateway in front with a pool of
/// `pool_size`, and a raw-protocol client logged in through it.
async fn raw_client_of(
    setup: &str,
    pool_size: usize,
) -> (Cluster, pgpilot_gateway::Gateway, tokio::net::TcpStream) {
    let pg = Cluster::start();
    if !setup.is_empty() {
        pg.psql("postgres", setup);
    }
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = pool_size;
    let gw = start(config).await;
    let c = raw_login(addr(&gw)).await;
    (pg, gw, c)
}

/// A Bind of `statement` with one text parameter, Execute and Sync.
fn bind_one(statement: &str, param: &str) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(statement.as_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 1]);
    body.extend_from_slice(&(param.len() as u32).to_be_bytes());
    body.extend_from_slice(param.as_bytes());
    body.extend_from_slice(&[0, 0]);
    let mut out = message(b'B', &body);
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    out.extend(sync());
    out
}

/// Sends `bytes`, reads to ReadyForQuery: the tags, and the SQLSTATE and message of any error.
async fn answer(s: &mut tokio::net::TcpStream, bytes: &[u8]) -> (String, Vec<String>) {
    s.write_all(bytes).await.unwrap();
    let got = read_until_ready(s).await;
    let errors = backend_messages(&got)
        .into_iter()
        .filter(|m| m.0 == b'E')
        .map(|(_, body)| {
            let e = pgpilot_wire::error::ErrorFields::parse(body);
            format!("{} {}", e.code, e.message)
        })
        .collect();
    (String::from_utf8(message_tags(&got)).unwrap(), errors)
}

/// What a failed or skipped Parse or Close leaves of the statements, as PostgreSQL has them: a
/// failed Parse of the unnamed statement leaves none (pgpilot ran the previous one, a DELETE,
/// again); a Close skipped after an error closes nothing; a Close and a Parse of one name skipped
/// in one request leave the first statement. Found by helper-124's differential fuzzer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_skipped_statement_messages_leave_what_postgresql_has() {
    let (pg, gw, mut c) =
        raw_client_of("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 5) g", 2).await;
    let mut delete = parse("", "DELETE FROM t WHERE a = $1::int");
    delete.extend(bind_one("", "1"));
    assert_eq!(answer(&mut c, &delete).await.0, "12CZ");
    let mut broken = parse("", "SELEC broken");
    broken.extend(sync());
    assert!(answer(&mut c, &broken).await.1[0].starts_with("42601"));
    let (tags, errors) = answer(&mut c, &bind_one("", "2")).await;
    assert_eq!(
        (tags.as_str(), errors[0].as_str()),
        ("EZ", "26000 unnamed prepared statement does not exist")
    );
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "4", "the DELETE ran again");

    let mut unnamed = parse("", "SELECT $1::int + 1");
    unnamed.extend(sync());
    assert_eq!(answer(&mut c, &unnamed).await.0, "1Z");
    let mut s7 = parse("s7", "SELECT $1::int + 1");
    s7.extend(sync());
    assert_eq!(answer(&mut c, &s7).await.0, "1Z");
    // Each request fails at its first message; the server skips the rest up to the Sync.
    let mut skipped = bind_one("nosuch", "1");
    skipped.truncate(skipped.len() - sync().len());
    skipped.extend(message(b'C', b"S\0"));
    skipped.extend(message(b'C', b"Ss7\0"));
    skipped.extend(parse("s7", "SELECT 'other'"));
    skipped.extend(parse("", "SELECT 'other'"));
    skipped.extend(sync());
    assert!(answer(&mut c, &skipped).await.1[0].starts_with("26000"));
    for statement in ["", "s7"] {
        let (tags, errors) = answer(&mut c, &bind_one(statement, "41")).await;
        assert_eq!(tags, "2DCZ", "{statement:?}: {errors:?}");
    }
    // The server's own error names the client's statement, not pgpilot's copy of it.
    let mut no_params = message(b'B', b"\0s7\0\0\0\0\0\0\0");
    no_params.extend(sync());
    let (_, errors) = answer(&mut c, &no_params).await;
    assert_eq!(
        errors,
        vec!["08P01 bind message supplies 0 parameters, but prepared statement \"s7\" requires 1"]
    );
    gw.shutdown().await;
}

/// A client that leaves in the middle of an extended-protocol COPY FROM STDIN: its server was
/// given back to the pool still copying, and the next client of it was disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_an_extended_copy_in_takes_its_server_with_it() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE c(x int)");
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 1;
    let gw = start(config).await;
    let mut leaver = raw_login(addr(&gw)).await;
    let mut copy = parse("", "COPY c FROM STDIN");
    copy.extend(bind_execute(""));
    copy.extend(sync());
    leaver.write_all(&copy).await.unwrap();
    let got = read_until_any(&mut leaver).await;
    assert!(message_tags(&got).ends_with(b"G"), "{got:?}");
    leaver.write_all(&message(b'd', b"1\n")).await.unwrap();
    drop(leaver);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let mut next = raw_login(addr(&gw)).await;
        // (A new server connection's ParameterStatus may come first.)
        let (tags, errors) = answer(&mut next, &query_message("SELECT 1")).await;
        assert!(tags.ends_with("TDCZ"), "{tags} {errors:?}");
    }
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM c"), "0");
    gw.shutdown().await;
}

/// A statement name the client never prepared is never another client's: one left on the server
/// where pgpilot could not see it (a PREPARE run by a function) gave its rows to the next client
/// that bound the name; PostgreSQL says 26000 on that client's own connection (helper-124).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_client_never_prepared_is_never_another_clients_statement() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE FUNCTION prepare_hidden() RETURNS int LANGUAGE plpgsql AS \
         $$ BEGIN EXECUTE 'PREPARE hidden AS SELECT 42'; RETURN 1; END $$",
    );
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 1;
    let gw = start(config).await;
    let mut leaver = raw_login(addr(&gw)).await;
    assert_eq!(answer(&mut leaver, &query_message("SELECT prepare_hidden()")).await.0, "TDCZ");
    drop(leaver);
    let mut other = raw_login(addr(&gw)).await;
    let mut bind = message(b'B', b"\0hidden\0\0\0\0\0\0\0");
    bind.extend(message(b'E', &[0, 0, 0, 0, 0]));
    bind.extend(sync());
    let (tags, errors) = answer(&mut other, &bind).await;
    assert!(tags.ends_with("EZ"), "{tags}");
    assert_eq!(errors, vec!["26000 prepared statement \"hidden\" does not exist".to_string()]);
    let mut describe = message(b'D', b"Shidden\0");
    describe.extend(sync());
    let (_, errors) = answer(&mut other, &describe).await;
    assert_eq!(errors, vec!["26000 prepared statement \"hidden\" does not exist".to_string()]);
    // Its own SQL PREPARE of the name is its own, bound through the protocol.
    assert_eq!(answer(&mut other, &query_message("PREPARE mine AS SELECT 7")).await.0, "CZ");
    let mut mine = message(b'B', b"\0mine\0\0\0\0\0\0\0");
    mine.extend(message(b'E', &[0, 0, 0, 0, 0]));
    mine.extend(sync());
    assert!(answer(&mut other, &mine).await.0.ends_with("2DCZ"));
    gw.shutdown().await;
}

/// The answers to a request ending in `syncs` Syncs: message tags and errors (code and message).
async fn answers(s: &mut tokio::net::TcpStream, bytes: &[u8], syncs: usize) -> (String, Vec<String>) {
    let (mut tags, mut errors) = answer(s, bytes).await;
    while tags.matches('Z').count() < syncs {
        let got = read_until_ready(s).await;
        tags.push_str(&String::from_utf8(message_tags(&got)).unwrap());
        errors.extend(backend_messages(&got).into_iter().filter(|m| m.0 == b'E').map(|(_, body)| {
            let e = pgpilot_wire::error::ErrorFields::parse(body);
            format!("{} {}", e.code, e.message)
        }));
    }
    (tags, errors)
}

/// The unnamed statement closed after an error (a skipped Parse of it in front, the Close after
/// the Sync, in one write), or dropped by a simple Query pgpilot answers itself (DEALLOCATE ALL),
/// is gone, as in PostgreSQL: pgpilot ran the DELETE again (helper-132's fuzzer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_statement_closed_or_dropped_in_a_pipeline_is_never_run_again() {
    let (pg, gw, mut c) =
        raw_client_of("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 5) g", 2).await;
    let delete = || parse("", "DELETE FROM t WHERE a = $1::int");
    let mut first = delete();
    first.extend(bind_one("", "1"));
    assert_eq!(answer(&mut c, &first).await.0, "12CZ");
    let mut closed = message(b'E', b"nope\0\0\0\0\0");
    closed.extend(parse("", "SELECT 9"));
    closed.extend(sync());
    closed.extend(message(b'C', b"S\0"));
    closed.extend(sync());
    let (tags, errors) = answers(&mut c, &closed, 2).await;
    assert_eq!(tags, "EZ3Z", "{errors:?}");
    let (tags, errors) = answer(&mut c, &bind_one("", "2")).await;
    assert_eq!(
        (tags.as_str(), errors[0].as_str()),
        ("EZ", "26000 unnamed prepared statement does not exist")
    );
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "4", "the closed DELETE ran again");

    let mut parsed = delete();
    parsed.extend(sync());
    assert_eq!(answer(&mut c, &parsed).await.0, "1Z");
    let mut dropped = query_message("DEALLOCATE ALL");
    dropped.extend(bind_one("", "3"));
    let (tags, errors) = answers(&mut c, &dropped, 2).await;
    assert_eq!(tags, "CZEZ", "{errors:?}");
    assert_eq!(errors, vec!["26000 unnamed prepared statement does not exist"]);
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "4", "the dropped DELETE ran");
    gw.shutdown().await;
}

/// A Query pgpilot sends of its own in the middle of a request (here the PREPARE that puts the
/// client's SQL-prepared statement on a server lacking it) drops the server's unnamed statement:
/// the client's is parsed there again before its Bind (helper-132: an unnamed SET, whose value
/// pgpilot reads back with a Query, was gone when bound again: 26000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_survives_a_query_pgpilot_injects() {
    let (_pg, gw, mut c) = raw_client_of("", 2).await;
    assert_eq!(answer(&mut c, &query_message("PREPARE sp AS SELECT 1")).await.0, "CZ");
    // The server that has `sp` is held: the request lands on the other, which lacks it.
    let holder = connect(&gw).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let mut request = parse("", "SELECT 7");
    request.extend(sync());
    request.extend(message(b'B', b"\0sp\0\0\0\0\0\0\0"));
    request.extend(message(b'E', b"\0\0\0\0\0"));
    request.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    request.extend(message(b'E', b"\0\0\0\0\0"));
    request.extend(sync());
    let (tags, errors) = answers(&mut c, &request, 2).await;
    // (A fresh server reports the client's application_name as it takes it: ParameterStatus.)
    assert_eq!(tags.trim_start_matches('S'), "1Z2DC2DCZ", "{errors:?}");
    holder.batch_execute("COMMIT").await.unwrap();
    gw.shutdown().await;
}

/// A Bind with a format per result column of a statement the client never described, refused by
/// a copy pgpilot just prepared on another server, keeps the server's 08P01: 0A000 (result type
/// changed) is only for a client that learned another row type (helper-132's fuzzer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_bind_of_a_statement_never_described_is_08p01_on_any_server() {
    let (_pg, gw, mut c) = raw_client_of("", 2).await;
    let mut prepare = parse("s2", "SELECT 1 AS a");
    prepare.extend(sync());
    assert_eq!(answer(&mut c, &prepare).await.0, "1Z");
    let holder = connect(&gw).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // One parameter for none, two result formats for one column.
    let mut bind = message(b'B', b"\0s2\0\0\0\0\x01\0\0\0\x01x\0\x02\0\0\0\x01");
    bind.extend(message(b'E', b"\0\0\0\0\0"));
    bind.extend(sync());
    let (_, errors) = answer(&mut c, &bind).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("08P01 bind message supplies 1 parameters"), "{errors:?}");
    holder.batch_execute("COMMIT").await.unwrap();
    gw.shutdown().await;
}
