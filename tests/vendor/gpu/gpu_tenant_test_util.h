// Tenants of one gpu parent for the isolation and malicious-ring tests: each
// tenant is an instance with its own guest RAM behind its own type1 backend
// (a VM of its own), driven through BAR0 as a guest driver would.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gpu_device_test_util.h"
#include "umdev/vendor/gpu/gpu_parent.h"

namespace umdev::vendor::gpu::testing {

inline constexpr uint64_t kTenantParentMemory = 16 << 20;  // 1of2: 8 MiB, 1of4: 4 MiB.
inline constexpr uint32_t kTenantRing = 64;                 // Entries, at kRingIova.
inline constexpr SchedulingPolicy kEveryPolicy[] = {
    SchedulingPolicy::kBestEffort, SchedulingPolicy::kEqualShare, SchedulingPolicy::kFixedShare};

// A gpu parent with |policy| on the test's engine; null (and the test
// skipped) without a Vulkan device.
inline std::shared_ptr<GpuParent> MakeTenantParent(EngineKind kind, SchedulingPolicy policy) {
  GpuParentOptions options{.parent_name = "gpu-test", .engine = kind,
                           .memory = kTenantParentMemory, .scheduler = {.policy = policy}};
  if (kind == EngineKind::kVulkan) {
    const int index = PickTestDevice();
    if (index < 0) return nullptr;
    options.device_index = static_cast<uint32_t>(index);
  }
  auto parent = GpuParent::Create(options);
  EXPECT_TRUE(parent.has_value()) << parent.error().Describe();
  return parent.value_or(nullptr);
}

// One instance and its guest: RAM mapped at kGuestIova (kGuestBytes), the
// ring at kRingIova. Registers and the ring are used by one thread at a time.
class Tenant {
 public:
  Tenant(GpuParent& parent, const std::string& type) {
    guest_fd_ = UniqueFd(::memfd_create("gpu-tenant", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(guest_fd_.get(), kGuestBytes), 0);
    auto guest = Mapping::Map(guest_fd_.get(), 0, kGuestBytes, PROT_READ | PROT_WRITE,
                              MAP_SHARED);
    EXPECT_TRUE(guest.has_value());
    if (guest.has_value()) guest_ = std::move(*guest);
    EXPECT_TRUE(backend_.Map(DmaMapRequest{.iova = kGuestIova, .size = kGuestBytes,
                                           .prot = kProtRead | kProtWrite,
                                           .fd = UniqueFd(::dup(guest_fd_.get())), .offset = 0})
                    .has_value());
    for (const MdevTypeSpec& t : parent.types()) {
      if (t.sysfs_name != type) continue;
      auto ops = parent.Probe(ProbeContext{.type = t, .uuid = Uuid{}, .dma = dma_});
      EXPECT_TRUE(ops.has_value()) << ops.error().Describe();
      if (ops.has_value()) ops_ = std::move(*ops);
    }
    device_ = dynamic_cast<GpuDevice*>(ops_.get());
    EXPECT_NE(device_, nullptr) << type;
    if (device_ == nullptr) return;
    dma_.set_owner(device_->dma_unmap_listener());
    EXPECT_TRUE(backend_.AttachListener(*device_->dma_unmap_listener()).has_value());
  }
  ~Tenant() {
    if (device_ != nullptr) backend_.DetachListener(*device_->dma_unmap_listener());
    ops_.reset();
  }
  Tenant(const Tenant&) = delete;
  Tenant& operator=(const Tenant&) = delete;

  bool ok() const { return device_ != nullptr; }
  GpuDevice& device() { return *device_; }
  uint64_t slice_size() { return Reg64(kRegMemSize); }

  uint32_t Reg(uint32_t offset) {
    uint32_t value = 0;
    EXPECT_TRUE(device_->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                    std::as_writable_bytes(std::span(&value, 1))).has_value());
    return value;
  }
  uint64_t Reg64(uint32_t offset) {
    uint64_t value = 0;
    EXPECT_TRUE(device_->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                    std::as_writable_bytes(std::span(&value, 1))).has_value());
    return value;
  }
  void SetReg(uint32_t offset, uint32_t value) {
    EXPECT_TRUE(device_->RegionWrite(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                     std::as_bytes(std::span(&value, 1))).has_value());
  }
  std::vector<uint32_t> SliceWords(uint64_t offset, size_t count) {
    std::vector<uint32_t> words(count);
    EXPECT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, offset,
                                    std::as_writable_bytes(std::span(words))).has_value());
    return words;
  }
  void PutSlice(uint64_t offset, std::span<const std::byte> data) {
    EXPECT_TRUE(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, offset, data).has_value());
  }
  // Whether every word of the slice is |pattern|.
  bool SliceIs(uint32_t pattern) {
    const auto words = SliceWords(0, slice_size() / 4);
    return std::all_of(words.begin(), words.end(), [&](uint32_t w) { return w == pattern; });
  }
  std::byte* Guest(uint64_t iova) { return guest_.data() + (iova - kGuestIova); }

  // The ring (kTenantRing entries at kRingIova).
  void EnableQueue() {
    SetReg(kRegQueueBase, static_cast<uint32_t>(kRingIova));
    SetReg(kRegQueueBase + 4, 0);
    SetReg(kRegQueueSize, kTenantRing);
    SetReg(kRegQueueCtrl, kQueueEnable);
    tail_ = 0;
  }
  // Writes |entry| at TAIL (not yet visible to the device).
  void Push(const Desc& entry) {
    std::memcpy(Guest(kRingIova + uint64_t{tail_ % kTenantRing} * kEntrySize), entry.bytes,
                kEntrySize);
    ++tail_;
  }
  void Ring() {
    SetReg(kRegQueueTail, tail_);
    SetReg(kRegDoorbell, 1);
  }
  uint32_t tail() const { return tail_; }

  // One round of well-behaved work: FILL 64 KiB of the slice with |value|,
  // COPY its first 16 bytes to guest memory, FENCE |value|; then waits
  // (bounded polling) for the fence. True when the fence and the copied
  // bytes arrived.
  bool RunRound(uint32_t value) {
    constexpr uint64_t kOut = kDataIova;
    constexpr uint64_t kFence = kDataIova + 0x100;
    Push(Fill(0, 0x10000, value));
    Push(Copy(kCopyDstGuest, 0, kOut, 16));
    Push(Fence(kFence, value, false));
    Ring();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (Reg64(kRegFenceDone) != value) {
      if (std::chrono::steady_clock::now() >= deadline || Reg(kRegErrorCode) != 0) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    // FENCE_DONE is set after the fence's write, under the device's lock.
    uint64_t fence = 0;
    uint32_t out[4] = {};
    std::memcpy(&fence, Guest(kFence), 8);
    std::memcpy(out, Guest(kOut), 16);
    return fence == value && out[0] == value && out[3] == value;
  }

 private:
  std::shared_ptr<pinning::LockedMemoryAccount> account_ =
      std::make_shared<pinning::LockedMemoryAccount>(uint64_t{1} << 30);
  pinning::Type1Backend backend_{account_};
  Type1Dma dma_{backend_};
  UniqueFd guest_fd_;
  Mapping guest_;
  std::unique_ptr<DeviceOps> ops_;
  GpuDevice* device_ = nullptr;
  uint32_t tail_ = 0;
};

}  // namespace umdev::vendor::gpu::testing
