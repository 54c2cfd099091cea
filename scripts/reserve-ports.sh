#!/usr/bin/env bash
# Usage: scripts/reserve-ports.sh
#   Keeps the ports of the servers that the tests, the demo and the benchmarks start (MariaDB
#   33100-33999, Redis 36300-36999) out of Linux's ephemeral port range, by adding them to
#   net.ipv4.ip_local_reserved_ports. Without it a client that reconnects in a loop to a server
#   that is down can get that very port as its source port and connect to itself (a TCP
#   self-connect), which then holds the port: the server cannot restart (seen in CI: "Address
#   already in use" for a crash-matrix shard and a test's own Redis). Needs root; otherwise it
#   warns and changes nothing. Exit status 0 either way.
set -uo pipefail
f=/proc/sys/net/ipv4/ip_local_reserved_ports
want="33100-33999,36300-36999"
cur=$(cat "$f" 2>/dev/null || true)
case ",$cur," in
  *",33100-33999,"*) exit 0 ;;  # already reserved
esac
if { echo "${cur:+$cur,}$want" >"$f"; } 2>/dev/null; then
  echo "reserve-ports: reserved $want (net.ipv4.ip_local_reserved_ports)"
else
  echo "reserve-ports: warning: could not reserve $want (not root?); a server restarted while" \
       "a client reconnects may find its port taken by a TCP self-connect" >&2
fi
exit 0
