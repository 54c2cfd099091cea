#!/usr/bin/python3
"""A small game backend's traffic through seigod: trades, raid attacks and gacha pulls.

    PYTHONPATH=clients/python examples/python/game.py --url http://127.0.0.1:8640 --seconds 10

The data is the demos' (seigod's sample catalog, seigod/seigod.toml.example):

- trade (`seigo demo setup`): the seller's item and the buyer's gold, on two shards.
- raid (`seigo demo raid setup`): one stamina off the player (raid_spend_stamina), one raid_log
  row (raid_log_attack), and the boss's HP in Redis (`boss:{B}:hp`) lowered by the damage with
  a bounded incr that never goes below 0 — all or nothing, so `seigo demo raid audit` finds the
  HP lost equal to the damage logged.
- gacha (`seigo demo gacha setup`, needs a broker in seigod): 100 gold off (gacha_charge), a
  grant row (gacha_grant) and a `gacha.granted` event to exchange `gacha` with body
  "<grant_id> <player_id> <item_id>", published if and only if the pull commits (the outbox);
  `seigo demo gacha consume` applies the events, `seigo demo gacha audit` checks them.

--only trade|raid|gacha runs one kind. Exit 0 if everything committed or was refused by a guard
(out of stamina, the boss is defeated, not enough gold ...), 1 if anything else happened.
"""
import argparse
import os
import random
import sys
import threading
import time

try:
    import seigo_client
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "clients", "python"))
    import seigo_client

INT64_MAX = 2 ** 63 - 1
GACHA_PRICE = 100
GACHA_ITEMS = 20


def do_trade(client, rng, args):
    seller = rng.randint(1, args.players)
    buyer = rng.randint(1, args.players - 1)
    buyer += buyer >= seller
    item, price = rng.randint(1, 10), rng.randint(1, 300)
    with client.transaction() as tx:
        tx.sql("trade_take_item", key=seller, params=[seller, item], expect_rows=1,
               reason="the seller has no such item")
        tx.sql("trade_credit_gold", key=seller, params=[price, seller], expect_rows=1)
        tx.sql("trade_debit_gold", key=buyer, params=[price, buyer, price], expect_rows=1,
               reason="the buyer has not enough gold")
        tx.sql("trade_give_item", key=buyer, params=[buyer, item])
    return tx.result


def do_raid(client, rng, args):
    player = rng.randint(1, args.raid_players)
    boss = rng.randint(1, args.bosses)
    damage = rng.randint(1, 100)
    attack_id = rng.randint(1, INT64_MAX)
    with client.transaction() as tx:
        tx.sql("raid_spend_stamina", key=player, params=[player], expect_rows=1,
               reason="out of stamina")
        tx.sql("raid_log_attack", key=player, params=[attack_id, player, boss, damage],
               expect_rows=1)
        tx.redis_incr("boss:{%d}:hp" % boss, -damage, min=0, max=INT64_MAX,
                      reason="the boss is already defeated", name="hp")
    return tx.result


def do_gacha(client, rng, args):
    player = rng.randint(1, args.gacha_players)
    grant_id = rng.randint(1, INT64_MAX)
    item = rng.randint(1, GACHA_ITEMS)
    with client.transaction() as tx:
        tx.sql("gacha_charge", key=player, params=[GACHA_PRICE, player, GACHA_PRICE],
               expect_rows=1, reason="not enough gold")
        tx.sql("gacha_grant", key=player, params=[grant_id, player, item], expect_rows=1)
        tx.publish("gacha", "gacha.granted", "%d %d %d" % (grant_id, player, item),
                   content_type="text/plain")
    return tx.result


KINDS = {"trade": do_trade, "raid": do_raid, "gacha": do_gacha}


def settle(client, err, seconds=60):
    """What became of a transaction whose outcome was unknown: "committed" if its idempotency
    record says so, "refused" if a guard refused it, "not committed" if no transaction with
    its key is committed, running or in doubt any more."""
    key = getattr(err, "idempotency_key", None)
    if not key:
        return "failed"
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            rec = client.lookup(key)
        except seigo_client.SeigoError:
            time.sleep(0.5)  # still in doubt, or seigod is restarting
            continue
        if rec is None:
            return "not committed"
        return "committed" if rec.outcome == "committed" else "refused"
    return "failed"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("SEIGOD_URL", "http://127.0.0.1:8640"))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--only", choices=sorted(KINDS), default=None)
    ap.add_argument("--clients", type=int, default=4, help="concurrent callers (threads)")
    ap.add_argument("--players", type=int, default=1000, help="seigo demo setup --players")
    ap.add_argument("--raid-players", type=int, default=1000,
                    help="seigo demo raid setup --players")
    ap.add_argument("--bosses", type=int, default=3, help="seigo demo raid setup --bosses")
    ap.add_argument("--gacha-players", type=int, default=1000,
                    help="seigo demo gacha setup --players")
    args = ap.parse_args(argv)
    kinds = [args.only] if args.only else sorted(KINDS)
    client = seigo_client.Client(args.url, retries=5)
    lock = threading.Lock()
    counts = {k: {"committed": 0, "refused": 0, "not committed": 0, "failed": 0} for k in kinds}
    errors = []
    end = time.time() + args.seconds

    def worker(n):
        rng = random.Random(n * 7919 + int(time.time() * 1000))
        while time.time() < end:
            kind = rng.choice(kinds)
            try:
                KINDS[kind](client, rng, args)
                outcome = "committed"
            except seigo_client.GuardFailed:
                outcome = "refused"
            except seigo_client.OutcomeUnknown as e:
                # The reply was lost (seigod died mid-commit) and its resends could not learn
                # the outcome in time: ask for the key's record until it is known.
                outcome = settle(client, e)
            except seigo_client.SeigoError as e:
                outcome = "failed"
                with lock:
                    errors.append("%s: %s" % (kind, e))
            with lock:
                counts[kind][outcome] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = 0
    for k in kinds:
        c = counts[k]
        failed += c["failed"]
        print("%-6s %6d committed, %6d refused by a guard, %d not committed after a lost "
              "reply, %d failed" % (k, c["committed"], c["refused"], c["not committed"],
                                    c["failed"]))
    for e in errors[:10]:
        print("error: " + e)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
