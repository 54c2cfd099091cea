// Helpers for tests that run against the real MariaDB shards started by scripts/test.sh.
// SEIGO_TEST_SHARDS names them; without it these tests fail (they are not silently skipped).
#ifndef SEIGO_TESTS_DB_TEST_UTIL_H_
#define SEIGO_TESTS_DB_TEST_UTIL_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "seigo/coordinator.h"

extern "C" char** environ;

namespace seigo::testing {

// Starts program `path` with arguments `args`, its stdout going to file `out` (created or
// truncated). Returns its pid, or -1 if it could not be started.
inline pid_t SpawnWithStdout(const char* path, const std::vector<std::string>& args,
                             const std::string& out) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> argv{const_cast<char*>(path)};
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, path, &fa, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

inline std::string TestShards() {
  const char* s = std::getenv("SEIGO_TEST_SHARDS");
  return s == nullptr ? "" : s;
}

inline CoordinatorOptions TestOptions() {
  CoordinatorOptions o;
  o.shards = TestShards();
  o.lock_wait_timeout_s = 1;
  o.protocol.txn_timeout_ms = 3'000;
  o.resolver_interval_ms = 0;  // tests run resolver passes explicitly
  return o;
}

class DbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(TestShards().empty())
        << "SEIGO_TEST_SHARDS is not set: run the tests with scripts/test.sh, which starts the "
           "MariaDB shards they need";
    Result<std::unique_ptr<Coordinator>> c = Coordinator::Open(TestOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    coord_ = std::move(*c);
    ASSERT_GE(coord_->shard_map().size(), 2u) << "these tests need at least 2 shards";
  }

  // A fresh table `name` (k BIGINT PRIMARY KEY, v BIGINT NOT NULL) on every shard.
  void FreshTable(const std::string& name) {
    for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
      ASSERT_TRUE(coord_->QueryShard(s, "DROP TABLE IF EXISTS " + name).ok());
      auto r = coord_->QueryShard(s, "CREATE TABLE " + name +
                                         " (k BIGINT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB");
      ASSERT_TRUE(r.ok()) << r.status().ToString();
    }
  }

  // Two keys that live on different shards (shard 0 and shard 1).
  void KeysOnTwoShards(int64_t* a, int64_t* b) {
    *a = -1;
    *b = -1;
    for (int64_t k = 1; k < 1000 && (*a < 0 || *b < 0); ++k) {
      uint32_t s = coord_->shard_map().ShardFor(k);
      if (s == 0 && *a < 0) *a = k;
      if (s == 1 && *b < 0) *b = k;
    }
  }

  // v of key k in table t on its shard, or -1 if the row is absent.
  int64_t ValueOf(const std::string& t, int64_t k) {
    auto r = coord_->QueryShard(coord_->shard_map().ShardFor(k),
                                "SELECT v FROM " + t + " WHERE k = ?", {k});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok() || r->rows.empty()) return -1;
    return *r->Int(0, 0);
  }

  size_t InDoubtCount() { return coord_->InDoubt().txs.size(); }

  std::unique_ptr<Coordinator> coord_;
};

}  // namespace seigo::testing

#endif  // SEIGO_TESTS_DB_TEST_UTIL_H_
