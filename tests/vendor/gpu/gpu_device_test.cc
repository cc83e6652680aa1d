// GpuDevice: PCI identity, BAR0 registers, BAR2 over the slice's fd, COPY
// and FILL through the ring with guest memory behind the type1 backend,
// FENCE with MSI-X, and reset.
#include <linux/pci_regs.h>
#include <sys/mman.h>

#include <algorithm>
#include <numeric>

#include "gpu_device_test_util.h"

namespace umdev::vendor::gpu::testing {
namespace {

using GpuDeviceTest = GpuDeviceFixture;

uint8_t FindCapability(GpuDeviceFixture& f, uint8_t id) {
  uint8_t at = static_cast<uint8_t>(f.Config32(PCI_CAPABILITY_LIST));
  while (at != 0) {
    const uint32_t header = f.Config32(at);
    if ((header & 0xff) == id) return at;
    at = static_cast<uint8_t>(header >> 8);
  }
  return 0;
}

TEST_P(GpuDeviceTest, PciIdentityAndCapabilities) {
  DestroyDevice();
  MakeDevice({.vendor_id = 0x1234, .device_id = 0xabcd, .compute_share_permille = 250});
  EXPECT_EQ(Config32(PCI_VENDOR_ID), 0xabcd1234u);
  EXPECT_EQ(Config32(PCI_CLASS_REVISION) >> 8, 0x120000u);  // Processing accelerator.
  const uint8_t msix = FindCapability(*this, PCI_CAP_ID_MSIX);
  ASSERT_NE(msix, 0);
  EXPECT_EQ(((Config32(msix) >> 16) & 0x7ff) + 1, kMsixVectors);
  EXPECT_EQ(Config32(msix + 4), kMsixTableOffset);  // BIR 0.
  EXPECT_EQ(Config32(msix + 8), kMsixPbaOffset);
  EXPECT_NE(FindCapability(*this, PCI_CAP_ID_EXP), 0);
  EXPECT_NE(FindCapability(*this, PCI_CAP_ID_PM), 0);
  // BAR2: 64-bit prefetchable.
  EXPECT_EQ(Config32(PCI_BASE_ADDRESS_2) & 0xf,
            PCI_BASE_ADDRESS_MEM_TYPE_64 | PCI_BASE_ADDRESS_MEM_PREFETCH);

  EXPECT_EQ(Reg(kRegId), kIdValue);
  EXPECT_EQ(Reg(kRegVersion), kVersionValue);
  EXPECT_EQ(Reg(kRegComputeShare), 250u);
  EXPECT_EQ(Reg64(kRegMemSize), kSliceBytes);
  const uint32_t caps = Reg(kRegCaps);
  EXPECT_EQ((caps & kCapBuiltinOnly) != 0, GetParam() == EngineKind::kCpu);
  EXPECT_EQ((caps & kCapSpirv) != 0, GetParam() == EngineKind::kVulkan);
  // Unlisted registers read 0; bad widths are refused.
  EXPECT_EQ(Reg(0x70), 0u);
  std::byte two[2];
  EXPECT_FALSE(device_->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, 0, two).has_value());
}

TEST_P(GpuDeviceTest, Bar2IsTheSliceThroughItsFd) {
  auto info = device_->GetRegionInfo(VFIO_PCI_BAR2_REGION_INDEX);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->size, kSliceBytes);
  if (info->mmap_fd < 0) GTEST_SKIP() << "the Vulkan driver cannot import host memory";
  EXPECT_NE(info->flags & VFIO_REGION_INFO_FLAG_MMAP, 0u);
  ASSERT_EQ(info->sparse_mmap.size(), 1u);
  EXPECT_EQ(info->sparse_mmap[0].offset, 0u);
  EXPECT_EQ(info->sparse_mmap[0].size, kSliceBytes);
  EXPECT_NE(Reg(kRegCaps) & kCapMmap, 0u);
  auto bar2 = Mapping::Map(info->mmap_fd, info->mmap_offset, kSliceBytes,
                           PROT_READ | PROT_WRITE, MAP_SHARED);
  ASSERT_TRUE(bar2.has_value());
  auto* words = reinterpret_cast<uint32_t*>(bar2->data());
  // A guest store through the mapping, copied out by the device.
  for (uint32_t i = 0; i < 64; ++i) words[i] = 0x1000 + i;
  EnableQueue();
  Submit({Copy(kCopyDstGuest, 0, kDataIova, 256)});
  std::vector<uint32_t> expected(64);
  std::iota(expected.begin(), expected.end(), 0x1000u);
  EXPECT_EQ(GetGuest<uint32_t>(kDataIova, 64), expected);
  // The device's FILL seen through the mapping and the trapped path alike.
  Submit({Fill(4096, 16, 0x5a5a5a5a)});
  EXPECT_EQ(words[1024], 0x5a5a5a5au);
  uint32_t trapped = 0;
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 4096 + 12,
                                  std::as_writable_bytes(std::span(&trapped, 1)))
                  .has_value());
  EXPECT_EQ(trapped, 0x5a5a5a5au);
}

TEST_P(GpuDeviceTest, CopyGuestToDeviceAndBackAcrossPages) {
  // Unaligned, many pages, both directions.
  constexpr uint64_t kBytes = 20 * 4096 + 123;
  std::vector<uint8_t> data(kBytes);
  for (size_t i = 0; i < kBytes; ++i) data[i] = static_cast<uint8_t>(i * 7 + 1);
  const uint64_t src = kDataIova + 5;
  PutGuest(src, data);
  EnableQueue();
  Submit({Copy(kCopySrcGuest, src, 1000, kBytes),
          Copy(0, 1000, 300000, kBytes),  // Device to device.
          Copy(kCopyDstGuest, 300000, kGuestIova + 0x28000 + 3, kBytes)});
  EXPECT_EQ(Reg(kRegErrorCode), 0u);
  EXPECT_EQ(Reg(kRegQueueHead), 3u);
  EXPECT_EQ(GetGuest<uint8_t>(kGuestIova + 0x28000 + 3, kBytes), data);
  // The guest side went through pins: one for the pages read, one for
  // those written (other pages of the same 1 MiB block of IOVA, which the
  // guest's mapping does not wholly cover, so each pin takes what it needs).
  EXPECT_EQ(dma_.pins(), 2);
  EXPECT_EQ(Reg64(kRegStatCommands), 3u);
  EXPECT_EQ(Reg64(kRegStatBytes), 3 * kBytes);
  const GpuDeviceStats stats = device_->stats();
  EXPECT_EQ(stats.commands, 3u);
  EXPECT_GT(stats.busy.count(), 0);
  EXPECT_EQ(device_->ReadAttribute("commands").value_or(""), "3");
  EXPECT_EQ(device_->ReadAttribute("bytes").value_or(""), std::to_string(3 * kBytes));
  EXPECT_EQ(device_->ReadAttribute("errors").value_or(""), "0");
  EXPECT_EQ(device_->ReadAttribute("nope").error().code, ENOENT);
}

// Guest memory without an fd (vfio-user message DMA) cannot be pinned: COPY
// moves it through the container's message channel instead.
class MemoryChannel final : public DmaMessageChannel {
 public:
  static constexpr uint64_t kBase = 0x10000000;
  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override {
    MutexLock lock(mu_);
    ++calls_;
    std::memcpy(out.data(), memory_.data() + (iova - kBase), out.size());
    return {};
  }
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override {
    MutexLock lock(mu_);
    ++calls_;
    std::memcpy(memory_.data() + (iova - kBase), data.data(), data.size());
    return {};
  }
  std::vector<std::byte> memory() const {
    MutexLock lock(mu_);
    return memory_;
  }
  void set_memory(std::vector<std::byte> bytes) {
    MutexLock lock(mu_);
    memory_ = std::move(bytes);
  }
  int calls() const {
    MutexLock lock(mu_);
    return calls_;
  }

 private:
  mutable Mutex mu_;
  std::vector<std::byte> memory_ UMDEV_GUARDED_BY(mu_) = std::vector<std::byte>(8 * 4096);
  int calls_ UMDEV_GUARDED_BY(mu_) = 0;
};

TEST_P(GpuDeviceTest, CopyThroughMessageDmaWhenMemoryHasNoFd) {
  MemoryChannel channel;
  backend_.SetMessageChannel(&channel);
  ASSERT_TRUE(backend_.Map(DmaMapRequest{.iova = MemoryChannel::kBase, .size = 8 * 4096,
                                         .prot = kProtRead | kProtWrite})
                  .has_value());
  std::vector<std::byte> data(8 * 4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 13);
  channel.set_memory(data);
  EnableQueue();
  const uint64_t kBytes = 5 * 4096 + 17;
  Submit({Copy(kCopySrcGuest, MemoryChannel::kBase + 3, 64, kBytes),
          Copy(kCopyDstGuest, 64, MemoryChannel::kBase + 7 * 4096, 100)});
  EXPECT_EQ(Reg(kRegErrorCode), 0u);
  EXPECT_EQ(dma_.pins(), 0);
  EXPECT_GE(channel.calls(), 2);
  std::vector<std::byte> slice(kBytes);
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 64, slice).has_value());
  EXPECT_TRUE(std::equal(slice.begin(), slice.end(), data.begin() + 3));
  const auto back = channel.memory();
  EXPECT_TRUE(std::equal(back.begin() + 7 * 4096, back.begin() + 7 * 4096 + 100,
                         data.begin() + 3));
  ASSERT_TRUE(backend_.Unmap(MemoryChannel::kBase, 8 * 4096).has_value());
  backend_.SetMessageChannel(nullptr);
}

TEST_P(GpuDeviceTest, FillThenFenceRaisesMsixVectorZero) {
  Efd fence, error;
  std::vector<UniqueFd> fds;
  fds.push_back(fence.Dup());
  fds.push_back(error.Dup());
  IrqSet set{.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
             .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 0, .count = 2};
  set.fds = std::move(fds);
  ASSERT_TRUE(ValidateIrqSet(*device_->GetIrqInfo(VFIO_PCI_MSIX_IRQ_INDEX), set).has_value());
  ASSERT_TRUE(device_->SetIrqs(set).has_value());

  EnableQueue();
  const uint64_t fence_iova = kDataIova + 0x800;
  Submit({Fill(0, 4096, 7), Copy(kCopyDstGuest, 0, kDataIova, 64),
          Fence(fence_iova, 0x1122334455667788)});
  EXPECT_EQ(GetGuest<uint64_t>(fence_iova, 1).front(), 0x1122334455667788u);
  EXPECT_EQ(GetGuest<uint32_t>(kDataIova, 16), std::vector<uint32_t>(16, 7));
  EXPECT_EQ(Reg64(kRegFenceDone), 0x1122334455667788u);
  EXPECT_EQ(Reg(kRegIntStatus), kIntFence);
  EXPECT_EQ(fence.Take(), 1u);
  EXPECT_EQ(error.Take(), 0u);
  SetReg(kRegIntStatus, kIntFence);  // RW1C.
  EXPECT_EQ(Reg(kRegIntStatus), 0u);

  // Masked: the status bit is set, no message.
  SetReg(kRegIntMask, kIntFence);
  Submit({Fence(fence_iova, 2)});
  EXPECT_EQ(Reg(kRegIntStatus), kIntFence);
  EXPECT_EQ(fence.Take(), 0u);
  // A fence without the interrupt flag only writes.
  SetReg(kRegIntMask, 0);
  SetReg(kRegIntStatus, kIntFence);
  Submit({Fence(fence_iova, 3, false)});
  EXPECT_EQ(GetGuest<uint64_t>(fence_iova, 1).front(), 3u);
  EXPECT_EQ(Reg(kRegIntStatus), 0u);
  EXPECT_EQ(fence.Take(), 0u);
}

TEST_P(GpuDeviceTest, WithoutMsixTheFenceAssertsIntx) {
  Efd intx;
  std::vector<UniqueFd> fds;
  fds.push_back(intx.Dup());
  IrqSet set{.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
             .index = VFIO_PCI_INTX_IRQ_INDEX, .start = 0, .count = 1};
  set.fds = std::move(fds);
  ASSERT_TRUE(device_->SetIrqs(set).has_value());
  EnableQueue();
  Submit({Fence(kDataIova, 1)});
  EXPECT_EQ(intx.Take(), 1u);
  EXPECT_NE(Config32(PCI_COMMAND) & (PCI_STATUS_INTERRUPT << 16), 0u);
  SetReg(kRegIntStatus, kIntFence);
  EXPECT_EQ(Config32(PCI_COMMAND) & (PCI_STATUS_INTERRUPT << 16), 0u);
}

TEST_P(GpuDeviceTest, ResetStopsTheQueueAndZeroesTheSlice) {
  EnableQueue();
  Submit({Fill(0, kSliceBytes, 0xdeadbeef), Fence(kDataIova, 9)});
  uint32_t word = 0;
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, kSliceBytes - 4,
                                  std::as_writable_bytes(std::span(&word, 1)))
                  .has_value());
  EXPECT_EQ(word, 0xdeadbeefu);
  SetReg(kRegReset, 1);
  EXPECT_EQ(Reg(kRegQueueCtrl), 0u);
  EXPECT_EQ(Reg(kRegQueueHead), 0u);
  EXPECT_EQ(Reg64(kRegFenceDone), 0u);
  EXPECT_EQ(Reg(kRegIntStatus), 0u);
  std::vector<uint32_t> all(kSliceBytes / 4, 1);
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 0,
                                  std::as_writable_bytes(std::span(all)))
                  .has_value());
  EXPECT_EQ(all, std::vector<uint32_t>(kSliceBytes / 4, 0));
  // A doorbell on the stopped queue runs nothing.
  SetReg(kRegQueueTail, 1);
  SetReg(kRegDoorbell, 1);
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Reg(kRegQueueHead), 0u);

  // The VFIO reset does the same, and the queue works again afterwards.
  EnableQueue();
  Submit({Fill(64, 64, 5)});
  ASSERT_TRUE(device_->Reset().has_value());
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 64,
                                  std::as_writable_bytes(std::span(&word, 1)))
                  .has_value());
  EXPECT_EQ(word, 0u);
  EnableQueue();
  Submit({Fill(64, 64, 6)});
  EXPECT_EQ(Reg(kRegQueueHead), 1u);
}

TEST_P(GpuDeviceTest, Bar2PastTheSliceReadsZero) {
  DestroyDevice();
  // A slice that is not a power of two: BAR2 rounds up.
  auto slice = engine_->CreateSlice(3 * 4096);
  ASSERT_TRUE(slice.has_value());
  device_ = std::make_unique<GpuDevice>(GpuDeviceOptions{}, std::move(*slice), dma_, runner_,
                                        nullptr);
  dma_.set_owner(device_->dma_unmap_listener());
  ASSERT_TRUE(backend_.AttachListener(*device_->dma_unmap_listener()).has_value());
  EXPECT_EQ(device_->bar2_size(), 4u * 4096);
  const uint32_t ones = 0xffffffff;
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, 3 * 4096 + 8,
                                   std::as_bytes(std::span(&ones, 1)))
                  .has_value());
  uint32_t word = 1;
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 3 * 4096 + 8,
                                  std::as_writable_bytes(std::span(&word, 1)))
                  .has_value());
  EXPECT_EQ(word, 0u);
  EXPECT_FALSE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 4 * 4096,
                                   std::as_writable_bytes(std::span(&word, 1)))
                   .has_value());
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuDeviceTest,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu), EngineName);

}  // namespace
}  // namespace umdev::vendor::gpu::testing
