// seigo_bench: the cost of atomicity, as ratios against baselines measured in the same run
// (BENCHMARKS.md). Run it through scripts/bench.sh, which starts durable shards and adds the
// callgrind measurement (P4).
//
//   seigo_bench --shards URL,URL [--seconds S] [--clients 1,8,32,64] [--json FILE] [--skip-p5]
//               [--modes naive,seigo-cross,...]   (a subset of the modes below, by name)
//   seigo_bench --shards URL,URL --callgrind-txns N   (P4's fixed run; run under callgrind)
//   seigo_bench --calibrate N                          (P4's CPU-rate calibration loop)
//   Bank: --bank-seconds S (default 10), --skip-bank; --modes none runs only the bank.
//   SEIGO_BENCH_P4_NO_DETECTOR=1 with --callgrind-txns: the coordinator without its deadlock
//   detector thread (BENCHMARKS.md: under callgrind its idle polling inflates P4)
//
// Workload: the demo's trade (4 statements: seller loses an item and gains gold, buyer pays and
// gains the item) on its own tables bench_players / bench_inventory with ample balances, so no
// trade fails on a business rule. Modes, each with the same statements as prepared statements:
//   B1 naive        seller's side and buyer's side as two local transactions (raw libmariadb)
//   B2 raw-1shard   buyer and seller on one shard, one local transaction (raw libmariadb)
//   B3 textbook-2pc XA on both shards, PREPARE both, a coordinator log record written and
//                   fdatasync'ed to a local file, then XA COMMIT both synchronously (raw)
//   S  seigo-cross  seigo, buyer and seller on different shards (read-your-writes: phase 2
//                   before Run() returns, the default)
//   Sb seigo-cross-bg the same with Phase2Mode::kBackground (phase 2 on background threads)
//   S1 seigo-1shard seigo, buyer and seller on one shard
//   R  raw-read     read-only: both players' gold with locking reads on their two shards, one
//                   transaction per shard held until both reads are done (raw libmariadb)
//   Sr seigo-read   the same reads in a seigo read-only Run (RunOptions::read_only)
//   Sw seigo-read-2pc the same reads in an ordinary Run (XA on the second shard, decision)
//   Sn seigo-cross-nodl / S1n seigo-1shard-nodl  S and S1 with the deadlock detector off: the
//                   detector's cost where nothing deadlocks (issue 12: P1, P2 unchanged)
// Then the bank (issue 12, doc/deadlocks.md): 20 account pairs, each pair split over the two
// shards, 6 threads transferring within a random pair for --bank-seconds (default 10):
//   D1 one-direction   every transfer debits the pair's shard-0 account first (no cycle)
//   D2 random          a random direction each time (cross-shard cycles), detector on
//   D0 random-nodl     the same with the detector off (only innodb_lock_wait_timeout, 2 s)
//   DR random+reader   D2 with one more thread reading pair 0 with locking reads (read_only)
// Each cell also prints what the two servers spent per committed trade: CPU (both mariadbd
// processes, read from /proc through their pid files: the servers run on this machine) and
// durable writes (InnoDB redo fsyncs + binlog group commits).
#include <errmsg.h>
#include <fcntl.h>
#include <mysql.h>
#include <sys/resource.h>
#include <unistd.h>
#include <valgrind/callgrind.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/protocol.h"
#include "mariadb/mariadb_participant.h"
#include "seigo/coordinator.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kPlayers = 24'000;  // P5's 10,000 in-doubt trades need 10,000 per shard
constexpr int64_t kItems = 10;

const char* const kStatements[5] = {
    "UPDATE bench_inventory SET qty = qty - 1 WHERE player_id = ? AND item_id = ? AND qty >= 1",
    "UPDATE bench_players SET gold = gold + ? WHERE player_id = ?",
    "UPDATE bench_players SET gold = gold - ? WHERE player_id = ? AND gold >= ?",
    "INSERT INTO bench_inventory (player_id, item_id, qty) VALUES (?, ?, 1) "
    "ON DUPLICATE KEY UPDATE qty = qty + 1",
    // The read-only modes: a locking read of one player's gold.
    "SELECT gold FROM bench_players WHERE player_id = ? LOCK IN SHARE MODE",
};

[[noreturn]] void Die(const std::string& m) {
  std::fprintf(stderr, "seigo_bench: %s\n", m.c_str());
  std::exit(1);
}

// A minimal libmariadb client for the baselines: what an application without seigo would write.
class RawConn {
 public:
  explicit RawConn(const seigo::ShardUrl& u, bool prepare = true) {
    m_ = mysql_init(nullptr);
    if (!mysql_real_connect(m_, u.host.c_str(), u.user.c_str(), u.password.c_str(),
                            u.database.c_str(), u.port, nullptr, CLIENT_MULTI_STATEMENTS)) {
      Die(std::string("connect: ") + mysql_error(m_));
    }
    Text("SET SESSION innodb_lock_wait_timeout=2");
    for (int i = 0; i < 5 && prepare; ++i) {
      st_[i] = mysql_stmt_init(m_);
      if (mysql_stmt_prepare(st_[i], kStatements[i], std::strlen(kStatements[i])) != 0) {
        Die(std::string("prepare: ") + mysql_stmt_error(st_[i]));
      }
    }
  }
  ~RawConn() {
    for (MYSQL_STMT* s : st_) {
      if (s != nullptr) mysql_stmt_close(s);
    }
    mysql_close(m_);
  }
  // Returns the server error number (0 = OK). Drains every result of a multi-statement.
  unsigned Text(const std::string& sql) {
    if (mysql_real_query(m_, sql.data(), sql.size()) != 0) return mysql_errno(m_);
    for (;;) {
      if (MYSQL_RES* r = mysql_store_result(m_)) mysql_free_result(r);
      int n = mysql_next_result(m_);
      if (n < 0) return 0;
      if (n > 0) return mysql_errno(m_);
    }
  }
  // Rows of a text query, each cell as a string ("" for NULL); dies on error.
  std::vector<std::vector<std::string>> Rows(const std::string& sql) {
    if (mysql_real_query(m_, sql.data(), sql.size()) != 0) Die(mysql_error(m_));
    MYSQL_RES* r = mysql_store_result(m_);
    if (r == nullptr) Die(std::string("no result: ") + mysql_error(m_));
    std::vector<std::vector<std::string>> out;
    const unsigned n = mysql_num_fields(r);
    while (MYSQL_ROW row = mysql_fetch_row(r)) {
      out.emplace_back();
      for (unsigned i = 0; i < n; ++i) out.back().push_back(row[i] != nullptr ? row[i] : "");
    }
    mysql_free_result(r);
    return out;
  }
  unsigned Exec(int i, std::initializer_list<long long> params) {
    MYSQL_BIND b[3];
    long long v[3];
    std::memset(b, 0, sizeof b);
    size_t n = 0;
    for (long long p : params) {
      v[n] = p;
      b[n].buffer_type = MYSQL_TYPE_LONGLONG;
      b[n].buffer = &v[n];
      n++;
    }
    if (mysql_stmt_bind_param(st_[i], b) != 0 || mysql_stmt_execute(st_[i]) != 0) {
      return mysql_stmt_errno(st_[i]);
    }
    if (mysql_stmt_field_count(st_[i]) > 0) {  // a SELECT: read its rows
      if (mysql_stmt_store_result(st_[i]) != 0) return mysql_stmt_errno(st_[i]);
      mysql_stmt_free_result(st_[i]);
    }
    return 0;
  }

 private:
  MYSQL* m_;
  MYSQL_STMT* st_[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
};

struct Trade {
  int64_t buyer, seller, item, price;
};

// Coordinator log of the textbook 2PC baseline: one record per transaction, fdatasync'ed.
class CoordinatorLog {
 public:
  explicit CoordinatorLog(const std::string& path) {
    fd_ = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0644);
    if (fd_ < 0) Die("cannot open " + path);
  }
  ~CoordinatorLog() { ::close(fd_); }
  void Commit(const std::string& xid) {
    std::lock_guard<std::mutex> l(mu_);
    std::string rec = "commit " + xid + "\n";
    if (::write(fd_, rec.data(), rec.size()) != static_cast<ssize_t>(rec.size()) ||
        ::fdatasync(fd_) != 0) {
      Die("coordinator log write failed");
    }
  }

 private:
  std::mutex mu_;
  int fd_;
};

struct Env {
  seigo::ShardMap map;
  std::unique_ptr<seigo::Coordinator> coord;     // read-your-writes (the default)
  std::unique_ptr<seigo::Coordinator> coord_bg;  // Phase2Mode::kBackground
  std::unique_ptr<seigo::Coordinator> coord_nodl;  // the deadlock detector off
  std::unique_ptr<CoordinatorLog> log;
  std::vector<int64_t> by_shard[2];  // players on shard 0 / 1
};

enum class Mode {
  kNaive, kRaw1, kTextbook, kSeigoCross, kSeigo1, kSeigoCrossBg,
  kRawRead, kSeigoRead, kSeigoReadAs2pc,  // the read-only cross-shard modes
  kSeigoCrossNoDl, kSeigo1NoDl,           // the deadlock detector off
};
const char* ModeName(Mode m) {
  switch (m) {
    case Mode::kNaive: return "B1 naive";
    case Mode::kRaw1: return "B2 raw-1shard";
    case Mode::kTextbook: return "B3 textbook-2pc";
    case Mode::kSeigoCross: return "S  seigo-cross";
    case Mode::kSeigo1: return "S1 seigo-1shard";
    case Mode::kSeigoCrossBg: return "Sb seigo-cross-bg";
    case Mode::kRawRead: return "R  raw-read";
    case Mode::kSeigoRead: return "Sr seigo-read";
    case Mode::kSeigoReadAs2pc: return "Sw seigo-read-2pc";
    case Mode::kSeigoCrossNoDl: return "Sn seigo-cross-nodl";
    case Mode::kSeigo1NoDl: return "S1n seigo-1shard-nodl";
  }
  return "?";
}

bool Retryable(unsigned e) {
  return e == 1213 || e == 1205 || e == 1614 || e == 1613;
}

// One trade in a baseline mode on raw connections; returns true if it committed.
bool RawTrade(Mode mode, const Trade& t, RawConn* c[2], uint32_t sb, uint32_t ss,
              CoordinatorLog* log, uint64_t seq) {
  RawConn& b = *c[sb];
  RawConn& s = *c[ss];
  unsigned e = 0;
  auto fail = [&](RawConn& x) {
    x.Text("ROLLBACK");
    return false;
  };
  if (mode == Mode::kNaive) {
    if ((e = s.Text("START TRANSACTION")) || (e = s.Exec(0, {t.seller, t.item})) ||
        (e = s.Exec(1, {t.price, t.seller})) || (e = s.Text("COMMIT"))) {
      return fail(s);
    }
    if ((e = b.Text("START TRANSACTION")) || (e = b.Exec(2, {t.price, t.buyer, t.price})) ||
        (e = b.Exec(3, {t.buyer, t.item})) || (e = b.Text("COMMIT"))) {
      return fail(b);  // the naive client has no way to undo the seller's side
    }
    return true;
  }
  if (mode == Mode::kRawRead) {
    // Both players' gold with locking reads, one transaction per shard, both held until every
    // read is done, then both committed.
    if ((e = s.Text("START TRANSACTION")) || (e = b.Text("START TRANSACTION")) ||
        (e = s.Exec(4, {t.seller})) || (e = b.Exec(4, {t.buyer})) || (e = s.Text("COMMIT")) ||
        (e = b.Text("COMMIT"))) {
      fail(s);
      return fail(b);
    }
    return true;
  }
  if (mode == Mode::kRaw1) {
    if ((e = b.Text("START TRANSACTION")) || (e = b.Exec(0, {t.seller, t.item})) ||
        (e = b.Exec(1, {t.price, t.seller})) || (e = b.Exec(2, {t.price, t.buyer, t.price})) ||
        (e = b.Exec(3, {t.buyer, t.item})) || (e = b.Text("COMMIT"))) {
      return fail(b);
    }
    return true;
  }
  // Textbook 2PC.
  const std::string g = "'bench-" + std::to_string(getpid()) + "-" + std::to_string(seq) + "'";
  const std::string xs = g + ",'s'", xb = g + ",'b'";
  auto rollback = [&] {
    s.Text("XA END " + xs);
    s.Text("XA ROLLBACK " + xs);
    b.Text("XA END " + xb);
    b.Text("XA ROLLBACK " + xb);
    return false;
  };
  if ((e = s.Text("XA START " + xs)) || (e = b.Text("XA START " + xb))) return rollback();
  if ((e = s.Exec(0, {t.seller, t.item})) || (e = b.Exec(2, {t.price, t.buyer, t.price})) ||
      (e = b.Exec(3, {t.buyer, t.item})) || (e = s.Exec(1, {t.price, t.seller}))) {
    return rollback();
  }
  if ((e = s.Text("XA END " + xs + ";XA PREPARE " + xs)) ||
      (e = b.Text("XA END " + xb + ";XA PREPARE " + xb))) {
    return rollback();
  }
  log->Commit(g);
  if (s.Text("XA COMMIT " + xs) || b.Text("XA COMMIT " + xb)) Die("textbook XA COMMIT failed");
  return true;
}

seigo::Status SeigoRead(seigo::Tx& tx, const Trade& t) {
  SEIGO_RETURN_IF_ERROR(tx.Exec(t.seller, kStatements[4], {t.seller}).status());
  return tx.Exec(t.buyer, kStatements[4], {t.buyer}).status();
}

seigo::Status SeigoTrade(seigo::Tx& tx, const Trade& t) {
  SEIGO_RETURN_IF_ERROR(tx.ExecExpect(t.seller, 1, kStatements[0], {t.seller, t.item}));
  SEIGO_RETURN_IF_ERROR(tx.ExecExpect(t.buyer, 1, kStatements[2], {t.price, t.buyer, t.price}));
  SEIGO_RETURN_IF_ERROR(tx.Exec(t.buyer, kStatements[3], {t.buyer, t.item}).status());
  return tx.ExecExpect(t.seller, 1, kStatements[1], {t.price, t.seller});
}

Trade PickTrade(Env& env, Mode mode, std::mt19937_64& rng) {
  Trade t;
  t.item = static_cast<int64_t>(rng() % kItems) + 1;
  t.price = static_cast<int64_t>(rng() % 10) + 1;
  const bool one_shard = mode == Mode::kRaw1 || mode == Mode::kSeigo1 || mode == Mode::kSeigo1NoDl;
  const int sb = static_cast<int>(rng() % 2);
  const int ss = one_shard ? sb : 1 - sb;
  do {
    t.buyer = env.by_shard[sb][rng() % env.by_shard[sb].size()];
    t.seller = env.by_shard[ss][rng() % env.by_shard[ss].size()];
  } while (t.buyer == t.seller);
  return t;
}

// Committed and failed transactions of one thread (or, merged, of a cell) and the latencies of
// the committed ones, in ms.
struct Tally {
  std::vector<double> lat;
  uint64_t ok = 0, bad = 0;
  void Add(bool committed, Clock::time_point t0) {
    if (!committed) {
      bad++;
      return;
    }
    ok++;
    lat.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  void MergeInto(std::mutex& mu, Tally* all) const {
    std::lock_guard<std::mutex> l(mu);
    all->lat.insert(all->lat.end(), lat.begin(), lat.end());
    all->ok += ok;
    all->bad += bad;
  }
  void Sort() { std::sort(lat.begin(), lat.end()); }
  double Percentile(int p) const {  // after Sort(); 0 when empty
    if (lat.empty()) return 0;
    return lat[std::min(lat.size() - 1, lat.size() * static_cast<size_t>(p) / 100)];
  }
};

struct Cell {
  double tps = 0, p50 = 0, p99 = 0;
  uint64_t committed = 0, failed = 0;
  // What the two servers spent per committed trade in the measured window: CPU (user + system
  // of both mariadbd processes, from /proc; -1 if not readable) and durable writes (InnoDB redo
  // fsyncs + binlog group commits, each one fsync with sync_binlog=1).
  double server_cpu_us = -1, fsyncs = 0;
};

// The servers' counters at one moment: where the time goes at high client counts.
struct ServerSample {
  double cpu_s = 0;  // < 0: a server's /proc entry was not readable
  double fsyncs = 0;
};

ServerSample SampleServers(const seigo::ShardMap& map) {
  ServerSample out;
  for (uint32_t s = 0; s < map.size(); ++s) {
    RawConn c(map.shard(s), /*prepare=*/false);
    for (const auto& row : c.Rows("SHOW GLOBAL STATUS WHERE Variable_name IN "
                                  "('Innodb_os_log_fsyncs', 'Binlog_group_commits')")) {
      out.fsyncs += std::atof(row[1].c_str());
    }
    // The server runs on this machine (127.0.0.1): its pid file names the process.
    const auto pid_file = c.Rows("SELECT @@pid_file");
    std::ifstream pf(pid_file.empty() ? "" : pid_file[0][0]);
    long pid = 0;
    std::ifstream st;
    if (pf >> pid) st.open("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(st, line) || line.rfind(')') == std::string::npos) {
      out.cpu_s = -1e18;
      continue;
    }
    // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
    std::vector<std::string> f;
    std::string tok;
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    while (rest >> tok) f.push_back(tok);
    const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
    out.cpu_s += (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) / tick;
  }
  return out;
}

Cell RunCell(Env& env, Mode mode, int clients, double seconds) {
  std::atomic<bool> measuring{false}, stop{false};
  std::atomic<uint64_t> seq{0};
  std::mutex mu;
  Tally all;
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937_64 rng(0x5e190 + static_cast<uint64_t>(i) * 7919 + static_cast<uint64_t>(mode));
      std::unique_ptr<RawConn> conns[2];
      RawConn* c[2] = {nullptr, nullptr};
      if (mode == Mode::kNaive || mode == Mode::kRaw1 || mode == Mode::kTextbook ||
          mode == Mode::kRawRead) {
        for (int s = 0; s < 2; ++s) {
          conns[s] = std::make_unique<RawConn>(env.map.shard(s));
          c[s] = conns[s].get();
        }
      }
      Tally mine;
      while (!stop) {
        Trade t = PickTrade(env, mode, rng);
        auto t0 = Clock::now();
        bool committed_one;
        if (c[0] != nullptr) {
          committed_one = false;
          for (int attempt = 0; attempt < 10 && !committed_one; ++attempt) {
            committed_one = RawTrade(mode, t, c, env.map.ShardFor(t.buyer),
                                     env.map.ShardFor(t.seller), env.log.get(), seq++);
          }
        } else {
          seigo::Coordinator* co =
              mode == Mode::kSeigoCrossBg                                  ? env.coord_bg.get()
              : mode == Mode::kSeigoCrossNoDl || mode == Mode::kSeigo1NoDl ? env.coord_nodl.get()
                                                                           : env.coord.get();
          if (mode == Mode::kSeigoRead || mode == Mode::kSeigoReadAs2pc) {
            seigo::RunOptions ro;
            ro.read_only = mode == Mode::kSeigoRead;
            committed_one =
                co->Run([&](seigo::Tx& tx) { return SeigoRead(tx, t); }, ro).committed();
          } else {
            committed_one =
                co->Run([&](seigo::Tx& tx) { return SeigoTrade(tx, t); }).committed();
          }
        }
        if (!measuring) continue;
        mine.Add(committed_one, t0);
      }
      mine.MergeInto(mu, &all);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // warm-up: pools, caches
  const ServerSample s0 = SampleServers(env.map);
  measuring = true;
  auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  measuring = false;
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const ServerSample s1 = SampleServers(env.map);
  stop = true;
  for (auto& t : threads) t.join();
  if (env.coord_bg) env.coord_bg->DrainPhase2();
  all.Sort();
  Cell cell;
  cell.committed = all.ok;
  cell.failed = all.bad;
  cell.tps = static_cast<double>(all.ok) / elapsed;
  if (all.ok > 0) {
    const double n = static_cast<double>(all.ok);
    if (s0.cpu_s >= 0 && s1.cpu_s >= 0) cell.server_cpu_us = (s1.cpu_s - s0.cpu_s) * 1e6 / n;
    cell.fsyncs = (s1.fsyncs - s0.fsyncs) / n;
  }
  cell.p50 = all.Percentile(50);
  cell.p99 = all.Percentile(99);
  return cell;
}

void Setup(Env& env) {
  for (uint32_t s = 0; s < 2; ++s) {
    RawConn c(env.map.shard(s), /*prepare=*/false);
    unsigned e = c.Text(
        "DROP TABLE IF EXISTS bench_players, bench_inventory;"
        "CREATE TABLE bench_players (player_id BIGINT PRIMARY KEY, gold BIGINT NOT NULL) "
        "ENGINE=InnoDB;"
        "CREATE TABLE bench_inventory (player_id BIGINT, item_id INT, qty BIGINT NOT NULL, "
        "PRIMARY KEY (player_id, item_id)) ENGINE=InnoDB");
    if (e != 0) Die("setup failed: error " + std::to_string(e));
  }
  std::string rows[2], items[2];
  auto flush = [&](int s) {
    RawConn c(env.map.shard(s), /*prepare=*/false);
    if (!rows[s].empty() && c.Text("INSERT INTO bench_players VALUES " + rows[s]) != 0) Die("seed");
    if (!items[s].empty() && c.Text("INSERT INTO bench_inventory VALUES " + items[s]) != 0) {
      Die("seed");
    }
    rows[s].clear();
    items[s].clear();
  };
  for (int64_t p = 1; p <= kPlayers; ++p) {
    const uint32_t s = env.map.ShardFor(p);
    env.by_shard[s].push_back(p);
    rows[s] += (rows[s].empty() ? "(" : ",(") + std::to_string(p) + ",1000000000)";
    for (int64_t i = 1; i <= kItems; ++i) {
      items[s] += (items[s].empty() ? "(" : ",(") + std::to_string(p) + "," + std::to_string(i) +
                  ",1000000)";
    }
    if (rows[s].size() > 50'000) flush(static_cast<int>(s));
  }
  flush(0);
  flush(1);
}

std::unique_ptr<seigo::Coordinator> OpenCoordinator(const std::string& shards,
                                                    seigo::Phase2Mode phase2,
                                                    int64_t resolver_interval_ms = 1'000,
                                                    bool deadlock_detection = true) {
  seigo::CoordinatorOptions o;
  o.shards = shards;
  o.phase2 = phase2;
  o.resolver_interval_ms = resolver_interval_ms;
  o.deadlock.enabled = deadlock_detection;
  auto c = seigo::Coordinator::Open(o);
  if (!c.ok()) Die(c.status().ToString());
  return std::move(*c);
}

// The bank (issue 12): kPairs pairs of accounts, account 2j+1 on shard 0 and its partner on
// shard 1, transfers of 1 within a pair.
constexpr int kPairs = 20;
constexpr int kBankThreads = 6;

struct BankPair {
  int64_t a = 0, b = 0;  // on shard 0, on shard 1
};

std::vector<BankPair> SetupBank(Env& env) {
  for (uint32_t s = 0; s < 2; ++s) {
    RawConn c(env.map.shard(s), /*prepare=*/false);
    if (c.Text("DROP TABLE IF EXISTS bench_bank;"
               "CREATE TABLE bench_bank (k BIGINT PRIMARY KEY, balance BIGINT NOT NULL) "
               "ENGINE=InnoDB") != 0) {
      Die("bank setup failed");
    }
  }
  std::vector<BankPair> pairs;
  const size_t n = static_cast<size_t>(kPairs);
  for (size_t j = 0; j < n; ++j) pairs.push_back({env.by_shard[0][j], env.by_shard[1][j]});
  for (uint32_t s = 0; s < 2; ++s) {
    std::string rows;
    for (const BankPair& p : pairs) {
      rows += (rows.empty() ? "(" : ",(") + std::to_string(s == 0 ? p.a : p.b) + ",1000000)";
    }
    RawConn c(env.map.shard(s), /*prepare=*/false);
    if (c.Text("INSERT INTO bench_bank VALUES " + rows) != 0) Die("bank seed failed");
  }
  return pairs;
}

struct BankCell {
  double tps = 0, p50 = 0, p99 = 0, reads_per_s = 0;
  uint64_t failed = 0, broken = 0, victims = 0;
  uint64_t timeouts = 0;  // attempts ended by innodb_lock_wait_timeout (the backstop)
  double wait_ms_avg = 0;  // how long a victim's statement had waited when its cycle was broken
  uint64_t wait_ms_max = 0;  // (the coordinator's longest so far)
};

BankCell RunBank(seigo::Coordinator* co, const std::vector<BankPair>& pairs, bool random_dir,
                 bool reader, double seconds) {
  std::atomic<bool> stop{false};
  std::mutex mu;
  Tally all;
  std::atomic<uint64_t> reads{0}, timeouts{0};
  const seigo::Coordinator::Counters c0 = co->counters();
  std::vector<std::thread> threads;
  for (int i = 0; i < kBankThreads; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937_64 rng(0xba4c + static_cast<uint64_t>(i));
      Tally mine;
      while (!stop) {
        const BankPair& p = pairs[rng() % pairs.size()];
        const bool forward = !random_dir || rng() % 2 == 0;
        const int64_t from = forward ? p.a : p.b, to = forward ? p.b : p.a;
        auto t0 = Clock::now();
        seigo::TxResult r = co->Run([&](seigo::Tx& tx) -> seigo::Status {
          SEIGO_RETURN_IF_ERROR(tx.ExecExpect(
              from, 1, "UPDATE bench_bank SET balance = balance - 1 WHERE k = ?", {from}));
          return tx.ExecExpect(to, 1, "UPDATE bench_bank SET balance = balance + 1 WHERE k = ?",
                               {to});
        });
        for (const seigo::AttemptInfo& a : r.history) {
          if (a.status.server_errno() == 1205) timeouts++;
        }
        mine.Add(r.committed(), t0);
      }
      mine.MergeInto(mu, &all);
    });
  }
  if (reader) {
    threads.emplace_back([&] {
      std::mt19937_64 rng(0x4ead);
      seigo::RunOptions ro;
      ro.read_only = true;
      while (!stop) {
        const BankPair& p = pairs[0];
        const bool a_first = rng() % 2 == 0;
        const int64_t k1 = a_first ? p.a : p.b, k2 = a_first ? p.b : p.a;
        int64_t sum = 0;
        seigo::TxResult r = co->Run(
            [&](seigo::Tx& tx) -> seigo::Status {
              sum = 0;
              for (int64_t k : {k1, k2}) {
                auto q = tx.Exec(k, "SELECT balance FROM bench_bank WHERE k = ? LOCK IN SHARE MODE",
                                 {k});
                SEIGO_RETURN_IF_ERROR(q.status());
                auto v = q->Int(0, 0);
                SEIGO_RETURN_IF_ERROR(v.status());
                sum += *v;
              }
              return seigo::Status::OK();
            },
            ro);
        if (r.committed()) {
          if (sum != 2'000'000) Die("bank: a locking read of a pair saw half a transfer");
          reads++;
        }
      }
    });
  }
  auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const seigo::Coordinator::Counters c1 = co->counters();
  all.Sort();
  BankCell cell;
  cell.tps = static_cast<double>(all.ok) / elapsed;
  cell.failed = all.bad;
  cell.reads_per_s = static_cast<double>(reads.load()) / elapsed;
  cell.broken = (c1.deadlocks_cross_shard + c1.deadlocks_local) -
                (c0.deadlocks_cross_shard + c0.deadlocks_local);
  cell.victims = c1.deadlock_victims - c0.deadlock_victims;
  cell.timeouts = timeouts.load();
  if (cell.broken > 0) {
    cell.wait_ms_avg = static_cast<double>(c1.deadlock_wait_ms_total - c0.deadlock_wait_ms_total) /
                       static_cast<double>(cell.broken);
  }
  cell.wait_ms_max = c1.deadlock_wait_ms_max;
  cell.p50 = all.Percentile(50);
  cell.p99 = all.Percentile(99);
  return cell;
}

// P5: 1,000 transactions whose coordinator "crashed" right after the commit point (their
// phase-2 connections are simply closed), then resolver passes until XA RECOVER is empty.
double MeasureRecovery(Env& env, int n) {
  std::vector<std::unique_ptr<seigo::mariadb::MariaDbParticipant>> owned;
  std::vector<seigo::Participant*> raw;
  std::string deployment;
  for (uint32_t s = 0; s < 2; ++s) {
    seigo::mariadb::Config c;
    c.url = env.map.shard(s);
    c.index = s;
    auto p = seigo::mariadb::MariaDbParticipant::Open(c, false, &deployment);
    if (!p.ok()) Die(p.status().ToString());
    raw.push_back(p->get());
    owned.push_back(std::move(*p));
  }
  seigo::core::Protocol protocol(raw, seigo::DefaultEnv(), seigo::ProtocolOptions{});
  int made = 0;
  n = std::min<int>(n, static_cast<int>(std::min(env.by_shard[0].size(), env.by_shard[1].size())));
  for (int i = 0; i < n; ++i) {
    // Distinct players per transaction: the prepared branches left behind hold their row locks
    // until recovery, and a later transaction must not wait on them.
    Trade t{env.by_shard[i % 2][static_cast<size_t>(i)], env.by_shard[1 - i % 2][static_cast<size_t>(i)],
            1, 1};
    seigo::core::RunOutput out =
        protocol.Run([&](seigo::Tx& tx) { return SeigoTrade(tx, t); });
    if (out.result.committed()) made++;
    // Dropping the phase-2 items closes their connections without XA COMMIT: exactly what a
    // crash after the commit point leaves behind.
  }
  auto in_doubt = [&] { return seigo::core::InspectInDoubt(raw, seigo::DefaultEnv()).txs.size(); };
  const size_t before = in_doubt();
  seigo::ResolverOptions ro;
  double secs = 0;  // time spent in resolver passes only (checking what is left is not timed)
  int passes = 0;
  std::string per_pass;
  for (int pass = 0; pass < 100; ++pass) {
    auto t0 = Clock::now();
    seigo::ResolveReport rep = seigo::core::ResolvePass(raw, seigo::DefaultEnv(), ro);
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    secs += t;
    passes++;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%.3f s/%zu applied", per_pass.empty() ? "" : ", ", t,
                  rep.applied.size());
    per_pass += buf;
    if (in_doubt() == 0) break;
  }
  std::fprintf(stderr, "P5: %d committed, %zu in doubt after the crash, resolved in %.3f s "
               "(%d passes: %s)\n", made, before, secs, passes, per_pass.c_str());
  if (in_doubt() != 0) Die("P5: transactions still in doubt after 100 passes");
  return secs;
}

std::vector<int> ParseList(const std::string& s) {
  std::vector<int> v;
  size_t start = 0;
  while (start < s.size()) {
    size_t c = s.find(',', start);
    if (c == std::string::npos) c = s.size();
    v.push_back(std::atoi(s.substr(start, c - start).c_str()));
    start = c + 1;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shards, json_path, clients_arg = "1,8,32,64";
  double seconds = 3;
  long callgrind_txns = 0, calibrate = 0;
  bool skip_p5 = false, skip_bank = false;
  double bank_seconds = 10;
  std::string modes_arg;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--shards") shards = next();
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--clients") clients_arg = next();
    else if (a == "--json") json_path = next();
    else if (a == "--callgrind-txns") callgrind_txns = std::atol(next().c_str());
    else if (a == "--calibrate") calibrate = std::atol(next().c_str());
    else if (a == "--skip-p5") skip_p5 = true;
    else if (a == "--modes") modes_arg = next();
    else if (a == "--bank-seconds") bank_seconds = std::atof(next().c_str());
    else if (a == "--skip-bank") skip_bank = true;
    else Die("unknown argument " + a + " (see the comment at the top of bench/seigo_bench.cc)");
  }
  if (calibrate > 0) {
    // A fixed CPU loop: its instruction count (callgrind) over its native run time gives this
    // machine's instructions per microsecond, to turn P4's instruction count into time.
    uint64_t h = 1469598103934665603ULL;
    auto t0 = Clock::now();
    CALLGRIND_START_INSTRUMENTATION;
    for (long i = 0; i < calibrate; ++i) h = (h ^ static_cast<uint64_t>(i)) * 1099511628211ULL;
    CALLGRIND_STOP_INSTRUMENTATION;
    double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    std::printf("calibrate %ld iterations %.1f us (hash %llu)\n", calibrate, us,
                static_cast<unsigned long long>(h));
    return 0;
  }
  auto map = seigo::ShardMap::Parse(shards);
  if (!map.ok()) Die(map.status().ToString());
  if (map->size() != 2) Die("the benchmark wants exactly 2 shards");
  Env env{std::move(*map), nullptr, nullptr, nullptr, {}};

  if (callgrind_txns > 0) {
    for (int64_t p = 1; p <= kPlayers; ++p) env.by_shard[env.map.ShardFor(p)].push_back(p);
    // No background resolver: P4 is the transaction path's cost, not garbage collection of
    // whatever earlier runs left in the decision table.
    env.coord = OpenCoordinator(shards, seigo::Phase2Mode::kBeforeReturn, 0,
                                std::getenv("SEIGO_BENCH_P4_NO_DETECTOR") == nullptr);
    std::mt19937_64 rng(7);
    for (int i = 0; i < 50; ++i) {  // warm-up outside the measurement
      Trade t = PickTrade(env, Mode::kSeigoCross, rng);
      env.coord->Run([&](seigo::Tx& tx) { return SeigoTrade(tx, t); });
    }
    env.coord->DrainPhase2();
    rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    CALLGRIND_START_INSTRUMENTATION;
    long ok = 0;
    for (long i = 0; i < callgrind_txns; ++i) {
      Trade t = PickTrade(env, Mode::kSeigoCross, rng);
      ok += env.coord->Run([&](seigo::Tx& tx) { return SeigoTrade(tx, t); }).committed();
    }
    env.coord->DrainPhase2();
    CALLGRIND_STOP_INSTRUMENTATION;
    getrusage(RUSAGE_SELF, &r1);
    auto us = [](const timeval& a, const timeval& b) {
      return (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_usec - a.tv_usec);
    };
    const double n = static_cast<double>(callgrind_txns);
    std::printf("callgrind-txns %ld committed %ld user_us_per_txn %.1f sys_us_per_txn %.1f\n",
                callgrind_txns, ok, us(r0.ru_utime, r1.ru_utime) / n,
                us(r0.ru_stime, r1.ru_stime) / n);
    return ok == callgrind_txns ? 0 : 1;
  }

  std::fprintf(stderr, "setting up %lld players on 2 shards...\n",
               static_cast<long long>(kPlayers));
  Setup(env);
  env.coord = OpenCoordinator(shards, seigo::Phase2Mode::kBeforeReturn);
  env.coord_bg = OpenCoordinator(shards, seigo::Phase2Mode::kBackground);
  env.coord_nodl = OpenCoordinator(shards, seigo::Phase2Mode::kBeforeReturn, 1'000, false);
  env.log = std::make_unique<CoordinatorLog>("/tmp/seigo_bench_coordinator.log");
  std::vector<Mode> modes;
  for (Mode m : {Mode::kNaive, Mode::kRaw1, Mode::kTextbook, Mode::kSeigoCross,
                 Mode::kSeigoCrossBg, Mode::kSeigo1, Mode::kRawRead, Mode::kSeigoRead,
                 Mode::kSeigoReadAs2pc, Mode::kSeigoCrossNoDl, Mode::kSeigo1NoDl}) {
    // --modes naive,seigo-cross: the mode names without their tags ("B1 ", "S  ", ...).
    std::string name = ModeName(m);
    name = name.substr(name.find(' ') + 1);
    name = name.substr(name.find_first_not_of(' '));
    if (modes_arg.empty() || ("," + modes_arg + ",").find("," + name + ",") != std::string::npos) {
      modes.push_back(m);
    }
  }
  if (modes.empty() && !(modes_arg == "none" && !skip_bank)) {
    Die("--modes " + modes_arg + " names no mode");
  }
  std::map<std::pair<int, int>, Cell> results;
  const std::vector<int> client_counts = ParseList(clients_arg);
  std::printf("%-18s %8s %10s %9s %9s %8s %12s %8s\n", "mode", "clients", "trades/s", "p50 ms",
              "p99 ms", "failed", "srv us/trade", "fsync/tr");
  for (int clients : client_counts) {
    for (Mode m : modes) {
      Cell c = RunCell(env, m, clients, seconds);
      results[{static_cast<int>(m), clients}] = c;
      std::printf("%-18s %8d %10.0f %9.2f %9.2f %8llu %12.0f %8.2f\n", ModeName(m), clients,
                  c.tps, c.p50, c.p99, static_cast<unsigned long long>(c.failed), c.server_cpu_us,
                  c.fsyncs);
      std::fflush(stdout);
    }
  }
  auto tps = [&](Mode m, int clients) { return results[{static_cast<int>(m), clients}].tps; };
  const int ref = std::find(client_counts.begin(), client_counts.end(), 32) != client_counts.end()
                      ? 32
                      : client_counts.back();
  auto ratio = [&](double a, double b) { return b > 0 ? a / b : 0.0; };
  const double p1 = ratio(tps(Mode::kSeigoCross, ref), tps(Mode::kNaive, ref));
  const double p2 = ratio(tps(Mode::kSeigo1, ref), tps(Mode::kRaw1, ref));
  const double p3 = ratio(tps(Mode::kSeigoCross, ref), tps(Mode::kTextbook, ref));
  const double p1_bg = ratio(tps(Mode::kSeigoCrossBg, ref), tps(Mode::kNaive, ref));
  const int high = client_counts.back();
  const double p1_high = ratio(tps(Mode::kSeigoCross, high), tps(Mode::kNaive, high));
  // Read-only cross-shard transactions (issue 13): seigo's read-only Run against raw locking
  // reads, and the same reads as an ordinary Run (the full two-phase commit they paid before).
  const double r1 = ratio(tps(Mode::kSeigoRead, ref), tps(Mode::kRawRead, ref));
  const double r1_2pc = ratio(tps(Mode::kSeigoReadAs2pc, ref), tps(Mode::kRawRead, ref));
  const double p1_nodl = ratio(tps(Mode::kSeigoCrossNoDl, ref), tps(Mode::kNaive, ref));
  const double p2_nodl = ratio(tps(Mode::kSeigo1NoDl, ref), tps(Mode::kRaw1, ref));
  // The bank (issue 12): D1 one direction, D2 random (detector on), D0 random (off), DR random
  // with a locking reader of pair 0.
  BankCell d1, d2, d0, dr;
  if (!skip_bank) {
    const std::vector<BankPair> pairs = SetupBank(env);
    std::printf("%-18s %8s %10s %9s %9s %8s %8s %10s %8s %8s\n", "bank", "threads", "xfers/s",
                "p50 ms", "p99 ms", "failed", "broken", "wait ms", "timeouts", "reads/s");
    auto row = [&](const char* name, const BankCell& c) {
      std::printf("%-18s %8d %10.0f %9.2f %9.2f %8llu %8llu %10.1f %8llu %8.1f\n", name,
                  kBankThreads, c.tps, c.p50, c.p99, static_cast<unsigned long long>(c.failed),
                  static_cast<unsigned long long>(c.broken), c.wait_ms_avg,
                  static_cast<unsigned long long>(c.timeouts), c.reads_per_s);
      std::fflush(stdout);
    };
    d1 = RunBank(env.coord.get(), pairs, false, false, bank_seconds);
    row("D1 one-direction", d1);
    d2 = RunBank(env.coord.get(), pairs, true, false, bank_seconds);
    row("D2 random", d2);
    d0 = RunBank(env.coord_nodl.get(), pairs, true, false, bank_seconds);
    row("D0 random-nodl", d0);
    dr = RunBank(env.coord.get(), pairs, true, true, bank_seconds);
    row("DR random+reader", dr);
  }
  env.coord_nodl.reset();
  double p5 = -1;
  env.coord.reset();  // stop their background resolvers: P5 measures a resolver of its own
  env.coord_bg.reset();
  double p5_10k = -1;
  if (!skip_p5) {
    p5 = MeasureRecovery(env, 1000);
    p5_10k = MeasureRecovery(env, 10000);
  }
  std::printf("P1 %.3f (read-your-writes; background phase 2: %.3f; at %d clients: %.3f)\n"
              "P2 %.3f\nP3 %.3f\n",
              p1, p1_bg, high, p1_high, p2, p3);
  if (p5 >= 0) std::printf("P5 %.3f (1,000 in doubt)\nP5_10k %.3f (10,000 in doubt)\n", p5, p5_10k);
  std::printf("R1 %.3f (read-only cross-shard reads: seigo read_only / raw; as an ordinary Run: "
              "%.3f)\n", r1, r1_2pc);
  std::printf("(ratios at %d clients)\n", ref);
  if (tps(Mode::kSeigoCrossNoDl, ref) > 0 || tps(Mode::kSeigo1NoDl, ref) > 0) {
    std::printf("P1 with the deadlock detector off %.3f, P2 %.3f (its cost where nothing "
                "deadlocks: on/off %.3f, %.3f)\n",
                p1_nodl, p2_nodl, ratio(p1, p1_nodl), ratio(p2, p2_nodl));
  }
  const double d_ratio = ratio(d2.tps, d1.tps), d_ratio_off = ratio(d0.tps, d1.tps);
  if (!skip_bank) {
    std::printf("D random/one-direction %.3f (detector off: %.3f); p99 of a random-direction "
                "transfer %.1f ms (off: %.1f ms); locking reader of one pair %.1f reads/s beside "
                "%d writers; cycles broken %llu\n",
                d_ratio, d_ratio_off, d2.p99, d0.p99, dr.reads_per_s, kBankThreads,
                static_cast<unsigned long long>(d2.broken));
  }
  if (!json_path.empty()) {
    std::ofstream j(json_path);
    j << "{\n  \"clients_for_ratios\": " << ref << ",\n  \"P1\": " << p1
      << ",\n  \"P1_background_phase2\": " << p1_bg << ",\n  \"P1_at_" << high << "\": " << p1_high
      << ",\n  \"P2\": " << p2
      << ",\n  \"P3\": " << p3 << ",\n  \"R1\": " << r1 << ",\n  \"R1_as_2pc\": " << r1_2pc
      << ",\n  \"P5\": " << p5 << ",\n  \"P5_10k\": " << p5_10k
      << ",\n  \"P1_detector_off\": " << p1_nodl << ",\n  \"P2_detector_off\": " << p2_nodl
      << ",\n  \"D_ratio\": " << d_ratio << ",\n  \"D_ratio_detector_off\": " << d_ratio_off
      << ",\n  \"D_p99_ms\": " << d2.p99 << ",\n  \"D_p99_ms_detector_off\": " << d0.p99
      << ",\n  \"D_reader_reads_per_s\": " << dr.reads_per_s
      << ",\n  \"D_cycles_broken\": " << d2.broken << ",\n  \"seconds_per_cell\": " << seconds
      << ",\n  \"cells\": [\n";
    bool first = true;
    for (auto& [k, c] : results) {
      j << (first ? "" : ",\n") << "    {\"mode\": \"" << ModeName(static_cast<Mode>(k.first))
        << "\", \"clients\": " << k.second << ", \"tps\": " << c.tps << ", \"p50_ms\": " << c.p50
        << ", \"p99_ms\": " << c.p99 << ", \"failed\": " << c.failed
        << ", \"server_cpu_us_per_trade\": " << c.server_cpu_us
        << ", \"fsyncs_per_trade\": " << c.fsyncs << "}";
      first = false;
    }
    j << "\n  ]\n}\n";
  }
  return 0;
}
