#!/usr/bin/env bash
# Usage: scripts/seigod-demo.sh [SECONDS]   (from any directory; default 20 s of traffic)
#   seigod, seigo over HTTP (doc/seigod.md), end to end: installs what is missing, builds,
#   starts 2 MariaDB shards (ports 33271-33272), 2 Redis instances (36589-36590) and a RabbitMQ
#   broker (5762), seeds the trade, raid and gacha demos' tables, writes a seigod config from
#   seigod/seigod.toml.example (shard password in a file), starts seigod on 127.0.0.1:36880 and
#   the gacha consumer, then runs examples/python/game.py (the Python client, standard library
#   only): trades, raid attacks and gacha pulls. Halfway through, seigod is killed with kill -9
#   and restarted; `seigo check` runs before, right after the restart, and at the end. Then the
#   consumer drains the queue and the three audits run (`seigo demo audit`, `demo raid audit`,
#   `demo gacha audit`). State under $SEIGOD_DEMO_DIR (default /tmp/seigod-demo).
#   Exit status: 0 if the traffic ran and all three audits passed, 1 if not.
set -euo pipefail

cd "$(dirname "$0")/.."
TRAFFIC_SECONDS=${1:-20}
DEMO=${SEIGOD_DEMO_DIR:-/tmp/seigod-demo}
export SEIGO_STATE_DIR=$DEMO/servers SEIGO_REDIS_DIR=$DEMO/redis SEIGO_RABBITMQ_DIR=$DEMO/rabbitmq
SERVERS=$PWD/scripts/servers.sh
REDIS=$PWD/scripts/redis.sh
RABBITMQ=$PWD/scripts/rabbitmq.sh
SEIGO=$PWD/build/seigo
SEIGOD=$PWD/build/seigod/seigod
PORT=36880
URL=http://127.0.0.1:$PORT

bash scripts/install-deps.sh
bash scripts/reserve-ports.sh
echo "=== build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 --target seigo_cli seigod >/dev/null
mkdir -p "$DEMO"
seigod_pid= consumer_pid=
cleanup() {
  [[ -n $seigod_pid ]] && kill "$seigod_pid" 2>/dev/null || true
  [[ -n $consumer_pid ]] && kill "$consumer_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  bash "$SERVERS" stop >/dev/null 2>&1 || true
  bash "$REDIS" stop >/dev/null 2>&1 || true
  bash "$RABBITMQ" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
echo "=== start 2 MariaDB shards, 2 Redis instances, a RabbitMQ broker"
bash "$SERVERS" wipe >/dev/null
bash "$SERVERS" start 2 --base-port 33271 | tail -1
bash "$REDIS" wipe >/dev/null
bash "$REDIS" start 2 --base-port 36589 | tail -1
bash "$RABBITMQ" wipe >/dev/null
bash "$RABBITMQ" start --port 5762 | tail -1
# shellcheck disable=SC1091
. "$SEIGO_STATE_DIR/env"
# shellcheck disable=SC1091
. "$SEIGO_REDIS_DIR/env"
# shellcheck disable=SC1091
. "$SEIGO_RABBITMQ_DIR/env"
export SEIGO_SHARDS SEIGO_REDIS SEIGO_AMQP

echo "=== seed: seigo demo setup, demo raid setup, demo gacha setup"
"$SEIGO" demo setup --players 1000 | tail -1
"$SEIGO" demo raid setup --players 1000 --bosses 3 | tail -1
"$SEIGO" demo gacha setup --players 1000 | tail -1

echo "=== seigod config: $DEMO/seigod.toml (passwords in files, never in the config)"
/usr/bin/python3 - "$DEMO" "$SEIGO_SHARDS" "$SEIGO_REDIS" "$SEIGO_AMQP" "$PORT" <<'PY'
import os, sys, urllib.parse
demo, shards, redis, amqp, port = sys.argv[1:6]
def split(url):
    u = urllib.parse.urlparse(url)
    bare = "%s://%s@%s:%d%s" % (u.scheme, u.username, u.hostname, u.port, u.path or "/")
    return bare, urllib.parse.unquote(u.password or "")
shard_urls, pw = [], ""
for s in shards.split(","):
    bare, pw = split(s)
    shard_urls.append(bare)
amqp_url, amqp_pw = split(amqp)
for name, secret in (("shard-password", pw), ("amqp-password", amqp_pw)):
    path = os.path.join(demo, name)
    with open(path, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)
sample = open("seigod/seigod.toml.example").read()
catalog = sample[sample.index("[statements]"):]
with open(os.path.join(demo, "seigod.toml"), "w") as f:
    f.write('[server]\nlisten = "127.0.0.1:%s"\nhung_threshold_s = 5\nmonitor_interval_ms = 500\n'
            % port)
    f.write("[shards]\nurls = [%s]\npassword_file = \"%s/shard-password\"\n"
            % (", ".join('"%s"' % u for u in shard_urls), demo))
    f.write("[redis]\nurls = [%s]\n" % ", ".join('"%s"' % u for u in redis.split(",")))
    f.write('[amqp]\nurl = "%s"\npassword_file = "%s/amqp-password"\n' % (amqp_url, demo))
    f.write(catalog)
PY

start_seigod() {
  "$SEIGOD" --config "$DEMO/seigod.toml" >>"$DEMO/seigod.log" 2>&1 &
  seigod_pid=$!
  for _ in $(seq 100); do
    curl -fs "$URL/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "seigod did not start:"; tail -20 "$DEMO/seigod.log"; exit 1
}
: >"$DEMO/seigod.log"
start_seigod
echo "--- seigo check: $("$SEIGO" check --url "$URL" || true)"
"$SEIGO" demo gacha consume >"$DEMO/consumer.log" 2>&1 &
consumer_pid=$!

half=$(( TRAFFIC_SECONDS / 2 ))
echo "=== traffic: examples/python/game.py for ${TRAFFIC_SECONDS}s; kill -9 seigod at ${half}s, restart 1 s later"
( sleep "$half"; echo ">>> kill -9 seigod" >&2; kill -9 "$seigod_pid" ) &
killer=$!
rc=0
PYTHONPATH=$PWD/clients/python /usr/bin/python3 examples/python/game.py --url "$URL" \
  --seconds "$TRAFFIC_SECONDS" >"$DEMO/game.log" 2>&1 &
game=$!
wait "$killer"
sleep 1
start_seigod
echo ">>> seigod restarted" >&2
echo "--- seigo check right after the restart: $("$SEIGO" check --url "$URL" || true)"
wait "$game" || rc=1
tail -8 "$DEMO/game.log"

echo "=== settle: the consumer drains the queue, the resolver finishes what the kill left"
for _ in $(seq 60); do
  line=$("$SEIGO" check --url "$URL" -w outbox_lag=1 2>&1) && break
  sleep 1
done
echo "--- seigo check: $line"
"$SEIGO" demo gacha consume --idle-exit 3 >>"$DEMO/consumer.log" 2>&1 || true
kill "$consumer_pid" 2>/dev/null || true
wait "$consumer_pid" 2>/dev/null || true
consumer_pid=
"$SEIGO" demo gacha consume --idle-exit 3 >>"$DEMO/consumer.log" 2>&1 || true

echo "=== audits"
"$SEIGO" demo audit || rc=1
"$SEIGO" demo raid audit || rc=1
"$SEIGO" demo gacha audit || rc=1
echo "--- /metrics (excerpt)"
curl -fs "$URL/metrics" | grep -E '^seigo_(transactions_total|retries_total|in_doubt|hung|outbox_pending)' || true
echo "status page: $URL/ (while seigod runs); logs in $DEMO"
exit $rc
