"""`seigo check`, the nagios plugin: one status line with perfdata; 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN; it reports a coordinator killed mid-commit (in doubt) and then
recovered; thresholds as the plugin guidelines mean them (alert above N), plain-decimal
perfdata, a stale status, an incomplete in-doubt scan and `ready: false` from a scripted status
server; a bad command line is UNKNOWN. Ports 36874-36876."""
import copy
import http.server
import json
import re
import subprocess
import threading
import time
import unittest

import harness


def check(url, *args):
    p = subprocess.run([harness.SEIGO_BIN, "check", "--url", url] + list(args),
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout.strip()


def cross_shard_players():
    """Two player ids on different shards (the trade tables of `seigo demo setup`)."""
    rows = {}
    for s, url in enumerate(harness.shard_urls()):
        out = harness.mysql(url, "SELECT player_id FROM players ORDER BY player_id LIMIT 1")
        rows[s] = int(out.split()[0])
    assert len(rows) >= 2, "needs two shards"
    return rows[0], rows[1]


FAKE_PORT = 36874  # shared with the live tests, which run one at a time


class FakeStatus:
    """An HTTP server answering GET /v1/status with `self.status` (now_ms filled in)."""

    def __init__(self, port=FAKE_PORT):
        self.status = None
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                st = copy.deepcopy(fake.status)
                data = json.dumps(st).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % port

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def status(in_doubt=0, age_ms=0, hung=0, backlog=0, outbox_ms=0, resolver_ms=200,
           monitor_age_ms=500, errors=(), ready=True):
    now = int(time.time() * 1000)
    return {"in_doubt": {"count": in_doubt, "oldest_age_ms": age_ms, "phase2_backlog": backlog,
                         "hung": hung, "txs": [], "errors": list(errors)},
            "outbox": {"pending": 0, "oldest_age_ms": outbox_ms, "dead": 0, "errors": []},
            "resolver": {"last_pass_age_ms": resolver_ms, "passes": 3, "errors": 0},
            "stores": [{"store": "shard0", "up": True}, {"store": "shard1", "up": True}],
            "uptime_s": 100, "ready": ready, "now_ms": now, "monitor_ms": now - monitor_age_ms}


class CheckRules(unittest.TestCase):
    """The rules on a scripted /v1/status."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeStatus()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def run_check(self, st, *args):
        self.fake.status = st
        return check(self.fake.url, *args)

    def test_a_threshold_is_the_highest_ok_value(self):
        # Plugin guidelines: "N" = OK for 0..N, alert above N.
        for kw, level in [({"in_doubt": 5}, 0), ({"in_doubt": 6}, 1), ({"in_doubt": 20}, 1),
                          ({"in_doubt": 21}, 2), ({"age_ms": 60000}, 0), ({"age_ms": 60001}, 1),
                          ({"age_ms": 300000}, 1), ({"age_ms": 300001}, 2), ({"hung": 0}, 0),
                          ({"hung": 1}, 2), ({"backlog": 10}, 0), ({"backlog": 11}, 1),
                          ({"outbox_ms": 30000}, 0), ({"outbox_ms": 300001}, 2),
                          ({"resolver_ms": 10000}, 0), ({"resolver_ms": 10001}, 1),
                          ({"resolver_ms": 60001}, 2)]:
            rc, out = self.run_check(status(**kw))
            self.assertEqual(rc, level, (kw, out))
        rc, out = self.run_check(status(in_doubt=1), "-c", "in_doubt=0")
        self.assertEqual(rc, 2, out)
        self.assertIn("; in_doubt 1 > 0 |", out)
        rc, out = self.run_check(status(in_doubt=1), "-w", "in_doubt=1")
        self.assertEqual(rc, 0, out)
        rc, out = self.run_check(status(age_ms=2500), "-w", "age=2.5")
        self.assertEqual(rc, 0, out)
        rc, out = self.run_check(status(age_ms=2501), "-w", "age=2.5")
        self.assertEqual(rc, 1, out)
        self.assertIn("age 2.501s > 2.5s", out)

    def test_perfdata_is_plain_decimal(self):
        rc, out = self.run_check(status(age_ms=1300))
        self.assertEqual(rc, 0, out)
        self.assertTrue(out.endswith(
            "| in_doubt=0;5;20 age=1.300s;60;300 hung=0;0;0 backlog=0;10;100 "
            "outbox_lag=0.000s;30;300 resolver=0.200s;10;60"), out)
        rc, out = self.run_check(status(outbox_ms=12345678000, backlog=2000000),
                                 "-w", "backlog=1000000,outbox_lag=0.25",
                                 "-c", "backlog=25000000,outbox_lag=99999999")
        self.assertEqual(rc, 1, out)
        perf = out.split("|", 1)[1]
        self.assertNotRegex(perf, r"\d[eE][+-]?\d")
        self.assertIn(" backlog=2000000;1000000;25000000 ", perf)
        self.assertIn(" outbox_lag=12345678.000s;0.25;99999999 ", perf)
        for p in perf.split():
            self.assertRegex(p, r"^\w+=[0-9]+(\.[0-9]+)?s?;[0-9]+(\.[0-9]+)?;[0-9]+(\.[0-9]+)?$")

    def test_a_stale_status_is_warning(self):
        rc, out = self.run_check(status(monitor_age_ms=59000))
        self.assertEqual(rc, 0, out)
        rc, out = self.run_check(status(monitor_age_ms=61000))
        self.assertEqual(rc, 1, out)
        self.assertTrue(out.startswith("SEIGO WARNING - "), out)
        self.assertIn("status is 61 s old", out)
        self.assertIn("monitor", out)
        # Still CRITICAL when a value says so.
        rc, out = self.run_check(status(monitor_age_ms=61000, hung=1))
        self.assertEqual(rc, 2, out)

    def test_an_incomplete_in_doubt_scan_is_warning(self):
        rc, out = self.run_check(status(errors=["shard 1: Lost connection to server",
                                                "redis 0: timeout"]))
        self.assertEqual(rc, 1, out)
        self.assertIn("in-doubt scan incomplete (2 error(s)): shard 1: Lost connection to "
                      "server", out)
        self.assertNotIn("redis 0", out)
        # An error's text cannot start the perfdata early nor add a line.
        rc, out = self.run_check(status(errors=["shard 0: a|b\nc"]))
        self.assertEqual(rc, 1, out)
        self.assertIn("shard 0: a/b c |", out)
        self.assertEqual(out.count("|"), 1, out)

    def test_not_ready_is_critical(self):
        rc, out = self.run_check(status(ready=False))
        self.assertEqual(rc, 2, out)
        self.assertTrue(out.startswith("SEIGO CRITICAL - "), out)
        self.assertIn("not ready", out)

    def test_a_bad_command_line_is_unknown(self):
        for args in (["--bogus"], ["-w"], ["--timeout", "0"], ["stray"]):
            rc, out = check(self.fake.url, *args)
            self.assertEqual(rc, 3, (args, out))
            self.assertTrue(out.startswith("SEIGO UNKNOWN - "), (args, out))
        p = subprocess.run([harness.SEIGO_BIN, "check", "--help"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("--warning", p.stdout)
        # The rest of the CLI keeps its usage exit 2.
        p = subprocess.run([harness.SEIGO_BIN, "status", "--bogus"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)


class SeigoCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rc, out = harness.seigo_cli("demo", "setup", "--players", "50")
        assert rc == 0, out

    def test_ok_line_with_perfdata(self):
        with harness.Seigod(36874) as d:
            time.sleep(1.5)  # a resolver pass
            rc, out = check(d.url())
            self.assertEqual(rc, 0, out)
            self.assertTrue(out.startswith("SEIGO OK - 0 in doubt"), out)
            perf = out.split("|", 1)[1].split()
            self.assertEqual([p.split("=")[0] for p in perf],
                             ["in_doubt", "age", "hung", "backlog", "outbox_lag", "resolver"])
            for p in perf:
                self.assertRegex(p, r"^\w+=[0-9.]+s?;[0-9.]+;[0-9.]+$")

    def test_thresholds_raise_warning_and_critical(self):
        with harness.Seigod(36874) as d:
            time.sleep(1.5)
            rc, out = check(d.url(), "-w", "resolver=0")
            if rc == 0:  # a pass ended this very millisecond: resolver=0.000s is not > 0
                time.sleep(0.05)
                rc, out = check(d.url(), "-w", "resolver=0")
            self.assertEqual(rc, 1, out)
            self.assertIn("WARNING", out)
            rc, out = check(d.url(), "-w", "resolver=0", "-c", "resolver=0")
            self.assertEqual(rc, 2, out)

    def test_unreachable_and_bad_input_are_unknown(self):
        rc, out = check("http://127.0.0.1:36879")
        self.assertEqual(rc, 3, out)
        self.assertTrue(out.startswith("SEIGO UNKNOWN - cannot reach"), out)
        rc, out = check("http://127.0.0.1:36879", "-w", "nonsense")
        self.assertEqual(rc, 3, out)
        rc, out = check("http://127.0.0.1:36879", "-w", "in_doubt=-1")
        self.assertEqual(rc, 3, out)

    def test_a_coordinator_killed_mid_commit_is_critical_then_ok_once_recovered(self):
        buyer, seller = cross_shard_players()
        trade = {"steps": [
            {"sql": "trade_take_item", "key": seller, "params": [seller, 1], "expect_rows": 1},
            {"sql": "trade_credit_gold", "key": seller, "params": [5, seller], "expect_rows": 1},
            {"sql": "trade_debit_gold", "key": buyer, "params": [5, buyer, 5], "expect_rows": 1},
            {"sql": "trade_give_item", "key": buyer, "params": [buyer, 1]}]}
        with harness.Seigod(36875, server={"hung_threshold_s": "1"}) as watcher:
            victim = harness.Seigod(36876, env={"SEIGO_CRASH_AT": "before_decision"})
            victim.start()
            try:
                victim.request("POST", "/v1/transactions", trade, timeout=30)
            except OSError:
                pass  # it died mid-commit: the reply is lost
            self.assertEqual(victim.proc.wait(timeout=30), -9, victim.log_text())
            # Both branches prepared, no decision: in doubt until the deadline (~10 s).
            seen = None
            deadline = time.time() + 8
            while time.time() < deadline:
                rc, out = check(watcher.url(), "-c", "in_doubt=0")
                if rc == 2:
                    seen = out
                    break
                time.sleep(0.2)
            self.assertIsNotNone(seen, "seigo check never saw the transaction in doubt")
            self.assertRegex(seen, r"^SEIGO CRITICAL - [1-9]\d* in doubt")
            self.assertRegex(seen, r"in_doubt=[1-9]")
            # The watcher's resolver aborts it after the deadline: OK again.
            deadline = time.time() + 40
            rc, out = None, ""
            while time.time() < deadline:
                rc, out = check(watcher.url(), "-c", "in_doubt=0")
                if rc == 0:
                    break
                time.sleep(0.5)
            self.assertEqual(rc, 0, out)
            metrics = watcher.request("GET", "/metrics")[1]
            self.assertRegex(metrics, r"(?m)^seigo_in_doubt 0$")
            self.assertTrue(re.search(r"(?m)^seigo_resolver_passes_total [1-9]", metrics))


if __name__ == "__main__":
    unittest.main()
