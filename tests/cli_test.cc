// The `seigo` CLI: exit codes and messages for bad input (doc/cli.md).
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>

#include "tests/db_test_util.h"

namespace seigo::testing {
namespace {

struct Out {
  int code = -1;
  std::string text;  // stdout and stderr
};

Out Cli(const std::string& args) {
  Out o;
  // "env ..." runs as given (to set the environment); anything else is seigo's arguments.
  std::string cmd =
      (args.rfind("env ", 0) == 0 ? args : std::string(SEIGO_CLI_PATH) + " " + args) + " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) o.text.append(buf.data(), n);
  int st = pclose(f);
  o.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

TEST(Cli, UnknownSubcommandExitsTwo) {
  Out o = Cli("frobnicate");
  EXPECT_EQ(o.code, 2) << o.text;
}

TEST(Cli, MissingShardsExitsTwo) {
  Out o = Cli("status --shards ''");
  EXPECT_EQ(o.code, 2) << o.text;
  EXPECT_NE(o.text.find("no shards"), std::string::npos) << o.text;
}

TEST(Cli, ShardsComeFromTheEnvironmentWhenNoOptionIsGiven) {
  Out o = Cli("env SEIGO_SHARDS='" + TestShards() + "' " + SEIGO_CLI_PATH + " status");
  EXPECT_EQ(o.code, 0) << o.text;
  EXPECT_NE(o.text.find("in doubt"), std::string::npos) << o.text;
}

// An explicit --shards wins over $SEIGO_SHARDS (a regression: CLI11's envname let the
// environment overwrite it).
TEST(Cli, ExplicitShardsOptionBeatsTheEnvironment) {
  Out o = Cli("env SEIGO_SHARDS='" + TestShards() + "' " + SEIGO_CLI_PATH +
              " recover --shards 'mysql://seigo:seigo@127.0.0.1:1/seigo'");
  EXPECT_EQ(o.code, 3) << o.text;
}

TEST(Cli, NoShardsAnywhereExitsTwo) {
  Out o = Cli("env -u SEIGO_SHARDS " + std::string(SEIGO_CLI_PATH) + " status");
  EXPECT_EQ(o.code, 2) << o.text;
  EXPECT_NE(o.text.find("no shards"), std::string::npos) << o.text;
}

TEST(Cli, MalformedUrlExitsTwoAndSaysWhy) {
  Out o = Cli("status --shards 'mysql://u:pw@h:70000/db'");
  EXPECT_EQ(o.code, 2) << o.text;
  EXPECT_NE(o.text.find("port"), std::string::npos) << o.text;
}

TEST(Cli, UnreachableShardExitsThree) {
  Out o = Cli("recover --shards 'mysql://seigo:seigo@127.0.0.1:1/seigo'");
  EXPECT_EQ(o.code, 3) << o.text;
}

TEST(Cli, StatusAndRecoverOnHealthyShardsExitZero) {
  Out s = Cli("status --shards '" + TestShards() + "'");
  EXPECT_EQ(s.code, 0) << s.text;
  EXPECT_NE(s.text.find("in doubt"), std::string::npos);
  Out r = Cli("recover --shards '" + TestShards() + "'");
  EXPECT_EQ(r.code, 0) << r.text;
  EXPECT_NE(r.text.find("recover:"), std::string::npos);
}

// `seigo status` promises to change nothing. Before issue 7 it created seigo's tables and
// claimed the shard indexes of any database it was pointed at.
TEST(Cli, StatusOnDatabasesNeverSetUpChangesNothing) {
  auto c = Coordinator::Open(TestOptions());
  ASSERT_TRUE(c.ok());
  std::string urls;
  for (uint32_t s = 0; s < 2; ++s) {
    ASSERT_TRUE((*c)->QueryShard(s, "DROP DATABASE IF EXISTS game_unset").ok());
    ASSERT_TRUE((*c)->QueryShard(s, "CREATE DATABASE game_unset").ok());
    const ShardUrl& u = (*c)->shard_map().shard(s);
    urls += (urls.empty() ? "" : ",") + std::string("mysql://") + u.user + ":" + u.password +
            "@" + u.host + ":" + std::to_string(u.port) + "/game_unset";
  }
  Out o = Cli("status --shards '" + urls + "'");
  EXPECT_EQ(o.code, 2) << o.text;
  EXPECT_NE(o.text.find("not set up"), std::string::npos) << o.text;
  for (uint32_t s = 0; s < 2; ++s) {
    auto n = (*c)->QueryShard(s, "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                                 "TABLE_SCHEMA = 'game_unset'");
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n->Int(0, 0), 0) << "seigo status created tables on shard " << s;
    (*c)->QueryShard(s, "DROP DATABASE game_unset");
  }
}

TEST(Cli, DemoSetupRunAuditPasses) {
  const std::string sh = " --shards '" + TestShards() + "'";
  Out s = Cli("demo setup --players 200" + sh);
  ASSERT_EQ(s.code, 0) << s.text;
  Out r = Cli("demo run --clients 4 --seconds 1" + sh);
  ASSERT_EQ(r.code, 0) << r.text;
  EXPECT_NE(r.text.find("trades committed"), std::string::npos) << r.text;
  Out a = Cli("demo audit" + sh);
  EXPECT_EQ(a.code, 0) << a.text;
  EXPECT_NE(a.text.find("PASS"), std::string::npos);
}

// The audit is a checker: it must catch a deliberately broken state.
TEST(Cli, DemoAuditCatchesAnItemCreatedOutOfThinAir) {
  const std::string sh = " --shards '" + TestShards() + "'";
  ASSERT_EQ(Cli("demo setup --players 50" + sh).code, 0);
  auto c = Coordinator::Open(TestOptions());
  ASSERT_TRUE(c.ok());
  const uint32_t s = (*c)->shard_map().ShardFor(7);
  ASSERT_TRUE((*c)->QueryShard(s, "UPDATE inventory SET qty = qty + 1 WHERE player_id = 7 AND "
                                  "item_id = 3").ok());
  Out a = Cli("demo audit" + sh);
  EXPECT_EQ(a.code, 1) << a.text;
  EXPECT_NE(a.text.find("item 3 total 501, seeded 500 (+1)"), std::string::npos) << a.text;
}


// The raid demo (doc/cli.md): with a Redis instance killed with kill -9 and restarted mid-run,
// seigo mode's audit holds; naive mode's (the negative control: stamina, then HP, as two
// writes) finds the HP that never dropped.
std::string RaidEnv() {
  const char* redis = std::getenv("SEIGO_TEST_REDIS");
  return "env SEIGO_SHARDS='" + TestShards() + "' SEIGO_REDIS='" + (redis ? redis : "") + "' ";
}

Out RaidRunWithRedisCrash(const std::string& mode) {
  const char* script = std::getenv("SEIGO_REDIS_SCRIPT");
  EXPECT_NE(script, nullptr) << "SEIGO_REDIS_SCRIPT is not set: run with scripts/test.sh";
  return Cli(RaidEnv() + "bash -c '( sleep 1.5; bash " + (script ? script : "false") +
             " crash 0 >/dev/null ) & " + SEIGO_CLI_PATH + " demo raid run --clients 8 "
             "--seconds 4 --mode " + mode + "; rc=$?; wait; exit $rc'");
}

TEST(Cli, RaidDemoWithoutRedisExitsTwo) {
  Out o = Cli("env -u SEIGO_REDIS " + std::string(SEIGO_CLI_PATH) + " demo raid setup --shards '" +
              TestShards() + "'");
  EXPECT_EQ(o.code, 2) << o.text;
  EXPECT_NE(o.text.find("needs Redis"), std::string::npos) << o.text;
}

TEST(Cli, RaidDemoSeigoModePassesItsAuditThroughARedisKill) {
  Out o = Cli(RaidEnv() + SEIGO_CLI_PATH + " demo raid setup --players 200 --bosses 3");
  ASSERT_EQ(o.code, 0) << o.text;
  o = RaidRunWithRedisCrash("seigo");
  ASSERT_EQ(o.code, 0) << o.text;
  o = Cli(RaidEnv() + SEIGO_CLI_PATH + " demo raid audit");
  EXPECT_EQ(o.code, 0) << o.text;
  EXPECT_NE(o.text.find("0 violation(s)"), std::string::npos) << o.text;
}

TEST(Cli, RaidDemoNaiveModeFailsItsAuditThroughARedisKill) {
  Out o = Cli(RaidEnv() + SEIGO_CLI_PATH + " demo raid setup --players 200 --bosses 3");
  ASSERT_EQ(o.code, 0) << o.text;
  o = RaidRunWithRedisCrash("naive");
  ASSERT_EQ(o.code, 0) << o.text;
  ASSERT_EQ(o.text.find(", half-done 0\n"), std::string::npos)
      << "the kill hit no attack (nothing to catch): " << o.text;
  o = Cli(RaidEnv() + SEIGO_CLI_PATH + " demo raid audit");
  EXPECT_EQ(o.code, 1) << o.text;
  EXPECT_NE(o.text.find("VIOLATION: boss"), std::string::npos) << o.text;
}

}  // namespace
}  // namespace seigo::testing
