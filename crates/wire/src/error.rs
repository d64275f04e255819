//! Errors pgpilot itself reports to clients, encoded as PostgreSQL ErrorResponse messages.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, BytesMut};

/// A five-character SQLSTATE code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlState(pub &'static str);

impl SqlState {
    pub const SUCCESSFUL_COMPLETION: SqlState = SqlState("00000");
    pub const CONNECTION_EXCEPTION: SqlState = SqlState("08000");
    pub const CONNECTION_FAILURE: SqlState = SqlState("08006");
    pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    pub const INVALID_AUTHORIZATION: SqlState = SqlState("28000");
    pub const INVALID_PASSWORD: SqlState = SqlState("28P01");
    pub const INVALID_CATALOG_NAME: SqlState = SqlState("3D000");
    pub const SYNTAX_ERROR: SqlState = SqlState("42601");
    pub const UNDEFINED_OBJECT: SqlState = SqlState("42704");
    pub const DUPLICATE_PREPARED_STATEMENT: SqlState = SqlState("42P05");
    pub const UNDEFINED_PREPARED_STATEMENT: SqlState = SqlState("26000");
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState("42501");
    pub const OUT_OF_MEMORY: SqlState = SqlState("53200");
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState("53300");
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    pub const QUERY_CANCELED: SqlState = SqlState("57014");
    pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState("57P03");
    pub const IDLE_IN_TRANSACTION_TIMEOUT: SqlState = SqlState("25P03");
    pub const IN_FAILED_SQL_TRANSACTION: SqlState = SqlState("25P02");
    pub const IDLE_SESSION_TIMEOUT: SqlState = SqlState("57P05");
    pub const READ_ONLY_TRANSACTION: SqlState = SqlState("25006");
    pub const INTERNAL_ERROR: SqlState = SqlState("XX000");
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState("22023");
    pub const CHARACTER_NOT_IN_REPERTOIRE: SqlState = SqlState("22021");
    pub const CANT_CHANGE_RUNTIME_PARAM: SqlState = SqlState("55P02");
    pub const CONFIG_FILE_ERROR: SqlState = SqlState("F0000");

    const KNOWN: &[SqlState] = &[
        SqlState::PROTOCOL_VIOLATION,
        SqlState::FEATURE_NOT_SUPPORTED,
        SqlState::INVALID_AUTHORIZATION,
        SqlState::SYNTAX_ERROR,
        SqlState::UNDEFINED_OBJECT,
        SqlState::INSUFFICIENT_PRIVILEGE,
        SqlState::PROGRAM_LIMIT_EXCEEDED,
        SqlState::QUERY_CANCELED,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::READ_ONLY_TRANSACTION,
        SqlState::INVALID_PARAMETER_VALUE,
        SqlState::CANT_CHANGE_RUNTIME_PARAM,
    ];

    /// The code a server sent, when pgpilot knows it (codes are static here); otherwise XX000.
    pub fn from_server(code: &str) -> SqlState {
        SqlState::KNOWN.iter().find(|s| s.0 == code).copied().unwrap_or(SqlState::INTERNAL_ERROR)
    }

    pub fn code(&self) -> &'static str {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(&self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error pgpilot reports itself (as opposed to one it forwards from PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: SqlState,
    pub message: Cow<'static, str>,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Where PostgreSQL raises this error, when pgpilot answers for the server: some drivers
    /// recognise an error by its routine. A reference, to keep every `Result<_, PgError>` small.
    pub origin: Option<&'static ErrorOrigin>,
}

/// The source file and routine of an error, as PostgreSQL reports them (fields F and R).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorOrigin {
    pub file: &'static str,
    pub routine: &'static str,
}

impl PgError {
    /// An ERROR: the statement fails, the session goes on.
    pub fn error(code: SqlState, message: impl Into<Cow<'static, str>>) -> PgError {
        PgError {
            severity: Severity::Error,
            code,
            message: message.into(),
            detail: None,
            hint: None,
            origin: None,
        }
    }

    /// A FATAL: the session ends after the client is told why.
    pub fn fatal(code: SqlState, message: impl Into<Cow<'static, str>>) -> PgError {
        PgError {
            severity: Severity::Fatal,
            code,
            message: message.into(),
            detail: None,
            hint: None,
            origin: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> PgError {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> PgError {
        self.hint = Some(hint.into());
        self
    }

    /// Names where PostgreSQL raises this error, as its own error would.
    pub fn with_origin(mut self, origin: &'static ErrorOrigin) -> PgError {
        self.origin = Some(origin);
        self
    }

    pub fn is_fatal(&self) -> bool {
        self.severity == Severity::Fatal
    }

    /// Appends this error as an ErrorResponse message.
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_fields(out, b'E', self.severity.as_str());
    }

    /// Appends this error as a NoticeResponse (severity shown as WARNING).
    pub fn encode_notice(&self, out: &mut BytesMut) {
        self.encode_fields(out, b'N', "WARNING");
    }

    fn encode_fields(&self, out: &mut BytesMut, tag: u8, severity: &str) {
        let start = out.len();
        out.put_u8(tag);
        out.put_u32(0);
        for field in [b'S', b'V'] {
            put_field(out, field, severity);
        }
        put_field(out, b'C', self.code.0);
        put_field(out, b'M', &self.message);
        if let Some(d) = &self.detail {
            put_field(out, b'D', d);
        }
        if let Some(h) = &self.hint {
            put_field(out, b'H', h);
        }
        if let Some(origin) = self.origin {
            put_field(out, b'F', origin.file);
            put_field(out, b'R', origin.routine);
        }
        out.put_u8(0);
        let len = (out.len() - start - 1) as u32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    }
}

fn put_field(out: &mut BytesMut, field: u8, value: &str) {
    out.put_u8(field);
    // A NUL inside a field would end it early and desynchronise the client's parser.
    out.extend(value.bytes().filter(|&b| b != 0));
    out.put_u8(0);
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity.as_str(), self.code.0, self.message)
    }
}

impl std::error::Error for PgError {}

/// The fields of an ErrorResponse or NoticeResponse received from a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorFields {
    /// Parses the body (after the five header bytes) of an ErrorResponse or NoticeResponse.
    pub fn parse(body: &[u8]) -> ErrorFields {
        let mut fields = ErrorFields::default();
        let mut pos = 0;
        while pos < body.len() && body[pos] != 0 {
            let kind = body[pos];
            let Some((value, next)) = crate::frame::read_cstr(body, pos + 1) else { break };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'V' => fields.severity = value,
                b'S' if fields.severity.is_empty() => fields.severity = value,
                b'C' => fields.code = value,
                b'M' => fields.message = value,
                _ => {}
            }
            pos = next;
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips() {
        let mut out = BytesMut::new();
        PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, "too many clients").encode(&mut out);
        assert_eq!(out[0], b'E');
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len());
        let f = ErrorFields::parse(&out[5..]);
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.code, "53300");
        assert_eq!(f.message, "too many clients");
    }

    #[test]
    fn the_origin_is_sent_as_file_and_routine() {
        static ORIGIN: ErrorOrigin = ErrorOrigin { file: "plancache.c", routine: "RevalidateCachedQuery" };
        let mut out = BytesMut::new();
        PgError::error(SqlState::FEATURE_NOT_SUPPORTED, "cached plan must not change result type")
            .with_origin(&ORIGIN)
            .encode(&mut out);
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len());
        let fields: Vec<&[u8]> = out[5..out.len() - 1].split(|&b| b == 0).filter(|f| !f.is_empty()).collect();
        assert!(fields.contains(&&b"Fplancache.c"[..]), "{fields:?}");
        assert!(fields.contains(&&b"RRevalidateCachedQuery"[..]), "{fields:?}");
        assert_eq!(ErrorFields::parse(&out[5..]).code, "0A000");
    }
}
