#!/usr/bin/env bash
# Manage N local Redis instances (seigo's key-value participants) on 127.0.0.1, without systemd,
# configured the way seigo's durability gate demands (doc/redis.md): appendonly yes,
# appendfsync always, no-appendfsync-on-rewrite no, maxmemory-policy noeviction, no RDB saves.
#
# Usage: scripts/redis.sh start [N] [--base-port P]  start instances 0..N-1 (default N=2,
#                                                    P=36379), instance i on port P+i
#        scripts/redis.sh stop                       stop all (SHUTDOWN NOSAVE; SIGKILL after 10 s)
#        scripts/redis.sh kill I                     kill -9 instance I and wait until it is gone
#        scripts/redis.sh restart I                  start instance I again (replays its AOF)
#        scripts/redis.sh crash I                    kill -9 instance I, then restart it
#        scripts/redis.sh status                     one line per instance: index port pid up|down
#        scripts/redis.sh wipe                       stop, then delete the state dir
#
# State dir: $SEIGO_REDIS_DIR (default /tmp/seigo-redis); instance i lives in DIR/redis-i
# (redis.conf, appendonlydir/, redis.log, redis.pid). After start:
#   . /tmp/seigo-redis/env   # export SEIGO_REDIS=redis://127.0.0.1:36379,...
set -euo pipefail

DIR=${SEIGO_REDIS_DIR:-/tmp/seigo-redis}
log() { echo "redis.sh: $*"; }
die() { echo "redis.sh: error: $*" >&2; exit 1; }
usage() { sed -n '6,13s/^# \{0,1\}//p' "$0" >&2; exit 2; }

idir() { echo "$DIR/redis-$1"; }
conf() { echo "$DIR/redis-$1/redis.conf"; }
port_of() { sed -n 's/^port //p' "$(conf "$1")"; }
instances() { local i=0; while [[ -f $(conf "$i") ]]; do echo "$i"; i=$((i + 1)); done; }
# shellcheck source=scripts/proc.sh
. "$(dirname "${BASH_SOURCE[0]}")/proc.sh"
pid_of() { pid_from "$(idir "$1")/redis.pid" redis-server; }
need_instance() {
  [[ ${1:-} =~ ^[0-9]+$ ]] || die "instance index expected, got '${1:-}'"
  [[ -f $(conf "$1") ]] || die "no instance $1 under $DIR"
}
ping() { redis-cli -h 127.0.0.1 -p "$(port_of "$1")" ping 2>/dev/null | grep -q PONG; }

launch() {
  local i=$1 d port end
  d=$(idir "$i")
  port=$(port_of "$i")
  [[ -z $(pid_of "$i") ]] || die "instance $i already runs (pid $(pid_of "$i"))"
  end=$((SECONDS + 15))
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    ((SECONDS < end)) || die "port $port is taken by another process"
    sleep 0.1
  done
  redis-server "$(conf "$i")" >>"$d/redis.log" 2>&1 &
  end=$((SECONDS + 30))
  until ping "$i"; do
    ((SECONDS < end)) || die "instance $i (port $port) did not answer within 30 s; see $d/redis.log"
    sleep 0.03
  done
  # Loading the AOF: PING answers LOADING errors (not PONG) until it is done.
  log "instance $i up on 127.0.0.1:$port (pid $(pid_of "$i"))"
}

write_env() {
  local urls=() i
  for i in $(instances); do urls+=("redis://127.0.0.1:$(port_of "$i")"); done
  (IFS=,; echo "export SEIGO_REDIS=${urls[*]}") >"$DIR/env"
}

cmd_start() {
  local n=2 base=36379
  while (($#)); do
    case $1 in
      --base-port) base=${2:?}; shift 2 ;;
      [0-9]*) n=$1; shift ;;
      *) usage ;;
    esac
  done
  command -v redis-server >/dev/null || die "redis-server not installed (scripts/install-deps.sh)"
  mkdir -p "$DIR"
  local i d
  for ((i = 0; i < n; i++)); do
    d=$(idir "$i")
    mkdir -p "$d"
    if [[ ! -f $(conf "$i") ]]; then
      cat >"$(conf "$i")" <<CONF
port $((base + i))
bind 127.0.0.1
dir $d
pidfile $d/redis.pid
daemonize no
appendonly yes
appendfsync always
no-appendfsync-on-rewrite no
maxmemory-policy noeviction
save ""
protected-mode yes
CONF
    fi
    [[ -n $(pid_of "$i") ]] || launch "$i"
  done
  write_env
  log "env: $DIR/env"
}

stop_one() {
  local i=$1 pid
  pid=$(pid_of "$i")
  [[ -n $pid ]] || return 0
  redis-cli -h 127.0.0.1 -p "$(port_of "$i")" shutdown nosave >/dev/null 2>&1 || true
  wait_gone "$pid" 10 || { kill -9 "$pid" 2>/dev/null || true; wait_gone "$pid" 10 || true; }
}

cmd_stop() { local i; for i in $(instances); do stop_one "$i"; done; }

cmd_kill() {
  need_instance "${1:-}"
  local pid
  pid=$(pid_of "$1")
  [[ -n $pid ]] || { log "instance $1 not running"; return 0; }
  kill -9 "$pid"
  wait_gone "$pid" 10 || die "instance $1 (pid $pid) did not die"
  log "instance $1 killed (pid $pid)"
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  kill) cmd_kill "${2:-}" ;;
  restart) need_instance "${2:-}"; launch "$2" ;;
  crash) cmd_kill "${2:-}"; launch "$2" ;;
  status)
    for i in $(instances); do
      pid=$(pid_of "$i")
      echo "$i $(port_of "$i") ${pid:--} $([[ -n $pid ]] && ping "$i" && echo up || echo down)"
    done ;;
  wipe) cmd_stop; rm -rf "$DIR"; log "wiped $DIR" ;;
  env) cat "$DIR/env" ;;
  *) usage ;;
esac
