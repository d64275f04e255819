//! Shell completions and the man page, generated from the command-line definition itself.

use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;

use crate::exit::{Outcome, OK};
use crate::Cli;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: ShellArg,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

pub fn completions(args: CompletionsArgs) -> Outcome {
    let shell = match args.shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
        ShellArg::Elvish => Shell::Elvish,
        ShellArg::Powershell => Shell::PowerShell,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "pgpilot", &mut out);
    print_all(&out)
}

/// Writes to stdout; a reader that stops early (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> Outcome {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(OK),
    }
}

pub fn man() -> Outcome {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    let top = Cli::command();
    let version: &'static str = Box::leak(top.get_version().unwrap_or_default().to_string().into_boxed_str());
    for sub in top.get_subcommands() {
        let name: &'static str = Box::leak(format!("pgpilot-{}", sub.get_name()).into_boxed_str());
        // Each page's footer names the version, as the main page's does.
        let page = sub.clone().name(name).version(version);
        clap_mangen::Man::new(page).render(&mut out)?;
    }
    print_all(&out)
}
