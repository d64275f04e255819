//! The servers the demo runs: a PostgreSQL primary and its streaming replica (testkit clusters in
//! temporary directories), Redis when installed, and the gateway in this process. Everything is
//! owned by [`Stack`], whose teardown stops it all and removes every directory.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use pgpilot_gateway::Gateway;
use pgpilot_testkit::{Cluster, RedisServer};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const POSTGRES: &str = "PostgreSQL";
const REDIS: &str = "Redis";

/// Everything the demo started, each part present once it is running.
#[derive(Default)]
pub struct Stack {
    pub primary: Option<Arc<Cluster>>,
    pub replica: Option<Arc<Cluster>>,
    pub redis: Option<RedisServer>,
    pub gateway: Option<Gateway>,
    /// The gateway's configuration file, for `--keep` and for the curious.
    pub workdir: Option<tempfile::TempDir>,
}

/// What the local machine offers.
pub struct Prerequisites {
    /// redis-server is on the PATH.
    pub redis: bool,
}

/// Checks for the server binaries before anything starts, so a missing package is a message and
/// exit code 1, not a panic.
pub fn prerequisites() -> Result<Prerequisites> {
    pgpilot_testkit::pg_bin_dir().map_err(|message| anyhow!("{message}"))?;
    Ok(Prerequisites { redis: on_path("redis-server") })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

thread_local! {
    /// Set while a testkit call runs in [`blocking`]: its panic is reported as the step's error,
    /// so the panic hook prints nothing of its own (see `interrupt.rs`).
    static PANIC_IS_AN_ERROR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread will be reported as an error by the demo.
pub fn panic_is_reported() -> bool {
    PANIC_IS_AN_ERROR.get()
}

/// A blocking call, which the teardown waits for.
struct InFlight {
    /// What it starts (`PostgreSQL`, `Redis`), for the message saying what is being stopped.
    starts: Option<&'static str>,
    task: JoinHandle<()>,
}

/// Blocking calls still running, which the teardown waits for.
static IN_FLIGHT: Mutex<Vec<InFlight>> = Mutex::new(Vec::new());

/// Runs testkit's blocking (and panicking) calls off the runtime. A panic becomes an error. If the
/// caller stops waiting (Ctrl-C), what the call returns is dropped, and so torn down, on its own
/// thread as soon as it ends, and [`Stack::teardown`] waits for that.
async fn blocking<T: Send + 'static>(
    what: &str,
    starts: Option<&'static str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        // An unwanted result (the receiver is gone) is dropped here, on this thread.
        PANIC_IS_AN_ERROR.set(true);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
        PANIC_IS_AN_ERROR.set(false);
        let _ = tx.send(outcome);
    });
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()).push(InFlight { starts, task });
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(payload)) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            Err(anyhow!("{what}: {message}"))
        }
        Err(_) => Err(anyhow!("{what}: the task ended without an answer")),
    }
}

/// A primary with pg_stat_statements loaded, so the advisor sees the workload, and room for
/// `clients` connections straight to it (the direct target) beside pgpilot's and the demo's own.
pub async fn start_primary(clients: usize) -> Result<Arc<Cluster>> {
    let max_connections = (clients + 100).max(300);
    blocking("starting the PostgreSQL primary", Some(POSTGRES), move || {
        Arc::new(
            Cluster::builder()
                .setting("shared_preload_libraries = 'pg_stat_statements'")
                .setting(&format!("max_connections = {max_connections}"))
                .start(),
        )
    })
    .await
}

/// A streaming replica of `primary` (pg_basebackup), accepting reads once this returns.
pub async fn start_replica(primary: Arc<Cluster>) -> Result<Arc<Cluster>> {
    blocking("starting the streaming replica", Some(POSTGRES), move || Arc::new(primary.start_replica()))
        .await
}

pub async fn start_redis() -> Result<RedisServer> {
    blocking("starting redis-server", Some(REDIS), RedisServer::start).await
}

/// Stops the servers and removes the directories of earlier runs killed before their teardown
/// (SIGKILL, a crash); returns what was done, one line each.
pub async fn sweep_abandoned() -> Result<Vec<String>> {
    blocking("cleaning up after earlier runs", None, || {
        pgpilot_testkit::sweep_abandoned().iter().map(ToString::to_string).collect()
    })
    .await
}

impl Stack {
    pub fn primary(&self) -> Result<&Arc<Cluster>> {
        self.primary.as_ref().ok_or_else(|| anyhow!("the primary is not running"))
    }

    pub fn replica(&self) -> Result<&Arc<Cluster>> {
        self.replica.as_ref().ok_or_else(|| anyhow!("the replica is not running"))
    }

    pub fn gateway(&self) -> Result<&Gateway> {
        self.gateway.as_ref().ok_or_else(|| anyhow!("pgpilot is not running"))
    }

    /// Where clients reach pgpilot.
    pub fn gateway_addrs(&self) -> Result<(std::net::SocketAddr, std::net::SocketAddr)> {
        let gw = self.gateway()?;
        let listen = *gw.addrs().first().ok_or_else(|| anyhow!("pgpilot has no listener"))?;
        let Some(http) = gw.http_addr() else { bail!("pgpilot has no HTTP listener") };
        Ok((listen, http))
    }

    /// Stops the gateway (letting running transactions end), then the servers, and removes every
    /// directory. Safe to call with any part missing.
    pub async fn teardown(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
        let replica = self.replica.take();
        let primary = self.primary.take();
        let redis = self.redis.take();
        let workdir = self.workdir.take();
        let pending: Vec<InFlight> = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for call in pending {
            let _ = call.task.await;
        }
        let _ = blocking("stopping the servers", None, move || {
            drop(replica);
            drop(primary);
            drop(redis);
            drop(workdir);
        })
        .await;
    }

    /// What the teardown will stop: what runs, and servers still starting (their start goes on
    /// after an interrupt, and what it started is stopped then).
    pub fn started_parts(&self) -> Vec<&'static str> {
        let starting: Vec<&'static str> = IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|call| !call.task.is_finished())
            .filter_map(|call| call.starts)
            .collect();
        let postgres = self.primary.is_some() || self.replica.is_some() || starting.contains(&POSTGRES);
        let redis = self.redis.is_some() || starting.contains(&REDIS);
        [(self.gateway.is_some(), "pgpilot"), (postgres, POSTGRES), (redis, REDIS)]
            .into_iter()
            .filter_map(|(running, name)| running.then_some(name))
            .collect()
    }

    /// What runs where, for the report and for checking afterwards that it is all gone.
    pub fn describe(&self) -> StackInfo {
        let gateway = self.gateway_addrs().ok();
        StackInfo {
            primary: self.primary.as_deref().map(ServerInfo::postgres),
            replica: self.replica.as_deref().map(ServerInfo::postgres),
            redis: self.redis.as_ref().map(|r| ServerInfo {
                url: r.url(),
                port: r.port(),
                dir: r.dir().to_path_buf(),
                pid: r.pid(),
            }),
            pgpilot: gateway.map(|(listen, http)| GatewayInfo {
                url: format!("postgres://postgres@{listen}/{}", super::session::DATABASE),
                admin_url: format!("postgres://postgres@{listen}/pgpilot"),
                dashboard: format!("http://{http}/"),
                metrics: format!("http://{http}/metrics"),
                config_file: self.workdir.as_ref().map(|d| super::gateway_config::file_in(d.path())),
            }),
        }
    }
}

/// The servers of a run.
#[derive(Debug, Clone, Serialize)]
pub struct StackInfo {
    pub primary: Option<ServerInfo>,
    pub replica: Option<ServerInfo>,
    pub redis: Option<ServerInfo>,
    pub pgpilot: Option<GatewayInfo>,
}

/// One server process: where to connect, its directory (removed at the end) and its process id.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
    pub pid: Option<u32>,
}

impl ServerInfo {
    pub fn postgres(cluster: &Cluster) -> ServerInfo {
        ServerInfo {
            url: cluster.url("postgres", super::session::DATABASE),
            port: cluster.port(),
            dir: cluster.socket_dir().to_path_buf(),
            pid: postmaster_pid(&cluster.data_dir()),
        }
    }
}

/// pgpilot, running inside this process.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayInfo {
    pub url: String,
    pub admin_url: String,
    pub dashboard: String,
    pub metrics: String,
    pub config_file: Option<PathBuf>,
}

/// The first line of postmaster.pid.
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}
