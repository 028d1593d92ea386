#!/bin/sh
# Delete database $1's dumps in $BACKUP_DIR older than $2 days, keeping the newest one
# whatever its age; print what was deleted.
set -eu
db=$1
days=$2
: "${BACKUP_DIR:?BACKUP_DIR must be set}"
newest=$(ls -1t "$BACKUP_DIR/$db-"*.dump 2>/dev/null | head -n 1 || true)
find "$BACKUP_DIR" -maxdepth 1 -name "$db-*.dump" -type f -mtime "+$days" | while read -r f; do
  if [ "$f" != "$newest" ]; then
    rm -f -- "$f"
    echo "deleted $f"
  fi
done
echo "kept $(ls -1 "$BACKUP_DIR/$db-"*.dump 2>/dev/null | wc -l) backup(s) of $db"
