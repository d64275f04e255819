use std::path::{Path, PathBuf};

use super::*;
use crate::config::{ClientTlsMode, ServerTlsMode, ServerUrl};

/// Every `[pgbouncer]` setting in PgBouncer's doc/config.md (current release), plus
/// suspend_timeout (still in its source).
const PGBOUNCER_DOC_SETTINGS: &[&str] = &[
    "logfile",
    "pidfile",
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "unix_socket_mode",
    "unix_socket_group",
    "user",
    "pool_mode",
    "max_client_conn",
    "default_pool_size",
    "min_pool_size",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "max_db_connections",
    "max_db_client_connections",
    "max_user_connections",
    "max_user_client_connections",
    "server_round_robin",
    "track_extra_parameters",
    "ignore_startup_parameters",
    "peer_id",
    "disable_pqexec",
    "application_name_add_host",
    "conffile",
    "service_name",
    "job_name",
    "stats_period",
    "max_prepared_statements",
    "scram_iterations",
    "auth_type",
    "auth_hba_file",
    "auth_ident_file",
    "auth_file",
    "auth_user",
    "auth_query",
    "auth_dbname",
    "auth_ldap_options",
    "syslog",
    "syslog_ident",
    "syslog_facility",
    "log_connections",
    "log_disconnections",
    "log_pooler_errors",
    "log_stats",
    "verbose",
    "admin_users",
    "stats_users",
    "server_reset_query",
    "server_reset_query_always",
    "server_check_delay",
    "server_check_query",
    "server_fast_close",
    "server_lifetime",
    "server_idle_timeout",
    "server_connect_timeout",
    "server_login_retry",
    "client_login_timeout",
    "autodb_idle_timeout",
    "pool_idle_timeout",
    "dns_max_ttl",
    "dns_nxdomain_ttl",
    "dns_zone_check_period",
    "resolv_conf",
    "query_wait_notify",
    "login_notify_message",
    "client_tls_sslmode",
    "client_tls_key_file",
    "client_tls_cert_file",
    "client_tls_ca_file",
    "client_tls_protocols",
    "client_tls_ciphers",
    "client_tls13_ciphers",
    "client_tls_ecdhcurve",
    "client_tls_dheparams",
    "server_tls_sslmode",
    "server_tls_ca_file",
    "server_tls_key_file",
    "server_tls_cert_file",
    "server_tls_protocols",
    "server_tls_ciphers",
    "server_tls13_ciphers",
    "query_timeout",
    "query_wait_timeout",
    "cancel_wait_timeout",
    "client_idle_timeout",
    "idle_transaction_timeout",
    "transaction_timeout",
    "pkt_buf",
    "max_packet_size",
    "listen_backlog",
    "sbuf_loopcnt",
    "so_reuseport",
    "tcp_defer_accept",
    "tcp_socket_buffer",
    "tcp_keepalive",
    "tcp_keepcnt",
    "tcp_keepidle",
    "tcp_keepintvl",
    "tcp_user_timeout",
    "suspend_timeout",
];

/// A value PgBouncer would accept for the setting, and that differs from its default.
fn sample_value(key: &str) -> &'static str {
    match key {
        "listen_addr" => "127.0.0.1",
        "pool_mode" => "transaction",
        "auth_type" => "scram-sha-256",
        "client_tls_sslmode" | "server_tls_sslmode" => "require",
        "client_tls_protocols" | "server_tls_protocols" => "tlsv1.3",
        "client_tls_ciphers" | "server_tls_ciphers" => "HIGH:!aNULL",
        "client_tls13_ciphers" | "server_tls13_ciphers" => "TLS_AES_256_GCM_SHA384",
        "client_tls_ecdhcurve" => "prime256v1",
        "client_tls_dheparams" => "legacy",
        "auth_ldap_options" => "ldapurl=\"ldap://127.0.0.1/dc=example,dc=net?uid?sub\"",
        "server_reset_query" | "server_check_query" | "auth_query" | "login_notify_message" => "SELECT 1",
        k if k.ends_with("_file")
            || k.ends_with("_dir")
            || ["logfile", "pidfile", "resolv_conf", "conffile"].contains(&k) =>
        {
            "/etc/pgbouncer/something"
        }
        "admin_users"
        | "stats_users"
        | "user"
        | "auth_user"
        | "auth_dbname"
        | "syslog_ident"
        | "syslog_facility"
        | "service_name"
        | "job_name"
        | "track_extra_parameters"
        | "ignore_startup_parameters" => "someone",
        _ => "7",
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn convert_text(text: &str) -> Result<Conversion, String> {
    let dir = tempfile::tempdir().unwrap();
    convert_file(&write(dir.path(), "pgbouncer.ini", text))
}

#[test]
fn every_documented_pgbouncer_setting_gets_exactly_one_note() {
    let known: Vec<&str> = general::known_settings().collect();
    for key in PGBOUNCER_DOC_SETTINGS {
        assert!(known.contains(key), "{key} is not handled");
        let c = convert_text(&format!("[pgbouncer]\n{key} = {}\n", sample_value(key)))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let notes: Vec<&Note> =
            c.notes.iter().filter(|n| n.setting == format!("[pgbouncer] {key}")).collect();
        assert_eq!(notes.len(), 1, "{key}: {:?}", c.notes);
        if let Outcome::ChangedMeaning(why) | Outcome::NotHonoured(why) = &notes[0].outcome {
            assert!(why.len() > 20, "{key}: the reason should say something: {why:?}");
        }
    }
    for key in &known {
        assert!(PGBOUNCER_DOC_SETTINGS.contains(key), "{key} is handled but not in the documented list");
    }
}

#[test]
fn unknown_settings_and_bad_values_are_refused_like_pgbouncer() {
    let e = convert_text("[pgbouncer]\nmax_client_con = 5\n").unwrap_err();
    assert!(e.contains("pgbouncer.ini:2") && e.contains("unknown setting max_client_con"), "{e}");
    let e = convert_text("[pgbouncer]\nmax_client_conn = many\n").unwrap_err();
    assert!(e.contains("max_client_conn") && e.contains("not an integer"), "{e}");
    let e = convert_text("[pgbouncer]\n[databases]\napp = host=x colour=blue\n").unwrap_err();
    assert!(e.contains("unrecognized connection parameter colour"), "{e}");
    let e = convert_text("[pgbouncer]\n[users]\nbob = pool_mode=sometimes\n").unwrap_err();
    assert!(e.contains("[users] bob"), "{e}");
    assert!(convert_text("[pgbouncer]\n[databases]\npgbouncer = host=x\n").is_err());
    assert!(convert_text("[pgbouncer]\npool_mode = sometimes\n").is_err());
}

#[test]
fn unix_socket_mode_is_carried_over() {
    let c = convert_text("[pgbouncer]\nunix_socket_mode = 0700\n").unwrap();
    assert_eq!(c.config.pgpilot.unix_socket_permissions(), Ok(0o700));
    let note = c.notes.iter().find(|n| n.setting == "[pgbouncer] unix_socket_mode").unwrap();
    assert!(matches!(note.outcome, Outcome::CarriedOver));
    let e = convert_text("[pgbouncer]\nunix_socket_mode = 0999\n").unwrap_err();
    assert!(e.contains("unix_socket_mode") && e.contains("not a file mode"), "{e}");
}

#[test]
fn starts_from_pgbouncer_defaults_not_pgpilots() {
    let c = convert_text("[databases]\napp = host=127.0.0.1\n[pgbouncer]\n").unwrap();
    let g = &c.config.pgpilot;
    assert_eq!(g.pool_mode, PoolMode::Session);
    assert_eq!(g.auth_type(), AuthType::Md5);
    assert_eq!(g.max_client_conn, 100);
    assert_eq!(g.server_check_query, ";");
    assert_eq!(g.unix_socket_dir.as_deref(), Some(Path::new("/tmp")));
    assert_eq!(g.listen.0, vec!["127.0.0.1:6432".to_string()]);
    let listen_note = c.notes.iter().find(|n| n.setting == "[pgbouncer] listen_addr").unwrap();
    assert!(matches!(&listen_note.outcome, Outcome::ChangedMeaning(w) if w.contains("loopback")));
    let app = ServerUrl::parse(&c.config.databases["app"].primary).unwrap();
    assert_eq!(
        (app.host.as_str(), app.port, app.dbname.as_str(), app.user),
        ("127.0.0.1", 5432, "app", None)
    );
}

const REALISTIC: &str = r#"
;; A production-style pgbouncer.ini
[databases]
app = host=10.0.0.10 port=6543 dbname=app_prod user=app_owner password='s3cr''et pw' pool_size=30 min_pool_size=2 reserve_pool=5 max_db_connections=40 pool_mode=transaction connect_query='SET work_mem = ''64MB'''
reports = host=/var/run/postgresql dbname=app_prod pool_mode=statement application_name=reports
local =
"weird db" = host=::1 auth_user=pgbouncer_auth client_encoding=UTF8
* = host=10.0.0.10

[users]
batch = pool_mode=session max_user_connections=10
analyst = pool_size=3

[pgbouncer]
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid
listen_addr = 127.0.0.1, ::1
listen_port = 6433
unix_socket_dir = /var/run/pgbouncer
auth_type = scram-sha-256
auth_file = userlist.txt
admin_users = admin, ops
stats_users = monitoring
max_client_conn = 5000
default_pool_size = 25
reserve_pool_timeout = 3.5
server_lifetime = 0
server_check_query = select 1
server_check_delay = 10
ignore_startup_parameters = extra_float_digits, options
max_packet_size = 100000
client_tls_sslmode = verify-full
client_tls_cert_file = /etc/pgbouncer/server.crt
client_tls_key_file = /etc/pgbouncer/server.key
client_tls_ca_file = /etc/pgbouncer/ca.crt
server_tls_sslmode = verify-ca
server_tls_ca_file = /etc/pgbouncer/root.crt
so_reuseport = 0
stats_period = 60
"#;

#[test]
fn converts_a_realistic_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "userlist.txt", "\"app_owner\" \"x\"\n");
    let c = convert_file(&write(dir.path(), "pgbouncer.ini", REALISTIC)).unwrap();
    let g = &c.config.pgpilot;
    assert_eq!(g.listen.0, vec!["127.0.0.1:6433".to_string(), "[::1]:6433".to_string()]);
    assert_eq!(g.auth_type(), AuthType::ScramSha256);
    assert_eq!(g.auth_file.as_deref(), Some(dir.path().join("userlist.txt").as_path()));
    assert_eq!(g.admin_users, vec!["admin", "ops"]);
    assert_eq!(g.server_lifetime, Secs::from_millis(1));
    assert_eq!(g.reserve_pool_timeout, Secs::from_millis(3500));
    assert_eq!(g.max_message_size, 100_000);
    assert_eq!(c.config.tls.client_tls_sslmode, ClientTlsMode::Require);
    assert_eq!(c.config.tls.server_tls_sslmode, ServerTlsMode::VerifyCa);

    let app = &c.config.databases["app"];
    let url = app.primary_url().unwrap();
    assert_eq!(url.address(), "10.0.0.10:6543");
    assert_eq!((url.dbname.as_str(), url.user.as_deref()), ("app_prod", Some("app_owner")));
    assert_eq!(url.password.as_deref(), Some("s3cr'et pw"));
    assert_eq!(
        (app.pool_size, app.min_pool_size, app.reserve_pool_size, app.max_db_connections),
        (Some(30), Some(2), Some(5), Some(40))
    );
    assert_eq!(app.pool_mode, Some(PoolMode::Transaction));
    assert_eq!(
        c.config.databases["reports"].primary_url().unwrap().address(),
        "/var/run/postgresql/.s.PGSQL.5432"
    );
    assert_eq!(c.config.databases["reports"].pool_mode, Some(PoolMode::Transaction));
    // No host: the server's socket is in PgBouncer's own unix_socket_dir.
    assert_eq!(
        c.config.databases["local"].primary_url().unwrap().address(),
        "/var/run/pgbouncer/.s.PGSQL.5432"
    );
    assert_eq!(c.config.databases["weird db"].primary_url().unwrap().address(), "[::1]:5432");
    // The fallback names no database: each client's own is asked for.
    let fallback = &c.config.databases["*"];
    assert_eq!(fallback.primary, "postgres://10.0.0.10:5432/");
    let made = c.config.database_config("billing").unwrap();
    assert_eq!(made.primary_url().unwrap().dbname, "billing");
    assert_eq!(made.primary_url().unwrap().address(), "10.0.0.10:5432");
    let odd = c.config.database_config("a/b %c").unwrap();
    assert_eq!(odd.primary_url().unwrap().dbname, "a/b %c");
    assert_eq!(c.config.users["batch"].pool_mode, Some(PoolMode::Session));
    assert_eq!(c.config.users["batch"].max_user_connections, Some(10));

    let not_honoured: Vec<&str> = c.not_honoured().map(|n| n.setting.as_str()).collect();
    for expected in [
        "[pgbouncer] logfile",
        "[pgbouncer] pidfile",
        "[pgbouncer] stats_period",
        "[pgbouncer] client_tls_sslmode",
        "[pgbouncer] client_tls_ca_file",
        "[databases] app: connect_query",
        "[databases] reports: application_name",
        "[databases] weird db: client_encoding",
        "[users] analyst: pool_size",
    ] {
        assert!(not_honoured.contains(&expected), "{expected} missing from {not_honoured:?}");
    }
    assert!(!not_honoured.contains(&"[pgbouncer] so_reuseport"), "so_reuseport = 0 is PgBouncer's default");
    let changed: Vec<&str> = c.changed().map(|n| n.setting.as_str()).collect();
    for expected in [
        "[pgbouncer] server_lifetime",
        "[pgbouncer] max_packet_size",
        "[pgbouncer] ignore_startup_parameters",
        "[databases] reports: pool_mode",
        "[databases] weird db: auth_user",
    ] {
        assert!(changed.contains(&expected), "{expected} missing from {changed:?}");
    }
    assert_eq!(c.config.databases["weird db"].auth_user.as_deref(), Some("pgbouncer_auth"));
    let weaker: Vec<&str> = c.weakening().map(|n| n.setting.as_str()).collect();
    assert_eq!(weaker, vec!["[pgbouncer] client_tls_sslmode"]);
    for n in &c.notes {
        assert!(!n.to_string().contains("s3cr"), "a note shows the password: {n}");
    }
}

#[test]
fn the_commented_toml_reads_back_to_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "userlist.txt", "\"app_owner\" \"x\"\n");
    let c = convert_file(&write(dir.path(), "pgbouncer.ini", REALISTIC)).unwrap();
    let text = to_commented_toml(&c);
    let back = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(toml::to_string(&back).unwrap(), toml::to_string(&c.config).unwrap(), "\n{text}");
    // Every changed or ignored setting is explained in the file.
    for n in c.notes.iter().filter(|n| !matches!(n.outcome, Outcome::CarriedOver)) {
        assert!(text.contains(&n.setting), "{} is not mentioned in\n{text}", n.setting);
    }
    assert!(text.contains("# [pgbouncer] server_lifetime: changed meaning"), "{text}");
    assert!(text.contains("[databases.\"weird db\"]"), "{text}");
    assert!(text.contains("consider password_file"));
    for line in text.lines() {
        assert!(line.len() <= 110 || !line.starts_with('#'), "comment line too long: {line}");
    }
}

#[test]
fn reserve_pool_timeout_zero_turns_reserve_pools_off() {
    let c = convert_text("[pgbouncer]\nreserve_pool_size = 5\nreserve_pool_timeout = 0\n[databases]\na = host=h reserve_pool_size=3\nb = host=h\n").unwrap();
    assert_eq!(c.config.pgpilot.reserve_pool_size, 0);
    assert_eq!(c.config.databases["a"].reserve_pool_size, Some(0));
    assert_eq!(c.config.databases["b"].reserve_pool_size, None);
}

#[test]
fn auth_types_map_to_the_nearest_safe_choice() {
    let auth = |t: &str| convert_text(&format!("[pgbouncer]\nauth_type = {t}\n")).unwrap();
    assert_eq!(auth("MD5").config.pgpilot.auth_type(), AuthType::Md5);
    assert_eq!(auth("plain").config.pgpilot.auth_type(), AuthType::Plain);
    let any = auth("any");
    assert_eq!(any.config.pgpilot.auth_type(), AuthType::Trust);
    assert_eq!(any.changed().filter(|n| n.setting == "[pgbouncer] auth_type").count(), 1);
    // hba and cert cannot be honoured: clients must then prove a password, never less.
    for t in ["hba", "cert", "pam", "ldap"] {
        let c = auth(t);
        assert_eq!(c.config.pgpilot.auth_type(), AuthType::Md5, "{t}");
        assert_eq!(c.not_honoured().count(), 1, "{t}");
    }
    assert!(auth("hba").weakening().count() == 1, "hba's reject/hostssl lines are lost");
    // PgBouncer reads auth_hba_file only under auth_type = hba: beside md5 it loses nothing.
    let md5 =
        convert_text("[pgbouncer]\nauth_hba_file = /etc/pgbouncer/hba.conf\nauth_type = md5\n").unwrap();
    assert_eq!(md5.weakening().count(), 0, "{:?}", md5.notes);
    let hba =
        convert_text("[pgbouncer]\nauth_hba_file = /etc/pgbouncer/hba.conf\nauth_type = hba\n").unwrap();
    assert_eq!(hba.weakening().map(|n| n.setting.as_str()).collect::<Vec<_>>(), ["[pgbouncer] auth_type"]);
    assert!(convert_text("[pgbouncer]\nauth_type = crypt\n").is_err());
}

#[test]
fn timeouts_that_end_otherwise_than_pgbouncers_are_explained() {
    let c = convert_text(
        "[pgbouncer]\nquery_timeout = 30\nclient_idle_timeout = 0\nidle_transaction_timeout = 60\n",
    )
    .unwrap();
    let changed: Vec<&str> = c.changed().map(|n| n.setting.as_str()).collect();
    assert!(changed.contains(&"[pgbouncer] query_timeout"), "{changed:?}");
    assert!(changed.contains(&"[pgbouncer] idle_transaction_timeout"), "{changed:?}");
    assert!(!changed.contains(&"[pgbouncer] client_idle_timeout"), "0 is off in both: {changed:?}");
}

#[test]
fn an_unset_server_tls_sslmode_is_explained_as_prefer() {
    let unset = convert_text("[pgbouncer]\n").unwrap();
    assert_eq!(unset.config.tls.server_tls_sslmode, ServerTlsMode::Prefer);
    let note = unset.changed().find(|n| n.setting == "[pgbouncer] server_tls_sslmode").expect("a note");
    assert!(note.to_string().contains("1.21"), "{note}");
    let set = convert_text("[pgbouncer]\nserver_tls_sslmode = disable\n").unwrap();
    assert_eq!(set.config.tls.server_tls_sslmode, ServerTlsMode::Disable);
    assert_eq!(set.changed().filter(|n| n.setting.contains("server_tls_sslmode")).count(), 0);
}

#[test]
fn host_lists_and_abstract_sockets_are_explained() {
    let c = convert_text("[pgbouncer]\n[databases]\nhl = host=a,b,c\nabs = host=@pg\n").unwrap();
    assert_eq!(c.config.databases["hl"].primary_url().unwrap().host, "a");
    assert!(!c.config.databases.contains_key("abs"));
    assert_eq!(c.not_honoured().count(), 2);
}

#[test]
fn listen_star_means_every_ipv4_and_ipv6_address() {
    let c = convert_text("[pgbouncer]\nlisten_addr = *\n").unwrap();
    assert_eq!(c.config.pgpilot.listen.0, vec!["0.0.0.0:6432".to_string(), "[::]:6432".to_string()]);
    let c = convert_text("[pgbouncer]\nlisten_addr = localhost\nlisten_port = 7000\n").unwrap();
    assert!(c.config.pgpilot.listen.iter().any(|a| a == "127.0.0.1:7000"), "{:?}", c.config.pgpilot.listen);
    let listen_notes = c.changed().filter(|n| n.setting.contains("listen_addr")).count();
    assert_eq!(listen_notes, 1, "host names are resolved once: {:?}", c.notes);
}

#[test]
fn load_tells_the_two_formats_apart() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write(
        dir.path(),
        "pgbouncer.ini",
        "[pgbouncer]\nauth_type = trust\n[databases]\na = host=127.0.0.1\n",
    );
    assert!(is_pgbouncer_ini(&ini));
    assert_eq!(load(&ini).unwrap().pgpilot.auth_type(), AuthType::Trust);
    let toml = write(dir.path(), "pgpilot.toml", "[pgpilot]\nauth_type = \"trust\"\n");
    assert!(!is_pgbouncer_ini(&toml));
    assert_eq!(load(&toml).unwrap().pgpilot.auth_type(), AuthType::Trust);
}
