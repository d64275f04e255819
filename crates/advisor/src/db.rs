//! The advisor's session on the database: one connection, defensive settings, small query helpers.

use anyhow::{Context, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::connect::Target;

/// A connected session plus what the advisor needs to know about the server.
pub struct Db {
    pub client: Client,
    /// server_version_num, e.g. 150004.
    pub version_num: i32,
    pub version: String,
    pub database: String,
    pub is_superuser: bool,
    pub in_recovery: bool,
    /// Index scans this session's planning caused, per index oid (see `index::planner::explain_json`).
    pub own_index_scans: std::sync::Mutex<std::collections::HashMap<u32, i64>>,
}

impl Db {
    /// Connects and makes the session harmless: read-mostly work must never wait on locks or run away.
    pub async fn open(target: &Target, statement_timeout_ms: u64) -> Result<Db> {
        let client = target.connect().await?;
        client
            .batch_execute(&format!(
                "SET application_name = 'pgpilot-advisor'; SET statement_timeout = {statement_timeout_ms}; \
                 SET lock_timeout = 2000; SET idle_in_transaction_session_timeout = 60000"
            ))
            .await
            .context("setting the advisor's session limits")?;
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_setting('server_version'), \
                 current_database()::text, \
                 (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), pg_is_in_recovery()",
                &[],
            )
            .await
            .context("reading the server version")?;
        Ok(Db {
            client,
            version_num: row.get(0),
            version: row.get(1),
            database: row.get(2),
            is_superuser: row.get::<_, Option<bool>>(3).unwrap_or(false),
            in_recovery: row.get(4),
            own_index_scans: Default::default(),
        })
    }

    pub async fn rows(&self, sql: &str) -> Result<Vec<Row>> {
        self.client.query(sql, &[]).await.with_context(|| format!("running {}", first_line(sql)))
    }

    /// The rows of `sql` over every relation, or, when a relation is locked (a session holds or
    /// awaits a lock that conflicts with reading its size or definition, and the query hit the
    /// session's lock timeout), relation by relation without the locked ones. One locked table
    /// must not take a whole check away. `sql` takes the relations to cover as `$1::oid[]` (NULL:
    /// all), then `params`; `relations` lists every relation it may cover as (oid, name). Returns
    /// the rows and the names of the relations left out.
    pub async fn rows_skipping_locked(
        &self,
        sql: &str,
        relations: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Vec<Row>, Vec<String>)> {
        let all_relations: Option<Vec<u32>> = None;
        match self.client.query(sql, &with_filter(&all_relations, params)).await {
            Err(e) if is_lock_timeout(&e) => {}
            other => return Ok((other.with_context(|| format!("running {}", first_line(sql)))?, vec![])),
        }
        let (mut rows, mut locked) = (Vec::new(), Vec::new());
        for relation in self.rows(relations).await? {
            let one = Some(vec![relation.get::<_, u32>(0)]);
            match self.client.query(sql, &with_filter(&one, params)).await {
                Ok(mut some) => rows.append(&mut some),
                Err(e) if is_lock_timeout(&e) => locked.push(relation.get(1)),
                Err(e) => return Err(e).with_context(|| format!("running {}", first_line(sql))),
            }
        }
        Ok((rows, locked))
    }

    /// True when the extension is installed in this database.
    pub async fn has_extension(&self, name: &str) -> Result<bool> {
        let row =
            self.client.query_one("SELECT count(*) FROM pg_extension WHERE extname = $1", &[&name]).await?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// True when the extension's files are installed on the server (CREATE EXTENSION would work).
    pub async fn extension_available(&self, name: &str) -> Result<bool> {
        let row = self
            .client
            .query_one("SELECT count(*) FROM pg_available_extensions WHERE name = $1", &[&name])
            .await?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// Makes sure `name` is usable: installed already, or created when `install` allows it.
    /// Returns a sentence explaining why it is not usable, if it is not.
    pub async fn ensure_extension(&self, name: &str, install: bool) -> Result<Option<String>> {
        if self.has_extension(name).await? {
            return Ok(None);
        }
        if !self.extension_available(name).await? {
            return Ok(Some(not_installed(name, self.version_num)));
        }
        if !install {
            return Ok(Some(format!(
                "{name} is available but not created in database {}: run CREATE EXTENSION {name} \
                 (or pass --install-extensions)",
                self.database
            )));
        }
        match self.client.batch_execute(&format!("CREATE EXTENSION IF NOT EXISTS {name}")).await {
            Ok(()) => Ok(None),
            Err(e) => Ok(Some(format!("CREATE EXTENSION {name} failed: {}", db_error_text(&e)))),
        }
    }
}

/// Why an extension cannot be created, and what to install when a package is known: the reader
/// of a report should not have to look up which package carries it for their server.
fn not_installed(name: &str, version_num: i32) -> String {
    match extension_package(name, version_num) {
        Some(package) => {
            format!("the {name} extension is not installed on the server (Debian/Ubuntu package {package})")
        }
        None => format!("the {name} extension is not installed on the server"),
    }
}

/// The Debian/Ubuntu (PGDG) package of an extension that does not ship with PostgreSQL itself,
/// named for the server's major version (`version_num` as server_version_num, e.g. 150004).
pub fn extension_package(name: &str, version_num: i32) -> Option<String> {
    let major = if version_num >= 100_000 {
        (version_num / 10_000).to_string()
    } else {
        format!("{}.{}", version_num / 10_000, version_num / 100 % 100)
    };
    match name {
        "hypopg" => Some(format!("postgresql-{major}-hypopg")),
        _ => None,
    }
}

/// The server's message for a database error (without the "db error:" prefix).
pub fn db_error_text(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())
}

/// `filter` as `$1`, then `params`.
fn with_filter<'a>(
    filter: &'a Option<Vec<u32>>,
    params: &[&'a (dyn ToSql + Sync)],
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut all: Vec<&(dyn ToSql + Sync)> = vec![filter];
    all.extend_from_slice(params);
    all
}

/// The statement waited longer than lock_timeout for a lock another session holds or awaits.
pub fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
}

/// The start of a statement for an error message: its first line, cut after a word, with `…`
/// when it goes on (a cut mid-word, "pg_stat_statem", read as a wrong name).
fn first_line(sql: &str) -> String {
    const MAX: usize = 80;
    let line = sql.trim().lines().next().unwrap_or("");
    if line.chars().count() <= MAX {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX).collect();
    let at_word = cut.rfind(' ').map_or(cut.as_str(), |space| &cut[..space]);
    format!("{}…", at_word.trim_end_matches(','))
}

/// A quoted identifier, as quote_ident would write it.
pub fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && !crate::index::is_reserved(name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// SQL giving the quoted, schema-qualified name of the relation whose oid `oid` (a SQL expression)
/// is. `oid::regclass::text` leaves the schema out for a relation on the search_path (`public`): a
/// fix written with it would act on another relation, or none, under another search_path.
pub fn qualified_relation_sql(oid: &str) -> String {
    format!(
        "(SELECT quote_ident(qn.nspname) || '.' || quote_ident(qc.relname) FROM pg_class qc \
           JOIN pg_namespace qn ON qn.oid = qc.relnamespace WHERE qc.oid = {oid})"
    )
}

/// A SQL string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_in_an_error_is_cut_after_a_word() {
        let sql = "SELECT query, sum(calls)::int8, sum(total_exec_time)::float8 FROM pg_stat_statements WHERE dbid = 1";
        assert_eq!(first_line(sql), "SELECT query, sum(calls)::int8, sum(total_exec_time)::float8 FROM…");
        assert_eq!(first_line("SELECT 1\nFROM t"), "SELECT 1");
    }

    #[test]
    fn a_missing_extension_names_its_package_for_the_servers_major_version() {
        let why = not_installed("hypopg", 150004);
        assert_eq!(
            why,
            "the hypopg extension is not installed on the server (Debian/Ubuntu package postgresql-15-hypopg)"
        );
        assert!(not_installed("hypopg", 170002).contains("postgresql-17-hypopg"));
        assert_eq!(extension_package("hypopg", 90624).as_deref(), Some("postgresql-9.6-hypopg"));
        // Contrib modules come with the server's own package.
        assert_eq!(
            not_installed("pgstattuple", 150004),
            "the pgstattuple extension is not installed on the server"
        );
    }
}
