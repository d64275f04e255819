//! SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, both sides: pgpilot verifies clients
//! against stored verifiers and authenticates itself to servers, either with a password or with
//! the ClientKey a client proved during its own exchange (pass-through, as PgBouncer does).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{constant_time_eq, Secret};

pub const MECHANISM: &str = "SCRAM-SHA-256";
const DEFAULT_ITERATIONS: u32 = 4096;
/// No verifier we accept asks for more work than this per login (PostgreSQL's default is 4096).
const MAX_ITERATIONS: u32 = 1_000_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message")]
    Malformed,
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM nonce mismatch")]
    Nonce,
    #[error("password authentication failed")]
    BadProof,
    #[error("server signature did not verify")]
    BadServerSignature,
    #[error("SCRAM exchange out of order")]
    OutOfOrder,
    #[error("iteration count {0} is out of range")]
    Iterations(u32),
    /// PostgreSQL answers 0A000 (feature not supported).
    #[error("client uses authorization identity, but it is not supported")]
    AuthzId,
    #[error("non-printable characters in SCRAM nonce")]
    NonPrintableNonce,
    /// PostgreSQL answers 0A000 (feature not supported).
    #[error("client requires an unsupported SCRAM extension")]
    Extension,
    /// A key a client proved against one verifier, offered to a server whose verifier has another
    /// salt or iteration count (the password was set again there): it cannot log in.
    #[error("the server's SCRAM verifier differs from the one the client's key was proven against")]
    VerifierMismatch,
}

/// A stored SCRAM-SHA-256 verifier: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// The start of a stored SCRAM-SHA-256 verifier.
pub const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

/// What is wrong with a text that starts as a SCRAM-SHA-256 verifier but is not one. Says which
/// part, never the text: it is a secret.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum MalformedVerifier {
    #[error("not SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")]
    Layout,
    #[error("the iteration count is not a number from 1 to {MAX_ITERATIONS}")]
    Iterations,
    #[error("the salt is not base64")]
    Salt,
    #[error("the StoredKey is not 32 bytes in base64")]
    StoredKey,
    #[error("the ServerKey is not 32 bytes in base64")]
    ServerKey,
}

impl ScramSecret {
    /// The verifier `text` holds; None for any other text, a malformed verifier included (as
    /// PostgreSQL reads a role's password). A file of secrets checks with `read` instead.
    pub fn parse(text: &str) -> Option<ScramSecret> {
        ScramSecret::read(text).ok()
    }

    /// The verifier `text` holds, or what is wrong with it.
    pub fn read(text: &str) -> Result<ScramSecret, MalformedVerifier> {
        use MalformedVerifier::*;
        let rest = text.strip_prefix(VERIFIER_PREFIX).ok_or(Layout)?;
        let (params, keys) = rest.split_once('$').ok_or(Layout)?;
        let (iter, salt) = params.split_once(':').ok_or(Layout)?;
        let (stored, server) = keys.split_once(':').ok_or(Layout)?;
        let key = |b64: &str, wrong| B64.decode(b64).ok().and_then(|k| k.try_into().ok()).ok_or(wrong);
        Ok(ScramSecret {
            iterations: iter.parse().ok().filter(|i| *i > 0 && *i <= MAX_ITERATIONS).ok_or(Iterations)?,
            salt: B64.decode(salt).map_err(|_| Salt)?,
            stored_key: key(stored, StoredKey)?,
            server_key: key(server, ServerKey)?,
        })
    }

    /// Derives a verifier from a password, as PostgreSQL does when password_encryption is scram-sha-256.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    pub fn to_text(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    // PostgreSQL falls back to the raw bytes when a password is not valid for SASLprep.
    let prepared =
        stringprep::saslprep(password).map(|p| p.into_owned()).unwrap_or_else(|_| password.to_string());
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut out);
    out
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

fn nonce() -> String {
    B64.encode(rand::random::<[u8; 18]>())
}

/// Splits "k=v,k=v" into (key, value) pairs.
fn attributes(msg: &str) -> impl Iterator<Item = (char, &str)> {
    msg.split(',').filter_map(|part| {
        let mut chars = part.chars();
        let key = chars.next()?;
        part.get(1..)?.strip_prefix('=').map(|v| (key, v))
    })
}

fn attribute(msg: &str, key: char) -> Option<&str> {
    attributes(msg).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// What a successful client exchange proves: the ClientKey, usable to log in to a server whose
/// verifier has the same salt and iteration count.
#[derive(Clone)]
pub struct ProvenClientKey {
    pub client_key: [u8; 32],
    pub secret: ScramSecret,
}

enum ServerState {
    AwaitClientFirst,
    AwaitClientFinal { client_first_bare: String, server_first: String, nonce: String, gs2_header: String },
    Done,
}

/// The server side of an exchange with one client.
pub struct ScramServer {
    /// None when the user is unknown or has no SCRAM-capable secret: the exchange runs to the end
    /// and fails, so a client cannot tell unknown users from wrong passwords.
    secret: Option<ScramSecret>,
    mock: ScramSecret,
    state: ServerState,
}

/// The key of [`stable_salt`]: random for the process unless [`keep_mock_salts_from`] set it first.
static MOCK_SALT_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// Keys the salts of users without a stored verifier on `secret_material` (the users file, which
/// an attacker cannot read), so they stay the same across restarts as stored verifiers' salts do:
/// otherwise salts that change at each restart would tell which users have a verifier. Only the
/// first call, before any login, counts.
pub fn keep_mock_salts_from(secret_material: &[u8]) {
    let _ = MOCK_SALT_KEY.set(mock_salt_key(secret_material));
}

/// A salt for `user` that stays the same for the life of the process, so that a user without a
/// SCRAM verifier (unknown, or with a plain-text password) is answered with a stable salt just as
/// a user with a stored verifier is: comparing two attempts' salts tells nothing (PostgreSQL's
/// mock authentication does the same with a per-cluster nonce).
pub fn stable_salt(user: &str) -> [u8; 16] {
    salt_under(MOCK_SALT_KEY.get_or_init(rand::random), user)
}

fn mock_salt_key(secret_material: &[u8]) -> [u8; 32] {
    hmac(b"pgpilot mock salts", secret_material)
}

fn salt_under(key: &[u8; 32], user: &str) -> [u8; 16] {
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&hmac(key, user.as_bytes())[..16]);
    salt
}

/// Verifiers derived from plain-text passwords, by salt, with a keyed digest of the password they
/// came from. Deriving takes 4096 PBKDF2 rounds: done once per user and password rather than at
/// every login, which would both cost CPU and let login times tell users with a plain-text entry
/// from unknown ones (which take no rounds at all). Holds one entry per salt (per user, with
/// [`stable_salt`]), never a password.
fn plain_verifier(salt: &[u8; 16], password: &str) -> (ScramSecret, bool) {
    type Cache = std::sync::Mutex<std::collections::HashMap<[u8; 16], ([u8; 32], ScramSecret)>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let digest = hmac(KEY.get_or_init(rand::random), password.as_bytes());
    let cache = CACHE.get_or_init(Default::default);
    if let Some((d, secret)) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(salt) {
        if constant_time_eq(d, &digest) {
            return (secret.clone(), false);
        }
    }
    let secret = ScramSecret::from_password(password, salt, DEFAULT_ITERATIONS);
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(*salt, (digest, secret.clone()));
    (secret, true)
}

/// The nonce of a client-first-message-bare (`n=user,r=nonce[,ext]...`), read as strictly as
/// PostgreSQL does: the nonce printable and without ',', extensions well formed, none required.
fn client_nonce(bare: &str) -> Result<&str, ScramError> {
    let mut parts = bare.split(',');
    // PostgreSQL ignores the name here: the startup packet's user is the one logging in.
    parts.next().and_then(|p| p.strip_prefix("n=")).ok_or(ScramError::Malformed)?;
    let nonce = parts.next().and_then(|p| p.strip_prefix("r=")).ok_or(ScramError::Malformed)?;
    if nonce.is_empty() {
        return Err(ScramError::Malformed);
    }
    // RFC 5802 printable: %x21-2B / %x2D-7E (',' would have split the nonce above).
    if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ScramError::NonPrintableNonce);
    }
    for extension in parts {
        match extension.as_bytes() {
            // m= is a mandatory extension pgpilot (like PostgreSQL) does not support.
            [b'm', b'=', ..] => return Err(ScramError::Malformed),
            [k, b'=', ..] if k.is_ascii_alphabetic() => {}
            _ => return Err(ScramError::Malformed),
        }
    }
    Ok(nonce)
}

impl ScramServer {
    /// An exchange for `user`: salts of users without a stored verifier are [`stable_salt`]s.
    pub fn for_user(user: &str, secret: Option<&Secret>) -> ScramServer {
        ScramServer::with_salt(stable_salt(user), secret)
    }

    /// An exchange with a fresh random salt for users without a stored verifier (tests; prefer
    /// [`ScramServer::for_user`], whose salts do not reveal which users exist).
    pub fn new(secret: Option<&Secret>) -> ScramServer {
        ScramServer::with_salt(rand::random::<[u8; 16]>(), secret)
    }

    fn with_salt(salt: [u8; 16], secret: Option<&Secret>) -> ScramServer {
        let secret = match secret {
            Some(Secret::Scram(s)) => Some(s.clone()),
            Some(Secret::Plain(p)) => Some(plain_verifier(&salt, p).0),
            Some(Secret::Md5(_)) | None => None,
        };
        let mock = ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt: salt.to_vec(),
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        ScramServer { secret, mock, state: ServerState::AwaitClientFirst }
    }

    /// Takes the client-first-message, returns the server-first-message.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::AwaitClientFirst) {
            return Err(ScramError::OutOfOrder);
        }
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed)?;
        let (cbind, rest) = msg.split_once(',').ok_or(ScramError::Malformed)?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed)?;
        match authzid {
            "" => {}
            a if a.starts_with("a=") => return Err(ScramError::AuthzId),
            _ => return Err(ScramError::Malformed),
        }
        if bare.starts_with("m=") {
            return Err(ScramError::Extension);
        }
        let client_nonce = client_nonce(bare)?;
        let nonce = format!("{client_nonce}{}", nonce());
        let secret = self.secret.as_ref().unwrap_or(&self.mock);
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&secret.salt), secret.iterations);
        self.state = ServerState::AwaitClientFinal {
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            gs2_header: format!("{cbind},,"),
        };
        Ok(server_first.into_bytes())
    }

    /// Takes the client-final-message; on success returns the server-final-message and the proven key.
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, ProvenClientKey), ScramError> {
        let ServerState::AwaitClientFinal { client_first_bare, server_first, nonce, gs2_header } =
            std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed)?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let binding = attribute(without_proof, 'c').ok_or(ScramError::Malformed)?;
        if B64.decode(binding).map_err(|_| ScramError::Malformed)? != gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        if attribute(without_proof, 'r') != Some(nonce.as_str()) {
            return Err(ScramError::Nonce);
        }
        let proof: [u8; 32] =
            B64.decode(proof).ok().and_then(|p| p.try_into().ok()).ok_or(ScramError::Malformed)?;
        let secret = self.secret.as_ref().ok_or(ScramError::BadProof)?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&secret.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        if !constant_time_eq(&sha256(&client_key), &secret.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&secret.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", B64.encode(server_signature));
        Ok((server_final.into_bytes(), ProvenClientKey { client_key, secret: secret.clone() }))
    }
}

/// What pgpilot authenticates to a server with.
#[derive(Clone)]
pub enum ClientCredentials {
    Password(String),
    /// A ClientKey proven by the connecting client, with the verifier it was proven against.
    ProvenKey(ProvenClientKey),
}

enum ClientState {
    Start,
    AwaitServerFirst { client_first_bare: String, nonce: String },
    AwaitServerFinal { server_signature: [u8; 32] },
    Done,
}

/// The client side of an exchange with a server.
pub struct ScramClient {
    credentials: ClientCredentials,
    state: ClientState,
}

impl ScramClient {
    pub fn new(credentials: ClientCredentials) -> ScramClient {
        ScramClient { credentials, state: ClientState::Start }
    }

    /// The client-first-message (no channel binding: pgpilot verifies the server through TLS itself).
    pub fn client_first(&mut self) -> Vec<u8> {
        let nonce = nonce();
        let client_first_bare = format!("n=,r={nonce}");
        let msg = format!("n,,{client_first_bare}");
        self.state = ClientState::AwaitServerFirst { client_first_bare, nonce };
        msg.into_bytes()
    }

    /// Takes the server-first-message, returns the client-final-message.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ClientState::AwaitServerFirst { client_first_bare, nonce } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed)?;
        let server_nonce = attribute(msg, 'r').ok_or(ScramError::Malformed)?;
        if !server_nonce.starts_with(&nonce) || server_nonce.len() == nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = B64
            .decode(attribute(msg, 's').ok_or(ScramError::Malformed)?)
            .map_err(|_| ScramError::Malformed)?;
        let iterations: u32 =
            attribute(msg, 'i').and_then(|i| i.parse().ok()).ok_or(ScramError::Malformed)?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(ScramError::Iterations(iterations));
        }
        let (client_key, server_key) = self.keys(&salt, iterations)?;
        let without_proof = format!("c=biws,r={server_nonce}");
        let auth_message = format!("{client_first_bare},{msg},{without_proof}");
        let client_signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        self.state =
            ClientState::AwaitServerFinal { server_signature: hmac(&server_key, auth_message.as_bytes()) };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message: the server must prove it knows the verifier too.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let ClientState::AwaitServerFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed)?;
        let v = attribute(msg, 'v').ok_or(ScramError::Malformed)?;
        let got = B64.decode(v).map_err(|_| ScramError::Malformed)?;
        if constant_time_eq(&got, &server_signature) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }

    fn keys(&self, salt: &[u8], iterations: u32) -> Result<([u8; 32], [u8; 32]), ScramError> {
        match &self.credentials {
            ClientCredentials::Password(p) => {
                let salted = salted_password(p, salt, iterations);
                Ok((hmac(&salted, b"Client Key"), hmac(&salted, b"Server Key")))
            }
            ClientCredentials::ProvenKey(k) if k.secret.salt == salt && k.secret.iterations == iterations => {
                Ok((k.client_key, k.secret.server_key))
            }
            // The server's verifier differs from the one the client proved: the key is useless there.
            ClientCredentials::ProvenKey(_) => Err(ScramError::VerifierMismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mock_salts_keyed_on_the_users_file_stay_across_restarts() {
        let file = b"\"app\" \"secret\"\n";
        // Two processes reading the same file derive the same key, hence the same salts.
        assert_eq!(salt_under(&mock_salt_key(file), "nobody"), salt_under(&mock_salt_key(file), "nobody"));
        assert_ne!(salt_under(&mock_salt_key(file), "nobody"), salt_under(&mock_salt_key(file), "somebody"));
        assert_ne!(
            salt_under(&mock_salt_key(file), "nobody"),
            salt_under(&mock_salt_key(b"other"), "nobody")
        );
    }

    use super::*;

    #[test]
    fn a_malformed_verifier_says_which_part_is_wrong() {
        use MalformedVerifier::*;
        let good = ScramSecret::from_password("pw", b"salt", 4096).to_text();
        assert_eq!(ScramSecret::read(&good).map(|v| v.iterations), Ok(4096));
        let (stored, server) = good.rsplit_once('$').unwrap().1.split_once(':').unwrap();
        for (text, wrong) in [
            ("SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$REPLACE-WITH-A-REAL-VERIFIER".to_string(), Layout),
            (format!("SCRAM-SHA-256$0:c2FsdA==${stored}:{server}"), Iterations),
            (format!("SCRAM-SHA-256$lots:c2FsdA==${stored}:{server}"), Iterations),
            (format!("SCRAM-SHA-256$4096:not base64!${stored}:{server}"), Salt),
            (format!("SCRAM-SHA-256$4096:c2FsdA==$YQ==:{server}"), StoredKey),
            (format!("SCRAM-SHA-256$4096:c2FsdA==${stored}:???"), ServerKey),
        ] {
            assert_eq!(ScramSecret::read(&text).err(), Some(wrong), "{text}");
            assert!(!wrong.to_string().contains(stored), "the message quotes the secret");
        }
    }

    fn exchange(stored: Option<&Secret>, creds: ClientCredentials) -> Result<ProvenClientKey, ScramError> {
        exchange_with(ScramServer::new(stored), creds)
    }

    fn exchange_with(
        mut server: ScramServer,
        creds: ClientCredentials,
    ) -> Result<ProvenClientKey, ScramError> {
        let mut client = ScramClient::new(creds);
        let first = client.client_first();
        let server_first = server.client_first(&first)?;
        let client_final = client.server_first(&server_first)?;
        let (server_final, key) = server.client_final(&client_final)?;
        client.server_final(&server_final)?;
        Ok(key)
    }

    #[test]
    fn verifier_round_trips_through_text() {
        let s = ScramSecret::from_password("pw", b"0123456789abcdef", 4096);
        assert!(ScramSecret::parse(&s.to_text()) == Some(s));
    }

    #[test]
    fn password_against_verifier() {
        let stored = Secret::Scram(ScramSecret::from_password("pw", b"salt-salt-salt", 4096));
        assert!(exchange(Some(&stored), ClientCredentials::Password("pw".into())).is_ok());
        assert_eq!(
            exchange(Some(&stored), ClientCredentials::Password("nope".into())).err(),
            Some(ScramError::BadProof)
        );
    }

    #[test]
    fn password_against_plain_secret() {
        let stored = Secret::Plain("pw".into());
        assert!(exchange(Some(&stored), ClientCredentials::Password("pw".into())).is_ok());
    }

    #[test]
    fn unknown_user_fails_only_at_the_end() {
        assert_eq!(
            exchange(None, ClientCredentials::Password("pw".into())).err(),
            Some(ScramError::BadProof)
        );
    }

    #[test]
    fn proven_key_passes_through_to_a_server_with_the_same_verifier() {
        let stored = Secret::Scram(ScramSecret::from_password("pw", b"salt-salt-salt", 4096));
        let key = exchange(Some(&stored), ClientCredentials::Password("pw".into())).unwrap();
        assert!(exchange(Some(&stored), ClientCredentials::ProvenKey(key)).is_ok());
    }

    #[test]
    fn channel_binding_request_is_refused() {
        let mut server = ScramServer::new(Some(&Secret::Plain("pw".into())));
        assert_eq!(
            server.client_first(b"p=tls-server-end-point,,n=,r=abc").err(),
            Some(ScramError::ChannelBinding)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut server = ScramServer::new(Some(&Secret::Plain("pw".into())));
        assert!(server.client_first(b"\xff\xfe").is_err());
        let mut server = ScramServer::new(Some(&Secret::Plain("pw".into())));
        server.client_first(b"n,,n=,r=abc").unwrap();
        assert!(server.client_final(b"c=biws").is_err());
    }

    #[test]
    fn authzid_and_bad_nonces_are_refused_as_postgresql_does() {
        let first = |msg: &[u8]| ScramServer::new(Some(&Secret::Plain("pw".into()))).client_first(msg).err();
        assert_eq!(first(b"n,a=someone,n=,r=abc"), Some(ScramError::AuthzId));
        assert_eq!(first(b"n,,n=,r=ab\x01c"), Some(ScramError::NonPrintableNonce));
        assert_eq!(first(b"n,,n=,r=ab c"), Some(ScramError::NonPrintableNonce));
        assert_eq!(first(b"n,,n=,r=ab,cd"), Some(ScramError::Malformed), "a ',' in the nonce");
        assert_eq!(first(b"n,,n=,r=abc,m=x"), Some(ScramError::Malformed), "mandatory extension");
        assert_eq!(first(b"n,,r=abc"), Some(ScramError::Malformed), "no n= attribute");
        assert_eq!(first(b"n,,n=,r=abc,x=ext"), None, "optional extensions are ignored");
    }

    #[test]
    fn a_plain_password_is_derived_once_per_salt_and_password() {
        let salt = stable_salt("derived-once-test-user");
        let (first, derived) = plain_verifier(&salt, "pw");
        assert!(derived, "the first login derives the verifier");
        let (second, derived) = plain_verifier(&salt, "pw");
        assert!(!derived, "the second login reuses it");
        assert!(first == second);
        let (changed, derived) = plain_verifier(&salt, "new-pw");
        assert!(derived && changed != first, "a changed password is derived afresh");
    }

    #[test]
    fn salts_do_not_tell_unknown_users_from_known_ones() {
        let salt_of = |user: &str, secret: Option<&Secret>| {
            let first = ScramServer::for_user(user, secret).client_first(b"n,,n=,r=abc").unwrap();
            let text = String::from_utf8(first).unwrap();
            text.split(',').find_map(|p| p.strip_prefix("s=")).unwrap().to_string()
        };
        let plain = Secret::Plain("pw".into());
        assert_eq!(salt_of("ghost", None), salt_of("ghost", None), "an unknown user's salt is stable");
        assert_eq!(salt_of("alice", Some(&plain)), salt_of("alice", Some(&plain)));
        assert_ne!(salt_of("ghost", None), salt_of("casper", None), "and differs per user");
        let server = ScramServer::for_user("alice", Some(&plain));
        assert!(exchange_with(server, ClientCredentials::Password("pw".into())).is_ok(), "still verifies");
    }
}
