#!/usr/bin/env bash
# tests/gdb_hold.sh - holds one mariadbd server thread at the start of its connection teardown,
# for the limbo-branch tests (tests/limbo_test.cc, doc/limbo-branch.md).
#
# Usage: tests/gdb_hold.sh [--wait-arm] [--connection ID] PID DIR [TIMEOUT_S]
#
#   Attaches gdb in non-stop mode (only the thread that hits the breakpoint stops; the rest of
#   the server keeps serving) to the mariadbd with process id PID and sets a one-shot
#   breakpoint on ha_close_connection (THD::free_connection if the binary has no such symbol).
#   The next connection whose server thread is torn down stops there: after the XID of its
#   prepared XA branch was made available to other connections, and before InnoDB detached
#   the transaction from the thread.
#
#   --connection ID: only the thread of connection ID (CONNECTION_ID(), PROCESSLIST.ID) stops;
#   other connections that close meanwhile pass (the breakpoint's condition reads the THD's
#   thread id at the offset that the exported thd_get_thread_id() uses; x86-64 only, else the
#   breakpoint stops the first thread whatever its connection, and the log says so).
#
#   Attaching stops every thread of the server for a moment (about 0.5 s, more on a loaded
#   machine); setting the breakpoint afterwards does not. With --wait-arm the script attaches,
#   resumes the server, creates DIR/attached, and sets the breakpoint only once the caller
#   creates DIR/arm: the caller can then prepare its state after the pause.
#
#   Files in DIR (which must exist):
#     attached gdb is attached and every server thread runs again
#     arm      created by the caller (--wait-arm only): set the breakpoint now; a number in
#              it is the connection id to stop (as --connection)
#     armed    the breakpoint is set (contains the symbol); the server runs
#     hit      a server thread stopped at the breakpoint; it stays stopped until release
#     release  created by the caller: let the thread go (gdb deletes the breakpoint, detaches
#              and quits)
#     error    why the script gave up (no gdb, attach refused, no symbol, gdb died, ...)
#     done     created last, once gdb is gone (detached); contains the exit status
#     gdb.log  gdb's output; gdb.pid its process id
#
#   gdb ALWAYS detaches before the script ends: on "release", TIMEOUT_S seconds (default 30)
#   after the start, on SIGTERM/SIGINT/SIGHUP, on any error. If the script itself is killed with
#   SIGKILL, gdb reads EOF on its command pipe and detaches and quits on its own.
#
# Exit status: 0 released by the caller, 1 error (see DIR/error), 2 released by the timeout.
set -uo pipefail

WAIT_ARM=0
CONN=""
while (($#)); do
  case $1 in
    --wait-arm) WAIT_ARM=1; shift ;;
    --connection) CONN=${2:-}; shift 2 || shift ;;
    *) break ;;
  esac
done
PID=${1:-}
DIR=${2:-}
TIMEOUT_S=${3:-30}
GDB_PID=""
RC=1
STATE=starting  # starting -> attached -> done

log() { echo "gdb_hold: $*"; }
fail() {
  log "error: $*"
  echo "$*" >"$DIR/error"
  exit 1
}

# Sends commands to gdb (one a line) through its pipe.
gdb_cmd() { printf '%s\n' "$@" 2>/dev/null >&8; }
# The last block of gdb.log that starts with the line @@$1.
# gdb prefixes its output with prompts ("(gdb) " per command read, ">" per line of a
# `commands` list): strip them.
last_block() {
  awk -v m="@@$1" '{ l = $0; while (sub(/^(\(gdb\) ?|>)/, "", l)) {} }
                   l == m { buf = ""; found = 1; next }
                   found { buf = buf l "\n" }
                   END { printf "%s", buf }' "$DIR/gdb.log"
}

# Waits for file $1 for at most $2 seconds; fails early if gdb exits.
wait_file() {
  local end=$((SECONDS + $2))
  while [[ ! -e $1 ]]; do
    if [[ -n $GDB_PID ]] && ! kill -0 "$GDB_PID" 2>/dev/null; then return 2; fi
    ((SECONDS < end)) || return 1
    sleep 0.05
  done
}

# A marker round trip: gdb runs "shell touch" only after every earlier command finished.
SYNC_N=0
gdb_sync() {  # $1 = timeout in seconds
  SYNC_N=$((SYNC_N + 1))
  gdb_cmd "shell touch $DIR/.sync$SYNC_N"
  wait_file "$DIR/.sync$SYNC_N" "$1"
}

finish() {
  local rc=$RC st
  trap '' TERM INT HUP
  if [[ -n $GDB_PID ]]; then
    # Whatever happened: remove the breakpoint (a breakpoint left in a process that is no
    # longer traced would kill mariadbd with SIGTRAP), detach (resumes the held thread), quit.
    gdb_cmd 'delete' 'detach' 'quit'
    exec 8>&-  # EOF: if gdb did not read the commands above, it detaches and quits at EOF
    st=0
    for _ in $(seq 200); do kill -0 "$GDB_PID" 2>/dev/null || { st=1; break; }; sleep 0.05; done
    if ((st == 0)); then
      # gdb is stuck (very unusual): SIGTERM makes it detach as well.
      log "gdb did not quit within 10 s; sending SIGTERM to gdb $GDB_PID"
      kill -TERM "$GDB_PID" 2>/dev/null
      for _ in $(seq 100); do kill -0 "$GDB_PID" 2>/dev/null || break; sleep 0.05; done
    fi
    wait "$GDB_PID" 2>/dev/null
    if [[ $STATE == attached ]] && kill -0 "$PID" 2>/dev/null && grep -q "^State:.*t (tracing stop)" \
        "/proc/$PID/status" 2>/dev/null; then
      log "warning: mariadbd $PID still looks traced after gdb exited"
    fi
  fi
  rm -f "$DIR"/.sync* "$DIR/gdb.in"
  echo "$rc" >"$DIR/done"
  log "done (exit $rc)"
  exit "$rc"
}
trap finish EXIT
trap '' PIPE  # a write to the pipe of a dead gdb must fail, not kill this script
trap 'log "signal: releasing"; RC=1; exit 1' TERM INT HUP

[[ -n $DIR && -d $DIR ]] || { echo "usage: $0 [--wait-arm] PID DIR [TIMEOUT_S] (DIR must exist)" >&2; DIR=/tmp; exit 1; }
[[ $PID =~ ^[0-9]+$ ]] || fail "bad pid '$PID'"
[[ $TIMEOUT_S =~ ^[0-9]+$ ]] || fail "bad timeout '$TIMEOUT_S'"
[[ -z $CONN || $CONN =~ ^[0-9]+$ ]] || fail "bad connection id '$CONN'"
DEADLINE=$((SECONDS + TIMEOUT_S))
command -v gdb >/dev/null 2>&1 || fail "gdb is not installed (scripts/install-deps.sh installs it)"
kill -0 "$PID" 2>/dev/null || fail "no process $PID"
[[ $(cat "/proc/$PID/comm" 2>/dev/null) == mariadbd ]] ||
  fail "process $PID is '$(cat "/proc/$PID/comm" 2>/dev/null)', not mariadbd"

# gdb reads commands from a fifo, so this script decides when the held thread goes on.
# `set non-stop on` must come before the attach.
rm -f "$DIR/gdb.in" "$DIR"/.sync* "$DIR/attached" "$DIR/armed" "$DIR/hit" "$DIR/error" "$DIR/done"
mkfifo "$DIR/gdb.in" || fail "mkfifo $DIR/gdb.in failed"
cat >"$DIR/gdb.init" <<EOF
set pagination off
set confirm off
set width 0
set non-stop on
set print thread-events off
set print inferior-events off
set breakpoint pending off
attach $PID
EOF
gdb -q -nx -x "$DIR/gdb.init" <"$DIR/gdb.in" >"$DIR/gdb.log" 2>&1 &
GDB_PID=$!
echo "$GDB_PID" >"$DIR/gdb.pid"
exec 8>"$DIR/gdb.in"
log "gdb $GDB_PID attaching to mariadbd $PID"

# 1. Attached? (attach runs from the init file; the sync waits for it, loading symbols included.)
gdb_cmd 'info inferiors'
gdb_sync 60 || fail "gdb did not finish attaching within 60 s (or died); gdb.log: $(tail -5 "$DIR/gdb.log")"
if grep -qiE 'ptrace:|Operation not permitted|Could not attach|Unable to attach|No such process' \
    "$DIR/gdb.log" || ! grep -qE "process $PID\b" "$DIR/gdb.log"; then
  fail "gdb could not attach to mariadbd $PID (is ptrace allowed? CAP_SYS_PTRACE, kernel.yama.ptrace_scope, seccomp); gdb.log: $(grep -iE 'ptrace|attach|permit' "$DIR/gdb.log" | head -3)"
fi
STATE=attached

# 2. Which symbol. ha_close_connection is exported by Debian's stripped mariadbd; both are
#    entered after the XID was detached and the thread left PROCESSLIST (doc/limbo-branch.md).
BP=""
for sym in ha_close_connection 'THD::free_connection'; do
  gdb_cmd "echo @@probe $sym\\n" "info address $sym"
  gdb_sync 20 || fail "gdb stopped answering (symbol lookup)"
  if last_block "probe $sym" | grep -q "is at 0x"; then BP=$sym; break; fi
done
[[ -n $BP ]] || fail "neither ha_close_connection nor THD::free_connection is a symbol of mariadbd $PID"

# Where THD keeps the connection id: thd_get_thread_id(thd) is `mov OFFSET(%rdi),%rax; ret`.
# Both breakpoint symbols take the THD in %rdi (the first argument, `this`), which their first
# instructions (where gdb puts the breakpoint) do not change.
TID_OFFSET=""
if [[ $(uname -m) == x86_64 ]]; then
  gdb_cmd 'echo @@tid\n' 'x/2i thd_get_thread_id'
  gdb_sync 20 || fail "gdb stopped answering (thd_get_thread_id)"
  TID_OFFSET=$(last_block tid | sed -nE 's/.*<thd_get_thread_id>:[[:space:]]+mov[[:space:]]+(0x[0-9a-f]+)\(%rdi\),%rax.*/\1/p' | head -1)
fi

# 3. Resume every thread. In non-stop mode the attach stops them all; `continue -a &` resumes
#    them in the background. Repeat until `info threads` lists no stopped thread.
running=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
  kill -0 "$PID" 2>/dev/null || fail "mariadbd $PID exited while gdb was attaching (restarted by someone else?)"
  gdb_cmd 'continue -a &'
  gdb_sync 20 || fail "gdb stopped answering (continue)"
  sleep 0.2
  gdb_cmd 'echo @@threads\n' 'info threads'
  gdb_sync 20 || fail "gdb stopped answering (info threads)"
  threads=$(last_block threads | grep -E '^[* ] *[0-9]+ +Thread ')
  total=$(grep -c . <<<"$threads")
  stopped=$(grep -vc '(running)' <<<"$threads")
  if ((total > 0 && stopped == 0)); then running=1; break; fi
done
kill -0 "$PID" 2>/dev/null || fail "mariadbd $PID exited while gdb was attaching (restarted by someone else?)"
((running == 1)) || fail "mariadbd's threads do not all run under gdb; gdb.log: $(tail -5 "$DIR/gdb.log")"
touch "$DIR/attached"
log "attached; every server thread runs"

# Holds until $DIR/$1 appears; leaves (releasing) on "release", the timeout or gdb's death.
hold_until() {
  while [[ ! -e $DIR/$1 ]]; do
    if [[ -e $DIR/release ]]; then
      [[ -e $DIR/hit ]] && log "released after the hit" || log "released (no thread was held)"
      RC=0
      exit 0
    fi
    kill -0 "$GDB_PID" 2>/dev/null || fail "gdb exited; gdb.log: $(tail -5 "$DIR/gdb.log")"
    kill -0 "$PID" 2>/dev/null || fail "mariadbd $PID exited while gdb was attached (restarted by someone else?)"
    if ((SECONDS >= DEADLINE)); then
      log "timeout after ${TIMEOUT_S} s: releasing"
      RC=2
      exit 2
    fi
    sleep 0.05
  done
}
((WAIT_ARM == 0)) || hold_until arm
if ((WAIT_ARM == 1)); then
  c=$(tr -dc 0-9 <"$DIR/arm")
  [[ -n $c ]] && CONN=$c
fi
COND=""
if [[ -n $CONN ]]; then
  if [[ -n $TID_OFFSET ]]; then
    COND=" if *(unsigned long long *)(\$rdi + $TID_OFFSET) == $CONN"
  else
    log "warning: cannot tell connections apart in gdb here: the first thread that closes stops"
  fi
fi

# 4. The breakpoint: one-shot (it deletes itself), tells us through $DIR/hit.
gdb_cmd "break $BP$COND" \
        'commands' \
        '  silent' \
        '  printf "@@hit server thread %d stopped at the breakpoint\n", $_thread' \
        '  bt 4' \
        '  delete' \
        "  shell touch $DIR/hit" \
        'end' \
        'echo @@breakpoints\n' 'info breakpoints'
gdb_sync 20 || fail "gdb stopped answering (break)"
last_block breakpoints | grep -qE '^[0-9]+ +breakpoint +keep +y' ||
  fail "could not set the breakpoint on $BP; gdb.log: $(tail -5 "$DIR/gdb.log")"
echo "$BP${COND:+ (connection $CONN)}" >"$DIR/armed"
log "armed: breakpoint on $BP$COND"

# 5. Hold until released, the timeout, or gdb's death.
hold_until release
[[ -e $DIR/hit ]] && log "released after the hit" || log "released (no thread was held)"
RC=0
exit 0
