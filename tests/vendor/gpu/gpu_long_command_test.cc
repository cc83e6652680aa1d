// Long COPY and FILL entries run in 1 MiB pieces, one per RunOne(), so a
// runner can preempt between them. A runner that never runs anything lets
// each test call RunOne() itself and look at the device between pieces.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "gpu_device_test_util.h"
#include "umdev/mdev_core/migration.h"

namespace umdev::vendor::gpu::testing {
namespace {

constexpr uint64_t kBigSlice = 4 * kMiB;

// Counts kicks and runs nothing: the test is the runner. Thread-safe.
class ManualRunner final : public QueueRunner {
 public:
  Result<std::unique_ptr<QueueAttachment>> Attach(CommandQueue*, uint32_t) override {
    return std::make_unique<Attachment>(kicks_);
  }
  int kicks() const { return kicks_.load(); }

 private:
  class Attachment final : public QueueAttachment {
   public:
    explicit Attachment(std::atomic<int>& kicks) : kicks_(kicks) {}
    void Kick() override { kicks_.fetch_add(1); }

   private:
    std::atomic<int>& kicks_;
  };
  std::atomic<int> kicks_{0};
};

class GpuLongCommandTest : public GpuDeviceFixture {
 protected:
  void SetUp() override {
    GpuDeviceFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    DestroyDevice();
    MakeDevice({}, kBigSlice, &manual_);
    EnableQueue();
  }
  // Writes |entries| at TAIL and rings the doorbell; nothing runs yet.
  void Post(std::initializer_list<Desc> entries) {
    for (const Desc& d : entries) {
      std::memcpy(Guest(kRingIova + uint64_t{tail_ % ring_size_} * kEntrySize), d.bytes,
                  kEntrySize);
      ++tail_;
    }
    SetReg(kRegQueueTail, tail_);
    SetReg(kRegDoorbell, 1);
  }
  std::vector<uint32_t> SliceWords(uint64_t offset, size_t count) {
    std::vector<uint32_t> words(count);
    EXPECT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, offset,
                                    std::as_writable_bytes(std::span(words)))
                    .has_value());
    return words;
  }
  uint32_t SliceWord(uint64_t offset) { return SliceWords(offset, 1)[0]; }

  ManualRunner manual_;
};

TEST_P(GpuLongCommandTest, AFillRunsInPiecesAndCompletesOnlyWithTheLast) {
  const uint64_t size = 3 * kMiB + 8;
  Post({Fill(4, size, 0xa5a5a5a5)});
  EXPECT_GE(manual_.kicks(), 1);
  for (int piece = 0; piece < 3; ++piece) {
    std::optional<CommandCost> cost = device_->RunOne();
    ASSERT_TRUE(cost.has_value());
    EXPECT_TRUE(cost->partial);
    EXPECT_FALSE(cost->failed);
    EXPECT_EQ(cost->bytes, kMiB);
    EXPECT_EQ(Reg(kRegQueueHead), 0u);  // The entry is not done.
    EXPECT_EQ(Reg64(kRegStatCommands), 0u);
    EXPECT_EQ(Reg64(kRegStatBytes), (piece + 1) * kMiB);
    // Done up to here, nothing past it.
    EXPECT_EQ(SliceWord(4 + (piece + 1) * kMiB - 4), 0xa5a5a5a5u);
    EXPECT_EQ(SliceWord(4 + (piece + 1) * kMiB), 0u);
  }
  std::optional<CommandCost> last = device_->RunOne();
  ASSERT_TRUE(last.has_value());
  EXPECT_FALSE(last->partial);
  EXPECT_EQ(last->bytes, 8u);
  EXPECT_EQ(Reg(kRegQueueHead), 1u);
  EXPECT_EQ(Reg64(kRegStatCommands), 1u);
  EXPECT_EQ(Reg64(kRegStatBytes), size);
  EXPECT_EQ(SliceWords(0, 2), (std::vector<uint32_t>{0, 0xa5a5a5a5}));
  EXPECT_EQ(SliceWords(4 + size - 4, 2), (std::vector<uint32_t>{0xa5a5a5a5, 0}));
  EXPECT_FALSE(device_->RunOne().has_value());
}

TEST_P(GpuLongCommandTest, TheEntryIsReadOnceForAllItsPieces) {
  Post({Fill(0, 2 * kMiB, 0x01010101)});
  ASSERT_TRUE(device_->RunOne().has_value());
  // The guest rewrites the slot under the running entry: no effect on it.
  std::memcpy(Guest(kRingIova), Fill(0, 2 * kMiB, 0x02020202).bytes, kEntrySize);
  ASSERT_TRUE(device_->RunOne().has_value());
  EXPECT_EQ(Reg(kRegQueueHead), 1u);
  EXPECT_EQ(SliceWord(2 * kMiB - 4), 0x01010101u);
}

TEST_P(GpuLongCommandTest, ABadLongCommandFailsBeforeAnyPieceRuns) {
  // Past the slice's end, and a device copy whose whole ranges overlap
  // though its first pieces would not.
  for (const Desc& bad : {Fill(2 * kMiB, 3 * kMiB, 0x33333333),
                          Copy(0, 0, kMiB + kMiB / 2, 2 * kMiB)}) {
    Post({bad});
    std::optional<CommandCost> cost = device_->RunOne();
    ASSERT_TRUE(cost.has_value());
    EXPECT_TRUE(cost->failed);
    EXPECT_NE(Reg(kRegErrorCode), 0u);
    EXPECT_EQ(Reg64(kRegStatBytes), 0u);
    EXPECT_EQ(SliceWord(2 * kMiB), 0u);
    EXPECT_EQ(SliceWord(kMiB + kMiB / 2), 0u);
    SetReg(kRegErrorClear, 1);  // Skips the bad entry.
  }
  EXPECT_EQ(Reg(kRegQueueHead), 2u);
  EXPECT_EQ(Reg64(kRegStatErrors), 2u);
}

TEST_P(GpuLongCommandTest, AFailingPieceStopsTheEntryWhereItIs) {
  // 1 MiB of guest RAM at 4 MiB; the COPY reads 2 MiB from there.
  UniqueFd ram(::memfd_create("gpu-test-ram", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(ram.get(), kMiB), 0);
  ASSERT_EQ(::pwrite(ram.get(), std::vector<uint8_t>(kMiB, 0x42).data(), kMiB, 0),
            static_cast<ssize_t>(kMiB));
  ASSERT_TRUE(backend_.Map(DmaMapRequest{.iova = 4 * kMiB, .size = kMiB,
                                         .prot = kProtRead | kProtWrite,
                                         .fd = std::move(ram), .offset = 0})
                  .has_value());
  Post({Copy(kCopySrcGuest, 4 * kMiB, 0, 2 * kMiB)});
  std::optional<CommandCost> first = device_->RunOne();
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(first->partial);
  std::optional<CommandCost> second = device_->RunOne();
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(second->failed);
  EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EFAULT));
  EXPECT_EQ(Reg(kRegErrorIndex), 0u);
  EXPECT_EQ(Reg(kRegQueueHead), 0u);
  EXPECT_EQ(Reg64(kRegStatCommands), 0u);
  EXPECT_EQ(Reg64(kRegStatErrors), 1u);
  EXPECT_EQ(Reg64(kRegStatBytes), kMiB);
  // What ran stays: the guest sees a partly done entry, as on a GPU fault.
  EXPECT_EQ(SliceWord(kMiB - 4), 0x42424242u);
  EXPECT_EQ(SliceWord(kMiB), 0u);
  EXPECT_FALSE(device_->RunOne().has_value());
}

TEST_P(GpuLongCommandTest, AResetBetweenPiecesDropsTheRest) {
  Post({Fill(0, 3 * kMiB, 0x77777777)});
  ASSERT_TRUE(device_->RunOne().has_value());
  ASSERT_TRUE(device_->Reset().has_value());
  EXPECT_FALSE(device_->RunOne().has_value());
  EXPECT_EQ(SliceWord(0), 0u);
  EXPECT_EQ(SliceWord(kMiB), 0u);
  EXPECT_EQ(Reg(kRegQueueHead), 0u);
}

TEST_P(GpuLongCommandTest, ReprogrammingTheQueueBetweenPiecesStartsAfresh) {
  Post({Fill(0, 3 * kMiB, 0x55555555)});
  ASSERT_TRUE(device_->RunOne().has_value());
  SetReg(kRegQueueCtrl, 0);
  EnableQueue();  // HEAD and TAIL back to 0.
  Post({Fence(kGuestIova + 0x8000, 9, false)});
  std::optional<CommandCost> cost = device_->RunOne();
  ASSERT_TRUE(cost.has_value());
  EXPECT_FALSE(cost->partial);
  EXPECT_EQ(Reg64(kRegFenceDone), 9u);
  EXPECT_EQ(Reg(kRegQueueHead), 1u);
  EXPECT_EQ(SliceWord(kMiB), 0u);  // The old FILL's second piece never ran.
}

TEST_P(GpuLongCommandTest, StoppingForMigrationFinishesTheEntryInFlight) {
  Post({Fill(0, 3 * kMiB, 0x66666666), Fence(kGuestIova + 0x8000, 3, false)});
  ASSERT_TRUE(device_->RunOne().has_value());
  MigrationOps& mig = *device_->migration();
  ASSERT_TRUE(mig.SetState(VFIO_DEVICE_STATE_RUNNING_P2P).has_value());  // Still runs.
  ASSERT_TRUE(mig.SetState(VFIO_DEVICE_STATE_STOP).has_value());
  // The FILL ended inside the arc; the FENCE after it waits for RUNNING.
  EXPECT_EQ(Reg(kRegQueueHead), 1u);
  EXPECT_EQ(SliceWord(3 * kMiB - 4), 0x66666666u);
  EXPECT_EQ(Reg64(kRegStatCommands), 1u);
  EXPECT_FALSE(device_->RunOne().has_value());
  ASSERT_TRUE(mig.SetState(VFIO_DEVICE_STATE_RUNNING_P2P).has_value());
  ASSERT_TRUE(device_->RunOne().has_value());
  EXPECT_EQ(Reg64(kRegFenceDone), 3u);
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuLongCommandTest,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu), EngineName);

}  // namespace
}  // namespace umdev::vendor::gpu::testing
