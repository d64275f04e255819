//! `[[jobs]]` tables: typos and misplaced keys are refused, check-config messages are useful.

use pgpilot_scheduler::{validate, validate_with_databases, JobSpec, JobsConfig, Task};

#[derive(serde::Deserialize, serde::Serialize)]
struct Jobs {
    jobs: Vec<JobSpec>,
}

fn parse(toml_text: &str) -> Result<Vec<JobSpec>, String> {
    toml::from_str::<Jobs>(toml_text).map(|j| j.jobs).map_err(|e| e.to_string())
}

const GOOD: &str = r#"
[[jobs]]
name = "events-partitions"
kind = "partitions"
schedule = "@daily"
database = "app"
table = "public.events"
interval = "monthly"
premake = 3
retention = "12 months"
lock_timeout = "2s"

[[jobs]]
name = "mv"
kind = "refresh"
schedule = "*/15 * * * *"
url = "postgres://jobs:s3cret@db.internal:5432/app"
view = "reports.daily"

[[jobs]]
name = "audit"
kind = "retention"
schedule = "30 2 * * *"
database = "app"
table = "audit_log"
column = "created_at"
older_than = "1 year"
filter = "kind <> 'legal-hold'"
"#;

#[test]
fn good_jobs_parse_validate_and_round_trip() {
    let jobs = parse(GOOD).unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(validate(&jobs).is_empty(), "{:?}", validate(&jobs));
    assert!(matches!(&jobs[0].task, Task::Partitions(p) if p.premake == 3 && p.time_zone == "UTC"));
    assert_eq!(jobs[0].limits.lock_timeout.text(), "2s");
    assert_eq!(jobs[1].limits.retries, 3, "defaults apply");
    let again = parse(&toml::to_string(&Jobs { jobs: jobs.clone() }).unwrap()).unwrap();
    assert_eq!(again, jobs);
    // The password in a job's URL never shows in Debug output (logs).
    assert!(!format!("{:?}", jobs[1]).contains("s3cret"));
}

#[test]
fn typos_and_keys_of_other_kinds_are_refused() {
    let typo = GOOD.replace("premake = 3", "premak = 3");
    assert!(parse(&typo).unwrap_err().contains("premak"), "{}", parse(&typo).unwrap_err());
    let misplaced =
        GOOD.replace("view = \"reports.daily\"", "view = \"reports.daily\"\ninterval = \"monthly\"");
    let err = parse(&misplaced).unwrap_err();
    assert!(err.contains("refresh job does not take `interval`"), "{err}");
    let both = GOOD.replace(
        "database = \"app\"\ntable = \"audit_log\"",
        "database = \"app\"\nurl = \"postgres://x/y\"\ntable = \"audit_log\"",
    );
    assert!(parse(&both).unwrap_err().contains("not both"));
    let kind = GOOD.replace("kind = \"refresh\"", "kind = \"refrsh\"");
    assert!(parse(&kind).unwrap_err().contains("is not a job kind"));
    let span = GOOD.replace("older_than = \"1 year\"", "older_than = \"1 yr\"");
    assert!(parse(&span).unwrap_err().contains("not a length of time"));
}

#[test]
fn validate_explains_what_is_wrong() {
    let text = r#"
[[jobs]]
name = "a"
kind = "partitions"
schedule = "0 3 * *"
database = "app"
table = "t"
interval = "monthly"
naming = "{table}_{YYYY}"
retention_drop = true
statement_timeout = "1 month"

[[jobs]]
name = "a"
kind = "sql"
schedule = "@weekly"
database = "nowhere"
sql = "  "
"#;
    let jobs = parse(text).unwrap();
    let problems = validate_with_databases(&jobs, &["app"]);
    let all = problems.join("\n");
    for expected in [
        "not a 5-field cron schedule",
        "would give two monthly partitions the same name",
        "`retention_drop = true` needs a `retention` period",
        "`statement_timeout` must be a fixed length of time",
        "another job has the same name",
        "`sql` is empty",
        "there is no [databases.nowhere] table",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
    assert!(problems.iter().all(|p| p.starts_with("job `a`")));
}

#[test]
fn the_cli_reads_jobs_beside_gateway_settings() {
    let cfg = JobsConfig::parse(&format!(
        "[pgpilot]\nlisten = \"127.0.0.1:6432\"\n[databases.app]\nprimary = \"postgres://app@127.0.0.1/app\"\npool_size = 5\n{GOOD}"
    ))
    .unwrap();
    assert_eq!(cfg.databases.names(), ["app"]);
    assert_eq!(cfg.jobs.len(), 3);
}

#[test]
fn check_config_refuses_a_yearly_template_with_the_iso_year() {
    // 2027-01-01 is in ISO year 2026 and 2028-01-01 in 2027: `{IYYY}` names years wrongly.
    let text = r#"
[[jobs]]
name = "yr"
kind = "partitions"
schedule = "@daily"
database = "app"
table = "t"
interval = "yearly"
naming = "{table}_{IYYY}_{MM}"
"#;
    let problems = validate(&parse(text).unwrap()).join("\n");
    assert!(problems.contains("would give two yearly partitions the same name"), "{problems}");
    assert!(problems.contains("both get `{table}_2004_01`"), "{problems}");
    let weekly = text.replace("\"yearly\"", "\"weekly\"").replace("{IYYY}_{MM}", "{YYYY}_w{IW}");
    let problems = validate(&parse(&weekly).unwrap()).join("\n");
    assert!(problems.contains("would give two weekly partitions the same name"), "{problems}");
    let fine = text.replace("{IYYY}_{MM}", "{YYYY}");
    assert!(validate(&parse(&fine).unwrap()).is_empty());
}

#[test]
fn check_config_refuses_partition_names_postgresql_would_cut() {
    let long = "a".repeat(50);
    let text = GOOD.replace("table = \"public.events\"", &format!("table = \"public.{long}\""));
    assert!(validate(&parse(&text).unwrap()).is_empty(), "59 bytes fit");
    let longer = GOOD.replace("table = \"public.events\"", &format!("table = \"public.{long}_events\""));
    let problems = validate(&parse(&longer).unwrap()).join("\n");
    assert!(
        problems.contains(&format!("would be named like {long}_events_y2026_m12 (67 bytes)")),
        "{problems}"
    );
    let named =
        longer.replace("interval = \"monthly\"", "interval = \"monthly\"\nnaming = \"ev_{YYYY}_{MM}\"");
    assert!(validate(&parse(&named).unwrap()).is_empty());
}

#[test]
fn schemas_and_tables_together_are_refused() {
    for kind in ["analyze", "vacuum"] {
        let text = format!(
            "[[jobs]]\nname = \"a\"\nkind = \"{kind}\"\nschedule = \"@hourly\"\ndatabase = \"app\"\n\
             schemas = [\"s2\"]\ntables = [\"public.sales\"]\n"
        );
        let problems = validate(&parse(&text).unwrap()).join("\n");
        assert!(problems.contains("give `schemas` or `tables`, not both"), "{kind}: {problems}");
    }
    let one = "[[jobs]]\nname = \"a\"\nkind = \"analyze\"\nschedule = \"@hourly\"\ndatabase = \"app\"\nschemas = [\"s2\"]\n";
    assert!(validate(&parse(one).unwrap()).is_empty());
}

#[test]
fn per_job_durations_may_be_numbers_of_seconds() {
    let text = GOOD
        .replace("lock_timeout = \"2s\"", "lock_timeout = 2\nstatement_timeout = 90.5\nretry_backoff = 0.25")
        .replace("filter = ", "pause = 0\ntime_budget = 600\nfilter = ");
    let jobs = parse(&text).unwrap();
    assert!(validate(&jobs).is_empty(), "{:?}", validate(&jobs));
    let limits = &jobs[0].limits;
    assert_eq!(limits.lock_timeout.duration(), Some(std::time::Duration::from_secs(2)));
    assert_eq!(limits.statement_timeout.duration(), Some(std::time::Duration::from_millis(90_500)));
    assert_eq!(limits.retry_backoff.duration(), Some(std::time::Duration::from_millis(250)));
    assert!(
        matches!(&jobs[2].task, Task::Retention(r) if r.time_budget.duration() == Some(std::time::Duration::from_secs(600)))
    );
    // Written back as text, they read the same.
    let again = parse(&toml::to_string(&Jobs { jobs: jobs.clone() }).unwrap()).unwrap();
    assert_eq!(again, jobs);
    let negative = GOOD.replace("lock_timeout = \"2s\"", "lock_timeout = -1");
    assert!(parse(&negative).unwrap_err().contains("not a length of time"));
}

/// helper-155: `time_zone = "Mars/Olympus"` passed check-config and failed only when the job ran.
/// Names are looked up as PostgreSQL looks them up (case ignored); offsets are the server's to read.
#[test]
fn check_config_refuses_a_time_zone_not_in_the_database() {
    assert!(
        std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").is_file(),
        "this test needs the tzdata package (apt-get install tzdata)"
    );
    let with_zone = |zone: &str| GOOD.replace("premake = 3", &format!("premake = 3\ntime_zone = \"{zone}\""));
    for bad in ["Mars/Olympus", "Europe/Berln", "Europe"] {
        let problems = validate(&parse(&with_zone(bad)).unwrap()).join("\n");
        assert!(problems.contains("is not in the time zone database"), "{bad}: {problems}");
    }
    for good in
        ["Europe/Berlin", "europe/berlin", "UTC", "America/Argentina/Buenos_Aires", "+05:30", "Etc/GMT+3"]
    {
        assert!(validate(&parse(&with_zone(good)).unwrap()).is_empty(), "{good}");
    }
}

/// s27 finding 2: check-config accepted a job `url` with libpq parameters tokio-postgres cannot
/// parse, and every run then failed with a bare "invalid connection string". The URL is parsed
/// as the run parses it; the message names the parameter and never repeats a password.
#[test]
fn check_config_refuses_url_parameters_the_run_cannot_parse() {
    let job = |name: &str, url: &str| {
        format!("[[jobs]]\nname = \"{name}\"\nkind = \"sql\"\nschedule = \"@daily\"\nurl = \"{url}\"\nsql = \"select 1\"\n")
    };
    let text = [
        job("sslpw", "postgres://postgres:Hunter22@127.0.0.1:24000/app?sslpassword=TopSecret96"),
        job("ca", "postgres://postgres@127.0.0.1/app?sslmode=require&sslrootcert=/etc/ca.pem"),
        job("gss", "postgresql://postgres@127.0.0.1/app?gssencmode=disable"),
        job("enc", "postgres://postgres@127.0.0.1/app?client_encoding=UTF8"),
        job("full", "postgres://postgres@127.0.0.1/app?sslmode=verify-full"),
        job("fine", "postgres://postgres@127.0.0.1/app?sslmode=require&application_name=x&connect_timeout=5"),
    ]
    .concat();
    let problems = validate(&parse(&text).unwrap());
    let all = problems.join("\n");
    for expected in [
        "job `sslpw`: `url` is not valid: the parameter `sslpassword` is not supported",
        "job `ca`: `url` is not valid: the parameter `sslrootcert` is not supported",
        "job `gss`: `url` is not valid: the parameter `gssencmode` is not supported",
        "job `enc`: `url` is not valid: the parameter `client_encoding` is not supported",
        "job `full`: `url` is not valid: invalid connection string: invalid value for option `sslmode`",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
    assert_eq!(problems.len(), 5, "{all}");
    assert!(!all.contains("TopSecret96") && !all.contains("Hunter22"), "{all}");
}
