//! The libpq password file: `hostname:port:database:username:password`, `*` matches anything,
//! `\:` and `\\` escape. Like libpq, a file readable by group or others is ignored.

use std::path::{Path, PathBuf};

pub struct Entry<'a> {
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// `$PGPASSFILE`, else `~/.pgpass`.
pub fn default_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PGPASSFILE") {
        return Some(PathBuf::from(p));
    }
    std::env::var("HOME").ok().map(|h| PathBuf::from(h).join(".pgpass"))
}

pub fn lookup(path: &Path, entry: &Entry<'_>) -> Option<String> {
    if !permissions_are_private(path) {
        tracing::warn!(
            "{} is readable by group or others; libpq ignores it and so does pgpilot",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    find(&text, entry)
}

fn permissions_are_private(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o077 == 0).unwrap_or(false)
}

pub fn find(text: &str, entry: &Entry<'_>) -> Option<String> {
    let port = entry.port.to_string();
    text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).find_map(|line| {
        let fields = split_fields(line);
        if fields.len() != 5 {
            return None;
        }
        let wanted = [entry.host, port.as_str(), entry.database, entry.user];
        let matches = fields.iter().zip(wanted).all(|(f, w)| f == "*" || f == w);
        matches.then(|| fields[4].clone())
    })
}

fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let text =
            "# comment\nother:5432:*:*:nope\nlocalhost:5432:app:app:s\\:e\\\\cret\n*:*:*:app:fallback\n";
        let e = Entry { host: "localhost", port: 5432, database: "app", user: "app" };
        assert_eq!(find(text, &e).as_deref(), Some("s:e\\cret"));
        let e = Entry { host: "db", port: 6432, database: "x", user: "app" };
        assert_eq!(find(text, &e).as_deref(), Some("fallback"));
        let e = Entry { host: "db", port: 6432, database: "x", user: "bob" };
        assert_eq!(find(text, &e), None);
    }
}
