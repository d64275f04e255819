//! Settings, transaction options, session effects, hints, fingerprints and read shapes.

use pgpilot_sql::{
    analyze, quick_look, DiscardTarget, IsolationLevel, LockStrength, RouteHint, SessionEffect as E,
    SetAction, SetCommand, SetScope, TableRef, TxnControl, TxnOptions, ValueFunction,
};

fn set(scope: SetScope, name: &str, value: &str) -> SetCommand {
    SetCommand { scope, action: SetAction::Set { name: name.into(), value: value.into() } }
}

#[test]
fn set_and_reset_keep_replayable_values() {
    use SetScope::*;
    let cases: &[(&str, SetCommand, &str)] = &[
        (
            "SET search_path = app, \"My Schema\", public",
            set(Session, "search_path", "'app', 'My Schema', 'public'"),
            "SET search_path = 'app', 'My Schema', 'public'",
        ),
        (
            "SET SESSION statement_timeout TO 5000",
            set(Session, "statement_timeout", "5000"),
            "SET statement_timeout = 5000",
        ),
        (
            "SET LOCAL lock_timeout = '2s'",
            set(Local, "lock_timeout", "'2s'"),
            "SET LOCAL lock_timeout = '2s'",
        ),
        (
            "SET TIME ZONE 'Europe/Paris'",
            set(Session, "timezone", "'Europe/Paris'"),
            "SET timezone = 'Europe/Paris'",
        ),
        ("SET extra_float_digits = 3", set(Session, "extra_float_digits", "3"), "SET extra_float_digits = 3"),
        ("SET enable_seqscan = off", set(Session, "enable_seqscan", "'off'"), "SET enable_seqscan = 'off'"),
        (
            "SET application_name = 'it''s'",
            set(Session, "application_name", "'it''s'"),
            "SET application_name = 'it''s'",
        ),
        ("SET myapp.tenant = 42", set(Session, "myapp.tenant", "42"), "SET myapp.tenant = 42"),
        ("SET ROLE reporting", set(Session, "role", "'reporting'"), "SET role = 'reporting'"),
        ("SET random_page_cost = 1.5", set(Session, "random_page_cost", "1.5"), "SET random_page_cost = 1.5"),
        (
            "SET work_mem TO DEFAULT",
            SetCommand { scope: Session, action: SetAction::SetDefault { name: "work_mem".into() } },
            "SET work_mem TO DEFAULT",
        ),
        (
            "RESET search_path",
            SetCommand { scope: Session, action: SetAction::Reset { name: "search_path".into() } },
            "RESET search_path",
        ),
        ("RESET ALL", SetCommand { scope: Session, action: SetAction::ResetAll }, "RESET ALL"),
        (
            "SELECT set_config('app.user', '42', true)",
            SetCommand {
                scope: Local,
                action: SetAction::SetConfig { name: "app.user".into(), value: "42".into() },
            },
            "SELECT pg_catalog.set_config('app.user', '42', true)",
        ),
        (
            // A list is one string to set_config: replayed as such, not as `SET search_path = 'a, b'`.
            "SELECT set_config('search_path', 'a, public', false)",
            SetCommand {
                scope: Session,
                action: SetAction::SetConfig { name: "search_path".into(), value: "a, public".into() },
            },
            "SELECT pg_catalog.set_config('search_path', 'a, public', false)",
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            set(Session, "default_transaction_isolation", "'serializable'"),
            "SET default_transaction_isolation = 'serializable'",
        ),
    ];
    for (sql, want, replay) in cases {
        let s = analyze(sql);
        assert_eq!(s.settings, vec![want.clone()], "{sql}");
        assert_eq!(s.settings[0].replay_sql(), *replay, "{sql}");
    }
    let tz = analyze("SET TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE");
    let SetAction::Set { name, value } = &tz.settings[0].action else { panic!("{tz:?}") };
    assert_eq!(name, "timezone");
    assert!(value.to_lowercase().starts_with("interval '+02:00' hour to minute"), "{value}");
    // A value known only at run time: the setting is named (its value is read back from the
    // server); a name not written out is not even that.
    let computed = analyze("SELECT set_config('app.user', $1, false)");
    assert!(computed.session_effects.is_empty(), "{computed:?}");
    assert_eq!(
        computed.settings,
        vec![SetCommand {
            scope: Session,
            action: SetAction::SetConfig { name: "app.user".into(), value: String::new() }
        }]
    );
    assert_eq!(analyze("SELECT set_config($1, 'x', false)").session_effects, vec![E::SetConfigDynamic]);
    // Only a lone SELECT of set_config calls of constants certainly runs each call as written.
    assert!(analyze("SELECT set_config('app.user', '42', false)").set_config_runs);
    assert!(
        analyze("select pg_catalog.set_config('a.b', 'x', false), set_config('a.c', 'y', false);")
            .set_config_runs
    );
    for maybe in [
        "SELECT set_config('a.b', 'x', false) WHERE false",
        "SELECT set_config('a.b', 'x', false) LIMIT 0",
        "SELECT CASE WHEN 1 = 2 THEN set_config('a.b', 'x', false) END",
        "SELECT set_config('a.b', 'x', false) FROM pg_class WHERE relname = 'none'",
        "SELECT set_config('a.b', $1, false)",
        "SELECT set_config('a.b', 'x', false); SELECT 1",
        "SELECT 1",
    ] {
        assert!(!analyze(maybe).set_config_runs, "{maybe}");
    }
    assert_eq!(analyze("SELECT set_config('a.b', 'x', $1)").session_effects, vec![E::SetConfigDynamic]);
}

#[test]
fn transaction_options() {
    let begin = |sql: &str| analyze(sql).transaction;
    assert_eq!(begin("BEGIN"), Some(TxnControl::Begin(TxnOptions::default())));
    assert_eq!(
        begin("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"),
        Some(TxnControl::Begin(TxnOptions {
            read_only: Some(true),
            isolation: Some(IsolationLevel::Serializable),
            deferrable: Some(true)
        }))
    );
    assert_eq!(
        begin("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"),
        Some(TxnControl::Begin(TxnOptions {
            read_only: Some(false),
            isolation: Some(IsolationLevel::ReadCommitted),
            deferrable: None
        }))
    );
    assert_eq!(begin("COMMIT AND CHAIN"), Some(TxnControl::Commit { chain: true }));
    assert_eq!(begin("ROLLBACK TO SAVEPOINT s1"), Some(TxnControl::RollbackTo("s1".into())));
    assert_eq!(begin("RELEASE s1"), Some(TxnControl::Release("s1".into())));
    assert_eq!(begin("ROLLBACK PREPARED 'g'"), Some(TxnControl::RollbackPrepared("g".into())));
    assert_eq!(
        begin("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
        Some(TxnControl::SetSessionCharacteristics(TxnOptions {
            read_only: Some(true),
            ..TxnOptions::default()
        }))
    );
}

#[test]
fn session_effects_and_what_pins_a_client() {
    let effects = |sql: &str| analyze(sql).session_effects;
    assert_eq!(effects("LISTEN jobs"), vec![E::Listen("jobs".into())]);
    assert_eq!(effects("UNLISTEN jobs"), vec![E::Unlisten(Some("jobs".into()))]);
    assert_eq!(effects("UNLISTEN *"), vec![E::Unlisten(None)]);
    assert_eq!(effects("DISCARD ALL"), vec![E::Discard(DiscardTarget::All)]);
    assert_eq!(effects("DISCARD PLANS"), vec![E::Discard(DiscardTarget::Plans)]);
    assert_eq!(effects("DISCARD SEQUENCES"), vec![E::Discard(DiscardTarget::Sequences)]);
    assert_eq!(effects("DISCARD TEMP"), vec![E::Discard(DiscardTarget::Temp)]);
    assert_eq!(effects("EXECUTE q(1, 'a')"), vec![E::Execute { name: "q".into() }]);
    assert_eq!(effects("EXPLAIN EXECUTE q(1)"), vec![E::Execute { name: "q".into() }]);
    assert_eq!(
        effects("CREATE TABLE c AS EXECUTE q(1)"),
        vec![E::CreateUnqualified(TableRef::new(None, "c")), E::Execute { name: "q".into() }]
    );
    assert_eq!(effects("DEALLOCATE PREPARE q"), vec![E::Deallocate(Some("q".into()))]);
    assert_eq!(effects("DEALLOCATE ALL"), vec![E::Deallocate(None)]);
    assert_eq!(effects("CLOSE c"), vec![E::CloseCursor(Some("c".into()))]);
    assert_eq!(effects("LOAD 'auto_explain'"), vec![E::Load]);

    let prepare = effects("SELECT 1; PREPARE q (int, text) AS SELECT * FROM t WHERE id = $1 AND name = $2");
    let [E::Prepare { name, statement_sql, body_sql }] = prepare.as_slice() else { panic!("{prepare:?}") };
    assert_eq!(name, "q");
    assert_eq!(statement_sql, "PREPARE q (int, text) AS SELECT * FROM t WHERE id = $1 AND name = $2");
    assert_eq!(body_sql, "SELECT * FROM t WHERE id = $1 AND name = $2");

    let hold = effects("DECLARE c CURSOR WITH HOLD FOR SELECT 1");
    assert_eq!(hold, vec![E::DeclareCursor { name: "c".into(), with_hold: true }]);
    assert!(hold[0].pins_session());
    let plain = effects("DECLARE c NO SCROLL CURSOR FOR SELECT 1");
    assert_eq!(plain, vec![E::DeclareCursor { name: "c".into(), with_hold: false }]);
    assert!(!plain[0].pins_session());

    let lock = effects("SELECT pg_advisory_lock(42)");
    assert_eq!(lock, vec![E::AdvisoryLockSession]);
    assert!(lock[0].pins_session());
    assert_eq!(effects("SELECT pg_try_advisory_lock_shared(1, 2)"), vec![E::AdvisoryLockSession]);
    assert!(
        effects("SELECT pg_advisory_xact_lock(42)").is_empty(),
        "transaction-level locks end with the transaction"
    );
    assert_eq!(effects("SELECT pg_advisory_unlock_all()"), vec![E::AdvisoryUnlock]);

    for sql in [
        "CREATE TEMP TABLE scratch (id int)",
        "CREATE TEMPORARY VIEW scratch AS SELECT 1",
        "CREATE TEMP SEQUENCE scratch",
        "CREATE TABLE pg_temp.scratch (id int)",
        "CREATE TEMP TABLE scratch AS SELECT 1",
        "SELECT 1 INTO TEMP scratch",
    ] {
        let e = effects(sql);
        assert_eq!(e, vec![E::CreateTemporary(TableRef::new(e_schema(sql), "scratch"))], "{sql}");
        assert!(e[0].pins_session());
    }
    let unqualified = vec![E::CreateUnqualified(TableRef::new(None, "scratch"))];
    assert_eq!(effects("CREATE TABLE scratch (id int)"), unqualified, "temporary if pg_temp leads the path");
    assert_eq!(effects("CREATE UNLOGGED TABLE scratch (id int)"), unqualified);
    assert!(!unqualified[0].pins_session(), "the session knows its search_path, the text does not");
    assert!(effects("CREATE TABLE public.scratch (id int)").is_empty());
    assert!(effects("EXPLAIN SELECT pg_advisory_lock(1)").is_empty(), "plain EXPLAIN runs nothing");
}

/// The reason shown for a pin is the one that keeps the client longest: one whose state may end
/// (and the server be asked about) gives way to one that lasts for the session.
#[test]
fn the_pin_reason_shown_is_the_one_that_lasts_longest() {
    let reason = |sql: &str| analyze(sql).pin_reason();
    assert_eq!(reason("DECLARE c CURSOR WITH HOLD FOR SELECT 1; LISTEN x"), Some("listen"));
    assert_eq!(reason("LISTEN x; DECLARE c CURSOR WITH HOLD FOR SELECT 1"), Some("listen"));
    assert_eq!(reason("LISTEN x; LOAD 'plpgsql'"), Some("load"));
    assert_eq!(reason("LOAD 'plpgsql'; SELECT pg_advisory_lock(1)"), Some("load"));
    assert_eq!(reason("CREATE TEMP TABLE t (x int); LISTEN x"), Some("temporary_table"));
    for may_end in ["listen", "advisory_lock", "temporary_table", "cursor_with_hold", "sql_prepare"] {
        assert!(pgpilot_sql::pin_may_end(may_end), "{may_end}");
    }
    for lasts in ["load", "do_block", "dynamic_set_config", "session_authorization"] {
        assert!(!pgpilot_sql::pin_may_end(lasts), "{lasts}");
    }
}

/// Every way of making an object only this session can see pins it like CREATE TEMP TABLE; the
/// quick scan must also send each to the parser, or session tracking never looks at it.
#[test]
fn temporary_objects_pin_the_session() {
    let temp = |schema: Option<&str>, name: &str| vec![E::CreateTemporary(TableRef::new(schema, name))];
    for (sql, expected) in [
        ("SELECT id INTO TEMP scratch FROM t", temp(None, "scratch")),
        ("SELECT id INTO TEMPORARY scratch FROM t", temp(None, "scratch")),
        ("SELECT * INTO TEMP TABLE scratch FROM t", temp(None, "scratch")),
        ("select * into temporary table scratch from t where id > 3", temp(None, "scratch")),
        ("SELECT * INTO pg_temp.scratch FROM t", temp(Some("pg_temp"), "scratch")),
        ("WITH w AS (SELECT 1 AS id) SELECT id INTO TEMP scratch FROM w", temp(None, "scratch")),
        ("EXPLAIN ANALYZE SELECT 1 INTO TEMP scratch", temp(None, "scratch")),
        ("CREATE TEMP TABLE scratch AS SELECT id FROM t", temp(None, "scratch")),
        ("CREATE TEMPORARY TABLE scratch AS SELECT id FROM t WITH NO DATA", temp(None, "scratch")),
        ("EXPLAIN ANALYZE CREATE TEMP TABLE scratch AS SELECT 1", temp(None, "scratch")),
        ("CREATE TABLE pg_temp.scratch AS SELECT 1", temp(Some("pg_temp"), "scratch")),
        ("CREATE TABLE pg_temp.scratch (id int)", temp(Some("pg_temp"), "scratch")),
        ("CREATE TABLE pg_temp_3.scratch (id int)", temp(Some("pg_temp_3"), "scratch")),
        ("CREATE TABLE \"pg_temp\".scratch (id int)", temp(Some("pg_temp"), "scratch")),
        ("CREATE VIEW pg_temp.v AS SELECT 1", temp(Some("pg_temp"), "v")),
        ("CREATE SEQUENCE pg_temp.s", temp(Some("pg_temp"), "s")),
        ("CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", temp(Some("pg_temp"), "f")),
        (
            "CREATE OR REPLACE FUNCTION pg_temp.f(x int) RETURNS int AS $$ SELECT x $$ LANGUAGE sql",
            temp(Some("pg_temp"), "f"),
        ),
        ("CREATE PROCEDURE pg_temp.p() LANGUAGE sql AS 'SELECT 1'", temp(Some("pg_temp"), "p")),
        ("CREATE DOMAIN pg_temp.d AS int", temp(Some("pg_temp"), "d")),
        ("CREATE TYPE pg_temp.mood AS ENUM ('ok')", temp(Some("pg_temp"), "mood")),
        ("CREATE OPERATOR FAMILY pg_temp.f USING btree", temp(Some("pg_temp"), "f")),
        (
            "CREATE OPERATOR CLASS pg_temp.c FOR TYPE int USING btree AS OPERATOR 1 <",
            temp(Some("pg_temp"), "c"),
        ),
        (
            "CREATE CONVERSION pg_temp.cv FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8",
            temp(Some("pg_temp"), "cv"),
        ),
    ] {
        let e = analyze(sql).session_effects;
        assert_eq!(e, expected, "{sql}");
        assert!(e[0].pins_session(), "{sql}");
        assert!(quick_look(sql).may_change_session(), "the quick scan skips {sql}");
    }
    for sql in [
        "SELECT * INTO public.scratch FROM t",
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE PROCEDURE app.p() LANGUAGE sql AS 'SELECT 1'",
        "CREATE TABLE pg_temporal.t (id int)",
        "EXPLAIN SELECT 1 INTO TEMP scratch",
    ] {
        assert!(analyze(sql).session_effects.is_empty(), "{sql}");
    }
    // Made where the search_path says: the session decides whether that is the temporary schema.
    for (sql, name) in [
        ("SELECT id INTO scratch FROM t", "scratch"),
        ("SELECT * INTO TABLE scratch FROM t", "scratch"),
        ("CREATE TABLE scratch AS SELECT 1", "scratch"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "f"),
        ("CREATE VIEW v AS SELECT 1", "v"),
        ("CREATE SEQUENCE s", "s"),
        ("CREATE TYPE pair AS (a int, b int)", "pair"),
        ("CREATE DOMAIN d AS int", "d"),
        ("CREATE OPERATOR FAMILY f USING btree", "f"),
    ] {
        assert_eq!(
            analyze(sql).session_effects,
            vec![E::CreateUnqualified(TableRef::new(None, name))],
            "{sql}"
        );
    }
}

#[test]
fn plain_uses_of_a_temp_column_need_no_session_tracking() {
    for sql in ["SELECT temp FROM readings WHERE id = 1", "INSERT INTO readings (temp) VALUES (21.5)"] {
        assert!(!quick_look(sql).may_change_session(), "{sql}");
    }
}

fn e_schema(sql: &str) -> Option<&'static str> {
    sql.contains("pg_temp.").then_some("pg_temp")
}

#[test]
fn hints_come_from_comments_only() {
    let s = analyze("/* pgpilot:primary */ SELECT * FROM t");
    assert_eq!(s.hints.route, Some(RouteHint::Primary));
    let s = analyze("SELECT * FROM t /* pgpilot:cache ttl=30s tags=user:42,orders */");
    let cache = s.hints.cache.expect("cache hint");
    assert_eq!(cache.ttl, Some(std::time::Duration::from_secs(30)));
    assert_eq!(cache.tags, vec!["user:42", "orders"]);
    assert!(analyze("SELECT 1 -- pgpilot:nocache").hints.nocache);
    assert_eq!(analyze("/* pgpilot:tag=analytics */ SELECT 1").hints.tag.as_deref(), Some("analytics"));
    assert!(analyze("SELECT 'pgpilot:primary'").hints.is_empty());
    // Hints survive text the grammar rejects.
    assert_eq!(analyze("/* pgpilot:replica */ SELEC 1").hints.route, Some(RouteHint::Replica));
}

#[test]
fn fingerprints_ignore_literals_and_normalized_text_shows_parameters() {
    let a = analyze("SELECT * FROM t WHERE id = 1");
    let b = analyze("SELECT * FROM t WHERE id = 2");
    let c = analyze("SELECT * FROM t WHERE name = 'x'");
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_ne!(a.fingerprint, c.fingerprint);
    assert_eq!(&*a.normalized, "SELECT * FROM t WHERE id = $1");
    let broken = analyze("SELEC 1");
    assert_eq!(broken.fingerprint, analyze("SELEC 1").fingerprint);
    assert!(broken.parse_error.is_some());
}

#[test]
fn read_shapes() {
    let s = analyze("SELECT * FROM a FOR KEY SHARE OF a, b FOR NO KEY UPDATE OF b");
    assert_eq!(s.shape.locking, Some(LockStrength::ForNoKeyUpdate));
    assert!(analyze("SELECT * INTO x FROM y").shape.select_into);
    assert!(analyze("WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d").shape.writing_cte);
    assert!(analyze("SELECT * FROM pg_class").shape.system_catalog);
    assert!(analyze("SELECT * FROM information_schema.tables").shape.system_catalog);
    assert!(!analyze("SELECT * FROM t").shape.system_catalog);
    assert!(analyze("SELECT * FROM t WHERE d > 'today'").shape.time_literal);
    assert!(analyze("SELECT 'now'::timestamptz").shape.time_literal);
    assert!(!analyze("SELECT 'nowhere'").shape.time_literal);
    // The word is read where PostgreSQL's date/time input reads it: beside a time, inside a range
    // or an array, and decoded from escapes.
    for text in [
        "SELECT 'today 10:00'::timestamp",
        "SELECT '[now,infinity)'::tstzrange",
        "SELECT '{now}'::timestamptz[]",
        "SELECT '[today,tomorrow)'::daterange",
        "SELECT ' Yesterday '::date",
        r"SELECT E'\x6eow'::timestamptz",
        r"SELECT U&'\006Eow'::timestamptz",
    ] {
        assert!(analyze(text).shape.time_literal, "{text}");
    }
    assert!(!analyze("SELECT '[2026-01-01,infinity)'::daterange, 'knowledge'").shape.time_literal);
    // A column or expression cast to a date/time type may be text holding 'now' (helper-131).
    for text in [
        "SELECT due::timestamptz FROM events",
        "SELECT CAST(due AS timestamp) FROM events",
        "SELECT ('n' || 'ow')::timestamp",
        "SELECT (s)::date FROM t",
        "SELECT row(s)::text::timestamptz FROM t",
        "SELECT due::pg_catalog.timestamptz[] FROM events",
        "SELECT tstzrange(lo::timestamptz, NULL) FROM t",
        "SELECT * FROM t WHERE d > c::date",
    ] {
        assert!(analyze(text).shape.time_input, "{text}");
    }
    for text in [
        "SELECT '2026-01-01'::timestamptz",
        "SELECT $1::timestamptz",
        "SELECT CURRENT_DATE::timestamp",
        "SELECT '2026-01-01'::text::date",
        "SELECT $1::text::timestamptz",
        "SELECT due::text FROM events",
        "SELECT n::bigint FROM t",
    ] {
        assert!(!analyze(text).shape.time_input, "{text}");
    }
    // XMLTABLE and JSON_TABLE columns of a date/time type: XPath and JSON path can build the
    // words from pieces of even a constant document.
    for text in [
        "SELECT t FROM x, xmltable('/a' PASSING xmlparse(document s) COLUMNS t timestamptz PATH '.') q",
        "SELECT * FROM xmltable('/a' PASSING '<a>x</a>' COLUMNS d date PATH 'concat(\"no\", \"w\")')",
        "SELECT * FROM json_table(j, '$' COLUMNS (t timestamp PATH '$.t')) q",
    ] {
        assert!(analyze(text).shape.time_input, "{text}");
    }
    // Other types a value read at run time is converted to: the catalog tells whether one is a
    // composite, domain, array or range over a date/time type (helper-190).
    let input_casts =
        |text: &str| -> Vec<String> { analyze(text).input_casts.iter().map(|f| f.to_string()).collect() };
    assert_eq!(input_casts("SELECT row(s)::comp FROM tx"), ["comp"]);
    assert_eq!(input_casts("SELECT CAST(row(1, s) AS app.comp2) FROM tx"), ["app.comp2"]);
    assert_eq!(input_casts("SELECT array[row(s)]::comp[] FROM tx"), ["comp"]);
    assert_eq!(input_casts("SELECT s::comp, s::text FROM tx"), ["comp", "text"]);
    assert_eq!(input_casts("SELECT * FROM xmltable('/a' PASSING x COLUMNS c comp PATH '.') q"), ["comp"]);
    assert!(input_casts("SELECT row(1, 'x')::comp2, $1::comp, '(1)'::comp").is_empty());
    assert_eq!(analyze("SELECT * FROM t WHERE a = $1 AND b = $3").shape.max_param, 3);
    let s = analyze("SELECT CURRENT_DATE, LOCALTIMESTAMP(3), SESSION_USER, CURRENT_SCHEMA, CURRENT_ROLE");
    assert_eq!(
        s.value_functions,
        vec![
            ValueFunction::CurrentDate,
            ValueFunction::LocalTimestamp,
            ValueFunction::SessionUser,
            ValueFunction::CurrentSchema,
            ValueFunction::CurrentRole
        ]
    );
}

#[test]
fn what_invalidates_everything() {
    let everything = |sql: &str| analyze(sql).invalidates_everything;
    assert!(!everything("UPDATE t SET x = 1"));
    assert!(!everything("DROP TABLE t"));
    assert!(!everything("ALTER TABLE t ADD COLUMN y int"));
    assert!(!everything("TRUNCATE t"));
    assert!(everything("DROP TABLE t CASCADE"));
    assert!(everything("TRUNCATE t CASCADE"));
    assert!(everything("TRUNCATE t RESTART IDENTITY"));
    assert!(everything("DROP SCHEMA app CASCADE"));
    assert!(everything("DROP FUNCTION f(int)"));
    assert!(everything("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2'"));
    assert!(everything("ALTER TABLE t RENAME TO u"));
    assert!(everything("DO $$BEGIN END$$"));
    assert!(everything("CALL p()"));
    assert!(everything("SELEC 1"));
    assert!(!everything("SELECT 1"));
}

#[test]
fn functions_keep_their_schema() {
    let s = analyze("SELECT app.f(x), lower(y), pg_catalog.upper(z), EXTRACT(year FROM d) FROM t");
    let names: Vec<String> = s.functions.iter().map(ToString::to_string).collect();
    assert_eq!(names, vec!["app.f", "lower", "pg_catalog.upper", "pg_catalog.extract"]);
}
