// core::AnalyzeWaits: the wait-for graph between seigo transactions, its cycles and victims
// (doc/deadlocks.md). Pure function, no servers.
#include <gtest/gtest.h>

#include <set>

#include "core/deadlock.h"

namespace seigo::core {
namespace {

const std::vector<std::string> kStores = {"db0:3306", "db1:3306", "db2:3306"};

// A published waiting statement of transaction `txn` (priority `prio`) on thread `thread`,
// query `query`, holding `threads` ("store@thread,...").
LockWaits::Published Pub(uint64_t thread, uint64_t query, const std::string& txn, int64_t prio,
                         const std::string& threads) {
  LockWaits::Published p;
  p.thread = thread;
  p.query = query;
  p.txn = txn;
  p.priority_ms = prio;
  p.since_ms = 1000;
  p.published_ms = 1000;
  p.threads = threads;
  return p;
}

// The stores' lock-wait snapshots were taken after everything was published: every row is
// judged by them (exact), none presumed.
void Covered(std::vector<LockWaits>* w) {
  for (LockWaits& s : *w) s.snapshot_ms = 2000;
}

// T1 (older, 100) holds db0@10 and waits on db1@21 for db1@20; T2 (younger, 200) holds db1@20
// and waits on db0@11 for db0@10.
std::vector<LockWaits> TwoShardCycle() {
  std::vector<LockWaits> w(3);
  w[0].edges.push_back({11, 501, 10});
  w[0].published.push_back(Pub(11, 501, "t2", 200, "db1:3306@20,db0:3306@11"));
  w[1].edges.push_back({21, 601, 20});
  w[1].published.push_back(Pub(21, 601, "t1", 100, "db0:3306@10,db1:3306@21"));
  Covered(&w);
  return w;
}

TEST(WaitGraphTest, ACycleThroughTwoShardsIsBrokenAtItsYoungestTransaction) {
  WaitGraph g = AnalyzeWaits(kStores, TwoShardCycle(), 1100);
  ASSERT_EQ(g.victims.size(), 1u);
  const DeadlockVictim& v = g.victims[0];
  EXPECT_EQ(v.report.victim, "t2");
  EXPECT_EQ(v.store, 0u);
  EXPECT_EQ(v.thread, 11u);
  EXPECT_EQ(v.query, 501u);
  EXPECT_TRUE(v.report.cross_shard);
  EXPECT_EQ(v.report.waited_ms, 100);
  EXPECT_EQ(v.report.cycle, (std::vector<std::string>{"t2", "t1"}));
  EXPECT_EQ(g.edges.size(), 2u);
}

TEST(WaitGraphTest, PriorityNotArrivalOrderPicksTheVictim) {
  // The same cycle with the priorities swapped: now t1 is the younger and loses.
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].published[0].priority_ms = 50;
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  ASSERT_EQ(g.victims.size(), 1u);
  EXPECT_EQ(g.victims[0].report.victim, "t1");
  EXPECT_EQ(g.victims[0].store, 1u);
}

TEST(WaitGraphTest, ARowWhoseStatementNoLongerWaitsIsIgnored) {
  // t2's row names query 500, but thread 11 now waits in query 501 (a later statement, or
  // another transaction on the same connection): nothing is known about who that is.
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].published[0].query = 500;
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  EXPECT_TRUE(g.victims.empty());
}

TEST(WaitGraphTest, AWaitForAHolderThatIsNotWaitingIsNoCycle) {
  // t1 waits on db1 for thread 20, which no waiting transaction names: a running (or
  // committing) transaction, or another application's. Only the lock-wait timeout applies.
  std::vector<LockWaits> w(3);
  w[1].edges.push_back({21, 601, 20});
  w[1].published.push_back(Pub(21, 601, "t1", 100, "db0:3306@10,db1:3306@21"));
  Covered(&w);
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  EXPECT_TRUE(g.victims.empty());
  EXPECT_TRUE(g.edges.empty());
}

TEST(WaitGraphTest, ACycleThroughThreeShardsAndThreeTransactionsLosesOnlyItsYoungest) {
  // t1 -> t2 on db1, t2 -> t3 on db2, t3 -> t1 on db0.
  std::vector<LockWaits> w(3);
  w[1].edges.push_back({21, 1, 22});
  w[1].published.push_back(Pub(21, 1, "t1", 100, "db0:3306@10,db1:3306@21"));
  w[2].edges.push_back({32, 2, 33});
  w[2].published.push_back(Pub(32, 2, "t2", 300, "db1:3306@22,db2:3306@32"));
  w[0].edges.push_back({13, 3, 10});
  w[0].published.push_back(Pub(13, 3, "t3", 200, "db2:3306@33,db0:3306@13"));
  Covered(&w);
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  ASSERT_EQ(g.victims.size(), 1u);
  EXPECT_EQ(g.victims[0].report.victim, "t2");
  EXPECT_EQ(g.victims[0].store, 2u);
  EXPECT_EQ(g.victims[0].report.cycle.size(), 3u);
}

TEST(WaitGraphTest, TwoCyclesSharingNoTransactionEachLoseOne) {
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].edges.push_back({41, 701, 40});
  w[0].published.push_back(Pub(41, 701, "t4", 400, "db1:3306@50,db0:3306@41"));
  w[1].edges.push_back({51, 801, 50});
  w[1].published.push_back(Pub(51, 801, "t3", 300, "db0:3306@40,db1:3306@51"));
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  ASSERT_EQ(g.victims.size(), 2u);
  std::set<std::string> victims = {g.victims[0].report.victim, g.victims[1].report.victim};
  EXPECT_EQ(victims, (std::set<std::string>{"t2", "t4"}));
}

TEST(WaitGraphTest, ACycleOnOneShardIsReportedAsLocal) {
  // InnoDB breaks these itself at once (innodb_deadlock_detect); one that is still there
  // (detection switched off on the server) is broken the same way and counted as local.
  std::vector<LockWaits> w(3);
  w[0].edges.push_back({11, 1, 10});
  w[0].edges.push_back({10, 2, 11});
  w[0].published.push_back(Pub(11, 1, "t2", 200, "db0:3306@11"));
  w[0].published.push_back(Pub(10, 2, "t1", 100, "db0:3306@10"));
  Covered(&w);
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  ASSERT_EQ(g.victims.size(), 1u);
  EXPECT_EQ(g.victims[0].report.victim, "t2");
  EXPECT_FALSE(g.victims[0].report.cross_shard);
}

TEST(WaitGraphTest, WaitsTooNewForTheSnapshotArePresumedAndACrossShardCycleIsFoundAtOnce) {
  // No snapshot covers the rows yet (InnoDB refreshes it at most every 100 ms): t1 waits on db1
  // and t2 has a connection there; t2 waits on db0 and t1 has one there. Presumed edges close
  // the cycle now, without waiting for the next snapshot.
  std::vector<LockWaits> w = TwoShardCycle();
  for (LockWaits& s : w) {
    s.edges.clear();
    s.snapshot_ms = 500;  // older than the rows (published at 1000)
  }
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  ASSERT_EQ(g.victims.size(), 1u);
  EXPECT_EQ(g.victims[0].report.victim, "t2");
  EXPECT_TRUE(g.victims[0].report.cross_shard);
}

TEST(WaitGraphTest, PresumedWaitsOnTheSameStoreMakeNoCycle) {
  // Two transactions queued on one store, each with a branch on the other's... same store:
  // that is InnoDB's to judge (it sees both), not a presumed cross-shard cycle.
  std::vector<LockWaits> w(3);
  w[1].published.push_back(Pub(21, 1, "t1", 100, "db0:3306@10,db1:3306@21"));
  w[1].published.push_back(Pub(22, 2, "t2", 200, "db0:3306@11,db1:3306@22"));
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  EXPECT_TRUE(g.victims.empty());
}

TEST(WaitGraphTest, ASnapshotThatCoversAWaitOverridesThePresumption) {
  // t1's wait is covered by db1's snapshot, which shows it waiting for thread 99 (not a seigo
  // transaction, or one that is running): no edge from t1, so no cycle, although t2 (too new
  // for db0's snapshot) is presumed to wait for t1.
  std::vector<LockWaits> w = TwoShardCycle();
  w[1].edges = {{21, 601, 99}};
  w[1].snapshot_ms = 2000;
  w[0].edges.clear();
  w[0].snapshot_ms = 500;
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  EXPECT_TRUE(g.victims.empty());
}

TEST(WaitGraphTest, ACoveredRowWhoseStatementIsNotInTheSnapshotIsNotWaitingForALock) {
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].edges.clear();  // db0's snapshot (after t2 published) shows t2 waiting for nothing
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  EXPECT_TRUE(g.victims.empty());
}

TEST(WaitGraphTest, ConnectionsOnStoresThisProcessDoesNotUseAreIgnored) {
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].published[0].threads = "elsewhere:3306@20,db0:3306@11";  // t2's db1 thread unknown
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  EXPECT_TRUE(g.victims.empty());
}

}  // namespace
}  // namespace seigo::core
