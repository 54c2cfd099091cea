"""What the Redis and RabbitMQ crash matrices (raid_matrix.py, gacha_matrix.py) share: running
the repo's scripts, one fault-injecting proxy (proxy.py) per world, and the verdict over the
cells. Python 3 standard library only."""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class WorldBase:
    """self.env: the environment of every script and seigo process (state dirs set by the
    subclass). One proxy at a time, listening on `listen` and forwarding to `target`."""

    def __init__(self, args, protocol, listen, target, control=0):
        self.args = args
        self.env = dict(os.environ)
        self.env.pop("SEIGO_CRASH_AT", None)
        self.protocol, self.listen, self.target, self.control = protocol, listen, target, control
        self.proxy = None

    def sh(self, *cmd, check=True):
        r = subprocess.run(list(cmd), env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stdout[-2000:]}")
        return r

    def start_proxy(self, cut=0.0, drop=0.0, match="^$", cut_all_ms=0.0):
        """(Re)starts the proxy: pass-through unless a fault is given."""
        self.stop_proxy()
        cmd = [sys.executable, os.path.join(HERE, "proxy.py"), "--protocol", self.protocol,
               "--listen", str(self.listen), "--target", self.target,
               "--seed", str(self.args.seed), "--cut-prob", str(cut), "--drop-prob", str(drop),
               "--drop-match", match, "--cut-all-every-ms", str(cut_all_ms),
               "--parent-pid", str(os.getpid())]
        if self.control:
            cmd += ["--control", str(self.control)]
        self.proxy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
        self.proxy.stdout.readline()  # "listening on ..."

    def proxy_pass(self):
        """Faults off, connections kept (needs a control port)."""
        with socket.create_connection(("127.0.0.1", self.control), timeout=5) as c:
            c.sendall(b"pass\n")
            c.recv(100)

    def stop_proxy(self):
        """Stops the proxy; returns its counters ("conns=.. cmds=.. dropped=.."), or ""."""
        if self.proxy is None:
            return ""
        self.proxy.send_signal(signal.SIGINT)
        try:
            out, _ = self.proxy.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proxy.kill()
            out = ""
        self.proxy = None
        m = re.search(r"proxy: exiting, (.*)", out or "")
        return m.group(1) if m else ""


def parse_args(doc, default_out, default_seconds):
    """--seigo, --out (created), --seconds, --seed, --only."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--seigo", required=True)
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--seconds", type=float, default=default_seconds)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="", help="regex on 'fault mode'")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    return args


def verdict(results, out_dir, columns, bad=lambda r: False):
    """Writes DIR/summary.md (one row per cell: `columns` = [(title, key)]), prints the verdict
    and returns the exit status: 0 if no seigo cell has violations, a failed audit or
    bad(cell), and naive mode (when it ran) showed violations; 1 otherwise."""
    seigo_bad = [r for r in results if r["mode"] == "seigo" and
                 (r["violations"] > 0 or r["audit_exit"] != 0 or bad(r))]
    naive = [r for r in results if r["mode"] == "naive"]
    naive_caught = sum(r["violations"] for r in naive)
    lines = ["| " + " | ".join(t for t, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[k]) for _, k in columns) + " |" for r in results]
    text = (f"seigo cells failing: {len(seigo_bad)}; naive violations: {naive_caught} over "
            f"{len(naive)} cells")
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n\n" + text + "\n")
    print(text)
    return 1 if seigo_bad or (naive and naive_caught == 0) else 0
