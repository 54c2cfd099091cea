#include <gtest/gtest.h>

#include "seigo/participant.h"

namespace seigo {
namespace {

TEST(Xid, RoundTripsThroughGtridAndBqual) {
  Xid x{"0123456789abcdef0123456789abcdef", 3, 1790000000123, 1790000010123, 17};
  EXPECT_EQ(x.Gtrid(), "sg1-0123456789abcdef0123456789abcdef-3-1790000000123-10000");
  EXPECT_EQ(x.Bqual(), "17");
  EXPECT_LE(x.Gtrid().size(), 64u);  // XA's limit
  Xid widest{x.gid, 999, 9999999999999, 9999999999999 + 9999999, 999};
  EXPECT_EQ(widest.Gtrid().size(), 62u);
  Result<Xid> y = Xid::Parse(Xid::kFormatId, x.Gtrid(), x.Bqual());
  ASSERT_TRUE(y.ok()) << y.status().ToString();
  EXPECT_EQ(*y, x);
}

TEST(Xid, OtherApplicationsXidsAreNotOurs) {
  EXPECT_EQ(Xid::Parse(1, "sg1-x", "1").status().code(), Code::kNotFound);
  EXPECT_EQ(Xid::Parse(Xid::kFormatId, "mytx-1", "1").status().code(), Code::kNotFound);
}

TEST(Xid, MalformedSeigoXidsAreCorruption) {
  const std::string gid = "0123456789abcdef0123456789abcdef";
  for (auto [g, b] : std::vector<std::pair<std::string, std::string>>{
           {"sg1-" + gid, "1"},
           {"sg1-" + gid + "-1", "1"},
           {"sg1-" + gid + "-1-2", "1"},
           {"sg1-XYZ-1-2-3", "1"},
           {"sg1-" + gid + "-x-2-3", "1"},
           {"sg1-" + gid + "-1-2-", "1"},
           {"sg1-" + gid + "-1-2-3", ""},
           {"sg1-" + gid + "-01-2-3", "1"},
           {"sg1-" + gid + "-1-2-3-4", "1"},
           {"sg1-" + gid + "-1-2-3", "b"}}) {
    EXPECT_EQ(Xid::Parse(Xid::kFormatId, g, b).status().code(), Code::kCorruption) << g << " " << b;
  }
}

}  // namespace
}  // namespace seigo
