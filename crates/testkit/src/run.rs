use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// True when this process is root, in which case servers run as the user `postgres`.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the unprivileged `postgres` user when we are root.
pub fn as_server_user(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.arg("-u").arg("postgres").arg("--").arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Runs a command and panics with its output when it fails.
pub fn run_checked(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: could not start {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Gives a directory tree to the server user (when root) so PostgreSQL can own its data directory.
pub fn give_to_server_user(path: &Path) {
    if is_root() {
        run_checked(
            {
                let mut c = Command::new("chown");
                c.arg("-R").arg("postgres:").arg(path);
                c
            },
            "chown to postgres",
        );
    }
}
