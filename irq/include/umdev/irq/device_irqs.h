// DeviceIrqs: a device's VFIO interrupt state (vfio-pci SET_IRQS semantics) over eventfds.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/common/unique_fd.h"
#include "umdev/irq/virqfd.h"
#include "umdev/mdev_core/device_ops.h"

namespace umdev::irq {

// Vectors per vfio-pci index; 0 leaves the index unsupported.
struct IrqCounts {
  uint32_t intx = 1;  // 0 or 1.
  uint32_t msi = 0;
  uint32_t msix = 0;
  uint32_t err = 0;  // 0 or 1.
  uint32_t req = 0;  // 0 or 1.
};

// The interrupt state a vendor device embeds: GET_IRQ_INFO, SET_IRQS (as
// drivers/vfio/pci/vfio_pci_intrs.c handles it) and the device side that
// raises interrupts. At most one of INTx, MSI and MSI-X is enabled at a time.
// Thread-safe: device threads call Trigger while the transport calls SetIrqs.
// Eventfds are written with the state lock held; no callback runs under it.
class DeviceIrqs {
 public:
  // |resample_loop| runs INTx unmask eventfds (UNMASK|DATA_EVENTFD); without
  // one that combination is ENOTTY. It must outlive this object.
  explicit DeviceIrqs(IrqCounts counts, VirqfdLoop* resample_loop = nullptr);
  DeviceIrqs(const DeviceIrqs&) = delete;
  DeviceIrqs& operator=(const DeviceIrqs&) = delete;
  ~DeviceIrqs();

  // VFIO_DEVICE_GET_IRQ_INFO; count 0 for an unsupported or unknown index.
  IrqInfo Info(uint32_t index) const;

  // VFIO_DEVICE_SET_IRQS on a set ValidateIrqSet accepted; takes the eventfds
  // it keeps out of |set.fds|. Errors: EINVAL for an unsupported index, a
  // second interrupt mode, or firing/masking a mode that is not enabled;
  // ENOTTY for combinations vfio-pci does not implement (MSI/MSI-X/ERR/REQ
  // mask and unmask, INTx mask by eventfd); Virqfd errors for a resample fd.
  // DATA_NONE|ACTION_TRIGGER with count 0 disables the index (a no-op if it
  // is not enabled). A loopback fire (TRIGGER with NONE or BOOL) signals the
  // eventfd without masking, as vfio_send_intx_eventfd() does.
  Result<void> SetIrqs(IrqSet& set);

  // Raises |vector| of |index|. INTx: if masked, records it pending and does
  // not signal; else signals and masks (automask). Others signal the assigned
  // eventfd, if any. Interrupts of a mode that is not enabled are dropped.
  void Trigger(uint32_t index, uint32_t vector);

  // INTx only; false for other indices.
  bool IsMasked(uint32_t index, uint32_t vector) const;
  bool Pending(uint32_t index, uint32_t vector) const;

  // Unmasks INTx; a pending interrupt is then delivered (and masks again).
  void UnmaskIntx();

  // Drops every eventfd and the resample Virqfd, for close and reset.
  void DisableAll();

 private:
  enum class Mode { kNone, kIntx, kMsi, kMsix };

  Result<void> SetIntx(IrqSet& set, Virqfd& old_resample) UMDEV_REQUIRES(mu_);
  Result<void> SetMsi(IrqSet& set, Mode mode) UMDEV_REQUIRES(mu_);
  Result<void> SetSingle(IrqSet& set) UMDEV_REQUIRES(mu_);
  void UnmaskIntxLocked() UMDEV_REQUIRES(mu_);
  void DisableAllLocked(Virqfd& old_resample) UMDEV_REQUIRES(mu_);

  const std::array<uint32_t, VFIO_PCI_NUM_IRQS> counts_;
  VirqfdLoop* const resample_loop_;

  mutable Mutex mu_;
  Mode mode_ UMDEV_GUARDED_BY(mu_) = Mode::kNone;
  // Trigger eventfds per index, |counts_[index]| entries; invalid = unassigned.
  std::array<std::vector<UniqueFd>, VFIO_PCI_NUM_IRQS> triggers_ UMDEV_GUARDED_BY(mu_);
  bool intx_masked_ UMDEV_GUARDED_BY(mu_) = false;
  bool intx_pending_ UMDEV_GUARDED_BY(mu_) = false;
  Virqfd intx_resample_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev::irq
