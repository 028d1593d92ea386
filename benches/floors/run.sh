#!/usr/bin/env bash
# What the work itself costs on this machine, to compare opsbot's benchmarks with
# (docs/benchmarks.md, "Floors"): the Slack slash-command floor server in each variant, then
# opsbot, under the same load; SQLite's own cost for the alert upsert; Postgres's.
# Needs a release build of the benches (`cargo bench --no-run --bench slack_ack`), python3,
# and for the last part pgbench and the Postgres at $PG (default the test database).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
PG=${PG:-postgres://postgres@127.0.0.1:5432/test}
bench=$(cargo bench --no-run --bench slack_ack 2>&1 | sed -n 's/.*Executable.*(\(.*\)).*/\1/p')
for v in "floor:" "floor:db" "floor:post" "floor:db,post" "opsbot:"; do
    printf '%-14s ' "$v"
    SLACK_FLOOR_SKIP=${v#*:} SLACK_ACK_SERVER=${v%%:*} SLACK_ACK_SECS=${SLACK_ACK_SECS:-12} "$bench" --bench |
        sed -n 's/.*one core; \([0-9]* µs per command\).*/\1/p'
done
for v in base noidx off; do python3 benches/floors/sqlite_upsert.py "$v"; done
if command -v pgbench >/dev/null; then
    psql -q "$PG" -c 'DROP SCHEMA IF EXISTS floor_pg CASCADE; CREATE SCHEMA floor_pg'
    PGOPTIONS='-c search_path=floor_pg' psql -q "$PG" -f migrations/postgres/0003_alerts.sql
    for c in 8 32; do
        printf 'postgres upsert floor, %s clients: ' "$c"
        pgbench -n -c "$c" -j 2 -T 10 -f benches/floors/pg_upsert.sql "$PG" 2>/dev/null |
            awk '/^tps/ { printf "%.0f alerts/s\n", $3 * 100 }'
    done
    psql -q "$PG" -c 'DROP SCHEMA floor_pg CASCADE'
fi
