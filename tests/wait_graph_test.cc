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


// T1 (older, 100) holds db0@10 and waits on db1@21 for db1@20; T2 (younger, 200) holds db1@20
// and waits on db0@11 for db0@10.
std::vector<LockWaits> TwoShardCycle() {
  std::vector<LockWaits> w(3);
  w[0].edges.push_back({11, 501, 10});
  w[0].published.push_back(Pub(11, 501, "t2", 200, "db1:3306@20,db0:3306@11"));
  w[1].edges.push_back({21, 601, 20});
  w[1].published.push_back(Pub(21, 601, "t1", 100, "db0:3306@10,db1:3306@21"));
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

TEST(WaitGraphTest, ASnapshotEdgeOfAnotherStatementOfTheThreadIsNotUsedAsExact) {
  // t2's row names query 500 (what its thread runs now: the store checks that live), but the
  // snapshot shows thread 11 waiting in query 501, an older statement: that edge says nothing
  // about statement 500, which is only presumed to wait. Presumed, it still closes the cycle.
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].published[0].query = 500;
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  ASSERT_EQ(g.victims.size(), 1u);
  EXPECT_EQ(g.victims[0].query, 500u);
  bool presumed = false;  // the edge t2 -> t1 has no holder thread: it is presumed
  for (const WaitEdge& e : g.edges) presumed |= e.waiter == "t2" && e.holder_thread == 0;
  EXPECT_TRUE(presumed);
}

TEST(WaitGraphTest, AWaitForAHolderThatIsNotWaitingIsNoCycle) {
  // t1 waits on db1 for thread 20, which no waiting transaction names: a running (or
  // committing) transaction, or another application's. Only the lock-wait timeout applies.
  std::vector<LockWaits> w(3);
  w[1].edges.push_back({21, 601, 20});
  w[1].published.push_back(Pub(21, 601, "t1", 100, "db0:3306@10,db1:3306@21"));
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
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  ASSERT_EQ(g.victims.size(), 1u);
  EXPECT_EQ(g.victims[0].report.victim, "t2");
  EXPECT_FALSE(g.victims[0].report.cross_shard);
}

TEST(WaitGraphTest, WaitsTooNewForTheSnapshotArePresumedAndACrossShardCycleIsFoundAtOnce) {
  // No snapshot shows the waits yet (InnoDB refreshes it at most every 100 ms): t1 waits on db1
  // and t2 has a connection there; t2 waits on db0 and t1 has one there. Presumed edges close
  // the cycle now, without waiting for the next snapshot.
  std::vector<LockWaits> w = TwoShardCycle();
  for (LockWaits& s : w) s.edges.clear();
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

TEST(WaitGraphTest, ASnapshotThatShowsAWaitOverridesThePresumption) {
  // db1's snapshot shows t1 waiting for thread 99 (not a seigo transaction, or one that is
  // running): t1 gets that exact edge only, not presumed ones, so there is no cycle, although
  // t2 (not in db0's snapshot) is presumed to wait for t1.
  std::vector<LockWaits> w = TwoShardCycle();
  w[1].edges = {{21, 601, 99}};
  w[0].edges.clear();
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  EXPECT_TRUE(g.victims.empty());
}

TEST(WaitGraphTest, AWaitMissingFromTheSnapshotIsStillPresumedForTheCacheMayBeOld) {
  // db0's snapshot does not show t2 waiting, however long ago t2 was published: InnoDB's cache
  // may be older than it looks (another client polling it keeps it from refreshing). t2 stays
  // presumed, and the cycle is still found.
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].edges.clear();
  w[0].snapshot_ms = 5000;
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  ASSERT_EQ(g.victims.size(), 1u);
  EXPECT_EQ(g.victims[0].report.victim, "t2");
}

TEST(WaitGraphTest, AFreshSnapshotWithoutTheWaitSaysItIsNoLockWait) {
  // db0's snapshot refreshed InnoDB's cache after t2 was published and does not show t2
  // waiting: t2's statement is slow, not waiting for a lock. No node, no cycle.
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].edges.clear();
  w[0].snapshot_ms = 5000;
  w[0].snapshot_fresh = true;
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  EXPECT_TRUE(g.victims.empty());
}

TEST(WaitGraphTest, AWaitWhosePresumptionWasDisprovedGetsNoPresumedEdges) {
  // t2 (not in db0's snapshot) was a member of a presumed cycle broken earlier and still waits
  // in the same statement: it never waited for that victim. Without its presumed edge to t1
  // there is no cycle.
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].edges.clear();
  const std::set<RunWait> disproved = {{"t2", 0}};
  EXPECT_TRUE(AnalyzeWaits(kStores, w, 1100, &disproved).victims.empty());
  EXPECT_EQ(AnalyzeWaits(kStores, w, 1100).victims.size(), 1u);  // and with it, a cycle
}

TEST(WaitGraphTest, AWaitIsPresumedOnlyWhileItIsYoung) {
  // Published 400 ms ago by db0's clock and still not in its snapshot: no longer presumed.
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].edges.clear();
  w[0].now_ms = 1400;
  EXPECT_TRUE(AnalyzeWaits(kStores, w, 1100).victims.empty());
}

TEST(WaitGraphTest, ConnectionsOnStoresThisProcessDoesNotUseAreIgnored) {
  std::vector<LockWaits> w = TwoShardCycle();
  w[0].published[0].threads = "elsewhere:3306@20,db0:3306@11";  // t2's db1 thread unknown
  WaitGraph g = AnalyzeWaits(kStores, w, 1100);
  EXPECT_TRUE(g.victims.empty());
}

}  // namespace
}  // namespace seigo::core
