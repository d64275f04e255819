//! `pgpilot serve` with [[jobs]]: the scheduler runs inside the served process (SHOW JOBS, the API),
//! a run by `pgpilot jobs run` from another process shows in the server's history (one history
//! table for the fleet), and SIGTERM stops everything promptly with exit code 0.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgpilot_testkit::{exited_within, free_port, pg_bin_dir, Cluster};
use serde_json::Value;

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> Option<Value> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    let mut resp = agent.get(url).call().ok()?;
    serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
}

#[test]
fn serve_schedules_jobs_and_stops_on_sigterm() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE job_marks (id serial PRIMARY KEY)");
    let (port, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgpilot.toml");
    std::fs::write(
        &config,
        format!(
            "[pgpilot]\nlisten = \"127.0.0.1:{port}\"\nhttp = \"127.0.0.1:{http}\"\nauth_type = \"trust\"\n\
             admin_users = [\"postgres\"]\nshutdown_timeout = 5\n\
             [tls]\nserver_tls_sslmode = \"disable\"\n\
             [databases.postgres]\nprimary = \"{}\"\n\
             [[jobs]]\nname = \"marks\"\nkind = \"sql\"\nschedule = \"@hourly\"\ndatabase = \"postgres\"\n\
             sql = \"INSERT INTO job_marks DEFAULT VALUES\"\n",
            cluster.admin_url()
        ),
    )
    .unwrap();
    let pgpilot = env!("CARGO_BIN_EXE_pgpilot");
    // systemd's side of Type=notify: pgpilot says READY=1 once it listens, STOPPING=1 at SIGTERM.
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut served = Served(
        Command::new(pgpilot)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting pgpilot serve"),
    );
    let told = |notify: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification to the service manager");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(told(&notify).trim(), "READY=1");
    let base = format!("http://127.0.0.1:{http}");
    let started = Instant::now();
    let jobs = loop {
        if let Some(v) = get(&format!("{base}/api/v1/jobs")) {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "pgpilot serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(jobs["scheduler"], "running", "{jobs}");
    assert_eq!(jobs["jobs"][0]["name"], "marks");
    assert!(jobs["jobs"][0]["next_run"].as_str().is_some_and(|t| t.contains(":00:00")), "{jobs}");

    let psql = pg_bin_dir().expect("PostgreSQL binaries").tool("psql");
    let show = Command::new(psql)
        .args(["-X", "-tA", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "pgpilot"])
        .args(["-c", "SHOW JOBS"])
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.starts_with("marks|sql|@hourly|true|"), "{show}");

    // Another instance (the CLI) runs the job; the server reads the same history table.
    let run = Command::new(pgpilot)
        .args(["jobs", "run", "marks", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let history = get(&format!("{base}/api/v1/jobs/history?job=marks")).expect("history");
    assert_eq!(history["runs"][0]["outcome"], "succeeded", "{history}");
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM job_marks"), "1");

    let stopping = Instant::now();
    // SAFETY: kill(2) on the child's pid, which we own and have not reaped.
    assert_eq!(unsafe { libc::kill(served.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
    assert_eq!(told(&notify).trim(), "STOPPING=1");
    let status = exited_within(&mut served.0, Duration::from_secs(15).saturating_sub(stopping.elapsed()))
        .expect("pgpilot did not stop on SIGTERM");
    assert!(status.success(), "exit status {status}");
}
