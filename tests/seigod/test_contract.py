#!/usr/bin/python3
"""seigod's HTTP contract (doc/seigod.md) against real seigod processes: every endpoint, and
every bad input answered with the right 4xx, a JSON error that says what is wrong, and nothing
written (the shards' and Redis's state is compared before and after).

    . /tmp/tenv; /usr/bin/python3 tests/seigod/test_contract.py

The data lives in a database of its own (seigo_pyct) on each test shard, so that other tests
using the demo tables on the same servers are not disturbed. Ports 36850-36853.
"""
import json
import os
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

DB = "seigo_pyct"
PORT, RAW_PORT, AMQP_PORT = 36850, 36851, 36852
PLAYERS = 200
IDLE_MS = 1500
MAX_STEPS = 8
MAX_BODY = 65536


isolate, on_all, gold = harness.isolate, harness.on_all, harness.gold


def db_state():
    """Everything the tests could write on the shards, as one comparable value."""
    return on_all(
        "SELECT (SELECT GROUP_CONCAT(player_id, ':', gold ORDER BY player_id) FROM players),"
        " (SELECT GROUP_CONCAT(player_id, ':', item_id, ':', qty ORDER BY player_id, item_id)"
        "  FROM inventory),"
        " (SELECT COUNT(*) FROM seigo_request), (SELECT COUNT(*) FROM seigo_outbox),"
        " (SELECT COUNT(*) FROM seigo_outbox_dead), (SELECT COUNT(*) FROM pyct_log)")


def credit(p, amount, name=None):
    s = {"sql": "trade_credit_gold", "key": p, "params": [amount, p], "expect_rows": 1}
    if name:
        s["name"] = name
    return s


class Contract(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        isolate(DB)
        rc, out = harness.seigo_cli("demo", "setup", "--players", str(PLAYERS))
        if rc != 0:
            raise RuntimeError("seigo demo setup: " + out)
        on_all("DROP TABLE IF EXISTS pyct_log")
        on_all("CREATE TABLE pyct_log (id BIGINT PRIMARY KEY, note VARCHAR(100)) ENGINE=InnoDB")
        statements = {
            "broken": "UPDATE no_such_table_pyct SET x = 1 WHERE id = ?",
            "log_note": "INSERT INTO pyct_log VALUES (?, ?)",
        }
        cls.d = harness.Seigod(PORT, statements=statements, server={
            "session_idle_ms": str(IDLE_MS), "max_steps": str(MAX_STEPS),
            "max_body_bytes": str(MAX_BODY)}).start()
        cls.raw = None
        cls.amqp = None

    @classmethod
    def tearDownClass(cls):
        for d in (cls.d, cls.raw, cls.amqp):
            if d is not None:
                d.kill()

    # ---- helpers ----

    def post(self, body=None, raw=None, path="/v1/transactions", d=None):
        status, reply, headers = (d or self.d).request("POST", path, body, raw=raw)
        return status, reply, headers

    def assertError(self, status, reply, want_status, code, *words, step=None):
        self.assertEqual(status, want_status, reply)
        self.assertIsInstance(reply, dict, reply)
        self.assertIn("error", reply, reply)
        err = reply["error"]
        self.assertEqual(err["code"], code, reply)
        for w in words:
            self.assertIn(w.lower(), err["message"].lower(), reply)
        if step is not None:
            self.assertEqual(err.get("step"), step, reply)
        return err

    def assertRefused(self, body, want_status, code, *words, step=None, raw=None, d=None):
        """Sends `body`; checks the error and that nothing changed on the shards."""
        before = db_state()
        status, reply, _ = self.post(body, raw=raw, d=d)
        err = self.assertError(status, reply, want_status, code, *words, step=step)
        self.assertEqual(db_state(), before, "something was written by a refused request")
        return reply, err

    def redis_get(self, key):
        status, reply, _ = self.post({"read_only": True, "steps": [{"redis": "get", "key": key}]})
        self.assertEqual(status, 200, reply)
        return reply["results"][0].get("value")

    # ---- 400s: nothing written ----

    def test_malformed_json(self):
        self.assertRefused(None, 400, "bad_request", "malformed JSON",
                           raw='{"steps": [{"sql": "trade_credit_gold", "key": 1,')
        self.assertRefused(None, 400, "bad_request", "JSON object", raw="[1, 2]")
        self.assertRefused(None, 400, "bad_request", "malformed", raw="")

    def test_unknown_field_top_level(self):
        self.assertRefused({"steps": [credit(1, 5)], "stepz": []}, 400, "bad_request",
                           "unknown field 'stepz'")

    def test_unknown_field_in_step(self):
        bad = dict(credit(2, 5), expect_row=1)
        self.assertRefused({"steps": [credit(1, 5), bad]}, 400, "bad_request",
                           "unknown field 'expect_row'", step=1)
        self.assertRefused({"steps": [credit(1, 5), {"redis": "get", "key": "k", "vale": "x"}]},
                           400, "bad_request", "'vale'", step=1)
        self.assertRefused({"steps": [credit(1, 5), {"publish": {"exchange": "", "routing_key":
                           "q", "body": "b", "bodyy": 1}}]}, 400, "bad_request", step=1)

    def test_unknown_statement(self):
        self.assertRefused({"steps": [credit(1, 5), {"sql": "no_such_stmt", "key": 1}]}, 400,
                           "bad_request", "unknown statement 'no_such_stmt'", step=1)

    def test_unknown_shard_key_type(self):
        for key, what in ((1.5, "fractional"), (True, "boolean"), ({"id": 1}, "object"),
                          ([1], "array"), (None, "null")):
            with self.subTest(key=key):
                self.assertRefused(
                    {"steps": [credit(1, 5), {"sql": "player_gold", "key": key, "params": [1]}]},
                    400, "bad_request", "unknown shard key type", what, step=1)

    def test_key_and_shard(self):
        self.assertRefused({"steps": [{"sql": "player_gold", "params": [1]}]}, 400,
                           "bad_request", "'key' and 'shard'", step=0)
        self.assertRefused({"steps": [{"sql": "player_gold", "shard": 99, "params": [1]}]}, 400,
                           "bad_request", "'shard' 99 does not exist", step=0)

    def test_wrong_param_type(self):
        for p, what in (([1], "array"), ({"a": 1}, "object")):
            with self.subTest(param=p):
                self.assertRefused({"steps": [credit(1, 5), {"sql": "trade_credit_gold",
                                                             "key": 2, "params": [p, 2]}]},
                                   400, "bad_request", "params[0]", what, step=1)
        self.assertRefused({"steps": [{"sql": "player_gold", "key": 1, "params": "1"}]}, 400,
                           "bad_request", "'params' must be an array", step=0)
        self.assertRefused({"steps": [dict(credit(1, 5), expect_rows="1")]}, 400, "bad_request",
                           "'expect_rows'", step=0)
        self.assertRefused({"steps": [dict(credit(1, 5), expect_rows=-1)]}, 400, "bad_request",
                           "negative", step=0)
        self.assertRefused({"steps": [credit(1, 5)], "timeout_ms": -5}, 400, "bad_request",
                           "timeout_ms")
        self.assertRefused({"steps": [credit(1, 5)], "read_only": "yes"}, 400, "bad_request",
                           "read_only")

    def test_steps_shape(self):
        self.assertRefused({}, 400, "bad_request", "'steps'")
        self.assertRefused({"steps": []}, 400, "bad_request", "empty")
        self.assertRefused({"steps": {"sql": "player_gold"}}, 400, "bad_request", "array")
        self.assertRefused({"steps": [credit(1, 5), 7]}, 400, "bad_request", "JSON object",
                           step=1)
        self.assertRefused({"steps": [dict(credit(1, 5), redis="get")]}, 400, "bad_request",
                           "exactly one of", step=0)
        self.assertRefused({"steps": [credit(1, 5), {"redis": "frobnicate", "key": "k"}]}, 400,
                           "bad_request", "unknown redis operation 'frobnicate'", step=1)
        self.assertRefused({"steps": [credit(1, 5), {"redis": "incr", "key": "k", "delta": 1}]},
                           400, "bad_request", "'min' is required", step=1)

    def test_too_many_steps(self):
        self.assertRefused({"steps": [credit(1, 1)] * (MAX_STEPS + 1)}, 400, "bad_request",
                           "too many steps", str(MAX_STEPS + 1), "at most %d" % MAX_STEPS)

    def test_idempotency_key_checks(self):
        self.assertRefused({"steps": [credit(1, 5)], "idempotency_key": "x" * 201}, 400,
                           "bad_request", "idempotency_key")
        self.assertRefused({"steps": [credit(1, 5)], "idempotency_key": ""}, 400,
                           "bad_request", "idempotency_key")
        self.assertRefused({"steps": [{"sql": "player_gold", "key": 1, "params": [1]}],
                            "idempotency_key": "k-" + uuid.uuid4().hex, "read_only": True},
                           400, "bad_request", "read_only")

    def test_raw_sql_disabled(self):
        self.assertRefused({"steps": [credit(1, 5), {"raw_sql": "UPDATE players SET gold = 0",
                                                     "shard": 0}]},
                           400, "bad_request", "raw_sql", "not enabled", step=1)

    def test_raw_sql_enabled_elsewhere(self):
        if Contract.raw is None:
            Contract.raw = harness.Seigod(RAW_PORT, redis=False,
                                          server={"allow_raw_sql": "true"}).start()
        p = 5
        g0 = gold(p)
        status, reply, _ = self.post({"steps": [
            {"raw_sql": "UPDATE players SET gold = gold + ? WHERE player_id = ?", "key": p,
             "params": [3, p], "expect_rows": 1},
            {"raw_sql": "SELECT gold, 'x' AS tag FROM players WHERE player_id = ?", "key": p,
             "params": [p], "return": True, "name": "after"}]}, d=Contract.raw)
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["results"][1]["columns"], ["gold", "tag"])
        self.assertEqual(reply["results"][1]["rows"], [[str(g0 + 3), "x"]])
        self.assertEqual(gold(p), g0 + 3)
        # Without [redis], a redis step is a 400 there.
        self.assertRefused({"steps": [{"redis": "get", "key": "k"}]}, 400, "bad_request",
                           "no redis", d=Contract.raw)

    def test_publish_without_broker(self):
        self.assertRefused({"steps": [credit(1, 5), {"publish": {"exchange": "", "routing_key":
                                                                 "q", "body": "x"}}]},
                           400, "bad_request", "no broker", step=1)

    def test_oversized_body(self):
        body = {"steps": [dict(credit(1, 5), reason="r" * (MAX_BODY + 10))]}
        self.assertRefused(body, 413, "body_too_large", "max_body_bytes")

    # ---- 422s: aborted, nothing written ----

    def test_query_failed(self):
        reply, err = self.assertRefused(
            {"steps": [credit(1, 5), {"sql": "broken", "key": 1, "params": [1]}]},
            422, "query_failed", "no_such_table_pyct", step=1)
        self.assertEqual(reply.get("server_errno", err.get("server_errno")), 1146, reply)
        self.assertEqual(reply["outcome"], "aborted")
        self.assertIn("gid", reply)
        self.assertIn("attempts", reply)

    def test_guard_expect_rows(self):
        p, q = 7, 8
        reply, _ = self.assertRefused(
            {"steps": [credit(q, 5), {"sql": "trade_debit_gold", "key": p,
                                      "params": [10 ** 9, p, 10 ** 9], "expect_rows": 1,
                                      "reason": "not enough gold for the sword"}]},
            422, "guard_failed", "not enough gold for the sword", "expected 1 row", step=1)
        self.assertEqual(reply["outcome"], "aborted")

    def test_guard_expect(self):
        p = 9
        g = gold(p)
        self.assertRefused({"steps": [credit(10, 5), {"sql": "player_gold", "key": p,
                                                      "params": [p], "expect": {"gold": g + 1},
                                                      "reason": "price changed"}]},
                           422, "guard_failed", "price changed", "gold", str(g + 1), step=1)
        self.assertRefused({"steps": [credit(10, 5), {"sql": "player_gold", "key": 10 ** 6,
                                                      "params": [10 ** 6],
                                                      "expect": {"gold": 1}}]},
                           422, "guard_failed", "expected a row", step=1)
        # The guard that holds lets the transaction commit.
        status, reply, _ = self.post({"steps": [
            credit(10, 5), {"sql": "player_gold", "key": p, "params": [p], "expect": {"gold": g},
                            "return": True}]})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["results"][1]["rows"], [[str(g)]])

    def test_redis_incr_bound(self):
        key = "pyct:{%s}:hp" % uuid.uuid4().hex[:8]
        status, reply, _ = self.post({"steps": [{"redis": "set", "key": key, "value": "3"}]})
        self.assertEqual(status, 200, reply)
        g = gold(11)
        before = db_state()
        status, reply, _ = self.post({"steps": [
            credit(11, 5), {"redis": "incr", "key": key, "delta": -5, "min": 0, "max": 100,
                            "reason": "the boss is already defeated"}]})
        self.assertError(status, reply, 422, "guard_failed", "the boss is already defeated")
        self.assertEqual(reply["outcome"], "aborted")
        self.assertEqual(db_state(), before)
        self.assertEqual(gold(11), g)
        self.assertEqual(self.redis_get(key), "3")
        # Within bounds it commits, and the read sees the new value.
        status, reply, _ = self.post({"steps": [
            {"redis": "incr", "key": key, "delta": -2, "min": 0, "max": 100},
            {"redis": "get", "key": key, "name": "hp"}]})
        self.assertEqual(status, 200, reply)
        self.assertEqual(self.redis_get(key), "1")

    # ---- committed transactions ----

    def test_declarative_trade(self):
        seller, buyer, item, price = 12, 13, 4, 25
        gs, gb = gold(seller), gold(buyer)
        status, reply, _ = self.post({"timeout_ms": 5000, "steps": [
            {"sql": "trade_take_item", "key": seller, "params": [seller, item], "expect_rows": 1},
            {"sql": "trade_credit_gold", "key": seller, "params": [price, seller],
             "expect_rows": 1},
            {"sql": "trade_debit_gold", "key": buyer, "params": [price, buyer, price],
             "expect_rows": 1, "reason": "not enough gold"},
            {"sql": "trade_give_item", "key": buyer, "params": [buyer, item]},
            {"sql": "player_gold", "key": buyer, "params": [buyer], "return": True,
             "name": "buyer"},
            {"sql": "player_gold", "key": seller, "params": [seller], "return": True,
             "name": "seller"}]})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["outcome"], "committed")
        self.assertFalse(reply["replayed"])
        self.assertGreaterEqual(reply["attempts"], 1)
        self.assertEqual(len(reply["results"]), 6)
        self.assertEqual(reply["results"][0]["affected_rows"], 1)
        # Request order, whatever order the stores ran in.
        self.assertEqual(reply["results"][4]["name"], "buyer")
        self.assertEqual(reply["results"][4]["rows"], [[str(gb - price)]])
        self.assertEqual(reply["results"][5]["name"], "seller")
        self.assertEqual(reply["results"][5]["rows"], [[str(gs + price)]])
        self.assertEqual(gold(seller), gs + price)
        self.assertEqual(gold(buyer), gb - price)

    def test_redis_ops(self):
        k = "pyct:%s" % uuid.uuid4().hex[:8]
        status, reply, _ = self.post({"steps": [
            {"redis": "set", "key": k + ":s", "value": "v"},
            {"redis": "hset", "key": k + ":h", "field": "f", "value": "hv"},
            {"redis": "zadd", "key": k + ":z", "member": "a", "score": 2.5},
            {"redis": "zadd", "key": k + ":z", "member": "b", "score": 7}]})
        self.assertEqual(status, 200, reply)
        status, reply, _ = self.post({"read_only": True, "steps": [
            {"redis": "get", "key": k + ":s"}, {"redis": "hget", "key": k + ":h", "field": "f"},
            {"redis": "zscore", "key": k + ":z", "member": "a"},
            {"redis": "ztop", "key": k + ":z", "count": 5},
            {"redis": "get", "key": k + ":missing"}]})
        self.assertEqual(status, 200, reply)
        r = reply["results"]
        self.assertEqual(r[0]["value"], "v")
        self.assertEqual(r[1]["value"], "hv")
        self.assertEqual(float(r[2]["value"]), 2.5)
        self.assertEqual([m["member"] for m in r[3]["members"]], ["b", "a"])
        self.assertIsNone(r[4]["value"])
        status, reply, _ = self.post({"read_only": True, "steps": [
            {"redis": "set", "key": k + ":s", "value": "w"}]})
        self.assertError(status, reply, 400, "bad_request", "read-only", step=0)

    def test_idempotency(self):
        key = "pyct-" + uuid.uuid4().hex
        p = 14
        g = gold(p)
        body = {"idempotency_key": key, "steps": [credit(p, 9)]}
        s1, r1, _ = self.post(body)
        self.assertEqual(s1, 200, r1)
        self.assertFalse(r1["replayed"])
        s2, r2, _ = self.post(body)
        self.assertEqual(s2, 200, r2)
        self.assertTrue(r2["replayed"])
        self.assertEqual(r2["gid"], r1["gid"])
        self.assertEqual(r2["results"], r1["results"])
        self.assertEqual(gold(p), g + 9, "a resent key ran twice")
        # The same key with a different body: 409, nothing run.
        before = db_state()
        s3, r3, _ = self.post({"idempotency_key": key, "steps": [credit(p, 10)]})
        self.assertError(s3, r3, 409, "idempotency_key_mismatch", "different request")
        self.assertEqual(db_state(), before)
        # The record.
        status, rec, _ = self.d.request("GET", "/v1/transactions/" + key)
        self.assertEqual(status, 200, rec)
        self.assertEqual(rec["state"], "committed")
        self.assertEqual(rec["gid"], r1["gid"])
        self.assertEqual(rec["http_status"], 200)
        status, rec, _ = self.d.request("GET", "/v1/transactions/no-such-" + uuid.uuid4().hex)
        self.assertError(status, rec, 404, "not_found", "no transaction")

    def test_replay_is_the_first_answer(self):
        # One-shard transactions (the key's shard is the player's) and two-shard ones alike: the
        # replay shows the first answer's gid, attempts and results. 12 random keys: one of
        # them lands on its player's shard with probability 1 - (2/3)^12 (3 shards).
        for i in range(12):
            key = "pyct-r-" + uuid.uuid4().hex
            p = 30 + i
            body = {"idempotency_key": key, "steps": [credit(p, 1)]}
            s1, r1, _ = self.post(body)
            s2, r2, _ = self.post(body)
            self.assertEqual((s1, s2), (200, 200), (r1, r2))
            self.assertTrue(r2["replayed"])
            for f in ("outcome", "gid", "attempts", "results"):
                self.assertEqual(r1[f], r2[f], (f, r1, r2))

    def test_idempotency_aborted_is_recorded(self):
        key = "pyct-" + uuid.uuid4().hex
        body = {"idempotency_key": key, "steps": [
            {"sql": "trade_debit_gold", "key": 15, "params": [10 ** 9, 15, 10 ** 9],
             "expect_rows": 1, "reason": "too poor"}]}
        s1, r1, _ = self.post(body)
        self.assertError(s1, r1, 422, "guard_failed", "too poor")
        s2, r2, _ = self.post(body)
        self.assertError(s2, r2, 422, "guard_failed", "too poor")
        self.assertTrue(r2.get("replayed"), r2)
        status, rec, _ = self.d.request("GET", "/v1/transactions/" + key)
        self.assertEqual(status, 200, rec)
        self.assertEqual(rec["state"], "aborted")
        self.assertEqual(rec["http_status"], 422)

    # ---- routing ----

    def test_unknown_path_and_method(self):
        for m, p in (("GET", "/v1/nothing"), ("POST", "/v2/transactions"), ("GET", "/favicon")):
            status, reply, _ = self.d.request(m, p)
            self.assertError(status, reply, 404, "not_found", "no such path")
        for m, p in (("GET", "/v1/transactions"), ("DELETE", "/v1/transactions"),
                     ("PUT", "/v1/in-doubt"), ("POST", "/healthz"), ("GET", "/v1/sessions")):
            status, reply, _ = self.d.request(m, p)
            self.assertError(status, reply, 405, "method_not_allowed", m)

    # ---- operations ----

    def test_health_ready(self):
        status, reply, _ = self.d.request("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertTrue(reply.get("ok"))
        status, reply, _ = self.d.request("GET", "/readyz")
        self.assertEqual(status, 200, reply)
        self.assertTrue(reply.get("ready"))

    def test_metrics(self):
        self.post({"steps": [credit(16, 1)]})
        status, text, headers = self.d.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain"), headers)
        self.assertIn("# TYPE seigo_transactions_total counter", text)
        committed = [l for l in text.splitlines()
                     if l.startswith('seigo_transactions_total{outcome="committed"}')]
        self.assertEqual(len(committed), 1, text[:2000])
        self.assertGreaterEqual(float(committed[0].split()[-1]), 1)
        for name in ("seigo_attempts_total", "seigo_in_doubt", "seigo_store_up",
                     "seigo_transaction_duration_seconds_bucket", "seigo_http_requests_total"):
            self.assertIn(name, text)
        self.assertRegex(text, r'seigo_http_requests_total\{[^}]*path="/v1/transactions"')
        self.assertNotIn(harness.PASSWORD, text)

    def test_status_and_in_doubt(self):
        status, st, _ = self.d.request("GET", "/v1/status")
        self.assertEqual(status, 200, st)
        for k in ("counters", "deployment", "in_doubt", "stores", "resolver", "outbox"):
            self.assertIn(k, st)
        self.assertEqual(len([s for s in st["stores"] if s["store"].startswith("shard")]),
                         len(harness.shard_urls()))
        self.assertTrue(all(s["up"] for s in st["stores"]), st["stores"])
        text = json.dumps(st)
        self.assertNotIn(harness.PASSWORD, text)
        status, ind, _ = self.d.request("GET", "/v1/in-doubt")
        self.assertEqual(status, 200, ind)
        self.assertIsInstance(ind["in_doubt"]["txs"], list)
        self.assertEqual(ind["in_doubt"]["count"], len(ind["in_doubt"]["txs"]))
        self.assertIn("lock_waits", ind)
        status, page, headers = self.d.request("GET", "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        self.assertNotIn(harness.PASSWORD, page)
        self.assertNotIn(harness.PASSWORD, self.d.log_text())

    def test_resolve_auth(self):
        path = "/v1/in-doubt/0123456789abcdef0123456789abcdef/resolve"
        status, reply, _ = self.d.request("POST", path, {})
        self.assertError(status, reply, 401, "unauthorized", "Authorization")
        status, reply, _ = self.d.request("POST", path, {},
                                          headers={"Authorization": "Bearer wrong-token"})
        self.assertError(status, reply, 403, "forbidden", "wrong admin token")
        status, reply, _ = self.d.request("POST", path, {},
                                          headers={"Authorization": harness.ADMIN_TOKEN})
        self.assertError(status, reply, 403, "forbidden")
        status, reply, _ = self.d.request(
            "POST", path, {}, headers={"Authorization": "Bearer " + harness.ADMIN_TOKEN})
        self.assertError(status, reply, 404, "not_found", "not in doubt")

    # ---- interactive sessions ----

    def begin(self, body=None):
        status, reply, _ = self.post(body if body is not None else {}, path="/v1/sessions")
        self.assertEqual(status, 201, reply)
        self.assertTrue(reply["session"].startswith("s-"), reply)
        return reply["session"]

    def test_session_commit(self):
        p = 17
        g = gold(p)
        sid = self.begin({"timeout_ms": 5000})
        status, reply, _ = self.post({"steps": [{"sql": "player_gold", "key": p, "params": [p],
                                                 "return": True}]},
                                     path="/v1/sessions/%s/steps" % sid)
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["results"][0]["rows"], [[str(g)]])
        status, reply, _ = self.post({"steps": [credit(p, 4)]}, path="/v1/sessions/%s/steps" % sid)
        self.assertEqual(status, 200, reply)
        self.assertEqual(gold(p), g, "visible before the commit")
        status, reply, _ = self.post({}, path="/v1/sessions/%s/commit" % sid)
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["outcome"], "committed")
        self.assertEqual(gold(p), g + 4)
        status, reply, _ = self.post({"steps": [credit(p, 4)]}, path="/v1/sessions/%s/steps" % sid)
        self.assertError(status, reply, 404, "not_found")
        self.assertEqual(gold(p), g + 4)

    def test_session_abort(self):
        p = 18
        g = gold(p)
        sid = self.begin()
        status, reply, _ = self.post({"steps": [credit(p, 4)]}, path="/v1/sessions/%s/steps" % sid)
        self.assertEqual(status, 200, reply)
        status, reply, _ = self.post({}, path="/v1/sessions/%s/abort" % sid)
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["outcome"], "aborted")
        self.assertEqual(gold(p), g)
        status, reply, _ = self.post({}, path="/v1/sessions/%s/commit" % sid)
        self.assertError(status, reply, 404, "not_found")
        self.assertEqual(gold(p), g)

    def test_session_errors(self):
        status, reply, _ = self.post({"steps": [credit(1, 1)]},
                                     path="/v1/sessions/s-nope-1/steps")
        self.assertError(status, reply, 404, "not_found", "no open session")
        status, reply, _ = self.post({}, path="/v1/sessions/s-nope-1/commit")
        self.assertError(status, reply, 404, "not_found")
        status, reply, _ = self.post({"timeout_ms": 5000, "bogus": 1}, path="/v1/sessions")
        self.assertError(status, reply, 400, "bad_request", "unknown field 'bogus'")
        p = 19
        g = gold(p)
        # A bad step is refused before it runs, and ends the session (rolled back: its locks
        # are not held until the idle timeout).
        sid = self.begin()
        status, reply, _ = self.post({"steps": [credit(p, 2)]}, path="/v1/sessions/%s/steps" % sid)
        self.assertEqual(status, 200, reply)
        status, reply, _ = self.post({"steps": [{"sql": "nope", "key": 1}]},
                                     path="/v1/sessions/%s/steps" % sid)
        self.assertError(status, reply, 400, "bad_request", "unknown statement", step=0)
        self.assertIn("rolled back", reply["error"]["message"])
        status, reply, _ = self.post({"steps": [credit(p, 2)]}, path="/v1/sessions/%s/steps" % sid)
        self.assertError(status, reply, 404, "not_found")
        self.assertEqual(gold(p), g)
        sid = self.begin()
        status, reply, _ = self.post({"steps": [credit(p, 2)]}, path="/v1/sessions/%s/steps" % sid)
        self.assertEqual(status, 200, reply)
        # A guard failure ends it: rolled back.
        status, reply, _ = self.post({"steps": [{"sql": "trade_debit_gold", "key": p,
                                                 "params": [10 ** 9, p, 10 ** 9],
                                                 "expect_rows": 1, "reason": "too poor"}]},
                                     path="/v1/sessions/%s/steps" % sid)
        self.assertError(status, reply, 422, "guard_failed", "too poor")
        status, reply, _ = self.post({}, path="/v1/sessions/%s/commit" % sid)
        self.assertError(status, reply, 404, "not_found")
        self.assertEqual(gold(p), g)

    def test_session_idle_rolled_back(self):
        p = 20
        g = gold(p)
        sid = self.begin({"timeout_ms": 20000})
        status, reply, _ = self.post({"steps": [credit(p, 6)]}, path="/v1/sessions/%s/steps" % sid)
        self.assertEqual(status, 200, reply)
        time.sleep(IDLE_MS / 1000.0 + 1.0)
        status, reply, _ = self.post({"steps": [credit(p, 6)]}, path="/v1/sessions/%s/steps" % sid)
        self.assertError(status, reply, 404, "not_found")
        status, reply, _ = self.post({}, path="/v1/sessions/%s/commit" % sid)
        self.assertError(status, reply, 404, "not_found")
        self.assertEqual(gold(p), g)
        # Its row lock is gone too: another transaction on the row commits at once.
        t0 = time.time()
        status, reply, _ = self.post({"steps": [credit(p, 1)], "timeout_ms": 3000})
        self.assertEqual(status, 200, reply)
        self.assertLess(time.time() - t0, 2.0)
        self.assertEqual(gold(p), g + 1)

    # ---- the broker ----

    def test_publish_with_broker(self):
        if not harness.amqp_url():
            self.skipTest("SEIGO_TEST_AMQP is not set")
        if Contract.amqp is None:
            Contract.amqp = harness.Seigod(AMQP_PORT, amqp=True).start()
        d = Contract.amqp
        rk = "pyct.nobody." + uuid.uuid4().hex[:8]
        p = 21
        g = gold(p)
        # Aborted: nothing is published, nothing is in the outbox.
        status, reply, _ = self.post({"steps": [
            credit(p, 1), {"sql": "trade_debit_gold", "key": p, "params": [10 ** 9, p, 10 ** 9],
                           "expect_rows": 1, "reason": "too poor"},
            {"publish": {"exchange": "", "routing_key": rk, "body": "never"}}]}, d=d)
        self.assertError(status, reply, 422, "guard_failed", "too poor")
        self.assertEqual(gold(p), g)
        # Committed: a message id, and the relay hands the message to the broker. No queue is
        # bound to the routing key, so the broker returns it (NO_ROUTE) and the relay records
        # that in seigo_outbox_dead: proof that it reached the broker.
        status, reply, _ = self.post({"steps": [
            credit(p, 1), {"publish": {"exchange": "amq.topic", "routing_key": rk, "body": "hi",
                                       "content_type": "text/plain", "headers": {"h": "v"}},
                           "name": "msg"}]}, d=d)
        self.assertEqual(status, 200, reply)
        mid = reply["results"][1]["message_id"]
        self.assertTrue(mid.startswith(reply["gid"]), reply)
        self.assertEqual(gold(p), g + 1)
        deadline = time.time() + 20
        reason = ""
        while time.time() < deadline and "NO_ROUTE" not in reason:
            time.sleep(0.3)
            reason = "".join(on_all("SELECT reason FROM seigo_outbox_dead WHERE gid = '%s'"
                                    % reply["gid"]))
        self.assertIn("NO_ROUTE", reason)
        self.assertIn(rk, reason)
        never = "".join(on_all("SELECT COUNT(*) FROM seigo_outbox_dead WHERE routing_key = '%s'"
                               " AND body = 'never'" % rk)).split()
        self.assertEqual(sum(int(x) for x in never), 0)

    # ---- the process ----

    def test_port_in_use(self):
        other = harness.Seigod(PORT)
        other.start(wait=False)
        try:
            rc = other.proc.wait(timeout=30)
        except Exception:
            other.kill()
            raise
        self.assertEqual(rc, 1, other.log_text())
        self.assertIn("cannot listen", other.log_text())
        status, _, _ = self.d.request("GET", "/healthz")
        self.assertEqual(status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
