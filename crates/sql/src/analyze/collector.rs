//! The tree visitor that gathers tables, functions, locking clauses, writing CTEs and function-driven
//! session effects from anywhere in a statement.

use pg_query::protobuf::{self, node::Node as NodeEnum, Node};
use pg_query::NodeRef;

use crate::route::XID_AND_WAL_POSITION_BUILTINS;
use crate::statement::{
    quote_literal, FuncRef, LockStrength, ReadShape, SessionEffect, SetAction, SetCommand, SetScope,
    TableRef, ValueFunction, WriteReason,
};
use crate::walk::{walk_node, Visitor};

/// How a relation named at the current point of the tree is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ctx {
    /// Inside a query: relations are read (DML targets are handled by their statement).
    Query,
    /// Inside DDL outside any query: relations named are changed.
    Ddl,
    /// LOCK, VACUUM, ANALYZE, CLUSTER, REINDEX: relations are named but their rows do not change.
    Maintenance,
}

/// Everything gathered while walking the statements of one text.
#[derive(Debug, Default)]
pub(super) struct Collector {
    pub tables_read: Vec<TableRef>,
    pub tables_written: Vec<TableRef>,
    pub functions: Vec<FuncRef>,
    pub operators: Vec<FuncRef>,
    pub cast_types: Vec<FuncRef>,
    pub input_casts: Vec<FuncRef>,
    pub selected_fields: Vec<String>,
    pub value_functions: Vec<ValueFunction>,
    pub settings: Vec<SetCommand>,
    pub session_effects: Vec<SessionEffect>,
    pub shape: ReadShape,
    pub write_reason: Option<WriteReason>,
    /// A write that changes data (not only advisory locks) was found.
    pub writes_data: bool,
    /// False while walking what EXPLAIN without ANALYZE only plans: nothing there runs.
    pub executes: bool,
    ctx: Vec<Ctx>,
    /// CTE names in scope, one frame per statement node that can carry a WITH clause.
    cte_frames: Vec<Vec<String>>,
    /// Depth of CTE bodies being walked (a DML statement inside one is a writing CTE).
    cte_depth: usize,
    /// RangeVars already recorded by their statement (DML targets, INTO targets).
    handled: Vec<*const protobuf::RangeVar>,
}

impl Collector {
    pub fn new() -> Collector {
        Collector { executes: true, ..Collector::default() }
    }

    /// Walks one top-level statement with `ctx` as the context of relations named outside queries.
    pub fn walk_statement(&mut self, stmt: &Node, ctx: Ctx) {
        self.ctx.push(ctx);
        walk_node(self, stmt);
        self.ctx.pop();
    }

    pub fn mark_write(&mut self, reason: WriteReason) {
        if self.executes && self.write_reason.is_none() {
            self.write_reason = Some(reason);
        }
        self.writes_data |= self.executes;
    }

    /// An advisory lock taken or given back: state a standby cannot hold, but no data a later
    /// read could see.
    fn mark_lock(&mut self) {
        if self.executes && self.write_reason.is_none() {
            self.write_reason = Some(WriteReason::StateChangingFunction);
        }
    }

    pub fn add_read(&mut self, table: TableRef) {
        push_unique(&mut self.tables_read, table);
    }

    pub fn add_written(&mut self, table: TableRef) {
        if self.executes {
            push_unique(&mut self.tables_written, table);
        } else {
            push_unique(&mut self.tables_read, table);
        }
    }

    pub fn add_effect(&mut self, effect: SessionEffect) {
        if self.executes && !self.session_effects.contains(&effect) {
            self.session_effects.push(effect);
        }
    }

    /// Records a DML or INTO target as written and keeps the walk from also counting it as read.
    fn claim_target(&mut self, rv: &protobuf::RangeVar) {
        self.handled.push(rv as *const _);
        let table = table_ref(rv);
        if is_temporary(rv) {
            self.add_effect(SessionEffect::CreateTemporary(table.clone()));
        }
        self.add_written(table);
    }

    fn in_cte_scope(&self, name: &str) -> bool {
        self.cte_frames.iter().any(|frame| frame.iter().any(|cte| cte == name))
    }

    fn range_var(&mut self, rv: &protobuf::RangeVar) {
        if self.handled.contains(&(rv as *const _)) {
            return;
        }
        if rv.schemaname.is_empty() && self.in_cte_scope(&rv.relname) {
            return;
        }
        let table = table_ref(rv);
        if is_system_name(&table) {
            self.shape.system_catalog = true;
        }
        match self.ctx.last().copied().unwrap_or(Ctx::Query) {
            Ctx::Ddl => {
                if is_temporary(rv) {
                    self.add_effect(SessionEffect::CreateTemporary(table.clone()));
                }
                self.add_written(table);
            }
            Ctx::Query | Ctx::Maintenance => self.add_read(table),
        }
    }

    /// A DML statement anywhere: its target is written; inside a CTE it is a writing CTE.
    fn dml(&mut self, target: Option<&protobuf::RangeVar>) {
        if self.cte_depth > 0 {
            self.shape.writing_cte = true;
            self.mark_write(WriteReason::WritingCte);
        } else {
            self.mark_write(WriteReason::Dml);
        }
        if let Some(rv) = target {
            self.claim_target(rv);
        }
    }

    /// Walks the CTEs of a WITH clause: a non-recursive CTE sees only the CTEs before it (a CTE that
    /// names itself reads the table of that name), a recursive one sees them all.
    fn with_clause(&mut self, with: &protobuf::WithClause) {
        let all = self.cte_frames.pop().unwrap_or_default();
        for (i, cte_node) in with.ctes.iter().enumerate() {
            let Some(NodeEnum::CommonTableExpr(cte)) = &cte_node.node else { continue };
            let visible = if with.recursive { all.clone() } else { all[..i.min(all.len())].to_vec() };
            self.cte_frames.push(visible);
            self.cte_depth += 1;
            if let Some(query) = &cte.ctequery {
                walk_node(self, query);
            }
            self.cte_depth -= 1;
            self.cte_frames.pop();
        }
        self.cte_frames.push(all);
    }

    fn select(&mut self, s: &protobuf::SelectStmt) {
        if let Some(into) = &s.into_clause {
            self.shape.select_into = true;
            self.mark_write(WriteReason::SelectInto);
            if let Some(rv) = &into.rel {
                self.claim_target(rv);
                if rv.schemaname.is_empty() && !is_temporary(rv) {
                    self.add_effect(SessionEffect::CreateUnqualified(table_ref(rv)));
                }
            }
        }
    }

    fn func_call(&mut self, call: &protobuf::FuncCall) {
        let names: Vec<&str> = call.funcname.iter().filter_map(string_of).collect();
        let Some((&name, qualifiers)) = names.split_last() else { return };
        let func = FuncRef::new(qualifiers.last().copied(), name);
        self.builtin_effects(&func, call);
        push_unique(&mut self.functions, func);
    }

    /// An operator named by a list (`###`, or `app.###` written `OPERATOR(app.###)`).
    fn operator(&mut self, name: &[Node]) {
        let names: Vec<&str> = name.iter().filter_map(string_of).collect();
        let Some((&op, qualifiers)) = names.split_last() else { return };
        push_unique(&mut self.operators, FuncRef::new(qualifiers.last().copied(), op));
    }

    fn a_expr(&mut self, e: &protobuf::AExpr) {
        use protobuf::AExprKind as K;
        match K::try_from(e.kind) {
            // The name is the keyword; the comparisons are these operators.
            Ok(K::AexprBetween | K::AexprNotBetween | K::AexprBetweenSym | K::AexprNotBetweenSym) => {
                for op in [">=", "<="] {
                    push_unique(&mut self.operators, FuncRef::new(None, op));
                }
            }
            _ => self.operator(&e.name),
        }
    }

    /// A name selected from a row with a dot: `a.name`, `s.t.name`, `(row).name`.
    fn selected_field(&mut self, name: Option<&str>) {
        if let Some(name) = name {
            if !self.selected_fields.iter().any(|f| f == name) {
                self.selected_fields.push(name.to_string());
            }
        }
    }

    fn type_cast(&mut self, tc: &protobuf::TypeCast) {
        let Some(type_name) = &tc.type_name else { return };
        let names: Vec<&str> = type_name.names.iter().filter_map(string_of).collect();
        let Some((&name, qualifiers)) = names.split_last() else { return };
        if !tc.arg.as_deref().is_some_and(settled_time_input) {
            self.input_type(type_name);
        }
        push_unique(&mut self.cast_types, FuncRef::new(qualifiers.last().copied(), name));
    }

    /// A type a value read at run time is converted to: a built-in date/time type reads 'now'
    /// as the current time; any other may be a composite, domain, array or range over one, which
    /// the catalog tells (`input_casts`).
    fn input_type(&mut self, type_name: &protobuf::TypeName) {
        let names: Vec<&str> = type_name.names.iter().filter_map(string_of).collect();
        let Some((&name, qualifiers)) = names.split_last() else { return };
        if takes_time_words(qualifiers, name) {
            self.shape.time_input = true;
        } else {
            push_unique(&mut self.input_casts, FuncRef::new(qualifiers.last().copied(), name));
        }
    }

    /// Built-in functions whose effect the grammar alone can see: sequences, advisory locks,
    /// NOTIFY, and settings changed through set_config.
    fn builtin_effects(&mut self, func: &FuncRef, call: &protobuf::FuncCall) {
        if func.schema.as_deref().is_some_and(|s| s != "pg_catalog") {
            return;
        }
        match func.name.as_str() {
            "nextval" | "setval" => self.mark_write(WriteReason::StateChangingFunction),
            name if XID_AND_WAL_POSITION_BUILTINS.contains(&name) => {
                self.mark_write(WriteReason::StateChangingFunction)
            }
            "pg_notify" => self.mark_write(WriteReason::Notify),
            "pg_advisory_lock"
            | "pg_advisory_lock_shared"
            | "pg_try_advisory_lock"
            | "pg_try_advisory_lock_shared" => {
                self.mark_lock();
                self.add_effect(SessionEffect::AdvisoryLockSession);
            }
            "pg_advisory_unlock" | "pg_advisory_unlock_shared" | "pg_advisory_unlock_all" => {
                self.mark_lock();
                self.add_effect(SessionEffect::AdvisoryUnlock);
            }
            name if name.starts_with("pg_advisory_xact_lock")
                || name.starts_with("pg_try_advisory_xact_lock") =>
            {
                self.mark_lock()
            }
            "set_config" => self.set_config(call),
            _ => {}
        }
    }

    fn set_config(&mut self, call: &protobuf::FuncCall) {
        if !self.executes {
            return;
        }
        let args: Vec<Option<&protobuf::a_const::Val>> = call.args.iter().map(const_of).collect();
        // A value computed at run time (asyncpg's set_config('jit', $1, false)) is read back from
        // the server, as every set_config's is: only a name not written out pins the session.
        let command = match args.as_slice() {
            [Some(protobuf::a_const::Val::Sval(name)), value, Some(protobuf::a_const::Val::Boolval(local))] => {
                Some((
                    name.sval.to_ascii_lowercase(),
                    value.map(plain_const).unwrap_or_default(),
                    local.boolval,
                ))
            }
            _ => None,
        };
        match command {
            Some((name, value, is_local)) => self.settings.push(SetCommand {
                scope: if is_local { SetScope::Local } else { SetScope::Session },
                action: SetAction::SetConfig { name, value },
            }),
            None => self.add_effect(SessionEffect::SetConfigDynamic),
        }
    }

    fn value_function(&mut self, f: &protobuf::SqlValueFunction) {
        use protobuf::SqlValueFunctionOp as Op;
        let vf = match Op::try_from(f.op) {
            Ok(Op::SvfopCurrentDate) => ValueFunction::CurrentDate,
            Ok(Op::SvfopCurrentTime | Op::SvfopCurrentTimeN) => ValueFunction::CurrentTime,
            Ok(Op::SvfopCurrentTimestamp | Op::SvfopCurrentTimestampN) => ValueFunction::CurrentTimestamp,
            Ok(Op::SvfopLocaltime | Op::SvfopLocaltimeN) => ValueFunction::LocalTime,
            Ok(Op::SvfopLocaltimestamp | Op::SvfopLocaltimestampN) => ValueFunction::LocalTimestamp,
            Ok(Op::SvfopCurrentRole) => ValueFunction::CurrentRole,
            Ok(Op::SvfopCurrentUser) => ValueFunction::CurrentUser,
            Ok(Op::SvfopUser) => ValueFunction::User,
            Ok(Op::SvfopSessionUser) => ValueFunction::SessionUser,
            Ok(Op::SvfopCurrentCatalog) => ValueFunction::CurrentCatalog,
            Ok(Op::SvfopCurrentSchema) => ValueFunction::CurrentSchema,
            _ => ValueFunction::Other,
        };
        if !self.value_functions.contains(&vf) {
            self.value_functions.push(vf);
        }
    }

    fn locking_clause(&mut self, clause: &protobuf::LockingClause) {
        use protobuf::LockClauseStrength as S;
        let strength = match S::try_from(clause.strength) {
            Ok(S::LcsForkeyshare) => LockStrength::ForKeyShare,
            Ok(S::LcsForshare) => LockStrength::ForShare,
            Ok(S::LcsFornokeyupdate) => LockStrength::ForNoKeyUpdate,
            _ => LockStrength::ForUpdate,
        };
        self.shape.locking = self.shape.locking.max(Some(strength));
        self.mark_write(WriteReason::Locking);
    }

    /// Statement nodes that open a CTE scope push a frame on enter and pop it on leave.
    fn with_frame(node: NodeRef<'_>) -> Option<Option<&protobuf::WithClause>> {
        match node {
            NodeRef::SelectStmt(s) => Some(s.with_clause.as_ref()),
            NodeRef::InsertStmt(s) => Some(s.with_clause.as_ref()),
            NodeRef::UpdateStmt(s) => Some(s.with_clause.as_ref()),
            NodeRef::DeleteStmt(s) => Some(s.with_clause.as_ref()),
            NodeRef::MergeStmt(s) => Some(s.with_clause.as_ref()),
            _ => None,
        }
    }
}

impl Visitor for Collector {
    fn enter(&mut self, node: NodeRef<'_>) -> bool {
        if let Some(with) = Collector::with_frame(node) {
            let names = with.map(cte_names).unwrap_or_default();
            self.cte_frames.push(names);
            self.ctx.push(Ctx::Query);
        }
        match node {
            NodeRef::RangeVar(rv) => self.range_var(rv),
            NodeRef::SelectStmt(s) => self.select(s),
            NodeRef::InsertStmt(s) => self.dml(s.relation.as_ref()),
            NodeRef::UpdateStmt(s) => self.dml(s.relation.as_ref()),
            NodeRef::DeleteStmt(s) => self.dml(s.relation.as_ref()),
            NodeRef::MergeStmt(s) => self.dml(s.relation.as_ref()),
            NodeRef::WithClause(w) => {
                self.with_clause(w);
                return false;
            }
            NodeRef::FuncCall(f) => self.func_call(f),
            NodeRef::AExpr(e) => self.a_expr(e),
            NodeRef::SubLink(l) => self.operator(&l.oper_name),
            NodeRef::SortBy(b) => self.operator(&b.use_op),
            NodeRef::TypeCast(tc) => self.type_cast(tc),
            // Columns read out of a document: even a constant one, as XPath and JSON path can
            // build the words from its pieces.
            NodeRef::RangeTableFuncCol(c) => c.type_name.iter().for_each(|t| self.input_type(t)),
            NodeRef::JsonTableColumn(c) => c.type_name.iter().for_each(|t| self.input_type(t)),
            NodeRef::ColumnRef(r) if r.fields.len() > 1 => {
                self.selected_field(r.fields.last().and_then(string_of))
            }
            NodeRef::AIndirection(i) => i.indirection.iter().for_each(|n| self.selected_field(string_of(n))),
            // CREATE TABLE AS EXECUTE, EXPLAIN ANALYZE EXECUTE: the prepared statement must exist.
            NodeRef::ExecuteStmt(e) => self.add_effect(SessionEffect::Execute { name: e.name.clone() }),
            NodeRef::SqlvalueFunction(f) => self.value_function(f),
            NodeRef::LockingClause(l) => self.locking_clause(l),
            NodeRef::ParamRef(p) => self.shape.max_param = self.shape.max_param.max(p.number.max(0) as u32),
            NodeRef::RangeTableSample(t) => self.shape.random_sample |= t.repeatable.is_none(),
            NodeRef::AConst(c) => {
                if let Some(protobuf::a_const::Val::Sval(s)) = &c.val {
                    if mentions_time_word(s.sval.as_bytes()) {
                        self.shape.time_literal = true;
                    }
                }
            }
            _ => {}
        }
        true
    }

    fn leave(&mut self, node: NodeRef<'_>) {
        if Collector::with_frame(node).is_some() {
            self.cte_frames.pop();
            self.ctx.pop();
        }
    }
}

fn cte_names(with: &protobuf::WithClause) -> Vec<String> {
    with.ctes
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::CommonTableExpr(cte)) => Some(cte.ctename.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn table_ref(rv: &protobuf::RangeVar) -> TableRef {
    let schema = (!rv.schemaname.is_empty()).then_some(rv.schemaname.as_str());
    TableRef::new(schema, &rv.relname)
}

fn is_temporary(rv: &protobuf::RangeVar) -> bool {
    rv.relpersistence == "t" || is_temp_schema(&rv.schemaname)
}

/// Whether objects created in `schema` live in the session's temporary schema: `pg_temp` is an alias
/// for it, and `pg_temp_N` is its real name (a session may only create objects in its own).
pub(super) fn is_temp_schema(schema: &str) -> bool {
    let session_number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    schema == "pg_temp" || schema.strip_prefix("pg_temp_").is_some_and(session_number)
}

fn is_system_name(table: &TableRef) -> bool {
    match table.schema.as_deref() {
        Some(schema) => {
            schema == "pg_catalog" || schema == "information_schema" || schema.starts_with("pg_toast")
        }
        None => table.name.starts_with("pg_"),
    }
}

/// A built-in type whose input function reads 'now', 'today' and the like as the current time
/// (its ranges and arrays too).
fn takes_time_words(qualifiers: &[&str], name: &str) -> bool {
    const TYPES: [&str; 11] = [
        "date",
        "time",
        "timetz",
        "timestamp",
        "timestamptz",
        "tsrange",
        "tstzrange",
        "daterange",
        "tsmultirange",
        "tstzmultirange",
        "datemultirange",
    ];
    qualifiers.iter().all(|q| *q == "pg_catalog") && TYPES.contains(&name)
}

/// A cast argument whose value is known not to be text read at run time: a constant or a
/// parameter (their values are checked for the words themselves), a value function (refused
/// anyway), a cast of one of these, a cast to a date/time type (which decides for itself), or a
/// row of such values.
fn settled_time_input(arg: &Node) -> bool {
    match &arg.node {
        Some(NodeEnum::AConst(_) | NodeEnum::ParamRef(_) | NodeEnum::SqlvalueFunction(_)) => true,
        Some(NodeEnum::RowExpr(row)) => row.args.iter().all(settled_time_input),
        Some(NodeEnum::TypeCast(inner)) => {
            let to_time = inner.type_name.as_ref().is_some_and(|t| {
                let names: Vec<&str> = t.names.iter().filter_map(string_of).collect();
                names.split_last().is_some_and(|(name, qualifiers)| takes_time_words(qualifiers, name))
            });
            to_time || inner.arg.as_deref().is_some_and(settled_time_input)
        }
        _ => false,
    }
}

/// Whether `text` holds a word PostgreSQL's date/time input turns into the current time when the
/// statement runs: a run of ASCII letters equal to one of the words, in any case. The word may be
/// anywhere a date/time input splits off a word: alone (`'now'`), beside a time (`'today 10:00'`),
/// or as an element of a range or an array (`'[now,infinity)'`, `'{now}'`). Any text with such a
/// word counts, whatever it is cast to: a read that is not cached is only slower, one that is
/// cached wrongly is stale.
pub fn mentions_time_word(text: &[u8]) -> bool {
    const WORDS: [&[u8]; 4] = [b"now", b"today", b"tomorrow", b"yesterday"];
    text.split(|b| !b.is_ascii_alphabetic()).any(|run| WORDS.iter().any(|w| run.eq_ignore_ascii_case(w)))
}

pub(super) fn string_of(node: &Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
        _ => None,
    }
}

/// The value of a constant argument (looking through a type cast).
fn const_of(node: &Node) -> Option<&protobuf::a_const::Val> {
    match &node.node {
        Some(NodeEnum::AConst(c)) => c.val.as_ref(),
        Some(NodeEnum::TypeCast(tc)) => tc.arg.as_deref().and_then(const_of),
        _ => None,
    }
}

/// A constant as SQL text a SET statement accepts.
pub(super) fn render_const(val: &protobuf::a_const::Val) -> String {
    use protobuf::a_const::Val;
    match val {
        Val::Ival(i) => i.ival.to_string(),
        Val::Fval(f) => f.fval.clone(),
        Val::Boolval(b) => if b.boolval { "true" } else { "false" }.to_string(),
        Val::Sval(s) => quote_literal(&s.sval),
        Val::Bsval(b) => quote_literal(&b.bsval),
    }
}

/// A constant as the plain string a text parameter receives (no quotes).
fn plain_const(val: &protobuf::a_const::Val) -> String {
    match val {
        protobuf::a_const::Val::Sval(s) => s.sval.clone(),
        protobuf::a_const::Val::Bsval(b) => b.bsval.clone(),
        other => render_const(other),
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}
