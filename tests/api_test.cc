// The library API as a game team uses it (issue 13), against real MariaDB shards: guards,
// nesting, exceptions, errors that can never succeed, deadlines, the attempt history, error
// details, read-only transactions and parameters. Each test says what the code before did.
#include <algorithm>
#include <atomic>
#include <mutex>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <thread>

#include "core/protocol.h"
#include "mariadb/lazy_shard.h"
#include "mariadb/mariadb_participant.h"
#include "tests/db_test_util.h"

namespace seigo::testing {
namespace {

using ApiTest = DbTest;

// Before: a failed ExecExpect did not poison the attempt, so a closure that ignored it and
// returned OK committed (gold 20000 -> 20007 in the report).
TEST_F(ApiTest, GuardFailureIgnoredByTheClosureStillAborts) {
  FreshTable("t_api_guard");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  ASSERT_TRUE(coord_->QueryShard(0, "INSERT INTO t_api_guard VALUES (?, 5)", {a}).ok());
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    (void)tx.ExecExpect(a, 1, "UPDATE t_api_guard SET v = v - 10 WHERE k = ? AND v >= 10", {a},
                        "not enough gold");
    SEIGO_RETURN_IF_ERROR(tx.Exec(b, "INSERT INTO t_api_guard VALUES (?, 7)", {b}).status());
    return Status::OK();  // ignores the guard
  });
  EXPECT_EQ(r.state, TxState::kAborted);
  EXPECT_EQ(r.status.code(), Code::kGuardFailed) << r.status.ToString();
  EXPECT_EQ(ValueOf("t_api_guard", a), 5);
  EXPECT_EQ(ValueOf("t_api_guard", b), -1);
}

TEST_F(ApiTest, GuardFailureCarriesTheReasonAndTheShardAndIsNotRetried) {
  FreshTable("t_api_reason");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    return tx.ExecExpect(b, 1, "UPDATE t_api_reason SET v = 0 WHERE k = ?", {b},
                         "not enough gold");
  });
  EXPECT_EQ(r.status.code(), Code::kGuardFailed);
  EXPECT_EQ(r.status.message().rfind("not enough gold", 0), 0u) << r.status.message();
  EXPECT_EQ(r.status.shard(), static_cast<int>(coord_->shard_map().ShardFor(b)));
  EXPECT_EQ(r.attempts, 1);
}

// Before: affected rows counted changed rows, so "UPDATE .. SET gold = gold - 0" (a free item)
// failed a guard of 1 row.
TEST_F(ApiTest, GuardCountsMatchedRowsSoAnUpdateToTheSameValuePasses) {
  FreshTable("t_api_matched");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  ASSERT_TRUE(coord_->QueryShard(0, "INSERT INTO t_api_matched VALUES (?, 5)", {a}).ok());
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    return tx.ExecExpect(a, 1, "UPDATE t_api_matched SET v = v - ? WHERE k = ? AND v >= ?",
                         {0, a, 0}, "not enough gold");
  });
  EXPECT_TRUE(r.committed()) << r.status.ToString();
}

// Before: the inner Run was an independent transaction that committed although the outer one
// aborted.
TEST_F(ApiTest, NestedRunIsRefusedAndCommitsNothing) {
  FreshTable("t_api_nested");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  TxResult inner;
  TxResult outer = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_api_nested VALUES (?, 1)", {a}).status());
    inner = coord_->Run([&](Tx& tx2) -> Status {
      return tx2.Exec(b, "INSERT INTO t_api_nested VALUES (?, 2)", {b}).status();
    });
    return Tx::Abort("the outer transaction changes its mind");
  });
  EXPECT_EQ(inner.state, TxState::kAborted);
  EXPECT_EQ(inner.status.code(), Code::kInvalidArgument);
  EXPECT_NE(inner.status.message().find("nested"), std::string::npos);
  EXPECT_EQ(inner.attempts, 0);
  EXPECT_EQ(outer.state, TxState::kAborted);
  EXPECT_EQ(ValueOf("t_api_nested", a), -1);
  EXPECT_EQ(ValueOf("t_api_nested", b), -1);
  // And Run works again afterwards on this thread.
  EXPECT_TRUE(coord_->Run([&](Tx& tx) -> Status {
    return tx.Exec(b, "INSERT INTO t_api_nested VALUES (?, 3)", {b}).status();
  }).committed());
}

// An Env that calls `hook` when the protocol reaches `site` (after the closure returned).
struct HookEnv final : Env {
  CrashSite site = CrashSite::kBeforePrepare;
  std::function<void()> hook;
  int64_t NowMs() override { return DefaultEnv()->NowMs(); }
  void SleepMs(int64_t ms) override { DefaultEnv()->SleepMs(ms); }
  uint64_t Random64() override { return DefaultEnv()->Random64(); }
  void CrashPoint(CrashSite s) override {
    if (s == site && hook) hook();
  }
};

// Before: a Tx kept past its closure joined the attempt being committed (or crashed).
TEST_F(ApiTest, TxUsedAfterItsClosureReturnedIsRefused) {
  FreshTable("t_api_late");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  HookEnv env;
  CoordinatorOptions o = TestOptions();
  o.env = &env;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Tx* kept = nullptr;
  Status late = Status::OK();
  env.hook = [&] {
    late = kept->Exec(b, "INSERT INTO t_api_late VALUES (?, 9)", {b + 1000}).status();
  };
  TxResult r = (*c)->Run([&](Tx& tx) -> Status {
    kept = &tx;
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_api_late VALUES (?, 1)", {a}).status());
    return tx.Exec(b, "INSERT INTO t_api_late VALUES (?, 1)", {b}).status();
  });
  EXPECT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(late.code(), Code::kInvalidArgument) << late.ToString();
  EXPECT_EQ(ValueOf("t_api_late", b + 1000), -1);
}

TEST_F(ApiTest, ExceptionFromTheClosureRollsBackAndPropagates) {
  FreshTable("t_api_throw");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  EXPECT_THROW(coord_->Run([&](Tx& tx) -> Status {
    (void)tx.Exec(a, "INSERT INTO t_api_throw VALUES (?, 1)", {a});
    (void)tx.Exec(b, "INSERT INTO t_api_throw VALUES (?, 1)", {b});
    throw std::runtime_error("bug in game code");
  }), std::runtime_error);
  EXPECT_EQ(ValueOf("t_api_throw", a), -1);
  EXPECT_EQ(ValueOf("t_api_throw", b), -1);
  EXPECT_EQ(InDoubtCount(), 0u);
  // The same rows are free: nothing holds their locks.
  EXPECT_TRUE(coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_api_throw VALUES (?, 2)", {a}).status());
    return tx.Exec(b, "INSERT INTO t_api_throw VALUES (?, 2)", {b}).status();
  }).committed());
}

// Before: a parameter over max_allowed_packet made the server drop the connection (2006), which
// was retried as transient: 64 MB sent ten times.
TEST_F(ApiTest, ParameterOverMaxAllowedPacketFailsAtOnce) {
  FreshTable("t_api_big");
  auto max = coord_->QueryShard(0, "SELECT @@max_allowed_packet");
  ASSERT_TRUE(max.ok());
  const std::string big(static_cast<size_t>(*max->Int(0, 0)) + 1, 'x');
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    return tx.Exec(a, "SELECT LENGTH(?)", {big}).status();
  });
  EXPECT_EQ(r.state, TxState::kAborted);
  EXPECT_EQ(r.status.code(), Code::kInvalidArgument) << r.status.ToString();
  EXPECT_NE(r.status.message().find("max_allowed_packet"), std::string::npos);
  EXPECT_EQ(r.attempts, 1);
}

// Before: a closure slower than txn_timeout_ms was run again and again (ten times the timeout).
TEST_F(ApiTest, ClosureSlowerThanTheAttemptDeadlineIsNotRetried) {
  FreshTable("t_api_slow");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  CoordinatorOptions o = TestOptions();
  o.protocol.txn_timeout_ms = 200;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok());
  TxResult r = (*c)->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_api_slow VALUES (?, 1)", {a}).status());
    SEIGO_RETURN_IF_ERROR(tx.Exec(b, "INSERT INTO t_api_slow VALUES (?, 1)", {b}).status());
    std::this_thread::sleep_for(std::chrono::milliseconds(260));
    return Status::OK();
  });
  EXPECT_EQ(r.state, TxState::kGaveUp);
  EXPECT_EQ(r.status.code(), Code::kDeadlineExceeded) << r.status.ToString();
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(ValueOf("t_api_slow", a), -1);
  for (int i = 0; i < 20 && InDoubtCount() > 0; ++i) coord_->Recover();
}

// Before: nothing bounded a Run but max_attempts (each up to txn_timeout_ms plus backoff).
TEST_F(ApiTest, RunDeadlineStopsTheRetries) {
  std::atomic<int> runs{0};
  RunOptions ro;
  ro.timeout_ms = 150;
  TxResult r = coord_->Run([&](Tx&) -> Status {
    runs++;
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    return Status::Conflict("a conflict that keeps coming back");
  }, ro);
  EXPECT_EQ(r.state, TxState::kGaveUp);
  EXPECT_EQ(r.status.code(), Code::kDeadlineExceeded) << r.status.ToString();
  EXPECT_LT(r.attempts, TestOptions().protocol.max_attempts);
  EXPECT_EQ(r.attempts, runs.load());
  EXPECT_NE(r.status.message().find("a conflict that keeps coming back"), std::string::npos);
}

// Before: only the last attempt's error was visible.
TEST_F(ApiTest, HistoryRecordsEveryAttemptWithItsCause) {
  FreshTable("t_api_hist");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_api_hist VALUES (?, ?)",
                                  {a, tx.attempt()}).status());
    SEIGO_RETURN_IF_ERROR(tx.Exec(b, "INSERT INTO t_api_hist VALUES (?, ?)",
                                  {b, tx.attempt()}).status());
    if (tx.attempt() < 3) return Status::Conflict("try " + std::to_string(tx.attempt()));
    return Status::OK();
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  ASSERT_EQ(r.history.size(), 3u);
  EXPECT_EQ(r.history[0].status.message(), "try 1");
  EXPECT_EQ(r.history[1].status.message(), "try 2");
  EXPECT_TRUE(r.history[2].status.ok());
  EXPECT_NE(r.history[0].gid, r.history[1].gid);
  EXPECT_EQ(r.history[2].gid, r.gid);
  EXPECT_EQ(r.history[2].shards, 2u);
  EXPECT_EQ(ValueOf("t_api_hist", a), 3);
}

// Before: the errno was only in the message text, the shard was missing from what the closure
// saw, and connection errors named the shard twice.
TEST_F(ApiTest, FailedStatementReportsShardStatementAndServerErrno) {
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  Status seen;
  const std::string sql = "SELECT FROM WHERE broken";
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    seen = tx.Exec(b, sql).status();
    return seen;
  });
  const int shard = static_cast<int>(coord_->shard_map().ShardFor(b));
  for (const Status* s : {&seen, &r.status}) {
    EXPECT_EQ(s->code(), Code::kQueryFailed);
    EXPECT_EQ(s->server_errno(), 1064);
    EXPECT_EQ(s->shard(), shard);
    EXPECT_EQ(s->statement(), sql);
    EXPECT_NE(s->message().find("shard " + std::to_string(shard) + " ("), std::string::npos)
        << s->message();
  }
}

TEST(ApiOpen, ConnectionErrorNamesTheShardOnce) {
  CoordinatorOptions o = TestOptions();
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok());
  // The second shard's URL with a port nothing listens on.
  Result<ShardMap> map = ShardMap::Parse(TestShards());
  ASSERT_TRUE(map.ok());
  const ShardUrl& u = map->shard(1);
  o.shards = TestShards();
  o.shards.replace(o.shards.find(u.user + ":" + u.password + "@" + u.host + ":" +
                                 std::to_string(u.port)),
                   (u.user + ":" + u.password + "@" + u.host + ":" + std::to_string(u.port)).size(),
                   u.user + ":" + u.password + "@" + u.host + ":1");
  o.require_all_shards = true;
  auto bad = Coordinator::Open(o);
  ASSERT_FALSE(bad.ok());
  const std::string m = bad.status().message();
  const std::string name = "shard 1 (";
  const size_t first = m.find(name);
  ASSERT_NE(first, std::string::npos) << m;
  EXPECT_EQ(m.find(name, first + 1), std::string::npos) << m;
}

TEST_F(ApiTest, ReadOnlyRunReadsEveryShardWithoutXaOrDecisionAndRefusesWrites) {
  FreshTable("t_api_ro");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  ASSERT_TRUE(coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_api_ro VALUES (?, 10)", {a}).status());
    return tx.Exec(b, "INSERT INTO t_api_ro VALUES (?, 20)", {b}).status();
  }).committed());
  RunOptions ro;
  ro.read_only = true;
  int64_t sum = 0;
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    sum = 0;
    EXPECT_TRUE(tx.read_only());
    for (int64_t k : {a, b}) {
      auto q = tx.Exec(k, "SELECT v FROM t_api_ro WHERE k = ? LOCK IN SHARE MODE", {k});
      SEIGO_RETURN_IF_ERROR(q.status());
      sum += **q->Get<int64_t>(0, "v");
    }
    return Status::OK();
  }, ro);
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(sum, 30);
  EXPECT_EQ(r.shards, 2u);
  EXPECT_EQ(r.gid, "");
  auto d = coord_->QueryShard(coord_->shard_map().ShardFor(a),
                              "SELECT COUNT(*) FROM seigo_decision WHERE gid = ?",
                              {r.history.back().gid});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d->Int(0, 0), 0);
  TxResult w = coord_->Run([&](Tx& tx) -> Status {
    return tx.Exec(b, "UPDATE t_api_ro SET v = 0 WHERE k = ?", {b}).status();
  }, ro);
  EXPECT_EQ(w.status.code(), Code::kInvalidArgument) << w.status.ToString();
  EXPECT_EQ(ValueOf("t_api_ro", b), 20);
}

// Locking reads of a read-only Run hold their locks until every shard was read: concurrent
// transfers between a and b never show a wrong total to it.
TEST_F(ApiTest, ReadOnlyLockingReadsSeeExactTotalsBesideTransfers) {
  FreshTable("t_api_audit");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  ASSERT_TRUE(coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_api_audit VALUES (?, 500)", {a}).status());
    return tx.Exec(b, "INSERT INTO t_api_audit VALUES (?, 500)", {b}).status();
  }).committed());
  std::atomic<bool> stop{false};
  std::atomic<int> transfers{0};
  std::thread writer([&] {
    // Always a before b, like the audits: no lock-order cycle across the shards (those wait
    // for the lock-wait timeout today, issue 12).
    for (int i = 0; !stop; ++i) {
      const int64_t d = i % 2 ? 3 : -3;
      TxResult t = coord_->Run([&](Tx& tx) -> Status {
        SEIGO_RETURN_IF_ERROR(tx.Exec(a, "UPDATE t_api_audit SET v = v + ? WHERE k = ?",
                                      {d, a}).status());
        return tx.Exec(b, "UPDATE t_api_audit SET v = v - ? WHERE k = ?", {d, b}).status();
      });
      if (t.committed()) transfers++;
    }
  });
  RunOptions ro;
  ro.read_only = true;
  int audits = 0, wrong = 0;
  for (int i = 0; i < 150; ++i) {
    int64_t sum = 0;
    TxResult r = coord_->Run([&](Tx& tx) -> Status {
      sum = 0;
      for (int64_t k : {a, b}) {
        auto q = tx.Exec(k, "SELECT v FROM t_api_audit WHERE k = ? LOCK IN SHARE MODE", {k});
        SEIGO_RETURN_IF_ERROR(q.status());
        sum += **q->Get<int64_t>(0, 0);
      }
      return Status::OK();
    }, ro);
    if (!r.committed()) continue;
    audits++;
    if (sum != 1000) wrong++;
  }
  stop = true;
  writer.join();
  EXPECT_GT(audits, 100);
  EXPECT_GT(transfers.load(), 10);
  EXPECT_EQ(wrong, 0);
}

TEST_F(ApiTest, SpanParametersMakeInListsAndMultiRowInserts) {
  FreshTable("t_api_span");
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  const uint32_t shard = coord_->shard_map().ShardFor(a);
  std::vector<Value> rows;
  std::string sql = "INSERT INTO t_api_span (k, v) VALUES ";
  for (int64_t i = 0; i < 10; ++i) {  // a 10-pull
    sql += i ? ",(?, ?)" : "(?, ?)";
    rows.emplace_back(1000 + i);
    rows.emplace_back(i * i);
  }
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    auto ins = tx.ExecOn(shard, sql, rows);
    SEIGO_RETURN_IF_ERROR(ins.status());
    EXPECT_EQ(ins->affected_rows, 10u);
    std::vector<Value> ids = {1001, 1003, 1005};
    auto q = tx.ExecOn(shard, "SELECT k, v FROM t_api_span WHERE k IN (?, ?, ?) ORDER BY k", ids);
    SEIGO_RETURN_IF_ERROR(q.status());
    EXPECT_EQ(q->rows.size(), 3u);
    EXPECT_EQ(**q->Get<int64_t>(2, "v"), 25);
    return Status::OK();
  });
  EXPECT_TRUE(r.committed()) << r.status.ToString();
}

TEST_F(ApiTest, OptionalBytesAndUnsignedIdsRoundTrip) {
  for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
    ASSERT_TRUE(coord_->QueryShard(s, "DROP TABLE IF EXISTS t_api_types").ok());
    ASSERT_TRUE(coord_->QueryShard(s, "CREATE TABLE t_api_types (id BIGINT UNSIGNED PRIMARY KEY,"
                                      " note VARCHAR(20) NULL, blob_v VARBINARY(16)) ENGINE=InnoDB")
                    .ok());
  }
  const uint64_t id = std::numeric_limits<uint64_t>::max() - 7;  // above INT64_MAX
  const std::string raw("\0\x01\xfe\xff", 4);
  std::optional<std::string> none;
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    return tx.Exec(id, "INSERT INTO t_api_types VALUES (?, ?, ?)", {id, none, Value::Bytes(raw)})
        .status();
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  auto q = coord_->QueryShard(coord_->shard_map().ShardFor(id),
                              "SELECT id, note, blob_v FROM t_api_types WHERE id = ?", {id});
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  ASSERT_EQ(q->rows.size(), 1u);
  EXPECT_EQ(**q->Get<uint64_t>(0, "id"), id);
  EXPECT_FALSE(q->Get<std::string>(0, "note")->has_value());
  EXPECT_EQ(**q->Get<std::string>(0, "blob_v"), raw);
}

}  // namespace
}  // namespace seigo::testing

namespace seigo::testing {
namespace {

// Runs scripts/grants.sh and executes its statements on every test shard for `user`.
void Grant(Coordinator& admin, const std::string& user) {
  const ShardMap& map = admin.shard_map();
  for (uint32_t s = 0; s < map.size(); ++s) {
    ASSERT_TRUE(admin.QueryShard(s, "CREATE USER IF NOT EXISTS '" + user +
                                        "'@'127.0.0.1' IDENTIFIED BY 'pw'").ok());
    std::string cmd = std::string("bash ") + SEIGO_SOURCE_DIR + "/scripts/grants.sh " +
                      map.shard(s).database + " " + user + " 127.0.0.1";
    FILE* f = popen(cmd.c_str(), "r");
    ASSERT_NE(f, nullptr);
    std::string sql;  // without its comment lines
    char buf[512];
    while (fgets(buf, sizeof buf, f) != nullptr) {
      if (std::string_view(buf).rfind("--", 0) != 0) sql += buf;
    }
    ASSERT_EQ(pclose(f), 0) << cmd;
    size_t from = 0;
    int grants = 0;
    for (size_t semi; (semi = sql.find(';', from)) != std::string::npos; from = semi + 1) {
      const std::string stmt = sql.substr(from, semi - from);
      if (stmt.find("GRANT") == std::string::npos) continue;
      auto r = admin.QueryShard(s, stmt);
      ASSERT_TRUE(r.ok()) << stmt << ": " << r.status().ToString();
      grants++;
    }
    ASSERT_GE(grants, 3);
  }
}

std::string ShardsAs(const std::string& user) {
  Result<ShardMap> map = ShardMap::Parse(TestShards());
  std::string out;
  for (size_t i = 0; i < map->size(); ++i) {
    const ShardUrl& u = map->shard(i);
    out += (out.empty() ? "" : ",") + std::string("mysql://") + user + ":pw@" + u.host + ":" +
           std::to_string(u.port) + "/" + u.database;
  }
  return out;
}

// Before: a least-privilege user failed with "1142 CREATE command denied" at Open, and with
// prepare_schema = false recovery failed on 1227 (PROCESS) in the background, silently.
TEST_F(ApiTest, GrantsScriptIsEnoughForTransactionsAndRecovery) {
  FreshTable("t_api_priv");
  Grant(*coord_, "seigo_app");
  CoordinatorOptions o = TestOptions();
  o.shards = ShardsAs("seigo_app");
  auto app = Coordinator::Open(o);
  ASSERT_TRUE(app.ok()) << app.status().ToString();
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  TxResult r = (*app)->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_api_priv VALUES (?, 1)", {a}).status());
    return tx.Exec(b, "INSERT INTO t_api_priv VALUES (?, 1)", {b}).status();
  });
  EXPECT_TRUE(r.committed()) << r.status.ToString();
  // A branch left prepared by a crashed coordinator of this user, long past its deadline: the
  // resolver, as the same user, must roll it back from another connection (INNODB_TRX read).
  {
    mariadb::Config pc;
    Result<ShardMap> map = ShardMap::Parse(o.shards);
    ASSERT_TRUE(map.ok());
    pc.url = map->shard(1);
    pc.index = 1;
    std::string dep = (*app)->deployment();
    auto part = mariadb::MariaDbParticipant::Open(pc, false, &dep);
    ASSERT_TRUE(part.ok()) << part.status().ToString();
    const int64_t now = DefaultEnv()->NowMs();
    Xid xid{dep, core::NewGid(DefaultEnv()), 0, now - 100'000, now - 90'000, 1};
    auto session = (*part)->Acquire();
    ASSERT_TRUE(session.ok());
    ASSERT_TRUE((*session)->BeginBranch(xid).ok());
    Value v[] = {b + 1};
    ASSERT_TRUE((*session)->Execute("INSERT INTO t_api_priv VALUES (?, 2)", v).ok());
    ASSERT_TRUE((*session)->Prepare(xid).ok());
  }  // the session closes without phase 2
  ResolveReport rep;
  for (int i = 0; i < 20 && (rep.applied.empty() || !rep.errors.empty()); ++i) {
    rep = (*app)->Recover();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(rep.errors.empty()) << rep.errors[0].ToString();
  EXPECT_EQ(rep.applied.size(), 1u);
  EXPECT_EQ(InDoubtCount(), 0u);
  for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
    ASSERT_TRUE(coord_->QueryShard(s, "REVOKE PROCESS ON *.* FROM 'seigo_app'@'127.0.0.1'").ok());
  }
  o.prepare_schema = false;
  auto denied = Coordinator::Open(o);
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), Code::kInvalidArgument);
  EXPECT_NE(denied.status().message().find("PROCESS"), std::string::npos)
      << denied.status().ToString();
  for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
    (void)coord_->QueryShard(s, "DROP USER IF EXISTS 'seigo_app'@'127.0.0.1'");
  }
}


// Before: an application could not see what the background threads did; a resolver that
// failed on every pass (here: a user without the rights on seigo's tables) failed silently.
TEST_F(ApiTest, HooksSeeAttemptsCommitsAndBackgroundFailures) {
  FreshTable("t_api_hooks");
  Grant(*coord_, "seigo_hooks");
  std::mutex mu;
  std::vector<Event> events;
  std::vector<std::string> logs;
  CoordinatorOptions o = TestOptions();
  o.shards = ShardsAs("seigo_hooks");
  o.on_event = [&](const Event& e) {
    std::lock_guard<std::mutex> l(mu);
    events.push_back(e);
    events.back().report = nullptr;
  };
  o.log = [&](std::string_view line) {
    std::lock_guard<std::mutex> l(mu);
    logs.emplace_back(line);
  };
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  int64_t a, b;
  KeysOnTwoShards(&a, &b);
  TxResult r = (*c)->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO t_api_hooks VALUES (?, 1)", {a}).status());
    SEIGO_RETURN_IF_ERROR(tx.Exec(b, "INSERT INTO t_api_hooks VALUES (?, 1)", {b}).status());
    return tx.attempt() == 1 ? Status::Conflict("first try loses") : Status::OK();
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  auto count = [&](Event::Kind k) {
    std::lock_guard<std::mutex> l(mu);
    return std::count_if(events.begin(), events.end(), [&](const Event& e) { return e.kind == k; });
  };
  EXPECT_EQ(count(Event::Kind::kAttemptStarted), 2);
  EXPECT_EQ(count(Event::Kind::kAttemptFailed), 1);
  EXPECT_EQ(count(Event::Kind::kCommitted), 1);
  {
    std::lock_guard<std::mutex> l(mu);
    for (const Event& e : events) {
      if (e.kind == Event::Kind::kAttemptFailed) EXPECT_EQ(e.status.message(), "first try loses");
      if (e.kind == Event::Kind::kCommitted) EXPECT_EQ(e.gid, r.gid);
    }
  }
  // Take away the rights on seigo's own tables: every resolver pass now fails in part, and says
  // so through the hook.
  const ShardMap& map = coord_->shard_map();
  for (uint32_t s = 0; s < map.size(); ++s) {
    ASSERT_TRUE(coord_->QueryShard(s, "REVOKE SELECT, INSERT, UPDATE, DELETE ON `" +
                                          map.shard(s).database +
                                          "`.* FROM 'seigo_hooks'@'127.0.0.1'").ok());
    // Database rights are checked when a connection opens its database: end the pooled ones.
    auto ids = coord_->QueryShard(s, "SELECT ID FROM information_schema.PROCESSLIST WHERE "
                                     "USER = 'seigo_hooks'");
    ASSERT_TRUE(ids.ok());
    for (size_t k = 0; k < ids->rows.size(); ++k) {
      (void)coord_->QueryShard(s, "KILL CONNECTION " + std::to_string(*ids->Int(k, 0)));
    }
  }
  ResolveReport rep = (*c)->Recover();
  EXPECT_FALSE(rep.errors.empty());
  EXPECT_GE(count(Event::Kind::kResolverError), 1);
  EXPECT_GE(count(Event::Kind::kResolverPass), 1);
  EXPECT_GE((*c)->counters().resolver_errors, 1u);
  c->reset();
  for (uint32_t s = 0; s < map.size(); ++s) {
    (void)coord_->QueryShard(s, "DROP USER IF EXISTS 'seigo_hooks'@'127.0.0.1'");
  }
}

// Before: Open() failed outright when any one shard was down.
TEST_F(ApiTest, OpenSucceedsWithAShardDownAndOnlyItsTransactionsFail) {
  FreshTable("t_api_down");
  std::mutex mu;
  std::vector<Event> errors;
  CoordinatorOptions o = TestOptions();
  o.shards = TestShards() + ",mysql://seigo:seigo@127.0.0.1:1/seigo";  // nothing listens there
  o.protocol.max_attempts = 2;
  o.on_event = [&](const Event& e) {
    std::lock_guard<std::mutex> l(mu);
    if (e.kind == Event::Kind::kResolverError) errors.push_back(e);
  };
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const uint32_t down = static_cast<uint32_t>((*c)->shard_map().size() - 1);
  TxResult ok = (*c)->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.ExecOn(0, "INSERT INTO t_api_down VALUES (1, 1)").status());
    return tx.ExecOn(1, "INSERT INTO t_api_down VALUES (2, 1)").status();
  });
  EXPECT_TRUE(ok.committed()) << ok.status.ToString();
  TxResult bad = (*c)->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.ExecOn(0, "INSERT INTO t_api_down VALUES (3, 1)").status());
    return tx.ExecOn(down, "SELECT 1").status();
  });
  EXPECT_EQ(bad.state, TxState::kGaveUp);
  EXPECT_EQ(bad.status.code(), Code::kUnavailable) << bad.status.ToString();
  EXPECT_EQ(bad.status.shard(), static_cast<int>(down));
  EXPECT_NE(bad.status.message().find("127.0.0.1:1"), std::string::npos);
  auto row = coord_->QueryShard(0, "SELECT COUNT(*) FROM t_api_down WHERE k = 3");
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(*row->Int(0, 0), 0);
  ResolveReport rep = (*c)->Recover();
  EXPECT_FALSE(rep.complete);
  ASSERT_FALSE(rep.errors.empty());
  EXPECT_NE(rep.errors[0].message().find("127.0.0.1:1"), std::string::npos);
  std::lock_guard<std::mutex> l(mu);
  EXPECT_FALSE(errors.empty());
}

// A shard that was down at Open is opened — and checked — at the first call after it is back.
TEST_F(ApiTest, ShardThatWasDownIsOpenedWhenItComesBackAndCheckedLikeTheOthers) {
  Result<ShardMap> map = ShardMap::Parse(TestShards());
  ASSERT_TRUE(map.ok());
  mariadb::Config cfg;
  cfg.url = map->shard(1);
  cfg.index = 1;
  mariadb::LazyShard lazy(cfg, false, Status::Unavailable("connection refused"));
  lazy.SetDeployment(coord_->deployment());
  auto early = lazy.Acquire();  // within a second of the failure: no new connection attempt
  EXPECT_EQ(early.status().code(), Code::kUnavailable);
  EXPECT_NE(early.status().message().find("connection refused"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  auto s = lazy.Acquire();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  lazy.Release(std::move(*s));
  EXPECT_TRUE(lazy.is_open());
  // Back, but claimed by another deployment: refused, not used.
  mariadb::LazyShard foreign(cfg, false, Status::Unavailable("connection refused"));
  foreign.SetDeployment("0123456789abcdef");
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  auto f = foreign.Acquire();
  EXPECT_EQ(f.status().code(), Code::kInvalidArgument) << f.status().ToString();
  EXPECT_FALSE(foreign.is_open());
}

// Before: no cap on a pool's connections (only on its idle ones).
TEST_F(ApiTest, ConnectionCapBoundsTransactionsPerShardAndTheRestWait) {
  FreshTable("t_api_cap");
  CoordinatorOptions o = TestOptions();
  o.max_connections_per_shard = 2;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::atomic<int> inside{0}, most{0}, committed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      TxResult r = (*c)->Run([&](Tx& tx) -> Status {
        SEIGO_RETURN_IF_ERROR(tx.ExecOn(0, "INSERT INTO t_api_cap VALUES (?, 1)", {t}).status());
        const int now = ++inside;
        for (int m = most; now > m && !most.compare_exchange_weak(m, now);) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        --inside;
        return Status::OK();
      });
      if (r.committed()) committed++;
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(committed.load(), 6);
  EXPECT_EQ(most.load(), 2) << "closures holding a shard-0 connection at once";
}

// Before: a frozen shard (SIGSTOP) held a Run for the driver's read timeout (15-30 s); a game
// request with a 200 ms budget had no way to bound it.
TEST_F(ApiTest, StatementOnAFrozenShardIsCutAtTheRunDeadline) {
  const char* dir = std::getenv("SEIGO_STATE_DIR");
  ASSERT_NE(dir, nullptr) << "run the tests with scripts/test.sh (SEIGO_STATE_DIR)";
  FreshTable("t_api_frozen");
  CoordinatorOptions o = TestOptions();
  o.read_timeout_s = 30;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  // A pooled connection to shard 1, as in a warm process.
  ASSERT_TRUE((*c)->Run([&](Tx& tx) {
    return tx.ExecOn(1, "INSERT INTO t_api_frozen VALUES (1, 1)").status();
  }).committed());
  const std::string pid = std::string(dir) + "/mariadb-1/mariadbd.pid";
  struct Thaw {
    std::string pid;
    ~Thaw() { std::system(("kill -CONT $(cat " + pid + ")").c_str()); }
  } thaw{pid};
  ASSERT_EQ(std::system(("kill -STOP $(cat " + pid + ")").c_str()), 0);
  RunOptions ro;
  ro.timeout_ms = 500;
  const auto t0 = std::chrono::steady_clock::now();
  TxResult r = (*c)->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.ExecOn(0, "INSERT INTO t_api_frozen VALUES (2, 1)").status());
    return tx.ExecOn(1, "INSERT INTO t_api_frozen VALUES (3, 1)").status();
  }, ro);
  const auto waited = std::chrono::steady_clock::now() - t0;
  std::system(("kill -CONT $(cat " + pid + ")").c_str());
  EXPECT_EQ(r.state, TxState::kGaveUp);
  EXPECT_EQ(r.status.code(), Code::kDeadlineExceeded) << r.status.ToString();
  // Far below the 30 s read timeout.
  EXPECT_LT(waited, std::chrono::seconds(5));
  auto row = coord_->QueryShard(0, "SELECT COUNT(*) FROM t_api_frozen WHERE k = 2");
  ASSERT_TRUE(row.ok()) << row.status().ToString();
  EXPECT_EQ(*row->Int(0, 0), 0);
  // The cut connection never goes back to the pool: the next Run works.
  EXPECT_TRUE((*c)->Run([&](Tx& tx) {
    return tx.ExecOn(1, "INSERT INTO t_api_frozen VALUES (4, 1)").status();
  }).committed());

  // No pooled connection this time: opening one to the frozen server (the TCP connect
  // succeeds, the handshake never comes) is bounded by the deadline too, not by the 10 s
  // connect timeout.
  o.connect_timeout_s = 10;
  auto fresh = Coordinator::Open(o);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  ASSERT_EQ(std::system(("kill -STOP $(cat " + pid + ")").c_str()), 0);
  const auto t1 = std::chrono::steady_clock::now();
  TxResult r2 = (*fresh)->Run([&](Tx& tx) -> Status {
    return tx.ExecOn(1, "INSERT INTO t_api_frozen VALUES (5, 1)").status();
  }, ro);
  const auto waited2 = std::chrono::steady_clock::now() - t1;
  std::system(("kill -CONT $(cat " + pid + ")").c_str());
  EXPECT_EQ(r2.status.code(), Code::kDeadlineExceeded) << r2.status.ToString();
  EXPECT_LT(waited2, std::chrono::seconds(5));
}

// Before: every result sat in memory (3M rows took 538 MB).
TEST_F(ApiTest, StreamingReadHandsOverRowsOneByOneAndCanStopEarly) {
  FreshTable("t_api_stream");
  const uint32_t shard = 1;
  // 3,000 rows on shard 1, in one multi-row insert per 500.
  for (int from = 0; from < 3000; from += 500) {
    std::string sql = "INSERT INTO t_api_stream (k, v) VALUES ";
    std::vector<Value> p;
    for (int k = from; k < from + 500; ++k) {
      sql += k > from ? ",(?, ?)" : "(?, ?)";
      p.emplace_back(k);
      p.emplace_back(std::string(k % 7 == 0 ? 300 : 3, 'x').size());
    }
    ASSERT_TRUE(coord_->Run([&](Tx& tx) { return tx.ExecOn(shard, sql, p).status(); })
                    .committed());
  }
  int64_t sum = 0, seen = 0;
  Status inside;
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    sum = seen = 0;
    Result<uint64_t> n = tx.ExecEachOn(
        shard, "SELECT k, v, REPEAT('y', v) AS pad FROM t_api_stream ORDER BY k", {},
        [&](const QueryResult& row) -> Status {
          EXPECT_EQ(row.rows.size(), 1u);
          sum += **row.Get<int64_t>(0, "k");
          EXPECT_EQ((*row.Get<std::string>(0, "pad"))->size(),
                    static_cast<size_t>(**row.Get<int64_t>(0, "v")));
          if (++seen == 1) inside = tx.ExecOn(shard, "SELECT 1").status();  // same shard: refused
          return Status::OK();
        });
    SEIGO_RETURN_IF_ERROR(n.status());
    EXPECT_EQ(*n, 3000u);
    // Stopping early: the callback's error comes back, the rest is dropped, the session works.
    int taken = 0;
    Result<uint64_t> stopped = tx.ExecEachOn(
        shard, "SELECT k FROM t_api_stream ORDER BY k", {}, [&](const QueryResult&) -> Status {
          return ++taken == 10 ? Status::Aborted("enough") : Status::OK();
        });
    EXPECT_EQ(stopped.status().message(), "enough");
    EXPECT_EQ(taken, 10);
    auto after = tx.ExecOn(shard, "SELECT COUNT(*) FROM t_api_stream");
    SEIGO_RETURN_IF_ERROR(after.status());
    EXPECT_EQ(*after->Int(0, 0), 3000);
    return Status::OK();
  });
  EXPECT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(seen, 3000);
  EXPECT_EQ(sum, 2999 * 3000 / 2);
  EXPECT_EQ(inside.code(), Code::kInvalidArgument) << inside.ToString();
}

TEST_F(ApiTest, NegativeLimitsAreClearErrorsNotSilentDefaults) {
  bool ran = false;
  RunOptions ro;
  ro.timeout_ms = -5;
  TxResult r = coord_->Run([&](Tx&) {
    ran = true;
    return Status::OK();
  }, ro);
  EXPECT_EQ(r.state, TxState::kAborted);
  EXPECT_EQ(r.status.code(), Code::kInvalidArgument) << r.status.ToString();
  EXPECT_FALSE(ran);
  CoordinatorOptions o = TestOptions();
  o.max_connections_per_shard = -1;
  auto c = Coordinator::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
}
}  // namespace
}  // namespace seigo::testing
