#!/usr/bin/python3
"""The Python client (clients/python/seigo_client.py) against a live seigod, and the examples.

    . /tmp/tenv; /usr/bin/python3 tests/seigod/test_client.py

Covers: declarative transactions and their typed results; the typed errors; the idempotency key
kept across resends (a proxy that loses the first reply; a fake seigod answering 503/504);
interactive sessions and the @transactional decorator re-running on a real deadlock;
examples/python/trade.py, game.py and web_handler.py run as processes.

Data in a database of its own (seigo_pycl) on each test shard. Ports 36854-36859.
"""
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import harness  # noqa: E402
import seigo_client as sc  # noqa: E402

DB = "seigo_pycl"
PORT, PROXY_PORT, FAKE_PORT, WEB_PORT, DEAD_PORT = 36854, 36855, 36856, 36857, 36859
PLAYERS = 200


isolate, on_all, gold = harness.isolate, harness.on_all, harness.gold


def qty(p, item):
    for out in on_all("SELECT qty FROM inventory WHERE player_id = %d AND item_id = %d"
                      % (p, item)):
        if out.strip():
            return int(out)
    return 0


class Proxy:
    """A TCP proxy to seigod that, while `drop` > 0, forwards a connection's request but closes
    it as soon as seigod's reply starts (the reply is lost; the transaction did run)."""

    def __init__(self, port, target):
        self.target = target
        self.drop = 0
        self.requests = []  # raw bytes each connection sent
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                drop = self.drop > 0
                if drop:
                    self.drop -= 1
                self.requests.append(bytearray())
                rec = self.requests[-1]
            s = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._up, args=(c, s, rec), daemon=True).start()
            threading.Thread(target=self._down, args=(s, c, drop), daemon=True).start()

    def _up(self, c, s, rec):
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                rec.extend(b)
                s.sendall(b)
        except OSError:
            pass
        finally:
            for x in (s,):
                try:
                    x.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _down(self, s, c, drop):
        try:
            while True:
                b = s.recv(65536)
                if not b or drop:
                    break
                c.sendall(b)
        except OSError:
            pass
        finally:
            for x in (c, s):
                try:
                    x.shutdown(socket.SHUT_RDWR)  # wakes the other thread's recv, too
                except OSError:
                    pass
                x.close()

    def bodies(self):
        """The JSON bodies of the requests seen (one per connection, the first request)."""
        out = []
        for r in self.requests:
            head, _, body = bytes(r).partition(b"\r\n\r\n")
            if body:
                out.append(json.loads(body.decode()))
        return out

    def close(self):
        self.sock.close()


DROP = "drop"  # a FakeSeigod script entry: read the request, close without a reply


class FakeSeigod:
    """An HTTP server that answers every POST from a script of (status, headers, body[,
    "close"]) — "close": the connection is closed after the reply, without saying so — or DROP,
    and records the request bodies, paths, headers and connections."""

    def __init__(self, port):
        self.script = []
        self.bodies = []
        self.paths = []
        self.headers = []  # http.client.HTTPMessage per request
        self.conns = set()
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                fake.bodies.append(self.rfile.read(n))
                fake.paths.append(self.path)
                fake.headers.append(self.headers)
                fake.conns.add(self.client_address)
                entry = fake.script.pop(0) if fake.script else (
                    500, {}, {"error": {"code": "internal", "message": "script ran out"}})
                if entry == DROP:
                    self.close_connection = True  # the request arrived; no reply ever will
                    return
                status, headers, body = entry[:3]
                if len(entry) > 3 and entry[3] == "close":
                    self.close_connection = True
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


COMMITTED = {"outcome": "committed", "gid": "g1", "attempts": 1, "replayed": False,
             "results": [{"affected_rows": 1}], "pending_visibility": []}


def trade_steps(tx, seller, buyer, item, price):
    tx.sql("trade_take_item", key=seller, params=[seller, item], expect_rows=1,
           reason="no such item")
    tx.sql("trade_credit_gold", key=seller, params=[price, seller], expect_rows=1)
    tx.sql("trade_debit_gold", key=buyer, params=[price, buyer, price], expect_rows=1,
           reason="not enough gold")
    tx.sql("trade_give_item", key=buyer, params=[buyer, item])


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        isolate(DB)
        rc, out = harness.seigo_cli("demo", "setup", "--players", str(PLAYERS))
        if rc != 0:
            raise RuntimeError("seigo demo setup: " + out)
        cls.d = harness.Seigod(PORT, statements={
            "broken": "UPDATE no_such_table_pycl SET x = 1 WHERE id = ?"}).start()
        cls.c = sc.Client(cls.d.url(), retries=3, backoff=0.01, admin_token=harness.ADMIN_TOKEN)

    @classmethod
    def tearDownClass(cls):
        cls.c.close_all()
        cls.d.kill()

    # ---- declarative ----

    def test_declarative_trade(self):
        seller, buyer, item, price = 1, 2, 3, 40
        gs, gb, qs, qb = gold(seller), gold(buyer), qty(seller, item), qty(buyer, item)
        with self.c.transaction(timeout_ms=5000) as tx:
            trade_steps(tx, seller, buyer, item, price)
            i = tx.sql("player_gold", key=buyer, params=[buyer], returning=True, name="buyer")
            tx.redis_set("pycl:{%d}:last" % buyer, "trade")
            tx.redis_get("pycl:{%d}:last" % buyer, name="last")
        r = tx.result
        self.assertIsInstance(r, sc.Result)
        self.assertTrue(r.committed)
        self.assertEqual(r.outcome, "committed")
        self.assertFalse(r.replayed)
        self.assertGreaterEqual(r.attempts, 1)
        self.assertTrue(r.idempotency_key)
        self.assertEqual(len(r), 7)
        self.assertEqual(r[0].affected_rows, 1)
        self.assertIs(r["buyer"], r[i])
        self.assertEqual(r["buyer"].columns, ["gold"])
        self.assertEqual(r["buyer"].rows, [[str(gb - price)]])
        self.assertEqual(r["buyer"].scalar(), str(gb - price))
        self.assertEqual(r["buyer"].dicts(), [{"gold": str(gb - price)}])
        self.assertEqual(r["last"].value, "trade")
        with self.assertRaises(KeyError):
            r.step("nope")
        self.assertEqual((gold(seller), gold(buyer)), (gs + price, gb - price))
        self.assertEqual((qty(seller, item), qty(buyer, item)), (qs - 1, qb + 1))

    def test_exception_in_block_sends_nothing(self):
        p = 3
        g = gold(p)
        with self.assertRaises(ZeroDivisionError):
            with self.c.transaction() as tx:
                tx.sql("trade_credit_gold", key=p, params=[5, p], expect_rows=1)
                1 / 0
        self.assertIsNone(tx.result)
        self.assertEqual(gold(p), g)
        with self.c.transaction() as tx:
            pass
        self.assertIsNone(tx.result)

    def test_transact_list_and_read_only(self):
        r = self.c.transact([{"sql": "player_gold", "key": 4, "params": [4], "return": True}],
                            read_only=True)
        self.assertEqual(r[0].scalar(), str(gold(4)))
        self.assertIsNone(r.idempotency_key)

    # ---- typed errors ----

    def test_typed_errors(self):
        p = 5
        g = gold(p)
        with self.assertRaises(sc.BadRequest) as cm:
            with self.c.transaction() as tx:
                tx.sql("trade_credit_gold", key=p, params=[5, p])
                tx.sql("no_such_statement", key=p)
        e = cm.exception
        self.assertEqual((e.status, e.code, e.step), (400, "bad_request", 1))
        self.assertIn("no_such_statement", e.message)
        self.assertIsInstance(e.body, dict)
        with self.assertRaises(sc.BadRequest):
            self.c.transact([{"sql": "player_gold", "key": 1.5, "params": [1]}])
        with self.assertRaises(sc.GuardFailed) as cm:
            with self.c.transaction() as tx:
                tx.sql("trade_credit_gold", key=p, params=[5, p])
                tx.sql("trade_debit_gold", key=p, params=[10 ** 9, p, 10 ** 9], expect_rows=1,
                       reason="not enough gold")
        e = cm.exception
        self.assertIsInstance(e, sc.Aborted)
        self.assertEqual((e.status, e.code, e.step, e.outcome), (422, "guard_failed", 1,
                                                                 "aborted"))
        self.assertIn("not enough gold", e.message)
        with self.assertRaises(sc.QueryFailed) as cm:
            with self.c.transaction() as tx:
                tx.sql("broken", key=p, params=[p])
        self.assertEqual(cm.exception.server_errno, 1146)
        self.assertEqual(cm.exception.status, 422)
        self.assertEqual(gold(p), g)
        key = "pycl-" + uuid.uuid4().hex
        self.c.transact([{"sql": "trade_credit_gold", "key": p, "params": [1, p]}],
                        idempotency_key=key)
        with self.assertRaises(sc.IdempotencyKeyMismatch) as cm:
            self.c.transact([{"sql": "trade_credit_gold", "key": p, "params": [2, p]}],
                            idempotency_key=key)
        self.assertEqual(cm.exception.status, 409)
        self.assertEqual(gold(p), g + 1)
        with self.assertRaises(sc.GuardFailed):
            with self.c.transaction() as tx:
                tx.redis_set("pycl:{b}:hp", "2")
            with self.c.transaction() as tx:
                tx.redis_incr("pycl:{b}:hp", -5, min=0, reason="the boss is dead")
        # Admin and lookups.
        gid = "0123456789abcdef0123456789abcdef"
        with self.assertRaises(sc.Unauthorized):
            sc.Client(self.d.url()).resolve(gid)
        with self.assertRaises(sc.Forbidden):
            self.c.resolve(gid, admin_token="wrong")
        with self.assertRaises(sc.NotFound) as cm:
            self.c.resolve(gid)
        self.assertEqual(cm.exception.status, 404)
        self.assertIsNone(self.c.lookup("pycl-none-" + uuid.uuid4().hex))
        rec = self.c.lookup(key)
        self.assertEqual((rec.state, rec.http_status, rec.outcome), ("committed", 200,
                                                                     "committed"))
        # Nothing listens on DEAD_PORT.
        t0 = time.time()
        with self.assertRaises(sc.Unavailable) as cm:
            sc.Client("http://127.0.0.1:%d" % DEAD_PORT, retries=2, backoff=0.01).transact(
                [{"sql": "player_gold", "key": 1, "params": [1]}])
        self.assertIsNone(cm.exception.status)
        self.assertLess(time.time() - t0, 5)
        self.assertTrue(issubclass(sc.DeadlineExceeded, sc.GaveUp))
        for cls in (sc.BadRequest, sc.GuardFailed, sc.QueryFailed, sc.Aborted, sc.Conflict,
                    sc.IdempotencyKeyMismatch, sc.GaveUp, sc.DeadlineExceeded,
                    sc.OutcomeUnknown, sc.NotFound, sc.Unauthorized, sc.Forbidden,
                    sc.Unavailable):
            self.assertTrue(issubclass(cls, sc.SeigoError), cls)

    def test_operations(self):
        st = self.c.status()
        self.assertIn("counters", st)
        self.assertIn("txs", self.c.in_doubt()["in_doubt"])
        text = self.c.metrics_text()
        self.assertIn("seigo_transactions_total", text)
        self.assertTrue(self.c.healthy())
        self.assertTrue(self.c.ready())
        self.assertFalse(sc.Client("http://127.0.0.1:%d" % DEAD_PORT, retries=0).healthy())

    def test_keep_alive(self):
        c = sc.Client(self.d.url())
        c.status()
        sock = c._local.conn.sock
        self.assertIsNotNone(sock)
        c.transact([{"sql": "player_gold", "key": 1, "params": [1]}], read_only=True)
        c.status()
        self.assertIs(c._local.conn.sock, sock, "the connection was not kept alive")
        # A connection seigod dropped is replaced transparently.
        sock.shutdown(socket.SHUT_RDWR)
        self.assertIn("counters", c.status())
        # seigod closes idle keep-alive connections (after 5 s): the next request of the
        # client, even a non-idempotent session step, goes out on a new connection.
        sock = c._local.conn.sock
        time.sleep(6)
        p = 17
        g = gold(p)
        with c.session() as tx:
            tx.sql("trade_credit_gold", key=p, params=[1, p], expect_rows=1)
        self.assertIsNot(c._local.conn.sock, sock)
        self.assertEqual(gold(p), g + 1)
        c.close_all()

    # ---- replays ----

    def test_same_key_twice_runs_once(self):
        p = 6
        g = gold(p)
        key = "pycl-" + uuid.uuid4().hex
        steps = [{"sql": "trade_credit_gold", "key": p, "params": [7, p], "expect_rows": 1}]
        r1 = self.c.transact(steps, idempotency_key=key)
        r2 = self.c.transact(steps, idempotency_key=key)
        self.assertFalse(r1.replayed)
        self.assertTrue(r2.replayed)
        self.assertEqual(r1.gid, r2.gid)
        self.assertEqual(gold(p), g + 7)

    def test_lost_reply_is_resent_with_the_same_key(self):
        proxy = Proxy(PROXY_PORT, PORT)
        try:
            c = sc.Client("http://127.0.0.1:%d" % PROXY_PORT, retries=3, backoff=0.01)
            seller, buyer, item, price = 7, 8, 2, 30
            gs, gb = gold(seller), gold(buyer)
            proxy.drop = 1
            with c.transaction() as tx:
                trade_steps(tx, seller, buyer, item, price)
            r = tx.result
            self.assertTrue(r.committed)
            self.assertTrue(r.replayed, "the resend should have been answered from the record")
            bodies = proxy.bodies()
            self.assertEqual(len(bodies), 2, bodies)
            self.assertEqual(bodies[0], bodies[1])
            self.assertEqual(bodies[0]["idempotency_key"], r.idempotency_key)
            self.assertEqual((gold(seller), gold(buyer)), (gs + price, gb - price),
                             "the trade ran twice (or not at all)")
            # Every reply lost: OutcomeUnknown with the key to look up — and it did commit.
            proxy.drop = 10
            c2 = sc.Client("http://127.0.0.1:%d" % PROXY_PORT, retries=2, backoff=0.01)
            with self.assertRaises(sc.OutcomeUnknown) as cm:
                c2.transact([{"sql": "trade_credit_gold", "key": seller,
                              "params": [1, seller], "expect_rows": 1}])
            key = cm.exception.idempotency_key
            self.assertTrue(key)
            self.assertEqual(self.c.lookup(key).state, "committed")
            self.assertEqual(gold(seller), gs + price + 1)
        finally:
            proxy.close()

    def test_503_504_resent_with_the_same_key(self):
        fake = FakeSeigod(FAKE_PORT)
        try:
            c = sc.Client("http://127.0.0.1:%d" % FAKE_PORT, retries=3, backoff=0.01)
            fake.script = [
                (503, {"Retry-After": "1"}, {"outcome": "gave_up", "gid": "g", "attempts": 3,
                                             "error": {"code": "gave_up", "message": "busy"}}),
                (504, {}, {"outcome": "outcome_unknown", "gid": "g", "attempts": 1,
                           "error": {"code": "outcome_unknown", "message": "lost"}}),
                (200, {}, dict(COMMITTED, replayed=True))]
            t0 = time.time()
            r = c.transact([{"sql": "x", "key": 1}])
            self.assertGreaterEqual(time.time() - t0, 1.0, "Retry-After was not honoured")
            self.assertTrue(r.replayed)
            self.assertEqual(len(fake.bodies), 3)
            self.assertEqual(len(set(fake.bodies)), 1, "the resends differ")
            self.assertEqual(json.loads(fake.bodies[0])["idempotency_key"], r.idempotency_key)
            self.assertEqual(len(fake.conns), 1, "keep-alive: one connection expected")
            # 504 every time: OutcomeUnknown after retries + 1 sends.
            fake.bodies.clear()
            fake.script = [(504, {}, {"outcome": "outcome_unknown", "error": {
                "code": "outcome_unknown", "message": "lost"}})] * 4
            with self.assertRaises(sc.OutcomeUnknown) as cm:
                c.transact([{"sql": "x", "key": 1}])
            self.assertEqual(cm.exception.status, 504)
            self.assertEqual(len(fake.bodies), 4)
            self.assertEqual(cm.exception.idempotency_key,
                             json.loads(fake.bodies[0])["idempotency_key"])
            # 503 deadline_exceeded every time: DeadlineExceeded.
            fake.bodies.clear()
            fake.script = [(503, {"Retry-After": "0"}, {"outcome": "gave_up", "error": {
                "code": "deadline_exceeded", "message": "late"}})] * 4
            with self.assertRaises(sc.DeadlineExceeded):
                c.transact([{"sql": "x", "key": 1}])
            self.assertEqual(len(fake.bodies), 4)
            # A 4xx is never resent.
            fake.bodies.clear()
            fake.script = [(422, {}, {"outcome": "aborted", "error": {
                "code": "guard_failed", "message": "no", "step": 0}})]
            with self.assertRaises(sc.GuardFailed):
                c.transact([{"sql": "x", "key": 1}])
            self.assertEqual(len(fake.bodies), 1)
        finally:
            fake.close()

    def test_key_in_flight_is_resent_then_outcome_unknown(self):
        in_flight = (503, {"Retry-After": "0"}, {"error": {
            "code": "key_in_flight", "message": "a request with this idempotency key is still "
            "running or in doubt; its outcome is not known yet"}})
        fake = FakeSeigod(FAKE_PORT)
        try:
            c = sc.Client("http://127.0.0.1:%d" % FAKE_PORT, retries=3, backoff=0.01)
            # Resent like other 503s, with the same key; then it settles.
            fake.script = [in_flight, in_flight, (200, {}, dict(COMMITTED, replayed=True))]
            r = c.transact([{"sql": "x", "key": 1}])
            self.assertTrue(r.replayed)
            self.assertEqual(len(fake.bodies), 3)
            self.assertEqual(len(set(fake.bodies)), 1, "the resends differ")
            # Still in flight when the resends run out: OutcomeUnknown (the first may commit).
            fake.bodies.clear()
            fake.script = [in_flight] * 4
            with self.assertRaises(sc.OutcomeUnknown) as cm:
                c.transact([{"sql": "x", "key": 1}])
            self.assertEqual(len(fake.bodies), 4)
            self.assertEqual(len(set(fake.bodies)), 1)
            self.assertEqual(cm.exception.idempotency_key,
                             json.loads(fake.bodies[0])["idempotency_key"])
            # In flight once, then gave_up: never GaveUp (the in-flight one may commit).
            fake.bodies.clear()
            fake.script = [in_flight] + [(503, {"Retry-After": "0"}, {
                "outcome": "gave_up", "error": {"code": "gave_up", "message": "busy"}})] * 3
            with self.assertRaises(sc.SeigoError) as cm:
                c.transact([{"sql": "x", "key": 1}])
            self.assertIsInstance(cm.exception, sc.OutcomeUnknown)
            self.assertNotIsInstance(cm.exception, sc.GaveUp)
            self.assertEqual(len(fake.bodies), 4)
        finally:
            fake.close()

    def test_content_type_is_always_json_and_415_is_bad_request(self):
        fake = FakeSeigod(FAKE_PORT)
        try:
            # Even a caller's own Content-Type header does not replace it.
            c = sc.Client("http://127.0.0.1:%d" % FAKE_PORT, retries=0, backoff=0.01,
                          headers={"content-type": "text/plain", "X-Trace": "t1"})
            fake.script = [(200, {}, COMMITTED), (201, {}, {"session": "s-ct"}),
                           (200, {}, {"results": [{"affected_rows": 1}]}),
                           (200, {}, COMMITTED), (200, {}, {"gid": "g", "did": "nothing"})]
            c.transact([{"sql": "x", "key": 1}])
            with c.session() as tx:
                tx.sql("x", key=1)
            c.resolve("g", admin_token="t")
            self.assertEqual(len(fake.headers), 5, fake.paths)
            for path, h in zip(fake.paths, fake.headers):
                self.assertEqual(h.get_all("Content-Type"), ["application/json"], path)
                self.assertEqual(h.get("X-Trace"), "t1")
            fake.script = [(415, {}, {"error": {"code": "unsupported_media_type",
                                                "message": "Content-Type must be "
                                                           "application/json"}}),
                           (415, {}, {})]
            with self.assertRaises(sc.BadRequest) as cm:
                c.transact([{"sql": "x", "key": 1}])
            self.assertEqual((cm.exception.status, cm.exception.code),
                             (415, "unsupported_media_type"))
            with self.assertRaises(sc.BadRequest) as cm:  # by status alone, too
                c.transact([{"sql": "x", "key": 1}])
            self.assertEqual(cm.exception.status, 415)
            self.assertEqual(len(fake.bodies), 7, "a 415 is not resent")
        finally:
            fake.close()

    # ---- interactive ----

    def test_commit_after_an_error_ended_the_session_raises(self):
        p = 18
        g = gold(p)
        # The caller catches the error that ended the session, then the block ends normally.
        with self.assertRaises(sc.QueryFailed):
            with self.c.session() as tx:
                tx.sql("trade_credit_gold", key=p, params=[4, p], expect_rows=1)
                try:
                    tx.sql("broken", key=p, params=[p])
                except sc.QueryFailed:
                    pass
        self.assertTrue(tx.ended)
        self.assertIsNone(tx.result)
        with self.assertRaises(sc.QueryFailed):
            tx.commit()  # and again
        self.assertEqual(gold(p), g)
        # After abort(): Aborted.
        tx = self.c.session().begin()
        tx.sql("trade_credit_gold", key=p, params=[4, p], expect_rows=1)
        tx.abort()
        with self.assertRaises(sc.Aborted) as cm:
            tx.commit()
        self.assertNotIsInstance(cm.exception, sc.GuardFailed)
        self.assertEqual(gold(p), g)
        # @transactional: the function swallows it and returns; the call must not look like
        # a commit.
        @self.c.transactional(retries=2)
        def swallow(tx):
            tx.sql("trade_credit_gold", key=p, params=[4, p], expect_rows=1)
            try:
                tx.sql("broken", key=p, params=[p])
            except sc.QueryFailed:
                return "looks fine"
        with self.assertRaises(sc.QueryFailed):
            swallow()
        self.assertEqual(swallow.runs(), 1)
        self.assertEqual(gold(p), g)
        # A committed session's commit() still returns its Result.
        with self.c.session() as tx:
            tx.sql("trade_credit_gold", key=p, params=[1, p], expect_rows=1)
        self.assertIs(tx.commit(), tx.result)
        self.assertEqual(gold(p), g + 1)

    def test_session_requests_are_not_resent_after_a_lost_reply(self):
        fake = FakeSeigod(FAKE_PORT)
        url = "http://127.0.0.1:%d" % FAKE_PORT
        not_found = (404, {}, {"error": {"code": "not_found", "message": "no such session"}})
        try:
            c = sc.Client(url, retries=3, backoff=0.01)
            # The commit's reply is lost on the kept-alive connection: OutcomeUnknown, sent once
            # (a resend would find no session: 404 — and it may have committed).
            fake.script = [(201, {}, {"session": "s-1"}), DROP, not_found]
            tx = c.session().begin()
            with self.assertRaises(sc.OutcomeUnknown):
                tx.commit()
            self.assertEqual(fake.paths, ["/v1/sessions", "/v1/sessions/s-1/commit"])
            self.assertIsInstance(tx.error, sc.OutcomeUnknown)
            # A step's reply is lost: not resent; the session is rolled back.
            fake.paths.clear()
            fake.script = [(201, {}, {"session": "s-2"}), DROP,
                           (200, {}, {"results": [{"affected_rows": 1}]}),
                           (200, {}, {"outcome": "aborted"})]
            tx = c.session().begin()
            with self.assertRaises(sc.Unavailable):
                tx.sql("x", key=1)
            self.assertEqual(fake.paths.count("/v1/sessions/s-2/steps"), 1, fake.paths)
            self.assertTrue(tx.ended)
            with self.assertRaises(sc.Unavailable):
                tx.commit()
            self.assertNotIn("/v1/sessions/s-2/commit", fake.paths)
            # begin's reply is lost, on a new connection and on a kept-alive one: not resent
            # (it would open, and leak, a second session).
            for warm in (False, True):
                c2 = sc.Client(url, retries=3, backoff=0.01)
                if warm:
                    fake.script = [(200, {}, COMMITTED)]
                    c2.transact([{"sql": "x", "key": 1}])
                fake.paths.clear()
                fake.script = [DROP, (201, {}, {"session": "s-leak"})]
                with self.assertRaises(sc.Unavailable):
                    c2.session().begin()
                self.assertEqual(fake.paths, ["/v1/sessions"], warm)
                c2.close_all()
            # A commit may be resent only when its connection was refused (it never left);
            # a 404 after any resend of a commit is OutcomeUnknown all the same.
            fake.paths.clear()
            fake.script = [(201, {}, {"session": "s-3"}), not_found]
            tx = c.session().begin()
            real_call = c._call
            refused = [1]

            def call(method, path, *a, **kw):
                if path.endswith("/commit") and refused:
                    refused.pop()
                    c.close()
                    raise sc._NotSent(ConnectionRefusedError(111, "Connection refused"))
                return real_call(method, path, *a, **kw)
            c._call = call
            with self.assertRaises(sc.OutcomeUnknown):
                tx.commit()
            self.assertEqual(fake.paths, ["/v1/sessions", "/v1/sessions/s-3/commit"])
            c._call = real_call
            # Without a resend a 404 stays NotFound (the session expired: nothing committed).
            fake.script = [(201, {}, {"session": "s-4"}), not_found]
            with self.assertRaises(sc.NotFound) as cm:
                with c.session() as tx:
                    pass
            self.assertNotIsInstance(cm.exception, sc.OutcomeUnknown)
            # A kept-alive connection that the server closed after its reply is replaced
            # before the commit goes out: it commits, sent once.
            fake.paths.clear()
            fake.script = [(201, {}, {"session": "s-5"}, "close"), (200, {}, COMMITTED)]
            tx = c.session().begin()
            time.sleep(0.3)
            self.assertEqual(tx.commit().outcome, "committed")
            self.assertEqual(fake.paths, ["/v1/sessions", "/v1/sessions/s-5/commit"])
            c.close_all()
        finally:
            fake.close()

    def test_transactional_docstring_warns_of_reruns(self):
        doc = sc.Client.transactional.__doc__
        self.assertIn("runs again", doc)
        self.assertIn("side effects", doc)

    def test_session_context_manager(self):
        p = 9
        g = gold(p)
        with self.c.session(timeout_ms=5000) as tx:
            got = int(tx.sql("player_gold", key=p, params=[p], returning=True).scalar())
            self.assertEqual(got, g)
            r = tx.sql("trade_credit_gold", key=p, params=[3, p], expect_rows=1)
            self.assertEqual(r.affected_rows, 1)
        self.assertEqual(tx.result.outcome, "committed")
        self.assertEqual(gold(p), g + 3)
        with self.assertRaises(RuntimeError):
            with self.c.session() as tx:
                tx.sql("trade_credit_gold", key=p, params=[3, p])
                raise RuntimeError("changed my mind")
        self.assertEqual(gold(p), g + 3)
        with self.assertRaises(sc.GuardFailed):
            with self.c.session() as tx:
                tx.sql("trade_credit_gold", key=p, params=[3, p])
                tx.sql("trade_debit_gold", key=p, params=[10 ** 9, p, 10 ** 9], expect_rows=1)
        self.assertTrue(tx.ended)
        self.assertEqual(gold(p), g + 3)

    def test_transactional_commit_and_abort(self):
        p = 10

        class Poor(Exception):
            pass

        @self.c.transactional(retries=2)
        def buy(tx, player, price):
            have = int(tx.sql("player_gold", key=player, params=[player],
                              returning=True).scalar())
            if have < price:
                raise Poor()
            tx.sql("trade_debit_gold", key=player, params=[price, player, price], expect_rows=1)
            return have - price

        g = gold(p)
        self.assertEqual(buy(p, 11), g - 11)
        self.assertEqual(buy.runs(), 1)
        self.assertEqual(gold(p), g - 11)
        with self.assertRaises(Poor):
            buy(p, 10 ** 9)
        self.assertEqual(buy.runs(), 1)
        self.assertEqual(gold(p), g - 11)

        @self.c.transactional
        def plain(tx):
            return tx.sql("player_gold", key=p, params=[p], returning=True).scalar()
        self.assertEqual(plain(), str(g - 11))

    def test_transactional_reruns_on_deadlock(self):
        a, b = 11, 12
        ga, gb = gold(a), gold(b)
        barrier = threading.Barrier(2, timeout=15)
        runs = {"ab": 0, "ba": 0}

        def make(first, second, label):
            @self.c.transactional(retries=5, timeout_ms=15000)
            def move(tx):
                runs[label] += 1
                tx.sql("trade_credit_gold", key=first, params=[1, first], expect_rows=1)
                if runs[label] == 1:
                    barrier.wait()  # both hold their first row: the second steps deadlock
                tx.sql("trade_credit_gold", key=second, params=[1, second], expect_rows=1)
                return label
            return move

        out, errors = {}, []

        def run(fn, label):
            try:
                out[label] = fn()
            except Exception as e:  # reported below
                errors.append(e)

        t1 = threading.Thread(target=run, args=(make(a, b, "ab"), "ab"))
        t2 = threading.Thread(target=run, args=(make(b, a, "ba"), "ba"))
        t1.start(), t2.start()
        t1.join(60), t2.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(out, {"ab": "ab", "ba": "ba"})
        self.assertEqual(sorted(runs.values()), [1, 2], "exactly one function should re-run")
        self.assertEqual((gold(a), gold(b)), (ga + 2, gb + 2))

    def test_conflict_is_raised_after_retries(self):
        a, b = 13, 14
        barrier = threading.Barrier(2, timeout=15)
        errors = []

        def session(first, second):
            try:
                with self.c.session(timeout_ms=15000) as tx:
                    tx.sql("trade_credit_gold", key=first, params=[1, first])
                    barrier.wait()
                    tx.sql("trade_credit_gold", key=second, params=[1, second])
            except sc.Conflict as e:
                errors.append(e)

        ga, gb = gold(a), gold(b)
        ts = [threading.Thread(target=session, args=x) for x in ((a, b), (b, a))]
        [t.start() for t in ts]
        [t.join(60) for t in ts]
        self.assertEqual(len(errors), 1, errors)
        self.assertEqual((errors[0].status, errors[0].code), (409, "conflict"))
        self.assertEqual((gold(a), gold(b)), (ga + 1, gb + 1))

    # ---- the examples ----

    def run_example(self, *args, timeout=120):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the examples find the client by themselves
        return subprocess.run([sys.executable or "/usr/bin/python3"] + list(args),
                              capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT)

    def test_example_trade(self):
        total0 = sum(gold(p) for p in (1, 2))  # touched by other tests: only a smoke value
        p = self.run_example(os.path.join(ROOT, "examples", "python", "trade.py"), "--url",
                             self.d.url(), "--trades", "8", "--players", str(PLAYERS))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("committed", p.stdout)
        self.assertRegex(p.stdout, r"\d+ committed, \d+ refused by a guard, 0 failed")
        self.assertGreater(total0, 0)

    def test_example_game_trades(self):
        p = self.run_example(os.path.join(ROOT, "examples", "python", "game.py"), "--url",
                             self.d.url(), "--seconds", "2", "--only", "trade", "--players",
                             str(PLAYERS), "--clients", "2")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"trade\s+[1-9]\d* committed")

    def test_example_web_handler(self):
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "python",
                                                              "web_handler.py"),
                                 "--url", self.d.url(), "--listen", "127.0.0.1:%d" % WEB_PORT],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            self.assertIn("listening", proc.stdout.readline())
            seller, buyer = 15, 16
            gb = gold(buyer)

            def post(path, body):
                c = http.client.HTTPConnection("127.0.0.1", WEB_PORT, timeout=30)
                c.request("POST", path, json.dumps(body))
                try:
                    r = c.getresponse()
                    return r.status, json.loads(r.read())
                finally:
                    c.close()

            status, reply = post("/trade", {"seller": seller, "buyer": buyer, "item": 1,
                                            "price": 5})
            self.assertEqual(status, 200, reply)
            self.assertEqual(reply["gold"], gb - 5)
            self.assertEqual(gold(buyer), gb - 5)
            status, reply = post("/trade", {"seller": seller, "buyer": buyer, "item": 1,
                                            "price": 10 ** 9})
            self.assertEqual(status, 409, reply)
            self.assertIn("not enough gold", reply["error"])
            status, reply = post("/nothing", {})
            self.assertEqual(status, 404, reply)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
