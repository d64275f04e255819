//! PgBouncer's process signals on `pgpilot serve`: SIGUSR1 pauses and SIGUSR2 resumes (they used
//! to end the process by their default action, dropping every client), SIGQUIT stops at once, and
//! a second SIGTERM turns a drain into an immediate stop.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pgpilot_testkit::{exited_within, free_port, pg_bin_dir, Cluster};

struct Served {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(cluster: &Cluster) -> Served {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pgpilot.toml");
        std::fs::write(
            &config,
            format!(
                "[pgpilot]\nlisten = \"127.0.0.1:{port}\"\nauth_type = \"trust\"\npool_mode = \"transaction\"\n\
                 shutdown_timeout = 60\n[tls]\nserver_tls_sslmode = \"disable\"\n\
                 [databases.postgres]\nprimary = \"{}\"\n",
                cluster.admin_url()
            ),
        )
        .unwrap();
        let log = dir.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting pgpilot serve");
        let served = Served { child, port, log, _dir: dir };
        let ready = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            served.psql(&["SELECT 1"]).output().is_ok_and(|o| o.status.success())
        });
        assert!(ready, "pgpilot did not start: {}", served.log_text());
        served
    }

    fn psql(&self, sql: &[&str]) -> Command {
        let mut c = Command::new(pg_bin_dir().unwrap().tool("psql"));
        c.args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ]);
        for s in sql {
            c.args(["-c", s]);
        }
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
    }

    fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        exited_within(&mut self.child, limit)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[test]
fn sigusr1_pauses_and_sigusr2_resumes_without_dropping_clients() {
    let cluster = Cluster::start();
    let mut served = Served::start(&cluster);
    // A client inside a transaction when the pause comes finishes it.
    let mut running = served.psql(&["BEGIN; SELECT pg_sleep(1.5); COMMIT"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    served.signal(libc::SIGUSR1);
    assert!(exited_within(&mut running, Duration::from_secs(10)).is_some_and(|s| s.success()));
    // Paused: a new query waits.
    let mut waiting = served.psql(&["SELECT 1"]).spawn().unwrap();
    assert!(exited_within(&mut waiting, Duration::from_secs(2)).is_none(), "{}", served.log_text());
    served.signal(libc::SIGUSR2);
    let resumed = exited_within(&mut waiting, Duration::from_secs(10));
    assert!(resumed.is_some_and(|s| s.success()), "{resumed:?}: {}", served.log_text());
    assert!(served.exited_within(Duration::from_millis(200)).is_none(), "pgpilot must still run");
    assert!(served.psql(&["SELECT 1"]).status().unwrap().success());
    let log = served.log_text();
    assert!(log.contains("PAUSE requested by signal") && log.contains("RESUME done"), "{log}");
}

#[test]
fn a_second_sigterm_stops_a_drain_at_once() {
    let cluster = Cluster::start();
    let mut served = Served::start(&cluster);
    let mut long = served.psql(&["BEGIN", "SELECT pg_sleep(30)"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    served.signal(libc::SIGTERM);
    // Draining: the transaction may run on for shutdown_timeout (60 s).
    assert!(served.exited_within(Duration::from_millis(1500)).is_none(), "{}", served.log_text());
    served.signal(libc::SIGTERM);
    let status = served.exited_within(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {}", served.log_text());
    assert!(exited_within(&mut long, Duration::from_secs(5)).is_some_and(|s| !s.success()));
    assert!(served.log_text().contains("immediate shutdown"), "{}", served.log_text());
}

#[test]
fn sigquit_stops_at_once() {
    let cluster = Cluster::start();
    let mut served = Served::start(&cluster);
    let mut long = served.psql(&["BEGIN", "SELECT pg_sleep(30)"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    served.signal(libc::SIGQUIT);
    let status = served.exited_within(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {}", served.log_text());
    assert!(asked.elapsed() < Duration::from_secs(4));
    assert!(exited_within(&mut long, Duration::from_secs(5)).is_some_and(|s| !s.success()));
    // The server's backend was cancelled, not left running its statement.
    let sleeping = cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'",
    );
    assert_eq!(sleeping.trim(), "0", "{}", served.log_text());
}
