//! The process signals pgpilot answers, with PgBouncer's meanings: runbooks written for PgBouncer
//! (`kill -USR1` before maintenance, `kill -QUIT` to stop at once) must not kill pgpilot by the
//! signals' default action.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalRequest {
    /// SIGHUP: re-read the configuration.
    Reload,
    /// SIGUSR1: PAUSE every database, as the console's PAUSE.
    Pause,
    /// SIGUSR2: RESUME every database.
    Resume,
    /// SIGTERM, SIGINT: stop accepting, let running transactions finish (up to shutdown_timeout).
    Drain(&'static str),
    /// SIGQUIT, or a second SIGTERM/SIGINT while draining: close every connection now.
    Immediate(&'static str),
}

pub struct ProcessSignals {
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
    term: Signal,
    int: Signal,
    quit: Signal,
}

impl ProcessSignals {
    /// Installs the handlers; from then on none of these signals ends the process by itself.
    pub fn install() -> std::io::Result<ProcessSignals> {
        Ok(ProcessSignals {
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next signal's request. Once draining, a stop signal asks for an immediate stop.
    pub async fn next(&mut self, draining: bool) -> SignalRequest {
        let stop = |name| if draining { SignalRequest::Immediate(name) } else { SignalRequest::Drain(name) };
        tokio::select! {
            _ = self.hup.recv() => SignalRequest::Reload,
            _ = self.usr1.recv() => SignalRequest::Pause,
            _ = self.usr2.recv() => SignalRequest::Resume,
            _ = self.term.recv() => stop("SIGTERM"),
            _ = self.int.recv() => stop("SIGINT"),
            _ = self.quit.recv() => SignalRequest::Immediate("SIGQUIT"),
        }
    }
}
