//! postgres:// URLs naming a server.

use std::fmt;
use std::path::PathBuf;

/// The query parameters pgpilot understands. Any other is refused rather than ignored: a
/// silently dropped `sslcert=` or `channel_binding=require` would weaken what the URL asks for.
const KNOWN_PARAMETERS: &[&str] = &["host", "sslmode", "sslrootcert"];

/// Where a server is and how to log in to it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// A host name, an IP address, or a Unix socket directory (starts with '/').
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub sslmode: Option<String>,
    /// CA bundle checking this server's certificate (verify-ca / verify-full), instead of
    /// `[tls] server_tls_ca_file`; `system` means the bundled public web roots.
    pub sslrootcert: Option<PathBuf>,
}

impl ServerUrl {
    pub fn parse(text: &str) -> Result<ServerUrl, String> {
        let url = url::Url::parse(text).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!("URL scheme must be postgres:// or postgresql://, not {}://", url.scheme()));
        }
        let decode = |s: &str| percent_decode(s);
        let mut host = url.host_str().map(decode).unwrap_or_default();
        let mut sslmode = None;
        let mut sslrootcert = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "host" => host = v.into_owned(),
                "sslmode" => sslmode = Some(v.into_owned()),
                "sslrootcert" => sslrootcert = Some(PathBuf::from(v.into_owned())),
                other => {
                    return Err(format!(
                        "URL parameter {other:?} is not supported (pgpilot understands {})",
                        KNOWN_PARAMETERS.join(", ")
                    ))
                }
            }
        }
        if host.is_empty() {
            return Err("URL has no host".into());
        }
        let user = Some(decode(url.username())).filter(|u| !u.is_empty());
        let dbname = decode(url.path().trim_start_matches('/'));
        Ok(ServerUrl {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port: url.port().unwrap_or(5432),
            dbname: if dbname.is_empty() {
                user.clone().unwrap_or_else(|| "postgres".into())
            } else {
                dbname
            },
            user,
            password: url.password().map(decode),
            sslmode,
            sslrootcert,
        })
    }

    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// host:port, or the socket path for a Unix socket.
    pub fn address(&self) -> String {
        if self.is_unix_socket() {
            format!("{}/.s.PGSQL.{}", self.host, self.port)
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `s` with every byte but RFC 3986's unreserved characters percent-encoded: safe anywhere in a
/// URL (a user, a password, a host, one path segment), and [`percent_decode`] gives `s` back
/// whatever it holds ('/', '%', '?', spaces).
pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The password never shows in logs or error messages.
impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
        write!(f, "postgres://{user}{}/{}", self.address(), self.dbname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() {
        let u = ServerUrl::parse("postgres://app:s%40cret@db.example:6543/shop?sslmode=require").unwrap();
        assert_eq!(u.host, "db.example");
        assert_eq!(u.port, 6543);
        assert_eq!(u.dbname, "shop");
        assert_eq!(u.user.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.sslmode.as_deref(), Some("require"));
        assert!(!format!("{u:?}").contains("cret"), "password leaked into Debug");
    }

    #[test]
    fn defaults_and_sockets() {
        let u = ServerUrl::parse("postgresql://bob@localhost").unwrap();
        assert_eq!((u.port, u.dbname.as_str()), (5432, "bob"));
        let s = ServerUrl::parse("postgres://bob@x/db?host=/var/run/postgresql").unwrap();
        assert!(s.is_unix_socket());
        assert_eq!(s.address(), "/var/run/postgresql/.s.PGSQL.5432");
        assert_eq!(ServerUrl::parse("postgres://[::1]:5433/db").unwrap().address(), "[::1]:5433");
    }

    #[test]
    fn keeps_sslrootcert_and_refuses_unknown_parameters() {
        let u = ServerUrl::parse("postgres://h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(u.sslrootcert.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        let err = ServerUrl::parse("postgres://h/db?sslmode=verify-full&sslcert=/c.pem").unwrap_err();
        assert!(err.contains("\"sslcert\" is not supported"), "{err}");
        assert!(ServerUrl::parse("postgres://h/db?channel_binding=require").is_err());
    }

    #[test]
    fn rejects_other_schemes() {
        assert!(ServerUrl::parse("mysql://x/y").is_err());
        assert!(ServerUrl::parse("not a url").is_err());
    }
}
