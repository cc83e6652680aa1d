#include "umdev/common/unix_address.h"

#include <gtest/gtest.h>

#include <cstring>

namespace umdev {
namespace {

TEST(UnixAddressTest, FillsFamilyAndPath) {
  auto addr = UnixAddress("/run/umdev/control.sock");
  ASSERT_TRUE(addr.has_value());
  EXPECT_EQ(addr->sun_family, AF_UNIX);
  EXPECT_STREQ(addr->sun_path, "/run/umdev/control.sock");
}

TEST(UnixAddressTest, PathThatDoesNotFitIsEnametoolong) {
  const std::string longest(sizeof(sockaddr_un::sun_path) - 1, 'a');  // Fits with its NUL.
  EXPECT_TRUE(UnixAddress(longest).has_value());
  EXPECT_EQ(UnixAddress(longest + "a").error().code, ENAMETOOLONG);
}

}  // namespace
}  // namespace umdev
