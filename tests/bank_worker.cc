// The bank workload's client process (tests/bank_test.cc, doc/isolation.md): accounts
// bank_accounts(k, balance) spread over the shards of SEIGO_TEST_SHARDS.
//
//   bank_worker transfer   SECONDS ACCOUNTS SEED THREADS   cross-shard transfers, guard >= 0
//   bank_worker read-lock  SECONDS ACCOUNTS SEED THREADS   read every account FOR SHARE
//   bank_worker read-plain SECONDS ACCOUNTS SEED THREADS   read every account, plain reads
//   bank_worker pairs      SECONDS ACCOUNTS SEED THREADS   issue 12's shape: pair j is the j-th
//                          account of shard 0 and the j-th of shard 1; transfers of 1 within a
//                          random pair in a random direction (cross-shard cycles)
//
// Readers check every read against the invariant (the sum of all balances is ACCOUNTS * 1000)
// and count the reads that break it ("fractured": a read saw part of a transfer). The last line
// on stdout is "committed N failed M reads R fractured F". Tests kill this process with SIGKILL
// at random moments: it keeps no state that matters.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "seigo/coordinator.h"

namespace {

std::string InList(const std::vector<int64_t>& keys) {
  std::string s;
  for (int64_t k : keys) s += (s.empty() ? "" : ",") + std::to_string(k);
  return s;
}

}  // namespace

// bank_worker cycle FIRST SECOND SIGNAL WAIT DETECT LOCK_WAIT_S
//   One Run: UPDATE bank_accounts row FIRST, create file SIGNAL, wait for file WAIT (first
//   attempt only), UPDATE row SECOND. Two of these with FIRST and SECOND swapped (and SIGNAL and
//   WAIT swapped) close a lock cycle across two shards between two processes
//   (tests/deadlock_test.cc). DETECT 0 turns the deadlock detector off. Last line: "state S
//   attempts N errnos E1,E2,.. victims V broken B".
int Cycle(char** argv) {
  const int64_t first = std::atoll(argv[2]), second = std::atoll(argv[3]);
  const std::string signal = argv[4], wait = argv[5];
  const char* shards = std::getenv("SEIGO_TEST_SHARDS");
  seigo::CoordinatorOptions o;
  o.shards = shards ? shards : "";
  o.deadlock.enabled = std::atoi(argv[6]) != 0;
  o.lock_wait_timeout_s = std::atoi(argv[7]);
  o.protocol.txn_timeout_ms = 120'000;
  o.resolver_interval_ms = 0;
  auto c = seigo::Coordinator::Open(o);
  if (!c.ok()) {
    std::fprintf(stderr, "bank_worker: %s\n", c.status().ToString().c_str());
    return 3;
  }
  seigo::TxResult r = (*c)->Run([&](seigo::Tx& tx) -> seigo::Status {
    SEIGO_RETURN_IF_ERROR(
        tx.Exec(first, "UPDATE bank_accounts SET balance = balance - 1 WHERE k = ?", {first})
            .status());
    if (tx.attempt() == 1) {
      std::fclose(std::fopen(signal.c_str(), "w"));
      for (int i = 0; i < 3000 && access(wait.c_str(), F_OK) != 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    return tx.Exec(second, "UPDATE bank_accounts SET balance = balance + 1 WHERE k = ?",
                   {second})
        .status();
  });
  std::string errnos;
  for (const seigo::AttemptInfo& a : r.history) {
    if (a.status.ok()) continue;
    errnos += (errnos.empty() ? "" : ",") + std::to_string(a.status.server_errno());
  }
  const auto n = (*c)->counters();
  std::printf("state %s attempts %d errnos %s victims %llu broken %llu\n",
              seigo::TxStateName(r.state), r.attempts, errnos.empty() ? "-" : errnos.c_str(),
              static_cast<unsigned long long>(n.deadlock_victims),
              static_cast<unsigned long long>(n.deadlocks_cross_shard));
  if (!r.committed()) std::fprintf(stderr, "bank_worker: %s\n", r.status.ToString().c_str());
  return r.committed() ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc >= 8 && std::string(argv[1]) == "cycle") return Cycle(argv);
  if (argc < 6) {
    std::fprintf(stderr, "usage: bank_worker transfer|read-lock|read-plain SECONDS ACCOUNTS SEED "
                         "THREADS\n");
    return 2;
  }
  const std::string mode = argv[1];
  const double seconds = std::atof(argv[2]);
  const int64_t accounts = std::atoll(argv[3]);
  const uint64_t seed = std::strtoull(argv[4], nullptr, 10);
  const int threads = std::atoi(argv[5]);
  const char* shards = std::getenv("SEIGO_TEST_SHARDS");
  seigo::CoordinatorOptions o;
  o.shards = shards ? shards : "";
  o.lock_wait_timeout_s = 1;
  o.protocol.txn_timeout_ms = 3'000;
  o.resolver_interval_ms = 500;
  auto c = seigo::Coordinator::Open(o);
  if (!c.ok()) {
    std::fprintf(stderr, "bank_worker: %s\n", c.status().ToString().c_str());
    return 3;
  }
  seigo::Coordinator& coord = **c;
  const uint32_t n_shards = static_cast<uint32_t>(coord.shard_map().size());
  std::vector<std::vector<int64_t>> by_shard(n_shards);
  for (int64_t k = 1; k <= accounts; ++k) by_shard[coord.shard_map().ShardFor(k)].push_back(k);
  const int64_t expected = accounts * 1000;

  std::atomic<uint64_t> committed{0}, failed{0}, reads{0}, fractured{0}, timeouts{0};
  const auto end = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(t));
      while (std::chrono::steady_clock::now() < end) {
        if (mode == "pairs") {
          // Pair j: the j-th account of shard 0 and the j-th of shard 1.
          const size_t pairs = std::min(by_shard[0].size(), by_shard[1].size());
          const size_t j = static_cast<size_t>(rng() % pairs);
          const bool forward = rng() % 2 == 0;
          const int64_t from = forward ? by_shard[0][j] : by_shard[1][j];
          const int64_t to = forward ? by_shard[1][j] : by_shard[0][j];
          seigo::TxResult r = coord.Run([&](seigo::Tx& tx) -> seigo::Status {
            SEIGO_RETURN_IF_ERROR(tx.ExecExpect(
                from, 1, "UPDATE bank_accounts SET balance = balance - 1 WHERE k = ? AND "
                         "balance >= 1", {from}));
            return tx.ExecExpect(to, 1, "UPDATE bank_accounts SET balance = balance + 1 WHERE "
                                        "k = ?", {to});
          });
          for (const seigo::AttemptInfo& a : r.history) {
            if (a.status.server_errno() == 1205) timeouts++;
          }
          (r.committed() ? committed : failed)++;
          continue;
        }
        if (mode == "transfer") {
          const int64_t from = 1 + static_cast<int64_t>(rng() % accounts);
          int64_t to = from;
          while (to == from || coord.shard_map().ShardFor(to) == coord.shard_map().ShardFor(from)) {
            to = 1 + static_cast<int64_t>(rng() % accounts);
          }
          const int64_t amount = 1 + static_cast<int64_t>(rng() % 10);
          seigo::TxResult r = coord.Run([&](seigo::Tx& tx) -> seigo::Status {
            SEIGO_RETURN_IF_ERROR(tx.ExecExpect(
                from, 1, "UPDATE bank_accounts SET balance = balance - ? WHERE k = ? AND "
                         "balance >= ?", {amount, from, amount}));
            return tx.ExecExpect(to, 1, "UPDATE bank_accounts SET balance = balance + ? WHERE "
                                        "k = ?", {amount, to});
          });
          (r.committed() ? committed : failed)++;
          continue;
        }
        const bool locking = mode == "read-lock";
        int64_t sum = 0;
        // Shards in a random order each time, so that reads interleave with transfers in
        // every way.
        std::vector<uint32_t> order(n_shards);
        for (uint32_t s = 0; s < n_shards; ++s) order[s] = s;
        std::shuffle(order.begin(), order.end(), rng);
        seigo::TxResult r = coord.Run([&](seigo::Tx& tx) -> seigo::Status {
          sum = 0;
          for (uint32_t s : order) {
            if (by_shard[s].empty()) continue;
            auto q = tx.ExecOn(s, "SELECT COALESCE(SUM(balance), 0) FROM bank_accounts WHERE k IN (" +
                                      InList(by_shard[s]) + ")" +
                                      (locking ? " LOCK IN SHARE MODE" : ""),
                               {});
            SEIGO_RETURN_IF_ERROR(q.status());
            auto v = q->Int(0, 0);
            SEIGO_RETURN_IF_ERROR(v.status());
            sum += *v;
          }
          return seigo::Status::OK();
        });
        if (!r.committed()) {
          failed++;
          continue;
        }
        reads++;
        if (sum != expected) fractured++;
        // A locking read holds every account's lock until it commits: give transfers a turn.
        if (locking) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  for (auto& t : ts) t.join();
  const auto n = coord.counters();
  // The last line: what the bank test reads (the deadlock figures after the first four).
  std::printf("committed %llu failed %llu reads %llu fractured %llu broken %llu victims %llu "
              "timeouts %llu\n",
              static_cast<unsigned long long>(committed.load()),
              static_cast<unsigned long long>(failed.load()),
              static_cast<unsigned long long>(reads.load()),
              static_cast<unsigned long long>(fractured.load()),
              static_cast<unsigned long long>(n.deadlocks_cross_shard + n.deadlocks_local),
              static_cast<unsigned long long>(n.deadlock_victims),
              static_cast<unsigned long long>(timeouts.load()));
  return 0;
}
