//! The admin console, HTTP endpoints, and the faults a pooler must survive: a backend killed
//! mid-transaction, a PostgreSQL restart, a reload, a graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use pgpilot_testkit::Cluster;

fn admin(gw: &pgpilot_gateway::Gateway, sql: &str) -> String {
    psql(gw, "pgpilot", sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_command() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.stats_users = vec!["watcher".into()];
    let gw = start(config).await;
    let c = connect(&gw).await;
    c.simple_query("SELECT 1").await.unwrap();
    // SHOW commands with PgBouncer's columns.
    let header = |sql: &str| {
        let out = std::process::Command::new(pgpilot_testkit::pg_bin_dir().unwrap().tool("psql"))
            .args([
                "-X",
                "-A",
                "-h",
                "127.0.0.1",
                "-p",
                &addr(&gw).port().to_string(),
                "-U",
                "postgres",
                "-d",
                "pgbouncer",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string()
    };
    assert!(
        header("SHOW POOLS").starts_with("database|user|cl_active|cl_waiting"),
        "{}",
        header("SHOW POOLS")
    );
    assert!(header("SHOW STATS")
        .starts_with("database|total_server_assignment_count|total_xact_count|total_query_count"));
    assert!(header("SHOW CLIENTS").starts_with("type|user|database"));
    assert!(header("SHOW SERVERS").starts_with("type|user|database"));
    assert!(header("SHOW DATABASES").starts_with("name|host|port|database|force_user|pool_size"));
    assert!(header("SHOW CONFIG").starts_with("key|value|default|changeable"));
    let pools = admin(&gw, "SHOW POOLS");
    assert!(pools.contains("postgres|postgres|"), "{pools}");
    // The console's own pool and database, as PgBouncer lists them (exporters expect the rows);
    // a database's pool_mode is empty unless it sets its own.
    assert!(pools.lines().any(|l| l.starts_with("pgbouncer|pgbouncer|1|0|")), "{pools}");
    let databases = admin(&gw, "SHOW DATABASES");
    let port = addr(&gw).port();
    assert!(databases.contains(&format!("pgbouncer||{port}|pgbouncer|pgbouncer|2|")), "{databases}");
    let db: Vec<&str> = databases.lines().find(|l| l.starts_with("postgres|")).unwrap().split('|').collect();
    assert_eq!(db[9], "", "pool_mode: {databases}");
    assert!(admin(&gw, "SHOW CONFIG").contains(&format!("listen_port|{port}|6432|no")));
    let stats = admin(&gw, "SHOW STATS");
    let fields: Vec<&str> = stats.lines().find(|l| l.starts_with("postgres|")).unwrap().split('|').collect();
    assert!(fields[2].parse::<u64>().unwrap() >= 1, "xact count: {stats}");
    let clients = admin(&gw, "SHOW CLIENTS");
    let client = clients.lines().find(|l| l.starts_with("C|postgres|postgres|")).expect("a client row");
    // local_addr and local_port: where the client reached pgpilot.
    let local: Vec<&str> = client.split('|').skip(7).take(2).collect();
    assert_eq!(local, ["127.0.0.1".to_string(), addr(&gw).port().to_string()], "{client}");
    // Tools parse the PgBouncer version to pick the columns they read.
    assert!(admin(&gw, "SHOW VERSION").starts_with("PgBouncer 1.23.1 compatible (pgpilot "));
    // And so does the console's server_version, as PgBouncer's reports itself.
    let mut console = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    let login = startup_packet_with(3 << 16, &[("user", "postgres"), ("database", "pgpilot")]);
    tokio::io::AsyncWriteExt::write_all(&mut console, &login).await.unwrap();
    let welcome = read_until_ready(&mut console).await;
    assert!(
        welcome.windows(30).any(|w| w == b"server_version\x001.23.1/bouncer\x00"),
        "{:?}",
        String::from_utf8_lossy(&welcome)
    );
    assert!(admin(&gw, "SHOW CONFIG").contains("default_pool_size|5|20|yes"));
    // Durations in seconds and switches as 0/1, as PgBouncer prints them.
    let config = admin(&gw, "SHOW CONFIG");
    assert!(config.lines().any(|l| l.starts_with("admin_users|postgres|")), "lists as PgBouncer: {config}");
    assert!(config.contains("query_wait_timeout|120|120|yes"), "{config}");
    assert!(config.contains("server_reset_query_always|0|0|yes"), "{config}");
    // "changeable" says what SET takes: each such setting set to its own value is accepted, and
    // the settings SET refuses say no.
    for line in config.lines().filter(|l| l.ends_with("|yes")) {
        let fields: Vec<&str> = line.split('|').collect();
        admin(&gw, &format!("SET {} = '{}'", fields[0], fields[1].replace('\'', "''")));
    }
    for fixed in ["admin_users|", "listen|", "client_tls_sslmode|disable|disable|", "server_tls_sslmode|"] {
        assert!(config.lines().any(|l| l.starts_with(fixed) && l.ends_with("|no")), "{fixed}: {config}");
    }
    assert!(
        config.lines().any(|l| l.starts_with("unix_socket_mode|511|511|")),
        "in decimal as PgBouncer: {config}"
    );
    // PgBouncer's SET takes server_lifetime, its 0 meaning "use each server connection once".
    assert!(config.contains("server_lifetime|3600|3600|yes"), "{config}");
    admin(&gw, "SET server_lifetime = 0");
    assert!(admin(&gw, "SHOW CONFIG").contains("server_lifetime|0.001|3600|yes"));
    admin(&gw, "SET server_lifetime = 3600");
    let refused = psql(&gw, "pgpilot", "SET no_such_setting = 1").expect_err("not a setting");
    assert!(refused.contains("unrecognized configuration parameter \"no_such_setting\""), "{refused}");
    // SET changes the running configuration, as in PgBouncer.
    // PgBouncer's tag names the setting.
    tokio::io::AsyncWriteExt::write_all(&mut console, &query_message("SET default_pool_size = 7"))
        .await
        .unwrap();
    let tag = read_until_ready(&mut console).await;
    assert!(
        tag.windows(24).any(|w| w == b"SET default_pool_size=7\0"),
        "{:?}",
        String::from_utf8_lossy(&tag)
    );
    admin(&gw, "SET query_wait_timeout TO '30'");
    let config = admin(&gw, "SHOW CONFIG");
    assert!(config.contains("default_pool_size|7|20|yes"), "{config}");
    assert!(config.contains("query_wait_timeout|30|120|yes"), "{config}");
    assert!(admin(&gw, "SHOW DATABASES").lines().any(|l| l.starts_with("postgres|") && l.contains("|7|")));
    let refused = psql(&gw, "pgpilot", "SET listen_addr = 0.0.0.0").expect_err("a setting taken at start");
    assert!(refused.contains("takes effect only when pgpilot restarts"), "{refused}");
    let refused = psql(&gw, "pgpilot", "SET default_pool_size = many").expect_err("not a number");
    assert!(refused.contains("ERROR"), "{refused}");
    admin(&gw, "SET default_pool_size = 5");
    assert!(admin(&gw, "SHOW USERS").lines().any(|l| l.starts_with("postgres|")), "a user with a pool");
    // server_lifetime was 1 ms for a moment above, long enough to retire the idle server: one
    // more transaction leaves one in the pool.
    c.simple_query("SELECT 1").await.unwrap();
    // The rows prometheus-pgbouncer-exporter reads by name.
    let lists = admin(&gw, "SHOW LISTS");
    for row in ["users|1", "dns_names|0", "dns_zones|0", "dns_queries|0", "dns_pending|0"] {
        assert!(lists.lines().any(|l| l == row), "{row}: {lists}");
    }
    // Counted as SHOW DATABASES and SHOW POOLS list them, the console's row included (helper-169).
    let rows = |sql: &str| admin(&gw, sql).lines().filter(|l| l.contains('|')).count();
    for (list, show) in [("databases", "SHOW DATABASES"), ("pools", "SHOW POOLS")] {
        let items = lists.lines().find_map(|l| l.strip_prefix(&format!("{list}|"))).unwrap();
        assert_eq!(items.parse::<usize>().unwrap(), rows(show), "{list}: {lists}");
    }
    // used_servers counts idle servers too, as PgBouncer's does (the client's is idle now).
    let used_servers = lists.lines().find_map(|l| l.strip_prefix("used_servers|")).unwrap_or("0");
    assert!(used_servers.parse::<usize>().unwrap() >= 1, "{lists}");
    let databases = header("SHOW DATABASES");
    assert!(
        databases.contains("|min_pool_size|reserve_pool|server_lifetime|")
            && databases.contains("|reserve_pool_size|"),
        "PgBouncer's names up to 1.23 in its order, and 1.24's after them: {databases}"
    );
    for empty in ["SHOW MEM", "SHOW DNS_HOSTS", "SHOW DNS_ZONES"] {
        admin(&gw, empty);
    }
    assert!(header("SHOW MEM").starts_with("name|size|used|free|memtotal"));
    // PgBouncer's answer to what it does not know.
    let unknown = psql(&gw, "pgpilot", "SHOW NOSUCH").expect_err("an unknown SHOW");
    assert!(unknown.contains("invalid command 'SHOW NOSUCH', use SHOW HELP;"), "{unknown}");
    let bare = psql(&gw, "pgpilot", "SHOW").expect_err("SHOW of nothing");
    assert!(bare.contains("invalid command 'SHOW', use SHOW HELP;"), "{bare}");
    let unknown = psql(&gw, "pgpilot", "FROB").expect_err("an unknown command");
    assert!(unknown.contains("invalid command 'FROB'"), "{unknown}");
    admin(&gw, "SHOW STATS_TOTALS");
    assert!(header("SHOW STATS_AVERAGES").starts_with("database|server_assignment_count|xact_count"));
    let totals = admin(&gw, "SHOW TOTALS");
    let total_xacts = totals.lines().find_map(|l| l.strip_prefix("total_xact_count|")).unwrap();
    assert!(total_xacts.parse::<u64>().unwrap() >= 1, "{totals}");
    assert!(totals.contains("avg_wait_time|"), "{totals}");
    assert_eq!(admin(&gw, "SHOW STATE").lines().next(), Some("active|yes"));
    admin(&gw, "SHOW DATABASES");
    // pgpilot's end of each server connection, as the server sees its client, and the statements
    // pgpilot prepared on it (two of the client's, made on the one server it used).
    let mut statements = Vec::new();
    for text in ["SELECT 1 AS one", "SELECT 2 AS two"] {
        // Kept: a dropped statement is closed by the driver.
        statements.push(c.prepare(text).await.unwrap());
        c.query(statements.last().unwrap(), &[]).await.unwrap();
    }
    let servers = admin(&gw, "SHOW SERVERS");
    let row: Vec<&str> =
        servers.lines().find(|l| l.starts_with("S|")).expect("a server").split('|').collect();
    let (local_addr, local_port, remote_pid, prepared) = (row[7], row[8], row[16], row[19]);
    assert_eq!(prepared, "2", "{servers}");
    // The client's own count, as PgBouncer 1.21 shows it.
    let clients = admin(&gw, "SHOW CLIENTS");
    let row = clients.lines().find(|l| l.starts_with("C|postgres|postgres|")).expect("the client");
    assert_eq!(row.split('|').nth(19), Some("2"), "{clients}");
    drop(statements);
    let seen = pg.psql(
        "postgres",
        &format!(
            "SELECT host(client_addr) || '|' || client_port FROM pg_stat_activity WHERE pid = {remote_pid}"
        ),
    );
    assert_eq!(seen, format!("{local_addr}|{local_port}"), "{servers}");
    admin(&gw, "SHOW HELP");
    // PAUSE waits for servers to come back, then holds new queries until RESUME.
    admin(&gw, "PAUSE postgres");
    admin(&gw, "PAUSE");
    assert!(admin(&gw, "SHOW STATE").contains("paused|yes"));
    admin(&gw, "RESUME");
    admin(&gw, "PAUSE postgres");
    let held = tokio::spawn(async move { c.query_one("SELECT 42", &[]).await.map(|r| r.get::<_, i32>(0)) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a query ran while paused");
    admin(&gw, "RESUME postgres");
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), held).await.unwrap().unwrap().unwrap(), 42);
    // As PgBouncer says: resuming what is not paused is a mistake.
    let again = psql(&gw, "pgpilot", "RESUME postgres").expect_err("RESUME of a database not paused");
    assert!(again.contains("database postgres is not paused"), "{again}");
    let again = psql(&gw, "pgpilot", "RESUME").expect_err("RESUME when nothing is paused");
    assert!(again.contains("not paused"), "{again}");
    // DISABLE refuses new clients; ENABLE lets them in again.
    admin(&gw, "DISABLE postgres");
    assert!(try_connect(&conninfo(&gw, "postgres", "postgres")).await.is_err());
    admin(&gw, "ENABLE postgres");
    let c2 = connect(&gw).await;
    admin(&gw, "RECONNECT postgres");
    assert_eq!(c2.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    admin(&gw, "KILL postgres");
    assert!(eventually(Duration::from_secs(5), || c2.is_closed()).await, "KILL did not close the client");
    // As in PgBouncer, the killed database stays paused until RESUME.
    let c3 = connect(&gw).await;
    let waiting =
        tokio::spawn(async move { c3.query_one("SELECT 7", &[]).await.map(|r| r.get::<_, i32>(0)) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a query ran on a killed database before RESUME");
    admin(&gw, "RESUME postgres");
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap(), 7);
    admin(&gw, "RELOAD");
    // stats_users may SHOW but not change anything; others may not log in.
    assert!(psql_as(&gw, "watcher", "pgpilot", "SHOW POOLS", &[]).is_ok());
    assert!(psql_as(&gw, "watcher", "pgpilot", "PAUSE", &[]).unwrap_err().contains("admin access"));
    assert!(psql_as(&gw, "watcher", "pgpilot", "SET default_pool_size = 1", &[])
        .unwrap_err()
        .contains("admin access"));
    // Several commands in one query each run (and each is checked).
    let both = psql_as(&gw, "watcher", "pgpilot", "SHOW POOLS; PAUSE", &[]).unwrap_err();
    assert!(both.contains("admin access"), "{both}");
    assert!(psql(&gw, "pgpilot", "SHOW POOLS PAUSE").is_err(), "trailing words after SHOW are refused");
    assert!(psql_as(&gw, "stranger", "pgpilot", "SHOW POOLS", &[]).unwrap_err().contains("not allowed"));
    assert!(psql(&gw, "pgpilot", "SHOW NONSENSE").is_err());
    // SHUTDOWN is accepted; the embedding program decides when to stop (here, the test).
    admin(&gw, "SHUTDOWN");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_metrics_health_and_pool_stats() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.server_check_delay = pgpilot_gateway::config::Secs::from_millis(100);
    let gw = start(config).await;
    let c = connect(&gw).await;
    c.simple_query("SELECT 1").await.unwrap();
    // Past server_check_delay the idle server is due for a check: `used`, not also `idle` (the
    // states add up to the pool's connections, as SHOW POOLS' sv_idle and sv_used do).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let http = gw.http_addr().unwrap();
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &format!("http://{http}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let metrics = get("/metrics");
    for name in [
        "pgpilot_clients{state=\"idle\"}",
        "pgpilot_pool_servers_idle{",
        "pgpilot_transactions_total{",
        "pgpilot_client_wait_seconds_bucket{",
        "pgpilot_pool_utilization{",
        "pgpilot_bytes_received_total{",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    let gauge = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name}{{database=\"postgres\"")));
        let line = line.unwrap_or_else(|| panic!("no {name} in\n{metrics}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    let servers = ["active", "idle", "used", "login"].map(|s| gauge(&format!("pgpilot_pool_servers_{s}")));
    assert_eq!(servers, [0.0, 0.0, 1.0, 0.0], "active, idle, used, login");
    assert!(get("/health").ends_with("200"));
    let stats = get("/api/v1/monitoring/pool-stats");
    let json: serde_json::Value = serde_json::from_str(stats.rsplit_once('\n').unwrap().0).unwrap();
    assert_eq!(json["pools"][0]["database"], "postgres");
    assert!(json["pools"][0]["transactions"].as_u64().unwrap() >= 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_terminated_mid_transaction() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int)");
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 2;
    let gw = start(config).await;
    let victim = connect(&gw).await;
    victim.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    let pid: i32 = victim.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    let err = victim.simple_query("INSERT INTO t VALUES (2)").await.unwrap_err();
    assert!(err.is_closed() || err.as_db_error().is_some(), "{err}");
    // The dead connection never comes back: every later client works, the insert was rolled back.
    for _ in 0..10 {
        let c = connect(&gw).await;
        let p: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        assert_ne!(p, pid);
    }
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "0");
    // An idle pooled connection terminated between transactions is noticed before reuse.
    let c = connect(&gw).await;
    let idle_pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    pg.psql("postgres", &format!("SELECT pg_terminate_backend({idle_pid})"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    }
    gw.shutdown().await;
}

/// PostgreSQL ending a session itself (idle_in_transaction_session_timeout) says why in its FATAL;
/// that is the client's last word, as without pgpilot (it got pgpilot's 08006 after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_fatal_is_the_clients_last_word() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let mut s = raw_login(addr(&gw)).await;
    s.write_all(&query_message("BEGIN; SET LOCAL idle_in_transaction_session_timeout = '100ms'"))
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await.unwrap();
    assert!(read.is_ok(), "{read:?}");
    let errors: Vec<String> = backend_messages(&got)
        .iter()
        .filter(|m| m.0 == b'E')
        .map(|m| String::from_utf8_lossy(m.1).into_owned())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("C25P03"), "{errors:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restart_heals_on_its_own() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let c = connect(&gw).await;
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    pg.restart();
    // The client keeps its pgpilot connection; the pooled server connections died and are replaced.
    let mut ok = false;
    for _ in 0..20 {
        if c.query_one("SELECT 2", &[]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok || c.is_closed(), "queries fail after the restart");
    let fresh = connect(&gw).await;
    assert_eq!(fresh.query_one("SELECT 3", &[]).await.unwrap().get::<_, i32>(0), 3);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_clients_and_applies_settings() {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgpilot.toml");
    let write = |size: usize| write_sized_config(&path, &pg, size);
    write(3);
    let gw = start(pgpilot_gateway::config::Config::load(&path).unwrap()).await;
    let c = connect(&gw).await;
    c.simple_query("SELECT 1").await.unwrap();
    write(7);
    gw.reload().unwrap();
    assert_eq!(c.query_one("SELECT 4", &[]).await.unwrap().get::<_, i32>(0), 4, "client survived the reload");
    assert!(admin(&gw, "SHOW DATABASES").contains("|7|"), "{}", admin(&gw, "SHOW DATABASES"));
    // Settings only a restart changes show their running values after a reload (helper-170:
    // SHOW CONFIG showed the file's new listen address while the old one was still bound).
    let shown = |key: &str| {
        let config = admin(&gw, "SHOW CONFIG");
        config.lines().find(|l| l.starts_with(&format!("{key}|"))).map(String::from).unwrap_or_default()
    };
    let (listen, workers) = (shown("listen"), shown("workers"));
    let mut next = pgpilot_gateway::config::Config::load(&path).unwrap();
    next.pgpilot.listen = pgpilot_gateway::config::OneOrMany(vec!["127.0.0.1:1".into()]);
    next.pgpilot.workers = 7;
    std::fs::write(&path, toml::to_string(&next).unwrap()).unwrap();
    gw.reload().unwrap();
    assert_eq!((shown("listen"), shown("workers")), (listen, workers));
    gw.shutdown().await;
}

/// A pool made smaller by a reload while clients queue for it shrinks to its new size and keeps
/// its connections: it does not close and open one per transaction. A reserve pool no client
/// waited reserve_pool_timeout for does not keep it larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_made_smaller_under_load_shrinks_without_reconnecting() {
    for reserve in [0, 3] {
        shrink_under_load(reserve).await;
    }
}

async fn shrink_under_load(reserve: usize) {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgpilot.toml");
    let write = |size: usize| write_config_with_reserve(&path, &pg, size, reserve);
    write(8);
    let gw = start(pgpilot_gateway::config::Config::load(&path).unwrap()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..24 {
        let c = connect(&gw).await;
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.simple_query("SELECT pg_sleep(0.005)").await.unwrap();
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    write(2);
    gw.reload().unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Over the next two seconds of load: which server backends run the clients' statements (the
    // health probe has a connection of its own).
    let backends = "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity \
                    WHERE backend_type = 'client backend' AND query LIKE 'SELECT pg_sleep(0.005)%'";
    let mut seen = std::collections::BTreeSet::new();
    let mut last = Vec::new();
    for _ in 0..10 {
        last = pg.psql("postgres", backends).split_whitespace().map(String::from).collect::<Vec<_>>();
        seen.extend(last.iter().cloned());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(last.len() <= 2, "reserve {reserve}: the pool did not shrink to 2: {last:?}");
    assert!(
        seen.len() <= 4,
        "reserve {reserve}: server connections were opened and closed under load: {} backends seen",
        seen.len()
    );
    gw.shutdown().await;
}

/// A database's own pool_size changed by a reload shows in SHOW DATABASES, as the pools apply it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_shows_a_database_s_new_settings() {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgpilot.toml");
    let write = |pool_size: usize, reserve: usize| {
        std::fs::write(
            &path,
            format!(
                "[pgpilot]\nlisten = \"127.0.0.1:0\"\nauth_type = \"trust\"\nadmin_users = [\"postgres\"]\n[tls]\nserver_tls_sslmode = \"disable\"\n[databases.postgres]\nprimary = \"{}\"\npool_size = {pool_size}\nreserve_pool_size = {reserve}\n",
                pg.admin_url()
            ),
        )
        .unwrap()
    };
    let sizes = |gw: &pgpilot_gateway::Gateway| {
        let out = admin(gw, "SHOW DATABASES");
        let row: Vec<String> =
            out.lines().find(|l| l.starts_with("postgres|")).unwrap().split('|').map(String::from).collect();
        // pool_size and reserve_pool_size
        (row[5].clone(), row[7].clone())
    };
    write(3, 1);
    let gw = start(pgpilot_gateway::config::Config::load(&path).unwrap()).await;
    let c = connect(&gw).await;
    c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(sizes(&gw), ("3".into(), "1".into()));
    write(7, 2);
    gw.reload().unwrap();
    assert_eq!(c.query_one("SELECT 4", &[]).await.unwrap().get::<_, i32>(0), 4, "client survived the reload");
    assert_eq!(sizes(&gw), ("7".into(), "2".into()), "SHOW DATABASES after the reload");
    gw.shutdown().await;
}

/// Clients already waiting for a server when a reload makes the pool larger are served at once
/// (PgBouncer does), not when a server is released, and before clients arriving later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_pool_after_reload_serves_the_clients_waiting() {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgpilot.toml");
    write_sized_config(&path, &pg, 1);
    let gw = start(pgpilot_gateway::config::Config::load(&path).unwrap()).await;
    let holder = connect(&gw).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let c = connect(&gw).await;
        waiting.push(tokio::spawn(async move { c.simple_query("SELECT 1").await.map(|_| ()) }));
    }
    let cl_waiting = || console_rows(&gw, "SHOW POOLS", "postgres|postgres|")[0][3].clone();
    assert!(eventually(Duration::from_secs(3), || cl_waiting() == "2").await, "cl_waiting {}", cl_waiting());
    write_sized_config(&path, &pg, 3);
    gw.reload().unwrap();
    for w in waiting {
        tokio::time::timeout(Duration::from_secs(3), w)
            .await
            .expect("a waiting client was not served by the larger pool")
            .unwrap()
            .unwrap();
    }
    holder.batch_execute("COMMIT").await.unwrap();
    gw.shutdown().await;
}

/// A config file for `pg` with the admin console for user postgres and `default_pool_size`.
fn write_sized_config(path: &std::path::Path, pg: &Cluster, size: usize) {
    write_config_with_reserve(path, pg, size, 0)
}

fn write_config_with_reserve(path: &std::path::Path, pg: &Cluster, size: usize, reserve: usize) {
    let text = format!(
        "[pgpilot]\nlisten = \"127.0.0.1:0\"\nauth_type = \"trust\"\nadmin_users = [\"postgres\"]\n\
         default_pool_size = {size}\nreserve_pool_size = {reserve}\nreserve_pool_timeout = 3\n[tls]\nserver_tls_sslmode = \"disable\"\n[databases.postgres]\nprimary = \"{}\"\n",
        pg.admin_url()
    );
    std::fs::write(path, text).unwrap()
}

/// Client timeouts set on the console (or by a reload) reach the clients already connected, as in
/// PgBouncer: idle_transaction_timeout set during an incident must end the idle transactions
/// holding locks now, not those of clients that log in later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_timeouts_set_on_the_console_reach_clients_already_connected() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let in_transaction = connect(&gw).await;
    in_transaction.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let idle = connect(&gw).await;
    idle.simple_query("SELECT 1").await.unwrap();
    admin(&gw, "SET idle_transaction_timeout = 1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Its 25P03 went out when the timer fired; the driver finds the connection closed.
    assert!(in_transaction.simple_query("SELECT 1").await.is_err(), "the idle transaction was kept");
    idle.simple_query("SELECT 1").await.expect("an idle client outside a transaction was closed");
    admin(&gw, "SET client_idle_timeout = 1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        idle.simple_query("SELECT 1").await.is_err(),
        "client_idle_timeout did not reach the idle client"
    );
    gw.shutdown().await;
}

/// A database removed from the file by a reload closes its clients (57P01) at their next
/// transaction boundary, in session pooling too, where they kept their server and went on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_removed_by_a_reload_closes_its_clients() {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgpilot.toml");
    let config = |databases: &[&str]| {
        let mut text =
            "[pgpilot]\nlisten = \"127.0.0.1:0\"\nauth_type = \"trust\"\nadmin_users = [\"postgres\"]\n\
                        pool_mode = \"session\"\n[tls]\nserver_tls_sslmode = \"disable\"\n"
                .to_string();
        for name in databases {
            text += &format!("[databases.{name}]\nprimary = \"{}\"\n", pg.admin_url());
        }
        std::fs::write(&path, text).unwrap();
    };
    config(&["postgres", "other"]);
    let gw = start(pgpilot_gateway::config::Config::load(&path).unwrap()).await;
    let kept = connect(&gw).await;
    let removed = connect_as(&gw, "postgres", "other").await;
    removed.simple_query("SELECT 1").await.unwrap();
    kept.simple_query("SELECT 1").await.unwrap();
    config(&["postgres"]);
    gw.reload().unwrap();
    let closed = async {
        for _ in 0..50 {
            if removed.is_closed() || removed.simple_query("SELECT 1").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(closed.await, "a client of the removed database went on");
    kept.simple_query("SELECT 1").await.expect("a client of a database kept was closed");
    gw.shutdown().await;
}

/// The header line of a console SHOW command.
fn console_header(gw: &pgpilot_gateway::Gateway, sql: &str) -> String {
    let psql = pgpilot_testkit::pg_bin_dir().unwrap().tool("psql");
    let port = addr(gw).port().to_string();
    let args = ["-X", "-A", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "pgbouncer", "-c", sql];
    let out = std::process::Command::new(psql).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string()
}

/// Rows of a console SHOW command whose first columns are `prefix`, split into columns.
fn console_rows(gw: &pgpilot_gateway::Gateway, sql: &str, prefix: &str) -> Vec<Vec<String>> {
    admin(gw, sql)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.split('|').map(String::from).collect())
        .collect()
}

/// Clients still waiting after reserve_pool_timeout (the reserve is used up) stay in SHOW POOLS'
/// cl_waiting with a rising maxwait, and SHOW CLIENTS tells how long each has waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_waiting_past_reserve_pool_timeout_are_shown_waiting() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 2;
    config.pgpilot.reserve_pool_size = 1;
    config.pgpilot.reserve_pool_timeout = pgpilot_gateway::config::Secs::from_secs(1);
    let gw = start(config).await;
    let mut running = Vec::new();
    for _ in 0..5 {
        let c = connect(&gw).await;
        running.push(tokio::spawn(async move { c.simple_query("SELECT pg_sleep(6)").await.map(|_| ()) }));
    }
    // Two clients have the pool's servers, one the reserve's (after 1 s); two wait until 6 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut last_wait_us = 0;
    for _ in 0..5 {
        let pools = console_rows(&gw, "SHOW POOLS", "postgres|postgres|");
        let pool = &pools[0];
        let (cl_active, cl_waiting) = (&pool[2], &pool[3]);
        let wait_us = pool[13].parse::<u64>().unwrap() * 1_000_000 + pool[14].parse::<u64>().unwrap();
        assert_eq!((cl_active.as_str(), cl_waiting.as_str()), ("3", "2"), "SHOW POOLS: {pool:?}");
        assert!(
            wait_us >= 1_500_000 && wait_us > last_wait_us,
            "maxwait {wait_us} µs after {last_wait_us} µs"
        );
        last_wait_us = wait_us;
        let waiting: Vec<_> = console_rows(&gw, "SHOW CLIENTS", "C|postgres|postgres|")
            .into_iter()
            .filter(|c| c[4] == "waiting")
            .collect();
        assert_eq!(waiting.len(), 2, "SHOW CLIENTS: {waiting:?}");
        for c in &waiting {
            let waited_us = c[11].parse::<u64>().unwrap() * 1_000_000 + c[12].parse::<u64>().unwrap();
            assert!(waited_us >= 1_500_000, "a waiting client shows wait {} s {} µs", c[11], c[12]);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for r in running {
        r.await.unwrap().unwrap();
    }
    let pools = console_rows(&gw, "SHOW POOLS", "postgres|postgres|");
    assert_eq!((pools[0][3].as_str(), pools[0][13].as_str()), ("0", "0"), "nobody waits any more: {pools:?}");
    gw.shutdown().await;
}

/// Idle clients hold no transaction, whether admin console or pinned to a server: shutdown does
/// not wait shutdown_timeout for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_idle_console_or_pinned_clients() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.admin_users = vec!["postgres".into()];
    config.pgpilot.shutdown_timeout = pgpilot_gateway::config::Secs::from_secs(10);
    let gw = start(config).await;
    let console = try_connect(&conninfo(&gw, "postgres", "pgpilot")).await.unwrap();
    console.simple_query("SHOW VERSION").await.unwrap();
    // A client pinned to its server (a temporary table), idle between transactions.
    let pinned = connect(&gw).await;
    pinned.batch_execute("CREATE TEMP TABLE scratch (x int)").await.unwrap();
    let started = std::time::Instant::now();
    gw.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    assert!(eventually(Duration::from_secs(2), || console.is_closed()).await, "the console was not closed");
    assert!(
        eventually(Duration::from_secs(2), || pinned.is_closed()).await,
        "the pinned client was not closed"
    );
}

/// A statement still running when shutdown_timeout ends is cancelled on the server: closed
/// mid-statement, the server ran it to its end with nobody to read it, its locks held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_running_past_shutdown_timeout_is_cancelled() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.shutdown_timeout = pgpilot_gateway::config::Secs::from_secs(1);
    let gw = start(config).await;
    let c = connect(&gw).await;
    let running = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    let sleeping =
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'";
    pg.wait_for("1", sleeping, Duration::from_secs(5));
    gw.shutdown().await;
    pg.wait_for("0", sleeping, Duration::from_secs(5));
    assert!(running.await.unwrap().is_err(), "the client was told");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_transactions_finish() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int)");
    let gw = start(config_for(&pg)).await;
    let c = connect(&gw).await;
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    let addr = addr(&gw);
    let stopping = tokio::spawn(gw.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New clients are refused, the open transaction can still commit.
    assert!(try_connect(&format!("host=127.0.0.1 port={} user=postgres dbname=postgres", addr.port()))
        .await
        .is_err());
    c.batch_execute("INSERT INTO t VALUES (2); COMMIT").await.unwrap();
    // The client's next statement, right behind its transaction, is answered with 57P01: an error
    // sent while a client is idle is lost to most drivers (libpq: "server closed the connection").
    let next = c.batch_execute("BEGIN").await.expect_err("a transaction began during shutdown");
    assert_eq!(sqlstate(&next).as_deref(), Some("57P01"), "{next}");
    tokio::time::timeout(Duration::from_secs(10), stopping).await.unwrap().unwrap();
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "2");
}

type Waiting = tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>;

/// A gateway whose pool of one server is held by a client inside a transaction, and `n` clients
/// whose INSERT into the new table `table` waits for that server.
async fn one_server_held(
    pg: &Cluster,
    table: &str,
    n: usize,
) -> (pgpilot_gateway::Gateway, tokio_postgres::Client, Vec<Waiting>) {
    pg.psql("postgres", &format!("CREATE TABLE {table}(x int)"));
    let mut config = config_for(pg);
    config.pgpilot.default_pool_size = 1;
    let gw = start(config).await;
    let holder = connect(&gw).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let mut waiting = Vec::new();
    for i in 0..n {
        let c = connect(&gw).await;
        let sql = format!("INSERT INTO {table} VALUES ({i})");
        waiting.push(tokio::spawn(async move { c.batch_execute(&sql).await }));
    }
    (gw, holder, waiting)
}

/// Clients waiting for a server when shutdown begins are between transactions: they are closed
/// with 57P01 at once and their requests never run (PgBouncer does the same), rather than being
/// given the servers the running transactions release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_clients_waiting_for_a_server() {
    let pg = Cluster::start();
    let (gw, holder, waiting) = one_server_held(&pg, "during_shutdown", 3).await;
    let cl_waiting = || console_rows(&gw, "SHOW POOLS", "postgres|postgres|")[0][3].clone();
    assert!(eventually(Duration::from_secs(3), || cl_waiting() == "3").await, "cl_waiting {}", cl_waiting());
    let stopping = tokio::spawn(gw.shutdown());
    for w in waiting {
        let e = tokio::time::timeout(Duration::from_secs(3), w)
            .await
            .expect("a waiting client was kept through the shutdown")
            .unwrap()
            .expect_err("a waiting client's request ran during shutdown");
        assert_eq!(sqlstate(&e).as_deref(), Some("57P01"), "{e}");
    }
    holder.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopping).await.unwrap().unwrap();
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM during_shutdown"), "0");
}

/// PAUSE holds the clients already waiting for a server too: none of them starts a transaction
/// on a server released after PAUSE, and a cancel request answers a paused client at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_clients_already_waiting() {
    let pg = Cluster::start();
    let (gw, holder, waiting) = one_server_held(&pg, "during_pause", 2).await;
    let cancelled = connect(&gw).await;
    let token = cancelled.cancel_token();
    let cancelled = tokio::spawn(async move { cancelled.batch_execute("SELECT pg_sleep(30)").await });
    let cl_waiting = || console_rows(&gw, "SHOW POOLS", "postgres|postgres|")[0][3].clone();
    assert!(eventually(Duration::from_secs(3), || cl_waiting() == "3").await, "cl_waiting {}", cl_waiting());
    let console = connect_as(&gw, "postgres", "pgbouncer").await;
    let pausing = tokio::spawn(async move { console.simple_query("PAUSE postgres").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), pausing)
        .await
        .expect("PAUSE did not return")
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM during_pause"),
        "0",
        "a transaction began while paused"
    );
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(2), cancelled)
        .await
        .expect("a cancel waited for RESUME")
        .unwrap()
        .expect_err("the cancelled query ran");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    admin(&gw, "RESUME postgres");
    for w in waiting {
        tokio::time::timeout(Duration::from_secs(5), w).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM during_pause"), "2");
    gw.shutdown().await;
}

/// The names and type OIDs of the columns a console command answers with (raw protocol).
async fn console_column_types(gw: &pgpilot_gateway::Gateway, sql: &str) -> Vec<(String, u32)> {
    use tokio::io::AsyncWriteExt;
    let startup = startup_packet_with(3 << 16, &[("user", "postgres"), ("database", "pgbouncer")]);
    let mut s = tokio::net::TcpStream::connect(addr(gw)).await.unwrap();
    s.write_all(&startup).await.unwrap();
    read_until_ready(&mut s).await;
    s.write_all(&query_message(sql)).await.unwrap();
    let got = read_until_ready(&mut s).await;
    let (_, desc) = backend_messages(&got).into_iter().find(|(t, _)| *t == b'T').expect("a RowDescription");
    let mut columns = Vec::new();
    let mut pos = 2;
    for _ in 0..u16::from_be_bytes([desc[0], desc[1]]) {
        let end = pos + desc[pos..].iter().position(|&b| b == 0).unwrap();
        let name = String::from_utf8_lossy(&desc[pos..end]).into_owned();
        let oid = u32::from_be_bytes(desc[end + 7..end + 11].try_into().unwrap());
        columns.push((name, oid));
        pos = end + 19;
    }
    columns
}

/// The console's columns have PgBouncer's types: int4 counts (node-postgres reads int8 as strings,
/// so `paused` "0" would be true), numeric statistics, empty `link` when unlinked; SHOW TOTALS
/// has PgBouncer's row names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_columns_have_pgbouncers_types() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let c = connect(&gw).await;
    c.simple_query("SELECT 1").await.unwrap();
    let type_of = |columns: &[(String, u32)], name: &str| {
        columns.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no column {name}")).1
    };
    let (text, int4, int8, numeric) = (25, 23, 20, 1700);
    let expected: &[(&str, &[(&str, u32)])] = &[
        ("SHOW POOLS", &[("database", text), ("cl_active", int4), ("sv_idle", int4), ("maxwait_us", int4)]),
        (
            "SHOW STATS",
            &[
                ("total_xact_count", numeric),
                ("avg_query_time", numeric),
                ("total_client_parse_count", numeric),
                ("avg_bind_count", numeric),
            ],
        ),
        ("SHOW STATS_TOTALS", &[("xact_count", numeric), ("server_parse_count", numeric)]),
        ("SHOW STATS_AVERAGES", &[("wait_time", numeric), ("avg_bind_count", numeric)]),
        ("SHOW TOTALS", &[("name", text), ("value", numeric)]),
        (
            "SHOW CLIENTS",
            &[
                ("port", int4),
                ("state", text),
                ("wait_us", int4),
                ("prepared_statements", int4),
                ("id", int8),
            ],
        ),
        ("SHOW SERVERS", &[("local_port", int4), ("remote_pid", int4), ("lag_bytes", int8)]),
        (
            "SHOW DATABASES",
            // replicas is pgpilot's own count: int8, as its other columns (it was sent as int4).
            &[("port", int4), ("pool_size", int4), ("paused", int4), ("disabled", int4), ("replicas", int8)],
        ),
        ("SHOW USERS", &[("max_user_connections", int4), ("current_connections", int4)]),
        ("SHOW LISTS", &[("items", int4)]),
        ("SHOW MEM", &[("size", int4), ("memtotal", int4)]),
        ("SHOW DNS_HOSTS", &[("ttl", int8)]),
        ("SHOW DNS_ZONES", &[("serial", int8), ("count", int4)]),
    ];
    for (command, columns) in expected {
        let got = console_column_types(&gw, command).await;
        for (name, oid) in *columns {
            assert_eq!(type_of(&got, name), *oid, "{command} {name}: {got:?}");
        }
    }
    let totals = admin(&gw, "SHOW TOTALS");
    let names: Vec<&str> = totals.lines().filter_map(|l| l.split('|').next()).collect();
    for name in ["total_client_bytes", "total_server_bytes", "avg_client_bytes", "avg_server_bytes"] {
        assert!(names.contains(&name), "{name} in {totals}");
    }
    // An idle client and an idle server are linked to nothing: '' as in PgBouncer, not NULL.
    let clients = admin(&gw, "SHOW CLIENTS");
    let link = clients.lines().find(|l| l.starts_with("C|")).unwrap().split('|').nth(15).unwrap();
    assert_eq!(link, "", "{clients}");
    gw.shutdown().await;
}

/// The console takes only the simple protocol: an extended-protocol pipeline gets one error and
/// the rest up to its Sync is skipped, as PostgreSQL skips after an error (libpq's pipeline mode
/// expects exactly that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_an_extended_pipeline_once_per_sync() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let startup = startup_packet_with(3 << 16, &[("user", "postgres"), ("database", "pgbouncer")]);
    let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(&startup).await.unwrap();
    read_until_ready(&mut s).await;
    let mut pipeline = Vec::new();
    for _ in 0..2 {
        pipeline.extend(message(b'P', b"\0SHOW POOLS\0\0\0"));
        pipeline.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
        pipeline.extend(message(b'E', b"\0\0\0\0\0"));
    }
    pipeline.extend(message(b'S', b""));
    s.write_all(&pipeline).await.unwrap();
    let got = read_until_ready(&mut s).await;
    let tags: Vec<u8> = backend_messages(&got).iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"EZ", "one error, then ReadyForQuery");
    // The console goes on.
    s.write_all(&query_message("SHOW VERSION")).await.unwrap();
    let got = read_until_ready(&mut s).await;
    assert!(backend_messages(&got).iter().any(|(t, _)| *t == b'D'));
    gw.shutdown().await;
}

/// A reload that changes a database's servers keeps its clients, as PgBouncer does: a client
/// between transactions goes on with the new servers, one inside a transaction finishes it on
/// the server it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_a_databases_servers_keeps_its_clients() {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgpilot.toml");
    write_sized_config(&path, &pg, 3);
    let gw = start(pgpilot_gateway::config::Config::load(&path).unwrap()).await;
    let idle = connect(&gw).await;
    idle.simple_query("SELECT 1").await.unwrap();
    let in_transaction = connect(&gw).await;
    in_transaction
        .batch_execute("CREATE TABLE reload_t(x int); BEGIN; INSERT INTO reload_t VALUES (1)")
        .await
        .unwrap();
    // The same server under another spelling of its URL: a new server list for pgpilot.
    let text = std::fs::read_to_string(&path).unwrap().replace("postgres://", "postgresql://");
    std::fs::write(&path, text).unwrap();
    gw.reload().unwrap();
    in_transaction
        .batch_execute("INSERT INTO reload_t VALUES (2); COMMIT")
        .await
        .expect("the transaction was cut");
    for i in 0..3 {
        let n: i64 = idle
            .query_one("SELECT count(*) FROM reload_t", &[])
            .await
            .expect("the client was dropped")
            .get(0);
        assert_eq!(n, 2, "round {i}");
        let n: i64 = in_transaction.query_one("SELECT count(*) FROM reload_t", &[]).await.unwrap().get(0);
        assert_eq!(n, 2);
    }
    // The clients moved to the new pools are counted there, and counted out when they leave.
    let cl_active = || console_rows(&gw, "SHOW POOLS", "postgres|postgres|")[0][2].clone();
    assert_eq!(cl_active(), "2");
    drop((idle, in_transaction));
    assert!(eventually(Duration::from_secs(3), || cl_active() == "0").await, "cl_active {}", cl_active());
    gw.shutdown().await;
}

/// Clients held by PAUSE count in SHOW POOLS' maxwait like clients waiting for a server: a PAUSE
/// forgotten for minutes must trip the max-wait alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_held_by_pause_show_their_wait_in_maxwait() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let c = connect(&gw).await;
    c.simple_query("SELECT 1").await.unwrap();
    admin(&gw, "PAUSE postgres");
    let held = tokio::spawn(async move { c.query_one("SELECT 42", &[]).await.map(|r| r.get::<_, i32>(0)) });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pools = console_rows(&gw, "SHOW POOLS", "postgres|postgres|");
    let wait_us = pools[0][13].parse::<u64>().unwrap() * 1_000_000 + pools[0][14].parse::<u64>().unwrap();
    assert_eq!(pools[0][3], "1", "cl_waiting: {pools:?}");
    assert!(wait_us >= 1_000_000, "maxwait of a paused client: {wait_us} µs");
    admin(&gw, "RESUME postgres");
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), held).await.unwrap().unwrap().unwrap(), 42);
    let pools = console_rows(&gw, "SHOW POOLS", "postgres|postgres|");
    assert_eq!(
        (pools[0][3].as_str(), pools[0][13].as_str(), pools[0][14].as_str()),
        ("0", "0", "0"),
        "{pools:?}"
    );
    gw.shutdown().await;
}

/// Backends ended by an administrator (pg_terminate_backend) at random while clients prepare and
/// run statements as asyncpg does (Parse, Describe and Flush, then Bind, Execute and Sync): a
/// client either never hears of it (its request moves to another server) or gets the server's
/// FATAL as its last message. Before, a pooled server's goodbye read while it held nothing of the
/// client's was passed on and the client was then answered by the next server: asyncpg failed on
/// rows after a FATAL (helper-127 saw 2–4 such answers in every 8 s run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_follows_a_fatal_when_backends_are_terminated_under_load() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 3;
    let gw = start(config).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let killer = terminate_at_random(
        &pg,
        "backend_type = 'client backend' AND pid <> pg_backend_pid()",
        Duration::from_millis(40),
        deadline,
    );
    let clients: Vec<_> =
        (0..6).map(|i| tokio::spawn(prepare_and_run_until(addr(&gw), i, deadline))).collect();
    let mut answered = 0;
    for c in clients {
        let (ok, after_fatal) = c.await.unwrap();
        assert!(after_fatal.is_empty(), "messages after a FATAL: {after_fatal:?}");
        answered += ok;
    }
    let killed = killer.await.unwrap();
    assert!(killed > 20 && answered > 100, "{killed} backends ended, {answered} requests answered");
    gw.shutdown().await;
}

/// Ends one backend picked at random among those `filter` (a pg_stat_activity condition) selects,
/// every `every` until `deadline`, as an administrator's kill script; the task returns how many.
fn terminate_at_random(
    pg: &Cluster,
    filter: &str,
    every: Duration,
    deadline: tokio::time::Instant,
) -> tokio::task::JoinHandle<u64> {
    let pg_url = pg.admin_url();
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity \
         WHERE {filter} ORDER BY random() LIMIT 1) v"
    );
    tokio::spawn(async move {
        let (admin, conn) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let mut killed = 0u64;
        while tokio::time::Instant::now() < deadline {
            killed += admin.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) as u64;
            tokio::time::sleep(every).await;
        }
        killed
    })
}

/// One client's loop until `deadline`: the requests answered, and what came after any FATAL.
async fn prepare_and_run_until(
    addr: std::net::SocketAddr,
    i: usize,
    deadline: tokio::time::Instant,
) -> (u64, Vec<String>) {
    use tokio::io::AsyncWriteExt;
    let mut answered = 0;
    let mut after_fatal = Vec::new();
    let mut conn: Option<RawConn> = None;
    while tokio::time::Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match RawConn::log_in(addr, &mut after_fatal).await {
                Some(c) => conn.insert(c),
                // The server connection the login used was ended too: the client logs in again.
                None => continue,
            },
        };
        if i.is_multiple_of(2) {
            c.sock.write_all(&query_message("SELECT 1")).await.unwrap();
        } else {
            let mut prepare = parse("", "SELECT $1::int + 1, pg_sleep(0.001)");
            prepare.extend(message(b'D', b"S\0"));
            prepare.extend(message(b'H', &[]));
            c.sock.write_all(&prepare).await.unwrap();
            match c.answered_through(b'T', &mut after_fatal).await {
                Answer::Through => {}
                Answer::Failed => {
                    // The batch failed: the server skips to the client's Sync.
                    let _ = c.sock.write_all(&sync()).await;
                    if c.answered_through(b'Z', &mut after_fatal).await == Answer::Closed {
                        conn = None;
                    }
                    continue;
                }
                Answer::Closed => {
                    conn = None;
                    continue;
                }
            }
            let mut run = message(b'B', b"\0\0\0\0\0\x01\0\0\0\x011\0\0");
            run.extend(message(b'E', &[0, 0, 0, 0, 0]));
            run.extend(sync());
            c.sock.write_all(&run).await.unwrap();
        }
        match c.answered_through(b'Z', &mut after_fatal).await {
            Answer::Through => answered += 1,
            Answer::Failed => {}
            Answer::Closed => conn = None,
        }
    }
    (answered, after_fatal)
}

struct RawConn {
    sock: tokio::net::TcpStream,
    buf: Vec<u8>,
}

#[derive(PartialEq, Debug)]
enum Answer {
    /// The awaited message came.
    Through,
    /// An error (not FATAL) came first; for a Z awaited, the Z after it was read too.
    Failed,
    /// The connection closed, after a FATAL or not.
    Closed,
}

impl RawConn {
    /// A login as `postgres`; None when it was refused or closed (after a FATAL, whose followers,
    /// if any, are put in `after_fatal`).
    async fn log_in(addr: std::net::SocketAddr, after_fatal: &mut Vec<String>) -> Option<RawConn> {
        use tokio::io::AsyncWriteExt;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(&startup_packet()).await.unwrap();
        let mut c = RawConn { sock, buf: Vec::new() };
        (c.answered_through(b'Z', after_fatal).await == Answer::Through).then_some(c)
    }

    /// Reads messages until `end`. Whatever follows a FATAL goes to `after_fatal`.
    async fn answered_through(&mut self, end: u8, after_fatal: &mut Vec<String>) -> Answer {
        let mut fatal = false;
        let mut failed = false;
        loop {
            let Some((tag, body)) = self.next().await else { return Answer::Closed };
            if fatal {
                after_fatal.push((tag as char).to_string());
            } else if tag == b'E' {
                fatal = pgpilot_wire::error::ErrorFields::parse(&body).severity == "FATAL";
                failed = true;
                if end != b'Z' && !fatal {
                    return Answer::Failed;
                }
            } else if tag == end {
                return if failed { Answer::Failed } else { Answer::Through };
            }
        }
    }

    /// The next whole message, None at the end of the connection.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let msg: Vec<u8> = self.buf.drain(..1 + len).collect();
                    return Some((msg[0], msg[5..].to_vec()));
                }
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(Duration::from_secs(10), self.sock.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

/// `RECONNECT; WAIT_CLOSE` (ops scripts before taking a server away): WAIT_CLOSE returns once the
/// servers opened before the RECONNECT are closed, which a client in a transaction delays until
/// it ends; KILL_CLIENT closes one client by its SHOW CLIENTS id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_close_waits_for_the_servers_before_reconnect_and_kill_client_closes_one() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let in_transaction = connect(&gw).await;
    in_transaction.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let other = connect(&gw).await;
    other.simple_query("SELECT 1").await.unwrap();
    admin(&gw, "WAIT_CLOSE");
    admin(&gw, "RECONNECT postgres");
    let port = addr(&gw).port();
    let waiting = std::thread::spawn(move || {
        let psql = pgpilot_testkit::pg_bin_dir().unwrap().tool("psql");
        let args = ["-X", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "pgbouncer"];
        std::process::Command::new(psql).args(args).args(["-c", "WAIT_CLOSE postgres"]).output().unwrap()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiting.is_finished(), "WAIT_CLOSE returned while a server from before RECONNECT was in use");
    in_transaction.batch_execute("COMMIT").await.unwrap();
    let out = tokio::task::spawn_blocking(move || waiting.join().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "WAIT_CLOSE");
    let servers = console_rows(&gw, "SHOW SERVERS", "S|");
    assert!(servers.len() <= 1, "the servers from before RECONNECT are closed: {servers:?}");
    // The servers opened since are the current generation: nothing to wait for.
    other.simple_query("SELECT 1").await.unwrap();
    admin(&gw, "WAIT_CLOSE postgres");

    let app_name = "to-be-killed";
    let victim =
        try_connect(&format!("{} application_name={app_name}", conninfo(&gw, "postgres", "postgres")))
            .await
            .unwrap();
    victim.simple_query("SELECT 1").await.unwrap();
    let clients = console_rows(&gw, "SHOW CLIENTS", "C|");
    let id_column = console_header(&gw, "SHOW CLIENTS").split('|').position(|c| c == "id");
    let row = clients.iter().find(|r| r.iter().any(|c| c == app_name)).expect("the client's row");
    let id = &row[id_column.expect("an id column")];
    assert_eq!(console_header(&gw, &format!("KILL_CLIENT {id}")), "KILL_CLIENT", "the tag, as PgBouncer's");
    assert!(
        eventually(Duration::from_secs(5), || victim.is_closed()).await,
        "KILL_CLIENT left the client open"
    );
    assert_eq!(
        other.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1,
        "another client is untouched"
    );
    let unknown = psql(&gw, "pgpilot", "KILL_CLIENT 987654321").unwrap_err();
    assert!(unknown.contains("client not found"), "{unknown}");
}

/// helper-149: PAUSE closes the servers once their transactions are done, as PgBouncer's does
/// (it is run before restarting PostgreSQL), and min_pool_size does not open them again until
/// RESUME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_closes_the_servers_until_resume() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.min_pool_size = 2;
    let gw = start(config).await;
    let c = connect(&gw).await;
    c.simple_query("SELECT 1").await.unwrap();
    let backends = || {
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND pid <> pg_backend_pid() AND application_name <> 'pgpilot-monitor'",
        )
    };
    assert_ne!(backends(), "0");
    admin(&gw, "PAUSE postgres");
    assert_eq!(backends(), "0", "PAUSE left server connections open");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(backends(), "0", "min_pool_size opened servers while paused");
    admin(&gw, "RESUME postgres");
    assert_eq!(c.query_one("SELECT 42", &[]).await.unwrap().get::<_, i32>(0), 42);
    gw.shutdown().await;
}

/// While the server is down, clients whose server connection is being opened (or waits for its
/// next attempt) are waiting clients, and no connection is active: SHOW POOLS, SHOW CLIENTS,
/// /metrics and the pool-stats API agree. Before, each such client held a place counted as an
/// active server (sv_active, utilization) and as an active client, with maxwait 0, while SHOW
/// CLIENTS said `waiting` and SHOW SERVERS listed nothing (helper-149).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_whose_servers_are_being_opened_are_waiting_not_active() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 10;
    config.pgpilot.query_wait_timeout = pgpilot_gateway::config::Secs::from_secs(30);
    let gw = start(config).await;
    let first = connect(&gw).await;
    first.simple_query("SELECT 1").await.unwrap();
    let mut clients = vec![first];
    for _ in 0..4 {
        clients.push(connect(&gw).await);
    }
    pg.stop();
    let asking: Vec<_> =
        clients.into_iter().map(|c| tokio::spawn(async move { c.simple_query("SELECT 1").await })).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pools = console_rows(&gw, "SHOW POOLS", "postgres|postgres|");
    let col = |i: usize| pools[0][i].parse::<u64>().unwrap();
    let (cl_active, cl_waiting, sv_active, sv_login) = (col(2), col(3), col(6), col(12));
    assert_eq!((cl_active, cl_waiting, sv_active), (0, 5, 0), "cl_active, cl_waiting, sv_active: {pools:?}");
    // One login at a time while the server is down, and none of the places waiting for their turn.
    assert!(sv_login <= 1, "sv_login: {pools:?}");
    let wait_us = col(13) * 1_000_000 + col(14);
    assert!(wait_us >= 1_000_000, "maxwait {wait_us} µs: {pools:?}");
    let waiting = console_rows(&gw, "SHOW CLIENTS", "C|postgres|postgres|");
    assert_eq!(waiting.iter().filter(|c| c[4] == "waiting").count(), 5, "SHOW CLIENTS: {waiting:?}");
    let http = gw.http_addr().unwrap();
    let (_, metrics) = http_get(format!("http://{http}/metrics")).await;
    let gauge = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name}{{database=\"postgres\"")));
        line.unwrap_or_else(|| panic!("no {name} in\n{metrics}")).rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    assert_eq!(gauge("pgpilot_pool_clients_waiting"), 5.0);
    assert_eq!(gauge("pgpilot_pool_clients_active"), 0.0);
    assert_eq!(gauge("pgpilot_pool_servers_active"), 0.0);
    assert_eq!(gauge("pgpilot_pool_servers_login"), sv_login as f64);
    assert_eq!(gauge("pgpilot_pool_utilization"), 0.0);
    assert!(gauge("pgpilot_pool_max_wait_seconds") >= 1.0);
    let (_, stats) = http_get(format!("http://{http}/api/v1/monitoring/pool-stats")).await;
    let json: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let pool = &json["pools"][0];
    assert_eq!(
        (&pool["clients_waiting"], &pool["clients_active"], &pool["servers_active"], &pool["utilization"]),
        (&5.into(), &0.into(), &0.into(), &0.0.into()),
        "{pool}"
    );
    assert!(pool["max_wait_ms"].as_f64().unwrap() >= 1000.0, "{pool}");
    gw.shutdown().await;
    for a in asking {
        let _ = a.await;
    }
}

/// While a server is down, pgpilot_server_failed_checks_total counts the health checks made, one
/// per health_check_interval, as the docs' rate() alert reads it. Before, each lag round (every
/// lag_check_interval, 0.1 s) that skipped the check after a failure counted one more: ten
/// failed checks a second for one made (helper-149).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_health_checks_count_one_per_health_check_interval() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    connect(&gw).await.simple_query("SELECT 1").await.unwrap();
    let db = gw.shared().database("postgres").unwrap();
    let primary = db.backends[db.primary_index()].clone();
    let failed = || primary.failed_checks.load(std::sync::atomic::Ordering::Relaxed);
    pg.stop();
    assert!(eventually(Duration::from_secs(5), || failed() > 0).await, "no failed check");
    let before = failed();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let counted = failed() - before;
    // health_check_interval is 1 s: four or five checks in 4.5 s.
    assert!((3..=6).contains(&counted), "{counted} failed checks counted in 4.5 s");
    gw.shutdown().await;
}

/// PgBouncer 1.23's layouts, as CrunchyData's pgbouncer_fdw (pgMonitor) reads them through
/// dblink, which fails on any column more or less: with `console_columns = "pgbouncer"` every
/// SHOW it runs has exactly those columns; by default pgpilot's own come after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dblink_reads_pgbouncer_1_23_layouts() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE EXTENSION dblink");
    let text_and_ints = |names: &str, ints: &[&str]| -> String {
        let column = |n: &str| {
            let kind = if ints.contains(&n) { "int" } else { "text" };
            format!("\"{n}\" {kind}")
        };
        names.split_whitespace().map(column).collect::<Vec<_>>().join(", ")
    };
    let conn = "type user database replication state addr port local_addr local_port connect_time \
                request_time wait wait_us close_needed ptr link remote_pid tls application_name \
                prepared_statements";
    let conn_ints =
        ["port", "local_port", "wait", "wait_us", "close_needed", "remote_pid", "prepared_statements"];
    let layouts = [
        ("show clients", text_and_ints(conn, &conn_ints)),
        ("show servers", text_and_ints(conn, &conn_ints)),
        (
            "show databases",
            text_and_ints(
                "name host port database force_user pool_size min_pool_size reserve_pool server_lifetime \
                 pool_mode max_connections current_connections paused disabled",
                &[
                    "port",
                    "pool_size",
                    "min_pool_size",
                    "reserve_pool",
                    "server_lifetime",
                    "max_connections",
                    "current_connections",
                    "paused",
                    "disabled",
                ],
            ),
        ),
        (
            "show pools",
            text_and_ints(
                "database user cl_active cl_waiting cl_active_cancel_req cl_waiting_cancel_req sv_active \
                 sv_active_cancel sv_being_canceled sv_idle sv_used sv_tested sv_login maxwait maxwait_us \
                 pool_mode",
                &["cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "maxwait", "maxwait_us"],
            ),
        ),
        ("show stats", text_and_ints(&format!("database {STATS_1_23}"), &[])),
        ("show stats_totals", text_and_ints(&format!("database {PER_DATABASE_1_23}"), &[])),
        ("show stats_averages", text_and_ints(&format!("database {PER_DATABASE_1_23}"), &[])),
        ("show lists", text_and_ints("list items", &["items"])),
        ("show config", "key text, value text, \"default\" text, changeable boolean".to_string()),
    ];
    for columns in [
        pgpilot_gateway::config::ConsoleColumns::Pgbouncer,
        pgpilot_gateway::config::ConsoleColumns::Extended,
    ] {
        let mut config = config_for(&pg);
        config.pgpilot.console_columns = columns;
        let gw = start(config).await;
        let client = connect(&gw).await;
        client.simple_query("SELECT 1").await.unwrap();
        let console = format!("host=127.0.0.1 port={} dbname=pgbouncer user=postgres", addr(&gw).port());
        for (command, layout) in &layouts {
            let sql = format!("SELECT count(*) FROM dblink('{console}', '{command}') AS x({layout})");
            let read = pg.try_psql("postgres", &sql);
            match columns {
                pgpilot_gateway::config::ConsoleColumns::Pgbouncer => {
                    let rows: usize = read.unwrap_or_else(|e| panic!("{command}: {e}")).parse().unwrap();
                    assert!(rows >= 1, "{command}: no rows");
                }
                // pgpilot's own columns follow PgBouncer's, so only these commands differ.
                pgpilot_gateway::config::ConsoleColumns::Extended => {
                    let extended = [
                        "show clients",
                        "show servers",
                        "show databases",
                        "show stats",
                        "show stats_totals",
                        "show stats_averages",
                    ]
                    .contains(command);
                    assert_eq!(read.is_err(), extended, "{command}: {read:?}");
                }
            }
        }
        drop(client);
        gw.shutdown().await;
    }
}

/// SHOW STATS_TOTALS' and SHOW STATS_AVERAGES' columns in PgBouncer 1.23, after `database`.
const PER_DATABASE_1_23: &str =
    "server_assignment_count xact_count query_count bytes_received bytes_sent xact_time query_time wait_time";

/// SHOW STATS' columns in PgBouncer 1.23, after `database`.
const STATS_1_23: &str = "total_server_assignment_count total_xact_count total_query_count total_received \
                          total_sent total_xact_time total_query_time total_wait_time avg_server_assignment_count \
                          avg_xact_count avg_query_count avg_recv avg_sent avg_xact_time avg_query_time avg_wait_time";

/// PgBouncer 1.24's prepared-statement counts come after 1.23's columns of SHOW STATS,
/// STATS_TOTALS and STATS_AVERAGES (they were missing): a driver's statement prepared once and run
/// on two server connections is one client parse, two server parses (pgpilot prepares it again on
/// the second) and one bind per execution, as dblink reads them by 1.23's layouts and 1.24's
/// names; the averages, /metrics and the monitoring API move with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_counts_parses_and_binds() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE EXTENSION dblink");
    let gw = start(config_for(&pg)).await;
    let console = format!("host=127.0.0.1 port={} dbname=pgbouncer user=postgres", addr(&gw).port());
    // The named columns of the postgres row, read as dblink reads the whole layout.
    let read = |command: &str, columns: String, wanted: &str| -> Vec<u64> {
        let layout = std::iter::once("database text".to_string())
            .chain(columns.split_whitespace().map(|c| format!("{c} numeric")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT concat_ws(' ', {wanted}) FROM dblink('{console}', '{command}') AS x({layout}) \
             WHERE database = 'postgres'"
        );
        pg.psql("postgres", &sql).split_whitespace().map(|n| n.parse().unwrap()).collect()
    };
    let prepared = "client_parse_count server_parse_count bind_count";
    let averaged = "avg_client_parse_count avg_server_parse_count avg_bind_count";
    let stats_columns = format!("{STATS_1_23} total_{} {averaged}", prepared.replace(' ', " total_"));
    let stats_totals =
        || read("show stats_totals", format!("{PER_DATABASE_1_23} {prepared}"), &prepared.replace(' ', ","));
    let stats = || {
        read(
            "show stats",
            stats_columns.clone(),
            "total_client_parse_count,total_server_parse_count,total_bind_count",
        )
    };
    let client = connect(&gw).await;
    assert_eq!(stats_totals(), [0, 0, 0], "before any statement");
    let statement = client.prepare("SELECT $1::int4 + 1").await.unwrap();
    for i in 0..60 {
        assert_eq!(client.query_one(&statement, &[&i]).await.unwrap().get::<_, i32>(0), i + 1);
    }
    // The next executions run on a new server connection, which pgpilot prepares the statement on.
    admin(&gw, "RECONNECT postgres; WAIT_CLOSE postgres");
    for i in 0..60 {
        assert_eq!(client.query_one(&statement, &[&i]).await.unwrap().get::<_, i32>(0), i + 1);
    }
    assert_eq!(stats_totals(), [1, 2, 120], "client parses, server parses, binds");
    assert_eq!(stats(), [1, 2, 120], "SHOW STATS' totals");
    let totals = admin(&gw, "SHOW TOTALS");
    for row in ["total_client_parse_count|1", "total_server_parse_count|2", "total_bind_count|120"] {
        assert!(totals.lines().any(|l| l == row), "{row} in {totals}");
    }
    // 120 binds in under a second: the window's average is at least 8 a second (the window so
    // far, or, once a 15-second window has ended, the one they were in).
    let averages = || {
        let of_stats = read("show stats", stats_columns.clone(), "avg_bind_count")[0];
        let of_averages =
            read("show stats_averages", format!("{PER_DATABASE_1_23} {averaged}"), "avg_bind_count")[0];
        of_stats.min(of_averages)
    };
    assert!(eventually(Duration::from_secs(20), || averages() > 0).await, "avg_bind_count {}", averages());

    let http = gw.http_addr().unwrap();
    let (_, metrics) = http_get(format!("http://{http}/metrics")).await;
    let metric = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name}{{database=\"postgres\"")));
        let line = line.unwrap_or_else(|| panic!("no {name} in\n{metrics}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    let counted = ["client_parses", "server_parses", "binds"].map(|n| metric(&format!("pgpilot_{n}_total")));
    assert_eq!(counted, [1.0, 2.0, 120.0], "/metrics");
    let (_, pools) = http_get(format!("http://{http}/api/v1/monitoring/pool-stats")).await;
    let pools: serde_json::Value = serde_json::from_str(&pools).unwrap();
    let pool = &pools["pools"][0];
    assert_eq!([&pool["client_parses"], &pool["server_parses"], &pool["binds"]], [1, 2, 120], "{pools}");
    gw.shutdown().await;
}

/// Clients whose settings differ (each its own application_name) get them restored on every
/// server they land on. A server terminated right after it answered those settings (its FATAL in
/// the same read as their ReadyForQuery) lost the simple Query that waited behind them: the
/// client was never answered (helper-161: 2-4 requests per 20 s run hung for good). Every request
/// is now answered, by a result or an error, within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_lost_when_a_server_ends_right_after_the_clients_settings() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 3;
    let gw = start(config).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let killer = terminate_at_random(&pg, "application_name LIKE 'c%'", Duration::from_millis(30), deadline);
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let conninfo = format!("{} application_name=c{i}", conninfo(&gw, "postgres", "postgres"));
            tokio::spawn(async move {
                let (mut hung, mut answered) = (Vec::new(), 0u32);
                while tokio::time::Instant::now() < deadline {
                    let Ok(c) = try_connect(&conninfo).await else { continue };
                    for sql in ["SELECT 1", "BEGIN; SELECT 1; COMMIT", "SELECT 2"].iter().cycle() {
                        match tokio::time::timeout(Duration::from_secs(10), c.simple_query(sql)).await {
                            Err(_) => {
                                hung.push(sql.to_string());
                                break;
                            }
                            Ok(Ok(_)) => answered += 1,
                            Ok(Err(_)) if c.is_closed() => break,
                            Ok(Err(_)) => {}
                        }
                        if tokio::time::Instant::now() >= deadline {
                            break;
                        }
                    }
                }
                (hung, answered)
            })
        })
        .collect();
    let mut answered = 0;
    for c in clients {
        let (hung, n) = c.await.unwrap();
        assert!(hung.is_empty(), "requests never answered: {hung:?}");
        answered += n;
    }
    killer.await.unwrap();
    assert!(answered > 200, "{answered} requests answered");
    gw.shutdown().await;
}

/// The console's parsing where operators were bitten (helper-169): a `;` inside a quoted value is
/// part of it, words a command does not take make it invalid instead of being ignored, the first
/// failing command of a query ends it, and a global PAUSE is not each database's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_commands_are_read_strictly() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let c = connect(&gw).await;
    admin(&gw, "SET server_reset_query = 'DISCARD ALL; SELECT 1'");
    let config = admin(&gw, "SHOW CONFIG");
    assert!(config.contains("server_reset_query|DISCARD ALL; SELECT 1|"), "{config}");
    let console = connect_as(&gw, "postgres", "pgbouncer").await;
    for extra in
        ["PAUSE postgres other", "SHUTDOWN NOW", "RELOAD now", "KILL postgres typo", "SHOW POOLS extra"]
    {
        let refused = console.simple_query(extra).await.expect_err(extra);
        // PgBouncer's one answer to a command it cannot read: 08P01 with the command (SHOW with
        // more words got 42601 "SHOW takes one word").
        assert_eq!(sqlstate(&refused).as_deref(), Some("08P01"), "{extra}: {refused}");
        let said = refused.as_db_error().unwrap().message();
        assert_eq!(said, format!("invalid command '{extra}', use SHOW HELP;"), "{extra}");
    }
    assert!(admin(&gw, "SHOW STATE").contains("paused|no"));
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1, "still serving");
    // The second PAUSE never runs: the first failed.
    assert!(psql(&gw, "pgpilot", "PAUSE nosuchdb; PAUSE postgres").is_err());
    let resumed = psql(&gw, "pgpilot", "RESUME postgres").expect_err("postgres was never paused");
    assert!(resumed.contains("database postgres is not paused"), "{resumed}");
    // A global PAUSE: RESUME of one database resumes nothing and says so.
    admin(&gw, "PAUSE");
    let one = psql(&gw, "pgpilot", "RESUME postgres").expect_err("a database not paused on its own");
    assert!(one.contains("database postgres is not paused"), "{one}");
    admin(&gw, "RESUME");
    assert_eq!(c.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0), 2);
    admin(&gw, "SHUTDOWN WAIT_FOR_SERVERS");
    gw.shutdown().await;
}

/// server_reset_query_always: the reset runs after every transaction in transaction pooling too,
/// as PgBouncer runs it (helper-169: it ran only at the end of a session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_query_always_runs_after_each_transaction() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE resets (id serial)");
    let mut config = config_for(&pg);
    config.pgpilot.server_reset_query = "INSERT INTO resets DEFAULT VALUES".into();
    config.pgpilot.server_reset_query_always = true;
    let gw = start(config).await;
    let c = connect(&gw).await;
    for _ in 0..3 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    let counted =
        eventually(Duration::from_secs(5), || pg.psql("postgres", "SELECT count(*) FROM resets") == "3")
            .await;
    assert!(counted, "resets: {}", pg.psql("postgres", "SELECT count(*) FROM resets"));
    gw.shutdown().await;
}
