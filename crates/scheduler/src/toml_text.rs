//! Parsing a config file's TOML without echoing it: toml's own error message quotes the offending
//! line, and a config line may carry a password (a postgres:// URL); the message goes to check-config's
//! output, the log on reload and the admin who ran RELOAD. The gateway's config uses it too.

use serde::de::DeserializeOwned;

/// Parses `text`; an error names the line and column and what is wrong, never the line itself.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| describe(text, &e))
}

fn describe(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let start = job_error_start(text, message).or(e.span().map(|s| s.start));
    match start {
        Some(start) => {
            let before = &text[..start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

/// Where a job's own error belongs. toml places an error of a job's conversion ("job `b`: a refresh
/// job does not take `interval`") at the start of the whole `[[jobs]]` array, which is the first job's
/// line; this finds the named job's table and, when the message names one of its keys, that key.
fn job_error_start(text: &str, message: &str) -> Option<usize> {
    let rest = message.strip_prefix("job `")?;
    let (name, detail) = rest.split_once("`: ")?;
    let document = toml_edit::ImDocument::parse(text).ok()?;
    let jobs = document.get("jobs")?.as_array_of_tables()?;
    let job = jobs.iter().find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))?;
    let named_key = detail
        .split('`')
        .skip(1)
        .step_by(2)
        .find_map(|key| job.get_key_value(key).and_then(|(k, _)| k.span()));
    named_key.or_else(|| job.span()).map(|s| s.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct T {
        primary: String,
    }

    #[test]
    fn a_syntax_error_names_the_place_not_the_text() {
        let text = "# c\nprimary = \"postgres://u:TOMLSECRET@h/db\" x\n";
        let err = parse_toml::<T>(text).unwrap_err();
        assert!(!err.contains("TOMLSECRET"), "{err}");
        assert!(err.starts_with("line 2, column"), "{err}");
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct WithJobs {
        jobs: Vec<Job>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(try_from = "RawJob")]
    #[allow(dead_code)]
    struct Job(String);

    #[derive(serde::Deserialize)]
    struct RawJob {
        name: String,
        kind: Option<String>,
        interval: Option<String>,
    }

    impl TryFrom<RawJob> for Job {
        type Error = String;
        fn try_from(raw: RawJob) -> Result<Job, String> {
            match (raw.kind.as_deref(), raw.interval) {
                (None, Some(_)) => Err(format!("job `{}`: a refresh job does not take `interval`", raw.name)),
                (Some(_), None) => Err(format!("job `{}`: a partitions job needs `interval`", raw.name)),
                _ => Ok(Job(raw.name)),
            }
        }
    }

    #[test]
    fn a_jobs_error_names_its_own_key_not_the_first_job() {
        let text = "[[jobs]]\nname = \"a\"\n\n[[jobs]]\nname = \"b\"\n  interval = \"monthly\"\n";
        let err = parse_toml::<WithJobs>(text).unwrap_err();
        assert!(err.starts_with("line 6, column 3: job `b`"), "{err}");
    }

    #[test]
    fn a_jobs_error_about_a_missing_key_names_its_table() {
        let text = "[[jobs]]\nname = \"a\"\n\n[[jobs]]\nname = \"b\"\nkind = \"partitions\"\n";
        let err = parse_toml::<WithJobs>(text).unwrap_err();
        assert!(err.starts_with("line 4, column 1: job `b`"), "{err}");
    }

    #[test]
    fn a_type_error_names_the_place_not_the_text() {
        let err = parse_toml::<T>("primary = 5 # TOMLSECRET\n").unwrap_err();
        assert!(!err.contains("TOMLSECRET"), "{err}");
        assert!(err.starts_with("line 1, column 11"), "{err}");
    }
}
