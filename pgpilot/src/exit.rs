//! Exit codes shared by every command, so scripts can rely on them.

use std::process::ExitCode;

/// Everything went as asked.
pub const OK: u8 = 0;
/// The command failed: a connection, a server or the input was wrong.
pub const FAILURE: u8 = 1;
/// Bad command-line usage (clap uses the same code).
#[allow(dead_code)]
pub const USAGE: u8 = 2;
/// A report found what `--fail-on` asked to fail on.
#[allow(dead_code)]
pub const FINDINGS: u8 = 3;

/// Stopped by Ctrl-C (SIGINT) before it finished, as shells report it (128 + 2).
pub const INTERRUPTED: u8 = 130;

/// What a command returns: an exit code on success, an error otherwise.
pub type Outcome = anyhow::Result<u8>;

pub fn report(result: Outcome) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pgpilot: {e:#}");
            ExitCode::from(FAILURE)
        }
    }
}
