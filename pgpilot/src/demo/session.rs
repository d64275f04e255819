//! The demo from start to end: servers up, sample application loaded, pgpilot in front, workload,
//! report, optionally `--keep`, and always the teardown — whether it ended, failed or was
//! interrupted.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pgpilot_bench::demo_app::{self, Stats};
use pgpilot_gateway::config::QuickStart;
use pgpilot_gateway::Gateway;
use pgpilot_testkit::Cluster;
use tokio_postgres::{Client, NoTls};

use super::gateway_config::{self, GatewayPlan};
use super::gateway_stats::{CacheUse, PoolMonitor, PoolSnapshot, ReadSplit};
use super::interrupt::{is_interrupted, Interrupt, Interrupted};
use super::report::{DemoReport, PoolSummary, Settings, WorkloadSummary};
use super::stack::{self, ServerInfo, Stack};
use super::workload::{self, WorkloadPlan};
use super::{advisor, keep, DemoArgs, Format};
use crate::exit::{Outcome, FAILURE, OK};

/// The database the sample application lives in, on the servers and through pgpilot.
pub const DATABASE: &str = "demo";

/// Longest wait for the replica to replay the sample application.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

pub async fn run(args: DemoArgs) -> Outcome {
    let interrupt = Interrupt::install()?;
    let mut stack = Stack::default();
    let result = demo(&args, &mut stack, &interrupt).await;
    let outcome = match result {
        Ok(report) => show(&args, &report, &stack, &interrupt).await,
        Err(e) if is_interrupted(&e) || interrupt.is_set() => Ok(FAILURE),
        Err(e) => Err(e),
    };
    let parts = stack.started_parts();
    if interrupt.is_set() && !parts.is_empty() {
        eprintln!("\nStopping {} and removing the demo's directories...", and_list(&parts));
    }
    stack.teardown().await;
    if interrupt.is_set() {
        match parts.len() {
            0 => eprintln!("Stopped: nothing had been started yet."),
            1 => eprintln!("Stopped: {} is shut down and its directories removed.", parts[0]),
            _ => eprintln!("Stopped: {} are shut down and their directories removed.", and_list(&parts)),
        }
    }
    outcome
}

/// ["pgpilot", "PostgreSQL", "Redis"] → "pgpilot, PostgreSQL and Redis".
fn and_list(parts: &[&str]) -> String {
    match parts.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Prints the report; with `--keep`, then says how to connect and waits for Ctrl-C.
async fn show(args: &DemoArgs, report: &DemoReport, stack: &Stack, interrupt: &Interrupt) -> Outcome {
    match args.format {
        Format::Text => print!("{}", report.render_text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    if args.keep && !interrupt.is_set() {
        let help = keep::connection_help(&stack.describe(), args.clients);
        match args.format {
            Format::Text => print!("{help}"),
            Format::Json => eprint!("{help}"),
        }
        interrupt.wait().await;
    }
    Ok(OK)
}

async fn demo(args: &DemoArgs, stack: &mut Stack, interrupt: &Interrupt) -> Result<DemoReport> {
    let started = Instant::now();
    let prerequisites = stack::prerequisites()?;
    // An earlier demo killed with SIGKILL left its servers running and its directories behind.
    for line in interrupt.guard(stack::sweep_abandoned()).await? {
        eprintln!("Cleaned up after an earlier run: {line}");
    }
    let mut notes = Vec::new();
    if cfg!(debug_assertions) {
        notes.push(
            "this pgpilot is a debug build: its throughput and latency say little; build with --release to compare"
                .to_string(),
        );
    }
    let (primary_client, app, postgres_version) = servers_and_data(args, stack, interrupt).await?;
    if prerequisites.redis {
        eprintln!("Starting Redis...");
        stack.redis = Some(interrupt.guard(stack::start_redis()).await?);
        announce("redis", stack.describe().redis.as_ref());
    } else {
        notes.push("redis-server is not installed: the cache's shared Redis tier was not shown".into());
    }
    if let Some(why) = start_gateway(args, stack).await? {
        notes.push(format!(
            "the result cache could not be configured ({why}): the workload ran without a cache"
        ));
    }
    announce_gateway(stack);
    interrupt.guard(check_gateway(stack)).await?;
    primary_client.batch_execute("SELECT pg_stat_statements_reset()").await?;
    let setup_s = started.elapsed().as_secs_f64();

    let plan = WorkloadPlan::new(args.duration, args.clients);
    let (_, http) = stack.gateway_addrs()?;
    let monitor = PoolMonitor::new(http, DATABASE);
    let sampler = monitor.spawn();
    eprintln!("\nRunning the workload: {}", plan.describe());
    let direct_url = stack.primary()?.url("postgres", DATABASE);
    let pgpilot_url =
        stack.describe().pgpilot.map(|g| g.url).ok_or_else(|| anyhow!("pgpilot is not running"))?;
    let phases = workload::run(&plan, &direct_url, &pgpilot_url, interrupt, &monitor).await;
    sampler.abort();
    let phases = phases?;
    if interrupt.is_set() {
        return Err(Interrupted.into());
    }
    let workload = WorkloadSummary::new(&phases);
    if let Some(what) = workload.unmeasured() {
        bail!("nothing was measured: {what}");
    }

    eprintln!("\nAsking pgpilot what it saw, and the advisor what it finds...");
    let replica = ReadSplit::fetch(http, DATABASE).await;
    let cache = CacheUse::fetch(http).await;
    let last_pools = PoolSnapshot::fetch(http, DATABASE).await.ok();
    let best_tps = workload.phases.iter().map(|p| p.pgpilot.tps).fold(0.0, f64::max);
    let advisor =
        interrupt.guard(async { anyhow::Ok(advisor::run(&direct_url, http, best_tps).await) }).await?;
    Ok(DemoReport {
        pgpilot_version: env!("CARGO_PKG_VERSION"),
        postgres_version,
        settings: Settings::new(args.duration, args.scale, args.keep, &plan),
        servers: stack.describe(),
        app,
        setup_s,
        pool: PoolSummary::new(args.pool_size, args.clients, monitor.usage(), last_pools.as_ref()),
        workload,
        replica,
        cache,
        advisor,
        notes,
    })
}

/// The primary, the sample application on it, and a replica that has replayed it all. Returns a
/// session on the primary's demo database, the row counts and the server version.
async fn servers_and_data(
    args: &DemoArgs,
    stack: &mut Stack,
    interrupt: &Interrupt,
) -> Result<(Client, Stats, String)> {
    eprintln!("Starting a PostgreSQL primary...");
    stack.primary = Some(interrupt.guard(stack::start_primary(args.clients)).await?);
    let primary = stack.primary()?.clone();
    announce("primary", stack.describe().primary.as_ref());
    let admin = connect(&primary.admin_url()).await?;
    let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
    admin.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await?;
    let client = connect(&primary.url("postgres", DATABASE)).await?;
    client.batch_execute("CREATE EXTENSION pg_stat_statements").await?;

    eprintln!("Loading the sample application (scale {}) and starting a streaming replica...", args.scale);
    let replica = async {
        let replica = stack::start_replica(primary.clone()).await?;
        announce("replica", Some(&ServerInfo::postgres(&replica)));
        anyhow::Ok(replica)
    };
    let (replica, app) = tokio::join!(
        interrupt.guard(replica),
        interrupt.guard(async { demo_app::install(&client, args.scale).await }),
    );
    if let Ok(replica) = &replica {
        stack.replica = Some(replica.clone());
    }
    let (replica, app) = (replica?, app.context("loading the sample application")?);
    eprintln!("Waiting for the replica to replay it...");
    interrupt.guard(wait_caught_up(&admin, &replica)).await?;
    Ok((client, app, format!("PostgreSQL {version}")))
}

async fn connect(url: &str) -> Result<Client> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Waits until the replica has replayed everything the primary has written so far.
async fn wait_caught_up(primary: &Client, replica: &Cluster) -> Result<()> {
    let lsn: String = primary.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    let replica_client = connect(&replica.admin_url()).await?;
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    loop {
        let row =
            replica_client.query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn]).await?;
        if row.get::<_, Option<bool>>(0) == Some(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the replica did not replay up to {lsn} within {CATCH_UP_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts pgpilot in this process; returns why the result cache is not configured, if it is not.
async fn start_gateway(args: &DemoArgs, stack: &mut Stack) -> Result<Option<String>> {
    eprintln!("Starting pgpilot in front of them...");
    // Port 0: the gateway binds free ports itself, so no other process can take them between
    // picking and binding.
    let mut plan = GatewayPlan {
        listen_port: 0,
        http_port: 0,
        primary_url: stack.primary()?.url("postgres", DATABASE),
        replica_url: stack.replica()?.url("postgres", DATABASE),
        redis_url: stack.redis.as_ref().map(|r| r.url()),
        pool_size: args.pool_size,
    };
    let setup = gateway_config::build(&plan)?;
    stack.gateway = Some(Gateway::start(setup.config, QuickStart::default()).await?);
    // The file names the ports the gateway got, so that `pgpilot serve -c` it runs the same one.
    let (listen, http) = stack.gateway_addrs()?;
    (plan.listen_port, plan.http_port) = (listen.port(), http.port());
    let text = gateway_config::build(&plan)?.text;
    let workdir = tempfile::Builder::new()
        .prefix("pgpilot-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    gateway_config::write(workdir.path(), &text)?;
    stack.workdir = Some(workdir);
    Ok(setup.cache_refused)
}

/// One query through pgpilot before the clock starts, so a broken setup fails with a clear error.
async fn check_gateway(stack: &Stack) -> Result<()> {
    let url = stack.describe().pgpilot.map(|g| g.url).ok_or_else(|| anyhow!("pgpilot is not running"))?;
    let client = connect(&url).await.context("connecting through pgpilot")?;
    client
        .query_one("SELECT count(*) FROM public.pgpilot_demo", &[])
        .await
        .context("querying the sample application through pgpilot")?;
    Ok(())
}

/// Where a server runs: its directory and process id are what the teardown removes and stops.
fn announce(role: &str, server: Option<&ServerInfo>) {
    if let Some(s) = server {
        let pid = s.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        eprintln!("  {role:<8} {:<40} pid {pid:<8} dir {}", s.url, s.dir.display());
    }
}

fn announce_gateway(stack: &Stack) {
    if let Some(gw) = &stack.describe().pgpilot {
        let config = gw.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        eprintln!("  {:<8} {:<40} dashboard {}  config {config}", "pgpilot", gw.url, gw.dashboard);
    }
}

#[cfg(test)]
mod tests {
    use super::and_list;

    #[test]
    fn parts_are_listed_as_a_sentence_says_them() {
        assert_eq!(and_list(&["PostgreSQL"]), "PostgreSQL");
        assert_eq!(and_list(&["pgpilot", "PostgreSQL"]), "pgpilot and PostgreSQL");
        assert_eq!(and_list(&["pgpilot", "PostgreSQL", "Redis"]), "pgpilot, PostgreSQL and Redis");
    }
}
