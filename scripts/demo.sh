#!/usr/bin/env bash
# Usage: scripts/demo.sh [SECONDS]   (from any directory; default 12 s per mode)
#   The README's demo command: installs what is missing, builds, starts 2 MariaDB shards
#   (ports 33261-33262, state in $SEIGO_STATE_DIR, default /tmp/seigo-demo-servers), then runs
#   the trade demo twice — naive mode (two local transactions per trade) and seigo mode — each
#   time killing shard 1 with kill -9 a third of the way in and restarting it 2 s later. After
#   each run: `seigo recover`, then `seigo demo audit`. Prints both audits side by side and stops
#   the servers. Exit status: 0 if seigo's audit passed, 1 if it did not.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER_MODE=${1:-12}
export SEIGO_STATE_DIR=${SEIGO_STATE_DIR:-/tmp/seigo-demo-servers}
SERVERS=$PWD/scripts/servers.sh
SEIGO=$PWD/build/seigo

bash scripts/install-deps.sh
echo "=== build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 --target seigo_cli >/dev/null
echo "=== start 2 MariaDB shards"
bash "$SERVERS" wipe >/dev/null
trap 'bash "$SERVERS" stop >/dev/null 2>&1 || true' EXIT
bash "$SERVERS" start 2 --base-port 33261 | tail -1
# shellcheck disable=SC1091
. "$SEIGO_STATE_DIR/env"
export SEIGO_SHARDS

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
if [ "$(cat "$out/seigo.rc")" = 0 ]; then
  echo "seigo's audit passed with a shard killed mid-run."
  exit 0
fi
echo "seigo's audit FAILED: this is a bug, please report it with the output above." >&2
exit 1
