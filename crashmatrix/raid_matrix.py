#!/usr/bin/env python3
"""The crash matrix with Redis in the transaction: the raid demo (TESTING.md, "Crash matrix:
Redis"). Run it through crashmatrix/run-raid.sh, or:

  crashmatrix/raid_matrix.py --seigo build/seigo [--out DIR] [--seconds S] [--only REGEX]

It starts its own servers (2 MariaDB shards on ports 33471+, state /tmp/seigo-crashmatrix-raid;
2 Redis instances on ports 36771+, state /tmp/seigo-crashmatrix-raid-redis), with Redis
instance 0 reached through crashmatrix/proxy.py --protocol resp. For every cell (fault x mode)
it sets the raid up, runs `seigo demo raid run` while injecting the fault, then
`seigo demo raid audit` (which first runs resolver passes until nothing is in doubt) and counts
its VIOLATION lines. seigo mode must show none in every cell; naive mode (stamina, then HP, as
two writes) is the negative control and must show some over its cells.

Faults:
  none              baseline
  redis:kill9       kill -9 of Redis instance 0 mid-run, restarted 0.3 s later
  shard:kill9       kill -9 of shard 1's mariadbd mid-run, restarted 0.5 s later
  coord:<site>      the demo process SIGKILLs itself at the N-th time it reaches crash site
                    <site> (SEIGO_CRASH_AT), with a Redis branch in every transaction; the
                    application is then restarted for the rest of the run
  proxy:cut         the proxy closes Redis connections instead of forwarding a command (2 %)
  proxy:drop_prepare / drop_commit
                    the proxy forwards FCALL seigo2_prepare / seigo2_commit, swallows the
                    reply and closes the connection (10 %): a lost reply of a step that ran
Exit status: 0 if every seigo cell passed and naive mode showed violations, 1 otherwise, 2 on a
setup error. A summary table goes to stdout and DIR/summary.md.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SERVERS = os.path.join(ROOT, "scripts", "servers.sh")
REDIS = os.path.join(ROOT, "scripts", "redis.sh")
SHARD_BASE, REDIS_BASE, PROXY_PORT = 33471, 36771, 36779
SITES = ["before_prepare", "after_prepare", "before_decision", "after_decision", "during_phase2"]


def cells(rng):
    out = [("none", "seigo"), ("redis:kill9", "seigo"), ("redis:kill9", "naive"),
           ("shard:kill9", "seigo"), ("proxy:cut", "seigo"), ("proxy:cut", "naive"),
           ("proxy:drop_prepare", "seigo"), ("proxy:drop_commit", "seigo")]
    out += [("coord:" + s, "seigo") for s in SITES]
    return out


class World(harness.WorldBase):
    def __init__(self, args):
        super().__init__(args, "resp", PROXY_PORT, f"127.0.0.1:{REDIS_BASE}")
        self.env["SEIGO_STATE_DIR"] = "/tmp/seigo-crashmatrix-raid"
        self.env["SEIGO_REDIS_DIR"] = "/tmp/seigo-crashmatrix-raid-redis"

    def start(self):
        self.sh("bash", SERVERS, "wipe")
        self.sh("bash", REDIS, "wipe")
        self.sh("bash", SERVERS, "start", "2", "--base-port", str(SHARD_BASE))
        self.sh("bash", REDIS, "start", "2", "--base-port", str(REDIS_BASE))
        self.shards = ",".join(f"mysql://seigo:seigo@127.0.0.1:{SHARD_BASE + i}/seigo"
                               for i in range(2))
        self.redis = f"redis://127.0.0.1:{PROXY_PORT},redis://127.0.0.1:{REDIS_BASE + 1}"

    def stop(self):
        self.stop_proxy()
        self.sh("bash", SERVERS, "stop", check=False)
        self.sh("bash", REDIS, "stop", check=False)

    def seigo(self, *args, extra_env=None, timeout=120):
        env = dict(self.env)
        env["SEIGO_SHARDS"] = self.shards
        env["SEIGO_REDIS"] = self.redis
        if extra_env:
            env.update(extra_env)
        return subprocess.run([self.args.seigo, *args, "--txn-timeout-ms", "2000"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)


def run_cell(w, fault, mode, rng, log):
    seconds = w.args.seconds
    w.start_proxy()  # pass-through unless the fault says otherwise
    r = w.seigo("demo", "raid", "setup", "--players", "200", "--bosses", "3")
    if r.returncode != 0:
        raise RuntimeError("setup: " + r.stdout)
    if fault == "proxy:cut":
        w.start_proxy(cut=0.02)
    elif fault == "proxy:drop_prepare":
        w.start_proxy(drop=0.10, match=r"^FCALL seigo2_prepare ")
    elif fault == "proxy:drop_commit":
        w.start_proxy(drop=0.10, match=r"^FCALL seigo2_commit ")
    run_args = ["demo", "raid", "run", "--clients", "6", "--seconds", str(seconds), "--mode",
                mode]
    t0 = time.time()
    if fault.startswith("coord:"):
        site = fault.split(":", 1)[1]
        n = rng.randint(20, 300)
        r = w.seigo(*run_args, extra_env={"SEIGO_CRASH_AT": f"{site}:{n}"})
        log.write(f"--- armed run ({site}:{n}): exit {r.returncode}\n{r.stdout[-1500:]}\n")
        left = seconds - (time.time() - t0)
        if left > 0.5:
            run_args[6] = f"{left:.1f}"
            r = w.seigo(*run_args)
    else:
        proc = subprocess.Popen([w.args.seigo, *run_args, "--txn-timeout-ms", "2000"],
                                env={**w.env, "SEIGO_SHARDS": w.shards, "SEIGO_REDIS": w.redis},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if fault in ("redis:kill9", "shard:kill9"):
            time.sleep(rng.uniform(0.8, seconds * 0.6))
            script, idx, down = (REDIS, "0", 0.3) if fault == "redis:kill9" else (SERVERS, "1", 0.5)
            w.sh("bash", script, "kill", idx)
            time.sleep(down)
            w.sh("bash", script, "restart", idx)
        out, _ = proc.communicate(timeout=seconds + 120)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, out)
    log.write(f"--- run: exit {r.returncode}\n{r.stdout[-1500:]}\n")
    stats = w.stop_proxy()
    w.start_proxy()  # recovery and the audit reach instance 0 without faults
    a = w.seigo("demo", "raid", "audit", timeout=180)
    log.write(f"--- audit: exit {a.returncode}\n{a.stdout[-3000:]}\n")
    violations = len(re.findall(r"^VIOLATION", a.stdout, re.M))
    m = re.search(r"(\d+) violation\(s\)", a.stdout)
    if m:
        violations = max(violations, int(m.group(1)))
    runs = re.findall(r"(\d+) attacks committed", r.stdout)
    return {"fault": fault, "mode": mode, "audit_exit": a.returncode, "violations": violations,
            "attacks": runs[-1] if runs else "?", "proxy": stats}


def main():
    args = harness.parse_args(__doc__, os.path.join(ROOT, "build", "crashmatrix-raid"), 4.0)
    rng = random.Random(args.seed)
    w = World(args)
    results = []
    try:
        w.start()
        with open(os.path.join(args.out, "log.txt"), "w") as log:
            for fault, mode in cells(rng):
                if args.only and not re.search(args.only, f"{fault} {mode}"):
                    continue
                log.write(f"=== {fault} {mode}\n")
                t = time.time()
                res = run_cell(w, fault, mode, rng, log)
                res["seconds"] = round(time.time() - t, 1)
                results.append(res)
                print(f"{fault:22} {mode:6} attacks {res['attacks']:>6}  violations "
                      f"{res['violations']:>3}  audit exit {res['audit_exit']}  "
                      f"({res['seconds']} s) {res['proxy']}", flush=True)
                log.flush()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"raid_matrix: setup error: {e}", file=sys.stderr)
        w.stop()
        return 2
    w.stop()
    return harness.verdict(results, args.out, [
        ("fault", "fault"), ("mode", "mode"), ("attacks", "attacks"),
        ("violations", "violations"), ("audit exit", "audit_exit")])

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
