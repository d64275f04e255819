//! Runs one driver program against a fresh cluster, through a real `pgpilot serve` process.

use std::fs::File;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgpilot_testkit::{free_port, Cluster};

/// The objects every scenario needs, created directly on the cluster.
pub const SETUP_SQL: &str = include_str!("../../../drivers/setup.sql");

/// Server connections in transaction mode (issue 3: a pool of 5 for 50 concurrent clients).
pub const POOL_SIZE: usize = 5;

/// Server connections in session mode: one per client, since the clients hold their sessions
/// for the whole run and wait for one another (the listener), which a pool of 5 cannot serve.
pub const SESSION_POOL_SIZE: usize = 60;

/// A driver program that ends by itself within 150 s; this is the hard stop after that.
const PROGRAM_LIMIT: Duration = Duration::from_secs(170);

pub const INSTALL_HINT: &str =
    "run scripts/install-driver-deps.sh (as root) to install the driver suite's runtimes";

/// Where the scenario's clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// pgpilot in transaction pooling mode: what the suite is for.
    Transaction,
    /// pgpilot in session pooling mode.
    Session,
    /// PostgreSQL itself, to tell a wrong driver program from a wrong pooler.
    Direct,
}

impl Target {
    /// `DRIVERS_TARGET=session|direct` points the suite elsewhere; the default is transaction mode.
    pub fn from_env() -> Target {
        match std::env::var("DRIVERS_TARGET").as_deref() {
            Ok("session") => Target::Session,
            Ok("direct") => Target::Direct,
            Ok("transaction") | Err(_) => Target::Transaction,
            Ok(other) => panic!("DRIVERS_TARGET={other}: expected transaction, session or direct"),
        }
    }
}

/// The repository's root (the parent of the `pgpilot` package).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("pgpilot/ has a parent").to_path_buf()
}

/// A scratch directory for compiled driver programs (Java classes, the Go binary).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A `pgpilot serve` process in front of a cluster, killed on drop.
pub struct Gateway {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Gateway {
    pub fn start(cluster: &Cluster, mode: &str) -> Gateway {
        let pool_size = if mode == "session" { SESSION_POOL_SIZE } else { POOL_SIZE };
        let port = free_port();
        let log = scratch_dir("gateway-logs").join(format!("pgpilot-{port}.log"));
        let stderr = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let child = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--primary", &cluster.admin_url()])
            .args(["--pool-size", &pool_size.to_string(), "--pool-mode", mode])
            .env("PGPILOT_LOG", std::env::var("PGPILOT_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting the pgpilot binary");
        let mut gateway = Gateway { child, port, log };
        gateway.wait_until_accepting();
        gateway
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn wait_until_accepting(&mut self) {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgpilot exited ({status}) before accepting:\n{}", self.log_tail());
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!("pgpilot did not accept on port {} within 30 s:\n{}", self.port, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines pgpilot logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- pgpilot log ({}) ---\n{tail}", self.log.display())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh cluster with the scenario's objects, and pgpilot in front of it unless the target is
/// PostgreSQL itself.
pub struct Stage {
    pub cluster: Cluster,
    pub gateway: Option<Gateway>,
    pub target: Target,
}

impl Stage {
    pub fn new() -> Stage {
        let target = Target::from_env();
        let cluster = Cluster::start();
        cluster.psql("postgres", SETUP_SQL);
        let gateway = match target {
            Target::Transaction => Some(Gateway::start(&cluster, "transaction")),
            Target::Session => Some(Gateway::start(&cluster, "session")),
            Target::Direct => None,
        };
        Stage { cluster, gateway, target }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.gateway.as_ref().map_or(self.cluster.port(), Gateway::port)
    }

    /// Runs a driver program with the libpq environment pointing at the target, and panics with
    /// its output (and pgpilot's log) unless it succeeds.
    pub fn run_program(&self, driver: &str, mut command: Command) {
        command
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port().to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        let output = run_with_limit(&mut command, PROGRAM_LIMIT)
            .unwrap_or_else(|e| panic!("{driver}: could not run {command:?}: {e}. {INSTALL_HINT}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let log = self.gateway.as_ref().map(Gateway::log_tail).unwrap_or_default();
            panic!(
                "{driver} scenario failed against {:?} ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{log}",
                self.target, output.status
            );
        }
        println!("{:?}: {}", self.target, stdout.trim());
    }
}

/// Runs a command to its end, or kills it after `limit`.
pub fn run_with_limit(command: &mut Command, limit: Duration) -> std::io::Result<Output> {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    // Drain both pipes while waiting, so a chatty program cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let status = child.wait()?;
            let mut stderr = err_reader.join().unwrap_or_default();
            stderr.extend_from_slice(format!("\nkilled after {limit:?}\n").as_bytes());
            return Ok(Output { status, stdout: out_reader.join().unwrap_or_default(), stderr });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Runs a tool that must exist for a driver; panics naming the install script when it does not.
pub fn require(driver: &str, what: &str, command: &mut Command) -> String {
    match command.output() {
        Ok(out) if out.status.success() => {
            let text = if out.stdout.is_empty() { &out.stderr } else { &out.stdout };
            String::from_utf8_lossy(text).trim().to_string()
        }
        Ok(out) => panic!(
            "{driver}: {what} is missing ({:?} failed: {}). {INSTALL_HINT}",
            command,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("{driver}: {what} is missing ({:?}: {e}). {INSTALL_HINT}", command.get_program()),
    }
}

/// A file a driver needs; panics naming the install script when it is absent.
pub fn require_path(driver: &str, what: &str, path: &Path) {
    if !path.exists() {
        panic!("{driver}: {what} is missing ({} does not exist). {INSTALL_HINT}", path.display());
    }
}
