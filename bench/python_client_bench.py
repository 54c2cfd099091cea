#!/usr/bin/python3
"""The Python client's trade rate from one process (BENCHMARKS.md, "seigod"; for orientation,
no goal): starts a seigod on --port against --shards, seeds bench_py_players, and runs
cross-shard trades through clients/python/seigo_client.py from --clients threads of one Python
process for --seconds. Prints one line: `PY <trades/s> tx/s p50 <ms> p99 <ms> (<clients> threads)`.

    bench/python_client_bench.py --shards URL,... --seigod PATH [--seconds S] [--port P]
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients",
                                "python"))
import seigo_client  # noqa: E402

PLAYERS = 20000
DEBIT = "UPDATE bench_py_players SET gold = gold - ? WHERE player_id = ? AND gold >= ?"
CREDIT = "UPDATE bench_py_players SET gold = gold + ? WHERE player_id = ?"


def mysql(url, sql):
    u = urllib.parse.urlparse(url)
    subprocess.run(["mariadb", "-h", u.hostname, "-P", str(u.port), "-u",
                    urllib.parse.unquote(u.username), "-p" + urllib.parse.unquote(u.password or ""),
                    u.path.lstrip("/"), "-e", sql], check=True, capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", required=True)
    ap.add_argument("--seigod", required=True)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--port", type=int, default=36691)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()
    shards = a.shards.split(",")
    for url in shards:
        # Every shard gets every player; a trade's rows are on the shards that own them.
        mysql(url, "DROP TABLE IF EXISTS bench_py_players; CREATE TABLE bench_py_players "
                   "(player_id BIGINT PRIMARY KEY, gold BIGINT NOT NULL) ENGINE=InnoDB; "
                   "INSERT INTO bench_py_players SELECT seq, 1000000000000 FROM seq_1_to_%d"
                   % PLAYERS)
    d = tempfile.mkdtemp(prefix="seigo-py-bench-")
    conf = os.path.join(d, "seigod.toml")
    with open(conf, "w") as f:
        f.write('[server]\nlisten = "127.0.0.1:%d"\n[shards]\nurls = [%s]\n[statements]\n'
                'debit = "%s"\ncredit = "%s"\n' % (a.port, ", ".join('"%s"' % s for s in shards),
                                                   DEBIT, CREDIT))
    log = open(os.path.join(d, "seigod.log"), "w")
    proc = subprocess.Popen([a.seigod, "--config", conf], stdout=log, stderr=log)
    try:
        client = seigo_client.Client("http://127.0.0.1:%d" % a.port)
        for _ in range(200):
            try:
                if client.healthy():
                    break
            except seigo_client.SeigoError:
                pass
            time.sleep(0.05)
        lat, lock = [], threading.Lock()
        end = time.time() + a.seconds

        def worker(seed):
            rng = random.Random(seed)
            mine = []
            while time.time() < end:
                buyer, seller = rng.sample(range(1, PLAYERS + 1), 2)
                t0 = time.perf_counter()
                with client.transaction() as tx:
                    tx.sql("debit", key=buyer, params=[7, buyer, 7], expect_rows=1)
                    tx.sql("credit", key=seller, params=[7, seller], expect_rows=1)
                mine.append((time.perf_counter() - t0) * 1000)
            with lock:
                lat.extend(mine)

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(a.clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        lat.sort()
        print("PY %.0f tx/s p50 %.2f ms p99 %.2f ms (%d threads, one process)" % (
            len(lat) / a.seconds, lat[len(lat) // 2], lat[min(len(lat) - 1, len(lat) * 99 // 100)],
            a.clients))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for url in shards:
            mysql(url, "DROP TABLE IF EXISTS bench_py_players")


if __name__ == "__main__":
    main()
