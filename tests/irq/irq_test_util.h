// Helpers for DeviceIrqs tests: eventfds the test can read, and SET_IRQS builders.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "umdev/common/unique_fd.h"
#include "umdev/irq/device_irqs.h"
#include "umdev/mdev_core/irq_set.h"

namespace umdev::irq::testutil {

// The vectors of the device the tests build: one INTx, 4 MSI, 8 MSI-X.
inline constexpr IrqCounts kCounts{.intx = 1, .msi = 4, .msix = 8, .err = 1, .req = 1};

inline constexpr uint32_t kIntx = VFIO_PCI_INTX_IRQ_INDEX;
inline constexpr uint32_t kMsi = VFIO_PCI_MSI_IRQ_INDEX;
inline constexpr uint32_t kMsix = VFIO_PCI_MSIX_IRQ_INDEX;
inline constexpr uint32_t kErr = VFIO_PCI_ERR_IRQ_INDEX;
inline constexpr uint32_t kReq = VFIO_PCI_REQ_IRQ_INDEX;
inline constexpr uint32_t kTrigger = VFIO_IRQ_SET_ACTION_TRIGGER;
inline constexpr uint32_t kMask = VFIO_IRQ_SET_ACTION_MASK;
inline constexpr uint32_t kUnmask = VFIO_IRQ_SET_ACTION_UNMASK;
inline constexpr uint32_t kNone = VFIO_IRQ_SET_DATA_NONE;
inline constexpr uint32_t kBool = VFIO_IRQ_SET_DATA_BOOL;
inline constexpr uint32_t kEventfd = VFIO_IRQ_SET_DATA_EVENTFD;

// An eventfd the test keeps a dup of, to read what the device signalled.
struct Efd {
  Efd() : fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~Efd() { ::close(fd); }
  Efd(const Efd&) = delete;
  Efd& operator=(const Efd&) = delete;
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

inline IrqSet Set(uint32_t index, uint32_t flags, uint32_t start, uint32_t count) {
  return IrqSet{.flags = flags, .index = index, .start = start, .count = count};
}

inline IrqSet Fds(uint32_t index, uint32_t start, std::vector<UniqueFd> fds) {
  IrqSet set = Set(index, kEventfd | kTrigger, start, static_cast<uint32_t>(fds.size()));
  set.fds = std::move(fds);
  return set;
}

inline IrqSet Bools(uint32_t index, uint32_t action, uint32_t start, std::vector<uint8_t> bools) {
  IrqSet set = Set(index, kBool | action, start, static_cast<uint32_t>(bools.size()));
  set.bools = std::move(bools);
  return set;
}

inline std::vector<UniqueFd> One(UniqueFd fd) {
  std::vector<UniqueFd> v;
  v.push_back(std::move(fd));
  return v;
}

// SetIrqs behind the core's validation, as a device sees it.
inline Result<void> Apply(DeviceIrqs& irqs, IrqSet set) {
  UMDEV_TRY(ValidateIrqSet(irqs.Info(set.index), set));
  return irqs.SetIrqs(set);
}

inline int Errno(const Result<void>& r) { return r.has_value() ? 0 : r.error().code; }

}  // namespace umdev::irq::testutil
