// DeviceIrqs: MSI-X per-vector masking, pending bits and the PBA reader.
#include <array>
#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "irq_test_util.h"
#include "umdev/irq/device_irqs.h"

namespace umdev::irq {
namespace {

using namespace testutil;  // NOLINT: the helpers are these tests' vocabulary.

// Eight eventfds assigned to MSI-X vectors 0..7, which enables MSI-X.
struct MsixVectors {
  explicit MsixVectors(DeviceIrqs& irqs) {
    std::vector<UniqueFd> fds;
    for (const Efd& efd : efds) fds.push_back(efd.Dup());
    EXPECT_EQ(Errno(Apply(irqs, Fds(kMsix, 0, std::move(fds)))), 0);
  }
  std::array<Efd, 8> efds;
};

TEST(DeviceIrqsMsixMaskTest, InfoReportsMaskable) {
  DeviceIrqs irqs(kCounts);
  EXPECT_EQ(irqs.Info(kMsix).flags,
            VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE | VFIO_IRQ_INFO_MASKABLE);
  EXPECT_EQ(irqs.Info(kMsi).flags & VFIO_IRQ_INFO_MASKABLE, 0u);
}

TEST(DeviceIrqsMsixMaskTest, MaskedVectorGoesPendingAndUnmaskDeliversOnce) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 2, 1))), 0);
  EXPECT_TRUE(irqs.IsMasked(kMsix, 2));
  EXPECT_FALSE(irqs.IsMasked(kMsix, 1));
  irqs.Trigger(kMsix, 2);
  irqs.Trigger(kMsix, 2);
  EXPECT_EQ(v.efds[2].Take(), 0u);
  EXPECT_TRUE(irqs.Pending(kMsix, 2));
  EXPECT_EQ(irqs.MsixPendingWord(0), uint64_t{1} << 2);
  irqs.Trigger(kMsix, 1);  // Unmasked neighbours are unaffected.
  EXPECT_EQ(v.efds[1].Take(), 1u);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kUnmask, 2, 1))), 0);
  EXPECT_EQ(v.efds[2].Take(), 1u);  // One message for the coalesced pending bit.
  EXPECT_FALSE(irqs.Pending(kMsix, 2));
  EXPECT_FALSE(irqs.IsMasked(kMsix, 2));
  EXPECT_EQ(irqs.MsixPendingWord(0), 0u);
  irqs.Trigger(kMsix, 2);
  EXPECT_EQ(v.efds[2].Take(), 1u);
}

TEST(DeviceIrqsMsixMaskTest, UnmaskWithNothingPendingDoesNotSignal) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kUnmask, 0, 8))), 0);  // Already unmasked.
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 1))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 1))), 0);  // Idempotent.
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kUnmask, 0, 1))), 0);
  EXPECT_EQ(v.efds[0].Take(), 0u);
  EXPECT_FALSE(irqs.IsMasked(kMsix, 0));
}

TEST(DeviceIrqsMsixMaskTest, DataNoneActsOnTheWholeRange) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 3, 4))), 0);
  for (uint32_t i = 0; i < 8; ++i) {
    EXPECT_EQ(irqs.IsMasked(kMsix, i), i >= 3 && i < 7) << i;
    irqs.Trigger(kMsix, i);
  }
  EXPECT_EQ(irqs.MsixPendingWord(0), 0b0111'1000u);
  EXPECT_EQ(v.efds[7].Take(), 1u);
  EXPECT_EQ(v.efds[4].Take(), 0u);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kUnmask, 0, 8))), 0);
  for (uint32_t i = 3; i < 7; ++i) EXPECT_EQ(v.efds[i].Take(), 1u) << i;
  EXPECT_EQ(irqs.MsixPendingWord(0), 0u);
}

TEST(DeviceIrqsMsixMaskTest, DataBoolActsOnTheSelectedVectorsOnly) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  ASSERT_EQ(Errno(Apply(irqs, Bools(kMsix, kMask, 4, {1, 0, 1}))), 0);
  EXPECT_TRUE(irqs.IsMasked(kMsix, 4));
  EXPECT_FALSE(irqs.IsMasked(kMsix, 5));
  EXPECT_TRUE(irqs.IsMasked(kMsix, 6));
  irqs.Trigger(kMsix, 4);
  irqs.Trigger(kMsix, 6);
  EXPECT_EQ(irqs.MsixPendingWord(0), (uint64_t{1} << 4) | (uint64_t{1} << 6));
  ASSERT_EQ(Errno(Apply(irqs, Bools(kMsix, kUnmask, 4, {0, 0, 1}))), 0);
  EXPECT_EQ(v.efds[6].Take(), 1u);
  EXPECT_EQ(v.efds[4].Take(), 0u);
  EXPECT_TRUE(irqs.IsMasked(kMsix, 4));
  EXPECT_TRUE(irqs.Pending(kMsix, 4));
  EXPECT_EQ(irqs.MsixPendingWord(0), uint64_t{1} << 4);
}

TEST(DeviceIrqsMsixMaskTest, MaskedVectorWithoutEventfdStillGoesPending) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsix, 0, One(UniqueFd())))), 0);  // Enable, no vectors.
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 1, 1))), 0);
  irqs.Trigger(kMsix, 1);
  irqs.Trigger(kMsix, 0);  // Unmasked and unassigned: dropped.
  EXPECT_TRUE(irqs.Pending(kMsix, 1));
  EXPECT_FALSE(irqs.Pending(kMsix, 0));
  // Assigning the eventfd keeps the vector masked and pending; unmask delivers.
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsix, 1, One(efd.Dup())))), 0);
  EXPECT_TRUE(irqs.IsMasked(kMsix, 1));
  EXPECT_TRUE(irqs.Pending(kMsix, 1));
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kUnmask, 1, 1))), 0);
  EXPECT_EQ(efd.Take(), 1u);
  EXPECT_FALSE(irqs.Pending(kMsix, 1));
}

TEST(DeviceIrqsMsixMaskTest, ReassigningAVectorKeepsItsState) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  Efd replacement;
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 5, 1))), 0);
  irqs.Trigger(kMsix, 5);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsix, 5, One(replacement.Dup())))), 0);
  EXPECT_TRUE(irqs.IsMasked(kMsix, 5));
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kUnmask, 5, 1))), 0);
  EXPECT_EQ(replacement.Take(), 1u);
  EXPECT_EQ(v.efds[5].Take(), 0u);
}

TEST(DeviceIrqsMsixMaskTest, DisableDiscardsMasksAndPendingBits) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 8))), 0);
  irqs.Trigger(kMsix, 3);
  ASSERT_EQ(irqs.MsixPendingWord(0), uint64_t{1} << 3);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kTrigger, 0, 0))), 0);
  EXPECT_EQ(irqs.MsixPendingWord(0), 0u);
  EXPECT_FALSE(irqs.IsMasked(kMsix, 3));
  EXPECT_FALSE(irqs.Pending(kMsix, 3));
  // Re-enabled, every vector starts unmasked with nothing pending.
  MsixVectors again(irqs);
  irqs.Trigger(kMsix, 3);
  EXPECT_EQ(again.efds[3].Take(), 1u);
  EXPECT_EQ(v.efds[3].Take(), 0u);
}

TEST(DeviceIrqsMsixMaskTest, DisableAllDiscardsMasksAndPendingBits) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 6, 2))), 0);
  irqs.Trigger(kMsix, 7);
  irqs.DisableAll();
  EXPECT_EQ(irqs.MsixPendingWord(0), 0u);
  EXPECT_FALSE(irqs.IsMasked(kMsix, 6));
  EXPECT_FALSE(irqs.Pending(kMsix, 7));
}

TEST(DeviceIrqsMsixMaskTest, LoopbackTriggerIgnoresTheMask) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 1))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kTrigger, 0, 1))), 0);
  EXPECT_EQ(v.efds[0].Take(), 1u);
  EXPECT_FALSE(irqs.Pending(kMsix, 0));
  EXPECT_TRUE(irqs.IsMasked(kMsix, 0));
}

TEST(DeviceIrqsMsixMaskTest, MaskNeedsMsixEnabled) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  EXPECT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 1))), EINVAL);
  EXPECT_EQ(Errno(Apply(irqs, Bools(kMsix, kUnmask, 0, {1}))), EINVAL);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsi, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 1))), EINVAL);
  EXPECT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kUnmask, 0, 1))), EINVAL);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsi, kNone | kTrigger, 0, 0))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 1))), EINVAL);
  EXPECT_FALSE(irqs.IsMasked(kMsix, 0));
}

TEST(DeviceIrqsMsixMaskTest, MaskByEventfdIsEnotty) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  for (uint32_t action : {kMask, kUnmask}) {
    IrqSet set = Set(kMsix, kEventfd | action, 0, 1);
    set.fds = One(v.efds[0].Dup());
    EXPECT_EQ(Errno(Apply(irqs, std::move(set))), ENOTTY) << action;
  }
  EXPECT_FALSE(irqs.IsMasked(kMsix, 0));
}

TEST(DeviceIrqsMsixMaskTest, OutOfRangeMaskIsRejectedBeforeTheDevice) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  EXPECT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 6, 3))), EINVAL);
  EXPECT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 8, 1))), EINVAL);
  EXPECT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 0))), EINVAL);
  EXPECT_FALSE(irqs.IsMasked(kMsix, 6));
}

TEST(DeviceIrqsMsixMaskTest, QueriesOutOfRangeAreFalse) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 8))), 0);
  irqs.Trigger(kMsix, 8);  // No such vector: ignored.
  EXPECT_FALSE(irqs.IsMasked(kMsix, 8));
  EXPECT_FALSE(irqs.Pending(kMsix, 8));
  EXPECT_FALSE(irqs.IsMasked(kMsi, 0));
  EXPECT_EQ(irqs.MsixPendingWord(0), 0u);
  EXPECT_EQ(irqs.MsixPendingWord(1), 0u);
  DeviceIrqs none(IrqCounts{});
  EXPECT_EQ(none.MsixPendingWord(0), 0u);
  EXPECT_FALSE(none.IsMasked(kMsix, 0));
}

TEST(DeviceIrqsMsixMaskTest, PendingWordsCoverMoreThanSixtyFourVectors) {
  DeviceIrqs irqs(IrqCounts{.intx = 1, .msix = 70});
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsix, 0, One(UniqueFd())))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 70))), 0);
  for (uint32_t vector : {0u, 63u, 64u, 69u}) irqs.Trigger(kMsix, vector);
  EXPECT_EQ(irqs.MsixPendingWord(0), (uint64_t{1} << 63) | 1u);
  EXPECT_EQ(irqs.MsixPendingWord(1), (uint64_t{1} << 5) | 1u);
  EXPECT_EQ(irqs.MsixPendingWord(2), 0u);
  EXPECT_EQ(irqs.MsixPendingWord(0xffffffffu), 0u);
}

// Every trigger is delivered or left pending: after the final unmask each
// triggered vector has signalled at least once and nothing stays pending.
TEST(DeviceIrqsMsixMaskTest, ConcurrentTriggersWhileMaskingLoseNothing) {
  DeviceIrqs irqs(kCounts);
  MsixVectors v(irqs);
  std::atomic<int> running{2};
  std::vector<std::thread> devices;
  for (uint32_t t = 0; t < 2; ++t) {
    devices.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        irqs.Trigger(kMsix, t);
        (void)irqs.MsixPendingWord(0);
      }
      --running;
    });
  }
  for (int i = 0; running > 0; ++i) {
    ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kMask, 0, 2))), 0);
    ASSERT_EQ(Errno(Apply(irqs, Bools(kMsix, kUnmask, 0, {1, i % 2 == 0}))), 0);
  }
  for (auto& t : devices) t.join();
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kUnmask, 0, 2))), 0);
  EXPECT_GE(v.efds[0].Take(), 1u);
  EXPECT_GE(v.efds[1].Take(), 1u);
  EXPECT_EQ(irqs.MsixPendingWord(0), 0u);
}

}  // namespace
}  // namespace umdev::irq
