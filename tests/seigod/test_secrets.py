"""No credential appears in seigod's logs, errors, metrics or page (doc/seigod.md,
"Configuration": "No password appears in a log line, an error, /metrics, /v1/status or the
page").

The secrets: the shard password (harness.PASSWORD, from a password file or written into the
URLs), the admin token (from a file or the environment), the broker's password, and a wrong
password in a config that cannot log in. Each is looked for as is and percent-encoded in:
seigod's log (stderr), every response body of a running seigod (/metrics, /v1/status,
/v1/in-doubt, /readyz, the page, and error responses of every kind including a SQL error), and
`seigod --check-config` output, over healthy configs and failing ones (an unreachable shard, a
wrong password, bad values, a bad scheme, an unset password_env, a TOML syntax error).

    /usr/bin/python3 tests/seigod/test_secrets.py
"""
import os
import subprocess
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PORT = 36864
PORT2 = 36865
WRONG_PASSWORD = "Wr0ng:p@ss/word%x-4711"
ENV_TOKEN = "env-admin-t0ken-seigod-secrets"


def broker_password():
    u = urllib.parse.urlparse(harness.amqp_url())
    return urllib.parse.unquote(u.password or "")


SECRETS = [harness.PASSWORD, harness.ADMIN_TOKEN, WRONG_PASSWORD, ENV_TOKEN] + (
    [broker_password()] if broker_password() else [])


def forms(secret):
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}


class SecretsTest(unittest.TestCase):

    def assertClean(self, text, where):
        for s in SECRETS:
            for f in forms(s):
                self.assertNotIn(f, text, "a secret (%r) appears in %s:\n%s" % (s, where, text))

    def check_config(self, d, env=None):
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([harness.SEIGOD_BIN, "--config", d.config_path, "--check-config"],
                           capture_output=True, text=True, env=e, timeout=30)
        out = p.stdout + p.stderr
        self.assertClean(out, "seigod --check-config output")
        return p.returncode, out

    def edit(self, d, fn):
        with open(d.config_path) as f:
            text = f.read()
        with open(d.config_path, "w") as f:
            f.write(fn(text))

    def start_failing(self, d, env=None):
        """Starts a seigod that must exit 1; returns its log."""
        d.env = env or {}
        d.start(wait=False)
        try:
            d.proc.wait(timeout=30)
        finally:
            d.kill()
        log = d.log_text()
        self.assertEqual(d.proc.returncode, 1, log)
        self.assertClean(log, "the log of a seigod that could not start")
        return log

    def sweep(self, d):
        """Every read-only endpoint's body; returns them joined."""
        bodies = []
        for path in ("/metrics", "/v1/status", "/v1/in-doubt", "/readyz", "/healthz", "/"):
            status, body, _ = d.request("GET", path)
            text = body if isinstance(body, str) else repr(body)
            self.assertClean(text, "GET " + path)
            bodies.append(text)
        return "\n".join(bodies)

    # ---- Running seigod, every kind of error ------------------------------------------------

    def test_running_seigod(self):
        d = harness.Seigod(PORT, amqp=True, statements={
            "bad_sql": "SELECT no_such_column FROM no_such_table_secrets WHERE player_id = ?"})
        rc, out = self.check_config(d)
        self.assertEqual(rc, 0, out)
        if harness.amqp_url():
            self.assertIn("amqp://", out)  # the broker is shown, redacted
        d.start()
        try:
            self.exercise(d)
        finally:
            d.kill()
        self.assertClean(d.log_text(), "seigod's log")

    def exercise(self, d):
        errors = []

        def call(method, path, body=None, raw=None, headers=None, want=None):
            status, reply, _ = d.request(method, path, body=body, raw=raw, headers=headers)
            text = reply if isinstance(reply, str) else repr(reply)
            self.assertClean(text, "%s %s -> %d" % (method, path, status))
            if want is not None:
                self.assertEqual(status, want, text)
            errors.append(text)
            return status, reply

        step = {"sql": "player_gold", "key": 1, "params": [1]}
        call("GET", "/no/such/path", want=404)
        call("PUT", "/v1/transactions", raw="{}", want=405)
        call("POST", "/v1/transactions", raw="{not json", want=400)
        call("POST", "/v1/transactions", {"steps": [step], "bogus": 1}, want=400)
        call("POST", "/v1/transactions", {"steps": [{"sql": "no_such_statement", "key": 1}]},
             want=400)
        call("POST", "/v1/transactions", {"steps": [{"raw_sql": "SELECT 1", "key": 1}]}, want=400)
        call("POST", "/v1/transactions", {"steps": [dict(step, params=[{"x": 1}])]}, want=400)
        call("POST", "/v1/transactions", {"steps": [step] * 100}, want=400)
        call("POST", "/v1/transactions", raw='{"steps": "' + "x" * (1 << 21) + '"}', want=413)
        # A SQL error (the server's message), and one with the idempotency key recorded.
        status, r = call("POST", "/v1/transactions",
                         {"steps": [{"sql": "bad_sql", "key": 1, "params": [1]}]}, want=422)
        self.assertEqual(r["error"]["code"], "query_failed", r)
        self.assertIn("no_such_table_secrets", r["error"]["message"])
        call("POST", "/v1/transactions", {"idempotency_key": "secrets-%d" % time.time(),
                                          "steps": [{"sql": "bad_sql", "key": 2, "params": [2]}]},
             want=422)
        call("POST", "/v1/transactions", {"steps": [
            {"sql": "trade_debit_gold", "key": 1, "params": [10 ** 12, 1, 10 ** 12],
             "expect_rows": 1, "reason": "not enough gold"}]}, want=422)
        call("GET", "/v1/transactions/no-such-key", want=404)
        call("POST", "/v1/in-doubt/abc/resolve", {}, want=401)
        call("POST", "/v1/in-doubt/abc/resolve", {}, headers={"Authorization": "Bearer nope"},
             want=403)
        call("POST", "/v1/in-doubt/abc/resolve", {},
             headers={"Authorization": "Bearer " + harness.ADMIN_TOKEN}, want=404)
        call("POST", "/v1/sessions/s-nope/steps", {"steps": [step]}, want=404)
        status, s = call("POST", "/v1/sessions", {"timeout_ms": 3000}, want=201)
        call("POST", "/v1/sessions/%s/steps" % s["session"],
             {"steps": [{"sql": "bad_sql", "key": 1, "params": [1]}]})
        call("POST", "/v1/sessions/%s/commit" % s["session"], {})
        # A commit that goes through the broker's relay, when there is a broker.
        steps = [{"sql": "player_gold", "key": 1, "params": [1]}]
        if harness.amqp_url():
            steps.append({"publish": {"exchange": "", "routing_key": "seigod-secrets-test",
                                      "body": "{}"}})
        call("POST", "/v1/transactions", {"steps": steps}, want=200)
        time.sleep(0.5)
        self.sweep(d)
        self.assertGreater(len(errors), 20)

    # ---- Passwords inside the URLs, the admin token from the environment ---------------------

    def test_inline_passwords_and_env_token(self):
        d = harness.Seigod(PORT2, amqp=True)
        pw = harness.PASSWORD
        b = broker_password()

        def inline(text):
            text = text.replace("mysql://%s@" % harness.USER, "mysql://%s:%s@" % (harness.USER, pw))
            text = "\n".join(l for l in text.split("\n") if not l.startswith("password_file"))
            if b:
                u = urllib.parse.urlparse(harness.amqp_url())
                text = text.replace("amqp://%s@" % u.username, "amqp://%s:%s@" % (u.username, b))
            return text.replace('admin_token_file = "%s"' % os.path.join(d.dir, "admin-token"),
                                'admin_token_env = "SEIGOD_SECRETS_TEST_TOKEN"')

        self.edit(d, inline)
        env = {"SEIGOD_SECRETS_TEST_TOKEN": ENV_TOKEN}
        rc, out = self.check_config(d, env)
        self.assertEqual(rc, 0, out)
        self.assertIn("holds a password", out)  # warned about, without it
        d.env = env
        d.start()
        try:
            status, r, _ = d.request("POST", "/v1/in-doubt/abc/resolve", {},
                                     headers={"Authorization": "Bearer " + ENV_TOKEN})
            self.assertEqual(status, 404, r)  # the token from the environment is the one
            status, r, _ = d.request("POST", "/v1/transactions",
                                     {"steps": [{"sql": "player_gold", "key": 1, "params": [1]}]})
            self.assertEqual(status, 200, r)
            text = self.sweep(d)
            self.assertIn("mysql://%s:***@" % harness.USER, text)  # shown redacted
        finally:
            d.kill()
        log = d.log_text()
        self.assertIn("holds a password", log)
        self.assertClean(log, "seigod's log")

    # ---- Stores that cannot be reached or logged into ---------------------------------------

    def test_unreachable_shard(self):
        # Passwords inline, so that every URL seigod mentions carries one unless redacted.
        d = harness.Seigod(PORT, redis=False)
        urls = harness.shard_urls()
        bad_port = urllib.parse.urlparse(urls[-1]).port

        def edit(text):
            text = text.replace("mysql://%s@" % harness.USER,
                                "mysql://%s:%s@" % (harness.USER, harness.PASSWORD))
            text = text.replace(":%d/" % bad_port, ":1/")
            return "\n".join(l for l in text.split("\n") if not l.startswith("password_file"))

        self.edit(d, edit)
        rc, out = self.check_config(d)
        self.assertEqual(rc, 0, out)
        d.start()
        try:
            deadline = time.time() + 10
            while time.time() < deadline:
                status, r, _ = d.request("GET", "/readyz")
                if status == 503:
                    break
                time.sleep(0.1)
            self.assertEqual(status, 503, r)
            self.assertClean(repr(r), "/readyz")
            self.assertIn("127.0.0.1:1/", r["error"]["message"], "the URL is mentioned")
            self.assertIn("***", r["error"]["message"])
            # A transaction on the unreachable shard: its error names the shard.
            status, r, _ = d.request("POST", "/v1/transactions", {"timeout_ms": 500, "steps": [
                {"sql": "player_gold", "shard": len(urls) - 1, "params": [1]}]})
            self.assertEqual(status, 503, r)
            self.assertClean(repr(r), "a transaction's error")
            text = self.sweep(d)
            self.assertIn("127.0.0.1:1/", text)
            # Only the unreachable shard is shown down (page, /v1/status, seigo_store_up).
            _, st, _ = d.request("GET", "/v1/status")
            self.assertEqual([x["up"] for x in st["stores"]],
                             [True] * (len(urls) - 1) + [False], st["stores"])
            _, m, _ = d.request("GET", "/metrics")
            self.assertIn('seigo_store_up{store="shard0"} 1', m)
            self.assertIn('seigo_store_up{store="shard%d"} 0' % (len(urls) - 1), m)
        finally:
            d.kill()
        self.assertClean(d.log_text(), "seigod's log")

    def test_wrong_password(self):
        d = harness.Seigod(PORT, redis=False)
        with open(os.path.join(d.dir, "shard-password"), "w") as f:
            f.write(WRONG_PASSWORD + "\n")
        rc, out = self.check_config(d)
        self.assertEqual(rc, 0, out)  # the file is fine; logging in is not
        log = self.start_failing(d)
        self.assertIn("Access denied", log)
        self.assertNotIn("InvalidArgument: InvalidArgument:", log)  # the code said once
        self.assertIn("***", log)

    # ---- Configs that do not load -----------------------------------------------------------

    def test_bad_configs(self):
        pw = harness.PASSWORD
        inline = lambda text: text.replace(  # noqa: E731
            "mysql://%s@" % harness.USER, "mysql://%s:%s@" % (harness.USER, pw))
        no_file = lambda text: "\n".join(  # noqa: E731
            l for l in text.split("\n") if not l.startswith("password_file"))
        cases = {
            "bad scheme, inline password":
                lambda t: no_file(inline(t)).replace("mysql://", "postgres://", 1),
            "password_env unset":
                lambda t: t.replace('password_file = "', 'password_env = "SEIGOD_UNSET_VAR_X"\n'
                                                         '# "', 1),
            "inline password and password_file": inline,
            "bad value, inline password":
                lambda t: no_file(inline(t)).replace("[server]", "[server]\nhung_threshold_s = 0"),
            "bad type": lambda t: no_file(inline(t)).replace("[server]",
                                                             "[server]\nmax_steps = \"many\""),
            "unknown key": lambda t: no_file(inline(t)).replace("[server]",
                                                                "[server]\npassword = \"%s\"" % pw),
            "TOML syntax error on a line with a password":
                lambda t: no_file(inline(t)).replace('/seigo"]', '/seigo"', 1),
            "short admin token": lambda t: t,
        }
        for name, fn in cases.items():
            with self.subTest(name):
                d = harness.Seigod(PORT)
                if name == "short admin token":
                    with open(os.path.join(d.dir, "admin-token"), "w") as f:
                        f.write("shortpw\n")
                self.edit(d, fn)
                rc, out = self.check_config(d)
                self.assertEqual(rc, 1, "%s: --check-config accepted it:\n%s" % (name, out))
                self.assertIn("seigod: ", out)
                log = self.start_failing(d)
                self.assertIn(d.config_path, log, "the error names the file")


if __name__ == "__main__":
    unittest.main()
