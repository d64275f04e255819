//! The command line itself: version, completions, man page, exit codes, convert.

use std::process::Command;

fn pgpilot(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running pgpilot")
}

#[test]
fn version_names_the_build() {
    let out = pgpilot(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("pgpilot 0."), "{text}");
    assert!(text.contains("commit "), "{text}");
    let short = pgpilot(&["-V"]);
    assert_eq!(String::from_utf8_lossy(&short.stdout), text, "-V as --version");
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = pgpilot(&["completions", shell]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("check-config") && text.contains("advise"),
            "{shell} completions lack commands"
        );
    }
    let man = pgpilot(&["man"]);
    assert!(man.status.success());
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.contains(".TH pgpilot 1") && text.contains(".TH pgpilot-serve 1"));
    // Every page's header carries the version, the subcommands' too.
    let serve = text.lines().find(|l| l.starts_with(".TH pgpilot-serve 1")).unwrap();
    assert!(serve.contains(env!("CARGO_PKG_VERSION")), "{serve}");
    // One file per page, as man(1) installs them.
    let dir = tempfile::tempdir().unwrap();
    let out = pgpilot(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success() && out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let serve_page = std::fs::read_to_string(dir.path().join("pgpilot-serve.1")).unwrap();
    assert!(serve_page.starts_with(".ie") || serve_page.contains(".TH pgpilot-serve 1"), "{serve_page}");
    assert_eq!(serve_page.matches(".TH ").count(), 1, "one page per file");
    assert!(std::fs::read_to_string(dir.path().join("pgpilot.1")).unwrap().contains(".TH pgpilot 1"));
}

/// Output piped into a reader that is gone (`pgpilot check-config F | head -0`) ends the command
/// quietly, as Unix tools do, without a panic and a backtrace.
#[test]
fn a_closed_output_pipe_ends_a_command_quietly() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../pgpilot.example.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args(["check-config", example])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the command has read its file and written a word.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

#[test]
fn exit_codes_are_consistent() {
    assert_eq!(pgpilot(&["no-such-command"]).status.code(), Some(2), "usage errors exit 2");
    let target = "postgres://nobody@127.0.0.1:1/x";
    for bench in [
        &["bench"][..],
        &["bench", "--scenario", "nope", target],
        &["bench", "-c", "0", target],
        &["bench", "-j", "0", target],
        &["bench", "-R", "0", target],
        &["bench", "-s", "0", target],
        &["bench", "--init", "-s", "0", target],
        &["bench", "--init", "-s", "0.5", target],
        // No script could ever be picked: as impossible as -c 0 (the file is not even read).
        &["bench", "-f", "no-such-file.sql@0", target],
    ] {
        let out = pgpilot(bench);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bench:?} is a usage error: {stderr}");
        // Refused before anything is done: no table creation announced, the target not even tried.
        assert!(!stderr.contains("creating") && !stderr.contains("unreachable"), "{bench:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{bench:?}");
    }
    // advise with no database named (no --url, --database or DATABASE_URL) is bad usage.
    let nothing = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .arg("advise")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(nothing.status.code(), Some(2), "{}", String::from_utf8_lossy(&nothing.stderr));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("say which database"));
    // A machine of no memory or no CPUs, a size in no known unit, no load: refused before connecting.
    for advise in [
        &["advise", "--url", target, "--memory", "0GB"][..],
        &["advise", "--url", target, "--memory", "16XB"],
        &["advise", "--url", target, "--cpus", "0"],
        &["advise", "--url", target, "--target-tps", "0"],
        &["advise", "--url", target, "--app-instances", "0"],
    ] {
        let out = pgpilot(advise);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{advise:?} is a usage error: {stderr}");
        assert!(!stderr.contains("127.0.0.1"), "{advise:?}: never connected: {stderr}");
    }
    // --fail-on takes warning or critical; info would fail every run.
    let fail_on_info = pgpilot(&["advise", "--url", target, "--fail-on", "info"]);
    assert_eq!(fail_on_info.status.code(), Some(2), "{}", String::from_utf8_lossy(&fail_on_info.stderr));
    assert!(String::from_utf8_lossy(&fail_on_info.stderr).contains("use warning or critical"));
    let missing = pgpilot(&["check-config", "/nonexistent.toml"]);
    assert_eq!(missing.status.code(), Some(1), "failures exit 1");
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.starts_with("pgpilot: cannot read /nonexistent.toml"), "{said}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[pgpilot]\ndefault_pool_size = 0\n").unwrap();
    let out = pgpilot(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default_pool_size"));
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../pgpilot.example.toml");
    assert_eq!(pgpilot(&["check-config", example]).status.code(), Some(0));
}

#[test]
fn check_config_reports_as_json_too() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../pgpilot.example.toml");
    let out = pgpilot(&["check-config", "--format", "json", example]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["runs"]["databases"][0]["name"], "app", "{report}");
    assert_eq!(report["runs"]["jobs"][0]["name"], "nightly-analyze", "{report}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[pgpilot]\ndefault_pool_size = 0\n").unwrap();
    let out = pgpilot(&["check-config", "--format", "json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "problems exit 1 in JSON too");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["ok"], false);
    assert!(report["problems"][0].as_str().is_some_and(|p| p.contains("default_pool_size")), "{report}");
    assert!(report.get("runs").is_none(), "{report}");
}

/// A job's URL is printed without its passwords: the userinfo's, and secret query parameters'.
#[test]
fn check_config_masks_every_password_in_a_job_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.toml");
    std::fs::write(
        &path,
        "[pgpilot]\nauth_type = \"trust\"\n[databases.app]\nprimary = \"postgres://u@127.0.0.1:5432/app\"\n\
         [[jobs]]\nname = \"q\"\nkind = \"sql\"\nschedule = \"@daily\"\nsql = \"SELECT 1\"\n\
         url = \"postgres://u:hunter1@127.0.0.1:5432/app?password=hunter2&sslmode=disable\"\n",
    )
    .unwrap();
    for format in ["text", "json"] {
        let out = pgpilot(&["check-config", "--format", format, path.to_str().unwrap()]);
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{said}");
        assert!(!said.contains("hunter"), "a password is printed ({format}):\n{said}");
        assert!(said.contains("u:***@127.0.0.1:5432/app?password=***&sslmode=disable"), "{said}");
    }
    // A parameter the job's connection cannot take is refused, and named without its value.
    let text = std::fs::read_to_string(&path).unwrap().replace("&sslmode", "&sslpassword=hunter3&sslmode");
    std::fs::write(&path, text).unwrap();
    let out = pgpilot(&["check-config", path.to_str().unwrap()]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("sslpassword") && !said.contains("hunter"), "{said}");
}

/// helper-153: a config naming no authentication was reported as `auth_type: scram-sha-256`,
/// while serve lets password-less clients in on loopback.
#[test]
fn check_config_says_when_clients_need_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(&path, "[databases.app]\nprimary = \"postgres://u@127.0.0.1:5432/app\"\n").unwrap();
    let out = pgpilot(&["check-config", path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("auth_type: none (nothing configured"), "{said}");
    assert!(!said.contains("scram"), "{said}");
}

/// The users file of deploy/kubernetes/secret.example.yaml, whose `app` line is a placeholder
/// where a SCRAM verifier goes: check-config reports it, naming the line and the user but never
/// the secret (it was taken as the plain-text password "SCRAM-SHA-256$4096:...").
#[test]
fn check_config_reports_a_malformed_scram_verifier() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/secret.example.yaml");
    let example = std::fs::read_to_string(example).unwrap();
    let userlist: String = example
        .lines()
        .skip_while(|l| l.trim() != "userlist.txt: |")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    assert!(userlist.starts_with("\"app\" \"SCRAM-SHA-256$"), "{userlist}");
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("userlist.txt");
    std::fs::write(&users, &userlist).unwrap();
    let path = dir.path().join("pgpilot.toml");
    let config = format!(
        "[pgpilot]\nauth_type = \"scram-sha-256\"\nauth_file = \"{}\"\n\
         [databases.app]\nprimary = \"postgres://u@127.0.0.1:5432/app\"\n",
        users.display()
    );
    std::fs::write(&path, config).unwrap();
    for format in ["text", "json"] {
        let out = pgpilot(&["check-config", "--format", format, path.to_str().unwrap()]);
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{said}");
        // JSON escapes the quotes around the user's name.
        let named = said.replace("\\\"", "\"");
        assert!(named.contains("line 1: user \"app\": malformed SCRAM-SHA-256 verifier"), "{said}");
        assert!(!said.contains("REPLACE") && !said.contains("c2Fsd"), "the secret is printed:\n{said}");
    }
    // With a real verifier in its place (userlist.example.txt's) the file passes.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../userlist.example.txt");
    let example = std::fs::read_to_string(example).unwrap();
    let real = example.lines().find(|l| l.starts_with("\"app\" \"SCRAM-SHA-256$")).unwrap();
    let first = userlist.lines().next().unwrap();
    std::fs::write(&users, userlist.replace(first, real)).unwrap();
    let out = pgpilot(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn convert_writes_an_equivalent_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"app\" \"secret\"\n").unwrap();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\napp = host=127.0.0.1 port=5432 dbname=app\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 6432\n\
             auth_type = md5\nauth_file = {}\npool_mode = transaction\ndefault_pool_size = 30\nadmin_users = app\n",
            dir.path().join("userlist.txt").display()
        ),
    )
    .unwrap();
    let out = pgpilot(&["convert", ini.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let toml = String::from_utf8_lossy(&out.stdout);
    assert!(toml.contains("default_pool_size = 30"), "{toml}");
    // pgpilot holds each client message whole: PgBouncer's 2 GiB max_packet_size is not its limit.
    assert!(!toml.contains("2147483647"), "{toml}");
    let converted = dir.path().join("pgpilot.toml");
    // Written with -o, the file is its owner's only: it may hold server passwords.
    let out = pgpilot(&["convert", "-o", converted.to_str().unwrap(), ini.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&converted).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "converted config mode {mode:o}");
    assert_eq!(std::fs::read_to_string(&converted).unwrap(), toml);
    let check = pgpilot(&["check-config", converted.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // The ini itself: what `serve` would warn about is said, and a socket directory that is not
    // there fails the check instead of the start.
    let mut text = std::fs::read_to_string(&ini).unwrap();
    text.push_str(
        "auth_type = hba\nauth_hba_file = /etc/pgbouncer/hba.conf\nunix_socket_dir = /nonexistent/dir\n",
    );
    std::fs::write(&ini, text).unwrap();
    let check = pgpilot(&["check-config", ini.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("note:") && stderr.contains("auth_hba_file"), "{stderr}");
    assert!(stderr.contains("/nonexistent/dir"), "{stderr}");
    // `serve` refuses a file that would let in clients PgBouncer refuses (hba's reject lines are
    // not applied) unless told to run it anyway; then it goes on (here to the missing directory).
    let ini = ini.to_str().unwrap();
    let refused = pgpilot(&["serve", "--pgbouncer-ini", ini]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("admit clients PgBouncer refuses") && stderr.contains("--allow-less-strict"),
        "{stderr}"
    );
    let forced = pgpilot(&["serve", "--pgbouncer-ini", ini, "--allow-less-strict"]);
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(!forced.status.success() && stderr.contains("/nonexistent/dir"), "{stderr}");
}

#[test]
fn check_config_checks_the_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[pgpilot]\nauth_type = \"trust\"\n[databases.app]\nprimary = \"postgres://app@127.0.0.1:5432/app\"\n";
    let write = |name: &str, jobs: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{base}{jobs}")).unwrap();
        path
    };
    let good = write(
        "good.toml",
        "[[jobs]]\nname = \"nightly-analyze\"\nkind = \"analyze\"\nschedule = \"30 2 * * *\"\ndatabase = \"app\"\n",
    );
    let out = pgpilot(&["check-config", good.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("job nightly-analyze: analyze on database app, schedule 30 2 * * *"), "{text}");

    // Problems found after parsing are all listed, each naming the job.
    let bad = write(
        "bad.toml",
        "[[jobs]]\nname = \"a\"\nkind = \"sql\"\nsql = \"select 1\"\nschedule = \"61 * * * *\"\ndatabase = \"app\"\n\
         [[jobs]]\nname = \"b\"\nkind = \"sql\"\nsql = \"select 1\"\nschedule = \"@daily\"\ndatabase = \"nowhere\"\n",
    );
    let out = pgpilot(&["check-config", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("job `a`") && err.contains("61"), "a bad cron is named: {err}");
    assert!(err.contains("job `b`: there is no [databases.nowhere] table"), "{err}");

    // A key of another kind is refused while parsing, with the job's name.
    let misplaced = write(
        "misplaced.toml",
        "[[jobs]]\nname = \"mv\"\nkind = \"refresh\"\nview = \"v\"\ninterval = \"monthly\"\nschedule = \"@hourly\"\ndatabase = \"app\"\n",
    );
    let out = pgpilot(&["check-config", misplaced.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("job `mv`: a refresh job does not take `interval`"), "{err}");
}

#[test]
fn an_interrupted_bench_says_what_it_did_not_measure_and_exits_130() {
    let cluster = pgpilot_testkit::Cluster::start();
    let url = cluster.url("postgres", "postgres");
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "SELECT 1;\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args(["bench", "-f", script.path().to_str().unwrap(), "-c", "2", "-T", "60"])
        .args(["--format", "json", "--no-progress"])
        .arg(format!("first={url}"))
        .arg(format!("second={url}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running pgpilot bench");
    std::thread::sleep(std::time::Duration::from_secs(3));
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "an interrupted bench exits 130");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["interrupted"], true);
    let targets = report["targets"].as_array().unwrap();
    assert!(targets[0]["transactions"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(targets[1]["tps_per_round"], serde_json::json!([]), "{report}");
    let measured = (&targets[0]["measured"], &targets[1]["measured"]);
    assert_eq!(measured, (&serde_json::json!(true), &serde_json::json!(false)), "{report}");
    assert_eq!(report["ratios"], serde_json::json!([]), "no ratio against a target never measured");
}

#[test]
fn a_bench_where_nothing_succeeded_fails() {
    let cluster = pgpilot_testkit::Cluster::start();
    let url = cluster.url("postgres", "postgres");
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "SELEC 1;\n").unwrap();
    let out = pgpilot(&["bench", "-f", script.path().to_str().unwrap(), "-T", "1", "--no-progress", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no transaction succeeded"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("42601"), "the report is still printed");
}

#[test]
fn a_bench_script_that_leaves_its_transaction_open_fails() {
    let cluster = pgpilot_testkit::Cluster::start();
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "BEGIN;\nSELECT 1;\n").unwrap();
    let out = pgpilot(&[
        "bench",
        "-f",
        script.path().to_str().unwrap(),
        "-t",
        "5",
        "--no-progress",
        &cluster.admin_url(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a script error: {stderr}");
    assert!(stderr.contains("end of script reached without completing the last transaction"), "{stderr}");
}

#[test]
fn a_bench_target_that_accepts_and_never_answers_fails_with_a_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2");
    let started = std::time::Instant::now();
    let out = pgpilot(&["bench", "-S", "-t", "1", "--no-progress", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timeout expired"), "{stderr}");
}

#[test]
fn a_bench_script_with_copy_from_stdin_is_refused_before_connecting() {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "COPY pgbench_history FROM STDIN;\n").unwrap();
    let out = pgpilot(&[
        "bench",
        "-f",
        script.path().to_str().unwrap(),
        "-t",
        "1",
        "postgres://nobody@127.0.0.1:1/x",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a script error: {stderr}");
    assert!(stderr.contains("line 1: COPY FROM STDIN"), "{stderr}");
    assert!(!stderr.contains("unreachable"), "refused before connecting: {stderr}");
}

#[test]
fn bench_takes_what_the_url_leaves_out_from_the_environment() {
    let cluster = pgpilot_testkit::Cluster::start();
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "SELECT 1;\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args(["bench", "-f", script.path().to_str().unwrap(), "-t", "3", "--no-progress"])
        .arg("named=host=127.0.0.1 user=postgres")
        .env("PGPORT", cluster.port().to_string())
        .env("PGDATABASE", "postgres")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("named"), "{stdout}");
    // A URL without a host or port (or with them empty) takes PGHOST and PGPORT, as libpq does.
    let port = cluster.port().to_string();
    let empty_host = format!("postgres://:{port}/postgres");
    for url in
        ["postgres://", "postgresql://", "postgres:///postgres", "postgres://postgres@/postgres", &empty_host]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
            .args(["bench", "-f", script.path().to_str().unwrap(), "-t", "3", "--no-progress", url])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", if url == empty_host { "1" } else { port.as_str() })
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("127.0.0.1:{port}/postgres")), "{url}: {stdout}");
    }
}

#[test]
fn a_bench_with_a_transaction_count_stops_promptly_when_the_server_goes_away() {
    let cluster = pgpilot_testkit::Cluster::start();
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "SELECT pg_sleep(0.002);\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args(["bench", "-f", script.path().to_str().unwrap(), "-c", "2", "-t", "1000000", "--no-progress"])
        .arg(cluster.admin_url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running pgpilot bench");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let stopped_at = std::time::Instant::now();
    cluster.stop();
    let out = child.wait_with_output().unwrap();
    assert!(stopped_at.elapsed() < std::time::Duration::from_secs(20), "took {:?}", stopped_at.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the run was aborted") && stderr.contains("incomplete"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("(aborted: "), "the report says so too");
}

/// An open-file limit below what max_client_conn clients need is said at start (as PgBouncer
/// does), not met later as `accept` errors.
#[test]
fn serve_warns_when_the_open_file_limit_is_too_low_for_max_client_conn() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let command = format!(
        "ulimit -n 128 && exec timeout 3 {} serve --listen 127.0.0.1:{port} --primary postgres://app@127.0.0.1:1/app",
        env!("CARGO_BIN_EXE_pgpilot")
    );
    let out = Command::new("sh").args(["-c", &command]).env("NO_COLOR", "1").output().expect("running sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("open-file limit is below what max_client_conn clients need"), "{stderr}");
    assert!(stderr.contains("limit=128") && stderr.contains("wanted=10064"), "{stderr}");
}

/// `advise --apply --yes` creates the proven indexes that cost nothing but their upkeep, and
/// leaves one whose column the workload's UPDATEs set (its updates would lose HOT) to a person,
/// saying so.
#[test]
fn apply_yes_leaves_an_index_that_costs_hot_updates_to_a_person() {
    let cluster = pgpilot_testkit::Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE hot");
    cluster.psql(
        "hot",
        "CREATE TABLE wh2 (id int PRIMARY KEY, k int, pad text);
         INSERT INTO wh2 SELECT i, i, 'x' FROM generate_series(1, 100000) i;
         CREATE TABLE other (id int PRIMARY KEY, x int);
         INSERT INTO other SELECT i, i % 5000 FROM generate_series(1, 50000) i;
         ANALYZE;",
    );
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("workload.sql");
    std::fs::write(
        &workload,
        "-- calls: 8113\nUPDATE wh2 SET k = k + 1 WHERE id = $1;\n\
         -- calls: 500\nSELECT * FROM wh2 WHERE k = $1;\n\
         -- calls: 10\nSELECT * FROM other WHERE x = $1;\n",
    )
    .unwrap();
    let url = cluster.url("postgres", "hot");
    let out = pgpilot(&[
        "advise",
        "--url",
        &url,
        "--workload-file",
        workload.to_str().unwrap(),
        "--no-pg-stat-statements",
        "--install-extensions",
        "--quiet",
        "--apply",
        "--yes",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped") && stderr.contains("(k)"), "{stderr}");
    let indexes = cluster.psql(
        "hot",
        "SELECT string_agg(indexdef, E'\\n' ORDER BY indexdef) FROM pg_indexes WHERE tablename IN ('wh2', 'other') \
         AND indexname NOT LIKE '%pkey'",
    );
    assert!(indexes.contains("other USING btree (x)"), "the clear win is made: {indexes}\n{stderr}");
    assert!(!indexes.contains("(k)"), "the trade is left to a person: {indexes}");
}

/// check-config reads auth_file as serve does: a line serve cannot parse fails the check, naming
/// the file and line, without printing the secrets around it.
#[test]
fn check_config_reads_the_auth_file() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("userlist.txt");
    std::fs::write(&users, "\"alice\" \"s3cret-alice\"\n\"broken_user\" \"unterminated\n").unwrap();
    let config = dir.path().join("pgpilot.toml");
    std::fs::write(
        &config,
        format!(
            "[pgpilot]\nauth_type = \"scram-sha-256\"\nauth_file = \"{}\"\n\
             [databases.app]\nprimary = \"postgres://app@127.0.0.1:5432/app\"\n",
            users.display()
        ),
    )
    .unwrap();
    let out = pgpilot(&["check-config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("userlist.txt") && stderr.contains("line 2"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    std::fs::write(&users, "\"alice\" \"s3cret-alice\"\n").unwrap();
    let out = pgpilot(&["check-config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// helper-148: a config that names auth_type without a users file is refused by serve, as by
/// check-config (serve used to let everyone in without a password on loopback); a TOML error
/// names the place, not the line that may hold a password; a password in --primary is warned about.
#[test]
fn serve_refuses_what_check_config_refuses_and_keeps_passwords_out_of_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgpilot.toml");
    std::fs::write(
        &config,
        "[pgpilot]\nlisten = \"127.0.0.1:0\"\nauth_type = \"scram-sha-256\"\n\
         [databases.app]\nprimary = \"postgres://app@127.0.0.1:5432/app\"\n",
    )
    .unwrap();
    let check = pgpilot(&["check-config", config.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1));
    let serve = pgpilot(&["serve", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs auth_file"), "{stderr}");

    std::fs::write(&config, "[databases.app]\nprimary = \"postgres://app:TOMLSECRET@127.0.0.1/app\" x\n")
        .unwrap();
    let check = pgpilot(&["check-config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("line 2") && !stderr.contains("TOMLSECRET"), "{stderr}");

    let argv = "postgres://app:ARGVSECRET@127.0.0.1:1/app";
    let serve = pgpilot(&["serve", "--listen", "0.0.0.0:0", "--primary", argv]);
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("visible to every local user"), "{stderr}");
    assert!(!stderr.contains("ARGVSECRET"), "{stderr}");
}

/// A client that waited query_wait_timeout for a server while pinned clients held the servers is
/// told the usual error, and the log says why, which the timeout alone does not.
#[test]
fn a_wait_timeout_behind_pinned_clients_is_explained_in_the_log() {
    use std::process::Stdio;
    let pg = pgpilot_testkit::Cluster::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgpilot.toml");
    std::fs::write(
        &config,
        format!(
            "[pgpilot]\nlisten = \"127.0.0.1:{port}\"\nauth_type = \"trust\"\npool_mode = \"transaction\"\n\
             default_pool_size = 1\nquery_wait_timeout = 1\n\
             [databases.postgres]\nprimary = \"postgres://postgres@127.0.0.1:{}/postgres\"\n",
            pg.port()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let psql = |sql: &[&str]| {
        let mut c = Command::new(pgpilot_testkit::pg_bin_dir().unwrap().tool("psql"));
        c.args(["-X", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres"]);
        for s in sql {
            c.args(["-c", s]);
        }
        c
    };
    let ready = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        psql(&["SELECT 1"]).output().is_ok_and(|o| o.status.success())
    });
    assert!(ready, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    // Pinned by LISTEN, it keeps the only server while it sleeps and after.
    let mut pinned = psql(&["LISTEN jobs", "SELECT pg_sleep(3)"]).stdout(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let waited = psql(&["SELECT 1"]).output().unwrap();
    assert!(!waited.status.success());
    assert!(String::from_utf8_lossy(&waited.stderr).contains("query_wait_timeout"));
    pinned.wait().unwrap();
    serve.kill().unwrap();
    serve.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("while pinned clients hold servers of this database"), "{text}");
    assert!(text.contains("pinned_clients=1"), "{text}");
}

/// helper-147: after a failover the configured primary is a standby; install-triggers said only
/// "cannot execute ... in a read-only transaction". It now names the standby and the way out.
#[test]
fn cache_triggers_go_on_the_primary_and_a_standby_is_named() {
    let primary = pgpilot_testkit::Cluster::start();
    let standby = primary.start_replica();
    let out = pgpilot(&["cache", "install-triggers", "--url", &standby.admin_url()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is a standby") && stderr.contains("--url"), "{stderr}");
    let out = pgpilot(&["cache", "install-triggers", "--url", &primary.admin_url()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed"));
}

/// `advise --config F --database NAME` reads the database's replicas from the configuration and
/// counts their index scans: an index only a replica's readers use is not reported unused. A
/// replica it cannot reach is named in a note.
#[test]
fn advise_counts_the_configured_replicas_index_scans() {
    let primary = pgpilot_testkit::Cluster::start();
    primary.psql("postgres", "CREATE DATABASE shop");
    primary.psql(
        "shop",
        "CREATE TABLE events (id int PRIMARY KEY, kind int);
         INSERT INTO events SELECT g, g % 300 FROM generate_series(1, 150000) g;
         CREATE INDEX events_kind_read_on_replica ON events (kind);
         ANALYZE events; CHECKPOINT;",
    );
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);
    replica.psql(
        "shop",
        "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM events WHERE kind = 7",
    );
    let scanned =
        "SELECT idx_scan > 0 FROM pg_stat_user_indexes WHERE indexrelname = 'events_kind_read_on_replica'";
    replica.wait_for_in("shop", "t", scanned, std::time::Duration::from_secs(15));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgpilot.toml");
    let advise = |replicas: &str| {
        std::fs::write(
            &config,
            format!(
                "[databases.shop]\nprimary = \"{}\"\nreplicas = [{replicas}]\n",
                primary.url("postgres", "shop")
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
            .args(["advise", "--config", config.to_str().unwrap(), "--database", "shop"])
            .args(["--skip-indexes", "--quiet", "--format", "json"])
            .env("XDG_STATE_HOME", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let unused_titles = |report: &serde_json::Value| -> Vec<String> {
        let findings = report["findings"].as_array().unwrap().iter();
        findings
            .filter_map(|f| f["title"].as_str())
            .filter(|t| t.starts_with("Unused index"))
            .map(String::from)
            .collect()
    };

    let report = advise(&format!("{{ url = \"{}\", weight = 2 }}", replica.url("postgres", "shop")));
    assert!(unused_titles(&report).is_empty(), "scanned on the replica: {report:#}");

    let report = advise("\"postgres://postgres@127.0.0.1:1/shop\"");
    assert_eq!(unused_titles(&report), ["Unused index public.events_kind_read_on_replica"]);
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("a replica could not be read (connecting to postgres@127.0.0.1:1/shop"),
        "{notes}"
    );
}

/// `advise --apply --yes` whose CREATE INDEX CONCURRENTLY gives up (a writer's open transaction
/// outlasts --lock-timeout-ms) reports the failure and exits 1: the index asked for is not there.
#[test]
fn apply_yes_exits_1_when_an_index_could_not_be_created() {
    let cluster = pgpilot_testkit::Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE acc");
    cluster.psql(
        "acc",
        "CREATE TABLE acc (id int PRIMARY KEY, email text, n int);
         INSERT INTO acc SELECT g, 'e' || g, g FROM generate_series(1, 100000) g; ANALYZE acc;",
    );
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("workload.sql");
    std::fs::write(&workload, "-- calls: 100\nSELECT n FROM acc WHERE email = 'e42';\n").unwrap();
    let url = cluster.url("postgres", "acc");
    let out = std::thread::scope(|s| {
        // A writer keeps its transaction open while the build waits for it.
        s.spawn(|| {
            cluster.psql("acc", "BEGIN; UPDATE acc SET n = n WHERE id = 1; SELECT pg_sleep(6); ROLLBACK;")
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        Command::new(env!("CARGO_BIN_EXE_pgpilot"))
            .args(["advise", "--url", &url, "--workload-file", workload.to_str().unwrap()])
            .args(["--no-pg-stat-statements", "--install-extensions", "--quiet", "--apply", "--yes"])
            .args(["--lock-timeout-ms", "300"])
            // Given, not measured for 5 s: the build must start while the writer's transaction is open.
            .args(["--target-tps", "100"])
            .env("NO_COLOR", "1")
            .env("XDG_STATE_HOME", dir.path())
            .output()
            .unwrap()
    });
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("(failed: canceling statement due to lock timeout)"), "{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("1 of 1 index(es) could not be created"), "{stderr}");
}

/// `advise --apply --yes` never runs a partitioned table's plain CREATE INDEX (it blocks writes):
/// the report says it was skipped and where the suggestion says how to build it, not that it
/// failed, and the command succeeds.
#[test]
fn apply_yes_skips_a_partitioned_tables_suggestion_without_calling_it_failed() {
    let cluster = pgpilot_testkit::Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE parts");
    cluster.psql(
        "parts",
        "CREATE TABLE pev (id int, tenant int, ts date NOT NULL) PARTITION BY RANGE (ts);
         CREATE TABLE pev_1 PARTITION OF pev FOR VALUES FROM ('2020-01-01') TO ('2022-01-01');
         CREATE TABLE pev_2 PARTITION OF pev FOR VALUES FROM ('2022-01-01') TO ('2024-01-01');
         INSERT INTO pev SELECT g, g % 5000, date '2020-01-01' + g % 1400 FROM generate_series(1, 200000) g;
         ANALYZE pev;",
    );
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("workload.sql");
    std::fs::write(&workload, "-- calls: 100\nSELECT id FROM pev WHERE tenant = 42;\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args([
            "advise",
            "--url",
            &cluster.url("postgres", "parts"),
            "--workload-file",
            workload.to_str().unwrap(),
        ])
        .args(["--no-pg-stat-statements", "--install-extensions", "--quiet", "--apply", "--yes"])
        .env("NO_COLOR", "1")
        .env("XDG_STATE_HOME", dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let applied =
        stdout.split("APPLIED").nth(1).unwrap_or_else(|| panic!("nothing applied:\n{stdout}\n{stderr}"));
    assert!(applied.contains("ON public.pev USING btree (tenant)"), "{stdout}");
    assert!(applied.contains("(skipped: partitioned table, see the note under its suggestion)"), "{stdout}");
    assert!(!applied.contains("failed"), "{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
