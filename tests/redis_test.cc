// Redis as a participant (doc/redis.md), against real redis-server instances started by
// scripts/redis.sh (SEIGO_TEST_REDIS) next to the MariaDB shards (SEIGO_TEST_SHARDS).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "db_test_util.h"

namespace seigo::testing {
namespace {

std::string TestRedis() {
  const char* s = std::getenv("SEIGO_TEST_REDIS");
  return s == nullptr ? "" : s;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class RedisTest : public DbTest {
 protected:
  void SetUp() override {
    ASSERT_FALSE(TestRedis().empty())
        << "SEIGO_TEST_REDIS is not set: run the tests with scripts/test.sh, which starts the "
           "Redis instances they need";
    DbTest::SetUp();
    if (HasFatalFailure()) return;
    coord_.reset();
    Result<std::unique_ptr<Coordinator>> c = Coordinator::Open(Options());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    coord_ = std::move(*c);
    ASSERT_GE(coord_->redis_instances(), 2u) << "these tests need 2 Redis instances";
    prefix_ = std::string("t:") + ::testing::UnitTest::GetInstance()->current_test_info()->name() +
              ":" + std::to_string(getpid()) + ":" + std::to_string(NowMs()) + ":";
  }

  CoordinatorOptions Options() {
    CoordinatorOptions o = TestOptions();
    o.redis = TestRedis();
    return o;
  }

  // A key with hash tag `tag`, unique to this test run.
  std::string Key(const std::string& name, const std::string& tag = "a") {
    return prefix_ + name + ":{" + tag + "}";
  }
  // A key owned by Redis instance `instance` (0-based among the instances).
  std::string KeyOn(const std::string& name, size_t instance) {
    for (int t = 0; t < 1000; ++t) {
      std::string k = Key(name, "t" + std::to_string(t));
      if (StoreOf(k) == coord_->shard_map().size() + instance) return k;
    }
    ADD_FAILURE() << "no key on instance " << instance;
    return "";
  }
  uint32_t StoreOf(const std::string& key) {
    uint32_t store = 0;
    coord_->Run([&](Tx& tx) {
      store = tx.kv().StoreFor(key);
      return Tx::Abort("only routing");
    });
    // The transaction's routing and the coordinator's (what tools use) are one function.
    EXPECT_EQ(store, coord_->shard_map().size() + coord_->RedisInstanceFor(key)) << key;
    return store;
  }
  size_t InstanceOf(const std::string& key) { return coord_->RedisInstanceFor(key); }

  std::optional<std::string> Redis(const std::string& key, std::vector<std::string> cmd) {
    Result<std::optional<std::string>> r = coord_->RedisCommand(InstanceOf(key), cmd);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::nullopt;
  }
  std::optional<std::string> Get(const std::string& key) { return Redis(key, {"GET", key}); }
  // Members of seigo's own bookkeeping on instance i: this deployment's "prepared" intents,
  // and the locks and reservations every deployment shares ("lock", "rlock", "esclo",
  // "eschi").
  int64_t Bookkeeping(size_t instance, const std::string& what) {
    const std::string k = what == "prepared" || what == "decisions"
                              ? "seigo:" + coord_->deployment() + ":" + what
                              : "seigo:" + what;
    const bool zset = what == "prepared" || what == "decisions";
    Result<std::optional<std::string>> r =
        coord_->RedisCommand(instance, {zset ? "ZCARD" : "HLEN", k});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() && *r ? std::stoll(**r) : -1;
  }

  std::string prefix_;
};

TEST_F(RedisTest, SqlAndRedisWritesCommitTogether) {
  FreshTable("rt_stamina");
  ASSERT_TRUE(coord_->QueryShard(coord_->shard_map().ShardFor(7), "INSERT INTO rt_stamina VALUES (7, 10)").ok());
  const std::string hp = Key("hp");
  const std::string name = Key("name", "b");
  ASSERT_TRUE(Redis(hp, {"SET", hp, "1000"}).has_value());
  TxResult r = coord_->Run([&](Tx& tx) {
    SEIGO_RETURN_IF_ERROR(tx.ExecExpect(7, 1, "UPDATE rt_stamina SET v = v - 1 WHERE k = ? AND v >= 1", {7}));
    SEIGO_RETURN_IF_ERROR(tx.kv().Incr(hp, -25, 0, INT64_MAX, "boss defeated"));
    return tx.kv().Set(name, "ogre");
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(ValueOf("rt_stamina", 7), 9);
  EXPECT_EQ(Get(hp), "975");
  EXPECT_EQ(Get(name), "ogre");
  for (size_t i = 0; i < coord_->redis_instances(); ++i) {
    EXPECT_EQ(Bookkeeping(i, "prepared"), 0) << "instance " << i;
    EXPECT_EQ(Bookkeeping(i, "lock"), 0) << "instance " << i;
    EXPECT_EQ(Bookkeeping(i, "esclo"), 0) << "instance " << i;
    EXPECT_EQ(Bookkeeping(i, "rlock"), 0) << "instance " << i;
  }
}

TEST_F(RedisTest, AClosureErrorLeavesRedisAndTheShardUntouched) {
  FreshTable("rt_abort");
  ASSERT_TRUE(coord_->QueryShard(coord_->shard_map().ShardFor(3), "INSERT INTO rt_abort VALUES (3, 5)").ok());
  const std::string k = Key("k");
  TxResult r = coord_->Run([&](Tx& tx) {
    SEIGO_RETURN_IF_ERROR(tx.Exec(3, "UPDATE rt_abort SET v = 6 WHERE k = 3").status());
    SEIGO_RETURN_IF_ERROR(tx.kv().Set(k, "x"));
    SEIGO_RETURN_IF_ERROR(tx.kv().Incr(Key("n"), 1, 0, 10));
    return Tx::Abort("changed my mind");
  });
  EXPECT_EQ(r.state, TxState::kAborted);
  EXPECT_EQ(ValueOf("rt_abort", 3), 5);
  EXPECT_FALSE(Get(k).has_value());
  EXPECT_FALSE(Get(Key("n")).has_value());
}

TEST_F(RedisTest, ReadsSeeTheTransactionsOwnEarlierWrites) {
  const std::string s = Key("s"), h = Key("h"), z = Key("z"), c = Key("c");
  ASSERT_TRUE(Redis(c, {"SET", c, "40"}).has_value());
  std::vector<std::string> seen;
  TxResult r = coord_->Run([&](Tx& tx) {
    seen.clear();
    SEIGO_RETURN_IF_ERROR(tx.kv().Set(s, "v1"));
    SEIGO_ASSIGN_OR_RETURN(std::optional<std::string> v, tx.kv().Get(s));
    seen.push_back(v.value_or("nil"));
    SEIGO_RETURN_IF_ERROR(tx.kv().HSet(h, "f", "hv"));
    SEIGO_ASSIGN_OR_RETURN(std::optional<std::string> hv, tx.kv().HGet(h, "f"));
    seen.push_back(hv.value_or("nil"));
    SEIGO_ASSIGN_OR_RETURN(std::optional<std::string> other, tx.kv().HGet(h, "g"));
    seen.push_back(other.value_or("nil"));
    SEIGO_RETURN_IF_ERROR(tx.kv().ZAdd(z, "alice", 12.5));
    SEIGO_ASSIGN_OR_RETURN(std::optional<double> sc, tx.kv().ZScore(z, "alice"));
    seen.push_back(sc ? std::to_string(*sc) : "nil");
    SEIGO_RETURN_IF_ERROR(tx.kv().Incr(c, 2, 0, 100));
    SEIGO_ASSIGN_OR_RETURN(std::optional<int64_t> cv, tx.kv().GetInt(c));
    seen.push_back(cv ? std::to_string(*cv) : "nil");
    SEIGO_RETURN_IF_ERROR(tx.kv().Del(s));
    SEIGO_ASSIGN_OR_RETURN(std::optional<std::string> gone, tx.kv().Get(s));
    seen.push_back(gone.value_or("nil"));
    return Status::OK();
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(seen, (std::vector<std::string>{"v1", "hv", "nil", "12.500000", "42", "nil"}));
  EXPECT_FALSE(Get(s).has_value());
  EXPECT_EQ(Redis(h, {"HGET", h, "f"}), "hv");
  EXPECT_EQ(Redis(z, {"ZSCORE", z, "alice"}), "12.5");
  EXPECT_EQ(Get(c), "42");
}

TEST_F(RedisTest, ABoundedIncrementThatWouldCrossItsBoundFailsWithTheGuardsReason) {
  FreshTable("rt_guard");
  ASSERT_TRUE(coord_->QueryShard(coord_->shard_map().ShardFor(1), "INSERT INTO rt_guard VALUES (1, 0)").ok());
  const std::string hp = Key("hp");
  ASSERT_TRUE(Redis(hp, {"SET", hp, "30"}).has_value());
  TxResult r = coord_->Run([&](Tx& tx) {
    SEIGO_RETURN_IF_ERROR(tx.Exec(1, "UPDATE rt_guard SET v = v + 1 WHERE k = 1").status());
    return tx.kv().Incr(hp, -31, 0, INT64_MAX, "the boss is already defeated");
  });
  EXPECT_EQ(r.state, TxState::kAborted);
  EXPECT_TRUE(r.status.Is(Code::kGuardFailed)) << r.status.ToString();
  EXPECT_NE(r.status.message().find("the boss is already defeated"), std::string::npos)
      << r.status.ToString();
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(Get(hp), "30");
  EXPECT_EQ(ValueOf("rt_guard", 1), 0);
  EXPECT_EQ(Bookkeeping(InstanceOf(hp), "prepared"), 0);
}

TEST_F(RedisTest, ConcurrentBoundedDecrementsOfOneHotKeyNeverCrossTheBound) {
  FreshTable("rt_hot");
  const std::string hp = Key("hp");
  ASSERT_TRUE(Redis(hp, {"SET", hp, "300"}).has_value());
  std::atomic<int> committed{0}, guard{0}, other{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const int64_t attack = t * 1000 + i;
        TxResult r = coord_->Run([&](Tx& tx) {
          SEIGO_RETURN_IF_ERROR(
              tx.Exec(attack, "INSERT INTO rt_hot VALUES (?, 1)", {attack}).status());
          return tx.kv().Incr(hp, -1, 0, INT64_MAX, "defeated");
        });
        if (r.committed()) committed++;
        else if (r.status.Is(Code::kGuardFailed)) guard++;
        else other++;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(committed.load(), 300);
  EXPECT_EQ(guard.load(), 100);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(Get(hp), "0");
  int64_t rows = 0;
  for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
    auto q = coord_->QueryShard(s, "SELECT COUNT(*) FROM rt_hot");
    ASSERT_TRUE(q.ok());
    rows += *q->Int(0, 0);
  }
  EXPECT_EQ(rows, 300);  // one row per committed attack, none for the refused ones
  EXPECT_EQ(Bookkeeping(InstanceOf(hp), "esclo"), 0);
}

TEST_F(RedisTest, AReadOfAKeyChangedBeforeTheCommitFailsThatAttemptAndTheRetrySeesTheNewValue) {
  const std::string k = Key("k"), out = Key("out");
  ASSERT_TRUE(Redis(k, {"SET", k, "1"}).has_value());
  const size_t instance = InstanceOf(k);
  std::vector<std::string> seen;
  TxResult r = coord_->Run([&](Tx& tx) {
    SEIGO_ASSIGN_OR_RETURN(std::optional<std::string> v, tx.kv().Get(k));
    seen.push_back(v.value_or("nil"));
    if (tx.attempt() == 1) {  // another client, between the read and the commit
      EXPECT_TRUE(coord_->RedisCommand(instance, {"SET", k, "2"}).ok());
    }
    return tx.kv().Set(out, "copied " + v.value_or("nil"));
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(r.attempts, 2);
  EXPECT_TRUE(r.history[0].status.Is(Code::kConflict)) << r.history[0].status.ToString();
  EXPECT_EQ(seen, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(Get(out), "copied 2");
}

TEST_F(RedisTest, AReadOnlyRunWhoseReadChangedBeforeItsEndIsRetriedAndWritesAreRefused) {
  const std::string k = Key("k");
  ASSERT_TRUE(Redis(k, {"SET", k, "1"}).has_value());
  const size_t instance = InstanceOf(k);
  std::vector<std::string> seen;
  RunOptions ro;
  ro.read_only = true;
  TxResult r = coord_->Run(
      [&](Tx& tx) {
        SEIGO_ASSIGN_OR_RETURN(std::optional<std::string> v, tx.kv().Get(k));
        seen.push_back(v.value_or("nil"));
        if (tx.attempt() == 1) EXPECT_TRUE(coord_->RedisCommand(instance, {"SET", k, "2"}).ok());
        return Status::OK();
      },
      ro);
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(r.attempts, 2);
  EXPECT_EQ(seen, (std::vector<std::string>{"1", "2"}));
  r = coord_->Run([&](Tx& tx) { return tx.kv().Set(k, "3"); }, ro);
  EXPECT_TRUE(r.status.Is(Code::kInvalidArgument)) << r.status.ToString();
  EXPECT_EQ(Get(k), "2");
}

TEST_F(RedisTest, TransactionsOnTwoRedisInstancesOnlyCommitAtomically) {
  const std::string a = KeyOn("a", 0), b = KeyOn("b", 1);
  ASSERT_NE(InstanceOf(a), InstanceOf(b));
  TxResult r = coord_->Run([&](Tx& tx) {
    SEIGO_RETURN_IF_ERROR(tx.kv().Set(a, "A"));
    return tx.kv().Set(b, "B");
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(r.shards, 2u);
  EXPECT_EQ(Get(a), "A");
  EXPECT_EQ(Get(b), "B");
  // The second instance's branch was prepared and committed: its commit marker is there until
  // garbage collection, its intent is gone.
  EXPECT_EQ(Bookkeeping(1, "prepared"), 0);
  // A guard failure on one instance leaves the other untouched.
  ASSERT_TRUE(Redis(b, {"SET", b, "5"}).has_value());
  r = coord_->Run([&](Tx& tx) {
    SEIGO_RETURN_IF_ERROR(tx.kv().Set(a, "A2"));
    return tx.kv().Incr(b, -6, 0, 100, "not enough");
  });
  EXPECT_TRUE(r.status.Is(Code::kGuardFailed)) << r.status.ToString();
  EXPECT_EQ(Get(a), "A");
  EXPECT_EQ(Get(b), "5");
}

TEST_F(RedisTest, AWrongKeyTypeFailsTheAttemptWithoutWritingAnything) {
  FreshTable("rt_type");
  ASSERT_TRUE(coord_->QueryShard(coord_->shard_map().ShardFor(2), "INSERT INTO rt_type VALUES (2, 0)").ok());
  const std::string hash = Key("hash"), s = Key("s");
  ASSERT_TRUE(Redis(hash, {"HSET", hash, "f", "1"}).has_value());
  TxResult r = coord_->Run([&](Tx& tx) {
    SEIGO_RETURN_IF_ERROR(tx.Exec(2, "UPDATE rt_type SET v = 1 WHERE k = 2").status());
    SEIGO_RETURN_IF_ERROR(tx.kv().Set(s, "written"));
    return tx.kv().Incr(hash, 1, 0, 10);  // a hash where a counter is expected
  });
  EXPECT_EQ(r.state, TxState::kAborted);
  EXPECT_TRUE(r.status.Is(Code::kQueryFailed)) << r.status.ToString();
  EXPECT_NE(r.status.message().find("not a counter"), std::string::npos) << r.status.ToString();
  EXPECT_EQ(ValueOf("rt_type", 2), 0);
  EXPECT_FALSE(Get(s).has_value());
  // A read of the wrong type fails at once.
  r = coord_->Run([&](Tx& tx) { return tx.kv().Get(hash).status(); });
  EXPECT_TRUE(r.status.Is(Code::kQueryFailed)) << r.status.ToString();
  EXPECT_NE(r.status.message().find("WRONGTYPE"), std::string::npos) << r.status.ToString();
}

TEST_F(RedisTest, SqlOnARedisInstanceAndRedisOpsWithoutInstancesAreRefused) {
  TxResult r = coord_->Run([&](Tx& tx) {
    return tx.ExecOn(static_cast<uint32_t>(coord_->shard_map().size()), "SELECT 1").status();
  });
  EXPECT_TRUE(r.status.Is(Code::kInvalidArgument)) << r.status.ToString();
  CoordinatorOptions o = TestOptions();  // no redis
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok());
  r = (*c)->Run([&](Tx& tx) { return tx.kv().Set("k", "v"); });
  EXPECT_TRUE(r.status.Is(Code::kInvalidArgument)) << r.status.ToString();
  EXPECT_NE(r.status.message().find("no key-value store"), std::string::npos);
}

TEST_F(RedisTest, AnUnreachableInstanceFailsOnlyTheTransactionsThatTouchIt) {
  CoordinatorOptions o = TestOptions();
  o.redis = "redis://127.0.0.1:1";  // nothing listens there
  o.connect_timeout_s = 1;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  FreshTable("rt_down");
  TxResult r = (*c)->Run([&](Tx& tx) { return tx.Exec(1, "INSERT INTO rt_down VALUES (1, 1)").status(); });
  EXPECT_TRUE(r.committed()) << r.status.ToString();
  o.protocol.max_attempts = 2;
  c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok());
  r = (*c)->Run([&](Tx& tx) { return tx.kv().Set("k", "v"); });
  EXPECT_EQ(r.state, TxState::kGaveUp);
  EXPECT_TRUE(r.status.Is(Code::kUnavailable)) << r.status.ToString();
  o.require_all_shards = true;
  EXPECT_TRUE(Coordinator::Open(o).status().Is(Code::kUnavailable));
  EXPECT_TRUE(Coordinator::Open({.shards = TestShards(), .redis = "http://x"}).status().Is(
      Code::kInvalidArgument));
}

// A redis-server of the test's own (not one of scripts/test.sh's), with `extra` settings. As
// participant `shards + 0` of the test deployment it takes the place of the first test
// instance, so the epoch shard 0 recorded for that index is set aside while it runs.
class OwnRedis {
 public:
  OwnRedis(Coordinator* c, const std::string& extra) : c_(c) {
    char dir[] = "/tmp/seigo-redis-own-XXXXXX";
    EXPECT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    port_ = 36900 + static_cast<int>(getpid() % 50);
    const std::string cmd = "redis-server --port " + std::to_string(port_) +
                            " --bind 127.0.0.1 --dir " + dir_ + " --save '' --daemonize yes " +
                            extra + " --pidfile " + dir_ + "/pid --logfile " + dir_ + "/log";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    for (int i = 0; i < 100 && !Cli("ping"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    ForgetEpoch();
  }
  ~OwnRedis() {
    Cli("shutdown nosave");
    std::system(("rm -rf " + dir_).c_str());
    ForgetEpoch();  // the test instance records its own again at the next Open
  }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  bool Cli(const std::string& args) const {
    return std::system(("redis-cli -p " + std::to_string(port_) + " " + args +
                        " >/dev/null 2>&1").c_str()) == 0;
  }
  void ForgetEpoch() {
    auto r = c_->QueryShard(0, "DELETE FROM seigo_redis_epoch WHERE deployment = ? AND idx = ?",
                            {c_->deployment(), static_cast<int64_t>(c_->shard_map().size())});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
  }

 private:
  Coordinator* c_;
  std::string dir_;
  int port_ = 0;
};

TEST_F(RedisTest, AnInstanceThatDoesNotFsyncEveryWriteIsRefusedUnlessExplicitlyAllowed) {
  OwnRedis own(coord_.get(), "--appendonly yes --appendfsync everysec");
  CoordinatorOptions o = TestOptions();
  o.redis = own.url();
  auto c = Coordinator::Open(o);
  EXPECT_TRUE(c.status().Is(Code::kUnsupported)) << c.status().ToString();
  EXPECT_NE(c.status().message().find("appendfsync is everysec"), std::string::npos)
      << c.status().ToString();
  o.redis_allow_unsafe_durability = true;
  c = Coordinator::Open(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  if (c.ok()) {
    TxResult r = (*c)->Run([&](Tx& tx) { return tx.kv().Set("unsafe:k", "v"); });
    EXPECT_TRUE(r.committed()) << r.status.ToString();
  }
}

// An instance that comes back without its data (here: flushed; in production a restart
// without its AOF, which the durability gate is there to prevent) would silently lose
// prepared intents and a Redis decider's commit records. Its data epoch changes, and seigo
// refuses it: in the process that knew it, and in every later one (shard 0 recorded it).
TEST_F(RedisTest, AnInstanceThatLostItsDataIsRefusedByRunningAndLaterProcesses) {
  OwnRedis own(coord_.get(), "--appendonly yes --appendfsync always");
  CoordinatorOptions o = TestOptions();
  o.redis = own.url();
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  TxResult r = (*c)->Run([&](Tx& tx) { return tx.kv().Set("epoch:k", "v"); });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  ASSERT_TRUE(own.Cli("flushall"));
  ASSERT_TRUE(own.Cli("client kill type normal"));  // the coordinator's connections break
  (*c)->Run([&](Tx& tx) { return tx.kv().Set("epoch:k", "w"); });  // finds them broken
  o.protocol.max_attempts = 2;
  r = (*c)->Run([&](Tx& tx) { return tx.kv().Set("epoch:k", "w"); });
  EXPECT_FALSE(r.committed());
  EXPECT_NE(r.status.message().find("lost its data"), std::string::npos) << r.status.ToString();
  auto later = Coordinator::Open(o);
  EXPECT_TRUE(later.status().Is(Code::kCorruption)) << later.status().ToString();
  EXPECT_NE(later.status().message().find("seigo_redis_epoch"), std::string::npos)
      << later.status().ToString();
}

// An intent as a coordinator that died after PREPARE leaves it: written by the seigo function
// itself, with an XID naming decider `decider` and a deadline `ms_left` from now.
class RedisRecoveryTest : public RedisTest {
 protected:
  Xid PrepareByHand(size_t instance, uint32_t decider, const std::string& key,
                    const std::string& value, int64_t ms_left) {
    Xid x;
    x.deployment = coord_->deployment();
    std::random_device rd;
    for (int i = 0; i < 32; ++i) x.gid += "0123456789abcdef"[rd() % 16];
    x.decider = decider;
    x.start_ms = NowMs();
    x.deadline_ms = x.start_ms + ms_left;
    x.branch = static_cast<uint32_t>(coord_->shard_map().size() + instance);
    auto r = coord_->RedisCommand(
        instance, {"FCALL", "seigo2_prepare", "0", "seigo:" + x.deployment + ":", x.gid,
                   x.Gtrid(), x.Bqual(), std::to_string(x.deadline_ms), "0", "1", "0", "set", key,
                   value, ""});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return x;
  }
};

TEST_F(RedisRecoveryTest, APreparedIntentLocksItsKeyShowsInStatusAndIsRolledBackAfterItsDeadline) {
  const std::string k = KeyOn("k", 0);
  Xid x = PrepareByHand(0, /*decider=*/0, k, "never", 1'500);
  // Locked: a transaction writing the key conflicts (and gives up after its attempts).
  CoordinatorOptions o = Options();
  o.protocol.max_attempts = 2;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok());
  TxResult r = (*c)->Run([&](Tx& tx) { return tx.kv().Set(k, "mine"); });
  EXPECT_EQ(r.state, TxState::kGaveUp);
  EXPECT_TRUE(r.status.Is(Code::kConflict)) << r.status.ToString();
  EXPECT_NE(r.status.message().find("locked by transaction " + x.gid), std::string::npos)
      << r.status.ToString();
  InDoubtReport d = coord_->InDoubt();
  bool listed = false;
  for (const InDoubtTx& t : d.txs) listed |= t.gid == x.gid;
  EXPECT_TRUE(listed) << "seigo status must list the Redis intent";
  // Before the deadline the resolver leaves it alone; after it, it fences and rolls back.
  ResolveReport rep = coord_->Recover();
  EXPECT_EQ(Bookkeeping(0, "prepared"), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1'700));
  rep = coord_->Recover();
  EXPECT_EQ(rep.fenced.size(), 1u);
  EXPECT_EQ(Bookkeeping(0, "prepared"), 0);
  EXPECT_EQ(Bookkeeping(0, "lock"), 0);
  EXPECT_FALSE(Get(k).has_value());
  // The tombstone refuses the same prepare arriving late.
  auto late = coord_->RedisCommand(
      0, {"FCALL", "seigo2_prepare", "0", "seigo:" + x.deployment + ":", x.gid, x.Gtrid(),
          x.Bqual(), std::to_string(NowMs() + 10'000), "0", "1", "0", "set", k, "late", ""});
  EXPECT_FALSE(late.ok());
  EXPECT_NE(late.status().message().find("rolled back"), std::string::npos)
      << late.status().ToString();
  r = coord_->Run([&](Tx& tx) { return tx.kv().Set(k, "mine"); });
  EXPECT_TRUE(r.committed()) << r.status.ToString();
}

// Review finding (write skew): a key a prepared transaction READ is locked until its decision.
// Before, only written keys were locked, so two transactions that each read what the other
// writes, on two instances, could both commit.
TEST_F(RedisRecoveryTest, AKeyReadByAPreparedTransactionCannotBeWrittenUntilItsDecision) {
  const std::string k = KeyOn("k", 0);
  ASSERT_TRUE(Redis(k, {"SET", k, "10"}).has_value());
  const std::string p = "seigo:" + coord_->deployment() + ":";
  std::string digest;
  Xid x;
  x.deployment = coord_->deployment();
  std::random_device rd;
  for (int i = 0; i < 32; ++i) x.gid += "0123456789abcdef"[rd() % 16];
  x.decider = 0;
  x.start_ms = NowMs();
  x.deadline_ms = x.start_ms + 1'500;
  x.branch = static_cast<uint32_t>(coord_->shard_map().size());
  // A prepared intent that read k (its digest: sha1 of msgpack of {"10"}, computed by the
  // instance itself with redis.sha1hex through EVAL, which has the same libraries).
  auto d = coord_->RedisCommand(
      0, {"EVAL", "return redis.sha1hex(cmsgpack.pack({redis.call('GET', KEYS[1])}))", "1", k});
  ASSERT_TRUE(d.ok() && d->has_value()) << d.status().ToString();
  digest = **d;
  auto prep = coord_->RedisCommand(
      0, {"FCALL", "seigo2_prepare", "0", p, x.gid, x.Gtrid(), x.Bqual(),
          std::to_string(x.deadline_ms), "1", "0", "0", "get", k, "", digest});
  ASSERT_TRUE(prep.ok()) << prep.status().ToString();
  EXPECT_EQ(Bookkeeping(0, "rlock"), 1);
  CoordinatorOptions o = Options();
  o.protocol.max_attempts = 2;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok());
  TxResult w = (*c)->Run([&](Tx& tx) { return tx.kv().Set(k, "11"); });
  EXPECT_EQ(w.state, TxState::kGaveUp);
  EXPECT_NE(w.status.message().find("is read by a transaction that is committing"),
            std::string::npos) << w.status.ToString();
  TxResult inc = (*c)->Run([&](Tx& tx) { return tx.kv().Incr(k, 1, 0, 100); });
  EXPECT_EQ(inc.state, TxState::kGaveUp) << inc.status.ToString();
  // Another reader is fine (read locks are shared).
  TxResult rd2 = (*c)->Run([&](Tx& tx) { return tx.kv().Get(k).status(); });
  EXPECT_TRUE(rd2.committed()) << rd2.status.ToString();
  // The decision releases it: after the deadline the resolver fences and rolls back.
  std::this_thread::sleep_for(std::chrono::milliseconds(1'700));
  coord_->Recover();
  EXPECT_EQ(Bookkeeping(0, "rlock"), 0);
  w = (*c)->Run([&](Tx& tx) { return tx.kv().Set(k, "11"); });
  EXPECT_TRUE(w.committed()) << w.status.ToString();
}

// Review finding: locks live in a namespace every deployment on the instance shares. Before,
// each deployment had its own, so another deployment's prepared write lock went unseen.
TEST_F(RedisRecoveryTest, AnotherDeploymentsLockOnAKeyIsRespected) {
  const std::string k = KeyOn("k", 0);
  const std::string other = "seigo:ffffffffffffffff:";
  Xid x;
  x.deployment = "ffffffffffffffff";
  std::random_device rd;
  for (int i = 0; i < 32; ++i) x.gid += "0123456789abcdef"[rd() % 16];
  x.start_ms = NowMs();
  x.deadline_ms = x.start_ms + 60'000;
  x.branch = 7;
  auto prep = coord_->RedisCommand(
      0, {"FCALL", "seigo2_prepare", "0", other, x.gid, x.Gtrid(), x.Bqual(),
          std::to_string(x.deadline_ms), "0", "1", "0", "set", k, "theirs", ""});
  ASSERT_TRUE(prep.ok()) << prep.status().ToString();
  CoordinatorOptions o = Options();
  o.protocol.max_attempts = 2;
  auto c = Coordinator::Open(o);
  ASSERT_TRUE(c.ok());
  TxResult w = (*c)->Run([&](Tx& tx) { return tx.kv().Set(k, "ours"); });
  EXPECT_EQ(w.state, TxState::kGaveUp);
  EXPECT_NE(w.status.message().find("locked by transaction " + x.gid), std::string::npos)
      << w.status.ToString();
  // Their own rollback (as their resolver would) releases it.
  auto rb = coord_->RedisCommand(0, {"FCALL", "seigo2_rollback", "0", other, x.gid, "0"});
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  w = (*c)->Run([&](Tx& tx) { return tx.kv().Set(k, "ours"); });
  EXPECT_TRUE(w.committed()) << w.status.ToString();
}

// Review finding: "007" passed the integer check, INCRBY then failed after earlier writes of
// the same function had been made (a partial commit). Only INCRBY's own integers pass now.
TEST_F(RedisTest, AnIncrementOfANonCanonicalIntegerIsRefusedBeforeAnythingIsWritten) {
  const std::string k = KeyOn("k", 0), other = KeyOn("other", 0);
  for (const char* v : {"007", "-0", "+1", "1e3", " 5"}) {
    ASSERT_TRUE(Redis(k, {"SET", k, v}).has_value());
    TxResult r = coord_->Run([&](Tx& tx) {
      SEIGO_RETURN_IF_ERROR(tx.kv().Set(other, std::string("written-") + v));
      return tx.kv().Incr(k, 1, 0, 100);
    });
    EXPECT_TRUE(r.status.Is(Code::kQueryFailed)) << v << ": " << r.status.ToString();
    EXPECT_EQ(Get(k), v);
    EXPECT_FALSE(Get(other).has_value()) << v;
  }
  TxResult r = coord_->Run([&](Tx& tx) { return tx.kv().Set("seigo:x:lock", "1"); });
  EXPECT_TRUE(r.status.Is(Code::kInvalidArgument)) << r.status.ToString();
}

TEST_F(RedisRecoveryTest, APreparedIntentWhoseDeciderCommittedIsCommittedByTheResolver) {
  const std::string k = KeyOn("k", 0);
  const uint32_t decider = static_cast<uint32_t>(coord_->shard_map().size() + 1);
  Xid x = PrepareByHand(0, decider, k, "applied", 5'000);
  // The decider (Redis instance 1) commits with the decision record, as the coordinator would
  // have before dying.
  auto d = coord_->RedisCommand(
      1, {"FCALL", "seigo2_decide", "0", "seigo:" + x.deployment + ":", x.gid,
          std::to_string(x.deadline_ms), std::to_string(x.branch) + "," + std::to_string(decider),
          "0", "60000", "0", "0", "0"});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_FALSE(Get(k).has_value());
  ResolveReport rep = coord_->Recover();
  EXPECT_EQ(rep.applied.size(), 1u);
  EXPECT_EQ(Get(k), "applied");
  EXPECT_EQ(Bookkeeping(0, "prepared"), 0);
  // A repeated commit is a no-op; a rollback of a committed branch is refused loudly.
  auto again = coord_->RedisCommand(0, {"FCALL", "seigo2_commit", "0",
                                        "seigo:" + x.deployment + ":", x.gid});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, "DONE");
  auto rb = coord_->RedisCommand(0, {"FCALL", "seigo2_rollback", "0",
                                     "seigo:" + x.deployment + ":", x.gid, "0"});
  EXPECT_FALSE(rb.ok());
  EXPECT_EQ(Get(k), "applied");
}

}  // namespace
}  // namespace seigo::testing
