// ParseMemorySize: the sizes umdevctl libvirt-xml --memory takes.
#include <gtest/gtest.h>

#include <cerrno>

#include "umdev/cli/commands.h"

namespace umdev::cli {
namespace {

TEST(MemorySizeTest, BareNumbersAreBytesAndSuffixesAreBinary) {
  EXPECT_EQ(ParseMemorySize("4096").value(), 4096u);
  EXPECT_EQ(ParseMemorySize("4K").value(), 4096u);
  EXPECT_EQ(ParseMemorySize("512m").value(), 512ull << 20);
  EXPECT_EQ(ParseMemorySize("4G").value(), 4ull << 30);
  EXPECT_EQ(ParseMemorySize("2t").value(), 2ull << 40);
  EXPECT_EQ(ParseMemorySize("0").value(), 0u);
}

TEST(MemorySizeTest, AnythingElseIsEinvalAndOverflowIsErange) {
  for (const char* bad : {"", "G", "-1", "1.5G", "4GB", "4 G", "4X", " 4", "0x10"}) {
    auto size = ParseMemorySize(bad);
    ASSERT_FALSE(size.has_value()) << bad;
    EXPECT_EQ(size.error().code, EINVAL) << bad;
  }
  EXPECT_EQ(ParseMemorySize("18446744073709551615").value(), ~0ull);
  EXPECT_EQ(ParseMemorySize("18446744073709551616").error().code, ERANGE);
  EXPECT_EQ(ParseMemorySize("16777216T").error().code, ERANGE);
  EXPECT_EQ(ParseMemorySize("16777215T").value(), 16777215ull << 40);
}

}  // namespace
}  // namespace umdev::cli
