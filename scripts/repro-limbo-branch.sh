#!/usr/bin/env bash
# repro-limbo-branch.sh - standalone reproduction of the MariaDB 10.11 "limbo branch" race.
#
# Usage: scripts/repro-limbo-branch.sh        (as root; Debian 12 with apt)
#
# When a client disconnects while it owns a PREPARED XA branch, the server makes the XID
# available to other connections (THD::cleanup -> trans_xa_detach) before InnoDB has turned
# the transaction into a "recovered" prepared transaction (THD::free_connection ->
# ha_close_connection -> innobase_close_connection). An XA COMMIT by XID from another
# connection in that window is binlogged and answered with OK, but InnoDB commits nothing:
# the branch stays prepared, holds its row locks and is missing from XA RECOVER until the
# server restarts. See doc/limbo-branch.md.
#
# What the script does:
#   - installs mariadb-server, mariadb-client and gdb with apt-get if any is missing;
#   - starts its own mariadbd (temp datadir, 127.0.0.1:33191, binlog, durable settings);
#   - control run: prepare a branch, disconnect, wait until InnoDB has detached it,
#     XA COMMIT from another connection -> committed as expected;
#   - race run: prepare a branch on connection A, attach gdb (non-stop mode, only the
#     breakpoint thread stops) with a breakpoint on ha_close_connection, kill A's client,
#     run XA COMMIT from connection B while A's server thread is held at the breakpoint,
#     release it, then show the damage and that a restart brings the branch back.
# The last line is "REPRODUCED" (exit 0) or "NOT REPRODUCED" (exit 1). The server, gdb,
# the clients and the temp dir are always cleaned up. Takes about 5-10 s once the packages
# are installed.
set -euo pipefail

PORT=33191
BIN_MARIADBD=/usr/sbin/mariadbd
START_TS=$(date +%s.%N)
VERDICT_PRINTED=0
T=""
SERVER_PID=""
GDB_PID=""
A_PID=""

elapsed() { awk -v s="$START_TS" -v n="$(date +%s.%N)" 'BEGIN { printf "%5.1fs", n - s }'; }
step() { echo; echo "[$(elapsed)] == $*"; }
info() { echo "    $*"; }
indent() { sed 's/^/    | /'; }

cleanup() {
  local rc=$?
  set +e
  if [ -n "$A_PID" ] && kill -0 "$A_PID" 2>/dev/null; then kill -9 "$A_PID" 2>/dev/null; wait "$A_PID" 2>/dev/null; fi
  exec 8>&-   # gdb's command pipe: at EOF gdb detaches and quits
  exec 7>&-
  if [ -n "$GDB_PID" ] && kill -0 "$GDB_PID" 2>/dev/null; then
    for _ in $(seq 20); do kill -0 "$GDB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$GDB_PID" 2>/dev/null; wait "$GDB_PID" 2>/dev/null
  fi
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -9 "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null
  fi
  [ -n "$T" ] && rm -rf "$T"
  if [ "$VERDICT_PRINTED" = 0 ]; then
    echo
    echo "NOT REPRODUCED (the script stopped early, exit status $rc)"
    rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

die() { echo "ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
step "1. prerequisites"
[ "$(id -u)" = 0 ] || die "run as root (mariadbd runs as root here, gdb must attach to it)"
missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x "$BIN_MARIADBD" ] || missing+=(mariadb-server)
command -v mariadb-install-db >/dev/null 2>&1 || missing+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
command -v gdb >/dev/null 2>&1 || missing+=(gdb)
if [ "${#missing[@]}" -gt 0 ]; then
  info "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    mariadb-server mariadb-client gdb >/dev/null
fi
[ -x "$BIN_MARIADBD" ] || BIN_MARIADBD=$(command -v mariadbd)
info "$("$BIN_MARIADBD" --version)"
info "$(gdb --version | head -1)"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "127.0.0.1:$PORT is already in use"; fi

# The breakpoint: ha_close_connection is an exported symbol of Debian's stripped mariadbd
# and THD::free_connection calls it directly. THD::free_connection is the fallback: it is
# entered after the XID was detached and the thread left PROCESSLIST, and before
# ha_close_connection, so it is inside the same window.
BP=""
for sym in ha_close_connection 'THD::free_connection'; do
  if gdb -nx -batch -ex "info address $sym" "$BIN_MARIADBD" 2>/dev/null | grep -q 'is at 0x'; then
    BP=$sym; break
  fi
done
[ -n "$BP" ] || die "neither ha_close_connection nor THD::free_connection is a symbol of $BIN_MARIADBD"
info "breakpoint symbol: $BP ($(gdb -nx -batch -ex "info address $BP" "$BIN_MARIADBD" 2>/dev/null | tail -1))"

# ---------------------------------------------------------------------------------------
step "2. start a private mariadbd on 127.0.0.1:$PORT"
T=$(mktemp -d /tmp/repro-limbo.XXXXXX)
CNF=$T/my.cnf
cat >"$CNF" <<EOF
[mariadbd]
user=root
datadir=$T/data
socket=$T/mariadbd.sock
pid-file=$T/mariadbd.pid
port=$PORT
bind-address=127.0.0.1
log-error=$T/error.log
skip-name-resolve
innodb_flush_log_at_trx_commit=1
log_bin=$T/binlog
server_id=1
sync_binlog=1
binlog_format=ROW
innodb_lock_wait_timeout=1
innodb_buffer_pool_size=64M
[client]
host=127.0.0.1
port=$PORT
protocol=tcp
user=root
EOF
mariadb-install-db --defaults-file="$CNF" --auth-root-authentication-method=normal \
  --skip-test-db >"$T/install.log" 2>&1 || { cat "$T/install.log" >&2; die "mariadb-install-db failed"; }

sql() { mariadb --defaults-file="$CNF" --connect-timeout=5 -N -B "$@"; }
sqlt() { mariadb --defaults-file="$CNF" --connect-timeout=5 -t "$@"; }
try_sql() {  # run one statement on a new connection; print OK or the error line
  local out
  if out=$(sql -e "$1" 2>&1); then echo OK; else echo "$out" | grep -E '^ERROR' || echo "$out"; fi
}

start_server() {
  "$BIN_MARIADBD" --defaults-file="$CNF" >>"$T/mariadbd.stdout" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 300); do
    if sql -e 'SELECT 1' >/dev/null 2>&1; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$T/error.log" >&2
  die "mariadbd did not start"
}
start_server
info "mariadbd pid $SERVER_PID, $(sql -e 'SELECT CONCAT(VERSION(), " log_bin=", @@log_bin, " sync_binlog=", @@sync_binlog, " flush_log_at_trx_commit=", @@innodb_flush_log_at_trx_commit, " lock_wait_timeout=", @@innodb_lock_wait_timeout)')"
sql -e "CREATE DATABASE limbo;
        CREATE TABLE limbo.acct (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB;
        INSERT INTO limbo.acct VALUES (1, 100), (2, 100);"
info "table limbo.acct: $(sql -e 'SELECT GROUP_CONCAT(id, "=", v ORDER BY id) FROM limbo.acct')"

# Connection A: a mariadb client fed through a fifo, so it stays connected until killed.
open_owner() {  # $1 = xid, $2 = row id, $3 = new value
  rm -f "$T/a.in" "$T/a.out"; mkfifo "$T/a.in"
  mariadb --defaults-file="$CNF" -N -B --unbuffered <"$T/a.in" >"$T/a.out" 2>&1 &
  A_PID=$!
  exec 7>"$T/a.in"
  echo "SELECT CONCAT('conn_id=', CONNECTION_ID());
        XA START '$1'; UPDATE limbo.acct SET v = $3 WHERE id = $2; XA END '$1'; XA PREPARE '$1';
        SELECT 'prepared';" >&7
  for _ in $(seq 100); do grep -q '^prepared$' "$T/a.out" && break; sleep 0.05; done
  grep -q '^prepared$' "$T/a.out" || { cat "$T/a.out" >&2; die "connection A did not prepare"; }
  A_CONN=$(sed -n 's/^conn_id=//p' "$T/a.out")
}
kill_owner() {
  kill -9 "$A_PID"; wait "$A_PID" 2>/dev/null || true; A_PID=""
  exec 7>&-
}
# INNODB_TRX is served from a cache that InnoDB refreshes only when it has not been read
# for 100 ms (trx0i_s.cc, CACHE_MIN_IDLE_TIME_NS): pause before every read and poll slower.
innodb_trx() {
  sleep 0.15
  sqlt -e "SELECT trx_id, trx_state, trx_mysql_thread_id, trx_rows_modified, trx_rows_locked
           FROM information_schema.INNODB_TRX"
}

wait_detached() {  # until no InnoDB trx is tied to connection $A_CONN any more (max ~5 s)
  for _ in $(seq 30); do
    sleep 0.15
    [ "$(sql -e "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = $A_CONN")" = 0 ] && return 0
  done
  return 1
}
XID_HEX=$(printf limbo1 | od -An -tx1 | tr -d ' \n')   # the binlog shows XIDs as X'hex'
binlog_xa() {  # XA events of every binlog file: file, position, event type, info
  local f
  for f in $(sql -e 'SHOW BINARY LOGS' | awk '{print $1}'); do
    sql -e "SHOW BINLOG EVENTS IN '$f'" | awk -F'\t' -v f="$f" '$6 ~ /^XA / {print f, $2, $3, $6}'
  done
}
binlog_commits() { binlog_xa | grep -c "XA COMMIT X'$XID_HEX'" || true; }

# ---------------------------------------------------------------------------------------
step "3. control run (no breakpoint): XID 'ctl', row 2 := 200"
open_owner ctl 2 200
info "connection A (id $A_CONN): XA START / UPDATE row 2 / XA END / XA PREPARE -> prepared"
kill_owner
info "killed A's client; waiting until InnoDB has detached the trx (INNODB_TRX trx_mysql_thread_id = 0)"
wait_detached || info "note: INNODB_TRX still ties a trx to connection $A_CONN after 5 s"
info "B: XA COMMIT 'ctl' -> $(try_sql "XA COMMIT 'ctl'")"
CTL_V=$(sql -e 'SELECT v FROM limbo.acct WHERE id = 2')
sleep 0.15
info "row 2 = $CTL_V, XA RECOVER rows: $(sql -e 'XA RECOVER' | wc -l), INNODB_TRX rows: $(sql -e 'SELECT COUNT(*) FROM information_schema.INNODB_TRX')"
[ "$CTL_V" = 200 ] || die "control run: the ordinary XA COMMIT after disconnect did not commit"

# ---------------------------------------------------------------------------------------
step "4. connection A: XA START 'limbo1'; UPDATE row 1 := 111; XA END; XA PREPARE"
open_owner limbo1 1 111
info "connection A has id $A_CONN; branch prepared"
sqlt -e 'XA RECOVER' | indent

# ---------------------------------------------------------------------------------------
step "5. attach gdb (non-stop mode: only the thread that hits the breakpoint stops)"
# gdb reads its commands from a pipe (no terminal, no user input); non-stop mode keeps every
# other server thread running while the breakpoint thread is held, so that connection B can
# be served. At EOF on the pipe (also when this script dies) gdb detaches and quits.
rm -f "$T/gdb.in"; mkfifo "$T/gdb.in"
cat >"$T/gdb.init" <<EOF
set pagination off
set confirm off
set non-stop on
set print thread-events off
attach $SERVER_PID
EOF
gdb -q -nx -x "$T/gdb.init" <"$T/gdb.in" >"$T/gdb.out" 2>&1 &
GDB_PID=$!
exec 8>"$T/gdb.in"
gdb_cmd() { printf '%s\n' "$@" >&8; }
wait_file() {  # $1 = file, $2 = timeout in 0.05 s ticks
  for _ in $(seq "$2"); do [ -e "$1" ] && return 0; sleep 0.05; done; return 1
}
gdb_cmd "shell touch $T/gdb.attached"
wait_file "$T/gdb.attached" 400 || { cat "$T/gdb.out" >&2; die "gdb did not attach"; }
running=0
for try in 1 2 3 4 5; do
  sleep 0.3   # let gdb report the attach stops before resuming every thread
  gdb_cmd 'continue -a &'
  if timeout 3 mariadb --defaults-file="$CNF" -N -B -e 'SELECT 1' >/dev/null 2>&1; then running=1; break; fi
done
[ "$running" = 1 ] || { cat "$T/gdb.out" >&2; die "mariadbd does not answer under gdb"; }
# Armed only now: the probe connection above must not be the one that stops.
gdb_cmd "break $BP" \
        'commands' \
        '  silent' \
        '  printf "GDB: server thread %d stopped at the breakpoint\n", $_thread' \
        '  bt 4' \
        '  delete' \
        "  shell touch $T/gdb.hit" \
        'end' \
        "shell touch $T/gdb.armed"
wait_file "$T/gdb.armed" 200 || { cat "$T/gdb.out" >&2; die "gdb did not set the breakpoint"; }
info "gdb pid $GDB_PID attached to mariadbd $SERVER_PID, breakpoint on $BP, server running"

# ---------------------------------------------------------------------------------------
step "6. kill connection A's client (TCP close): its server thread runs unlink_thd and stops at $BP"
kill_owner
if ! wait_file "$T/gdb.hit" 200; then
  cat "$T/gdb.out" >&2
  die "the breakpoint was not hit within 10 s"
fi
sed -n 's/.*GDB: server thread/GDB: server thread/; /GDB: server thread/,/^#3 /p' "$T/gdb.out" | indent
info "B: PROCESSLIST rows with id $A_CONN: $(sql -e "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = $A_CONN")"
info "B: XA RECOVER (the XID is already detached and listed):"
sqlt -e 'XA RECOVER' | indent
info "B: INNODB_TRX (InnoDB still ties the trx to connection $A_CONN):"
innodb_trx | indent

# ---------------------------------------------------------------------------------------
step "7. connection B: XA COMMIT 'limbo1' while A's thread is held at the breakpoint"
set +e
COMMIT_OUT=$(sql -e "XA COMMIT 'limbo1'" 2>&1); COMMIT_RC=$?
set -e
if [ "$COMMIT_RC" = 0 ]; then info "XA COMMIT 'limbo1' -> OK (exit status 0)"; else info "XA COMMIT 'limbo1' -> FAILED: $COMMIT_OUT"; fi

# ---------------------------------------------------------------------------------------
step "8. release the breakpoint (gdb detaches; A's thread finishes ha_close_connection)"
gdb_cmd detach quit
exec 8>&-
wait "$GDB_PID" 2>/dev/null || true; GDB_PID=""
info "gdb detached"
wait_detached || info "note: INNODB_TRX still ties a trx to connection $A_CONN after 5 s"

# ---------------------------------------------------------------------------------------
step "9. the state after an XA COMMIT that returned OK"
XR_ROWS=$(sql -e 'XA RECOVER' | wc -l)
info "XA RECOVER rows: $XR_ROWS"
ROW_V=$(sql -e 'SELECT v FROM limbo.acct WHERE id = 1')
info "SELECT v FROM limbo.acct WHERE id = 1 -> $ROW_V (the branch wrote 111)"
set +e
UPD_OUT=$(sql -e 'SET SESSION innodb_lock_wait_timeout = 1; UPDATE limbo.acct SET v = v + 1 WHERE id = 1' 2>&1); UPD_RC=$?
set -e
UPD_OUT=$(echo "$UPD_OUT" | grep -E '^ERROR' || true)
info "connection C: UPDATE limbo.acct SET v = v + 1 WHERE id = 1 -> ${UPD_OUT:-OK (exit $UPD_RC)}"
info "INNODB_TRX:"
innodb_trx | indent
sleep 0.15
TRX_ROWS=$(sql -e 'SELECT COUNT(*) FROM information_schema.INNODB_TRX')
info "binlog, XA events of limbo1 (X'$XID_HEX'):"
{ binlog_xa | grep "X'$XID_HEX'" || true; } | indent
BINLOG_COMMITS=$(binlog_commits)
info "XA COMMIT events for limbo1 in the binlog: $BINLOG_COMMITS"
info "XA COMMIT 'limbo1' again -> $(try_sql "XA COMMIT 'limbo1'")"

# ---------------------------------------------------------------------------------------
step "10. kill -9 mariadbd and start it again"
kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
start_server
info "restarted, pid $SERVER_PID; error log:"
grep -i 'prepared' "$T/error.log" | tail -3 | indent
info "XA RECOVER:"
sqlt -e 'XA RECOVER' | indent
AFTER_RESTART=$(sql -e 'XA RECOVER' | awk -F'\t' '$4 == "limbo1"' | wc -l)
info "INNODB_TRX:"
innodb_trx | indent
info "connection C: UPDATE limbo.acct SET v = v + 1 WHERE id = 1 -> $(try_sql 'UPDATE limbo.acct SET v = v + 1 WHERE id = 1')"

step "11. (for completeness) XA COMMIT 'limbo1' after the restart"
info "XA COMMIT 'limbo1' -> $(try_sql "XA COMMIT 'limbo1'")"
info "row 1 = $(sql -e 'SELECT v FROM limbo.acct WHERE id = 1'); XA COMMIT events for limbo1 in the binlog now: $(binlog_commits)"

# ---------------------------------------------------------------------------------------
step "verdict"
ok=1
check() { if [ "$2" = 1 ]; then info "[yes] $1"; else info "[NO]  $1"; ok=0; fi; }
check "XA COMMIT from B returned OK" "$([ "$COMMIT_RC" = 0 ] && echo 1 || echo 0)"
check "XA RECOVER then listed nothing" "$([ "$XR_ROWS" = 0 ] && echo 1 || echo 0)"
check "the branch's write (111) was not visible (row 1 = $ROW_V)" "$([ "$ROW_V" = 100 ] && echo 1 || echo 0)"
check "an UPDATE of the row from C timed out (1205)" "$(echo "$UPD_OUT" | grep -q 1205 && echo 1 || echo 0)"
check "INNODB_TRX still showed the trx" "$([ "$TRX_ROWS" -ge 1 ] && echo 1 || echo 0)"
check "the binlog contains the XA COMMIT" "$([ "$BINLOG_COMMITS" -ge 1 ] && echo 1 || echo 0)"
check "after kill -9 + restart XA RECOVER lists limbo1 again" "$([ "$AFTER_RESTART" = 1 ] && echo 1 || echo 0)"
info "run time $(elapsed)"
echo
VERDICT_PRINTED=1
if [ "$ok" = 1 ]; then echo "REPRODUCED"; exit 0; else echo "NOT REPRODUCED"; exit 1; fi
