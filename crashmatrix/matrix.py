#!/usr/bin/env python3
"""The real-process crash matrix (TESTING.md, "Crash matrix"). Run it through crashmatrix/run.sh.

For every cell (fault x mode) it runs `seigo demo run` against its own MariaDB shards while
injecting the fault, then restarts whatever is down, runs `seigo recover` until it exits 0
(bounded), runs `seigo demo audit` and counts its VIOLATION lines. seigo mode must show none;
naive mode (two local transactions per trade) is the negative control and must show some.

Faults:
  coord:<site>     the demo process SIGKILLs itself at the N-th time it reaches crash site <site>
                   (SEIGO_CRASH_AT=<site>:N, N drawn so that it fires mid-run); then the
                   "application" is restarted (an unarmed demo run for the rest of the time).
  resolver:<site>  a coordinator crash first leaves transactions in doubt (before_decision or
                   after_decision); then, while trades go on, a resolver armed with <site> dies
                   there: a separate `seigo recover` (even runs) or the background resolver of
                   a second demo process (odd runs).
  coord:kill       kill -9 of the demo process at a random time, then the application restarts.
                   (Naive mode reaches no crash site; this is its coordinator crash.)
  shard:kill9      kill -9 of a random shard's mariadbd at a random time, restart 0.2-1.5 s later.
  proxy:cut        shard 1 is reached through crashmatrix/proxy.py, which closes connections
                   instead of forwarding a command (seeded probability) and cuts every
                   connection at random moments.
  proxy:drop_commit / drop_prepare / drop_xacommit
                   the proxy forwards the matching statement (the decider's "INSERT decision;
                   COMMIT" and plain COMMIT / XA END;XA PREPARE / XA COMMIT), swallows the whole
                   reply, then closes the connection: a lost reply for a statement that ran.
  coord:pause      SIGSTOP of the demo process for 1.2-2.5x the deadline while `seigo recover`
                   passes run, then SIGCONT: a frozen coordinator wakes up after being fenced.
  shard:pause      SIGSTOP of a random shard's mariadbd for 0.5-2 s, then SIGCONT.
  none             baseline without faults (also measures throughput to place crash points).
  deploy2          two seigo deployments on the same servers (databases seigo and seigo_b):
                   deployment B's demo dies at its commit point (after_decision) while deployment
                   A's resolvers (A's demo with its background resolver, and `seigo recover` on
                   A's URLs back to back) run past B's deadline; then B is recovered and both
                   are audited. A resolver must never touch another deployment's branches.
  dst              servers and application in TZ=America/New_York under libfaketime, the clock
                   set so that the trades cross the autumn change (2026-11-01 02:00 EDT ->
                   01:00 EST) with time_zone=SYSTEM; a coordinator crash (after_prepare, odd
                   runs) or a kill -9 of a shard (even runs); recover, audit.
  (deploy2 and dst are in the full set; with --quick only when --only names them.)

Also reported for every seigo run, outside the verdict: "stalled", transactions still in doubt
more than 5 s past their deadline although the application (with its background resolver) ran
until the end (crashmatrix/results/owner-id-reuse-2026-12-01.md, repro-owner-id-reuse.sh).
"""

import argparse
import datetime
import fcntl
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

COORD_SITES = ["before_prepare", "after_prepare", "before_decision", "after_decision",
               "during_phase2"]
RESOLVER_SITES = ["resolver_after_fence", "resolver_before_apply"]

# deploy2: deployment B's database on every matrix server (deployment A is the demo in `seigo`).
DB_B = "seigo_b"

# dst: the autumn change in America/New_York, 2026-11-01 02:00 EDT (06:00 UTC) -> 01:00 EST.
DST_TZ = "America/New_York"
DST_CHANGE = 1793512800  # epoch seconds of 2026-11-01 06:00:00 UTC
FAKETIME_LIBS = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/faketime/libfaketimeMT.so.1"]

PROXY_FAULTS = {
    # name: (drop_match regex or None, drop_prob, cut_prob, cut-all moments per run)
    "cut": (None, 0.0, 0.003, 2),
    # The commit point: the decider's (and, with record_one_shard_commits, a one-shard
    # transaction's) "...;INSERT INTO seigo_decision ...;COMMIT" batch, and a plain COMMIT. (The
    # decider is a local transaction again since b9bf615: the XA ... ONE PHASE pattern of
    # ff1d49a matched nothing, and this cell silently dropped no reply.)
    "drop_commit": (r"(^|;)\s*COMMIT\s*$", 0.05, 0.0, 0),
    "drop_prepare": (r"XA PREPARE", 0.05, 0.0, 0),
    "drop_xacommit": (r"^\s*XA COMMIT", 0.05, 0.0, 0),
    # The proxy self-test: every decision insert (the decider's commit and the coordinator's
    # fence) loses its reply, so seigo cannot learn the outcome: outcome_unknown.
    "selftest": (r"(^|;)INSERT INTO seigo_decision", 1.0, 0.0, 0),
}


def cells(extended=True):
    """(fault, mode) pairs in run order; `extended`: with the deploy2 and dst cells."""
    out = [("none", "seigo"), ("none", "naive")]
    out += [(f"coord:{s}", "seigo") for s in COORD_SITES]
    out += [(f"resolver:{s}", "seigo") for s in RESOLVER_SITES]
    for f in ["coord:kill", "shard:kill9", "proxy:cut", "proxy:drop_commit"]:
        out += [(f, "seigo"), (f, "naive")]
    out += [("proxy:drop_prepare", "seigo"), ("proxy:drop_xacommit", "seigo")]
    out += [("coord:pause", "seigo"), ("shard:pause", "seigo")]
    if extended:
        # Last: dst runs its servers under libfaketime and leaves them so (nothing follows).
        out += [("deploy2", "seigo"), ("dst", "seigo")]
    return out


class ServerLost(Exception):
    """A shard's mariadbd does not come back after a restart (it crashes during its own crash
    recovery): the run has no verdict; the matrix sets up fresh shards and goes on."""


def log(msg):
    print(f"crashmatrix: {msg}", flush=True)


class Matrix:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.n = a.shards
        self.ports = [a.base_port + i for i in range(self.n)]
        self.proxy_port = a.base_port + 10
        self.control_port = a.base_port + 11
        self.proxied = self.n - 1  # the shard behind the proxy in proxy:* cells
        self.direct = self.urls("seigo")
        self.direct_b = self.urls(DB_B)  # deploy2: deployment B
        self.via_proxy = ",".join(
            f"mysql://seigo:seigo@127.0.0.1:{self.proxy_port if i == self.proxied else p}/seigo"
            for i, p in enumerate(self.ports))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("SEIGO_")}  # never the tests' servers or crash sites
        self.env["SEIGO_STATE_DIR"] = a.state_dir
        # The environment of the servers (servers.sh passes it on to mariadbd) and of the seigo
        # processes: the plain one, except in the dst cell (TZ + libfaketime for both).
        self.server_env, self.app_env, self.server_kind = self.env, self.env, "plain"
        self.deployments = [("A", self.direct)]  # (name, shard URLs) audited after each run
        self.details = []  # (cell, run, notes) of the deploy2/dst runs, for the report
        self.cell_rate = {}  # fault -> committed trades/s measured in that cell (crash points)
        self.dst_lead = 10.0  # dst: seconds from choosing the fake clock to the first trade
        self.proxy = None
        self.rate = 800.0  # committed trades/s, measured by the seigo baseline
        self.rows = []
        self.lost = 0
        self.commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip()
        self.dirty = bool(subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "src", "include", "tools"],
            capture_output=True, text=True).stdout.strip())
        os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
        self.jsonl = open(os.path.join(a.out, "runs.jsonl"), "w")

    def urls(self, db):
        return ",".join(f"mysql://seigo:seigo@127.0.0.1:{p}/{db}" for p in self.ports)

    # ---- processes -------------------------------------------------------------------------

    def servers(self, *args, check=True):
        r = subprocess.run(["bash", os.path.join(ROOT, "scripts/servers.sh"), *map(str, args)],
                           env=self.server_env, capture_output=True, text=True)
        if check and r.returncode != 0:
            msg = f"servers.sh {' '.join(map(str, args))} failed:\n{r.stdout}{r.stderr}"
            if args and args[0] in ("start", "restart") and "did not start" in r.stderr:
                raise ServerLost(msg)
            # libfaketime (dst cell) sometimes fails in a helper process of servers.sh: "sem_open
            # failed" for a shared-memory clock whose creating process has exited. Not seigo's:
            # the run gets no verdict, fresh shards are set up, as for a lost server.
            if "libfaketime" in r.stdout + r.stderr and "sem_open failed" in r.stdout + r.stderr:
                raise ServerLost(msg)
            raise RuntimeError(msg)
        return r

    def seigo(self, args, shards=None, crash_at=None, timeout=120):
        env = dict(self.app_env)
        if crash_at:
            env["SEIGO_CRASH_AT"] = crash_at
        cmd = [self.a.seigo, *args, "--shards", shards or self.direct,
               "--txn-timeout-ms", str(self.a.txn_timeout_ms)]
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            return r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:
            return "timeout", e.stdout or "", e.stderr or ""

    def demo(self, seconds, mode, shards=None, crash_at=None, dep="A"):
        """Starts `seigo demo run` in the background; returns the Popen (output in temp files)."""
        env = dict(self.app_env)
        if crash_at:
            env["SEIGO_CRASH_AT"] = crash_at
        cmd = [self.a.seigo, "demo", "run", "--shards", shards or self.direct,
               "--txn-timeout-ms", str(self.a.txn_timeout_ms), "--clients", str(self.a.clients),
               "--seconds", f"{seconds:.2f}", "--mode", mode]
        out = open(os.path.join(self.run_dir, f"demo{len(self.demos)}.out"), "w+")
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        p.out, p.seconds, p.crash_at, p.t0 = out, seconds, crash_at, time.monotonic()
        p.wall0, p.dep = time.time(), dep
        self.demos.append(p)
        return p

    def wait_demo(self, p):
        """Waits for a demo process (a hang past its time + 60 s is killed and noted)."""
        try:
            p.wait(timeout=p.seconds + 60)
        except subprocess.TimeoutExpired:
            self.note(f"demo run hung {p.seconds + 60:.0f} s: killed")
            self.hung += 1
            p.kill()
            p.wait()
        p.wall1 = time.time()
        p.out.flush()
        p.out.seek(0)
        p.text = p.out.read()
        p.out.close()
        return p

    def crashed_at_site(self, p):
        return p.returncode == -signal.SIGKILL and "SEIGO_CRASH_AT=" in p.text

    def start_proxy(self):
        logf = open(os.path.join(self.a.out, "proxy.log"), "a")
        self.proxy = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "proxy.py"), "--listen", str(self.proxy_port),
             "--target", f"127.0.0.1:{self.ports[self.proxied]}", "--control",
             str(self.control_port), "--seed", str(self.a.seed),
             "--parent-pid", str(os.getpid())],
            stdout=logf, stderr=logf)
        for _ in range(100):
            try:
                self.ctl("stats")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the proxy did not start (see proxy.log)")

    def ctl(self, line):
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as s:
            s.sendall((line + "\n").encode())
            reply = s.makefile().readline().strip()
        if reply.startswith("error"):
            raise RuntimeError(f"proxy control '{line}': {reply}")
        return reply

    def proxy_stats(self):
        return {k: int(v) for k, v in (kv.split("=") for kv in self.ctl("stats").split())}

    # ---- one run ---------------------------------------------------------------------------

    def note(self, msg):
        self.notes.append(msg)

    def sleep_until(self, t0, t):
        d = t0 + t - time.monotonic()
        if d > 0:
            time.sleep(d)

    def servers_up(self):
        """Restarts every shard that is down."""
        for line in self.servers("status", check=False).stdout.splitlines():
            f = line.split()
            if len(f) == 4 and f[3] != "up":
                self.servers("restart", f[0])
                self.note(f"shard {f[0]} was down after the run: restarted")

    def setup(self, shards=None):
        for _ in range(3):
            rc, out, err = self.seigo(["demo", "setup", "--players", str(self.a.players)],
                                      shards=shards)
            if rc == 0:
                return
            if rc == 4:  # something from an earlier run still in doubt
                self.recover_loop(shards)
                continue
            raise RuntimeError(f"demo setup failed (rc {rc}): {out}{err}")
        raise RuntimeError("demo setup refused three times")

    def recover_loop(self, shards=None):
        """`seigo recover` until it exits 0; sleeps 0.5 s between tries (deadlines pass)."""
        text = []
        for i in range(1, self.a.recover_tries + 1):
            rc, out, err = self.seigo(["recover"], shards=shards, timeout=60)
            text.append(f"--- recover try {i}: rc {rc}\n{out}{err}")
            if rc == 0:
                return i, rc, "".join(text)
            if rc == 3:
                self.servers_up()
            time.sleep(0.5)
        return self.a.recover_tries, rc, "".join(text)

    def run_one(self, fault, mode, i):
        name = f"{fault.replace(':', '_')}-{mode}-{i}"
        self.run_dir = os.path.join(self.a.out, "logs", name)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        os.makedirs(self.run_dir)
        self.demos, self.notes, self.hung, self.crash_in_doubt = [], [], 0, -1
        self.extra_violations = []  # broken invariants a cell checks itself (deploy2)
        self.run_rng = random.Random(self.rng.getrandbits(64))
        t0 = time.monotonic()
        row = dict(fault=fault, mode=mode, run=i, fired=0, violations=0, in_doubt=-1,
                   crash_in_doubt=-1, audit_rc=None, recover_tries=0, recover_rc=None, hung=0,
                   stray_trx=0, violations_after_restart=None, committed=0, gave_up=0,
                   unknown=0, half_done=0, error=False, server_lost=False)
        try:
            self.run_body(fault, mode, i, row)
        except ServerLost as e:
            row["server_lost"] = True
            for p in self.demos:
                if p.returncode is None:
                    p.kill()
                    self.wait_demo(p)
            self.replace_lost_servers(str(e))
        except Exception as e:  # noqa: BLE001 - record it and go on with the next run
            row["error"] = True
            self.note(f"harness error: {type(e).__name__}: {str(e).strip()[:300]}")
            for p in self.demos:
                if p.returncode is None:
                    p.kill()
                    self.wait_demo(p)
            try:
                self.heal(row)
            except ServerLost as e2:
                row["server_lost"] = True
                self.replace_lost_servers(str(e2))
        row.update(seconds=round(time.monotonic() - t0, 2), notes=self.notes, hung=self.hung,
                   crash_in_doubt=self.crash_in_doubt)
        self.rows.append(row)
        if fault in ("deploy2", "dst"):
            self.details.append((fault, i, list(self.notes)))
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        flag = "" if not row["violations"] else f"  <-- {row['violations']} VIOLATION line(s)"
        if mode == "seigo" and (row["violations"] or row["error"] or row["recover_rc"] != 0
                                or row["stray_trx"]):
            flag += (f"  (audit rc {row['audit_rc']}, recover rc {row['recover_rc']} after "
                     f"{row['recover_tries']} tries, {row['stray_trx']} stray InnoDB "
                     f"transaction(s); see {self.run_dir})")
        log(f"{fault:28s} {mode:5s} #{i}: fired={row['fired']} committed={row['committed']} "
            f"gave_up={row['gave_up']} unknown={row['unknown']} in_doubt={row['in_doubt']} "
            f"recover_tries={row['recover_tries']} {row['seconds']:.1f}s{flag}"
            + (f" [{'; '.join(self.notes)}]" if self.notes else ""))
        return row

    def run_body(self, fault, mode, i, row):
        # deploy2 audits two deployments; dst runs its servers under libfaketime.
        self.deployments = [("A", self.direct)] + ([("B", self.direct_b)]
                                                  if fault == "deploy2" else [])
        if fault != "dst":
            self.use_servers("plain")
        self.servers_up()
        if self.proxy:
            self.ctl("reset")
            self.ctl(f"set seed {self.run_rng.getrandbits(32)}")
        if fault == "dst":
            self.dst_prepare(row)  # servers under faketime, then the setup, then the clock
        else:
            if fault == "deploy2":
                self.create_db(DB_B)
            for _, urls in self.deployments:
                self.setup(urls)
        row["fired"] = self.inject(fault, mode, i)
        for p in self.demos:
            if p.returncode is None:
                self.wait_demo(p)
        row.update(self.demo_stats())
        if self.proxy:
            self.ctl("pass")
        self.servers_up()
        row["in_doubt"], row["recover_tries"], row["recover_rc"] = 0, 0, 0
        row["audit_rc"], row["violations"], row["error"] = 0, 0, False
        after = []
        for dep, urls in self.deployments:
            tag = "" if len(self.deployments) == 1 else f"-{dep}"
            who = "" if len(self.deployments) == 1 else f"deployment {dep}: "
            # What the run left in doubt for the after-run `seigo recover` (the restarted
            # application's resolver usually finishes most of it first).
            n = self.in_doubt(save=f"status-after-run{tag}.txt", shards=urls)
            row["in_doubt"] = n if row["in_doubt"] < 0 or n < 0 else row["in_doubt"] + n
            if n > 0:
                self.note(f"{who}{n} in doubt after the run")
            # The application's own background resolver ran until the end (seigo mode, its last
            # demo exited normally): nothing should then be left far past its deadline. Reported
            # (a liveness problem, e.g. a resolver that waits on a reused owner thread id after
            # a quick shard restart), not part of the verdict.
            if mode == "seigo" and any(d.dep == dep and d.returncode == 0 for d in self.demos):
                late = self.overdue(os.path.join(self.run_dir, f"status-after-run{tag}.txt"))
                if late:
                    row["stalled"] = row.get("stalled", 0) + len(late)
                    self.note(f"STALLED: {who}{len(late)} transaction(s) still in doubt "
                              f"{max(late):.0f}s past the deadline although the application's "
                              f"resolver ran until the end (status-after-run{tag}.txt)")
            tries, rc, rec_text = self.recover_loop(urls)
            row["recover_tries"] = max(row["recover_tries"], tries)
            if rc != 0:
                row["recover_rc"] = rc
            arc, aout, aerr = self.seigo(["demo", "audit"], shards=urls, timeout=60)
            violations = [l for l in aout.splitlines() if l.startswith("VIOLATION")]
            if len(self.deployments) > 1:
                row[f"violations_{dep}"] = len(violations)
                self.note(f"{who}audit rc {arc}, {len(violations)} VIOLATION line(s)"
                          + (f": {'; '.join(v[11:] for v in violations[:4])}" if violations
                             else ""))
            if arc != 0:
                row["audit_rc"] = arc
            row["violations"] += len(violations)
            row["error"] |= arc not in (0, 1) or (arc == 1 and not violations)
            after.append(f"{'=' * 20} {who or 'deployment'} {urls}\n{rec_text}--- audit: rc "
                         f"{arc}\n{aout}{aerr}")
        for v in self.extra_violations:
            self.note(f"VIOLATION: {v}")
            after.append(f"VIOLATION: {v}\n")
        row["violations"] += len(self.extra_violations)
        # Every seigo process has exited and `seigo recover` found nothing in doubt: no InnoDB
        # transaction may be left on any shard. One that is left is invisible to XA RECOVER
        # and holds its row locks (see TESTING.md, "limbo branch").
        # A transaction of a process killed moments ago, or one that InnoDB's crash recovery is
        # still rolling back in the background after a shard restart, is not a leftover: poll for
        # up to 10 s (CI saw such transactions vanish within seconds) and count what remains.
        trx = self.innodb_trx()
        deadline = time.monotonic() + 10
        while any(trx.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
            trx = self.innodb_trx()
        row["stray_trx"] = sum(len(t) for t in trx.values())
        with open(os.path.join(self.run_dir, "after.txt"), "w") as f:
            f.write(f"{''.join(after)}--- information_schema."
                    f"innodb_trx after recovery:\n{json.dumps(trx, indent=1)}\n")
        if fault == "dst":
            self.dst_after(row)
        if row["stray_trx"]:
            self.note(f"{row['stray_trx']} stray InnoDB transaction(s) after recovery: "
                      + "; ".join(f"shard {s}: {t}" for s, t in trx.items() if t))
        # Naive violations are expected and permanent (setup reseeds before the next run).
        if (mode == "seigo" and row["violations"]) or row["stray_trx"] or row["error"]:
            self.heal(row)

    def innodb_trx(self):
        """{shard: [(trx_id, state, started)]} of InnoDB transactions on each shard."""
        out = {}
        for i in range(self.n):
            r = subprocess.run(
                ["mariadb", f"--defaults-file={self.a.state_dir}/mariadb-{i}/my.cnf", "-N", "-B",
                 "-e", "SELECT trx_id, trx_state, trx_started, trx_mysql_thread_id, "
                 "LEFT(IFNULL(trx_query, ''), 80) FROM information_schema.innodb_trx"],
                capture_output=True, text=True, timeout=30)
            out[i] = [l.split("\t") for l in r.stdout.splitlines() if l.strip()]
        return out

    def replace_lost_servers(self, why):
        """A mariadbd that crashes in its own crash recovery stays down: keep its error log,
        wipe the state dir, start fresh shards (the next run's setup reseeds them)."""
        self.lost += 1
        first = why.strip().splitlines()[0] if why.strip() else why
        for i in range(self.n):
            src = os.path.join(self.a.state_dir, f"mariadb-{i}", "error.log")
            if os.path.exists(src):
                with open(src, errors="replace") as f:
                    tail = f.readlines()[-400:]
                with open(os.path.join(self.run_dir, f"mariadb-{i}-error.log.tail"), "w") as f:
                    f.writelines(tail)
        if self.a.keep_lost:
            dst = f"{self.a.state_dir.rstrip('/')}-lost-{self.lost}"
            shutil.rmtree(dst, ignore_errors=True)
            self.servers("stop", check=False)
            shutil.copytree(self.a.state_dir, dst, symlinks=True)
            self.note(f"lost shard's state kept in {dst}")
        self.note(f"SHARD LOST: {first} (mariadbd aborts in its crash recovery, see "
                  f"mariadb-*-error.log.tail); fresh shards set up, this run has no verdict")
        self.servers("wipe", check=False)
        self.servers("start", self.n, "--base-port", self.a.base_port)

    def heal(self, row):
        """Diagnosis and clean-up after a bad run: stop and start every shard (a transaction
        InnoDB still holds comes back as a prepared XA branch), `seigo recover`, audit again.
        The next run starts from a clean state either way (demo setup reseeds)."""
        try:
            self.servers("stop")
            self.servers("start", self.n, "--base-port", self.a.base_port)
            v, out = 0, []
            for dep, urls in self.deployments:
                tries, rc, text = self.recover_loop(urls)
                arc, aout, aerr = self.seigo(["demo", "audit"], shards=urls, timeout=60)
                n = sum(1 for l in aout.splitlines() if l.startswith("VIOLATION"))
                v += n
                who = "" if len(self.deployments) == 1 else f"deployment {dep}: "
                self.note(f"after a restart of every shard + {who}`seigo recover` ({tries} "
                          f"tries, rc {rc}): {n} VIOLATION line(s)")
                out.append(f"{text}--- audit {who}: rc {arc}\n{aout}{aerr}")
            row["violations_after_restart"] = v
            with open(os.path.join(self.run_dir, "after-restart.txt"), "w") as f:
                f.write("".join(out))
        except Exception as e:  # noqa: BLE001
            self.note(f"restart after a bad run failed: {e}")

    def demo_stats(self, demos=None):
        """Sums what the demo processes report (a killed one: its last progress line)."""
        st = dict(committed=0, gave_up=0, unknown=0, half_done=0)
        for p in self.demos if demos is None else demos:
            text = getattr(p, "text", "")
            final = re.search(r"(\d+) trades committed.*gave up (\d+), unknown (\d+)"
                              r"(?:, half-done (\d+))?", text)
            if final:
                vals = final.groups()
            else:
                prog = re.findall(r"\] \w+: (\d+) trades .*gave-up (\d+)\s+unknown (\d+)"
                                  r"(?:\s+half-done (\d+))?", text)
                if not prog:
                    continue
                vals = prog[-1]
            for k, v in zip(["committed", "gave_up", "unknown", "half_done"], vals):
                st[k] += int(v or 0)
        return st

    # ---- faults ----------------------------------------------------------------------------

    def inject(self, fault, mode, i):
        """Runs the traffic with the fault; returns how often / whether the fault fired."""
        S, r = self.a.seconds, self.run_rng
        kind, _, what = fault.partition(":")
        if kind == "none":
            p = self.wait_demo(self.demo(S, mode))
            if mode == "seigo":
                st = self.demo_stats()
                if st["committed"] > 0:
                    self.rate = st["committed"] / S
            return 0
        if kind == "coord" and what in COORD_SITES:
            # Each crash site is reached about once per trade (two shards per trade).
            n = max(1, int(r.uniform(0.1, 0.6) * self.rate * S))
            p = self.wait_demo(self.demo(S, mode, crash_at=f"{what}:{n}"))
            fired = self.crashed_at_site(p)
            self.note(f"SEIGO_CRASH_AT={what}:{n} {'fired' if fired else 'not reached'} "
                      f"after {time.monotonic() - p.t0:.1f}s")
            self.app_restart(p, mode)
            return int(fired)
        if kind == "resolver":
            return self.resolver_cell(what, mode, i)
        if fault == "coord:kill":
            p = self.demo(S, mode)
            at = r.uniform(0.25, 0.75) * S
            self.sleep_until(p.t0, at)
            fired = p.poll() is None
            p.kill()
            self.wait_demo(p)
            self.note(f"kill -9 demo at {at:.1f}s")
            self.app_restart(p, mode)
            return int(fired)
        if fault == "shard:kill9":
            p = self.demo(S, mode)
            # Down for up to 3/4 of the run: often past the transactions' deadlines.
            at, down, shard = r.uniform(0.2, 0.6) * S, r.uniform(0.2, 0.75 * S), r.randrange(self.n)
            self.sleep_until(p.t0, at)
            self.servers("kill", shard)
            time.sleep(down)
            self.servers("restart", shard)
            self.note(f"kill -9 shard {shard} at {at:.1f}s, down {down:.1f}s")
            self.wait_demo(p)
            return 1
        if fault == "coord:pause":
            # A frozen (not dead) coordinator: SIGSTOP the demo for longer than the deadline
            # while resolvers run, then SIGCONT. Its prepared transactions are fenced (or found
            # committed) behind its back; when it wakes up it must not commit a fenced one.
            p = self.demo(S, mode)
            at = r.uniform(0.2, 0.5) * S
            pause = r.uniform(1.2, 2.5) * self.a.txn_timeout_ms / 1000.0
            self.sleep_until(p.t0, at)
            if p.poll() is not None:
                return 0
            p.send_signal(signal.SIGSTOP)
            t_stop, fenced, passes = time.monotonic(), 0, 0
            with open(os.path.join(self.run_dir, "recover-during-pause.out"), "w") as f:
                while time.monotonic() - t_stop < pause:
                    rc, out, err = self.seigo(["recover"], timeout=60)
                    passes += 1
                    fenced += out.count("decided abort (deadline passed)")
                    f.write(f"--- recover at +{time.monotonic() - t_stop:.2f}s: rc {rc}\n"
                            f"{out}{err}")
                    time.sleep(0.2)
            p.send_signal(signal.SIGCONT)
            self.note(f"SIGSTOP demo at {at:.1f}s for {time.monotonic() - t_stop:.1f}s; "
                      f"{passes} `seigo recover` pass(es) meanwhile fenced {fenced} transaction(s)")
            self.crash_in_doubt = fenced
            self.wait_demo(p)
            return 1
        if fault == "shard:pause":
            # A frozen shard: SIGSTOP a random mariadbd, SIGCONT 0.5-2 s later. Nothing fails,
            # everything waits; deadlines pass in the middle of commits.
            p = self.demo(S, mode)
            at, pause, shard = r.uniform(0.2, 0.5) * S, r.uniform(0.5, 2.0), r.randrange(self.n)
            pidfile = os.path.join(self.a.state_dir, f"mariadb-{shard}", "mariadbd.pid")
            pid = int(open(pidfile).read().strip())
            self.sleep_until(p.t0, at)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(pause)
            os.kill(pid, signal.SIGCONT)
            self.note(f"SIGSTOP shard {shard} at {at:.1f}s for {pause:.1f}s")
            self.wait_demo(p)
            return 1
        if kind == "proxy":
            return self.proxy_cell(what, mode)
        if fault == "deploy2":
            return self.deploy2_cell(i)
        if fault == "dst":
            return self.dst_cell(i)
        raise ValueError(f"unknown fault {fault}")

    @staticmethod
    def overdue(path, min_s=5.0):
        """Seconds past the deadline of each transaction a saved `seigo status` lists more than
        `min_s` past it."""
        out = []
        with open(path) as f:
            for line in f:
                m = re.match(r"[0-9a-f]{32}\s+\d+\s+\S+\s+\w+\s+\S+\s+\+([\d.]+)s", line)
                if m and float(m.group(1)) > min_s:
                    out.append(float(m.group(1)))
        return out

    def in_doubt(self, save=None, shards=None):
        """How many transactions `seigo status` lists as in doubt (-1: it failed)."""
        rc, out, err = self.seigo(["status"], shards=shards, timeout=60)
        if save:
            with open(os.path.join(self.run_dir, save), "w") as f:
                f.write(f"rc {rc}\n{out}{err}")
        m = re.search(r"^(\d+) in doubt", out, re.M)
        return int(m.group(1)) if m else -1

    def app_restart(self, p, mode, seconds=None):
        """The application comes back: an unarmed demo run for the rest of the run time."""
        if p.returncode is not None and p.returncode < 0:
            n = self.in_doubt(save=f"status-after-crash-{len(self.demos)}.txt")
            self.crash_in_doubt = max(self.crash_in_doubt, 0) + max(n, 0)
            self.note(f"{n} in doubt after the crash")
        rest = max(1.0, (seconds or self.a.seconds) - (time.monotonic() - p.t0))
        self.wait_demo(self.demo(rest, mode))

    def resolver_cell(self, site, mode, i):
        S, r = self.a.seconds, self.run_rng
        # Phase A: a coordinator dies with transactions in doubt. before_decision leaves
        # branches without a decision (the resolver fences: resolver_after_fence);
        # after_decision leaves a commit row (the resolver applies it).
        pre = "before_decision" if site == "resolver_after_fence" or i % 2 else "after_decision"
        n = max(1, int(r.uniform(0.1, 0.3) * self.rate * S))
        a = self.wait_demo(self.demo(S / 2, mode, crash_at=f"{pre}:{n}"))
        fired_a = self.crashed_at_site(a)
        rest = max(1.5, S - (time.monotonic() - a.t0))
        fired_b = False
        if i % 2 == 0:
            # Phase B, variant 1: trades go on while armed `seigo recover` processes run back to
            # back until one dies at the site. The trades start 0.3 s after the crash, so that
            # their own background resolver (first pass 1 s after start) does not win the race
            # to A's leftovers (deadline <= 1 s after the crash) every time.
            t_b = time.monotonic() + 0.3
            b = None
            tries = 0
            with open(os.path.join(self.run_dir, "armed-recover.out"), "w") as f:
                while not fired_b and (b is None or b.poll() is None):
                    if b is None and time.monotonic() >= t_b:
                        b = self.demo(rest, mode)
                    tries += 1
                    rc, out, err = self.seigo(["recover"], crash_at=f"{site}:1", timeout=60)
                    f.write(f"--- armed recover {tries} at {time.monotonic() - t_b:+.2f}s: "
                            f"rc {rc}\n{out}{err}")
                    fired_b = rc == -signal.SIGKILL
                    if not fired_b:
                        time.sleep(0.05)
            if b is None:
                b = self.demo(rest, mode)
            self.wait_demo(b)
            self.note(f"A: {pre}:{n} {'fired' if fired_a else 'not reached'}; B: armed "
                      f"`seigo recover` x{tries}, {'died at ' + site if fired_b else 'site not reached'}")
        else:
            # Phase B, variant 2: a second application process whose background resolver
            # (and start-up recovery) is armed; then the application restarts again.
            b = self.wait_demo(self.demo(rest, mode, crash_at=f"{site}:1"))
            fired_b = self.crashed_at_site(b)
            self.note(f"A: {pre}:{n} {'fired' if fired_a else 'not reached'}; B: demo with "
                      f"armed background resolver {'died at ' + site if fired_b else 'site not reached'}"
                      f" after {time.monotonic() - b.t0:.1f}s")
            if fired_b:
                self.app_restart(b, mode)
        return int(fired_a and fired_b)

    def proxy_cell(self, what, mode):
        S, r = self.a.seconds, self.run_rng
        match, drop_prob, cut_prob, cut_alls = PROXY_FAULTS[what]
        if what == "selftest":
            S = max(S, 2.0)
        p = self.demo(S, mode, shards=self.via_proxy)
        # Faults start once the demo has opened its connections (seigo's start-up statements
        # must get through: otherwise the demo just exits with "unavailable").
        self.sleep_until(p.t0, 0.3)
        if match:
            self.ctl(f"set drop_match {match}")
            self.ctl(f"set drop_prob {drop_prob}")
        if cut_prob:
            self.ctl(f"set cut_prob {cut_prob}")
        for at in sorted(r.uniform(0.3, 0.8) * S for _ in range(cut_alls)):
            self.sleep_until(p.t0, at)
            self.note(f"at {at:.1f}s proxy {self.ctl('cut all')}")
        self.wait_demo(p)
        self.ctl("pass")
        st = self.proxy_stats()
        self.note(f"proxy: {st['dropped']} repl(ies) dropped, {st['cut']} connection(s) cut, "
                  f"{st['matched']} matching statement(s), {st['cmds']} command(s)")
        if match and st["matched"] == 0 and st["cmds"] > 0:
            # A pattern that matches nothing tests nothing: the SQL seigo sends has changed.
            raise RuntimeError(f"the proxy's drop pattern {match!r} matched none of "
                               f"{st['cmds']} commands: update PROXY_FAULTS")
        return st["dropped"] + st["cut"]

    # ---- deploy2: two deployments on the same servers ---------------------------------------

    def sql(self, shard, query, env=None):
        """Runs `query` as root on matrix shard `shard`; returns its rows (tab-separated)."""
        r = subprocess.run(
            ["mariadb", f"--defaults-file={self.a.state_dir}/mariadb-{shard}/my.cnf", "-N", "-B",
             "-e", query], capture_output=True, text=True, timeout=30, env=env or self.env)
        if r.returncode != 0:
            raise RuntimeError(f"shard {shard}: {query[:60]}: {r.stderr.strip()[:200]}")
        return [l.split("\t") for l in r.stdout.splitlines() if l.strip()]

    def create_db(self, db):
        for i in range(self.n):
            self.sql(i, f"CREATE DATABASE IF NOT EXISTS {db}")

    def status_rows(self, shards, save=None):
        """`seigo status` of one deployment: {gid: (state, decision)}; None if it failed."""
        rc, out, err = self.seigo(["status"], shards=shards, timeout=60)
        if save:
            with open(os.path.join(self.run_dir, save), "w") as f:
                f.write(f"rc {rc}\n{out}{err}")
        if not re.search(r"^\d+ in doubt", out, re.M):
            return None
        rows = {}
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 7 and re.fullmatch(r"[0-9a-f]{8,}", f[0]):
                rows[f[0]] = (f[3], " ".join(f[6:]))
        return rows

    def deploy2_cell(self, i):
        """Deployment B (database seigo_b, same servers) dies at its commit point while
        deployment A's resolvers run past B's deadline: A must leave B's branches alone (before
        the fix A fenced them in its own decision table and rolled back B's committed
        branches). Then B is recovered (run_body) and both deployments are audited."""
        S, r = self.a.seconds, self.run_rng
        T = self.a.txn_timeout_ms / 1000.0
        # B shares the machine with A's demo and A's `seigo recover` loop: about 40 % of the
        # baseline rate until this cell has measured its own.
        est = self.cell_rate.get("deploy2", 0.4 * self.rate)
        n = max(1, int(r.uniform(0.2, 0.6) * est * S))
        # A runs (trades + background resolver every second) until well past B's deadline.
        a = self.demo(S + 2.5 * T + 1.5, "seigo", dep="A")
        rec = dict(passes=0, after_deadline=0, texts=[], rcs={})
        stop = threading.Event()
        t_crash = [None]

        def a_recover_loop():
            # A's second resolver: `seigo recover --shards <A>` back to back while A runs.
            with open(os.path.join(self.run_dir, "recover-A-loop.out"), "w") as f:
                while not stop.is_set() and a.poll() is None:
                    t = time.monotonic()
                    rc, out, err = self.seigo(["recover"], shards=self.direct, timeout=60)
                    rec["passes"] += 1
                    rec["rcs"][rc] = rec["rcs"].get(rc, 0) + 1
                    if t_crash[0] is not None and t > t_crash[0] + T:
                        rec["after_deadline"] += 1
                    rec["texts"].append(out + err)
                    f.write(f"--- A recover pass {rec['passes']} at {t - a.t0:+.2f}s: rc {rc}\n"
                            f"{out}{err}")
                    time.sleep(0.2)

        th = threading.Thread(target=a_recover_loop, daemon=True)
        th.start()
        try:
            self.sleep_until(a.t0, 0.3)
            b = self.wait_demo(self.demo(S, "seigo", shards=self.direct_b,
                                         crash_at=f"after_decision:{n}", dep="B"))
            t_crash[0] = time.monotonic()
            fired = self.crashed_at_site(b)
            st0 = self.status_rows(self.direct_b, save="status-B-after-crash.txt") or {}
            commit0 = {g for g, (_, d) in st0.items() if d == "commit"}
            counts = []
            while a.poll() is None:
                time.sleep(0.5)
                st = self.status_rows(self.direct_b)
                if st is not None:
                    counts.append(len(st))
        finally:
            self.wait_demo(a)
            stop.set()
            th.join(timeout=90)
        waited = time.monotonic() - t_crash[0]
        st1 = self.status_rows(self.direct_b, save="status-B-after-A.txt") or {}
        gone = set(st0) - set(st1)
        gone_commit = commit0 - set(st1)
        a_text = "".join(rec["texts"])
        touched = sorted(g for g in st0 if g in a_text)
        self.crash_in_doubt = len(st0)
        ran_b = max(0.1, b.wall1 - b.wall0)
        b_stats = self.demo_stats([b])
        if b_stats["committed"]:
            self.cell_rate["deploy2"] = b_stats["committed"] / ran_b
        a_stats = self.demo_stats([a])
        self.note(f"B: SEIGO_CRASH_AT=after_decision:{n} "
                  f"{'fired' if fired else 'not reached'} after {ran_b:.1f}s, "
                  f"{b_stats['committed']} trades committed before; A: {a_stats['committed']} "
                  f"trades committed in {a.wall1 - a.wall0:.1f}s")
        self.note(f"B in doubt at its crash: {len(st0)} ({len(commit0)} decided commit); while "
                  f"A's resolvers ran: {min(counts) if counts else '-'}-"
                  f"{max(counts) if counts else '-'} ({len(counts)} looks); after A ran "
                  f"{waited:.1f}s past B's crash (B's deadline <= {T:g}s after it): {len(st1)}")
        self.note(f"A's `seigo recover` loop: {rec['passes']} passes ({rec['after_deadline']} "
                  f"after B's deadline), exit codes {rec['rcs']}; B's transactions finished "
                  f"meanwhile by someone else: {len(gone)} ({len(gone_commit)} decided commit); "
                  f"B gids in A's recover output: {len(touched)}")
        if gone or touched:
            self.extra_violations.append(
                f"deployment A's resolvers finished {len(gone)} of deployment B's in-doubt "
                f"transactions ({len(gone_commit)} decided commit; {len(touched)} named in A's "
                f"`seigo recover` output, e.g. {', '.join(touched[:3])})")
        return int(fired and len(st0) > 0 and rec["after_deadline"] > 0)

    # ---- dst: servers and application at the autumn change --------------------------------

    def use_servers(self, kind, env=None):
        """Switches the matrix shards between the plain environment and the dst one: stop,
        wipe, start fresh shards in `env` (each dst run gets fresh shards and its own fake
        clock, so that no datadir ever sees its clock go back)."""
        if kind == "plain":
            self.app_env = self.env
            if self.server_kind == "plain":
                return
        self.servers("wipe")
        self.server_env = env or self.env
        self.server_kind = kind
        self.servers("start", self.n, "--base-port", self.a.base_port)

    def dst_env(self, offset):
        lib = next((l for l in FAKETIME_LIBS if os.path.exists(l)), None)
        if not lib:
            raise RuntimeError("libfaketime is not installed (apt-get install libfaketime; "
                               "scripts/install-deps.sh installs it)")
        if not os.path.exists(f"/usr/share/zoneinfo/{DST_TZ}"):
            raise RuntimeError(f"no time zone data for {DST_TZ} (apt-get install tzdata)")
        env = dict(self.env)
        pre = env.get("LD_PRELOAD", "")
        # FAKETIME "+N"/"-N": every process reads real time + N s, so servers and seigo
        # processes started at different moments share one clock (a "@date" start-at time
        # restarts the clock in every new process). Monotonic clocks stay real: time zones
        # and DST never touch them.
        env.update(TZ=DST_TZ, LD_PRELOAD=f"{lib}:{pre}" if pre else lib, FAKETIME=f"{offset:+d}",
                   FAKETIME_DONT_FAKE_MONOTONIC="1")
        return env

    def dst_clock(self):
        """What shard 0's server clock says: local time, zone, and how far UNIX_TIMESTAMP(NOW())
        (through the session zone, SYSTEM) is from the zone-free UTC epoch."""
        out = []
        for i in range(self.n):
            rows = self.sql(i, "SELECT DATE_FORMAT(NOW(), '%Y-%m-%d %H:%i:%s'), "
                               "LEFT(TIMEDIFF(NOW(), UTC_TIMESTAMP()), 3), @@time_zone, "
                               "ROUND(UNIX_TIMESTAMP(NOW(6)) - TIMESTAMPDIFF(MICROSECOND, "
                               "TIMESTAMP'1970-01-01 00:00:00', UTC_TIMESTAMP(6)) / 1e6)")
            now, utc_off, tz, skew = rows[0]
            out.append(f"shard {i} NOW() {now} (UTC{utc_off}, time_zone={tz}): "
                       f"UNIX_TIMESTAMP(NOW()) {int(float(skew)):+d} s off")
        return "; ".join(out)

    def dst_seconds(self):
        """(trade time, seconds into it at which the change falls): at least 3 s of trades, so
        that a good second of them lies on each side of the change."""
        S = max(3.0, self.a.seconds)
        return S, max(1.5, 0.55 * S)

    def dst_prepare(self, row):
        """Fresh shards under TZ + libfaketime, the demo set up, then waits until the fake
        clock reads the planned time before the change. A start-up so slow that less than 1 s
        of trading would remain before the change is done again with a later clock."""
        S, c = self.dst_seconds()
        for attempt in (1, 2, 3):
            self.servers("wipe")  # before the clock is chosen: stopping takes a variable time
            t = time.monotonic()
            offset = int(round(DST_CHANGE - c - self.dst_lead - time.time()))
            env = self.dst_env(offset)
            self.dst_offset = offset
            self.use_servers("dst", env)
            t_servers = time.monotonic() - t
            self.app_env = env
            self.setup(self.direct)
            took = time.monotonic() - t
            # The next run's guess (the machine's load makes start-up times vary: 2-11 s seen).
            self.dst_lead = max(4.0, took + 2.0)
            wait = DST_CHANGE - c - offset - time.time()
            if wait > 1.0 - c or attempt == 3:
                break
            self.note(f"start-up took {took:.1f}s, {-wait:.1f}s more than planned: again")
        if wait > 0:
            time.sleep(wait)
        self.note(f"fresh shards under faketime in {t_servers:.1f}s, setup "
                  f"{took - t_servers:.1f}s, waited {max(0.0, wait):.1f}s for the clock")
        app = subprocess.run(["date", "+%Y-%m-%d %H:%M:%S %Z"], env=env, capture_output=True,
                             text=True).stdout.strip()
        self.note(f"FAKETIME={offset:+d} TZ={DST_TZ}; before the trades: app clock {app}; "
                  f"{self.dst_clock()}")

    def commit_rows(self):
        """Commit rows in the decision tables of all shards: one per committed cross-shard
        trade (resolvers only ever write abort rows; nothing is collected within 60 s)."""
        return sum(int(self.sql(i, "SELECT COUNT(*) FROM seigo.seigo_decision "
                                   "WHERE outcome = 'C'")[0][0]) for i in range(self.n))

    def dst_cell(self, i):
        """The trades cross the change; a coordinator crash (odd runs) or a shard kill -9 (even
        runs, after the change, so that the count at the change can be read). The commit rows
        counted at the change split the committed trades into EDT (the hour before the change,
        where UNIX_TIMESTAMP(NOW()) reads real + 1 h with time_zone=SYSTEM) and EST."""
        S, c = self.dst_seconds()
        r = self.run_rng
        at_change = {}

        def count_at_change():
            # 0.15 s before the change: every row it counts was written in EDT.
            d = DST_CHANGE - self.dst_offset - 0.15 - time.time()
            if d > 0:
                time.sleep(d)
            try:
                t = time.time()
                at_change["n"] = self.commit_rows()
                at_change["at"] = t - (DST_CHANGE - self.dst_offset)
            except Exception as e:  # noqa: BLE001 - a shard down at that moment
                at_change["error"] = str(e)[:200]

        counter = threading.Thread(target=count_at_change, daemon=True)
        counter.start()
        est = self.cell_rate.get("dst", 0.4 * self.rate)
        if i % 2:
            n = max(1, int(r.uniform(0.1, 0.6) * est * S))
            p = self.wait_demo(self.demo(S, "seigo", crash_at=f"after_prepare:{n}"))
            fired = self.crashed_at_site(p)
            self.note(f"SEIGO_CRASH_AT=after_prepare:{n} {'fired' if fired else 'not reached'} "
                      f"after {p.wall1 - p.wall0:.1f}s")
            self.app_restart(p, "seigo", S)
        else:
            p = self.demo(S, "seigo")
            at, down, shard = c + r.uniform(0.2, 0.7), r.uniform(0.2, 1.0), r.randrange(self.n)
            self.sleep_until(p.t0, at)
            self.servers("kill", shard)
            time.sleep(down)
            self.servers("restart", shard)  # crash recovery under the same TZ + fake clock
            self.note(f"kill -9 shard {shard} at {at:.1f}s, down {down:.1f}s")
            self.wait_demo(p)
            fired = True
        counter.join(timeout=60)
        first, last = self.demos[0], self.demos[-1]
        t_change = DST_CHANGE - self.dst_offset  # real epoch of the change
        crossed = first.wall0 < t_change < last.wall1
        committed = self.demo_stats()["committed"]
        ran = sum(d.wall1 - d.wall0 for d in self.demos)
        if committed:
            self.cell_rate["dst"] = committed / max(ran, 0.1)
        total = self.commit_rows()
        # Seconds of trading counted as EDT (the demos' processes running, minus ~0.2 s of
        # start-up each, until the count 0.15 s before the change).
        edt_s = sum(max(0.0, min(d.wall1, t_change - 0.15) - d.wall0 - 0.2) for d in self.demos)
        self.dst_trades = (at_change.get("n"), None if "n" not in at_change
                           else total - at_change["n"], edt_s)
        self.note(f"the trades {'crossed' if crossed else 'did NOT cross'} the change; demo "
                  f"reports {committed} committed; commit rows: {total}, "
                  + (f"{at_change['n']} of them written in EDT (counted {at_change['at']:+.2f}s "
                     f"from the change; {edt_s:.1f}s of trading before it) and "
                     f"{total - at_change['n']} later" if "n" in at_change
                     else f"not counted at the change ({at_change.get('error', 'timeout')})"))
        return int(fired and crossed)

    def dst_after(self, row):
        edt, est, edt_s = self.dst_trades
        row["trades_edt"], row["trades_est"] = edt, est
        self.note(f"after recovery: {self.dst_clock()}")
        # Liveness: with time_zone=SYSTEM the decider's clock must not refuse the hour before
        # the change (before the fix: 0 cross-shard commits there).
        if edt == 0 and edt_s >= 0.8:
            row["liveness_failed"] = True
            self.note(f"LIVENESS FAILURE: no cross-shard trade committed in {edt_s:.1f}s of "
                      f"trading in the hour before the change (EDT)")

    # ---- the whole matrix ------------------------------------------------------------------

    def run(self):
        a = self.a
        t_start = time.monotonic()
        log(f"seed {a.seed}; {'quick' if a.quick else 'full'} mode; {a.runs} run(s) per cell, "
            f"{a.seconds:g} s each, {a.clients} clients, --txn-timeout-ms {a.txn_timeout_ms}; "
            f"servers in {a.state_dir} (ports {self.ports[0]}-{self.ports[-1]}), proxy "
            f"{self.proxy_port} -> shard {self.proxied}; output in {a.out}")
        self.servers("wipe")
        try:
            self.servers("start", self.n, "--base-port", a.base_port)
            self.start_proxy()
            # The proxy must really lose replies: with every decision insert's reply dropped,
            # seigo cannot learn the outcome of trades decided behind the proxy.
            st = self.run_one("proxy:selftest", "seigo", 1)
            self.selftest_ok = (st["fired"] > 0 and st["unknown"] + st["gave_up"] > 0
                                and st["violations"] == 0 and not st["error"])
            log(f"proxy self-test {'passed' if self.selftest_ok else 'FAILED'}: "
                f"{st['fired']} replies dropped, outcome_unknown {st['unknown']}, "
                f"gave_up {st['gave_up']}")
            for fault, mode in ([] if a.proxy_selftest_only
                                else cells(extended=not a.quick or bool(a.only))):
                if a.only and not re.search(a.only, f"{fault} {mode}"):
                    continue
                runs = 1 if fault == "none" else a.runs
                for i in range(1, runs + 1):
                    self.run_one(fault, mode, i)
        finally:
            if self.proxy:
                try:
                    self.ctl("quit")
                    self.proxy.wait(timeout=5)
                except Exception:  # noqa: BLE001
                    self.proxy.kill()
            if not a.keep_servers:
                self.servers("stop", check=False)
        self.elapsed = time.monotonic() - t_start
        return self.report()

    def report(self):
        a = self.a
        groups = {}
        for row in self.rows:
            if row.get("server_lost"):
                continue  # no verdict: counted separately below
            groups.setdefault((row["fault"], row["mode"]), []).append(row)
        lines = ["| fault | mode | runs | fault fired | runs with violations | violation lines "
                 "| in doubt after crash | in doubt after run | trades committed | gave up "
                 "| outcome unknown | stray InnoDB trx | violations after shard restart | errors "
                 "| time (s) |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for (fault, mode), rows in groups.items():
            s = lambda k: sum(r[k] for r in rows)  # noqa: E731
            after_restart = lambda rows: (  # noqa: E731
                sum(r["violations_after_restart"] for r in rows
                    if r["violations_after_restart"] is not None)
                if any(r["violations_after_restart"] is not None for r in rows) else "")
            bad = lambda r: (r["error"] or r["hung"] or r["recover_rc"] != 0  # noqa: E731
                             or r.get("liveness_failed"))
            cd = lambda rows: (sum(max(0, r["crash_in_doubt"]) for r in rows)  # noqa: E731
                               if any(r["crash_in_doubt"] >= 0 for r in rows) else "")
            lines.append(
                f"| {fault} | {mode} | {len(rows)} | {sum(1 for r in rows if r['fired'])} "
                f"| {sum(1 for r in rows if r['violations'])} | {s('violations')} "
                f"| {cd(rows)} | {s('in_doubt')} | {s('committed')} | {s('gave_up')} "
                f"| {s('unknown')} | {s('stray_trx')} | {after_restart(rows)} "
                f"| {sum(1 for r in rows if bad(r))} "
                f"| {s('seconds'):.0f} |")
        # Naive mode reaches no crash site: those cells are seigo-only.
        lines.append("| coord:&lt;site&gt;, resolver:&lt;site&gt;, proxy:drop_prepare, "
                     "proxy:drop_xacommit, coord:pause, shard:pause, deploy2, dst | naive | n/a "
                     "| | | | | | | | | | | | |")
        detail = []
        if self.details:
            detail = ["## deploy2 and dst runs", "",
                      "deploy2: \"in doubt after crash\" = deployment B's transactions in doubt "
                      "right after B died at its commit point, while deployment A's resolvers "
                      "kept running past B's deadline; any of them finished by someone else "
                      "(no B process was running) is a VIOLATION line. dst: the commit rows "
                      "(one per committed cross-shard trade) are counted 0.15 s before the "
                      "change; a run with none in the hour before it (with time_zone=SYSTEM, "
                      "UNIX_TIMESTAMP(NOW()) reads real + 1 h there) is a LIVENESS FAILURE "
                      "(counted under errors).", ""]
            for fault, i, notes in self.details:
                detail.append(f"- {fault} #{i}: " + "; ".join(notes))
            detail.append("")
        by_mode = {}
        lost_rows = [r for r in self.rows if r.get("server_lost")]
        for row in self.rows:
            if row.get("server_lost"):
                continue
            m = by_mode.setdefault(row["mode"], dict(runs=0, viol_runs=0, viol=0, err=0, t=0.0,
                                                     stray=0))
            m["stray"] += row["stray_trx"]
            m["runs"] += 1
            m["viol_runs"] += bool(row["violations"])
            m["viol"] += row["violations"]
            m["err"] += bool(row["error"] or row["hung"] or row["recover_rc"] != 0
                             or row.get("liveness_failed"))
            m["t"] += row["seconds"]
        seigo = by_mode.get("seigo", dict(runs=0, viol_runs=0, viol=0, err=0, t=0.0, stray=0))
        naive = by_mode.get("naive", dict(runs=0, viol_runs=0, viol=0, err=0, t=0.0))
        problems = []
        if seigo["viol"] or seigo["err"] or seigo["stray"]:
            problems.append(f"seigo: {seigo['viol_runs']} run(s) with violations "
                            f"({seigo['viol']} line(s)), {seigo['stray']} stray InnoDB "
                            f"transaction(s), {seigo['err']} run(s) with errors")
        if not self.selftest_ok:
            problems.append("the proxy self-test did not see lost replies")
        if not a.only and not a.proxy_selftest_only and naive["viol"] == 0:
            problems.append("negative control failed: naive mode showed no violation, so the "
                            "faults did not bite")
        ok = not problems
        summary = [f"| mode | runs | runs with violations | violation lines | runs with errors "
                   f"| time (s) |", "|---|---:|---:|---:|---:|---:|"]
        for mode, m in by_mode.items():
            summary.append(f"| {mode} | {m['runs']} | {m['viol_runs']} | {m['viol']} "
                           f"| {m['err']} | {m['t']:.0f} |")
        cmd = "crashmatrix/run.sh " + shlex.join(a.argv)
        md = [f"# Crash matrix results ({'quick' if a.quick else 'full'})", "",
              f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}; commit "
              f"{self.commit or '?'}{' (+ uncommitted changes)' if self.dirty else ''}; binary "
              f"{a.seigo_source} (copied at start, built "
              f"{datetime.datetime.fromtimestamp(os.path.getmtime(a.seigo)).strftime('%H:%M:%S')}); "
              f"{os.cpu_count()} cores",
              f"- command: `{cmd.strip()}` (seed {a.seed}: the fault choices repeat with "
              f"`--seed {a.seed}`; the demo's trades and timing do not)",
              f"- {a.shards} shards, {a.runs} run(s) per cell (baseline 1), {a.seconds:g} s of "
              f"trades per run, {a.clients} clients, `--txn-timeout-ms {a.txn_timeout_ms}`, "
              f"{a.players} players",
              f"- total wall time {self.elapsed:.0f} s",
              f"- proxy self-test (every decision insert's reply dropped): "
              f"{'passed' if self.selftest_ok else 'FAILED'}",
              f"- shards lost (a mariadbd that aborted in its own crash recovery after kill -9 "
              f"and never came back; those runs have no verdict and are not in the table): "
              f"{len(lost_rows)}"
              + "".join(f"; {r['fault']} {r['mode']} #{r['run']}" for r in lost_rows),
              f"- stalled (reported, not part of the verdict): transactions still in doubt > 5 s "
              f"past their deadline after a run whose application (and so its background "
              f"resolver) ran until the end: {sum(r.get('stalled', 0) for r in self.rows)} in "
              f"{sum(1 for r in self.rows if r.get('stalled'))} run(s)"
              + "".join(f"; {r['fault']} {r['mode']} #{r['run']}: {r['stalled']}"
                        for r in self.rows if r.get("stalled")),
              f"- verdict: **{'PASS' if ok else 'FAIL'}**"
              + ("" if ok else ": " + "; ".join(problems)), "",
              "\"fault fired\": runs where the crash site was reached (resolver cells: both the "
              "coordinator crash and the resolver crash), the process/shard was killed, or the "
              "proxy cut/dropped at least once. \"stray InnoDB trx\": transactions "
              "information_schema.innodb_trx still lists after every seigo process exited and "
              "`seigo recover` exited 0 (must be 0). \"violations after shard restart\": after "
              "a bad run every shard is stopped and started, `seigo recover` runs and the audit "
              "is repeated. \"in doubt after crash\": transactions `seigo "
              "status` listed right after a coordinator/resolver process died (before the "
              "application restarted). \"in doubt after run\": transactions `seigo "
              "status` listed after the traffic stopped, before the after-run `seigo recover` "
              "(the restarted application's resolver usually finishes most first). "
              "\"errors\": audit could not run, `seigo recover` never exited 0, a demo "
              "hung, or (dst) no cross-shard trade committed in the hour before the change.", "",
              *lines, "", *summary, "", *detail]
        text = "\n".join(md)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = os.path.join(a.out, f"results-{'quick' if a.quick else 'full'}-{stamp}.md")
        with open(path, "w") as f:
            f.write(text)
        print()
        print(text)
        log(f"results written to {path}")
        for p in problems:
            log(f"FAIL: {p}")
        return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description="seigo's real-process crash matrix (TESTING.md)")
    ap.add_argument("--quick", action="store_true",
                    help="CI size: 2 runs per cell, 2 s each (about 2-3 minutes)")
    ap.add_argument("--runs", type=int, help="runs per cell (default: quick 2, full 10)")
    ap.add_argument("--seconds", type=float, help="trade time per run (quick 2, full 4)")
    ap.add_argument("--clients", type=int, help="demo client threads (quick 6, full 8)")
    ap.add_argument("--txn-timeout-ms", type=int, default=1000)
    ap.add_argument("--players", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--seed", type=int, help="seed of the fault choices (default: random)")
    ap.add_argument("--only", help="regex on 'fault mode': run only those cells")
    ap.add_argument("--seigo", default=os.path.join(ROOT, "build", "seigo"),
                    help="the seigo binary (default build/seigo)")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "crashmatrix"),
                    help="results and logs (default build/crashmatrix)")
    ap.add_argument("--state-dir",
                    default=os.environ.get("CRASHMATRIX_STATE_DIR", "/tmp/seigo-crashmatrix"),
                    help="the servers' state dir (wiped!)")
    ap.add_argument("--base-port", type=int, default=33461,
                    help="shard i on port P+i, the proxy on P+10, its control on P+11")
    ap.add_argument("--recover-tries", type=int, default=40)
    ap.add_argument("--keep-servers", action="store_true")
    ap.add_argument("--keep-lost", action="store_true",
                    help="copy a lost shard's state dir aside (STATE_DIR-lost-N) for analysis")
    ap.add_argument("--proxy-selftest-only", action="store_true",
                    help="only check that the proxy loses replies (ctest CrashMatrixProxyDropsReplies)")
    a = ap.parse_args()
    a.argv = sys.argv[1:]
    a.runs = a.runs or (2 if a.quick else 10)
    a.seconds = a.seconds or (2.0 if a.quick else 4.0)
    a.clients = a.clients or (6 if a.quick else 8)
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 1 << 31)
    a.out = os.path.abspath(a.out)
    a.seigo = os.path.abspath(a.seigo)
    if not os.access(a.seigo, os.X_OK):
        sys.exit(f"crashmatrix: no seigo binary at {a.seigo} "
                 "(cmake --build build --target seigo_cli)")
    if a.state_dir in ("", "/"):
        sys.exit("crashmatrix: refusing that state dir")
    os.makedirs(a.out, exist_ok=True)
    # Test a private copy: build/seigo may be rebuilt by someone else while the matrix runs.
    a.seigo_source = a.seigo
    snapshot = os.path.join(a.out, "seigo-under-test")
    shutil.copy2(a.seigo, snapshot)
    a.seigo = snapshot
    # SIGTERM (e.g. a ctest timeout): unwind, so that the servers and the proxy are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    # One matrix at a time per state dir (it wipes it).
    lock = open(a.state_dir.rstrip("/") + ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    sys.exit(Matrix(a).run())


if __name__ == "__main__":
    main()
