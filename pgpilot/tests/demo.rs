//! `pgpilot demo` end to end, as a user runs it: the real binary, real PostgreSQL (and Redis when
//! installed). A short run must measure work with no failure and report the advisor's findings;
//! whether it ends or is interrupted, no server process and no directory of its own may remain.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const PGPILOT: &str = env!("CARGO_BIN_EXE_pgpilot");

/// The short mode CI runs: a small sample application and few clients.
const SHORT: [&str; 5] = ["demo", "--scale", "0.05", "--clients", "4"];

fn demo_command(duration: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(PGPILOT);
    cmd.args(SHORT).args(["--duration", duration]).args(extra).env_remove("PGPILOT_LOG");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits up to `limit` for the processes to go (pg_ctl returns once the postmaster has exited,
/// but its children may take a moment longer).
fn assert_gone(pids: &[u32], dirs: &[PathBuf], context: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &pid in pids {
        assert!(!alive(pid), "process {pid} is still running after the demo ended\n{context}");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} still exists after the demo ended\n{context}", dir.display());
    }
}

#[test]
fn short_demo_reports_work_without_failures_and_leaves_nothing_behind() {
    let out = demo_command("5", &["--format", "json"]).output().expect("running pgpilot demo");
    let context = text(&out);
    assert!(out.status.success(), "pgpilot demo failed\n{context}");
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{context}"));

    let workload = &report["workload"];
    assert!(workload["transactions"].as_u64().unwrap() > 0, "{context}");
    assert_eq!(workload["failed"].as_u64(), Some(0), "{context}");
    let phases = workload["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "read-heavy and write-heavy\n{context}");
    for phase in phases {
        for target in ["direct", "pgpilot"] {
            let t = &phase[target];
            assert!(t["transactions"].as_u64().unwrap() > 0, "{} {target}\n{context}", phase["mix"]);
            assert!(t["latency_ms"]["p99"].as_f64().unwrap() >= t["latency_ms"]["p50"].as_f64().unwrap());
        }
        assert!(phase["ratio"]["tps"].as_f64().unwrap() > 0.0, "{context}");
    }

    let advisor = &report["advisor"];
    assert!(advisor["error"].is_null(), "{context}");
    let found = advisor["index_suggestions"].as_array().unwrap().len()
        + advisor["top_findings"].as_array().unwrap().len();
    assert!(found > 0, "the advisor found nothing in the sample application\n{context}");

    assert!(report["pool"]["server_connections_peak"].as_u64().unwrap() > 0, "{context}");
    assert!(report["pool"]["samples"].as_u64().unwrap() > 0, "{context}");

    // Reads on the replica and cache hits become mandatory as soon as the gateway reports them.
    assert_counted_once_available(&report["replica"], "reads_replica", &context);
    assert_counted_once_available(&report["cache"], "hits", &context);

    let servers = &report["servers"];
    let mut pids = Vec::new();
    let mut dirs = Vec::new();
    for role in ["primary", "replica", "redis"] {
        let s = &servers[role];
        if s.is_null() {
            assert_eq!(role, "redis", "the {role} is missing from the report\n{context}");
            continue;
        }
        pids.extend(s["pid"].as_u64().map(|p| p as u32));
        dirs.push(PathBuf::from(s["dir"].as_str().unwrap()));
    }
    assert!(pids.len() >= 2, "{context}");
    let config = PathBuf::from(servers["pgpilot"]["config_file"].as_str().unwrap());
    dirs.push(config.parent().unwrap().to_path_buf());
    assert_gone(&pids, &dirs, &context);
}

/// A capability the build has (`available`) must have counted something; one it lacks has null figures.
fn assert_counted_once_available(section: &Value, counter: &str, context: &str) {
    if section["available"] == Value::Bool(true) {
        assert!(section["error"].is_null(), "{context}");
        let count = section[counter].as_u64().unwrap_or(0);
        assert!(count > 0, "{counter} is 0 although the gateway reports it\n{context}");
    } else {
        assert!(section[counter].is_null(), "{context}");
    }
}

/// What the demo printed about a server it started: `  primary  URL  pid N  dir PATH`.
#[derive(Default, Debug)]
struct Started {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

impl Started {
    fn read(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            match pair[0] {
                "pid" => self.pids.extend(pair[1].parse::<u32>().ok()),
                "dir" => self.dirs.push(PathBuf::from(pair[1])),
                "config" => self.dirs.extend(Path::new(pair[1]).parent().map(Path::to_path_buf)),
                _ => {}
            }
        }
    }
}

/// Reads the child's stderr on a thread, line by line.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Starts a demo, waits for a line starting with `marker`, lets it go on for `settle`, sends
/// SIGINT as Ctrl-C would, and checks that everything the demo had announced is gone.
/// `stopping` begins what the demo must say it stops: only what it had started.
fn interrupt_after(marker: &str, settle: Duration, stopping: &str) {
    let mut child = demo_command("60", &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pgpilot demo");
    let lines = stderr_lines(&mut child);
    let mut started = Started::default();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            panic!("`{marker}` never came:\n{}", seen.join("\n"));
        };
        started.read(&line);
        let reached = line.starts_with(marker);
        seen.push(line);
        if reached {
            break;
        }
    }
    std::thread::sleep(settle);
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let status = pgpilot_testkit::exited_within(&mut child, Duration::from_secs(60));
    // The reader thread sees the end of stderr once the demo has exited.
    for line in lines.iter() {
        started.read(&line);
        seen.push(line);
    }
    let context = seen.join("\n");
    let Some(status) = status else {
        let _ = child.kill();
        panic!("pgpilot demo did not exit within 60 s of SIGINT:\n{context}");
    };
    assert_eq!(status.code(), Some(1), "an interrupted demo exits with 1\n{context}");
    assert!(context.contains("Stopped:"), "{context}");
    assert!(context.contains(&format!("\nStopping {stopping}")), "{context}");
    assert!(!context.contains("panicked"), "{context}");
    assert!(!started.pids.is_empty() && !started.dirs.is_empty(), "{started:?}\n{context}");
    assert_gone(&started.pids, &started.dirs, &context);
}

#[test]
fn ctrl_c_during_the_workload_tears_everything_down() {
    interrupt_after("Running the workload", Duration::from_secs(2), "pgpilot, PostgreSQL");
}

#[test]
fn ctrl_c_while_the_servers_start_tears_everything_down() {
    // The sample application is loading and the replica is being copied: both are cut short.
    // pgpilot and Redis have not started: the demo must not say it stops them.
    interrupt_after("Loading the sample application", Duration::from_millis(300), "PostgreSQL and removing");
}

#[test]
fn missing_postgresql_binaries_are_named_not_a_panic() {
    let out = Command::new(PGPILOT)
        .args(SHORT)
        .env("PGBIN", "/nonexistent/postgresql/bin")
        .output()
        .expect("running pgpilot demo");
    let context = text(&out);
    assert_eq!(out.status.code(), Some(1), "{context}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apt-get install postgresql"), "{context}");
    assert!(!stderr.contains("panicked"), "{context}");
}

#[test]
fn a_duration_too_short_to_measure_is_refused_before_anything_starts() {
    let out = demo_command("0.01", &[]).output().expect("running pgpilot demo");
    let context = text(&out);
    assert_eq!(out.status.code(), Some(2), "a usage error\n{context}");
    assert!(context.contains("too short"), "{context}");
    assert!(!context.contains("Starting"), "nothing was started\n{context}");
}
