#!/usr/bin/env bash
# Usage: scripts/bench.sh [SECONDS_PER_CELL]   (default 3: the quick mode, about 2-3 minutes)
#   The benchmark (BENCHMARKS.md): installs what is missing, builds a Release tree in
#   build-bench/, starts 2 durable MariaDB shards (ports 33561-33562, state in
#   /tmp/seigo-bench-servers), runs bench/seigo_bench (B1 naive, B2 raw one-shard, B3 textbook
#   2PC, seigo cross-shard, seigo one-shard at 1, 8, 32 and 64 clients; P1, P2, P3, P5; the bank
#   of issue 12: random- against one-direction transfers, p99, a locking reader), then P4
#   under callgrind, prints the table and P1-P5 and writes build-bench/bench-results.json.
#   Then the Redis cells (bench/redis_bench.cc; 2 Redis instances on ports 36679-36680, state in
#   /tmp/seigo-bench-redis) at 32 clients: K2/K1, RA/RN, RH/RA, RM/RA, written to
#   build-bench/bench-redis.json. SEIGO_BENCH_ONLY=redis runs only those.
#   Then the RabbitMQ cells (bench/amqp_bench.cc; a broker on port 5722, state in
#   /tmp/seigo-bench-rabbitmq) at 32 clients: A1 raw confirmed publishes, A2/A2s the relay
#   draining an outbox backlog, E1/E10 end-to-end publishing transactions, G0/G1 the gacha pull
#   without/with its event, L commit-to-applied latency through a seigo::Consumer; prints A2/A1,
#   G1/G0 and L p50/p99, written to build-bench/bench-amqp.json. SEIGO_BENCH_ONLY=amqp runs only
#   those.
#   Then the seigod cells (bench/http_bench.cc; a seigod on port 36690 that the driver starts): T0
#   the library's cross-shard trade, T1 the same trade over HTTP (32 keep-alive connections), T2
#   with an idempotency key; prints T1/T0 and T2/T0 with p50/p99, written to
#   build-bench/bench-http.json, and the Python client's trade rate from one process
#   (bench/python_client_bench.py, for orientation). SEIGO_BENCH_ONLY=http runs only those.
#   Environment: SEIGO_BENCH_CLIENTS (default 1,8,32,64), SEIGO_BENCH_ONLY (redis, amqp or http).
set -euo pipefail

cd "$(dirname "$0")/.."
CELL_SECONDS=${1:-3}
CLIENTS=${SEIGO_BENCH_CLIENTS:-1,8,32,64}
export SEIGO_STATE_DIR=/tmp/seigo-bench-servers
export SEIGO_REDIS_DIR=/tmp/seigo-bench-redis
export SEIGO_RABBITMQ_DIR=/tmp/seigo-bench-rabbitmq
SERVERS=$PWD/scripts/servers.sh
REDIS=$PWD/scripts/redis.sh
RABBITMQ=$PWD/scripts/rabbitmq.sh
OUT=$PWD/build-bench
ONLY=${SEIGO_BENCH_ONLY:-}
case $ONLY in
  '' | redis | amqp | http) ;;
  *) echo "bench.sh: SEIGO_BENCH_ONLY must be redis, amqp or http, not '$ONLY'" >&2; exit 2 ;;
esac

bash scripts/install-deps.sh
cmake -S . -B "$OUT" -DCMAKE_BUILD_TYPE=Release -DSEIGO_BUILD_TESTS=OFF >/dev/null
cmake --build "$OUT" -j2 --target seigo_bench seigo_redis_bench seigo_amqp_bench \
  seigo_http_bench seigod >/dev/null
bash "$SERVERS" wipe >/dev/null
bash "$REDIS" wipe >/dev/null
bash "$RABBITMQ" wipe >/dev/null
trap 'bash "$SERVERS" stop >/dev/null 2>&1 || true; bash "$REDIS" stop >/dev/null 2>&1 || true
      bash "$RABBITMQ" stop >/dev/null 2>&1 || true' EXIT
bash "$SERVERS" start 2 --base-port 33561 | tail -1
# shellcheck disable=SC1091
. "$SEIGO_STATE_DIR/env"
if [[ $ONLY != amqp && $ONLY != http ]]; then
  bash "$REDIS" start 2 --base-port 36679 | tail -1
  # shellcheck disable=SC1091
  . "$SEIGO_REDIS_DIR/env"
fi
if [[ $ONLY != redis && $ONLY != http ]]; then
  bash "$RABBITMQ" start --port 5722 | tail -1
  # shellcheck disable=SC1091
  . "$SEIGO_RABBITMQ_DIR/env"
fi

redis_cells() {
  echo "=== Redis cells (32 clients, $CELL_SECONDS s each)"
  "$OUT/bench/seigo_redis_bench" --shards "$SEIGO_SHARDS" --redis "$SEIGO_REDIS" \
    --seconds "$CELL_SECONDS" --clients 32 --json "$OUT/bench-redis.json" |
    tee "$OUT/bench-redis.txt"
}
amqp_cells() {
  echo "=== RabbitMQ cells (32 clients, $CELL_SECONDS s each)"
  "$OUT/bench/seigo_amqp_bench" --shards "$SEIGO_SHARDS" --amqp "$SEIGO_AMQP" \
    --seconds "$CELL_SECONDS" --clients 32 --json "$OUT/bench-amqp.json" |
    tee "$OUT/bench-amqp.txt"
}
http_cells() {
  echo "=== seigod cells (32 clients, $CELL_SECONDS s each)"
  "$OUT/bench/seigo_http_bench" --shards "$SEIGO_SHARDS" --seigod "$OUT/seigod/seigod" \
    --seconds "$CELL_SECONDS" --clients 32 --port 36690 --json "$OUT/bench-http.json" |
    tee "$OUT/bench-http.txt"
  if [[ -f bench/python_client_bench.py ]]; then
    /usr/bin/python3 bench/python_client_bench.py --shards "$SEIGO_SHARDS" \
      --seigod "$OUT/seigod/seigod" --seconds "$CELL_SECONDS" --port 36691 |
      tee -a "$OUT/bench-http.txt"
  fi
}
if [[ $ONLY == http ]]; then
  http_cells
  exit 0
fi
if [[ $ONLY == redis ]]; then
  redis_cells
  exit 0
fi
if [[ $ONLY == amqp ]]; then
  amqp_cells
  exit 0
fi

echo "=== machine: $(nproc) cores, $(uname -r), $(mariadbd --version | sed 's/ for .*//')"
"$OUT/bench/seigo_bench" --shards "$SEIGO_SHARDS" --seconds "$CELL_SECONDS" --clients "$CLIENTS" \
  --json "$OUT/bench-results.json" | tee "$OUT/bench-table.txt"

# P4: instructions the coordinator process executes per cross-shard transaction (callgrind,
# instrumentation switched on only around a fixed run of 300 transactions at 1 client), turned into
# microseconds with this machine's rate measured by a calibration loop (callgrind count over
# native time of the same loop).
echo "=== P4 (callgrind)"
# Total instructions collected (callgrind's "totals:" line; "summary:" counts only before the
# instrumentation was switched on).
ir_of() { sed -n 's/^totals: \([0-9]*\).*/\1/p' "$1"; }
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.txn" \
  "$OUT/bench/seigo_bench" --shards "$SEIGO_SHARDS" --callgrind-txns 300 2>/dev/null
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.cal" \
  "$OUT/bench/seigo_bench" --calibrate 50000000 >/dev/null 2>&1
native=$("$OUT/bench/seigo_bench" --calibrate 50000000 | sed -n 's/.* iterations \([0-9.]*\) us.*/\1/p')
native_txn=$("$OUT/bench/seigo_bench" --shards "$SEIGO_SHARDS" --callgrind-txns 300 | tail -1)
python3 - "$(ir_of "$OUT/callgrind.txn")" "$(ir_of "$OUT/callgrind.cal")" "$native" \
  "$OUT/bench-results.json" "$native_txn" <<'EOF'
import json, sys
ir_txn_total, ir_cal, native_us, path, native_line = sys.argv[1:6]
ir_per_txn = int(ir_txn_total) / 300
rate = int(ir_cal) / float(native_us)          # instructions per microsecond, this machine
p4 = ir_per_txn / rate
fields = native_line.split()
user_us = float(fields[fields.index("user_us_per_txn") + 1])
sys_us = float(fields[fields.index("sys_us_per_txn") + 1])
print(f"instructions per cross-shard transaction (user space): {ir_per_txn:,.0f}; "
      f"calibration rate {rate:,.0f} instructions/us")
print(f"native getrusage of the same run: user {user_us:.1f} us + kernel {sys_us:.1f} us per "
      f"transaction (the kernel part is mostly loopback TCP, both directions)")
print(f"P4 {p4:.1f}")
d = json.load(open(path))
d.update({"P4_us": p4, "P4_instructions_per_txn": ir_per_txn,
          "P4_native_user_us_per_txn": user_us, "P4_native_sys_us_per_txn": sys_us})
json.dump(d, open(path, "w"), indent=2)
EOF
redis_cells
amqp_cells
http_cells
echo "results: $OUT/bench-results.json, $OUT/bench-redis.json, $OUT/bench-amqp.json, $OUT/bench-http.json"
