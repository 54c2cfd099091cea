"""`seigo check`, the nagios plugin: one status line with perfdata; 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN; it reports a coordinator killed mid-commit (in doubt) and then
recovered."""
import re
import subprocess
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
                rc, out = check(watcher.url(), "-c", "in_doubt=1")
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
                rc, out = check(watcher.url(), "-c", "in_doubt=1")
                if rc == 0:
                    break
                time.sleep(0.5)
            self.assertEqual(rc, 0, out)
            metrics = watcher.request("GET", "/metrics")[1]
            self.assertRegex(metrics, r"(?m)^seigo_in_doubt 0$")
            self.assertTrue(re.search(r"(?m)^seigo_resolver_passes_total [1-9]", metrics))


if __name__ == "__main__":
    unittest.main()
