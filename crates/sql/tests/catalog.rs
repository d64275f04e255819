//! Catalogs loaded from a real cluster, and the routing and caching decisions they drive.

use pgpilot_sql::{
    analyze, cacheability, route, FuncRef, FunctionCatalog, NotCacheable, PrimaryReason, RelKind,
    RelationCatalog, Route, TableRef, Volatility,
};
use pgpilot_testkit::Cluster;

const SCHEMA: &str = "
CREATE SCHEMA app;
CREATE FUNCTION app.pure(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
CREATE FUNCTION app.pure(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $1';
CREATE FUNCTION app.touch() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
CREATE FUNCTION app.mixed(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';
CREATE FUNCTION app.mixed(text) RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
CREATE FUNCTION public.tenant() RETURNS text LANGUAGE sql STABLE AS $$SELECT current_setting('app.tenant', true)$$;
CREATE TABLE app.accounts (id int PRIMARY KEY, owner text, balance int);
CREATE TABLE app.secrets (id int, owner text);
ALTER TABLE app.secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY mine ON app.secrets USING (owner = current_user);
CREATE TABLE app.events (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (at);
CREATE TABLE app.events_2024_h1 PARTITION OF app.events_2024 FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.animals (id int, name text);
CREATE TABLE app.dogs (bark text) INHERITS (app.animals);
CREATE TABLE app.orders (id int PRIMARY KEY, account int REFERENCES app.accounts ON DELETE CASCADE);
CREATE TABLE app.notes (id int, account int REFERENCES app.accounts);
CREATE VIEW app.rich AS SELECT * FROM app.accounts WHERE balance > 1000;
CREATE VIEW app.rich_orders AS SELECT o.* FROM app.orders o JOIN app.rich r ON r.id = o.account;
CREATE VIEW app.today_orders AS SELECT * FROM app.orders WHERE id > extract(doy FROM CURRENT_DATE);
CREATE VIEW app.touched AS SELECT app.touch() AS t, * FROM app.accounts;
CREATE VIEW app.secret_view AS SELECT * FROM app.secrets;
CREATE MATERIALIZED VIEW app.totals AS SELECT count(*) FROM app.accounts;
CREATE SEQUENCE app.ids;
CREATE FUNCTION app.bump() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER bump AFTER INSERT ON app.notes FOR EACH ROW EXECUTE FUNCTION app.bump();
";

async fn connect(cluster: &Cluster) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&cluster.url("postgres", "postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    client
}

fn path(schemas: &[&str]) -> Vec<String> {
    schemas.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn catalogs_from_a_real_cluster_drive_routing_and_caching() {
    let cluster = Cluster::start();
    cluster.psql("postgres", SCHEMA);
    let client = connect(&cluster).await;
    client.batch_execute("CREATE TEMP TABLE scratch (id int)").await.expect("temp table");
    let functions = FunctionCatalog::load(&client).await.expect("functions");
    let relations = RelationCatalog::load(&client).await.expect("relations");
    assert!(functions.len() > 2000, "pg_proc looks incomplete: {}", functions.len());
    assert!(functions.loaded_at().is_some() && relations.loaded_at().is_some());

    check_functions(&functions);
    check_relations(&relations);
    check_temporary(&relations);
    check_routes(&functions);
    check_cacheability(&functions, &relations);
}

fn check_functions(functions: &FunctionCatalog) {
    let app = path(&["app", "public"]);
    let v = |schema: Option<&str>, name: &str| functions.volatility(&FuncRef::new(schema, name), &app);
    assert_eq!(v(Some("app"), "pure"), Volatility::Immutable);
    assert_eq!(v(None, "pure"), Volatility::Immutable);
    assert_eq!(v(Some("app"), "touch"), Volatility::Volatile);
    assert_eq!(v(Some("app"), "mixed"), Volatility::Volatile, "overloads: the worst wins");
    assert_eq!(v(None, "tenant"), Volatility::Stable);
    assert_eq!(v(None, "now"), Volatility::Stable);
    assert_eq!(v(None, "random"), Volatility::Volatile);
    assert_eq!(v(None, "nextval"), Volatility::Volatile);
    assert_eq!(v(None, "lower"), Volatility::Immutable);
    assert_eq!(v(None, "count"), Volatility::Immutable, "aggregates are in pg_proc too");
    assert_eq!(v(Some("app"), "missing"), Volatility::Unknown);
    // Not on the path: unknown.
    assert_eq!(functions.volatility(&FuncRef::new(None, "touch"), &path(&["public"])), Volatility::Unknown);
}

fn check_relations(relations: &RelationCatalog) {
    let app = path(&["app"]);
    let get =
        |name: &str| relations.resolve(&TableRef::new(None, name), &app).unwrap_or_else(|| panic!("{name}"));
    let accounts = get("accounts");
    assert_eq!(
        (accounts.kind, accounts.row_security, accounts.temporary, accounts.system),
        (RelKind::Table, false, false, false)
    );
    assert!(get("secrets").row_security && !get("secrets").force_row_security);
    assert!(get("notes").has_triggers && !accounts.has_triggers);
    assert_eq!(get("ids").kind, RelKind::Sequence);
    assert_eq!(get("totals").kind, RelKind::MaterializedView);
    let pg_class = get("pg_class");
    assert!(pg_class.system && pg_class.schema == "pg_catalog", "pg_catalog is searched first");
    assert!(relations.resolve(&TableRef::new(Some("public"), "accounts"), &app).is_none());
    assert!(relations.resolve(&TableRef::new(None, "accounts"), &path(&["public"])).is_none());

    // Partitions: a write to a leaf invalidates its ancestors; a write to the root its descendants.
    let oid = |name: &str| get(name).oid;
    let (events, y2024, h1, y2025) =
        (oid("events"), oid("events_2024"), oid("events_2024_h1"), oid("events_2025"));
    assert_eq!(get("events").kind, RelKind::PartitionedTable);
    assert_eq!(get("events_2024_h1").ancestors, sorted(vec![events, y2024]));
    assert_eq!(get("events").descendants, sorted(vec![y2024, h1, y2025]));
    assert_eq!(relations.invalidation_set(get("events_2024_h1")), sorted(vec![events, y2024, h1]));
    assert_eq!(relations.invalidation_set(get("events_2025")), sorted(vec![events, y2025]));
    assert_eq!(relations.invalidation_set(get("events")), sorted(vec![events, y2024, h1, y2025]));
    // Inheritance works the same way.
    assert_eq!(relations.invalidation_set(get("dogs")), sorted(vec![oid("animals"), oid("dogs")]));
    assert_eq!(relations.invalidation_set(get("animals")), sorted(vec![oid("animals"), oid("dogs")]));
    // ON DELETE CASCADE changes orders when accounts change; a plain reference (notes) does not.
    assert_eq!(relations.invalidation_set(accounts), sorted(vec![oid("accounts"), oid("orders")]));
    // Views: what they read (through nested views), and how volatile they are.
    assert_eq!(get("rich_orders").view_reads, sorted(vec![oid("orders"), oid("rich"), oid("accounts")]));
    assert_eq!(get("rich").view_volatility, Volatility::Immutable);
    assert_eq!(get("touched").view_volatility, Volatility::Volatile);
    assert_eq!(get("today_orders").view_volatility, Volatility::Stable, "CURRENT_DATE in the definition");
}

fn check_temporary(relations: &RelationCatalog) {
    let scratch =
        relations.relations().iter().find(|r| r.name == "scratch").expect("the loading session's temp table");
    assert!(scratch.temporary && scratch.schema.starts_with("pg_temp_"));
    let stmt = analyze(&format!("SELECT * FROM {}.scratch", scratch.schema));
    assert_eq!(
        cacheability(&stmt, &FunctionCatalog::default(), relations, &[]),
        Err(NotCacheable::TemporaryTable)
    );
    // Unqualified, a client's temporary table cannot be found from a catalog loaded elsewhere.
    let stmt = analyze("SELECT * FROM scratch");
    assert_eq!(
        cacheability(&stmt, &FunctionCatalog::default(), relations, &path(&["public"])),
        Err(NotCacheable::UnknownRelation)
    );
}

fn check_routes(functions: &FunctionCatalog) {
    let app = path(&["app", "public"]);
    let r = |sql: &str| route(&analyze(sql), functions, &app);
    assert_eq!(r("SELECT app.pure(balance) FROM accounts"), Route::AnyServer);
    assert_eq!(r("SELECT tenant()"), Route::AnyServer);
    assert_eq!(r("SELECT * FROM accounts ORDER BY random()"), Route::AnyServer);
    assert_eq!(r("SELECT touch()"), Route::Primary(PrimaryReason::VolatileFunction));
    assert_eq!(r("SELECT app.mixed(1)"), Route::Primary(PrimaryReason::VolatileFunction));
    assert_eq!(r("SELECT nextval('app.ids')"), Route::Primary(PrimaryReason::StateChangingFunction));
    assert_eq!(r("SELECT nope()"), Route::Primary(PrimaryReason::UnknownFunction));
}

fn check_cacheability(functions: &FunctionCatalog, relations: &RelationCatalog) {
    let app = path(&["app", "public"]);
    let c = |sql: &str| cacheability(&analyze(sql), functions, relations, &app);
    let oid = |name: &str| relations.resolve(&TableRef::new(Some("app"), name), &app).expect(name).oid;

    assert_eq!(c("SELECT * FROM accounts WHERE id = $1").map(|r| r.relations), Ok(vec![oid("accounts")]));
    assert_eq!(c("SELECT count(*), app.pure(1) FROM events").map(|r| r.relations), Ok(vec![oid("events")]));
    assert_eq!(c("SELECT 1").map(|r| r.relations), Ok(vec![]));
    assert_eq!(
        c("SELECT * FROM rich_orders").map(|r| r.relations),
        Ok(sorted(vec![oid("rich_orders"), oid("orders"), oid("rich"), oid("accounts")]))
    );
    assert_eq!(c("SELECT * FROM totals").map(|r| r.relations), Ok(vec![oid("totals")]));

    let refused: &[(&str, NotCacheable)] = &[
        ("SELECT * FROM secrets", NotCacheable::RowLevelSecurity),
        ("SELECT * FROM secret_view", NotCacheable::RowLevelSecurity),
        ("SELECT * FROM touched", NotCacheable::VolatileFunction),
        ("SELECT * FROM today_orders", NotCacheable::StableFunction),
        ("SELECT now()", NotCacheable::StableFunction),
        ("SELECT tenant()", NotCacheable::StableFunction),
        ("SELECT * FROM accounts WHERE owner = current_user", NotCacheable::StableFunction),
        ("SELECT CURRENT_TIMESTAMP", NotCacheable::StableFunction),
        ("SELECT random()", NotCacheable::VolatileFunction),
        ("SELECT touch()", NotCacheable::VolatileFunction),
        ("SELECT nope()", NotCacheable::UnknownFunction),
        ("SELECT * FROM accounts WHERE id = 1 FOR UPDATE", NotCacheable::Locking),
        ("SELECT * FROM accounts FOR KEY SHARE", NotCacheable::Locking),
        ("SELECT * INTO copy FROM accounts", NotCacheable::SelectInto),
        ("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", NotCacheable::WritingCte),
        ("SELECT nextval('ids')", NotCacheable::Writes),
        ("SELECT * FROM ids", NotCacheable::Sequence),
        ("SELECT * FROM pg_class", NotCacheable::SystemCatalog),
        ("SELECT * FROM information_schema.tables", NotCacheable::SystemCatalog),
        ("SELECT * FROM pg_stat_activity", NotCacheable::SystemCatalog),
        ("SELECT * FROM nowhere", NotCacheable::UnknownRelation),
        ("SELECT * FROM accounts WHERE 'today'::date > '2024-01-01'", NotCacheable::TimeLiteral),
        ("SELECT 1; SELECT 2", NotCacheable::MultiStatement),
        ("UPDATE accounts SET balance = 0", NotCacheable::NotASelect),
        ("/* pgpilot:nocache */ SELECT * FROM accounts", NotCacheable::NoCacheHint),
        ("SELEC 1", NotCacheable::Unparsed),
    ];
    for (sql, reason) in refused {
        assert_eq!(c(sql), Err(*reason), "{sql}");
    }
}

fn sorted(mut oids: Vec<u32>) -> Vec<u32> {
    oids.sort_unstable();
    oids
}

/// Writes that run code of the database's own (rules, defaults and CHECK constraints calling user
/// functions), and views whose built-in functions pg_depend does not record.
const CODE_SCHEMA: &str = "
CREATE TABLE t (id int PRIMARY KEY, v int);
CREATE FUNCTION wr() RETURNS int LANGUAGE sql VOLATILE AS 'UPDATE t SET v = v + 1 RETURNING v';
CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
CREATE TABLE plain (id int DEFAULT 1, n int GENERATED ALWAYS AS (id * 2) STORED, d int DEFAULT twice(3));
CREATE TABLE rsrc (id int);
CREATE RULE touch_t AS ON INSERT TO rsrc DO ALSO UPDATE t SET v = v + 1;
CREATE TABLE dflt (id int, w int DEFAULT wr());
CREATE TABLE checked (id int CHECK (wr() > 0));
CREATE FUNCTION wr_op(int, int) RETURNS int LANGUAGE sql VOLATILE AS 'SELECT wr()';
CREATE OPERATOR #!# (LEFTARG = int, RIGHTARG = int, FUNCTION = wr_op);
CREATE TABLE op_default (id int, w int DEFAULT 1 #!# 2);
CREATE VIEW v_now AS SELECT now() AS at;
CREATE VIEW v_random AS SELECT random() AS r;
CREATE VIEW v_clock AS SELECT clock_timestamp() AS at;
CREATE VIEW v_recent AS SELECT * FROM t WHERE id > extract(epoch FROM now() - interval '1 hour');
CREATE VIEW v_nested AS SELECT * FROM v_now;
CREATE VIEW v_sample AS SELECT * FROM t TABLESAMPLE BERNOULLI (50);
CREATE VIEW v_op AS SELECT 1 #!# 2 AS x;
CREATE VIEW v_pure AS SELECT id, v + 1 AS w, twice(v), count(*) OVER () FROM t WHERE v > 0;
CREATE VIEW v_classes AS SELECT relname FROM pg_class;
";

#[tokio::test]
async fn writes_that_run_user_code_and_views_of_built_in_volatile_functions() {
    let cluster = Cluster::start();
    cluster.psql("postgres", CODE_SCHEMA);
    let client = connect(&cluster).await;
    let functions = FunctionCatalog::load(&client).await.expect("functions");
    let relations = RelationCatalog::load(&client).await.expect("relations");
    let public = path(&["public"]);
    let get = |name: &str| {
        relations.resolve(&TableRef::new(None, name), &public).unwrap_or_else(|| panic!("{name}"))
    };
    for name in ["rsrc", "dflt", "checked", "op_default"] {
        assert!(get(name).write_runs_code, "a write to {name} runs user code");
        assert!(!get(name).has_triggers, "{name}");
    }
    for name in ["t", "plain"] {
        assert!(!get(name).write_runs_code, "{name}: builtin or immutable defaults only");
    }
    let c = |sql: &str| cacheability(&analyze(sql), &functions, &relations, &public);
    let refused: &[(&str, NotCacheable)] = &[
        ("SELECT * FROM v_now", NotCacheable::StableFunction),
        ("SELECT * FROM v_random", NotCacheable::VolatileFunction),
        ("SELECT * FROM v_clock", NotCacheable::VolatileFunction),
        ("SELECT * FROM v_recent", NotCacheable::StableFunction),
        ("SELECT * FROM v_nested", NotCacheable::StableFunction),
        ("SELECT * FROM v_sample", NotCacheable::VolatileFunction),
        ("SELECT * FROM v_op", NotCacheable::VolatileFunction),
        ("SELECT * FROM v_classes", NotCacheable::SystemCatalog),
        ("SELECT * FROM t TABLESAMPLE BERNOULLI (50)", NotCacheable::RandomSample),
        ("SELECT * FROM t TABLESAMPLE SYSTEM (50)", NotCacheable::RandomSample),
    ];
    for (sql, reason) in refused {
        assert_eq!(c(sql), Err(*reason), "{sql}");
    }
    assert!(c("SELECT * FROM v_pure").is_ok(), "{:?}", c("SELECT * FROM v_pure"));
    assert!(c("SELECT * FROM t TABLESAMPLE SYSTEM (50) REPEATABLE (7)").is_ok());
}

/// An extension's own views over its volatile functions (pg_stat_statements, installed in most
/// databases) are no hidden writers: such a database keeps the quick path for its plain SELECTs,
/// which the extension alone switched off. A view of the user's over such a function still counts,
/// as a call of it by name does.
#[tokio::test]
async fn an_extensions_own_views_are_no_hidden_writers() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pg_buffercache");
    let client = connect(&cluster).await;
    let functions = FunctionCatalog::load(&client).await.expect("functions");
    assert!(!functions.has_implicit_writers(), "{functions:?}");
    cluster.psql("postgres", "CREATE VIEW my_stats AS SELECT * FROM pg_stat_statements(true)");
    let functions = FunctionCatalog::load(&client).await.expect("functions");
    assert!(functions.has_implicit_writers());
}

const TIME_INPUT_SCHEMA: &str = "
CREATE TABLE tx (s text, n int);
CREATE TABLE stamped (at timestamptz);
CREATE TYPE comp AS (t timestamptz);
CREATE TYPE comp2 AS (a int, t timestamptz);
CREATE TYPE outer_comp AS (c comp);
CREATE DOMAIN stamp AS timestamptz;
CREATE TYPE with_domain AS (d stamp);
CREATE TYPE stamps AS (ts date[]);
CREATE TYPE plain AS (a int, b text);
CREATE TYPE my_range AS RANGE (subtype = timestamp);
CREATE TYPE with_range AS (r my_range);
CREATE VIEW txv AS SELECT s FROM tx;
CREATE VIEW v_row_cast AS SELECT s::comp AS c FROM tx;
CREATE VIEW v_plain_cast AS SELECT row(n, s)::plain AS p FROM tx;
";

/// A value read at run time converted to a composite (or a domain, array or range over one) with
/// a date/time attribute reads its text with that type's input, where 'now' is the current time:
/// not cached, as a cast to the date/time type itself is not (helper-190).
#[tokio::test]
async fn conversions_to_types_over_date_time_types_are_not_cached() {
    let cluster = Cluster::start();
    cluster.psql("postgres", TIME_INPUT_SCHEMA);
    let client = connect(&cluster).await;
    let functions = FunctionCatalog::load(&client).await.expect("functions");
    let relations = RelationCatalog::load(&client).await.expect("relations");
    let public = path(&["public"]);
    let c = |sql: &str| cacheability(&analyze(sql), &functions, &relations, &public);
    for sql in [
        "SELECT row(s)::comp FROM tx",
        "SELECT cast(row(s) AS comp) FROM tx",
        "SELECT array[row(s)]::comp[] FROM tx",
        "SELECT row(1, s)::comp2 FROM tx",
        "SELECT (1, s)::comp2 FROM tx",
        "SELECT row(s)::comp FROM txv",
        "SELECT s::comp FROM tx",
        "SELECT s::public.comp2 FROM tx",
        "SELECT row(row(s))::outer_comp FROM tx",
        "SELECT row(s)::with_domain FROM tx",
        "SELECT s::stamp FROM tx",
        "SELECT row(s)::stamps FROM tx",
        "SELECT row(s)::with_range FROM tx",
        "SELECT s::my_range FROM tx",
        "SELECT row(s)::stamped FROM tx",
        "SELECT row(n, s)::tx FROM tx",
        "SELECT c FROM tx, xmltable('/a' PASSING xmlparse(document s) COLUMNS c comp PATH '.') q",
        "SELECT t FROM tx, xmltable('/a' PASSING xmlparse(document '<a>' || s || '</a>') \
         COLUMNS t timestamptz PATH '.') q",
    ] {
        assert_eq!(c(sql), Err(NotCacheable::TimeInputCast), "{sql}");
    }
    // In a view: the rule depends on the type.
    assert_eq!(c("SELECT * FROM v_row_cast"), Err(NotCacheable::StableFunction));
    for sql in [
        "SELECT row(n, s)::plain FROM tx",
        "SELECT * FROM v_plain_cast",
        "SELECT row(1, 'x')::comp2 FROM tx",
        "SELECT s::text, n::bigint FROM tx",
    ] {
        assert!(c(sql).is_ok(), "{sql}: {:?}", c(sql));
    }
}
