// The RabbitMQ benchmark (BENCHMARKS.md, "RabbitMQ"): what publishing inside a transaction
// costs, as ratios against baselines measured in the same run, on the same servers.
//
//   seigo_amqp_bench --shards URL,... --amqp URL [--seconds S] [--clients C] [--messages N]
//                    [--per-tx K] [--body-bytes B] [--consumers K] [--l-rate R] [--json F]
//                    [--drain-poll-ms MS] [--drain-batch-txns T] [--only A,E,G,L]
// Defaults: 5 s cells, 32 clients, 50,000 messages of 100 bytes, 10 per transaction in A2, 16
// consumers. The --drain-* options change A2's draining relay (RelayOptions::poll_interval_ms,
// batch_txns) for investigating its limits; the figures in BENCHMARKS.md use the defaults.
//
// Cells:
//   A1  raw-confirmed    N persistent messages through the repo's adapter
//                        (amqp::Connection::PublishConfirmed: rabbitmq-c plus hand-read
//                        confirms), window 256 (RelayOptions::window), to a durable quorum
//                        queue; no outbox, no SQL. Three streams (before A2, between A2 and
//                        A2s, after A2s); A1 = their median
//   A2  relay-drain      the same N messages (same size, same queue) committed first into the
//                        outbox by transactions of K messages each while the producing
//                        coordinator's broker was unreachable; then a fresh coordinator with
//                        the broker is opened and its relay's polls drain the backlog: timed
//                        from the end of Open until its relay has confirmed all N
//   A2s relay-drain-1    A2 with 1 message per transaction (a backlog of gacha-like events)
//   E1  e2e-1msg         C clients running transactions that only publish 1 message each; the
//                        committing process's relay publishes them right after the commit:
//                        messages confirmed per second during the cell
//   E10 e2e-10msg        the same with 10 messages per transaction
//   G0  pull             the gacha pull of tools/gacha.cc (gold - 100 guarded >= 0, a grant
//                        row, on the player's shard), C clients
//   G1  pull-event       the same pull with one tx.Publish event
//   L   pull-applied     G1's pull, paced at --l-rate pulls/s (default: a quarter of G1's rate
//                        in this run), whose event a seigo::Consumer (K of them, each with its
//                        own thread and connection) applies with its inbox: commit-to-applied
//                        latency. Applying an event is a transaction as dear as the pull, so
//                        the consumers double the database's work per pull.
//   L2                   L at twice that rate (half of G1's)
//   Lmax                 L unpaced (C clients as fast as they go): the system saturated, so
//                        latency grows with the cell's length; for the backlog's location
// Ratios: A2/A1 (goal >= 0.5), G1/G0 (goal >= 0.8); L p50/p99 with its load. For comparison:
// A2s/A1, and G1c/G0 (G1's pulls over the window plus the time the relay then needed to confirm
// the events it was behind on: the rate at which pulls AND their events get through).
//
// "Committed" for L = the client's clock right after Run returned (a commit time cannot travel
// inside a message staged before the commit: it is kept in this process, by grant id); the
// message body carries the clock before Run. "Applied" = the consumer's handler ran (inside
// the consumer's transaction, one commit round trip before that transaction commits).
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "amqp/amqp_connection.h"
#include "seigo/consumer.h"
#include "seigo/coordinator.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& m) {
  std::fprintf(stderr, "seigo_amqp_bench: %s\n", m.c_str());
  std::exit(1);
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
double Sec(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

constexpr int64_t kPlayers = 10'000;
constexpr int64_t kPrice = 100;
constexpr int kItems = 20;
const char* const kExchange = "seigo_bench";
const char* const kQueueA = "seigo_bench.a";  // A1, A2, E
const char* const kKeyA = "bench.a";
const char* const kQueueG = "seigo_bench.g";  // G1
const char* const kKeyG = "bench.g";
const char* const kQueueL = "seigo_bench.l";  // L (the Consumer's queue, dead letters to .dead)
const char* const kKeyL = "bench.l";
// A broker address that refuses at once: port 1 on loopback (nothing listens there, and it is
// outside the ephemeral range, so a reconnecting client can never connect to itself).
const char* const kNoBroker = "amqp://seigo:x@127.0.0.1:1/";

struct Pct {
  double p50 = 0, p99 = 0;
};
Pct Percentiles(std::vector<double> v) {
  Pct p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  p.p50 = v[v.size() / 2];
  p.p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
  return p;
}

// The relay's failures (Event::kRelayError) of every coordinator with the real broker: counted
// and printed with the cells, since a failed settle leaves messages to a poll after the lease.
std::atomic<uint64_t> g_relay_errors{0};
std::mutex g_relay_mu;
std::string g_relay_last;  // guarded by g_relay_mu
std::string RelayErrors() {
  const uint64_t n = g_relay_errors.exchange(0);
  if (n == 0) return "";
  std::lock_guard<std::mutex> l(g_relay_mu);
  return "; RELAY ERRORS " + std::to_string(n) + ", last: " + g_relay_last.substr(0, 300);
}

std::unique_ptr<seigo::Coordinator> Open(const std::string& shards, const std::string& amqp,
                                         bool quiet_broker = false,
                                         const seigo::RelayOptions& relay = {}) {
  seigo::CoordinatorOptions o;
  o.shards = shards;
  o.amqp = amqp;
  o.relay = relay;
  o.max_connections_per_shard = 0;
  if (!quiet_broker && !amqp.empty()) {
    o.on_event = [](const seigo::Event& e) {
      if (e.kind != seigo::Event::Kind::kRelayError) return;
      g_relay_errors++;
      std::lock_guard<std::mutex> l(g_relay_mu);
      g_relay_last = "shard " + std::to_string(e.shard) + ": " + e.status.ToString();
    };
  }
  if (quiet_broker) {
    // The producer of A2 has a broker that refuses on purpose: drop that one warning.
    o.log = [](std::string_view m) {
      if (m.find("messages wait in the outbox") == std::string_view::npos) {
        std::fprintf(stderr, "%.*s\n", static_cast<int>(m.size()), m.data());
      }
    };
  }
  auto c = seigo::Coordinator::Open(o);
  if (!c.ok()) Die(c.status().ToString());
  return std::move(*c);
}

// A 32-hex-digit gid for the raw cell's message ids (the size of a seigo gid).
std::string FakeGid(uint64_t hi, uint64_t lo) {
  char b[33];
  std::snprintf(b, sizeof b, "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return b;
}

// Outbox rows of this benchmark still pending, over all shards.
int64_t PendingRows(seigo::Coordinator& sql, const char* routing_key) {
  int64_t n = 0;
  for (uint32_t s = 0; s < sql.shard_map().size(); ++s) {
    auto r = sql.QueryShard(s, "SELECT COUNT(*) FROM seigo_outbox WHERE exchange = ? AND "
                               "routing_key = ?", {kExchange, routing_key});
    if (!r.ok()) Die(r.status().ToString());
    n += *r->Int(0, 0);
  }
  return n;
}

uint64_t Settled(seigo::Coordinator& c) {
  auto k = c.counters();
  return k.messages_confirmed + k.messages_dead;
}

// Waits until `c`'s relay has settled `target` messages in all; false after `limit`.
bool WaitSettled(seigo::Coordinator& c, uint64_t target, Clock::duration limit) {
  const auto end = Clock::now() + limit;
  while (Settled(c) < target) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

struct Load {
  double seconds = 0;
  uint64_t committed = 0, failed = 0;
  std::vector<double> lat_ms;
  double tps() const { return seconds > 0 ? static_cast<double>(committed) / seconds : 0; }
};

// `clients` threads running `one(client, rng)` (true = committed) for `seconds`. `rate` > 0 paces the clients to that many calls per second
// in all (each client on its own schedule; a late client does not catch up in a burst).
template <typename Fn>
Load RunLoad(int clients, double seconds, double rate, Fn one) {
  Load load;
  std::atomic<uint64_t> committed{0}, failed{0};
  std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(seconds));
  std::vector<std::thread> ts;
  for (int t = 0; t < clients; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(0xa3b9 + static_cast<uint64_t>(t) * 7919);
      const auto period = rate > 0 ? std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(clients / rate))
                                   : Clock::duration::zero();
      auto next = start + period * t / clients;
      while (Clock::now() < end) {
        if (rate > 0) {
          std::this_thread::sleep_until(next);
          next = std::max(next + period, Clock::now());
        }
        const auto t0 = Clock::now();
        if (!one(t, rng)) {
          failed++;
          continue;
        }
        committed++;
        lat[static_cast<size_t>(t)].push_back(Ms(Clock::now() - t0));
      }
    });
  }
  for (auto& t : ts) t.join();
  load.seconds = Sec(Clock::now() - start);
  load.committed = committed.load();
  load.failed = failed.load();
  for (auto& v : lat) load.lat_ms.insert(load.lat_ms.end(), v.begin(), v.end());
  return load;
}

// The event body: "<grant_id> <player_id> <item_id> <clock before Run, ns>".
std::string EventBody(int64_t grant, int64_t player, int64_t item, int64_t start_ns) {
  return std::to_string(grant) + " " + std::to_string(player) + " " + std::to_string(item) +
         " " + std::to_string(start_ns);
}
bool ParseEvent(const std::string& b, int64_t* grant, int64_t* player, int64_t* item,
                int64_t* start_ns) {
  long long g = 0, p = 0, i = 0, s = 0;
  if (std::sscanf(b.c_str(), "%lld %lld %lld %lld", &g, &p, &i, &s) != 4) return false;
  *grant = g;
  *player = p;
  *item = i;
  *start_ns = s;
  return p > 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shards, amqp_url, json, only;
  double seconds = 5, l_rate = 0;
  int clients = 32, consumers = 16, per_tx = 10, body_bytes = 100;
  size_t messages = 50'000;
  const size_t window = seigo::RelayOptions{}.window;
  seigo::RelayOptions drain_relay;  // A2's draining coordinator: the defaults unless asked
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--shards") shards = next();
    else if (a == "--amqp") amqp_url = next();
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--clients") clients = std::atoi(next().c_str());
    else if (a == "--messages") messages = static_cast<size_t>(std::atol(next().c_str()));
    else if (a == "--per-tx") per_tx = std::atoi(next().c_str());
    else if (a == "--body-bytes") body_bytes = std::atoi(next().c_str());
    else if (a == "--consumers") consumers = std::atoi(next().c_str());
    else if (a == "--l-rate") l_rate = std::atof(next().c_str());
    else if (a == "--drain-poll-ms") drain_relay.poll_interval_ms = std::atol(next().c_str());
    else if (a == "--drain-batch-txns") drain_relay.batch_txns = std::atol(next().c_str());
    else if (a == "--only") only = next();
    else if (a == "--json") json = next();
    else Die("unknown argument " + a);
  }
  if (shards.empty() || amqp_url.empty()) Die("--shards and --amqp are required");
  if (clients < 1 || seconds <= 0 || consumers < 1 || per_tx < 1 ||
      per_tx > static_cast<int>(seigo::kMaxTxMessages) || body_bytes < 1 || messages < 1 ||
      l_rate < 0) {
    Die("--clients >= 1, --seconds > 0, --consumers >= 1, --per-tx 1..1000, --body-bytes >= 1, "
        "--messages >= 1, --l-rate >= 0");
  }
  messages = (messages + per_tx - 1) / per_tx * per_tx;  // whole transactions for A2
  // --only A,E,G,L: just those groups of cells (for investigating; ratios of skipped cells are 0).
  auto want = [&](char group) { return only.empty() || only.find(group) != std::string::npos; };
  if (want('L') && !want('G') && l_rate <= 0) Die("--only without G needs --l-rate");
  auto url = seigo::amqp::AmqpUrl::Parse(amqp_url);
  if (!url.ok()) Die(url.status().ToString());
  const std::string body(static_cast<size_t>(body_bytes), 'x');

  // SQL only (no broker, so no relay of its own): setup and checks.
  std::unique_ptr<seigo::Coordinator> sql = Open(shards, "");
  const size_t nshards = sql->shard_map().size();
  for (uint32_t s = 0; s < nshards; ++s) {
    for (const char* q :
         {"DROP TABLE IF EXISTS bench_gacha_players", "DROP TABLE IF EXISTS bench_gacha_grants",
          "DROP TABLE IF EXISTS bench_gacha_applied", "DROP TABLE IF EXISTS bench_gacha_collection",
          "CREATE TABLE bench_gacha_players (player_id BIGINT PRIMARY KEY, gold BIGINT NOT NULL) "
          "ENGINE=InnoDB",
          "CREATE TABLE bench_gacha_grants (grant_id BIGINT PRIMARY KEY, player_id BIGINT NOT "
          "NULL, item_id BIGINT NOT NULL, KEY (player_id)) ENGINE=InnoDB",
          "CREATE TABLE bench_gacha_applied (message_id VARBINARY(128) PRIMARY KEY, grant_id "
          "BIGINT NOT NULL) ENGINE=InnoDB",
          "CREATE TABLE bench_gacha_collection (player_id BIGINT NOT NULL, item_id BIGINT NOT "
          "NULL, count BIGINT NOT NULL, PRIMARY KEY (player_id, item_id)) ENGINE=InnoDB",
          "DELETE FROM seigo_outbox WHERE exchange = 'seigo_bench'",
          "DELETE FROM seigo_outbox_dead WHERE exchange = 'seigo_bench'",
          "DELETE FROM seigo_inbox WHERE queue = 'seigo_bench.l'"}) {
      auto r = sql->QueryShard(s, q);
      if (!r.ok()) Die(r.status().ToString());
    }
  }
  {
    std::map<uint32_t, std::string> rows;
    for (int64_t p = 1; p <= kPlayers; ++p) {
      std::string& r = rows[sql->shard_map().ShardFor(p)];
      r += (r.empty() ? "(" : ",(") + std::to_string(p) + ",1000000000000)";
    }
    for (auto& [s, r] : rows) {
      auto q = sql->QueryShard(s, "INSERT INTO bench_gacha_players VALUES " + r);
      if (!q.ok()) Die(q.status().ToString());
    }
  }
  // The topology, as the gacha demo's: a durable topic exchange, durable quorum queues.
  seigo::amqp::Connection admin(*url, 30'000);
  auto purge = [&](const char* q) {
    seigo::Status s = admin.PurgeQueue(q);
    if (!s.ok()) Die(s.ToString());
  };
  {
    seigo::Status s = admin.DeclareExchange(kExchange, "topic");
    if (s.ok()) s = admin.DeclareQueue(kQueueA, /*quorum=*/true, "");
    if (s.ok()) s = admin.BindQueue(kQueueA, kExchange, kKeyA);
    if (s.ok()) s = admin.DeclareQueue(kQueueG, true, "");
    if (s.ok()) s = admin.BindQueue(kQueueG, kExchange, kKeyG);
    if (s.ok()) s = admin.DeclareQueue(kQueueL, true, std::string(kQueueL) + ".dead");
    if (s.ok()) s = admin.BindQueue(kQueueL, kExchange, kKeyL);
    if (!s.ok()) Die(s.ToString());
    for (const char* q : {kQueueA, kQueueG, kQueueL}) purge(q);
    purge("seigo_bench.l.dead");
  }
  auto depth = [&](const char* q) -> uint32_t {
    auto d = admin.QueueDepth(q);
    if (!d.ok()) Die(d.status().ToString());
    return *d;
  };
  auto a_message = [&] {
    seigo::Message m;
    m.exchange = kExchange;
    m.routing_key = kKeyA;
    m.body = body;
    return m;
  };

  std::map<std::string, double> js;  // for --json
  std::printf("seigo_amqp_bench: %zu shards, broker %s, %d clients, %.1f s cells, %zu messages "
              "of %d bytes for A1/A2, window %zu\n", nshards, url->Redacted().c_str(), clients,
              seconds, messages, body_bytes, window);
  std::fflush(stdout);

  // ---- A1: raw confirmed publishes, window 256, one stream of N. Three streams: before A2,
  // between A2 and A2s, after A2s; A1 = their median (one stream of 1-3 s is at the mercy of
  // whatever else the machine runs at that moment).
  std::vector<double> a1_runs;
  seigo::amqp::Connection raw(*url, 300'000);  // the deadline covers the whole stream
  const uint64_t raw_run = std::random_device{}();
  auto raw_stream = [&] {
    const uint64_t k = a1_runs.size() + 1;
    std::vector<seigo::OutboxEntry> warm(200), entries(messages);
    for (size_t i = 0; i < warm.size(); ++i) {
      warm[i].gid = FakeGid(raw_run + k, 0xffff0000 + i);
      warm[i].msg = a_message();
    }
    for (size_t i = 0; i < entries.size(); ++i) {
      entries[i].id = i + 1;
      entries[i].gid = FakeGid(raw_run + k, i);
      entries[i].msg = a_message();
    }
    for (const auto& r : raw.PublishConfirmed(warm, window)) {  // connect, exchange check
      if (r.fate != seigo::core::Broker::Fate::kConfirmed) Die("A1 warm-up: " + r.reason);
    }
    const auto t0 = Clock::now();
    std::vector<seigo::core::Broker::Result> res = raw.PublishConfirmed(entries, window);
    const double el = Sec(Clock::now() - t0);
    size_t ok = 0;
    std::string why;
    for (const auto& r : res) {
      if (r.fate == seigo::core::Broker::Fate::kConfirmed) ok++;
      else if (why.empty()) why = r.reason;
    }
    if (ok != messages) Die("A1: " + std::to_string(messages - ok) + " not confirmed: " + why);
    const double rate = static_cast<double>(ok) / el;
    a1_runs.push_back(rate);
    std::printf("%-20s %7zu msgs in %6.2f s  %8.0f msgs/s  (window %zu, one stream, %llu of 3)\n",
                "A1 raw-confirmed", messages, el, rate, window,
                static_cast<unsigned long long>(k));
    std::fflush(stdout);
    purge(kQueueA);
  };
  if (want('A')) raw_stream();

  // ---- A2: a backlog in the outbox, drained by a fresh coordinator's relay.
  auto relay_drain = [&](const char* name, int k) -> double {
    const uint64_t txns = messages / static_cast<uint64_t>(k);
    {
      // The producer's relay cannot reach its broker: each batch it tries fails at once and
      // is released for a retry after 250 ms; its polls claim nothing (Broker::Ready).
      std::unique_ptr<seigo::Coordinator> producer = Open(shards, kNoBroker, true);
      std::atomic<uint64_t> ticket{0};
      std::vector<std::thread> ts;
      for (int t = 0; t < clients; ++t) {
        ts.emplace_back([&] {
          while (ticket++ < txns) {
            seigo::TxResult r;
            for (int attempt = 0; attempt < 100; ++attempt) {
              r = producer->Run([&](seigo::Tx& tx) -> seigo::Status {
                for (int j = 0; j < k; ++j) SEIGO_RETURN_IF_ERROR(tx.Publish(a_message()).status());
                return seigo::Status::OK();
              });
              if (r.committed()) break;
            }
            if (!r.committed()) Die(std::string(name) + ": filling: " + r.status.ToString());
          }
        });
      }
      for (auto& t : ts) t.join();
      producer->DrainRelay();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // past the 250 ms retry delay
    const int64_t pending = PendingRows(*sql, kKeyA);
    if (pending != static_cast<int64_t>(messages)) {
      // Only on shared servers (the test servers): another process's relay polled them.
      std::printf("%s: %lld of %zu messages in the outbox: another process's relay took some; "
                  "THIS FIGURE IS NOT VALID\n", name, static_cast<long long>(pending), messages);
    }
    const auto t_open = Clock::now();
    std::unique_ptr<seigo::Coordinator> drain = Open(shards, amqp_url, false, drain_relay);
    const auto t0 = Clock::now();
    // Done when this relay has settled them all (its counters, read every 2 ms; they include
    // nothing else on servers of our own). Every 500 ms the outbox itself is counted too, in
    // case another process's relay takes some on shared servers.
    const auto limit = t0 + std::chrono::seconds(600);
    for (auto next_count = t0 + std::chrono::milliseconds(500);;) {
      if (Settled(*drain) >= static_cast<uint64_t>(pending)) break;
      if (Clock::now() >= next_count) {
        if (PendingRows(*sql, kKeyA) == 0) break;
        next_count = Clock::now() + std::chrono::milliseconds(500);
      }
      if (Clock::now() > limit) {
        Die(std::string(name) + ": the relay did not drain the outbox in 600 s (" +
            std::to_string(Settled(*drain)) + " of " + std::to_string(pending) + ")");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    const double el = Sec(Clock::now() - t0);
    const auto k2 = drain->counters();
    const int64_t left = PendingRows(*sql, kKeyA);
    const uint32_t in_queue = depth(kQueueA);
    const double rate = static_cast<double>(pending) / el;
    std::printf("%-20s %7lld msgs in %6.2f s  %8.0f msgs/s  (%d per transaction; Open %.0f ms; "
                "left %lld, dead %llu, retried %llu, relay errors %llu, queue %u%s)\n",
                name, static_cast<long long>(pending), el, rate, k, Ms(t0 - t_open),
                static_cast<long long>(left), static_cast<unsigned long long>(k2.messages_dead),
                static_cast<unsigned long long>(k2.messages_retried),
                static_cast<unsigned long long>(k2.relay_errors), in_queue, RelayErrors().c_str());
    std::fflush(stdout);
    drain.reset();
    purge(kQueueA);
    return rate;
  };
  const double a2 = want('A') ? relay_drain("A2 relay-drain", per_tx) : 0;
  if (want('A')) raw_stream();
  const double a2s = per_tx == 1 || !want('A') ? a2 : relay_drain("A2s relay-drain-1", 1);
  double a1 = 0;
  if (want('A')) {
    raw_stream();
    std::vector<double> v = a1_runs;
    std::sort(v.begin(), v.end());
    a1 = v[v.size() / 2];
    std::printf("%-20s %7s              %8.0f msgs/s  (median of the 3 streams)\n", "A1 median", "",
                a1);
    js["A1_msgs_per_s"] = a1;
    for (size_t i = 0; i < a1_runs.size(); ++i) {
      js["A1_stream" + std::to_string(i + 1) + "_msgs_per_s"] = a1_runs[i];
    }
  }
  js["A2_msgs_per_s"] = a2;
  js["A2s_msgs_per_s"] = a2s;

  // The coordinator of the remaining cells, with the broker (its relay publishes its commits).
  std::unique_ptr<seigo::Coordinator> c = Open(shards, amqp_url);

  // ---- E1, E10: transactions that only publish; messages confirmed per second.
  auto e2e = [&](const char* name, const std::string& key, int k) {
    const uint64_t base = Settled(*c);
    Load l = RunLoad(clients, seconds, 0, [&](int, std::mt19937_64&) {
      return c->Run([&](seigo::Tx& tx) -> seigo::Status {
        for (int j = 0; j < k; ++j) SEIGO_RETURN_IF_ERROR(tx.Publish(a_message()).status());
        return seigo::Status::OK();
      }).committed();
    });
    const uint64_t in_window = Settled(*c) - base;
    const uint64_t sent = l.committed * static_cast<uint64_t>(k);
    const auto t0 = Clock::now();
    c->DrainRelay();
    if (!WaitSettled(*c, base + sent, std::chrono::seconds(120))) Die(std::string(name) + ": no drain");
    const double drain_s = Sec(Clock::now() - t0);
    const Pct p = Percentiles(l.lat_ms);
    const double conf = static_cast<double>(in_window) / l.seconds;
    std::printf("%-20s %3d clients %8.0f tx/s  %8.0f msgs/s committed  %8.0f msgs/s confirmed  "
                "p50 %.2f p99 %.2f ms  (lag at the end %llu msgs, drained in %.2f s; failed "
                "%llu%s)\n", name, clients, l.tps(), static_cast<double>(sent) / l.seconds, conf,
                p.p50, p.p99, static_cast<unsigned long long>(sent - std::min(sent, in_window)),
                drain_s, static_cast<unsigned long long>(l.failed), RelayErrors().c_str());
    std::fflush(stdout);
    js[key + "_msgs_confirmed_per_s"] = conf;
    js[key + "_tx_per_s"] = l.tps();
    purge(kQueueA);
  };
  if (want('E')) {
    e2e("E1 e2e-1msg", "E1", 1);
    e2e("E10 e2e-10msg", "E10", 10);
  }

  // ---- G0, G1: the gacha pull without and with its event.
  std::atomic<int64_t> next_grant{1};
  // One pull; `event`: its gacha.granted-like message to `key`, carrying `start_ns`.
  auto pull = [&](seigo::Coordinator& co, std::mt19937_64& rng, const char* key,
                  int64_t* grant_out, int64_t start_ns) {
    std::uniform_int_distribution<int64_t> player(1, kPlayers), item(1, kItems);
    const int64_t p = player(rng), it = item(rng), g = next_grant++;
    *grant_out = g;
    return co.Run([&](seigo::Tx& tx) -> seigo::Status {
      SEIGO_RETURN_IF_ERROR(tx.ExecExpect(
          p, 1, "UPDATE bench_gacha_players SET gold = gold - ? WHERE player_id = ? AND gold >= ?",
          {kPrice, p, kPrice}, "not enough gold"));
      SEIGO_RETURN_IF_ERROR(tx.ExecExpect(p, 1, "INSERT INTO bench_gacha_grants VALUES (?, ?, ?)",
                                          {g, p, it}));
      if (key == nullptr) return seigo::Status::OK();
      seigo::Message m;
      m.exchange = kExchange;
      m.routing_key = key;
      m.body = EventBody(g, p, it, start_ns);
      m.content_type = "text/plain";
      return tx.Publish(std::move(m)).status();
    }).committed();
  };
  std::map<std::string, Load> gl;
  double g1_confirmed = 0;  // G1's pulls over the window plus the relay's catching up
  for (const char* name : {"G0 pull", "G1 pull-event"}) {
    if (!want('G')) break;
    const bool event = name[1] == '1';
    const uint64_t base = Settled(*c);
    Load l = RunLoad(clients, seconds, 0, [&](int, std::mt19937_64& rng) {
      int64_t g;
      return pull(*c, rng, event ? kKeyG : nullptr, &g, 0);
    });
    // G1: how far the relay was behind when the load stopped, and how long it then took to
    // confirm the rest (work the window did not pay for).
    const uint64_t lag = l.committed - std::min(l.committed, Settled(*c) - base);
    const auto t_end = Clock::now();
    c->DrainRelay();
    if (event && !WaitSettled(*c, base + l.committed, std::chrono::seconds(120))) {
      Die("G1: the relay did not confirm the events");
    }
    const double drain_s = Sec(Clock::now() - t_end);
    const Pct p = Percentiles(l.lat_ms);
    std::printf("%-20s %3d clients %8.0f pulls/s  p50 %.2f p99 %.2f ms  failed %llu", name,
                clients, l.tps(), p.p50, p.p99, static_cast<unsigned long long>(l.failed));
    if (event) {
      g1_confirmed = static_cast<double>(l.committed) / (l.seconds + drain_s);
      std::printf("  (relay behind by %llu events at the end, confirmed %.2f s later: %.0f "
                  "pulls/s with their events confirmed)", static_cast<unsigned long long>(lag),
                  drain_s, g1_confirmed);
    }
    std::printf("%s\n", RelayErrors().c_str());
    std::fflush(stdout);
    js[std::string(name).substr(0, 2) + "_pulls_per_s"] = l.tps();
    js[std::string(name).substr(0, 2) + "_p50_ms"] = p.p50;
    js[std::string(name).substr(0, 2) + "_p99_ms"] = p.p99;
    gl[name] = std::move(l);
  }
  purge(kQueueG);
  const double g0 = gl["G0 pull"].tps();
  const double g1g0 = g0 > 0 ? gl["G1 pull-event"].tps() / g0 : 0;
  const double g1cg0 = g0 > 0 ? g1_confirmed / g0 : 0;

  // ---- L: pulls whose events consumers apply; commit-to-applied latency. Paced at --l-rate
  // pulls/s (default: a quarter of G1's rate in this run), at twice that (L2), and unpaced (Lmax).
  struct LResult {
    Pct commit, start;
    double load = 0;
  };
  auto l_cell = [&](const char* name, const std::string& key, double rate) {
    LResult res;
    // Per consumer: (grant, handler clock) of every handler call (a retried call adds one).
    std::vector<std::vector<std::pair<int64_t, int64_t>>> applied(static_cast<size_t>(consumers));
    // Per client: (grant, clock before Run, clock after Run) of every committed pull.
    std::vector<std::vector<std::array<int64_t, 3>>> pulled(static_cast<size_t>(clients));
    std::atomic<bool> stop{false};
    std::vector<std::unique_ptr<seigo::Consumer>> cons;
    for (int k = 0; k < consumers; ++k) {
      seigo::ConsumerOptions o;
      o.amqp = amqp_url;
      o.queue = kQueueL;
      o.prefetch = 32;
      o.inbox_key = [](const seigo::Delivery& d) -> seigo::Result<int64_t> {
        int64_t g, p, it, s;
        if (!ParseEvent(d.body, &g, &p, &it, &s)) return seigo::Status::InvalidArgument("body");
        return p;
      };
      // What the gacha demo's collection service does, on the player's shard.
      o.handler = [&, k](seigo::Tx& tx, const seigo::Delivery& d) -> seigo::Status {
        int64_t g, p, it, s;
        ParseEvent(d.body, &g, &p, &it, &s);
        SEIGO_RETURN_IF_ERROR(tx.ExecExpect(p, 1, "INSERT INTO bench_gacha_applied VALUES (?, ?)",
                                            {seigo::Value::Bytes(d.message_id), g}));
        SEIGO_RETURN_IF_ERROR(tx.Exec(p, "INSERT INTO bench_gacha_collection VALUES (?, ?, 1) ON "
                                         "DUPLICATE KEY UPDATE count = count + 1", {p, it})
                                  .status());
        applied[static_cast<size_t>(k)].emplace_back(g, NowNs());
        return seigo::Status::OK();
      };
      auto co = seigo::Consumer::Open(c.get(), o);
      if (!co.ok()) Die(co.status().ToString());
      cons.push_back(std::move(*co));
    }
    std::vector<std::thread> cts;
    for (auto& co : cons) {
      cts.emplace_back([&, p = co.get()] {
        seigo::Status s = p->Run([&] { return stop.load(); });
        if (!s.ok()) Die("consumer: " + s.ToString());
      });
    }
    // Where the backlog is, every 200 ms while the load runs: in the outbox (committed, not yet
    // confirmed) or in the queue (confirmed, not yet delivered to a consumer).
    std::atomic<bool> load_done{false};
    int64_t outbox_max = 0, queue_max = 0, samples = 0;
    double outbox_sum = 0, queue_sum = 0;
    std::thread sampler([&] {
      seigo::amqp::Connection conn(*url, 10'000);
      while (!load_done.load()) {
        const int64_t o = PendingRows(*sql, kKeyL);
        auto q = conn.QueueDepth(kQueueL);
        const int64_t qd = q.ok() ? *q : 0;
        outbox_max = std::max(outbox_max, o);
        queue_max = std::max(queue_max, qd);
        outbox_sum += static_cast<double>(o);
        queue_sum += static_cast<double>(qd);
        samples++;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
    Load l = RunLoad(clients, seconds, rate, [&](int t, std::mt19937_64& rng) {
      int64_t g = 0;
      const int64_t t0 = NowNs();
      if (!pull(*c, rng, kKeyL, &g, t0)) return false;
      pulled[static_cast<size_t>(t)].push_back({g, t0, NowNs()});
      return true;
    });
    res.load = l.tps();
    load_done = true;
    sampler.join();
    // Every committed pull's event applied (or give up after two minutes, and say so).
    auto applied_now = [&] {
      uint64_t n = 0;
      for (auto& co : cons) n += co->counters().applied;
      return n;
    };
    const auto t_end = Clock::now();
    const auto limit = t_end + std::chrono::seconds(120);
    while (applied_now() < l.committed && Clock::now() < limit) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double catch_up = Sec(Clock::now() - t_end);
    stop = true;
    for (auto& t : cts) t.join();
    std::unordered_map<int64_t, int64_t> applied_at;  // the last handler call: the committed one
    for (auto& v : applied) {
      for (auto& [g, at] : v) {
        int64_t& x = applied_at[g];
        x = std::max(x, at);
      }
    }
    std::vector<double> from_commit, from_start;
    uint64_t missing = 0, negative = 0;
    for (auto& v : pulled) {
      for (auto& [g, t0, t1] : v) {
        auto it = applied_at.find(g);
        if (it == applied_at.end()) {
          missing++;
          continue;
        }
        if (it->second < t1) negative++;
        from_commit.push_back(static_cast<double>(it->second - t1) / 1e6);
        from_start.push_back(static_cast<double>(it->second - t0) / 1e6);
      }
    }
    res.commit = Percentiles(from_commit);
    res.start = Percentiles(from_start);
    const Pct run = Percentiles(l.lat_ms);
    seigo::Consumer::Counters kc;
    for (auto& co : cons) {
      auto x = co->counters();
      kc.applied += x.applied;
      kc.duplicates += x.duplicates;
      kc.retried += x.retried;
      kc.dead += x.dead;
    }
    const std::string paced =
        rate > 0 ? " (paced at " + std::to_string(static_cast<int>(rate)) + ")" : " (unpaced)";
    std::printf("%-20s %3d clients %8.0f pulls/s%s  Run p50 %.2f p99 %.2f ms  commit->applied "
                "p50 %.2f p99 %.2f ms  before-Run->applied p50 %.2f p99 %.2f ms  (%d consumers; "
                "applied %zu of %llu, the last %.2f s after the load; backlog mean/max: outbox "
                "%.0f/%lld, queue %.0f/%lld; duplicates %llu, retried %llu, dead %llu, applied "
                "before Run returned %llu%s)\n", name, clients, res.load,
                paced.c_str(), run.p50, run.p99, res.commit.p50, res.commit.p99, res.start.p50,
                res.start.p99, consumers, applied_at.size(),
                static_cast<unsigned long long>(l.committed), catch_up,
                samples ? outbox_sum / samples : 0.0, static_cast<long long>(outbox_max),
                samples ? queue_sum / samples : 0.0, static_cast<long long>(queue_max),
                static_cast<unsigned long long>(kc.duplicates),
                static_cast<unsigned long long>(kc.retried),
                static_cast<unsigned long long>(kc.dead), static_cast<unsigned long long>(negative),
                RelayErrors().c_str());
    if (missing > 0) {
      std::printf("%s: %llu committed pulls' events were not applied within two minutes\n", name,
                  static_cast<unsigned long long>(missing));
    }
    std::fflush(stdout);
    js[key + "_pulls_per_s"] = res.load;
    js[key + "_commit_to_applied_p50_ms"] = res.commit.p50;
    js[key + "_commit_to_applied_p99_ms"] = res.commit.p99;
    js[key + "_start_to_applied_p50_ms"] = res.start.p50;
    js[key + "_start_to_applied_p99_ms"] = res.start.p99;
    return res;
  };
  const double rate = std::max(1.0, l_rate > 0 ? l_rate : gl["G1 pull-event"].tps() / 4);
  const LResult lr = want('L') ? l_cell("L pull-applied", "L", rate) : LResult{};
  const LResult l2 = want('L') ? l_cell("L2 pull-applied", "L2", 2 * rate) : LResult{};
  const LResult lmax = want('L') ? l_cell("Lmax pull-applied", "Lmax", 0) : LResult{};
  js["L_consumers"] = consumers;

  const double a2a1 = a1 > 0 ? a2 / a1 : 0, a2sa1 = a1 > 0 ? a2s / a1 : 0;
  std::printf("A2/A1 %.2f (goal >= 0.5: outbox backlog of %d-message transactions drained by the "
              "relay / raw confirmed publishes, window %zu)\n", a2a1, per_tx, window);
  std::printf("A2s/A1 %.2f (comparison: the same with 1-message transactions)\n", a2sa1);
  std::printf("G1/G0 %.2f (goal >= 0.8: gacha pull with its event / without, %d clients)\n", g1g0,
              clients);
  std::printf("G1c/G0 %.2f (comparison: G1 counted until its last event was confirmed)\n", g1cg0);
  std::printf("L p50 %.1f ms p99 %.1f ms (commit-to-applied at %.0f pulls/s, %d consumers; from "
              "before Run: p50 %.1f ms p99 %.1f ms; at %.0f pulls/s: p50 %.1f ms p99 %.1f ms; "
              "unpaced at %.0f pulls/s: p50 %.1f ms p99 %.1f ms)\n", lr.commit.p50, lr.commit.p99,
              lr.load, consumers, lr.start.p50, lr.start.p99, l2.load, l2.commit.p50,
              l2.commit.p99, lmax.load, lmax.commit.p50, lmax.commit.p99);
  if (!json.empty()) {
    js["A2_over_A1"] = a2a1;
    js["A2s_over_A1"] = a2sa1;
    js["G1_over_G0"] = g1g0;
    js["G1c_over_G0"] = g1cg0;
    js["clients"] = clients;
    js["seconds"] = seconds;
    js["messages"] = static_cast<double>(messages);
    js["per_tx"] = per_tx;
    js["body_bytes"] = body_bytes;
    FILE* f = std::fopen(json.c_str(), "w");
    if (f == nullptr) Die("cannot write " + json);
    std::fprintf(f, "{\n");
    size_t i = 0;
    for (const auto& [k, v] : js) {
      std::fprintf(f, "  \"%s\": %.3f%s\n", k.c_str(), v, ++i == js.size() ? "" : ",");
    }
    std::fprintf(f, "}\n");
    std::fclose(f);
  }
  return 0;
}
