"""The hung-transaction report (doc/seigod.md, "The hung-transaction report").

In doubt: seigod A runs with SEIGO_CRASH_AT=before_decision and dies inside a cross-shard trade,
leaving the non-decider branch prepared and no decision (the decider's branch is never
prepared: it commits one-phase with the decision, so a two-shard trade shows one "prepared"
and the decider "not prepared"). seigod B, with hung_threshold_s = 1, must log the kernel-style
report once, before the decider deadline, list the transaction in /v1/in-doubt with hung: true
and count it in seigo_hung_transactions; after its resolver finishes it the count is 0 again and
the report is not repeated.

Lock wait: an interactive session on B holds a row lock (an UPDATE, no commit); a declarative
transaction on the same row waits (innodb_lock_wait_timeout is 2 s, seigo retries within the
request's deadline); B reports the waiter while it waits, naming the holder (see the test for
why the holder must itself be waiting: seigo only sees waits between running statements).

    /usr/bin/python3 tests/seigod/test_hung.py
"""
import http.client
import os
import re
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_crash import metric, post, prepared_gids, trade_body  # noqa: E402

PORT_A = 36862
PORT_B = 36863
TRADE_TIMEOUT_MS = 8000  # the crashed trade's deadline: the resolver may abort it only after


class HungTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rc, out = harness.seigo_cli("demo", "setup", "--players", "20")
        assert rc == 0, out
        cls.shard_of = harness.shard_of_players()
        cls.b = harness.Seigod(PORT_B, server={"hung_threshold_s": "1"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.b.kill()

    def hung_metric(self):
        _, m, _ = self.b.request("GET", "/metrics")
        return metric(m, "seigo_hung_transactions")

    def test_a_client_holding_row_locks_past_the_threshold_is_reported_with_whom_it_blocks(self):
        # Another application's transaction (not seigo's: a plain mariadb client) holds a row
        # lock for 4 s; a second one waits for it. Neither is a seigo transaction, so only
        # information_schema shows them: B must report the holder once, naming the waiter.
        player = min(self.shard_of)
        url = harness.shard_urls()[self.shard_of[player]]
        log_before = self.b.log_text().count("has held row locks for more than")
        holder = threading.Thread(target=harness.mysql, args=(
            url, "BEGIN; UPDATE players SET gold = gold WHERE player_id = %d; SELECT SLEEP(4); "
                 "ROLLBACK" % player))
        waiter = threading.Thread(target=harness.mysql, args=(
            url, "SET SESSION innodb_lock_wait_timeout = 10; UPDATE players SET gold = gold "
                 "WHERE player_id = %d" % player))
        holder.start()
        time.sleep(0.3)
        waiter.start()
        seen = None
        deadline = time.time() + 3.5
        while time.time() < deadline and seen is None:
            _, j, _ = self.b.request("GET", "/v1/in-doubt")
            for h in j["long_lock_holders"]:
                if "SLEEP(4)" in h["query"] and h["blocked"]:
                    seen = h
            time.sleep(0.1)
        holder.join()
        waiter.join()
        self.assertIsNotNone(seen, "the long lock holder was never listed")
        self.assertEqual(seen["shard"], self.shard_of[player])
        self.assertGreaterEqual(seen["rows_locked"], 1)
        self.assertRegex(seen["blocked"], r"^\d+ for \d+ s")
        time.sleep(1)
        log = self.b.log_text()
        self.assertEqual(log.count("has held row locks for more than") - log_before, 1, log)
        self.assertRegex(log, r"seigod:       running: SELECT SLEEP\(4\)")
        self.assertRegex(log, r"seigod:       blocking: thread \d+ for \d+ s")
        _, j, _ = self.b.request("GET", "/v1/in-doubt")
        self.assertFalse([h for h in j["long_lock_holders"] if "SLEEP(4)" in h["query"]])

    def test_in_doubt_report(self):
        self.assertFalse(prepared_gids(), "something is prepared before the test")
        seller = 1
        buyer = next(p for p in sorted(self.shard_of) if self.shard_of[p] != self.shard_of[seller])
        a = harness.Seigod(PORT_A, env={"SEIGO_CRASH_AT": "before_decision"})
        a.start()
        try:
            body = trade_body("", seller, buyer, 1, 5)
            del body["idempotency_key"]  # two shards exactly: the record would add a third
            body["timeout_ms"] = TRADE_TIMEOUT_MS
            t_sent = time.time()
            with self.assertRaises((OSError, http.client.HTTPException)):
                post(PORT_A, body)
            self.assertEqual(a.proc.wait(timeout=10), -9, a.log_text())
        finally:
            a.kill()
        gids = prepared_gids()
        self.assertEqual(len(gids), 1, "want one prepared transaction, got %s" % gids)
        gid = gids.pop()
        line = "transaction %s in doubt for more than 1 seconds" % gid

        # The report, before the deadline (after it the resolver may abort the transaction).
        while line not in self.b.log_text() and time.time() < t_sent + TRADE_TIMEOUT_MS / 1000:
            time.sleep(0.05)
        t_report = time.time()
        log = self.b.log_text()
        self.assertIn(line, log, "no hung report within the deadline:\n" + log)
        self.assertGreater(t_report - t_sent, 1.0, "reported before the threshold")
        _, j, _ = self.b.request("GET", "/v1/in-doubt")
        tx = [t for t in j["in_doubt"]["txs"] if t["gid"] == gid]
        self.assertEqual(len(tx), 1, j)
        tx = tx[0]
        self.assertTrue(tx["hung"], tx)
        self.assertIsNone(tx["decision"], tx)
        self.assertGreaterEqual(self.hung_metric(), 1)
        _, st, _ = self.b.request("GET", "/v1/status")
        self.assertGreaterEqual(st["in_doubt"]["hung"], 1, st["in_doubt"])

        # The report's lines: the decider, and each branch's shard and state.
        decider = tx["decider"]
        shards = {self.shard_of[seller], self.shard_of[buyer]}
        self.assertIn(decider, shards)
        other = (shards - {decider}).pop()
        block = log[log.index(line):].split("\n")
        report = [block[0]] + [l for l in block[1:8] if l.startswith("seigod:       ")]
        text = "\n".join(report)
        print("\n" + text, file=sys.stderr)
        self.assertRegex(text, r"decider shard %d, decision: none, deadline in \d+ ms" % decider)
        self.assertIn("seigod:       shard %d: prepared" % other, text)
        self.assertIn("seigod:       shard %d: not prepared" % decider, text)
        self.assertEqual({b["shard"]: b["state"] for b in tx["branches"]},
                         {other: "prepared", decider: "not prepared"})

        # The resolver finishes it (no decision: aborted past the deadline); hung goes to 0.
        deadline = time.time() + 20
        while time.time() < deadline:
            _, j, _ = self.b.request("GET", "/v1/in-doubt")
            if not any(t["gid"] == gid for t in j["in_doubt"]["txs"]):
                break
            time.sleep(0.1)
        self.assertFalse(any(t["gid"] == gid for t in j["in_doubt"]["txs"]), "not resolved")
        time.sleep(0.5)  # more monitor passes (every 200 ms): nothing is reported again
        self.assertEqual(self.hung_metric(), 0)
        _, st, _ = self.b.request("GET", "/v1/status")
        self.assertEqual(st["in_doubt"]["hung"], 0, st["in_doubt"])
        self.assertEqual(self.b.log_text().count(line), 1, "the report was repeated")
        self.assertFalse(prepared_gids())
        rc, out = harness.seigo_cli("demo", "audit")
        self.assertEqual(rc, 0, out)

    def test_lock_wait_report(self):
        # seigo's lock-wait view (Coordinator::LockWaits) has edges between seigo transactions
        # whose statements run: a waiter blocked by an idle holder (an interactive session
        # between requests) is not an edge. So a chain: the session S holds row X, idle;
        # T1 locks row Y, then waits for X (a running statement: T1 is known); T2 waits for Y,
        # held by T1: the edge T2 -> T1, reported after 1 s. T1's lock wait times out after
        # 2 s (innodb_lock_wait_timeout), which lets T2 through: the report must come in
        # between.
        shard = self.shard_of[3]
        x, y = [q for q in sorted(self.shard_of) if self.shard_of[q] == shard][:2]
        status, s, _ = self.b.request("POST", "/v1/sessions", {"timeout_ms": 15000})
        self.assertEqual(status, 201, s)
        sid = s["session"]
        status, r, _ = self.b.request("POST", "/v1/sessions/%s/steps" % sid, {"steps": [
            {"sql": "trade_credit_gold", "key": x, "params": [0, x], "expect_rows": 1}]})
        self.assertEqual(status, 200, r)
        out = {}

        def run(name, steps):
            out[name] = post(PORT_B, {"timeout_ms": 9000, "steps": steps})

        t1 = threading.Thread(target=run, daemon=True, args=("t1", [
            {"sql": "trade_credit_gold", "key": y, "params": [1, y], "expect_rows": 1},
            {"sql": "trade_credit_gold", "key": x, "params": [1, x], "expect_rows": 1}]))
        t2 = threading.Thread(target=run, daemon=True, args=("t2", [
            {"sql": "trade_credit_gold", "key": y, "params": [1, y], "expect_rows": 1}]))
        t1.start()
        time.sleep(0.15)
        t0 = time.time()
        t2.start()
        seen_hung_wait = seen_metric = False
        pat = re.compile(r"INFO: transaction (\S+) blocked for more than 1 seconds\.\n"
                         r"seigod:       lock wait on shard (\d+): thread \d+ waits (\d+) ms for "
                         r"(\S+) \(thread \d+\)")
        while time.time() < t0 + 4 and not (seen_hung_wait and seen_metric and
                                            pat.search(self.b.log_text())):
            _, st, _ = self.b.request("GET", "/v1/status")
            seen_hung_wait = seen_hung_wait or any(w["hung"] for w in st["lock_waits"])
            seen_metric = seen_metric or self.hung_metric() >= 1
            time.sleep(0.03)
        # The holder lets go: everything commits.
        status, c, _ = self.b.request("POST", "/v1/sessions/%s/commit" % sid, {})
        self.assertEqual(status, 200, c)
        t1.join(timeout=15)
        t2.join(timeout=15)
        self.assertEqual(out["t1"][0], 200, out)
        self.assertEqual(out["t2"][0], 200, out)
        log = self.b.log_text()
        self.assertTrue(seen_hung_wait, "/v1/status never showed a hung lock wait")
        self.assertTrue(seen_metric, "seigo_hung_transactions never counted the waiter")
        m = pat.search(log)
        self.assertIsNotNone(m, "no lock-wait report:\n" + log)
        print("\n" + m.group(0), file=sys.stderr)
        self.assertEqual(int(m.group(2)), shard)
        self.assertGreater(int(m.group(3)), 1000)
        # The Run's gid is its first attempt's; a one-shard commit's reply has gid "" (TxResult).
        if out["t2"][1]["attempts"] == 1 and out["t2"][1]["gid"]:
            self.assertEqual(m.group(1), out["t2"][1]["gid"])
        self.assertNotEqual(m.group(1), m.group(4))
        time.sleep(0.5)
        _, st, _ = self.b.request("GET", "/v1/status")
        self.assertEqual(st["lock_waits"], [])
        self.assertEqual(self.hung_metric(), 0)


if __name__ == "__main__":
    unittest.main()
