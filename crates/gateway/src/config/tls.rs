//! `[tls]`: PgBouncer's client_tls_* and server_tls_* settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Client-facing TLS: whether clients may, or must, use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// Refuse SSLRequest ('N').
    #[default]
    Disable,
    /// Accept TLS when the client asks; plain connections welcome.
    Allow,
    /// Same as allow for a server (the client decides); kept for PgBouncer compatibility.
    Prefer,
    /// Plain connections are refused after startup.
    Require,
}

/// Server-facing TLS, libpq's sslmode vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl ServerTlsMode {
    const ALL: [ServerTlsMode; 6] = [
        ServerTlsMode::Disable,
        ServerTlsMode::Allow,
        ServerTlsMode::Prefer,
        ServerTlsMode::Require,
        ServerTlsMode::VerifyCa,
        ServerTlsMode::VerifyFull,
    ];

    pub fn parse(s: &str) -> Option<ServerTlsMode> {
        Self::ALL.into_iter().find(|mode| mode.name() == s)
    }

    /// libpq's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            ServerTlsMode::Disable => "disable",
            ServerTlsMode::Allow => "allow",
            ServerTlsMode::Prefer => "prefer",
            ServerTlsMode::Require => "require",
            ServerTlsMode::VerifyCa => "verify-ca",
            ServerTlsMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the first attempt asks for TLS (allow tries in the clear first, as libpq).
    pub fn attempts_tls(self) -> bool {
        !matches!(self, ServerTlsMode::Disable | ServerTlsMode::Allow)
    }

    /// Whether TLS may be used at all (a connector is needed).
    pub fn may_use_tls(self) -> bool {
        self != ServerTlsMode::Disable
    }

    /// libpq's second attempt: a login the server refused over TLS is tried once in the clear
    /// under prefer, one refused in the clear once over TLS under allow (pg_hba.conf's hostssl
    /// and hostnossl lines decide which the server takes).
    pub fn retries_login(self, over_tls: bool) -> bool {
        match self {
            ServerTlsMode::Prefer => over_tls,
            ServerTlsMode::Allow => !over_tls,
            _ => false,
        }
    }

    pub fn requires_tls(self) -> bool {
        matches!(self, ServerTlsMode::Require | ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull)
    }

    /// verify-ca / verify-full: the server's certificate must chain to a trusted CA.
    pub fn verifies(self) -> bool {
        matches!(self, ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull)
    }
}

/// What `sslrootcert` / `server_tls_ca_file` may name instead of a file: the public web roots
/// bundled with pgpilot (as libpq's `sslrootcert=system`).
pub const SYSTEM_ROOTS: &str = "system";

/// How one server is connected to: its URL's sslmode and sslrootcert, else the `[tls]` ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    /// The CA bundle for verify-ca / verify-full (None for the other modes, which check nothing).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub client_tls_sslmode: ClientTlsMode,
    pub client_tls_cert_file: Option<PathBuf>,
    pub client_tls_key_file: Option<PathBuf>,
    pub server_tls_sslmode: ServerTlsMode,
    /// CA bundle to verify servers with (verify-ca / verify-full), unless a server URL gives its
    /// own `sslrootcert`. Required by those modes (as libpq fails without a root certificate);
    /// `"system"` trusts the bundled public web roots.
    pub server_tls_ca_file: Option<PathBuf>,
    /// Client certificate and key presented to servers that ask for one.
    pub server_tls_cert_file: Option<PathBuf>,
    pub server_tls_key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The effective TLS settings for the server at `url`: a URL's own sslmode / sslrootcert win.
    pub fn for_server(&self, url: &super::ServerUrl) -> ServerTls {
        let mode = url.sslmode.as_deref().and_then(ServerTlsMode::parse).unwrap_or(self.server_tls_sslmode);
        let ca_file = mode
            .verifies()
            .then(|| url.sslrootcert.clone().or_else(|| self.server_tls_ca_file.clone()))
            .flatten();
        ServerTls { mode, ca_file }
    }

    /// The `[tls]` settings alone: for servers no database URL names (jobs, pgpilot's own clients).
    pub fn for_other_servers(&self) -> ServerTls {
        let mode = self.server_tls_sslmode;
        ServerTls { mode, ca_file: mode.verifies().then(|| self.server_tls_ca_file.clone()).flatten() }
    }
}
