//! The shipped Prometheus rules only use metrics the scheduler exports.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::DateTime;
use pgpilot_scheduler::{JobsConfig, ManualClock, Scheduler, METRIC_NAMES};
use yaml_rust2::{Yaml, YamlLoader};

fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("pgpilot_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_rule_uses_exported_metrics_and_is_complete() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/pgpilot-jobs.rules.yml");
    let text = std::fs::read_to_string(path).expect("reading the rules file");
    let docs = YamlLoader::load_from_str(&text).expect("the rules file is valid YAML");
    let groups = docs[0]["groups"].as_vec().expect("a `groups` list");
    let mut alerts = Vec::new();
    for group in groups {
        assert!(group["name"].as_str().is_some(), "every group has a name");
        for rule in group["rules"].as_vec().expect("a `rules` list") {
            let alert = rule["alert"].as_str().expect("every rule is an alert with a name");
            let expr = rule["expr"].as_str().unwrap_or_else(|| panic!("{alert} has an expr"));
            let used = metric_names_in(expr);
            assert!(!used.is_empty(), "{alert} uses no pgpilot metric: {expr}");
            for name in &used {
                assert!(
                    METRIC_NAMES.contains(&name.as_str()),
                    "{alert} uses {name}, which the scheduler does not export"
                );
            }
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{alert}: unbalanced parentheses"
            );
            assert!(
                matches!(rule["labels"]["severity"].as_str(), Some("critical" | "warning")),
                "{alert} severity"
            );
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{alert} has a summary");
            if let Yaml::String(duration) = &rule["for"] {
                assert!(duration.ends_with('m') || duration.ends_with('h'), "{alert}: for = {duration}");
            }
            alerts.push((alert.to_string(), expr.to_string()));
        }
    }
    // The one the issue asks for: a job not succeeded within twice its period.
    let (_, stale) =
        alerts.iter().find(|(a, _)| a == "PgpilotJobNotSucceeding").expect("the staleness alert");
    assert!(
        stale.contains("pgpilot_job_last_success_timestamp_seconds")
            && stale.contains("2 * max by (job_name) (pgpilot_job_period_seconds)")
    );
    assert!(alerts.iter().any(|(_, e)| e.contains("pgpilot_job_failures_total")), "an alert on failures");
}

/// promtool (Debian package `prometheus`) checks the PromQL and runs the rules' unit tests, which
/// feed series shaped like the scheduler's and expect each alert to fire, or not, at given times.
#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
    for args in
        [["check", "rules", "pgpilot-jobs.rules.yml"], ["test", "rules", "pgpilot-jobs.rules.test.yml"]]
    {
        let out =
            std::process::Command::new("promtool").args(args).current_dir(dir).output().unwrap_or_else(|e| {
                panic!(
                    "promtool could not be run ({e}); install it with `apt-get install prometheus` (Debian)"
                )
            });
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The series a scheduler really exports, each held for three and a half days from t=0 (its start),
/// as promtool input, labelled as a Prometheus scrape (default `honor_labels: false`) stores them:
/// a label `job` of the target's own is renamed `exported_job`, and the scrape job's `job` and the
/// target's `instance` are added.
fn exported_series(jobs_toml: &str) -> String {
    let cfg = JobsConfig::parse(&format!(
        "[databases.app]\nprimary = \"postgres://u@127.0.0.1:1/app\"\n{jobs_toml}"
    ))
    .expect("test jobs parse");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _inside = runtime.enter();
    let clock = Arc::new(ManualClock::new(DateTime::UNIX_EPOCH));
    let handle = Scheduler::start(cfg.jobs.clone(), Arc::new(cfg.databases.clone()), clock);
    let mut metrics = String::new();
    handle.render_prometheus(&mut metrics);
    let mut series = String::new();
    for line in metrics.lines().filter(|l| l.starts_with("pgpilot_")) {
        let (name_labels, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = name_labels.split_once('{').expect("`name{labels}`");
        let labels = labels.strip_suffix('}').expect("labels end with `}`");
        let relabelled: Vec<String> = labels
            .split(',')
            .map(|l| if l.starts_with("job=") { format!("exported_{l}") } else { l.to_string() })
            .collect();
        let labelled = format!("{name}{{{},job=\"pgpilot\",instance=\"a\"}}", relabelled.join(","));
        series.push_str(&format!("      - series: '{labelled}'\n        values: '{value}x5040'\n"));
    }
    series
}

/// A disabled job is switched off on purpose: three days on, only the enabled job that never
/// succeeded alerts. The input is what the scheduler exports, not a hand-written guess at it.
#[test]
fn a_disabled_job_never_alerts_as_never_succeeded() {
    let series = exported_series(
        "[[jobs]]\nname = \"on\"\nkind = \"analyze\"\nschedule = \"@daily\"\ndatabase = \"app\"\n\
         [[jobs]]\nname = \"off\"\nkind = \"analyze\"\nschedule = \"@daily\"\ndatabase = \"app\"\nenabled = false\n",
    );
    assert!(series.contains("job_name=\"off\""), "the disabled job is still listed:\n{series}");
    assert!(
        !series.contains("exported_job"),
        "no label of pgpilot's is overwritten by the scrape:\n{series}"
    );
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/pgpilot-jobs.rules.yml");
    let test = format!(
        "rule_files: ['{rules}']\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}\
         \x20   alert_rule_test:\n\
         \x20     - eval_time: 3d\n        alertname: PgpilotJobNeverSucceeded\n        exp_alerts:\n\
         \x20         - exp_labels: {{severity: critical, job_name: \"on\"}}\n\
         \x20           exp_annotations:\n\
         \x20             summary: \"pgpilot job on has never succeeded\"\n\
         \x20             description: \"on has been scheduled for twice its period with no success recorded in pgpilot.job_runs.\"\n\
         \x20     - eval_time: 3d\n        alertname: PgpilotJobNotSucceeding\n        exp_alerts: []\n"
    );
    let dir = std::env::temp_dir().join(format!("pgpilot-alert-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disabled.test.yml");
    std::fs::write(&path, &test).unwrap();
    let out =
        std::process::Command::new("promtool").args(["test", "rules"]).arg(&path).output().unwrap_or_else(
            |e| panic!("promtool could not be run ({e}); install it with `apt-get install prometheus`"),
        );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
