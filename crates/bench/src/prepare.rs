//! Before the clock starts: turn the workload into compiled scripts, then check each target is
//! reachable, initialise it if asked, and read the values of predefined variables (`:scale`, the
//! demo application's key ranges).

use std::collections::HashSet;

use anyhow::{anyhow, bail, Context, Result};
use tokio_postgres::{Client, NoTls};

use crate::config::{BenchConfig, Workload};
use crate::demo_app::{self, KeyRanges, Mix};
use crate::observe::Observer;
use crate::pgbench_init;
use crate::script::{self, Script, Value, VarTable};
use crate::target::Target;

/// The compiled workload, shared by all targets.
pub(crate) struct Plan {
    pub scripts: Vec<Script>,
    pub cumulative_weights: Vec<u64>,
    pub vars: VarTable,
    pub uses_pgbench_tables: bool,
    pub uses_demo: bool,
    pub defines: Vec<(usize, Value)>,
}

/// Scripts are drawn in hundredths of a `-b`/`-f` weight. A demo mix's scripts carry percents
/// (summing to 100), so a mix of weight W gives each script W times its percent and weighs W as a
/// whole, as a single script of weight W does: `-b write-heavy@1 -b select-only@1` is half and half.
pub(crate) const WEIGHT_UNITS: u64 = 100;

const SCALE: &str = "scale";
pub(crate) const CLIENT_ID: &str = "client_id";
const RANDOM_SEED: &str = "random_seed";
const DEFAULT_SEED: &str = "default_seed";

impl Plan {
    pub fn build(config: &BenchConfig) -> Result<Plan> {
        let mut sources: Vec<(String, u64, String)> = Vec::new();
        let (mut uses_pgbench_tables, mut uses_demo) = (false, false);
        for w in &config.workload {
            match w {
                Workload::Scenario { name, weight } => {
                    if let Some(mix) = Mix::from_name(name) {
                        uses_demo = true;
                        for (s, percent) in mix.scripts() {
                            sources.push((
                                format!("{}/{}", mix.name(), s.name),
                                u64::from(*weight) * u64::from(percent),
                                s.text.to_string(),
                            ));
                        }
                    } else if let Some((full, text)) = script::builtin(name) {
                        uses_pgbench_tables = true;
                        sources.push((full.to_string(), units(*weight), text.to_string()));
                    } else {
                        bail!(
                            "unknown scenario `{name}` (built-in: {}, read-heavy, write-heavy)",
                            script::BUILTIN_NAMES.join(", ")
                        );
                    }
                }
                Workload::File { path, weight } => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading script {}", path.display()))?;
                    sources.push((path.display().to_string(), units(*weight), text));
                }
                Workload::Inline { name, text, weight } => {
                    sources.push((name.clone(), units(*weight), text.clone()))
                }
            }
        }
        if sources.is_empty() {
            bail!("no workload: give a scenario or a script file");
        }
        let mut vars = VarTable::default();
        for name in [SCALE, CLIENT_ID, RANDOM_SEED, DEFAULT_SEED] {
            vars.intern(name);
        }
        if uses_demo {
            for name in KeyRanges::VARIABLES {
                vars.intern(name);
            }
        }
        let mut defines = Vec::new();
        for (name, value) in &config.defines {
            defines.push((vars.intern(name), Value::from_text(value)));
        }
        let scripts =
            script::compile(&sources, &mut vars).map_err(|(name, e)| anyhow!("script {name}: {e}"))?;
        let mut total = 0u64;
        let cumulative_weights = scripts
            .iter()
            .map(|s| {
                total += s.weight;
                total
            })
            .collect();
        Ok(Plan { scripts, cumulative_weights, vars, uses_pgbench_tables, uses_demo, defines })
    }

    /// Each script's name and weight in the user's terms (a mix's scripts get fractions of its weight).
    pub fn script_labels(&self) -> Vec<(String, f64)> {
        self.scripts.iter().map(|s| (s.name.clone(), s.weight as f64 / WEIGHT_UNITS as f64)).collect()
    }

    pub fn client_id_slot(&self) -> Option<usize> {
        self.vars.get(CLIENT_ID)
    }
}

fn units(weight: u32) -> u64 {
    u64::from(weight) * WEIGHT_UNITS
}

/// A target ready to be measured, with its predefined variable values.
pub(crate) struct TargetSetup {
    pub target: Target,
    pub initial: Vec<Option<Value>>,
}

/// Connects with tokio-postgres for setup queries, within the target's connect timeout.
pub async fn setup_client(target: &Target) -> Result<Client> {
    // tokio-postgres bounds only the TCP connect by connect_timeout: a server that accepts and
    // never answers the startup message would hold it forever. libpq bounds the whole login.
    let limit = target.connect_timeout();
    let login = tokio::time::timeout(limit, target.config().connect(NoTls)).await.map_err(|_| {
        anyhow!(
            "target `{}` ({}) did not answer: timeout expired after {} s (connect_timeout; it accepted \
             the connection but sent nothing)",
            target.name,
            target.display_url(),
            limit.as_secs_f64()
        )
    })?;
    let (client, connection) = login.map_err(|e| {
        // A server that answered (a wrong password, an unknown database) is not "unreachable", and
        // neither is one that asked for a password none was given for.
        let said = with_causes(&e);
        let password_missing = said.contains("password missing");
        let what = match (e.as_db_error(), password_missing) {
            (Some(_), _) => "refused the connection",
            (None, true) => "asked for a password",
            (None, false) => "is unreachable",
        };
        let hint = match (password_missing, target.config().get_password()) {
            (true, None) => {
                " (set PGPASSWORD or use a pgpass file: passwords are not taken on the command line)"
            }
            _ => "",
        };
        anyhow!("target `{}` ({}) {what}: {said}{hint}", target.name, target.display_url())
    })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// tokio-postgres puts the useful part (refused, FATAL: ...) in the error's sources.
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub(crate) async fn setup_target(
    config: &BenchConfig,
    plan: &Plan,
    target: &Target,
    seed: u64,
    initialised: &mut HashSet<String>,
    observer: &dyn Observer,
) -> Result<TargetSetup> {
    let client = setup_client(target).await?;
    // The first queries may fail where the login did not (a pooler takes the login and then finds
    // no server): the error names the target, as the login's does.
    let named = || format!("target `{}` ({})", target.name, target.display_url());
    if config.init {
        initialise(config, plan, target, &client, initialised, observer).await.with_context(named)?;
    }
    let mut initial = vec![None; plan.vars.len()];
    let mut set = |name: &str, v: Value| {
        if let Some(slot) = plan.vars.get(name) {
            initial[slot] = Some(v);
        }
    };
    set(SCALE, scale_value(config, plan, target, &client, observer).await.with_context(named)?);
    set(RANDOM_SEED, Value::Int(seed as i64));
    set(DEFAULT_SEED, Value::Int(seed.rotate_left(17) as i64));
    if plan.uses_demo {
        let ranges = KeyRanges::load(&client).await.with_context(|| format!("target `{}`", target.name))?;
        for (name, v) in ranges.variables() {
            set(name, Value::Int(v));
        }
    }
    for (slot, v) in &plan.defines {
        initial[*slot] = Some(v.clone());
    }
    Ok(TargetSetup { target: target.clone(), initial })
}

async fn scale_value(
    config: &BenchConfig,
    plan: &Plan,
    target: &Target,
    client: &Client,
    observer: &dyn Observer,
) -> Result<Value> {
    if !plan.uses_pgbench_tables {
        return Ok(match config.scale {
            Some(s) if s.fract() == 0.0 => Value::Int(s as i64),
            Some(s) => Value::Double(s),
            None => Value::Int(1),
        });
    }
    // Like pgbench, the built-in scripts use the scale the tables were created with.
    let detected = pgbench_init::detect_scale(client)
        .await?
        .ok_or_else(|| anyhow!("no pgbench tables: run with --init --scale N (or pgbench -i)"))?;
    if let Some(s) = config.scale {
        if !config.init && s != detected as f64 {
            observer.note(&format!(
                "{}: scale option ignored, using the scale of the existing pgbench tables ({detected})",
                target.name
            ));
        }
    }
    Ok(Value::Int(detected))
}

/// Initialises a database once even when several targets lead to it (a pooler in front of a
/// server), and never on a standby.
async fn initialise(
    config: &BenchConfig,
    plan: &Plan,
    target: &Target,
    client: &Client,
    initialised: &mut HashSet<String>,
    observer: &dyn Observer,
) -> Result<()> {
    let row = client
        .query_one(
            "SELECT pg_postmaster_start_time()::text || '/' || coalesce(inet_server_port(), 0) || '/' \
             || current_database(), pg_is_in_recovery()",
            &[],
        )
        .await?;
    let (identity, standby): (String, bool) = (row.get(0), row.get(1));
    if standby {
        observer.note(&format!("{}: a standby, not initialised (it replicates its primary)", target.name));
        return Ok(());
    }
    if !initialised.insert(identity) {
        observer.note(&format!("{}: same database as a target already initialised", target.name));
        return Ok(());
    }
    let started = std::time::Instant::now();
    if plan.uses_demo {
        let scale = config.scale.unwrap_or(1.0);
        observer.note(&format!("{}: installing the demo application at scale {scale}...", target.name));
        demo_app::install(client, scale).await?;
    }
    if config.initialises_pgbench_tables() {
        // BenchConfig::validate has refused a fractional scale.
        let scale = config.scale.unwrap_or(1.0);
        observer.note(&format!("{}: creating pgbench tables at scale {scale}...", target.name));
        pgbench_init::init(client, scale as i64).await?;
    }
    observer.note(&format!("{}: initialised in {:.1} s", target.name, started.elapsed().as_secs_f64()));
    Ok(())
}
