#!/bin/bash
# A streaming replica of the primary: cloned with pg_basebackup on first start, then started as a
# hot standby (-R writes primary_conninfo and standby.signal).
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_basebackup --host=primary --username=replicator --pgdata="$PGDATA" \
        --wal-method=stream --slot=replica1 --write-recovery-conf --progress; do
        echo "waiting for the primary..." >&2
        sleep 2
    done
    chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on
