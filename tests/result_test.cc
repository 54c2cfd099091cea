// Typed access to results and parameters (issue 13), without a server.
#include <gtest/gtest.h>

#include <limits>

#include "seigo/participant.h"
#include "seigo/shard_map.h"

namespace seigo {
namespace {

QueryResult Sample() {
  QueryResult r;
  r.columns = {"player_id", "Gold", "name", "ratio", "flag", "big"};
  r.rows.push_back({"7", "-20", "alice", "0.5", "1", "18446744073709551615"});
  r.rows.push_back({"8", std::nullopt, "bob", "x", "2", "-1"});
  return r;
}

TEST(QueryResultGet, ReadsTypedValuesByColumnNameAndIndex) {
  QueryResult r = Sample();
  EXPECT_EQ(**r.Get<int64_t>(0, "player_id"), 7);
  EXPECT_EQ(**r.Get<int64_t>(0, 1), -20);
  EXPECT_EQ(**r.Get<std::string>(0, "name"), "alice");
  EXPECT_DOUBLE_EQ(**r.Get<double>(0, "ratio"), 0.5);
  EXPECT_TRUE(**r.Get<bool>(0, "flag"));
  EXPECT_EQ(**r.Get<uint64_t>(0, "big"), std::numeric_limits<uint64_t>::max());
}

TEST(QueryResultGet, ColumnNamesMatchCaseInsensitivelyWhenNotExact) {
  QueryResult r = Sample();
  EXPECT_EQ(**r.Get<int64_t>(0, "gold"), -20);
  EXPECT_EQ(*r.Column("GOLD"), 1u);
}

TEST(QueryResultGet, NullIsAnEmptyOptionalNotAnError) {
  Result<std::optional<int64_t>> g = Sample().Get<int64_t>(1, "gold");
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->has_value());
}

TEST(QueryResultGet, MissingRowOrColumnIsNotFound) {
  QueryResult r = Sample();
  EXPECT_EQ(r.Get<int64_t>(0, "nope").status().code(), Code::kNotFound);
  EXPECT_EQ(r.Get<int64_t>(5, 0).status().code(), Code::kNotFound);
  EXPECT_EQ(r.Get<int64_t>(0, 17).status().code(), Code::kNotFound);
}

TEST(QueryResultGet, ValueThatDoesNotConvertIsInvalidArgumentNamingTheColumn) {
  QueryResult r = Sample();
  Result<std::optional<double>> d = r.Get<double>(1, "ratio");
  EXPECT_EQ(d.status().code(), Code::kInvalidArgument);
  EXPECT_NE(d.status().message().find("ratio"), std::string::npos);
  EXPECT_EQ(r.Get<bool>(1, "flag").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.Get<uint64_t>(1, "big").status().code(), Code::kInvalidArgument);  // -1
  EXPECT_EQ(r.Get<int64_t>(0, "big").status().code(), Code::kInvalidArgument);   // > INT64_MAX
}

TEST(ValueTest, OptionalBecomesNullOrItsValue) {
  std::optional<int64_t> none, some = 5;
  EXPECT_EQ(Value(none).kind(), Value::Kind::kNull);
  EXPECT_EQ(Value(some).kind(), Value::Kind::kInt);
  EXPECT_EQ(Value(some).int_value(), 5);
  std::optional<std::string> name = "x";
  EXPECT_EQ(Value(name).string_value(), "x");
}

TEST(ValueTest, BytesKeepEveryByte) {
  const std::string raw("a\0b\xff", 4);
  Value v = Value::Bytes(raw);
  EXPECT_EQ(v.kind(), Value::Kind::kBytes);
  EXPECT_EQ(v.string_value(), raw);
}

TEST(ValueTest, UnsignedIdsAboveInt64MaxKeepTheirValue) {
  const uint64_t id = std::numeric_limits<uint64_t>::max() - 3;
  Value v(id);
  EXPECT_EQ(v.kind(), Value::Kind::kUint);
  EXPECT_EQ(v.uint_value(), id);
}

TEST(ShardForTest, UnsignedIdMapsLikeTheSignedIdWithTheSameBits) {
  Result<ShardMap> m = ShardMap::Parse("mysql://u@h:1/a,mysql://u@h:2/b,mysql://u@h:3/c");
  ASSERT_TRUE(m.ok());
  const uint64_t id = std::numeric_limits<uint64_t>::max() - 3;
  EXPECT_EQ(m->ShardFor(id), m->ShardFor(static_cast<int64_t>(id)));
  EXPECT_EQ(m->ShardFor(42), m->ShardFor(int64_t{42}));
  EXPECT_EQ(m->ShardFor(uint32_t{42}), m->ShardFor(int64_t{42}));
}

}  // namespace
}  // namespace seigo
