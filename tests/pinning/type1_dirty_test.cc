// Type1Backend dirty tracking: bitmaps for writes and pins, report-and-clear, errno values.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "type1_test_util.h"

namespace umdev::pinning::testing {
namespace {

using ::testing::ElementsAre;

constexpr uint64_t kEightPages = 8 * kPageSize;

class Type1DirtyTest : public Type1Test {
 protected:
  void SetUp() override {
    Type1Test::SetUp();
    ASSERT_TRUE(backend().Map(memory_.Request(kIova, kEightPages)).has_value());
    ASSERT_TRUE(backend().StartDirtyTracking(kPageSize).has_value());
  }
  void Write(uint64_t iova, size_t length) {
    ASSERT_TRUE(backend().DmaWrite(iova, Bytes(length, 1)).has_value());
  }
  std::vector<uint64_t> ReadAndClear(uint64_t pgsize = kPageSize) {
    auto bitmap = backend().ReadAndClearDirty(kIova, kEightPages, pgsize);
    EXPECT_TRUE(bitmap.has_value()) << bitmap.error().Describe();
    return bitmap.value_or(std::vector<uint64_t>{});
  }
};

TEST_F(Type1DirtyTest, NothingWrittenReportsNothing) {
  EXPECT_THAT(ReadAndClear(), ElementsAre(0u));
}

TEST_F(Type1DirtyTest, WriteMarksEveryPageItTouches) {
  Write(kIova + 2 * kPageSize - 1, 2);   // Pages 1 and 2.
  Write(kIova + 5 * kPageSize, 1);       // Page 5.

  EXPECT_THAT(ReadAndClear(), ElementsAre(0b100110u));
}

TEST_F(Type1DirtyTest, ReportClearsTheBits) {
  Write(kIova, 1);
  ASSERT_THAT(ReadAndClear(), ElementsAre(1u));

  EXPECT_THAT(ReadAndClear(), ElementsAre(0u));
}

TEST_F(Type1DirtyTest, ReadsDoNotDirtyPages) {
  auto out = Bytes(kEightPages, 0);
  ASSERT_TRUE(backend().DmaRead(kIova, out).has_value());

  EXPECT_THAT(ReadAndClear(), ElementsAre(0u));
}

TEST_F(Type1DirtyTest, PinnedPagesAreDirtyWhilePinnedAndOnceAfterUnpin) {
  ASSERT_TRUE(backend().PinPages(listener_, kIova + 3 * kPageSize, 2, kProtRw).has_value());
  ASSERT_THAT(ReadAndClear(), ElementsAre(0b11000u));
  ASSERT_THAT(ReadAndClear(), ElementsAre(0b11000u));  // Still pinned: still dirty.

  backend().UnpinPages(listener_, kIova + 3 * kPageSize, 2);

  EXPECT_THAT(ReadAndClear(), ElementsAre(0b11000u));  // Written until the unpin.
  EXPECT_THAT(ReadAndClear(), ElementsAre(0u));
}

TEST_F(Type1DirtyTest, ReadPinsAreReportedToo) {
  ASSERT_TRUE(listener_.PinAndHold(kIova + kPageSize, 1, kProtRead).has_value());

  EXPECT_THAT(ReadAndClear(), ElementsAre(0b10u));  // As type1: every pinned page.
}

TEST_F(Type1DirtyTest, LargerPageSizeFoldsBasePages) {
  ASSERT_TRUE(backend().StopDirtyTracking().has_value());
  ASSERT_TRUE(backend().StartDirtyTracking(2 * kPageSize).has_value());
  Write(kIova + 3 * kPageSize, 1);  // Base page 3: 8 KiB page 1.
  Write(kIova + 6 * kPageSize, 1);  // Base page 6: 8 KiB page 3.

  EXPECT_THAT(ReadAndClear(2 * kPageSize), ElementsAre(0b1010u));
}

TEST_F(Type1DirtyTest, SubrangeReportsOnlyItsPagesAndKeepsTheRest) {
  Write(kIova, kEightPages);

  auto middle = backend().ReadAndClearDirty(kIova + 2 * kPageSize, 2 * kPageSize, kPageSize);

  ASSERT_TRUE(middle.has_value());
  EXPECT_THAT(*middle, ElementsAre(0b11u));
  EXPECT_THAT(ReadAndClear(), ElementsAre(0b11110011u));
}

TEST_F(Type1DirtyTest, RangeAcrossAdjacentMappingsIsReported) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova + kEightPages, kPageSize)).has_value());
  Write(kIova + kEightPages - 1, 2);

  auto bitmap = backend().ReadAndClearDirty(kIova, kEightPages + kPageSize, kPageSize);

  ASSERT_TRUE(bitmap.has_value());
  EXPECT_THAT(*bitmap, ElementsAre(0b110000000u));
}

TEST_F(Type1DirtyTest, BitmapLongerThanOneWordUsesLaterWords) {
  GuestMemory big(70);
  ASSERT_TRUE(backend().Map(big.Request(0x10000000, 70 * kPageSize)).has_value());
  ASSERT_TRUE(backend().DmaWrite(0x10000000 + 65 * kPageSize, Bytes(1, 1)).has_value());

  auto bitmap = backend().ReadAndClearDirty(0x10000000, 70 * kPageSize, kPageSize);

  ASSERT_TRUE(bitmap.has_value());
  EXPECT_THAT(*bitmap, ElementsAre(0u, 0b10u));
}

TEST_F(Type1DirtyTest, MappingAddedWhileTrackingIsTracked) {
  ASSERT_TRUE(backend().Map(memory_.Request(0x10000000, kPageSize)).has_value());
  ASSERT_TRUE(backend().DmaWrite(0x10000000, Bytes(1, 1)).has_value());

  auto bitmap = backend().ReadAndClearDirty(0x10000000, kPageSize, kPageSize);

  ASSERT_TRUE(bitmap.has_value());
  EXPECT_THAT(*bitmap, ElementsAre(1u));
}

TEST_F(Type1DirtyTest, MessageChannelWritesAreTracked) {
  FakeChannel channel(0x10000000, kPageSize);
  backend().SetMessageChannel(&channel);
  ASSERT_TRUE(backend().Map(FdlessRequest(0x10000000, kPageSize)).has_value());
  ASSERT_TRUE(backend().DmaWrite(0x10000000, Bytes(1, 1)).has_value());

  auto bitmap = backend().ReadAndClearDirty(0x10000000, kPageSize, kPageSize);

  ASSERT_TRUE(bitmap.has_value());
  EXPECT_THAT(*bitmap, ElementsAre(1u));
  backend().SetMessageChannel(nullptr);
}

TEST_F(Type1DirtyTest, RestartDropsOldBits) {
  Write(kIova, 1);
  ASSERT_TRUE(backend().StopDirtyTracking().has_value());

  ASSERT_TRUE(backend().StartDirtyTracking(kPageSize).has_value());

  EXPECT_THAT(ReadAndClear(), ElementsAre(0u));
}

TEST_F(Type1DirtyTest, StartingAgainAtTheSamePageSizeIsANoop) {
  Write(kIova, 1);

  ASSERT_TRUE(backend().StartDirtyTracking(kPageSize).has_value());

  EXPECT_THAT(ReadAndClear(), ElementsAre(1u));
}

TEST_F(Type1DirtyTest, StartingAtAnotherPageSizeWhileOnIsEbusy) {
  auto started = backend().StartDirtyTracking(2 * kPageSize);

  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, EBUSY);
}

TEST_F(Type1DirtyTest, StopWhenOffIsANoop) {
  ASSERT_TRUE(backend().StopDirtyTracking().has_value());

  EXPECT_TRUE(backend().StopDirtyTracking().has_value());
}

TEST_F(Type1DirtyTest, ReportWhileTrackingIsOffIsEinval) {
  ASSERT_TRUE(backend().StopDirtyTracking().has_value());

  auto bitmap = backend().ReadAndClearDirty(kIova, kEightPages, kPageSize);

  ASSERT_FALSE(bitmap.has_value());
  EXPECT_EQ(bitmap.error().code, EINVAL);
}

struct BadStart {
  const char* name;
  uint64_t pgsize;
};
UMDEV_PRINT_CASE_AS_NAME(BadStart)

class Type1BadStartTest : public Type1Test, public ::testing::WithParamInterface<BadStart> {};

TEST_P(Type1BadStartTest, IsRejectedWithEinval) {
  auto started = backend().StartDirtyTracking(GetParam().pgsize);

  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, EINVAL);
}

INSTANTIATE_TEST_SUITE_P(PageSizes, Type1BadStartTest,
                         ::testing::Values(BadStart{"Zero", 0}, BadStart{"Half", kPageSize / 2},
                                           BadStart{"ThreePages", 3 * kPageSize}),
                         CaseName());

struct BadReport {
  const char* name;
  uint64_t iova;
  uint64_t size;
  uint64_t pgsize;
};
UMDEV_PRINT_CASE_AS_NAME(BadReport)

class Type1BadReportTest : public Type1DirtyTest,
                           public ::testing::WithParamInterface<BadReport> {};

// Tracking is on at kPageSize; the mapping is [kIova, kIova + 8 pages).
TEST_P(Type1BadReportTest, IsRejectedWithEinval) {
  const BadReport& bad = GetParam();

  auto bitmap = backend().ReadAndClearDirty(bad.iova, bad.size, bad.pgsize);

  ASSERT_FALSE(bitmap.has_value());
  EXPECT_EQ(bitmap.error().code, EINVAL);
}

INSTANTIATE_TEST_SUITE_P(
    Ranges, Type1BadReportTest,
    ::testing::Values(BadReport{"OtherPageSize", kIova, kEightPages, 2 * kPageSize},
                      BadReport{"EmptyRange", kIova, 0, kPageSize},
                      BadReport{"UnalignedIova", kIova + 1, kPageSize, kPageSize},
                      BadReport{"UnalignedSize", kIova, kPageSize + 1, kPageSize},
                      BadReport{"Wraps", ~uint64_t{0} - kPageSize + 1, 2 * kPageSize, kPageSize},
                      BadReport{"StartsUnmapped", kIova - kPageSize, 2 * kPageSize, kPageSize},
                      BadReport{"EndsUnmapped", kIova, kEightPages + kPageSize, kPageSize},
                      BadReport{"Unmapped", 0x10000000, kPageSize, kPageSize}),
    CaseName());

}  // namespace
}  // namespace umdev::pinning::testing
