#!/bin/sh
# Restore database $1 from $BACKUP_DIR/$2.dump (a dump taken by backup.sh), replacing what
# is there. Needs: pg_restore; PGHOST, PGUSER, BACKUP_DIR (and PGPASSWORD, as a secret).
set -eu
db=$1
id=$2
: "${BACKUP_DIR:?BACKUP_DIR must be set}"
file="$BACKUP_DIR/$id.dump"
case "$id" in
  "$db"-*) ;;
  *) echo "backup $id is not a backup of $db" >&2; exit 2 ;;
esac
[ -f "$file" ] || { echo "no backup $id in $BACKUP_DIR" >&2; exit 2; }
pg_restore --clean --if-exists --no-owner --single-transaction -d "$db" "$file"
echo "restored $db from $id"
