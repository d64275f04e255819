//! `pgpilot cache install-triggers | uninstall-triggers`: the statement-level triggers that let
//! the result cache see writes that do not pass through pgpilot (see docs/cache.md).

use anyhow::Context;
use clap::{Args, Subcommand};
use pgpilot_advisor::connect;

use crate::exit::{Outcome, OK};

#[derive(Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Install the triggers (a `pgpilot` schema, one statement-level trigger per table, NOTIFY).
    InstallTriggers(TargetArgs),
    /// Remove what install-triggers made.
    UninstallTriggers(TargetArgs),
}

#[derive(Args)]
pub struct TargetArgs {
    /// The [databases.NAME] entry of --config whose primary gets the triggers.
    #[arg(long, required_unless_present = "url")]
    pub database: Option<String>,
    /// pgpilot's TOML configuration.
    #[arg(long, short = 'c', default_value = "pgpilot.toml")]
    pub config: std::path::PathBuf,
    /// Or the database's URL: postgres://user@host:port/db (password from PGPASSWORD or ~/.pgpass).
    #[arg(long, conflicts_with = "database")]
    pub url: Option<String>,
}

pub fn run(args: CacheArgs) -> Outcome {
    let (target, sql, done) = match &args.command {
        CacheCommand::InstallTriggers(t) => (t, pgpilot_gateway::cache::triggers::INSTALL_SQL, "installed"),
        CacheCommand::UninstallTriggers(t) => (t, pgpilot_gateway::cache::triggers::UNINSTALL_SQL, "removed"),
    };
    let url = match (&target.url, &target.database) {
        (Some(url), _) => url.clone(),
        (None, Some(name)) => connect::database_url_from_config(&target.config, name)?,
        (None, None) => anyhow::bail!("say which database: --database NAME (with --config) or --url"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = connect::Target::parse(&url)?.connect().await?;
        // The configured primary may be a standby since a failover (serving follows the real one).
        let standby: bool = client.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
        if standby {
            anyhow::bail!(
                "the server at {} is a standby (promoted replica elsewhere after a failover?): \
                 triggers go on the primary; give its URL with --url",
                connect::redact(&url)
            );
        }
        client.batch_execute(sql).await.context("running the trigger SQL")?;
        anyhow::Ok(())
    })?;
    println!("pgpilot cache triggers {done}");
    Ok(OK)
}
