//! PostgreSQL's md5 password exchange.

use md5::{Digest, Md5};

use super::{constant_time_eq, Secret};

fn hex_md5(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The stored form: "md5" + md5(password || user).
pub fn stored_hash(user: &str, password: &str) -> String {
    format!("md5{}", hex_md5(&[password.as_bytes(), user.as_bytes()]))
}

/// What a client sends for a salt: "md5" + md5(md5(password || user) || salt).
pub fn client_response(stored: &str, salt: [u8; 4]) -> String {
    let inner = stored.strip_prefix("md5").unwrap_or(stored);
    format!("md5{}", hex_md5(&[inner.as_bytes(), &salt]))
}

/// Checks a client's md5 response against a stored secret. A SCRAM verifier cannot check md5.
pub fn verify(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let stored = match secret {
        Secret::Plain(p) => stored_hash(user, p),
        Secret::Md5(h) => h.clone(),
        Secret::Scram(_) => return false,
    };
    constant_time_eq(client_response(&stored, salt).as_bytes(), response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgresql_hash() {
        // SELECT 'md5' || md5('secret' || 'alice')
        assert_eq!(stored_hash("alice", "secret"), format!("md5{}", hex_md5(&[b"secretalice"])));
    }

    #[test]
    fn verifies_plain_and_hashed_secrets() {
        let salt = [1, 2, 3, 4];
        let response = client_response(&stored_hash("alice", "secret"), salt);
        assert!(verify(&Secret::Plain("secret".into()), "alice", salt, response.as_bytes()));
        assert!(verify(&Secret::Md5(stored_hash("alice", "secret")), "alice", salt, response.as_bytes()));
        assert!(!verify(&Secret::Plain("wrong".into()), "alice", salt, response.as_bytes()));
    }
}
