//! Starting, reloading and stopping the gateway.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::config::{Config, QuickStart};
use crate::net::listener;
use crate::process_signals::{ProcessSignals, SignalRequest};
use crate::shared::{Phase, Shared};

/// A running gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    http_addr: Option<SocketAddr>,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    unix_socket: Option<std::path::PathBuf>,
}

impl Gateway {
    /// Binds every listener and starts serving. Port 0 picks a free port (see [`Gateway::addrs`]).
    pub async fn start(config: Config, overrides: QuickStart) -> anyhow::Result<Gateway> {
        let mut config = config;
        overrides.apply(&mut config).map_err(anyhow::Error::msg)?;
        let problems = config.validate();
        if !problems.is_empty() {
            anyhow::bail!("invalid configuration:\n  {}", problems.join("\n  "));
        }
        for note in config.notes() {
            tracing::warn!("{note}");
        }
        if let Some(users) = config.pgpilot.auth_file.as_ref().and_then(|f| std::fs::read(f).ok()) {
            pgpilot_wire::auth::scram::keep_mock_salts_from(&users);
        }
        let shared = Shared::new(config.clone(), overrides).map_err(anyhow::Error::msg)?;
        let mut gw = Gateway {
            shared: shared.clone(),
            addrs: Vec::new(),
            http_addr: None,
            listeners: Vec::new(),
            background: Vec::new(),
            unix_socket: None,
        };
        if let Err(e) = gw.open(&config).await {
            gw.abandon();
            return Err(e);
        }
        let http = gw.http_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
        tracing::info!(listen = ?gw.addrs, http = %http, databases = config.databases.len(), "pgpilot is ready");
        Ok(gw)
    }

    /// Binds every listener, then starts serving and the background tasks: a failure to bind one
    /// leaves none of the others listening.
    async fn open(&mut self, config: &Config) -> anyhow::Result<()> {
        let mut tcp = Vec::new();
        for addr in config.pgpilot.listen.iter() {
            let l = listener::bind_tcp(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            self.addrs.push(l.local_addr()?);
            tcp.push(l);
        }
        let port = self.addrs.first().map(|a| a.port()).unwrap_or(6432);
        let unix = match &config.pgpilot.unix_socket_dir {
            Some(dir) => {
                let mode = config
                    .pgpilot
                    .unix_socket_permissions()
                    .map_err(|e| anyhow::anyhow!("unix_socket_mode: {e}"))?;
                let (l, path) = listener::bind_unix(dir, port, mode)
                    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", dir.display()))?;
                self.unix_socket = Some(path);
                Some(l)
            }
            None => None,
        };
        let http = match &config.pgpilot.http {
            Some(http) => {
                let l = crate::http::bind(http)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {http}: {e}"))?;
                self.http_addr = Some(l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        self.shared.listen_port.store(port, std::sync::atomic::Ordering::Relaxed);
        for l in tcp {
            self.listeners.push(tokio::spawn(listener::accept_tcp(self.shared.clone(), l)));
        }
        if let Some(l) = unix {
            self.listeners.push(tokio::spawn(listener::accept_unix(self.shared.clone(), l)));
        }
        if let Some(l) = http {
            self.background.push(tokio::spawn(crate::http::serve(self.shared.clone(), l)));
        }
        self.shared.jobs.store(crate::jobs::start(&self.shared, &config.jobs).map(Arc::new));
        self.background.push(tokio::spawn(janitor(self.shared.clone())));
        self.background.push(tokio::spawn(crate::routing::monitor::run(self.shared.clone())));
        self.background.push(tokio::spawn(crate::cache::channel::run(self.shared.clone())));
        self.background.push(tokio::spawn(crate::cache::redis_link::run(self.shared.clone())));
        Ok(())
    }

    /// What a failed `open` leaves: the socket file it made (its listeners are closed by now).
    fn abandon(&self) {
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the config file (when there is one) and applies it without dropping clients.
    pub fn reload(&self) -> Result<(), String> {
        reload(&self.shared)
    }

    /// The maintenance scheduler, when `[[jobs]]` are configured.
    pub fn jobs(&self) -> Option<Arc<pgpilot_scheduler::SchedulerHandle>> {
        self.shared.jobs.load_full()
    }

    /// Runs until SIGTERM/SIGINT/SIGQUIT or the admin SHUTDOWN command, reloading on SIGHUP or
    /// RELOAD, pausing on SIGUSR1 and resuming on SIGUSR2 (PgBouncer's signals).
    pub async fn run_until_stopped(self) {
        let mut signals = ProcessSignals::install().expect("installing signal handlers");
        // Listening by now: a systemd unit of Type=notify (PgBouncer's) counts pgpilot as started.
        tell_service_manager(&[sd_notify::NotifyState::Ready]);
        let stop = loop {
            tokio::select! {
                request = signals.next(false) => match request {
                    SignalRequest::Reload => self.log_reload("SIGHUP"),
                    SignalRequest::Pause => self.pause_by_signal(true),
                    SignalRequest::Resume => self.pause_by_signal(false),
                    stop => break stop,
                },
                _ = self.shared.shutdown_requested.notified() => break SignalRequest::Drain("SHUTDOWN"),
            }
        };
        tell_service_manager(&[sd_notify::NotifyState::Stopping]);
        let hurry = Arc::new(AtomicBool::new(false));
        match stop {
            SignalRequest::Immediate(trigger) => hurry_now(&hurry, trigger),
            SignalRequest::Drain(trigger) => tracing::info!(trigger, "shutdown requested"),
            _ => {}
        }
        tokio::spawn(hurry_on_a_second_signal(signals, hurry.clone()));
        self.shutdown_with(hurry).await;
    }

    /// SIGUSR1/SIGUSR2: the console's global PAUSE/RESUME, run aside because PAUSE waits for
    /// every server to come back.
    fn pause_by_signal(&self, on: bool) {
        let (signal, command) = if on { ("SIGUSR1", "PAUSE") } else { ("SIGUSR2", "RESUME") };
        tracing::info!(signal, "{command} requested by signal");
        let shared = self.shared.clone();
        tokio::spawn(async move {
            match crate::admin::commands::pause(&shared, None, on).await {
                Ok(()) => tracing::info!(signal, "{command} done"),
                Err(e) => tracing::warn!(signal, error = %e.message, "{command} refused"),
            }
        });
    }

    fn log_reload(&self, why: &str) {
        let _ = reload_and_log(&self.shared, why);
    }

    /// Stops accepting clients, lets running transactions finish (up to shutdown_timeout), then closes everything.
    pub async fn shutdown(self) {
        self.shutdown_with(Arc::new(AtomicBool::new(false))).await
    }

    /// [`Gateway::shutdown`], cut short to an immediate one as soon as `hurry` is set.
    async fn shutdown_with(self, hurry: Arc<AtomicBool>) {
        let hurried = || hurry.load(Ordering::Relaxed);
        let shared = &self.shared;
        shared.phase.send_replace(Phase::Draining);
        self.listeners.iter().for_each(|l| l.abort());
        let timeout = shared.config.load().pgpilot.shutdown_timeout.get();
        // No job starts from now on; running ones finish while clients drain.
        let jobs = {
            let shared = shared.clone();
            let grace = if hurried() { IMMEDIATE_GRACE } else { timeout };
            tokio::spawn(async move { crate::jobs::shutdown(&shared, grace).await })
        };
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!(
            clients = shared.registry.count(),
            ?timeout,
            "shutting down: waiting for running transactions"
        );
        let deadline = Instant::now() + timeout;
        while shared.registry.count() > 0 && Instant::now() < deadline && !hurried() {
            for c in shared.registry.all() {
                c.request_close(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for c in shared.registry.all() {
            c.request_close(true);
        }
        let grace = Instant::now() + Duration::from_secs(1);
        while shared.registry.count() > 0 && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A job cancelled by an immediate stop records its failure within the grace; past it, the
        // history row is left to the next instance's start.
        let _ = tokio::time::timeout(if hurried() { IMMEDIATE_GRACE } else { Duration::MAX }, jobs).await;
        // Before the link stops: the other instances must not take this one for cut off.
        shared.cache.redis.say_goodbye().await;
        shared.phase.send_replace(Phase::Stopped);
        for db in shared.databases.load().values() {
            db.retire();
        }
        self.background.iter().for_each(|t| t.abort());
        tracing::info!("pgpilot stopped");
    }
}

/// How long an immediate shutdown gives running jobs to record their cancellation.
const IMMEDIATE_GRACE: Duration = Duration::from_secs(1);

/// While draining, a second SIGTERM/SIGINT or a SIGQUIT turns the drain into an immediate stop
/// (PgBouncer 1.23's escalation); SIGHUP and PAUSE/RESUME are moot then, logged and ignored.
async fn hurry_on_a_second_signal(mut signals: ProcessSignals, hurry: Arc<AtomicBool>) {
    loop {
        match signals.next(true).await {
            SignalRequest::Immediate(trigger) => hurry_now(&hurry, trigger),
            other => tracing::info!(signal = ?other, "ignored while shutting down"),
        }
    }
}

fn hurry_now(hurry: &AtomicBool, trigger: &str) {
    tracing::warn!(trigger, "immediate shutdown: closing every connection now");
    hurry.store(true, Ordering::Relaxed);
}

/// Tells systemd (when it started pgpilot with NOTIFY_SOCKET) what pgpilot is doing; a no-op
/// otherwise.
fn tell_service_manager(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "could not notify the service manager (NOTIFY_SOCKET)");
    }
}

/// A reload from a signal or the console: the service manager is told, the outcome logged.
pub(crate) fn reload_and_log(shared: &Arc<Shared>, trigger: &str) -> Result<(), String> {
    tell_service_manager(&[sd_notify::NotifyState::Reloading]);
    let result = reload(shared);
    tell_service_manager(&[sd_notify::NotifyState::Ready]);
    match &result {
        Ok(()) => tracing::info!(trigger, "configuration reloaded"),
        Err(e) => {
            tracing::error!(trigger, error = %e, "configuration reload failed; keeping the running configuration")
        }
    }
    result
}

fn reload(shared: &Arc<Shared>) -> Result<(), String> {
    let current = shared.config.load_full();
    let mut next = match &current.source {
        Some(path) => crate::config::pgbouncer_ini::load(path)?,
        None => (*current).clone(),
    };
    shared.overrides.apply(&mut next)?;
    keep_restart_only_settings(&current.pgpilot, &mut next.pgpilot);
    let previous_jobs = current.jobs.clone();
    shared.apply(next)?;
    crate::jobs::reload(shared, &previous_jobs);
    Ok(())
}

/// Settings a reload cannot change (sockets bound, threads started) stay at their running values,
/// so that SHOW CONFIG and the next reload compare with what runs; a file that changes them is
/// said once, by name.
fn keep_restart_only_settings(running: &crate::config::General, next: &mut crate::config::General) {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident),*) => {$(
            if next.$field != running.$field {
                next.$field = running.$field.clone();
                kept.push(stringify!($field));
            }
        )*};
    }
    keep!(listen, http, unix_socket_dir, unix_socket_mode, workers);
    if !kept.is_empty() {
        tracing::warn!(settings = %kept.join(", "), "these settings change only on restart; the running values are kept");
    }
}

/// Once a second: close expired idle servers, keep min_pool_size warm, roll the stats window.
async fn janitor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
        shared.forget_unused_fallback_databases();
        for db in shared.databases.load().values() {
            db.drop_failed_pool_sets();
            // PAUSE closed the servers; min_pool_size opens them again on RESUME.
            let paused = *shared.paused.borrow() || *db.paused.borrow();
            for set in db.pool_sets() {
                for pool in set.all() {
                    pool.take_expired().into_iter().for_each(|c| c.terminate());
                    if paused {
                        continue;
                    }
                    for _ in 0..pool.reserve_for_minimum() {
                        let pool = pool.clone();
                        tokio::spawn(async move { pool.open_idle().await });
                    }
                }
            }
        }
        if ticks.is_multiple_of(15) {
            let totals = crate::admin::show::database_totals(&shared);
            shared.stats_window.lock().roll(totals);
        }
    }
}
