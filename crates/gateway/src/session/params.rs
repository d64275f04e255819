//! Session parameters a client expects its server to have (TimeZone, search_path, application_name...).
//! In transaction pooling a client meets many servers; before its transaction runs, the server's
//! values are brought in line with the client's, in the same round trip as the client's request.
//!
//! Values come from three places: the startup packet, ParameterStatus messages (for the parameters
//! PostgreSQL reports), and SET/RESET statements pgpilot parses (for those it does not report,
//! such as search_path).

use bytes::BytesMut;
use pgpilot_sql::{SetAction, SetCommand, SetScope};
use pgpilot_wire::{frontend, PgError, SqlState};

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

/// A reset of all a session's settings: the client goes back to its login values, the server to
/// its own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionReset {
    ResetAll,
    DiscardAll,
}

impl SessionReset {
    /// `RESET ALL` or `DISCARD ALL` alone (a trailing `;` allowed, any case and spacing).
    pub fn of_query(query: &str) -> Option<SessionReset> {
        match two_words(query)? {
            (verb, all) if verb.eq_ignore_ascii_case("reset") && all.eq_ignore_ascii_case("all") => {
                Some(SessionReset::ResetAll)
            }
            (verb, all) if verb.eq_ignore_ascii_case("discard") && all.eq_ignore_ascii_case("all") => {
                Some(SessionReset::DiscardAll)
            }
            _ => None,
        }
    }

    /// `RESET name` alone, as a command for the settings bookkeeping: in session pooling, where
    /// statements are not classified, a reset of a setting the client logged in with must still
    /// give the server the login value back, not leave it at the server's default.
    pub fn of_one(query: &str) -> Option<SetCommand> {
        match two_words(query)? {
            (verb, name)
                if verb.eq_ignore_ascii_case("reset")
                    && !name.eq_ignore_ascii_case("all")
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') =>
            {
                let name = name.to_ascii_lowercase();
                Some(SetCommand { scope: SetScope::Session, action: SetAction::Reset { name } })
            }
            _ => None,
        }
    }

    /// Whether the setting `name` outlives this reset: RESET ALL leaves a SET ROLE in place
    /// (GUC_NO_RESET_ALL); only DISCARD ALL (or SET SESSION AUTHORIZATION) undoes it.
    pub fn keeps(self, name: &str) -> bool {
        self == SessionReset::ResetAll && name.eq_ignore_ascii_case("role")
    }
}

/// A RESET or DISCARD of two words alone (a trailing `;` allowed, any case and spacing). Most
/// queries are told apart by their first letters, without splitting them into words.
fn two_words(query: &str) -> Option<(&str, &str)> {
    let starts_with =
        |word: &str| query.trim_start().get(..word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word));
    if !starts_with("reset") && !starts_with("discard") {
        return None;
    }
    let mut words = query.trim().trim_end_matches(';').split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(verb), Some(object), None) => Some((verb, object)),
        _ => None,
    }
}

/// Parameters PostgreSQL reports with ParameterStatus whenever they change (their SETs need no
/// parsing), in its spelling (pgpilot keeps names in lower case).
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

/// Parameters PostgreSQL reports whose value, unless the client chose one (startup packet, SET),
/// is the server's own: default_transaction_read_only is how an operator makes a whole cluster
/// read-only (ALTER SYSTEM, a reload) and back. pgpilot keeps them as it keeps unreported ones,
/// from the client's own statements, and never gives a value it saw reported to other servers:
/// it did, which kept most clients writable through such a change, and left the client attached
/// when it was announced read-only after it was undone (helper-149).
const FOLLOWS_SERVER: &[&str] = &["default_transaction_read_only"];

pub fn follows_server(name: &str) -> bool {
    FOLLOWS_SERVER.iter().any(|s| s.eq_ignore_ascii_case(name))
}

pub fn is_reported(name: &str) -> bool {
    REPORTED.iter().any(|s| s.eq_ignore_ascii_case(name))
        || READ_ONLY.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// Splits a startup `options` value ("-c a=b -c x=y\\ z --c=d") into name/value pairs. What
/// PostgreSQL would refuse is refused with its error (42601), and its other command-line
/// switches (`-B 100`, `-d 5`), which pgpilot does not apply, are refused rather than dropped: a
/// mistyped PGOPTIONS went unnoticed.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, PgError> {
    let mut out = Vec::new();
    let mut it = option_words(options).into_iter();
    let invalid = |word: &str| {
        PgError::fatal(
            SqlState::SYNTAX_ERROR,
            format!("invalid command-line argument for server process: {word}"),
        )
        .with_hint("Try \"postgres --help\" for more information.")
    };
    while let Some(w) = it.next() {
        let (setting, shown) = if w == "-c" {
            (it.next().ok_or_else(|| invalid(&w))?, "-c ")
        } else if let Some(rest) = w.strip_prefix("--") {
            (rest.to_string(), "--")
        } else if let Some(rest) = w.strip_prefix("-c") {
            (rest.to_string(), "-c ")
        } else if w.starts_with('-') && w.len() > 1 {
            return Err(PgError::fatal(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!("pgpilot does not take the startup option {w}: give settings as -c name=value"),
            ));
        } else {
            return Err(invalid(&w));
        };
        let Some((k, v)) = setting.split_once('=') else {
            return Err(PgError::fatal(SqlState::SYNTAX_ERROR, format!("{shown}{setting} requires a value")));
        };
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Ok(out)
}

/// The words of an `options` value: separated by white space, a backslash escaping the next
/// character.
fn option_words(options: &str) -> Vec<String> {
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
    words
}

/// How a value is given back to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// A plain string as ParameterStatus and the startup packet carry it: set_config(name, value).
    Plain,
    /// SQL text from a SET statement: `SET name = <value>`.
    Sql,
    /// A plain string from a set_config call: set_config(name, value), forgotten by RESET ALL.
    Config,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Value {
    text: Box<str>,
    form: Form,
}

/// Values of tracked parameters, kept sorted by (lower-case) name. Shared copy-on-write: most
/// clients (and the servers they leave behind) hold the very same values, so a clone is a pointer
/// copy and the usual "nothing to synchronise" check is a pointer comparison.
#[derive(Debug, Clone, Default)]
pub struct ParamSet {
    values: std::sync::Arc<Vec<(Box<str>, Value)>>,
}

impl PartialEq for ParamSet {
    fn eq(&self, other: &ParamSet) -> bool {
        std::sync::Arc::ptr_eq(&self.values, &other.values) || self.values == other.values
    }
}

impl Eq for ParamSet {}

impl ParamSet {
    /// Names are kept lower-case; `name` is compared lower-cased byte by byte, without a copy
    /// (looked up for most statements: search_path, standard_conforming_strings).
    fn index(&self, name: &str) -> Result<usize, usize> {
        let lower = name.bytes().map(|b| b.to_ascii_lowercase());
        self.values.binary_search_by(|(n, _)| n.bytes().cmp(lower.clone()))
    }

    /// Whether both hold the same allocation (cheap; `==` also compares contents).
    pub fn shares(&self, other: &ParamSet) -> bool {
        std::sync::Arc::ptr_eq(&self.values, &other.values)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.index(name).ok().map(|i| &*self.values[i].1.text)
    }

    fn put(&mut self, name: &str, value: Value) -> bool {
        if !is_tracked(name) {
            return false;
        }
        match self.index(name) {
            Ok(i) if self.values[i].1 == value => false,
            Ok(i) => {
                std::sync::Arc::make_mut(&mut self.values)[i].1 = value;
                true
            }
            Err(i) => {
                std::sync::Arc::make_mut(&mut self.values)
                    .insert(i, (name.to_ascii_lowercase().into_boxed_str(), value));
                true
            }
        }
    }

    /// Records a plain value (startup packet, ParameterStatus); returns whether it changed.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        self.put(name, Value { text: value.into(), form: Form::Plain })
    }

    /// Records a value a server reported (ParameterStatus, its login): as `set`, but for the
    /// parameters that follow the server, which are not the client's to keep.
    pub fn report(&mut self, name: &str, value: &str) -> bool {
        !follows_server(name) && self.set(name, value)
    }

    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.index(name) {
            std::sync::Arc::make_mut(&mut self.values).remove(i);
        }
    }

    /// Applies a session-level SET/RESET that succeeded, as the server holds it after: RESET gives
    /// the server its own default (a client's RESET goes back to its login values: `reset_to`).
    /// Parameters the server reports are left to its ParameterStatus messages; SET LOCAL ends
    /// with its transaction and is never recorded.
    pub fn apply(&mut self, cmd: &SetCommand) {
        if cmd.scope == SetScope::Local {
            return;
        }
        match &cmd.action {
            SetAction::Set { name, value } if !is_reported(name) => {
                self.put(name, Value { text: value.as_str().into(), form: Form::Sql });
            }
            SetAction::SetConfig { name, value } if !is_reported(name) => {
                self.put(name, Value { text: value.as_str().into(), form: Form::Config });
            }
            SetAction::SetDefault { name } | SetAction::Reset { name } if !is_reported(name) => {
                self.remove(name)
            }
            SetAction::ResetAll => self.after_reset(SessionReset::ResetAll),
            _ => {}
        }
    }

    /// A client's RESET of `name`: back to the value it logged in with (`reset`), as PostgreSQL
    /// restores a startup packet's value, not the server's default. (The server reset it to its
    /// own: the next sync gives it the client's, and tells the client, reported or not.)
    pub fn reset_to(&mut self, name: &str, reset: &ParamSet) {
        match reset.index(name) {
            Ok(i) => {
                let value = reset.values[i].1.clone();
                self.put(name, value);
            }
            Err(_) => self.remove(name),
        }
    }

    /// A server after `reset` has its own defaults: of what pgpilot gave it, only what it
    /// reported since (ParameterStatus) is still known, and what the reset keeps.
    pub fn after_reset(&mut self, reset: SessionReset) {
        if self.values.iter().any(|(n, _)| !is_reported(n) && !reset.keeps(n)) {
            std::sync::Arc::make_mut(&mut self.values).retain(|(n, _)| is_reported(n) || reset.keeps(n));
        }
    }

    /// After a server_reset_query: what it is known to reset, and nothing for any other query.
    pub fn after_reset_query(&mut self, query: &str) {
        if let Some(reset) = SessionReset::of_query(query) {
            self.after_reset(reset);
        }
    }

    /// A client's `reset`: back to the values it logged in with (`login`), but for what the
    /// reset keeps.
    pub fn reset_to_login(&mut self, login: &ParamSet, reset: SessionReset) {
        let kept: Vec<(Box<str>, Value)> =
            self.values.iter().filter(|(n, _)| reset.keeps(n)).cloned().collect();
        *self = login.clone();
        for (name, value) in kept {
            self.put(&name, value);
        }
    }

    /// A value read back from a server (`current_setting`), given back with set_config; None
    /// when the server has no such setting.
    pub fn read_back(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => {
                self.put(name, Value { text: v.into(), form: Form::Config });
            }
            None => self.remove(name),
        }
    }

    /// The reported parameters the client has, under PostgreSQL's spelling of their names.
    pub fn reported(&self) -> impl Iterator<Item = (&'static str, &str)> {
        REPORTED.iter().filter_map(|name| Some((*name, self.get(name)?)))
    }

    /// A ParameterStatus message for each reported parameter the client has: what the client is
    /// told when its values are its own again.
    pub fn write_reported(&self, out: &mut BytesMut) {
        for (name, value) in self.reported() {
            pgpilot_wire::backend::parameter_status(out, name, value);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (&**k, &*v.text))
    }

    /// A Query message that gives a server with `server` values the values of `self`, or None
    /// when they already agree.
    pub fn sync_query(&self, server: &ParamSet) -> Option<BytesMut> {
        let sql = self.sync_sql(server)?;
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        frontend::query(&mut out, &sql);
        Some(out)
    }

    /// The statements of `sync_query`.
    pub fn sync_sql(&self, server: &ParamSet) -> Option<String> {
        if self == server {
            return None;
        }
        let mut configs = Vec::new();
        let mut statements = Vec::new();
        for (name, value) in self.values.iter().filter(|(name, _)| **name != *TIMEOUT) {
            let same = server.index(name).ok().is_some_and(|i| server.values[i].1.text == value.text);
            if same {
                continue;
            }
            match assignment(name, value) {
                Assignment::Config(call) => configs.push(call),
                Assignment::Statement(set) => statements.push(set),
            }
        }
        // What the server has and the client does not: set by statements of an earlier client, or
        // given in an earlier client's startup packet (a driver's search_path or statement_timeout).
        // Reported parameters are left alone: every client has them from its own welcome.
        for (name, value) in server.values.iter().filter(|(name, _)| **name != *TIMEOUT) {
            let unreported_startup = value.form == Form::Plain && !is_reported(name);
            if (value.form != Form::Plain || unreported_startup) && self.index(name).is_err() {
                statements.push(format!("RESET {}", quote_ident(name)));
            }
        }
        if !configs.is_empty() {
            statements.insert(0, format!("SELECT {}", configs.join(", ")));
        }
        self.statement_timeout_around(server, &mut statements);
        if statements.is_empty() {
            return None;
        }
        Some(statements.join("; "))
    }

    /// statement_timeout is given last, and an earlier client's is lifted first: PostgreSQL times
    /// a query string of several statements as a whole, from the timeout in force when it starts
    /// (or is set within it), and a timeout of a few milliseconds cancelled the sync, which ends
    /// the client that waited for it (helper-146).
    fn statement_timeout_around(&self, server: &ParamSet, statements: &mut Vec<String>) {
        let theirs = server.index(TIMEOUT).ok().map(|i| &server.values[i].1);
        let mine = self.index(TIMEOUT).ok().map(|i| &self.values[i].1);
        let lifted = theirs.is_some() && !statements.is_empty();
        if lifted {
            statements.insert(0, format!("SET {TIMEOUT} = 0"));
        }
        match mine {
            Some(value) if lifted || theirs.is_none_or(|t| t.text != value.text) => {
                statements.push(match assignment(TIMEOUT, value) {
                    Assignment::Config(call) => format!("SELECT {call}"),
                    Assignment::Statement(set) => set,
                });
            }
            None if theirs.is_some() => {
                statements.push(format!("RESET {TIMEOUT}"));
            }
            _ => {}
        }
    }
}

/// The setting a settings sync itself must not be cut short by.
const TIMEOUT: &str = "statement_timeout";

/// How one value is given to a server.
enum Assignment {
    /// A `set_config(...)` call, several of which share one SELECT.
    Config(String),
    /// A statement of its own (`SET name = <SQL value>`).
    Statement(String),
}

fn assignment(name: &str, value: &Value) -> Assignment {
    match value.form {
        Form::Plain | Form::Config => Assignment::Config(format!(
            "pg_catalog.set_config({}, {}, false)",
            literal(name),
            literal(&value.text)
        )),
        Form::Sql => Assignment::Statement(format!("SET {} = {}", quote_ident(name), value.text)),
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

fn quote_ident(name: &str) -> String {
    if name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.') {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> SetCommand {
        SetCommand {
            scope: SetScope::Session,
            action: SetAction::Set { name: name.into(), value: value.into() },
        }
    }

    fn sql_of(q: &BytesMut) -> String {
        String::from_utf8_lossy(&q[5..q.len() - 1]).to_string()
    }

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
    fn sync_query_sets_what_differs_and_resets_what_the_client_dropped() {
        let mut client = ParamSet::default();
        client.set("TimeZone", "Europe/Paris");
        client.set("application_name", "it's me");
        client.apply(&set("search_path", "app, public"));
        let mut server = ParamSet::default();
        server.set("TimeZone", "Europe/Paris");
        server.set("application_name", "other");
        server.apply(&set("work_mem", "'64MB'"));
        let text = sql_of(&client.sync_query(&server).unwrap());
        assert_eq!(
            text,
            "SELECT pg_catalog.set_config('application_name', 'it''s me', false); SET search_path = app, public; RESET work_mem"
        );
        assert!(client.sync_query(&client.clone()).is_none());
    }

    #[test]
    fn an_earlier_clients_statement_timeout_is_lifted_before_the_sync_runs() {
        let mut server = ParamSet::default();
        server.apply(&set("statement_timeout", "'2ms'"));
        server.apply(&set("work_mem", "'5MB'"));
        let mut client = ParamSet::default();
        client.apply(&set("search_path", "app"));
        assert_eq!(
            client.sync_sql(&server).unwrap(),
            "SET statement_timeout = 0; SET search_path = app; RESET work_mem; RESET statement_timeout"
        );
        // The same value on both is given back after the sync, not left at 0.
        client.apply(&set("statement_timeout", "'2ms'"));
        assert_eq!(
            client.sync_sql(&server).unwrap(),
            "SET statement_timeout = 0; SET search_path = app; RESET work_mem; SET statement_timeout = '2ms'"
        );
        // The client's own timeout comes last, so that it cannot cut the rest short either.
        let mut fresh = ParamSet::default();
        fresh.apply(&set("statement_timeout", "'1ms'"));
        fresh.apply(&set("work_mem", "'1MB'"));
        assert_eq!(
            fresh.sync_sql(&ParamSet::default()).unwrap(),
            "SET work_mem = '1MB'; SET statement_timeout = '1ms'"
        );
        // Nothing to sync, nothing lifted.
        client.apply(&set("work_mem", "'5MB'"));
        server.apply(&set("search_path", "app"));
        assert_eq!(client.sync_sql(&server), None);
    }

    #[test]
    fn reported_parameters_follow_parameter_status_not_set() {
        let mut p = ParamSet::default();
        p.apply(&set("timezone", "'UTC'"));
        assert_eq!(p.get("timezone"), None);
        p.apply(&SetCommand {
            scope: SetScope::Local,
            action: SetAction::Set { name: "search_path".into(), value: "x".into() },
        });
        assert_eq!(p.get("search_path"), None);
        p.apply(&set("search_path", "x"));
        p.apply(&SetCommand { scope: SetScope::Session, action: SetAction::ResetAll });
        assert_eq!(p.get("search_path"), None);
    }

    #[test]
    fn startup_options_postgresql_refuses_are_refused() {
        for (options, code) in [
            ("foo", "42601"),
            ("-c work_mem", "42601"),
            ("-c", "42601"),
            ("--work_mem", "42601"),
            ("-c work_mem=8MB extra", "42601"),
            ("-B 100", "0A000"),
        ] {
            let refused = parse_options(options).expect_err(options);
            assert_eq!(refused.code.code(), code, "{options}: {}", refused.message);
        }
        assert_eq!(parse_options("").unwrap(), vec![]);
    }

    #[test]
    fn startup_options_are_split() {
        assert_eq!(
            parse_options(r"-c search_path=app,public -csynchronous_commit=off --work-mem=8MB -c x=a\ b")
                .unwrap(),
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
