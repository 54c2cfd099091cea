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
"""

import argparse
import datetime
import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

COORD_SITES = ["before_prepare", "after_prepare", "before_decision", "after_decision",
               "during_phase2"]
RESOLVER_SITES = ["resolver_after_fence", "resolver_before_apply"]

PROXY_FAULTS = {
    # name: (drop_match regex or None, drop_prob, cut_prob, cut-all moments per run)
    "cut": (None, 0.0, 0.003, 2),
    # The commit point (decider) and the one-shard commit: both end with a one-phase XA COMMIT.
    "drop_commit": (r"XA COMMIT [^;]* ONE PHASE", 0.05, 0.0, 0),
    "drop_prepare": (r"XA PREPARE", 0.05, 0.0, 0),
    "drop_xacommit": (r"^\s*XA COMMIT", 0.05, 0.0, 0),
    # The proxy self-test: every decision insert (the decider's commit and the coordinator's
    # fence) loses its reply, so seigo cannot learn the outcome: outcome_unknown.
    "selftest": (r"(^|;)INSERT INTO seigo_decision", 1.0, 0.0, 0),
}


def cells():
    """(fault, mode) pairs in run order."""
    out = [("none", "seigo"), ("none", "naive")]
    out += [(f"coord:{s}", "seigo") for s in COORD_SITES]
    out += [(f"resolver:{s}", "seigo") for s in RESOLVER_SITES]
    for f in ["coord:kill", "shard:kill9", "proxy:cut", "proxy:drop_commit"]:
        out += [(f, "seigo"), (f, "naive")]
    out += [("proxy:drop_prepare", "seigo"), ("proxy:drop_xacommit", "seigo")]
    out += [("coord:pause", "seigo"), ("shard:pause", "seigo")]
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
        self.direct = ",".join(f"mysql://seigo:seigo@127.0.0.1:{p}/seigo" for p in self.ports)
        self.via_proxy = ",".join(
            f"mysql://seigo:seigo@127.0.0.1:{self.proxy_port if i == self.proxied else p}/seigo"
            for i, p in enumerate(self.ports))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("SEIGO_")}  # never the tests' servers or crash sites
        self.env["SEIGO_STATE_DIR"] = a.state_dir
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

    # ---- processes -------------------------------------------------------------------------

    def servers(self, *args, check=True):
        r = subprocess.run(["bash", os.path.join(ROOT, "scripts/servers.sh"), *map(str, args)],
                           env=self.env, capture_output=True, text=True)
        if check and r.returncode != 0:
            msg = f"servers.sh {' '.join(map(str, args))} failed:\n{r.stdout}{r.stderr}"
            if args and args[0] in ("start", "restart") and "did not start" in r.stderr:
                raise ServerLost(msg)
            raise RuntimeError(msg)
        return r

    def seigo(self, args, shards=None, crash_at=None, timeout=120):
        env = dict(self.env)
        if crash_at:
            env["SEIGO_CRASH_AT"] = crash_at
        cmd = [self.a.seigo, *args, "--shards", shards or self.direct,
               "--txn-timeout-ms", str(self.a.txn_timeout_ms)]
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            return r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:
            return "timeout", e.stdout or "", e.stderr or ""

    def demo(self, seconds, mode, shards=None, crash_at=None):
        """Starts `seigo demo run` in the background; returns the Popen (output in temp files)."""
        env = dict(self.env)
        if crash_at:
            env["SEIGO_CRASH_AT"] = crash_at
        cmd = [self.a.seigo, "demo", "run", "--shards", shards or self.direct,
               "--txn-timeout-ms", str(self.a.txn_timeout_ms), "--clients", str(self.a.clients),
               "--seconds", f"{seconds:.2f}", "--mode", mode]
        out = open(os.path.join(self.run_dir, f"demo{len(self.demos)}.out"), "w+")
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        p.out, p.seconds, p.crash_at, p.t0 = out, seconds, crash_at, time.monotonic()
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

    def setup(self):
        for _ in range(3):
            rc, out, err = self.seigo(["demo", "setup", "--players", str(self.a.players)])
            if rc == 0:
                return
            if rc == 4:  # something from an earlier run still in doubt
                self.recover_loop()
                continue
            raise RuntimeError(f"demo setup failed (rc {rc}): {out}{err}")
        raise RuntimeError("demo setup refused three times")

    def recover_loop(self):
        """`seigo recover` until it exits 0; sleeps 0.5 s between tries (deadlines pass)."""
        text = []
        for i in range(1, self.a.recover_tries + 1):
            rc, out, err = self.seigo(["recover"], timeout=60)
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
        self.servers_up()
        if self.proxy:
            self.ctl("reset")
            self.ctl(f"set seed {self.run_rng.getrandbits(32)}")
        self.setup()
        row["fired"] = self.inject(fault, mode, i)
        for p in self.demos:
            if p.returncode is None:
                self.wait_demo(p)
        row.update(self.demo_stats())
        if self.proxy:
            self.ctl("pass")
        self.servers_up()
        # What the run left in doubt for the after-run `seigo recover` (the restarted
        # application's resolver usually finishes most of it first).
        row["in_doubt"] = self.in_doubt(save="status-after-run.txt")
        if row["in_doubt"] > 0:
            self.note(f"{row['in_doubt']} in doubt after the run")
        row["recover_tries"], row["recover_rc"], rec_text = self.recover_loop()
        arc, aout, aerr = self.seigo(["demo", "audit"], timeout=60)
        violations = [l for l in aout.splitlines() if l.startswith("VIOLATION")]
        row.update(audit_rc=arc, violations=len(violations))
        row["error"] = arc not in (0, 1) or (arc == 1 and not violations)
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
            f.write(f"{rec_text}--- audit: rc {arc}\n{aout}{aerr}--- information_schema."
                    f"innodb_trx after recovery:\n{json.dumps(trx, indent=1)}\n")
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
            tries, rc, text = self.recover_loop()
            arc, aout, aerr = self.seigo(["demo", "audit"], timeout=60)
            v = sum(1 for l in aout.splitlines() if l.startswith("VIOLATION"))
            row["violations_after_restart"] = v
            self.note(f"after a restart of every shard + `seigo recover` ({tries} tries, "
                      f"rc {rc}): {v} VIOLATION line(s)")
            with open(os.path.join(self.run_dir, "after-restart.txt"), "w") as f:
                f.write(f"{text}--- audit: rc {arc}\n{aout}{aerr}")
        except Exception as e:  # noqa: BLE001
            self.note(f"restart after a bad run failed: {e}")

    def demo_stats(self):
        """Sums what the demo processes report (a killed one: its last progress line)."""
        st = dict(committed=0, gave_up=0, unknown=0, half_done=0)
        for p in self.demos:
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
        raise ValueError(f"unknown fault {fault}")

    def in_doubt(self, save=None):
        """How many transactions `seigo status` lists as in doubt (-1: it failed)."""
        rc, out, err = self.seigo(["status"], timeout=60)
        if save:
            with open(os.path.join(self.run_dir, save), "w") as f:
                f.write(f"rc {rc}\n{out}{err}")
        m = re.search(r"^(\d+) in doubt", out, re.M)
        return int(m.group(1)) if m else -1

    def app_restart(self, p, mode):
        """The application comes back: an unarmed demo run for the rest of the run time."""
        if p.returncode is not None and p.returncode < 0:
            n = self.in_doubt(save=f"status-after-crash-{len(self.demos)}.txt")
            self.crash_in_doubt = max(self.crash_in_doubt, 0) + max(n, 0)
            self.note(f"{n} in doubt after the crash")
        rest = max(1.0, self.a.seconds - (time.monotonic() - p.t0))
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
        return st["dropped"] + st["cut"]

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
            for fault, mode in ([] if a.proxy_selftest_only else cells()):
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
            cd = lambda rows: (sum(max(0, r["crash_in_doubt"]) for r in rows)  # noqa: E731
                               if any(r["crash_in_doubt"] >= 0 for r in rows) else "")
            lines.append(
                f"| {fault} | {mode} | {len(rows)} | {sum(1 for r in rows if r['fired'])} "
                f"| {sum(1 for r in rows if r['violations'])} | {s('violations')} "
                f"| {cd(rows)} | {s('in_doubt')} | {s('committed')} | {s('gave_up')} "
                f"| {s('unknown')} | {s('stray_trx')} | {after_restart(rows)} "
                f"| {sum(1 for r in rows if r['error'] or r['hung'] or r['recover_rc'] != 0)} "
                f"| {s('seconds'):.0f} |")
        # Naive mode reaches no crash site: those cells are seigo-only.
        lines.append("| coord:&lt;site&gt;, resolver:&lt;site&gt;, proxy:drop_prepare, "
                     "proxy:drop_xacommit, coord:pause, shard:pause | naive | n/a | | | | | | | "
                     "| | | | | |")
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
            m["err"] += bool(row["error"] or row["hung"] or row["recover_rc"] != 0)
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
        cmd = "crashmatrix/run.sh " + " ".join(a.argv)
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
              "\"errors\": audit could not run, `seigo recover` never exited 0, or a demo "
              "hung.", "",
              *lines, "", *summary, ""]
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
