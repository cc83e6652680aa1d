// Helpers for PciTestDevice tests: guest memory behind a fake DmaAccess, and
// register accessors that go through DeviceOps as a transport would.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "fakes/pci_test_device.h"
#include "umdev/common/mutex.h"
#include "umdev/mdev_core/irq_set.h"

namespace umdev::testing::pci_test_util {

// The test device's BARs by region index.
inline constexpr uint32_t kBar0 = VFIO_PCI_BAR0_REGION_INDEX;
inline constexpr uint32_t kBar1 = VFIO_PCI_BAR1_REGION_INDEX;
inline constexpr uint32_t kBar2 = VFIO_PCI_BAR2_REGION_INDEX;
inline constexpr uint32_t kBar3 = VFIO_PCI_BAR3_REGION_INDEX;

// Guest memory [kGuestBase, kGuestBase + kGuestSize); anything else is EFAULT.
// A test may hold transfers at a gate to watch the device while one is busy.
// Thread-safe.
class FakeDma final : public DmaAccess {
 public:
  static constexpr uint64_t kGuestBase = 0x100000;
  static constexpr uint64_t kGuestSize = 0x4000;

  Result<std::vector<void*>> PinPages(uint64_t, int, uint32_t) override {
    return Fail(EINVAL, "the test PCI device never pins");
  }
  void UnpinPages(uint64_t, int) override {}
  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override {
    UMDEV_TRY(Enter(iova, out.size()));
    MutexLock lock(mu_);
    std::memcpy(out.data(), memory_.data() + (iova - kGuestBase), out.size());
    return {};
  }
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override {
    UMDEV_TRY(Enter(iova, data.size()));
    MutexLock lock(mu_);
    std::memcpy(memory_.data() + (iova - kGuestBase), data.data(), data.size());
    return {};
  }

  void Fill(uint64_t iova, std::span<const std::byte> data) {
    MutexLock lock(mu_);
    std::memcpy(memory_.data() + (iova - kGuestBase), data.data(), data.size());
  }
  std::vector<std::byte> Bytes(uint64_t iova, size_t size) const {
    MutexLock lock(mu_);
    const auto* first = memory_.data() + (iova - kGuestBase);
    return {first, first + size};
  }
  // While closed, transfers wait inside DmaRead/DmaWrite.
  void CloseGate() {
    MutexLock lock(mu_);
    gate_open_ = false;
  }
  void OpenGate() {
    MutexLock lock(mu_);
    gate_open_ = true;
    cv_.NotifyAll();
  }
  // Blocks until a transfer waits at the closed gate.
  void WaitForWaiter() {
    MutexLock lock(mu_);
    while (waiting_ == 0) cv_.Wait(mu_);
  }
  int calls() const {
    MutexLock lock(mu_);
    return calls_;
  }
  std::thread::id last_caller() const {
    MutexLock lock(mu_);
    return last_caller_;
  }

 private:
  Result<void> Enter(uint64_t iova, size_t size) {
    MutexLock lock(mu_);
    ++calls_;
    last_caller_ = std::this_thread::get_id();
    ++waiting_;
    cv_.NotifyAll();
    while (!gate_open_) cv_.Wait(mu_);
    --waiting_;
    if (iova < kGuestBase || size > kGuestSize || iova - kGuestBase > kGuestSize - size) {
      return Fail(EFAULT, "fake dma: outside guest memory");
    }
    return {};
  }

  mutable Mutex mu_;
  CondVar cv_;
  std::vector<std::byte> memory_ UMDEV_GUARDED_BY(mu_) = std::vector<std::byte>(kGuestSize);
  bool gate_open_ UMDEV_GUARDED_BY(mu_) = true;
  int waiting_ UMDEV_GUARDED_BY(mu_) = 0;
  int calls_ UMDEV_GUARDED_BY(mu_) = 0;
  std::thread::id last_caller_ UMDEV_GUARDED_BY(mu_);
};

inline std::unique_ptr<PciTestDevice> MakeDevice(DmaAccess& dma, PciTestDevice::Type type =
                                                                      PciTestDevice::Type::kBasic) {
  auto device = PciTestDevice::Create(type, dma);
  EXPECT_TRUE(device.has_value()) << device.error().Describe();
  return device.has_value() ? std::move(*device) : nullptr;
}

inline int Errno(const Result<size_t>& r) { return r.has_value() ? 0 : r.error().code; }
inline int Errno(const Result<void>& r) { return r.has_value() ? 0 : r.error().code; }

inline uint64_t ReadN(DeviceOps& d, uint32_t region, uint64_t offset, size_t size) {
  std::byte bytes[8] = {};
  auto r = d.RegionRead(region, offset, std::span(bytes, size));
  EXPECT_TRUE(r.has_value()) << "region " << region << " offset " << offset;
  uint64_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return value;
}

inline Result<size_t> WriteN(DeviceOps& d, uint32_t region, uint64_t offset, size_t size,
                             uint64_t value) {
  std::byte bytes[8] = {};
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(value >> (8 * i));
  return d.RegionWrite(region, offset, std::span<const std::byte>(bytes, size));
}

inline uint32_t Reg(DeviceOps& d, uint32_t offset) {
  return static_cast<uint32_t>(ReadN(d, VFIO_PCI_BAR0_REGION_INDEX, offset, 4));
}
inline void SetReg(DeviceOps& d, uint32_t offset, uint32_t value) {
  auto r = WriteN(d, VFIO_PCI_BAR0_REGION_INDEX, offset, 4, value);
  EXPECT_TRUE(r.has_value()) << "register " << offset << ": " << r.error().Describe();
}
inline uint64_t Config(DeviceOps& d, uint32_t offset, size_t size) {
  return ReadN(d, VFIO_PCI_CONFIG_REGION_INDEX, offset, size);
}
inline void SetConfig(DeviceOps& d, uint32_t offset, size_t size, uint64_t value) {
  EXPECT_TRUE(WriteN(d, VFIO_PCI_CONFIG_REGION_INDEX, offset, size, value).has_value());
}

// An eventfd the test keeps a dup of, to read what the device signalled.
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
  void Signal() const {
    const uint64_t one = 1;
    EXPECT_EQ(::write(fd, &one, sizeof(one)), 8);
  }
  int fd;
};

// SET_IRQS through the core's validation, as the transport delivers it.
inline Result<void> Irqs(DeviceOps& d, uint32_t index, uint32_t flags, uint32_t start,
                         uint32_t count, std::vector<UniqueFd> fds = {}) {
  IrqSet set{.flags = flags, .index = index, .start = start, .count = count};
  set.fds = std::move(fds);
  auto info = d.GetIrqInfo(index);
  if (!info.has_value()) return std::unexpected(info.error());
  UMDEV_TRY(ValidateIrqSet(*info, set));
  return d.SetIrqs(set);
}

inline std::vector<UniqueFd> One(UniqueFd fd) {
  std::vector<UniqueFd> v;
  v.push_back(std::move(fd));
  return v;
}

// The device buffer's first |size| bytes, read 8 at a time (its widest access).
inline std::vector<std::byte> DeviceBuffer(DeviceOps& d, size_t size) {
  std::vector<std::byte> bytes(size);
  for (size_t at = 0; at < size; at += 8) {
    const size_t n = std::min<size_t>(8, size - at);
    const size_t width = n == 8 ? 8 : 1;
    for (size_t i = 0; i < n; i += width) {
      auto r = d.RegionRead(VFIO_PCI_BAR0_REGION_INDEX, pci_test::kBufferOffset + at + i,
                            std::span(bytes.data() + at + i, width));
      EXPECT_TRUE(r.has_value());
    }
  }
  return bytes;
}

// Starts a transfer and waits for it to leave BUSY; returns DMA_STATUS.
inline uint32_t RunDma(PciTestDevice& d, uint64_t addr, uint32_t len, uint32_t cmd) {
  SetReg(d, pci_test::kRegDmaAddrLo, static_cast<uint32_t>(addr));
  SetReg(d, pci_test::kRegDmaAddrHi, static_cast<uint32_t>(addr >> 32));
  SetReg(d, pci_test::kRegDmaLen, len);
  SetReg(d, pci_test::kRegDmaCmd, cmd);
  return d.WaitDmaIdle();
}

}  // namespace umdev::testing::pci_test_util
