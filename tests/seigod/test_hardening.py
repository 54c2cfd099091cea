"""Regressions from the review of seigod (each failed on the code before its fix): a deeply
nested body, bytes that are not UTF-8, a cross-site POST, a resend while the first request with
its key still holds the record, a lookup at that moment, a transient failure pinned as the
key's answer, a multi-shard session longer than 10 s, SIGTERM during startup."""
import json
import signal
import subprocess
import threading
import time
import unittest

import harness

TABLE = "seigod_hard"
STATEMENTS = {
    "hard_get": "SELECT id, b FROM %s WHERE id = ?" % TABLE,
    "hard_add": "UPDATE %s SET n = n + 1 WHERE id = ?" % TABLE,
    "hard_missing": "UPDATE seigod_hard_later SET n = n + 1 WHERE id = ?",
}
PORT = 36870


def total():
    return sum(int(harness.mysql(u, "SELECT COALESCE(SUM(n), 0) FROM %s" % TABLE).split()[0])
               for u in harness.shard_urls())


class SeigodHardening(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for u in harness.shard_urls():
            harness.mysql(u, "DROP TABLE IF EXISTS %s; DROP TABLE IF EXISTS seigod_hard_later;"
                             "CREATE TABLE %s (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, "
                             "b VARBINARY(16)) ENGINE=InnoDB; INSERT INTO %s SELECT seq, 0, "
                             "UNHEX('FF00FE41') FROM seq_1_to_40" % (TABLE, TABLE, TABLE))
        cls.d = harness.Seigod(PORT, statements=STATEMENTS,
                               server={"session_idle_ms": "20000", "max_timeout_ms": "30000"})
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        cls.d.kill()

    def post(self, body, path="/v1/transactions", raw=None, headers=None):
        return self.d.request("POST", path, body, raw=raw, headers=headers)

    def alive(self):
        self.assertEqual(self.d.request("GET", "/healthz")[0], 200)
        self.assertIsNone(self.d.proc.poll())

    def test_a_deeply_nested_body_is_refused_and_seigod_lives(self):
        deep = '{"steps": ' + "[" * 50000 + "]" * 50000 + "}"
        status, reply, _ = self.post(None, raw=deep)
        self.assertEqual(status, 400, reply)
        self.assertIn("nested deeper than 32", reply["error"]["message"])
        self.alive()

    def test_bytes_that_are_not_utf8_come_back_as_base64(self):
        status, reply, _ = self.post({"steps": [{"sql": "hard_get", "key": 3, "params": [3],
                                                 "return": True}]})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["results"][0]["rows"][0][1], {"base64": "/wD+QQ=="})
        # The same in an interactive session (an exception there killed the process).
        status, s, _ = self.post({}, path="/v1/sessions")
        self.assertEqual(status, 201, s)
        status, reply, _ = self.post({"steps": [{"sql": "hard_get", "key": 3, "params": [3],
                                                 "return": True}]},
                                     path="/v1/sessions/%s/steps" % s["session"])
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["results"][0]["rows"][0][1], {"base64": "/wD+QQ=="})
        status, reply, _ = self.post({}, path="/v1/sessions/%s/commit" % s["session"])
        self.assertEqual(status, 200, reply)
        self.alive()
        # The Python client turns such a cell back into bytes.
        import seigo_client
        with seigo_client.Client(self.d.url()).transaction() as tx:
            tx.sql("hard_get", key=3, params=[3], returning=True)
        self.assertEqual(tx.result.results[0].rows[0][1], b"\xff\x00\xfeA")

    def test_a_post_that_is_not_json_is_refused_before_it_runs(self):
        before = total()
        body = json.dumps({"steps": [{"sql": "hard_add", "key": 1, "params": [1]}]})
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            status, reply, _ = self.post(None, raw=body, headers={"Content-Type": ctype})
            self.assertEqual(status, 415, reply)
            self.assertEqual(reply["error"]["code"], "unsupported_media_type")
        self.assertEqual(total(), before)

    def hold_record(self, key, seconds):
        """Another request with `key` in flight: a transaction holding its record's row lock."""
        url = harness.shard_urls()[self.home_of(key)]
        t = threading.Thread(target=harness.mysql, args=(
            url, "BEGIN; INSERT INTO seigo_request VALUES ('%s', REPEAT('0', 32), 'running', '',"
                 " 0); SELECT SLEEP(%d); ROLLBACK" % (key, seconds)))
        t.start()
        time.sleep(0.5)
        return t

    def home_of(self, key):
        # The record's shard is ShardForString(key); find it by asking seigod for the lookup of
        # a held key on each shard is circular, so compute it: FNV-1a 64 + jump hash.
        h = 0xcbf29ce484222325
        for b in key.encode():
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
        n, b_, j = len(harness.shard_urls()), -1, 0
        while j < n:
            b_ = j
            h = (h * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
            j = int((b_ + 1) * (float(1 << 31) / float((h >> 33) + 1)))
        return b_

    def test_a_resend_while_the_first_holds_the_record_is_key_in_flight_not_gave_up(self):
        key = "hard-inflight-%d" % time.time_ns()
        before = total()
        t = self.hold_record(key, 6)
        body = {"idempotency_key": key, "timeout_ms": 3000,
                "steps": [{"sql": "hard_add", "key": 2, "params": [2], "expect_rows": 1}]}
        status, reply, _ = self.post(body)
        self.assertEqual(status, 503, reply)
        self.assertEqual(reply["error"]["code"], "key_in_flight")
        # A lookup meanwhile does not say "none" either.
        status, reply, _ = self.d.request("GET", "/v1/transactions/" + key)
        self.assertEqual(status, 503, reply)
        self.assertEqual(reply["error"]["code"], "key_in_flight")
        t.join()
        self.assertEqual(total(), before)
        # The holder rolled back: the resend runs, once.
        status, reply, _ = self.post(body)
        self.assertEqual(status, 200, reply)
        status, reply, _ = self.post(body)
        self.assertEqual(status, 200, reply)
        self.assertTrue(reply["replayed"])
        self.assertEqual(total(), before + 1)

    def test_a_query_failure_is_not_pinned_as_the_keys_answer(self):
        key = "hard-transient-%d" % time.time_ns()
        body = {"idempotency_key": key,
                "steps": [{"sql": "hard_missing", "key": 4, "params": [4], "expect_rows": 1}]}
        status, reply, _ = self.post(body)
        self.assertEqual(status, 422, reply)
        self.assertEqual(reply["error"]["code"], "query_failed")
        for u in harness.shard_urls():
            harness.mysql(u, "CREATE TABLE seigod_hard_later (id BIGINT PRIMARY KEY, n BIGINT) "
                             "ENGINE=InnoDB; INSERT INTO seigod_hard_later SELECT seq, 0 FROM "
                             "seq_1_to_40")
        status, reply, _ = self.post(body)
        self.assertEqual(status, 200, reply)
        self.assertFalse(reply["replayed"])

    def test_a_multi_shard_session_longer_than_ten_seconds_commits(self):
        before = total()
        status, s, _ = self.post({"timeout_ms": 20000}, path="/v1/sessions")
        self.assertEqual(status, 201, s)
        sid = s["session"]
        steps = [{"sql": "hard_add", "shard": i, "params": [5], "expect_rows": 1}
                 for i in range(len(harness.shard_urls()))]
        status, reply, _ = self.post({"steps": steps}, path="/v1/sessions/%s/steps" % sid)
        self.assertEqual(status, 200, reply)
        time.sleep(11)
        status, reply, _ = self.post({}, path="/v1/sessions/%s/commit" % sid)
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["outcome"], "committed")
        self.assertEqual(total(), before + len(steps))

    def test_sigterm_during_startup_is_not_lost(self):
        d = harness.Seigod(36871, statements=STATEMENTS)
        d.start(wait=False)
        time.sleep(0.05)  # before it listens: the coordinator is still opening
        d.proc.send_signal(signal.SIGTERM)
        try:
            rc = d.proc.wait(timeout=30)
        finally:
            d.kill()
        self.assertEqual(rc, 0, d.log_text())


class SeigodRetentionFloor(unittest.TestCase):
    def test_a_retention_shorter_than_an_hour_is_refused(self):
        d = harness.Seigod(36871, server={"idempotency_retention_s": "60"})
        p = subprocess.run([harness.SEIGOD_BIN, "--config", d.config_path, "--check-config"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("server.idempotency_retention_s", p.stderr)


if __name__ == "__main__":
    unittest.main()
