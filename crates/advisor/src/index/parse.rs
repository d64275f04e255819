//! From a statement's parse tree (the real PostgreSQL grammar, via pg_query) to what each table is
//! asked for: equality, range and join columns, sort and grouping keys, constant predicates that
//! could make a partial index, expressions, jsonb/full-text predicates that need GIN, and the columns
//! the statement reads (for INCLUDE).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Result};
use pg_query::protobuf::{self, AExprKind, BoolExprType, NullTestType, SortByDir};
use pg_query::NodeEnum;

use super::expr::{constant_sql, constant_text, deparse_expression, unqualify};
use crate::db::quote_ident;

/// The catalog questions the analysis needs answered. Tables are identified by oid.
pub trait Resolver {
    /// The oid of a table named in the statement (schema optional), if it is a plain or partitioned table.
    fn table(&self, schema: Option<&str>, name: &str) -> Option<u32>;
    /// True when the table has that column.
    fn has_column(&self, table: u32, column: &str) -> bool;
}

/// What a statement asks of one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableAccess {
    pub table: u32,
    /// Columns compared with `=` to a constant or parameter, or `IS NULL`.
    pub eq: BTreeSet<String>,
    /// Columns compared with `=` to a column of another table (the inner side of a join).
    pub join: BTreeSet<String>,
    /// Columns in `IN (...)` or `= ANY(...)`.
    pub in_list: BTreeSet<String>,
    /// Columns in `<`, `>`, `BETWEEN`.
    pub range: Vec<String>,
    /// Columns with `LIKE 'prefix%'`.
    pub prefix_like: BTreeSet<String>,
    /// ORDER BY columns with direction (true = DESC), when the whole ORDER BY is on this table.
    pub sort: Vec<(String, bool)>,
    /// GROUP BY columns, when the whole GROUP BY is on this table.
    pub group: Vec<String>,
    /// Predicates comparing a column with a constant (`status = 'pending'`, `deleted_at IS NULL`),
    /// written as an index predicate would be: column → SQL.
    pub constant_predicates: BTreeMap<String, String>,
    /// Indexable expressions (`lower(email)`, `(data ->> 'type')`) compared with a value.
    pub expressions: BTreeSet<String>,
    /// Columns or expressions used with GIN operators, with the operators seen.
    pub gin: BTreeMap<String, BTreeSet<String>>,
    /// Columns the statement reads from this table; None when it reads `*` or unknown expressions.
    pub projected: Option<BTreeSet<String>>,
    /// Columns an UPDATE of this table assigns: an index on one of them makes that update non-HOT.
    pub set_columns: BTreeSet<String>,
}

impl TableAccess {
    /// True when the statement filters, joins, sorts or groups this table at all.
    pub fn is_selective(&self) -> bool {
        !(self.eq.is_empty()
            && self.join.is_empty()
            && self.in_list.is_empty()
            && self.range.is_empty()
            && self.prefix_like.is_empty()
            && self.sort.is_empty()
            && self.group.is_empty()
            && self.constant_predicates.is_empty()
            && self.expressions.is_empty()
            && self.gin.is_empty())
    }
}

/// Everything the advisor needs from one statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatementShape {
    /// Per table, in the order they appear.
    pub accesses: Vec<TableAccess>,
    /// The highest `$n` in the statement (0 when it has no parameters).
    pub param_count: i32,
    /// `$n` → (table, column) it is compared with, to pick realistic values when measuring.
    pub param_columns: BTreeMap<i32, (u32, String)>,
    /// SELECT (true) or a data-modifying statement.
    pub read_only: bool,
    /// Function names used in indexable expressions, with their argument counts (checked for IMMUTABLE).
    pub expression_functions: BTreeSet<(String, usize)>,
    /// Expressions on one column that take a parameter (`to_tsvector($1, body)`): no index can
    /// match an expression whose value is only known when the statement runs.
    pub parameterized_expressions: BTreeSet<(u32, String)>,
}

/// Tables a statement names (schema, name), to look them up before analysing it.
pub fn referenced_tables(query: &str) -> Result<Vec<(Option<String>, String)>> {
    let parsed = pg_query::parse(query, 0).map_err(|e| anyhow!("does not parse: {e}"))?;
    let mut out = Vec::new();
    for (node, ..) in parsed.protobuf.nodes() {
        if let pg_query::NodeRef::RangeVar(rv) = node {
            let schema = (!rv.schemaname.is_empty()).then(|| rv.schemaname.clone());
            let entry = (schema, rv.relname.clone());
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    Ok(out)
}

/// Analyses one statement. Errors are for statements that do not parse or are not one statement.
pub fn analyse(query: &str, resolver: &dyn Resolver) -> Result<StatementShape> {
    let parsed = pg_query::parse(query, 0).map_err(|e| anyhow!("does not parse: {e}"))?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return Err(anyhow!("not a single statement"));
    };
    let stmt = raw.stmt.as_ref().and_then(|n| n.node.as_ref()).ok_or_else(|| anyhow!("empty statement"))?;
    let mut walker =
        Walker { resolver, accesses: Vec::new(), shape: StatementShape::default(), ctes: Vec::new() };
    walker.shape.read_only =
        matches!(stmt, NodeEnum::SelectStmt(s) if s.into_clause.is_none() && s.locking_clause.is_empty());
    match stmt {
        NodeEnum::SelectStmt(s) => {
            walker.select(s, None, Outputs::AllRead);
        }
        NodeEnum::UpdateStmt(u) => walker.update(u),
        NodeEnum::DeleteStmt(d) => walker.delete(d),
        NodeEnum::InsertStmt(i) => {
            if let Some(NodeEnum::SelectStmt(s)) = i.select_stmt.as_ref().and_then(|n| n.node.as_ref()) {
                walker.select(s, None, Outputs::AllRead);
            }
        }
        _ => return Err(anyhow!("not a SELECT, INSERT, UPDATE or DELETE")),
    }
    walker.shape.param_count = max_param(query);
    let mut shape = walker.shape;
    shape.accesses = walker.accesses;
    Ok(shape)
}

/// The highest `$n` in the statement, from the scanner: the tree walk does not reach every clause
/// (LIMIT $2 from pg_stat_statements, say).
fn max_param(query: &str) -> i32 {
    let Ok(scanned) = pg_query::scan(query) else { return 0 };
    scanned
        .tokens
        .iter()
        .filter(|t| t.token == protobuf::Token::Param as i32)
        .filter_map(|t| query.get(t.start as usize + 1..t.end as usize)?.parse::<i32>().ok())
        .max()
        .unwrap_or(0)
}

/// One FROM item visible in a query level: its name or alias, and the table behind it (None for
/// subqueries, CTEs and functions).
#[derive(Debug, Clone)]
struct ScopeEntry {
    name: String,
    table: Option<u32>,
    /// For a subquery (a view seen through, say): its output columns that are a table's column
    /// as they are, so a filter or sort on them outside is one on that table's column — where
    /// the planner pushes it down to.
    columns: Vec<DerivedColumn>,
}

/// An output column of a subquery that is a column of a table: (output name, table, column).
#[derive(Debug, Clone)]
struct DerivedColumn {
    name: String,
    table: u32,
    column: String,
}

#[derive(Debug, Clone, Default)]
struct Scope {
    entries: Vec<ScopeEntry>,
    /// The enclosing query level, for correlated subqueries.
    parent: Option<Box<Scope>>,
}

/// Who reads a SELECT's output columns.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outputs {
    /// The statement's result, a CTE's or a sublink's: every output column is read.
    AllRead,
    /// A subquery in FROM (a view seen through): an output that is a plain table column is read
    /// only when the enclosing query reads it. A view's `SELECT *` (which `pg_get_viewdef` spells
    /// out column by column) must not make an index cover every column of the view.
    ReadByEnclosingQuery,
}

/// What a side of a comparison is.
#[derive(Debug, Clone)]
enum Operand {
    Column(u32, String),
    /// An expression over exactly one column of one table, written without qualifiers.
    Expression(u32, String),
    Constant(String),
    Param(i32),
    /// A value computed without reading any column (`now() - interval '1 day'`, `to_tsquery($1)`).
    Value,
    /// Anything else (another expression, a subquery, a column we cannot place).
    Other,
}

struct Walker<'a> {
    resolver: &'a dyn Resolver,
    accesses: Vec<TableAccess>,
    shape: StatementShape,
    ctes: Vec<String>,
}

impl Walker<'_> {
    fn access(&mut self, table: u32) -> &mut TableAccess {
        if let Some(i) = self.accesses.iter().position(|a| a.table == table) {
            return &mut self.accesses[i];
        }
        self.accesses.push(TableAccess { table, projected: Some(BTreeSet::new()), ..Default::default() });
        self.accesses.last_mut().expect("just pushed")
    }

    fn with_clause(&mut self, with: Option<&protobuf::WithClause>) {
        let Some(with) = with else { return };
        for cte in &with.ctes {
            if let Some(NodeEnum::CommonTableExpr(c)) = &cte.node {
                self.ctes.push(c.ctename.clone());
                self.statement_node(c.ctequery.as_deref(), None);
            }
        }
    }

    fn statement_node(&mut self, node: Option<&protobuf::Node>, parent: Option<&Scope>) {
        match node.and_then(|n| n.node.as_ref()) {
            Some(NodeEnum::SelectStmt(s)) => {
                self.select(s, parent, Outputs::AllRead);
            }
            Some(NodeEnum::UpdateStmt(u)) => self.update(u),
            Some(NodeEnum::DeleteStmt(d)) => self.delete(d),
            _ => {}
        }
    }

    /// Walks one SELECT; returns its output columns that are plain table columns.
    fn select(
        &mut self,
        s: &protobuf::SelectStmt,
        parent: Option<&Scope>,
        outputs: Outputs,
    ) -> Vec<DerivedColumn> {
        self.with_clause(s.with_clause.as_ref());
        if let (Some(l), Some(r)) = (&s.larg, &s.rarg) {
            // A set operation's outputs are not traced to its arms' columns: all count as read.
            self.select(l, parent, Outputs::AllRead);
            self.select(r, parent, Outputs::AllRead);
            return Vec::new();
        }
        let mut scope = Scope { entries: Vec::new(), parent: parent.map(|p| Box::new(p.clone())) };
        let mut quals = Vec::new();
        for item in &s.from_clause {
            self.scope_item(item, &mut scope, &mut quals);
        }
        for q in quals.iter().chain(s.where_clause.as_deref()) {
            self.conjuncts(q, &scope);
        }
        self.sort(&s.sort_clause, &scope);
        self.group(&s.group_clause, &scope);
        self.projection(&s.target_list, &scope, outputs);
        if let Some(h) = s.having_clause.as_deref() {
            self.subqueries_in(h, &scope);
        }
        self.derived_columns(&s.target_list, &scope)
    }

    /// The output columns of a SELECT that are a table's column as they are (`o.user_id`,
    /// `o.created_at AS placed_at`).
    fn derived_columns(&self, targets: &[protobuf::Node], scope: &Scope) -> Vec<DerivedColumn> {
        let mut out = Vec::new();
        for target in targets {
            let Some(NodeEnum::ResTarget(rt)) = &target.node else { continue };
            let Some(NodeEnum::ColumnRef(c)) = rt.val.as_deref().and_then(|v| v.node.as_ref()) else {
                continue;
            };
            let Some((table, column)) = self.resolve(c, scope) else { continue };
            let name = if rt.name.is_empty() { column.clone() } else { rt.name.clone() };
            out.push(DerivedColumn { name, table, column });
        }
        out
    }

    fn update(&mut self, u: &protobuf::UpdateStmt) {
        self.data_modifying(
            u.with_clause.as_ref(),
            u.relation.as_ref(),
            &u.from_clause,
            u.where_clause.as_deref(),
        );
        self.assigned_columns(u);
    }

    /// Notes the columns an UPDATE's SET assigns on its target table.
    fn assigned_columns(&mut self, u: &protobuf::UpdateStmt) {
        let Some(rv) = u.relation.as_ref() else { return };
        let schema = (!rv.schemaname.is_empty()).then_some(rv.schemaname.as_str());
        let Some(table) = self.resolver.table(schema, &rv.relname) else { return };
        for target in &u.target_list {
            if let Some(NodeEnum::ResTarget(rt)) = &target.node {
                self.access(table).set_columns.insert(rt.name.clone());
            }
        }
    }

    fn delete(&mut self, d: &protobuf::DeleteStmt) {
        self.data_modifying(
            d.with_clause.as_ref(),
            d.relation.as_ref(),
            &d.using_clause,
            d.where_clause.as_deref(),
        );
    }

    /// UPDATE ... FROM and DELETE ... USING: the target table, the other tables, the filter.
    fn data_modifying(
        &mut self,
        with: Option<&protobuf::WithClause>,
        relation: Option<&protobuf::RangeVar>,
        others: &[protobuf::Node],
        filter: Option<&protobuf::Node>,
    ) {
        self.with_clause(with);
        let mut scope = Scope::default();
        let mut quals = Vec::new();
        if let Some(rv) = relation {
            self.range_var(rv, &mut scope);
        }
        for item in others {
            self.scope_item(item, &mut scope, &mut quals);
        }
        for q in quals.iter().chain(filter) {
            self.conjuncts(q, &scope);
        }
    }

    fn range_var(&mut self, rv: &protobuf::RangeVar, scope: &mut Scope) {
        let name = rv.alias.as_ref().map(|a| a.aliasname.clone()).unwrap_or_else(|| rv.relname.clone());
        let is_cte = rv.schemaname.is_empty() && self.ctes.contains(&rv.relname);
        let schema = (!rv.schemaname.is_empty()).then_some(rv.schemaname.as_str());
        let table = if is_cte { None } else { self.resolver.table(schema, &rv.relname) };
        if let Some(t) = table {
            self.access(t);
        }
        scope.entries.push(ScopeEntry { name, table, columns: Vec::new() });
    }

    fn scope_item(&mut self, item: &protobuf::Node, scope: &mut Scope, quals: &mut Vec<protobuf::Node>) {
        match &item.node {
            Some(NodeEnum::RangeVar(rv)) => self.range_var(rv, scope),
            Some(NodeEnum::JoinExpr(j)) => {
                for side in [&j.larg, &j.rarg].into_iter().flatten() {
                    self.scope_item(side, scope, quals);
                }
                if let Some(q) = &j.quals {
                    quals.push((**q).clone());
                }
            }
            Some(NodeEnum::RangeSubselect(sub)) => {
                let parent = sub.lateral.then(|| scope.clone());
                let columns = match sub.subquery.as_deref().and_then(|n| n.node.as_ref()) {
                    Some(NodeEnum::SelectStmt(select)) => {
                        self.select(select, parent.as_ref(), Outputs::ReadByEnclosingQuery)
                    }
                    _ => {
                        self.statement_node(sub.subquery.as_deref(), parent.as_ref());
                        Vec::new()
                    }
                };
                let name = sub.alias.as_ref().map(|a| a.aliasname.clone()).unwrap_or_default();
                scope.entries.push(ScopeEntry { name, table: None, columns });
            }
            Some(NodeEnum::RangeFunction(f)) => {
                let name = f.alias.as_ref().map(|a| a.aliasname.clone()).unwrap_or_default();
                scope.entries.push(ScopeEntry { name, table: None, columns: Vec::new() });
            }
            _ => {}
        }
    }

    /// Places a column reference: the table it belongs to, or None (outer subquery, unknown).
    fn resolve(&self, column: &protobuf::ColumnRef, scope: &Scope) -> Option<(u32, String)> {
        let names: Vec<&str> = column
            .fields
            .iter()
            .map(|f| match &f.node {
                Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let (qualifier, col) = match names.as_slice() {
            [col] => (None, *col),
            [.., q, col] => (Some(*q), *col),
            [] => return None,
        };
        let mut level = Some(scope);
        while let Some(s) = level {
            let found = match qualifier {
                Some(q) => s.entries.iter().find(|e| e.name == q),
                None => s.entries.iter().find(|e| {
                    e.table.is_some_and(|t| self.resolver.has_column(t, col))
                        || e.columns.iter().any(|d| d.name == col)
                }),
            };
            if let Some(entry) = found {
                return match entry.table {
                    Some(t) => Some((t, col.to_string())),
                    None => entry.columns.iter().find(|d| d.name == col).map(|d| (d.table, d.column.clone())),
                };
            }
            level = s.parent.as_deref();
        }
        None
    }

    fn conjuncts(&mut self, node: &protobuf::Node, scope: &Scope) {
        match &node.node {
            Some(NodeEnum::BoolExpr(b)) if b.boolop == BoolExprType::AndExpr as i32 => {
                for arg in &b.args {
                    self.conjuncts(arg, scope);
                }
            }
            Some(NodeEnum::BoolExpr(b)) if b.boolop == BoolExprType::NotExpr as i32 => {
                if let [arg] = b.args.as_slice() {
                    if let Some(NodeEnum::ColumnRef(c)) = &arg.node {
                        if let Some((t, col)) = self.resolve(c, scope) {
                            let pred = format!("NOT {}", quote_ident(&col));
                            self.access(t).constant_predicates.insert(col, pred);
                            return;
                        }
                    }
                }
                self.subqueries_in(node, scope);
            }
            Some(NodeEnum::AExpr(e)) => self.comparison(e, scope),
            Some(NodeEnum::NullTest(n)) => self.null_test(n, scope),
            Some(NodeEnum::ColumnRef(c)) => {
                if let Some((t, col)) = self.resolve(c, scope) {
                    let pred = quote_ident(&col);
                    let access = self.access(t);
                    access.constant_predicates.insert(col.clone(), pred);
                    access.eq.insert(col);
                }
            }
            Some(NodeEnum::BooleanTest(b)) => {
                if let Some(NodeEnum::ColumnRef(c)) = b.arg.as_ref().and_then(|a| a.node.as_ref()) {
                    if let Some((t, col)) = self.resolve(c, scope) {
                        let test = match protobuf::BoolTestType::try_from(b.booltesttype) {
                            Ok(protobuf::BoolTestType::IsTrue) => "IS TRUE",
                            Ok(protobuf::BoolTestType::IsFalse) => "IS FALSE",
                            Ok(protobuf::BoolTestType::IsNotTrue) => "IS NOT TRUE",
                            Ok(protobuf::BoolTestType::IsNotFalse) => "IS NOT FALSE",
                            _ => return,
                        };
                        let pred = format!("{} {test}", quote_ident(&col));
                        self.access(t).constant_predicates.insert(col, pred);
                    }
                }
            }
            _ => self.subqueries_in(node, scope),
        }
    }

    fn null_test(&mut self, n: &protobuf::NullTest, scope: &Scope) {
        let Some(NodeEnum::ColumnRef(c)) = n.arg.as_ref().and_then(|a| a.node.as_ref()) else { return };
        let Some((t, col)) = self.resolve(c, scope) else { return };
        let is_null = n.nulltesttype == NullTestType::IsNull as i32;
        let pred = format!("{} {}", quote_ident(&col), if is_null { "IS NULL" } else { "IS NOT NULL" });
        let access = self.access(t);
        if is_null {
            access.eq.insert(col.clone());
        }
        access.constant_predicates.insert(col, pred);
    }

    fn comparison(&mut self, e: &protobuf::AExpr, scope: &Scope) {
        let op = operator_name(e);
        let left = e.lexpr.as_deref().map(|n| self.operand(n, scope)).unwrap_or(Operand::Other);
        let kind = AExprKind::try_from(e.kind).unwrap_or(AExprKind::Undefined);
        if kind != AExprKind::AexprOp {
            self.list_or_pattern(kind, &op, left, e.rexpr.as_deref());
            return;
        }
        let right = e.rexpr.as_deref().map(|n| self.operand(n, scope)).unwrap_or(Operand::Other);
        let (left, right, op) = match (&left, &right) {
            (
                Operand::Constant(_) | Operand::Param(_) | Operand::Value,
                Operand::Column(..) | Operand::Expression(..),
            ) => (right, left, flip(&op)),
            _ => (left, right, op),
        };
        match (left, right, op.as_str()) {
            (Operand::Column(t, col), Operand::Column(t2, col2), "=") if t != t2 => {
                self.access(t).join.insert(col);
                self.access(t2).join.insert(col2);
            }
            (
                Operand::Column(t, col),
                value @ (Operand::Constant(_) | Operand::Param(_) | Operand::Value),
                op,
            ) => {
                if let Operand::Param(n) = value {
                    self.shape.param_columns.entry(n).or_insert((t, col.clone()));
                }
                match op {
                    "=" => {
                        if let Operand::Constant(lit) = &value {
                            let pred = equality_predicate(&col, lit);
                            self.access(t).constant_predicates.insert(col.clone(), pred);
                        }
                        self.access(t).eq.insert(col);
                    }
                    "<" | ">" | "<=" | ">=" => self.add_range(t, col),
                    "@>" | "<@" | "?" | "?|" | "?&" | "&&" | "@@" => {
                        self.access(t).gin.entry(quote_ident(&col)).or_default().insert(op.to_string());
                    }
                    _ => {}
                }
            }
            (Operand::Expression(t, expr), Operand::Constant(_) | Operand::Param(_) | Operand::Value, op) => {
                match op {
                    "=" | "<" | ">" | "<=" | ">=" => {
                        self.access(t).expressions.insert(expr);
                    }
                    "@@" => {
                        self.access(t).gin.entry(expr).or_default().insert(op.to_string());
                    }
                    _ => {}
                }
            }
            _ => {
                for side in [&e.lexpr, &e.rexpr].into_iter().flatten() {
                    self.subqueries_in(side, scope);
                }
            }
        }
    }

    /// `IN (...)`, `= ANY(...)`, `BETWEEN`, `LIKE 'prefix%'`.
    fn list_or_pattern(&mut self, kind: AExprKind, op: &str, left: Operand, rexpr: Option<&protobuf::Node>) {
        match kind {
            AExprKind::AexprIn | AExprKind::AexprOpAny if op == "=" => {
                if let Operand::Column(t, col) = left {
                    self.note_params(rexpr, t, &col);
                    self.access(t).in_list.insert(col);
                }
            }
            AExprKind::AexprBetween | AExprKind::AexprBetweenSym => {
                if let Operand::Column(t, col) = left {
                    self.note_params(rexpr, t, &col);
                    self.add_range(t, col);
                }
            }
            AExprKind::AexprLike => {
                if let (Operand::Column(t, col), Some(rhs)) = (&left, rexpr) {
                    if constant_text(rhs).is_some_and(|p| !p.starts_with('%') && !p.starts_with('_')) {
                        self.access(*t).prefix_like.insert(col.clone());
                    }
                }
            }
            _ => {}
        }
    }

    fn add_range(&mut self, t: u32, col: String) {
        let access = self.access(t);
        if !access.range.contains(&col) {
            access.range.push(col);
        }
    }

    fn note_params(&mut self, node: Option<&protobuf::Node>, t: u32, col: &str) {
        let Some(node) = node else { return };
        for (n, ..) in descendants(node) {
            if let pg_query::NodeRef::ParamRef(p) = n {
                self.shape.param_columns.entry(p.number).or_insert((t, col.to_string()));
            }
        }
    }

    fn operand(&mut self, node: &protobuf::Node, scope: &Scope) -> Operand {
        match &node.node {
            Some(NodeEnum::ColumnRef(c)) => match self.resolve(c, scope) {
                Some((t, col)) => Operand::Column(t, col),
                None => Operand::Other,
            },
            Some(NodeEnum::ParamRef(p)) => Operand::Param(p.number),
            Some(NodeEnum::AConst(_)) => constant_sql(node).map(Operand::Constant).unwrap_or(Operand::Other),
            Some(NodeEnum::TypeCast(tc)) => match tc.arg.as_ref().and_then(|a| a.node.as_ref()) {
                Some(NodeEnum::ParamRef(p)) => Operand::Param(p.number),
                Some(NodeEnum::AConst(_)) => {
                    constant_sql(node).map(Operand::Constant).unwrap_or(Operand::Other)
                }
                _ => self.expression(node, scope),
            },
            // ARRAY['a', $1]: a value when it reads no column (`tags @> ARRAY[...]` wants GIN).
            Some(NodeEnum::FuncCall(_)) | Some(NodeEnum::AExpr(_)) | Some(NodeEnum::AArrayExpr(_)) => {
                self.expression(node, scope)
            }
            _ => Operand::Other,
        }
    }

    /// An expression is indexable when it reads exactly one column of one table and nothing
    /// variable (no parameters, no subqueries).
    fn expression(&mut self, node: &protobuf::Node, scope: &Scope) -> Operand {
        let mut columns = Vec::new();
        let mut has_param = false;
        for (n, ..) in descendants(node) {
            match n {
                pg_query::NodeRef::ColumnRef(c) => columns.push(self.resolve(c, scope)),
                pg_query::NodeRef::ParamRef(_) => has_param = true,
                pg_query::NodeRef::SubLink(_) => return Operand::Other,
                _ => {}
            }
        }
        if columns.is_empty() {
            return Operand::Value;
        }
        let [Some((t, _))] = columns.as_slice() else { return Operand::Other };
        let t = *t;
        let mut unqualified = node.clone();
        unqualify(&mut unqualified);
        if has_param {
            if let Some(sql) = deparse_expression(&unqualified) {
                self.shape.parameterized_expressions.insert((t, sql));
            }
            return Operand::Other;
        }
        for (n, ..) in descendants(&unqualified) {
            if let pg_query::NodeRef::FuncCall(f) = n {
                let name = f.funcname.iter().rev().find_map(string_value).unwrap_or_default();
                self.shape.expression_functions.insert((name, f.args.len()));
            }
        }
        match deparse_expression(&unqualified) {
            Some(sql) => Operand::Expression(t, sql),
            None => Operand::Other,
        }
    }

    fn subqueries_in(&mut self, node: &protobuf::Node, scope: &Scope) {
        match &node.node {
            Some(NodeEnum::SubLink(s)) => {
                if let Some(test) = s.testexpr.as_deref() {
                    self.subqueries_in(test, scope);
                }
                self.statement_node(s.subselect.as_deref(), Some(scope));
            }
            Some(NodeEnum::BoolExpr(b)) => {
                for arg in &b.args {
                    self.subqueries_in(arg, scope);
                }
            }
            Some(NodeEnum::AExpr(e)) => {
                for side in [&e.lexpr, &e.rexpr].into_iter().flatten() {
                    self.subqueries_in(side, scope);
                }
            }
            _ => {}
        }
    }

    fn sort(&mut self, sort_clause: &[protobuf::Node], scope: &Scope) {
        let mut keys = Vec::new();
        for item in sort_clause {
            let Some(NodeEnum::SortBy(s)) = &item.node else { return };
            let Some(NodeEnum::ColumnRef(c)) = s.node.as_ref().and_then(|n| n.node.as_ref()) else { return };
            let Some((t, col)) = self.resolve(c, scope) else { return };
            keys.push((t, col, s.sortby_dir == SortByDir::SortbyDesc as i32));
        }
        let Some(&(table, ..)) = keys.first() else { return };
        if keys.iter().all(|(t, ..)| *t == table) {
            self.access(table).sort = keys.into_iter().map(|(_, c, d)| (c, d)).collect();
        }
    }

    fn group(&mut self, group_clause: &[protobuf::Node], scope: &Scope) {
        let mut cols = Vec::new();
        for item in group_clause {
            let Some(NodeEnum::ColumnRef(c)) = &item.node else { return };
            let Some((t, col)) = self.resolve(c, scope) else { return };
            cols.push((t, col));
        }
        let Some(&(table, _)) = cols.first() else { return };
        if cols.iter().all(|(t, _)| *t == table) {
            self.access(table).group = cols.into_iter().map(|(_, c)| c).collect();
        }
    }

    /// Which columns each table must provide; a `*` (or `t.*`) makes covering pointless for the
    /// tables it reaches, and reads every column a subquery it reaches passes on.
    fn projection(&mut self, targets: &[protobuf::Node], scope: &Scope, outputs: Outputs) {
        for target in targets {
            let Some(NodeEnum::ResTarget(rt)) = &target.node else { continue };
            let Some(val) = rt.val.as_deref() else { continue };
            let plain_column = matches!(&val.node, Some(NodeEnum::ColumnRef(c)) if !is_star(c));
            if outputs == Outputs::ReadByEnclosingQuery && plain_column {
                continue;
            }
            for (n, ..) in descendants(val) {
                match n {
                    pg_query::NodeRef::ColumnRef(c) => {
                        if is_star(c) {
                            self.star(c, scope);
                        } else if let Some((t, col)) = self.resolve(c, scope) {
                            if let Some(set) = self.access(t).projected.as_mut() {
                                set.insert(col);
                            }
                        }
                    }
                    pg_query::NodeRef::SubLink(s) => self.statement_node(s.subselect.as_deref(), Some(scope)),
                    _ => {}
                }
            }
        }
    }

    /// `*` or `t.*`: every column of the tables it reaches (covering is pointless for them), and
    /// every table column a subquery it reaches passes on.
    fn star(&mut self, c: &protobuf::ColumnRef, scope: &Scope) {
        let qualifier = c.fields.first().and_then(string_value);
        for e in &scope.entries {
            if qualifier.as_deref().is_some_and(|q| q != e.name) {
                continue;
            }
            if let Some(t) = e.table {
                self.access(t).projected = None;
            }
            for d in &e.columns {
                if let Some(set) = self.access(d.table).projected.as_mut() {
                    set.insert(d.column.clone());
                }
            }
        }
    }
}

fn is_star(c: &protobuf::ColumnRef) -> bool {
    c.fields.iter().any(|f| matches!(f.node, Some(NodeEnum::AStar(_))))
}

/// `col = value` as an index predicate. `flag = true` is written `flag` and `flag = false`
/// `NOT flag`, as PostgreSQL itself simplifies them: `WHERE flag = true` and `WHERE flag` ask for
/// the same rows, and must give the same partial index, not two.
fn equality_predicate(col: &str, value: &str) -> String {
    let column = quote_ident(col);
    if value.eq_ignore_ascii_case("true") {
        column
    } else if value.eq_ignore_ascii_case("false") {
        format!("NOT {column}")
    } else {
        format!("{column} = {value}")
    }
}

/// Every node under `node`, itself included.
fn descendants(node: &protobuf::Node) -> Vec<(pg_query::NodeRef<'_>, i32, pg_query::Context, bool)> {
    node.node.as_ref().map(|n| n.nodes()).unwrap_or_default()
}

fn operator_name(e: &protobuf::AExpr) -> String {
    e.name.iter().rev().find_map(string_value).unwrap_or_default()
}

fn string_value(n: &protobuf::Node) -> Option<String> {
    match &n.node {
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        _ => None,
    }
}

fn flip(op: &str) -> String {
    match op {
        "<" => ">",
        ">" => "<",
        "<=" => ">=",
        ">=" => "<=",
        "@>" => "<@",
        "<@" => "@>",
        other => other,
    }
    .to_string()
}

/// A resolver over a fixed map, for tests and for callers that already hold the catalog.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MapResolver {
    pub tables: std::collections::HashMap<String, u32>,
    pub columns: std::collections::HashMap<u32, Vec<String>>,
}

#[cfg(test)]
impl MapResolver {
    pub fn with_table(mut self, oid: u32, name: &str, columns: &[&str]) -> Self {
        self.tables.insert(name.to_string(), oid);
        self.columns.insert(oid, columns.iter().map(|c| c.to_string()).collect());
        self
    }
}

#[cfg(test)]
impl Resolver for MapResolver {
    fn table(&self, schema: Option<&str>, name: &str) -> Option<u32> {
        let key = schema.map(|s| format!("{s}.{name}")).unwrap_or_else(|| name.to_string());
        self.tables.get(&key).or_else(|| self.tables.get(name)).copied()
    }
    fn has_column(&self, table: u32, column: &str) -> bool {
        self.columns.get(&table).is_some_and(|c| c.iter().any(|x| x == column))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> MapResolver {
        MapResolver::default()
            .with_table(
                1,
                "orders",
                &["id", "user_id", "created_at", "status", "total", "data", "deleted_at"],
            )
            .with_table(2, "users", &["id", "email", "is_active", "body"])
    }

    fn one(q: &str) -> TableAccess {
        let shape = analyse(q, &resolver()).unwrap();
        assert_eq!(shape.param_count, q.matches('$').count() as i32, "{q}");
        shape.accesses.into_iter().find(|a| a.table == 1 || a.table == 2).unwrap()
    }

    #[test]
    fn equality_then_sort_with_direction() {
        let a = one("SELECT id, total FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20");
        assert_eq!(a.eq.iter().collect::<Vec<_>>(), ["user_id"]);
        assert_eq!(a.sort, vec![("created_at".to_string(), true)]);
        assert_eq!(a.projected.unwrap().into_iter().collect::<Vec<_>>(), ["id", "total"]);
    }

    #[test]
    fn constants_become_partial_predicates() {
        let a = one("SELECT * FROM orders o WHERE o.status = 'pending' AND o.deleted_at IS NULL ORDER BY o.created_at");
        assert_eq!(a.constant_predicates["status"], "status = 'pending'");
        assert_eq!(a.constant_predicates["deleted_at"], "deleted_at IS NULL");
        assert!(a.projected.is_none());
        let u = one("SELECT id FROM users WHERE is_active = true AND lower(email) = $1");
        assert_eq!(u.constant_predicates["is_active"], "is_active", "the same predicate as `is_active`");
        assert_eq!(u.expressions.iter().collect::<Vec<_>>(), ["lower(email)"]);
        let u = one("SELECT id FROM users WHERE is_active = false");
        assert_eq!(u.constant_predicates["is_active"], "NOT is_active");
    }

    #[test]
    fn jsonb_containment_and_full_text_want_gin() {
        let a = one("SELECT id FROM orders WHERE data @> '{\"type\":\"gift\"}'");
        assert_eq!(a.gin["data"].iter().collect::<Vec<_>>(), ["@>"]);
        let e = one("SELECT id FROM orders WHERE data->>'type' = 'gift'");
        assert_eq!(e.expressions.iter().collect::<Vec<_>>(), ["data ->> 'type'"]);
        let u =
            one("SELECT id FROM users WHERE to_tsvector('english', body) @@ plainto_tsquery('english', $1)");
        assert_eq!(u.gin.keys().collect::<Vec<_>>(), ["to_tsvector('english', body)"]);
        // (an array column here; the resolver knows no types)
        for sql in [
            "SELECT id FROM orders WHERE status @> ARRAY['t5']",
            "SELECT id FROM orders WHERE status && ARRAY[$1]::text[]",
        ] {
            assert_eq!(one(sql).gin.keys().collect::<Vec<_>>(), ["status"], "{sql}");
        }
    }

    #[test]
    fn joins_ranges_and_params() {
        let shape = analyse(
            "SELECT u.email, o.total FROM users u JOIN orders o ON o.user_id = u.id \
             WHERE u.is_active AND o.created_at >= $1 AND o.status IN ('a','b')",
            &resolver(),
        )
        .unwrap();
        let o = shape.accesses.iter().find(|a| a.table == 1).unwrap();
        assert!(o.join.contains("user_id"));
        assert_eq!(o.range, vec!["created_at"]);
        assert!(o.in_list.contains("status"));
        assert_eq!(shape.param_columns[&1], (1, "created_at".to_string()));
        assert_eq!(shape.param_count, 1);
        let u = shape.accesses.iter().find(|a| a.table == 2).unwrap();
        assert!(u.join.contains("id"));
        assert_eq!(u.constant_predicates["is_active"], "is_active");
    }

    #[test]
    fn a_view_passes_on_only_the_columns_the_statement_reads() {
        // What pg_get_viewdef makes of `SELECT * FROM orders WHERE deleted_at IS NULL`.
        let view = "(SELECT orders.id, orders.user_id, orders.created_at, orders.status, orders.total, \
                    orders.data, orders.deleted_at FROM orders WHERE orders.deleted_at IS NULL) AS v";
        let a = one(&format!("SELECT id FROM {view} WHERE status = 'pending' AND total > 3000"));
        assert_eq!(a.projected.unwrap().into_iter().collect::<Vec<_>>(), ["id"]);
        assert_eq!(a.range, ["total"]);
        assert!(a.constant_predicates.contains_key("deleted_at"), "{:?}", a.constant_predicates);
        let all = one(&format!("SELECT * FROM {view} WHERE status = 'pending'"));
        assert_eq!(all.projected.unwrap().len(), 7, "`*` on the view reads all it passes on");
        let computed = one("SELECT n FROM (SELECT id, total * 2 AS n FROM orders) s WHERE id > 5");
        assert_eq!(computed.projected.unwrap().into_iter().collect::<Vec<_>>(), ["total"]);
    }

    #[test]
    fn ctes_and_subqueries_are_followed_and_not_tables() {
        let shape = analyse(
            "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') \
             SELECT * FROM recent r WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id AND u.email = $1)",
            &resolver(),
        )
        .unwrap();
        let o = shape.accesses.iter().find(|a| a.table == 1).unwrap();
        assert_eq!(o.range, vec!["created_at"]);
        let u = shape.accesses.iter().find(|a| a.table == 2).unwrap();
        assert!(u.eq.contains("email"));
    }

    #[test]
    fn update_and_delete_filters() {
        let a = one("UPDATE orders SET status = 'done' WHERE user_id = $1 AND status = 'pending'");
        assert!(a.eq.contains("user_id"));
        assert_eq!(a.set_columns.iter().collect::<Vec<_>>(), ["status"]);
        let shape = analyse("DELETE FROM orders WHERE created_at < $1", &resolver()).unwrap();
        assert!(!shape.read_only);
        assert_eq!(shape.accesses[0].range, vec!["created_at"]);
        assert!(analyse("VACUUM orders", &resolver()).is_err());
        assert_eq!(
            analyse("SELECT * FROM orders WHERE user_id = $1 LIMIT $2 OFFSET $3", &resolver())
                .unwrap()
                .param_count,
            3
        );
    }
}
