// The ring's read-ahead: published entries are read up to eight at a time,
// never past TAIL or the ring's end, and what the guest may rewrite after a
// stop (an error, a reprogrammed queue) is read afresh.
#include "gpu_device_test_util.h"

namespace umdev::vendor::gpu::testing {
namespace {

class GpuRingPrefetchTest : public GpuDeviceFixture {
 protected:
  // The first word of the slice at |offset|: which FILL ran there last.
  uint32_t SliceWord(uint64_t offset) {
    uint32_t word = 0;
    EXPECT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, offset,
                                    std::as_writable_bytes(std::span(&word, 1))).has_value());
    return word;
  }
};

TEST_P(GpuRingPrefetchTest, EightEntriesTakeOneRead) {
  EnableQueue(16);
  const int before = dma_.reads();
  std::vector<Desc> fills;
  for (uint32_t i = 0; i < 16; ++i) fills.push_back(Fill(i * 4096, 4096, i));
  for (uint32_t i = 0; i < 16; i += 8) {
    Submit({fills[i], fills[i + 1], fills[i + 2], fills[i + 3], fills[i + 4], fills[i + 5],
            fills[i + 6], fills[i + 7]});
  }
  EXPECT_EQ(Reg(kRegQueueHead), 16u);
  EXPECT_EQ(dma_.reads() - before, 2);
  for (uint32_t i = 0; i < 16; ++i) EXPECT_EQ(SliceWord(i * 4096), i);
}

// Never past TAIL: three published entries are one read of three; and never
// past the ring's end: entries 14, 15, 0, 1 are two reads.
TEST_P(GpuRingPrefetchTest, ReadsStopAtTailAndAtTheRingsEnd) {
  EnableQueue(16);
  int before = dma_.reads();
  Submit({Fill(0, 64, 1), Fill(64, 64, 2), Fill(128, 64, 3)});
  EXPECT_EQ(dma_.reads() - before, 1);
  for (uint32_t i = 3; i < 14; ++i) Submit({Fill(0, 64, i)});
  before = dma_.reads();
  Submit({Fill(0, 64, 14), Fill(0, 64, 15), Fill(0, 64, 16), Fill(0, 64, 17)});
  EXPECT_EQ(dma_.reads() - before, 2);
  EXPECT_EQ(Reg(kRegQueueHead), 18u);
  EXPECT_EQ(SliceWord(0), 17u);
}

// A read of several entries that fails (one of them unreadable, say) does
// not fail the entry at HEAD: it is read alone.
TEST_P(GpuRingPrefetchTest, AFailedReadOfSeveralFallsBackToOneEntry) {
  dma_.fail_reads_over(kEntrySize);
  EnableQueue(16);
  Submit({Fill(0, 64, 5), Fill(64, 64, 6), Fill(128, 64, 7)});
  EXPECT_EQ(Reg(kRegErrorCode), 0u);
  EXPECT_EQ(Reg(kRegQueueHead), 3u);
  EXPECT_EQ(SliceWord(128), 7u);
}

// Entries read ahead before an error are not run from the old read: the
// guest may rewrite what follows the failure before ERROR_CLEAR.
TEST_P(GpuRingPrefetchTest, AnErrorDropsWhatWasReadAhead) {
  EnableQueue(16);
  Submit({Fill(kSliceBytes, 64, 1), Fill(0, 64, 0xaaaa)});
  ASSERT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EFAULT));
  ASSERT_EQ(Reg(kRegQueueHead), 0u);
  std::memcpy(Guest(kRingIova + kEntrySize), Fill(0, 64, 0xbbbb).bytes, kEntrySize);
  SetReg(kRegErrorClear, 1);
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Reg(kRegQueueHead), 2u);
  EXPECT_EQ(SliceWord(0), 0xbbbbu);
}

// Re-enabling the queue starts HEAD at 0 again: entry 0 is read afresh, not
// taken from a read made before.
TEST_P(GpuRingPrefetchTest, ReprogrammingTheQueueDropsWhatWasReadAhead) {
  EnableQueue(16);
  Submit({Fill(0, 64, 1), Fill(64, 64, 2), Fill(128, 64, 3), Fill(192, 64, 4)});
  // One read covered all four. Reprogram, and write slots 0 and 1 anew.
  SetReg(kRegQueueCtrl, 0);
  EnableQueue(16);
  Submit({Fill(0, 64, 0x10), Fill(64, 64, 0x20)});
  EXPECT_EQ(SliceWord(0), 0x10u);
  EXPECT_EQ(SliceWord(64), 0x20u);
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuRingPrefetchTest, ::testing::Values(EngineKind::kCpu),
                         EngineName);

}  // namespace
}  // namespace umdev::vendor::gpu::testing
