//! The effective volatility of every function, as SQL common table expressions the catalog queries
//! share: what a function runs without being declared for it makes it worse.

use std::sync::OnceLock;

use crate::route::{READ_ONLY_VOLATILE_BUILTINS, STANDBY_REFUSED_BUILTINS, XID_AND_WAL_POSITION_BUILTINS};

/// `proc_worst(oid, code)`, code 'i', 's' or 'v' as text: the worst of a function's own provolatile
/// and of every function it calls, directly, behind an operator, or through further functions.
/// That is what an aggregate runs (its transition and final functions: an aggregate's own
/// provolatile is 'i' whatever they do), what a parameter's DEFAULT calls, and what a
/// `BEGIN ATOMIC` body calls. Text ordering 'i' < 's' < 'v' is the volatility order. To follow
/// `WITH RECURSIVE`.
///
/// The calls are read from two places. pg_depend has every dependency on a function that is not
/// pinned (user and extension functions, user operators), but none on the built-ins, which are
/// pinned. So the stored trees of user functions' parameter defaults (`proargdefaults`) and
/// SQL-standard bodies (`prosqlbody`, read through to_jsonb: servers before 14 have no such
/// column; only for the functions that have one, the row's conversion being the cost) are
/// searched for the built-ins they call: `:funcid N`, `:opfuncid N` (set in stored trees),
/// `:aggfnoid N` (no built-in window function is worse than immutable). Splitting the text costs a
/// fraction of a regular expression's scan; `OFFSET 0` keeps each tree's text computed once, not
/// once per split. A built-in taints its callers as it runs on a standby: the read-only volatile
/// ones (random()) as 's' (a replica runs them, no cache keeps them), the stable ones a standby
/// refuses (txid_current()) as 'v'. These calls seed `proc_taint` rather than join its recursion:
/// the planner's estimate stays small (a large one has the server JIT-compile the query, seconds).
/// Measured on 6,500 functions (3,000 with defaults, 300 `BEGIN ATOMIC`): 0.2 s, 0.1 s before.
///
/// `proc_taint` carries each stable or volatile code up to the callers, at most one row per
/// function and code: a transitive closure of the call graph would grow with the square of a
/// deep chain of SQL functions (seconds for 2,000), this stays linear in the edges.
pub(super) fn proc_worst_cte() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "proc_trees(proc, tree) AS ( \
  SELECT p.oid, pg_catalog.concat(p.proargdefaults, CASE WHEN p.prolang = 14 AND p.prosrc = '' \
    THEN pg_catalog.to_jsonb(p) ->> 'prosqlbody' END) \
  FROM pg_catalog.pg_proc p \
  WHERE p.oid >= 16384 AND (p.proargdefaults IS NOT NULL OR p.prolang = 14 AND p.prosrc = '') OFFSET 0), \
proc_tree_calls(proc, callee) AS ( \
  SELECT t.proc, pg_catalog.split_part(c, ' ', 1)::oid FROM proc_trees t, LATERAL pg_catalog.unnest( \
    (pg_catalog.string_to_array(t.tree, ':funcid '))[2:] || (pg_catalog.string_to_array(t.tree, ':opfuncid '))[2:] \
    || (pg_catalog.string_to_array(t.tree, ':aggfnoid '))[2:]) c), \
proc_edges(proc, callee) AS ( \
  SELECT d.objid, d.refobjid FROM pg_catalog.pg_depend d \
  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.refclassid = 'pg_catalog.pg_proc'::regclass \
  UNION \
  SELECT d.objid, o.oprcode::oid FROM pg_catalog.pg_depend d \
  JOIN pg_catalog.pg_operator o ON o.oid = d.refobjid \
  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.refclassid = 'pg_catalog.pg_operator'::regclass), \
proc_taint(oid, code) AS ( \
  SELECT p.oid, {own_code} FROM pg_catalog.pg_proc p WHERE p.provolatile <> 'i' \
  UNION \
  SELECT c.proc, {own_code} FROM proc_tree_calls c JOIN pg_catalog.pg_proc p ON p.oid = c.callee \
  WHERE p.provolatile <> 'i' \
  UNION \
  SELECT e.proc, t.code FROM proc_taint t JOIN proc_edges e ON e.callee = t.oid), \
proc_worst(oid, code) AS ( \
  SELECT p.oid, GREATEST(p.provolatile::text COLLATE \"C\", max(t.code)) FROM pg_catalog.pg_proc p \
  LEFT JOIN proc_taint t ON t.oid = p.oid GROUP BY p.oid, p.provolatile)",
            own_code = own_taint_code(),
        )
    })
}

/// The code a function `p` taints its callers with: its provolatile, but 's' for a read-only
/// volatile built-in and 'v' for a stable one a standby refuses.
fn own_taint_code() -> String {
    format!(
        "CASE WHEN p.pronamespace <> 'pg_catalog'::regnamespace THEN p.provolatile::text \
  WHEN p.proname IN ({read_only}) THEN 's' WHEN p.proname IN ({refused}) THEN 'v' \
  ELSE p.provolatile::text END COLLATE \"C\"",
        read_only = sql_list(READ_ONLY_VOLATILE_BUILTINS),
        refused = sql_list(&[XID_AND_WAL_POSITION_BUILTINS, STANDBY_REFUSED_BUILTINS].concat()),
    )
}

/// Names as an SQL list of literals (they hold no quote).
pub(super) fn sql_list(names: &[&str]) -> String {
    names.iter().map(|name| format!("'{name}'")).collect::<Vec<_>>().join(", ")
}
