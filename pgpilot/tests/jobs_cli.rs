//! `pgpilot jobs run|list|history` log in to a `[databases.NAME]` as `pgpilot serve` does: with the
//! password from password_file, password_env or a plain-text auth_file entry. A login that has no
//! password fails at once: retrying a configuration mistake cannot help. `partitions convert`
//! gives up on a server that never answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pgpilot_testkit::Cluster;

const JOB: &str = "[[jobs]]\nname = \"au\"\nkind = \"sql\"\nschedule = \"@daily\"\ndatabase = \"app\"\n\
                   sql = \"SELECT 1\"\n";

/// A server where `pilot` must give its password ("secret") and may create the pgpilot schema.
fn password_only_cluster() -> Cluster {
    let cluster = Cluster::builder().host_auth("scram-sha-256").start();
    cluster.create_user("pilot", "secret");
    cluster.psql("postgres", "GRANT CREATE ON DATABASE postgres TO pilot");
    cluster
}

/// A config whose `[databases.app]` primary URL names the user but no password.
fn write_config(
    cluster: &Cluster,
    dir: &Path,
    name: &str,
    pgpilot_keys: &str,
    database_keys: &str,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[pgpilot]\nauth_type = \"trust\"\n{pgpilot_keys}\n[databases.app]\nprimary = \"{}\"\n{database_keys}\n{JOB}",
        cluster.url("pilot", "postgres")
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn pgpilot_jobs(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .arg("jobs")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PGPASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("running pgpilot jobs")
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// One way to give `pilot`'s password: keys of [pgpilot], keys of [databases.app], environment.
#[derive(Default)]
struct Login {
    way: &'static str,
    pgpilot_keys: &'static str,
    database_keys: &'static str,
    env: &'static [(&'static str, &'static str)],
}

#[test]
fn the_command_line_logs_in_with_the_passwords_serve_uses() {
    let cluster = password_only_cluster();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw.txt"), "secret\n").unwrap();
    std::fs::write(dir.path().join("users.txt"), "\"pilot\" \"secret\"\n").unwrap();
    let ways = [
        Login { way: "password_file", database_keys: "password_file = \"pw.txt\"", ..Login::default() },
        Login {
            way: "password_env",
            database_keys: "password_env = \"PILOT_PASSWORD\"",
            env: &[("PILOT_PASSWORD", "secret")],
            ..Login::default()
        },
        Login { way: "auth_file", pgpilot_keys: "auth_file = \"users.txt\"", ..Login::default() },
    ];
    for Login { way, pgpilot_keys, database_keys, env } in ways {
        let config = write_config(&cluster, dir.path(), way, pgpilot_keys, database_keys);
        let run = pgpilot_jobs(&config, &["run", "au"], env);
        assert!(run.status.success(), "jobs run with {way}: {}", said(&run));
        let history = pgpilot_jobs(&config, &["history", "au"], env);
        assert!(history.status.success(), "jobs history with {way}: {}", said(&history));
        assert!(said(&history).contains("succeeded"), "jobs history with {way}: {}", said(&history));
        let list = pgpilot_jobs(&config, &["list"], env);
        assert!(said(&list).contains("succeeded by"), "jobs list with {way}: {}", said(&list));
    }
}

#[test]
fn a_missing_password_fails_at_once() {
    let cluster = password_only_cluster();
    let dir = tempfile::tempdir().unwrap();
    // The default retry policy (3 retries from 5 s) would spend 35 s on it.
    let config = write_config(&cluster, dir.path(), "nopassword", "", "");
    let started = Instant::now();
    let run = pgpilot_jobs(&config, &["run", "au"], &[]);
    assert!(!run.status.success(), "{}", said(&run));
    assert!(said(&run).contains("password missing"), "{}", said(&run));
    assert!(!said(&run).contains("connection attempt 1 failed"), "not retried: {}", said(&run));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// A server that accepts TCP connections and never says a word; it lives as long as the test.
fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a local port");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming() {
            held.push(socket);
        }
    });
    port
}

#[test]
fn partitions_convert_gives_up_on_a_server_that_never_answers() {
    let port = silent_server();
    let url = format!("postgres://pilot:x@127.0.0.1:{port}/app?connect_timeout=1");
    let mut convert = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args(["partitions", "convert", "--table", "events", "--column", "at", "--interval", "monthly"])
        .args(["--url", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running pgpilot partitions convert");
    if pgpilot_testkit::exited_within(&mut convert, Duration::from_secs(20)).is_none() {
        let _ = convert.kill();
        let _ = convert.wait();
        panic!("partitions convert was still waiting for the server after 20 s");
    }
    let out = convert.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(said(&out).contains("within 1s"), "{}", said(&out));
}
