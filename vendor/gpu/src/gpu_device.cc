// GpuDevice: configuration space, BAR0 registers, BAR2, interrupts, reset.
#include "umdev/vendor/gpu/gpu_device.h"

#include <linux/pci_regs.h>

#include <bit>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "umdev/vendor/gpu/guest_pin_cache.h"
#include "umdev/mdev_core/dma.h"

namespace umdev::vendor::gpu {
namespace {

using namespace regs;  // NOLINT: the register map is this file's vocabulary.

uint64_t LoadLe(std::span<const std::byte> bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size(); ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return value;
}

void StoreLe(uint64_t value, std::span<std::byte> out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(value >> (8 * i));
}

bool InRange(uint64_t offset, size_t size, uint64_t region_size) {
  return size > 0 && offset <= region_size && size <= region_size - offset;
}

std::unexpected<Error> BadAccess(uint32_t index, uint64_t offset, size_t size) {
  return Fail(EINVAL, fmt::format("gpu: region {} offset {:#x} size {}: bad access", index,
                                  offset, size));
}

uint64_t Bar2SizeFor(uint64_t slice_size) {
  return std::max<uint64_t>(std::bit_ceil(slice_size), 4096);
}

}  // namespace

GpuDevice::GpuDevice(GpuDeviceOptions options, std::unique_ptr<Slice> slice, DmaAccess& dma,
                     QueueRunner& runner, irq::VirqfdLoop* resample_loop,
                     std::function<void()> on_destroy)
    : options_(options),
      on_destroy_(std::move(on_destroy)),
      slice_(std::move(slice)),
      bar2_size_(Bar2SizeFor(slice_->size())),
      dma_(dma),
      irqs_(irq::IrqCounts{.intx = 1, .msi = 0, .msix = kMsixVectors, .err = 0, .req = 1},
            resample_loop),
      config_(PciHeaderSpec{.vendor_id = options.vendor_id,
                            .device_id = options.device_id,
                            .subsystem_vendor_id = options.vendor_id,
                            .subsystem_id = options.device_id,
                            .revision_id = 1,
                            .base_class = kClassAccelerator},
              PciInterruptPin::kIntA) {
  {
    MutexLock lock(mu_);
    // Fixed inputs: a failure is a bug here, caught by the tests that read
    // the capabilities and BAR sizes back.
    (void)config_.DefineBar(0, {.type = PciBarType::kMem32, .size = kBar0Size});
    (void)config_.DefineBar(
        2, {.type = PciBarType::kMem64, .size = bar2_size_, .prefetchable = true});
    (void)config_.AddPowerManagement();
    (void)config_.AddMsix({.table_size = kMsixVectors,
                           .table_bar = 0,
                           .table_offset = kMsixTableOffset,
                           .pba_bar = 0,
                           .pba_offset = kMsixPbaOffset});
    (void)config_.AddPciExpress();
  }
  CreateDoorbellPage();
  {
    MutexLock lock(mu_);
    if (doorbell_page_.valid()) {
      (void)config_.DefineBar(kDoorbellBar,
                              {.type = PciBarType::kMem32, .size = kDoorbellPageSize});
    }
    ResetRegisters();
  }
  {
    MutexLock exec(exec_mu_);
    pin_cache_ = std::make_unique<GuestPinCache>(dma_, options_.pin_cache_pages);
    dirty_pages_.assign((slice_->size() + kPageSize - 1) / kPageSize, false);
  }
  if (auto attached = runner.Attach(this, options_.compute_share_permille); attached) {
    attachment_ = std::move(*attached);
  } else {
    attach_error_ = attached.error();
  }
  if (doorbell_page_.valid() && attachment_) {
    auto* page = reinterpret_cast<uint32_t*>(doorbell_page_.data());
    doorbell_watch_ = options_.doorbell_poller->Add(
        DoorbellWords{.tail = page + kDbTail / 4, .polling = page + kDbPolling / 4},
        [this] { attachment_->Kick(); });
  }
}

GpuDevice::~GpuDevice() {
  {
    // Disabled: neither a RunOne still in progress nor anything else
    // activates the doorbell page from here on (both check the queue's mode
    // under mu_), so the watch can go, and with it the ring callback that
    // kicks the attachment; then the attachment.
    MutexLock lock(mu_);
    queue_ctrl_ = 0;
  }
  doorbell_watch_.reset();
  attachment_.reset();  // No RunOne() runs after this.
  {
    MutexLock exec(exec_mu_);
    pin_cache_->Clear();
  }
  irqs_.DisableAll();   // Before the parent's loop may go with on_destroy_.
  slice_.reset();       // The engine has the memory back before the budget.
  if (on_destroy_) on_destroy_();
}

void GpuDevice::ResetRegisters() {
  msix_table_.assign(kMsixPbaOffset - kMsixTableOffset, std::byte{0});
  queue_base_ = 0;
  queue_size_ = 0;
  queue_ctrl_ = 0;
  head_ = tail_ = 0;
  if (doorbell_page_.valid()) StoreDoorbellTail(0);
  if (doorbell_watch_) doorbell_watch_->Deactivate();
  fence_done_ = 0;
  int_status_ = 0;
  int_mask_ = 0;
  error_code_ = error_index_ = 0;
  error_skippable_ = false;
  ++generation_;
  DropPrefetch();
  UpdateIntxLine();
  cv_.NotifyAll();
}

void GpuDevice::ResetFunction(bool config_too) {
  // exec_mu_ waits for the slice operation in flight; the generation bump
  // makes that entry's remaining steps fail and its completion vanish.
  MutexLock exec(exec_mu_);
  pin_cache_->Clear();  // The next tenant pins its own pages.
  {
    MutexLock lock(mu_);
    ResetRegisters();
    if (config_too) config_.Reset();
  }
  if (auto zeroed = slice_->Fill(0, slice_->size(), 0); !zeroed) {
    // Only a lost device fails here, and then nothing of the slice is
    // readable either; the log says why the next tenant's commands fail.
    spdlog::error("gpu: zeroing the slice on reset: {}", zeroed.error().Describe());
  }
}

void GpuDevice::Close() {
  DropMigration();  // The next user finds a running device.
  runaway_kernels_ = 0;  // A new tenant starts with a clean record.
  irqs_.DisableAll();
  ResetFunction(false);
}

DeviceInfo GpuDevice::GetInfo() {
  return DeviceInfo{.flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
                    .num_regions = VFIO_PCI_NUM_REGIONS,
                    .num_irqs = VFIO_PCI_NUM_IRQS};
}

Result<RegionInfo> GpuDevice::GetRegionInfo(uint32_t index) {
  constexpr uint32_t kRw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
  switch (index) {
    case VFIO_PCI_BAR0_REGION_INDEX:
      return RegionInfo{.flags = kRw, .size = kBar0Size};
    case VFIO_PCI_BAR2_REGION_INDEX: {
      RegionInfo info{.flags = kRw, .size = bar2_size_};
      if (slice_->memory_fd() >= 0) {
        info.flags |= VFIO_REGION_INFO_FLAG_MMAP;
        info.sparse_mmap = {{.offset = 0, .size = slice_->size()}};
        info.mmap_fd = slice_->memory_fd();
        info.mmap_offset = 0;
      }
      return info;
    }
    case VFIO_PCI_CONFIG_REGION_INDEX: {
      MutexLock lock(mu_);
      return RegionInfo{.flags = kRw, .size = config_.size()};
    }
    case VFIO_PCI_BAR4_REGION_INDEX:
      if (!doorbell_page_.valid()) return RegionInfo{};
      return RegionInfo{.flags = kRw | VFIO_REGION_INFO_FLAG_MMAP,
                        .size = kDoorbellPageSize,
                        .sparse_mmap = {{.offset = 0, .size = kDoorbellPageSize}},
                        .mmap_fd = doorbell_fd_.get(),
                        .mmap_offset = 0};
    case VFIO_PCI_BAR1_REGION_INDEX:
    case VFIO_PCI_BAR3_REGION_INDEX:
    case VFIO_PCI_BAR5_REGION_INDEX:
    case VFIO_PCI_ROM_REGION_INDEX:
    case VFIO_PCI_VGA_REGION_INDEX:
      return RegionInfo{};
    default:
      return Fail(EINVAL, fmt::format("gpu: no region {}", index));
  }
}

Result<size_t> GpuDevice::RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) {
  switch (index) {
    case VFIO_PCI_BAR0_REGION_INDEX:
      return Bar0Access(offset, out, {});
    case VFIO_PCI_BAR2_REGION_INDEX:
      return Bar2Access(offset, out, {});
    case VFIO_PCI_BAR4_REGION_INDEX:
      return DoorbellAccess(offset, out, {});
    case VFIO_PCI_CONFIG_REGION_INDEX: {
      MutexLock lock(mu_);
      if (!InRange(offset, out.size(), config_.size())) {
        return BadAccess(index, offset, out.size());
      }
      UMDEV_TRY(config_.Read(offset, out));
      return out.size();
    }
    default:
      return BadAccess(index, offset, out.size());
  }
}

Result<size_t> GpuDevice::RegionWrite(uint32_t index, uint64_t offset,
                                      std::span<const std::byte> data) {
  switch (index) {
    case VFIO_PCI_BAR0_REGION_INDEX:
      return Bar0Access(offset, {}, data);
    case VFIO_PCI_BAR2_REGION_INDEX:
      return Bar2Access(offset, {}, data);
    case VFIO_PCI_BAR4_REGION_INDEX:
      return DoorbellAccess(offset, {}, data);
    case VFIO_PCI_CONFIG_REGION_INDEX: {
      MutexLock lock(mu_);
      if (!InRange(offset, data.size(), config_.size())) {
        return BadAccess(index, offset, data.size());
      }
      UMDEV_TRY(config_.Write(offset, data));
      UpdateIntxLine();  // Command.INTx Disable may have changed.
      return data.size();
    }
    default:
      return BadAccess(index, offset, data.size());
  }
}

Result<size_t> GpuDevice::Bar0Access(uint64_t offset, std::span<std::byte> read,
                                     std::span<const std::byte> write) {
  const bool is_read = write.empty();
  const size_t size = is_read ? read.size() : write.size();
  constexpr uint32_t kBar0 = VFIO_PCI_BAR0_REGION_INDEX;
  if (offset >= kMsixTableOffset) {
    if (!InRange(offset, size, kBar0Size)) return BadAccess(kBar0, offset, size);
    MutexLock lock(mu_);
    for (size_t i = 0; i < size; ++i) {
      const uint64_t at = offset + i;
      if (at < kMsixPbaOffset) {
        if (is_read) {
          read[i] = msix_table_[at - kMsixTableOffset];
        } else {
          msix_table_[at - kMsixTableOffset] = write[i];
        }
      } else if (is_read) {  // The PBA is read-only (§6.8.2.10).
        const uint64_t pba = at - kMsixPbaOffset;
        const uint64_t word = irqs_.MsixPendingWord(static_cast<uint32_t>(pba / 8));
        read[i] = static_cast<std::byte>(word >> (8 * (pba % 8)));
      }
    }
    return size;
  }
  if ((size != 4 && size != 8) || offset % size != 0) return BadAccess(kBar0, offset, size);
  bool kick = false;
  bool reset = false;
  {
    MutexLock lock(mu_);
    for (size_t i = 0; i < size; i += 4) {
      const auto reg = static_cast<uint32_t>(offset + i);
      if (is_read) {
        StoreLe(ReadRegister(reg), read.subspan(i, 4));
      } else {
        kick |= WriteRegister(reg, static_cast<uint32_t>(LoadLe(write.subspan(i, 4))), reset);
      }
    }
  }
  if (reset) ResetFunction(false);
  if (kick && attachment_) attachment_->Kick();
  return size;
}

uint32_t GpuDevice::ReadRegister(uint32_t offset) const {
  const GpuDeviceStats& s = stats_;
  const auto busy = static_cast<uint64_t>(s.busy.count());
  switch (offset) {
    case kRegId: return kIdValue;
    case kRegVersion: return kVersionValue;
    case kRegCaps:
      return (options_.builtin_kernels_only ? kCapBuiltinOnly : kCapSpirv) |
             (slice_->memory_fd() >= 0 ? kCapMmap : 0) |
             (doorbell_page_.valid() ? kCapDoorbellPage : 0);
    case kRegComputeShare: return options_.compute_share_permille;
    case kRegMemSize: return static_cast<uint32_t>(slice_->size());
    case kRegMemSize + 4: return static_cast<uint32_t>(slice_->size() >> 32);
    case kRegQueueBase: return static_cast<uint32_t>(queue_base_);
    case kRegQueueBase + 4: return static_cast<uint32_t>(queue_base_ >> 32);
    case kRegQueueSize: return queue_size_;
    case kRegQueueCtrl: return queue_ctrl_;
    case kRegQueueHead: return head_;
    case kRegQueueTail: return TailNow();
    case kRegFenceDone: return static_cast<uint32_t>(fence_done_);
    case kRegFenceDone + 4: return static_cast<uint32_t>(fence_done_ >> 32);
    case kRegIntStatus: return int_status_;
    case kRegIntMask: return int_mask_;
    case kRegErrorCode: return error_code_;
    case kRegErrorIndex: return error_index_;
    case kRegStatBusyNs: return static_cast<uint32_t>(busy);
    case kRegStatBusyNs + 4: return static_cast<uint32_t>(busy >> 32);
    case kRegStatCommands: return static_cast<uint32_t>(s.commands);
    case kRegStatCommands + 4: return static_cast<uint32_t>(s.commands >> 32);
    case kRegStatBytes: return static_cast<uint32_t>(s.bytes);
    case kRegStatBytes + 4: return static_cast<uint32_t>(s.bytes >> 32);
    case kRegStatErrors: return static_cast<uint32_t>(s.errors);
    case kRegStatErrors + 4: return static_cast<uint32_t>(s.errors >> 32);
    default: return 0;  // Write-only and unlisted registers.
  }
}

bool GpuDevice::WriteRegister(uint32_t offset, uint32_t value, bool& reset) {
  switch (offset) {
    case kRegQueueBase:
      queue_base_ = (queue_base_ & ~uint64_t{0xffffffff}) | value;
      in_flight_.reset();
      DropPrefetch();
      return false;
    case kRegQueueBase + 4:
      queue_base_ = (queue_base_ & 0xffffffff) | (uint64_t{value} << 32);
      in_flight_.reset();
      DropPrefetch();
      return false;
    case kRegQueueSize:
      queue_size_ = value;
      in_flight_.reset();
      DropPrefetch();
      return false;
    case kRegQueueCtrl:
      in_flight_.reset();
      DropPrefetch();
      if ((value & kQueueEnable) == 0) {
        queue_ctrl_ = 0;
        if (doorbell_watch_) doorbell_watch_->Deactivate();
        cv_.NotifyAll();
        return false;
      }
      if ((queue_ctrl_ & kQueueEnable) != 0) return false;
      if (queue_base_ % kQueueAlign != 0 || queue_size_ < kMinQueueSize ||
          queue_size_ > kMaxQueueSize || !std::has_single_bit(queue_size_) ||
          ((value & kQueueDoorbellPage) != 0 && !doorbell_watch_)) {
        SetError(EINVAL, head_, false);
        return false;
      }
      queue_ctrl_ = value & (kQueueEnable | kQueueDoorbellPage);
      head_ = tail_ = 0;
      if (doorbell_page_.valid()) StoreDoorbellTail(0);
      return false;
    case kRegQueueTail:
      tail_ = value;
      if ((queue_ctrl_ & kQueueDoorbellPage) != 0) StoreDoorbellTail(value);
      return false;
    case kRegDoorbell:
      // Under a polled tail a trapped doorbell means the page was not
      // polled: poll it again for a while.
      if ((queue_ctrl_ & kQueueDoorbellPage) != 0) doorbell_watch_->Activate();
      return true;
    case kRegIntStatus:
      int_status_ &= ~value;
      UpdateIntxLine();
      return false;
    case kRegIntMask:
      int_mask_ = value & (kIntFence | kIntError);
      UpdateIntxLine();
      return false;
    case kRegErrorClear:
      if ((value & 1) == 0 || error_code_ == 0) return false;
      if (error_skippable_) ++head_;
      DropPrefetch();  // The guest may have rewritten what follows the failure.
      error_code_ = 0;
      error_index_ = 0;
      error_skippable_ = false;
      return true;
    case kRegReset:
      if ((value & 1) != 0) reset = true;
      return false;
    default:  // Read-only and unlisted registers.
      return false;
  }
}

Result<size_t> GpuDevice::Bar2Access(uint64_t offset, std::span<std::byte> read,
                                     std::span<const std::byte> write) {
  const bool is_read = write.empty();
  const size_t size = is_read ? read.size() : write.size();
  if (!InRange(offset, size, bar2_size_)) {
    return BadAccess(VFIO_PCI_BAR2_REGION_INDEX, offset, size);
  }
  // The part past the slice (power-of-two rounding) reads 0, drops writes.
  const uint64_t slice_size = slice_->size();
  const uint64_t in_slice =
      offset >= slice_size ? 0 : std::min<uint64_t>(size, slice_size - offset);
  if (is_read) std::memset(read.data(), 0, size);
  if (in_slice == 0) return size;
  MutexLock exec(exec_mu_);
  if (is_read) {
    UMDEV_TRY(slice_->Read(offset, read.first(in_slice)));
  } else {
    MarkSliceDirty(offset, in_slice);
    UMDEV_TRY(slice_->Write(offset, write.first(in_slice)));
  }
  return size;
}

Result<IrqInfo> GpuDevice::GetIrqInfo(uint32_t index) {
  if (index >= VFIO_PCI_NUM_IRQS) return Fail(EINVAL, fmt::format("gpu: no irq index {}", index));
  return irqs_.Info(index);
}

Result<void> GpuDevice::SetIrqs(IrqSet& set) {
  UMDEV_TRY(irqs_.SetIrqs(set));
  MutexLock lock(mu_);
  UpdateIntxLine();  // INTx applies only while MSI-X is off.
  return {};
}

void GpuDevice::Request(unsigned count) {
  (void)count;
  irqs_.Trigger(VFIO_PCI_REQ_IRQ_INDEX, 0);
}

Result<void> GpuDevice::Reset() {
  DropMigration();  // Any state, ERROR included, -> RUNNING (uapi).
  irqs_.DisableAll();
  ResetFunction(true);
  return {};
}

void GpuDevice::SetError(int code, uint32_t index, bool skippable) {
  DropPrefetch();
  if (error_code_ == 0) {
    error_code_ = static_cast<uint32_t>(code);
    error_index_ = index;
    error_skippable_ = skippable;
  }
  ++stats_.errors;
  RaiseCause(kIntError);
}

void GpuDevice::RaiseCause(uint32_t cause) {
  int_status_ |= cause;
  if ((int_mask_ & cause) == 0 && irqs_.EnabledIndex() == VFIO_PCI_MSIX_IRQ_INDEX) {
    irqs_.Trigger(VFIO_PCI_MSIX_IRQ_INDEX, cause == kIntFence ? kVectorFence : kVectorError);
  }
  UpdateIntxLine();
}

void GpuDevice::UpdateIntxLine() {
  const bool asserted = (int_status_ & ~int_mask_) != 0 &&
                        irqs_.EnabledIndex() != VFIO_PCI_MSIX_IRQ_INDEX;
  config_.UpdateStatus(PCI_STATUS_INTERRUPT, asserted);
  irqs_.SetIntxLevel(asserted && (config_.command() & PCI_COMMAND_INTX_DISABLE) == 0);
}

GpuDeviceStats GpuDevice::stats() const {
  MutexLock lock(mu_);
  return stats_;
}

std::vector<DeviceAttribute> GpuDevice::Attributes() {
  return {{.name = "busy_ns"},   {.name = "commands"}, {.name = "bytes"},
          {.name = "errors"},    {.name = "timeouts"},  {.name = "preempted"},
          {.name = "yielded"},   {.name = "throttled"}};
}

Result<std::string> GpuDevice::ReadAttribute(std::string_view name) {
  const GpuDeviceStats s = stats();
  if (name == "busy_ns") return std::to_string(s.busy.count());
  if (name == "commands") return std::to_string(s.commands);
  if (name == "bytes") return std::to_string(s.bytes);
  if (name == "errors") return std::to_string(s.errors);
  if (name == "timeouts") return std::to_string(runaway_kernels_.load());
  const QueueStats q = attachment_ ? attachment_->Stats() : QueueStats{};
  if (name == "preempted") return std::to_string(q.preempted);
  if (name == "yielded") return std::to_string(q.yielded);
  if (name == "throttled") return std::to_string(q.throttled);
  return Fail(ENOENT, "gpu: no attribute " + std::string(name));
}

bool GpuDevice::WaitIdle(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(mu_);
  while (running_ ||
         ((queue_ctrl_ & kQueueEnable) != 0 && error_code_ == 0 && head_ != TailNow())) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    cv_.WaitFor(mu_, deadline - now);
  }
  return true;
}

}  // namespace umdev::vendor::gpu
