// VfioPciTransport: the group path of the kernel's VFIO (container, group,
// device fd) for one gpu slice inside a guest.
#include "umdev/gpu_guest/vfio_pci_transport.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>

#include "umdev/common/pci_sysfs.h"
#include "umdev/vendor/gpu/gpu_regs.h"

namespace umdev::gpu_guest {
namespace {

namespace regs = umdev::vendor::gpu::regs;

// PCI config space: the Command register and the bits a driver sets.
constexpr uint64_t kPciCommand = 0x04;
constexpr uint16_t kPciCommandMemory = 1u << 1;
constexpr uint16_t kPciCommandMaster = 1u << 2;

// Stores to DMA memory reach the device before a later MMIO store: x86
// keeps stores in order (uncached ones included), so only the compiler
// must not move them.
inline void StoreBarrier() {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("" ::: "memory");
#else
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

}  // namespace

Result<std::unique_ptr<VfioPciTransport>> VfioPciTransport::Open(const std::string& address,
                                                                  const VfioPciPaths& paths) {
  UMDEV_ASSIGN_OR_RETURN(std::string normalized, pci::NormalizeAddress(address));
  auto transport = std::unique_ptr<VfioPciTransport>(new VfioPciTransport(std::move(normalized)));
  UMDEV_TRY(transport->Attach(paths));
  return transport;
}

VfioPciTransport::~VfioPciTransport() {
  // Unpinned while the memory is still mapped; the mappings go after.
  for (const DmaMapping& dma : dma_) {
    vfio_iommu_type1_dma_unmap unmap{};
    unmap.argsz = sizeof(unmap);
    unmap.iova = dma.iova;
    unmap.size = dma.memory.size();
    (void)ioctl(container_.get(), VFIO_IOMMU_UNMAP_DMA, &unmap);
  }
}

Result<void> VfioPciTransport::Attach(const VfioPciPaths& paths) {
  const pci::Sysfs sysfs(paths.sysfs);
  if (!sysfs.Exists(address_)) {
    return Fail(ENODEV, fmt::format("no PCI device {} (lspci lists the guest's devices)", address_));
  }
  const std::string driver = sysfs.DriverOf(address_);
  if (driver != "vfio-pci") {
    return Fail(EBUSY, fmt::format("{} is {}; bind it with: {}", address_,
                                   driver.empty() ? "bound to no driver"
                                                  : "bound to " + driver + ", not vfio-pci",
                                   sysfs.BindCommands(address_, driver)));
  }
  const std::optional<unsigned> group_number = sysfs.IommuGroupOf(address_);
  if (!group_number) {
    return Fail(ENODEV, fmt::format("{} has no IOMMU group: boot the guest with intel_iommu=on "
                                    "and give QEMU -device intel-iommu,caching-mode=on",
                                    address_));
  }
  const std::string group = std::to_string(*group_number);

  const std::string container_path = paths.dev + "/vfio/vfio";
  container_.Reset(::open(container_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!container_) return FailErrno("open " + container_path);
  if (ioctl(container_.get(), VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
    return Fail(EPROTO, "the kernel's VFIO API version is not " + std::to_string(VFIO_API_VERSION));
  }
  if (ioctl(container_.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0) {
    return Fail(ENOTSUP, "the kernel has no type1v2 IOMMU backend (modprobe vfio_iommu_type1)");
  }
  const std::string group_path = paths.dev + "/vfio/" + group;
  group_.Reset(::open(group_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!group_) return FailErrno("open " + group_path);
  vfio_group_status status{};
  status.argsz = sizeof(status);
  if (ioctl(group_.get(), VFIO_GROUP_GET_STATUS, &status) != 0) {
    return FailErrno("VFIO_GROUP_GET_STATUS " + group_path);
  }
  if ((status.flags & VFIO_GROUP_FLAGS_VIABLE) == 0) {
    return Fail(EBUSY, fmt::format("IOMMU group {} is not viable: every device in {}/kernel/"
                                   "iommu_groups/{}/devices must be bound to vfio-pci or to none",
                                   group, paths.sysfs, group));
  }
  const int container_fd = container_.get();
  if (ioctl(group_.get(), VFIO_GROUP_SET_CONTAINER, &container_fd) != 0) {
    return FailErrno("VFIO_GROUP_SET_CONTAINER " + group_path);
  }
  if (ioctl(container_.get(), VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) {
    return FailErrno("VFIO_SET_IOMMU type1v2");
  }
  device_.Reset(ioctl(group_.get(), VFIO_GROUP_GET_DEVICE_FD, address_.c_str()));
  if (!device_) return FailErrno("VFIO_GROUP_GET_DEVICE_FD " + address_);
  vfio_device_info info{};
  info.argsz = sizeof(info);
  if (ioctl(device_.get(), VFIO_DEVICE_GET_INFO, &info) != 0) {
    return FailErrno("VFIO_DEVICE_GET_INFO " + address_);
  }
  if ((info.flags & VFIO_DEVICE_FLAGS_PCI) == 0 || info.num_regions <= regs::kDoorbellBar) {
    return Fail(ENODEV, fmt::format("{} is not a PCI device with BAR4", address_));
  }

  // vfio-pci leaves bus mastering to its user, as a device driver sets it:
  // without it the device's MSI-X messages never leave QEMU's PCI model.
  UMDEV_ASSIGN_OR_RETURN(const Region config, RegionInfo(VFIO_PCI_CONFIG_REGION_INDEX));
  uint16_t command = 0;
  UMDEV_TRY(Access(config, kPciCommand, &command, sizeof(command), /*write=*/false));
  command |= kPciCommandMemory | kPciCommandMaster;
  UMDEV_TRY(Access(config, kPciCommand, &command, sizeof(command), /*write=*/true));

  UMDEV_ASSIGN_OR_RETURN(bar0_, RegionInfo(VFIO_PCI_BAR0_REGION_INDEX));
  if (bar0_.size < regs::kBar0Size) {
    return Fail(ENODEV, fmt::format("{}: BAR0 of {} bytes is not a gpu slice's", address_,
                                    bar0_.size));
  }
  UMDEV_ASSIGN_OR_RETURN(registers_, MapRegion(VFIO_PCI_BAR0_REGION_INDEX, bar0_));
  UMDEV_ASSIGN_OR_RETURN(bar2_, RegionInfo(VFIO_PCI_BAR2_REGION_INDEX));
  UMDEV_ASSIGN_OR_RETURN(slice_, MapRegion(VFIO_PCI_BAR2_REGION_INDEX, bar2_));
  UMDEV_ASSIGN_OR_RETURN(const Region bar4, RegionInfo(regs::kDoorbellBar));
  UMDEV_ASSIGN_OR_RETURN(doorbell_, MapRegion(regs::kDoorbellBar, bar4));
  return {};
}

Result<VfioPciTransport::Region> VfioPciTransport::RegionInfo(uint32_t index) {
  vfio_region_info info{};
  info.argsz = sizeof(info);
  info.index = index;
  if (ioctl(device_.get(), VFIO_DEVICE_GET_REGION_INFO, &info) != 0) {
    return FailErrno(fmt::format("VFIO_DEVICE_GET_REGION_INFO {} region {}", address_, index));
  }
  return Region{info.offset, info.size, info.flags};
}

Result<Mapping> VfioPciTransport::MapRegion(uint32_t index, const Region& region) {
  // CAPS on a BAR is the sparse-mmap list: the kernel keeps the MSI-X table
  // out of the mapping, which for a one-page BAR0 leaves nothing; such a
  // region is reached with pread/pwrite instead.
  if ((region.flags & VFIO_REGION_INFO_FLAG_MMAP) == 0 ||
      (region.flags & VFIO_REGION_INFO_FLAG_CAPS) != 0 || region.size == 0) {
    return Mapping();
  }
  auto mapped = Mapping::Map(device_.get(), static_cast<off_t>(region.offset), region.size,
                             PROT_READ | PROT_WRITE, MAP_SHARED);
  if (!mapped.has_value()) {
    return Fail(mapped.error().code,
                fmt::format("mmap {} region {}: {}", address_, index, mapped.error().Describe()));
  }
  return mapped;
}

Result<void> VfioPciTransport::Access(const Region& region, uint64_t offset, void* data,
                                      size_t size, bool write) {
  if (offset > region.size || size > region.size - offset) {
    return Fail(EINVAL, fmt::format("{}: {} bytes at {:#x} are outside a region of {} bytes",
                                    address_, size, offset, region.size));
  }
  const off_t at = static_cast<off_t>(region.offset + offset);
  const ssize_t done = write ? pwrite(device_.get(), data, size, at)
                             : pread(device_.get(), data, size, at);
  if (done < 0) return FailErrno(fmt::format("{} {} at {:#x}", write ? "write" : "read", address_, offset));
  if (static_cast<size_t>(done) != size) {
    return Fail(EIO, fmt::format("{}: short access at {:#x}", address_, offset));
  }
  return {};
}

Result<uint32_t> VfioPciTransport::ReadRegister(uint32_t offset) {
  if (registers_.size() >= offset + sizeof(uint32_t)) {
    return *reinterpret_cast<const volatile uint32_t*>(registers_.data() + offset);
  }
  uint32_t value = 0;
  UMDEV_TRY(Access(bar0_, offset, &value, sizeof(value), /*write=*/false));
  return value;
}

Result<void> VfioPciTransport::WriteRegister(uint32_t offset, uint32_t value) {
  if (registers_.size() >= offset + sizeof(uint32_t)) {
    StoreBarrier();
    *reinterpret_cast<volatile uint32_t*>(registers_.data() + offset) = value;
    return {};
  }
  // A system call orders the stores before it.
  return Access(bar0_, offset, &value, sizeof(value), /*write=*/true);
}

Result<void> VfioPciTransport::ReadSlice(uint64_t offset, std::span<std::byte> out) {
  return Access(bar2_, offset, out.data(), out.size(), /*write=*/false);
}

Result<void> VfioPciTransport::WriteSlice(uint64_t offset, std::span<const std::byte> data) {
  return Access(bar2_, offset, const_cast<std::byte*>(data.data()), data.size(), /*write=*/true);
}

Result<DmaBuffer> VfioPciTransport::AllocateDma(size_t bytes) {
  if (bytes == 0 || bytes % 4096 != 0) {
    return Fail(EINVAL, fmt::format("DMA memory of {} bytes is not whole pages", bytes));
  }
  UMDEV_ASSIGN_OR_RETURN(Mapping memory,
                         Mapping::Map(-1, 0, bytes, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE));
  vfio_iommu_type1_dma_map map{};
  map.argsz = sizeof(map);
  map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
  map.vaddr = reinterpret_cast<uintptr_t>(memory.data());
  map.iova = next_iova_;
  map.size = bytes;
  if (ioctl(container_.get(), VFIO_IOMMU_MAP_DMA, &map) != 0) {
    const int code = errno;
    return Fail(code, fmt::format("VFIO_IOMMU_MAP_DMA of {} bytes at IOVA {:#x}{}", bytes,
                                  map.iova,
                                  code == ENOMEM ? " (past RLIMIT_MEMLOCK? ulimit -l)" : ""));
  }
  const DmaBuffer buffer{memory.bytes(), next_iova_};
  dma_.push_back(DmaMapping{std::move(memory), next_iova_});
  next_iova_ += (bytes + 0xfffff) & ~uint64_t{0xfffff};  // 1 MiB apart.
  return buffer;
}

Result<int> VfioPciTransport::VectorFd(uint32_t vector) {
  if (vector > regs::kVectorError) return Fail(EINVAL, fmt::format("no MSI-X vector {}", vector));
  if (vectors_.empty()) {
    constexpr uint32_t kCount = regs::kVectorError + 1;
    std::vector<UniqueFd> fds;
    alignas(vfio_irq_set) std::byte storage[sizeof(vfio_irq_set) + kCount * sizeof(int32_t)] = {};
    auto* set = reinterpret_cast<vfio_irq_set*>(storage);
    set->argsz = sizeof(storage);
    set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    set->index = VFIO_PCI_MSIX_IRQ_INDEX;
    set->start = 0;
    set->count = kCount;
    for (uint32_t i = 0; i < kCount; ++i) {
      fds.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!fds.back()) return FailErrno("eventfd");
      const int32_t fd = fds.back().get();
      std::memcpy(storage + sizeof(vfio_irq_set) + i * sizeof(int32_t), &fd, sizeof(fd));
    }
    if (ioctl(device_.get(), VFIO_DEVICE_SET_IRQS, set) != 0) {
      return FailErrno(fmt::format("VFIO_DEVICE_SET_IRQS MSI-X {}", address_));
    }
    vectors_ = std::move(fds);
  }
  return vectors_[vector].get();
}

Result<void> VfioPciTransport::Reset() {
  // The device's own function reset: the slice has no FLR, and the kernel's
  // fallbacks (a D3hot round trip, a bus reset) do not reach the device on
  // every machine, while RESET always does.
  UMDEV_TRY(WriteRegister(regs::kRegReset, 1));
  // The vectors are set again on next use, as after any reset.
  vectors_.clear();
  return {};
}

}  // namespace umdev::gpu_guest
