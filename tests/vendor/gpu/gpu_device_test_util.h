// Helpers for GpuDevice tests: guest RAM behind the real type1 backend, the
// device's registers through DeviceOps, and a guest-side command ring.
#pragma once

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "umdev/common/mapping.h"
#include "umdev/common/mutex.h"
#include "umdev/mdev_core/irq_set.h"
#include "umdev/mdev_core/parent_driver.h"
#include "umdev/pinning/type1_backend.h"
#include "umdev/vendor/gpu/direct_runner.h"
#include "umdev/vendor/gpu/gpu_device.h"

namespace umdev::vendor::gpu::testing {

using namespace regs;  // NOLINT: the register map is these tests' vocabulary.

inline constexpr uint64_t kGuestIova = 0x100000;
inline constexpr uint64_t kGuestPages = 64;
inline constexpr uint64_t kGuestBytes = kGuestPages * kPageSize;
inline constexpr uint64_t kRingIova = kGuestIova;            // 16 entries: one page.
inline constexpr uint64_t kDataIova = kGuestIova + 0x10000;  // Free for the test.
inline constexpr uint64_t kSliceBytes = 1 << 20;

// The device's path to guest memory, as the core's Device gives it: the
// type1 backend with the device's listener as owner of its pins. A test may
// hold the |pin_hook_at|-th pin (1-based) inside PinPages, after it
// succeeded, to act while the device holds it. Thread-safe.
class Type1Dma final : public DmaAccess {
 public:
  explicit Type1Dma(pinning::Type1Backend& backend) : backend_(backend) {}
  void set_owner(DmaUnmapListener* owner) { owner_ = owner; }
  void set_pin_hook(int at, std::function<void()> hook) {
    MutexLock lock(mu_);
    hook_at_ = at;
    hook_ = std::move(hook);
  }
  int pins() const {
    MutexLock lock(mu_);
    return pins_;
  }

  Result<std::vector<void*>> PinPages(uint64_t iova, int npage, uint32_t prot) override {
    auto pinned = backend_.PinPages(*owner_, iova, npage, prot);
    std::function<void()> hook;
    {
      MutexLock lock(mu_);
      if (pinned.has_value() && ++pins_ == hook_at_) hook = hook_;
    }
    if (hook) hook();
    return pinned;
  }
  void UnpinPages(uint64_t iova, int npage) override { backend_.UnpinPages(*owner_, iova, npage); }
  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override {
    {
      MutexLock lock(mu_);
      ++reads_;
      if (out.size() > max_read_) return Fail(EFAULT, "test: reads over the limit fail");
    }
    return backend_.DmaRead(iova, out);
  }
  // DmaRead calls so far, and a size past which they fail with EFAULT.
  int reads() const {
    MutexLock lock(mu_);
    return reads_;
  }
  void fail_reads_over(size_t bytes) {
    MutexLock lock(mu_);
    max_read_ = bytes;
  }
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override {
    return backend_.DmaWrite(iova, data);
  }

 private:
  pinning::Type1Backend& backend_;
  DmaUnmapListener* owner_ = nullptr;
  mutable Mutex mu_;
  int pins_ UMDEV_GUARDED_BY(mu_) = 0;
  int reads_ UMDEV_GUARDED_BY(mu_) = 0;
  size_t max_read_ UMDEV_GUARDED_BY(mu_) = SIZE_MAX;
  int hook_at_ UMDEV_GUARDED_BY(mu_) = 0;
  std::function<void()> hook_ UMDEV_GUARDED_BY(mu_);
};

// A 64-byte ring entry under construction.
using Desc = RingEntry;

inline Desc Copy(uint32_t flags, uint64_t src, uint64_t dst, uint64_t size) {
  return Desc().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, flags).U64(kCopySrc, src)
      .U64(kCopyDst, dst).U64(kCopySize, size);
}
inline Desc Fill(uint64_t offset, uint64_t size, uint32_t pattern) {
  return Desc().U32(kEntryOpcode, kOpFill).U64(kFillOffset, offset).U64(kFillSize, size)
      .U32(kFillPattern, pattern);
}
inline Desc Fence(uint64_t iova, uint64_t value, bool irq = true) {
  return Desc().U32(kEntryOpcode, kOpFence).U32(kEntryFlags, irq ? kFenceInterrupt : 0)
      .U64(kFenceIova, iova).U64(kFenceValue, value);
}
inline Desc Dispatch(uint64_t module, uint32_t module_size, uint64_t entry, uint64_t args) {
  return Desc().U32(kEntryOpcode, kOpDispatch).U64(kDispatchModuleOffset, module)
      .U32(kDispatchModuleSize, module_size).U64(kDispatchEntryOffset, entry)
      .U64(kDispatchArgsOffset, args);
}

// An eventfd the test reads what the device signalled from.
struct Efd {
  Efd() : fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~Efd() { ::close(fd); }
  Efd(const Efd&) = delete;
  Efd& operator=(const Efd&) = delete;
  UniqueFd Dup() const { return UniqueFd(::dup(fd)); }
  uint64_t Take() const {
    uint64_t value = 0;
    return ::read(fd, &value, sizeof(value)) == 8 ? value : 0;
  }
  int fd;
};

// A GpuDevice on an engine, its guest RAM (a memfd mapped into the type1
// backend at kGuestIova and, for the test, into this process), and a ring.
class GpuDeviceFixture : public ::testing::TestWithParam<EngineKind> {
 public:
  void SetUp() override {
    if (GetParam() == EngineKind::kVulkan) {
      const int index = PickTestDevice();
      if (index < 0) GTEST_SKIP() << kNoVulkanMessage;
      auto engine = CreateVulkanEngine({.device_index = static_cast<uint32_t>(index)});
      ASSERT_TRUE(engine.has_value()) << engine.error().Describe();
      engine_ = *engine;
    } else {
      auto engine = CreateCpuEngine({});
      ASSERT_TRUE(engine.has_value()) << engine.error().Describe();
      engine_ = *engine;
    }
    guest_fd_ = UniqueFd(::memfd_create("gpu-test-guest", MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(guest_fd_.get(), kGuestBytes), 0);
    auto guest = Mapping::Map(guest_fd_.get(), 0, kGuestBytes, PROT_READ | PROT_WRITE,
                              MAP_SHARED);
    ASSERT_TRUE(guest.has_value());
    guest_ = std::move(*guest);
    MakeDevice();
    ASSERT_TRUE(backend_.Map(DmaMapRequest{.iova = kGuestIova, .size = kGuestBytes,
                                           .prot = kProtRead | kProtWrite,
                                           .fd = UniqueFd(::dup(guest_fd_.get())),
                                           .offset = 0})
                    .has_value());
  }
  void TearDown() override { DestroyDevice(); }

  // |runner| null: the fixture's DirectRunner.
  void MakeDevice(GpuDeviceOptions options = {}, uint64_t slice_bytes = kSliceBytes,
                  QueueRunner* runner = nullptr) {
    auto slice = engine_->CreateSlice(slice_bytes);
    ASSERT_TRUE(slice.has_value()) << slice.error().Describe();
    options.builtin_kernels_only = GetParam() == EngineKind::kCpu;
    device_ = std::make_unique<GpuDevice>(options, std::move(*slice), dma_,
                                          runner != nullptr ? *runner : runner_, nullptr);
    dma_.set_owner(device_->dma_unmap_listener());
    ASSERT_TRUE(backend_.AttachListener(*device_->dma_unmap_listener()).has_value());
  }
  void DestroyDevice() {
    if (device_ == nullptr) return;
    backend_.DetachListener(*device_->dma_unmap_listener());
    device_.reset();
  }

  // --- Registers ---
  uint32_t Reg(uint32_t offset) {
    uint32_t value = 0;
    auto r = device_->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                 std::as_writable_bytes(std::span(&value, 1)));
    EXPECT_TRUE(r.has_value()) << offset;
    return value;
  }
  uint64_t Reg64(uint32_t offset) {
    uint64_t value = 0;
    auto r = device_->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                 std::as_writable_bytes(std::span(&value, 1)));
    EXPECT_TRUE(r.has_value()) << offset;
    return value;
  }
  void SetReg(uint32_t offset, uint32_t value) {
    auto r = device_->RegionWrite(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                  std::as_bytes(std::span(&value, 1)));
    EXPECT_TRUE(r.has_value()) << offset;
  }
  uint32_t Config32(uint32_t offset) {
    uint32_t value = 0;
    EXPECT_TRUE(device_->RegionRead(VFIO_PCI_CONFIG_REGION_INDEX, offset,
                                    std::as_writable_bytes(std::span(&value, 1)))
                    .has_value());
    return value;
  }

  // --- Guest memory (the test's own view of it) ---
  std::byte* Guest(uint64_t iova) { return guest_.data() + (iova - kGuestIova); }
  template <typename T>
  void PutGuest(uint64_t iova, const std::vector<T>& values) {
    std::memcpy(Guest(iova), values.data(), values.size() * sizeof(T));
  }
  template <typename T>
  std::vector<T> GetGuest(uint64_t iova, size_t count) {
    std::vector<T> out(count);
    std::memcpy(out.data(), Guest(iova), count * sizeof(T));
    return out;
  }

  // --- The ring ---
  void EnableQueue(uint32_t size = 16) {
    SetReg(kRegQueueBase, static_cast<uint32_t>(kRingIova));
    SetReg(kRegQueueBase + 4, static_cast<uint32_t>(kRingIova >> 32));
    SetReg(kRegQueueSize, size);
    SetReg(kRegQueueCtrl, kQueueEnable);
    ring_size_ = size;
    tail_ = 0;
  }
  // Writes the entries at TAIL, advances it, rings the doorbell and waits
  // until the device is idle or stopped on an error.
  void Submit(std::initializer_list<Desc> entries) {
    for (const Desc& d : entries) {
      std::memcpy(Guest(kRingIova + uint64_t{tail_ % ring_size_} * kEntrySize), d.bytes,
                  kEntrySize);
      ++tail_;
    }
    SetReg(kRegQueueTail, tail_);
    SetReg(kRegDoorbell, 1);
    ASSERT_TRUE(device_->WaitIdle());
  }

  std::shared_ptr<Engine> engine_;
  std::shared_ptr<pinning::LockedMemoryAccount> account_ =
      std::make_shared<pinning::LockedMemoryAccount>(uint64_t{1} << 30);
  pinning::Type1Backend backend_{account_};
  Type1Dma dma_{backend_};
  DirectRunner runner_;
  UniqueFd guest_fd_;
  Mapping guest_;
  std::unique_ptr<GpuDevice> device_;
  uint32_t ring_size_ = 16;
  uint32_t tail_ = 0;
};

inline std::string EngineName(const ::testing::TestParamInfo<EngineKind>& info) {
  return info.param == EngineKind::kVulkan ? "Vulkan" : "Cpu";
}

// Probe() only keeps the DmaAccess; tests that never open a device pass this.
class NoDma final : public DmaAccess {
 public:
  Result<std::vector<void*>> PinPages(uint64_t, int, uint32_t) override {
    return Fail(EINVAL, "not open");
  }
  void UnpinPages(uint64_t, int) override {}
  Result<void> DmaRead(uint64_t, std::span<std::byte>) override { return Fail(EINVAL, "not open"); }
  Result<void> DmaWrite(uint64_t, std::span<const std::byte>) override {
    return Fail(EINVAL, "not open");
  }
};

// |parent|'s type |name| (a test failure and an empty spec when it has none).
inline MdevTypeSpec TypeNamed(const ParentDriver& parent, const std::string& name) {
  for (const MdevTypeSpec& t : parent.types()) {
    if (t.sysfs_name == name) return t;
  }
  ADD_FAILURE() << "no type " << name;
  return {};
}

// An instance of type |type| created through Probe(), as the core does.
inline Result<std::unique_ptr<DeviceOps>> Create(ParentDriver& parent, const std::string& type,
                                                 DmaAccess& dma) {
  return parent.Probe(ProbeContext{.type = TypeNamed(parent, type), .uuid = Uuid{}, .dma = dma});
}

}  // namespace umdev::vendor::gpu::testing
