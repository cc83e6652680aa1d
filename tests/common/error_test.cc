#include "umdev/common/error.h"

#include <gtest/gtest.h>

namespace umdev {
namespace {

Result<int> Half(int value) {
  if (value % 2 != 0) return Fail(EINVAL, "odd value");
  return value / 2;
}

Result<int> Quarter(int value) {
  UMDEV_ASSIGN_OR_RETURN(const int half, Half(value));
  UMDEV_ASSIGN_OR_RETURN(const int quarter, Half(half));
  return quarter;
}

Result<void> CheckEven(int value) {
  UMDEV_TRY(Half(value));
  return {};
}

TEST(ErrorTest, AssignOrReturnPassesValuesThrough) {
  auto result = Quarter(8);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(*result, 2);
}

TEST(ErrorTest, AssignOrReturnPropagatesTheFirstError) {
  auto result = Quarter(6);  // 6 / 2 = 3 is odd: the second step fails.
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, EINVAL);
  EXPECT_EQ(result.error().context, "odd value");
}

TEST(ErrorTest, TryPropagatesErrorsFromVoidFunctions) {
  EXPECT_TRUE(CheckEven(4).has_value());
  EXPECT_EQ(CheckEven(3).error().code, EINVAL);
}

TEST(ErrorTest, DescribeNamesTheErrno) {
  const Error error{EEXIST, "create mdev"};
  EXPECT_EQ(error.Describe(), "create mdev: File exists (EEXIST)");
}

TEST(ErrorTest, WrapPrependsContext) {
  EXPECT_EQ(Wrap(Error{ENODEV, "inner"}, "outer").context, "outer: inner");
}

TEST(ErrorTest, ErrnoNameOfUnknownValueIsPlaceholder) {
  EXPECT_EQ(ErrnoName(EUSERS), "EUSERS");
  EXPECT_EQ(ErrnoName(100000), "E?");
}

}  // namespace
}  // namespace umdev
