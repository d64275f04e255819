//! The SQL `pgpilot cache install-triggers` runs: a `pgpilot` schema with a version per table,
//! a statement-level trigger on every user table (permanent or unlogged) that bumps it and notifies
//! `pgpilot_cache`, an event trigger that gives tables created later the same trigger, and one
//! that reports every DDL command (ALTER TABLE, GRANT/REVOKE, CREATE/ALTER POLICY, DROP...): it
//! bumps version 0, which every `strict` read checks, and notifies `ddl`, on which pgpilot drops the
//! database's results and reads its catalog again.
//! Bumping a row of pgpilot.cache_versions serialises concurrent writers of one table on that
//! row until they commit: the price of versions that every writer, wherever it comes from, keeps.

/// Idempotent: run it again after restoring a dump or to pick up tables made by a role the event
/// trigger could not act for.
pub const INSTALL_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS pgpilot;
CREATE TABLE IF NOT EXISTS pgpilot.cache_versions (
    relid oid PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0
);
-- pgpilot reads the versions as the role its pools log in as, often each client's own.
GRANT USAGE ON SCHEMA pgpilot TO PUBLIC;
GRANT SELECT ON pgpilot.cache_versions TO PUBLIC;
CREATE OR REPLACE FUNCTION pgpilot.cache_bump() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgpilot AS $f$
BEGIN
    INSERT INTO pgpilot.cache_versions AS v (relid, version) VALUES (TG_RELID, 1)
        ON CONFLICT (relid) DO UPDATE SET version = v.version + 1;
    PERFORM pg_notify('pgpilot_cache',
        TG_RELID::text || ' ' || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text);
    RETURN NULL;
END
$f$;
CREATE OR REPLACE FUNCTION pgpilot.cache_add_trigger(rel regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $f$
BEGIN
    EXECUTE format('CREATE OR REPLACE TRIGGER pgpilot_cache_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION pgpilot.cache_bump()', rel);
END
$f$;
DO $d$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS rel FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND c.relpersistence IN ('p', 'u')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgpilot')
               AND n.nspname NOT LIKE 'pg\_%'
    LOOP
        PERFORM pgpilot.cache_add_trigger(r.rel);
    END LOOP;
END
$d$;
CREATE OR REPLACE FUNCTION pgpilot.cache_on_create() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $f$
DECLARE r record;
BEGIN
    FOR r IN SELECT objid FROM pg_event_trigger_ddl_commands()
             WHERE object_type IN ('table') AND schema_name NOT IN ('pgpilot', 'pg_temp')
               AND schema_name NOT LIKE 'pg\_temp%'
    LOOP
        IF (SELECT relpersistence FROM pg_class WHERE oid = r.objid) IN ('p', 'u') THEN
            PERFORM pgpilot.cache_add_trigger(r.objid::regclass);
        END IF;
    END LOOP;
END
$f$;
DO $d$
BEGIN
    -- Made again each time, so an install over an older one gets today's list of commands.
    -- CREATE SCHEMA: tables made inside `CREATE SCHEMA s CREATE TABLE t (...)`.
    DROP EVENT TRIGGER IF EXISTS pgpilot_cache_on_create;
    CREATE EVENT TRIGGER pgpilot_cache_on_create ON ddl_command_end
        WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'CREATE SCHEMA')
        EXECUTE FUNCTION pgpilot.cache_on_create();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'tables created later need install-triggers again (an event trigger needs a superuser)';
END
$d$;
CREATE OR REPLACE FUNCTION pgpilot.cache_on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgpilot AS $f$
BEGIN
    -- Temporary objects are never cached: an application's CREATE TEMP TABLE flushes nothing.
    IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands())
       AND NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                       WHERE schema_name IS NULL OR schema_name NOT LIKE 'pg\_temp%') THEN
        RETURN;
    END IF;
    INSERT INTO pgpilot.cache_versions AS v (relid, version) VALUES (0, 1)
        ON CONFLICT (relid) DO UPDATE SET version = v.version + 1;
    PERFORM pg_notify('pgpilot_cache', 'ddl ' || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text);
END
$f$;
DO $d$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgpilot_cache_on_ddl') THEN
        CREATE EVENT TRIGGER pgpilot_cache_on_ddl ON ddl_command_end EXECUTE FUNCTION pgpilot.cache_on_ddl();
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'DDL made straight in PostgreSQL is noticed at the next catalog refresh (an event trigger needs a superuser)';
END
$d$;
"#;

/// Removes everything [`INSTALL_SQL`] made.
pub const UNINSTALL_SQL: &str = r#"
DROP EVENT TRIGGER IF EXISTS pgpilot_cache_on_create;
DROP EVENT TRIGGER IF EXISTS pgpilot_cache_on_ddl;
DROP FUNCTION IF EXISTS pgpilot.cache_on_ddl() CASCADE;
DROP FUNCTION IF EXISTS pgpilot.cache_bump() CASCADE;
DROP FUNCTION IF EXISTS pgpilot.cache_on_create() CASCADE;
DROP FUNCTION IF EXISTS pgpilot.cache_add_trigger(regclass);
DROP TABLE IF EXISTS pgpilot.cache_versions;
"#;

/// Version of every table with triggers, for `strict` reads.
pub const VERSIONS_SQL: &str = "SELECT relid, version FROM pgpilot.cache_versions";
