//! The kind and the statement-level facts of one top-level statement (the tree walk gathers the rest).

use pg_query::protobuf::{self, node::Node as NodeEnum, Node};

use super::collector::{is_temp_schema, render_const, string_of, table_ref, Collector, Ctx};
use crate::statement::{
    CopyDirection, DiscardTarget, IsolationLevel, SessionEffect, SetAction, SetCommand, SetScope,
    StatementKind, TableRef, TxnControl, TxnOptions, WriteReason,
};

/// PostgreSQL's CURSOR_OPT_HOLD (src/include/nodes/parsenodes.h).
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// What one top-level statement contributes besides the collector's findings.
pub(super) struct TopLevel {
    pub kind: StatementKind,
    pub transaction: Option<TxnControl>,
    /// Its effect on cached results cannot be pinned to named tables.
    pub invalidates_everything: bool,
}

/// Classifies one top-level statement, walking it with `c`. `text` is the statement's own text.
pub(super) fn analyze_top(stmt: &Node, text: &str, c: &mut Collector) -> TopLevel {
    let mut top = TopLevel { kind: StatementKind::Ddl, transaction: None, invalidates_everything: false };
    let Some(node) = &stmt.node else {
        top.kind = StatementKind::Empty;
        return top;
    };
    let written_before = c.tables_written.len();
    let ctx = match node {
        NodeEnum::SelectStmt(_) => Some((StatementKind::Select, Ctx::Query)),
        NodeEnum::InsertStmt(_) => Some((StatementKind::Insert, Ctx::Query)),
        NodeEnum::UpdateStmt(_) => Some((StatementKind::Update, Ctx::Query)),
        NodeEnum::DeleteStmt(_) => Some((StatementKind::Delete, Ctx::Query)),
        NodeEnum::MergeStmt(_) => Some((StatementKind::Merge, Ctx::Query)),
        _ => None,
    };
    if let Some((kind, ctx)) = ctx {
        top.kind = kind;
        c.walk_statement(stmt, ctx);
        return top;
    }
    top.kind = session_statement(node, text, c, &mut top).unwrap_or_else(|| utility(node, stmt, c, &mut top));
    let writes_schema_or_tables = matches!(top.kind, StatementKind::Ddl | StatementKind::Truncate);
    if writes_schema_or_tables && c.tables_written.len() == written_before {
        top.invalidates_everything = true;
    }
    top
}

/// `SELECT set_config('a', 'b', false)[, ...]` and nothing else: a plain SELECT (no FROM, WHERE,
/// GROUP, HAVING, LIMIT, DISTINCT, WITH, set operation) whose every column is a call of
/// set_config with constant arguments. Each call then runs exactly once.
pub(super) fn only_set_config_calls(stmt: &Node) -> bool {
    let Some(NodeEnum::SelectStmt(s)) = &stmt.node else { return false };
    let plain = s.from_clause.is_empty()
        && s.where_clause.is_none()
        && s.group_clause.is_empty()
        && s.having_clause.is_none()
        && s.limit_count.is_none()
        && s.limit_offset.is_none()
        && s.distinct_clause.is_empty()
        && s.with_clause.is_none()
        && s.values_lists.is_empty()
        && s.window_clause.is_empty()
        && s.larg.is_none()
        && s.into_clause.is_none();
    let set_config_call = |target: &Node| {
        let Some(NodeEnum::ResTarget(t)) = &target.node else { return false };
        let Some(NodeEnum::FuncCall(call)) = t.val.as_deref().and_then(|v| v.node.as_ref()) else {
            return false;
        };
        let names: Vec<&str> = call.funcname.iter().filter_map(string_of).collect();
        let named = matches!(names.as_slice(), ["set_config"] | ["pg_catalog", "set_config"]);
        let constant = |a: &Node| matches!(a.node, Some(NodeEnum::AConst(_)));
        named
            && call.args.len() == 3
            && call.args.iter().all(constant)
            && call.agg_filter.is_none()
            && call.over.is_none()
    };
    plain && !s.target_list.is_empty() && s.target_list.iter().all(set_config_call)
}

/// Statements about the session and the transaction: no relations, no tree walk needed (EXECUTE and
/// DECLARE are walked for their arguments and query).
fn session_statement(
    node: &NodeEnum,
    text: &str,
    c: &mut Collector,
    top: &mut TopLevel,
) -> Option<StatementKind> {
    let kind = match node {
        NodeEnum::TransactionStmt(t) => {
            let txn = transaction(t);
            if matches!(
                txn,
                TxnControl::PrepareTransaction(_)
                    | TxnControl::CommitPrepared(_)
                    | TxnControl::RollbackPrepared(_)
            ) {
                c.mark_write(WriteReason::TwoPhaseCommit);
            }
            let kind = StatementKind::Transaction(txn.kind());
            top.transaction = Some(txn);
            kind
        }
        NodeEnum::VariableSetStmt(s) => {
            match set_statement(s) {
                SetOutcome::Setting(cmd) => c.settings.push(cmd),
                SetOutcome::Transaction(txn) => {
                    if let TxnControl::SetSessionCharacteristics(options) = &txn {
                        c.settings.extend(session_characteristics(options));
                    }
                    top.transaction = Some(txn)
                }
                SetOutcome::Dynamic => c.add_effect(SessionEffect::SetConfigDynamic),
            }
            StatementKind::Set
        }
        NodeEnum::VariableShowStmt(_) => StatementKind::Show,
        NodeEnum::ListenStmt(l) => {
            c.add_effect(SessionEffect::Listen(l.conditionname.clone()));
            StatementKind::Listen
        }
        NodeEnum::UnlistenStmt(u) => {
            let channel = (!u.conditionname.is_empty()).then(|| u.conditionname.clone());
            c.add_effect(SessionEffect::Unlisten(channel));
            StatementKind::Unlisten
        }
        NodeEnum::NotifyStmt(_) => {
            c.mark_write(WriteReason::Notify);
            StatementKind::Notify
        }
        NodeEnum::PrepareStmt(p) => {
            let body_sql = p
                .query
                .as_ref()
                .and_then(|q| q.node.as_ref())
                .and_then(|q| q.to_ref().deparse(Default::default()).ok());
            c.add_effect(SessionEffect::Prepare {
                name: p.name.clone(),
                statement_sql: text.trim().to_string(),
                body_sql: body_sql.unwrap_or_default(),
            });
            StatementKind::Prepare
        }
        NodeEnum::ExecuteStmt(e) => {
            c.add_effect(SessionEffect::Execute { name: e.name.clone() });
            walk_query_parts(c, &e.params);
            StatementKind::Execute
        }
        NodeEnum::DeallocateStmt(d) => {
            let name = (!d.isall && !d.name.is_empty()).then(|| d.name.clone());
            c.add_effect(SessionEffect::Deallocate(name));
            StatementKind::Deallocate
        }
        NodeEnum::DiscardStmt(d) => {
            use protobuf::DiscardMode as M;
            let target = match M::try_from(d.target) {
                Ok(M::DiscardPlans) => DiscardTarget::Plans,
                Ok(M::DiscardSequences) => DiscardTarget::Sequences,
                Ok(M::DiscardTemp) => DiscardTarget::Temp,
                _ => DiscardTarget::All,
            };
            c.add_effect(SessionEffect::Discard(target));
            StatementKind::Discard
        }
        NodeEnum::DeclareCursorStmt(d) => {
            c.add_effect(SessionEffect::DeclareCursor {
                name: d.portalname.clone(),
                with_hold: d.options & CURSOR_OPT_HOLD != 0,
            });
            if let Some(q) = &d.query {
                c.walk_statement(q, Ctx::Query);
            }
            StatementKind::DeclareCursor
        }
        NodeEnum::FetchStmt(_) => StatementKind::Fetch,
        NodeEnum::ClosePortalStmt(p) => {
            let name = (!p.portalname.is_empty()).then(|| p.portalname.clone());
            c.add_effect(SessionEffect::CloseCursor(name));
            StatementKind::CloseCursor
        }
        NodeEnum::LoadStmt(_) => {
            c.add_effect(SessionEffect::Load);
            StatementKind::Utility
        }
        _ => return None,
    };
    Some(kind)
}

fn walk_query_parts(c: &mut Collector, nodes: &[Node]) {
    for n in nodes {
        c.walk_statement(n, Ctx::Query);
    }
}

/// Everything else: COPY, EXPLAIN, LOCK, maintenance, CALL, DO and DDL.
fn utility(node: &NodeEnum, stmt: &Node, c: &mut Collector, top: &mut TopLevel) -> StatementKind {
    match node {
        NodeEnum::CopyStmt(copy) => copy_statement(copy, stmt, c),
        NodeEnum::ExplainStmt(e) => explain(e, c, top),
        NodeEnum::LockStmt(_) => {
            c.mark_write(WriteReason::Lock);
            c.walk_statement(stmt, Ctx::Maintenance);
            StatementKind::Lock
        }
        NodeEnum::VacuumStmt(_) => {
            c.mark_write(WriteReason::Maintenance);
            c.walk_statement(stmt, Ctx::Maintenance);
            StatementKind::Vacuum
        }
        NodeEnum::CheckPointStmt(_) | NodeEnum::ClusterStmt(_) | NodeEnum::ReindexStmt(_) => {
            c.mark_write(WriteReason::Maintenance);
            c.walk_statement(stmt, Ctx::Maintenance);
            StatementKind::Utility
        }
        NodeEnum::AlterSystemStmt(_) => {
            c.mark_write(WriteReason::Maintenance);
            StatementKind::Utility
        }
        NodeEnum::CallStmt(_) => {
            c.mark_write(WriteReason::Call);
            top.invalidates_everything = true;
            c.walk_statement(stmt, Ctx::Query);
            StatementKind::Call
        }
        NodeEnum::DoStmt(d) => {
            c.mark_write(WriteReason::Do);
            top.invalidates_everything = true;
            if do_body_may_change_session(d) {
                c.add_effect(SessionEffect::SessionCode);
            }
            StatementKind::Do
        }
        // Empties its tables and leaves the catalog as it was: a write of those tables, not DDL
        // (the result cache drops what reads them, not everything, and reads no catalog again).
        NodeEnum::TruncateStmt(_) => {
            c.mark_write(WriteReason::Ddl);
            ddl_targets(node, c, top);
            c.walk_statement(stmt, Ctx::Ddl);
            StatementKind::Truncate
        }
        _ => {
            c.mark_write(WriteReason::Ddl);
            ddl_targets(node, c, top);
            temporary_named_object(node, c);
            unqualified_creation(node, c);
            c.walk_statement(stmt, Ctx::Ddl);
            StatementKind::Ddl
        }
    }
}

fn copy_statement(copy: &protobuf::CopyStmt, stmt: &Node, c: &mut Collector) -> StatementKind {
    let to_server = !copy.filename.is_empty() || copy.is_program;
    if copy.is_from {
        c.mark_write(WriteReason::CopyFrom);
    } else if to_server {
        c.mark_write(WriteReason::CopyToServer);
    }
    if let Some(rv) = &copy.relation {
        if copy.is_from {
            c.add_written(table_ref(rv));
        } else {
            c.add_read(table_ref(rv));
        }
    }
    // The relation is recorded above; the rest (a query, a WHERE clause) is walked as a query.
    if let Some(q) = &copy.query {
        c.walk_statement(q, Ctx::Query);
    }
    if let Some(w) = &copy.where_clause {
        c.walk_statement(w, Ctx::Query);
    }
    let _ = stmt;
    StatementKind::Copy(if copy.is_from { CopyDirection::From } else { CopyDirection::To })
}

/// EXPLAIN plans without running; EXPLAIN ANALYZE runs the statement, writes included.
fn explain(e: &protobuf::ExplainStmt, c: &mut Collector, top: &mut TopLevel) -> StatementKind {
    let analyze = e.options.iter().any(|o| match &o.node {
        Some(NodeEnum::DefElem(d)) if d.defname == "analyze" => d.arg.as_deref().is_none_or(defelem_true),
        _ => false,
    });
    let Some(query) = &e.query else { return StatementKind::Explain { analyze } };
    let was_executing = c.executes;
    c.executes = was_executing && analyze;
    let inner = analyze_top(query, "", c);
    c.executes = was_executing;
    if analyze && inner.invalidates_everything {
        top.invalidates_everything = true;
    }
    if let Some(NodeEnum::ExecuteStmt(ex)) = &query.node {
        // The prepared statement must exist on the server even when it only gets planned.
        c.add_effect(SessionEffect::Execute { name: ex.name.clone() });
    }
    StatementKind::Explain { analyze }
}

/// DDL whose effect reaches beyond the relations the walk finds: dropped relations (named as lists,
/// not RangeVars), CASCADE, schemas, functions (cached results of immutable functions depend on them).
fn ddl_targets(node: &NodeEnum, c: &mut Collector, top: &mut TopLevel) {
    use protobuf::{DropBehavior, ObjectType as O};
    match node {
        NodeEnum::DropStmt(d) => {
            let kind = O::try_from(d.remove_type).unwrap_or(O::Undefined);
            let relation_like = matches!(
                kind,
                O::ObjectTable | O::ObjectView | O::ObjectMatview | O::ObjectForeignTable | O::ObjectSequence
            );
            if relation_like {
                for object in &d.objects {
                    if let Some(table) = qualified_name(object) {
                        c.add_written(table);
                    }
                }
            }
            let cascade = d.behavior == DropBehavior::DropCascade as i32;
            if cascade || !relation_like && kind != O::ObjectIndex {
                top.invalidates_everything = true;
            }
        }
        // CASCADE empties tables that reference these; RESTART IDENTITY resets their sequences.
        NodeEnum::TruncateStmt(t) if t.behavior == DropBehavior::DropCascade as i32 || t.restart_seqs => {
            top.invalidates_everything = true;
        }
        NodeEnum::CreateFunctionStmt(_)
        | NodeEnum::AlterFunctionStmt(_)
        | NodeEnum::CreateSchemaStmt(_)
        | NodeEnum::DropOwnedStmt(_)
        | NodeEnum::ReassignOwnedStmt(_)
        | NodeEnum::AlterExtensionStmt(_)
        | NodeEnum::CreateExtensionStmt(_)
        | NodeEnum::AlterObjectSchemaStmt(_)
        | NodeEnum::RenameStmt(_)
        | NodeEnum::AlterOwnerStmt(_)
        | NodeEnum::CreatePolicyStmt(_)
        | NodeEnum::AlterPolicyStmt(_)
        | NodeEnum::AlterRoleStmt(_)
        | NodeEnum::GrantRoleStmt(_) => top.invalidates_everything = true,
        _ => {}
    }
}

/// Objects named by a list of strings rather than a RangeVar (functions, procedures, aggregates,
/// operators, types, domains) created in the session's temporary schema: like a temporary table,
/// only the session that made them can see them, so they pin it. Relations, views and sequences
/// are RangeVars, found by the tree walk.
fn temporary_named_object(node: &NodeEnum, c: &mut Collector) {
    let Some(name) = list_named_creation(node) else { return };
    let in_temp_schema = |object: &TableRef| object.schema.as_deref().is_some_and(is_temp_schema);
    if let Some(object) = name_of_parts(name).filter(in_temp_schema) {
        c.add_effect(SessionEffect::CreateTemporary(object));
    }
}

/// The object a CREATE makes when it names no schema (see SessionEffect::CreateUnqualified).
/// SELECT INTO is found with the query's INTO clause (collector.rs).
fn unqualified_creation(node: &NodeEnum, c: &mut Collector) {
    let relation = match node {
        NodeEnum::CreateStmt(s) => s.relation.as_ref(),
        NodeEnum::CreateTableAsStmt(s) => s.into.as_ref().and_then(|i| i.rel.as_ref()),
        NodeEnum::ViewStmt(s) => s.view.as_ref(),
        NodeEnum::CreateSeqStmt(s) => s.sequence.as_ref(),
        NodeEnum::CompositeTypeStmt(s) => s.typevar.as_ref(),
        _ => None,
    };
    if let Some(rv) = relation {
        if rv.schemaname.is_empty() && rv.relpersistence != "t" {
            c.add_effect(SessionEffect::CreateUnqualified(table_ref(rv)));
        }
        return;
    }
    let Some(name) = list_named_creation(node) else { return };
    if let Some(object) = name_of_parts(name).filter(|o| o.schema.is_none()) {
        c.add_effect(SessionEffect::CreateUnqualified(object));
    }
}

/// The name of an object a CREATE names with a list of strings (not a RangeVar).
fn list_named_creation(node: &NodeEnum) -> Option<&[Node]> {
    Some(match node {
        NodeEnum::CreateFunctionStmt(f) => &f.funcname,
        NodeEnum::DefineStmt(d) => &d.defnames,
        NodeEnum::CreateDomainStmt(d) => &d.domainname,
        NodeEnum::CreateEnumStmt(e) => &e.type_name,
        NodeEnum::CreateRangeStmt(r) => &r.type_name,
        NodeEnum::CreateConversionStmt(c) => &c.conversion_name,
        NodeEnum::CreateOpFamilyStmt(f) => &f.opfamilyname,
        NodeEnum::CreateOpClassStmt(o) => &o.opclassname,
        _ => return None,
    })
}

/// A `List` of `String`s naming a relation (DROP TABLE a.b).
fn qualified_name(node: &Node) -> Option<TableRef> {
    let Some(NodeEnum::List(list)) = &node.node else { return None };
    name_of_parts(&list.items)
}

/// The object a dotted name (`String` nodes) designates, with the schema when one is given.
fn name_of_parts(items: &[Node]) -> Option<TableRef> {
    let parts: Vec<&str> = items.iter().filter_map(string_of).collect();
    let (&name, qualifiers) = parts.split_last()?;
    Some(TableRef::new(qualifiers.last().copied(), name))
}

fn transaction(t: &protobuf::TransactionStmt) -> TxnControl {
    use protobuf::TransactionStmtKind as K;
    match K::try_from(t.kind).unwrap_or(K::Undefined) {
        K::TransStmtBegin | K::TransStmtStart | K::Undefined => TxnControl::Begin(txn_options(&t.options)),
        K::TransStmtCommit => TxnControl::Commit { chain: t.chain },
        K::TransStmtRollback => TxnControl::Rollback { chain: t.chain },
        K::TransStmtSavepoint => TxnControl::Savepoint(t.savepoint_name.clone()),
        K::TransStmtRelease => TxnControl::Release(t.savepoint_name.clone()),
        K::TransStmtRollbackTo => TxnControl::RollbackTo(t.savepoint_name.clone()),
        K::TransStmtPrepare => TxnControl::PrepareTransaction(t.gid.clone()),
        K::TransStmtCommitPrepared => TxnControl::CommitPrepared(t.gid.clone()),
        K::TransStmtRollbackPrepared => TxnControl::RollbackPrepared(t.gid.clone()),
    }
}

/// The `transaction_isolation` / `transaction_read_only` / `transaction_deferrable` DefElems of BEGIN,
/// START TRANSACTION and SET TRANSACTION.
fn txn_options(options: &[Node]) -> TxnOptions {
    let mut opts = TxnOptions::default();
    for option in options {
        let Some(NodeEnum::DefElem(d)) = &option.node else { continue };
        let Some(arg) = d.arg.as_deref() else { continue };
        // A mode given twice takes the last (`READ WRITE, READ ONLY` is read only), but a standby
        // refuses the read-write or serializable one as it comes: such a transaction counts as
        // read-write or serializable wherever the option stands.
        match d.defname.as_str() {
            "transaction_read_only" => {
                opts.read_only = Some(opts.read_only != Some(false) && defelem_true(arg))
            }
            "transaction_deferrable" => opts.deferrable = Some(defelem_true(arg)),
            "transaction_isolation" if opts.isolation != Some(IsolationLevel::Serializable) => {
                opts.isolation = match const_text(arg).as_deref() {
                    Some("serializable") => Some(IsolationLevel::Serializable),
                    Some("repeatable read") => Some(IsolationLevel::RepeatableRead),
                    Some("read committed") => Some(IsolationLevel::ReadCommitted),
                    Some("read uncommitted") => Some(IsolationLevel::ReadUncommitted),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    opts
}

fn const_text(node: &Node) -> Option<String> {
    match &node.node {
        Some(NodeEnum::AConst(c)) => match c.val.as_ref()? {
            protobuf::a_const::Val::Sval(s) => Some(s.sval.to_ascii_lowercase()),
            protobuf::a_const::Val::Ival(i) => Some(i.ival.to_string()),
            protobuf::a_const::Val::Boolval(b) => Some(b.boolval.to_string()),
            protobuf::a_const::Val::Fval(f) => Some(f.fval.clone()),
            protobuf::a_const::Val::Bsval(b) => Some(b.bsval.clone()),
        },
        Some(NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
        Some(NodeEnum::Integer(i)) => Some(i.ival.to_string()),
        Some(NodeEnum::Boolean(b)) => Some(b.boolval.to_string()),
        _ => None,
    }
}

/// A DefElem argument meaning true (`true`, `on`, `1`, absent handled by the caller).
fn defelem_true(node: &Node) -> bool {
    matches!(const_text(node).as_deref(), Some("true" | "on" | "1" | "yes"))
}

/// Whether a DO block's code may change what outlives it in the session (a setting, a temporary
/// table, an advisory lock, a listen, a prepared statement made or dropped). Its effects cannot be known without
/// running it, so any mention of these words counts; `set` also matches `UPDATE ... SET`, which
/// errs the safe way (the client keeps its server).
fn do_body_may_change_session(d: &protobuf::DoStmt) -> bool {
    let body = d.args.iter().find_map(|a| match &a.node {
        Some(NodeEnum::DefElem(e)) if e.defname == "as" => e.arg.as_deref().and_then(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
            _ => None,
        }),
        _ => None,
    });
    let Some(body) = body else { return true };
    ["set", "temp", "advisory", "listen", "prepare", "load", "declare", "deallocate", "discard"]
        .iter()
        .any(|w| body.contains(w))
}

/// SET SESSION CHARACTERISTICS AS TRANSACTION ...: the session defaults it changes, as the
/// settings PostgreSQL keeps them in.
fn session_characteristics(options: &TxnOptions) -> Vec<SetCommand> {
    let set = |name: &str, value: &str| SetCommand {
        scope: SetScope::Session,
        action: SetAction::Set { name: name.to_string(), value: format!("'{value}'") },
    };
    let mut out = Vec::new();
    if let Some(level) = options.isolation {
        let value = match level {
            IsolationLevel::ReadUncommitted => "read uncommitted",
            IsolationLevel::ReadCommitted => "read committed",
            IsolationLevel::RepeatableRead => "repeatable read",
            IsolationLevel::Serializable => "serializable",
        };
        out.push(set("default_transaction_isolation", value));
    }
    if let Some(read_only) = options.read_only {
        out.push(set("default_transaction_read_only", if read_only { "on" } else { "off" }));
    }
    if let Some(deferrable) = options.deferrable {
        out.push(set("default_transaction_deferrable", if deferrable { "on" } else { "off" }));
    }
    out
}

enum SetOutcome {
    Setting(SetCommand),
    Transaction(TxnControl),
    /// SET ... FROM CURRENT: the value is whatever the server has, unknown here.
    Dynamic,
}

fn set_statement(s: &protobuf::VariableSetStmt) -> SetOutcome {
    use protobuf::VariableSetKind as K;
    let scope = if s.is_local { SetScope::Local } else { SetScope::Session };
    let name = s.name.to_ascii_lowercase();
    let action = match K::try_from(s.kind).unwrap_or(K::Undefined) {
        K::VarSetMulti if name == "transaction" => {
            return SetOutcome::Transaction(TxnControl::SetTransaction(txn_options(&s.args)))
        }
        K::VarSetMulti if name == "session characteristics" => {
            return SetOutcome::Transaction(TxnControl::SetSessionCharacteristics(txn_options(&s.args)))
        }
        K::VarSetValue => SetAction::Set { name, value: set_value(s) },
        K::VarSetDefault => SetAction::SetDefault { name },
        K::VarReset => SetAction::Reset { name },
        K::VarResetAll => SetAction::ResetAll,
        K::VarSetCurrent | K::VarSetMulti | K::Undefined => return SetOutcome::Dynamic,
    };
    SetOutcome::Setting(SetCommand { scope, action })
}

/// The value list of `SET name = v1, v2` as SQL text. Anything but plain constants (SET TIME ZONE
/// INTERVAL '+02:00' HOUR TO MINUTE arrives as a type cast) is taken from the deparsed statement.
fn set_value(s: &protobuf::VariableSetStmt) -> String {
    let constants: Option<Vec<String>> = s
        .args
        .iter()
        .map(|a| match &a.node {
            Some(NodeEnum::AConst(c)) => {
                Some(c.val.as_ref().map(render_const).unwrap_or_else(|| "NULL".to_string()))
            }
            _ => None,
        })
        .collect();
    if let Some(parts) = constants {
        return parts.join(", ");
    }
    let stmt = NodeEnum::VariableSetStmt(s.clone());
    let sql = stmt.to_ref().deparse(Default::default()).unwrap_or_default();
    if let Some(at) = sql.find(" TIME ZONE ") {
        return sql[at + " TIME ZONE ".len()..].trim().to_string();
    }
    match sql.find(" TO ").or_else(|| sql.find(" = ")) {
        Some(at) => sql[at + 3..].trim().to_string(),
        None => sql,
    }
}
