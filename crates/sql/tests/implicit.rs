//! Code a statement runs without naming it: user operators, casts to types with cast functions or
//! domain CHECK constraints, views calling volatile functions. Collected from the text, judged
//! against the function catalog by routing and cacheability.

use pgpilot_sql::{
    analyze, cacheability, route, FuncRef, FunctionCatalog, ImplicitKind, NotCacheable, PrimaryReason,
    RelationCatalog, Route, Volatility,
};

fn f(schema: Option<&str>, name: &str) -> FuncRef {
    FuncRef::new(schema, name)
}

#[test]
fn operators_and_cast_types_are_collected() {
    let s = analyze("SELECT 1 ### 2, a OPERATOR(app.@@) b FROM t WHERE x = ANY (SELECT y FROM u)");
    assert_eq!(s.operators, vec![f(None, "###"), f(Some("app"), "@@"), f(None, "=")]);
    let s = analyze("SELECT * FROM t WHERE x BETWEEN 1 AND 2 AND y NOT IN (1, 2) AND z LIKE 'a%'");
    assert_eq!(s.operators, vec![f(None, ">="), f(None, "<="), f(None, "<>"), f(None, "~~")]);
    let s = analyze("SELECT * FROM t ORDER BY x USING <<<");
    assert_eq!(s.operators, vec![f(None, "<<<")]);
    let s = analyze("SELECT 1::wt, CAST(2 AS app.dw), wt2 '3', 4::int, '{1}'::dw[], 5::wt");
    assert_eq!(
        s.cast_types,
        vec![
            f(None, "wt"),
            f(Some("app"), "dw"),
            f(None, "wt2"),
            f(Some("pg_catalog"), "int4"),
            f(None, "dw")
        ]
    );
    // Nothing of the kind in a plain read; a column definition is no cast.
    let s = analyze("SELECT * FROM t");
    assert!(s.operators.is_empty() && s.cast_types.is_empty());
    assert!(analyze("CREATE TABLE x (a wt)").cast_types.is_empty());
    // Inside function arguments, subqueries and CTEs too.
    let s = analyze("WITH c AS (SELECT 1 ### 2 AS v) SELECT lower((SELECT v::wt FROM c)::text)");
    assert_eq!(s.operators, vec![f(None, "###")]);
    // The outer cast is met first.
    assert_eq!(s.cast_types, vec![f(None, "text"), f(None, "wt")]);
}

fn catalog() -> FunctionCatalog {
    use ImplicitKind::*;
    use Volatility::*;
    FunctionCatalog::from_entries([
        ("pg_catalog", "lower", Immutable),
        ("pg_catalog", "random", Volatile),
        ("public", "wr", Volatile),
    ])
    .with_implicit([
        (Operator, "public", "###", Volatile),
        (Operator, "public", "~~~", Stable),
        (Type, "public", "wt", Volatile),
        (Type, "app", "dw", Volatile),
        (Type, "public", "st", Stable),
        (Relation, "public", "v_wr", Volatile),
    ])
}

#[test]
fn implicit_writers_route_to_the_primary() {
    let functions = catalog();
    assert!(functions.has_implicit_writers());
    let path = vec!["public".to_string()];
    let r = |sql: &str| route(&analyze(sql), &functions, &path);
    let volatile = Route::Primary(PrimaryReason::VolatileFunction);
    for sql in [
        "SELECT * FROM v_wr",
        "SELECT * FROM public.v_wr",
        "SELECT * FROM t JOIN v_wr USING (id)",
        "SELECT 1 ### 2",
        "SELECT 1 OPERATOR(public.###) 2",
        "SELECT 1::wt",
        "SELECT CAST(1 AS app.dw)",
        "SELECT 1::dw",
        "SELECT x FROM t WHERE x = (SELECT 1 ### 2)",
    ] {
        assert_eq!(r(sql), volatile, "{sql}");
    }
    for sql in [
        "SELECT * FROM plain_view",
        "SELECT * FROM other.v_wr",
        "SELECT 1 ~~~ 2",
        "SELECT 1::st",
        "SELECT 1::other.dw",
        "SELECT 1 + 2, 3::int",
        // EXPLAIN only plans.
        "EXPLAIN SELECT * FROM v_wr",
    ] {
        assert_eq!(r(sql), Route::AnyServer, "{sql}");
    }
    // Without implicit writers nothing changes.
    let plain = FunctionCatalog::from_entries([("pg_catalog", "lower", Volatility::Immutable)]);
    assert!(!plain.has_implicit_writers());
    assert_eq!(route(&analyze("SELECT 1 ### 2"), &plain, &path), Route::AnyServer);
    let stable_only = FunctionCatalog::default().with_implicit([(
        ImplicitKind::Operator,
        "public",
        "~~~",
        Volatility::Stable,
    )]);
    assert!(!stable_only.has_implicit_writers());
}

#[test]
fn implicit_code_makes_a_read_uncacheable() {
    let functions = catalog();
    let relations = RelationCatalog::default();
    let path = vec!["public".to_string()];
    let c = |sql: &str| cacheability(&analyze(sql), &functions, &relations, &path).err();
    assert_eq!(c("SELECT 1 ### 2"), Some(NotCacheable::VolatileFunction));
    assert_eq!(c("SELECT 1::wt"), Some(NotCacheable::VolatileFunction));
    assert_eq!(c("SELECT 1 ~~~ 2"), Some(NotCacheable::StableFunction));
    assert_eq!(c("SELECT 1::st"), Some(NotCacheable::StableFunction));
    assert_eq!(c("SELECT lower('a') ### 2"), Some(NotCacheable::VolatileFunction));
    assert_eq!(c("SELECT * FROM v_wr"), Some(NotCacheable::VolatileFunction));
    // No relation catalog here: a read of no relation with no such code is cacheable.
    assert_eq!(c("SELECT 1 + 2, lower('a')"), None);
}
