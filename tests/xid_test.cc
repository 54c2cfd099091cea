#include <gtest/gtest.h>

#include "seigo/participant.h"

namespace seigo {
namespace {

constexpr const char* kDep = "00c0ffee00c0ffee";

TEST(Xid, RoundTripsThroughGtridAndBqual) {
  Xid x{kDep, "0123456789abcdef0123456789abcdef", 3, 1790000000123, 1790000010123, 17};
  EXPECT_EQ(x.Gtrid(), "sg2-0123456789abcdef0123456789abcdef-3-1790000000123-10000");
  EXPECT_EQ(x.Bqual(), "17-00c0ffee00c0ffee");
  EXPECT_LE(x.Gtrid().size(), 64u);  // XA's limits: 64 bytes each
  Xid widest{kDep, x.gid, 999, 9999999999999, 9999999999999 + 9999999, 999};
  EXPECT_EQ(widest.Gtrid().size(), 62u);
  EXPECT_EQ(widest.Bqual().size(), 20u);
  Result<Xid> y = Xid::Parse(Xid::kFormatId, x.Gtrid(), x.Bqual());
  ASSERT_TRUE(y.ok()) << y.status().ToString();
  EXPECT_EQ(*y, x);
}

TEST(Xid, OtherApplicationsXidsAreNotOurs) {
  EXPECT_EQ(Xid::Parse(1, "sg2-x", "1").status().code(), Code::kNotFound);
  EXPECT_EQ(Xid::Parse(Xid::kFormatId, "mytx-1", "1").status().code(), Code::kNotFound);
}

TEST(Xid, DeploymentLessXidsOfSeigo01AreNotTouched) {
  // seigo 0.1 wrote "sg1-..." with bqual "<branch>": no deployment, so no resolver can know
  // whose it is. They are not ours to act on (doc/xid.md, "Upgrading").
  EXPECT_EQ(Xid::Parse(Xid::kFormatId, "sg1-0123456789abcdef0123456789abcdef-3-1790000000123-10000",
                       "1")
                .status()
                .code(),
            Code::kNotFound);
}

TEST(Xid, MalformedSeigoXidsAreCorruption) {
  const std::string gid = "0123456789abcdef0123456789abcdef";
  const std::string b1 = std::string("1-") + kDep;
  for (auto [g, b] : std::vector<std::pair<std::string, std::string>>{
           {"sg2-" + gid, b1},
           {"sg2-" + gid + "-1", b1},
           {"sg2-" + gid + "-1-2", b1},
           {"sg2-XYZ-1-2-3", b1},
           {"sg2-" + gid + "-x-2-3", b1},
           {"sg2-" + gid + "-1-2-", b1},
           {"sg2-" + gid + "-1-2-3", ""},
           {"sg2-" + gid + "-01-2-3", b1},
           {"sg2-" + gid + "-1-2-3-4", b1},
           {"sg2-" + gid + "-1-2-3", "b-" + std::string(kDep)},
           {"sg2-" + gid + "-1-2-3", "1"},
           {"sg2-" + gid + "-1-2-3", "1-00C0FFEE00C0FFEE"},
           {"sg2-" + gid + "-1-2-3", "1-c0ffee"}}) {
    EXPECT_EQ(Xid::Parse(Xid::kFormatId, g, b).status().code(), Code::kCorruption) << g << " " << b;
  }
}

}  // namespace
}  // namespace seigo
