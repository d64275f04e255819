//! `pgpilot partitions convert` prints a plan; running that plan converts the table for real.

mod common;

use chrono::{Datelike, Utc};
use common::{client, clock, config, lines, run};
use pgpilot_scheduler::convert::{plan, ConvertRequest};
use pgpilot_scheduler::{Outcome, PartitionInterval};
use pgpilot_testkit::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_plan_converts_a_live_table() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE events (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(),
                              kind text NOT NULL CHECK (kind <> ''));
         CREATE INDEX events_created_at_idx ON events (created_at);
         CREATE INDEX events_kind_idx ON events (kind, created_at);
         INSERT INTO events (created_at, kind) SELECT now() - g * interval '1 hour', 'k' || g % 3 FROM generate_series(1, 5000) g;
         CREATE VIEW recent_events AS SELECT id, kind FROM events WHERE created_at > now() - interval '1 day';
         CREATE TABLE audit (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, day date NOT NULL);
         INSERT INTO audit (day) SELECT current_date - g FROM generate_series(1, 100) g;",
    );
    let c = client(&cluster).await;
    let request = ConvertRequest {
        table: "events".into(),
        column: "created_at".into(),
        interval: PartitionInterval::Monthly,
        premake: 2,
        naming: None,
        database: Some("app".into()),
        now: Utc::now(),
    };
    let events_plan = plan(&c, &request).await.expect("a plan");
    let text = events_plan.render();
    assert!(text.contains("Nothing has been run"), "{text}");
    assert!(text.contains("PRIMARY KEY events_pkey (id) does not include created_at"), "{text}");
    assert!(text.contains("kind = \"partitions\"") && text.contains("database = \"app\""), "{text}");
    assert!(
        text.contains("< '") && text.contains(" 00:00:00+00')"),
        "timestamptz bounds carry their zone: {text}"
    );
    // Planning changed nothing.
    assert_eq!(cluster.psql("postgres", "SELECT relkind FROM pg_class WHERE relname = 'events'"), "r");

    let indexes_before =
        cluster.psql("postgres", "SELECT count(*) FROM pg_indexes WHERE tablename = 'events'");
    // The script means the same whatever the TimeZone of the session that runs it.
    c.batch_execute("SET TimeZone = 'Asia/Tokyo'").await.unwrap();
    run_plan(&c, &events_plan).await;
    assert_eq!(cluster.psql("postgres", "SELECT relkind FROM pg_class WHERE relname = 'events'"), "p");
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM events"), "5000");
    // The old table's indexes were adopted, not rebuilt: it has its own plus the widened unique one.
    let legacy_indexes =
        cluster.psql("postgres", "SELECT count(*) FROM pg_indexes WHERE tablename = 'events_legacy'");
    assert_eq!(legacy_indexes.parse::<i32>().unwrap(), indexes_before.parse::<i32>().unwrap() + 1);
    // New rows take fresh ids and land in the new partitions; the view follows the new table.
    let b = events_plan.boundary;
    let new_part = format!("events_y{:04}_m{:02}", b.year(), b.month());
    cluster
        .psql("postgres", &format!("INSERT INTO events (created_at, kind) VALUES ('{b} 12:00+00', 'new')"));
    assert_eq!(cluster.psql("postgres", &format!("SELECT id, kind FROM {new_part}")), "5001|new");
    let bound = cluster.psql(
        "postgres",
        &format!("SET TimeZone = 'UTC'; SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = '{new_part}'"),
    );
    assert!(bound.starts_with(&format!("FOR VALUES FROM ('{b} 00:00:00+00')")), "{bound}");
    assert_eq!(cluster.psql("postgres", "SELECT count(*) > 0 FROM recent_events"), "t");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT string_agg(DISTINCT d.refobjid::regclass::text, ',') FROM pg_depend d
               JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
              WHERE v.relname = 'recent_events' AND d.refobjid <> v.oid AND d.refobjsubid > 0"
        ),
        "events",
        "the view reads the partitioned table"
    );

    let audit_plan = plan(
        &c,
        &ConvertRequest {
            table: "audit".into(),
            column: "day".into(),
            interval: PartitionInterval::Yearly,
            ..request
        },
    )
    .await
    .expect("a plan for the identity table");
    run_plan(&c, &audit_plan).await;
    cluster.psql("postgres", &format!("INSERT INTO audit (day) VALUES ('{}')", audit_plan.boundary));
    assert_eq!(cluster.psql("postgres", "SELECT max(id) FROM audit"), "101");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_names_views_and_sequences_with_their_schema_whatever_the_search_path() {
    let cluster = Cluster::start();
    // A schema named after the user comes first on the default search_path ("$user", public): an
    // unqualified CREATE OR REPLACE VIEW in the plan would make a new view there.
    cluster.psql(
        "postgres",
        "CREATE SCHEMA postgres;
         CREATE TABLE public.hits (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO public.hits (created_at) SELECT now() - g * interval '1 hour' FROM generate_series(1, 100) g;
         CREATE VIEW public.recent_hits AS SELECT * FROM public.hits;",
    );
    let c = client(&cluster).await;
    let request = ConvertRequest {
        table: "hits".into(),
        column: "created_at".into(),
        interval: PartitionInterval::Monthly,
        premake: 1,
        naming: None,
        database: None,
        now: Utc::now(),
    };
    let hits_plan = plan(&c, &request).await.expect("a plan");
    let text = hits_plan.render();
    assert!(text.contains("CREATE OR REPLACE VIEW public.recent_hits AS"), "{text}");
    assert!(text.contains("FROM public.hits"), "the view's query names its table's schema: {text}");
    assert!(text.contains("ALTER SEQUENCE public.hits_id_seq OWNED BY"), "{text}");
    // Planning leaves the session's search_path as it found it.
    let path: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, "\"$user\", public");

    run_plan(&c, &hits_plan).await;
    assert_eq!(
        cluster
            .psql("postgres", "SELECT count(*) FROM pg_class WHERE relnamespace = 'postgres'::regnamespace"),
        "0",
        "nothing was made in the user's schema"
    );
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT string_agg(DISTINCT d.refobjid::regclass::text, ',') FROM pg_depend d
               JOIN pg_rewrite r ON r.oid = d.objid
              WHERE r.ev_class = 'public.recent_hits'::regclass AND d.refobjid <> r.ev_class"
        ),
        "hits",
        "the application's view reads the partitioned table"
    );
    assert_eq!(
        cluster.psql("postgres", "SELECT pg_get_serial_sequence('public.hits', 'id')"),
        "public.hits_id_seq"
    );
}

/// The `[[jobs]]` table the plan prints is what the partitions job reads: `table` is an SQL name,
/// so a mixed-case or spaced table must come out quoted, or the job manages a lower-case namesake
/// (or fails with 42602). A column is given as a quoted SQL identifier, like the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_job_names_mixed_case_and_spaced_tables_as_sql_names() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        r#"CREATE TABLE "MyEvents" (id bigserial PRIMARY KEY, ts timestamptz NOT NULL);
           INSERT INTO "MyEvents" (ts) SELECT now() - g * interval '1 hour' FROM generate_series(1, 500) g;
           -- An unrelated partitioned table whose name is the lower-case spelling.
           CREATE TABLE myevents (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
           CREATE TABLE "Audit Log" (id int PRIMARY KEY, "Created At" timestamptz NOT NULL);
           INSERT INTO "Audit Log" SELECT g, now() - g * interval '1 day' FROM generate_series(1, 100) g;"#,
    );
    let c = client(&cluster).await;
    let now = Utc::now();
    for (table, column, job_table) in [
        (r#""MyEvents""#, "ts", r#"public."MyEvents""#),
        (r#""Audit Log""#, r#""Created At""#, r#"public."Audit Log""#),
    ] {
        let request = ConvertRequest {
            table: table.into(),
            column: column.into(),
            interval: PartitionInterval::Monthly,
            premake: 2,
            naming: None,
            database: Some("app".into()),
            now,
        };
        let table_plan = plan(&c, &request).await.unwrap_or_else(|e| panic!("a plan for {table}: {e}"));
        run_plan(&c, &table_plan).await;
        let cfg = config(&cluster, &table_plan.job_toml);
        let name = cfg.jobs[0].name.clone();
        let report = run(&cfg, &name, &clock(now)).await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}\n{}", table_plan.job_toml);
        assert!(table_plan.job_toml.contains(job_table), "{}", table_plan.job_toml);
        let partitions = lines(
            &cluster,
            &format!("SELECT count(*) FROM pg_inherits WHERE inhparent = '{}'::regclass", job_table),
        );
        assert!(partitions[0].parse::<i32>().unwrap() >= 3, "{table}: {partitions:?}");
    }
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM pg_inherits WHERE inhparent = 'myevents'::regclass"),
        "0",
        "the lower-case namesake was left alone"
    );
    // A bare column name is still taken as the exact name, not case-folded.
    cluster.psql("postgres", r#"CREATE TABLE "Plain" ("CreatedAt" date NOT NULL)"#);
    let exact = ConvertRequest {
        table: r#""Plain""#.into(),
        column: "CreatedAt".into(),
        interval: PartitionInterval::Monthly,
        premake: 1,
        naming: None,
        database: None,
        now,
    };
    let plain = plan(&c, &exact).await.expect("a plan naming the column exactly");
    assert!(plain.render().contains(r#"CHECK ("CreatedAt" IS NOT NULL"#), "{}", plain.render());
}

/// Runs each statement of steps 1 and 3 on its own (CREATE INDEX CONCURRENTLY refuses a
/// transaction block) and step 2 as the single transaction it is written as.
async fn run_plan(c: &tokio_postgres::Client, plan: &pgpilot_scheduler::convert::ConvertPlan) {
    for (i, step) in plan.steps.iter().enumerate() {
        if i == 1 {
            c.batch_execute(&step.sql.join("\n"))
                .await
                .unwrap_or_else(|e| panic!("step 2 failed: {e:?}\n{}", plan.render()));
        } else {
            for sql in &step.sql {
                c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql} failed: {e:?}"));
            }
        }
    }
}
