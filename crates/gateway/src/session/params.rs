//! Session parameters a client expects its server to have (TimeZone, DateStyle, application_name...).
//! In transaction pooling a client meets many servers; before its transaction runs, the server's
//! values are brought in line with the client's, in the same round trip as the client's request.

use bytes::BytesMut;
use pgpilot_wire::frontend;

/// Parameters a server reports that no client can change: never synchronised.
const READ_ONLY: &[&str] = &[
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "session_authorization",
    "in_hot_standby",
    "scram_iterations",
];

/// Startup packet entries that are not run-time parameters.
const NOT_PARAMETERS: &[&str] = &["user", "database", "replication", "options"];

/// Whether pgpilot keeps this parameter in step between clients and servers.
pub fn is_tracked(name: &str) -> bool {
    !READ_ONLY.iter().chain(NOT_PARAMETERS).any(|s| s.eq_ignore_ascii_case(name))
        && !name.starts_with("_pq_.")
}

/// Splits a startup `options` value ("-c a=b -c x=y\\ z --c=d") into name/value pairs.
pub fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_string())
        } else {
            w.strip_prefix("--").map(str::to_string)
        };
        if let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
    out
}

/// Canonical (lower-case) name of a tracked parameter.
fn key(name: &str) -> Box<str> {
    name.to_ascii_lowercase().into_boxed_str()
}

/// Values of tracked parameters, kept sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamSet {
    values: Vec<(Box<str>, Box<str>)>,
}

impl ParamSet {
    pub fn get(&self, name: &str) -> Option<&str> {
        let k = key(name);
        self.values.binary_search_by(|(n, _)| n.cmp(&k)).ok().map(|i| &*self.values[i].1)
    }

    /// Records a value; returns whether it changed.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        if !is_tracked(name) {
            return false;
        }
        let k = key(name);
        match self.values.binary_search_by(|(n, _)| n.cmp(&k)) {
            Ok(i) if &*self.values[i].1 == value => false,
            Ok(i) => {
                self.values[i].1 = value.into();
                true
            }
            Err(i) => {
                self.values.insert(i, (k, value.into()));
                true
            }
        }
    }

    pub fn remove(&mut self, name: &str) {
        let k = key(name);
        if let Ok(i) = self.values.binary_search_by(|(n, _)| n.cmp(&k)) {
            self.values.remove(i);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (&**k, &**v))
    }

    /// A Query message that gives a server with `server` values the values of `self`, or None
    /// when they already agree. Parameters the client never set keep the server's values only if
    /// the server has none recorded for them either.
    pub fn sync_query(&self, server: &ParamSet) -> Option<BytesMut> {
        let mut sql = String::new();
        for (name, value) in self.iter() {
            if server.get(name) != Some(value) {
                sql.push_str(if sql.is_empty() { "SELECT " } else { ", " });
                sql.push_str(&format!("pg_catalog.set_config({}, {}, false)", literal(name), literal(value)));
            }
        }
        if sql.is_empty() {
            return None;
        }
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        frontend::query(&mut out, &sql);
        Some(out)
    }

    /// The names whose values differ between the two sets (for logs and tests).
    pub fn differences<'a>(&'a self, other: &'a ParamSet) -> impl Iterator<Item = &'a str> + 'a {
        self.iter().filter(move |(n, v)| other.get(n) != Some(v)).map(|(n, _)| n)
    }
}

/// A SQL string literal, escaping quotes and backslashes (E'' form when needed).
pub fn literal(s: &str) -> String {
    let escaped = s.replace('\'', "''");
    if escaped.contains('\\') {
        format!("E'{}'", escaped.replace('\\', "\\\\"))
    } else {
        format!("'{escaped}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tracked_parameters_are_kept() {
        let mut p = ParamSet::default();
        assert!(p.set("TimeZone", "UTC"));
        assert!(!p.set("timezone", "UTC"));
        assert!(!p.set("server_version", "15"));
        assert!(p.set("geqo", "off"));
        assert_eq!(p.get("TIMEZONE"), Some("UTC"));
        assert_eq!(p.get("server_version"), None);
    }

    #[test]
    fn sync_query_sets_what_differs() {
        let mut client = ParamSet::default();
        client.set("TimeZone", "Europe/Paris");
        client.set("application_name", "it's me");
        let mut server = ParamSet::default();
        server.set("TimeZone", "Europe/Paris");
        server.set("application_name", "other");
        let q = client.sync_query(&server).unwrap();
        let text = String::from_utf8_lossy(&q[5..]).to_string();
        assert!(text.contains("set_config('application_name', 'it''s me', false)"), "{text}");
        assert!(!text.contains("timezone"));
        assert!(client.sync_query(&client.clone()).is_none());
    }

    #[test]
    fn startup_options_are_split() {
        assert_eq!(
            parse_options(r"-c search_path=app,public -csynchronous_commit=off --work-mem=8MB -c x=a\ b"),
            vec![
                ("search_path".into(), "app,public".into()),
                ("synchronous_commit".into(), "off".into()),
                ("work_mem".into(), "8MB".into()),
                ("x".into(), "a b".into())
            ]
        );
    }

    #[test]
    fn backslashes_use_escape_strings() {
        assert_eq!(literal(r"a\b"), r"E'a\\b'");
    }
}
