//! Password secrets as PgBouncer's userlist.txt and PostgreSQL's pg_authid store them, and the
//! md5 and SCRAM-SHA-256 exchanges on both sides of the proxy.

pub mod md5;
pub mod scram;

use std::fmt;

pub use scram::ScramSecret;

/// A stored password: in clear, as PostgreSQL's md5 hash, or as a SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    /// "md5" followed by 32 hex digits of md5(password || username).
    Md5(String),
    Scram(ScramSecret),
}

impl Secret {
    /// Reads a secret the way PgBouncer reads the second column of userlist.txt.
    pub fn parse(text: &str) -> Secret {
        if let Some(scram) = ScramSecret::parse(text) {
            return Secret::Scram(scram);
        }
        if text.len() == 35 && text.starts_with("md5") && text[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
            return Secret::Md5(text.to_string());
        }
        Secret::Plain(text.to_string())
    }

    /// An entry for the empty password, which never logs anyone in (PostgreSQL refuses to even
    /// store one). A SCRAM verifier is not checked: telling would take a PBKDF2 derivation.
    pub fn is_empty_password(&self, user: &str) -> bool {
        match self {
            Secret::Plain(p) => p.is_empty(),
            Secret::Md5(h) => h.eq_ignore_ascii_case(&md5::stored_hash(user, "")),
            Secret::Scram(_) => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain",
            Secret::Md5(_) => "md5",
            Secret::Scram(_) => "scram-sha-256",
        }
    }
}

/// Secrets never appear in logs: Debug shows only their kind.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.kind())
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised() {
        assert_eq!(Secret::parse("hunter2").kind(), "plain");
        assert_eq!(Secret::parse("md5d41d8cd98f00b204e9800998ecf8427e").kind(), "md5");
        let v = ScramSecret::from_password("pw", b"salt", 4096).to_text();
        assert_eq!(Secret::parse(&v).kind(), "scram-sha-256");
        // A verifier whose keys are not 32 bytes is not a verifier.
        assert_eq!(Secret::parse("SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg==").kind(), "plain");
    }

    #[test]
    fn empty_passwords_are_recognised() {
        assert!(Secret::parse("").is_empty_password("u"));
        assert!(Secret::parse(&md5::stored_hash("u", "")).is_empty_password("u"));
        assert!(!Secret::parse(&md5::stored_hash("u", "x")).is_empty_password("u"));
        assert!(!Secret::parse("x").is_empty_password("u"));
    }

    #[test]
    fn debug_hides_the_secret() {
        assert_eq!(format!("{:?}", Secret::parse("hunter2")), "Secret(plain)");
    }
}
