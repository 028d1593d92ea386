#!/bin/sh
# Terminate Postgres sessions idle for longer than $1 (default 10m): in a transaction, or
# with $2 = idle, plain idle connections (a pool that leaks them exhausts max_connections).
# Needs: psql; PGHOST, PGUSER, PGDATABASE (and PGPASSWORD, passed by opsbot as a secret).
set -eu
idle=${1:-10m}
case "${2:-idle-in-transaction}" in
  idle-in-transaction) state='idle in transaction' ;;
  idle) state='idle' ;;
  *) echo "unknown state: $2" >&2; exit 2 ;;
esac
psql -X -v ON_ERROR_STOP=1 -v idle="$idle" -v state="$state" <<'SQL'
SELECT pid, usename, application_name, now() - state_change AS idle_for,
       pg_terminate_backend(pid) AS terminated
FROM pg_stat_activity
WHERE state = :'state'
  AND state_change < now() - :'idle'::interval
  AND pid <> pg_backend_pid();
SQL
