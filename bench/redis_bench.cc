// The Redis benchmark (BENCHMARKS.md, "Redis"): what atomicity with Redis costs, as ratios
// against baselines measured in the same run, on the same servers, with the same clients.
//
//   seigo_redis_bench --shards URL,... --redis URL,... [--seconds S] [--clients C] [--json F]
//
// Cells (C clients each, default 32):
//   K1 raw-evalsha   EVALSHA of a guarded DECRBY (GET, check >= 0, DECRBY), raw hiredis
//   K2 seigo-incr    the same through seigo: a Redis-only Run with tx.kv().Incr(k, -1, 0, max)
//                    (one instance: one function call with its commit record)
//   RN raid-naive    an attack unprotected: the shard's part (stamina - 1, a raid_log row) as a
//                    local transaction, then a raw DECRBY of the boss's HP
//   RA raid-seigo    the same attack as one seigo transaction (bounded increment), 1000 bosses
//   RH raid-hot      RA with every attack on 1 boss
//   RM raid-hot-rmw  RH with a read-modify-write (GetInt, then Set) instead of Incr
// Ratios: K2/K1 (goal >= 0.5), RA/RN (>= 0.6), RH/RA (>= 0.8: escrow), RM/RA (comparison).
#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "redis/redis_participant.h"
#include "seigo/coordinator.h"

namespace {

[[noreturn]] void Die(const std::string& m) {
  std::fprintf(stderr, "seigo_redis_bench: %s\n", m.c_str());
  std::exit(1);
}

constexpr int64_t kPlayers = 10'000;
constexpr int64_t kBosses = 1'000;
constexpr int64_t kStartHp = int64_t{1} << 50;

std::string HpKey(int64_t b) { return "bench:boss:{" + std::to_string(b) + "}:hp"; }

const char* kGuardedDecr =
    "local v = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "if v - tonumber(ARGV[1]) < 0 then return 0 end "
    "redis.call('DECRBY', KEYS[1], ARGV[1]) return 1";

struct Raw {
  std::vector<redisContext*> by_instance;
  explicit Raw(const std::vector<seigo::redis::Url>& urls) {
    for (const auto& u : urls) {
      redisContext* c = redisConnect(u.host.c_str(), u.port);
      if (c == nullptr || c->err) Die("cannot connect to " + u.Redacted());
      by_instance.push_back(c);
    }
  }
  ~Raw() {
    for (redisContext* c : by_instance) redisFree(c);
  }
  bool Command(size_t i, const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> len;
    for (const auto& a : args) {
      argv.push_back(a.data());
      len.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(by_instance[i], static_cast<int>(argv.size()), argv.data(), len.data()));
    if (r == nullptr) Die("lost connection");
    const bool ok = r->type != REDIS_REPLY_ERROR;
    if (!ok) std::fprintf(stderr, "seigo_redis_bench: %s\n", r->str);
    freeReplyObject(r);
    return ok;
  }
};

struct Cell {
  double tps = 0, p50 = 0, p99 = 0;
  uint64_t failed = 0;
};

enum class Mode { kRawEvalsha, kSeigoIncr, kRaidNaive, kRaidSeigo, kRaidHot, kRaidHotRmw };
const char* Name(Mode m) {
  switch (m) {
    case Mode::kRawEvalsha: return "K1 raw-evalsha";
    case Mode::kSeigoIncr: return "K2 seigo-incr";
    case Mode::kRaidNaive: return "RN raid-naive";
    case Mode::kRaidSeigo: return "RA raid-seigo";
    case Mode::kRaidHot: return "RH raid-hot";
    case Mode::kRaidHotRmw: return "RM raid-hot-rmw";
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  std::string shards, redis_list, json;
  double seconds = 5;
  int clients = 32;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--shards") shards = next();
    else if (a == "--redis") redis_list = next();
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--clients") clients = std::atoi(next().c_str());
    else if (a == "--json") json = next();
    else Die("unknown argument " + a);
  }
  if (shards.empty() || redis_list.empty()) Die("--shards and --redis are required");
  if (clients < 1 || seconds <= 0) Die("--clients >= 1 and --seconds > 0");
  std::vector<seigo::redis::Url> urls;
  for (size_t p = 0; p <= redis_list.size();) {
    size_t q = redis_list.find(',', p);
    if (q == std::string::npos) q = redis_list.size();
    auto u = seigo::redis::Url::Parse(redis_list.substr(p, q - p));
    if (!u.ok()) Die(u.status().ToString());
    urls.push_back(*u);
    p = q + 1;
  }

  seigo::CoordinatorOptions o;
  o.shards = shards;
  o.redis = redis_list;
  o.max_connections_per_shard = 0;
  auto opened = seigo::Coordinator::Open(o);
  if (!opened.ok()) Die(opened.status().ToString());
  seigo::Coordinator& c = **opened;
  const size_t nshards = c.shard_map().size();

  // Which instance owns each boss (Tx::kv()'s routing).
  std::vector<size_t> owner(kBosses + 1);
  for (int64_t b = 1; b <= kBosses; ++b) owner[b] = c.RedisInstanceFor(HpKey(b));
  // Setup: players with plenty of stamina, an empty log, bosses with plenty of HP.
  for (uint32_t s = 0; s < nshards; ++s) {
    for (const char* sql : {"DROP TABLE IF EXISTS bench_raid_players",
                            "DROP TABLE IF EXISTS bench_raid_log",
                            "CREATE TABLE bench_raid_players (player_id BIGINT PRIMARY KEY, "
                            "stamina BIGINT NOT NULL) ENGINE=InnoDB",
                            "CREATE TABLE bench_raid_log (attack_id BIGINT PRIMARY KEY, "
                            "player_id BIGINT NOT NULL, boss_id BIGINT NOT NULL, damage BIGINT "
                            "NOT NULL) ENGINE=InnoDB"}) {
      auto r = c.QueryShard(s, sql);
      if (!r.ok()) Die(r.status().ToString());
    }
  }
  {
    std::map<uint32_t, std::string> rows;
    for (int64_t p = 1; p <= kPlayers; ++p) {
      std::string& r = rows[c.shard_map().ShardFor(p)];
      r += (r.empty() ? "(" : ",(") + std::to_string(p) + ",1000000000000)";
    }
    for (auto& [s, r] : rows) {
      auto q = c.QueryShard(s, "INSERT INTO bench_raid_players VALUES " + r);
      if (!q.ok()) Die(q.status().ToString());
    }
  }
  for (int64_t b = 1; b <= kBosses; ++b) {
    auto r = c.RedisCommand(owner[b], {"SET", HpKey(b), std::to_string(kStartHp)});
    if (!r.ok()) Die(r.status().ToString());
  }
  std::string sha;
  for (size_t i = 0; i < urls.size(); ++i) {
    auto r = c.RedisCommand(i, {"SCRIPT", "LOAD", kGuardedDecr});
    if (!r.ok() || !*r) Die("SCRIPT LOAD: " + r.status().ToString());
    sha = **r;
  }

  std::atomic<int64_t> next_attack{1};
  auto run_cell = [&](Mode mode) {
    const auto end = std::chrono::steady_clock::now() +
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         std::chrono::duration<double>(seconds));
    std::atomic<uint64_t> done{0}, failed{0};
    std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
    std::vector<std::thread> ts;
    for (int t = 0; t < clients; ++t) {
      ts.emplace_back([&, t] {
        Raw raw(urls);
        std::mt19937_64 rng(0x7ed15 + static_cast<uint64_t>(t) * 7919);
        std::uniform_int_distribution<int64_t> player(1, kPlayers), boss(1, kBosses);
        const bool hot = mode == Mode::kRaidHot || mode == Mode::kRaidHotRmw;
        while (std::chrono::steady_clock::now() < end) {
          const int64_t p = player(rng), b = hot ? 1 : boss(rng), d = 1 + (p % 100);
          const int64_t attack = next_attack++;
          const auto t0 = std::chrono::steady_clock::now();
          bool ok = true;
          auto shard_part = [&](seigo::Tx& tx) -> seigo::Status {
            SEIGO_RETURN_IF_ERROR(tx.ExecExpect(
                p, 1, "UPDATE bench_raid_players SET stamina = stamina - 1 WHERE player_id = ? "
                "AND stamina >= 1", {p}, "out of stamina"));
            return tx.Exec(p, "INSERT INTO bench_raid_log VALUES (?, ?, ?, ?)", {attack, p, b, d})
                .status();
          };
          switch (mode) {
            case Mode::kRawEvalsha:
              ok = raw.Command(owner[b], {"EVALSHA", sha, "1", HpKey(b), "1"});
              break;
            case Mode::kSeigoIncr:
              ok = c.Run([&](seigo::Tx& tx) {
                      return tx.kv().Incr(HpKey(b), -1, 0, INT64_MAX, "defeated");
                    }).committed();
              break;
            case Mode::kRaidNaive:
              ok = c.Run(shard_part).committed() &&
                   raw.Command(owner[b], {"DECRBY", HpKey(b), std::to_string(d)});
              break;
            case Mode::kRaidSeigo:
            case Mode::kRaidHot:
              ok = c.Run([&](seigo::Tx& tx) -> seigo::Status {
                      SEIGO_RETURN_IF_ERROR(shard_part(tx));
                      return tx.kv().Incr(HpKey(b), -d, 0, INT64_MAX, "defeated");
                    }).committed();
              break;
            case Mode::kRaidHotRmw:
              ok = c.Run([&](seigo::Tx& tx) -> seigo::Status {
                      SEIGO_RETURN_IF_ERROR(shard_part(tx));
                      SEIGO_ASSIGN_OR_RETURN(std::optional<int64_t> hp, tx.kv().GetInt(HpKey(b)));
                      if (hp.value_or(0) < d) return seigo::Tx::Abort("defeated");
                      return tx.kv().Set(HpKey(b), std::to_string(*hp - d));
                    }).committed();
              break;
          }
          if (!ok) {
            failed++;
            continue;
          }
          done++;
          lat[static_cast<size_t>(t)].push_back(
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                  .count());
        }
      });
    }
    for (auto& t : ts) t.join();
    std::vector<double> all;
    for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end());
    Cell cell;
    cell.tps = static_cast<double>(done.load()) / seconds;
    cell.failed = failed.load();
    if (!all.empty()) {
      cell.p50 = all[all.size() / 2];
      cell.p99 = all[std::min(all.size() - 1, all.size() * 99 / 100)];
    }
    return cell;
  };

  std::printf("%-18s %8s %10s %9s %9s %8s\n", "mode", "clients", "ops/s", "p50 ms", "p99 ms",
              "failed");
  std::map<Mode, Cell> cells;
  for (Mode m : {Mode::kRawEvalsha, Mode::kSeigoIncr, Mode::kRaidNaive, Mode::kRaidSeigo,
                 Mode::kRaidHot, Mode::kRaidHotRmw}) {
    Cell cell = run_cell(m);
    cells[m] = cell;
    std::printf("%-18s %8d %10.0f %9.2f %9.2f %8llu\n", Name(m), clients, cell.tps, cell.p50,
                cell.p99, static_cast<unsigned long long>(cell.failed));
    std::fflush(stdout);
  }
  auto ratio = [&](Mode a, Mode b) { return cells[b].tps > 0 ? cells[a].tps / cells[b].tps : 0; };
  const double k = ratio(Mode::kSeigoIncr, Mode::kRawEvalsha);
  const double raid = ratio(Mode::kRaidSeigo, Mode::kRaidNaive);
  const double hot = ratio(Mode::kRaidHot, Mode::kRaidSeigo);
  const double rmw = ratio(Mode::kRaidHotRmw, Mode::kRaidSeigo);
  std::printf("K2/K1 %.2f (goal >= 0.5: Redis-only bounded decrement, seigo / raw EVALSHA)\n", k);
  std::printf("RA/RN %.2f (goal >= 0.6: raid attack, seigo / naive)\n", raid);
  std::printf("RH/RA %.2f (goal >= 0.8: 1 hot boss / 1000 bosses, bounded increments)\n", hot);
  std::printf("RM/RA %.2f (comparison: 1 hot boss with read-modify-write / 1000 bosses)\n", rmw);
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f == nullptr) Die("cannot write " + json);
    std::fprintf(f, "{\n");
    for (const auto& [m, cell] : cells) {
      std::fprintf(f, "  \"%s\": {\"ops_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f},\n",
                   Name(m), cell.tps, cell.p50, cell.p99);
    }
    std::fprintf(f, "  \"K2_over_K1\": %.3f, \"RA_over_RN\": %.3f, \"RH_over_RA\": %.3f, "
                 "\"RM_over_RA\": %.3f, \"clients\": %d, \"seconds\": %.1f\n}\n",
                 k, raid, hot, rmw, clients, seconds);
    std::fclose(f);
  }
  return 0;
}
