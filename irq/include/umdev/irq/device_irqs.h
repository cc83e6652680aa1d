// DeviceIrqs: a device's VFIO interrupt state (vfio-pci SET_IRQS semantics) over eventfds.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
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
//
// MSI-X vectors are maskable one by one (GET_IRQ_INFO reports MASKABLE, which
// vfio-user clients use to mask vectors instead of tearing the index down):
// a masked vector's interrupt sets its bit in the Pending Bit Array instead
// of signalling, and unmasking a pending vector delivers it and clears the bit.
// Enabling MSI-X starts with every vector unmasked and no bit pending;
// disabling it discards both, so the PBA reads 0 while MSI-X is off.
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
  // ENOTTY for combinations not implemented (MSI/ERR/REQ mask and unmask,
  // INTx and MSI-X mask by eventfd, MSI-X unmask by eventfd); Virqfd errors
  // for a resample fd. MSI-X MASK/UNMASK with DATA_NONE or DATA_BOOL act on
  // vectors [start, start + count) and need MSI-X enabled (else EINVAL).
  // DATA_NONE|ACTION_TRIGGER with count 0 disables the index (a no-op if it
  // is not enabled). A loopback fire (TRIGGER with NONE or BOOL) signals the
  // eventfd without masking, as vfio_send_intx_eventfd() does; for MSI-X it
  // ignores the vector's mask, as the kernel's loopback does.
  Result<void> SetIrqs(IrqSet& set);

  // Raises |vector| of |index|. INTx: if masked, records it pending and does
  // not signal; else signals and masks (automask). MSI-X: if the vector is
  // masked, sets its pending bit (whether or not an eventfd is assigned);
  // else signals. Others signal the assigned eventfd, if any. Interrupts of a
  // mode that is not enabled are dropped.
  void Trigger(uint32_t index, uint32_t vector);

  // A level-triggered INTx line (PCI INTx# is level-sensitive): the device
  // asserts it until the guest acknowledges in a device register. Asserting
  // a deasserted line raises it like Trigger(); while it stays asserted,
  // every unmask (DATA_NONE/BOOL, the resample eventfd, UnmaskIntx) delivers
  // it again, and enabling INTx delivers it at once. Deasserting drops an
  // undelivered (pending) INTx. The level is device state: DisableAll() and
  // disabling INTx keep it.
  void SetIntxLevel(bool asserted);

  // The enabled interrupt mode: VFIO_PCI_{INTX,MSI,MSIX}_IRQ_INDEX, or
  // nullopt when none is.
  std::optional<uint32_t> EnabledIndex() const;

  // INTx and MSI-X; false for other indices and out-of-range vectors.
  bool IsMasked(uint32_t index, uint32_t vector) const;
  bool Pending(uint32_t index, uint32_t vector) const;

  // The MSI-X Pending Bit Array as a device exposes it in its PBA BAR range
  // (PCI Local Bus 3.0 §6.8.2.10): QWORD |word_index| holds the pending bits
  // of vectors 64 * word_index .. 64 * word_index + 63, bit n for vector
  // 64 * word_index + n. Bits past the last vector, and words past the
  // array, read 0; so does everything while MSI-X is disabled.
  uint64_t MsixPendingWord(uint32_t word_index) const;

  // Unmasks INTx; a pending interrupt is then delivered (and masks again).
  void UnmaskIntx();

  // Drops every eventfd and the resample Virqfd, for close and reset.
  void DisableAll();

 private:
  enum class Mode { kNone, kIntx, kMsi, kMsix };

  Result<void> SetIntx(IrqSet& set, Virqfd& old_resample) UMDEV_REQUIRES(mu_);
  Result<void> SetMsi(IrqSet& set, Mode mode) UMDEV_REQUIRES(mu_);
  Result<void> MaskMsix(IrqSet& set) UMDEV_REQUIRES(mu_);
  void ClearMsixVectorState() UMDEV_REQUIRES(mu_);
  Result<void> SetSingle(IrqSet& set) UMDEV_REQUIRES(mu_);
  void UnmaskIntxLocked() UMDEV_REQUIRES(mu_);
  void RaiseIntxLocked() UMDEV_REQUIRES(mu_);
  void DisableAllLocked(Virqfd& old_resample) UMDEV_REQUIRES(mu_);

  const std::array<uint32_t, VFIO_PCI_NUM_IRQS> counts_;
  VirqfdLoop* const resample_loop_;

  mutable Mutex mu_;
  Mode mode_ UMDEV_GUARDED_BY(mu_) = Mode::kNone;
  // Trigger eventfds per index, |counts_[index]| entries; invalid = unassigned.
  std::array<std::vector<UniqueFd>, VFIO_PCI_NUM_IRQS> triggers_ UMDEV_GUARDED_BY(mu_);
  bool intx_masked_ UMDEV_GUARDED_BY(mu_) = false;
  bool intx_pending_ UMDEV_GUARDED_BY(mu_) = false;
  bool intx_level_ UMDEV_GUARDED_BY(mu_) = false;
  Virqfd intx_resample_ UMDEV_GUARDED_BY(mu_);
  // Per MSI-X vector, |counts_[VFIO_PCI_MSIX_IRQ_INDEX]| entries each.
  std::vector<bool> msix_masked_ UMDEV_GUARDED_BY(mu_);
  std::vector<bool> msix_pending_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev::irq
