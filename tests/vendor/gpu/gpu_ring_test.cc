// GpuDevice's command ring: every refused entry (error registers, the error
// vector, the queue stopped until ERROR_CLEAR), DISPATCH of the built-in
// kernels through the ring, and an unmap under a running COPY.
#include <atomic>
#include <cstring>
#include <thread>

#include "gpu_device_test_util.h"
#include "umdev/common/scope_exit.h"
#include "umdev/vendor/gpu/builtin_kernels.h"

namespace umdev::vendor::gpu::testing {
namespace {

using GpuRingTest = GpuDeviceFixture;

// Slice layout the DISPATCH tests use.
constexpr uint64_t kModule = 0;          // SPIR-V
constexpr uint64_t kName = 0x8000;       // entry point name
constexpr uint64_t kArgs = 0x8100;       // argument block
constexpr uint64_t kBufA = 0x10000;
constexpr uint64_t kBufB = 0x20000;
constexpr uint64_t kBufC = 0x30000;

struct Binding {
  uint32_t binding;
  uint64_t offset;
  uint64_t size;
};

std::vector<std::byte> Args(uint32_t gx, uint32_t gy, uint32_t gz,
                            const std::vector<Binding>& bindings,
                            const std::vector<uint32_t>& push) {
  std::vector<std::byte> out(kArgsHeaderSize + bindings.size() * kArgsBindingSize +
                             push.size() * 4);
  const uint32_t header[6] = {gx, gy, gz, static_cast<uint32_t>(bindings.size()),
                              static_cast<uint32_t>(push.size() * 4), 0};
  std::memcpy(out.data(), header, sizeof(header));
  std::byte* at = out.data() + kArgsHeaderSize;
  for (const Binding& b : bindings) {
    std::memcpy(at, &b.binding, 4);
    std::memcpy(at + 8, &b.offset, 8);
    std::memcpy(at + 16, &b.size, 8);
    at += kArgsBindingSize;
  }
  if (!push.empty()) std::memcpy(at, push.data(), push.size() * 4);
  return out;
}

class GpuRingDispatch : public GpuRingTest {
 protected:
  // Puts |kernel|'s SPIR-V and name in the slice through BAR2 (the guest's
  // path) and returns the DISPATCH entry.
  Desc Load(const char* kernel, const std::vector<std::byte>& args) {
    const BuiltinKernel* k = FindBuiltinKernel(kernel);
    EXPECT_NE(k, nullptr);
    const auto spirv = std::as_bytes(k->spirv);
    EXPECT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, kModule, spirv).has_value());
    const std::string name(kernel);
    EXPECT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, kName,
                                     std::as_bytes(std::span(name.c_str(), name.size() + 1)))
                    .has_value());
    EXPECT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, kArgs, args).has_value());
    return Dispatch(kModule, static_cast<uint32_t>(spirv.size()), kName, kArgs);
  }
};

TEST_P(GpuRingDispatch, VectorAddFromGuestMemoryAndBack) {
  constexpr uint32_t kCount = 1000;
  std::vector<uint32_t> a(kCount), b(kCount);
  for (uint32_t i = 0; i < kCount; ++i) {
    a[i] = i;
    b[i] = 3 * i + 0xfffff000u;  // Wraps for large i.
  }
  PutGuest(kDataIova, a);
  PutGuest(kDataIova + 0x1000, b);
  const Desc dispatch = Load("umdev_vadd_u32", Args((kCount + 63) / 64, 1, 1,
                                                    {{0, kBufA, 4096}, {1, kBufB, 4096},
                                                     {2, kBufC, 4096}},
                                                    {kCount}));
  EnableQueue();
  Submit({Copy(kCopySrcGuest, kDataIova, kBufA, 4 * kCount),
          Copy(kCopySrcGuest, kDataIova + 0x1000, kBufB, 4 * kCount), dispatch,
          Copy(kCopyDstGuest, kBufC, kDataIova + 0x2000, 4 * kCount),
          Fence(kDataIova + 0x3000, 1)});
  ASSERT_EQ(Reg(kRegErrorCode), 0u);
  const auto c = GetGuest<uint32_t>(kDataIova + 0x2000, kCount);
  for (uint32_t i = 0; i < kCount; ++i) ASSERT_EQ(c[i], a[i] + b[i]) << i;
  EXPECT_EQ(Reg64(kRegFenceDone), 1u);
}

TEST_P(GpuRingDispatch, ReductionOfTenThousandValues) {
  constexpr uint32_t kCount = 10000;
  std::vector<uint32_t> values(kCount);
  for (uint32_t i = 0; i < kCount; ++i) values[i] = i;
  PutGuest(kDataIova, values);
  const Desc dispatch = Load("umdev_reduce_sum_u32",
                             Args((kCount + 63) / 64, 1, 1,
                                  {{0, kBufA, 4 * 10240}, {1, kBufC, 16}}, {kCount}));
  EnableQueue();
  Submit({Copy(kCopySrcGuest, kDataIova, kBufA, 4 * kCount), Fill(kBufC, 16, 0), dispatch,
          Copy(kCopyDstGuest, kBufC, kDataIova + 0x10000, 4)});
  ASSERT_EQ(Reg(kRegErrorCode), 0u);
  EXPECT_EQ(GetGuest<uint32_t>(kDataIova + 0x10000, 1).front(), 49995000u);
}

// One refused entry: its errno, its index, the error vector, and nothing
// after it runs until ERROR_CLEAR skips it.
struct BadCase {
  const char* name;
  Desc entry;
  int error;
};

TEST_P(GpuRingTest, EveryBadEntryStopsTheQueueWithItsErrno) {
  Efd fence, error;
  std::vector<UniqueFd> fds;
  fds.push_back(fence.Dup());
  fds.push_back(error.Dup());
  IrqSet set{.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
             .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 0, .count = 2};
  set.fds = std::move(fds);
  ASSERT_TRUE(device_->SetIrqs(set).has_value());
  // A 4-byte name without a NUL at the very end of the slice.
  const uint32_t unterminated = 0x41414141;
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, kSliceBytes - 4,
                                   std::as_bytes(std::span(&unterminated, 1)))
                  .has_value());
  // Arguments with 9 bindings, then with a binding outside the slice.
  const auto nine = Args(1, 1, 1, std::vector<Binding>(9, Binding{0, 0, 16}), {});
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, 0x1000, nine).has_value());
  const auto outside = Args(1, 1, 1, {{0, kSliceBytes - 16, 64}}, {});
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, 0x2000, outside).has_value());
  const auto inside = Args(1, 1, 1, {{0, 0x6000, 64}}, {});
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, 0x5000, inside).has_value());
  const uint32_t name[2] = {0x6d6f6f62, 0};  // "boom"
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, 0x3000,
                                   std::as_bytes(std::span(name))).has_value());
  const uint64_t unmapped = kGuestIova + kGuestBytes;
  const std::vector<BadCase> cases = {
      {"unknown opcode", Desc().U32(kEntryOpcode, 99), EINVAL},
      {"opcode 0", Desc(), EINVAL},
      {"copy guest to guest", Copy(kCopySrcGuest | kCopyDstGuest, kDataIova, kDataIova, 4), EINVAL},
      {"copy unknown flag", Copy(4, 0, 64, 4), EINVAL},
      {"copy size 0", Copy(0, 0, 64, 0), EINVAL},
      {"copy overlapping", Copy(0, 0, 4, 64), EINVAL},
      {"copy slice source outside", Copy(0, kSliceBytes - 4, 0, 8), EFAULT},
      {"copy slice destination outside", Copy(kCopySrcGuest, kDataIova, kSliceBytes, 4), EFAULT},
      {"copy size overflows", Copy(0, 8, 0, ~uint64_t{0}), EFAULT},
      {"copy from unmapped guest", Copy(kCopySrcGuest, unmapped, 0, 64), EFAULT},
      {"copy to unmapped guest", Copy(kCopyDstGuest, 0, unmapped - 8, 64), EFAULT},
      {"copy guest range wraps", Copy(kCopySrcGuest, ~uint64_t{0} - 8, 0, 64), EFAULT},
      {"fill unaligned", Fill(2, 8, 0), EINVAL},
      {"fill size 0", Fill(0, 0, 0), EINVAL},
      {"fill outside", Fill(kSliceBytes - 4, 8, 0), EFAULT},
      {"fence unaligned", Fence(kDataIova + 4, 1), EINVAL},
      {"fence unmapped", Fence(unmapped, 1), EFAULT},
      {"dispatch module outside", Dispatch(kSliceBytes - 4, 8, 0x3000, 0x2000), EFAULT},
      {"dispatch module size unaligned", Dispatch(0, 6, 0x3000, 0x2000), EINVAL},
      {"dispatch name outside", Dispatch(0, 4, kSliceBytes, 0x2000), EFAULT},
      {"dispatch name unterminated", Dispatch(0, 4, kSliceBytes - 4, 0x2000), EINVAL},
      {"dispatch args outside", Dispatch(0, 4, 0x3000, kSliceBytes - 8), EFAULT},
      {"dispatch too many bindings", Dispatch(0, 4, 0x3000, 0x1000), EINVAL},
      {"dispatch binding outside", Dispatch(0, 4, 0x3000, 0x2000), EFAULT},
      // Not SPIR-V (Vulkan); not a built-in kernel (CPU).
      {"dispatch not runnable", Dispatch(0, 4, 0x3000, 0x5000),
       GetParam() == EngineKind::kCpu ? ENOTSUP : EINVAL},
  };
  EnableQueue(16);
  uint64_t errors = 0;
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    const uint32_t head = Reg(kRegQueueHead);
    // The bad entry, then a FILL that must wait for ERROR_CLEAR.
    Submit({c.entry, Fill(0x4000, 4, 0x77)});
    EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(c.error));
    EXPECT_EQ(Reg(kRegErrorIndex), head);
    EXPECT_EQ(Reg(kRegQueueHead), head);
    EXPECT_NE(Reg(kRegIntStatus) & kIntError, 0u);
    EXPECT_EQ(error.Take(), 1u);
    EXPECT_EQ(Reg64(kRegStatErrors), ++errors);
    uint32_t word = 1;
    ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 0x4000,
                                    std::as_writable_bytes(std::span(&word, 1))).has_value());
    EXPECT_EQ(word, 0u);
    // Skip it: the FILL runs.
    SetReg(kRegIntStatus, kIntError);
    SetReg(kRegErrorClear, 1);
    ASSERT_TRUE(device_->WaitIdle());
    EXPECT_EQ(Reg(kRegErrorCode), 0u);
    EXPECT_EQ(Reg(kRegQueueHead), head + 2);
    ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 0x4000,
                                    std::as_writable_bytes(std::span(&word, 1))).has_value());
    EXPECT_EQ(word, 0x77u);
    ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, 0x4000,
                                     std::as_bytes(std::span(&(word = 0), 1))).has_value());
  }
  EXPECT_EQ(fence.Take(), 0u);
}

TEST_P(GpuRingTest, QueueErrorsOutsideEntries) {
  // A size that is not a power of two does not enable the queue.
  SetReg(kRegQueueBase, static_cast<uint32_t>(kRingIova));
  SetReg(kRegQueueSize, 24);
  SetReg(kRegQueueCtrl, kQueueEnable);
  EXPECT_EQ(Reg(kRegQueueCtrl), 0u);
  EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EINVAL));
  SetReg(kRegErrorClear, 1);
  // Nor does an unaligned base.
  SetReg(kRegQueueBase, static_cast<uint32_t>(kRingIova + 64));
  SetReg(kRegQueueSize, 16);
  SetReg(kRegQueueCtrl, kQueueEnable);
  EXPECT_EQ(Reg(kRegQueueCtrl), 0u);
  SetReg(kRegErrorClear, 1);
  // TAIL more than a ring ahead of HEAD.
  EnableQueue(16);
  SetReg(kRegQueueTail, 17);
  SetReg(kRegDoorbell, 1);
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EINVAL));
  EXPECT_EQ(Reg(kRegQueueHead), 0u);
  // A ring in unmapped guest memory: the entry cannot be read.
  SetReg(kRegReset, 1);
  SetReg(kRegQueueBase, static_cast<uint32_t>(kGuestIova + kGuestBytes));
  SetReg(kRegQueueSize, 16);
  SetReg(kRegQueueCtrl, kQueueEnable);
  SetReg(kRegQueueTail, 1);
  SetReg(kRegDoorbell, 1);
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EFAULT));
}

// The guest unmaps the memory a COPY is reading while the device holds a pin
// in it: the unmap waits for the run being copied, the device never pins the
// range again, the COPY fails with EFAULT, the pin cache lets go of
// everything in the range, and no pin is revoked by force.
TEST_P(GpuRingTest, UnmapUnderARunningCopy) {
  // The ring and the copy's source in separate mappings, so the source can
  // go; the source straddles a 1 MiB block of IOVA, so the copy takes two
  // pins (one per block) and the unmap comes while the first is held.
  ASSERT_TRUE(backend_.Unmap(kGuestIova, kGuestBytes).has_value());
  ASSERT_TRUE(backend_.Map(DmaMapRequest{.iova = kGuestIova, .size = 0x10000,
                                         .prot = kProtRead | kProtWrite,
                                         .fd = UniqueFd(::dup(guest_fd_.get())), .offset = 0})
                  .has_value());
  constexpr uint64_t kSourceIova = 0x1f0000;
  const uint64_t source_size = kGuestBytes - 0x10000;
  ASSERT_TRUE(backend_.Map(DmaMapRequest{.iova = kSourceIova, .size = source_size,
                                         .prot = kProtRead | kProtWrite,
                                         .fd = UniqueFd(::dup(guest_fd_.get())),
                                         .offset = 0x10000})
                  .has_value());
  std::atomic<bool> unmapped{false};
  std::thread unmapper;
  dma_.set_pin_hook(1, [&] {
    // The device holds the first block's pin: unmap from another thread,
    // and return once the device has been told (the unmap then waits).
    unmapper = std::thread([&] {
      EXPECT_TRUE(backend_.Unmap(kSourceIova, source_size).has_value());
      unmapped = true;
    });
    for (int i = 0; i < 10000 && device_->unmap_notices() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_GT(device_->unmap_notices(), 0u);
    EXPECT_FALSE(unmapped.load());
  });
  EnableQueue();
  Submit({Copy(kCopySrcGuest, kSourceIova, 0, 48 * 4096)});
  ASSERT_TRUE(unmapper.joinable());
  unmapper.join();
  EXPECT_TRUE(unmapped.load());
  EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EFAULT));
  EXPECT_EQ(dma_.pins(), 1);
  EXPECT_EQ(account_->used(), 0u);
  // The device keeps working on what is still mapped.
  SetReg(kRegErrorClear, 1);
  Submit({Fence(kGuestIova + 0x8000, 5)});
  EXPECT_EQ(Reg64(kRegFenceDone), 5u);
}

// A reset while a COPY holds its pin: the reset waits for the run being
// copied, then the entry leaves no trace and the pin cache nothing pinned.
TEST_P(GpuRingTest, ResetDuringACopyLeavesNothingBehind) {
  std::vector<uint8_t> data(48 * 4096, 0xab);
  PutGuest(kDataIova, data);
  std::thread resetter;
  dma_.set_pin_hook(1, [&] {
    resetter = std::thread([&] { EXPECT_TRUE(device_->Reset().has_value()); });
  });
  EnableQueue();
  Submit({Copy(kCopySrcGuest, kDataIova, 0, data.size())});
  ASSERT_TRUE(resetter.joinable());
  resetter.join();
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Reg(kRegQueueCtrl), 0u);
  EXPECT_EQ(Reg(kRegQueueHead), 0u);
  EXPECT_EQ(Reg(kRegErrorCode), 0u);
  std::vector<uint8_t> slice(data.size(), 1);
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 0,
                                  std::as_writable_bytes(std::span(slice))).has_value());
  EXPECT_EQ(slice, std::vector<uint8_t>(data.size(), 0));
  EXPECT_EQ(account_->used(), 0u);
}

// Two instances on one runner: a stopped queue on one leaves the other
// running, and neither reaches the other's memory.
TEST_P(GpuRingTest, AFailedInstanceDoesNotStopAnother) {
  auto slice = engine_->CreateSlice(kSliceBytes);
  ASSERT_TRUE(slice.has_value());
  Type1Dma other_dma(backend_);
  GpuDevice other(GpuDeviceOptions{}, std::move(*slice), other_dma, runner_, nullptr);
  other_dma.set_owner(other.dma_unmap_listener());
  ASSERT_TRUE(backend_.AttachListener(*other.dma_unmap_listener()).has_value());
  ScopeExit detach([&] { backend_.DetachListener(*other.dma_unmap_listener()); });

  EnableQueue();
  Submit({Fill(0, 4096, 0x11111111), Fill(kSliceBytes, 4, 0)});  // The second fails.
  ASSERT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EFAULT));

  // The other instance's ring one page further in guest memory.
  const uint64_t ring = kRingIova + 0x1000;
  const Desc entries[] = {Fill(0, 4096, 0x22222222), Copy(kCopyDstGuest, 0, kDataIova, 16),
                          Fence(kDataIova + 64, 7)};
  for (size_t i = 0; i < 3; ++i) {
    std::memcpy(Guest(ring + i * kEntrySize), entries[i].bytes, kEntrySize);
  }
  auto set = [&](uint32_t offset, uint32_t value) {
    ASSERT_TRUE(other.RegionWrite(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                  std::as_bytes(std::span(&value, 1))).has_value());
  };
  set(kRegQueueBase, static_cast<uint32_t>(ring));
  set(kRegQueueSize, 16);
  set(kRegQueueCtrl, kQueueEnable);
  set(kRegQueueTail, 3);
  set(kRegDoorbell, 1);
  ASSERT_TRUE(other.WaitIdle());
  EXPECT_EQ(other.stats().commands, 3u);
  EXPECT_EQ(GetGuest<uint32_t>(kDataIova, 4), std::vector<uint32_t>(4, 0x22222222));
  EXPECT_EQ(GetGuest<uint64_t>(kDataIova + 64, 1).front(), 7u);
  // Still stopped, with its own memory.
  EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EFAULT));
  uint32_t word = 0;
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 0,
                                  std::as_writable_bytes(std::span(&word, 1))).has_value());
  EXPECT_EQ(word, 0x11111111u);
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuRingTest,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu), EngineName);
INSTANTIATE_TEST_SUITE_P(Engines, GpuRingDispatch,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu), EngineName);

}  // namespace
}  // namespace umdev::vendor::gpu::testing
