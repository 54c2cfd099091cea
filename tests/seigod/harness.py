"""Test harness for seigod (doc/seigod.md): starts real seigod processes against the test
servers that scripts/test.sh started (SEIGO_TEST_SHARDS, SEIGO_TEST_REDIS, SEIGO_TEST_AMQP).

Each seigod logs in as its own MariaDB user with a distinctive password (PASSWORD), read from a
password file, so that tests can grep logs, errors, metrics and the page for it.

Environment: SEIGOD_BIN (the seigod binary), SEIGO_BIN (the seigo CLI), SEIGO_TEST_*.
"""
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.parse

PASSWORD = "Zq7-seigod-T3st-pw"
ADMIN_TOKEN = "adm1n-t0ken-for-seigod-tests"
USER = "seigod_t"
SEIGOD_BIN = os.environ.get("SEIGOD_BIN", "build/seigod/seigod")
SEIGO_BIN = os.environ.get("SEIGO_BIN", "build/seigo")

SAMPLE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "seigod",
                             "seigod.toml.example")


def shard_urls():
    return [u for u in os.environ["SEIGO_TEST_SHARDS"].split(",") if u]


def redis_urls():
    return [u for u in os.environ.get("SEIGO_TEST_REDIS", "").split(",") if u]


def amqp_url():
    return os.environ.get("SEIGO_TEST_AMQP", "")


def mysql(url, sql):
    """Runs `sql` on the shard at `url` (mysql://user:pw@host:port/db) with the mariadb client."""
    u = urllib.parse.urlparse(url)
    out = subprocess.run(
        ["mariadb", "-h", u.hostname, "-P", str(u.port), "-u", urllib.parse.unquote(u.username),
         "-p" + urllib.parse.unquote(u.password or ""), "-N", "-B", u.path.lstrip("/"), "-e", sql],
        capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError("mariadb: " + out.stderr.strip())
    return out.stdout


def create_user():
    for url in shard_urls():
        mysql(url, "CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' IDENTIFIED BY '%s';"
                   "GRANT ALL PRIVILEGES ON *.* TO '%s'@'127.0.0.1';" % (USER, PASSWORD, USER))


def without_password(url):
    u = urllib.parse.urlparse(url)
    netloc = "%s@%s:%d" % (USER if u.scheme in ("mysql", "mariadb") else u.username,
                           u.hostname, u.port)
    return urllib.parse.urlunparse((u.scheme, netloc, u.path, "", "", ""))


def isolate(db):
    """Points SEIGO_TEST_SHARDS (and so the harness) at database `db` on the same servers: a
    test file's own tables, untouched by the others'."""
    urls = []
    for u in shard_urls():
        mysql(u, "CREATE DATABASE IF NOT EXISTS `%s`" % db)
        urls.append(urllib.parse.urlunparse(urllib.parse.urlparse(u)._replace(path="/" + db)))
    os.environ["SEIGO_TEST_SHARDS"] = ",".join(urls)


def on_all(sql):
    """`sql` on every shard: the outputs, in shard order."""
    return [mysql(u, sql) for u in shard_urls()]


def gold(p):
    """Player p's gold (`seigo demo setup`'s players table), from whichever shard holds it."""
    for out in on_all("SELECT gold FROM players WHERE player_id = %d" % p):
        if out.strip():
            return int(out)
    raise AssertionError("no player %d" % p)


def shard_of_players():
    """player_id -> the shard that holds it (`seigo demo setup`'s players table)."""
    shard_of = {}
    for s, url in enumerate(shard_urls()):
        for line in mysql(url, "SELECT player_id FROM players").split("\n"):
            if line:
                shard_of[int(line)] = s
    return shard_of


def seigo_cli(*args, env=None):
    """Runs the seigo CLI against the test shards; returns (rc, stdout+stderr)."""
    e = dict(os.environ)
    e["SEIGO_SHARDS"] = os.environ["SEIGO_TEST_SHARDS"]
    if redis_urls():
        e["SEIGO_REDIS"] = os.environ["SEIGO_TEST_REDIS"]
    if amqp_url():
        e["SEIGO_AMQP"] = amqp_url()
    e.update(env or {})
    p = subprocess.run([SEIGO_BIN] + list(args), capture_output=True, text=True, env=e,
                       timeout=300)
    return p.returncode, p.stdout + p.stderr


class Seigod:
    """One seigod process with its own config file, on 127.0.0.1:`port`."""

    def __init__(self, port, server=None, redis=True, amqp=False, statements=None, env=None):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="seigod-test-")
        self.log_path = os.path.join(self.dir, "seigod.log")
        self.proc = None
        self.env = env or {}
        with open(os.path.join(self.dir, "shard-password"), "w") as f:
            f.write(PASSWORD + "\n")
        with open(os.path.join(self.dir, "admin-token"), "w") as f:
            f.write(ADMIN_TOKEN + "\n")
        srv = {"listen": '"127.0.0.1:%d"' % port,
               "admin_token_file": '"%s"' % os.path.join(self.dir, "admin-token"),
               "monitor_interval_ms": "200"}
        srv.update(server or {})
        lines = ["[server]"] + ["%s = %s" % kv for kv in srv.items()]
        lines += ["[shards]", "urls = [%s]" % ", ".join(
            '"%s"' % without_password(u) for u in shard_urls()),
            'password_file = "%s"' % os.path.join(self.dir, "shard-password")]
        if redis and redis_urls():
            lines += ["[redis]", "urls = [%s]" % ", ".join('"%s"' % u for u in redis_urls())]
        if amqp and amqp_url():
            u = urllib.parse.urlparse(amqp_url())
            with open(os.path.join(self.dir, "amqp-password"), "w") as f:
                f.write(urllib.parse.unquote(u.password or "") + "\n")
            lines += ["[amqp]", 'url = "amqp://%s@%s:%d%s"' % (u.username, u.hostname, u.port,
                                                                u.path or "/"),
                      'password_file = "%s"' % os.path.join(self.dir, "amqp-password")]
        # The sample config's catalog, plus the test's own statements.
        lines.append("[statements]")
        with open(SAMPLE_CONFIG) as f:
            in_statements = False
            for line in f:
                if line.startswith("["):
                    in_statements = line.strip() == "[statements]"
                    continue
                if in_statements and "=" in line and not line.startswith("#"):
                    lines.append(line.rstrip("\n"))
        for name, sql in (statements or {}).items():
            lines.append("%s = %s" % (name, json.dumps(sql)))
        self.config_path = os.path.join(self.dir, "seigod.toml")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, wait=True, extra_env=None):
        create_user()
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra_env or {})
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([SEIGOD_BIN, "--config", self.config_path],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("seigod exited with %s:\n%s" % (self.proc.returncode,
                                                                  self.log_text()))
            try:
                status, _, _ = self.request("GET", "/healthz", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("seigod did not answer /healthz:\n" + self.log_text())

    def request(self, method, path, body=None, headers=None, timeout=30, raw=None):
        """(status, parsed JSON or text, headers). `body` is JSON-encoded; `raw` is sent as is."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body))
            h = {"Content-Type": "application/json"}
            h.update(headers or {})
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            text = r.read().decode("utf-8", "replace")
            ctype = r.getheader("Content-Type", "")
            parsed = json.loads(text) if ctype.startswith("application/json") and text else text
            return r.status, parsed, dict(r.getheaders())
        finally:
            c.close()

    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        if getattr(self, "log", None) and not self.log.closed:
            self.log.close()
        return self.proc.returncode if self.proc else None

    def stop(self):
        """SIGTERM, and wait; returns the exit code."""
        return self.kill(signal.SIGTERM)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
