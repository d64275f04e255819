//! What a statement's text says about it: the result of classification, derived from the text alone.

use std::fmt;
use std::sync::Arc;

use crate::hints::Hints;

/// Everything pgpilot can know about a statement from its text, before asking any server.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The kind of the first statement (see `kinds` for every statement of a multi-statement string).
    pub kind: StatementKind,
    /// One kind per statement in the text, in order.
    pub kinds: Box<[StatementKind]>,
    /// How many statements the text holds (0 for an empty or comment-only string).
    pub statement_count: usize,
    /// May this text change anything on the server, or must it run on a writable server? Grammar-level:
    /// DML, DDL, locking clauses, SELECT INTO, writing CTEs, LOCK, COPY FROM, CALL, DO, NOTIFY,
    /// nextval/setval/advisory-lock calls, EXPLAIN ANALYZE of any of these, anything unparsable.
    /// Functions whose volatility needs the catalog are judged by [`crate::route`].
    pub writes: bool,
    /// Among `writes`, one that changes data a later read could see: false when the only ones are
    /// advisory locks taken or given back (read-your-writes need not wait for them).
    pub writes_data: bool,
    /// The first reason found for `writes`, for metrics and logs.
    pub write_reason: Option<WriteReason>,
    /// Tables, views and sequences read (CTE names excluded), deduplicated, in order of appearance.
    pub tables_read: Vec<TableRef>,
    /// Relations whose contents or definition the text changes (DML targets, DDL objects).
    pub tables_written: Vec<TableRef>,
    /// Every function called by name, deduplicated.
    pub functions: Vec<FuncRef>,
    /// Operators used by name (`a ### b`, `OPERATOR(app.###)`, `x = ANY (...)`; BETWEEN as `>=`
    /// and `<=`), deduplicated: a user-defined operator runs its function.
    pub operators: Vec<FuncRef>,
    /// Types cast to (`x::t`, `CAST(x AS t)`, `t 'literal'`), deduplicated: a cast may run a
    /// user cast function or a domain's CHECK constraint. Built-in type names come qualified with
    /// pg_catalog as the grammar writes them (`pg_catalog.int4`).
    pub cast_types: Vec<FuncRef>,
    /// Types other than the built-in date/time ones that a value read at run time is converted
    /// to (a cast of anything but a constant or a parameter, an XMLTABLE or JSON_TABLE column),
    /// deduplicated: a composite, domain, array or range over a date/time type reads text there
    /// with that type's input too, where `'now'` is the current time (see `ReadShape::time_input`).
    pub input_casts: Vec<FuncRef>,
    /// Names selected from a row with a dot (`a.name`, `(row).name`), deduplicated: a column, or,
    /// when the row has no such column, a call `name(row)` of a function in attribute notation
    /// (or a cast of the row to a type of that name).
    pub selected_fields: Vec<String>,
    /// SQL value functions (CURRENT_TIMESTAMP, CURRENT_USER, ...): stable, never cacheable.
    pub value_functions: Vec<ValueFunction>,
    /// The first transaction-control statement in the text.
    pub transaction: Option<TxnControl>,
    /// SET / RESET commands (also set_config calls with constant arguments).
    pub settings: Vec<SetCommand>,
    /// The text is one `SELECT set_config(...)[, ...]` of constants with nothing else (no FROM,
    /// WHERE, CASE...): each call runs, once, with the values written.
    pub set_config_runs: bool,
    /// Effects on the server session that matter to transaction pooling.
    pub session_effects: Vec<SessionEffect>,
    /// `/* pgpilot:... */` directives found in comments.
    pub hints: Hints,
    /// pg_query's fingerprint (ignores literal values; a statistics key, never a cache key alone).
    pub fingerprint: u64,
    /// The text with constants replaced by `$n`, for display and statistics.
    pub normalized: Arc<str>,
    /// Properties the result cache needs to judge a read.
    pub shape: ReadShape,
    /// A write whose targets cannot be listed (DROP ... CASCADE, TRUNCATE ... CASCADE, DROP SCHEMA,
    /// DROP OWNED, function DDL, unparsable text): cached results of the database should all go.
    pub invalidates_everything: bool,
    /// The parser's message when the text did not parse.
    pub parse_error: Option<String>,
}

/// The pin reason of a WITH HOLD cursor, the one that ends when the client's cursors are closed.
pub const HOLD_CURSOR_PIN: &str = "cursor_with_hold";

/// The pin reason of a temporary object.
pub const TEMPORARY_PIN: &str = "temporary_table";

/// Whether what pin reason `reason` stands for may end while the session goes on, and the server
/// can be asked whether any is left (channels listened to, temporary objects, session advisory
/// locks, open WITH HOLD cursors). The others (LOAD, a DO block, SET SESSION AUTHORIZATION, an
/// unknown set_config...) last for the session.
pub fn pin_may_end(reason: &str) -> bool {
    matches!(reason, "listen" | "advisory_lock" | "sql_prepare")
        || reason == TEMPORARY_PIN
        || reason == HOLD_CURSOR_PIN
}

/// Whether pin reason `reason` takes the place of `current`: of none, of a WITH HOLD cursor's
/// (which ends with the cursors, followed one by one) for any other, and of one that may end for
/// one that lasts: the reason shown is the one that keeps the client longest.
pub fn pin_replaces(current: Option<&str>, reason: &str) -> bool {
    current.is_none_or(|c| {
        (c == HOLD_CURSOR_PIN && reason != HOLD_CURSOR_PIN) || (pin_may_end(c) && !pin_may_end(reason))
    })
}

impl Statement {
    /// True for a single plain read: SELECT/VALUES/TABLE without locking, INTO or writing CTEs.
    pub fn is_plain_select(&self) -> bool {
        self.statement_count == 1 && self.kind == StatementKind::Select && !self.writes
    }

    /// Why this statement ties its client to the server connection it runs on for the rest of
    /// the session (transaction pooling), as shown in SHOW CLIENTS' `pinned`.
    pub fn pin_reason(&self) -> Option<&'static str> {
        // The server reports the new user and DISCARD ALL restores it, but no other client may
        // share that server meanwhile.
        let authorization = |c: &SetCommand| matches!(&c.action, SetAction::Set { name, .. } if name == "session_authorization");
        if self.settings.iter().any(authorization) {
            return Some("session_authorization");
        }
        let reasons = self.session_effects.iter().filter(|e| e.pins_session()).map(|e| match e {
            SessionEffect::Listen(_) => "listen",
            SessionEffect::DeclareCursor { .. } => HOLD_CURSOR_PIN,
            SessionEffect::CreateTemporary(_) => TEMPORARY_PIN,
            SessionEffect::AdvisoryLockSession => "advisory_lock",
            SessionEffect::Load => "load",
            SessionEffect::SetConfigDynamic => "dynamic_set_config",
            SessionEffect::SessionCode => "do_block",
            _ => "session_state",
        });
        reasons.fold(None, |shown, reason| if pin_replaces(shown, reason) { Some(reason) } else { shown })
    }
}

/// The grammar-level kind of one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// SELECT, VALUES, TABLE (also SELECT INTO and SELECT ... FOR UPDATE: see `writes`).
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    /// CREATE/ALTER/DROP/GRANT/REVOKE/COMMENT/REFRESH MATERIALIZED VIEW/...: changes the schema or
    /// bulk data, always on the primary.
    Ddl,
    /// TRUNCATE: empties tables (on the primary, as DDL) without changing the catalog.
    Truncate,
    Copy(CopyDirection),
    Transaction(TxnKind),
    /// SET, SET LOCAL, SET TIME ZONE, SET ROLE, SET SESSION AUTHORIZATION, RESET, RESET ALL.
    Set,
    Show,
    Listen,
    Unlisten,
    Notify,
    Prepare,
    Execute,
    Deallocate,
    Discard,
    DeclareCursor,
    /// FETCH and MOVE.
    Fetch,
    /// CLOSE cursor / CLOSE ALL.
    CloseCursor,
    Lock,
    Explain {
        analyze: bool,
    },
    /// VACUUM and ANALYZE.
    Vacuum,
    /// CHECKPOINT, CLUSTER, REINDEX, LOAD, ALTER SYSTEM and other commands that are neither DDL nor data.
    Utility,
    Call,
    Do,
    /// An empty string, or only comments and semicolons.
    Empty,
    /// Text the PostgreSQL grammar rejects: routed to the primary, never cached.
    Unparsed,
}

impl StatementKind {
    /// A stable snake_case name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Ddl => "ddl",
            StatementKind::Truncate => "truncate",
            StatementKind::Copy(CopyDirection::From) => "copy_from",
            StatementKind::Copy(CopyDirection::To) => "copy_to",
            StatementKind::Transaction(_) => "transaction",
            StatementKind::Set => "set",
            StatementKind::Show => "show",
            StatementKind::Listen => "listen",
            StatementKind::Unlisten => "unlisten",
            StatementKind::Notify => "notify",
            StatementKind::Prepare => "prepare",
            StatementKind::Execute => "execute",
            StatementKind::Deallocate => "deallocate",
            StatementKind::Discard => "discard",
            StatementKind::DeclareCursor => "declare_cursor",
            StatementKind::Fetch => "fetch",
            StatementKind::CloseCursor => "close_cursor",
            StatementKind::Lock => "lock",
            StatementKind::Explain { .. } => "explain",
            StatementKind::Vacuum => "vacuum",
            StatementKind::Utility => "utility",
            StatementKind::Call => "call",
            StatementKind::Do => "do",
            StatementKind::Empty => "empty",
            StatementKind::Unparsed => "unparsed",
        }
    }
}

/// Which way a COPY moves rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyDirection {
    /// COPY ... FROM (STDIN, a server file or a program): writes.
    From,
    /// COPY ... TO (STDOUT, a server file or a program).
    To,
}

/// The kind of a transaction-control statement, without its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnKind {
    Begin,
    Commit,
    Rollback,
    Savepoint,
    Release,
    RollbackTo,
    PrepareTransaction,
    CommitPrepared,
    RollbackPrepared,
    SetTransaction,
}

/// Why the grammar says a statement writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteReason {
    Dml,
    Ddl,
    Locking,
    SelectInto,
    WritingCte,
    Lock,
    CopyFrom,
    /// COPY TO a server file or program: a side effect on the server's file system.
    CopyToServer,
    Call,
    Do,
    Notify,
    /// nextval, setval, pg_advisory_lock and other functions known to change state.
    StateChangingFunction,
    Maintenance,
    TwoPhaseCommit,
    Unparsed,
}

impl WriteReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            WriteReason::Dml => "dml",
            WriteReason::Ddl => "ddl",
            WriteReason::Locking => "locking_clause",
            WriteReason::SelectInto => "select_into",
            WriteReason::WritingCte => "writing_cte",
            WriteReason::Lock => "lock",
            WriteReason::CopyFrom => "copy_from",
            WriteReason::CopyToServer => "copy_to_server",
            WriteReason::Call => "call",
            WriteReason::Do => "do",
            WriteReason::Notify => "notify",
            WriteReason::StateChangingFunction => "state_changing_function",
            WriteReason::Maintenance => "maintenance",
            WriteReason::TwoPhaseCommit => "two_phase_commit",
            WriteReason::Unparsed => "unparsed",
        }
    }
}

/// A relation named in the text: schema as written (None when unqualified) and name as folded by the
/// grammar (lower case unless quoted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}

impl TableRef {
    pub fn new(schema: Option<&str>, name: &str) -> TableRef {
        TableRef { schema: schema.map(str::to_string), name: name.to_string() }
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_qualified(f, self.schema.as_deref(), &self.name)
    }
}

fn write_qualified(f: &mut fmt::Formatter<'_>, schema: Option<&str>, name: &str) -> fmt::Result {
    match schema {
        Some(schema) => write!(f, "{schema}.{name}"),
        None => f.write_str(name),
    }
}

/// pg_catalog functions that run a query given as text (`ts_rewrite(tsquery, text)`; the other
/// `ts_rewrite` is caught by its name too), or `SELECT * FROM` each table named or of a schema or
/// database: a view's query may call any function.
pub const QUERY_RUNNING_BUILTINS: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
];

/// A function called by name: schema as written (None when unqualified).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncRef {
    pub schema: Option<String>,
    pub name: String,
}

impl FuncRef {
    pub fn new(schema: Option<&str>, name: &str) -> FuncRef {
        FuncRef { schema: schema.map(str::to_string), name: name.to_string() }
    }

    /// Is this a pg_catalog function of this name (qualified as pg_catalog or unqualified)?
    /// Unqualified names resolve through pg_catalog first unless the search_path places it later,
    /// which is rare enough to treat conservatively wherever this is used.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.name == name && self.schema.as_deref().is_none_or(|s| s == "pg_catalog")
    }

    /// Is this a pg_catalog function that runs SQL given to it as text, or every table of a
    /// schema or database (`query_to_xml`, `ts_stat`...)? What runs may call any function, a
    /// writing one too: such a call is as volatile as an unknown function.
    pub fn runs_query_text(&self) -> bool {
        QUERY_RUNNING_BUILTINS.iter().any(|name| self.is_builtin(name))
    }

    /// Is this one of pg_catalog's advisory lock functions, taking or giving back a lock at
    /// session or transaction level (`pg_advisory_lock`, `pg_try_advisory_xact_lock_shared`,
    /// `pg_advisory_unlock_all`...)? They change no data.
    pub fn is_advisory_lock(&self) -> bool {
        self.schema.as_deref().is_none_or(|s| s == "pg_catalog")
            && (self.name.starts_with("pg_advisory_") || self.name.starts_with("pg_try_advisory_"))
    }
}

impl fmt::Display for FuncRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_qualified(f, self.schema.as_deref(), &self.name)
    }
}

/// SQL-standard value functions that the grammar turns into special nodes rather than calls. All are
/// stable: their value depends on the time, the session or the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueFunction {
    CurrentDate,
    CurrentTime,
    CurrentTimestamp,
    LocalTime,
    LocalTimestamp,
    CurrentRole,
    CurrentUser,
    User,
    SessionUser,
    CurrentCatalog,
    CurrentSchema,
    /// `SYSTEM_USER` and anything a later grammar adds.
    Other,
}

/// Transaction control with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnControl {
    /// BEGIN / START TRANSACTION.
    Begin(TxnOptions),
    Commit {
        chain: bool,
    },
    Rollback {
        chain: bool,
    },
    Savepoint(String),
    Release(String),
    RollbackTo(String),
    PrepareTransaction(String),
    CommitPrepared(String),
    RollbackPrepared(String),
    /// SET TRANSACTION ... inside a transaction.
    SetTransaction(TxnOptions),
    /// SET SESSION CHARACTERISTICS AS TRANSACTION ...: a session default.
    SetSessionCharacteristics(TxnOptions),
}

impl TxnControl {
    pub fn kind(&self) -> TxnKind {
        match self {
            TxnControl::Begin(_) => TxnKind::Begin,
            TxnControl::Commit { .. } => TxnKind::Commit,
            TxnControl::Rollback { .. } => TxnKind::Rollback,
            TxnControl::Savepoint(_) => TxnKind::Savepoint,
            TxnControl::Release(_) => TxnKind::Release,
            TxnControl::RollbackTo(_) => TxnKind::RollbackTo,
            TxnControl::PrepareTransaction(_) => TxnKind::PrepareTransaction,
            TxnControl::CommitPrepared(_) => TxnKind::CommitPrepared,
            TxnControl::RollbackPrepared(_) => TxnKind::RollbackPrepared,
            TxnControl::SetTransaction(_) | TxnControl::SetSessionCharacteristics(_) => {
                TxnKind::SetTransaction
            }
        }
    }
}

/// Options of BEGIN / START TRANSACTION / SET TRANSACTION. `None` means not stated (the session default
/// applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxnOptions {
    pub read_only: Option<bool>,
    pub isolation: Option<IsolationLevel>,
    pub deferrable: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

/// Whether a SET lasts for the session or the current transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetScope {
    Session,
    /// SET LOCAL (or set_config(..., true)): ends with the transaction.
    Local,
}

/// One SET / RESET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCommand {
    pub scope: SetScope,
    pub action: SetAction,
}

impl SetCommand {
    /// SQL that re-applies this command on another server connection.
    pub fn replay_sql(&self) -> String {
        let local = if self.scope == SetScope::Local { "LOCAL " } else { "" };
        match &self.action {
            SetAction::Set { name, value } => format!("SET {local}{} = {value}", quote_ident(name)),
            SetAction::SetConfig { name, value } => format!(
                "SELECT pg_catalog.set_config({}, {}, {})",
                quote_literal(name),
                quote_literal(value),
                self.scope == SetScope::Local
            ),
            SetAction::SetDefault { name } => format!("SET {local}{} TO DEFAULT", quote_ident(name)),
            SetAction::Reset { name } => format!("RESET {}", quote_ident(name)),
            SetAction::ResetAll => "RESET ALL".to_string(),
        }
    }
}

/// What a SET / RESET does to one setting. Names are lower case as PostgreSQL folds them; `timezone`
/// for SET TIME ZONE, `role` for SET ROLE, `session_authorization` for SET SESSION AUTHORIZATION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetAction {
    /// `value` is SQL text that `SET name = <value>` accepts (literals quoted, lists comma-separated).
    Set {
        name: String,
        value: String,
    },
    /// set_config(name, value, ...): `value` is the plain string, as set_config takes it (a list
    /// such as `a, public` is one string here, which `SET name = 'a, public'` would not mean);
    /// empty when computed at run time (a parameter, an expression). Whether the call ran at all
    /// (`WHERE false`, a CASE branch) only the server knows: its value is read back from there.
    SetConfig {
        name: String,
        value: String,
    },
    SetDefault {
        name: String,
    },
    Reset {
        name: String,
    },
    ResetAll,
}

impl SetAction {
    /// The setting's name (None for RESET ALL).
    pub fn name(&self) -> Option<&str> {
        match self {
            SetAction::Set { name, .. }
            | SetAction::SetConfig { name, .. }
            | SetAction::SetDefault { name }
            | SetAction::Reset { name } => Some(name),
            SetAction::ResetAll => None,
        }
    }
}

/// Effects on the server session that matter when clients share server connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    Listen(String),
    /// UNLISTEN channel; `None` for UNLISTEN *.
    Unlisten(Option<String>),
    Discard(DiscardTarget),
    /// PREPARE name AS body: `statement_sql` is the whole PREPARE (replayable); `body_sql` the body.
    Prepare {
        name: String,
        statement_sql: String,
        body_sql: String,
    },
    /// EXECUTE name (also EXPLAIN EXECUTE, CREATE TABLE AS EXECUTE): the prepared statement must exist.
    Execute {
        name: String,
    },
    /// DEALLOCATE name; `None` for DEALLOCATE ALL.
    Deallocate(Option<String>),
    DeclareCursor {
        name: String,
        with_hold: bool,
    },
    /// CLOSE name; `None` for CLOSE ALL.
    CloseCursor(Option<String>),
    /// An object only this session can see: a temporary table, view or sequence (CREATE TEMP ...,
    /// CREATE TABLE AS / SELECT INTO TEMP), or anything created in the pg_temp schema, functions
    /// and types included (named by a `TableRef` all the same). Pins the session.
    CreateTemporary(TableRef),
    /// An object created without a schema named: it goes to the first schema of the search_path
    /// that exists, the session's temporary one when `pg_temp` leads (`SET search_path = pg_temp`
    /// makes `CREATE TABLE t` a temporary table). Whether that pins the session depends on the
    /// search_path, which the session knows and the text does not.
    CreateUnqualified(TableRef),
    /// pg_advisory_lock / pg_advisory_lock_shared / pg_try_advisory_lock[_shared] (session level).
    AdvisoryLockSession,
    /// pg_advisory_unlock / _shared / _all.
    AdvisoryUnlock,
    /// LOAD 'library'.
    Load,
    /// set_config with arguments that are not constants: the new value is unknown.
    SetConfigDynamic,
    /// Code whose effects on the session cannot be known without running it (a DO block that
    /// mentions settings, temporary objects, locks...).
    SessionCode,
}

impl SessionEffect {
    /// Does this effect tie the client to the server connection it ran on, in transaction pooling?
    pub fn pins_session(&self) -> bool {
        match self {
            SessionEffect::DeclareCursor { with_hold, .. } => *with_hold,
            SessionEffect::CreateTemporary(_)
            | SessionEffect::AdvisoryLockSession
            | SessionEffect::Load
            | SessionEffect::Listen(_)
            | SessionEffect::SetConfigDynamic
            | SessionEffect::SessionCode => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardTarget {
    All,
    Plans,
    Sequences,
    Temp,
}

/// Strength of a row-locking clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockStrength {
    ForKeyShare,
    ForShare,
    ForNoKeyUpdate,
    ForUpdate,
}

/// Facts about reads that the result cache needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadShape {
    /// The strongest FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE clause anywhere.
    pub locking: Option<LockStrength>,
    pub select_into: bool,
    /// A data-modifying statement inside WITH.
    pub writing_cte: bool,
    /// A relation qualified with pg_catalog or information_schema, or an unqualified pg_* name.
    pub system_catalog: bool,
    /// A string constant 'now', 'today', 'tomorrow' or 'yesterday': a time the server reads when it
    /// runs the statement.
    pub time_literal: bool,
    /// A cast to a date/time type of something not a constant or parameter (a column, an
    /// expression): text there may hold 'now' as well, which the type's input function reads as
    /// the time the statement runs.
    pub time_input: bool,
    /// TABLESAMPLE without REPEATABLE: a different sample on every run.
    pub random_sample: bool,
    /// Highest `$n` parameter number referenced (0 when none).
    pub max_param: u32,
}

/// Quotes an identifier when PostgreSQL would need it.
pub(crate) fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$' || c == '.');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Quotes a string literal, doubling single quotes (standard_conforming_strings is on by default and
/// pgpilot sends these itself).
pub(crate) fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::FuncRef;

    #[test]
    fn advisory_lock_functions_are_pg_catalogs_of_either_level() {
        for name in ["pg_advisory_lock", "pg_try_advisory_xact_lock_shared", "pg_advisory_unlock_all"] {
            assert!(FuncRef::new(None, name).is_advisory_lock(), "{name}");
            assert!(FuncRef::new(Some("pg_catalog"), name).is_advisory_lock(), "{name}");
            assert!(!FuncRef::new(Some("app"), name).is_advisory_lock(), "app.{name}");
        }
        assert!(!FuncRef::new(None, "pg_advisory").is_advisory_lock());
        assert!(!FuncRef::new(None, "nextval").is_advisory_lock());
    }
}
