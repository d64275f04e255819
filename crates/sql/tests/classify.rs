//! Table-driven classification: statement → kind, writes, tables, route.

use pgpilot_sql::{
    analyze, route, CopyDirection, FunctionCatalog, PrimaryReason, Route, StatementKind as K, TxnKind,
    Volatility,
};

/// A small function catalog with the builtins the cases call and two user functions.
fn functions() -> FunctionCatalog {
    use Volatility::*;
    FunctionCatalog::from_entries([
        ("pg_catalog", "now", Stable),
        ("pg_catalog", "random", Volatile),
        ("pg_catalog", "clock_timestamp", Volatile),
        ("pg_catalog", "nextval", Volatile),
        ("pg_catalog", "setval", Volatile),
        ("pg_catalog", "currval", Volatile),
        ("pg_catalog", "lower", Immutable),
        ("pg_catalog", "count", Immutable),
        ("pg_catalog", "sum", Immutable),
        ("pg_catalog", "generate_series", Immutable),
        ("pg_catalog", "pg_advisory_lock", Volatile),
        ("pg_catalog", "pg_advisory_xact_lock", Volatile),
        ("pg_catalog", "pg_try_advisory_lock", Volatile),
        ("pg_catalog", "set_config", Volatile),
        ("pg_catalog", "txid_current", Volatile),
        ("pg_catalog", "extract", Immutable),
        ("pg_catalog", "jsonb_build_object", Stable),
        ("public", "my_immutable", Immutable),
        ("public", "my_stable", Stable),
        ("public", "my_volatile", Volatile),
        ("app", "audit", Volatile),
    ])
}

fn search_path() -> Vec<String> {
    vec!["public".to_string()]
}

struct Case {
    sql: &'static str,
    kind: K,
    writes: bool,
    read: &'static [&'static str],
    written: &'static [&'static str],
    route: Route,
}

const ANY: Route = Route::AnyServer;
const fn primary(reason: PrimaryReason) -> Route {
    Route::Primary(reason)
}

use PrimaryReason as P;

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Plain reads.
    Case { sql: "SELECT 1", kind: K::Select, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "SELECT * FROM users WHERE id = $1", kind: K::Select, writes: false, read: &["users"], written: &[], route: ANY },
    Case { sql: "select a.x from app.accounts a join public.orders o on o.a = a.id", kind: K::Select, writes: false, read: &["app.accounts", "public.orders"], written: &[], route: ANY },
    Case { sql: "SELECT * FROM \"Mixed\"", kind: K::Select, writes: false, read: &["Mixed"], written: &[], route: ANY },
    Case { sql: "VALUES (1), (2)", kind: K::Select, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "TABLE users", kind: K::Select, writes: false, read: &["users"], written: &[], route: ANY },
    Case { sql: "SELECT count(*) FROM t WHERE x IN (SELECT y FROM u WHERE EXISTS (SELECT 1 FROM v))", kind: K::Select, writes: false, read: &["t", "u", "v"], written: &[], route: ANY },
    Case { sql: "SELECT * FROM a UNION ALL SELECT * FROM b", kind: K::Select, writes: false, read: &["a", "b"], written: &[], route: ANY },
    Case { sql: "SELECT * FROM generate_series(1, 10) g, LATERAL (SELECT * FROM t WHERE t.id = g) x", kind: K::Select, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "SELECT lower(name), my_immutable(1), my_stable() FROM t", kind: K::Select, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "SELECT now(), CURRENT_TIMESTAMP, current_user", kind: K::Select, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "SELECT * FROM t ORDER BY random() LIMIT 1", kind: K::Select, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "SELECT pg_walfile_name('0/16B3748')", kind: K::Select, writes: false, read: &[], written: &[], route: primary(P::StandbyRefused) },
    Case { sql: "SELECT sum(x) OVER (PARTITION BY y ORDER BY z) FROM t", kind: K::Select, writes: false, read: &["t"], written: &[], route: ANY },
    // CTEs: names are not tables; a non-recursive CTE naming itself reads the table.
    Case { sql: "WITH recent AS (SELECT * FROM orders) SELECT * FROM recent", kind: K::Select, writes: false, read: &["orders"], written: &[], route: ANY },
    Case { sql: "WITH t AS (SELECT * FROM t) SELECT * FROM t", kind: K::Select, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", kind: K::Select, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "SELECT * FROM x, (WITH x AS (SELECT 1) SELECT * FROM x) s", kind: K::Select, writes: false, read: &["x"], written: &[], route: ANY },
    // Writing CTEs.
    Case { sql: "WITH moved AS (DELETE FROM queue RETURNING *) INSERT INTO done SELECT * FROM moved", kind: K::Insert, writes: true, read: &[], written: &["done", "queue"], route: primary(P::Dml) },
    Case { sql: "WITH ins AS (INSERT INTO log(x) VALUES (1) RETURNING id) SELECT * FROM ins", kind: K::Select, writes: true, read: &[], written: &["log"], route: primary(P::WritingCte) },
    Case { sql: "SELECT * FROM (WITH u AS (UPDATE t SET x = 1 RETURNING *) SELECT * FROM u) s", kind: K::Select, writes: true, read: &[], written: &["t"], route: primary(P::WritingCte) },
    // DML.
    Case { sql: "INSERT INTO users(name) VALUES ('a')", kind: K::Insert, writes: true, read: &[], written: &["users"], route: primary(P::Dml) },
    Case { sql: "INSERT INTO t SELECT * FROM s ON CONFLICT (id) DO UPDATE SET x = excluded.x", kind: K::Insert, writes: true, read: &["s"], written: &["t"], route: primary(P::Dml) },
    Case { sql: "UPDATE app.t SET x = 1 FROM u WHERE u.id = t.id", kind: K::Update, writes: true, read: &["u"], written: &["app.t"], route: primary(P::Dml) },
    Case { sql: "DELETE FROM t USING u WHERE u.id = t.id RETURNING *", kind: K::Delete, writes: true, read: &["u"], written: &["t"], route: primary(P::Dml) },
    Case { sql: "MERGE INTO stock s USING deliveries d ON s.item = d.item WHEN MATCHED THEN UPDATE SET qty = s.qty + d.qty WHEN NOT MATCHED THEN INSERT VALUES (d.item, d.qty)", kind: K::Merge, writes: true, read: &["deliveries"], written: &["stock"], route: primary(P::Dml) },
    // Locking clauses, every strength.
    Case { sql: "SELECT * FROM t WHERE id = 1 FOR UPDATE", kind: K::Select, writes: true, read: &["t"], written: &[], route: primary(P::LockingClause) },
    Case { sql: "SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", kind: K::Select, writes: true, read: &["t"], written: &[], route: primary(P::LockingClause) },
    Case { sql: "SELECT * FROM t FOR SHARE", kind: K::Select, writes: true, read: &["t"], written: &[], route: primary(P::LockingClause) },
    Case { sql: "SELECT * FROM t FOR KEY SHARE NOWAIT", kind: K::Select, writes: true, read: &["t"], written: &[], route: primary(P::LockingClause) },
    Case { sql: "SELECT * FROM (SELECT * FROM t FOR UPDATE) s", kind: K::Select, writes: true, read: &["t"], written: &[], route: primary(P::LockingClause) },
    // SELECT INTO creates a table.
    Case { sql: "SELECT * INTO archive FROM t", kind: K::Select, writes: true, read: &["t"], written: &["archive"], route: primary(P::SelectInto) },
    Case { sql: "SELECT * INTO TEMP scratch FROM t", kind: K::Select, writes: true, read: &["t"], written: &["scratch"], route: primary(P::SelectInto) },
    // Functions.
    Case { sql: "SELECT nextval('seq')", kind: K::Select, writes: true, read: &[], written: &[], route: primary(P::StateChangingFunction) },
    Case { sql: "SELECT setval('seq', 10)", kind: K::Select, writes: true, read: &[], written: &[], route: primary(P::StateChangingFunction) },
    Case { sql: "SELECT currval('seq')", kind: K::Select, writes: false, read: &[], written: &[], route: primary(P::VolatileFunction) },
    Case { sql: "SELECT my_volatile(id) FROM t", kind: K::Select, writes: false, read: &["t"], written: &[], route: primary(P::VolatileFunction) },
    Case { sql: "SELECT app.audit()", kind: K::Select, writes: false, read: &[], written: &[], route: primary(P::VolatileFunction) },
    Case { sql: "SELECT no_such_function()", kind: K::Select, writes: false, read: &[], written: &[], route: primary(P::UnknownFunction) },
    Case { sql: "SELECT * FROM t WHERE x = (SELECT my_volatile())", kind: K::Select, writes: false, read: &["t"], written: &[], route: primary(P::VolatileFunction) },
    Case { sql: "SELECT pg_advisory_lock(1)", kind: K::Select, writes: true, read: &[], written: &[], route: primary(P::StateChangingFunction) },
    Case { sql: "SELECT pg_advisory_xact_lock(1)", kind: K::Select, writes: true, read: &[], written: &[], route: primary(P::StateChangingFunction) },
    Case { sql: "SELECT txid_current()", kind: K::Select, writes: true, read: &[], written: &[], route: primary(P::StateChangingFunction) },
    // STABLE in pg_proc, refused by a standby.
    Case { sql: "SELECT pg_current_xact_id()", kind: K::Select, writes: true, read: &[], written: &[], route: primary(P::StateChangingFunction) },
    Case { sql: "SELECT set_config('app.user', '42', false)", kind: K::Select, writes: false, read: &[], written: &[], route: primary(P::VolatileFunction) },
    // LOCK, COPY, CALL, DO, NOTIFY.
    Case { sql: "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", kind: K::Lock, writes: true, read: &["t"], written: &[], route: primary(P::Lock) },
    Case { sql: "COPY t FROM STDIN", kind: K::Copy(CopyDirection::From), writes: true, read: &[], written: &["t"], route: primary(P::Copy) },
    Case { sql: "COPY t (a, b) FROM '/tmp/data.csv' WITH (FORMAT csv)", kind: K::Copy(CopyDirection::From), writes: true, read: &[], written: &["t"], route: primary(P::Copy) },
    Case { sql: "COPY t TO STDOUT", kind: K::Copy(CopyDirection::To), writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "COPY (SELECT * FROM t WHERE x > 1) TO STDOUT WITH (FORMAT binary)", kind: K::Copy(CopyDirection::To), writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "COPY t TO '/tmp/out'", kind: K::Copy(CopyDirection::To), writes: true, read: &["t"], written: &[], route: primary(P::Copy) },
    Case { sql: "COPY (DELETE FROM t RETURNING *) TO STDOUT", kind: K::Copy(CopyDirection::To), writes: true, read: &[], written: &["t"], route: primary(P::Dml) },
    Case { sql: "CALL refresh_totals(1)", kind: K::Call, writes: true, read: &[], written: &[], route: primary(P::Call) },
    Case { sql: "DO $$BEGIN UPDATE t SET x = 1; END$$", kind: K::Do, writes: true, read: &[], written: &[], route: primary(P::Do) },
    Case { sql: "NOTIFY jobs, 'payload'", kind: K::Notify, writes: true, read: &[], written: &[], route: primary(P::Notify) },
    // EXPLAIN: plain EXPLAIN only plans; EXPLAIN ANALYZE runs the statement.
    Case { sql: "EXPLAIN SELECT * FROM t", kind: K::Explain { analyze: false }, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "EXPLAIN INSERT INTO t VALUES (1)", kind: K::Explain { analyze: false }, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "EXPLAIN ANALYZE INSERT INTO t VALUES (1)", kind: K::Explain { analyze: true }, writes: true, read: &[], written: &["t"], route: primary(P::Dml) },
    Case { sql: "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET x = 1", kind: K::Explain { analyze: true }, writes: true, read: &[], written: &["t"], route: primary(P::Dml) },
    Case { sql: "EXPLAIN (ANALYZE false) DELETE FROM t", kind: K::Explain { analyze: false }, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "EXPLAIN ANALYZE SELECT * FROM t", kind: K::Explain { analyze: true }, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "EXPLAIN SELECT my_volatile()", kind: K::Explain { analyze: false }, writes: false, read: &[], written: &[], route: ANY },
    // DDL.
    Case { sql: "CREATE TABLE t (id int PRIMARY KEY, x int DEFAULT nextval('s'))", kind: K::Ddl, writes: true, read: &[], written: &["t"], route: primary(P::Ddl) },
    Case { sql: "CREATE TEMP TABLE scratch (id int)", kind: K::Ddl, writes: true, read: &[], written: &["scratch"], route: primary(P::Ddl) },
    Case { sql: "CREATE TABLE c2 PARTITION OF parent FOR VALUES FROM (1) TO (10)", kind: K::Ddl, writes: true, read: &[], written: &["c2", "parent"], route: primary(P::Ddl) },
    Case { sql: "CREATE VIEW v AS SELECT * FROM t JOIN u USING (id)", kind: K::Ddl, writes: true, read: &["t", "u"], written: &["v"], route: primary(P::Ddl) },
    Case { sql: "CREATE TABLE summary AS SELECT x, count(*) FROM t GROUP BY x", kind: K::Ddl, writes: true, read: &["t"], written: &["summary"], route: primary(P::Ddl) },
    Case { sql: "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", kind: K::Ddl, writes: true, read: &["t"], written: &["mv"], route: primary(P::Ddl) },
    Case { sql: "REFRESH MATERIALIZED VIEW CONCURRENTLY mv", kind: K::Ddl, writes: true, read: &[], written: &["mv"], route: primary(P::Ddl) },
    Case { sql: "ALTER TABLE t ADD COLUMN y int", kind: K::Ddl, writes: true, read: &[], written: &["t"], route: primary(P::Ddl) },
    Case { sql: "CREATE INDEX CONCURRENTLY ON t (x)", kind: K::Ddl, writes: true, read: &[], written: &["t"], route: primary(P::Ddl) },
    Case { sql: "DROP TABLE IF EXISTS app.t, u", kind: K::Ddl, writes: true, read: &[], written: &["app.t", "u"], route: primary(P::Ddl) },
    Case { sql: "TRUNCATE t, u RESTART IDENTITY", kind: K::Truncate, writes: true, read: &[], written: &["t", "u"], route: primary(P::Ddl) },
    Case { sql: "TRUNCATE TABLE ONLY app.t", kind: K::Truncate, writes: true, read: &[], written: &["app.t"], route: primary(P::Ddl) },
    Case { sql: "GRANT SELECT ON t TO reader", kind: K::Ddl, writes: true, read: &[], written: &["t"], route: primary(P::Ddl) },
    Case { sql: "ALTER POLICY p ON t USING (true)", kind: K::Ddl, writes: true, read: &[], written: &["t"], route: primary(P::Ddl) },
    Case { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", kind: K::Ddl, writes: true, read: &[], written: &[], route: primary(P::Ddl) },
    Case { sql: "CREATE ROLE bob LOGIN", kind: K::Ddl, writes: true, read: &[], written: &[], route: primary(P::Ddl) },
    // Maintenance.
    Case { sql: "VACUUM (ANALYZE) t", kind: K::Vacuum, writes: true, read: &["t"], written: &[], route: primary(P::Maintenance) },
    Case { sql: "ANALYZE t", kind: K::Vacuum, writes: true, read: &["t"], written: &[], route: primary(P::Maintenance) },
    Case { sql: "CHECKPOINT", kind: K::Utility, writes: true, read: &[], written: &[], route: primary(P::Maintenance) },
    Case { sql: "REINDEX TABLE t", kind: K::Utility, writes: true, read: &["t"], written: &[], route: primary(P::Maintenance) },
    // Transactions.
    Case { sql: "BEGIN", kind: K::Transaction(TxnKind::Begin), writes: false, read: &[], written: &[], route: primary(P::ReadWriteTransaction) },
    Case { sql: "START TRANSACTION ISOLATION LEVEL REPEATABLE READ", kind: K::Transaction(TxnKind::Begin), writes: false, read: &[], written: &[], route: primary(P::ReadWriteTransaction) },
    Case { sql: "BEGIN READ WRITE", kind: K::Transaction(TxnKind::Begin), writes: false, read: &[], written: &[], route: primary(P::ReadWriteTransaction) },
    Case { sql: "BEGIN READ ONLY", kind: K::Transaction(TxnKind::Begin), writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "START TRANSACTION READ ONLY, ISOLATION LEVEL REPEATABLE READ", kind: K::Transaction(TxnKind::Begin), writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", kind: K::Transaction(TxnKind::Begin), writes: false, read: &[], written: &[], route: primary(P::SerializableTransaction) },
    Case { sql: "COMMIT", kind: K::Transaction(TxnKind::Commit), writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "ROLLBACK AND CHAIN", kind: K::Transaction(TxnKind::Rollback), writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "SAVEPOINT a", kind: K::Transaction(TxnKind::Savepoint), writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "PREPARE TRANSACTION 'x'", kind: K::Transaction(TxnKind::PrepareTransaction), writes: true, read: &[], written: &[], route: primary(P::TwoPhaseCommit) },
    Case { sql: "COMMIT PREPARED 'x'", kind: K::Transaction(TxnKind::CommitPrepared), writes: true, read: &[], written: &[], route: primary(P::TwoPhaseCommit) },
    Case { sql: "SET TRANSACTION READ WRITE", kind: K::Set, writes: false, read: &[], written: &[], route: primary(P::ReadWriteTransaction) },
    Case { sql: "SET TRANSACTION READ ONLY", kind: K::Set, writes: false, read: &[], written: &[], route: ANY },
    // Session statements.
    Case { sql: "SET search_path = app, public", kind: K::Set, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "SET LOCAL statement_timeout = '5s'", kind: K::Set, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "RESET ALL", kind: K::Set, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "SHOW TimeZone", kind: K::Show, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "LISTEN jobs", kind: K::Listen, writes: false, read: &[], written: &[], route: primary(P::Listen) },
    Case { sql: "UNLISTEN *", kind: K::Unlisten, writes: false, read: &[], written: &[], route: primary(P::Listen) },
    Case { sql: "PREPARE q(int) AS SELECT * FROM t WHERE id = $1", kind: K::Prepare, writes: false, read: &[], written: &[], route: primary(P::PreparedStatement) },
    Case { sql: "EXECUTE q(1)", kind: K::Execute, writes: false, read: &[], written: &[], route: primary(P::PreparedStatement) },
    Case { sql: "DEALLOCATE ALL", kind: K::Deallocate, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "DISCARD ALL", kind: K::Discard, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", kind: K::DeclareCursor, writes: false, read: &["t"], written: &[], route: primary(P::PinsSession) },
    Case { sql: "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", kind: K::DeclareCursor, writes: true, read: &["t"], written: &[], route: primary(P::LockingClause) },
    Case { sql: "FETCH 10 FROM c", kind: K::Fetch, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "CLOSE ALL", kind: K::CloseCursor, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "LOAD 'auto_explain'", kind: K::Utility, writes: false, read: &[], written: &[], route: primary(P::PinsSession) },
    // Multi-statement strings.
    Case { sql: "SELECT 1; SELECT * FROM t", kind: K::Select, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "SELECT * FROM t; UPDATE t SET x = 1", kind: K::Select, writes: true, read: &["t"], written: &["t"], route: primary(P::MultiStatementWrite) },
    Case { sql: "BEGIN; SELECT 1; COMMIT", kind: K::Transaction(TxnKind::Begin), writes: false, read: &[], written: &[], route: primary(P::ReadWriteTransaction) },
    Case { sql: "BEGIN READ ONLY; SELECT * FROM t; COMMIT;", kind: K::Transaction(TxnKind::Begin), writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "SELECT 1; BEGIN", kind: K::Select, writes: false, read: &[], written: &[], route: primary(P::ReadWriteTransaction) },
    // Comments, hints, empty and broken text.
    Case { sql: "/* pgpilot:replica */ SELECT * FROM t -- trailing", kind: K::Select, writes: false, read: &["t"], written: &[], route: ANY },
    Case { sql: "/* pgpilot:replica */ DELETE FROM t", kind: K::Delete, writes: true, read: &[], written: &["t"], route: primary(P::Dml) },
    Case { sql: "", kind: K::Empty, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: " ; -- nothing\n ;", kind: K::Empty, writes: false, read: &[], written: &[], route: ANY },
    Case { sql: "SELEC * FROM t", kind: K::Unparsed, writes: true, read: &[], written: &[], route: primary(P::Unparsed) },
    Case { sql: "SELECT 'unterminated", kind: K::Unparsed, writes: true, read: &[], written: &[], route: primary(P::Unparsed) },
    Case { sql: "SELECT 1\0", kind: K::Unparsed, writes: true, read: &[], written: &[], route: primary(P::Unparsed) },
];

fn names(tables: &[pgpilot_sql::TableRef]) -> Vec<String> {
    let mut names: Vec<String> = tables.iter().map(ToString::to_string).collect();
    names.sort();
    names
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    list.sort();
    list
}

#[test]
fn statements_classify_and_route_as_the_table_says() {
    let catalog = functions();
    let path = search_path();
    let mut failures = Vec::new();
    for case in CASES {
        let s = analyze(case.sql);
        let got =
            (s.kind, s.writes, names(&s.tables_read), names(&s.tables_written), route(&s, &catalog, &path));
        let want = (case.kind, case.writes, sorted(case.read), sorted(case.written), case.route);
        if got != want {
            failures.push(format!("{:?}\n   got  {got:?}\n   want {want:?}", case.sql));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
