//! A process killed with SIGKILL leaves its servers running and its directories behind: the next
//! sweep stops them and removes the directories, and never touches those of a process still alive.
//! The kit's directories follow `TMPDIR`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgpilot_testkit::{sweep_abandoned_in, Cluster, RedisServer, SweepOutcome};

/// Set for the copy of this test binary that plays the process that gets killed.
const CHILD: &str = "PGPILOT_TESTKIT_SWEEP_CHILD";

const DIR: &str = "child dir: ";
const PID: &str = "child pid: ";
const READY: &str = "child ready";

/// What the child started, as it printed it.
#[derive(Default, Debug)]
struct Started {
    dirs: Vec<PathBuf>,
    pids: Vec<u32>,
}

/// Not a test of its own: the killed process. Starts a primary, a replica and Redis, says where,
/// and waits to be killed.
#[test]
#[ignore = "run by a_killed_owners_servers_are_stopped_and_its_directories_removed"]
fn child_that_starts_servers_and_waits() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let primary = Cluster::start();
    let replica = primary.start_replica();
    let redis = RedisServer::start();
    // Marked: libtest prints the test's name on the line the first one starts.
    for cluster in [&primary, &replica] {
        println!("\n{DIR}{}", cluster.socket_dir().display());
        println!("{PID}{}", postmaster_pid(&cluster.data_dir()));
    }
    println!("{DIR}{}", redis.dir().display());
    println!("{PID}{}", redis.pid().expect("running"));
    println!("{READY}");
    std::thread::sleep(Duration::from_secs(600));
}

fn postmaster_pid(data: &Path) -> u32 {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The child, killed when a failed assertion ends the test first.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_child(tmpdir: &Path) -> (KilledOnDrop, Started) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_that_starts_servers_and_waits",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("TMPDIR", tmpdir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KilledOnDrop(child);
    let mut started = Started::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(child.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(dir) = line.strip_prefix(DIR) {
            started.dirs.push(dir.into());
        } else if let Some(pid) = line.strip_prefix(PID) {
            started.pids.push(pid.parse().unwrap());
        } else if line == READY {
            return (child, started);
        }
        assert!(Instant::now() < deadline, "the child took too long: {started:?}");
    }
    panic!("the child ended before starting its servers: {started:?}");
}

#[test]
fn a_killed_owners_servers_are_stopped_and_its_directories_removed() {
    // A TMPDIR of its own, which the server user can enter when we are root.
    let tmpdir = tempfile::Builder::new().prefix("pgpilot-sweep-test-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(tmpdir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mut child, started) = start_child(tmpdir.path());
    assert_eq!((started.dirs.len(), started.pids.len()), (3, 3), "{started:?}");
    for dir in &started.dirs {
        assert!(dir.starts_with(tmpdir.path()), "{} is not under TMPDIR {:?}", dir.display(), tmpdir.path());
    }

    // While the child lives, its directories are not the sweep's business.
    assert!(sweep_abandoned_in(tmpdir.path()).is_empty());
    assert!(started.dirs.iter().all(|d| d.exists()) && started.pids.iter().all(|&p| alive(p)));

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Dropping nothing, the child left its servers running.
    assert!(started.pids.iter().all(|&p| alive(p)), "{started:?}");

    let swept = sweep_abandoned_in(tmpdir.path());
    let text: Vec<String> = swept.iter().map(ToString::to_string).collect();
    assert_eq!(swept.len(), 3, "{text:#?}");
    for s in &swept {
        assert!(matches!(s.outcome, SweepOutcome::StoppedAndRemoved(_)), "{text:#?}");
        assert_eq!(s.owner_pid, child.0.id(), "{text:#?}");
        assert!(s.to_string().contains("is gone"), "{s}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in &started.pids {
        assert!(!alive(pid), "server process {pid} still runs after the sweep: {text:#?}");
    }
    for dir in &started.dirs {
        assert!(!dir.exists(), "{} is still there after the sweep", dir.display());
    }
}

#[test]
fn a_living_processs_directories_are_never_swept() {
    let primary = Cluster::start();
    let redis = RedisServer::start();
    let base = primary.socket_dir().parent().unwrap();
    assert!(sweep_abandoned_in(base)
        .iter()
        .all(|s| !s.dir.starts_with(primary.socket_dir()) && !s.dir.starts_with(redis.dir())));
    assert_eq!(primary.psql("postgres", "SELECT 1"), "1");
    assert!(redis.dir().exists());
}

/// Run as root, the servers run as `postgres`, which cannot enter a TMPDIR under /root: the kit
/// then puts its directories in /tmp instead of letting initdb fail.
#[test]
fn as_root_a_tmpdir_the_server_user_cannot_enter_is_replaced_by_tmp() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let private = tempfile::Builder::new().prefix("pgpilot-private-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (child, started) = start_child(private.path());
    drop(child);
    // Another test's sweep of /tmp may get there first: either way the directories go.
    sweep_abandoned_in(Path::new("/tmp"));
    for dir in &started.dirs {
        assert!(dir.starts_with("/tmp") && !dir.starts_with(private.path()), "{}", dir.display());
        assert!(!dir.exists(), "{} was not swept", dir.display());
    }
}
