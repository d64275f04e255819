//! The load generator against real PostgreSQL: its counts, percentiles, errors, rate limit and
//! connection mode must agree with what the server saw.

mod common;

use std::time::Duration;

use common::*;
use pgpilot_bench::{Protocol, Target, Workload};
use pgpilot_testkit::Cluster;

const LOG_TABLE: &str = "CREATE TABLE bench_log (id bigserial PRIMARY KEY, client int NOT NULL, v bigint)";

#[test]
fn transaction_counts_match_the_rows_written_in_every_protocol() {
    let cluster = Cluster::start();
    cluster.psql("postgres", LOG_TABLE);
    let script = "\\set v random(1, 1000000)\nBEGIN;\nINSERT INTO bench_log (client, v) VALUES (:client_id, :v);\nCOMMIT;\n";
    let mut written = 0;
    for protocol in [Protocol::Simple, Protocol::Extended, Protocol::Prepared] {
        let mut c = config(vec![target(&cluster, "db")], vec![inline("log", script, 1)], 4, per_client(50));
        c.protocol = protocol;
        let report = pgpilot_bench::run(c).unwrap();
        let t = only(&report);
        assert_eq!((t.transactions, t.failed), (200, 0), "{protocol}: {t:?}");
        assert_consistent(t);
        written += 200;
        assert_eq!(count(&cluster, "SELECT count(*) FROM bench_log"), written, "{protocol}");
        assert_eq!(count(&cluster, "SELECT count(DISTINCT client) FROM bench_log"), 4);
    }
    // A duration-limited run: whatever it counted, the server has.
    let c = config(vec![target(&cluster, "db")], vec![inline("log", script, 1)], 3, seconds(1.0));
    let report = pgpilot_bench::run(c).unwrap();
    let t = only(&report);
    assert_consistent(t);
    assert!((0.9..1.5).contains(&t.elapsed_s), "{}", t.elapsed_s);
    assert_eq!(count(&cluster, "SELECT count(*) FROM bench_log"), written + t.transactions);
}

#[test]
fn failed_transactions_are_counted_by_sqlstate_and_rolled_back() {
    let cluster = Cluster::start();
    cluster.psql("postgres", LOG_TABLE);
    let good = "INSERT INTO bench_log (client) VALUES (:client_id);";
    let bad = "BEGIN;\nINSERT INTO bench_log (client) VALUES (-1);\nSELECT 1 / (:client_id * 0);\nCOMMIT;";
    let missing = "SELECT * FROM no_such_table;";
    for protocol in [Protocol::Simple, Protocol::Prepared] {
        cluster.psql("postgres", "TRUNCATE bench_log");
        let workload = vec![inline("good", good, 2), inline("bad", bad, 1), inline("missing", missing, 1)];
        let mut c = config(vec![target(&cluster, "db")], workload, 3, per_client(100));
        c.protocol = protocol;
        let report = pgpilot_bench::run(c).unwrap();
        let t = only(&report);
        assert_eq!(t.transactions + t.failed, 300, "{t:?}");
        let by_code = |code: &str| t.errors.iter().find(|e| e.sqlstate == code).map_or(0, |e| e.count);
        assert_eq!(by_code("22012") + by_code("42P01"), t.failed, "{:?}", t.errors);
        assert_eq!(t.scripts[1].failed, by_code("22012"));
        assert_eq!(t.scripts[2].failed, by_code("42P01"));
        assert!(by_code("22012") > 0 && by_code("42P01") > 0);
        assert!(t.errors.iter().any(|e| e.example.contains("division by zero")));
        // The failed transactions left nothing behind and the clients went on working.
        assert_eq!(count(&cluster, "SELECT count(*) FROM bench_log WHERE client = -1"), 0);
        assert_eq!(count(&cluster, "SELECT count(*) FROM bench_log"), t.transactions);
        assert_eq!(t.scripts[0].transactions, t.transactions);
    }
}

#[test]
fn rate_limit_and_connection_per_transaction() {
    let cluster = Cluster::start();
    // --rate: 200 tps over 2 s is about 400 transactions, latency from the schedule.
    let mut c = config(vec![target(&cluster, "db")], vec![inline("one", "SELECT 1;", 1)], 4, seconds(2.0));
    c.rate = Some(200.0);
    let report = pgpilot_bench::run(c).unwrap();
    let t = only(&report);
    assert!((300..=500).contains(&t.transactions), "rate 200 tps for 2 s gave {}", t.transactions);
    assert!((150.0..=250.0).contains(&t.tps), "{}", t.tps);
    let lag = t.schedule_lag_ms.expect("lag is reported under --rate");
    assert!(lag.mean >= 0.0 && lag.max >= lag.mean);
    assert_consistent(t);

    // A rate the target cannot keep up with: the duration still ends the run, as in pgbench (it
    // went on through every transaction scheduled before the end, here a million).
    let mut c = config(vec![target(&cluster, "db")], vec![inline("one", "SELECT 1;", 1)], 1, seconds(1.0));
    c.rate = Some(1_000_000.0);
    let started = std::time::Instant::now();
    let report = pgpilot_bench::run(c).unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "a 1 s run took {:?}", started.elapsed());
    assert!(only(&report).elapsed_s < 5.0, "{}", only(&report).elapsed_s);

    // --connect: one session per transaction, as the server counts them.
    let sessions = "SELECT sessions FROM pg_stat_database WHERE datname = 'postgres'";
    let before = count(&cluster, sessions);
    let mut c = config(vec![target(&cluster, "db")], vec![inline("one", "SELECT 1;", 1)], 2, per_client(25));
    c.connect_per_transaction = true;
    let report = pgpilot_bench::run(c).unwrap();
    let t = only(&report);
    assert_eq!((t.transactions, t.connections_opened), (50, 50));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Sessions are flushed to the statistics as they end; the setup connection adds one.
        let seen = count(&cluster, sessions) - before;
        if seen >= 50 {
            assert!(seen <= 50 + 5, "{seen} sessions for 50 transactions");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {seen} sessions seen for 50 transactions");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn several_targets_rounds_ratios_and_json() {
    let cluster = Cluster::start();
    let replica = cluster.start_replica();
    let mut c = config(
        vec![target(&cluster, "primary"), target(&replica, "replica")],
        vec![inline("one", "SELECT 1;", 1)],
        2,
        seconds(0.3),
    );
    c.rounds = 3;
    let report = pgpilot_bench::run(c).unwrap();
    assert_eq!(report.targets.len(), 2);
    for t in &report.targets {
        assert_eq!(t.tps_per_round.len(), 3);
        let mut sorted = t.tps_per_round.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(t.tps, sorted[1], "the reported tps is the median round");
        assert_consistent(t);
    }
    assert_eq!(report.ratios.len(), 1);
    let r = &report.ratios[0];
    assert_eq!((r.target.as_str(), r.baseline.as_str()), ("replica", "primary"));
    assert!((r.tps - report.targets[1].tps / report.targets[0].tps).abs() < 1e-9);

    let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(json["targets"][0]["name"], "primary");
    assert_eq!(json["targets"][1]["tps_per_round"].as_array().unwrap().len(), 3);
    assert!(json["targets"][0]["latency_ms"]["p99_9"].as_f64().unwrap() > 0.0);
    assert_eq!(json["protocol"], "simple");
    assert!(json["limit"]["duration"].as_f64().is_some());
    let text = report.render_text();
    assert!(text.contains("ratios against primary") && text.contains("tps per round"), "{text}");
}

#[test]
fn unreachable_targets_fail_before_anything_runs() {
    let port = pgpilot_testkit::free_port();
    let t = Target::parse(&format!("postgres://postgres:secret@127.0.0.1:{port}/postgres")).unwrap();
    let err = pgpilot_bench::run(config(vec![t], vec![inline("one", "SELECT 1;", 1)], 1, per_client(1)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unreachable"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn pgbench_init_and_builtin_scenarios_over_tcp_and_unix_socket() {
    let cluster = Cluster::builder().host_auth("scram-sha-256").start();
    cluster.create_user("app", "s3cret pass");
    cluster.create_database("app", "app");
    let url = format!("postgres://app:s3cret%20pass@127.0.0.1:{}/app", cluster.port());
    // No password for a server that asks for one: said so, not "unreachable" (PGPASSWORD unset).
    let nopass = Target::parse(&format!("postgres://app@127.0.0.1:{}/app", cluster.port())).unwrap();
    let tpcb = || vec![Workload::Scenario { name: "tpcb-like".into(), weight: 1 }];
    let err =
        format!("{:#}", pgpilot_bench::run(config(vec![nopass], tpcb(), 1, per_client(1))).unwrap_err());
    assert!(err.contains("asked for a password") && err.contains("PGPASSWORD"), "{err}");
    // A failure after the login names its target too.
    let named = Target::parse(&format!("tables={url}")).unwrap();
    let err = format!("{:#}", pgpilot_bench::run(config(vec![named], tpcb(), 1, per_client(1))).unwrap_err());
    assert!(err.starts_with("target `tables` (") && err.contains("no pgbench tables"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    let mut c = config(
        vec![Target::parse(&url).unwrap()],
        vec![Workload::Scenario { name: "tpcb-like".into(), weight: 1 }],
        3,
        per_client(30),
    );
    c.init = true;
    c.scale = Some(1.0);
    c.protocol = Protocol::Prepared;
    let report = pgpilot_bench::run(c).unwrap();
    let t = only(&report);
    assert_eq!((t.transactions, t.failed), (90, 0), "{t:?}");
    assert_consistent(t);
    let history = cluster.psql("app", "SELECT count(*) FROM pgbench_history");
    assert_eq!(history, "90");
    assert_eq!(cluster.psql("app", "SELECT count(*) FROM pgbench_accounts"), "100000");
    assert_eq!(
        cluster.psql(
            "app",
            "SELECT sum(delta) = (SELECT sum(abalance) FROM pgbench_accounts) FROM pgbench_history"
        ),
        "t"
    );

    // select-only over the Unix socket (trusted there), reusing the tables: the scale is detected.
    let socket = format!(
        "postgres:///app?host={}&port={}&user=postgres",
        cluster.socket_dir().display(),
        cluster.port()
    );
    let c = config(
        vec![Target::parse(&socket).unwrap()],
        vec![Workload::Scenario { name: "select-only".into(), weight: 1 }],
        2,
        per_client(100),
    );
    let report = pgpilot_bench::run(c).unwrap();
    assert_eq!(only(&report).transactions, 200);
}

#[test]
fn script_variables_gset_and_defines() {
    let cluster = Cluster::start();
    cluster.psql("postgres", LOG_TABLE);
    let script = "SELECT 40 + 2 AS answer, 'x' AS label \\gset my_\n\
                  \\set doubled :my_answer * 2 + :base\n\
                  \\sleep 1 ms\n\
                  INSERT INTO bench_log (client, v) VALUES (:client_id, :doubled);\n";
    for protocol in [Protocol::Simple, Protocol::Extended] {
        cluster.psql("postgres", "TRUNCATE bench_log");
        let mut c = config(vec![target(&cluster, "db")], vec![inline("gset", script, 1)], 2, per_client(5));
        c.defines = vec![("base".into(), "1".into())];
        c.protocol = protocol;
        let report = pgpilot_bench::run(c).unwrap();
        assert_eq!(only(&report).transactions, 10);
        assert_eq!(cluster.psql("postgres", "SELECT DISTINCT v FROM bench_log"), "85");
    }
    // A script error stops the run with a message naming the script.
    let c = config(
        vec![target(&cluster, "db")],
        vec![inline("broken", "\\set x 1 / 0\nSELECT 1;", 1)],
        1,
        per_client(1),
    );
    let err = pgpilot_bench::run(c).unwrap_err().to_string();
    assert!(err.contains("division by zero") && err.contains("broken"), "{err}");
}

#[test]
fn lost_connections_are_counted_and_clients_reconnect() {
    let cluster = Cluster::start();
    let c = config(
        vec![target(&cluster, "db")],
        vec![inline("nap", "SELECT pg_sleep(0.002);", 1)],
        4,
        seconds(2.0),
    );
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgpilot-bench'";
    let (report, killed) = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(700));
            count(&cluster, kill)
        });
        let report = pgpilot_bench::run(c).unwrap();
        (report, killer.join().unwrap())
    });
    assert!(killed >= 1, "no backend was terminated");
    let t = only(&report);
    let lost: u64 =
        t.errors.iter().filter(|e| e.sqlstate == "57P01" || e.sqlstate == "08006").map(|e| e.count).sum();
    assert_eq!(lost, t.failed, "{:?}", t.errors);
    assert!(lost >= 1 && lost <= killed, "{lost} lost for {killed} terminated: {:?}", t.errors);
    assert_eq!(t.connections_opened, 4 + lost, "every lost client reconnected once");
    assert_consistent(t);
}

#[test]
fn with_a_transaction_count_clients_that_cannot_reconnect_abort_the_run_promptly() {
    let cluster = Cluster::start();
    let c = config(
        vec![target(&cluster, "db"), target(&cluster, "again")],
        vec![inline("nap", "SELECT pg_sleep(0.002);", 1)],
        4,
        per_client(1_000_000),
    );
    let started = std::time::Instant::now();
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(700));
            cluster.stop();
        });
        pgpilot_bench::run(c).unwrap()
    });
    // Retrying each of the million transactions would take hours; pgbench aborts such clients.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let why = report.aborted.as_deref().expect("the report says the run was aborted");
    assert!(
        why.starts_with("db: 4 of 4 clients stopped early") && why.contains("could not connect"),
        "{why}"
    );
    assert!(report.render_text().contains("the results are incomplete"));
    let db = &report.targets[0];
    assert!(db.measured && db.transactions > 0, "{db:?}");
    assert!(db.failed <= 4, "one lost transaction per client at most: {:?}", db.errors);
    assert!(!report.targets[1].measured, "no run starts after an aborted one");
}

#[test]
fn with_a_transaction_count_a_lost_connection_is_not_an_abort_when_reconnecting_works() {
    let cluster = Cluster::start();
    let c = config(
        vec![target(&cluster, "db")],
        vec![inline("nap", "SELECT pg_sleep(0.002);", 1)],
        4,
        per_client(400),
    );
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgpilot-bench'";
    let (report, killed) = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            count(&cluster, kill)
        });
        (pgpilot_bench::run(c).unwrap(), killer.join().unwrap())
    });
    assert!(killed >= 1, "no backend was terminated");
    assert!(report.aborted.is_none(), "{:?}", report.aborted);
    let t = only(&report);
    assert_eq!(t.transactions + t.failed, 1600, "{t:?}");
    assert!(t.failed >= 1, "{t:?}");
}

#[test]
fn with_a_duration_a_server_restart_is_survived() {
    let cluster = Cluster::start();
    let c = config(
        vec![target(&cluster, "db")],
        vec![inline("nap", "SELECT pg_sleep(0.002);", 1)],
        4,
        seconds(4.0),
    );
    let (report, after_restart) = std::thread::scope(|s| {
        let restarter = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(700));
            cluster.restart();
            // Backends opened after the restart: the clients reconnected to the new server.
            std::thread::sleep(Duration::from_millis(1000));
            count(&cluster, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgpilot-bench'")
        });
        (pgpilot_bench::run(c).unwrap(), restarter.join().unwrap())
    });
    assert!(report.aborted.is_none(), "{:?}", report.aborted);
    assert_eq!(after_restart, 4, "every client reconnected after the restart");
    let t = only(&report);
    assert!(t.failed >= 1 && t.transactions > 0, "{t:?}");
    assert!(t.connections_opened >= 8, "{t:?}");
}

/// A script that opens a transaction and never ends it commits nothing: the next BEGIN only gets
/// "there is already a transaction in progress". pgbench aborts the client; the run fails here,
/// as for any other script error, instead of counting transactions that never committed.
#[test]
fn a_script_that_leaves_its_transaction_open_fails_the_run() {
    let cluster = Cluster::start();
    cluster.psql("postgres", LOG_TABLE);
    let open = "BEGIN;\nINSERT INTO bench_log (client) VALUES (:client_id);\n";
    for protocol in [Protocol::Simple, Protocol::Prepared] {
        let mut c = config(vec![target(&cluster, "db")], vec![inline("open", open, 1)], 2, per_client(20));
        c.protocol = protocol;
        let err = pgpilot_bench::run(c).unwrap_err().to_string();
        assert!(err.contains("end of script reached without completing the last transaction"), "{err}");
        assert!(err.contains("script open"), "the script is named: {err}");
    }
    // A failed command inside the block is rolled back as before: not an open transaction.
    let failing = "BEGIN;\nSELECT 1 / (:client_id * 0);\n";
    let c = config(vec![target(&cluster, "db")], vec![inline("failing", failing, 1)], 1, per_client(3));
    assert_eq!(only(&pgpilot_bench::run(c).unwrap()).failed, 3);
    // The sessions ended with their transactions rolled back: nothing was written.
    assert_eq!(count(&cluster, "SELECT count(*) FROM bench_log"), 0);
}

/// A target that accepts connections and never answers (a stuck pooler) fails within the URL's
/// connect_timeout, as pgbench's "timeout expired", instead of hanging.
#[test]
fn a_target_that_never_answers_fails_within_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // Accept and hold every connection, saying nothing.
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let t = Target::parse(&format!("stuck=postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=2"))
        .unwrap();
    assert_eq!(t.connect_timeout(), Duration::from_secs(2));
    let started = std::time::Instant::now();
    let err = pgpilot_bench::run(config(vec![t], vec![inline("one", "SELECT 1;", 1)], 1, per_client(1)))
        .unwrap_err()
        .to_string();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "took {took:?}");
    assert!(err.contains("stuck") && err.contains("timeout expired after 2 s"), "{err}");
    // Without connect_timeout the login is bounded too.
    let t = Target::parse(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).unwrap();
    assert_eq!(t.connect_timeout(), pgpilot_bench::DEFAULT_CONNECT_TIMEOUT);
}

/// COPY FROM STDIN would fail every transaction at run time; it is refused before connecting
/// (the target here does not even exist).
#[test]
fn copy_from_stdin_is_refused_before_connecting() {
    let port = pgpilot_testkit::free_port();
    let t = Target::parse(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).unwrap();
    let script = "BEGIN;\nCOPY bench_log FROM STDIN;\nCOMMIT;\n";
    let err = pgpilot_bench::run(config(vec![t], vec![inline("load", script, 1)], 1, per_client(1)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("script load: line 2: COPY FROM STDIN"), "{err}");
    assert!(!err.contains("unreachable"), "{err}");
}
