"""The status page (seigod/page.html) rendered by headless Chromium against a live seigod that
has committed transactions and has one hung in-doubt transaction (left by a second seigod that
killed itself at SEIGO_CRASH_AT=before_decision, as in test_hung.py).

The dumped DOM must show: ready, the committed count equal to /v1/status's counters.committed,
the hung count >= 1, the in-doubt table's row for that gid with class "hung", non-empty chart
polylines, and data-loaded="1" on <body>.

    /usr/bin/python3 tests/seigod/test_page.py
"""
import html.parser
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_crash import post, prepared_gids, trade_body  # noqa: E402

PORT_A = 36866
PORT_B = 36867
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Dom(html.parser.HTMLParser):
    """Text by element id, attributes by id, <tr> of the in-doubt table, <body> attributes."""

    def __init__(self):
        super().__init__()
        self.text, self.attrs, self.rows, self.body = {}, {}, [], {}
        self.open_ids = []  # (tag, id) stack of elements with an id
        self.in_doubt_table = False
        self.row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "table" and a.get("id") == "in-doubt-table":
            self.in_doubt_table = True
        if self.in_doubt_table and tag == "tr" and "data-gid" in a:
            self.row = {"attrs": a, "cells": []}
        if self.row is not None and tag == "td":
            self.row["cells"].append("")
        if "id" in a:
            self.attrs[a["id"]] = a
            self.text.setdefault(a["id"], "")
        if tag not in ("polyline", "br", "meta", "input", "img"):
            self.open_ids.append((tag, a.get("id")))

    def handle_startendtag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.attrs[a["id"]] = a

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_doubt_table = False
        if tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None
        for i in range(len(self.open_ids) - 1, -1, -1):
            if self.open_ids[i][0] == tag:
                del self.open_ids[i:]
                break

    def handle_data(self, data):
        for _, i in self.open_ids:
            if i is not None:
                self.text[i] = self.text.get(i, "") + data
        if self.row is not None and self.row["cells"]:
            self.row["cells"][-1] += data


@unittest.skipIf(CHROMIUM is None, "chromium is not installed (apt-get install chromium)")
class PageTest(unittest.TestCase):

    def setUp(self):
        rc, out = harness.seigo_cli("demo", "setup", "--players", "20")
        self.assertEqual(rc, 0, out)
        self.shard_of = harness.shard_of_players()
        self.b = harness.Seigod(PORT_B, server={"hung_threshold_s": "1"}).start()
        self.a = harness.Seigod(PORT_A, env={"SEIGO_CRASH_AT": "before_decision"})
        self.profile = tempfile.mkdtemp(prefix="seigod-page-chromium-")

    def tearDown(self):
        self.a.kill()
        # B's resolver aborts the crashed trade after its deadline: leave nothing prepared.
        deadline = time.time() + 20
        while prepared_gids() and time.time() < deadline and self.b.proc.poll() is None:
            time.sleep(0.2)
        self.b.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def dump_dom(self, url):
        p = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--user-data-dir=" + self.profile, "--virtual-time-budget=5000", "--dump-dom", url],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        return p.stdout

    def test_page(self):
        # Committed transactions on B, spread over a few monitor passes (the chart's samples).
        for i in range(12):
            status, r = post(PORT_B, trade_body("page-%d-%d" % (time.time(), i), 1 + i % 5,
                                                6 + i % 5, 1 + i % 3, 2))
            self.assertEqual(status, 200, r)
            time.sleep(0.05)
        # A hung in-doubt transaction: A dies before its decision.
        seller = 11
        buyer = next(p for p in sorted(self.shard_of) if self.shard_of[p] != self.shard_of[seller])
        body = trade_body("", seller, buyer, 1, 5)
        del body["idempotency_key"]
        body["timeout_ms"] = 10000  # the resolver leaves it alone until then
        self.a.start()
        with self.assertRaises((OSError, http.client.HTTPException)):
            post(PORT_A, body)
        self.assertEqual(self.a.proc.wait(timeout=10), -9)
        gids = prepared_gids()
        self.assertEqual(len(gids), 1, gids)
        gid = gids.pop()
        deadline = time.time() + 10
        while time.time() < deadline:
            _, j, _ = self.b.request("GET", "/v1/in-doubt")
            if any(t["gid"] == gid and t["hung"] for t in j["in_doubt"]["txs"]):
                break
            time.sleep(0.1)
        else:
            self.fail("B never saw %s hung: %s" % (gid, j))

        dom_text = self.dump_dom(self.b.url() + "/")
        _, st, _ = self.b.request("GET", "/v1/status")
        dom = Dom()
        dom.feed(dom_text)
        self.assertEqual(dom.body.get("data-loaded"), "1",
                         "the page did not load /v1/status:\n" + dom_text[:3000])
        self.assertEqual(dom.text.get("error", "").strip(), "")
        self.assertEqual(dom.text["ready"].strip(), "ready")
        self.assertEqual(dom.attrs["ready"].get("class"), "ok")
        self.assertGreaterEqual(st["counters"]["committed"], 12)
        self.assertEqual(dom.text["committed-total"].strip(), str(st["counters"]["committed"]))
        self.assertGreaterEqual(int(dom.text["hung-count"]), 1)
        self.assertIn("bad", dom.attrs["hung-count"].get("class", ""))
        self.assertGreaterEqual(int(dom.text["in-doubt-count"]), 1)
        rows = [r for r in dom.rows if r["attrs"].get("data-gid") == gid]
        self.assertEqual(len(rows), 1, "no in-doubt row for %s: %s" % (gid, dom.rows))
        self.assertEqual(rows[0]["attrs"].get("class"), "hung")
        self.assertEqual(rows[0]["cells"][0], gid)
        self.assertEqual(rows[0]["cells"][3], "none")  # no decision
        self.assertIn(": prepared", rows[0]["cells"][4])
        for line in ("line-committed", "line-aborted", "line-retries"):
            self.assertTrue(dom.attrs[line].get("points", "").strip(),
                            "%s has no points" % line)
        self.assertNotEqual(dom.text["updated"].strip(), "never")
        stores = dom.text.get("store-table", "")
        self.assertIn("***@", stores)
        self.assertNotIn(harness.PASSWORD, dom_text)
        print("\npage: committed %s, hung %s, in doubt %s, row %s" % (
            dom.text["committed-total"], dom.text["hung-count"], dom.text["in-doubt-count"],
            rows[0]["cells"]), file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
