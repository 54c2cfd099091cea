#include "seigo/shard_map.h"

#include <gtest/gtest.h>
#include <set>
#include <string>

namespace seigo {
namespace {

TEST(ShardUrl, ParsesAllParts) {
  Result<ShardUrl> u = ShardUrl::Parse("mysql://game:s%40cret@db1.local:3307/shard_1");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->user, "game");
  EXPECT_EQ(u->password, "s@cret");
  EXPECT_EQ(u->host, "db1.local");
  EXPECT_EQ(u->port, 3307);
  EXPECT_EQ(u->database, "shard_1");
  EXPECT_EQ(u->Redacted(), "mysql://game:***@db1.local:3307/shard_1");
}

TEST(ShardUrl, DefaultsPortTo3306AndAcceptsMariadbScheme) {
  Result<ShardUrl> u = ShardUrl::Parse("mariadb://root@127.0.0.1/g");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 3306);
  EXPECT_EQ(u->password, "");
}

TEST(ShardUrl, MalformedUrlsAreRejectedWithoutEchoingThePassword) {
  for (const char* bad : {"", "postgres://u@h/db", "mysql://h/db", "mysql://u:pw@h", "mysql://u:pw@h/",
                          "mysql://u:pw@h:0/db", "mysql://u:pw@h:99999/db", "mysql://u:pw@h:x/db",
                          "mysql://:pw@h/db", "mysql://u:pw@/db", "mysql://u:pw@h/d;b",
                          "mysql://u:p%zzw@h/db"}) {
    Result<ShardUrl> u = ShardUrl::Parse(bad);
    EXPECT_FALSE(u.ok()) << bad;
    EXPECT_EQ(u.status().code(), Code::kInvalidArgument) << bad;
    EXPECT_EQ(u.status().message().find("pw@"), std::string::npos) << u.status().message();
  }
}

TEST(ShardMap, RejectsEmptyListsAndDuplicateDatabases) {
  EXPECT_FALSE(ShardMap::Parse("").ok());
  Result<ShardMap> dup = ShardMap::Parse("mysql://a@h:1/d,mysql://b@h:1/d");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("same database"), std::string::npos);
}

// The key -> shard function is part of the on-disk contract: these values must never change.
TEST(ShardMap, KeyToShardFunctionIsStable) {
  EXPECT_EQ(ShardMap::MixKey(0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(ShardMap::HashString(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(ShardMap::JumpHash(0, 1), 0u);
  Result<ShardMap> m = ShardMap::Parse("mysql://u@h:1/a,mysql://u@h:2/a");
  ASSERT_TRUE(m.ok());
  std::vector<uint32_t> got;
  for (int64_t k = 1; k <= 8; ++k) got.push_back(m->ShardFor(k));
  EXPECT_EQ(got, (std::vector<uint32_t>{0, 0, 1, 0, 0, 0, 1, 0}));
}

TEST(ShardMap, GrowingByOneShardMovesKeysOnlyToTheNewShard) {
  for (uint32_t n = 1; n < 16; ++n) {
    int moved = 0;
    for (int64_t k = 0; k < 10000; ++k) {
      uint32_t a = ShardMap::JumpHash(ShardMap::MixKey(k), n);
      uint32_t b = ShardMap::JumpHash(ShardMap::MixKey(k), n + 1);
      if (a != b) {
        EXPECT_EQ(b, n);
        moved++;
      }
    }
    // About 1/(n+1) of the keys move.
    EXPECT_NEAR(moved / 10000.0, 1.0 / (n + 1), 0.03) << n;
  }
}

}  // namespace
}  // namespace seigo

namespace seigo {
namespace {

// Key -> Redis instance (Tx::kv()'s routing): the hash tag decides, as in Redis Cluster.
TEST(KvInstanceFor, KeysWithTheSameHashTagLiveTogetherAndAnEmptyTagIsNoTag) {
  for (uint32_t n : {1u, 2u, 5u}) {
    for (int b = 0; b < 50; ++b) {
      const std::string tag = std::to_string(b);
      const uint32_t hp = ShardMap::KvInstanceFor("boss:{" + tag + "}:hp", n);
      EXPECT_LT(hp, n);
      EXPECT_EQ(ShardMap::KvInstanceFor("boss:{" + tag + "}:log", n), hp);
      EXPECT_EQ(ShardMap::KvInstanceFor(tag, n), hp);  // the tag alone hashes the same
    }
    // "{}" is not a tag: the whole key is hashed (and only the first '{' counts).
    EXPECT_EQ(ShardMap::KvInstanceFor("a{}b", n),
              ShardMap::JumpHash(ShardMap::HashString("a{}b"), n));
    EXPECT_EQ(ShardMap::KvInstanceFor("x{y}{z}", n), ShardMap::KvInstanceFor("y", n));
  }
  // Different tags spread over the instances.
  std::set<uint32_t> seen;
  for (int b = 0; b < 100; ++b) seen.insert(ShardMap::KvInstanceFor("{" + std::to_string(b) + "}", 4));
  EXPECT_EQ(seen.size(), 4u);
}

}  // namespace
}  // namespace seigo
