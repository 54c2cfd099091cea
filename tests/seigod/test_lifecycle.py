"""seigod's life: SIGTERM stops accepting, answers what it started, rolls open sessions back and
exits 0; several seigod serve the same stores at once."""
import http.client
import json
import signal
import threading
import time
import unittest

import harness

TABLE = "seigod_life"
STATEMENTS = {
    "life_add": "UPDATE %s SET n = n + 1 WHERE id = ?" % TABLE,
    "life_get": "SELECT n FROM %s WHERE id = ?" % TABLE,
}


def total():
    return sum(int(harness.mysql(u, "SELECT COALESCE(SUM(n), 0) FROM %s" % TABLE).split()[0])
               for u in harness.shard_urls())


def ids_on_two_shards():
    """Row ids 1..40 live on every shard (each shard holds its own row for each id); a step with
    key=i goes to ShardFor(i)."""
    return list(range(1, 41))


class SeigodLifecycle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for u in harness.shard_urls():
            harness.mysql(u, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (id BIGINT PRIMARY KEY, "
                             "n BIGINT NOT NULL) ENGINE=InnoDB; INSERT INTO %s SELECT seq, 0 "
                             "FROM seq_1_to_40" % (TABLE, TABLE, TABLE))

    def post(self, port, body, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("POST", "/v1/transactions", body=json.dumps(body),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        finally:
            c.close()

    def test_sigterm_answers_what_it_started_and_exits_0(self):
        before = total()
        d = harness.Seigod(36878, statements=STATEMENTS).start()
        stop = threading.Event()
        acked, errors, refused = [0], [], [0]
        lock = threading.Lock()

        def client(k):
            i = 0
            while not stop.is_set():
                i += 1
                a, b = (k * 7 + i) % 40 + 1, (k * 11 + i * 3) % 40 + 1
                body = {"steps": [{"sql": "life_add", "key": a, "params": [a], "expect_rows": 1},
                                  {"sql": "life_add", "key": b, "params": [b], "expect_rows": 1}]}
                try:
                    status, reply = self.post(36878, body)
                except (ConnectionError, OSError):
                    with lock:
                        refused[0] += 1
                    time.sleep(0.05)
                    continue
                with lock:
                    if status == 200:
                        acked[0] += 2
                    elif status == 503 and reply["error"]["code"] == "stopping":
                        pass
                    else:
                        errors.append((status, reply))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        time.sleep(2)
        rc = d.kill(signal.SIGTERM)
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(rc, 0, d.log_text())
        self.assertEqual(errors, [])
        self.assertGreater(acked[0], 0)
        log = d.log_text()
        self.assertIn("received SIGTERM", log)
        self.assertIn("seigod: stopped", log)
        # Every acknowledged transaction committed; nothing else did (a request cut by the stop
        # gets no reply only if it never started: the listener closed first).
        self.assertEqual(total() - before, acked[0])
        rc, out = harness.seigo_cli("status")
        self.assertEqual(rc, 0, out)

    def test_an_open_session_is_rolled_back_at_sigterm(self):
        before = total()
        d = harness.Seigod(36878, statements=STATEMENTS).start()
        status, s, _ = d.request("POST", "/v1/sessions", {"timeout_ms": 20000})
        self.assertEqual(status, 201, s)
        sid = s["session"]
        status, r, _ = d.request("POST", "/v1/sessions/%s/steps" % sid,
                                 {"steps": [{"sql": "life_add", "key": 5, "params": [5],
                                             "expect_rows": 1}]})
        self.assertEqual(status, 200, r)
        self.assertEqual(d.kill(signal.SIGTERM), 0, d.log_text())
        self.assertEqual(total(), before)

    def test_many_clients_connecting_at_once_are_all_served(self):
        # 128 connections opened at once are all served. (Debian's cpp-httplib listens with a
        # backlog of 5; seigod raises it. The benchmark's 32 keep-alive clients saw resets
        # before that; this test did not reproduce them on the old code: it is a capacity
        # check, the benchmark's "failed" column is the regression check.)
        with harness.Seigod(36878, statements=STATEMENTS) as d:
            n = 128
            barrier = threading.Barrier(n)
            failures = []

            def one():
                barrier.wait()
                try:
                    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
                    c.request("GET", "/healthz")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        failures.append(r.status)
                    c.close()
                except OSError as e:
                    failures.append(repr(e))

            threads = [threading.Thread(target=one) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(failures, [])

    def test_two_seigod_serve_the_same_stores(self):
        before = total()
        with harness.Seigod(36878, statements=STATEMENTS) as a, \
                harness.Seigod(36871, statements=STATEMENTS) as b:
            for d in (a, b):
                for i in range(5):
                    status, r = self.post(d.port, {"steps": [
                        {"sql": "life_add", "key": i + 1, "params": [i + 1], "expect_rows": 1},
                        {"sql": "life_add", "key": i + 20, "params": [i + 20], "expect_rows": 1}]})
                    self.assertEqual(status, 200, r)
            # b sees a's idempotency record (the record is in the stores, not the process).
            key = "life-shared-%d" % time.time_ns()
            status, r = self.post(a.port, {"idempotency_key": key, "steps": [
                {"sql": "life_add", "key": 3, "params": [3], "expect_rows": 1}]})
            self.assertEqual(status, 200, r)
            status, r = self.post(b.port, {"idempotency_key": key, "steps": [
                {"sql": "life_add", "key": 3, "params": [3], "expect_rows": 1}]})
            self.assertEqual(status, 200, r)
            self.assertTrue(r["replayed"])
        self.assertEqual(total() - before, 21)


if __name__ == "__main__":
    unittest.main()
