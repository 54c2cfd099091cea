// `seigo demo`: random trades of items for gold between players on different shards, in seigo
// mode (one atomic transaction) or naive mode (two independent local transactions), and an
// audit of the invariants a game cares about (doc/cli.md).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "tools/cli.h"

namespace seigo::cli {
namespace {

constexpr int64_t kGoldEach = 1000;
constexpr int64_t kQtyEach = 10;

// Runs `sql` on every shard; prints the first failure.
bool OnEveryShard(Coordinator& c, const std::string& sql, int* rc) {
  for (uint32_t i = 0; i < c.shard_map().size(); ++i) {
    Result<QueryResult> r = c.QueryShard(i, sql);
    if (!r.ok()) {
      std::fprintf(stderr, "seigo: shard %u: %s\n", i, r.status().ToString().c_str());
      *rc = ExitCodeFor(r.status());
      return false;
    }
  }
  return true;
}

struct Meta {
  int64_t players = 0, items = 0, gold_each = 0, qty_each = 0;
};

Result<Meta> ReadMeta(Coordinator& c) {
  Result<QueryResult> r =
      c.QueryShard(0, "SELECT players, items, gold_each, qty_each FROM demo_meta");
  if (!r.ok()) return r.status().Annotate("reading demo_meta (did you run `seigo demo setup`?)");
  if (r->rows.empty()) return Status::NotFound("demo_meta is empty: run `seigo demo setup`");
  Meta m;
  m.players = *r->Int(0, 0);
  m.items = *r->Int(0, 1);
  m.gold_each = *r->Int(0, 2);
  m.qty_each = *r->Int(0, 3);
  return m;
}

}  // namespace

int DemoSetup(const Common& common, int64_t players, int items) {
  int rc = kExitOk;
  auto c = OpenForTool(common, &rc);
  if (!c) return rc;
  // Leftover prepared branches would hold locks that DROP TABLE waits on: finish them first.
  if (int r = FinishInDoubtBeforeSetup(*c); r != kExitOk) return r;
  const std::string schema =
      "DROP TABLE IF EXISTS players, inventory, demo_meta";
  if (!OnEveryShard(*c, schema, &rc)) return rc;
  for (const char* ddl :
       {"CREATE TABLE players (player_id BIGINT PRIMARY KEY, gold BIGINT NOT NULL) "
        "ENGINE=InnoDB",
        "CREATE TABLE inventory (player_id BIGINT, item_id INT, qty BIGINT NOT NULL, "
        "PRIMARY KEY (player_id, item_id)) ENGINE=InnoDB",
        "CREATE TABLE demo_meta (players BIGINT NOT NULL, items INT NOT NULL, "
        "gold_each BIGINT NOT NULL, qty_each BIGINT NOT NULL) ENGINE=InnoDB"}) {
    if (!OnEveryShard(*c, ddl, &rc)) return rc;
  }
  const size_t n = c->shard_map().size();
  std::vector<std::string> player_rows(n), item_rows(n);
  auto flush = [&](uint32_t s, bool force) -> bool {
    if (player_rows[s].size() > 64'000 || (force && !player_rows[s].empty())) {
      Result<QueryResult> r =
          c->QueryShard(s, "INSERT INTO players (player_id, gold) VALUES " + player_rows[s]);
      if (!r.ok()) {
        std::fprintf(stderr, "seigo: shard %u: %s\n", s, r.status().ToString().c_str());
        return false;
      }
      player_rows[s].clear();
    }
    if (item_rows[s].size() > 64'000 || (force && !item_rows[s].empty())) {
      Result<QueryResult> r = c->QueryShard(
          s, "INSERT INTO inventory (player_id, item_id, qty) VALUES " + item_rows[s]);
      if (!r.ok()) {
        std::fprintf(stderr, "seigo: shard %u: %s\n", s, r.status().ToString().c_str());
        return false;
      }
      item_rows[s].clear();
    }
    return true;
  };
  for (int64_t p = 1; p <= players; ++p) {
    uint32_t s = c->shard_map().ShardFor(p);
    std::string& pr = player_rows[s];
    pr += (pr.empty() ? "(" : ",(") + std::to_string(p) + "," + std::to_string(kGoldEach) + ")";
    for (int it = 1; it <= items; ++it) {
      std::string& ir = item_rows[s];
      ir += (ir.empty() ? "(" : ",(") + std::to_string(p) + "," + std::to_string(it) + "," +
            std::to_string(kQtyEach) + ")";
    }
    if (!flush(s, false)) return kExitFailed;
  }
  for (uint32_t s = 0; s < n; ++s) {
    if (!flush(s, true)) return kExitFailed;
  }
  const std::string meta = "INSERT INTO demo_meta VALUES (" + std::to_string(players) + "," +
                           std::to_string(items) + "," + std::to_string(kGoldEach) + "," +
                           std::to_string(kQtyEach) + ")";
  if (!OnEveryShard(*c, meta, &rc)) return rc;
  std::printf("demo setup: %lld players with %lld gold and %d item kinds x %lld each, on %zu "
              "shard(s)\n",
              static_cast<long long>(players), static_cast<long long>(kGoldEach), items,
              static_cast<long long>(kQtyEach), n);
  return kExitOk;
}

namespace {

struct Trade {
  int64_t buyer, seller, item, price;
};

// The seller's half of a trade: one item out, the price in.
Status SellerSide(Tx& tx, const Trade& t) {
  SEIGO_RETURN_IF_ERROR(tx.ExecExpect(t.seller, 1,
      "UPDATE inventory SET qty = qty - 1 WHERE player_id = ? AND item_id = ? AND qty >= 1",
      {t.seller, t.item}));
  return tx.ExecExpect(t.seller, 1, "UPDATE players SET gold = gold + ? WHERE player_id = ?",
                       {t.price, t.seller});
}

// The buyer's half: the price out (never below zero), the item in.
Status BuyerSide(Tx& tx, const Trade& t) {
  SEIGO_RETURN_IF_ERROR(tx.ExecExpect(t.buyer, 1,
      "UPDATE players SET gold = gold - ? WHERE player_id = ? AND gold >= ?",
      {t.price, t.buyer, t.price}));
  return tx.Exec(t.buyer,
                 "INSERT INTO inventory (player_id, item_id, qty) VALUES (?, ?, 1) "
                 "ON DUPLICATE KEY UPDATE qty = qty + 1", {t.buyer, t.item}).status();
}

// The atomic version: both halves in one transaction (two shards).
Status TradeTx(Tx& tx, const Trade& t) {
  SEIGO_RETURN_IF_ERROR(SellerSide(tx, t));
  return BuyerSide(tx, t);
}

struct Stats {
  std::atomic<uint64_t> committed{0}, business_aborts{0}, gave_up{0}, unknown{0}, attempts{0};
  std::atomic<uint64_t> half_done{0};  // naive: one side committed, the other not
};

}  // namespace

int DemoRun(const Common& common, int clients, double seconds, const std::string& mode) {
  int rc = kExitOk;
  // seigo mode runs the background resolver, as an application would.
  // Naive mode is the negative control: plain local commits, as an application without seigo
  // would do them — no commit record that would resolve a lost reply.
  auto c = OpenForTool(common, &rc, /*background=*/mode == "seigo", /*prepare_schema=*/true,
                       [&](CoordinatorOptions& o) {
                         if (mode == "naive") o.protocol.record_one_shard_commits = false;
                       });
  if (!c) return rc;
  Result<Meta> meta = ReadMeta(*c);
  if (!meta.ok()) {
    std::fprintf(stderr, "seigo: %s\n", meta.status().ToString().c_str());
    return kExitFailed;
  }
  const bool naive = mode == "naive";
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds));
  Stats st;
  std::mutex lat_mu;
  std::vector<double> latencies_ms;

  auto client = [&](int id) {
    std::mt19937_64 rng(std::random_device{}() ^ (static_cast<uint64_t>(id) << 32));
    std::uniform_int_distribution<int64_t> player(1, meta->players);
    std::uniform_int_distribution<int64_t> item(1, meta->items);
    std::uniform_int_distribution<int64_t> price(1, 10);
    std::vector<double> mine;
    const ShardMap& map = c->shard_map();
    while (std::chrono::steady_clock::now() < end) {
      Trade t{player(rng), player(rng), item(rng), price(rng)};
      if (t.buyer == t.seller) continue;
      if (map.size() > 1 && map.ShardFor(t.buyer) == map.ShardFor(t.seller)) continue;
      auto t0 = std::chrono::steady_clock::now();
      if (!naive) {
        // A trade that gave up (a shard is down) is retried until it commits or time is up;
        // that is safe because nothing of it committed.
        for (;;) {
          TxResult r = c->Run([&](Tx& tx) { return TradeTx(tx, t); });
          st.attempts += static_cast<uint64_t>(r.attempts);
          if (r.state == TxState::kCommitted) {
            st.committed++;
            mine.push_back(std::chrono::duration<double, std::milli>(
                               std::chrono::steady_clock::now() - t0).count());
          } else if (r.state == TxState::kAborted) {
            st.business_aborts++;
          } else if (r.state == TxState::kOutcomeUnknown) {
            st.unknown++;
          } else {
            st.gave_up++;
            if (std::chrono::steady_clock::now() < end) continue;
          }
          break;
        }
        continue;
      }
      // Naive: the seller's side, then the buyer's side, as two local transactions.
      TxResult a = c->Run([&](Tx& tx) { return SellerSide(tx, t); });
      st.attempts += static_cast<uint64_t>(a.attempts);
      if (a.state == TxState::kAborted) {
        st.business_aborts++;
        continue;
      }
      if (a.state != TxState::kCommitted) {
        (a.state == TxState::kGaveUp ? st.gave_up : st.unknown)++;
        continue;  // a lost reply may have committed the seller's side: nothing undoes it
      }
      TxResult b = c->Run([&](Tx& tx) { return BuyerSide(tx, t); });
      st.attempts += static_cast<uint64_t>(b.attempts);
      if (b.state == TxState::kCommitted) {
        st.committed++;
        mine.push_back(std::chrono::duration<double, std::milli>(
                           std::chrono::steady_clock::now() - t0).count());
      } else if (b.state == TxState::kAborted) {
        // Buyer lacks gold: compensate the seller's side (what a careful naive app does).
        c->Run([&](Tx& tx) -> Status {
          SEIGO_RETURN_IF_ERROR(tx.Exec(t.seller,
              "UPDATE inventory SET qty = qty + 1 WHERE player_id = ? AND item_id = ?",
              {t.seller, t.item}).status());
          return tx.Exec(t.seller, "UPDATE players SET gold = gold - ? WHERE player_id = ?",
                         {t.price, t.seller}).status();
        });
        st.business_aborts++;
      } else {
        st.half_done++;  // the seller's side committed, the buyer's did not (or is unknown)
      }
    }
    std::lock_guard<std::mutex> l(lat_mu);
    latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
  };

  uint64_t last = 0;
  RunClients(clients, start, end, client, [&](double el) {
    const uint64_t now = st.committed;
    std::string line = Format("[%5.1fs] %s: %llu trades (%llu/s)  business-aborts %llu  gave-up "
                              "%llu  unknown %llu", el, mode.c_str(),
                              static_cast<unsigned long long>(now),
                              static_cast<unsigned long long>(now - last),
                              static_cast<unsigned long long>(st.business_aborts.load()),
                              static_cast<unsigned long long>(st.gave_up.load()),
                              static_cast<unsigned long long>(st.unknown.load()));
    if (naive) line += "  half-done " + std::to_string(st.half_done.load());
    last = now;
    return line;
  });
  c->DrainPhase2();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double q) {
    if (latencies_ms.empty()) return 0.0;
    return latencies_ms[std::min(latencies_ms.size() - 1,
                                 static_cast<size_t>(q * latencies_ms.size()))];
  };
  std::printf("mode %s, %d clients, %.1f s: %llu trades committed, %.0f trades/s, "
              "p50 %.2f ms, p99 %.2f ms; business aborts %llu, gave up %llu, unknown %llu",
              mode.c_str(), clients, elapsed, static_cast<unsigned long long>(st.committed.load()),
              static_cast<double>(st.committed.load()) / elapsed, pct(0.5), pct(0.99),
              static_cast<unsigned long long>(st.business_aborts.load()),
              static_cast<unsigned long long>(st.gave_up.load()),
              static_cast<unsigned long long>(st.unknown.load()));
  if (naive) {
    std::printf(", half-done %llu", static_cast<unsigned long long>(st.half_done.load()));
  }
  std::printf("\n");
  return kExitOk;
}

int DemoAudit(const Common& common) {
  int rc = kExitOk;
  auto c = OpenForTool(common, &rc);
  if (!c) return rc;
  Result<Meta> meta = ReadMeta(*c);
  if (!meta.ok()) {
    std::fprintf(stderr, "seigo: %s\n", meta.status().ToString().c_str());
    return kExitFailed;
  }
  std::vector<std::string> violations;
  int64_t gold = 0, player_count = 0;
  std::map<int64_t, int64_t> qty;
  const ShardMap& map = c->shard_map();
  for (uint32_t s = 0; s < map.size(); ++s) {
    Result<QueryResult> p = c->QueryShard(s, "SELECT player_id, gold FROM players");
    Result<QueryResult> inv = c->QueryShard(s, "SELECT player_id, item_id, qty FROM inventory");
    if (!p.ok() || !inv.ok()) {
      const Status& e = !p.ok() ? p.status() : inv.status();
      std::fprintf(stderr, "seigo: shard %u: %s\n", s, e.ToString().c_str());
      return ExitCodeFor(e);
    }
    for (size_t r = 0; r < p->rows.size(); ++r) {
      int64_t id = *p->Int(r, 0), g = *p->Int(r, 1);
      gold += g;
      player_count++;
      if (g < 0) violations.push_back("player " + std::to_string(id) + " has gold " +
                                      std::to_string(g));
      if (map.ShardFor(id) != s) {
        violations.push_back("player " + std::to_string(id) + " is on shard " +
                             std::to_string(s) + ", not its shard " +
                             std::to_string(map.ShardFor(id)));
      }
    }
    for (size_t r = 0; r < inv->rows.size(); ++r) {
      int64_t id = *inv->Int(r, 0), it = *inv->Int(r, 1), q = *inv->Int(r, 2);
      qty[it] += q;
      if (q < 0) violations.push_back("player " + std::to_string(id) + " has " +
                                      std::to_string(q) + " of item " + std::to_string(it));
    }
  }
  const int64_t want_gold = meta->players * meta->gold_each;
  if (player_count != meta->players) {
    violations.push_back("players: " + std::to_string(player_count) + " rows, seeded " +
                         std::to_string(meta->players));
  }
  if (gold != want_gold) {
    violations.push_back("gold total " + std::to_string(gold) + ", seeded " +
                         std::to_string(want_gold) + " (" + (gold > want_gold ? "+" : "") +
                         std::to_string(gold - want_gold) + ")");
  }
  for (int64_t it = 1; it <= meta->items; ++it) {
    const int64_t want = meta->players * meta->qty_each;
    if (qty[it] != want) {
      violations.push_back("item " + std::to_string(it) + " total " + std::to_string(qty[it]) +
                           ", seeded " + std::to_string(want) + " (" +
                           (qty[it] > want ? "+" : "") + std::to_string(qty[it] - want) + ")");
    }
  }
  InDoubtReport d = c->InDoubt();
  for (const InDoubtTx& t : d.txs) {
    violations.push_back("seigo XID still prepared: gid " + t.gid);
  }
  for (const Status& e : d.errors) violations.push_back("cannot scan: " + e.ToString());
  std::printf("audit: %lld players, gold total %lld (seeded %lld), %lld item kinds\n",
              static_cast<long long>(player_count), static_cast<long long>(gold),
              static_cast<long long>(want_gold), static_cast<long long>(meta->items));
  for (const std::string& v : violations) std::printf("VIOLATION: %s\n", v.c_str());
  std::printf("audit: %s (%zu violation(s))\n", violations.empty() ? "PASS" : "FAIL",
              violations.size());
  return violations.empty() ? kExitOk : kExitFailed;
}

}  // namespace seigo::cli
