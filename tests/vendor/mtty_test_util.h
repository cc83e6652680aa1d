// Helpers for the mtty tests: making instances, register access through
// DeviceOps, eventfds the test can read.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "umdev/mdev_core/device_ops.h"
#include "umdev/mdev_core/dma_access.h"
#include "umdev/mdev_core/irq_set.h"
#include "umdev/vendor/serial/mtty_parent.h"
#include "umdev/vendor/serial/uart_16550.h"

namespace umdev::vendor::serial::testing {

// mtty does no DMA; every call fails.
class NoDma final : public DmaAccess {
 public:
  Result<std::vector<void*>> PinPages(uint64_t, int, uint32_t) override { return Fail(EINVAL, "no dma"); }
  void UnpinPages(uint64_t, int) override {}
  Result<void> DmaRead(uint64_t, std::span<std::byte>) override { return Fail(EINVAL, "no dma"); }
  Result<void> DmaWrite(uint64_t, std::span<const std::byte>) override {
    return Fail(EINVAL, "no dma");
  }
};

inline Result<std::unique_ptr<DeviceOps>> Probe(MttyParent& parent, const std::string& sysfs_name,
                                                DmaAccess& dma) {
  const MdevTypeSpec type{.sysfs_name = sysfs_name, .pretty_name = {}, .description = {}};
  return parent.Probe(ProbeContext{type, Uuid::Generate(), dma});
}

inline uint8_t ReadReg(DeviceOps& ops, unsigned bar, uint8_t offset) {
  std::byte value{0xee};
  EXPECT_EQ(ops.RegionRead(bar, offset, std::span(&value, 1)), 1u);
  return std::to_integer<uint8_t>(value);
}

inline void WriteReg(DeviceOps& ops, unsigned bar, uint8_t offset, uint8_t value) {
  const std::byte byte{value};
  EXPECT_EQ(ops.RegionWrite(bar, offset, std::span(&byte, 1)), 1u);
}

// SetIrqs behind the core's validation, as the device sees it from DeviceFile.
inline Result<void> ApplyIrqs(DeviceOps& ops, IrqSet set) {
  UMDEV_ASSIGN_OR_RETURN(const IrqInfo info, ops.GetIrqInfo(set.index));
  UMDEV_TRY(ValidateIrqSet(info, set));
  return ops.SetIrqs(set);
}

// An eventfd the test keeps a dup of.
struct Efd {
  Efd() : fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~Efd() { ::close(fd); }
  UniqueFd Dup() const { return UniqueFd(::dup(fd)); }
  uint64_t Take() const {  // The counter, cleared; 0 if not signalled.
    uint64_t value = 0;
    return ::read(fd, &value, sizeof(value)) == 8 ? value : 0;
  }
  void Signal() const {
    const uint64_t one = 1;
    EXPECT_EQ(::write(fd, &one, sizeof(one)), 8);
  }
  int fd;
};

inline IrqSet EventfdSet(uint32_t index, uint32_t action, UniqueFd fd) {
  IrqSet set{.flags = VFIO_IRQ_SET_DATA_EVENTFD | action, .index = index, .start = 0, .count = 1,
             .bools = {}, .fds = {}};
  set.fds.push_back(std::move(fd));
  return set;
}

inline IrqSet NoneSet(uint32_t index, uint32_t action, uint32_t count = 1) {
  return IrqSet{.flags = VFIO_IRQ_SET_DATA_NONE | action, .index = index, .start = 0,
                .count = count, .bools = {}, .fds = {}};
}

inline int Errno(const Result<void>& r) { return r.has_value() ? 0 : r.error().code; }
template <typename T>
int Errno(const Result<T>& r) {
  return r.has_value() ? 0 : r.error().code;
}

}  // namespace umdev::vendor::serial::testing
