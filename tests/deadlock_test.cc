// Cross-shard deadlocks (doc/deadlocks.md) against the real shards: a lock cycle across two
// shards between two coordinator PROCESSES (tests/bank_worker.cc, mode "cycle"), which neither
// server can see.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/db_test_util.h"

namespace seigo::testing {
namespace {

struct CycleWorker {
  pid_t pid = -1;
  std::string out;
};

CycleWorker SpawnCycle(int64_t first, int64_t second, const std::string& signal,
                       const std::string& wait, bool detect, int lock_wait_s) {
  CycleWorker w;
  w.out = signal + ".out";
  w.pid = SpawnWithStdout(SEIGO_BANK_WORKER_PATH,
                          {"cycle", std::to_string(first), std::to_string(second), signal, wait,
                           detect ? "1" : "0", std::to_string(lock_wait_s)},
                          w.out);
  return w;
}

struct CycleResult {
  std::string state, errnos;
  int attempts = 0;
  uint64_t victims = 0, broken = 0;
  bool reported = false;
};

CycleResult WaitCycle(const CycleWorker& w) {
  CycleResult r;
  int st = 0;
  if (w.pid > 0) waitpid(w.pid, &st, 0);
  std::ifstream f(w.out);
  std::string line, last;
  while (std::getline(f, line)) last = line;
  std::istringstream in(last);
  std::string k1, k2, k3, k4, k5;
  r.reported = static_cast<bool>(in >> k1 >> r.state >> k2 >> r.attempts >> k3 >> r.errnos >>
                                 k4 >> r.victims >> k5 >> r.broken) &&
               k1 == "state";
  std::remove(w.out.c_str());
  return r;
}

class DeadlockTest : public DbTest {
 protected:
  // Runs the two-process cycle: the OLDER process locks `a` (shard 0) then `b` (shard 1), the
  // younger `b` then `a`, each holding its first lock until the other holds its own.
  void RunCycle(bool detect, int lock_wait_s, CycleResult* older, CycleResult* younger) {
    for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
      ASSERT_TRUE(coord_->QueryShard(s, "DROP TABLE IF EXISTS bank_accounts").ok());
      ASSERT_TRUE(coord_->QueryShard(s, "CREATE TABLE bank_accounts (k BIGINT PRIMARY KEY, "
                                        "balance BIGINT NOT NULL) ENGINE=InnoDB").ok());
    }
    int64_t a = 0, b = 0;
    KeysOnTwoShards(&a, &b);
    ASSERT_TRUE(coord_->QueryShard(0, "INSERT INTO bank_accounts VALUES (?, 1000)", {a}).ok());
    ASSERT_TRUE(coord_->QueryShard(1, "INSERT INTO bank_accounts VALUES (?, 1000)", {b}).ok());
    const std::string dir = "/tmp/seigo-cycle-" + std::to_string(getpid());
    const std::string fa = dir + "-a", fb = dir + "-b";
    std::remove(fa.c_str());
    std::remove(fb.c_str());
    CycleWorker w1 = SpawnCycle(a, b, fa, fb, detect, lock_wait_s);
    ASSERT_GT(w1.pid, 0);
    // The second process starts its Run only after the first holds `a`: it is the younger.
    for (int i = 0; i < 3000 && access(fa.c_str(), F_OK) != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CycleWorker w2 = SpawnCycle(b, a, fb, fa, detect, lock_wait_s);
    ASSERT_GT(w2.pid, 0);
    *older = WaitCycle(w1);
    *younger = WaitCycle(w2);
    std::remove(fa.c_str());
    std::remove(fb.c_str());
    ASSERT_TRUE(older->reported && younger->reported) << "a worker did not report";
    auto ra = coord_->QueryShard(0, "SELECT balance FROM bank_accounts WHERE k = ?", {a});
    auto rb = coord_->QueryShard(1, "SELECT balance FROM bank_accounts WHERE k = ?", {b});
    ASSERT_TRUE(ra.ok() && rb.ok());
    // Each committed Run moved one unit from its first row to its second: both rows are back.
    EXPECT_EQ(*ra->Int(0, 0), 1000);
    EXPECT_EQ(*rb->Int(0, 0), 1000);
  }
};

TEST_F(DeadlockTest, CycleAcrossTwoShardsAndTwoProcessesIsBrokenByInterruptingTheYounger) {
  // A lock-wait timeout of 60 s: if the detector did not break the cycle, the backstop would
  // (after a minute), and the victim's error would be 1205, not 1317.
  CycleResult older, younger;
  RunCycle(/*detect=*/true, /*lock_wait_s=*/60, &older, &younger);
  EXPECT_EQ(older.state, "committed");
  EXPECT_EQ(younger.state, "committed");
  EXPECT_EQ(older.attempts, 1) << "the older transaction must never be the victim";
  EXPECT_EQ(older.errnos, "-");
  EXPECT_EQ(younger.attempts, 2);
  EXPECT_EQ(younger.errnos, "1317") << "the younger's first attempt was interrupted (KILL QUERY)";
  EXPECT_EQ(younger.victims, 1u);
  EXPECT_EQ(older.victims, 0u);
  // The victim's own process breaks the cycle (the other leaves it to it): counted once.
  EXPECT_EQ(younger.broken, 1u);
  EXPECT_EQ(older.broken, 0u);
}

TEST_F(DeadlockTest, WithoutTheDetectorTheSameCycleWaitsForTheLockWaitTimeout) {
  // The negative control: the same schedule with the detector off ends only through
  // innodb_lock_wait_timeout (1205), on whichever statement's wait ran out first.
  CycleResult older, younger;
  RunCycle(/*detect=*/false, /*lock_wait_s=*/1, &older, &younger);
  EXPECT_EQ(older.state, "committed");
  EXPECT_EQ(younger.state, "committed");
  EXPECT_EQ(older.broken + younger.broken, 0u);
  EXPECT_EQ(older.victims + younger.victims, 0u);
  EXPECT_NE(older.errnos + younger.errnos, "--") << "no attempt failed: there was no cycle";
  EXPECT_EQ((older.errnos + younger.errnos).find("1317"), std::string::npos);
}

TEST_F(DeadlockTest, StatusShowsWhoWaitsForWhomAcrossShards) {
  // One process, two Runs on two threads, the cycle held open with the detector off: LockWaits
  // (what `seigo status` prints) names both edges, on both shards.
  CoordinatorOptions o = TestOptions();
  o.deadlock.enabled = false;
  o.lock_wait_timeout_s = 2;  // then the backstop ends the cycle
  o.protocol.txn_timeout_ms = 10'000;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  FreshTable("dl_status");
  int64_t a = 0, b = 0;
  KeysOnTwoShards(&a, &b);
  ASSERT_TRUE(coord_->QueryShard(0, "INSERT INTO dl_status VALUES (?, 0)", {a}).ok());
  ASSERT_TRUE(coord_->QueryShard(1, "INSERT INTO dl_status VALUES (?, 0)", {b}).ok());
  std::atomic<int> holding{0};
  auto run = [&](int64_t first, int64_t second) {
    return (*c)->Run([&](Tx& tx) -> Status {
      SEIGO_RETURN_IF_ERROR(
          tx.Exec(first, "UPDATE dl_status SET v = v + 1 WHERE k = ?", {first}).status());
      if (tx.attempt() == 1) {
        holding++;
        while (holding.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return tx.Exec(second, "UPDATE dl_status SET v = v + 1 WHERE k = ?", {second}).status();
    });
  };
  TxResult r1, r2;
  std::thread t1([&] { r1 = run(a, b); });
  std::thread t2([&] { r2 = run(b, a); });
  DeadlockReport rep;
  // LockWaits publishes this process's waits older than check_after_ms, as a detector pass
  // does, and breaks nothing. Polling it every 20 ms is also the regression test for InnoDB's
  // information_schema cache, which a reader more often than every 100 ms keeps from ever
  // refreshing: reading INNODB_LOCK_WAITS on every call saw no edge at all here.
  for (int i = 0; i < 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    rep = (*c)->LockWaits();
    if (rep.waits.size() >= 2) break;
  }
  // `seigo status`, another process, sees the same two edges while the cycle is still held.
  std::string cli_out;
  if (rep.waits.size() >= 2) {
    FILE* f = popen((std::string(SEIGO_CLI_PATH) + " status --shards '" + TestShards() +
                     "' 2>&1").c_str(), "r");
    char buf[512];
    while (f != nullptr && std::fgets(buf, sizeof buf, f) != nullptr) cli_out += buf;
    if (f != nullptr) pclose(f);
  }
  t1.join();
  t2.join();
  std::string errors;
  for (const Status& e : rep.errors) errors += e.ToString() + "; ";
  for (const TxResult* r : {&r1, &r2}) {
    for (const AttemptInfo& h : r->history) errors += " attempt " + h.status.ToString();
  }
  ASSERT_EQ(rep.waits.size(), 2u) << "expected both edges of the cycle; ran " << rep.ran
                                  << "; errors: " << errors;
  EXPECT_NE(rep.waits[0].shard, rep.waits[1].shard);
  EXPECT_EQ(rep.waits[0].waiter, rep.waits[1].holder);
  EXPECT_EQ(rep.waits[1].waiter, rep.waits[0].holder);
  EXPECT_TRUE(rep.broken.empty());
  EXPECT_TRUE(r1.committed() && r2.committed());
  EXPECT_NE(cli_out.find("WAITS FOR"), std::string::npos) << cli_out;
  EXPECT_NE(cli_out.find("2 lock wait(s) between seigo transactions"), std::string::npos)
      << cli_out;
  EXPECT_NE(cli_out.find(rep.waits[0].waiter), std::string::npos) << cli_out;
}

}  // namespace
}  // namespace seigo::testing
