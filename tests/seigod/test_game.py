"""The issue's "done when": a Python program using only the standard library and the client
(examples/python/game.py) does trades, raid attacks and gacha pulls through seigod — seigod is
killed with kill -9 mid-run and restarted — and the three demo audits pass: nothing half-done,
no event lost or applied twice."""
import os
import signal
import subprocess
import sys
import time
import unittest

import harness

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


class GameThroughSeigod(unittest.TestCase):
    def setUp(self):
        if not harness.amqp_url() or not harness.redis_urls():
            self.skipTest("needs SEIGO_TEST_REDIS and SEIGO_TEST_AMQP")
        for args in (("demo", "setup", "--players", "300"),
                     ("demo", "raid", "setup", "--players", "300", "--bosses", "3"),
                     ("demo", "gacha", "setup", "--players", "300")):
            rc, out = harness.seigo_cli(*args)
            self.assertEqual(rc, 0, out)

    def test_trades_raids_and_gacha_pulls_survive_a_seigod_kill(self):
        d = harness.Seigod(36872, amqp=True).start()
        self.addCleanup(d.kill)
        e = dict(os.environ)
        e["SEIGO_SHARDS"] = os.environ["SEIGO_TEST_SHARDS"]
        e["SEIGO_REDIS"] = os.environ["SEIGO_TEST_REDIS"]
        e["SEIGO_AMQP"] = harness.amqp_url()
        consumer = subprocess.Popen([harness.SEIGO_BIN, "demo", "gacha", "consume"], env=e,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        e["PYTHONPATH"] = os.path.join(ROOT, "clients", "python")
        game = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples", "python", "game.py"),
             "--url", d.url(), "--seconds", "8", "--players", "300", "--raid-players", "300",
             "--gacha-players", "300", "--bosses", "3"],
            env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(4)
            self.assertEqual(d.kill(signal.SIGKILL), -9, d.log_text())
            time.sleep(0.5)
            d.start()
            out, _ = game.communicate(timeout=120)
        finally:
            if game.poll() is None:
                game.kill()
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(timeout=60)
        self.assertEqual(game.returncode, 0, out)
        for kind in ("trade", "raid", "gacha"):
            counts = [l for l in out.splitlines() if l.startswith(kind)]
            self.assertTrue(counts and " 0 committed" not in counts[0], out)
        # Let the resolver and the relay finish, then drain the queue.
        deadline = time.time() + 60
        while time.time() < deadline:
            s = d.request("GET", "/v1/status")[1]
            if s["in_doubt"]["count"] == 0 and s["outbox"]["pending"] == 0:
                break
            time.sleep(0.5)
        rc, cout = harness.seigo_cli("demo", "gacha", "consume", "--idle-exit", "3")
        self.assertEqual(rc, 0, cout)
        d.kill()
        for args in (("demo", "audit"), ("demo", "raid", "audit"), ("demo", "gacha", "audit")):
            rc, aout = harness.seigo_cli(*args)
            self.assertEqual(rc, 0, aout)


if __name__ == "__main__":
    unittest.main()
