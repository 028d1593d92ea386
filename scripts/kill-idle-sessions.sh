#!/bin/sh
# Terminate Postgres sessions idle in a transaction for longer than $1 (default 10m).
# Needs: psql; PGHOST, PGUSER, PGDATABASE (and PGPASSWORD, passed by opsbot as a secret).
set -eu
idle=${1:-10m}
psql -X -v ON_ERROR_STOP=1 -v idle="$idle" <<'SQL'
SELECT pid, usename, application_name, now() - state_change AS idle_for,
       pg_terminate_backend(pid) AS terminated
FROM pg_stat_activity
WHERE state = 'idle in transaction'
  AND state_change < now() - :'idle'::interval
  AND pid <> pg_backend_pid();
SQL
