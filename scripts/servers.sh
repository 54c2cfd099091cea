#!/usr/bin/env bash
# Manage N local MariaDB instances (the seigo shards) on 127.0.0.1, without systemd.
#
# Usage: scripts/servers.sh start [N] [--base-port P]  start shards 0..N-1 (default N=2, P=33061),
#                                                      shard i listens on port P+i
#        scripts/servers.sh stop                       stop all shards (SIGTERM, SIGKILL after 20 s)
#        scripts/servers.sh kill I                     kill -9 shard I and wait until it is gone
#        scripts/servers.sh restart I                  start shard I again (crash recovery)
#        scripts/servers.sh crash I                    kill -9 shard I, then restart it
#        scripts/servers.sh status                     one line per shard: index port pid up|down
#        scripts/servers.sh wipe                       stop, then delete the state dir
#        scripts/servers.sh env                        print the SEIGO_SHARDS export line
#
# State dir: $SEIGO_STATE_DIR (default /tmp/seigo-servers); shard i lives in DIR/mariadb-i
# (my.cnf, data/, binlog.*, error.log, mariadbd.pid, mariadbd.sock). After start:
#   . /tmp/seigo-servers/env   # export SEIGO_SHARDS=mysql://seigo:seigo@127.0.0.1:33061/seigo,...
set -euo pipefail

DIR=${SEIGO_STATE_DIR:-/tmp/seigo-servers}
START_TIMEOUT=30 # seconds until a started mariadbd must accept queries
STOP_TIMEOUT=20  # seconds between SIGTERM and SIGKILL

log() { echo "servers.sh: $*"; }
die() { echo "servers.sh: error: $*" >&2; exit 1; }
usage() { sed -n '4,12s/^# \{0,1\}//p' "$0" >&2; exit 2; }

sdir() { echo "$DIR/mariadb-$1"; }
cnf() { echo "$DIR/mariadb-$1/my.cnf"; }
port_of() { sed -n 's/^port=//p' "$(cnf "$1")"; }
sql() { mariadb --defaults-file="$(cnf "$1")" --connect-timeout=2 -e "$2"; }

# Indices of the shards set up under DIR (0, 1, ... while DIR/mariadb-i/my.cnf exists).
shards() { local i=0; while [[ -f $(cnf "$i") ]]; do echo "$i"; i=$((i + 1)); done; }

# shellcheck source=scripts/proc.sh
. "$(dirname "${BASH_SOURCE[0]}")/proc.sh"

# Prints the pid of shard I's live mariadbd (from its pid file), or nothing.
pid_of() { pid_from "$(sdir "$1")/mariadbd.pid" mariadbd; }

need_shard() {
  [[ ${1:-} =~ ^[0-9]+$ ]] || die "shard index expected, got '${1:-}'"
  [[ -f $(cnf "$1") ]] || die "shard $1 does not exist under $DIR (run: $0 start)"
}

write_cnf() { # index port
  local d
  d=$(sdir "$1")
  mkdir -p "$d"
  cat >"$d/my.cnf" <<EOF
[mariadbd]
user=root
datadir=$d/data
socket=$d/mariadbd.sock
pid-file=$d/mariadbd.pid
port=$2
bind-address=127.0.0.1
log-error=$d/error.log
skip-name-resolve
innodb_flush_log_at_trx_commit=1
log_bin=$d/binlog
server_id=$(($1 + 1))
sync_binlog=1
binlog_format=ROW
max_connections=500
innodb_buffer_pool_size=128M

[client]
socket=$d/mariadbd.sock
user=root
EOF
}

# Starts shard I's mariadbd (initializing a new datadir first) and waits until it accepts queries.
launch() {
  local i=$1 d f pid end
  d=$(sdir "$i") f=$(cnf "$i")
  if [[ ! -d $d/data/mysql ]]; then
    log "shard $i: initializing $d/data"
    rm -rf "$d/data"
    mariadb-install-db --defaults-file="$f" --auth-root-authentication-method=normal \
      --skip-test-db >"$d/install.log" 2>&1 ||
      { tail -n 20 "$d/install.log" >&2; die "shard $i: mariadb-install-db failed, see $d/install.log"; }
  fi
  wait_port_free "$(port_of "$i")"
  # setsid: own session, so it survives this script and terminal signals. -w keeps the
  # setsid process alive as long as mariadbd, so $! tells us whether the server died early.
  setsid -w mariadbd --defaults-file="$f" >>"$d/mariadbd.out" 2>&1 </dev/null &
  pid=$!
  end=$((SECONDS + START_TIMEOUT))
  until sql "$i" 'SELECT 1' >/dev/null 2>&1; do
    if ! running "$pid" || ((SECONDS >= end)); then
      running "$pid" && echo "shard $i: no answer after ${START_TIMEOUT}s" >&2 || echo "shard $i: mariadbd exited" >&2
      echo "--- tail of $d/error.log:" >&2
      tail -n 30 "$d/error.log" >&2 || true
      die "shard $i did not start (port $(port_of "$i"))"
    fi
    sleep 0.05
  done
  log "shard $i: up on port $(port_of "$i"), pid $(pid_of "$i")"
}

kill9() {
  local pid
  pid=$(pid_of "$1")
  if [[ -z $pid ]]; then log "shard $1: not running"; return 0; fi
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 10 || die "shard $1: pid $pid still alive after SIGKILL"
  log "shard $1: killed (kill -9 pid $pid)"
}

restart() {
  local pid
  pid=$(pid_of "$1")
  if [[ -n $pid ]]; then log "shard $1: already running (pid $pid)"; return 0; fi
  launch "$1"
}

stop_all() {
  local i pid n=0
  [[ -d $DIR ]] || { log "nothing to stop ($DIR does not exist)"; return 0; }
  for i in $(shards); do
    pid=$(pid_of "$i")
    [[ -n $pid ]] || continue
    n=$((n + 1))
    kill -TERM "$pid" 2>/dev/null || true
    if wait_gone "$pid" "$STOP_TIMEOUT"; then
      log "shard $i: stopped (pid $pid)"
    else
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 10 || die "shard $i: pid $pid survives SIGKILL"
      log "shard $i: killed after ${STOP_TIMEOUT}s without exiting (pid $pid)"
    fi
  done
  # A mariadbd of this DIR whose pid file is gone (wiped, or never written because it was
  # killed while starting) still holds its port and would make the next start fail with
  # "Address already in use": find those by their command line.
  for pid in $(pgrep -f -- "--defaults-file=$DIR/" 2>/dev/null || true); do
    [[ $(ps -o comm= -p "$pid" 2>/dev/null) == mariadbd ]] || continue
    n=$((n + 1))
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid (a mariadbd of $DIR without pid file) survives SIGKILL"
    log "killed pid $pid: a mariadbd of $DIR without a pid file"
  done
  ((n > 0)) || log "no shard running under $DIR"
}

# Waits up to 15 s for nothing to listen on 127.0.0.1:PORT (a server that just exited may hold
# it a moment longer); dies naming the holder otherwise.
wait_port_free() {
  local port=$1 end=$((SECONDS + 15))
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ((SECONDS >= end)); then
      die "port $port is in use by another process: $(ss -ltnp "sport = :$port" 2>/dev/null | tail -n +2 | tr -s ' ')"
    fi
    sleep 0.1
  done
}

write_env() { # N
  local i urls=()
  for ((i = 0; i < $1; i++)); do urls+=("mysql://seigo:seigo@127.0.0.1:$(port_of "$i")/seigo"); done
  (IFS=,; echo "export SEIGO_SHARDS=${urls[*]}") >"$DIR/env.tmp"
  mv "$DIR/env.tmp" "$DIR/env"
}

start() {
  local n=2 base=33061 i pid
  while (($#)); do
    case $1 in
      --base-port) [[ ${2:-} =~ ^[0-9]+$ ]] || die "--base-port needs a number"; base=$2; shift 2 ;;
      [0-9]*) [[ $1 =~ ^[1-9][0-9]*$ ]] || die "bad shard count '$1'"; n=$1; shift ;;
      *) usage ;;
    esac
  done
  mkdir -p "$DIR"
  for ((i = 0; i < n; i++)); do
    pid=$(pid_of "$i")
    if [[ -n $pid ]]; then
      log "shard $i: already running on port $(port_of "$i"), pid $pid"
    else
      write_cnf "$i" $((base + i))
      launch "$i"
    fi
    sql "$i" "CREATE DATABASE IF NOT EXISTS seigo;
      CREATE USER IF NOT EXISTS 'seigo'@'127.0.0.1' IDENTIFIED BY 'seigo';
      GRANT ALL PRIVILEGES ON *.* TO 'seigo'@'127.0.0.1' WITH GRANT OPTION;" ||
      die "shard $i: creating database/user failed"
  done
  write_env "$n"
  cat "$DIR/env"
}

status() {
  local i pid state
  [[ -f $(cnf 0) ]] || echo "servers.sh: no shards under $DIR" >&2
  for i in $(shards); do
    pid=$(pid_of "$i") state=down
    [[ -n $pid ]] && sql "$i" 'SELECT 1' >/dev/null 2>&1 && state=up
    echo "$i $(port_of "$i") ${pid:--} $state"
  done
}

cmd=${1:-}
(($#)) && shift
case $cmd in
  start) start "$@" ;;
  stop) stop_all ;;
  kill) need_shard "${1:-}"; kill9 "$1" ;;
  restart) need_shard "${1:-}"; restart "$1" ;;
  crash) need_shard "${1:-}"; kill9 "$1"; restart "$1" ;;
  status) status ;;
  wipe)
    [[ -n $DIR && $DIR != / ]] || die "refusing to wipe '$DIR'"
    stop_all
    # A server that just exited may still have a file being closed or a helper (under
    # libfaketime) writing its last bytes: "Directory not empty". Try again for a few seconds.
    for try in $(seq 1 20); do
      rm -rf "$DIR" 2>/dev/null && break
      sleep 0.25
    done
    [[ ! -e $DIR ]] || { rm -rf "$DIR"; die "could not remove $DIR"; }
    log "wiped $DIR" ;;
  env) [[ -r $DIR/env ]] || die "$DIR/env missing (run: $0 start)"; cat "$DIR/env" ;;
  *) usage ;;
esac
