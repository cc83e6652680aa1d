// DeviceIrqs: SET_IRQS semantics of drivers/vfio/pci/vfio_pci_intrs.c over eventfds.
#include "umdev/irq/device_irqs.h"

#include "umdev/common/eventfd.h"

#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

namespace umdev::irq {
namespace {

constexpr uint32_t kDataMask = VFIO_IRQ_SET_DATA_TYPE_MASK;
constexpr uint32_t kActionMask = VFIO_IRQ_SET_ACTION_TYPE_MASK;

// The client owns the other end: the write never blocks (see SignalEventFd).
void Signal(const UniqueFd& fd) { SignalEventFd(fd.get()); }

std::string Context(const IrqSet& set, std::string_view why) {
  return fmt::format("set irqs index {} start {} count {}: {}", set.index, set.start, set.count,
                     why);
}

// DATA_NONE fires every vector in the range; DATA_BOOL those set true.
bool Selected(const IrqSet& set, uint32_t i) {
  return (set.flags & kDataMask) == VFIO_IRQ_SET_DATA_NONE || set.bools[i] != 0;
}

}  // namespace

DeviceIrqs::DeviceIrqs(IrqCounts counts, VirqfdLoop* resample_loop)
    : counts_{counts.intx, counts.msi, counts.msix, counts.err, counts.req},
      resample_loop_(resample_loop) {
  MutexLock lock(mu_);
  for (size_t i = 0; i < counts_.size(); ++i) triggers_[i].resize(counts_[i]);
  msix_masked_.resize(counts_[VFIO_PCI_MSIX_IRQ_INDEX]);
  msix_pending_.resize(counts_[VFIO_PCI_MSIX_IRQ_INDEX]);
}

DeviceIrqs::~DeviceIrqs() { DisableAll(); }

IrqInfo DeviceIrqs::Info(uint32_t index) const {
  if (index >= counts_.size() || counts_[index] == 0) return {};
  IrqInfo info{.flags = VFIO_IRQ_INFO_EVENTFD, .count = counts_[index]};
  if (index == VFIO_PCI_INTX_IRQ_INDEX) {
    info.flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
  } else if (index == VFIO_PCI_MSI_IRQ_INDEX) {
    info.flags |= VFIO_IRQ_INFO_NORESIZE;
  } else if (index == VFIO_PCI_MSIX_IRQ_INDEX) {
    // vfio-pci's NORESIZE, plus per-vector masking (which vfio-pci lacks).
    info.flags |= VFIO_IRQ_INFO_NORESIZE | VFIO_IRQ_INFO_MASKABLE;
  }
  return info;
}

Result<void> DeviceIrqs::SetIrqs(IrqSet& set) {
  if (set.index >= counts_.size() || counts_[set.index] == 0) {
    return Fail(EINVAL, Context(set, "unsupported index"));
  }
  Virqfd old_resample;  // Destroyed after mu_ is released: it waits for its callback.
  MutexLock lock(mu_);
  switch (set.index) {
    case VFIO_PCI_INTX_IRQ_INDEX:
      return SetIntx(set, old_resample);
    case VFIO_PCI_MSI_IRQ_INDEX:
      return SetMsi(set, Mode::kMsi);
    case VFIO_PCI_MSIX_IRQ_INDEX:
      return SetMsi(set, Mode::kMsix);
    default:
      return SetSingle(set);
  }
}

Result<void> DeviceIrqs::SetIntx(IrqSet& set, Virqfd& old_resample) {
  const uint32_t data = set.flags & kDataMask;
  const bool enabled = mode_ == Mode::kIntx;
  switch (set.flags & kActionMask) {
    case VFIO_IRQ_SET_ACTION_MASK:
      if (data == VFIO_IRQ_SET_DATA_EVENTFD) return Fail(ENOTTY, Context(set, "mask by eventfd"));
      if (!enabled) return Fail(EINVAL, Context(set, "INTx is not enabled"));
      if (Selected(set, 0)) intx_masked_ = true;
      return {};
    case VFIO_IRQ_SET_ACTION_UNMASK:
      if (!enabled) return Fail(EINVAL, Context(set, "INTx is not enabled"));
      if (data != VFIO_IRQ_SET_DATA_EVENTFD) {
        if (Selected(set, 0)) UnmaskIntxLocked();
        return {};
      }
      old_resample = std::move(intx_resample_);
      if (!set.fds[0]) return {};  // De-assign the resample eventfd.
      if (resample_loop_ == nullptr) return Fail(ENOTTY, Context(set, "no resample loop"));
      {
        auto watched = resample_loop_->Watch(std::move(set.fds[0]), [this] { UnmaskIntx(); });
        if (!watched) return std::unexpected(Wrap(std::move(watched).error(), Context(set, "resample eventfd")));
        intx_resample_ = std::move(*watched);
      }
      return {};
    default:  // ACTION_TRIGGER
      break;
  }
  if (data == VFIO_IRQ_SET_DATA_NONE && set.count == 0) {
    if (enabled) DisableAllLocked(old_resample);
    return {};
  }
  if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
    if (mode_ != Mode::kNone && !enabled) {
      return Fail(EINVAL, Context(set, "MSI or MSI-X is enabled"));
    }
    if (!set.fds[0]) {
      if (enabled) DisableAllLocked(old_resample);
      return {};
    }
    triggers_[VFIO_PCI_INTX_IRQ_INDEX][0] = std::move(set.fds[0]);
    if (!enabled) {
      mode_ = Mode::kIntx;
      intx_masked_ = false;
      intx_pending_ = false;
      if (intx_level_) RaiseIntxLocked();  // An asserted line fires once enabled.
    }
    return {};
  }
  if (!enabled) return Fail(EINVAL, Context(set, "INTx is not enabled"));
  if (Selected(set, 0)) Signal(triggers_[VFIO_PCI_INTX_IRQ_INDEX][0]);
  return {};
}

Result<void> DeviceIrqs::SetMsi(IrqSet& set, Mode mode) {
  const uint32_t action = set.flags & kActionMask;
  const uint32_t data = set.flags & kDataMask;
  if (action != VFIO_IRQ_SET_ACTION_TRIGGER) {
    if (mode == Mode::kMsix) return MaskMsix(set);
    return Fail(ENOTTY, Context(set, "MSI cannot be masked"));
  }
  auto& fds = triggers_[set.index];
  const bool enabled = mode_ == mode;
  if (data == VFIO_IRQ_SET_DATA_NONE && set.count == 0) {
    if (enabled) {
      for (auto& fd : fds) fd.Reset();
      mode_ = Mode::kNone;
      // The vectors are torn down: their pending messages go with them.
      if (mode == Mode::kMsix) ClearMsixVectorState();
    }
    return {};
  }
  if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
    if (mode_ != Mode::kNone && !enabled) {
      return Fail(EINVAL, Context(set, "another interrupt mode is enabled"));
    }
    for (uint32_t i = 0; i < set.count; ++i) fds[set.start + i] = std::move(set.fds[i]);
    // Re-assigning vectors of an enabled index keeps their mask and pending
    // state; a fresh enable starts from the cleared state disable left.
    mode_ = mode;
    return {};
  }
  if (!enabled) return Fail(EINVAL, Context(set, "the interrupt mode is not enabled"));
  for (uint32_t i = 0; i < set.count; ++i) {
    if (Selected(set, i)) Signal(fds[set.start + i]);
  }
  return {};
}

Result<void> DeviceIrqs::MaskMsix(IrqSet& set) {
  const uint32_t data = set.flags & kDataMask;
  const bool mask = (set.flags & kActionMask) == VFIO_IRQ_SET_ACTION_MASK;
  if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
    return Fail(ENOTTY, Context(set, "MSI-X cannot be masked by eventfd"));
  }
  if (mode_ != Mode::kMsix) return Fail(EINVAL, Context(set, "MSI-X is not enabled"));
  auto& fds = triggers_[VFIO_PCI_MSIX_IRQ_INDEX];
  for (uint32_t i = 0; i < set.count; ++i) {
    if (!Selected(set, i)) continue;
    const uint32_t vector = set.start + i;
    if (mask) {
      msix_masked_[vector] = true;
      continue;
    }
    msix_masked_[vector] = false;
    if (msix_pending_[vector]) {
      msix_pending_[vector] = false;
      Signal(fds[vector]);
    }
  }
  return {};
}

void DeviceIrqs::ClearMsixVectorState() {
  std::fill(msix_masked_.begin(), msix_masked_.end(), false);
  std::fill(msix_pending_.begin(), msix_pending_.end(), false);
}

Result<void> DeviceIrqs::SetSingle(IrqSet& set) {
  const uint32_t data = set.flags & kDataMask;
  if ((set.flags & kActionMask) != VFIO_IRQ_SET_ACTION_TRIGGER) {
    return Fail(ENOTTY, Context(set, "ERR and REQ cannot be masked"));
  }
  UniqueFd& fd = triggers_[set.index][0];
  if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
    fd = std::move(set.fds[0]);  // An invalid fd de-assigns.
  } else if (data == VFIO_IRQ_SET_DATA_NONE && set.count == 0) {
    fd.Reset();
  } else if (Selected(set, 0)) {
    Signal(fd);
  }
  return {};
}

void DeviceIrqs::Trigger(uint32_t index, uint32_t vector) {
  MutexLock lock(mu_);
  if (index >= counts_.size() || vector >= counts_[index]) return;
  switch (index) {
    case VFIO_PCI_INTX_IRQ_INDEX:
      RaiseIntxLocked();
      return;
    case VFIO_PCI_MSI_IRQ_INDEX:
      if (mode_ == Mode::kMsi) Signal(triggers_[index][vector]);
      return;
    case VFIO_PCI_MSIX_IRQ_INDEX:
      if (mode_ != Mode::kMsix) return;
      if (msix_masked_[vector]) {
        msix_pending_[vector] = true;
        return;
      }
      Signal(triggers_[index][vector]);
      return;
    default:
      Signal(triggers_[index][vector]);
      return;
  }
}

bool DeviceIrqs::IsMasked(uint32_t index, uint32_t vector) const {
  MutexLock lock(mu_);
  if (index == VFIO_PCI_MSIX_IRQ_INDEX) {
    return vector < msix_masked_.size() && msix_masked_[vector];
  }
  return index == VFIO_PCI_INTX_IRQ_INDEX && vector == 0 && intx_masked_;
}

bool DeviceIrqs::Pending(uint32_t index, uint32_t vector) const {
  MutexLock lock(mu_);
  if (index == VFIO_PCI_MSIX_IRQ_INDEX) {
    return vector < msix_pending_.size() && msix_pending_[vector];
  }
  return index == VFIO_PCI_INTX_IRQ_INDEX && vector == 0 && intx_pending_;
}

uint64_t DeviceIrqs::MsixPendingWord(uint32_t word_index) const {
  MutexLock lock(mu_);
  uint64_t word = 0;
  const size_t first = size_t{word_index} * 64;
  for (size_t bit = 0; bit < 64 && first + bit < msix_pending_.size(); ++bit) {
    if (msix_pending_[first + bit]) word |= uint64_t{1} << bit;
  }
  return word;
}

void DeviceIrqs::UnmaskIntx() {
  MutexLock lock(mu_);
  if (mode_ == Mode::kIntx) UnmaskIntxLocked();
}

void DeviceIrqs::RaiseIntxLocked() {
  if (mode_ != Mode::kIntx) return;
  if (intx_masked_) {
    intx_pending_ = true;
    return;
  }
  intx_masked_ = true;
  Signal(triggers_[VFIO_PCI_INTX_IRQ_INDEX][0]);
}

void DeviceIrqs::UnmaskIntxLocked() {
  intx_masked_ = false;
  if (!intx_pending_ && !intx_level_) return;
  // The line is still asserted: deliver it now, masked again like a fresh one.
  intx_pending_ = false;
  intx_masked_ = true;
  Signal(triggers_[VFIO_PCI_INTX_IRQ_INDEX][0]);
}

void DeviceIrqs::SetIntxLevel(bool asserted) {
  MutexLock lock(mu_);
  if (!asserted) {
    intx_level_ = false;
    intx_pending_ = false;
    return;
  }
  if (intx_level_) return;  // No new edge: it was delivered or is pending.
  intx_level_ = true;
  RaiseIntxLocked();
}

std::optional<uint32_t> DeviceIrqs::EnabledIndex() const {
  MutexLock lock(mu_);
  switch (mode_) {
    case Mode::kIntx:
      return VFIO_PCI_INTX_IRQ_INDEX;
    case Mode::kMsi:
      return VFIO_PCI_MSI_IRQ_INDEX;
    case Mode::kMsix:
      return VFIO_PCI_MSIX_IRQ_INDEX;
    case Mode::kNone:
      break;
  }
  return std::nullopt;
}

void DeviceIrqs::DisableAll() {
  Virqfd old_resample;
  MutexLock lock(mu_);
  DisableAllLocked(old_resample);
}

void DeviceIrqs::DisableAllLocked(Virqfd& old_resample) {
  for (auto& fds : triggers_) {
    for (auto& fd : fds) fd.Reset();
  }
  mode_ = Mode::kNone;
  intx_masked_ = false;
  intx_pending_ = false;
  ClearMsixVectorState();
  old_resample = std::move(intx_resample_);
}

}  // namespace umdev::irq
