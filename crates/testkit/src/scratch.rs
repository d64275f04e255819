//! Where the kit's directories go, who made them, and the sweep of those whose maker died.
//!
//! Every server directory lives under [`base_dir`] and holds an owner file naming the process that
//! made it (pid, start time, uid). A process killed with SIGKILL runs no drop: its servers, each in
//! a process group of its own, keep running, and its directories stay. [`sweep_abandoned`] stops
//! the servers of directories whose maker is gone and removes the directories.

use std::fmt;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use crate::binaries::pg_bin_dir;
use crate::run::{as_server_user, is_root, or_panic};

const OWNER_FILE: &str = "pgpilot-owner";
/// In a Redis directory: the redis-server's pid, to stop it when its owner is gone.
pub(crate) const REDIS_PID_FILE: &str = "redis-server.pid";

pub(crate) const PRIMARY_PREFIX: &str = "pgpilot-pg-";
pub(crate) const REPLICA_PREFIX: &str = "pgpilot-replica-";
pub(crate) const REDIS_PREFIX: &str = "pgpilot-redis-";

/// A socket address holds 107 bytes of path; PostgreSQL's socket is `DIR/.s.PGSQL.PORT`.
const SOCKET_PATH_MAX: usize = 107;
const LONGEST_BELOW_BASE: &str = "/pgpilot-replica-XXXXXX/.s.PGSQL.65535";

/// The directory the kit's directories go in: the temporary directory (`TMPDIR`, else `/tmp`), or
/// `/tmp` when the servers could not work there, which is said once on stderr.
pub fn base_dir() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let wanted = std::env::temp_dir();
        match why_unusable(&wanted) {
            None => wanted,
            Some(why) => {
                eprintln!(
                    "pgpilot-testkit: the servers' directories go in /tmp, not in {}: {why}",
                    wanted.display()
                );
                PathBuf::from("/tmp")
            }
        }
    })
}

fn why_unusable(dir: &Path) -> Option<String> {
    if dir.as_os_str().len() + LONGEST_BELOW_BASE.len() > SOCKET_PATH_MAX {
        return Some(format!(
            "PostgreSQL's Unix socket path there would pass {SOCKET_PATH_MAX} bytes, the system's limit"
        ));
    }
    if is_root() && !server_user_can_enter(dir) {
        return Some(
            "run as root, the servers run as the user postgres, which cannot enter it (it or a parent \
             directory is private, as /root is)"
                .into(),
        );
    }
    None
}

fn server_user_can_enter(dir: &Path) -> bool {
    let mut test = as_server_user("test");
    test.arg("-x").arg(dir);
    test.output().is_ok_and(|out| out.status.success())
}

/// A new directory `PREFIX*` in [`base_dir`] that the server user can enter, marked as this
/// process's.
pub(crate) fn new_owned_dir(prefix: &str) -> tempfile::TempDir {
    let base = base_dir();
    // tempfile's error names the path it tried.
    let dir = or_panic(
        tempfile::Builder::new().prefix(prefix).tempdir_in(base),
        format_args!("creating a temporary directory under {}", base.display()),
    );
    // The server user must be able to enter the directory to reach its socket and data.
    let _ = fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755));
    let owner = dir.path().join(OWNER_FILE);
    or_panic(
        fs::write(&owner, Owner::this_process().to_string()),
        format_args!("writing {}", owner.display()),
    );
    dir
}

/// The process that made a directory. Its start time tells it from a later process given the same
/// pid.
#[derive(Debug, PartialEq)]
struct Owner {
    pid: u32,
    started: Option<u64>,
    uid: u32,
}

impl Owner {
    fn this_process() -> Owner {
        let pid = std::process::id();
        Owner { pid, started: ProcessStat::read(pid).map(|s| s.started), uid: euid() }
    }

    fn read(dir: &Path) -> Option<Owner> {
        let text = fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
        let mut fields = text.split_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let started = fields.next()?.parse().ok();
        let uid = fields.next()?.parse().ok()?;
        Some(Owner { pid, started, uid })
    }

    fn is_alive(&self) -> bool {
        match ProcessStat::read(self.pid) {
            Some(stat) => !stat.zombie && self.started.is_none_or(|s| s == stat.started),
            // No /proc: whether any process has the pid (EPERM: another user's has).
            // SAFETY: kill with signal 0 only checks that the process exists.
            None => unsafe {
                libc::kill(self.pid as libc::pid_t, 0) == 0
                    || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
            },
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let started = self.started.map_or("-".to_string(), |s| s.to_string());
        writeln!(f, "{} {started} {}", self.pid, self.uid)
    }
}

/// What /proc says of a process.
struct ProcessStat {
    zombie: bool,
    /// Clock ticks after boot.
    started: u64,
}

impl ProcessStat {
    fn read(pid: u32) -> Option<ProcessStat> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the parenthesised command name: state (field 3), ..., starttime (field 22).
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcessStat { zombie: fields.first() == Some(&"Z"), started: fields.get(19)?.parse().ok()? })
    }
}

/// A process with this pid exists and is not a zombie.
fn runs(pid: u32) -> bool {
    ProcessStat::read(pid).is_some_and(|s| !s.zombie)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// One abandoned directory and what the sweep did with it.
#[derive(Debug)]
pub struct Swept {
    pub dir: PathBuf,
    /// The process that made it, now gone.
    pub owner_pid: u32,
    pub outcome: SweepOutcome,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SweepOutcome {
    /// Its server was stopped and the directory removed.
    StoppedAndRemoved(&'static str),
    /// No server ran in it; the directory was removed.
    Removed,
    /// Left alone: its server would not stop (removing the directory under it would leave it
    /// running for good), or the directory could not be removed.
    Kept(String),
}

impl fmt::Display for Swept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (dir, pid) = (self.dir.display(), self.owner_pid);
        match &self.outcome {
            SweepOutcome::StoppedAndRemoved(server) => {
                write!(f, "{dir}: its maker (process {pid}) is gone; stopped its {server} and removed it")
            }
            SweepOutcome::Removed => write!(f, "{dir}: its maker (process {pid}) is gone; removed it"),
            SweepOutcome::Kept(why) => write!(f, "{dir}: its maker (process {pid}) is gone, but {why}"),
        }
    }
}

/// Sweeps [`base_dir`] once per process, saying on stderr what it did.
pub(crate) fn sweep_once() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        for swept in sweep_abandoned() {
            eprintln!("pgpilot-testkit: {swept}");
        }
    });
}

/// Stops the servers of the kit's directories in [`base_dir`] whose maker has died (killed before
/// it could tear them down) and removes those directories. A directory whose maker runs, that
/// another user's process made, or that has no owner file (being made, or made by an older kit) is
/// never touched.
pub fn sweep_abandoned() -> Vec<Swept> {
    sweep_abandoned_in(base_dir())
}

/// [`sweep_abandoned`] in another directory (a process started with another `TMPDIR`).
pub fn sweep_abandoned_in(base: &Path) -> Vec<Swept> {
    let Ok(entries) = fs::read_dir(base) else { return Vec::new() };
    entries.flatten().filter_map(|entry| sweep_one(&entry.path())).collect()
}

fn sweep_one(dir: &Path) -> Option<Swept> {
    let name = dir.file_name()?.to_str()?;
    let redis = name.starts_with(REDIS_PREFIX);
    if !(redis || name.starts_with(PRIMARY_PREFIX) || name.starts_with(REPLICA_PREFIX)) {
        return None;
    }
    // Never a symbolic link, nor a directory someone else made to look like one of ours.
    let meta = fs::symlink_metadata(dir).ok()?;
    if !meta.is_dir() || !made_by_us(meta.uid()) {
        return None;
    }
    let owner = Owner::read(dir)?;
    if owner.uid != euid() || owner.is_alive() {
        return None;
    }
    let stopped = if redis { stop_redis(dir) } else { stop_postgres(dir) };
    let outcome = match stopped {
        Err(why) => SweepOutcome::Kept(why),
        Ok(server) => match fs::remove_dir_all(dir) {
            // Another sweep (a test process starting its first cluster) got there first.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                SweepOutcome::Kept(format!("it could not be removed: {e}"))
            }
            _ => server.map_or(SweepOutcome::Removed, SweepOutcome::StoppedAndRemoved),
        },
    };
    Some(Swept { dir: dir.to_path_buf(), owner_pid: owner.pid, outcome })
}

/// Our directories are ours, or, when we are root, the server user's (they are given to it).
fn made_by_us(uid: u32) -> bool {
    uid == euid() || (is_root() && Some(uid) == server_user_uid())
}

fn server_user_uid() -> Option<u32> {
    // SAFETY: getpwnam takes a NUL-terminated name and returns null or a pointer to static data,
    // read at once.
    unsafe {
        let entry = libc::getpwnam(c"postgres".as_ptr());
        (!entry.is_null()).then(|| (*entry).pw_uid)
    }
}

/// Stops the PostgreSQL server of a cluster directory, if one runs. Returns what was stopped.
fn stop_postgres(dir: &Path) -> Result<Option<&'static str>, String> {
    let data = dir.join("data");
    if !data.join("postmaster.pid").exists() {
        return Ok(None);
    }
    let bins = pg_bin_dir().map_err(|e| format!("its PostgreSQL server could not be stopped: {e}"))?;
    let pg_ctl = |args: &[&str]| {
        let mut cmd = as_server_user(bins.tool("pg_ctl"));
        cmd.arg("-D").arg(&data).args(args);
        cmd.output()
    };
    let stop = pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
    if stop.as_ref().is_ok_and(|out| out.status.success()) {
        return Ok(Some("PostgreSQL server"));
    }
    // pg_ctl status exits with 3 when no server runs (a stale postmaster.pid).
    match pg_ctl(&["status"]).map(|out| out.status.code()) {
        Ok(Some(3)) => Ok(None),
        _ => Err(format!(
            "its PostgreSQL server would not stop: {}",
            stop.map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                .unwrap_or_else(|e| e.to_string())
        )),
    }
}

/// Stops the redis-server of a Redis directory, if it still runs there.
fn stop_redis(dir: &Path) -> Result<Option<&'static str>, String> {
    let Some(pid) =
        fs::read_to_string(dir.join(REDIS_PID_FILE)).ok().and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return Ok(None);
    };
    // redis-server works in its --dir: a process there with that pid is this directory's server,
    // not a later process that was given the same pid.
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if cwd != Some(dir) || !runs(pid) {
        return Ok(None);
    }
    // SAFETY: kill has no memory-safety preconditions; the pid was checked just above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs(pid) {
        if Instant::now() > deadline {
            return Err(format!("its redis-server (pid {pid}) would not stop"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some("redis-server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_records_read_back() {
        let owner = Owner { pid: 42, started: Some(7), uid: 1000 };
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(OWNER_FILE), owner.to_string()).unwrap();
        assert_eq!(Owner::read(dir.path()), Some(owner));
        let unknown_start = Owner { pid: 42, started: None, uid: 1000 };
        fs::write(dir.path().join(OWNER_FILE), unknown_start.to_string()).unwrap();
        assert_eq!(Owner::read(dir.path()), Some(unknown_start));
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = Owner::this_process();
        assert!(me.is_alive());
        let earlier = Owner { started: me.started.map(|s| s.wrapping_sub(1)), ..Owner::this_process() };
        assert!(!earlier.is_alive(), "same pid, another start time: another process");
    }

    #[test]
    fn a_long_temporary_directory_is_not_used_for_sockets() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(80)));
        assert!(why_unusable(&long).is_some_and(|why| why.contains("socket")));
    }
}
