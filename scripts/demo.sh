#!/usr/bin/env bash
# Usage: scripts/demo.sh [SECONDS]   (from any directory; default 12 s per mode)
#   The README's demo command: installs what is missing, builds, starts 2 MariaDB shards
#   (ports 33261-33262, state in $SEIGO_STATE_DIR, default /tmp/seigo-demo-servers), then runs
#   the trade demo twice — naive mode (two local transactions per trade) and seigo mode — each
#   time killing shard 1 with kill -9 a third of the way in and restarting it 2 s later. After
#   each run: `seigo recover`, then `seigo demo audit`. Prints both audits side by side.
#   Then the raid demo (stamina on the shards, boss HP in Redis; 2 Redis instances on ports
#   36579-36580, state in $SEIGO_REDIS_DIR, default /tmp/seigo-demo-redis), again naive and
#   seigo, each time killing Redis instance 0 and shard 1 with kill -9 mid-run and restarting
#   them, and prints both raid audits side by side.
#   Then the gacha demo (gold and grants on the shards, one event per pull through RabbitMQ;
#   a broker on port 5692, state in $SEIGO_RABBITMQ_DIR, default /tmp/seigo-demo-rabbitmq),
#   naive and seigo: the application (`demo gacha run`) and the collection service (`demo gacha
#   consume`) run as separate processes; the consumer, the broker and the application are each
#   killed with kill -9 mid-run and restarted; then the consumer drains the queue and both
#   gacha audits are printed side by side. Stops the servers.
#   Exit status: 0 if all three of seigo's audits passed, 1 if one did not.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER_MODE=${1:-12}
export SEIGO_STATE_DIR=${SEIGO_STATE_DIR:-/tmp/seigo-demo-servers}
export SEIGO_REDIS_DIR=${SEIGO_REDIS_DIR:-/tmp/seigo-demo-redis}
export SEIGO_RABBITMQ_DIR=${SEIGO_RABBITMQ_DIR:-/tmp/seigo-demo-rabbitmq}
SERVERS=$PWD/scripts/servers.sh
REDIS=$PWD/scripts/redis.sh
RABBITMQ=$PWD/scripts/rabbitmq.sh
SEIGO=$PWD/build/seigo

bash scripts/install-deps.sh
bash scripts/reserve-ports.sh
echo "=== build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 --target seigo_cli >/dev/null
echo "=== start 2 MariaDB shards"
bash "$SERVERS" wipe >/dev/null
trap 'bash "$SERVERS" stop >/dev/null 2>&1 || true; bash "$REDIS" stop >/dev/null 2>&1 || true
      bash "$RABBITMQ" stop >/dev/null 2>&1 || true' EXIT
bash "$SERVERS" start 2 --base-port 33261 | tail -1
echo "=== start 2 Redis instances"
bash "$REDIS" wipe >/dev/null
bash "$REDIS" start 2 --base-port 36579 | tail -1
echo "=== start a RabbitMQ broker"
bash "$RABBITMQ" wipe >/dev/null
bash "$RABBITMQ" start --port 5692 | tail -1
# shellcheck disable=SC1091
. "$SEIGO_RABBITMQ_DIR/env"
# shellcheck disable=SC1091
. "$SEIGO_STATE_DIR/env"
# shellcheck disable=SC1091
. "$SEIGO_REDIS_DIR/env"
export SEIGO_SHARDS SEIGO_REDIS SEIGO_AMQP

out=$(mktemp -d)
kill_at=$(( SECONDS_PER_MODE / 3 ))
for mode in naive seigo; do
  echo
  echo "=== $mode mode: 8 clients for ${SECONDS_PER_MODE}s; kill -9 shard 1 at ${kill_at}s, restart 2s later"
  "$SEIGO" demo setup --players 1000
  ( sleep "$kill_at"; echo ">>> kill -9 shard 1" >&2; bash "$SERVERS" kill 1 >/dev/null
    sleep 2; bash "$SERVERS" restart 1 >/dev/null; echo ">>> shard 1 restarted" >&2 ) &
  "$SEIGO" demo run --clients 8 --seconds "$SECONDS_PER_MODE" --mode "$mode" | tee "$out/$mode.run"
  wait
  echo "--- seigo recover"
  "$SEIGO" recover || true
  "$SEIGO" demo audit >"$out/$mode.audit" 2>&1 && echo 0 >"$out/$mode.rc" || echo $? >"$out/$mode.rc"
done

echo
echo "=== audits side by side"
printf '%-60s | %s\n' "NAIVE (two local transactions)" "SEIGO (one atomic transaction)"
printf '%-60s-+-%s\n' "$(printf -- '-%.0s' {1..60})" "$(printf -- '-%.0s' {1..60})"
paste -d'\t' <(cut -c1-60 "$out/naive.audit") <(cut -c1-60 "$out/seigo.audit") |
  awk -F'\t' '{ printf "%-60s | %s\n", $1, $2 }'
echo
echo "naive: $(cat "$out/naive.run")"
echo "seigo: $(cat "$out/seigo.run")"

redis_kill_at=$(( SECONDS_PER_MODE / 4 ))
shard_kill_at=$(( SECONDS_PER_MODE / 2 ))
for mode in naive seigo; do
  echo
  echo "=== raid, $mode mode: 8 clients for ${SECONDS_PER_MODE}s, 3 bosses; kill -9 Redis 0 at" \
       "${redis_kill_at}s and shard 1 at ${shard_kill_at}s, each restarted 1s later"
  "$SEIGO" demo raid setup --players 1000 --bosses 3
  ( sleep "$redis_kill_at"; echo ">>> kill -9 redis 0" >&2; bash "$REDIS" kill 0 >/dev/null
    sleep 1; bash "$REDIS" restart 0 >/dev/null; echo ">>> redis 0 restarted" >&2
    sleep $(( shard_kill_at - redis_kill_at - 1 )); echo ">>> kill -9 shard 1" >&2
    bash "$SERVERS" kill 1 >/dev/null; sleep 1; bash "$SERVERS" restart 1 >/dev/null
    echo ">>> shard 1 restarted" >&2 ) &
  "$SEIGO" demo raid run --clients 8 --seconds "$SECONDS_PER_MODE" --mode "$mode" |
    tee "$out/raid-$mode.run"
  wait
  "$SEIGO" demo raid audit >"$out/raid-$mode.audit" 2>&1 && echo 0 >"$out/raid-$mode.rc" ||
    echo $? >"$out/raid-$mode.rc"
done
echo
echo "=== raid audits side by side"
printf '%-60s | %s\n' "NAIVE (stamina, then HP)" "SEIGO (one atomic transaction)"
printf '%-60s-+-%s\n' "$(printf -- '-%.0s' {1..60})" "$(printf -- '-%.0s' {1..60})"
paste -d'\t' <(cut -c1-60 "$out/raid-naive.audit") <(cut -c1-60 "$out/raid-seigo.audit") |
  awk -F'\t' '{ printf "%-60s | %s\n", $1, $2 }'
echo
echo "naive: $(cat "$out/raid-naive.run")"
echo "seigo: $(cat "$out/raid-seigo.run")"

q=$(( SECONDS_PER_MODE / 4 ))
for mode in naive seigo; do
  echo
  echo "=== gacha, $mode mode: 8 clients for ${SECONDS_PER_MODE}s; kill -9 the consumer at ${q}s," \
       "the broker at $(( 2 * q ))s, the application at $(( 3 * q ))s; each restarted"
  "$SEIGO" demo gacha setup --players 1000
  "$SEIGO" demo gacha consume --mode "$mode" >"$out/gacha-$mode.consume1" 2>&1 &
  consumer=$!
  "$SEIGO" demo gacha run --clients 8 --seconds $(( 3 * q )) --mode "$mode" \
    >"$out/gacha-$mode.run1" 2>&1 &
  app=$!
  sleep "$q"; echo ">>> kill -9 the consumer" >&2; kill -9 "$consumer" 2>/dev/null || true
  "$SEIGO" demo gacha consume --mode "$mode" >"$out/gacha-$mode.consume2" 2>&1 &
  consumer=$!
  echo ">>> consumer restarted" >&2
  sleep "$q"; echo ">>> kill -9 the broker" >&2; bash "$RABBITMQ" kill >/dev/null
  bash "$RABBITMQ" restart >/dev/null; echo ">>> broker restarted" >&2
  sleep 1; echo ">>> kill -9 the application" >&2; kill -9 "$app" 2>/dev/null || true
  "$SEIGO" demo gacha run --clients 8 --seconds "$q" --mode "$mode" >"$out/gacha-$mode.run2" 2>&1
  echo ">>> application restarted and finished" >&2
  kill -TERM "$consumer" 2>/dev/null || true; wait "$consumer" 2>/dev/null || true
  echo "--- drain: consume until 5 s without an event and every outbox is empty"
  "$SEIGO" demo gacha consume --mode "$mode" --idle-exit 5 | tee "$out/gacha-$mode.drain"
  "$SEIGO" demo gacha audit >"$out/gacha-$mode.audit" 2>&1 && echo 0 >"$out/gacha-$mode.rc" ||
    echo $? >"$out/gacha-$mode.rc"
  wait 2>/dev/null || true
done
echo
echo "=== gacha audits side by side"
printf '%-60s | %s\n' "NAIVE (commit, then publish; auto-ack)" "SEIGO (outbox + inbox)"
printf '%-60s-+-%s\n' "$(printf -- '-%.0s' {1..60})" "$(printf -- '-%.0s' {1..60})"
paste -d'\t' <(sed 's/^  //' "$out/gacha-naive.audit" | cut -c1-60) \
  <(sed 's/^  //' "$out/gacha-seigo.audit" | cut -c1-60) |
  awk -F'\t' '{ printf "%-60s | %s\n", $1, $2 }'
echo
for mode in naive seigo; do
  echo "$mode: $(tail -1 "$out/gacha-$mode.run2" 2>/dev/null)"
done

rc=0
if [ "$(cat "$out/gacha-seigo.rc")" = 0 ]; then
  echo "seigo's gacha audit passed with the consumer, the broker and the application killed mid-run."
else
  echo "seigo's gacha audit FAILED: this is a bug, please report it with the output above." >&2
  rc=1
fi
if [ "$(cat "$out/seigo.rc")" = 0 ]; then
  echo "seigo's trade audit passed with a shard killed mid-run."
else
  echo "seigo's trade audit FAILED: this is a bug, please report it with the output above." >&2
  rc=1
fi
if [ "$(cat "$out/raid-seigo.rc")" = 0 ]; then
  echo "seigo's raid audit passed with a Redis instance and a shard killed mid-run."
else
  echo "seigo's raid audit FAILED: this is a bug, please report it with the output above." >&2
  rc=1
fi
exit "$rc"
