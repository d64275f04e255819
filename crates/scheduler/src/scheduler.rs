//! The scheduler: one tokio task per job that sleeps until the next cron slot and runs it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::history;
use crate::metrics::{self, JobCounters, JobSample};
use crate::pg;
use crate::report::{JobStatus, Outcome, RunRecord, RunReport};
use crate::resolver::{database_key, DatabaseResolver, ResolveError};
use crate::runner::{self, RunRequest};
use crate::schedule::Schedule;
use crate::spec::JobSpec;

/// The longest a job loop sleeps before looking at the clock again (catches clock jumps).
const TICK: Duration = Duration::from_secs(1);
/// How long cancelled jobs get to stop and write their history before they are abandoned.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// The bound on one reading of the fleet's runs from a database.
const FLEET_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("there is no job named `{0}`")]
    UnknownJob(String),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{0}")]
    Database(String),
}

#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// How this instance names itself in the history table.
    pub instance: String,
    /// How long `shutdown` waits for running jobs before cancelling them (`shutdown_within`
    /// takes its own).
    pub shutdown_grace: Duration,
    /// How often the jobs' figures the fleet shares (last success, default-partition rows, the
    /// earliest run) are read back from the history table, so that every instance's metrics
    /// agree whichever instance ran the job.
    pub fleet_refresh: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            instance: instance_name(),
            shutdown_grace: Duration::from_secs(30),
            fleet_refresh: Duration::from_secs(60),
        }
    }
}

/// `hostname:pid`, so the history says which instance ran what.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

#[derive(Default)]
struct JobState {
    running: bool,
    last: Option<RunReport>,
    counters: JobCounters,
    /// When this instance started scheduling the job, and the job as it was then.
    scheduled: Option<(JobSpec, DateTime<Utc>)>,
}

impl JobState {
    /// When this instance has scheduled `spec` since: `now` for a new or changed job, the time
    /// it already had for a job a reload left as it was (the never-succeeded alert counts from it).
    fn scheduled_since(&mut self, spec: &JobSpec, now: DateTime<Utc>) -> DateTime<Utc> {
        match &self.scheduled {
            Some((scheduled, since)) if scheduled == spec => *since,
            _ => {
                self.scheduled = Some((spec.clone(), now));
                now
            }
        }
    }
}

/// This instance's runs of a job, by name. A scheduler that replaces another on reload adopts
/// the old one's records: a run the old scheduler is finishing stays visible as running, is
/// counted when it ends, and keeps the new scheduler from starting the job meanwhile. The record
/// of a job the reload removed is handed on while its run goes on (`Shared::removed`), so the
/// job put back by a later reload finds it; once that run has ended, it is dropped.
#[derive(Default)]
struct JobRecord {
    state: Mutex<JobState>,
    /// Held for the length of a run: a job never overlaps itself within an instance. Taken
    /// under the state's lock, together with setting `running`.
    gate: tokio::sync::Mutex<()>,
}

impl JobRecord {
    fn state(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct JobEntry {
    spec: JobSpec,
    schedule: Result<Schedule, String>,
    period: Duration,
    /// When this instance started scheduling the job as it is now (kept over reloads).
    scheduled_since: DateTime<Utc>,
    /// This scheduler's next slot; not shared with a replaced scheduler, whose loop may still
    /// be finishing a run.
    next_run: Mutex<Option<DateTime<Utc>>>,
    record: Arc<JobRecord>,
}

impl JobEntry {
    fn state(&self) -> MutexGuard<'_, JobState> {
        self.record.state()
    }

    fn next_run(&self) -> MutexGuard<'_, Option<DateTime<Utc>>> {
        self.next_run.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Shared {
    jobs: Vec<Arc<JobEntry>>,
    /// The records of jobs no longer configured whose run (in a replaced scheduler) was in
    /// progress when this scheduler started, by name: for the scheduler replacing this one.
    removed: HashMap<String, Arc<JobRecord>>,
    resolver: Arc<dyn DatabaseResolver>,
    clock: Arc<dyn Clock>,
    options: SchedulerOptions,
    /// Slots are counted from here.
    started: DateTime<Utc>,
    stop: watch::Sender<bool>,
    /// Set when the grace period is over: running jobs cancel their statements.
    cancel: watch::Sender<bool>,
}

impl Shared {
    fn job(&self, name: &str) -> Result<&Arc<JobEntry>, SchedulerError> {
        self.jobs.iter().find(|j| j.spec.name == name).ok_or_else(|| SchedulerError::UnknownJob(name.into()))
    }
}

pub struct Scheduler;

impl Scheduler {
    /// Starts one loop per enabled job. Must be called inside a tokio runtime.
    pub fn start(
        jobs: Vec<JobSpec>,
        resolver: Arc<dyn DatabaseResolver>,
        clock: Arc<dyn Clock>,
    ) -> SchedulerHandle {
        Scheduler::start_with(jobs, resolver, clock, SchedulerOptions::default())
    }

    pub fn start_with(
        jobs: Vec<JobSpec>,
        resolver: Arc<dyn DatabaseResolver>,
        clock: Arc<dyn Clock>,
        options: SchedulerOptions,
    ) -> SchedulerHandle {
        start_adopting(jobs, resolver, clock, options, HashMap::new())
    }

    /// Takes over from `previous` (a reload): it starts no more runs, its runs in progress go
    /// on, and the jobs of the same name here carry on its records (status, counters, the
    /// in-instance overlap guard), so those runs are shown and counted by this scheduler. A job
    /// `previous` had and this one has not keeps its record here while its run goes on, and so
    /// does one `previous` kept that way: a later reload that puts the job back finds its run.
    pub fn replace(
        previous: &SchedulerHandle,
        jobs: Vec<JobSpec>,
        resolver: Arc<dyn DatabaseResolver>,
        clock: Arc<dyn Clock>,
        options: SchedulerOptions,
    ) -> SchedulerHandle {
        previous.stop_scheduling();
        let mut records: HashMap<String, Arc<JobRecord>> = previous.shared.removed.clone();
        records.extend(previous.shared.jobs.iter().map(|j| (j.spec.name.clone(), j.record.clone())));
        start_adopting(jobs, resolver, clock, options, records)
    }
}

fn start_adopting(
    jobs: Vec<JobSpec>,
    resolver: Arc<dyn DatabaseResolver>,
    clock: Arc<dyn Clock>,
    options: SchedulerOptions,
    mut records: HashMap<String, Arc<JobRecord>>,
) -> SchedulerHandle {
    let started = clock.now();
    let jobs: Vec<Arc<JobEntry>> = jobs
        .into_iter()
        .map(|spec| {
            let schedule = Schedule::parse(&spec.schedule);
            let period = schedule.as_ref().map(|s| s.period(started)).unwrap_or_default();
            // Known before the job's loop first runs: status read right after start shows it.
            let next_run =
                schedule.as_ref().ok().filter(|_| spec.enabled).and_then(|s| s.next_after(started));
            let record = records.remove(&spec.name).unwrap_or_default();
            let scheduled_since = record.state().scheduled_since(&spec, started);
            Arc::new(JobEntry {
                spec,
                schedule,
                period,
                scheduled_since,
                next_run: Mutex::new(next_run),
                record,
            })
        })
        .collect();
    // A removed job's run in progress is still this instance's; an ended one is forgotten.
    records.retain(|_, record| record.state().running);
    let removed = records;
    let (stop, _) = watch::channel(false);
    let (cancel, _) = watch::channel(false);
    let shared = Arc::new(Shared { jobs, removed, resolver, clock, options, started, stop, cancel });
    let loops = shared
        .jobs
        .iter()
        .filter(|j| j.spec.enabled)
        .map(|job| tokio::spawn(job_loop(shared.clone(), job.clone(), shared.stop.subscribe())))
        .collect();
    // Not among the loops: a scheduler that has stopped scheduling is idle once its runs ended.
    tokio::spawn(refresh_fleet_views(shared.clone(), shared.stop.subscribe()));
    SchedulerHandle { shared, loops: Arc::new(Mutex::new(loops)) }
}

/// Control and visibility for the running scheduler; cheap to clone.
#[derive(Clone)]
pub struct SchedulerHandle {
    shared: Arc<Shared>,
    loops: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SchedulerHandle {
    pub fn status(&self) -> Vec<JobStatus> {
        self.shared.jobs.iter().map(|job| status_of(job)).collect()
    }

    /// Runs a job now (a manual run: not tied to a cron slot, still under the fleet-wide lock).
    pub async fn run_now(&self, name: &str) -> Result<RunReport, SchedulerError> {
        let job = self.shared.job(name)?.clone();
        Ok(run_entry(&self.shared, &job, None).await)
    }

    /// The latest runs from pgpilot.job_runs of every database the jobs work on, newest first.
    pub async fn history(&self, name: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, SchedulerError> {
        if let Some(name) = name {
            self.shared.job(name)?;
        }
        let specs: Vec<JobSpec> = self.shared.jobs.iter().map(|j| j.spec.clone()).collect();
        history_of(&specs, self.shared.resolver.as_ref(), name, limit).await
    }

    /// Like [`SchedulerHandle::history`], with the runs of the databases that could be read and
    /// the others named in `errors` instead of failing it all.
    pub async fn history_each(&self, name: Option<&str>, limit: usize) -> Result<History, SchedulerError> {
        if let Some(name) = name {
            self.shared.job(name)?;
        }
        let specs: Vec<JobSpec> = self.shared.jobs.iter().map(|j| j.spec.clone()).collect();
        Ok(history_each(&specs, self.shared.resolver.as_ref(), name, limit).await)
    }

    pub fn render_prometheus(&self, out: &mut String) {
        let states: Vec<(&JobEntry, bool, JobCounters)> = self
            .shared
            .jobs
            .iter()
            .map(|j| {
                let s = j.state();
                (j.as_ref(), s.running, s.counters.clone())
            })
            .collect();
        let samples: Vec<JobSample<'_>> = states
            .iter()
            .map(|(job, running, counters)| JobSample {
                name: &job.spec.name,
                enabled: job.spec.enabled,
                period_seconds: job.period.as_secs_f64(),
                // A job failing across restarts of every instance has been scheduled at least
                // since its first recorded run.
                scheduled_since: counters
                    .first_recorded_run
                    .map_or(job.scheduled_since, |first| first.min(job.scheduled_since)),
                running: *running,
                counters,
            })
            .collect();
        metrics::render(&samples, out);
    }

    /// Starts no more runs; runs in progress go on to their end, uncancelled. For a reload,
    /// `Scheduler::replace` calls it and the new scheduler keeps from running a job this one is
    /// still running (across instances, the advisory lock does). `shutdown_within` still bounds
    /// those runs if the process stops meanwhile.
    pub fn stop_scheduling(&self) {
        let _ = self.shared.stop.send(true);
    }

    /// True once every job loop has ended: after `stop_scheduling`, when the last run finished.
    pub fn is_idle(&self) -> bool {
        self.loops.lock().unwrap_or_else(|e| e.into_inner()).iter().all(JoinHandle::is_finished)
    }

    /// `shutdown_within` the grace period of the scheduler's options.
    pub async fn shutdown(&self) {
        self.shutdown_within(self.shared.options.shutdown_grace).await
    }

    /// Stops scheduling; waits for running jobs up to `grace`, then cancels their statements (a
    /// dropped connection would leave a long statement running on the server, holding its locks
    /// and the job's lock) and waits a little more for them to record it. The grace is an
    /// argument because the gateway's shutdown_timeout may have been reloaded since the start.
    pub async fn shutdown_within(&self, grace: Duration) {
        let _ = self.shared.stop.send(true);
        let loops = std::mem::take(&mut *self.loops.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = tokio::time::Instant::now() + grace;
        let mut running = Vec::new();
        for mut handle in loops {
            if tokio::time::timeout_at(deadline, &mut handle).await.is_err() {
                running.push(handle);
            }
        }
        if running.is_empty() {
            return;
        }
        tracing::warn!(
            jobs = running.len(),
            "jobs still running after the shutdown grace period: cancelling them"
        );
        let _ = self.shared.cancel.send(true);
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        for mut handle in running {
            if tokio::time::timeout_at(deadline, &mut handle).await.is_err() {
                handle.abort();
            }
        }
    }
}

fn status_of(job: &JobEntry) -> JobStatus {
    let state = job.state();
    let last = state.last.as_ref();
    JobStatus {
        name: job.spec.name.clone(),
        kind: job.spec.kind().to_string(),
        schedule: job.spec.schedule.clone(),
        enabled: job.spec.enabled,
        period_seconds: job.period.as_secs_f64(),
        next_run: *job.next_run(),
        running: state.running,
        last_start: last.map(|r| r.started_at),
        last_end: last.map(|r| r.finished_at),
        last_outcome: last.map(|r| r.outcome),
        last_rows: last.and_then(|r| r.rows),
        last_duration_seconds: last.map(|r| r.duration_seconds),
        last_error: match &job.schedule {
            Err(e) => Some(e.clone()),
            Ok(_) => last.and_then(|r| r.error.clone()),
        },
        last_success: state.counters.last_success,
    }
}

/// A report for a run that never reached the database.
fn not_run(spec: &JobSpec, now: DateTime<Utc>, outcome: Outcome, error: String) -> RunReport {
    RunReport {
        job: spec.name.clone(),
        kind: spec.kind().to_string(),
        outcome,
        scheduled_for: None,
        started_at: now,
        finished_at: now,
        duration_seconds: 0.0,
        attempts: 0,
        rows: None,
        notes: Vec::new(),
        error: Some(error),
        run_id: None,
        default_partition_rows: None,
        fleet_last_success: None,
        fleet_view: None,
    }
}

async fn run_entry(shared: &Shared, job: &JobEntry, scheduled_for: Option<DateTime<Utc>>) -> RunReport {
    // `running` is set with the gate taken, so a reload never sees a run started but not running.
    let gate = {
        let mut state = job.state();
        let gate = job.record.gate.try_lock();
        if gate.is_ok() {
            state.running = true;
        }
        gate
    };
    let Ok(_gate) = gate else {
        let report = not_run(
            &job.spec,
            shared.clock.now(),
            Outcome::Skipped,
            "it is already running on this instance".into(),
        );
        job.state().counters.record(&report);
        return report;
    };
    let report = match shared.resolver.resolve(&job.spec) {
        Ok(config) => {
            let req = RunRequest {
                spec: &job.spec,
                config: &config,
                connector: shared.resolver.as_ref(),
                clock: shared.clock.as_ref(),
                instance: &shared.options.instance,
                scheduled_for,
                cancel: Some(shared.cancel.subscribe()),
            };
            runner::run(&req).await
        }
        Err(e) => not_run(&job.spec, shared.clock.now(), Outcome::Failed, e.to_string()),
    };
    log_report(&report);
    let mut state = job.state();
    state.running = false;
    state.counters.record(&report);
    state.last = Some(report.clone());
    report
}

/// The end of a run. An absent value (no row count, no error) leaves its field out.
fn log_report(r: &RunReport) {
    let error = r.error.as_deref();
    match r.outcome {
        Outcome::Succeeded => {
            tracing::info!(job = %r.job, rows = r.rows, seconds = r.duration_seconds, "job succeeded")
        }
        Outcome::Skipped => tracing::debug!(job = %r.job, reason = error, "job skipped"),
        Outcome::Failed => {
            tracing::warn!(job = %r.job, rows = r.rows, error, attempts = r.attempts, "job failed")
        }
    }
}

async fn job_loop(shared: Arc<Shared>, job: Arc<JobEntry>, mut stop: watch::Receiver<bool>) {
    let Ok(schedule) = &job.schedule else {
        tracing::error!(job = %job.spec.name, "not scheduled: {}", job.schedule.as_ref().err().cloned().unwrap_or_default());
        return;
    };
    // Slots are counted from the scheduler's start, not from whenever this task got going.
    let mut after = shared.started;
    loop {
        let Some(next) = schedule.next_after(after) else { return };
        *job.next_run() = Some(next);
        if !wait_until(shared.clock.as_ref(), next, &mut stop).await {
            return;
        }
        run_entry(&shared, &job, Some(next)).await;
        // Slots missed while the run went on are not made up: the next one is after now.
        after = next.max(shared.clock.now());
    }
}

/// Sleeps until the clock reads `at`; false when told to stop first.
async fn wait_until(clock: &dyn Clock, at: DateTime<Utc>, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        let now = clock.now();
        if now >= at {
            return true;
        }
        let pause = (at - now).to_std().unwrap_or_default().min(TICK);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = stop.changed() => if changed.is_err() { return false },
        }
    }
}

/// Reads the fleet's figures of every job from the history tables, at the start and then every
/// `fleet_refresh`, until the scheduler stops scheduling: so the metrics and status say what the
/// fleet did before this instance runs a job, and agree across instances after any one ran it.
async fn refresh_fleet_views(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        read_fleet_views(&shared).await;
        tokio::select! {
            _ = tokio::time::sleep(shared.options.fleet_refresh) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

async fn read_fleet_views(shared: &Shared) {
    // A job whose database does not resolve (a reload removed it) keeps its figures.
    let specs: Vec<JobSpec> = shared
        .jobs
        .iter()
        .filter(|j| shared.resolver.resolve(&j.spec).is_ok())
        .map(|j| j.spec.clone())
        .collect();
    let by_database = jobs_by_database(&specs, shared.resolver.as_ref(), None, &mut Vec::new());
    for (key, (config, names)) in by_database {
        let read = async {
            let client =
                pg::connect_in_time(shared.resolver.as_ref(), &config).await.map_err(|e| e.to_string())?;
            history::fleet_view(&client, &names).await.map_err(|e| e.to_string())
        };
        let views = match tokio::time::timeout(FLEET_READ_TIMEOUT, read).await {
            Ok(Ok(views)) => views,
            Ok(Err(e)) => {
                tracing::debug!(database = %key, "reading the fleet's job runs: {e}");
                continue;
            }
            Err(_) => continue,
        };
        for view in views {
            if let Ok(job) = shared.job(&view.job) {
                job.state().counters.take_fleet_view(&view);
            }
        }
    }
}

/// Runs one job once, outside any scheduler (what `pgpilot jobs run` does).
pub async fn run_once(spec: &JobSpec, resolver: &dyn DatabaseResolver, clock: &dyn Clock) -> RunReport {
    match resolver.resolve(spec) {
        Ok(config) => {
            let instance = instance_name();
            let req = RunRequest {
                spec,
                config: &config,
                connector: resolver,
                clock,
                instance: &instance,
                scheduled_for: None,
                cancel: None,
            };
            runner::run(&req).await
        }
        Err(e) => not_run(spec, clock.now(), Outcome::Failed, e.to_string()),
    }
}

/// The latest runs of `jobs` (or of the one named) from every database they work on; the first
/// database that cannot be read fails it all. See [`history_each`] for the history of the
/// databases that can be read.
pub async fn history_of(
    jobs: &[JobSpec],
    resolver: &dyn DatabaseResolver,
    name: Option<&str>,
    limit: usize,
) -> Result<Vec<RunRecord>, SchedulerError> {
    let history = history_each(jobs, resolver, name, limit).await;
    match history.errors.into_iter().next() {
        Some(e) => Err(e.into_error()),
        None => Ok(history.runs),
    }
}

/// Runs read from the databases that answered, and what kept the others from being read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// Newest first, at most the limit asked for.
    pub runs: Vec<RunRecord>,
    /// One per database (or job whose connection settings are wrong) whose history is missing.
    pub errors: Vec<HistoryError>,
    /// How many databases were read (none with runs of the jobs counts too).
    #[serde(skip)]
    pub databases_read: usize,
}

/// A database whose history could not be read, and the jobs whose runs are therefore missing.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryError {
    /// `host:port/dbname`; None when a job's connection settings could not even be read.
    pub database: Option<String>,
    pub jobs: Vec<String>,
    pub error: String,
    #[serde(skip)]
    resolve: Option<ResolveError>,
}

impl HistoryError {
    fn into_error(self) -> SchedulerError {
        match self.resolve {
            Some(e) => SchedulerError::Resolve(e),
            None => SchedulerError::Database(self.error),
        }
    }
}

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let jobs = self.jobs.join(", ");
        match &self.database {
            Some(db) => write!(f, "no history from {db} (jobs {jobs}): {}", self.error),
            None => write!(f, "no history for job {jobs}: {}", self.error),
        }
    }
}

/// The latest runs of `jobs` (or of the one named) from every database they work on that can be
/// read; a database that cannot (down, refusing the login, no such job's settings) is named in
/// `errors` with its jobs, and the others' runs are still returned.
pub async fn history_each(
    jobs: &[JobSpec],
    resolver: &dyn DatabaseResolver,
    name: Option<&str>,
    limit: usize,
) -> History {
    let mut history = History::default();
    let by_database = jobs_by_database(jobs, resolver, name, &mut history.errors);
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    for (key, (config, names)) in by_database {
        let database = Some(crate::resolver::server_address(&config));
        let found = match pg::connect_in_time(resolver, &config).await {
            Err(e) => Err(format!("connecting to {key}: {e}")),
            Ok(client) => history::recent(&client, &names, limit_sql).await.map_err(|e| e.to_string()),
        };
        match found {
            Ok(found) => {
                history.databases_read += 1;
                history.runs.extend(found);
            }
            Err(error) => history.errors.push(HistoryError { database, jobs: names, error, resolve: None }),
        }
    }
    history.runs.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
    history.runs.truncate(limit);
    history
}

/// The jobs (all, or the one named) grouped by the database they work on, with its settings; a
/// job whose settings cannot be resolved goes to `errors`.
fn jobs_by_database(
    jobs: &[JobSpec],
    resolver: &dyn DatabaseResolver,
    name: Option<&str>,
    errors: &mut Vec<HistoryError>,
) -> BTreeMap<String, (tokio_postgres::Config, Vec<String>)> {
    let mut by_database: BTreeMap<String, (tokio_postgres::Config, Vec<String>)> = BTreeMap::new();
    for spec in jobs.iter().filter(|s| name.is_none_or(|n| n == s.name)) {
        let config = match resolver.resolve(spec) {
            Ok(config) => config,
            Err(e) => {
                errors.push(HistoryError {
                    database: None,
                    jobs: vec![spec.name.clone()],
                    error: e.to_string(),
                    resolve: Some(e),
                });
                continue;
            }
        };
        by_database
            .entry(database_key(&config))
            .or_insert_with(|| (config, Vec::new()))
            .1
            .push(spec.name.clone());
    }
    by_database
}
