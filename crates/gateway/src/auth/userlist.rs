//! PgBouncer's auth_file format: one `"user" "secret"` pair per line, `""` for a quote inside.

use std::collections::HashMap;
use std::path::Path;

use pgpilot_wire::auth::scram::{ScramSecret, VERIFIER_PREFIX};
use pgpilot_wire::auth::Secret;

#[derive(Debug, Default)]
pub struct UserList {
    users: HashMap<String, Secret>,
}

impl UserList {
    /// The users the file lists, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn load(path: &Path) -> Result<UserList, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read auth_file {}: {e}", path.display()))?;
        UserList::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<UserList, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.starts_with('"') {
                continue; // comments and blank lines, as PgBouncer
            }
            let (user, rest) =
                quoted(line).ok_or_else(|| format!("line {}: unterminated user name", n + 1))?;
            let (secret, _) =
                quoted(rest.trim_start()).ok_or_else(|| format!("line {}: expected \"password\"", n + 1))?;
            // Read as a verifier, it would be taken as a password, the text itself: a placeholder
            // or a verifier cut short at copying would let in whoever types it.
            if secret.starts_with(VERIFIER_PREFIX) {
                ScramSecret::read(&secret).map_err(|why| {
                    format!("line {}: user \"{user}\": malformed SCRAM-SHA-256 verifier: {why}", n + 1)
                })?;
            }
            users.insert(user, Secret::parse(&secret));
        }
        Ok(UserList { users })
    }

    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Reads a double-quoted token with `""` escapes; returns it and the rest of the line.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices().peekable();
    let mut out = String::new();
    let body = &s[1..];
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if matches!(chars.peek(), Some((_, '"'))) {
                chars.next();
                out.push('"');
            } else {
                return Some((out, &body[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbouncer_userlist() {
        let list = UserList::parse(
            ";; comment\n\"alice\" \"secret\"\n\"bob\" \"md5d41d8cd98f00b204e9800998ecf8427e\"\n\"q\"\"uote\" \"pa\"\"ss\"\n\n",
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list.get("alice"), Some(&Secret::Plain("secret".into())));
        assert_eq!(list.get("bob").unwrap().kind(), "md5");
        assert_eq!(list.get("q\"uote"), Some(&Secret::Plain("pa\"ss".into())));
    }

    #[test]
    fn broken_lines_are_reported() {
        assert!(UserList::parse("\"alice\n").is_err());
        assert!(UserList::parse("\"alice\" secret\n").is_err());
    }

    /// deploy/kubernetes/secret.example.yaml's placeholder was loaded as the password
    /// "SCRAM-SHA-256$4096:...$REPLACE-WITH-A-REAL-VERIFIER".
    #[test]
    fn a_malformed_scram_verifier_is_an_error_naming_user_and_line() {
        let good = pgpilot_wire::auth::ScramSecret::from_password("pw", b"salt", 4096).to_text();
        let placeholder = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$REPLACE-WITH-A-REAL-VERIFIER";
        let text = format!(";; users\n\"app\" \"{good}\"\n\"report\" \"{placeholder}\"\n");
        let e = UserList::parse(&text).unwrap_err();
        assert!(e.starts_with("line 3: user \"report\": malformed SCRAM-SHA-256 verifier"), "{e}");
        assert!(!e.contains("REPLACE") && !e.contains("c2Fsd"), "the secret is quoted: {e}");
        assert_eq!(
            UserList::parse(&format!("\"app\" \"{good}\"\n")).unwrap().get("app").unwrap().kind(),
            "scram-sha-256"
        );
    }
}
