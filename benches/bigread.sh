#!/usr/bin/env bash
# bigread.sh PORT PID CLIENTS ROWS WIDTH: CLIENTS psql's at once each read ROWS rows of WIDTH bytes
# through the pooler listening on PORT (user postgres, database postgres, no password); prints the
# resident memory of process PID (the pooler) before, at its peak and 2 s after.
set -u
PORT=$1; PID=$2; N=$3; ROWS=$4; W=$5
rss() { awk '/VmRSS/{print $2/1024 " MB"}' /proc/$PID/status; }
echo "before: $(rss)"
for i in $(seq $N); do
  psql -X -q -h 127.0.0.1 -p $PORT -U postgres postgres -c "SELECT repeat('x',$W) FROM generate_series(1,$ROWS)" > /dev/null &
done
peak=0
while [ -n "$(jobs -r)" ]; do r=$(awk '/VmRSS/{print int($2/1024)}' /proc/$PID/status); [ $r -gt $peak ] && peak=$r; sleep 0.2; done
wait
echo "peak: $peak MB"; sleep 2; echo "after: $(rss)"
