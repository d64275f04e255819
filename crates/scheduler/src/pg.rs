//! Small PostgreSQL helpers: connecting, naming relations safely, and telling transient errors apart.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::resolver::DatabaseResolver;

/// The bound on opening a connection whose settings name none (tokio-postgres has no default).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a job (or one step of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A statement failed; `context` says which step.
    #[error("{context}: {}", describe(.source))]
    Postgres { context: String, source: tokio_postgres::Error },
    /// The job cannot do what it was asked (no such table, wrong partitioning...): retrying won't help.
    #[error("{0}")]
    Invalid(String),
    /// pgpilot is shutting down and the run stopped between two of its statements: reported as
    /// a statement the server cancelled is (57014), since that is what the shutdown asked for.
    #[error("{0}: pgpilot is shutting down (SQLSTATE 57014)")]
    Cancelled(String),
}

impl JobError {
    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Postgres { source, .. } => is_transient(source),
            JobError::Invalid(_) | JobError::Cancelled(_) => false,
        }
    }

    /// True when the statement failed because the connection is gone: closed, broken, or ended
    /// by the server with a FATAL (pg_terminate_backend, a shutdown), which the client may not
    /// have noticed yet.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            JobError::Postgres { source, .. } => {
                source.is_closed()
                    || caused_by_io(source)
                    || source.as_db_error().is_some_and(|d| matches!(d.severity(), "FATAL" | "PANIC"))
            }
            JobError::Invalid(_) | JobError::Cancelled(_) => false,
        }
    }

    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            JobError::Postgres { source, .. } => source.code().map(SqlState::code),
            JobError::Invalid(_) => None,
            JobError::Cancelled(_) => Some(SqlState::QUERY_CANCELED.code()),
        }
    }
}

/// Adds a step description to a tokio-postgres result.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, JobError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, JobError> {
        self.map_err(|source| JobError::Postgres { context: what(), source })
    }
}

/// Errors worth another attempt: lock and serialization conflicts, and a server that is busy or
/// restarting. A statement timeout is not among them: the same statement would time out again.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke or could not be made (the network may recover), or
        // the client itself refused to go on, e.g. "password missing" or an authentication
        // method it does not support (a configuration mistake no retry can fix).
        return e.is_closed() || caused_by_io(e);
    };
    [
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CONNECTION_FAILURE,
        SqlState::OBJECT_IN_USE,
    ]
    .contains(code)
}

/// True when an I/O error (refused, reset, timed out...) is among the error's causes.
fn caused_by_io(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        if inner.is::<std::io::Error>() {
            return true;
        }
        cause = inner.source();
    }
    false
}

/// "SQLSTATE 55P03: canceling statement due to lock timeout" plus detail/hint when the server gave them.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}

/// Connects and drives the connection in the background. TLS is not used (see docs/jobs.md).
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("job connection ended: {}", describe(&e));
        }
    });
    Ok(client)
}

/// Rolls back the session's transaction block if one is open (a failed statement inside a job's
/// BEGIN, or one left idle). A ROLLBACK outside one makes the server log `WARNING: there is no
/// transaction in progress` and send it back as a notice, so the session is asked first: in an
/// aborted transaction any query fails with 25P02, and in an open one the transaction started
/// before the probe's own statement.
pub async fn rollback_if_in_transaction(client: &Client) {
    // The simple protocol: in the extended one Bind and Execute restart the statement's clock
    // after Parse began the implicit transaction, and the two times always differ. In an aborted
    // transaction the probe itself fails (the server logs that ERROR, not a warning per run).
    let open = match client
        .simple_query("SELECT pg_catalog.transaction_timestamp() <> pg_catalog.statement_timestamp()")
        .await
    {
        Ok(messages) => messages
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("t"))),
        Err(e) => e.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION),
    };
    if open {
        let _ = client.batch_execute("ROLLBACK").await;
    }
}

/// Why a job's connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the server did not complete the connection (TLS, startup, login) within {0:?}")]
    TimedOut(Duration),
}

impl ConnectError {
    /// A server that did not answer in time may answer the next attempt.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Postgres(e) => is_transient(e),
            ConnectError::TimedOut(_) => true,
        }
    }
}

/// Opens a connection through `resolver`, giving up after the settings' connect_timeout.
/// tokio-postgres applies that timeout to the TCP connect alone: a server that accepts and then
/// never answers (a frozen primary, a load balancer with a dead backend) would hold the TLS
/// handshake or the startup forever, and the job with it.
pub async fn connect_in_time(
    resolver: &dyn DatabaseResolver,
    config: &tokio_postgres::Config,
) -> Result<Client, ConnectError> {
    within_connect_timeout(config, resolver.connect(config)).await
}

/// `connecting` (a connection being opened with `config`), bounded by the config's
/// connect_timeout as `connect_in_time` explains.
pub async fn within_connect_timeout(
    config: &tokio_postgres::Config,
    connecting: impl std::future::Future<Output = Result<Client, tokio_postgres::Error>>,
) -> Result<Client, ConnectError> {
    let limit = config.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    match tokio::time::timeout(limit, connecting).await {
        Ok(connected) => Ok(connected?),
        Err(_) => Err(ConnectError::TimedOut(limit)),
    }
}

/// A double-quoted identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column named in a job or on the command line: `"Created At"`, a double-quoted SQL identifier
/// (`""` inside for a quote), is the name between the quotes, as tables are taken as SQL names;
/// anything else is the column's exact name as the catalog spells it (`created_at`, `CreatedAt`),
/// which is how columns were always taken and is not case-folded.
pub fn column_name(written: &str) -> String {
    match written.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) if !inner.is_empty() && !inner.replace("\"\"", "").contains('"') => {
            inner.replace("\"\"", "\"")
        }
        _ => written.to_string(),
    }
}

/// A single-quoted string literal (standard_conforming_strings is on in every supported server).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A relation found in the catalog from a name as the user wrote it ("events", "public.events").
#[derive(Clone, Debug)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// pg_class.relkind: r table, p partitioned table, m materialized view.
    pub kind: i8,
}

impl Relation {
    /// `"schema"."name"`, safe to put in SQL.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// Looks up a relation the way PostgreSQL would resolve the name (search_path, quoting).
pub async fn find_relation(client: &Client, name: &str) -> Result<Relation, JobError> {
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname, c.relname, c.relkind
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = to_regclass($1)",
            &[&name],
        )
        .await
        .context(|| format!("looking up {name}"))?;
    let row = row.ok_or_else(|| JobError::Invalid(format!("there is no table or view named {name}")))?;
    Ok(Relation { oid: row.get(0), schema: row.get(1), name: row.get(2), kind: row.get(3) })
}

/// Fails when the server is a standby: a job writes (its history row first of all), which a
/// standby refuses with only "cannot execute UPDATE in a read-only transaction".
pub async fn refuse_standby(client: &Client, config: &tokio_postgres::Config) -> Result<(), JobError> {
    let standby: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .context(|| "asking the server whether it is a standby".into())?
        .get(0);
    if !standby {
        return Ok(());
    }
    Err(JobError::Invalid(format!(
        "the server at {} is a standby (pg_is_in_recovery() is true), which cannot be written to: \
         point the job at the primary",
        crate::resolver::server_address(config)
    )))
}

pub async fn server_version_num(client: &Client) -> Result<i32, JobError> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .context(|| "reading the server version".into())?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn columns_are_quoted_identifiers_or_exact_names() {
        assert_eq!(column_name("\"Created At\""), "Created At");
        assert_eq!(column_name("\"we\"\"ird\""), "we\"ird");
        assert_eq!(column_name("created_at"), "created_at");
        assert_eq!(column_name("CreatedAt"), "CreatedAt", "a bare name is exact, not folded");
        // Not one quoted identifier: taken as written.
        assert_eq!(column_name("\"a\"b\""), "\"a\"b\"");
        assert_eq!(column_name("\""), "\"");
    }
}
