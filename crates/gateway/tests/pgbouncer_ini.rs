//! A realistic pgbouncer.ini (with %include, [users], an auth_file made from pg_authid the way
//! PgBouncer's mkauth.py makes it) converted and served: clients log in with md5, SCRAM and plain
//! passwords, reach databases over TCP and a Unix socket, with forced and pass-through users, and
//! the admin console answers under PgBouncer's name.

mod common;

use std::path::Path;

use pgpilot_gateway::config::pgbouncer_ini::{convert_file, to_commented_toml, Outcome};
use pgpilot_gateway::config::{AuthType, Config, PoolMode, QuickStart};
use pgpilot_gateway::Gateway;
use pgpilot_testkit::{free_port, Cluster};

/// The server password of the forced user, with a quote and a space to exercise quoting.
const APP_OWNER_PASSWORD: &str = "app'owner pw";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Roles as an application would have them: alice's password stored as md5, the others as SCRAM.
fn prepare_cluster(pg: &Cluster) {
    pg.psql("postgres", "SET password_encryption = 'md5'; CREATE ROLE alice LOGIN PASSWORD 'alice-pw'");
    pg.create_user("bob", "bob-pw");
    pg.create_user("carol", "carol pw");
    pg.create_user("app_owner", APP_OWNER_PASSWORD);
    pg.create_database("appdb", "app_owner");
    pg.create_database("shopdb", "postgres");
}

/// userlist.txt: alice and bob with their pg_authid secrets (md5, SCRAM), carol and the console
/// users in plain text.
fn userlist(pg: &Cluster) -> String {
    let secret = |role: &str| {
        pg.psql("postgres", &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"))
    };
    let alice = secret("alice");
    let bob = secret("bob");
    assert!(alice.starts_with("md5") && bob.starts_with("SCRAM-SHA-256$"), "{alice} / {bob}");
    format!(
        ";; generated from pg_authid\n\"alice\" \"{alice}\"\n\"bob\" \"{bob}\"\n\"carol\" \"carol pw\"\n\
         \"ops\" \"ops-pw\"\n\"watcher\" \"watcher-pw\"\n"
    )
}

fn pgbouncer_ini(dir: &Path, pg: &Cluster, listen_port: u16) -> std::path::PathBuf {
    let socket_dir = dir.join("sock");
    std::fs::create_dir_all(&socket_dir).unwrap();
    write(&dir.join("userlist.txt"), &userlist(pg));
    let pg_port = pg.port();
    let quoted_password = APP_OWNER_PASSWORD.replace('\'', "''");
    write(
        &dir.join("databases.ini"),
        &format!(
            "[databases]\n\
             app = host=127.0.0.1 port={pg_port} dbname=appdb user=app_owner password='{quoted_password}' pool_size=3 pool_mode=transaction\n\
             shop = host=127.0.0.1 port={pg_port} dbname=shopdb max_db_connections=8\n\
             sock = host={} port={pg_port} dbname=postgres user=postgres\n\
             * = host=127.0.0.1 port={pg_port} user=app_owner password='{quoted_password}'\n\
             %include users.ini\n",
            pg.socket_dir().display()
        ),
    );
    write(&dir.join("users.ini"), "[users]\ncarol = pool_mode=session max_user_connections=5\n");
    let ini = dir.join("pgbouncer.ini");
    write(
        &ini,
        &format!(
            ";; pgbouncer.ini as a team would have it\n\
             [pgbouncer]\n\
             logfile = /var/log/pgbouncer/pgbouncer.log\n\
             pidfile = /var/run/pgbouncer/pgbouncer.pid\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {listen_port}\n\
             unix_socket_dir = {}\n\
             unix_socket_mode = 0770\n\
             auth_type = md5\n\
             auth_file = userlist.txt\n\
             admin_users = ops\n\
             stats_users = watcher, nobody_else\n\
             pool_mode = transaction\n\
             max_client_conn = 50\n\
             default_pool_size = 4\n\
             min_pool_size = 0\n\
             reserve_pool_size = 1\n\
             reserve_pool_timeout = 1\n\
             max_db_connections = 10\n\
             max_user_connections = 10\n\
             server_lifetime = 600\n\
             server_idle_timeout = 60\n\
             server_connect_timeout = 5\n\
             server_login_retry = 1\n\
             query_wait_timeout = 10\n\
             query_timeout = 30\n\
             client_idle_timeout = 0\n\
             client_login_timeout = 10\n\
             idle_transaction_timeout = 60\n\
             server_reset_query = DISCARD ALL\n\
             server_reset_query_always = 0\n\
             server_check_query = select 1\n\
             server_check_delay = 5\n\
             max_prepared_statements = 50\n\
             max_packet_size = 1048576\n\
             log_connections = 0\n\
             log_disconnections = 0\n\
             log_pooler_errors = 1\n\
             tcp_keepalive = 1\n\
             application_name_add_host = 0\n\
             client_tls_sslmode = disable\n\
             server_tls_sslmode = disable\n\
             ignore_startup_parameters = extra_float_digits\n\
             stats_period = 60\n\
             %include databases.ini\n",
            socket_dir.display()
        ),
    );
    ini
}

async fn query_pair(conninfo: &str, sql: &str) -> Result<(String, String), String> {
    let client = common::try_connect(conninfo).await.map_err(|e| explain(&e))?;
    let row = client.query_one(sql, &[]).await.map_err(|e| explain(&e))?;
    Ok((row.get(0), row.get(1)))
}

fn explain(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn tcp(port: u16, user: &str, password: &str, db: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} password='{password}' dbname={db} sslmode=disable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbouncer_ini_runs_as_is() {
    common::init_logs();
    let pg = Cluster::builder().host_auth("md5").start();
    prepare_cluster(&pg);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ini = pgbouncer_ini(dir.path(), &pg, port);

    let conversion = convert_file(&ini).unwrap_or_else(|e| panic!("{e}"));
    let c = &conversion.config;
    assert_eq!(c.pgpilot.auth_type(), AuthType::Md5);
    assert_eq!(c.pgpilot.pool_mode, PoolMode::Transaction);
    assert_eq!(c.pgpilot.auth_file.as_deref(), Some(dir.path().join("userlist.txt").as_path()));
    assert_eq!(c.pgpilot.stats_users, vec!["watcher", "nobody_else"]);
    assert_eq!(c.users["carol"].pool_mode, Some(PoolMode::Session));
    assert_eq!(c.databases["shop"].max_db_connections, Some(8));
    assert_eq!(c.pgpilot.unix_socket_mode, "0770");
    let ignored: Vec<&str> = conversion.not_honoured().map(|n| n.setting.as_str()).collect();
    assert_eq!(ignored, vec!["[pgbouncer] logfile", "[pgbouncer] pidfile", "[pgbouncer] stats_period"]);
    assert!(conversion.notes.iter().any(|n| n.setting == "[pgbouncer] ignore_startup_parameters"
        && matches!(n.outcome, Outcome::ChangedMeaning(_))));
    assert_eq!(conversion.weakening().count(), 0);

    // The commented pgpilot.toml says the same thing.
    let toml = to_commented_toml(&conversion);
    let reparsed = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(reparsed.validate(), Vec::<String>::new());
    assert!(!toml.contains("alice-pw") && !toml.contains("SCRAM-SHA-256$"), "userlist secrets leaked");

    let gw = Gateway::start(conversion.config, QuickStart::default()).await.expect("gateway starts");
    assert_eq!(gw.addrs()[0].port(), port);

    // md5 from the client, md5 hash passed through to the server.
    let who = "SELECT current_user::text, current_database()::text";
    assert_eq!(
        query_pair(&tcp(port, "alice", "alice-pw", "shop"), who).await.unwrap(),
        ("alice".into(), "shopdb".into())
    );
    // A SCRAM secret in auth_file: SCRAM with the client, the proven key reused with the server.
    assert_eq!(
        query_pair(&tcp(port, "bob", "bob-pw", "shop"), who).await.unwrap(),
        ("bob".into(), "shopdb".into())
    );
    // A forced user with the password from the connection string.
    assert_eq!(
        query_pair(&tcp(port, "carol", "carol pw", "app"), who).await.unwrap(),
        ("app_owner".into(), "appdb".into())
    );
    // A database without a section of its own, made from `*`, with `*`'s user and password.
    assert_eq!(
        query_pair(&tcp(port, "carol", "carol pw", "appdb"), who).await.unwrap(),
        ("app_owner".into(), "appdb".into())
    );
    // Wrong passwords and unknown users are refused, as PgBouncer would.
    let err = query_pair(&tcp(port, "alice", "wrong", "shop"), who).await.unwrap_err();
    assert!(err.starts_with("28P01"), "{err}");
    let err = query_pair(&tcp(port, "mallory", "x", "shop"), who).await.unwrap_err();
    assert!(err.starts_with("28"), "{err}");

    // PgBouncer's unix_socket_dir: clients on the socket; a database behind the server's socket.
    let socket = format!(
        "host={} port={port} user=carol password='carol pw' dbname=sock",
        dir.path().join("sock").display()
    );
    assert_eq!(query_pair(&socket, who).await.unwrap(), ("postgres".into(), "postgres".into()));
    assert_eq!(socket_mode(&dir.path().join("sock").join(format!(".s.PGSQL.{port}"))), 0o770);

    // The admin console under PgBouncer's name, for admin_users and (read-only) stats_users.
    let ops = common::try_connect(&tcp(port, "ops", "ops-pw", "pgbouncer")).await.expect("console login");
    let pools = ops.simple_query("SHOW POOLS").await.expect("SHOW POOLS");
    let rows = pools
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap_or("").to_string(), r.get(1).unwrap_or("").to_string()))
            }
            _ => None,
        })
        .collect::<Vec<_>>();
    for expected in [("app", "app_owner"), ("shop", "alice"), ("shop", "bob"), ("sock", "postgres")] {
        assert!(
            rows.iter().any(|(d, u)| (d.as_str(), u.as_str()) == expected),
            "{expected:?} not in {rows:?}"
        );
    }
    // SHOW CONFIG's defaults are PgBouncer's, which a pgbouncer.ini's unset settings take.
    let config = ops.simple_query("SHOW CONFIG").await.expect("SHOW CONFIG");
    let max_clients = config.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("max_client_conn") => {
            Some((r.get(1).unwrap_or("").to_string(), r.get(2).unwrap_or("").to_string()))
        }
        _ => None,
    });
    assert_eq!(max_clients, Some(("50".to_string(), "100".to_string())), "max_client_conn: value, default");
    let watcher =
        common::try_connect(&tcp(port, "watcher", "watcher-pw", "pgbouncer")).await.expect("stats login");
    watcher.simple_query("SHOW STATS").await.expect("stats_users may SHOW");
    assert!(watcher.simple_query("RELOAD").await.is_err(), "stats_users may not RELOAD");
    drop((ops, watcher));

    let stopping = std::time::Instant::now();
    gw.shutdown().await;
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(10),
        "idle clients should not hold up shutdown"
    );
}

/// The permission bits of a file.
fn socket_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// As in PgBouncer, the Unix socket is 0777 unless unix_socket_mode says otherwise, whatever the
/// umask: other OS users' clients (psql as postgres) may connect, and then authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_is_open_to_every_local_user_by_default() {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_for(&pg);
    config.pgpilot.unix_socket_dir = Some(dir.path().to_path_buf());
    let gw = common::start(config).await;
    let port = gw.addrs()[0].port();
    assert_eq!(socket_mode(&dir.path().join(format!(".s.PGSQL.{port}"))), 0o777);
    let conninfo = format!("host={} port={port} user=postgres dbname=postgres", dir.path().display());
    let who = "SELECT current_user::text, current_database()::text";
    assert_eq!(query_pair(&conninfo, who).await.unwrap(), ("postgres".into(), "postgres".into()));
    gw.shutdown().await;
}

/// A socket file something still listens on (a PgBouncer started from the same pgbouncer.ini) is
/// not taken from it: pgpilot refuses to start, as a second PgBouncer does. A stale file, its
/// listener gone, is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_in_use_is_not_taken_over() {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let socket = dir.path().join(format!(".s.PGSQL.{port}"));
    let other = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut config = common::config_for(&pg);
    config.pgpilot.listen = pgpilot_gateway::config::OneOrMany(vec![format!("127.0.0.1:{port}")]);
    config.pgpilot.unix_socket_dir = Some(dir.path().to_path_buf());
    common::init_logs();
    let refused = Gateway::start(config.clone(), QuickStart::default()).await.err().expect("refused");
    assert!(format!("{refused:#}").contains("in use"), "{refused:#}");
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok(), "the other listener keeps its socket");
    drop(other);
    assert!(socket.exists(), "a stale file stays behind");
    let gw = Gateway::start(config, QuickStart::default()).await.expect("a stale socket file is replaced");
    let conninfo = format!("host={} port={port} user=postgres dbname=postgres", dir.path().display());
    let who = "SELECT current_user::text, current_database()::text";
    assert_eq!(query_pair(&conninfo, who).await.unwrap(), ("postgres".into(), "postgres".into()));
    gw.shutdown().await;
}

/// The console's RELOAD re-reads the file before it answers, and a file it cannot take is an
/// error (F0000) rather than a RELOAD tag, the running configuration kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_reload_answers_with_the_outcome() {
    common::init_logs();
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    let ini_with = |pool_size: &str| {
        format!(
            "[databases]
postgres = host=127.0.0.1 port={pg} user=postgres
[pgbouncer]
             listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
             admin_users = postgres
server_tls_sslmode = disable
default_pool_size = {pool_size}
",
            pg = pg.port()
        )
    };
    write(&ini, &ini_with("2"));
    let config = pgpilot_gateway::config::pgbouncer_ini::load(&ini).unwrap();
    let gw = Gateway::start(config, QuickStart::default()).await.expect("gateway starts");
    let console = common::try_connect(&format!(
        "host=127.0.0.1 port={port} user=postgres dbname=pgbouncer sslmode=disable"
    ))
    .await
    .unwrap();
    let pool_size = || async {
        let rows = console.simple_query("SHOW CONFIG").await.unwrap();
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("default_pool_size") => {
                    r.get(1).map(str::to_string)
                }
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(pool_size().await, "2");
    write(&ini, &ini_with("4"));
    console.simple_query("RELOAD").await.unwrap();
    assert_eq!(pool_size().await, "4", "taken before RELOAD answered");
    write(&ini, &ini_with("many"));
    let refused = console.simple_query("RELOAD").await.expect_err("a file that cannot be taken");
    let db = refused.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "F0000", "{db:?}");
    assert!(db.message().contains("keeping the running configuration"), "{db:?}");
    assert_eq!(pool_size().await, "4");
    gw.shutdown().await;
}

/// PgBouncer's `*` fallback: a client asking for a database without a section of its own gets one
/// made from `*`, on the server's database of the name it asked for; kept across reloads while
/// used, and forgotten once unused for autodb_idle_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_database_serves_any_database_name() {
    common::init_logs();
    let pg = Cluster::start();
    pg.create_database("billing", "postgres");
    pg.create_database("stock", "postgres");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    write(
        &ini,
        &format!(
            "[databases]\n\
             fixed = host=127.0.0.1 port={pg} dbname=stock\n\
             * = host=127.0.0.1 port={pg} user=postgres\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nadmin_users = postgres\npool_mode = transaction\n\
             autodb_idle_timeout = 1\nserver_tls_sslmode = disable\n",
            pg = pg.port()
        ),
    );
    let conversion = convert_file(&ini).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(conversion.not_honoured().count(), 0, "{:?}", conversion.notes);
    let toml = to_commented_toml(&conversion);
    assert!(toml.contains("[databases.\"*\"]"), "{toml}");
    let gw = Gateway::start(conversion.config, QuickStart::default()).await.expect("gateway starts");
    let conninfo = |db: &str| format!("host=127.0.0.1 port={port} user=postgres dbname={db} sslmode=disable");
    let which = "SELECT current_user::text, current_database()::text";
    for (asked, served) in
        [("billing", "billing"), ("stock", "stock"), ("fixed", "stock"), ("postgres", "postgres")]
    {
        let (_, db) = query_pair(&conninfo(asked), which).await.unwrap_or_else(|e| panic!("{asked}: {e}"));
        assert_eq!(db, served, "{asked}");
    }
    let err = query_pair(&conninfo("nosuch"), which).await.unwrap_err();
    assert!(err.starts_with("3D000"), "{err}");

    let console = common::try_connect(&conninfo("pgbouncer")).await.expect("console");
    let names = async |c: &tokio_postgres::Client| -> Vec<String> {
        c.simple_query("SHOW DATABASES")
            .await
            .unwrap()
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
                _ => None,
            })
            .collect()
    };
    let listed = names(&console).await;
    assert!(listed.contains(&"billing".to_string()) && !listed.contains(&"*".to_string()), "{listed:?}");

    // In use across a reload, then forgotten once unused.
    let user = common::try_connect(&conninfo("billing")).await.unwrap();
    console.simple_query("RELOAD").await.unwrap();
    let db: String = user.query_one("SELECT current_database()::text", &[]).await.unwrap().get(0);
    assert_eq!(db, "billing");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(names(&console).await.contains(&"billing".to_string()), "forgotten while a client uses it");
    drop(user);
    let mut forgotten = false;
    for _ in 0..50 {
        if !names(&console).await.contains(&"billing".to_string()) {
            forgotten = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(forgotten, "still listed: {:?}", names(&console).await);
    assert!(names(&console).await.contains(&"fixed".to_string()));
    gw.shutdown().await;
}

/// A name no server database has, asked for by a client through `*`: the client's login is
/// refused (3D000) and the health monitor does not log in to it again and again (it used to,
/// every server_login_retry, adding a FATAL to the server's log each time for every such name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_name_the_server_lacks_is_not_logged_in_to_by_the_monitor() {
    common::init_logs();
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    write(
        &ini,
        &format!(
            "[databases]\n* = host=127.0.0.1 port={pg} user=postgres\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\npool_mode = transaction\nserver_login_retry = 1\n\
             server_tls_sslmode = disable\n",
            pg = pg.port()
        ),
    );
    let conversion = convert_file(&ini).unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::start(conversion.config, QuickStart::default()).await.expect("gateway starts");
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=nosuch sslmode=disable");
    let err = query_pair(&conninfo, "SELECT 'a', 'b'").await.unwrap_err();
    assert!(err.starts_with("3D000"), "{err}");
    // Four server_login_retry periods and a few monitor rounds.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let log = std::fs::read_to_string(pg.log_path()).unwrap();
    let refusals = log.matches("database \"nosuch\" does not exist").count();
    assert_eq!(refusals, 1, "logins to the missing database: {refusals}");
    // A client asking again is still answered by the server, not from memory only.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let err = query_pair(&conninfo, "SELECT 'a', 'b'").await.unwrap_err();
    assert!(err.starts_with("3D000"), "{err}");
    gw.shutdown().await;
}
