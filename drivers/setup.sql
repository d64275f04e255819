SET client_min_messages = warning;
-- Objects the driver scenario needs, created directly on PostgreSQL (not through pgpilot) before
-- any driver runs. Safe to run again: it drops and recreates everything it owns.
--
-- client_N (N = 0..49): one schema per scenario client. `mine` exists in no other schema and holds
-- N, so a client whose search_path leaked to another client reads the wrong owner (or no table).
-- `items` is the client's own COPY target.
DO $$
BEGIN
    FOR n IN 0..49 LOOP
        EXECUTE format('DROP SCHEMA IF EXISTS client_%s CASCADE', n);
        EXECUTE format('CREATE SCHEMA client_%s', n);
        EXECUTE format('CREATE TABLE client_%s.mine (owner int4 NOT NULL)', n);
        EXECUTE format('INSERT INTO client_%s.mine VALUES (%s)', n, n);
        EXECUTE format('CREATE TABLE client_%s.items (id int4 PRIMARY KEY, label text)', n);
    END LOOP;
END
$$;
