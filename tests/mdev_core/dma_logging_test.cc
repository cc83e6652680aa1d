// Device DMA logging: the kernel's request checks and DeviceFile's calls.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "migration_test_util.h"
#include "umdev/mdev_core/dma_logging.h"

namespace umdev {
namespace {

using ::testing::ElementsAre;
using ::umdev::testing::kMigUuid1;
using ::umdev::testing::MigrationFixture;
using ::umdev::testing::TestDevice;

constexpr uint64_t kPage = 4096;

int StartErrno(std::vector<SparseMmapArea> ranges, uint64_t page_size) {
  const auto result = ValidateDmaLoggingStart(ranges, page_size);
  return result.has_value() ? 0 : result.error().code;
}

TEST(ValidateDmaLoggingStartTest, AcceptsAlignedDisjointRanges) {
  EXPECT_EQ(StartErrno({{0x2000, 0x1000}, {0, 0x2000}}, kPage), 0);
  EXPECT_EQ(StartErrno({{0, 0x200000}}, 0x200000), 0);
}

TEST(ValidateDmaLoggingStartTest, NoRangesIsEinval) { EXPECT_EQ(StartErrno({}, kPage), EINVAL); }

TEST(ValidateDmaLoggingStartTest, MoreRangesThanAPageHoldsIsE2big) {
  std::vector<SparseMmapArea> ranges;
  for (uint64_t i = 0; i <= kDmaLoggingMaxRanges; ++i) ranges.push_back({i * 2 * kPage, kPage});
  EXPECT_EQ(StartErrno(ranges, kPage), E2BIG);
  ranges.pop_back();
  EXPECT_EQ(StartErrno(ranges, kPage), 0);
}

TEST(ValidateDmaLoggingStartTest, UnalignedRangeIsEinval) {
  EXPECT_EQ(StartErrno({{0x800, kPage}}, kPage), EINVAL);
  EXPECT_EQ(StartErrno({{0, 0x1800}}, kPage), EINVAL);
}

TEST(ValidateDmaLoggingStartTest, WrappingRangeIsEoverflow) {
  EXPECT_EQ(StartErrno({{UINT64_MAX - kPage + 1, kPage}}, kPage), EOVERFLOW);  // Ends at 2^64.
  EXPECT_EQ(StartErrno({{UINT64_MAX - 2 * kPage + 1, kPage}}, kPage), 0);
}

TEST(ValidateDmaLoggingStartTest, OverlappingRangesAreEinval) {
  EXPECT_EQ(StartErrno({{0, 0x2000}, {0x1000, 0x2000}}, kPage), EINVAL);
  EXPECT_EQ(StartErrno({{0x1000, 0x1000}, {0, 0x2000}}, kPage), EINVAL);
  EXPECT_EQ(StartErrno({{0, 0x1000}, {0x1000, 0x1000}}, kPage), 0);  // Adjacent is fine.
}

TEST(ValidateDmaLoggingStartTest, BadPageSizeOrEmptyRangeIsEinval) {
  EXPECT_EQ(StartErrno({{0, kPage}}, 0), EINVAL);
  EXPECT_EQ(StartErrno({{0, 0x3000}}, 0x3000), EINVAL);
  EXPECT_EQ(StartErrno({{0, 0}}, kPage), EINVAL);
}

TEST(DirtyBitmapWordsTest, OneBitPerPageRoundedUpToWords) {
  EXPECT_EQ(DirtyBitmapWords(0, kPage, kPage).value(), 1u);
  EXPECT_EQ(DirtyBitmapWords(0, 64 * kPage, kPage).value(), 1u);
  EXPECT_EQ(DirtyBitmapWords(0, 64 * kPage + 1, kPage).value(), 2u);
  EXPECT_EQ(DirtyBitmapWords(0x1000, 1, 0x200000).value(), 1u);
}

TEST(DirtyBitmapWordsTest, PageSizeBelow4kOrNotAPowerOfTwoIsEinval) {
  EXPECT_EQ(DirtyBitmapWords(0, kPage, 2048).error().code, EINVAL);
  EXPECT_EQ(DirtyBitmapWords(0, kPage, 0).error().code, EINVAL);
  EXPECT_EQ(DirtyBitmapWords(0, kPage, 0x3000).error().code, EINVAL);
}

TEST(DirtyBitmapWordsTest, WrappingRangeIsEoverflow) {
  EXPECT_EQ(DirtyBitmapWords(UINT64_MAX - kPage + 1, kPage, kPage).error().code, EOVERFLOW);
}

TEST(DirtyBitmapWordsTest, EmptyRangeOrOversizedBitmapIsEinval) {
  EXPECT_EQ(DirtyBitmapWords(0, 0, kPage).error().code, EINVAL);
  const uint64_t max_pages = kDirtyBitmapMaxBytes * 8;
  EXPECT_EQ(DirtyBitmapWords(0, max_pages * kPage, kPage).value(), kDirtyBitmapMaxBytes / 8);
  EXPECT_EQ(DirtyBitmapWords(0, max_pages * kPage + 1, kPage).error().code, EINVAL);
}

TEST(DeviceDmaLoggingTest, DeviceWithoutDirtyLogAnswersEnotty) {
  MigrationFixture fx({.migration_flags = VFIO_MIGRATION_STOP_COPY});
  auto file = fx.Open(kMigUuid1);
  const SparseMmapArea range{0, kPage};
  EXPECT_EQ(file->DmaLoggingStart(std::span(&range, 1), kPage).error().code, ENOTTY);
  EXPECT_EQ(file->DmaLoggingStop().error().code, ENOTTY);
  EXPECT_EQ(file->DmaLoggingReport(0, kPage, kPage).error().code, ENOTTY);
}

TEST(DeviceDmaLoggingTest, InvalidRequestsNeverReachTheVendor) {
  MigrationFixture fx({.dirty_log = true});
  auto file = fx.Open(kMigUuid1);
  const SparseMmapArea unaligned{0x800, kPage};
  EXPECT_EQ(file->DmaLoggingStart(std::span(&unaligned, 1), kPage).error().code, EINVAL);
  EXPECT_FALSE(fx.fake(kMigUuid1).logging());
  const SparseMmapArea range{0, 4 * kPage};
  ASSERT_TRUE(file->DmaLoggingStart(std::span(&range, 1), kPage).has_value());
  fx.fake(kMigUuid1).MarkDirty(kPage);
  EXPECT_EQ(file->DmaLoggingReport(0, 4 * kPage, 1024).error().code, EINVAL);
  // The rejected report did not clear the log.
  EXPECT_THAT(file->DmaLoggingReport(0, 4 * kPage, kPage).value(), ElementsAre(0b10u));
}

TEST(DeviceDmaLoggingTest, ReportsDirtyPagesAndClearsThem) {
  MigrationFixture fx({.dirty_log = true});
  auto file = fx.Open(kMigUuid1);
  const std::vector<SparseMmapArea> ranges = {{0, 128 * kPage}, {0x100000000, kPage}};
  ASSERT_TRUE(file->DmaLoggingStart(ranges, kPage).has_value());
  EXPECT_EQ(fx.fake(kMigUuid1).logged_ranges().size(), 2u);
  fx.fake(kMigUuid1).MarkDirty(0);
  fx.fake(kMigUuid1).MarkDirty(3 * kPage + 17);
  fx.fake(kMigUuid1).MarkDirty(65 * kPage);
  fx.fake(kMigUuid1).MarkDirty(200 * kPage);  // Outside the logged ranges.
  EXPECT_THAT(file->DmaLoggingReport(0, 128 * kPage, kPage).value(),
              ElementsAre(0b1001u, 0b10u));
  EXPECT_THAT(file->DmaLoggingReport(0, 128 * kPage, kPage).value(), ElementsAre(0u, 0u));
  // Reports may use a coarser page size than the logging.
  fx.fake(kMigUuid1).MarkDirty(3 * kPage);
  EXPECT_THAT(file->DmaLoggingReport(0, 8 * kPage, 2 * kPage).value(), ElementsAre(0b10u));
  ASSERT_TRUE(file->DmaLoggingStop().has_value());
  EXPECT_FALSE(fx.fake(kMigUuid1).logging());
}

TEST(DeviceDmaLoggingTest, VendorErrorsPassThrough) {
  MigrationFixture fx({.dirty_log = true});
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->DmaLoggingReport(0, kPage, kPage).error().code, EINVAL);  // Not started.
  const SparseMmapArea range{0, kPage};
  ASSERT_TRUE(file->DmaLoggingStart(std::span(&range, 1), kPage).has_value());
  EXPECT_EQ(file->DmaLoggingStart(std::span(&range, 1), kPage).error().code, EBUSY);
}

TEST(DeviceDmaLoggingTest, BitmapOfTheWrongSizeIsEio) {
  MigrationFixture fx({.dirty_log = true});
  auto file = fx.Open(kMigUuid1);
  const SparseMmapArea range{0, 128 * kPage};
  ASSERT_TRUE(file->DmaLoggingStart(std::span(&range, 1), kPage).has_value());
  fx.fake(kMigUuid1).set_short_reports(true);
  EXPECT_EQ(file->DmaLoggingReport(0, 128 * kPage, kPage).error().code, EIO);
}

}  // namespace
}  // namespace umdev
