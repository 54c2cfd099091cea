// A real coordinator process (tests/crash_helper.cc) kills itself with SIGKILL at a named crash
// point (SEIGO_CRASH_AT); then a resolver pass must leave the shards consistent and XA RECOVER
// empty, with the outcome the protocol promises for that point.
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "tests/db_test_util.h"

namespace seigo::testing {
namespace {

class CrashTest : public DbTest {
 protected:
  // Runs crash_helper with SEIGO_CRASH_AT=site; returns its wait status.
  int RunHelper(const std::string& site, const std::string& table, int64_t timeout_ms,
                int64_t a, int64_t b) {
    std::string cmd = "SEIGO_CRASH_AT=" + site + " " + SEIGO_CRASH_HELPER_PATH + " " + table +
                      " " + std::to_string(timeout_ms) + " 42 " + std::to_string(a) + " " +
                      std::to_string(b) + " >/dev/null 2>&1";
    int st = std::system(cmd.c_str());
    return st;
  }

  // Runs resolver passes until nothing is in doubt (or ~15 s).
  void RecoverUntilClean() {
    for (int i = 0; i < 150 && InDoubtCount() > 0; ++i) {
      coord_->Recover();
      if (InDoubtCount() == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(InDoubtCount(), 0u);
  }

  void ExpectCrashThenOutcome(const std::string& site, bool committed) {
    const std::string table = "t_crash_" + site;
    FreshTable(table);
    int64_t a, b;
    KeysOnTwoShards(&a, &b);
    int st = RunHelper(site, table, 1'000, a, b);
    // system() runs a shell that reports a child killed by signal 9 as exit status 128+9.
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL)
        << "crash_helper did not die at " << site << " (status " << st << ")";
    if (site != "before_prepare") {
      EXPECT_GE(InDoubtCount(), 1u) << "a prepared branch should be left behind";
    }
    RecoverUntilClean();
    const int64_t want = committed ? 42 : -1;
    EXPECT_EQ(ValueOf(table, a), want) << "decider shard";
    EXPECT_EQ(ValueOf(table, b), want) << "branch shard";
  }
};

TEST_F(CrashTest, CoordinatorKilledBeforePrepareLeavesNothing) {
  ExpectCrashThenOutcome("before_prepare", false);
}

TEST_F(CrashTest, CoordinatorKilledAfterPrepareIsRolledBackByRecover) {
  ExpectCrashThenOutcome("after_prepare", false);
}

TEST_F(CrashTest, CoordinatorKilledBeforeDecisionIsRolledBackByRecover) {
  ExpectCrashThenOutcome("before_decision", false);
}

TEST_F(CrashTest, CoordinatorKilledRightAfterCommitPointIsCommittedByRecover) {
  ExpectCrashThenOutcome("after_decision", true);
}

TEST_F(CrashTest, ResolverNeverAbortsBeforeDeadline) {
  FreshTable("t_deadline");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  int st = RunHelper("after_prepare", "t_deadline", 4'000, a, b);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL);
  ResolveReport r = coord_->Recover();
  EXPECT_TRUE(r.applied.empty());
  EXPECT_TRUE(r.fenced.empty());
  ASSERT_EQ(r.pending.size(), 1u);
  EXPECT_NE(r.pending[0].reason.find("deadline in"), std::string::npos) << r.pending[0].reason;
  EXPECT_EQ(InDoubtCount(), 1u);
  RecoverUntilClean();  // after the deadline it is rolled back
  EXPECT_EQ(ValueOf("t_deadline", b), -1);
}

TEST_F(CrashTest, ResolverKilledAfterFenceIsFinishedByTheNextPass) {
  FreshTable("t_resolver_crash");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  int st = RunHelper("after_prepare", "t_resolver_crash", 500, a, b);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  // A resolver process (the CLI) dies right after writing the abort decision.
  std::string cmd = std::string("SEIGO_CRASH_AT=resolver_after_fence ") + SEIGO_CLI_PATH +
                    " recover --shards '" + TestShards() + "' >/dev/null 2>&1";
  st = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL) << st;
  EXPECT_EQ(InDoubtCount(), 1u);
  InDoubtReport d = coord_->InDoubt();
  ASSERT_EQ(d.txs.size(), 1u);
  ASSERT_TRUE(d.txs[0].decision.has_value());
  EXPECT_EQ(d.txs[0].decision->outcome, Outcome::kAbort);
  RecoverUntilClean();
  EXPECT_EQ(ValueOf("t_resolver_crash", b), -1);
}

TEST_F(CrashTest, PhaseTwoInterruptedByCrashIsCommittedByRecover) {
  // Needs two prepared branches besides the decider: crash after the first XA COMMIT of phase
  // 2, leaving the second branch prepared under a commit decision.
  ASSERT_GE(coord_->shard_map().size(), 3u) << "scripts/test.sh starts 3 shards";
  FreshTable("t_phase2");
  int64_t keys[3] = {-1, -1, -1};
  for (int64_t k = 1; keys[0] < 0 || keys[1] < 0 || keys[2] < 0; ++k) {
    uint32_t s = coord_->shard_map().ShardFor(k);
    if (s < 3 && keys[s] < 0) keys[s] = k;
  }
  std::string cmd = std::string("SEIGO_CRASH_AT=during_phase2 ") + SEIGO_CRASH_HELPER_PATH +
                    " t_phase2 1000 42 " + std::to_string(keys[0]) + " " +
                    std::to_string(keys[1]) + " " + std::to_string(keys[2]) + " >/dev/null 2>&1";
  int st = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL) << st;
  EXPECT_EQ(InDoubtCount(), 1u) << "one branch committed, one still prepared";
  RecoverUntilClean();
  for (int64_t k : keys) EXPECT_EQ(ValueOf("t_phase2", k), 42) << k;
}

}  // namespace
}  // namespace seigo::testing
