use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// True when this process is root, in which case servers run as the user `postgres`.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the unprivileged `postgres` user when we are root, in a process group of
/// its own (see [`run_checked`]).
pub fn as_server_user(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.arg("-u").arg("postgres").arg("--").arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.process_group(0);
    cmd
}

/// Runs a command and panics with its output when it fails.
///
/// The command gets a process group of its own, so a Ctrl-C on the terminal interrupts only the
/// program using the kit (which then tears its servers down) and never kills pg_ctl half-way
/// through starting a server that would then be left running.
pub fn run_checked(cmd: Command, what: &str) -> Output {
    run_checked_telling(cmd, what, String::new)
}

/// Like [`run_checked`], with `more` (what else explains a failure, read only then) at the end of
/// the panic message.
pub fn run_checked_telling(cmd: Command, what: &str, more: impl FnOnce() -> String) -> Output {
    run_telling(cmd, what, more).unwrap_or_else(|message| panic!("{message}"))
}

/// Like [`run_checked_telling`], returning the message instead of panicking with it.
pub fn run_telling(mut cmd: Command, what: &str, more: impl FnOnce() -> String) -> Result<Output, String> {
    cmd.process_group(0);
    let out = cmd.output().map_err(|e| format!("{what}: could not start {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            more()
        ));
    }
    Ok(out)
}

/// The value of a file-system step, or a panic naming the step and the OS error in words (an
/// `expect` would print the error's debug form, which programs reporting the panic then show).
pub fn or_panic<T>(result: std::io::Result<T>, what: impl std::fmt::Display) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
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

/// Waits up to `limit` for `child` to exit: its status, or None while it still runs.
pub fn exited_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("waiting for a child process") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
