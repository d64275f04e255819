//! One simulated client: picks a script, runs it, records the latency, repeats until the run
//! ends. Everything it counts lives in its own [`Tally`] (merged after the run), so the hot path
//! shares nothing but a few relaxed atomic counters read by the progress display.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::Protocol;
use crate::pg::{Conn, ConnError, DbError, RowCapture, TxStatus};
use crate::script::expr::Env;
use crate::script::{Command, Expr, Part, Script, SqlCommand, Value, VarTable};
use crate::target::Endpoint;
use crate::timer::Timer;

/// Counters the progress display reads while clients run.
#[derive(Default)]
pub(crate) struct LiveCounters {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub latency_us: AtomicU64,
}

/// Everything the clients of one run share, read-only.
pub(crate) struct RunShared {
    pub endpoint: Endpoint,
    pub scripts: Vec<Script>,
    pub cumulative_weights: Vec<u64>,
    pub vars: VarTable,
    /// Values of predefined variables; `client_id` is filled per client.
    pub initial: Vec<Option<Value>>,
    pub client_id_slot: Option<usize>,
    pub default_seed: i64,
    pub protocol: Protocol,
    pub connect_each: bool,
    /// Mean microseconds between one client's transactions under `--rate`.
    pub rate_interval_us: Option<f64>,
    /// Set when the clock starts (duration-limited runs).
    pub deadline: OnceLock<Instant>,
    pub per_client_transactions: Option<u64>,
    pub stop: Arc<AtomicBool>,
    pub live: LiveCounters,
}

/// One SQLSTATE's count and the first message seen with it.
#[derive(Debug, Clone)]
pub(crate) struct ErrorTally {
    pub count: u64,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ScriptTally {
    pub ok: u64,
    pub failed: u64,
    pub latency_us: u64,
}

/// What one client measured.
pub(crate) struct Tally {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub failed: u64,
    pub errors: HashMap<String, ErrorTally>,
    pub scripts: Vec<ScriptTally>,
    pub lag_us_sum: u64,
    pub lag_us_max: u64,
    pub connections: u64,
    pub fatal: Option<String>,
    /// Clients that stopped before their transactions were done, because they could not connect
    /// again (with a transaction count, which no clock ends).
    pub aborted_clients: u64,
    /// Why the first of them stopped.
    pub abort_reason: Option<String>,
}

impl Tally {
    pub fn new(scripts: usize) -> Tally {
        Tally {
            hist: new_histogram(),
            ok: 0,
            failed: 0,
            errors: HashMap::new(),
            scripts: vec![ScriptTally::default(); scripts],
            lag_us_sum: 0,
            lag_us_max: 0,
            connections: 0,
            fatal: None,
            aborted_clients: 0,
            abort_reason: None,
        }
    }

    fn error(&mut self, code: &str, message: impl FnOnce() -> String) {
        match self.errors.get_mut(code) {
            Some(e) => e.count += 1,
            None => {
                self.errors.insert(code.to_string(), ErrorTally { count: 1, message: message() });
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        self.failed += other.failed;
        for (code, e) in other.errors {
            self.errors.entry(code).and_modify(|mine| mine.count += e.count).or_insert(e);
        }
        for (mine, theirs) in self.scripts.iter_mut().zip(other.scripts) {
            mine.ok += theirs.ok;
            mine.failed += theirs.failed;
            mine.latency_us += theirs.latency_us;
        }
        self.lag_us_sum += other.lag_us_sum;
        self.lag_us_max = self.lag_us_max.max(other.lag_us_max);
        self.connections += other.connections;
        if self.fatal.is_none() {
            self.fatal = other.fatal;
        }
        self.aborted_clients += other.aborted_clients;
        if self.abort_reason.is_none() {
            self.abort_reason = other.abort_reason;
        }
    }
}

/// Microseconds from 1 µs to a minute at 3 significant figures, growing if a latency is longer.
fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    h.auto(true);
    h
}

enum TxEnd {
    Committed,
    Failed(DbError),
}

/// How one SQL command of a script ended.
enum StepEnd {
    /// It succeeded; the server's transaction status after it (ReadyForQuery).
    Done(TxStatus),
    /// It failed (and any transaction block it was in has been rolled back).
    Failed(DbError),
}

/// pgbench's words for a script that ends inside a transaction block: the next transaction
/// would run inside it, so nothing the client counts would ever commit.
const OPEN_TRANSACTION: &str = "end of script reached without completing the last transaction \
                                (the script leaves a transaction block open: end it with COMMIT or ROLLBACK)";

enum TxAbort {
    /// The connection was lost during the transaction.
    Conn(ConnError),
    /// No connection could be opened for the transaction.
    Connect(ConnError),
    Fatal(String),
}

/// Per-client mutable state.
struct ClientState {
    vars: Vec<Option<Value>>,
    rng: SmallRng,
    prepared: Vec<bool>,
    text: String,
    params: Vec<u8>,
    bounds: Vec<(usize, usize)>,
    timer: Timer,
}

/// Runs one client until the run ends. `conn` is the connection opened before the clock started
/// (None in connect-per-transaction mode).
pub(crate) async fn run_client(
    shared: Arc<RunShared>,
    id: usize,
    mut conn: Option<Conn>,
    start: Instant,
    seed: u64,
) -> Tally {
    let statements = shared.scripts.iter().map(Script::sql_count).sum();
    let mut state = ClientState {
        vars: shared.initial.clone(),
        rng: SmallRng::seed_from_u64(seed),
        prepared: vec![false; statements],
        text: String::with_capacity(256),
        params: Vec::with_capacity(64),
        bounds: Vec::with_capacity(8),
        timer: Timer::new(),
    };
    if let Some(slot) = shared.client_id_slot {
        state.vars[slot] = Some(Value::Int(id as i64));
    }
    let mut tally = Tally::new(shared.scripts.len());
    if conn.is_some() {
        tally.connections += 1;
    }
    let mut clock = Clock { deadline: shared.deadline.get().copied(), scheduled: start, done: 0 };
    let mut connect_failures: u32 = 0;
    while let Some(begin) = clock.next_start(&shared, &mut state.rng, &state.timer, &mut tally).await {
        let which = pick_script(&shared.cumulative_weights, &mut state.rng);
        let script = &shared.scripts[which];
        let result = match conn.as_mut() {
            Some(c) => run_script(&shared, script, c, &mut state).await,
            None => match Conn::connect(&shared.endpoint).await {
                Ok(mut c) => {
                    tally.connections += 1;
                    state.prepared.iter_mut().for_each(|p| *p = false);
                    let r = run_script(&shared, script, &mut c, &mut state).await;
                    conn = Some(c);
                    r
                }
                Err(e) => Err(TxAbort::Connect(e.while_connecting())),
            },
        };
        let latency = Instant::now().saturating_duration_since(begin).as_micros() as u64;
        // Consecutive transactions lost with their connection: a server (or a pooler in front of
        // one) that refuses or drops every new connection is retried with a growing pause.
        let without_connection = matches!(result, Err(TxAbort::Conn(_) | TxAbort::Connect(_)));
        connect_failures = if without_connection { connect_failures + 1 } else { 0 };
        match result {
            Ok(TxEnd::Committed) => record_success(&shared, &mut tally, which, latency),
            Ok(TxEnd::Failed(err)) => {
                record_failure(&shared, &mut tally, which, &err.code, || err.message.clone())
            }
            Err(TxAbort::Connect(err)) if shared.per_client_transactions.is_some() => {
                // No clock ends a run of N transactions: retrying would go on for as long as the
                // server stays away, one failed transaction at a time. pgbench aborts the client.
                tally.aborted_clients += 1;
                tally.abort_reason = Some(format!("client {id} could not connect again: {err}"));
                break;
            }
            Err(TxAbort::Conn(err) | TxAbort::Connect(err)) => {
                record_failure(&shared, &mut tally, which, err.sqlstate(), || err.to_string());
                conn = None;
                if connect_failures > 1 {
                    // Lost again right after reconnecting: back off instead of spinning.
                    let pause = Duration::from_millis(10 * u64::from(connect_failures.min(20)));
                    sleep_until(Instant::now() + pause, &shared.stop, &state.timer).await;
                }
            }
            Err(TxAbort::Fatal(message)) => {
                tally.fatal = Some(format!("client {id}, script {}: {message}", script.name));
                shared.stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        if shared.connect_each {
            if let Some(c) = conn.take() {
                c.close().await;
            }
        }
    }
    if let Some(c) = conn.take() {
        c.close().await;
    }
    tally
}

/// When a client's transactions start.
struct Clock {
    deadline: Option<Instant>,
    scheduled: Instant,
    done: u64,
}

impl Clock {
    /// The start time of the next transaction (its schedule under --rate, else now), after
    /// waiting for it; None when the run is over.
    async fn next_start(
        &mut self,
        shared: &RunShared,
        rng: &mut SmallRng,
        timer: &Timer,
        tally: &mut Tally,
    ) -> Option<Instant> {
        if shared.stop.load(Ordering::Relaxed)
            || shared.per_client_transactions.is_some_and(|n| self.done >= n)
        {
            return None;
        }
        self.done += 1;
        let Some(mean) = shared.rate_interval_us else {
            let now = Instant::now();
            return self.deadline.is_none_or(|d| now < d).then_some(now);
        };
        self.scheduled += poisson_delay(rng, mean);
        // A target that cannot keep up falls behind its schedule: -T still ends the run on time,
        // as in pgbench, however many scheduled transactions are left.
        if self.deadline.is_some_and(|d| self.scheduled >= d || Instant::now() >= d)
            || !sleep_until(self.scheduled, &shared.stop, timer).await
        {
            return None;
        }
        let lag = Instant::now().saturating_duration_since(self.scheduled).as_micros() as u64;
        tally.lag_us_sum += lag;
        tally.lag_us_max = tally.lag_us_max.max(lag);
        Some(self.scheduled)
    }
}

fn record_success(shared: &RunShared, tally: &mut Tally, which: usize, latency: u64) {
    tally.ok += 1;
    // Auto-resizing: a latency beyond the initial range grows the histogram.
    let _ = tally.hist.record(latency.max(1));
    let s = &mut tally.scripts[which];
    s.ok += 1;
    s.latency_us += latency;
    shared.live.ok.fetch_add(1, Ordering::Relaxed);
    shared.live.latency_us.fetch_add(latency, Ordering::Relaxed);
}

fn record_failure(
    shared: &RunShared,
    tally: &mut Tally,
    which: usize,
    code: &str,
    msg: impl FnOnce() -> String,
) {
    tally.failed += 1;
    tally.scripts[which].failed += 1;
    tally.error(code, msg);
    shared.live.failed.fetch_add(1, Ordering::Relaxed);
}

/// Sleeps until `when`, waking early (and returning false) if the run is stopped.
async fn sleep_until(when: Instant, stop: &AtomicBool, timer: &Timer) -> bool {
    const SLICE: Duration = Duration::from_millis(100);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= when {
            return true;
        }
        let step = (when - now).min(SLICE);
        timer.sleep(step).await;
    }
}

/// Exponentially distributed gaps give a Poisson arrival process, as pgbench's --rate does.
fn poisson_delay(rng: &mut SmallRng, mean_us: f64) -> Duration {
    let u: f64 = rng.gen();
    let gap = -(1.0 - u).ln() * mean_us;
    Duration::from_micros(gap.min(mean_us * 100.0) as u64)
}

fn pick_script(cumulative: &[u64], rng: &mut SmallRng) -> usize {
    if cumulative.len() == 1 {
        return 0;
    }
    let total = *cumulative.last().expect("at least one script");
    let r = rng.gen_range(0..total);
    cumulative.iter().position(|&c| r < c).unwrap_or(0)
}

async fn run_script(
    shared: &RunShared,
    script: &Script,
    conn: &mut Conn,
    state: &mut ClientState,
) -> Result<TxEnd, TxAbort> {
    // A script with no SQL leaves the session as it was: idle, since every transaction ends so.
    let mut status = TxStatus::Idle;
    for cmd in &script.commands {
        match cmd {
            Command::Set { var, expr } => {
                let v = evaluate(expr, shared, state).map_err(TxAbort::Fatal)?;
                state.vars[*var] = Some(v);
            }
            Command::Sleep { amount, unit_us } => {
                let n = evaluate(amount, shared, state).and_then(|v| v.as_int()).map_err(TxAbort::Fatal)?;
                let us = u64::try_from(n).unwrap_or(0).saturating_mul(*unit_us);
                state.timer.sleep(Duration::from_micros(us)).await;
            }
            Command::Sql(sql) => match run_sql(shared, sql, conn, state).await? {
                StepEnd::Done(after) => status = after,
                StepEnd::Failed(e) => return Ok(TxEnd::Failed(e)),
            },
        }
    }
    // Counting it as committed would measure nothing: the server says "there is already a
    // transaction in progress" at the next BEGIN and commits nothing. pgbench aborts the client.
    if status != TxStatus::Idle {
        return Err(TxAbort::Fatal(OPEN_TRANSACTION.into()));
    }
    Ok(TxEnd::Committed)
}

fn evaluate(expr: &Expr, shared: &RunShared, state: &mut ClientState) -> Result<Value, String> {
    let mut env = Env {
        vars: &state.vars,
        names: shared.vars.names(),
        rng: &mut state.rng,
        default_seed: shared.default_seed,
    };
    expr.eval(&mut env)
}

async fn run_sql(
    shared: &RunShared,
    sql: &SqlCommand,
    conn: &mut Conn,
    state: &mut ClientState,
) -> Result<StepEnd, TxAbort> {
    match shared.protocol {
        Protocol::Simple => match sql.static_text() {
            Some(text) => conn.push_query(text),
            None => {
                substitute(sql, state, &shared.vars).map_err(TxAbort::Fatal)?;
                conn.push_query(&state.text);
            }
        },
        Protocol::Extended | Protocol::Prepared => {
            format_params(sql, state, &shared.vars).map_err(TxAbort::Fatal)?;
            let prepared = shared.protocol == Protocol::Prepared;
            let (name, parse) = match (prepared, state.prepared[sql.slot]) {
                (false, _) => ("", Some(sql.param_sql.as_str())),
                (true, false) => {
                    conn.push_close_statement(&sql.statement);
                    (sql.statement.as_str(), Some(sql.param_sql.as_str()))
                }
                (true, true) => (sql.statement.as_str(), None),
            };
            let params = &state.params;
            let slices = state.bounds.iter().map(|&(a, b)| &params[a..b]);
            conn.push_extended(name, parse, slices, sql.capture.is_some());
        }
    }
    let mut capture = sql.capture.as_ref().map(|_| RowCapture::default());
    let reply = conn.round_trip(capture.as_mut()).await.map_err(TxAbort::Conn)?;
    if let Some(err) = reply.error {
        if err.code == "26000" {
            // The statement is gone (a transaction pooler moved us): prepare it again next time.
            state.prepared[sql.slot] = false;
        }
        if reply.status != TxStatus::Idle {
            conn.simple("ROLLBACK").await.map_err(TxAbort::Conn)?;
        }
        return Ok(StepEnd::Failed(err));
    }
    if shared.protocol == Protocol::Prepared {
        state.prepared[sql.slot] = true;
    }
    if let (Some(spec), Some(captured)) = (&sql.capture, capture) {
        apply_capture(spec, captured, state, &shared.vars).map_err(TxAbort::Fatal)?;
    }
    Ok(StepEnd::Done(reply.status))
}

fn var_value<'a>(state: &'a ClientState, vars: &VarTable, slot: usize) -> Result<&'a Value, String> {
    state.vars[slot].as_ref().ok_or_else(|| format!("undefined variable `{}`", vars.names()[slot]))
}

/// Builds the simple-protocol text with values substituted.
fn substitute(sql: &SqlCommand, state: &mut ClientState, vars: &VarTable) -> Result<(), String> {
    let mut text = std::mem::take(&mut state.text);
    text.clear();
    for part in &sql.parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::Var(slot) => match &state.vars[*slot] {
                Some(v) => {
                    let _ = write!(text, "{v}");
                }
                None => {
                    state.text = text;
                    return Err(format!("undefined variable `{}`", vars.names()[*slot]));
                }
            },
        }
    }
    state.text = text;
    Ok(())
}

/// Writes parameter values (text format) back to back into one buffer.
fn format_params(sql: &SqlCommand, state: &mut ClientState, vars: &VarTable) -> Result<(), String> {
    let mut params = std::mem::take(&mut state.params);
    params.clear();
    state.bounds.clear();
    for &slot in &sql.params {
        let start = params.len();
        match var_value(state, vars, slot) {
            Ok(v) => {
                let _ = write!(params, "{v}");
            }
            Err(e) => {
                state.params = params;
                return Err(e);
            }
        }
        state.bounds.push((start, params.len()));
    }
    state.params = params;
    Ok(())
}

/// `\gset` needs exactly one row; `\aset` takes the first row if there is one.
fn apply_capture(
    spec: &crate::script::Capture,
    captured: RowCapture,
    state: &mut ClientState,
    vars: &VarTable,
) -> Result<(), String> {
    if !spec.all_rows && captured.rows != 1 {
        return Err(format!("\\gset expects one row, got {}", captured.rows));
    }
    let Some(row) = captured.first_row else { return Ok(()) };
    for (name, value) in captured.columns.iter().zip(row) {
        if let Some(slot) = vars.get(&format!("{}{name}", spec.prefix)) {
            state.vars[slot] = Some(value.map_or(Value::Null, |v| Value::from_text(&v)));
        }
    }
    Ok(())
}
