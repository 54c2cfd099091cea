// `seigo demo gacha`: a gacha pull charges 100 gold and inserts one grant on the player's shard
// and publishes one `gacha.granted` event; a separate collection service (`seigo demo gacha
// consume`) applies each event to gacha_collection and records it in gacha_applied. In seigo
// mode the pull and its event are one transaction (the outbox) and the consumer applies each
// event exactly once (the inbox); in naive mode the pull commits, then publishes, and the
// consumer auto-acks and writes with separate statements. The audit checks, with SQL and one
// queue depth, that gold, grants, events and the collection agree (doc/cli.md, "The gacha
// demo").
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "amqp/amqp_connection.h"
#include "seigo/consumer.h"
#include "tools/cli.h"

namespace seigo::cli {
namespace {

constexpr int64_t kPrice = 100;
constexpr int kItems = 20;
const char* const kExchange = "gacha";
const char* const kRoutingKey = "gacha.granted";
const char* const kQueue = "gacha.collection";

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

bool NeedAmqp(const Common& c) {
  if (!c.amqp.empty()) return true;
  std::fprintf(stderr, "seigo: the gacha demo needs a broker: pass --amqp URL or set SEIGO_AMQP\n");
  return false;
}

Result<amqp::AmqpUrl> Url(const Common& c) { return amqp::AmqpUrl::Parse(c.amqp); }

// The coordinator of `run` and `consume`: in naive mode without the broker (no relay: naive
// publishes itself and consumes with auto-ack); in seigo mode with it, so that its relay also
// polls the outboxes and publishes what a killed application left there.
std::unique_ptr<Coordinator> OpenForMode(const Common& common, bool naive, int* rc) {
  Common opened = common;
  if (naive) opened.amqp.clear();
  return OpenForTool(opened, rc, /*background=*/true);
}

int Fail(const Status& s) {
  std::fprintf(stderr, "seigo: %s\n", s.ToString().c_str());
  return ExitCodeFor(s);
}

// The event's body: "<grant_id> <player_id> <item_id>".
std::string Body(int64_t grant, int64_t player, int64_t item) {
  return std::to_string(grant) + " " + std::to_string(player) + " " + std::to_string(item);
}
bool ParseBody(const std::string& b, int64_t* grant, int64_t* player, int64_t* item) {
  long long g = 0, p = 0, i = 0;
  char extra = 0;
  if (std::sscanf(b.c_str(), "%lld %lld %lld%c", &g, &p, &i, &extra) != 3) return false;
  *grant = g;
  *player = p;
  *item = i;
  return p > 0 && g > 0;
}

Result<std::pair<int64_t, int64_t>> ReadMeta(Coordinator& c) {
  Result<QueryResult> r = c.QueryShard(0, "SELECT players, start_gold FROM gacha_meta");
  if (!r.ok()) return r.status().Annotate("reading gacha_meta (run `seigo demo gacha setup`)");
  if (r->rows.empty()) return Status::NotFound("gacha_meta is empty: run `seigo demo gacha setup`");
  return std::make_pair(*r->Int(0, 0), *r->Int(0, 1));
}

}  // namespace

int GachaSetup(const Common& common, int64_t players, int64_t gold) {
  if (!NeedAmqp(common)) return kExitUsage;
  int rc = kExitOk;
  auto c = OpenForTool(common, &rc);
  if (!c) return rc;
  if (int r = FinishInDoubtBeforeSetup(*c); r != kExitOk) return r;
  for (uint32_t s = 0; s < c->shard_map().size(); ++s) {
    for (const char* sql :
         {"DROP TABLE IF EXISTS gacha_players", "DROP TABLE IF EXISTS gacha_grants",
          "DROP TABLE IF EXISTS gacha_collection", "DROP TABLE IF EXISTS gacha_applied",
          "DROP TABLE IF EXISTS gacha_meta",
          "CREATE TABLE gacha_players (player_id BIGINT PRIMARY KEY, gold BIGINT NOT NULL) "
          "ENGINE=InnoDB",
          "CREATE TABLE gacha_grants (grant_id BIGINT PRIMARY KEY, player_id BIGINT NOT NULL, "
          "item_id BIGINT NOT NULL, KEY (player_id)) ENGINE=InnoDB",
          "CREATE TABLE gacha_collection (player_id BIGINT NOT NULL, item_id BIGINT NOT NULL, "
          "count BIGINT NOT NULL, PRIMARY KEY (player_id, item_id)) ENGINE=InnoDB",
          "CREATE TABLE gacha_applied (message_id VARBINARY(128) PRIMARY KEY, grant_id BIGINT "
          "NOT NULL, KEY (grant_id)) ENGINE=InnoDB",
          // A fresh run: no old messages in the outbox, no old inbox rows.
          "DELETE FROM seigo_outbox WHERE exchange = 'gacha'",
          "DELETE FROM seigo_outbox_dead WHERE exchange = 'gacha'",
          "DELETE FROM seigo_inbox WHERE queue = 'gacha.collection'"}) {
      Result<QueryResult> r = c->QueryShard(s, sql);
      if (!r.ok()) return Fail(r.status().Annotate("shard " + std::to_string(s)));
    }
  }
  Result<QueryResult> m = c->QueryShard(
      0, "CREATE TABLE gacha_meta (players BIGINT, start_gold BIGINT) ENGINE=InnoDB");
  if (m.ok()) m = c->QueryShard(0, "INSERT INTO gacha_meta VALUES (?, ?)", {players, gold});
  if (!m.ok()) return Fail(m.status());
  std::vector<std::vector<int64_t>> by_shard(c->shard_map().size());
  for (int64_t p = 1; p <= players; ++p) by_shard[c->shard_map().ShardFor(p)].push_back(p);
  for (uint32_t shard = 0; shard < by_shard.size(); ++shard) {
    const std::vector<int64_t>& ids = by_shard[shard];
    for (size_t i = 0; i < ids.size(); i += 500) {
      std::string sql = "INSERT INTO gacha_players VALUES ";
      std::vector<Value> params;
      for (size_t k = i; k < std::min(ids.size(), i + 500); ++k) {
        sql += std::string(k == i ? "" : ",") + "(?, ?)";
        params.push_back(ids[k]);
        params.push_back(gold);
      }
      TxResult r = c->Run([&](Tx& tx) { return tx.ExecOn(shard, sql, params).status(); });
      if (!r.committed()) return Fail(r.status.Annotate("seeding players"));
    }
  }
  // The topology: a durable topic exchange, a quorum queue bound to it, its dead-letter queue.
  Result<amqp::AmqpUrl> url = Url(common);
  if (!url.ok()) return Fail(url.status());
  amqp::Connection conn(*url, 5'000);
  Status s = conn.DeclareExchange(kExchange, "topic");
  if (s.ok()) s = conn.DeclareQueue(kQueue, /*quorum=*/true, std::string(kQueue) + ".dead");
  if (s.ok()) s = conn.BindQueue(kQueue, kExchange, kRoutingKey);
  if (s.ok()) s = conn.PurgeQueue(kQueue);
  if (s.ok()) s = conn.PurgeQueue(std::string(kQueue) + ".dead");
  if (!s.ok()) return Fail(s);
  std::printf("gacha setup: %lld players with %lld gold on %zu shards; exchange '%s' -> queue "
              "'%s' (quorum, dead letters to '%s.dead') on %s\n",
              static_cast<long long>(players), static_cast<long long>(gold),
              c->shard_map().size(), kExchange, kQueue, kQueue, url->Redacted().c_str());
  return kExitOk;
}

int GachaRun(const Common& common, int clients, double seconds, const std::string& mode) {
  if (!NeedAmqp(common)) return kExitUsage;
  const bool naive = mode == "naive";
  int rc = kExitOk;
  auto c = OpenForMode(common, naive, &rc);
  if (!c) return rc;
  Result<std::pair<int64_t, int64_t>> meta = ReadMeta(*c);
  if (!meta.ok()) return Fail(meta.status());
  const int64_t players = meta->first;
  Result<amqp::AmqpUrl> url = Url(common);
  if (!url.ok()) return Fail(url.status());
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  std::atomic<uint64_t> pulls{0}, broke{0}, gave_up{0}, unknown{0}, lost{0};
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds));
  auto client = [&](int id) {
    std::mt19937_64 rng(std::random_device{}() ^ (static_cast<uint64_t>(id) << 40));
    std::uniform_int_distribution<int64_t> player(1, players), item(1, kItems);
    std::uniform_int_distribution<int64_t> grant_id(1, INT64_MAX);
    amqp::Connection pub(*url, 5'000);  // naive mode only
    while (std::chrono::steady_clock::now() < end && !g_stop) {
      const int64_t p = player(rng), g = grant_id(rng), it = item(rng);
      TxResult r = c->Run([&](Tx& tx) -> Status {
        SEIGO_RETURN_IF_ERROR(tx.ExecExpect(
            p, 1, "UPDATE gacha_players SET gold = gold - ? WHERE player_id = ? AND gold >= ?",
            {kPrice, p, kPrice}, "not enough gold"));
        SEIGO_RETURN_IF_ERROR(tx.ExecExpect(p, 1, "INSERT INTO gacha_grants VALUES (?, ?, ?)",
                                            {g, p, it}));
        if (naive) return Status::OK();
        Message m;
        m.exchange = kExchange;
        m.routing_key = kRoutingKey;
        m.body = Body(g, p, it);
        m.content_type = "text/plain";
        return tx.Publish(std::move(m)).status();
      });
      if (r.state == TxState::kAborted) {
        broke++;
        continue;
      }
      if (r.state == TxState::kOutcomeUnknown) {
        unknown++;
        continue;
      }
      if (!r.committed()) {
        gave_up++;
        continue;
      }
      pulls++;
      if (naive) {
        // Commit, then publish: a crash or a broker outage here loses the event for good.
        char id[32];
        std::snprintf(id, sizeof id, "naive-%016llx", static_cast<unsigned long long>(rng()));
        if (!pub.PublishUnconfirmed(Message{kExchange, kRoutingKey, Body(g, p, it), "", "", {}},
                                    id).ok()) {
          lost++;
        }
      }
    }
  };
  RunClients(clients, start, end, client, [&](double el) {
    return Format("[%5.1fs] gacha %s: %llu pulls  broke %llu  gave-up %llu  unknown %llu  "
                  "publish-failed %llu", el, mode.c_str(),
                  static_cast<unsigned long long>(pulls.load()),
                  static_cast<unsigned long long>(broke.load()),
                  static_cast<unsigned long long>(gave_up.load()),
                  static_cast<unsigned long long>(unknown.load()),
                  static_cast<unsigned long long>(lost.load()));
  }, &g_stop);
  c->DrainRelay();
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("gacha %s, %d clients, %.1f s: %llu pulls committed (%.0f/s); not enough gold %llu, "
              "gave up %llu, unknown %llu, events that failed to publish %llu\n",
              mode.c_str(), clients, el, static_cast<unsigned long long>(pulls.load()),
              pulls.load() / el, static_cast<unsigned long long>(broke.load()),
              static_cast<unsigned long long>(gave_up.load()),
              static_cast<unsigned long long>(unknown.load()),
              static_cast<unsigned long long>(lost.load()));
  return kExitOk;
}

namespace {
Status Apply(Tx& tx, const Delivery& d, int64_t grant, int64_t player, int64_t item) {
  SEIGO_RETURN_IF_ERROR(tx.ExecExpect(player, 1, "INSERT INTO gacha_applied VALUES (?, ?)",
                                      {Value::Bytes(d.message_id), grant}));
  return tx.Exec(player, "INSERT INTO gacha_collection VALUES (?, ?, 1) ON DUPLICATE KEY UPDATE "
                         "count = count + 1", {player, item}).status();
}
}  // namespace

int GachaConsume(const Common& common, const std::string& mode, double idle_exit_s,
                 int prefetch) {
  if (!NeedAmqp(common)) return kExitUsage;
  const bool naive = mode == "naive";
  int rc = kExitOk;
  auto c = OpenForMode(common, naive, &rc);
  if (!c) return rc;
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  std::atomic<int64_t> last_ms{0};
  auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  last_ms = now_ms();
  // Idle: no event for idle_exit_s and (seigo mode) nothing left in any outbox.
  auto idle = [&] {
    if (idle_exit_s <= 0 || now_ms() - last_ms.load() <= static_cast<int64_t>(idle_exit_s * 1000)) {
      return false;
    }
    if (naive) return true;
    for (const Result<OutboxStats>& st : c->OutboxStatus()) {
      if (!st.ok() || st->pending > 0) {
        last_ms = now_ms() - static_cast<int64_t>(idle_exit_s * 1000) + 1'000;  // look again in 1 s
        return false;
      }
    }
    return true;
  };
  uint64_t applied = 0, duplicates = 0, dead = 0, malformed = 0;
  if (naive) {
    // Auto-ack, separate statements: a crash loses what was delivered and not yet written.
    Result<amqp::AmqpUrl> url = Url(common);
    if (!url.ok()) return Fail(url.status());
    amqp::Connection conn(*url, 5'000);
    while (!g_stop && !idle()) {
      if (!conn.connected()) {
        Status s = conn.DeclareQueue(kQueue, true, std::string(kQueue) + ".dead");
        if (s.ok()) s = conn.Consume(kQueue, prefetch, /*no_ack=*/true);
        if (s.Is(Code::kInvalidArgument)) return Fail(s);
        if (!s.ok()) {
          conn.Close();
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
          continue;
        }
      }
      Result<std::optional<Delivery>> d = conn.Next(200);
      if (!d.ok()) continue;  // reconnect; what was delivered and not written is lost
      if (!d->has_value()) continue;
      last_ms = now_ms();
      int64_t g, p, it;
      if (!ParseBody((*d)->body, &g, &p, &it)) {
        malformed++;
        continue;
      }
      const uint32_t shard = c->shard_map().ShardFor(p);
      c->QueryShard(shard, "INSERT IGNORE INTO gacha_applied VALUES (?, ?)",
                    {Value::Bytes((*d)->message_id), g});
      c->QueryShard(shard, "INSERT INTO gacha_collection VALUES (?, ?, 1) ON DUPLICATE KEY "
                           "UPDATE count = count + 1", {p, it});
      applied++;
    }
  } else {
    ConsumerOptions o;
    o.amqp = common.amqp;
    o.queue = kQueue;
    o.prefetch = prefetch;
    o.inbox_key = [](const Delivery& d) -> Result<int64_t> {
      int64_t g, p, it;
      if (!ParseBody(d.body, &g, &p, &it)) {
        return Status::InvalidArgument("not a gacha.granted body: '" + d.body.substr(0, 100) + "'");
      }
      return p;
    };
    o.handler = [&](Tx& tx, const Delivery& d) -> Status {
      last_ms = now_ms();
      int64_t g, p, it;
      ParseBody(d.body, &g, &p, &it);  // inbox_key checked it
      return Apply(tx, d, g, p, it);
    };
    Result<std::unique_ptr<Consumer>> consumer = Consumer::Open(c.get(), o);
    if (!consumer.ok()) return Fail(consumer.status());
    Status s = (*consumer)->Run([&] { return g_stop.load() || idle(); });
    if (!s.ok()) return Fail(s);
    Consumer::Counters k = (*consumer)->counters();
    applied = k.applied;
    duplicates = k.duplicates;
    dead = k.dead;
  }
  std::printf("gacha consume %s: %llu events applied, %llu duplicates ignored, %llu dead-lettered, "
              "%llu malformed\n", mode.c_str(), static_cast<unsigned long long>(applied),
              static_cast<unsigned long long>(duplicates), static_cast<unsigned long long>(dead),
              static_cast<unsigned long long>(malformed));
  return kExitOk;
}

int GachaAudit(const Common& common) {
  if (!NeedAmqp(common)) return kExitUsage;
  int rc = kExitOk;
  Common opened = common;
  opened.amqp.clear();
  auto c = OpenForTool(opened, &rc);
  if (!c) return rc;
  Result<std::pair<int64_t, int64_t>> meta = ReadMeta(*c);
  if (!meta.ok()) return Fail(meta.status());
  const int64_t start_gold = meta->second;
  // Per shard, with SQL only: each check counts players (or rows) that break it.
  struct Check {
    const char* what;
    std::string sql;
    uint64_t bad = 0;
  };
  const std::string gold = std::to_string(start_gold), price = std::to_string(kPrice);
  std::vector<Check> checks = {
      {"players: gold spent != 100 x grants",
       "SELECT COUNT(*) FROM gacha_players p WHERE (" + gold + " - p.gold) != " + price +
           " * (SELECT COUNT(*) FROM gacha_grants g WHERE g.player_id = p.player_id)"},
      {"grants without an applied event (lost)",
       "SELECT COUNT(*) FROM gacha_grants g WHERE NOT EXISTS (SELECT 1 FROM gacha_applied a "
       "WHERE a.grant_id = g.grant_id)"},
      {"applied events without a grant",
       "SELECT COUNT(*) FROM gacha_applied a WHERE NOT EXISTS (SELECT 1 FROM gacha_grants g "
       "WHERE g.grant_id = a.grant_id)"},
      {"grants applied twice or more (doubled)",
       "SELECT COUNT(*) FROM (SELECT grant_id FROM gacha_applied GROUP BY grant_id "
       "HAVING COUNT(*) > 1) d"},
      {"players: collection != grants",
       "SELECT COUNT(*) FROM gacha_players p WHERE (SELECT IFNULL(SUM(count), 0) FROM "
       "gacha_collection c WHERE c.player_id = p.player_id) != (SELECT COUNT(*) FROM "
       "gacha_grants g WHERE g.player_id = p.player_id)"},
      {"messages left in the outbox", "SELECT COUNT(*) FROM seigo_outbox WHERE exchange = 'gacha'"},
      {"outbox dead-letter records",
       "SELECT COUNT(*) FROM seigo_outbox_dead WHERE exchange = 'gacha'"},
  };
  uint64_t grants = 0, applied = 0;
  for (uint32_t s = 0; s < c->shard_map().size(); ++s) {
    for (Check& ch : checks) {
      Result<QueryResult> r = c->QueryShard(s, ch.sql);
      if (!r.ok()) return Fail(r.status().Annotate("shard " + std::to_string(s)));
      ch.bad += static_cast<uint64_t>(*r->Int(0, 0));
    }
    Result<QueryResult> r = c->QueryShard(s, "SELECT (SELECT COUNT(*) FROM gacha_grants), "
                                             "(SELECT COUNT(*) FROM gacha_applied)");
    if (!r.ok()) return Fail(r.status());
    grants += static_cast<uint64_t>(*r->Int(0, 0));
    applied += static_cast<uint64_t>(*r->Int(0, 1));
  }
  Result<amqp::AmqpUrl> url = Url(common);
  if (!url.ok()) return Fail(url.status());
  amqp::Connection conn(*url, 5'000);
  Result<uint32_t> depth = conn.QueueDepth(kQueue);
  Result<uint32_t> dead_depth = conn.QueueDepth(std::string(kQueue) + ".dead");
  if (!depth.ok()) return Fail(depth.status());
  std::printf("gacha audit: %llu grants, %llu events applied\n",
              static_cast<unsigned long long>(grants), static_cast<unsigned long long>(applied));
  uint64_t violations = 0;
  for (const Check& ch : checks) {
    std::printf("  %-42s %llu%s\n", ch.what, static_cast<unsigned long long>(ch.bad),
                ch.bad ? "  VIOLATION" : "");
    violations += ch.bad;
  }
  std::printf("  %-42s %u%s\n", "messages left in the queue",
              *depth, *depth ? "  VIOLATION" : "");
  violations += *depth;
  if (!dead_depth.ok()) {  // unknown is not empty: the audit cannot pass without it
    std::printf("  %-42s ? (%s)  VIOLATION\n", "messages in the dead-letter queue",
                dead_depth.status().ToString().c_str());
    violations += 1;
  } else {
    std::printf("  %-42s %u%s\n", "messages in the dead-letter queue", *dead_depth,
                *dead_depth ? "  VIOLATION" : "");
    violations += *dead_depth;
  }
  std::printf("gacha audit: %s\n", violations == 0 ? "OK" : "VIOLATIONS");
  return violations == 0 ? kExitOk : kExitFailed;
}

}  // namespace seigo::cli
