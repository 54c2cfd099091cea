// `seigo demo raid`: players attack raid bosses. An attack spends one stamina on the player's
// shard, writes one raid_log row there and lowers the boss's HP in Redis by the damage — in
// seigo mode one atomic transaction (the HP by a bounded increment, so a thousand attackers of
// one boss do not conflict), in naive mode two separate writes. The audit checks, with
// nothing but SQL and Redis reads, that every HP point lost is in a raid_log row and every
// stamina point spent too (doc/cli.md, "The raid demo").
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "tools/cli.h"

namespace seigo::cli {
namespace {

constexpr int64_t kStaminaEach = 1000;

std::string HpKey(int64_t boss) { return "boss:{" + std::to_string(boss) + "}:hp"; }

struct RaidMeta {
  int64_t players = 0, bosses = 0, start_hp = 0;
};

Result<RaidMeta> ReadRaidMeta(Coordinator& c) {
  Result<QueryResult> r = c.QueryShard(0, "SELECT players, bosses, start_hp FROM raid_meta");
  if (!r.ok()) return r.status().Annotate("reading raid_meta (did you run `seigo demo raid setup`?)");
  if (r->rows.empty()) return Status::NotFound("raid_meta is empty: run `seigo demo raid setup`");
  return RaidMeta{*r->Int(0, 0), *r->Int(0, 1), *r->Int(0, 2)};
}

// Runs a Redis command on the instance that owns `key`.
Result<std::optional<std::string>> OnOwner(Coordinator& c, const std::string& key,
                                           std::vector<std::string> cmd) {
  return c.RedisCommand(c.RedisInstanceFor(key), cmd);
}

bool NeedRedis(Coordinator& c) {
  if (c.redis_instances() > 0) return true;
  std::fprintf(stderr, "seigo: the raid demo needs Redis: pass --redis URL,... or set "
                       "SEIGO_REDIS\n");
  return false;
}

// Opens a coordinator with Redis and reads raid_meta; on failure prints why, sets *rc and
// returns nullptr.
std::unique_ptr<Coordinator> OpenRaid(const Common& common, bool background, RaidMeta* meta,
                                      int* rc) {
  auto c = OpenForTool(common, rc, background);
  if (!c) return nullptr;
  if (!NeedRedis(*c)) {
    *rc = kExitUsage;
    return nullptr;
  }
  Result<RaidMeta> m = ReadRaidMeta(*c);
  if (!m.ok()) {
    std::fprintf(stderr, "seigo: %s\n", m.status().ToString().c_str());
    *rc = kExitFailed;
    return nullptr;
  }
  *meta = *m;
  return c;
}

}  // namespace

int RaidSetup(const Common& common, int64_t players, int64_t bosses, int64_t hp) {
  int rc = kExitOk;
  auto c = OpenForTool(common, &rc);
  if (!c) return rc;
  if (!NeedRedis(*c)) return kExitUsage;
  // What a crashed earlier run left prepared must be finished first (it holds locks).
  if (int r = FinishInDoubtBeforeSetup(*c); r != kExitOk) return r;
  for (uint32_t s = 0; s < c->shard_map().size(); ++s) {
    for (const char* sql :
         {"DROP TABLE IF EXISTS raid_players", "DROP TABLE IF EXISTS raid_log",
          "DROP TABLE IF EXISTS raid_meta",
          "CREATE TABLE raid_players (player_id BIGINT PRIMARY KEY, stamina BIGINT NOT NULL) "
          "ENGINE=InnoDB",
          "CREATE TABLE raid_log (attack_id BIGINT PRIMARY KEY, player_id BIGINT NOT NULL, "
          "boss_id BIGINT NOT NULL, damage BIGINT NOT NULL, KEY (player_id), KEY (boss_id)) "
          "ENGINE=InnoDB"}) {
      Result<QueryResult> r = c->QueryShard(s, sql);
      if (!r.ok()) {
        std::fprintf(stderr, "seigo: shard %u: %s\n", s, r.status().ToString().c_str());
        return ExitCodeFor(r.status());
      }
    }
  }
  Result<QueryResult> m = c->QueryShard(
      0, "CREATE TABLE raid_meta (players BIGINT, bosses BIGINT, start_hp BIGINT) ENGINE=InnoDB");
  if (m.ok()) {
    m = c->QueryShard(0, "INSERT INTO raid_meta VALUES (?, ?, ?)", {players, bosses, hp});
  }
  if (!m.ok()) {
    std::fprintf(stderr, "seigo: %s\n", m.status().ToString().c_str());
    return ExitCodeFor(m.status());
  }
  // Players in batches, each on its shard.
  std::map<uint32_t, std::vector<int64_t>> by_shard;
  for (int64_t p = 1; p <= players; ++p) by_shard[c->shard_map().ShardFor(p)].push_back(p);
  for (auto& [shard, ids] : by_shard) {
    for (size_t i = 0; i < ids.size(); i += 500) {
      std::string sql = "INSERT INTO raid_players VALUES ";
      std::vector<Value> params;
      for (size_t k = i; k < std::min(ids.size(), i + 500); ++k) {
        sql += std::string(k == i ? "" : ",") + "(?, ?)";
        params.push_back(ids[k]);
        params.push_back(kStaminaEach);
      }
      TxResult r = c->Run([&](Tx& tx) { return tx.ExecOn(shard, sql, params).status(); });
      if (!r.committed()) {
        std::fprintf(stderr, "seigo: seeding players: %s\n", r.status.ToString().c_str());
        return ExitCodeFor(r.status);
      }
    }
  }
  for (int64_t b = 1; b <= bosses; ++b) {
    Result<std::optional<std::string>> r = OnOwner(*c, HpKey(b), {"SET", HpKey(b), std::to_string(hp)});
    if (!r.ok()) {
      std::fprintf(stderr, "seigo: %s\n", r.status().ToString().c_str());
      return ExitCodeFor(r.status());
    }
  }
  std::printf("raid setup: %lld players with %lld stamina on %zu shards, %lld bosses with %lld "
              "HP on %zu Redis instances\n",
              static_cast<long long>(players), static_cast<long long>(kStaminaEach),
              c->shard_map().size(), static_cast<long long>(bosses),
              static_cast<long long>(hp), c->redis_instances());
  return kExitOk;
}

int RaidRun(const Common& common, int clients, double seconds, const std::string& mode) {
  int rc = kExitOk;
  const bool naive = mode == "naive";
  RaidMeta m;
  auto c = OpenRaid(common, /*background=*/!naive, &m, &rc);
  if (!c) return rc;
  const RaidMeta* meta = &m;
  // Which instance owns each boss (computed once, outside any transaction).
  std::vector<size_t> owner(static_cast<size_t>(meta->bosses) + 1, 0);
  for (int64_t b = 1; b <= meta->bosses; ++b) owner[b] = c->RedisInstanceFor(HpKey(b));
  std::atomic<uint64_t> attacks{0}, refused{0}, gave_up{0}, unknown{0}, half{0};
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds));
  auto client = [&](int id) {
    std::mt19937_64 rng(std::random_device{}() ^ (static_cast<uint64_t>(id) << 40));
    std::uniform_int_distribution<int64_t> player(1, meta->players), boss(1, meta->bosses),
        damage(1, 100);
    std::uniform_int_distribution<int64_t> attack_id(1, INT64_MAX);
    while (std::chrono::steady_clock::now() < end) {
      const int64_t p = player(rng), b = boss(rng), d = damage(rng), a = attack_id(rng);
      if (!naive) {
        for (;;) {
          TxResult r = c->Run([&](Tx& tx) -> Status {
            SEIGO_RETURN_IF_ERROR(tx.ExecExpect(
                p, 1, "UPDATE raid_players SET stamina = stamina - 1 WHERE player_id = ? AND "
                "stamina >= 1", {p}, "out of stamina"));
            SEIGO_RETURN_IF_ERROR(tx.Exec(p, "INSERT INTO raid_log VALUES (?, ?, ?, ?)",
                                          {a, p, b, d}).status());
            return tx.kv().Incr(HpKey(b), -d, 0, INT64_MAX, "the boss is already defeated");
          });
          if (r.committed()) attacks++;
          else if (r.state == TxState::kAborted) {
            if (refused++ < 5) {
              std::fprintf(stderr, "seigo: attack refused: %s\n", r.status.ToString().c_str());
            }
          }
          else if (r.state == TxState::kOutcomeUnknown) unknown++;
          else {
            gave_up++;
            if (std::chrono::steady_clock::now() < end) continue;  // nothing of it committed
          }
          break;
        }
        continue;
      }
      // Naive: the shard's write, then the HP, separately.
      TxResult r = c->Run([&](Tx& tx) -> Status {
        SEIGO_RETURN_IF_ERROR(tx.ExecExpect(
            p, 1, "UPDATE raid_players SET stamina = stamina - 1 WHERE player_id = ? AND "
            "stamina >= 1", {p}, "out of stamina"));
        return tx.Exec(p, "INSERT INTO raid_log VALUES (?, ?, ?, ?)", {a, p, b, d}).status();
      });
      if (r.state == TxState::kAborted) {
        refused++;
        continue;
      }
      if (!r.committed()) {
        (r.state == TxState::kGaveUp ? gave_up : unknown)++;
        continue;  // a lost reply may have committed it: nothing undoes that
      }
      Result<std::optional<std::string>> hp =
          c->RedisCommand(owner[b], {"DECRBY", HpKey(b), std::to_string(d)});
      if (hp.ok()) attacks++;
      else half++;  // stamina spent and logged, the boss's HP never dropped
    }
  };
  RunClients(clients, start, end, client, [&](double el) {
    return Format("[%5.1fs] raid %s: %llu attacks  refused %llu  gave-up %llu  unknown %llu  "
                  "half-done %llu", el, mode.c_str(),
                  static_cast<unsigned long long>(attacks.load()),
                  static_cast<unsigned long long>(refused.load()),
                  static_cast<unsigned long long>(gave_up.load()),
                  static_cast<unsigned long long>(unknown.load()),
                  static_cast<unsigned long long>(half.load()));
  });
  c->DrainPhase2();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("raid %s, %d clients, %.1f s: %llu attacks committed (%.0f/s); refused %llu, gave "
              "up %llu, unknown %llu, half-done %llu\n", mode.c_str(), clients, elapsed,
              static_cast<unsigned long long>(attacks.load()), attacks.load() / elapsed,
              static_cast<unsigned long long>(refused.load()),
              static_cast<unsigned long long>(gave_up.load()),
              static_cast<unsigned long long>(unknown.load()),
              static_cast<unsigned long long>(half.load()));
  return kExitOk;
}

int RaidAudit(const Common& common) {
  int rc = kExitOk;
  RaidMeta m;
  auto c = OpenRaid(common, /*background=*/false, &m, &rc);
  if (!c) return rc;
  const RaidMeta* meta = &m;
  // First finish whatever is in doubt (the audit is about what committed): a transaction
  // left prepared by a crash is finished once its deadline has passed.
  ResolveReport rr = c->Recover();
  for (int i = 0; i < 60 && !rr.pending.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    rr = c->Recover();
  }
  if (!rr.pending.empty()) {
    std::fprintf(stderr, "seigo: %zu transactions are still in doubt after 30 s (`seigo "
                 "status`); audit again later\n", rr.pending.size());
    return kExitInDoubt;
  }
  uint64_t violations = 0;
  auto bad = [&](const std::string& what) {
    if (violations < 20) std::printf("VIOLATION: %s\n", what.c_str());
    violations++;
  };
  std::map<int64_t, int64_t> damage_by_boss;
  int64_t log_rows = 0, players_seen = 0;
  for (uint32_t s = 0; s < c->shard_map().size(); ++s) {
    Result<QueryResult> d = c->QueryShard(s, "SELECT boss_id, SUM(damage), COUNT(*) FROM raid_log GROUP BY boss_id");
    Result<QueryResult> p = c->QueryShard(
        s, "SELECT p.player_id, p.stamina, (SELECT COUNT(*) FROM raid_log l WHERE l.player_id = "
           "p.player_id) FROM raid_players p");
    if (!d.ok() || !p.ok()) {
      const Status& e = d.ok() ? p.status() : d.status();
      std::fprintf(stderr, "seigo: shard %u: %s\n", s, e.ToString().c_str());
      return ExitCodeFor(e);
    }
    for (size_t r = 0; r < d->rows.size(); ++r) {
      damage_by_boss[*d->Int(r, 0)] += *d->Int(r, 1);
      log_rows += *d->Int(r, 2);
    }
    for (size_t r = 0; r < p->rows.size(); ++r) {
      players_seen++;
      const int64_t id = *p->Int(r, 0), stamina = *p->Int(r, 1), rows = *p->Int(r, 2);
      if (stamina < 0) bad("player " + std::to_string(id) + " has stamina " + std::to_string(stamina));
      if (kStaminaEach - stamina != rows) {
        bad("player " + std::to_string(id) + " spent " + std::to_string(kStaminaEach - stamina) +
            " stamina but has " + std::to_string(rows) + " raid_log rows");
      }
    }
  }
  if (players_seen != meta->players) {
    bad(std::to_string(players_seen) + " players found, " + std::to_string(meta->players) + " set up");
  }
  int64_t hp_lost = 0;
  for (int64_t b = 1; b <= meta->bosses; ++b) {
    Result<std::optional<std::string>> hp = OnOwner(*c, HpKey(b), {"GET", HpKey(b)});
    if (!hp.ok()) {
      std::fprintf(stderr, "seigo: %s\n", hp.status().ToString().c_str());
      return ExitCodeFor(hp.status());
    }
    const int64_t now = hp->has_value() ? std::stoll(**hp) : 0;
    if (now < 0) bad("boss " + std::to_string(b) + " has HP " + std::to_string(now));
    const int64_t lost = meta->start_hp - now;
    hp_lost += lost;
    if (lost != damage_by_boss[b]) {
      bad("boss " + std::to_string(b) + " lost " + std::to_string(lost) + " HP, but raid_log "
          "records " + std::to_string(damage_by_boss[b]) + " damage");
    }
  }
  // Nothing of seigo's may be left behind on Redis: intents, locks, reservations.
  for (size_t i = 0; i < c->redis_instances(); ++i) {
    // This deployment's intents, and the locks and reservations all deployments share.
    for (const char* what : {"prepared", "lock", "rlock", "esclo", "eschi"}) {
      const bool zset = std::string(what) == "prepared";
      const std::string key = zset ? "seigo:" + c->deployment() + ":" + what
                                   : std::string("seigo:") + what;
      Result<std::optional<std::string>> n = c->RedisCommand(i, {zset ? "ZCARD" : "HLEN", key});
      if (!n.ok()) {
        std::fprintf(stderr, "seigo: %s\n", n.status().ToString().c_str());
        return ExitCodeFor(n.status());
      }
      if (n->value_or("0") != "0") {
        bad("redis instance " + std::to_string(i) + " still has " + **n + " " + what +
            " entries after recovery");
      }
    }
  }
  std::printf("raid audit: %lld players, %lld attacks logged, %lld HP lost over %lld bosses; "
              "%zu still in doubt; %llu violation(s)\n",
              static_cast<long long>(players_seen), static_cast<long long>(log_rows),
              static_cast<long long>(hp_lost), static_cast<long long>(meta->bosses),
              rr.pending.size(), static_cast<unsigned long long>(violations));
  return violations == 0 ? kExitOk : kExitFailed;
}

}  // namespace seigo::cli
