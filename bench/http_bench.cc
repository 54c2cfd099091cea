// The HTTP benchmark (BENCHMARKS.md, "seigod"): what going through seigod costs against the
// library, measured in the same run, on the same shards, with the same clients.
//
//   seigo_http_bench --shards URL,... --seigod PATH [--seconds S] [--clients C] [--port P]
//                    [--json F]
//
// Cells (C client threads each, default 32):
//   T0 library   a cross-shard trade (debit the buyer with a guard, credit the seller) as one
//                Coordinator::Run in this process
//   T1 http      the same trade as a declarative POST /v1/transactions to a seigod this driver
//                starts (C keep-alive connections)
//   T2 http-key  T1 with an idempotency key per trade (its record is one more statement, and
//                one more shard when the key's shard is not already in the trade)
// Ratios: T1/T0 (goal >= 0.7) and T2/T0, with p50/p99 of each cell.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "seigo/coordinator.h"

namespace {

[[noreturn]] void Die(const std::string& m) {
  std::fprintf(stderr, "seigo_http_bench: %s\n", m.c_str());
  std::exit(1);
}

constexpr int64_t kPlayers = 20'000;
using Clock = std::chrono::steady_clock;

struct Cell {
  double tps = 0, p50 = 0, p99 = 0;
  uint64_t failed = 0;
};

// Runs `one(client, rng)` (true = committed) from `clients` threads for `seconds`.
template <typename F>
Cell Measure(int clients, double seconds, F one) {
  std::vector<std::vector<double>> lat(clients);
  std::atomic<uint64_t> failed{0};
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  std::vector<std::thread> ts;
  for (int c = 0; c < clients; ++c) {
    ts.emplace_back([&, c] {
      std::mt19937_64 rng(0x5e160d ^ (uint64_t(c) << 32) ^ std::random_device{}());
      while (Clock::now() < end) {
        auto t0 = Clock::now();
        if (one(c, rng)) {
          lat[c].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        } else {
          failed++;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  Cell cell;
  cell.failed = failed;
  cell.tps = all.size() / seconds;
  if (!all.empty()) {
    cell.p50 = all[all.size() / 2];
    cell.p99 = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  return cell;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shards, seigod, json_path;
  double seconds = 3;
  int clients = 32, port = 36690;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--shards") shards = next();
    else if (a == "--seigod") seigod = next();
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--clients") clients = std::atoi(next().c_str());
    else if (a == "--port") port = std::atoi(next().c_str());
    else if (a == "--json") json_path = next();
    else Die("unknown argument " + a);
  }
  if (shards.empty() || seigod.empty()) Die("--shards and --seigod are required");
  if (clients < 1 || seconds <= 0) Die("bad --clients or --seconds");

  seigo::CoordinatorOptions o;
  o.shards = shards;
  auto c = seigo::Coordinator::Open(o);
  if (!c.ok()) Die(c.status().ToString());
  seigo::Coordinator& coord = **c;
  const uint32_t n = static_cast<uint32_t>(coord.shard_map().size());
  if (n < 2) Die("needs two shards");
  std::vector<std::vector<int64_t>> by_shard(n);
  for (uint32_t s = 0; s < n; ++s) {
    for (const char* sql : {"DROP TABLE IF EXISTS bench_http_players",
                            "CREATE TABLE bench_http_players (player_id BIGINT PRIMARY KEY, "
                            "gold BIGINT NOT NULL) ENGINE=InnoDB"}) {
      auto r = coord.QueryShard(s, sql);
      if (!r.ok()) Die(r.status().ToString());
    }
  }
  std::vector<std::string> inserts(n);
  for (int64_t p = 1; p <= kPlayers; ++p) {
    uint32_t s = coord.shard_map().ShardFor(p);
    by_shard[s].push_back(p);
    inserts[s] += (inserts[s].empty() ? "" : ",") + ("(" + std::to_string(p) + ",1000000000000)");
  }
  for (uint32_t s = 0; s < n; ++s) {
    auto r = coord.QueryShard(s, "INSERT INTO bench_http_players VALUES " + inserts[s]);
    if (!r.ok()) Die(r.status().ToString());
  }
  auto pick = [&](std::mt19937_64& rng, int64_t* buyer, int64_t* seller) {
    uint32_t a = rng() % n, b = (a + 1 + rng() % (n - 1)) % n;
    *buyer = by_shard[a][rng() % by_shard[a].size()];
    *seller = by_shard[b][rng() % by_shard[b].size()];
  };
  const char* kDebit = "UPDATE bench_http_players SET gold = gold - ? WHERE player_id = ? AND gold >= ?";
  const char* kCredit = "UPDATE bench_http_players SET gold = gold + ? WHERE player_id = ?";

  // seigod, with the same two statements.
  char dir[] = "/tmp/seigo-http-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) Die("mkdtemp");
  std::string conf = std::string(dir) + "/seigod.toml";
  {
    std::ofstream f(conf);
    f << "[server]\nlisten = \"127.0.0.1:" << port << "\"\nthreads = " << clients + 8
      << "\n[shards]\nurls = [";
    std::string rest = shards;
    bool first = true;
    for (size_t pos = 0; pos <= rest.size();) {
      size_t comma = rest.find(',', pos);
      std::string u = rest.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      if (!u.empty()) f << (first ? "" : ", ") << "\"" << u << "\"";
      first = false;
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    f << "]\n[statements]\ndebit = \"" << kDebit << "\"\ncredit = \"" << kCredit << "\"\n";
  }
  pid_t pid = fork();
  if (pid == 0) {
    std::string log = std::string(dir) + "/seigod.log";
    freopen(log.c_str(), "w", stderr);
    execl(seigod.c_str(), seigod.c_str(), "--config", conf.c_str(), nullptr);
    _exit(127);
  }
  {
    httplib::Client probe("127.0.0.1", port);
    bool up = false;
    for (int i = 0; i < 300 && !up; ++i) {
      auto r = probe.Get("/healthz");
      up = r && r->status == 200;
      if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!up) {
      kill(pid, SIGKILL);
      Die(std::string("seigod did not start; see ") + dir + "/seigod.log");
    }
  }

  Cell t0 = Measure(clients, seconds, [&](int, std::mt19937_64& rng) {
    int64_t buyer, seller;
    pick(rng, &buyer, &seller);
    seigo::TxResult r = coord.Run([&](seigo::Tx& tx) -> seigo::Status {
      SEIGO_RETURN_IF_ERROR(tx.ExecExpect(buyer, 1, kDebit, {7, buyer, 7}, "not enough gold"));
      return tx.ExecExpect(seller, 1, kCredit, {7, seller});
    });
    return r.committed();
  });
  std::vector<std::unique_ptr<httplib::Client>> conns;
  for (int i = 0; i < clients; ++i) {
    conns.push_back(std::make_unique<httplib::Client>("127.0.0.1", port));
    conns.back()->set_keep_alive(true);
    conns.back()->set_tcp_nodelay(true);  // headers and body are two writes: no Nagle wait
    conns.back()->set_read_timeout(30, 0);
  }
  std::atomic<uint64_t> key_seq{0};
  const uint64_t run_id = std::random_device{}();
  auto http = [&](bool with_key) {
    return [&, with_key](int ci, std::mt19937_64& rng) {
      int64_t buyer, seller;
      pick(rng, &buyer, &seller);
      std::string body = "{";
      if (with_key) {
        body += "\"idempotency_key\":\"bench-" + std::to_string(run_id) + "-" +
                std::to_string(++key_seq) + "\",";
      }
      body += "\"steps\":[{\"sql\":\"debit\",\"key\":" + std::to_string(buyer) +
              ",\"params\":[7," + std::to_string(buyer) + ",7],\"expect_rows\":1},"
              "{\"sql\":\"credit\",\"key\":" + std::to_string(seller) + ",\"params\":[7," +
              std::to_string(seller) + "],\"expect_rows\":1}]}";
      auto r = conns[ci]->Post("/v1/transactions", body, "application/json");
      if (r && r->status == 200) return true;
      // The first few failures are shown: a benchmark's failures are findings.
      static std::atomic<int> shown{0};
      if (shown++ < 5) {
        std::fprintf(stderr, "seigo_http_bench: failed: %s\n",
                     r ? (std::to_string(r->status) + " " + r->body.substr(0, 300)).c_str()
                       : httplib::to_string(r.error()).c_str());
      }
      return false;
    };
  };
  Cell t1 = Measure(clients, seconds, http(false));
  Cell t2 = Measure(clients, seconds, http(true));
  kill(pid, SIGTERM);
  int st = 0;
  waitpid(pid, &st, 0);

  auto row = [](const char* name, const char* what, const Cell& c) {
    std::printf("%-3s %-9s %9.0f tx/s  p50 %6.2f ms  p99 %7.2f ms  failed %llu\n", name, what,
                c.tps, c.p50, c.p99, static_cast<unsigned long long>(c.failed));
  };
  std::printf("=== seigod cells (%d clients, %.1f s each, %u shards)\n", clients, seconds, n);
  row("T0", "library", t0);
  row("T1", "http", t1);
  row("T2", "http-key", t2);
  const double r1 = t0.tps > 0 ? t1.tps / t0.tps : 0, r2 = t0.tps > 0 ? t2.tps / t0.tps : 0;
  std::printf("T1/T0 %.2f (goal >= 0.7)   T2/T0 %.2f\n", r1, r2);
  if (!json_path.empty()) {
    std::ofstream j(json_path);
    auto cell = [&](const char* k, const Cell& c) {
      j << "  \"" << k << "\": {\"tps\": " << c.tps << ", \"p50_ms\": " << c.p50
        << ", \"p99_ms\": " << c.p99 << ", \"failed\": " << c.failed << "},\n";
    };
    j << "{\n";
    cell("T0", t0);
    cell("T1", t1);
    cell("T2", t2);
    j << "  \"T1/T0\": " << r1 << ",\n  \"T2/T0\": " << r2 << ",\n  \"clients\": " << clients
      << ",\n  \"seconds\": " << seconds << "\n}\n";
  }
  for (uint32_t s = 0; s < n; ++s) coord.QueryShard(s, "DROP TABLE IF EXISTS bench_http_players");
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
