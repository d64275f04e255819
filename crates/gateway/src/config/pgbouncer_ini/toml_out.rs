//! Writing a conversion as pgpilot.toml, with a comment at every setting whose meaning changed and
//! a list of what is not honoured at the top.

use std::fmt::Write;

use serde::Serialize;

use super::{Conversion, Note, Outcome};
use crate::config::{RoutingConfig, ServerUrl};

const WIDTH: usize = 100;

/// PgBouncer has no HTTP side; pgpilot's is off until configured.
const HTTP_HINT: &str =
    "# http = \"127.0.0.1:9930\"   # /metrics, /health (for probes and alerts), the API and the dashboard";

/// The conversion as a pgpilot.toml that [`crate::config::Config::parse`] reads back to the same configuration.
pub fn to_commented_toml(c: &Conversion) -> String {
    let mut out = String::new();
    header(&mut out, c);
    let config = &c.config;
    let general = to_toml(&config.pgpilot);
    let general = match config.pgpilot.http {
        Some(_) => general,
        None => general.replacen("\nunix_socket_dir", &format!("\n{HTTP_HINT}\nunix_socket_dir"), 1),
    };
    section(&mut out, c, &["pgpilot"], &general);
    section(&mut out, c, &["tls"], &to_toml(&config.tls));
    let default_routing = to_toml(&RoutingConfig::default());
    for (name, db) in &config.databases {
        let text = to_toml(db);
        let (main, routing) = match text.split_once("\n[routing]\n") {
            Some((main, routing)) => (format!("{main}\n"), routing.to_string()),
            None => (text, String::new()),
        };
        if db.primary_url().is_ok_and(|u: ServerUrl| u.password.is_some()) {
            comment(&mut out, "The server password below comes from pgbouncer.ini's connection string; consider password_file.");
        }
        section(&mut out, c, &["databases", name], &main);
        if !routing.trim().is_empty() && routing.trim() != default_routing.trim() {
            section(&mut out, c, &["databases", name, "routing"], &routing);
        }
    }
    for (name, user) in &config.users {
        section(&mut out, c, &["users", name], &to_toml(user));
    }
    out
}

fn to_toml<T: Serialize>(value: &T) -> String {
    toml::to_string(value).unwrap_or_else(|e| format!("# could not write this section: {e}\n"))
}

fn header(out: &mut String, c: &Conversion) {
    let source =
        c.config.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "pgbouncer.ini".into());
    let count = |f: fn(&Outcome) -> bool| c.notes.iter().filter(|n| f(&n.outcome)).count();
    let same = count(|o| matches!(o, Outcome::CarriedOver));
    let changed = count(|o| matches!(o, Outcome::ChangedMeaning(_)));
    let ignored = count(|o| matches!(o, Outcome::NotHonoured(_)));
    comment(out, &format!("pgpilot.toml converted from {source} by `pgpilot convert`."));
    comment(
        out,
        "It starts from PgBouncer's defaults (session pooling, md5, max_client_conn = 100, a Unix socket in /tmp), \
         not pgpilot's, so it behaves as the PgBouncer it replaces.",
    );
    comment(
        out,
        &format!(
            "{same} settings carried over as they are, {changed} with a changed meaning (explained where they are set), \
             {ignored} not honoured."
        ),
    );
    let unplaced: Vec<&Note> = c
        .notes
        .iter()
        .filter(|n| !matches!(n.outcome, Outcome::CarriedOver) && (n.target.is_empty() || is_not_honoured(n)))
        .collect();
    if !unplaced.is_empty() {
        out.push_str("#\n# Not honoured, or changed with no pgpilot setting to show it:\n");
        for n in unplaced {
            bullet(out, &n.to_string());
        }
    }
    if !c.warnings.is_empty() {
        out.push_str("#\n# Warnings:\n");
        for w in &c.warnings {
            bullet(out, w);
        }
    }
    out.push('\n');
}

fn is_not_honoured(n: &Note) -> bool {
    matches!(n.outcome, Outcome::NotHonoured(_))
}

/// Writes `[path]` and its lines, each preceded by the notes of the settings that landed there.
fn section(out: &mut String, c: &Conversion, path: &[&str], body: &str) {
    let _ = writeln!(out, "[{}]", path.iter().map(|p| toml_key(p)).collect::<Vec<_>>().join("."));
    for line in body.lines() {
        if let Some((key, _)) = line.split_once(" = ") {
            let key = key.trim();
            for n in c.notes.iter().filter(|n| lands_at(n, path, key)) {
                match &n.outcome {
                    Outcome::ChangedMeaning(why) => {
                        comment(out, &format!("{}: changed meaning: {why}", n.setting))
                    }
                    Outcome::NotHonoured(why) => {
                        comment(out, &format!("{}: not fully honoured: {why}", n.setting))
                    }
                    Outcome::CarriedOver => {}
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if !out.ends_with("\n\n") {
        out.push('\n');
    }
}

fn lands_at(n: &Note, path: &[&str], key: &str) -> bool {
    n.target.len() == path.len() + 1
        && n.target.iter().zip(path).all(|(a, b)| a == b)
        && n.target.last().is_some_and(|k| k == key)
}

/// A bare key when TOML allows one, else a quoted one.
fn toml_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_string()
    } else {
        toml::Value::String(key.to_string()).to_string()
    }
}

/// `# text`, wrapped.
fn comment(out: &mut String, text: &str) {
    wrap(out, text, "# ", "# ");
}

fn bullet(out: &mut String, text: &str) {
    wrap(out, text, "#  - ", "#    ");
}

fn wrap(out: &mut String, text: &str, first: &str, rest: &str) {
    let mut line = String::from(first);
    for word in text.split_whitespace() {
        if line.len() + word.len() + 1 > WIDTH && line.len() > rest.len() {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from(rest);
        }
        if !line.ends_with(' ') {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(line.trim_end());
    out.push('\n');
}
