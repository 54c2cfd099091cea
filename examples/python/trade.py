#!/usr/bin/python3
"""A handful of trades between random players, through seigod (doc/seigod.md).

Needs the tables of `seigo demo setup` (players(player_id, gold), inventory(player_id, item_id,
qty), players 1..N, items 1..10) and a seigod whose catalog has the sample statements
(seigod/seigod.toml.example): trade_take_item, trade_credit_gold, trade_debit_gold,
trade_give_item, player_gold.

    PYTHONPATH=clients/python examples/python/trade.py --url http://127.0.0.1:8640

Each trade is one atomic transaction over the seller's and the buyer's shards: the seller loses
one item and gains the price, the buyer pays (never below zero) and gains the item — all of it
or nothing. Exit 0 if every trade committed or was refused by a guard (no such item, not enough
gold); 1 otherwise.
"""
import argparse
import os
import random
import sys

try:
    import seigo_client
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "clients", "python"))
    import seigo_client


def trade(client, seller, buyer, item, price):
    """One trade; returns the Result (raises GuardFailed if a guard refused it)."""
    with client.transaction(timeout_ms=5000) as tx:
        tx.sql("trade_take_item", key=seller, params=[seller, item], expect_rows=1,
               reason="player %d has no item %d" % (seller, item))
        tx.sql("trade_credit_gold", key=seller, params=[price, seller], expect_rows=1,
               reason="no player %d" % seller)
        tx.sql("trade_debit_gold", key=buyer, params=[price, buyer, price], expect_rows=1,
               reason="player %d has less than %d gold" % (buyer, price))
        tx.sql("trade_give_item", key=buyer, params=[buyer, item])
        tx.sql("player_gold", key=buyer, params=[buyer], returning=True, name="buyer_gold")
        tx.sql("player_gold", key=seller, params=[seller], returning=True, name="seller_gold")
    return tx.result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("SEIGOD_URL", "http://127.0.0.1:8640"))
    ap.add_argument("--trades", type=int, default=10)
    ap.add_argument("--players", type=int, default=200,
                    help="players 1..N exist (seigo demo setup --players N)")
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--max-price", type=int, default=300)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    client = seigo_client.Client(args.url, retries=5)
    committed = refused = failed = 0
    for n in range(1, args.trades + 1):
        seller = rng.randint(1, args.players)
        buyer = rng.randint(1, args.players - 1)
        if buyer >= seller:
            buyer += 1
        item = rng.randint(1, args.items)
        price = rng.randint(1, args.max_price)
        what = "trade %d: player %d sells item %d to player %d for %d gold" % (
            n, seller, item, buyer, price)
        try:
            r = trade(client, seller, buyer, item, price)
        except seigo_client.GuardFailed as e:
            refused += 1
            print("%s: refused (%s)" % (what, e.message))
        except seigo_client.SeigoError as e:
            failed += 1
            print("%s: FAILED: %s" % (what, e))
        else:
            committed += 1
            print("%s: committed (gid %s, %d attempt(s)%s); buyer now has %s gold, seller %s" % (
                what, r.gid or "-", r.attempts, ", replayed" if r.replayed else "",
                r["buyer_gold"].scalar(), r["seller_gold"].scalar()))
    print("%d committed, %d refused by a guard, %d failed" % (committed, refused, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
