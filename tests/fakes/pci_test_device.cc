// PciTestDevice: config space, BARs, interrupts and the DMA worker; and its parent driver.
#include "fakes/pci_test_device.h"

#include <linux/pci_regs.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace umdev::testing {
namespace {

using namespace pci_test;  // NOLINT: the register map is this file's vocabulary.

constexpr uint32_t kNumIrqs = VFIO_PCI_NUM_IRQS;
constexpr uint32_t kMsixPbaBytes = kBar2Size - kMsixPbaOffset;

PciHeaderSpec Header() {
  return PciHeaderSpec{.vendor_id = kVendorId,
                       .device_id = kDeviceId,
                       .subsystem_vendor_id = kSubsystemVendorId,
                       .subsystem_id = kSubsystemId,
                       .revision_id = kRevision,
                       .base_class = static_cast<uint8_t>(kClassCode >> 16),
                       .sub_class = static_cast<uint8_t>(kClassCode >> 8),
                       .prog_if = static_cast<uint8_t>(kClassCode)};
}

uint64_t LoadLe(std::span<const std::byte> bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  }
  return value;
}

void StoreLe(uint64_t value, std::span<std::byte> out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(value >> (8 * i));
}

// An access of [offset, offset + size) inside a region of |region_size| bytes.
bool InRange(uint64_t offset, size_t size, uint64_t region_size) {
  return size > 0 && offset <= region_size && size <= region_size - offset;
}

std::unexpected<Error> BadAccess(uint32_t index, uint64_t offset, size_t size) {
  return Fail(EINVAL, fmt::format("test_pci region {} offset {:#x} size {}: bad access", index,
                                  offset, size));
}

}  // namespace

Result<std::unique_ptr<PciTestDevice>> PciTestDevice::Create(Type type, DmaAccess& dma) {
  UMDEV_ASSIGN_OR_RETURN(irq::VirqfdLoop loop, irq::VirqfdLoop::Create());
  auto owned_loop = std::make_unique<irq::VirqfdLoop>(std::move(loop));
  UMDEV_TRY(owned_loop->Start());
  UniqueFd bar3_fd;
  Mapping bar3;
  if (type == Type::kMmap) {
    bar3_fd = UniqueFd(::memfd_create("umdev-test-pci-bar3", MFD_CLOEXEC));
    if (!bar3_fd) return FailErrno("test_pci: memfd_create for BAR3");
    if (::ftruncate(bar3_fd.get(), static_cast<off_t>(kBar3Size)) != 0) {
      return FailErrno("test_pci: size the BAR3 memfd");
    }
    UMDEV_ASSIGN_OR_RETURN(bar3, Mapping::Map(bar3_fd.get(), 0, kBar3Size,
                                              PROT_READ | PROT_WRITE, MAP_SHARED));
  }
  return std::unique_ptr<PciTestDevice>(
      new PciTestDevice(type, dma, std::move(owned_loop), std::move(bar3_fd), std::move(bar3)));
}

PciTestDevice::PciTestDevice(Type type, DmaAccess& dma, std::unique_ptr<irq::VirqfdLoop> loop,
                             UniqueFd bar3_fd, Mapping bar3)
    : type_(type),
      dma_(dma),
      resample_loop_(std::move(loop)),
      irqs_(irq::IrqCounts{.intx = 1, .msi = kMsiVectors, .msix = kMsixVectors, .err = 1,
                           .req = 1},
            resample_loop_.get()),
      bar3_fd_(std::move(bar3_fd)),
      bar3_(std::move(bar3)),
      config_(Header(), PciInterruptPin::kIntA) {
  BuildConfigSpace();
  {
    MutexLock lock(mu_);
    ResetRegisters();
  }
  worker_ = std::thread([this] { WorkerLoop(); });
}

void PciTestDevice::BuildConfigSpace() {
  MutexLock lock(mu_);
  // Fixed inputs: a failure here is a bug in this file, caught by its tests
  // (which check the capability offsets and BAR sizes read back).
  (void)config_.DefineBar(0, {.type = PciBarType::kMem32, .size = kBar0Size});
  (void)config_.DefineBar(1, {.type = PciBarType::kIo, .size = kBar1Size});
  (void)config_.DefineBar(2, {.type = PciBarType::kMem32, .size = kBar2Size});
  if (type_ == Type::kMmap) {
    (void)config_.DefineBar(3, {.type = PciBarType::kMem32, .size = kBar3Size});
  }
  (void)config_.AddPowerManagement();
  (void)config_.AddMsi({.vectors = kMsiVectors, .address_64bit = true});
  (void)config_.AddMsix({.table_size = kMsixVectors,
                         .table_bar = 2,
                         .table_offset = kMsixTableOffset,
                         .pba_bar = 2,
                         .pba_offset = kMsixPbaOffset});
}

PciTestDevice::~PciTestDevice() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
  worker_.join();
}

void PciTestDevice::ResetRegisters() {
  config_.Reset();
  scratch_ = 0;
  irq_status_ = 0;
  dma_addr_lo_ = dma_addr_hi_ = dma_len_ = dma_cmd_ = 0;
  dma_status_ = kDmaStatusIdle;
  dma_error_ = 0;
  dma_count_ = 0;
  buffer_.assign(kBufferSize, std::byte{0});
  bar1_.assign(kBar1Size, std::byte{0});
  msix_table_.assign(kMsixPbaOffset, std::byte{0});
  if (bar3_.valid()) std::memset(bar3_.data(), 0, bar3_.size());
  queued_.reset();
  ++generation_;
  UpdateIntxLine();
}

void PciTestDevice::Close() {
  irqs_.DisableAll();
  MutexLock lock(mu_);
  // The user's migration session ends with it (kernel: close resets to RUNNING).
  mig_state_ = VFIO_DEVICE_STATE_RUNNING;
  mig_out_.clear();
  mig_out_pos_ = 0;
  mig_in_.clear();
  cv_.NotifyAll();
}

DeviceInfo PciTestDevice::GetInfo() {
  return DeviceInfo{.flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
                    .num_regions = VFIO_PCI_NUM_REGIONS,
                    .num_irqs = kNumIrqs};
}

Result<RegionInfo> PciTestDevice::GetRegionInfo(uint32_t index) {
  constexpr uint32_t kRw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
  RegionInfo info;
  switch (index) {
    case VFIO_PCI_BAR0_REGION_INDEX:
      return RegionInfo{.flags = kRw, .size = kBar0Size};
    case VFIO_PCI_BAR1_REGION_INDEX:
      return RegionInfo{.flags = kRw, .size = kBar1Size};
    case VFIO_PCI_BAR2_REGION_INDEX:
      return RegionInfo{.flags = kRw, .size = kBar2Size};
    case VFIO_PCI_BAR3_REGION_INDEX:
      if (type_ != Type::kMmap) return info;
      info.flags = kRw | VFIO_REGION_INFO_FLAG_MMAP;
      info.size = kBar3Size;
      info.sparse_mmap = {{.offset = kBar3TrappedSize, .size = kBar3Size - kBar3TrappedSize}};
      info.mmap_fd = bar3_fd_.get();
      info.mmap_offset = 0;
      return info;
    case VFIO_PCI_CONFIG_REGION_INDEX:
      return RegionInfo{.flags = kRw, .size = kConfigSize};
    case VFIO_PCI_BAR4_REGION_INDEX:
    case VFIO_PCI_BAR5_REGION_INDEX:
    case VFIO_PCI_ROM_REGION_INDEX:
    case VFIO_PCI_VGA_REGION_INDEX:
      return info;
    default:
      return Fail(EINVAL, fmt::format("test_pci: no region {}", index));
  }
}

Result<size_t> PciTestDevice::RegionRead(uint32_t index, uint64_t offset,
                                         std::span<std::byte> out) {
  MutexLock lock(mu_);
  switch (index) {
    case VFIO_PCI_BAR0_REGION_INDEX:
      return Bar0Read(offset, out);
    case VFIO_PCI_BAR1_REGION_INDEX:
      if (!InRange(offset, out.size(), kBar1Size)) return BadAccess(index, offset, out.size());
      std::memcpy(out.data(), bar1_.data() + offset, out.size());
      return out.size();
    case VFIO_PCI_BAR2_REGION_INDEX:
      return Bar2Read(offset, out);
    case VFIO_PCI_BAR3_REGION_INDEX:
      if (!bar3_.valid() || !InRange(offset, out.size(), kBar3Size)) {
        return BadAccess(index, offset, out.size());
      }
      std::memcpy(out.data(), bar3_.data() + offset, out.size());
      return out.size();
    case VFIO_PCI_CONFIG_REGION_INDEX:
      if (!InRange(offset, out.size(), kConfigSize)) return BadAccess(index, offset, out.size());
      UMDEV_TRY(config_.Read(offset, out));
      return out.size();
    default:
      return BadAccess(index, offset, out.size());
  }
}

Result<size_t> PciTestDevice::RegionWrite(uint32_t index, uint64_t offset,
                                          std::span<const std::byte> data) {
  MutexLock lock(mu_);
  switch (index) {
    case VFIO_PCI_BAR0_REGION_INDEX:
      return Bar0Write(offset, data);
    case VFIO_PCI_BAR1_REGION_INDEX:
      if (!InRange(offset, data.size(), kBar1Size)) return BadAccess(index, offset, data.size());
      std::memcpy(bar1_.data() + offset, data.data(), data.size());
      return data.size();
    case VFIO_PCI_BAR2_REGION_INDEX:
      return Bar2Write(offset, data);
    case VFIO_PCI_BAR3_REGION_INDEX:
      if (!bar3_.valid() || !InRange(offset, data.size(), kBar3Size)) {
        return BadAccess(index, offset, data.size());
      }
      std::memcpy(bar3_.data() + offset, data.data(), data.size());
      return data.size();
    case VFIO_PCI_CONFIG_REGION_INDEX:
      if (!InRange(offset, data.size(), kConfigSize)) return BadAccess(index, offset, data.size());
      UMDEV_TRY(config_.Write(offset, data));
      UpdateIntxLine();  // Command.INTx Disable may have changed.
      return data.size();
    default:
      return BadAccess(index, offset, data.size());
  }
}

Result<size_t> PciTestDevice::Bar0Read(uint64_t offset, std::span<std::byte> out) {
  const size_t size = out.size();
  if (offset >= kBufferOffset) {
    if (!InRange(offset, size, kBar0Size) || (size != 1 && size != 2 && size != 4 && size != 8) ||
        offset % size != 0) {
      return BadAccess(VFIO_PCI_BAR0_REGION_INDEX, offset, size);
    }
    std::memcpy(out.data(), buffer_.data() + (offset - kBufferOffset), size);
    return size;
  }
  if (!InRange(offset, size, kRegsEnd) || (size != 4 && size != 8) || offset % size != 0) {
    return BadAccess(VFIO_PCI_BAR0_REGION_INDEX, offset, size);
  }
  for (size_t i = 0; i < size; i += 4) {
    StoreLe(ReadRegister(static_cast<uint32_t>(offset + i)), out.subspan(i, 4));
  }
  return size;
}

Result<size_t> PciTestDevice::Bar0Write(uint64_t offset, std::span<const std::byte> data) {
  const size_t size = data.size();
  if (offset >= kBufferOffset) {
    if (!InRange(offset, size, kBar0Size) || (size != 1 && size != 2 && size != 4 && size != 8) ||
        offset % size != 0) {
      return BadAccess(VFIO_PCI_BAR0_REGION_INDEX, offset, size);
    }
    std::memcpy(buffer_.data() + (offset - kBufferOffset), data.data(), size);
    return size;
  }
  if (!InRange(offset, size, kRegsEnd) || (size != 4 && size != 8) || offset % size != 0) {
    return BadAccess(VFIO_PCI_BAR0_REGION_INDEX, offset, size);
  }
  for (size_t i = 0; i < size; i += 4) {
    UMDEV_TRY(WriteRegister(static_cast<uint32_t>(offset + i),
                            static_cast<uint32_t>(LoadLe(data.subspan(i, 4)))));
  }
  return size;
}

uint32_t PciTestDevice::ReadRegister(uint32_t offset) const {
  switch (offset) {
    case kRegId:
      return kIdValue;
    case kRegScratch:
      return scratch_;
    case kRegIrqStatus:
      return irq_status_;
    case kRegDmaAddrLo:
      return dma_addr_lo_;
    case kRegDmaAddrHi:
      return dma_addr_hi_;
    case kRegDmaLen:
      return dma_len_;
    case kRegDmaCmd:
      return dma_cmd_;
    case kRegDmaStatus:
      return dma_status_;
    case kRegDmaError:
      return dma_error_;
    case kRegDmaCount:
      return dma_count_;
    default:  // IRQ_RAISE is write-only.
      return 0;
  }
}

Result<void> PciTestDevice::WriteRegister(uint32_t offset, uint32_t value) {
  switch (offset) {
    case kRegScratch:
      scratch_ = value;
      break;
    case kRegIrqRaise:
      Raise(value);
      break;
    case kRegIrqStatus:
      irq_status_ &= ~value;
      UpdateIntxLine();
      break;
    case kRegDmaAddrLo:
      dma_addr_lo_ = value;
      break;
    case kRegDmaAddrHi:
      dma_addr_hi_ = value;
      break;
    case kRegDmaLen:
      dma_len_ = value;
      break;
    case kRegDmaCmd:
      if (dma_status_ == kDmaStatusBusy) {
        return Fail(EBUSY, "test_pci: DMA_CMD while a transfer is busy");
      }
      dma_cmd_ = value;
      dma_status_ = kDmaStatusBusy;
      QueueDma();
      break;
    default:  // ID, DMA_STATUS, DMA_ERROR and DMA_COUNT are read-only.
      break;
  }
  return {};
}

Result<size_t> PciTestDevice::Bar2Read(uint64_t offset, std::span<std::byte> out) {
  if (!InRange(offset, out.size(), kBar2Size)) {
    return BadAccess(VFIO_PCI_BAR2_REGION_INDEX, offset, out.size());
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const uint64_t at = offset + i;
    if (at < kMsixPbaOffset) {
      out[i] = msix_table_[at];
      continue;
    }
    const uint64_t pba = at - kMsixPbaOffset;
    const uint64_t word = irqs_.MsixPendingWord(static_cast<uint32_t>(pba / 8));
    out[i] = static_cast<std::byte>(word >> (8 * (pba % 8)));
  }
  return out.size();
}

Result<size_t> PciTestDevice::Bar2Write(uint64_t offset, std::span<const std::byte> data) {
  if (!InRange(offset, data.size(), kBar2Size)) {
    return BadAccess(VFIO_PCI_BAR2_REGION_INDEX, offset, data.size());
  }
  static_assert(kMsixPbaBytes > 0);
  if (offset < kMsixPbaOffset) {
    const size_t table_bytes = std::min<uint64_t>(data.size(), kMsixPbaOffset - offset);
    std::memcpy(msix_table_.data() + offset, data.data(), table_bytes);
  }
  return data.size();  // The PBA part is read-only: dropped.
}

Result<IrqInfo> PciTestDevice::GetIrqInfo(uint32_t index) {
  if (index >= kNumIrqs) return Fail(EINVAL, fmt::format("test_pci: no irq index {}", index));
  return irqs_.Info(index);
}

Result<void> PciTestDevice::SetIrqs(IrqSet& set) { return irqs_.SetIrqs(set); }

void PciTestDevice::Request(unsigned count) {
  (void)count;
  irqs_.Trigger(VFIO_PCI_REQ_IRQ_INDEX, 0);
}

Result<void> PciTestDevice::Reset() {
  irqs_.DisableAll();
  MutexLock lock(mu_);
  ResetRegisters();
  if (mig_state_ == VFIO_DEVICE_STATE_ERROR) mig_state_ = VFIO_DEVICE_STATE_RUNNING;
  cv_.NotifyAll();
  return {};
}

void PciTestDevice::Raise(uint32_t vector) {
  const std::optional<uint32_t> mode = irqs_.EnabledIndex();
  if (mode == VFIO_PCI_MSI_IRQ_INDEX || mode == VFIO_PCI_MSIX_IRQ_INDEX) {
    irqs_.Trigger(*mode, vector);
    return;
  }
  // Without MSI or MSI-X the function interrupts through INTx# (§6.8).
  irq_status_ |= kIrqStatusIntx;
  UpdateIntxLine();
}

void PciTestDevice::UpdateIntxLine() {
  const bool asserted = (irq_status_ & kIrqStatusIntx) != 0;
  config_.UpdateStatus(PCI_STATUS_INTERRUPT, asserted);
  irqs_.SetIntxLevel(asserted && (config_.command() & PCI_COMMAND_INTX_DISABLE) == 0);
}

void PciTestDevice::QueueDma() {
  queued_ = DmaJob{.addr = (uint64_t{dma_addr_hi_} << 32) | dma_addr_lo_,
                   .len = dma_len_,
                   .cmd = dma_cmd_,
                   .generation = generation_};
  cv_.NotifyAll();
}

uint32_t PciTestDevice::WaitDmaIdle(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(mu_);
  while (dma_status_ == kDmaStatusBusy || worker_running_job_) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    cv_.WaitFor(mu_, deadline - now);
  }
  return dma_status_;
}

void PciTestDevice::WorkerLoop() {
  MutexLock lock(mu_);
  while (true) {
    while (!stop_ && (!queued_.has_value() || mig_state_ != VFIO_DEVICE_STATE_RUNNING)) {
      cv_.Wait(mu_);
    }
    if (stop_) return;
    const DmaJob job = *queued_;
    queued_.reset();
    worker_running_job_ = true;
    mu_.Unlock();
    RunDma(job);
    mu_.Lock();
    worker_running_job_ = false;
    cv_.NotifyAll();
  }
}

// Runs with mu_ released around the DmaAccess call: over vfio-user the copy
// is a message round trip that the transport must stay free to serve.
void PciTestDevice::RunDma(const DmaJob& job) {
  const uint32_t op = job.cmd & kDmaCmdOpMask;
  Result<void> done;
  std::vector<std::byte> bytes;
  if (job.len == 0 || job.len > kDmaMaxLen) {
    done = Fail(EINVAL, fmt::format("test_pci: DMA length {}", job.len));
  } else if (op == kDmaOpToDevice) {
    bytes.resize(job.len);
    done = dma_.DmaRead(job.addr, bytes);
  } else if (op == kDmaOpFromDevice) {
    {
      MutexLock lock(mu_);
      bytes.assign(buffer_.begin(), buffer_.begin() + job.len);
    }
    done = dma_.DmaWrite(job.addr, bytes);
  } else {
    done = Fail(EINVAL, fmt::format("test_pci: DMA op {}", op));
  }
  MutexLock lock(mu_);
  if (job.generation != generation_) return;  // Reset or restored meanwhile.
  if (done.has_value()) {
    if (op == kDmaOpToDevice) std::copy(bytes.begin(), bytes.end(), buffer_.begin());
    dma_status_ = kDmaStatusDone;
    dma_error_ = 0;
    ++dma_count_;
  } else {
    dma_status_ = kDmaStatusError;
    dma_error_ = static_cast<uint32_t>(done.error().code);
  }
  if ((job.cmd & kDmaCmdIrq) != 0) Raise(0);
}

std::vector<MdevTypeSpec> PciTestParentDriver::types() const {
  return {{"basic", "test PCI basic", "trapped BARs only"},
          {"mmap", "test PCI mmap", "adds BAR3, 64 KiB with a sparse mmap area"}};
}

Result<std::unique_ptr<DeviceOps>> PciTestParentDriver::Probe(const ProbeContext& context) {
  PciTestDevice::Type type;
  if (context.type.sysfs_name == "basic") {
    type = PciTestDevice::Type::kBasic;
  } else if (context.type.sysfs_name == "mmap") {
    type = PciTestDevice::Type::kMmap;
  } else {
    return Fail(EINVAL, "test_pci: unknown type " + context.type.sysfs_name);
  }
  UMDEV_ASSIGN_OR_RETURN(auto device, PciTestDevice::Create(type, context.dma));
  return std::unique_ptr<DeviceOps>(std::move(device));
}

}  // namespace umdev::testing
