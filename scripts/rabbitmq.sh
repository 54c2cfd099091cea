#!/usr/bin/env bash
# Manage ONE local RabbitMQ broker (seigo's message-queue participant) on 127.0.0.1, without
# systemd: private Erlang cookie, private epmd, every listener on 127.0.0.1 only.
#
# Usage: scripts/rabbitmq.sh start [--port P]  start the broker (default P=5673), create user
#                                              seigo/seigo-secret with full rights on vhost /
#        scripts/rabbitmq.sh stop              graceful stop, then kill its epmd (SIGKILL after 20 s)
#        scripts/rabbitmq.sh kill              kill -9 the broker VM and wait until it is gone
#        scripts/rabbitmq.sh restart           start it again (same port, same data)
#        scripts/rabbitmq.sh crash             kill -9 the broker VM, then restart it
#        scripts/rabbitmq.sh status            one line: port pid up|down
#        scripts/rabbitmq.sh wipe              stop, then delete the state dir
#        scripts/rabbitmq.sh ctl ARGS...       rabbitmqctl -n NODE ARGS (e.g. ctl list_queues name messages)
#        scripts/rabbitmq.sh env               print the env file
#
# State dir: $SEIGO_RABBITMQ_DIR (default /tmp/seigo-rabbitmq): port, rabbitmq.conf,
# enabled_plugins, .erlang.cookie (HOME), mnesia/ (data), log/ (seigoP@localhost.log, startup.log),
# rabbitmq.pid (the beam.smp VM), epmd.pid. Node name: seigoP@localhost. Ports used, all on
# 127.0.0.1: P (AMQP), P+10000 (Erlang distribution), P+10001..P+10009 (rabbitmqctl's own node),
# P+20000 (private epmd); brokers running side by side need ports >= 10 apart. P must be below
# 12768, so that P+20000 stays below Linux's ephemeral ports (32768-60999): a client that
# reconnects in a loop to a port in that range while the broker is down can connect to itself
# (a TCP self-connect: source port = destination port) and then hold the port, so that the
# broker cannot listen on it again (seen here: `restart` failed with eaddrinuse).
# Several brokers can run at once with different ports and state dirs. After start:
#   . /tmp/seigo-rabbitmq/env   # export SEIGO_AMQP=amqp://seigo:seigo-secret@127.0.0.1:5673/
# Crash-test trap (RabbitMQ 3.10.8 / Ra 2.2.0): a quorum queue declared less than ~1 s before a
# kill -9 comes back as a new, empty member that never elects a leader (basic.get times out with
# 541 INTERNAL_ERROR, publishes are nacked; its confirmed messages are orphaned in the old Ra dir):
# Ra registers the queue in names.dets, synced only every 500 ms (fixed upstream in rabbitmq/ra
# PR #443). Declare queues, then wait >= 1 s before killing the broker.
# Exit codes: 0 ok, 1 error, 2 usage.
set -euo pipefail

DIR=${SEIGO_RABBITMQ_DIR:-/tmp/seigo-rabbitmq}
RMQ_BIN=/usr/lib/rabbitmq/bin  # not /usr/sbin: those wrappers `su rabbitmq` and ignore our env
USER_NAME=seigo
USER_PASS=seigo-secret
log() { echo "rabbitmq.sh: $*"; }
die() { echo "rabbitmq.sh: error: $*" >&2; exit 1; }
usage() { sed -n '5,14s/^# \{0,1\}//p' "$0" >&2; exit 2; }

# shellcheck source=scripts/proc.sh
. "$(dirname "${BASH_SOURCE[0]}")/proc.sh"

PORT=
stored_port() { [[ -r $DIR/port ]] && cat "$DIR/port"; return 0; }
need_state() {
  PORT=$(stored_port)
  [[ -n $PORT ]] || die "no broker under $DIR (run: scripts/rabbitmq.sh start)"
  setup_env
}

# Exports everything rabbitmq-server and rabbitmqctl need for the broker on $PORT.
setup_env() {
  NODE=seigo$PORT@localhost
  EPMD_PORT=$((PORT + 20000))
  export HOME=$DIR  # the Erlang cookie is $HOME/.erlang.cookie
  export RABBITMQ_NODENAME=$NODE
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$PORT
  export RABBITMQ_DIST_PORT=$((PORT + 10000))  # default (PORT+20000) is invalid for high ports
  export RABBITMQ_CTL_DIST_PORT_MIN=$((PORT + 10001))  # default 35672..35682 collides with AMQP
  export RABBITMQ_CTL_DIST_PORT_MAX=$((PORT + 10009))
  export RABBITMQ_MNESIA_BASE=$DIR/mnesia
  export RABBITMQ_LOG_BASE=$DIR/log
  export RABBITMQ_PID_FILE=$DIR/rabbitmq.pid
  export RABBITMQ_CONFIG_FILE=$DIR/rabbitmq.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins
  export RABBITMQ_CONF_ENV_FILE=$DIR/rabbitmq-env.conf    # absent: ignore /etc/rabbitmq's
  export RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config  # absent
  export ERL_EPMD_PORT=$EPMD_PORT
  export ERL_EPMD_ADDRESS=127.0.0.1
  # Without this the distribution port listens on all interfaces.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

# rabbitmqctl starts an `epmd -daemon` itself (whatever -start_epmd says) when none listens on
# ERL_EPMD_PORT; that stray epmd would outlive it, so only call it while our epmd runs.
ctl() {
  port_open "$EPMD_PORT" || die "broker on port $PORT is not running (no epmd on 127.0.0.1:$EPMD_PORT)"
  "$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@"
}
pid_of() { pid_from "$DIR/rabbitmq.pid" beam.smp; }
epmd_pid() { pid_from "$DIR/epmd.pid" epmd; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

epmd_answers() { epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; }

start_epmd() {
  [[ -z $(epmd_pid) ]] || return 0
  if port_open "$EPMD_PORT"; then
    # An epmd we did not start (e.g. one that rabbitmqctl started) serves as well.
    epmd_answers || die "epmd port $EPMD_PORT (broker port + 20000) is taken by another process"
    log "reusing the epmd already on 127.0.0.1:$EPMD_PORT"
    rm -f "$DIR/epmd.pid"
    return 0
  fi
  epmd -address 127.0.0.1 -port "$EPMD_PORT" </dev/null >>"$DIR/log/epmd.log" 2>&1 &
  echo $! >"$DIR/epmd.pid"
  local end=$((SECONDS + 10))
  until port_open "$EPMD_PORT"; do
    running "$(<"$DIR/epmd.pid")" || die "epmd on port $EPMD_PORT exited; see $DIR/log/epmd.log"
    ((SECONDS < end)) || die "epmd on port $EPMD_PORT did not listen within 10 s"
    sleep 0.05
  done
}

stop_epmd() {
  local pid end
  pid=$(epmd_pid)
  [[ -n $pid ]] || epmd_answers || return 0
  epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
  if [[ -n $pid ]]; then
    wait_gone "$pid" 5 || { kill -9 "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
  fi
  end=$((SECONDS + 5))
  while port_open "$EPMD_PORT" && ((SECONDS < end)); do sleep 0.05; done
  rm -f "$DIR/epmd.pid"
}

launch() {
  local pid end t0=$SECONDS
  pid=$(pid_of)
  [[ -z $pid ]] || die "broker on port $PORT already runs (pid $pid)"
  local p
  for p in "$PORT" "$RABBITMQ_DIST_PORT"; do
    end=$((SECONDS + 15))
    while port_open "$p"; do
      ((SECONDS < end)) || die "port $p is taken by another process"
      sleep 0.1
    done
  done
  start_epmd
  rm -f "$DIR/rabbitmq.pid"
  log "starting broker $NODE on 127.0.0.1:$PORT"
  "$RMQ_BIN/rabbitmq-server" </dev/null >>"$DIR/log/startup.log" 2>&1 &
  local wrapper=$!
  end=$((SECONDS + 60))
  # await_startup waits until the node answers and the rabbit app has booted (or fails at once
  # when the node is not reachable yet): retry while the wrapper lives.
  until ctl -q await_startup --timeout 60 >/dev/null 2>&1; do
    running "$wrapper" || die "broker exited during start-up; see $DIR/log/startup.log and $DIR/log/$NODE.log"
    ((SECONDS < end)) || die "broker did not start within 60 s; see $DIR/log/$NODE.log and $DIR/log/startup.log"
    sleep 0.5
  done
  pid=$(pid_of)
  [[ -n $pid ]] || die "broker is up but $DIR/rabbitmq.pid names no beam.smp process"
  log "broker up on 127.0.0.1:$PORT (pid $pid, node $NODE, $((SECONDS - t0)) s)"
}

ensure_user() {
  if ! ctl -q list_users 2>/dev/null | awk '{print $1}' | grep -qx "$USER_NAME"; then
    ctl -q add_user "$USER_NAME" "$USER_PASS" >/dev/null || die "add_user $USER_NAME failed"
  fi
  ctl -q set_permissions -p / "$USER_NAME" '.*' '.*' '.*' >/dev/null ||
    die "set_permissions for $USER_NAME failed"
}

write_env() {
  echo "export SEIGO_AMQP=amqp://$USER_NAME:$USER_PASS@127.0.0.1:$PORT/" >"$DIR/env"
}

cmd_start() {
  local want=
  while (($#)); do
    case $1 in
      --port) [[ $# -ge 2 ]] || usage; want=$2; shift 2 ;;
      *) usage ;;
    esac
  done
  [[ -x $RMQ_BIN/rabbitmq-server ]] && command -v epmd >/dev/null ||
    die "rabbitmq-server not installed (scripts/install-deps.sh)"
  PORT=$(stored_port)
  if [[ -n $PORT ]]; then
    [[ -z $want || $want == "$PORT" ]] ||
      die "$DIR belongs to the broker on port $PORT; wipe it or set SEIGO_RABBITMQ_DIR"
  else
    PORT=${want:-5673}
  fi
  [[ $PORT =~ ^[0-9]+$ ]] && ((PORT >= 1024 && PORT <= 12767)) ||
    die "port must be a number in 1024..12767 (below the ephemeral ports even as P+20000, the epmd port), got '$PORT'"
  setup_env
  local pid
  pid=$(pid_of)
  if [[ -n $pid ]]; then
    log "broker already runs on 127.0.0.1:$PORT (pid $pid)"
    write_env
    return 0
  fi
  mkdir -p "$DIR/log" "$DIR/mnesia"
  echo "$PORT" >"$DIR/port"
  # guest keeps its default loopback_users restriction: we only listen on 127.0.0.1 anyway.
  cat >"$DIR/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$PORT
CONF
  echo '[].' >"$DIR/enabled_plugins"
  launch
  ensure_user
  write_env
  log "env: $DIR/env"
}

cmd_stop() {
  PORT=$(stored_port)
  [[ -n $PORT ]] || return 0
  setup_env
  local pid
  pid=$(pid_of)
  if [[ -n $pid ]]; then
    # `stop PIDFILE` returns only once the VM has exited (plain `stop` returns before).
    timeout 20 "$RMQ_BIN/rabbitmqctl" -n "$NODE" -q stop "$DIR/rabbitmq.pid" >/dev/null 2>&1 || true
    if ! wait_gone "$pid" 2; then
      log "broker (pid $pid) still runs after 20 s: SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
      wait_gone "$pid" 10 || die "broker (pid $pid) did not die"
    fi
    log "broker on port $PORT stopped"
  fi
  stop_epmd
}

cmd_kill() {
  need_state
  local pid
  pid=$(pid_of)
  [[ -n $pid ]] || { log "broker not running"; return 0; }
  kill -9 "$pid"
  wait_gone "$pid" 10 || die "broker (pid $pid) did not die"
  log "broker killed (pid $pid)"
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) [[ $# -eq 1 ]] || usage; cmd_stop ;;
  kill) [[ $# -eq 1 ]] || usage; cmd_kill ;;
  restart) [[ $# -eq 1 ]] || usage; need_state; launch ;;
  crash) [[ $# -eq 1 ]] || usage; cmd_kill; launch ;;
  status)
    [[ $# -eq 1 ]] || usage
    PORT=$(stored_port)
    if [[ -z $PORT ]]; then echo "- - down"; exit 0; fi
    setup_env
    pid=$(pid_of)
    echo "$PORT ${pid:--} $([[ -n $pid ]] && port_open "$PORT" && echo up || echo down)" ;;
  wipe) [[ $# -eq 1 ]] || usage; cmd_stop; rm -rf "$DIR"; log "wiped $DIR" ;;
  ctl) shift; need_state; ctl "$@" ;;
  env) [[ -r $DIR/env ]] || die "no env file under $DIR (run: scripts/rabbitmq.sh start)"; cat "$DIR/env" ;;
  *) usage ;;
esac
