// GpuDevice's doorbell page (BAR4): the guest's protocol with no trap while
// the page is polled, the trapped doorbell beside it, and what a hostile
// guest or client can do to the page.
#include <fcntl.h>
#include <sys/mman.h>

#include <atomic>
#include <thread>

#include "gpu_device_test_util.h"
#include "umdev/common/mapping.h"
#include "umdev/vendor/gpu/doorbell_poller.h"

namespace umdev::vendor::gpu::testing {
namespace {

using namespace std::chrono_literals;

class GpuDoorbellTest : public GpuDeviceFixture {
 protected:
  void SetUp() override {
    GpuDeviceFixture::SetUp();
    if (IsSkipped()) return;
    DestroyDevice();
    MakeDevice(GpuDeviceOptions{.doorbell_poller = poller_});
    auto info = device_->GetRegionInfo(VFIO_PCI_BAR4_REGION_INDEX);
    ASSERT_TRUE(info.has_value());
    ASSERT_GE(info->mmap_fd, 0);
    // The client's mapping of the page, as QEMU makes it.
    auto page = Mapping::Map(info->mmap_fd, 0, kDoorbellPageSize, PROT_READ | PROT_WRITE,
                             MAP_SHARED);
    ASSERT_TRUE(page.has_value());
    page_ = std::move(*page);
  }
  void TearDown() override {
    page_.Reset();
    GpuDeviceFixture::TearDown();
  }

  std::atomic_ref<uint32_t> Word(uint32_t offset) {
    return std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(page_.data() + offset));
  }
  void EnablePolledQueue() {
    EnableQueue();
    SetReg(kRegQueueCtrl, 0);
    SetReg(kRegQueueCtrl, kQueueEnable | kQueueDoorbellPage);
    ASSERT_EQ(Reg(kRegQueueCtrl), kQueueEnable | kQueueDoorbellPage);
  }
  // The guest driver's doorbell: entries, DB_TAIL, a full barrier, and the
  // trapped DOORBELL only when nobody polls. Returns whether it trapped.
  bool SubmitPolled(std::initializer_list<Desc> entries) {
    for (const Desc& d : entries) {
      std::memcpy(Guest(kRingIova + uint64_t{tail_ % ring_size_} * kEntrySize), d.bytes,
                  kEntrySize);
      ++tail_;
    }
    Word(kDbTail).store(tail_, std::memory_order_seq_cst);
    if (Word(kDbPolling).load(std::memory_order_seq_cst) != 0) return false;
    SetReg(kRegDoorbell, 1);
    return true;
  }
  bool WaitFence(uint64_t iova, uint64_t value) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(Guest(iova))).load() != value) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(50us);
    }
    return true;
  }

  // Long enough that the page stays polled for the whole test once active.
  std::shared_ptr<DoorbellPoller> poller_ =
      std::make_shared<DoorbellPoller>(DoorbellPollerOptions{.spin = 30s});
  Mapping page_;
};

TEST_P(GpuDoorbellTest, TheDeviceOffersAPageTheClientMaps) {
  EXPECT_TRUE(device_->has_doorbell_page());
  EXPECT_NE(Reg(kRegCaps) & kCapDoorbellPage, 0u);
  auto info = device_->GetRegionInfo(VFIO_PCI_BAR4_REGION_INDEX);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->size, kDoorbellPageSize);
  EXPECT_NE(info->flags & VFIO_REGION_INFO_FLAG_MMAP, 0u);
  ASSERT_EQ(info->sparse_mmap.size(), 1u);
  EXPECT_EQ(info->sparse_mmap[0].size, kDoorbellPageSize);
  // BAR4 in config space: a 4 KiB 32-bit memory BAR.
  const uint32_t all_ones = 0xffffffff;
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_CONFIG_REGION_INDEX, 0x20,
                                   std::as_bytes(std::span(&all_ones, 1))).has_value());
  EXPECT_EQ(Config32(0x20), 0xfffff000u);
  // Sealed: a client cannot truncate the page under the daemon's poller.
  EXPECT_NE(::ftruncate(info->mmap_fd, 0), 0);
  EXPECT_EQ(errno, EPERM);
}

TEST_P(GpuDoorbellTest, WithoutAPollerThereIsNoPage) {
  DestroyDevice();
  MakeDevice(GpuDeviceOptions{});
  EXPECT_FALSE(device_->has_doorbell_page());
  EXPECT_EQ(Reg(kRegCaps) & kCapDoorbellPage, 0u);
  EXPECT_EQ(device_->GetRegionInfo(VFIO_PCI_BAR4_REGION_INDEX)->size, 0u);
  // Asking for a polled tail anyway is the queue's EINVAL.
  EnableQueue();
  SetReg(kRegQueueCtrl, 0);
  SetReg(kRegQueueCtrl, kQueueEnable | kQueueDoorbellPage);
  EXPECT_EQ(Reg(kRegQueueCtrl), 0u);
  EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EINVAL));
}

// The first doorbell after enabling traps (nobody polls yet); the fence it
// completes has the page polled, and from then on the guest rings by storing
// the tail alone.
TEST_P(GpuDoorbellTest, AfterAFenceTheGuestRingsWithoutATrap) {
  EnablePolledQueue();
  EXPECT_EQ(Word(kDbPolling).load(), 0u);
  EXPECT_TRUE(SubmitPolled({Fill(0, 4096, 0x11), Fence(kDataIova, 1)}));
  ASSERT_TRUE(WaitFence(kDataIova, 1)) << "ERROR_CODE " << Reg(kRegErrorCode);
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Word(kDbPolling).load(), 1u);
  for (uint64_t round = 2; round <= 20; ++round) {
    EXPECT_FALSE(SubmitPolled({Fill(0, 4096, static_cast<uint32_t>(round)),
                               Fence(kDataIova, round)}))
        << "round " << round << " trapped";
    ASSERT_TRUE(WaitFence(kDataIova, round)) << "round " << round;
  }
  // One ring per tail the poller saw change: at most one per tail stored
  // (20, the first trapped one included when the poller scans it too), and
  // fewer when the device reached a tail on its own before the poller's
  // next scan (seen under TSan, where the poller thread lags). No round
  // trapped (above) is what matters.
  EXPECT_GE(poller_->Stats().rings, 1u);
  EXPECT_LE(poller_->Stats().rings, 20u);
  EXPECT_EQ(Reg(kRegQueueHead), 40u);
  EXPECT_EQ(Reg(kRegQueueTail), 40u) << "QUEUE_TAIL reads DB_TAIL";
  uint32_t word = 0;
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 0,
                                  std::as_writable_bytes(std::span(&word, 1))).has_value());
  EXPECT_EQ(word, 20u);
}

// A client that does not map the page reaches the same words by messages:
// a trapped store of DB_TAIL is a doorbell; the trapped DOORBELL and
// QUEUE_TAIL keep working on a device that has a page.
TEST_P(GpuDoorbellTest, TrappedAccessesReachTheSameWords) {
  EnablePolledQueue();
  std::memcpy(Guest(kRingIova), Fence(kDataIova, 3).bytes, kEntrySize);
  const uint32_t one = 1;
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR4_REGION_INDEX, kDbTail,
                                   std::as_bytes(std::span(&one, 1))).has_value());
  ASSERT_TRUE(WaitFence(kDataIova, 3));
  EXPECT_EQ(Word(kDbTail).load(), 1u);
  uint32_t polling = 9;
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR4_REGION_INDEX, kDbPolling,
                                  std::as_writable_bytes(std::span(&polling, 1))).has_value());
  EXPECT_EQ(polling, Word(kDbPolling).load());
  // DB_POLLING is the device's: a write is dropped.
  const uint32_t garbage = 0x1234;
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR4_REGION_INDEX, kDbPolling,
                                   std::as_bytes(std::span(&garbage, 1))).has_value());
  EXPECT_NE(Word(kDbPolling).load(), garbage);
  // The register path on the same queue: QUEUE_TAIL stores DB_TAIL.
  std::memcpy(Guest(kRingIova + kEntrySize), Fence(kDataIova, 4).bytes, kEntrySize);
  SetReg(kRegQueueTail, 2);
  SetReg(kRegDoorbell, 1);
  ASSERT_TRUE(WaitFence(kDataIova, 4));
  EXPECT_EQ(Word(kDbTail).load(), 2u);
  // And the plain trapped mode on a device that has a page.
  SetReg(kRegQueueCtrl, 0);
  EnableQueue();
  ASSERT_EQ(Reg(kRegQueueCtrl), kQueueEnable);
  Submit({Fence(kDataIova, 5)});
  EXPECT_EQ(*reinterpret_cast<uint64_t*>(Guest(kDataIova)), 5u);
}

TEST_P(GpuDoorbellTest, BadPageAccessesAreEinval) {
  uint16_t half = 0;
  uint32_t word = 0;
  const auto read = [&](uint64_t offset, std::span<std::byte> out) {
    auto r = device_->RegionRead(VFIO_PCI_BAR4_REGION_INDEX, offset, out);
    return r.has_value() ? 0 : r.error().code;
  };
  EXPECT_EQ(read(0, std::as_writable_bytes(std::span(&half, 1))), EINVAL);
  EXPECT_EQ(read(2, std::as_writable_bytes(std::span(&word, 1))), EINVAL);
  EXPECT_EQ(read(kDoorbellPageSize, std::as_writable_bytes(std::span(&word, 1))), EINVAL);
  EXPECT_EQ(read(UINT64_MAX - 3, std::as_writable_bytes(std::span(&word, 1))), EINVAL);
  auto wrote = device_->RegionWrite(VFIO_PCI_BAR4_REGION_INDEX, kDoorbellPageSize - 2,
                                    std::as_bytes(std::span(&word, 1)));
  ASSERT_FALSE(wrote.has_value());
  EXPECT_EQ(wrote.error().code, EINVAL);
}

// Whatever the guest stores in the page, the failure is its queue's: a tail
// more than a ring ahead is EINVAL, garbage in DB_POLLING only costs it the
// doorbells it did not trap, and the device keeps serving after a reset.
TEST_P(GpuDoorbellTest, AHostileGuestOnlyStopsItsOwnQueue) {
  EnablePolledQueue();
  Word(kDbTail).store(1000);
  SetReg(kRegDoorbell, 1);
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EINVAL));
  EXPECT_EQ(Reg(kRegQueueHead), 0u);
  Word(kDbPolling).store(0xdeadbeef);
  SetReg(kRegReset, 1);
  EXPECT_EQ(Word(kDbTail).load(), 0u) << "a reset clears the page";
  EXPECT_EQ(Word(kDbPolling).load(), 0u);
  EXPECT_EQ(Reg(kRegQueueCtrl), 0u);
  tail_ = 0;
  EnablePolledQueue();
  EXPECT_TRUE(SubmitPolled({Fence(kDataIova, 8)}));
  ASSERT_TRUE(WaitFence(kDataIova, 8));
}

// Disabling the queue stops the polling; a doorbell stored meanwhile runs
// nothing.
TEST_P(GpuDoorbellTest, ADisabledQueueIsNotPolled) {
  EnablePolledQueue();
  EXPECT_TRUE(SubmitPolled({Fence(kDataIova, 1)}));
  ASSERT_TRUE(WaitFence(kDataIova, 1));
  EXPECT_EQ(Word(kDbPolling).load(), 1u);
  SetReg(kRegQueueCtrl, 0);
  EXPECT_EQ(Word(kDbPolling).load(), 0u);
  std::memcpy(Guest(kRingIova + kEntrySize), Fence(kDataIova, 2).bytes, kEntrySize);
  Word(kDbTail).store(2);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(*reinterpret_cast<uint64_t*>(Guest(kDataIova)), 1u);
}

// Two devices on one poller: a guest storing garbage tails into its page as
// fast as it can (keeping the poller busy ringing it) stops only its own
// queue; the other device's polled doorbell goes on working meanwhile.
TEST_P(GpuDoorbellTest, AHostilePageLeavesAnotherDeviceOnThePollerWorking) {
  EnablePolledQueue();
  auto slice = engine_->CreateSlice(kSliceBytes);
  ASSERT_TRUE(slice.has_value());
  GpuDevice hostile(GpuDeviceOptions{.builtin_kernels_only = true, .doorbell_poller = poller_},
                    std::move(*slice), dma_, runner_, nullptr);
  auto info = hostile.GetRegionInfo(VFIO_PCI_BAR4_REGION_INDEX);
  ASSERT_TRUE(info.has_value());
  auto page = Mapping::Map(info->mmap_fd, 0, kDoorbellPageSize, PROT_READ | PROT_WRITE, MAP_SHARED);
  ASSERT_TRUE(page.has_value());
  const auto reg = [&](uint32_t offset, uint32_t value) {
    ASSERT_TRUE(hostile.RegionWrite(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                    std::as_bytes(std::span(&value, 1))).has_value());
  };
  reg(kRegQueueBase, static_cast<uint32_t>(kRingIova + 0x8000));
  reg(kRegQueueSize, 16);
  reg(kRegQueueCtrl, kQueueEnable | kQueueDoorbellPage);
  reg(kRegDoorbell, 1);  // Polled from now on.
  std::atomic<bool> stop{false};
  std::thread garbage([&] {
    auto tail = std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(page->data() + kDbTail));
    for (uint32_t i = 0; !stop; ++i) tail.store(i * 2654435761u);
  });
  for (uint64_t round = 1; round <= 10; ++round) {
    SubmitPolled({Fill(0, 4096, static_cast<uint32_t>(round)), Fence(kDataIova, round)});
    ASSERT_TRUE(WaitFence(kDataIova, round)) << "round " << round;
  }
  stop = true;
  garbage.join();
  uint32_t code = 0;
  ASSERT_TRUE(hostile.RegionRead(VFIO_PCI_BAR0_REGION_INDEX, kRegErrorCode,
                                 std::as_writable_bytes(std::span(&code, 1))).has_value());
  EXPECT_EQ(code, static_cast<uint32_t>(EINVAL)) << "the garbage tail stopped its own queue";
  EXPECT_EQ(Reg(kRegErrorCode), 0u);
  EXPECT_TRUE(hostile.WaitIdle());
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuDoorbellTest, ::testing::Values(EngineKind::kCpu),
                         EngineName);

}  // namespace
}  // namespace umdev::vendor::gpu::testing
