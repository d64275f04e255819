//! `pgpilot convert pgbouncer.ini`: the equivalent pgpilot.toml, with what changed meaning or is
//! not honoured said in comments and on stderr.

use std::path::PathBuf;

use clap::Args;
use pgpilot_gateway::config::pgbouncer_ini::{convert_file, to_commented_toml};

use crate::exit::{Outcome, FINDINGS, OK};

#[derive(Args)]
pub struct ConvertArgs {
    /// The pgbouncer.ini to read (%include directives are followed).
    pub file: PathBuf,
    /// Write the result here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(args: ConvertArgs) -> Outcome {
    let conversion = convert_file(&args.file).map_err(anyhow::Error::msg)?;
    for note in conversion.not_honoured().chain(conversion.changed()) {
        eprintln!("{note}");
    }
    for w in &conversion.warnings {
        eprintln!("warning: {w}");
    }
    let toml = to_commented_toml(&conversion);
    match &args.output {
        Some(path) => {
            write_private(path, &toml).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?
        }
        None => print!("{toml}"),
    }
    // Settings whose loss would let in clients PgBouncer refuses: make scripts notice.
    let weakening = conversion.weakening().count();
    if weakening > 0 {
        eprintln!(
            "{weakening} setting(s) above would admit clients PgBouncer refuses: review before deploying"
        );
        return Ok(FINDINGS);
    }
    Ok(OK)
}

/// Writes the converted config readable by its owner only: it may carry the server passwords of
/// the pgbouncer.ini's connection strings.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // An existing file keeps its mode through open: narrow it too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}
