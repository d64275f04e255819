//! Partitions premade from a frozen clock, bogus future rows, the default partition, retention.

mod common;

use common::{at, client, clock, config, lines, run};
use pgpilot_scheduler::Outcome;
use pgpilot_testkit::Cluster;

fn partitions_of(cluster: &Cluster, table: &str) -> Vec<String> {
    lines(
        cluster,
        &format!(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = '{table}'::regclass ORDER BY 1"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premade_across_month_and_year_boundaries() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE events (id bigint, created_at timestamptz NOT NULL, payload text) PARTITION BY RANGE (created_at);
         CREATE INDEX ON events (created_at);
         CREATE TABLE ticks (day date NOT NULL, n int) PARTITION BY RANGE (day);
         CREATE TABLE weekly (at timestamp NOT NULL) PARTITION BY RANGE (at);",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "events"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "events"
        interval = "monthly"
        premake = 3

        [[jobs]]
        name = "ticks"
        kind = "partitions"
        schedule = "@hourly"
        database = "app"
        table = "public.ticks"
        interval = "daily"
        premake = 3
        naming = "{table}_{YYYY}{MM}{DD}"

        [[jobs]]
        name = "weekly"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "weekly"
        interval = "weekly"
        premake = 1
        "#,
    );
    let clock = clock(at(2026, 11, 20, 9, 30, 0));
    let report = run(&cfg, "events", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(
        partitions_of(&cluster, "events"),
        ["events_y2026_m11", "events_y2026_m12", "events_y2027_m01", "events_y2027_m02"]
    );
    // Bounds are UTC month starts, and indexes came along.
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'events_y2027_m01'"
        ),
        "FOR VALUES FROM ('2027-01-01 00:00:00+00') TO ('2027-02-01 00:00:00+00')"
    );
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM pg_indexes WHERE tablename = 'events_y2027_m02'"),
        "1"
    );

    clock.set(at(2026, 12, 30, 23, 0, 0));
    let report = run(&cfg, "ticks", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(
        partitions_of(&cluster, "ticks"),
        ["ticks_20261230", "ticks_20261231", "ticks_20270101", "ticks_20270102"]
    );

    // Running again changes nothing; a month later only the new months appear.
    let again = run(&cfg, "events", &clock).await;
    assert_eq!(again.outcome, Outcome::Succeeded, "{again:?}");
    assert_eq!(partitions_of(&cluster, "events").len(), 5, "December 30 adds March 2027");
    clock.set(at(2027, 1, 1, 0, 0, 0));
    let report = run(&cfg, "weekly", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(partitions_of(&cluster, "weekly"), ["weekly_y2026_w53", "weekly_y2027_w01"]);
    cluster.psql(
        "postgres",
        "INSERT INTO events VALUES (1, '2027-01-15', 'x'); INSERT INTO ticks VALUES ('2027-01-02', 1)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_future_row_makes_no_extra_partitions_and_is_reported() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE m (id int, at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE m_default PARTITION OF m DEFAULT;
         INSERT INTO m VALUES (1, '2100-01-01'), (2, '2026-03-02');",
    );
    let job = r#"
        [[jobs]]
        name = "m"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "m"
        interval = "monthly"
        premake = 2
        "#;
    let cfg = config(&cluster, job);
    let clock = clock(at(2026, 1, 10, 0, 0, 0));
    let report = run(&cfg, "m", &clock).await;
    // March's row already sits in the default partition, so March cannot be made without moving it.
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(error.contains("move_default_rows"), "{error}");
    assert_eq!(partitions_of(&cluster, "m"), ["m_default", "m_y2026_m01", "m_y2026_m02"]);
    assert_eq!(report.default_partition_rows, Some(2));
    assert!(report.notes.iter().any(|n| n.contains("2100-01-01")), "{:?}", report.notes);

    let moving = config(&cluster, &format!("{job}move_default_rows = true\n"));
    let report = run(&moving, "m", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(1), "one row moved");
    assert_eq!(partitions_of(&cluster, "m"), ["m_default", "m_y2026_m01", "m_y2026_m02", "m_y2026_m03"]);
    assert_eq!(cluster.psql("postgres", "SELECT id FROM m_y2026_m03"), "2");
    // The year-2100 row stays in the default partition: no partition is made 74 years ahead.
    assert_eq!(cluster.psql("postgres", "SELECT id FROM m_default"), "1");
    assert_eq!(report.default_partition_rows, Some(1));
}

/// s29 finding 5: moving rows out of the default partition deletes them there first, which fires
/// the ON DELETE action of a foreign key referencing the table: CASCADE silently deleted the
/// referencing rows. Rows of a referenced table are left in place and the run names the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rows_of_a_referenced_table_are_not_moved() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE ev (id int, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE ev_default PARTITION OF ev DEFAULT;
         CREATE TABLE ev_y2026_m01 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
         CREATE TABLE ev_notes (ev_id int, ev_at date, FOREIGN KEY (ev_id, ev_at) REFERENCES ev ON DELETE CASCADE);
         INSERT INTO ev VALUES (1, '2026-02-10');
         INSERT INTO ev_notes VALUES (1, '2026-02-10');",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "ev"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "ev"
        interval = "monthly"
        premake = 1
        move_default_rows = true
        "#,
    );
    let report = run(&cfg, "ev", &clock(at(2026, 1, 20, 0, 0, 0))).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(
        error.contains("constraint ev_notes_ev_id_ev_at_fkey of ev_notes references public.ev"),
        "{error}"
    );
    assert_eq!(partitions_of(&cluster, "ev"), ["ev_default", "ev_y2026_m01"]);
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM ev_notes"),
        "1",
        "the referencing row survives"
    );
    assert_eq!(cluster.psql("postgres", "SELECT id FROM ev_default"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periods_only_partly_covered_by_hand_made_partitions_fail_the_run() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE ovl (at date NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE ovl_manual PARTITION OF ovl FOR VALUES FROM ('2026-12-15') TO ('2027-01-15');
         CREATE TABLE ovl_y2027_m03 PARTITION OF ovl FOR VALUES FROM ('2027-03-01') TO ('2027-03-15');
         CREATE TABLE caught (at date NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE caught_half PARTITION OF caught FOR VALUES FROM ('2026-12-01') TO ('2026-12-15');
         CREATE TABLE caught_default PARTITION OF caught DEFAULT;",
    );
    let job = |name: &str| {
        format!(
            "[[jobs]]\nname = \"{name}\"\nkind = \"partitions\"\nschedule = \"@daily\"\ndatabase = \"app\"\n\
             table = \"{name}\"\ninterval = \"monthly\"\npremake = 3\n"
        )
    };
    let cfg = config(&cluster, &(job("ovl") + &job("caught")));
    let clock = clock(at(2026, 12, 20, 12, 0, 0));
    let report = run(&cfg, "ovl", &clock).await;
    // December, January and March would each leave days where inserts fail: the run says which.
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    for part in [
        "2026-12-01..2027-01-01 is only partly covered by public.ovl_manual: no partition takes rows for 2026-12-01..2026-12-15 (UTC)",
        "2027-01-01..2027-02-01 is only partly covered by public.ovl_manual: no partition takes rows for 2027-01-15..2027-02-01",
        "2027-03-01..2027-04-01 is only partly covered by public.ovl_y2027_m03: no partition takes rows for 2027-03-15..2027-04-01",
    ] {
        assert!(error.contains(part), "{part}\nnot in: {error}");
    }
    // The uncovered February is still made.
    assert_eq!(partitions_of(&cluster, "ovl"), ["ovl_manual", "ovl_y2027_m02", "ovl_y2027_m03"]);

    // Filled by hand (exactly, and by a partition wider than the period): the run succeeds.
    cluster.psql(
        "postgres",
        "CREATE TABLE ovl_dec PARTITION OF ovl FOR VALUES FROM ('2026-12-01') TO ('2026-12-15');
         CREATE TABLE ovl_jan PARTITION OF ovl FOR VALUES FROM ('2027-01-15') TO ('2027-02-01');
         CREATE TABLE ovl_spring PARTITION OF ovl FOR VALUES FROM ('2027-03-15') TO ('2027-07-01');",
    );
    let report = run(&cfg, "ovl", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert!(
        report.notes.iter().any(|n| n.contains(
            "2027-03-01..2027-04-01 is already covered by public.ovl_y2027_m03, public.ovl_spring"
        )),
        "{:?}",
        report.notes
    );
    cluster.psql("postgres", "INSERT INTO ovl VALUES ('2026-12-05'), ('2027-01-20'), ('2027-03-20')");

    // A default partition catches what the partial partition leaves: a note, not a failure.
    let report = run(&cfg, "caught", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert!(
        report.notes.iter().any(|n| n.contains(
            "2026-12-01..2027-01-01 is only partly covered by public.caught_half; rows for 2026-12-15..2027-01-01 (UTC) \
             go to the default partition public.caught_default"
        )),
        "{:?}",
        report.notes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_detaches_only_partitions_wholly_past_the_cutoff() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE keep (at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE gone (at date NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE gone_default PARTITION OF gone DEFAULT;",
    );
    let jobs = r#"
        [[jobs]]
        name = "keep"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "keep"
        interval = "monthly"
        premake = 3
        retention = "2 months"

        [[jobs]]
        name = "gone"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "gone"
        interval = "monthly"
        premake = 3
        retention = "2 months"
        retention_drop = true
    "#;
    let cfg = config(&cluster, jobs);
    let clock = clock(at(2025, 10, 10, 0, 0, 0));
    for name in ["keep", "gone"] {
        let report = run(&cfg, name, &clock).await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    }
    cluster.psql(
        "postgres",
        "INSERT INTO keep VALUES ('2025-10-05'), ('2025-11-05'); INSERT INTO gone VALUES ('2025-10-05')",
    );

    // Cutoff 2025-11-20: October (ends Nov 1) goes, November (ends Dec 1) stays.
    clock.set(at(2026, 1, 20, 0, 0, 0));
    let report = run(&cfg, "keep", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(
        super_partitions(&cluster, "keep"),
        [
            "keep_y2025_m11",
            "keep_y2025_m12",
            "keep_y2026_m01",
            "keep_y2026_m02",
            "keep_y2026_m03",
            "keep_y2026_m04"
        ]
    );
    // Detached, not dropped: the rows are still there to archive.
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM keep_y2025_m10"), "1");
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM keep"), "1");
    assert!(report.notes.iter().any(|n| n.contains("detached public.keep_y2025_m10")), "{:?}", report.notes);
    // No default partition on PostgreSQL 14+: detached CONCURRENTLY, so queries were never blocked.
    assert!(!report.notes.iter().any(|n| n.contains("without CONCURRENTLY")), "{:?}", report.notes);

    let report = run(&cfg, "gone", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert!(!super_partitions(&cluster, "gone").contains(&"gone_y2025_m10".to_string()));
    assert_eq!(cluster.psql("postgres", "SELECT to_regclass('gone_y2025_m10') IS NULL"), "t");
    assert!(super_partitions(&cluster, "gone").contains(&"gone_y2025_m11".to_string()));
    // A default partition rules out CONCURRENTLY, and the job says so.
    assert!(report.notes.iter().any(|n| n.contains("without CONCURRENTLY")), "{:?}", report.notes);
}

fn super_partitions(cluster: &Cluster, table: &str) -> Vec<String> {
    partitions_of(cluster, table).into_iter().filter(|p| !p.ends_with("_default")).collect()
}

/// Leaves `partition` of `table` half-detached, as a DBA's `DETACH PARTITION ... CONCURRENTLY`
/// cancelled while it waited for a reader's snapshot does.
async fn interrupt_a_concurrent_detach(cluster: &Cluster, table: &str, partition: &str) {
    let reader = client(cluster).await;
    reader
        .batch_execute(&format!("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM {table}"))
        .await
        .unwrap();
    let dba = client(cluster).await;
    dba.batch_execute("SET statement_timeout = '1s'").await.unwrap();
    let detach = dba
        .batch_execute(&format!("ALTER TABLE {table} DETACH PARTITION {partition} CONCURRENTLY"))
        .await
        .expect_err("the detach waits for the reader and is cancelled");
    assert_eq!(detach.code().map(|c| c.code()), Some("57014"), "{detach:?}");
    reader.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        cluster.psql(
            "postgres",
            &format!("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = '{partition}'::regclass")
        ),
        "t"
    );
}

/// Someone else's interrupted detach of a partition the job keeps is not finished by the job (it
/// would leave the month without a partition while the run reports success): the run fails and
/// says what to do; once the DBA finalizes it, the detached table holding the partition's name is
/// reported as such, not as a bare 42P07. A half-detached partition past retention is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_detach_is_finished_only_for_a_partition_past_retention() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE ev (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts)");
    let job = r#"
        [[jobs]]
        name = "ev"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "public.ev"
        interval = "monthly"
        premake = 1
        "#;
    let cfg = config(&cluster, job);
    let clock = clock(at(2026, 9, 10, 0, 0, 0));
    let report = run(&cfg, "ev", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(partitions_of(&cluster, "ev"), ["ev_y2026_m09", "ev_y2026_m10"]);

    interrupt_a_concurrent_detach(&cluster, "ev", "ev_y2026_m10").await;
    for _ in 0..2 {
        let report = run(&cfg, "ev", &clock).await;
        assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
        let error = report.error.clone().unwrap_or_default();
        assert!(error.contains("public.ev_y2026_m10 is half-detached"), "{error}");
        assert!(error.contains(r#"DETACH PARTITION "public"."ev_y2026_m10" FINALIZE"#), "{error}");
        assert!(!report.notes.iter().any(|n| n.contains("finished")), "{:?}", report.notes);
        assert_eq!(
            cluster.psql(
                "postgres",
                "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'ev_y2026_m10'::regclass"
            ),
            "t",
            "the job left the detach as it was"
        );
    }

    // The DBA finishes the detach: the table keeps the name the job would make October under.
    cluster.psql("postgres", "ALTER TABLE ev DETACH PARTITION ev_y2026_m10 FINALIZE");
    let report = run(&cfg, "ev", &clock).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(
        error.contains("public.ev_y2026_m10 already exists as a table that is not a partition"),
        "{error}"
    );
    assert!(!error.contains("42P07"), "{error}");
    let attach = error
        .split_once(r#"ALTER TABLE "public"."ev" ATTACH PARTITION"#)
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(statement, _)| format!(r#"ALTER TABLE "public"."ev" ATTACH PARTITION{statement}"#))
        .unwrap_or_else(|| panic!("an ATTACH statement in {error}"));
    // The statement it gives puts October back, in a session of another TimeZone too.
    cluster.psql("postgres", &format!("SET TimeZone = 'Asia/Tokyo'; {attach}"));
    let report = run(&cfg, "ev", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    cluster.psql("postgres", "INSERT INTO ev VALUES ('2026-10-31 23:00+00', 1)");

    // With retention, a half-detached partition past it is one the job would retire: finished.
    let retiring = config(&cluster, &format!("{job}retention = \"1 month\"\n"));
    interrupt_a_concurrent_detach(&cluster, "ev", "ev_y2026_m09").await;
    // Before the database's own clock: the cutoff is the earlier of the two.
    clock.set(at(2026, 12, 5, 0, 0, 0));
    let report = run(&retiring, "ev", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert!(
        report.notes.iter().any(|n| n.contains("finished the interrupted detach of public.ev_y2026_m09")),
        "{:?}",
        report.notes
    );
    // October, past retention too, was detached the ordinary way.
    assert_eq!(partitions_of(&cluster, "ev"), ["ev_y2026_m12", "ev_y2027_m01"]);
}

/// Backends of `application_name` waiting for a heavyweight lock.
async fn waiting_on_a_lock(admin: &tokio_postgres::Client, application_name: &str) -> bool {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
            &[&application_name],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) > 0
}

/// Rows for the new partition keep arriving while the job moves the default partition's rows: a
/// row that lands in the default partition after the move (here: while the job waits for the lock
/// on the parent that ATTACH takes, which another session holds) must not fail the ATTACH with
/// 23514. The job locks the parent and the default partition first, so such inserts wait for it
/// and then go into the new partition; none of them fails either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_default_rows_under_concurrent_inserts() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE mv (id bigserial, at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE mv_default PARTITION OF mv DEFAULT;
         CREATE TABLE mv_y2026_m01 PARTITION OF mv FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
         CREATE TABLE mv_y2026_m02 PARTITION OF mv FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
         INSERT INTO mv (at) VALUES ('2026-03-02'), ('2026-03-03');",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "mv"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "mv"
        interval = "monthly"
        premake = 2
        move_default_rows = true
        lock_timeout = "60s"
        retries = 0
        "#,
    );
    let clock = clock(at(2026, 1, 10, 0, 0, 0));
    let admin = client(&cluster).await;
    // pg_stat_activity is read once per transaction: the watcher stays out of the admin's.
    let watcher = client(&cluster).await;

    // A steady inserter of March rows for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let (cluster_info, stop) = (cluster.conninfo("postgres", "postgres"), stop.clone());
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(
                &format!("{cluster_info} application_name=steady"),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let (mut ok, mut errors) = (0i64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.execute("INSERT INTO mv (at) VALUES ('2026-03-15')", &[]).await {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(format!("{e:?}")),
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            (ok, errors)
        })
    };

    // Another session holds the parent in SHARE UPDATE EXCLUSIVE mode (what ATTACH PARTITION takes;
    // January and February exist, so March's is the only partition the job makes).
    admin.batch_execute("BEGIN; LOCK TABLE ONLY mv IN SHARE UPDATE EXCLUSIVE MODE").await.unwrap();
    let job = {
        let (cfg, clock) = (cfg.clone(), clock.clone());
        tokio::spawn(async move { run(&cfg, "mv", &clock).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !waiting_on_a_lock(&watcher, "pgpilot-jobs").await {
        if job.is_finished() {
            panic!("the job ended without waiting for the parent's lock: {:?}", job.await.unwrap());
        }
        assert!(std::time::Instant::now() < deadline, "the job never waited for the parent's lock");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // While the job waits, one more March row: it goes in, or it waits for the job.
    let one = {
        let info = cluster.conninfo("postgres", "postgres");
        tokio::spawn(async move {
            let (c, conn) =
                tokio_postgres::connect(&format!("{info} application_name=one"), tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            c.execute("INSERT INTO mv (at) VALUES ('2026-03-20')", &[]).await.map_err(|e| format!("{e:?}"))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !one.is_finished() && !waiting_on_a_lock(&watcher, "one").await {
        assert!(std::time::Instant::now() < deadline, "the insert neither finished nor waited");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    admin.batch_execute("COMMIT").await.unwrap();

    let report = job.await.unwrap();
    assert_eq!(one.await.unwrap(), Ok(1), "the insert made while the job waited");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (inserted, errors) = steady.await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert!(errors.is_empty(), "inserts failed while the job moved rows: {errors:?}");
    assert!(inserted > 0);
    assert_eq!(partitions_of(&cluster, "mv"), ["mv_default", "mv_y2026_m01", "mv_y2026_m02", "mv_y2026_m03"]);
    // Every March row is in March's partition, none is left in the default partition.
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM mv_default"), "0");
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM mv_y2026_m03"),
        (inserted + 3).to_string(),
        "two rows from before, the steady inserter's and the one made while the job waited"
    );
}

/// A run that fails half-way through retention has still created and dropped partitions: its
/// notes say so, in the report and in the history row, next to the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failing_in_retention_records_what_it_did_before() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE ret (id bigint NOT NULL, ts timestamptz NOT NULL, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts);
         CREATE TABLE ret_y2025_m01 PARTITION OF ret FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-02-01 00:00+00');
         CREATE TABLE ret_y2025_m02 PARTITION OF ret FOR VALUES FROM ('2025-02-01 00:00+00') TO ('2025-03-01 00:00+00');
         INSERT INTO ret VALUES (1, '2025-01-05'), (2, '2025-02-05');
         -- A row referencing February keeps its partition from being detached.
         CREATE TABLE ret_ref (id bigint, ts timestamptz, FOREIGN KEY (id, ts) REFERENCES ret (id, ts));
         INSERT INTO ret_ref VALUES (2, '2025-02-05');",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "ret"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "ret"
        interval = "monthly"
        premake = 1
        retention = "6 months"
        retention_drop = true
        retries = 0
        "#,
    );
    let report = run(&cfg, "ret", &clock(at(2026, 12, 7, 1, 0, 0))).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.error.as_deref().unwrap_or_default().contains("23503"), "{report:?}");
    let done = ["created ret_y2026_m12, ret_y2027_m01", "detached and dropped public.ret_y2025_m01"];
    for note in done {
        assert!(report.notes.iter().any(|n| n.starts_with(note)), "no `{note}` in {:?}", report.notes);
    }
    assert_eq!(partitions_of(&cluster, "ret"), ["ret_y2025_m02", "ret_y2026_m12", "ret_y2027_m01"]);
    let detail = cluster.psql("postgres", "SELECT coalesce(detail, '<none>') FROM pgpilot.job_runs");
    for note in done {
        assert!(detail.contains(note), "no `{note}` in the history row's detail: {detail}");
    }
}

/// helper-155: partitions made by a job role that is a member of the table's owner role belonged
/// to the job role, and the owner's next `ALTER TABLE ... ADD COLUMN` failed on them ("must be
/// owner of table"). They are given to the table's owner, as pg_partman does; with rows to move
/// out of the default partition too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_belong_to_the_tables_owner_not_the_job_role() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE ROLE app_owner; CREATE ROLE jobs LOGIN IN ROLE app_owner;
         GRANT CREATE ON SCHEMA public TO app_owner; GRANT CREATE ON DATABASE postgres TO jobs;
         CREATE TABLE owned (at timestamptz NOT NULL, v int) PARTITION BY RANGE (at);
         CREATE TABLE owned_default PARTITION OF owned DEFAULT;
         ALTER TABLE owned OWNER TO app_owner; ALTER TABLE owned_default OWNER TO app_owner;
         INSERT INTO owned VALUES ('2026-06-10 12:00+00', 1);",
    );
    let url = cluster.url("jobs", "postgres");
    let cfg = pgpilot_scheduler::JobsConfig::parse(&format!(
        "[[jobs]]\nname = \"owned\"\nkind = \"partitions\"\nschedule = \"@daily\"\nurl = \"{url}\"\n\
         table = \"owned\"\ninterval = \"monthly\"\npremake = 1\nmove_default_rows = true\n"
    ))
    .unwrap();
    let report = run(&cfg, "owned", &clock(at(2026, 6, 15, 3, 0, 0))).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    let owners = lines(
        &cluster,
        "SELECT c.relname || ' ' || pg_get_userbyid(c.relowner) FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'owned'::regclass ORDER BY 1",
    );
    assert_eq!(
        owners,
        vec!["owned_default app_owner", "owned_y2026_m06 app_owner", "owned_y2026_m07 app_owner"],
        "{report:?}"
    );
    cluster.psql("postgres", "SET ROLE app_owner; ALTER TABLE owned ADD COLUMN note text");
}

/// s27 finding 1: retention retired every partition past the cutoff, so a hand-made archive
/// partition covering a whole year was detached and, with `retention_drop`, dropped with its rows.
/// Only partitions the job could have made (its period's bounds and its naming) are retired; the
/// others are left alone and named in the notes, half-detached ones included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_retires_only_partitions_that_follow_the_jobs_naming() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE r1 (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
         CREATE TABLE r1_archive_2024 PARTITION OF r1 FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2025-01-01 00:00+00');
         CREATE TABLE r1_y2025_m01 PARTITION OF r1 FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-02-01 00:00+00');
         -- The job's name for February 2025, but not February's bounds.
         CREATE TABLE r1_y2025_m02 PARTITION OF r1 FOR VALUES FROM ('2025-02-01 00:00+00') TO ('2025-02-15 00:00+00');
         CREATE TABLE r1_feb_rest PARTITION OF r1 FOR VALUES FROM ('2025-02-15 00:00+00') TO ('2025-03-01 00:00+00');
         CREATE TABLE r1_default PARTITION OF r1 DEFAULT;
         INSERT INTO r1 VALUES ('2024-06-01'), ('2025-01-10'), ('2025-02-10'), ('2025-02-20'), ('2020-01-01');",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "r1"
        kind = "partitions"
        schedule = "@daily"
        database = "app"
        table = "r1"
        interval = "monthly"
        premake = 1
        retention = "13 months"
        retention_drop = true
        "#,
    );
    let report = run(&cfg, "r1", &clock(at(2026, 6, 10, 0, 0, 0))).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(
        partitions_of(&cluster, "r1"),
        ["r1_archive_2024", "r1_default", "r1_feb_rest", "r1_y2025_m02", "r1_y2026_m06", "r1_y2026_m07"]
    );
    assert_eq!(cluster.psql("postgres", "SELECT to_regclass('r1_y2025_m01') IS NULL"), "t");
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM r1"), "4", "only January's row went");
    assert!(
        report.notes.iter().any(|n| n.starts_with("detached and dropped public.r1_y2025_m01 (")),
        "{:?}",
        report.notes
    );
    for name in ["r1_archive_2024", "r1_y2025_m02", "r1_feb_rest"] {
        let note = format!("left alone: public.{name} does not follow the job's naming");
        assert!(report.notes.contains(&note), "no `{note}` in {:?}", report.notes);
    }
    assert!(!report.notes.iter().any(|n| n.contains("r1_default") && n.contains("left alone")));

    // A hand-made partition half-detached past retention is not finished by the job either
    // (without the default partition, which rules out DETACH ... CONCURRENTLY).
    cluster.psql("postgres", "DROP TABLE r1_default");
    interrupt_a_concurrent_detach(&cluster, "r1", "r1_feb_rest").await;
    let report = run(&cfg, "r1", &clock(at(2026, 6, 10, 0, 0, 0))).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(error.contains("public.r1_feb_rest is half-detached"), "{error}");
    assert!(error.contains("it does not follow the job's naming"), "{error}");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'r1_feb_rest'::regclass"
        ),
        "t"
    );
}
