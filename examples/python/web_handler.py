#!/usr/bin/python3
"""A tiny web app whose handlers do their game actions through seigod — the shape a Django (or
Flask) view has when it uses seigo_client.

    PYTHONPATH=clients/python examples/python/web_handler.py --url http://127.0.0.1:8640 \\
        --listen 127.0.0.1:8080
    curl -X POST -d '{"seller": 1, "buyer": 2, "item": 3, "price": 50}' localhost:8080/trade
    curl -X POST -d '{"player": 7}' localhost:8080/gacha

The views are plain functions of the request's JSON returning (status, JSON): one Client for
the whole process (it is thread-safe and keeps a connection per thread), a declarative
transaction per action, and the typed errors turned into HTTP answers — a refused guard is the
player's problem (409), an unknown outcome is not (503: the client already resent it with the
same idempotency key, so the player may simply try again later).
"""
import argparse
import json
import os
import random
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import seigo_client
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "clients", "python"))
    import seigo_client

CLIENT = None  # set in main(); in Django: a module-level Client(settings.SEIGOD_URL)


def trade_view(data):
    """POST /trade {"seller", "buyer", "item", "price"}: the item to the buyer, the gold to the
    seller, atomically."""
    seller, buyer = int(data["seller"]), int(data["buyer"])
    item, price = int(data["item"]), int(data["price"])
    with CLIENT.transaction(timeout_ms=3000) as tx:
        tx.sql("trade_take_item", key=seller, params=[seller, item], expect_rows=1,
               reason="the seller has no such item")
        tx.sql("trade_credit_gold", key=seller, params=[price, seller], expect_rows=1)
        tx.sql("trade_debit_gold", key=buyer, params=[price, buyer, price], expect_rows=1,
               reason="not enough gold")
        tx.sql("trade_give_item", key=buyer, params=[buyer, item])
        tx.sql("player_gold", key=buyer, params=[buyer], returning=True, name="gold")
    return 200, {"ok": True, "gid": tx.result.gid, "gold": int(tx.result["gold"].scalar())}


def gacha_view(data):
    """POST /gacha {"player"}: 100 gold for a random item, and a gacha.granted event."""
    player = int(data["player"])
    grant_id = random.randint(1, 2 ** 63 - 1)
    item = random.randint(1, 20)
    with CLIENT.transaction(timeout_ms=3000) as tx:
        tx.sql("gacha_charge", key=player, params=[100, player, 100], expect_rows=1,
               reason="not enough gold")
        tx.sql("gacha_grant", key=player, params=[grant_id, player, item], expect_rows=1)
        tx.publish("gacha", "gacha.granted", "%d %d %d" % (grant_id, player, item),
                   content_type="text/plain")
    return 200, {"ok": True, "grant_id": grant_id, "item": item,
                 "message_id": tx.result[2].message_id}


ROUTES = {"/trade": trade_view, "/gacha": gacha_view}


def handle(path, body):
    """Runs the view of `path` on the JSON `body`; every outcome becomes (status, JSON)."""
    view = ROUTES.get(path)
    if view is None:
        return 404, {"ok": False, "error": "no such page"}
    try:
        data = json.loads(body or b"{}")
        return view(data)
    except (ValueError, KeyError, TypeError) as e:
        return 400, {"ok": False, "error": "bad request: %s" % e}
    except seigo_client.GuardFailed as e:
        return 409, {"ok": False, "error": e.message}
    except (seigo_client.OutcomeUnknown, seigo_client.GaveUp, seigo_client.Unavailable) as e:
        return 503, {"ok": False, "error": "try again later (%s)" % e.code}
    except seigo_client.SeigoError as e:
        return 500, {"ok": False, "error": str(e)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        status, reply = handle(self.path, self.rfile.read(n))
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("web_handler: " + (fmt % args) + "\n")


def main(argv=None):
    global CLIENT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("SEIGOD_URL", "http://127.0.0.1:8640"))
    ap.add_argument("--listen", default="127.0.0.1:8080")
    args = ap.parse_args(argv)
    CLIENT = seigo_client.Client(args.url)
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print("web_handler: listening on http://%s:%s, seigod at %s" % (host, port, args.url),
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
