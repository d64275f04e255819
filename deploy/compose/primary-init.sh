#!/bin/bash
# Runs once, when the primary's data directory is created: the application role, the replication
# role and its slot, and pg_hba lines for replication over the compose network.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE app LOGIN PASSWORD 'app-password';
ALTER DATABASE app OWNER TO app;
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'replicator-password';
SELECT pg_create_physical_replication_slot('replica1');
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
