use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::binaries::{pg_bin_dir, PgBinaries};
use crate::ports::free_port;
use crate::run::{as_server_user, give_to_server_user, or_panic, run_checked, run_telling};
use crate::scratch::{self, new_owned_dir, PRIMARY_PREFIX, REPLICA_PREFIX};

/// Settings that make throwaway clusters fast: they never need to survive a crash.
const FAST_SETTINGS: &str = "
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
max_wal_senders = 10
hot_standby = on
max_connections = 300
shared_buffers = '64MB'
log_min_messages = warning
log_connections = off
";

/// How a cluster is set up before it starts.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    host_auth: String,
    settings: Vec<String>,
    superuser_password: Option<String>,
    port: Option<u16>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            host_auth: "trust".into(),
            settings: Vec::new(),
            superuser_password: None,
            port: None,
        }
    }
}

impl ClusterBuilder {
    /// The pg_hba method for TCP connections from 127.0.0.1 (trust, md5, scram-sha-256, password).
    /// Unix-socket connections, which the kit itself uses, stay trusted.
    pub fn host_auth(mut self, method: &str) -> Self {
        self.host_auth = method.to_string();
        self
    }

    /// One postgresql.conf line, appended after the kit's own.
    pub fn setting(mut self, line: &str) -> Self {
        self.settings.push(line.to_string());
        self
    }

    /// Gives the superuser `postgres` a password (stored as SCRAM unless password_encryption says otherwise).
    pub fn superuser_password(mut self, password: &str) -> Self {
        self.superuser_password = Some(password.to_string());
        self
    }

    /// The port to try first instead of a free one; when it is taken the server moves to a free
    /// one, as it does when another process takes a free port first.
    pub fn preferred_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn start(self) -> Cluster {
        let bins = pg_bin_dir().unwrap_or_else(|e| panic!("{e}"));
        scratch::sweep_once();
        let root = new_owned_dir(PRIMARY_PREFIX);
        let data = root.path().join("data");
        copy_template(&bins, &data);
        let port = self.port.unwrap_or_else(free_port);
        let mut conf = format!(
            "{FAST_SETTINGS}\nport = {port}\nunix_socket_directories = '{}'\n",
            root.path().display()
        );
        for line in &self.settings {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf);
        let superuser_auth =
            if self.superuser_password.is_some() { self.host_auth.as_str() } else { "trust" };
        write_hba(&data, &self.host_auth, superuser_auth);
        give_to_server_user(root.path());
        let mut cluster = Cluster { bins, root, port, stopped: Mutex::new(true) };
        cluster.start_on_a_free_port();
        if let Some(pw) = &self.superuser_password {
            cluster.psql("postgres", &format!("ALTER ROLE postgres PASSWORD '{}'", pw.replace('\'', "''")));
        }
        cluster
    }
}

/// A running PostgreSQL cluster in a temporary directory, stopped and removed on drop.
pub struct Cluster {
    bins: PgBinaries,
    root: tempfile::TempDir,
    port: u16,
    stopped: Mutex<bool>,
}

impl Cluster {
    /// A primary with trust authentication and the kit's fast settings.
    pub fn start() -> Cluster {
        ClusterBuilder::default().start()
    }

    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// `host:port` over TCP.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn socket_dir(&self) -> &Path {
        self.root.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    /// A postgres:// URL for `user` on database `db` over TCP (no password).
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// The superuser's URL for the `postgres` database.
    pub fn admin_url(&self) -> String {
        self.url("postgres", "postgres")
    }

    /// A libpq keyword/value connection string over TCP.
    pub fn conninfo(&self, user: &str, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} dbname={db}", self.port)
    }

    /// Runs SQL as the superuser over the Unix socket and returns psql's unaligned, tuples-only output.
    /// Panics when the SQL fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql).unwrap_or_else(|e| panic!("psql on port {}: {e}", self.port))
    }

    /// Like [`Cluster::psql`] but returns the error text instead of panicking.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bins.tool("psql"))
            .process_group(0)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-c", sql])
            .output()
            .map_err(|e| format!("could not run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
        }
    }

    /// Creates a role that can log in with a password over TCP.
    pub fn create_user(&self, name: &str, password: &str) {
        self.psql(
            "postgres",
            &format!("CREATE ROLE \"{name}\" LOGIN PASSWORD '{}'", password.replace('\'', "''")),
        );
    }

    pub fn create_database(&self, name: &str, owner: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\""));
    }

    /// Starts a streaming replica of this cluster (pg_basebackup -R) and waits until it accepts reads.
    pub fn start_replica(&self) -> Cluster {
        self.start_replica_with(&[])
    }

    /// A streaming replica with extra postgresql.conf lines (recovery_min_apply_delay, say).
    pub fn start_replica_with(&self, settings: &[&str]) -> Cluster {
        let root = new_owned_dir(REPLICA_PREFIX);
        give_to_server_user(root.path());
        let data = root.path().join("data");
        let mut cmd = as_server_user(self.bins.tool("pg_basebackup"));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            // A fast checkpoint: the default spread one can take minutes on an idle primary.
            "-c",
            "fast",
            "-D",
        ])
        .arg(&data);
        run_checked(cmd, "pg_basebackup");
        let port = free_port();
        let mut conf = format!("\nport = {port}\nunix_socket_directories = '{}'\n", root.path().display());
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf);
        give_to_server_user(root.path());
        let mut replica = Cluster { bins: self.bins.clone(), root, port, stopped: Mutex::new(true) };
        replica.start_on_a_free_port();
        replica
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn start_server(&self) {
        self.try_start_server().unwrap_or_else(|message| panic!("{message}"));
    }

    /// Starts the server for the first time. Its port was free when picked, but the port was only
    /// bound and closed: another process may have taken it since. Then the server moves to a
    /// fresh port, a few times.
    fn start_on_a_free_port(&mut self) {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let log_before = fs::metadata(self.log_path()).map_or(0, |m| m.len());
            match self.try_start_server() {
                Ok(()) => return,
                Err(_) if attempt < ATTEMPTS && self.port_was_taken(log_before) => {
                    self.port = free_port();
                    append(&self.data_dir().join("postgresql.conf"), &format!("port = {}\n", self.port));
                }
                Err(message) => panic!("{message}"),
            }
        }
    }

    /// Whether the server log, after `offset`, says the port was in use.
    fn port_was_taken(&self, offset: u64) -> bool {
        let log = fs::read(self.log_path()).unwrap_or_default();
        let new = log.get(offset as usize..).unwrap_or_default();
        String::from_utf8_lossy(new).contains("Address already in use")
    }

    fn try_start_server(&self) -> Result<(), String> {
        let mut cmd = as_server_user(self.bins.tool("pg_ctl"));
        cmd.args(["-D"]).arg(self.data_dir()).arg("-l").arg(self.log_path());
        cmd.args(["-w", "-t", "60", "start"]);
        // Marked running before pg_ctl returns: when it fails or times out, the server may still
        // come up, and dropping the cluster must then stop it.
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = false;
        // The server's own log says why it did not start, and the directory holding it may be
        // gone by the time anyone reads the message: its end goes into the message.
        run_telling(cmd, "pg_ctl start", || {
            let log = fs::read_to_string(self.log_path()).unwrap_or_default();
            let mut tail: Vec<&str> = log.lines().rev().take(20).collect();
            tail.reverse();
            format!("\nserver log {}, last lines:\n{}", self.log_path().display(), tail.join("\n"))
        })
        .map(|_| ())
    }

    /// Stops the server (fast mode: clients are disconnected, no crash recovery needed).
    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
    }

    /// Stops the server as a crash would.
    pub fn kill(&self) {
        self.pg_ctl_stop("immediate");
    }

    pub fn restart(&self) {
        self.stop();
        self.start_server();
    }

    /// Promotes a replica to a primary and waits until it accepts writes.
    pub fn promote(&self) {
        let mut cmd = as_server_user(self.bins.tool("pg_ctl"));
        cmd.args(["-D"]).arg(self.data_dir()).args(["-w", "promote"]);
        run_checked(cmd, "pg_ctl promote");
        self.wait_for("f", "SELECT pg_is_in_recovery()", Duration::from_secs(30));
    }

    /// Waits until `sql` returns `expected` or the time is up (then panics).
    pub fn wait_for(&self, expected: &str, sql: &str, limit: Duration) {
        self.wait_for_in("postgres", expected, sql, limit)
    }

    /// `wait_for` in database `db`.
    pub fn wait_for_in(&self, db: &str, expected: &str, sql: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            match self.try_psql(db, sql) {
                Ok(v) if v == expected => return,
                other if start.elapsed() > limit => {
                    panic!("waited {limit:?} for `{sql}` to return {expected}, last: {other:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Waits until this replica has replayed everything the primary has written so far.
    pub fn wait_caught_up(&self, primary: &Cluster) {
        let lsn = primary.psql("postgres", "SELECT pg_current_wal_lsn()");
        self.wait_for(
            "t",
            &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
            Duration::from_secs(30),
        );
    }

    fn pg_ctl_stop(&self, mode: &str) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        let mut cmd = as_server_user(self.bins.tool("pg_ctl"));
        cmd.args(["-D"]).arg(self.data_dir()).args(["-m", mode, "-w", "-t", "60", "stop"]);
        let _ = cmd.output();
        *stopped = true;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
    }
}

/// initdb once per machine and PostgreSQL version, then copy: initdb costs a second or two per cluster.
/// Test binaries and the `pgpilot demo` processes they start share the template, so making and
/// copying it happen under a file lock: a process must never copy a half-made template, nor replace
/// one that another process is copying.
fn copy_template(bins: &PgBinaries, data: &Path) {
    let version = server_version(bins);
    let major = version.split('.').next().unwrap_or_default().to_string();
    // No dot in the name: the lock and work paths beside it are made with `with_extension`.
    let version = version.replace('.', "_");
    // One template per user (another user's, a root run leaves it to the postgres user with mode
    // 0700, can be neither read nor replaced), per server version, and per binaries directory.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut where_from = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&bins.dir, &mut where_from);
    let dir_hash = std::hash::Hasher::finish(&where_from) as u32;
    let template =
        scratch::base_dir().join(format!("pgpilot-testkit-template-{version}-{dir_hash:08x}-uid{uid}"));
    let lock_path = template.with_extension("lock");
    // Another user's earlier run may own the file: a read-only descriptor locks just as well.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .or_else(|_| fs::File::open(&lock_path))
        .unwrap_or_else(|e| panic!("opening the template lock file {}: {e}", lock_path.display()));
    or_panic(lock.lock(), format_args!("locking {}", lock_path.display()));
    let made_by = fs::read_to_string(template.join("PG_VERSION")).unwrap_or_default();
    if made_by.trim() != major || !template.join("postgresql.conf").exists() {
        make_template(bins, &template);
    }
    run_checked(
        {
            let mut c = Command::new("cp");
            c.arg("-a").arg(&template).arg(data);
            c
        },
        "copying the template cluster",
    );
}

/// The server's version (`15.18`), from `postgres --version`.
fn server_version(bins: &PgBinaries) -> String {
    let out = run_checked(
        {
            let mut c = Command::new(bins.tool("postgres"));
            c.arg("--version");
            c
        },
        "postgres --version",
    );
    // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2).unwrap_or_default();
    version.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '.').collect()
}

/// Called with the template lock held.
fn make_template(bins: &PgBinaries, template: &Path) {
    let holder = template.with_extension(format!("holder-{}", std::process::id()));
    let _ = fs::remove_dir_all(&holder);
    or_panic(fs::create_dir_all(&holder), format_args!("creating {}", holder.display()));
    give_to_server_user(&holder);
    let target = holder.join("data");
    let mut cmd = as_server_user(bins.tool("initdb"));
    cmd.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "-D"]).arg(&target);
    run_checked(cmd, "initdb");
    let _ = fs::remove_dir_all(template);
    fs::rename(&target, template)
        .unwrap_or_else(|e| panic!("could not move the template cluster into {}: {e}", template.display()));
    let _ = fs::remove_dir_all(&holder);
}

/// Unix-socket connections (the kit's own psql) are trusted; the superuser over TCP is trusted
/// unless it was given a password, so tests can always inspect the server.
fn write_hba(data: &Path, host_auth: &str, superuser_auth: &str) {
    let hba = format!(
        "local all all trust\n\
         host replication all 127.0.0.1/32 trust\n\
         host all postgres 127.0.0.1/32 {superuser_auth}\n\
         host all all 127.0.0.1/32 {host_auth}\n"
    );
    let path = data.join("pg_hba.conf");
    or_panic(fs::write(&path, hba), format_args!("writing {}", path.display()));
}

fn append(path: &Path, text: &str) {
    let mut f =
        or_panic(fs::OpenOptions::new().append(true).open(path), format_args!("opening {}", path.display()));
    or_panic(f.write_all(text.as_bytes()), format_args!("writing {}", path.display()));
}
