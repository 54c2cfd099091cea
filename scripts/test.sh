#!/usr/bin/env bash
# Usage: scripts/test.sh   (from any directory)
#   The single test command: installs missing packages, builds (RelWithDebInfo, in build/),
#   starts 3 MariaDB shards on ports 33161-33163 (state in $SEIGO_STATE_DIR, default
#   /tmp/seigo-test-servers) and 2 Redis instances on ports 36379-36380 (state in
#   $SEIGO_REDIS_DIR, default /tmp/seigo-test-redis), runs ctest against them, stops the
#   servers on exit. Tests get SEIGO_TEST_REDIS (Redis URLs) and SEIGO_REDIS_SCRIPT too.
#   A RabbitMQ broker on port 5682 (state in $SEIGO_RABBITMQ_DIR, default
#   /tmp/seigo-test-rabbitmq): tests get SEIGO_TEST_AMQP (its URL) and SEIGO_RABBITMQ_SCRIPT.
#   Tests get SEIGO_TEST_SHARDS (shard URLs), SEIGO_SERVERS_SCRIPT and SEIGO_STATE_DIR
#   (to kill/restart shards with "$SEIGO_SERVERS_SCRIPT" crash I, etc.).
#   Exit status: ctest's.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export SEIGO_STATE_DIR=${SEIGO_STATE_DIR:-/tmp/seigo-test-servers}
export SEIGO_SERVERS_SCRIPT=$ROOT/scripts/servers.sh
export SEIGO_REDIS_DIR=${SEIGO_REDIS_DIR:-/tmp/seigo-test-redis}
export SEIGO_REDIS_SCRIPT=$ROOT/scripts/redis.sh
export SEIGO_RABBITMQ_DIR=${SEIGO_RABBITMQ_DIR:-/tmp/seigo-test-rabbitmq}
export SEIGO_RABBITMQ_SCRIPT=$ROOT/scripts/rabbitmq.sh

# phase NAME CMD...: runs CMD and prints how long it took.
phase() {
  local name=$1 t0=${EPOCHREALTIME//[.,]/} rc=0 us
  shift
  echo "=== $name"
  "$@" || rc=$?
  us=$((${EPOCHREALTIME//[.,]/} - t0))
  printf '=== %s: %d.%d s%s\n' "$name" $((us / 1000000)) $((us / 100000 % 10)) \
    "$( ((rc == 0)) || echo ", FAILED (exit $rc)")"
  return "$rc"
}

configure_and_build() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build -j2
}

phase "install dependencies" bash scripts/install-deps.sh
phase "configure and build" configure_and_build
phase "reserve server ports" bash scripts/reserve-ports.sh
trap 'phase "stop servers" bash "$SEIGO_SERVERS_SCRIPT" stop || true
      phase "stop redis" bash "$SEIGO_REDIS_SCRIPT" stop || true
      phase "stop rabbitmq" bash "$SEIGO_RABBITMQ_SCRIPT" stop || true' EXIT
# A fresh data directory every run: leftovers of an earlier failed run must not leak in.
phase "wipe old servers" bash "$SEIGO_SERVERS_SCRIPT" wipe
phase "start servers" bash "$SEIGO_SERVERS_SCRIPT" start 3 --base-port 33161
phase "wipe old redis" bash "$SEIGO_REDIS_SCRIPT" wipe
phase "start redis" bash "$SEIGO_REDIS_SCRIPT" start 2 --base-port 36379
phase "wipe old rabbitmq" bash "$SEIGO_RABBITMQ_SCRIPT" wipe
phase "start rabbitmq" bash "$SEIGO_RABBITMQ_SCRIPT" start --port 5682

# shellcheck disable=SC1091
. "$SEIGO_STATE_DIR/env"
export SEIGO_TEST_SHARDS=$SEIGO_SHARDS
echo "SEIGO_TEST_SHARDS=$SEIGO_TEST_SHARDS"
# shellcheck disable=SC1091
. "$SEIGO_REDIS_DIR/env"
export SEIGO_TEST_REDIS=$SEIGO_REDIS
echo "SEIGO_TEST_REDIS=$SEIGO_TEST_REDIS"
# shellcheck disable=SC1091
. "$SEIGO_RABBITMQ_DIR/env"
export SEIGO_TEST_AMQP=$SEIGO_AMQP
echo "SEIGO_TEST_AMQP=${SEIGO_TEST_AMQP/:seigo-secret@/:***@}"

rc=0
phase "ctest" ctest --test-dir build --output-on-failure || rc=$?
exit "$rc"
