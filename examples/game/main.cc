// A game backend's three actions, written with seigo's library API (doc/library.md):
//   game setup                      guild treasuries (the players come from `seigo demo setup`)
//   game gacha PLAYER PULLS         pay 100 gold a pull, get PULLS random items (one statement)
//   game donate PLAYER GUILD GOLD   a player pays into a guild's treasury, on the guild's shard
//   game show PLAYER [GUILD]        the state, read in one read-only transaction
// Shards from $SEIGO_SHARDS. Exit codes: 0 done, 1 the action did not commit (the reason is
// printed: "not enough gold", ...), 2 usage, 3 cannot open the coordinator.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <seigo/coordinator.h>

namespace {

constexpr int64_t kPullPrice = 100;
constexpr int kItemKinds = 10;  // item ids 1..10, as `seigo demo setup` seeds them

// The guild treasury lives on the shard that owns the guild id.
seigo::Status Setup(seigo::Coordinator& c) {
  for (uint32_t s = 0; s < c.shard_map().size(); ++s) {
    auto r = c.QueryShard(s, "CREATE TABLE IF NOT EXISTS guild_treasury (guild_id BIGINT "
                             "UNSIGNED PRIMARY KEY, gold BIGINT NOT NULL) ENGINE=InnoDB");
    if (!r.ok()) return r.status();
  }
  return seigo::Status::OK();
}

void Report(const char* what, const seigo::TxResult& r) {
  if (r.committed()) {
    std::printf("%s: committed after %d attempt(s)\n", what, r.attempts);
    return;
  }
  std::printf("%s: %s: %s\n", what, seigo::TxStateName(r.state), r.status.message().c_str());
  for (const seigo::AttemptInfo& a : r.history) {
    std::printf("  attempt %d: %lld ms, %s\n", a.attempt, static_cast<long long>(a.duration_ms),
                a.status.ToString().c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fprintf(stderr, "usage: game setup | gacha PLAYER PULLS | donate PLAYER GUILD GOLD | "
                         "show PLAYER [GUILD]\n");
    return 2;
  }
  seigo::CoordinatorOptions options;
  const char* shards = std::getenv("SEIGO_SHARDS");
  options.shards = shards ? shards : "";
  options.log = [](std::string_view line) { std::fprintf(stderr, "[seigo] %.*s\n",
                                                         static_cast<int>(line.size()), line.data()); };
  auto coordinator = seigo::Coordinator::Open(options);
  if (!coordinator.ok()) {
    std::fprintf(stderr, "game: %s\n", coordinator.status().ToString().c_str());
    return 3;
  }
  seigo::Coordinator& c = **coordinator;
  seigo::RunOptions request;
  request.timeout_ms = 2'000;  // a game request's budget for the whole call

  if (args[0] == "setup" && args.size() == 1) {
    seigo::Status s = Setup(c);
    std::printf("setup: %s\n", s.ToString().c_str());
    return s.ok() ? 0 : 1;
  }
  if (args[0] == "gacha" && args.size() == 3) {
    const int64_t player = std::atoll(args[1].c_str());
    const int pulls = std::atoi(args[2].c_str());
    if (pulls < 1 || pulls > 100) return 2;
    // The draws are made once, outside the closure: a retried attempt grants the same items.
    std::mt19937_64 rng(std::random_device{}());
    std::vector<int64_t> items;
    for (int i = 0; i < pulls; ++i) items.push_back(static_cast<int64_t>(rng() % kItemKinds) + 1);
    seigo::TxResult r = c.Run([&](seigo::Tx& tx) -> seigo::Status {
      SEIGO_RETURN_IF_ERROR(tx.ExecExpect(player, 1,
          "UPDATE players SET gold = gold - ? WHERE player_id = ? AND gold >= ?",
          {kPullPrice * pulls, player, kPullPrice * pulls}, "not enough gold"));
      // A 10-pull is one multi-row upsert: the parameters are built at run time.
      std::string sql = "INSERT INTO inventory (player_id, item_id, qty) VALUES ";
      std::vector<seigo::Value> params;
      for (size_t i = 0; i < items.size(); ++i) {
        sql += i ? ",(?, ?, 1)" : "(?, ?, 1)";
        params.emplace_back(player);
        params.emplace_back(items[i]);
      }
      sql += " ON DUPLICATE KEY UPDATE qty = qty + 1";
      return tx.Exec(player, sql, params).status();
    }, request);
    Report("gacha", r);
    return r.committed() ? 0 : 1;
  }
  if (args[0] == "donate" && args.size() == 4) {
    const int64_t player = std::atoll(args[1].c_str());
    const uint64_t guild = std::strtoull(args[2].c_str(), nullptr, 10);
    const int64_t gold = std::atoll(args[3].c_str());
    seigo::TxResult r = c.Run([&](seigo::Tx& tx) -> seigo::Status {
      SEIGO_RETURN_IF_ERROR(tx.ExecExpect(player, 1,
          "UPDATE players SET gold = gold - ? WHERE player_id = ? AND gold >= ?",
          {gold, player, gold}, "not enough gold"));
      return tx.Exec(guild, "INSERT INTO guild_treasury (guild_id, gold) VALUES (?, ?) "
                            "ON DUPLICATE KEY UPDATE gold = gold + VALUES(gold)",
                     {guild, gold}).status();
    }, request);
    Report("donate", r);
    return r.committed() ? 0 : 1;
  }
  if (args[0] == "show" && (args.size() == 2 || args.size() == 3)) {
    const int64_t player = std::atoll(args[1].c_str());
    const std::optional<uint64_t> guild =
        args.size() == 3 ? std::optional<uint64_t>(std::strtoull(args[2].c_str(), nullptr, 10))
                         : std::nullopt;
    seigo::RunOptions read = request;
    read.read_only = true;  // no two-phase commit for a read
    std::optional<int64_t> gold, treasury;
    int64_t items = 0;
    seigo::TxResult r = c.Run([&](seigo::Tx& tx) -> seigo::Status {
      auto p = tx.Exec(player, "SELECT gold FROM players WHERE player_id = ? LOCK IN SHARE MODE",
                       {player});
      SEIGO_RETURN_IF_ERROR(p.status());
      if (p->rows.empty()) return seigo::Tx::Abort("no such player");
      auto g = p->Get<int64_t>(0, "gold");
      SEIGO_RETURN_IF_ERROR(g.status());
      gold = *g;
      auto inv = tx.Exec(player, "SELECT COALESCE(SUM(qty), 0) AS n FROM inventory WHERE "
                                 "player_id = ? LOCK IN SHARE MODE", {player});
      SEIGO_RETURN_IF_ERROR(inv.status());
      items = inv->Get<int64_t>(0, "n")->value_or(0);
      if (guild) {
        auto t = tx.Exec(*guild, "SELECT gold FROM guild_treasury WHERE guild_id = ? "
                                 "LOCK IN SHARE MODE", {*guild});
        SEIGO_RETURN_IF_ERROR(t.status());
        treasury = t->rows.empty() ? std::optional<int64_t>(0) : *t->Get<int64_t>(0, 0);
      }
      return seigo::Status::OK();
    }, read);
    if (!r.committed()) {
      Report("show", r);
      return 1;
    }
    std::printf("player %lld: gold %lld, items %lld", static_cast<long long>(player),
                static_cast<long long>(gold.value_or(0)), static_cast<long long>(items));
    if (guild) {
      std::printf(", guild %llu treasury %lld", static_cast<unsigned long long>(*guild),
                  static_cast<long long>(treasury.value_or(0)));
    }
    std::printf("\n");
    return 0;
  }
  std::fprintf(stderr, "game: bad arguments (run it without any for the usage)\n");
  return 2;
}
