//! Which server may run a statement: the primary, or any server (a replica included).
//!
//! Hints (`/* pgpilot:primary */`) and the session's `SET pgpilot.route` are applied by the caller;
//! this is the grammar-and-catalog decision alone.

use crate::catalog::{FunctionCatalog, Volatility};
use crate::statement::{
    FuncRef, IsolationLevel, SessionEffect, Statement, StatementKind, TxnControl, TxnKind, TxnOptions,
    WriteReason,
};

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Only the primary can run it, for this reason.
    Primary(PrimaryReason),
    /// A replica can run it as well as the primary.
    AnyServer,
}

/// Why a statement must run on the primary. Each has a stable snake_case name for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrimaryReason {
    /// INSERT, UPDATE, DELETE, MERGE.
    Dml,
    Ddl,
    /// SELECT ... FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE.
    LockingClause,
    SelectInto,
    WritingCte,
    /// LOCK TABLE.
    Lock,
    /// COPY FROM, or COPY TO a server file or program.
    Copy,
    Call,
    Do,
    Notify,
    /// LISTEN / UNLISTEN: a standby cannot listen.
    Listen,
    /// nextval, setval, advisory locks and unlocks.
    StateChangingFunction,
    /// A function marked VOLATILE that is not known to be read-only (or that depends on one: an
    /// aggregate's support functions, a parameter default), called by name or run without being
    /// named: a user operator's function, a cast's function or domain CHECK, a view's query.
    VolatileFunction,
    /// A function the catalog does not know.
    UnknownFunction,
    /// BEGIN / START TRANSACTION not declared READ ONLY (or SET TRANSACTION READ WRITE).
    ReadWriteTransaction,
    /// SERIALIZABLE is not available on a standby.
    SerializableTransaction,
    /// PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED.
    TwoPhaseCommit,
    /// VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT, ALTER SYSTEM.
    Maintenance,
    /// A multi-statement string containing any write.
    MultiStatementWrite,
    /// EXECUTE of a prepared statement: classify its body (SessionEffect::Prepare) to do better.
    PreparedStatement,
    /// What a standby refuses although it writes nothing: an unlogged table, pg_walfile_name.
    StandbyRefused,
    /// A read of the server's own state (pg_stat_* views, pg_locks, pg_sequences...): a replica
    /// would answer with its own, and clients see the primary as the database's server.
    ServerState,
    /// A statement that ties its client to its server for the rest of the session (a WITH HOLD
    /// cursor, LOAD, SET SESSION AUTHORIZATION...): the client's later writes must run there too.
    PinsSession,
    /// Text the grammar rejects.
    Unparsed,
}

impl PrimaryReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            PrimaryReason::Dml => "dml",
            PrimaryReason::Ddl => "ddl",
            PrimaryReason::LockingClause => "locking_clause",
            PrimaryReason::SelectInto => "select_into",
            PrimaryReason::WritingCte => "writing_cte",
            PrimaryReason::Lock => "lock",
            PrimaryReason::Copy => "copy",
            PrimaryReason::Call => "call",
            PrimaryReason::Do => "do",
            PrimaryReason::Notify => "notify",
            PrimaryReason::Listen => "listen",
            PrimaryReason::StateChangingFunction => "state_changing_function",
            PrimaryReason::VolatileFunction => "volatile_function",
            PrimaryReason::UnknownFunction => "unknown_function",
            PrimaryReason::ReadWriteTransaction => "read_write_transaction",
            PrimaryReason::SerializableTransaction => "serializable_transaction",
            PrimaryReason::TwoPhaseCommit => "two_phase_commit",
            PrimaryReason::Maintenance => "maintenance",
            PrimaryReason::MultiStatementWrite => "multi_statement_write",
            PrimaryReason::PreparedStatement => "prepared_statement",
            PrimaryReason::StandbyRefused => "standby_refused",
            PrimaryReason::ServerState => "server_state",
            PrimaryReason::PinsSession => "pins_session",
            PrimaryReason::Unparsed => "unparsed",
        }
    }

    fn from_write(reason: WriteReason) -> PrimaryReason {
        match reason {
            WriteReason::Dml => PrimaryReason::Dml,
            WriteReason::Ddl => PrimaryReason::Ddl,
            WriteReason::Locking => PrimaryReason::LockingClause,
            WriteReason::SelectInto => PrimaryReason::SelectInto,
            WriteReason::WritingCte => PrimaryReason::WritingCte,
            WriteReason::Lock => PrimaryReason::Lock,
            WriteReason::CopyFrom | WriteReason::CopyToServer => PrimaryReason::Copy,
            WriteReason::Call => PrimaryReason::Call,
            WriteReason::Do => PrimaryReason::Do,
            WriteReason::Notify => PrimaryReason::Notify,
            WriteReason::StateChangingFunction => PrimaryReason::StateChangingFunction,
            WriteReason::Maintenance => PrimaryReason::Maintenance,
            WriteReason::TwoPhaseCommit => PrimaryReason::TwoPhaseCommit,
            WriteReason::Unparsed => PrimaryReason::Unparsed,
        }
    }
}

/// Volatile pg_catalog functions that only read: random numbers, the wall clock, sleeping, UUIDs.
/// A replica runs them as well as the primary (they remain uncacheable).
pub const READ_ONLY_VOLATILE_BUILTINS: &[&str] = &[
    "random",
    "random_normal",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
];

/// Decides where `stmt` may run. `search_path` resolves unqualified function names (schemas with
/// `$user` expanded). Does not allocate.
pub fn route(stmt: &Statement, functions: &FunctionCatalog, search_path: &[String]) -> Route {
    if let Some(reason) = transaction_reason(stmt) {
        return Route::Primary(reason);
    }
    if let Some(reason) = stmt.write_reason {
        if stmt.statement_count > 1 {
            return Route::Primary(PrimaryReason::MultiStatementWrite);
        }
        return Route::Primary(PrimaryReason::from_write(reason));
    }
    for kind in stmt.kinds.iter() {
        match kind {
            StatementKind::Listen | StatementKind::Unlisten => return Route::Primary(PrimaryReason::Listen),
            // A PREPARE runs where its EXECUTEs will: sent through Parse it pins its client to
            // that server, which must then be the primary.
            StatementKind::Execute | StatementKind::Prepare => {
                return Route::Primary(PrimaryReason::PreparedStatement)
            }
            _ => {}
        }
    }
    // A standby refuses every statement of a serializable session, pgpilot's reading back of the
    // setting included: the session's default is made where its transactions will run.
    if stmt.settings.iter().any(makes_serializable_default) {
        return Route::Primary(PrimaryReason::SerializableTransaction);
    }
    if stmt.settings.iter().any(standby_refuses_setting) {
        return Route::Primary(PrimaryReason::StandbyRefused);
    }
    if reads_server_state(stmt) {
        return Route::Primary(PrimaryReason::ServerState);
    }
    // EXPLAIN [ANALYZE] EXECUTE, CREATE TABLE AS EXECUTE: the prepared statement's body is not known.
    if stmt.session_effects.iter().any(|e| matches!(e, SessionEffect::Execute { .. })) {
        return Route::Primary(PrimaryReason::PreparedStatement);
    }
    if stmt.pin_reason().is_some() {
        return Route::Primary(PrimaryReason::PinsSession);
    }
    // An unlogged relation: a standby has none of its data (EXPLAIN alone would do, but is rare).
    if functions.reads_standby_unreadable(stmt) {
        return Route::Primary(PrimaryReason::StandbyRefused);
    }
    // EXPLAIN without ANALYZE plans the statement without calling anything.
    let only_plans = stmt.kinds.iter().all(|k| matches!(k, StatementKind::Explain { analyze: false }));
    if !only_plans {
        if let Some(reason) = function_reason(&stmt.functions, functions, search_path) {
            return Route::Primary(reason);
        }
        // A user operator, a cast to a type whose cast function or domain CHECK writes, a view
        // calling a volatile function: volatile code the text does not name.
        if functions.has_implicit_writers() && functions.implicit_volatility(stmt) == Volatility::Volatile {
            return Route::Primary(PrimaryReason::VolatileFunction);
        }
    }
    Route::AnyServer
}

/// `SET default_transaction_isolation = 'serializable'`, `SET SESSION CHARACTERISTICS AS
/// TRANSACTION ISOLATION LEVEL SERIALIZABLE` (pgJDBC's setTransactionIsolation), set_config alike.
fn makes_serializable_default(cmd: &crate::statement::SetCommand) -> bool {
    use crate::statement::SetAction;
    match &cmd.action {
        SetAction::Set { name, value } | SetAction::SetConfig { name, value } => {
            name == "default_transaction_isolation" && value.to_ascii_lowercase().contains("serializable")
        }
        _ => false,
    }
}

/// `SET transaction_read_only = off` and `SET transaction_isolation = serializable`, which a
/// standby refuses even outside a transaction (where PostgreSQL takes them as no-ops).
fn standby_refuses_setting(cmd: &crate::statement::SetCommand) -> bool {
    use crate::statement::SetAction;
    let (SetAction::Set { name, value } | SetAction::SetConfig { name, value }) = &cmd.action else {
        return false;
    };
    let value = value.trim_matches(|c| c == '\'' || c == '"').to_ascii_lowercase();
    match name.to_ascii_lowercase().as_str() {
        "transaction_read_only" => matches!(value.as_str(), "off" | "false" | "f" | "no" | "n" | "0"),
        "transaction_isolation" => value.contains("serializable"),
        _ => false,
    }
}

/// Views and functions of the server's own state: statistics, locks, sequences' positions,
/// replication. Matched by name in pg_catalog (or unqualified, which resolves there first);
/// pg_stat_statements in whatever schema its extension lives.
fn reads_server_state(stmt: &Statement) -> bool {
    const VIEWS: &[&str] = &[
        "pg_locks",
        "pg_sequences",
        "pg_replication_slots",
        "pg_prepared_xacts",
        "pg_backend_memory_contexts",
        "pg_replication_origin_status",
    ];
    let system = |schema: Option<&str>| schema.is_none_or(|s| s == "pg_catalog");
    let state_name = |name: &str| name.starts_with("pg_stat_") || name.starts_with("pg_statio_");
    stmt.tables_read.iter().any(|t| {
        t.name.starts_with("pg_stat_statements")
            || system(t.schema.as_deref()) && (state_name(&t.name) || VIEWS.contains(&t.name.as_str()))
    }) || stmt.functions.iter().any(|f| system(f.schema.as_deref()) && f.name.starts_with("pg_stat_get_"))
}

fn transaction_reason(stmt: &Statement) -> Option<PrimaryReason> {
    match stmt.transaction.as_ref() {
        Some(TxnControl::Begin(options) | TxnControl::SetTransaction(options)) => read_only_reason(options),
        // Only the first transaction statement's options are kept: a later BEGIN in a
        // multi-statement string is taken as read-write.
        _ if stmt.kinds.iter().skip(1).any(|k| *k == StatementKind::Transaction(TxnKind::Begin)) => {
            Some(PrimaryReason::ReadWriteTransaction)
        }
        _ => None,
    }
}

/// A transaction may use a replica only when declared READ ONLY, and not SERIALIZABLE (a standby
/// refuses serializable transactions).
fn read_only_reason(options: &TxnOptions) -> Option<PrimaryReason> {
    if options.isolation == Some(IsolationLevel::Serializable) {
        return Some(PrimaryReason::SerializableTransaction);
    }
    match options.read_only {
        Some(true) => None,
        _ => Some(PrimaryReason::ReadWriteTransaction),
    }
}

fn function_reason(
    calls: &[FuncRef],
    catalog: &FunctionCatalog,
    search_path: &[String],
) -> Option<PrimaryReason> {
    let mut unknown = false;
    for func in calls {
        if STANDBY_REFUSED_BUILTINS.iter().any(|name| func.is_builtin(name)) {
            return Some(PrimaryReason::StandbyRefused);
        }
        match catalog.volatility(func, search_path) {
            Volatility::Volatile if !is_read_only_builtin(func, catalog, search_path) => {
                return Some(PrimaryReason::VolatileFunction)
            }
            Volatility::Unknown => unknown = true,
            _ => {}
        }
    }
    unknown.then_some(PrimaryReason::UnknownFunction)
}

/// pg_catalog functions not volatile that a standby refuses ("recovery is in progress"): they
/// name the WAL file of the primary's current timeline.
pub(crate) const STANDBY_REFUSED_BUILTINS: &[&str] = &["pg_walfile_name", "pg_walfile_name_offset"];

/// Marked STABLE in pg_proc, yet a standby refuses them: they assign a transaction ID or read the
/// WAL insert position (a call of one is taken as a write, `state_changing_function`).
pub(crate) const XID_AND_WAL_POSITION_BUILTINS: &[&str] = &[
    "txid_current",
    "pg_current_xact_id",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
];

/// A read-only pg_catalog builtin, called qualified or unqualified with no function of that name in
/// another schema of the path (which overload resolution could pick instead).
fn is_read_only_builtin(func: &FuncRef, catalog: &FunctionCatalog, search_path: &[String]) -> bool {
    READ_ONLY_VOLATILE_BUILTINS.iter().any(|name| func.is_builtin(name))
        && (func.schema.is_some() || !catalog.defined_outside_pg_catalog(&func.name, search_path))
}
