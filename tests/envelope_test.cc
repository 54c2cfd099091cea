// Atomicity holes outside the first tested envelope (issue 7), each against real MariaDB:
// shared servers, other clients of the same store, clocks and time zones, restarted servers and
// stale pools, careless closures. Each test says what the code before the fix did.
#include <mysql.h>
#include <sys/wait.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <thread>

#include "core/protocol.h"
#include "mariadb/mariadb_participant.h"
#include "tests/db_test_util.h"

namespace seigo::testing {
namespace {

// An Env that freezes shard 0's mariadbd (SIGSTOP) when a commit point is about to be sent, and
// thaws it (SIGCONT) `thaw_after_ms` later (0: never; the test kills it).
struct FreezingEnv final : Env {
  std::string pid_file;
  int64_t thaw_after_ms = 0;
  std::thread thaw;
  ~FreezingEnv() override {
    if (thaw.joinable()) thaw.join();
  }
  int64_t NowMs() override { return DefaultEnv()->NowMs(); }
  void SleepMs(int64_t ms) override { DefaultEnv()->SleepMs(ms); }
  uint64_t Random64() override { return DefaultEnv()->Random64(); }
  void CrashPoint(CrashSite site) override {
    if (site != CrashSite::kBeforeDecision || thaw.joinable() || frozen) return;
    frozen = true;
    std::system(("kill -STOP $(cat " + pid_file + ")").c_str());
    if (thaw_after_ms > 0) {
      thaw = std::thread([f = pid_file, ms = thaw_after_ms] {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        std::system(("kill -CONT $(cat " + f + ")").c_str());
      });
    }
  }
  bool frozen = false;
};

class EnvelopeTest : public DbTest {
 protected:
  // The test shard list with every database renamed to `db` (created on each server).
  std::string ShardsIn(const std::string& db) {
    Result<ShardMap> map = ShardMap::Parse(TestShards());
    EXPECT_TRUE(map.ok());
    std::string out;
    for (size_t i = 0; i < map->size(); ++i) {
      const ShardUrl& u = map->shard(i);
      EXPECT_TRUE(coord_->QueryShard(static_cast<uint32_t>(i),
                                     "CREATE DATABASE IF NOT EXISTS " + db).ok());
      out += (out.empty() ? "" : ",") + std::string("mysql://") + u.user + ":" + u.password +
             "@" + u.host + ":" + std::to_string(u.port) + "/" + db;
    }
    return out;
  }
  void DropDatabase(const std::string& db) {
    for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
      coord_->QueryShard(s, "DROP DATABASE IF EXISTS " + db);
    }
  }
  const ShardUrl& Url(uint32_t shard) { return coord_->shard_map().shard(shard); }
  // Runs SQL text with the mariadb client (for what the prepared-statement protocol cannot
  // carry: CREATE PROCEDURE, time zone tables).
  // Statements in `sql_or_pipe` are separated by "//" (so that procedure bodies may hold ';').
  int Client(uint32_t shard, const std::string& db, const std::string& sql_or_pipe,
             bool pipe = false) {
    const ShardUrl& u = Url(shard);
    std::string client = "mariadb -h" + u.host + " -P" + std::to_string(u.port) + " -u" + u.user +
                         " -p" + u.password + (pipe ? " " : " --delimiter=// ") + db;
    std::string cmd = pipe ? sql_or_pipe + " | " + client + " >/dev/null 2>&1"
                           : client + " -e \"" + sql_or_pipe + "\" >/dev/null 2>&1";
    return std::system(cmd.c_str());
  }
  std::string Servers() {
    const char* s = std::getenv("SEIGO_SERVERS_SCRIPT");
    return s ? s : "";
  }
  // Creates procedure `name` with `body` on shards 0 and 1 (dropping an older one).
  void CreateProcedure(const std::string& name, const std::string& body) {
    for (uint32_t s = 0; s < 2; ++s) {
      ASSERT_EQ(Client(s, Url(s).database, "DROP PROCEDURE IF EXISTS " + name +
                                               "// CREATE PROCEDURE " + name + body + "//"),
                0);
    }
  }
  // A participant for shard `i` of the test list, as another process would have it.
  std::unique_ptr<mariadb::MariaDbParticipant> OpenParticipant(uint32_t i) {
    mariadb::Config c;
    c.url = Url(i);
    c.index = i;
    std::string dep = coord_->deployment();
    auto p = mariadb::MariaDbParticipant::Open(c, false, &dep);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? std::move(*p) : nullptr;
  }
  // A branch of a transaction decided `outcome` whose deadline was 100 s ago, prepared on
  // shard 1 by `session` (left open), with the decision row written on shard 0 by hand.
  Xid PrepareOldBranch(mariadb::MariaDbParticipant& p, std::unique_ptr<Session>* session,
                       const std::string& table, int64_t key, Outcome outcome) {
    const int64_t now = DefaultEnv()->NowMs();
    Xid xid{coord_->deployment(), core::NewGid(DefaultEnv()), 0, now - 100'000, now - 90'000, 1};
    auto s = p.Acquire();
    EXPECT_TRUE(s.ok());
    *session = std::move(*s);
    EXPECT_TRUE((*session)->BeginBranch(xid).ok());
    Value v[] = {key};
    EXPECT_TRUE((*session)->Execute("INSERT INTO " + table + " (k, v) VALUES (?, 42)", v).ok());
    EXPECT_TRUE((*session)->Prepare(xid).ok());
    auto d = coord_->QueryShard(0, "INSERT INTO seigo_decision (gid, outcome, shards, deadline_ms)"
                                   " VALUES (?, ?, '0,1', ?)",
                                {xid.gid, outcome == Outcome::kCommit ? "C" : "A",
                                 xid.deadline_ms});
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return xid;
  }
  int64_t KeyOnShard(uint32_t shard, int64_t from = 1) {
    for (int64_t k = from;; ++k) {
      if (coord_->shard_map().ShardFor(k) == shard) return k;
    }
  }
};

// Case 1. Two deployments (databases game_a and game_b) on the same two servers. B's
// coordinator dies right after its commit point; after B's deadline A's resolver runs. Before
// the fix A saw B's branch in XA RECOVER (server-wide), found no decision in game_a, fenced an
// abort there and rolled back B's committed branch: B's decider committed, its branch not.
TEST_F(EnvelopeTest, TwoDeploymentsOnOneServerNeverTouchEachOthersBranches) {
  DropDatabase("game_a");
  DropDatabase("game_b");
  CoordinatorOptions oa = TestOptions(), ob = TestOptions();
  oa.shards = ShardsIn("game_a");
  ob.shards = ShardsIn("game_b");
  auto a = Coordinator::Open(oa);
  auto b = Coordinator::Open(ob);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << b.status().ToString();
  EXPECT_NE((*a)->deployment(), (*b)->deployment());
  for (uint32_t s = 0; s < 2; ++s) {
    ASSERT_TRUE((*b)->QueryShard(s, "CREATE TABLE t_dep (k BIGINT PRIMARY KEY, v BIGINT)").ok());
  }
  int64_t ka, kb;
  KeysOnTwoShards(&ka, &kb);
  const std::string cmd = "SEIGO_TEST_SHARDS='" + ob.shards + "' SEIGO_CRASH_AT=after_decision " +
                          SEIGO_CRASH_HELPER_PATH + " t_dep 1000 42 " + std::to_string(ka) + " " +
                          std::to_string(kb) + " >/dev/null 2>&1";
  int st = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL) << "status " << st;
  ASSERT_EQ((*b)->InDoubt().txs.size(), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past B's deadline
  for (int i = 0; i < 5; ++i) {
    ResolveReport r = (*a)->Recover();
    EXPECT_TRUE(r.applied.empty() && r.fenced.empty() && r.pending.empty())
        << "deployment A acted on a branch that is not its own";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ((*a)->InDoubt().txs.size(), 0u) << "A must not even list B's branches";
  ASSERT_EQ((*b)->InDoubt().txs.size(), 1u) << "B's committed branch must still be prepared";
  for (int i = 0; i < 50 && !(*b)->InDoubt().txs.empty(); ++i) {
    (*b)->Recover();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (int64_t k : {ka, kb}) {
    auto r = (*b)->QueryShard((*b)->shard_map().ShardFor(k), "SELECT v FROM t_dep WHERE k = ?",
                              {k});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->rows.size(), 1u) << "key " << k << ": B's transaction lost half of its writes";
    EXPECT_EQ(*r->Int(0, 0), 42);
  }
  a->reset();
  b->reset();
  DropDatabase("game_a");
  DropDatabase("game_b");
}

// A shard list that mixes two deployments' databases is refused at Open.
TEST_F(EnvelopeTest, ShardListMixingTwoDeploymentsIsRefused) {
  DropDatabase("game_c");
  DropDatabase("game_d");
  CoordinatorOptions oc = TestOptions(), od = TestOptions();
  oc.shards = ShardsIn("game_c");
  od.shards = ShardsIn("game_d");
  ASSERT_TRUE(Coordinator::Open(oc).ok());
  ASSERT_TRUE(Coordinator::Open(od).ok());
  // shard 0 of C followed by shard 1 of D
  CoordinatorOptions mixed = TestOptions();
  const std::string c0 = oc.shards.substr(0, oc.shards.find(','));
  std::string d1 = od.shards.substr(od.shards.find(',') + 1);
  d1 = d1.substr(0, d1.find(','));
  mixed.shards = c0 + "," + d1;
  auto m = Coordinator::Open(mixed);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kInvalidArgument);
  EXPECT_NE(m.status().message().find("two deployments"), std::string::npos)
      << m.status().ToString();
  DropDatabase("game_c");
  DropDatabase("game_d");
}

// Another application's XA branch on the same server is never touched.
TEST_F(EnvelopeTest, ForeignXaBranchOnTheServerIsLeftAlone) {
  MYSQL* m = mysql_init(nullptr);
  const ShardUrl& u = Url(1);
  ASSERT_NE(mysql_real_connect(m, u.host.c_str(), u.user.c_str(), u.password.c_str(),
                               u.database.c_str(), u.port, nullptr, 0),
            nullptr);
  ASSERT_EQ(mysql_query(m, "CREATE TABLE IF NOT EXISTS t_other_app (k INT)"), 0);
  ASSERT_EQ(mysql_query(m, "XA START 'other-app-1'"), 0);
  ASSERT_EQ(mysql_query(m, "INSERT INTO t_other_app VALUES (1)"), 0);
  ASSERT_EQ(mysql_query(m, "XA END 'other-app-1'"), 0);
  ASSERT_EQ(mysql_query(m, "XA PREPARE 'other-app-1'"), 0);
  mysql_close(m);  // detached: any connection could now finish it
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (int i = 0; i < 3; ++i) coord_->Recover();
  auto rec = coord_->QueryShard(1, "XA RECOVER");
  ASSERT_TRUE(rec.ok());
  bool listed = false;
  for (const auto& row : rec->rows) listed |= row[3] && *row[3] == "other-app-1";
  EXPECT_TRUE(listed) << "seigo finished another application's branch";
  MYSQL* cleanup = mysql_init(nullptr);
  ASSERT_NE(mysql_real_connect(cleanup, u.host.c_str(), u.user.c_str(), u.password.c_str(),
                               u.database.c_str(), u.port, nullptr, 0),
            nullptr);
  EXPECT_EQ(mysql_query(cleanup, "XA ROLLBACK 'other-app-1'"), 0) << mysql_error(cleanup);
  mysql_close(cleanup);
}

int64_t UtcEpoch(int y, int mo, int d, int h, int mi) {
  std::tm t{};
  t.tm_year = y - 1900;
  t.tm_mon = mo - 1;
  t.tm_mday = d;
  t.tm_hour = h;
  t.tm_min = mi;
  return static_cast<int64_t>(timegm(&t));
}

// Case 2. The decider's clock must not depend on the session time zone. In the hour that
// America/New_York repeats (2026-11-01, 01:00-02:00 local, twice), UNIX_TIMESTAMP(NOW(6)) —
// the clock before the fix — is off by an hour for one of the two passes; seigo's clock reads
// real time in both, and at the spring change too.
TEST_F(EnvelopeTest, DeciderClockReadsRealTimeInTheRepeatedDstHour) {
  auto loaded = coord_->QueryShard(
      0, "SELECT COUNT(*) FROM mysql.time_zone_name WHERE Name = 'America/New_York'");
  ASSERT_TRUE(loaded.ok());
  if (*loaded->Int(0, 0) == 0) {
    ASSERT_EQ(Client(0, "mysql",
                     "mariadb-tzinfo-to-sql /usr/share/zoneinfo/America/New_York "
                     "America/New_York",
                     /*pipe=*/true),
              0)
        << "loading the America/New_York time zone table failed";
  }
  bool old_clock_wrong = false;
  for (int64_t t : {UtcEpoch(2026, 11, 1, 5, 30),   // 01:30 EDT
                    UtcEpoch(2026, 11, 1, 6, 30),   // 01:30 EST, the repeated hour
                    UtcEpoch(2026, 11, 1, 4, 59),   // the hour before the change
                    UtcEpoch(2027, 3, 14, 7, 30)}) {  // 03:30 EDT, just after the spring gap
    // Each reading runs on one connection that sets the zone and a fixed session time.
    MYSQL* m = mysql_init(nullptr);
    const ShardUrl& u = Url(0);
    ASSERT_NE(mysql_real_connect(m, u.host.c_str(), u.user.c_str(), u.password.c_str(),
                                 u.database.c_str(), u.port, nullptr, 0),
              nullptr);
    ASSERT_EQ(mysql_query(m, ("SET time_zone = 'America/New_York', timestamp = " +
                              std::to_string(t)).c_str()),
              0)
        << mysql_error(m);
    ASSERT_EQ(mysql_query(m, (std::string("SELECT ") + mariadb::ServerNowMsSql() +
                              ", CAST(UNIX_TIMESTAMP(NOW(6)) * 1000 AS SIGNED)").c_str()),
              0)
        << mysql_error(m);
    MYSQL_RES* res = mysql_store_result(m);
    MYSQL_ROW row = mysql_fetch_row(res);
    const int64_t seigo_clock = std::atoll(row[0]);
    const int64_t old_clock = std::atoll(row[1]);
    mysql_free_result(res);
    mysql_close(m);
    EXPECT_EQ(seigo_clock, t * 1000) << "at " << t;
    if (old_clock != t * 1000) old_clock_wrong = true;
  }
  EXPECT_TRUE(old_clock_wrong)
      << "this world does not contain the DST hazard, so the test proves nothing";
}

// Case 2, through a closure. A closure that moves its session's clock (SET timestamp, SET
// time_zone) on the decider must not move seigo's. Before the fix the decider read the moved
// clock: two hours ahead it refused every commit as past the deadline (gave up).
TEST_F(EnvelopeTest, ClosureThatMovesTheSessionClockDoesNotMoveTheDecidersClock) {
  FreshTable("t_clock");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  for (const char* move : {"SET timestamp = UNIX_TIMESTAMP() + 7200",
                           "SET timestamp = UNIX_TIMESTAMP() - 7200",
                           "SET time_zone = '+13:00'"}) {
    TxResult r = coord_->Run([&](Tx& tx) -> Status {
      SEIGO_RETURN_IF_ERROR(tx.Exec(a, move, {}).status());
      SEIGO_RETURN_IF_ERROR(
          tx.Exec(a, "REPLACE INTO t_clock (k, v) VALUES (?, 1)", {a}).status());
      return tx.Exec(b, "REPLACE INTO t_clock (k, v) VALUES (?, 1)", {b}).status();
    });
    EXPECT_TRUE(r.committed()) << move << ": " << r.status.ToString();
  }
}

// Case 3. Statements that would end the transaction, run by a closure on the decider (or a
// branch) before it aborts. Before the fix the decider was a plain local transaction: COMMIT,
// BEGIN, SET autocommit=1, DDL (implicit commit) committed the decider's earlier writes while
// the other shard rolled back. Now they are refused before they reach the server (and, on an
// XA branch, by the server too); the attempt aborts with nothing committed.
TEST_F(EnvelopeTest, ClosureThatEndsTheTransactionIsRefusedAndNothingCommits) {
  FreshTable("t_end");
  CreateProcedure("seigo_p_commit", "() BEGIN COMMIT; END");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  int n = 0;
  for (const char* stmt : {"COMMIT", "BEGIN", "START TRANSACTION", "ROLLBACK",
                           "SET autocommit = 1", "CREATE TABLE t_end_ddl (x INT)",
                           "LOCK TABLES t_end WRITE", "CALL seigo_p_commit()",
                           "XA END 'x'",
                           // Found by the simulator: statements that carry a COMMIT, or commit
                           // implicitly, past a deny-list classifier.
                           "SET STATEMENT max_statement_time=0 FOR COMMIT",
                           "IF 1 THEN COMMIT; END IF", "BEGIN NOT ATOMIC COMMIT; END",
                           "/*!COMMIT*/",
                           "SET PASSWORD FOR 'seigo_nobody'@'localhost' = PASSWORD('x')"}) {
    // On the decider (a local transaction) and on an XA branch; the closure returns an error,
    // or ignores the refused statement and returns OK.
    for (int variant = 0; variant < 4; ++variant) {
      const bool closure_returns_ok = variant % 2 == 1;
      const bool on_branch = variant >= 2;
      const int64_t ka = KeyOnShard(0, 1000 + 100 * n), kb = KeyOnShard(1, 1000 + 100 * n);
      ++n;
      Status seen;
      TxResult r = coord_->Run([&](Tx& tx) -> Status {
        SEIGO_RETURN_IF_ERROR(tx.Exec(ka, "INSERT INTO t_end (k, v) VALUES (?, 1)", {ka}).status());
        SEIGO_RETURN_IF_ERROR(tx.Exec(kb, "INSERT INTO t_end (k, v) VALUES (?, 1)", {kb}).status());
        // The careless closure ignores the error...
        seen = tx.Exec(on_branch ? kb : ka, stmt, {}).status();
        if (closure_returns_ok) return Status::OK();  // ...and returns OK
        return Tx::Abort("changed my mind");
      });
      EXPECT_FALSE(r.committed()) << stmt;
      EXPECT_FALSE(seen.ok()) << stmt << " was accepted inside a seigo transaction";
      if (closure_returns_ok) {
        EXPECT_EQ(r.status.code(), Code::kInvalidArgument) << stmt << ": " << r.status.ToString();
        EXPECT_EQ(r.attempts, 1) << "a closure that is wrong is not retried";
      }
      EXPECT_EQ(ValueOf("t_end", ka), -1) << stmt << ": the decider's write committed";
      EXPECT_EQ(ValueOf("t_end", kb), -1) << stmt;
    }
  }
  auto ddl = coord_->QueryShard(0, "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                                   "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't_end_ddl'");
  EXPECT_EQ(*ddl->Int(0, 0), 0);
}

// Case 3, the pool. A closure that changes its session (time zone, a user variable, sql_mode,
// autocommit) must not leak that into a later transaction on the same pooled connection.
// Before the fix, after SET autocommit=1 a later well-behaved transaction that aborted still
// left its decider writes committed.
TEST_F(EnvelopeTest, SessionStateSetByAClosureNeverLeaksThroughThePool) {
  FreshTable("t_leak");
  const int64_t a = KeyOnShard(0);
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "SET time_zone = '+05:00'", {}).status());
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "SET @seigo_leak = 1", {}).status());
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'", {}).status());
    return tx.Exec(a, "INSERT INTO t_leak (k, v) VALUES (?, 1)", {a}).status();
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  (void)coord_->Run([&](Tx& tx) { return tx.Exec(a, "SET autocommit = 1", {}).status(); });
  for (int i = 0; i < 10; ++i) {
    TxResult q = coord_->Run([&](Tx& tx) -> Status {
      auto s = tx.Exec(a, "SELECT @@session.time_zone, @seigo_leak, @@session.sql_mode, "
                          "@@session.autocommit", {});
      SEIGO_RETURN_IF_ERROR(s.status());
      EXPECT_EQ(s->rows[0][0].value_or("NULL"), "SYSTEM");
      EXPECT_FALSE(s->rows[0][1].has_value()) << "a user variable leaked";
      EXPECT_NE(s->rows[0][2].value_or("").find("STRICT_ALL_TABLES"), std::string::npos);
      EXPECT_EQ(s->rows[0][3].value_or(""), "0");
      SEIGO_RETURN_IF_ERROR(tx.Exec(a, "UPDATE t_leak SET v = v + 1 WHERE k = ?", {a}).status());
      return Tx::Abort("read only");
    });
    EXPECT_EQ(q.state, TxState::kAborted);
  }
  EXPECT_EQ(ValueOf("t_leak", a), 1) << "an aborted transaction's write committed";
}

// Case 3: statements that do not end the transaction keep working.
TEST_F(EnvelopeTest, HarmlessStatementsInAClosureKeepWorking) {
  FreshTable("t_harmless");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_harmless (k, v) VALUES (?, 1)", {a}).status());
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "SAVEPOINT sp1", {}).status());
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "UPDATE t_harmless SET v = 99 WHERE k = ?", {a}).status());
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "ROLLBACK TO SAVEPOINT sp1", {}).status());
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "RELEASE SAVEPOINT sp1", {}).status());
    auto sel = tx.Exec(a, "SELECT v FROM t_harmless WHERE k = ? FOR UPDATE", {a});
    SEIGO_RETURN_IF_ERROR(sel.status());
    EXPECT_EQ(*sel->Int(0, 0), 1);
    SEIGO_RETURN_IF_ERROR(
        tx.Exec(b, "SELECT COUNT(*) FROM t_harmless LOCK IN SHARE MODE", {}).status());
    return tx.Exec(b, "INSERT INTO t_harmless (k, v) VALUES (?, 2)", {b}).status();
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  coord_->DrainPhase2();
  EXPECT_EQ(ValueOf("t_harmless", a), 1);
  EXPECT_EQ(ValueOf("t_harmless", b), 2);
}

// Case 5. A branch prepared before a shard restart, whose owner's thread id an unrelated
// connection gets after the restart. Before the fix the in-process "owner gone" guard keyed on
// the thread id alone and stayed Busy for as long as that unrelated connection lived.
TEST_F(EnvelopeTest, ReusedThreadIdAfterAShardRestartDoesNotBlockTheCommit) {
  ASSERT_FALSE(Servers().empty());
  FreshTable("t_reuse");
  auto p = OpenParticipant(1);
  ASSERT_TRUE(p);
  const int64_t k = KeyOnShard(1);
  std::unique_ptr<Session> s;
  Xid xid = PrepareOldBranch(*p, &s, "t_reuse", k, Outcome::kCommit);
  s.reset();  // the owner closes: the branch detaches (this process remembers nothing now)
  // Markers written within 2 s of a server start count as the current incarnation (uptime has
  // whole seconds): let that pass, then restart the shard.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  ASSERT_EQ(std::system((Servers() + " crash 1 >/dev/null").c_str()), 0);
  // Read the owner thread id from the (uncommitted) marker of the recovered, still prepared
  // branch, the way seigo does: READ UNCOMMITTED, no locks.
  const ShardUrl& u = Url(1);
  MYSQL* m = mysql_init(nullptr);
  ASSERT_NE(mysql_real_connect(m, u.host.c_str(), u.user.c_str(), u.password.c_str(),
                               u.database.c_str(), u.port, nullptr, CLIENT_MULTI_STATEMENTS),
            nullptr);
  ASSERT_EQ(mysql_query(m, ("SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED; SELECT owner FROM "
                            "seigo_branch WHERE gid = '" + xid.gid + "'").c_str()),
            0)
      << mysql_error(m);
  uint64_t owner_id = 0;
  do {
    if (MYSQL_RES* res = mysql_store_result(m)) {
      if (MYSQL_ROW row = mysql_fetch_row(res)) owner_id = std::strtoull(row[0], nullptr, 10);
      mysql_free_result(res);
    }
  } while (mysql_next_result(m) == 0);
  mysql_close(m);
  ASSERT_GT(owner_id, 0u) << "the recovered branch has no marker; XA RECOVER: "
                          << coord_->QueryShard(1, "SELECT 1").status().ToString() << " "
                          << [&] {
                               std::string out;
                               auto x = p->RecoverPrepared();
                               if (x.ok()) for (auto& i : *x) out += i.Gtrid() + " ";
                               return out;
                             }();
  // Connect until an unrelated connection holds the old owner's thread id (ids restart at 1).
  MYSQL* holder = nullptr;
  for (uint64_t i = 0; i < owner_id + 200 && holder == nullptr; ++i) {
    MYSQL* c = mysql_init(nullptr);
    if (mysql_real_connect(c, u.host.c_str(), u.user.c_str(), u.password.c_str(),
                           u.database.c_str(), u.port, nullptr, 0) == nullptr) {
      mysql_close(c);
      continue;
    }
    if (mysql_thread_id(c) == owner_id) holder = c;
    else if (mysql_thread_id(c) > owner_id) { mysql_close(c); break; }
    else mysql_close(c);
  }
  ASSERT_NE(holder, nullptr) << "could not get thread id " << owner_id << " after the restart";
  Status st;
  for (int i = 0; i < 10; ++i) {
    st = p->CommitXid(xid);
    if (st.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(st.ok()) << "the commit waited on an unrelated connection: " << st.ToString();
  mysql_close(holder);
  EXPECT_EQ(ValueOf("t_reuse", k), 42);
  for (int i = 0; i < 20 && InDoubtCount() > 0; ++i) coord_->Recover();
  EXPECT_EQ(InDoubtCount(), 0u);
}

// Found by the simulator while building issue 12 (sim/README.md, "Found"): a read-only Run
// whose connection to a shard was lost after its read there (the shard restarted) returned
// committed, although its lock there was gone before its later reads — which could then see
// half of a transfer that committed in between. The final rollback must succeed on every shard.
TEST_F(EnvelopeTest, ReadOnlyRunWhoseShardRestartedAfterItsReadIsRetriedNotCommitted) {
  ASSERT_FALSE(Servers().empty());
  FreshTable("t_ro_restart");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  ASSERT_TRUE(coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_ro_restart VALUES (?, 500)", {a}).status());
    return tx.Exec(b, "INSERT INTO t_ro_restart VALUES (?, 500)", {b}).status();
  }).committed());
  RunOptions ro;
  ro.read_only = true;
  int64_t total = 0;
  TxResult r = coord_->Run(
      [&](Tx& tx) -> Status {
        const char* read = "SELECT v FROM t_ro_restart WHERE k = ? LOCK IN SHARE MODE";
        auto ra = tx.Exec(a, read, {a});
        SEIGO_RETURN_IF_ERROR(ra.status());
        if (tx.attempt() == 1) {
          // Shard 0 restarts: the read's lock is gone, and a transfer commits meanwhile (on
          // another thread: a Run inside a closure is refused).
          if (std::system((Servers() + " crash 0 >/dev/null").c_str()) != 0) {
            return Status::Internal("could not restart shard 0");
          }
          TxResult t;
          std::thread transfer([&] {
            t = coord_->Run([&](Tx& x) -> Status {
              SEIGO_RETURN_IF_ERROR(
                  x.Exec(a, "UPDATE t_ro_restart SET v = v - 100 WHERE k = ?", {a}).status());
              return x.Exec(b, "UPDATE t_ro_restart SET v = v + 100 WHERE k = ?", {b}).status();
            });
          });
          transfer.join();
          if (!t.committed()) return Status::Internal("transfer: " + t.status.ToString());
        }
        auto rb = tx.Exec(b, read, {b});
        SEIGO_RETURN_IF_ERROR(rb.status());
        total = *ra->Int(0, 0) + *rb->Int(0, 0);
        return Status::OK();
      },
      ro);
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  ASSERT_EQ(r.attempts, 2) << "the first attempt lost its lock on shard 0 and must not count";
  EXPECT_TRUE(r.history[0].status.Is(Code::kUnavailable)) << r.history[0].status.ToString();
  EXPECT_EQ(total, 1000) << "the committed attempt read half of the transfer";
}

// Case 6. After a shard restart every pooled connection to it is dead. Before the fix each
// attempt took the next dead one: with 12 idle connections and 10 attempts, the first
// transaction after the restart gave up although the shard was healthy.
TEST_F(EnvelopeTest, FirstTransactionsAfterAShardRestartCommit) {
  ASSERT_FALSE(Servers().empty());
  FreshTable("t_restart");
  CoordinatorOptions o = TestOptions();
  o.protocol.max_attempts = 3;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok());
  std::vector<int64_t> k0, k1;
  for (int64_t k = 1; k0.size() < 12 || k1.size() < 12; ++k) {
    const uint32_t s = coord_->shard_map().ShardFor(k);
    if (s < 2) (s == 0 ? k0 : k1).push_back(k);
  }
  // 12 concurrent transactions: 12 idle connections per shard afterwards.
  std::barrier sync(12);
  std::vector<std::thread> ts;
  for (int i = 0; i < 12; ++i) {
    ts.emplace_back([&, i] {
      (*c)->Run([&](Tx& tx) -> Status {
        sync.arrive_and_wait();
        SEIGO_RETURN_IF_ERROR(
            tx.Exec(k0[i], "INSERT INTO t_restart (k, v) VALUES (?, 1)", {k0[i]}).status());
        return tx.Exec(k1[i], "INSERT INTO t_restart (k, v) VALUES (?, 1)", {k1[i]}).status();
      });
    });
  }
  for (auto& t : ts) t.join();
  ASSERT_EQ(std::system((Servers() + " crash 1 >/dev/null").c_str()), 0);
  ASSERT_EQ(std::system((Servers() + " crash 0 >/dev/null").c_str()), 0);
  for (int i = 0; i < 3; ++i) {
    TxResult r = (*c)->Run([&](Tx& tx) -> Status {
      SEIGO_RETURN_IF_ERROR(
          tx.Exec(k0[i], "UPDATE t_restart SET v = v + 1 WHERE k = ?", {k0[i]}).status());
      return tx.Exec(k1[i], "UPDATE t_restart SET v = v + 1 WHERE k = ?", {k1[i]}).status();
    });
    EXPECT_TRUE(r.committed()) << "transaction " << i << " after the restart: "
                               << r.status.ToString();
  }
  InDoubtReport d = (*c)->InDoubt();
  EXPECT_TRUE(d.errors.empty()) << d.errors[0].ToString();
  c->reset();
}

// Case 8. A procedure that returns a result set, on an XA branch. Before the fix its extra
// results were never read: 2014 "Commands out of sync", and the attempt gave up. On the
// decider's local transaction CALL is refused with a clear error (a procedure could COMMIT
// it; only XA branches have the server's protection).
TEST_F(EnvelopeTest, CallOfAProcedureThatReturnsRowsWorksOnABranch) {
  FreshTable("t_call");
  CreateProcedure("seigo_p_rows", "(IN x BIGINT) BEGIN SELECT x AS a, x + 1 AS b; SELECT 7 AS c; END");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  TxResult refused = coord_->Run([&](Tx& tx) { return tx.Exec(a, "CALL seigo_p_rows(1)", {}).status(); });
  EXPECT_EQ(refused.state, TxState::kAborted);
  EXPECT_EQ(refused.status.code(), Code::kInvalidArgument);
  EXPECT_NE(refused.status.message().find("CALL works on the other shards"), std::string::npos)
      << refused.status.ToString();
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_call (k, v) VALUES (?, 1)", {a}).status());
    auto rows = tx.Exec(b, "CALL seigo_p_rows(?)", {5});
    SEIGO_RETURN_IF_ERROR(rows.status());
    EXPECT_EQ(rows->rows.size(), 1u);
    EXPECT_EQ(*rows->Int(0, 1), 6);
    return tx.Exec(b, "INSERT INTO t_call (k, v) VALUES (?, 1)", {b}).status();
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(r.attempts, 1);
  coord_->DrainPhase2();
  EXPECT_EQ(ValueOf("t_call", a), 1);
  EXPECT_EQ(ValueOf("t_call", b), 1);
}

// Case 8. The server's max_prepared_stmt_count is shared by all its clients. Before the fix a
// session cached up to 256 statements and a transaction failed with 1461 once the server's
// limit was reached.
TEST_F(EnvelopeTest, TransactionsSurviveAnExhaustedPreparedStatementLimit) {
  auto cur = coord_->QueryShard(0, "SELECT @@global.max_prepared_stmt_count");
  auto used = coord_->QueryShard(0, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                                    "WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT'");
  ASSERT_TRUE(cur.ok() && used.ok());
  const int64_t old_limit = *cur->Int(0, 0);
  struct Restore {
    Coordinator* c;
    int64_t v;
    ~Restore() {
      c->QueryShard(0, "SET GLOBAL max_prepared_stmt_count = " + std::to_string(v));
    }
  } restore{coord_.get(), old_limit};
  ASSERT_TRUE(coord_->QueryShard(0, "SET GLOBAL max_prepared_stmt_count = " +
                                        std::to_string(*used->Int(0, 0) + 12)).ok());
  const int64_t a = KeyOnShard(0);
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    for (int i = 0; i < 40; ++i) {
      auto q = tx.Exec(a, "SELECT ? + " + std::to_string(i), {1});
      SEIGO_RETURN_IF_ERROR(q.status());
    }
    return Status::OK();
  });
  EXPECT_TRUE(r.committed()) << r.status.ToString();
}

// Case 8: server errnos travel in Status, not in message text.
TEST_F(EnvelopeTest, ServerErrnoTravelsInTheStatus) {
  FreshTable("t_errno");
  const int64_t a = KeyOnShard(0);
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_errno (k, v) VALUES (?, 1)", {a}).status());
    return tx.Exec(a, "INSERT INTO t_errno (k, v) VALUES (?, 1)", {a}).status();
  });
  EXPECT_EQ(r.state, TxState::kAborted);
  EXPECT_EQ(r.status.server_errno(), 1062) << r.status.ToString();
}

// Case 9. A coordinator that is alive but hung keeps the connection that owns its prepared
// branch open. Before the fix nothing ever closed it: XA COMMIT from elsewhere got XAER_NOTA
// forever and the branch kept its locks. Long past the deadline a resolver closes that
// connection (KILL) and then finishes the branch.
TEST_F(EnvelopeTest, HungCoordinatorsBranchIsFinishedLongAfterItsDeadline) {
  FreshTable("t_hung");
  auto p = OpenParticipant(1);
  ASSERT_TRUE(p);
  const int64_t k = KeyOnShard(1);
  // A marker written within a second of the server's start cannot be told apart from one of
  // the previous incarnation (the uptime has whole seconds), so its owner is never treated as
  // surely alive and never killed (SurelyTheIdleOwner). An earlier test restarts shard 1:
  // wait until it has been up for a few seconds.
  for (int i = 0; i < 50; ++i) {
    auto up = coord_->QueryShard(1, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                                    "WHERE VARIABLE_NAME = 'UPTIME'");
    if (up.ok() && *up->Int(0, 0) >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::unique_ptr<Session> hung;  // stays open: the hung process's connection
  PrepareOldBranch(*p, &hung, "t_hung", k, Outcome::kCommit);
  std::string last;  // what the last pass said, for the failure message
  for (int i = 0; i < 100 && ValueOf("t_hung", k) != 42; ++i) {
    ResolveReport r = coord_->Recover();
    last.clear();
    for (const auto& x : r.pending) last += x.reason + "; ";
    for (const auto& x : r.errors) last += x.ToString() + "; ";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ValueOf("t_hung", k), 42) << "the hung owner's branch was never committed: " << last;
  EXPECT_EQ(InDoubtCount(), 0u);
  Value none[] = {int64_t{0}};
  EXPECT_FALSE(hung->Execute("SELECT ?", none).ok()) << "the hung connection should be closed";
}

// Case 9: no TIMESTAMP/DATETIME columns in seigo's tables (TIMESTAMP stops in 2038), and tables
// made by seigo 0.1 (decided_at, claimed_at, no deployment) are upgraded when opened.
TEST_F(EnvelopeTest, SeigoTablesAreFreeOf2038AndOldTablesAreUpgraded) {
  auto cols = coord_->QueryShard(0, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE "
                                    "TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'seigo\\_%' "
                                    "AND DATA_TYPE IN ('timestamp', 'datetime')");
  ASSERT_TRUE(cols.ok());
  EXPECT_EQ(*cols->Int(0, 0), 0);
  DropDatabase("game_old");
  CoordinatorOptions o = TestOptions();
  o.shards = ShardsIn("game_old");
  Result<ShardMap> map = ShardMap::Parse(o.shards);
  for (uint32_t s = 0; s < map->size(); ++s) {
    ASSERT_EQ(Client(s, "game_old",
                     "CREATE TABLE seigo_decision (gid CHAR(32) CHARACTER SET ascii NOT NULL "
                     "PRIMARY KEY, outcome CHAR(1) CHARACTER SET ascii NOT NULL, shards "
                     "VARCHAR(4000) CHARACTER SET ascii NOT NULL, deadline_ms BIGINT NOT NULL, "
                     "decided_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), KEY "
                     "by_deadline (deadline_ms)) ENGINE=InnoDB// CREATE TABLE seigo_shard (one "
                     "TINYINT NOT NULL PRIMARY KEY, shard_index INT NOT NULL, claimed_at "
                     "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB// INSERT "
                     "INTO seigo_shard (one, shard_index) VALUES (1, " + std::to_string(s) +
                     ")// INSERT INTO seigo_decision (gid, outcome, shards, deadline_ms) VALUES "
                     "('0123456789abcdef0123456789abcdef', 'C', '0,1', 1)// "
                     // seigo_outbox_dead as session 6 made it: keyed by the outbox's id.
                     "CREATE TABLE seigo_outbox_dead (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, "
                     "gid CHAR(32) CHARACTER SET ascii NOT NULL, seq INT UNSIGNED NOT NULL, "
                     "exchange VARBINARY(255) NOT NULL, routing_key VARBINARY(255) NOT NULL, "
                     "content_type VARBINARY(255) NOT NULL, msg_type VARBINARY(255) NOT NULL, "
                     "headers MEDIUMBLOB NOT NULL, body MEDIUMBLOB NOT NULL, created_ms BIGINT "
                     "NOT NULL, dead_ms BIGINT NOT NULL, reason VARBINARY(1000) NOT NULL) "
                     "ENGINE=InnoDB// INSERT INTO seigo_outbox_dead VALUES (7, "
                     "'0123456789abcdef0123456789abcdef', 0, 'x', 'k', '', '', '', 'b', 1, 2, "
                     "'old')// "
                     // seigo_inbox as session 6 made it: keyed by the message id alone.
                     "CREATE TABLE seigo_inbox (message_id VARBINARY(128) NOT NULL PRIMARY KEY, "
                     "queue VARBINARY(255) NOT NULL, applied_ms BIGINT NOT NULL, KEY by_time "
                     "(applied_ms)) ENGINE=InnoDB// INSERT INTO seigo_inbox VALUES ('m-1', 'q1', 1)"),
              0);
  }
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->deployment().size(), 16u);
  for (uint32_t s = 0; s < map->size(); ++s) {
    auto dep = (*c)->QueryShard(s, "SELECT deployment FROM seigo_shard");
    ASSERT_TRUE(dep.ok());
    EXPECT_EQ(dep->rows[0][0].value_or(""), (*c)->deployment());
    auto old = (*c)->QueryShard(s, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE "
                                   "TABLE_SCHEMA = DATABASE() AND DATA_TYPE = 'timestamp'");
    EXPECT_EQ(*old->Int(0, 0), 0);
  }
  auto kept = (*c)->QueryShard(0, "SELECT outcome FROM seigo_decision");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->rows.size(), 1u) << "the upgrade must keep decision rows";
  // The dead-letter table is rekeyed by (gid, seq), its rows kept: a second dead letter with
  // the same id (MySQL 5.7 reuses AUTO_INCREMENT values after a restart) is no longer dropped
  // by FinishOutbox's INSERT IGNORE.
  auto pk = (*c)->QueryShard(0, "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM "
                                "information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
                                "AND TABLE_NAME = 'seigo_outbox_dead' AND INDEX_NAME = 'PRIMARY'");
  ASSERT_TRUE(pk.ok());
  EXPECT_EQ(pk->rows[0][0].value_or(""), "gid,seq");
  auto reused = (*c)->QueryShard(0, "INSERT IGNORE INTO seigo_outbox_dead VALUES (7, "
                                    "'fedcba9876543210fedcba9876543210', 0, 'x', 'k', '', '', '', "
                                    "'b', 1, 2, 'new')");
  ASSERT_TRUE(reused.ok()) << reused.status().ToString();
  auto dead = (*c)->QueryShard(0, "SELECT COUNT(*) FROM seigo_outbox_dead WHERE id = 7");
  ASSERT_TRUE(dead.ok());
  EXPECT_EQ(*dead->Int(0, 0), 2) << "both dead letters kept";
  // The inbox is rekeyed by (message_id, queue) and has by_queue: one message fanned out to
  // two queues gets a row for each.
  auto inbox_keys = (*c)->QueryShard(0, "SELECT GROUP_CONCAT(INDEX_NAME, ':', COLUMN_NAME ORDER BY "
                                        "INDEX_NAME, SEQ_IN_INDEX) FROM information_schema."
                                        "STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND "
                                        "TABLE_NAME = 'seigo_inbox'");
  ASSERT_TRUE(inbox_keys.ok());
  EXPECT_EQ(inbox_keys->rows[0][0].value_or(""),
            "by_queue:queue,by_queue:applied_ms,by_time:applied_ms,PRIMARY:message_id,"
            "PRIMARY:queue");
  auto second = (*c)->QueryShard(0, "INSERT IGNORE INTO seigo_inbox VALUES ('m-1', 'q2', 1)");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->affected_rows, 1u) << "the same message id in another queue is new";
  c->reset();
  DropDatabase("game_old");
}

// Case 7. GC proves from seigo's own records that a gid finished. Before the fix it kept every
// decision younger than the oldest open InnoDB transaction on any shard — including an
// unrelated `START TRANSACTION WITH CONSISTENT SNAPSHOT` in another database — so the table
// grew without bound while a mysqldump ran. (The failure needs a snapshot older than the
// retention, 60 s; the simulator's sim_regression_gc_with_foreign_snapshot shows it; here the
// new rule itself is checked against a real server.)
TEST_F(EnvelopeTest, GcForgetsFinishedDecisionsWhileAForeignSnapshotIsOpen) {
  ASSERT_TRUE(coord_->QueryShard(0, "CREATE DATABASE IF NOT EXISTS other_app").ok());
  MYSQL* m = mysql_init(nullptr);
  const ShardUrl& u = Url(0);
  ASSERT_NE(mysql_real_connect(m, u.host.c_str(), u.user.c_str(), u.password.c_str(),
                               "other_app", u.port, nullptr, 0),
            nullptr);
  ASSERT_EQ(mysql_query(m, "START TRANSACTION WITH CONSISTENT SNAPSHOT"), 0);
  ASSERT_EQ(mysql_query(m, "SELECT COUNT(*) FROM information_schema.TABLES"), 0);
  mysql_free_result(mysql_store_result(m));
  // 20 finished transactions, decided long ago: no branch of theirs prepared, no marker open.
  const int64_t old_deadline = DefaultEnv()->NowMs() - 200'000;
  std::vector<std::string> gids;
  for (int i = 0; i < 20; ++i) {
    gids.push_back(core::NewGid(DefaultEnv()));
    ASSERT_TRUE(coord_->QueryShard(0, "INSERT INTO seigo_decision (gid, outcome, shards, "
                                      "deadline_ms) VALUES (?, 'C', '0,1', ?)",
                                   {gids.back(), old_deadline}).ok());
  }
  ResolveReport r = coord_->Recover();
  EXPECT_GE(r.forgotten, 20u);
  for (const std::string& g : gids) {
    auto n = coord_->QueryShard(0, "SELECT COUNT(*) FROM seigo_decision WHERE gid = ?", {g});
    EXPECT_EQ(*n->Int(0, 0), 0) << g;
  }
  mysql_close(m);
}

// Case 9. A lost commit whose outcome the coordinator could not learn is settled by the
// coordinator's own fence at its next resolver pass, well before the deadline — also when the
// application drives recovery itself (resolver_interval_ms = 0). Before the fix only the
// background resolver thread settled lost commits: with interval 0 the branch stayed prepared,
// holding its locks, until the deadline. Here the decider is frozen (SIGSTOP) while its
// commit is in flight, then killed and restarted: the commit never happened.
TEST_F(EnvelopeTest, LostCommitIsSettledByRecoverBeforeTheDeadlineWithoutTheResolverThread) {
  ASSERT_FALSE(Servers().empty());
  const char* dir = std::getenv("SEIGO_STATE_DIR");
  ASSERT_NE(dir, nullptr);
  FreshTable("t_lost");
  FreezingEnv env;
  env.pid_file = std::string(dir) + "/mariadb-0/mariadbd.pid";
  CoordinatorOptions o = TestOptions();
  o.env = &env;
  o.read_timeout_s = 1;
  o.connect_timeout_s = 1;
  o.protocol.txn_timeout_ms = 30'000;
  o.protocol.unknown_resolve_tries = 1;
  o.protocol.max_attempts = 1;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  const int64_t t0 = DefaultEnv()->NowMs();
  TxResult r = (*c)->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_lost (k, v) VALUES (?, 1)", {a}).status());
    return tx.Exec(b, "INSERT INTO t_lost (k, v) VALUES (?, 1)", {b}).status();
  });
  // Kill the frozen decider (its uncommitted commit batch dies with it) and restart it.
  ASSERT_EQ(std::system((Servers() + " crash 0 >/dev/null").c_str()), 0);
  ASSERT_EQ(r.state, TxState::kOutcomeUnknown) << r.status.ToString();
  size_t in_doubt = 1;
  for (int i = 0; i < 20 && in_doubt > 0; ++i) {
    (*c)->Recover();
    in_doubt = (*c)->InDoubt().txs.size();
    if (in_doubt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(in_doubt, 0u) << "the lost commit's branch is still prepared";
  EXPECT_LT(DefaultEnv()->NowMs() - t0, o.protocol.txn_timeout_ms)
      << "settled only because the deadline passed: the test proves nothing";
  EXPECT_EQ(ValueOf("t_lost", a), -1);
  EXPECT_EQ(ValueOf("t_lost", b), -1);
  c->reset();
}

// Issue 8: a one-shard transaction whose COMMIT reply is lost resolves to a definite outcome
// once its shard answers again: its commit record (a decision row in the same local
// transaction) is learned through the fence. The shard is frozen (SIGSTOP) while the commit is
// in flight, so the reply times out, and thawed a moment later. Before, there was no record
// and the caller got outcome_unknown, forever.
TEST_F(EnvelopeTest, LostOneShardCommitReplyResolvesToADefiniteOutcome) {
  const char* dir = std::getenv("SEIGO_STATE_DIR");
  ASSERT_NE(dir, nullptr);
  FreshTable("t_lost1");
  FreezingEnv env;
  env.thaw_after_ms = 1500;
  env.pid_file = std::string(dir) + "/mariadb-0/mariadbd.pid";
  CoordinatorOptions o = TestOptions();
  o.env = &env;
  o.read_timeout_s = 1;
  o.protocol.max_attempts = 1;
  o.protocol.unknown_resolve_tries = 8;
  o.protocol.record_one_shard_commits = true;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const int64_t a = KeyOnShard(0);
  const int64_t t0 = DefaultEnv()->NowMs();
  TxResult r = (*c)->Run([&](Tx& tx) {
    return tx.Exec(a, "INSERT INTO t_lost1 (k, v) VALUES (?, 7)", {a}).status();
  });
  EXPECT_GE(DefaultEnv()->NowMs() - t0, 1000) << "the commit reply was not held back";
  EXPECT_NE(r.state, TxState::kOutcomeUnknown) << r.status.ToString();
  EXPECT_EQ(r.shards, 1u);
  const int64_t v = ValueOf("t_lost1", a);
  if (r.committed()) {
    EXPECT_EQ(v, 7);
  } else {
    EXPECT_EQ(v, -1) << "reported not committed, but the row is there: " << r.status.ToString();
  }
  c->reset();
}

}  // namespace
}  // namespace seigo::testing
