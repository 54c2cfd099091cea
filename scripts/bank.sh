#!/usr/bin/env bash
# Usage: scripts/bank.sh [SECONDS]   (default 120)
#   The long run of the bank test (doc/isolation.md, TESTING.md "Bank test"): installs what is
#   missing, builds, starts 3 MariaDB shards of its own (ports 33661-33663, state dir
#   /tmp/seigo-bank-servers), runs BankTest.* for SECONDS with its faults (a coordinator process
#   killed with SIGKILL, a shard killed with kill -9 and restarted), prints the counts, stops the
#   servers. Exit status: the test's (0 = every invariant held and the negative control caught
#   fractured plain reads).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_ARG=${1:-120}
[[ $SECONDS_ARG =~ ^[0-9]+$ ]] || { echo "bank.sh: SECONDS must be a whole number" >&2; exit 2; }
export SEIGO_STATE_DIR=/tmp/seigo-bank-servers
export SEIGO_SERVERS_SCRIPT=$PWD/scripts/servers.sh
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 --target mariadb_tests >/dev/null
bash "$SEIGO_SERVERS_SCRIPT" wipe >/dev/null
trap 'bash "$SEIGO_SERVERS_SCRIPT" stop >/dev/null 2>&1 || true' EXIT
bash "$SEIGO_SERVERS_SCRIPT" start 3 --base-port 33661 | tail -1
# shellcheck disable=SC1091
. "$SEIGO_STATE_DIR/env"
export SEIGO_TEST_SHARDS=$SEIGO_SHARDS SEIGO_BANK_SECONDS=$SECONDS_ARG
build/tests/mariadb_tests --gtest_filter='BankTest.*'
