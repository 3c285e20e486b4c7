#!/usr/bin/env bash
# Table size while the relay drains a backlog, and after: fills a schema's
# events table with N rows in one INSERT, runs `outbox relay` on it with the
# given extra arguments, and every 3 s prints
#   seconds|rows|heap bytes|heap+index bytes|dead rows|vacuums|pub:rows|heap|heap+index
# for the events table and the published log, until both are empty and HOLD
# seconds (default 15) have passed. PostgreSQL only.
#
#   crates/outbox-bench/table-size.sh SCHEMA N [relay args...]
#   crates/outbox-bench/table-size.sh ts 1000000 --keep-published 60s
#
# With REFILL=1 the schema is kept and filled again, to see whether space is
# reused. OUTBOX (default target/debug/outbox) and DATABASE_URL (default the
# test database) choose the binary and the server.
set -euo pipefail
schema=$1 n=$2
shift 2
outbox=${OUTBOX:-target/debug/outbox}
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
sql() { psql "$url" -Atq -c "$1"; }

if [ -z "${REFILL:-}" ]; then
  sql "DROP SCHEMA IF EXISTS $schema CASCADE"
fi
"$outbox" migrate --database-url "$url" --schema "$schema"
echo "before the fill: $(sql "SELECT pg_relation_size('$schema.events'), pg_total_relation_size('$schema.events')")"
started=$(date +%s)
sql "INSERT INTO $schema.events (stream, key, event_type, payload)
     SELECT 'orders', 'k' || (g % 1000), 'order.created',
            convert_to('{\"n\": ' || g || ', \"note\": \"' || repeat('x', 80) || '\"}', 'UTF8')
     FROM generate_series(1, $n) AS g"
echo "filled in $(( $(date +%s) - started )) s"

"$outbox" relay --database-url "$url" --schema "$schema" --publisher stdout "$@" >/dev/null &
relay=$!
trap 'kill $relay 2>/dev/null || true' EXIT
started=$(date +%s) empty_since=0
while true; do
  events=$(sql "SELECT (SELECT count(*) FROM $schema.events),
                       pg_relation_size('$schema.events'), pg_total_relation_size('$schema.events'),
                       s.n_dead_tup, s.vacuum_count
                FROM pg_stat_user_tables s
                WHERE s.schemaname = '$schema' AND s.relname = 'events'")
  log=$(sql "SELECT count(*) || '|' || pg_relation_size('$schema.published') || '|'
                    || pg_total_relation_size('$schema.published') FROM $schema.published")
  echo "$(( $(date +%s) - started ))|$events|pub:$log"
  if [ "${events%%|*}" = 0 ] && [ "${log%%|*}" = 0 ]; then
    [ "$empty_since" = 0 ] && empty_since=$(date +%s)
    [ $(( $(date +%s) - empty_since )) -ge "${HOLD:-15}" ] && break
  fi
  sleep 3
done
kill -INT $relay
wait $relay || true
echo "after: events $(sql "SELECT pg_relation_size('$schema.events'), pg_total_relation_size('$schema.events')"), published $(sql "SELECT pg_relation_size('$schema.published'), pg_total_relation_size('$schema.published')")"
