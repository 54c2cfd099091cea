#!/usr/bin/env python3
"""The crash matrix with RabbitMQ in the transaction: the gacha demo (TESTING.md, "Crash matrix:
RabbitMQ"). ctest CrashMatrixGachaWithRabbitMq runs it, or:

  crashmatrix/gacha_matrix.py --seigo build/seigo [--out DIR] [--seconds S] [--only REGEX]

It starts its own servers: 2 MariaDB shards on ports 33481+ (state /tmp/seigo-crashmatrix-gacha)
and one RabbitMQ broker on port 5702 (state /tmp/seigo-crashmatrix-gacha-rabbitmq), which the
application and the consumer reach through crashmatrix/proxy.py --protocol amqp (port 36781,
control 36782); setup, the final drain and the audit talk to the broker directly. Faults last as
long as the application runs; then they stop and the cell's consumer drains. For every cell (fault x mode) it
runs `seigo demo gacha setup`, then the collection service (`demo gacha consume`) and the
application (`demo gacha run`) side by side while injecting the fault, restarts whatever was
killed, drains (`demo gacha consume --idle-exit`: until no event came for a while and every
outbox is empty), and counts the VIOLATION lines of `seigo demo gacha audit`: gold spent =
100 x grants, every grant applied exactly once, collection = grants, outbox, queue and
dead-letter queue empty. seigo mode must show none in every cell; naive mode (commit, then an
unconfirmed publish; an auto-ack consumer) is the negative control and must show some.

Faults:
  none                    baseline
  broker:kill9            kill -9 of the broker mid-run, restarted at once (a restart takes
                          several seconds: the application commits meanwhile)
  app:kill9               kill -9 of the application (its relay too) mid-run; restarted
  relay:after_publish     the application SIGKILLs itself at the N-th relay batch whose
                          confirms it has read, before the outbox is settled (SEIGO_CRASH_AT);
                          restarted for the rest of the run
  consumer:kill9          kill -9 of the consumer mid-run; restarted
  consumer:before_commit  the consumer SIGKILLs itself at its N-th delivery, after the handler
                          ran, before the transaction commits; restarted
  consumer:after_commit   ... after the commit, before the ack; restarted
  proxy:cut               AMQP connections closed instead of forwarding a client frame (0.2 %)
                          and all of them cut at once every ~0.8 s on average
  proxy:drop_confirm      a publisher confirm (basic.ack from the broker) swallowed and the
                          connection closed (2 %): the broker has the message, the relay does
                          not know
  proxy:drop_ack          a consumer's basic.ack swallowed and the connection closed (2 %):
                          applied, then redelivered
  shard:kill9             kill -9 of shard 1 mid-run (outboxes and inboxes live there), restarted
                          0.5 s later
Exit status: 0 if every seigo cell passed (and its fault bit: see run_cell) and naive mode showed
violations, 1 otherwise, 2 on a setup error. A summary table goes to stdout and DIR/summary.md.
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
RABBITMQ = os.path.join(ROOT, "scripts", "rabbitmq.sh")
SHARD_BASE, BROKER_PORT, PROXY_PORT = 33481, 5702, 36781  # and PROXY_PORT + 1: its control
USERPASS = "seigo:seigo-secret"


def cells():
    out = [("none", "seigo"), ("none", "naive"),
           ("broker:kill9", "seigo"), ("broker:kill9", "naive"),
           ("app:kill9", "seigo"), ("relay:after_publish", "seigo"),
           ("consumer:kill9", "seigo"), ("consumer:kill9", "naive"),
           ("consumer:before_commit", "seigo"), ("consumer:after_commit", "seigo"),
           ("proxy:cut", "seigo"), ("proxy:cut", "naive"),
           ("proxy:drop_confirm", "seigo"), ("proxy:drop_ack", "seigo"),
           ("shard:kill9", "seigo")]
    return out


class World(harness.WorldBase):
    def __init__(self, args):
        super().__init__(args, "amqp", PROXY_PORT, f"127.0.0.1:{BROKER_PORT}", PROXY_PORT + 1)
        self.env["SEIGO_STATE_DIR"] = "/tmp/seigo-crashmatrix-gacha"
        self.env["SEIGO_RABBITMQ_DIR"] = "/tmp/seigo-crashmatrix-gacha-rabbitmq"
        self.direct = f"amqp://{USERPASS}@127.0.0.1:{BROKER_PORT}/"
        self.proxied = f"amqp://{USERPASS}@127.0.0.1:{PROXY_PORT}/"

    def start(self):
        self.sh("bash", SERVERS, "wipe")
        self.sh("bash", RABBITMQ, "wipe")
        self.sh("bash", SERVERS, "start", "2", "--base-port", str(SHARD_BASE))
        self.sh("bash", RABBITMQ, "start", "--port", str(BROKER_PORT))
        self.shards = ",".join(f"mysql://seigo:seigo@127.0.0.1:{SHARD_BASE + i}/seigo"
                               for i in range(2))

    def stop(self):
        self.stop_proxy()
        self.sh("bash", SERVERS, "stop", check=False)
        self.sh("bash", RABBITMQ, "stop", check=False)

    def broker_up(self):
        return " up" in self.sh("bash", RABBITMQ, "status", check=False).stdout

    def ensure_broker(self):
        if not self.broker_up():
            self.sh("bash", RABBITMQ, "restart")

    def seigo_env(self, amqp, crash=None):
        env = dict(self.env)
        env["SEIGO_SHARDS"] = self.shards
        env["SEIGO_AMQP"] = amqp
        if crash:
            env["SEIGO_CRASH_AT"] = crash
        return env

    def seigo(self, *args, amqp=None, timeout=180):
        return subprocess.run([self.args.seigo, *args], env=self.seigo_env(amqp or self.direct),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)

    def spawn(self, *args, crash=None, log=None):
        return subprocess.Popen([self.args.seigo, *args],
                                env=self.seigo_env(self.proxied, crash),
                                stdout=log, stderr=subprocess.STDOUT, text=True)


def run_cell(w, fault, mode, rng, log, tag):
    seconds = w.args.seconds
    w.ensure_broker()
    w.start_proxy()  # pass-through unless the fault says otherwise
    r = w.seigo("demo", "gacha", "setup", "--players", "300")
    if r.returncode != 0:
        raise RuntimeError("setup: " + r.stdout[-2000:])
    if fault == "proxy:cut":
        w.start_proxy(cut=0.002, cut_all_ms=800)
    elif fault == "proxy:drop_confirm":
        w.start_proxy(drop=0.02, match=r"^s basic\.ack$")
    elif fault == "proxy:drop_ack":
        w.start_proxy(drop=0.02, match=r"^c basic\.ack$")
    outs = []

    def out(name):
        f = open(os.path.join(w.args.out, f"{tag}.{name}.{len(outs)}"), "w+")
        outs.append(f)
        return f

    # The consumer exits by itself once no event came for 4 s (and, seigo mode, every outbox is
    # empty): stopping it with a signal would lose naive mode's auto-acked, buffered events even
    # without a fault, and the negative control would prove nothing.
    consume_args = ["demo", "gacha", "consume", "--mode", mode, "--idle-exit", "4"]
    app_crash = consumer_crash = None
    if fault == "relay:after_publish":
        app_crash = f"relay_after_publish:{rng.randint(5, 40)}"
    elif fault in ("consumer:before_commit", "consumer:after_commit"):
        consumer_crash = f"consumer_{fault.split(':')[1]}:{rng.randint(30, 400)}"
    fired = {"app": 0, "consumer": 0}
    consumer = w.spawn(*consume_args, crash=consumer_crash, log=out("consume"))
    t0 = time.time()

    def start_app(secs):
        args = ["demo", "gacha", "run", "--clients", "6", "--seconds", f"{secs:.1f}",
                "--mode", mode]
        return w.spawn(*args, crash=app_crash if fired["app"] == 0 else None, log=out("run"))

    app = start_app(seconds)
    kill_at = t0 + rng.uniform(seconds * 0.25, seconds * 0.6)
    killed = False
    while True:
        now = time.time()
        if not killed and now >= kill_at and fault.endswith(":kill9"):
            killed = True
            log.write(f"--- {fault} at {now - t0:.1f} s\n")
            if fault == "broker:kill9":
                w.sh("bash", RABBITMQ, "kill")
                w.sh("bash", RABBITMQ, "restart")  # several seconds; the run goes on meanwhile
            elif fault == "shard:kill9":
                w.sh("bash", SERVERS, "kill", "1")
                time.sleep(0.5)
                w.sh("bash", SERVERS, "restart", "1")
            elif fault == "app:kill9":
                app.kill()
            elif fault == "consumer:kill9":
                consumer.kill()
        if consumer.poll() is not None:
            if consumer.returncode == -signal.SIGKILL:
                fired["consumer"] += 1 if consumer_crash else 0
            # Any exit while the application runs (a crash, or an idle exit during a long
            # reconnect): a new consumer, so that the rest of the run is consumed under the fault.
            log.write(f"--- consumer exited {consumer.returncode} at {now - t0:.1f} s; "
                      "restarted\n")
            consumer_crash = None
            consumer = w.spawn(*consume_args, log=out("consume"))
        if app.poll() is not None:
            if app.returncode == -signal.SIGKILL:
                fired["app"] += 1 if app_crash else 0
            left = seconds - (time.time() - t0)
            if left > 0.5 and app.returncode != 0:
                log.write(f"--- application exited {app.returncode} at {now - t0:.1f} s; "
                          f"restarted for {left:.1f} s\n")
                app = start_app(left)
            else:
                break
        if time.time() - t0 > seconds + 150:
            raise RuntimeError("the application did not finish in time")
        time.sleep(0.05)
    # The application has finished; the consumer drains (restarted if a crash point kills it),
    # with the proxy's faults off: under faults that never stop a drain need not end.
    w.proxy_pass()
    while True:
        try:
            consumer.wait(timeout=240)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait()
            raise RuntimeError("the consumer did not go idle in 240 s")
        if consumer.returncode == 0:
            break
        if consumer.returncode == -signal.SIGKILL and consumer_crash:
            fired["consumer"] += 1
        log.write(f"--- consumer exited {consumer.returncode} after the run; restarted\n")
        consumer_crash = None
        consumer = w.spawn(*consume_args, log=out("consume"))
    stats = w.stop_proxy()
    if fault == "broker:kill9":
        w.ensure_broker()
    d = w.seigo("demo", "gacha", "consume", "--mode", mode, "--idle-exit", "3", timeout=240)
    log.write(f"--- drain: exit {d.returncode}\n{d.stdout[-1500:]}\n")
    a = w.seigo("demo", "gacha", "audit")
    log.write(f"--- audit: exit {a.returncode}\n{a.stdout[-3000:]}\n")
    for f in outs:
        f.seek(0)
        text = f.read()
        log.write(f"--- {os.path.basename(f.name)}\n{text[-1200:]}\n")
        f.close()
    # "  grants without an applied event (lost)     17  VIOLATION": the count of each check.
    violations = sum(int(n) for n in re.findall(r"(\d+)  VIOLATION$", a.stdout, re.M))
    if a.returncode != 0 and violations == 0:
        violations = 1  # the audit failed without a count (an error): never a pass
    pulls = sum(int(x) for x in re.findall(r"(\d+) pulls committed",
                                           "".join(open(f.name).read() for f in outs
                                                   if ".run." in f.name)))
    consumed = d.stdout + "".join(open(f.name).read() for f in outs if ".consume." in f.name)
    dups = sum(int(x) for x in re.findall(r"(\d+) duplicates ignored", consumed))
    need = "app" if app_crash else "consumer" if fault.startswith("consumer:") and \
        fault != "consumer:kill9" else None
    ok_fired = need is None or fired[need] > 0
    # The fault must have bitten, or the cell proves nothing: the proxy cut or dropped
    # something, and where a lost confirm / ack / post-commit death makes a duplicate certain,
    # the inbox dropped one.
    m = re.search(r"dropped=(\d+) cut=(\d+)", stats)
    if fault.startswith("proxy:") and not (m and int(m.group(1)) + int(m.group(2)) > 0):
        ok_fired = False
    if mode == "seigo" and fault in ("proxy:drop_confirm", "proxy:drop_ack",
                                     "consumer:after_commit") and dups == 0:
        ok_fired = False
    if pulls == 0:
        ok_fired = False
    return {"fault": fault, "mode": mode, "audit_exit": a.returncode, "violations": violations,
            "pulls": pulls, "fired": ok_fired, "dups": dups, "drain_exit": d.returncode,
            "audit": a.stdout, "proxy": stats}


def main():
    args = harness.parse_args(__doc__, os.path.join(ROOT, "build", "crashmatrix-gacha"), 5.0)
    rng = random.Random(args.seed)
    w = World(args)
    results = []
    try:
        w.start()
        with open(os.path.join(args.out, "log.txt"), "w") as log:
            for n, (fault, mode) in enumerate(cells()):
                if args.only and not re.search(args.only, f"{fault} {mode}"):
                    continue
                log.write(f"=== {fault} {mode}\n")
                t = time.time()
                res = run_cell(w, fault, mode, rng, log, f"cell{n:02d}")
                res["seconds"] = round(time.time() - t, 1)
                results.append(res)
                print(f"{fault:23} {mode:6} pulls {res['pulls']:>6}  duplicates "
                      f"{res['dups']:>4}  violations {res['violations']:>4}  audit exit "
                      f"{res['audit_exit']}"
                      f"{'' if res['fired'] else '  FAULT DID NOT BITE'}  "
                      f"({res['seconds']} s) {res['proxy']}", flush=True)
                if res["violations"]:
                    for line in res["audit"].splitlines():
                        if line.endswith("VIOLATION"):
                            print("      " + line.strip(), flush=True)
                log.flush()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"gacha_matrix: setup error: {e}", file=sys.stderr)
        w.stop()
        return 2
    w.stop()
    for r in results:
        r["audit_cell"] = f"{r['audit_exit']}" + ("" if r["fired"] else " (fault did not bite)")
    return harness.verdict(results, args.out, [
        ("fault", "fault"), ("mode", "mode"), ("pulls", "pulls"),
        ("duplicates dropped by the inbox", "dups"), ("violations", "violations"),
        ("audit exit", "audit_cell")], bad=lambda r: not r["fired"])

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
