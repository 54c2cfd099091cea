# Process helpers shared by scripts/servers.sh and scripts/redis.sh (sourced, not run).

# True if PID exists and is not a zombie (PID 1 here reaps slowly, so kill -0 is not enough).
running() {
  local st
  [[ $1 =~ ^[0-9]+$ ]] && st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]
}

# pid_from FILE COMM: the pid in pid file FILE if that process is alive and its command name
# starts with COMM, else nothing.
pid_from() {
  local pid
  [[ -r $1 ]] && pid=$(<"$1") && running "$pid" &&
    [[ $(ps -o comm= -p "$pid" 2>/dev/null) == "$2"* ]] && echo "$pid"
  return 0
}

# Waits up to $2 seconds for PID $1 to exit; returns 1 if it is still running.
wait_gone() {
  local end=$((SECONDS + $2))
  while running "$1"; do
    ((SECONDS < end)) || return 1
    sleep 0.05
  done
}
