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

#[derive(Args)]
pub struct ManArgs {
    /// Write one file per page into this directory (pgpilot.1, pgpilot-serve.1, ...), ready for
    /// /usr/share/man/man1, instead of all pages to stdout.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

pub fn man(args: ManArgs) -> Outcome {
    let top = Cli::command();
    let version: &'static str = Box::leak(top.get_version().unwrap_or_default().to_string().into_boxed_str());
    let mut pages = vec![("pgpilot".to_string(), render(Cli::command())?)];
    for sub in top.get_subcommands() {
        let name: &'static str = Box::leak(format!("pgpilot-{}", sub.get_name()).into_boxed_str());
        // Each page's footer names the version, as the main page's does.
        pages.push((name.to_string(), render(sub.clone().name(name).version(version))?));
    }
    match args.dir {
        None => print_all(&pages.into_iter().flat_map(|(_, page)| page).collect::<Vec<u8>>()),
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (name, page) in &pages {
                let path = dir.join(format!("{name}.1"));
                std::fs::write(&path, page).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
            Ok(OK)
        }
    }
}

fn render(command: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command).render(&mut out)?;
    Ok(out)
}
