#include "umdev/common/uuid.h"

#include <gtest/gtest.h>

namespace umdev {
namespace {

TEST(UuidTest, ParsesAndPrintsLowercaseCanonicalForm) {
  auto uuid = Uuid::Parse("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001");
  ASSERT_TRUE(uuid.has_value());
  EXPECT_EQ(uuid->ToString(), "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
}

TEST(UuidTest, RejectsWrongLength) {
  EXPECT_EQ(Uuid::Parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa100").error().code, EINVAL);
  EXPECT_EQ(Uuid::Parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001\n").error().code, EINVAL);
}

TEST(UuidTest, RejectsMisplacedDashesAndNonHex) {
  EXPECT_EQ(Uuid::Parse("83b8f4f2509f-382f-3c1e-e6bfe0fa1001-").error().code, EINVAL);
  EXPECT_EQ(Uuid::Parse("g3b8f4f2-509f-382f-3c1e-e6bfe0fa1001").error().code, EINVAL);
}

TEST(UuidTest, GeneratedUuidsAreVersion4AndDistinct) {
  const Uuid a = Uuid::Generate();
  const Uuid b = Uuid::Generate();
  EXPECT_NE(a, b);
  const std::string text = a.ToString();
  EXPECT_EQ(text[14], '4');
  EXPECT_NE(std::string("89ab").find(text[19]), std::string::npos);
  EXPECT_EQ(Uuid::Parse(text).value(), a);
}

TEST(UuidTest, DefaultIsNil) {
  EXPECT_TRUE(Uuid().is_nil());
  EXPECT_FALSE(Uuid::Generate().is_nil());
}

}  // namespace
}  // namespace umdev
