#!/bin/sh
# Wait until RabbitMQ queue $1 holds fewer than $2 messages, printing its length each
# minute. Needs: curl; QUEUE_URL (the management API, e.g. http://rabbit:15672/api/queues/%2F)
# and QUEUE_PASSWORD (as a secret; user "opsbot").
set -eu
queue=$1
below=$2
: "${QUEUE_URL:?QUEUE_URL must be set}"
i=0
while :; do
  n=$(curl -fsS -u "opsbot:${QUEUE_PASSWORD:-}" "$QUEUE_URL/$queue" | sed -n 's/.*"messages":\([0-9]*\).*/\1/p')
  [ -n "$n" ] || { echo "cannot read the length of $queue" >&2; exit 1; }
  if [ "$n" -lt "$below" ]; then echo "$queue: $n messages (under $below)"; exit 0; fi
  [ $((i % 12)) -eq 0 ] && echo "$queue: $n messages"
  i=$((i + 1))
  sleep 5
done
