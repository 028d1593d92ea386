#!/bin/sh
# Check that database $1 answers and has tables with rows; print the five largest tables.
# Needs: psql; PGHOST, PGUSER (and PGPASSWORD, as a secret).
set -eu
db=$1
tables=$(psql -d "$db" -Atc "SELECT count(*) FROM pg_stat_user_tables")
[ "$tables" -gt 0 ] || { echo "$db has no tables" >&2; exit 1; }
psql -d "$db" -Atc "SELECT relname || ': ' || n_live_tup FROM pg_stat_user_tables ORDER BY n_live_tup DESC LIMIT 5"
