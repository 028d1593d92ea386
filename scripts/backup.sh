#!/bin/sh
# Take a custom-format pg_dump of database $1 into $BACKUP_DIR and print its size.
# Needs: pg_dump; PGHOST, PGUSER, BACKUP_DIR (and PGPASSWORD, passed by opsbot as a secret).
set -eu
db=$1
: "${BACKUP_DIR:?BACKUP_DIR must be set}"
file="$BACKUP_DIR/$db-$(date -u +%Y%m%dT%H%M%SZ).dump"
pg_dump -Fc -d "$db" -f "$file.partial"
mv "$file.partial" "$file"
ls -l "$file"
