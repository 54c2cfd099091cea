#!/usr/bin/env bash
# Usage: crashmatrix/repro-owner-id-reuse.sh [--seigo PATH] [--tries N] [--out DIR]
#   Reproduces a liveness stall found by the crash matrix's dst cell (crashmatrix/results/
#   owner-id-reuse-2026-12-01.md): on FRESH shards (small server thread ids), `seigo demo run`
#   (8 clients, 4 s); 2.6 s in, kill -9 of shard 0 and an immediate restart (0.4 s down).
#   A branch prepared on shard 0 within ~2 s before the kill has a marker naming its owner
#   thread id of the old server incarnation; the restarted server hands the same small ids to
#   the demo's new connections, SameIncarnation() (marker created >= server start - 2 s) says
#   "this incarnation", and CheckOwner answers Busy ("the connection that owns the branch
#   (server thread N) is still open") for as long as that unrelated connection lives: the
#   decided branch stays prepared, holds its row locks, trades on those rows give up, until the
#   demo exits (then `seigo recover` commits it at once).
#   Each try: `seigo recover` once a second while the demo runs (recover.out). Exit 0 if some
#   try showed a decided transaction Busy on a reused owner id for >= 5 s, 1 if none did.
#   Uses the crash matrix's servers (state dir /tmp/seigo-crashmatrix, ports 33461-33462,
#   wiped) and its lock file; never the test servers (33161+).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEIGO=$ROOT/build/seigo TRIES=5 OUT=$ROOT/build/repro-owner-id-reuse
while (($#)); do
  case $1 in
    --seigo) SEIGO=$2; shift 2 ;;
    --tries) TRIES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) sed -n '2,18s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
  esac
done
for v in $(env | sed -n 's/^\(SEIGO_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export SEIGO_STATE_DIR=/tmp/seigo-crashmatrix
S=mysql://seigo:seigo@127.0.0.1:33461/seigo,mysql://seigo:seigo@127.0.0.1:33462/seigo
servers() { bash "$ROOT/scripts/servers.sh" "$@" 9>&- >/dev/null; }
exec 9>/tmp/seigo-crashmatrix.lock
flock 9
trap 'servers stop || true' EXIT
found=0
for t in $(seq 1 "$TRIES"); do
  d=$OUT/try-$t
  rm -rf "$d"; mkdir -p "$d"
  servers wipe; servers start 2 --base-port 33461
  "$SEIGO" demo setup --shards $S --players 1000 --txn-timeout-ms 1000 >/dev/null 9>&-
  "$SEIGO" demo run --shards $S --clients 8 --seconds 4 --txn-timeout-ms 1000 >"$d/demo.out" 2>&1 9>&- &
  demo=$!
  sleep 2.6; servers kill 0; sleep 0.4; servers restart 0
  for k in $(seq 1 15); do
    sleep 1
    kill -0 $demo 2>/dev/null || break
    { echo "--- +${k}s after the restart"
      "$SEIGO" recover --shards $S --txn-timeout-ms 1000 9>&- || true; } >>"$d/recover.out" 2>&1
  done
  wait $demo || true
  # A gid Busy on "is still open" in 5 or more consecutive passes (>= 5 s past its deadline).
  stuck=$(grep -o '^[0-9a-f]\{32\} .*decided [a-z]*; .*Busy: the connection that owns the branch (server thread [0-9]*) is still open' \
            "$d/recover.out" 2>/dev/null | awk '{print $1}' | sort | uniq -c | awk '$1 >= 5' | wc -l || true)
  echo "try $t: $(tail -n 1 "$d/demo.out" | cut -c1-90); decided transactions Busy on a reused owner id for >= 5 s: $stuck"
  ((stuck > 0)) && found=1 && break
done
((found)) && echo "reproduced: see $d/recover.out" || echo "not reproduced in $TRIES tries"
((found))
