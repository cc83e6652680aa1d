// HostGroup, HostContainer and HostDevice over VfioKernel.
#include "umdev/passthrough/host_vfio.h"

#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace umdev::passthrough {
namespace {

constexpr uint64_t kPageSize = 4096;

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& part : parts) out += (out.empty() ? "" : ", ") + part;
  return out;
}

}  // namespace

Result<std::shared_ptr<HostGroup>> HostGroup::Open(VfioKernel& kernel, const pci::Sysfs& sysfs,
                                                   unsigned number) {
  auto fd = kernel.OpenGroup(number);
  if (!fd.has_value()) {
    if (fd.error().code == ENOENT) {
      return Fail(ENODEV, fmt::format("IOMMU group {} has no VFIO group: no function of it is "
                                      "bound to vfio-pci",
                                      number));
    }
    return std::unexpected(fd.error());
  }
  UMDEV_ASSIGN_OR_RETURN(const uint32_t status, kernel.GroupStatus(fd->get()));
  if ((status & VFIO_GROUP_FLAGS_VIABLE) == 0) {
    // The kernel's rule: every member bound to vfio-pci (or a driver that
    // gives up DMA ownership) or to none. Name the ones that are not.
    std::vector<std::string> bound;
    for (const std::string& member : sysfs.GroupMembers(number)) {
      const std::string driver = sysfs.DriverOf(member);
      if (!driver.empty() && driver != "vfio-pci") {
        bound.push_back(member + " (" + driver + ")");
      }
    }
    return Fail(EBUSY, fmt::format("IOMMU group {} is not viable: {} still bound to a host "
                                   "driver; bind every device of the group to vfio-pci",
                                   number, bound.empty() ? "a device is" : Join(bound)));
  }
  return std::shared_ptr<HostGroup>(new HostGroup(number, std::move(*fd)));
}

Result<std::unique_ptr<HostContainer>> HostContainer::Create(
    VfioKernel& kernel, std::shared_ptr<HostGroup> group,
    std::shared_ptr<pinning::LockedMemoryAccount> account) {
  UMDEV_ASSIGN_OR_RETURN(UniqueFd container_fd, kernel.OpenContainer());
  UMDEV_ASSIGN_OR_RETURN(const bool type1v2,
                         kernel.CheckExtension(container_fd.get(), VFIO_TYPE1v2_IOMMU));
  if (!type1v2) {
    return Fail(ENOTSUP, "the kernel has no type1v2 IOMMU backend (modprobe vfio_iommu_type1)");
  }
  auto container = std::unique_ptr<HostContainer>(
      new HostContainer(kernel, std::move(group), std::move(container_fd), std::move(account)));
  UMDEV_TRY(kernel.SetContainer(container->group_->fd(), container->container_.get()));
  container->attached_ = true;
  UMDEV_TRY(kernel.SetIommu(container->container_.get(), VFIO_TYPE1v2_IOMMU));
  return container;
}

HostContainer::~HostContainer() {
  (void)UnmapAll();
  if (attached_) (void)kernel_.UnsetContainer(group_->fd());
}

Result<void> HostContainer::Map(DmaMapRequest request) {
  if (!request.fd) {
    return Fail(EINVAL, fmt::format("DMA_MAP of {:#x} bytes at IOVA {:#x} without an fd: a real "
                                    "device reaches only memory the daemon can map; share the "
                                    "guest's RAM (QEMU: -object memory-backend-memfd,share=on)",
                                    request.size, request.iova));
  }
  if (request.size == 0 || request.iova % kPageSize != 0 || request.size % kPageSize != 0 ||
      request.offset % kPageSize != 0 || request.iova + request.size < request.iova) {
    return Fail(EINVAL, fmt::format("DMA_MAP of {:#x} bytes at IOVA {:#x} (offset {:#x}): not "
                                    "whole pages",
                                    request.size, request.iova, request.offset));
  }
  // A memory file that covers the range (a socket, pipe or device fd is
  // refused): the pages are faulted in while the kernel pins them.
  UMDEV_TRY(CheckGuestMemoryFd(request));
  const bool read = (request.prot & VFIO_DMA_MAP_FLAG_READ) != 0;
  const bool write = (request.prot & VFIO_DMA_MAP_FLAG_WRITE) != 0;
  if (!read && !write) return Fail(EINVAL, "DMA_MAP with neither READ nor WRITE");
  // The kernel pins what the daemon has mapped: the client's memory, shared.
  UMDEV_ASSIGN_OR_RETURN(Mapping memory,
                         Mapping::Map(request.fd.get(), static_cast<off_t>(request.offset),
                                      request.size, (read ? PROT_READ : 0) | (write ? PROT_WRITE : 0),
                                      MAP_SHARED));
  MutexLock lock(mu_);
  if (account_ != nullptr) {
    if (auto charged = account_->Charge(request.size); !charged.has_value()) {
      return Fail(ENOMEM, fmt::format("DMA_MAP of {:#x} bytes at IOVA {:#x}: past umdevd's "
                                      "locked_memory_bytes ({:#x} of {:#x} bytes locked)",
                                      request.size, request.iova, account_->used(),
                                      account_->limit()));
    }
  }
  auto mapped = kernel_.MapDma(container_.get(), reinterpret_cast<uintptr_t>(memory.data()),
                               request.iova, request.size, request.prot);
  if (!mapped.has_value()) {
    if (account_ != nullptr) account_->Uncharge(request.size);
    if (mapped.error().code == ENOMEM) {
      return Fail(ENOMEM, fmt::format("{}: past the daemon's locked-memory limit (RLIMIT_MEMLOCK; "
                                      "the service's LimitMEMLOCK)",
                                      mapped.error().Describe()));
    }
    return std::unexpected(mapped.error());
  }
  mappings_.emplace(request.iova, std::move(memory));
  return {};
}

Result<uint64_t> HostContainer::Unmap(uint64_t iova, uint64_t size) {
  MutexLock lock(mu_);
  UMDEV_ASSIGN_OR_RETURN(const uint64_t unmapped, kernel_.UnmapDma(container_.get(), iova, size, 0));
  // The kernel removed whole mappings inside the range; so do we.
  for (auto it = mappings_.lower_bound(iova);
       it != mappings_.end() && it->first + it->second.size() <= iova + size;) {
    it = EraseLocked(it);
  }
  return unmapped;
}

Result<std::vector<SparseMmapArea>> HostContainer::MappingsWithin(uint64_t iova,
                                                                  uint64_t size) const {
  MutexLock lock(mu_);
  std::vector<SparseMmapArea> within;
  auto it = mappings_.upper_bound(iova);
  if (it != mappings_.begin()) --it;  // The one that may hold |iova|.
  for (; it != mappings_.end() && (it->first < iova || it->first - iova < size); ++it) {
    const uint64_t start = it->first;
    const uint64_t length = it->second.size();
    if (start + length <= iova) continue;
    if (start < iova || start - iova > size - length || length > size) {
      return Fail(EINVAL, fmt::format("[{:#x}, +{:#x}) cuts the mapping at {:#x} of {:#x} bytes",
                                      iova, size, start, length));
    }
    within.push_back(SparseMmapArea{start, length});
  }
  return within;
}

std::map<uint64_t, Mapping>::iterator HostContainer::EraseLocked(
    std::map<uint64_t, Mapping>::iterator it) {
  if (account_ != nullptr) account_->Uncharge(it->second.size());
  return mappings_.erase(it);
}

Result<uint64_t> HostContainer::UnmapAll() {
  MutexLock lock(mu_);
  uint64_t unmapped = 0;
  for (auto it = mappings_.begin(); it != mappings_.end();) {
    auto done = kernel_.UnmapDma(container_.get(), it->first, it->second.size(), 0);
    if (!done.has_value()) return std::unexpected(done.error());
    unmapped += *done;
    it = EraseLocked(it);
  }
  return unmapped;
}

size_t HostContainer::mapping_count() const {
  MutexLock lock(mu_);
  return mappings_.size();
}

uint64_t HostContainer::mapped_bytes() const {
  MutexLock lock(mu_);
  uint64_t bytes = 0;
  for (const auto& [iova, memory] : mappings_) bytes += memory.size();
  return bytes;
}

Result<std::unique_ptr<HostDevice>> HostDevice::Open(VfioKernel& kernel, const HostGroup& group,
                                                     const std::string& address) {
  UMDEV_ASSIGN_OR_RETURN(UniqueFd fd, kernel.DeviceFd(group.fd(), address));
  UMDEV_ASSIGN_OR_RETURN(const vfio_device_info raw, kernel.DeviceInfo(fd.get()));
  if ((raw.flags & VFIO_DEVICE_FLAGS_PCI) == 0) {
    return Fail(ENODEV, fmt::format("{} is not a PCI device (flags {:#x})", address, raw.flags));
  }
  DeviceInfo info;
  info.flags = raw.flags;
  info.num_regions = raw.num_regions;
  info.num_irqs = raw.num_irqs;
  return std::unique_ptr<HostDevice>(new HostDevice(kernel, std::move(fd), info));
}

Result<RegionInfo> ParseRegionInfo(std::span<const std::byte> reply, uint64_t* offset) {
  vfio_region_info raw;
  if (reply.size() < sizeof(raw)) return Fail(EIO, "a region info reply shorter than its struct");
  std::memcpy(&raw, reply.data(), sizeof(raw));
  RegionInfo info;
  info.flags = raw.flags & (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
                            VFIO_REGION_INFO_FLAG_MMAP);
  info.size = raw.size;
  *offset = raw.offset;
  if ((raw.flags & VFIO_REGION_INFO_FLAG_CAPS) == 0) return info;
  // Each header is inside the reply and after the last: no loops.
  for (uint32_t at = raw.cap_offset, previous = 0; at != 0;) {
    vfio_info_cap_header header;
    if (at < sizeof(raw) || at <= previous || at > reply.size() ||
        reply.size() - at < sizeof(header)) {
      return Fail(EIO, fmt::format("a region capability at {} outside a reply of {} bytes", at,
                                   reply.size()));
    }
    std::memcpy(&header, reply.data() + at, sizeof(header));
    if (header.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
      vfio_region_info_cap_sparse_mmap sparse;
      if (reply.size() - at < sizeof(sparse)) return Fail(EIO, "a truncated sparse-mmap capability");
      std::memcpy(&sparse, reply.data() + at, sizeof(sparse));
      const size_t room = (reply.size() - at - sizeof(sparse)) / sizeof(vfio_region_sparse_mmap_area);
      if (sparse.nr_areas > room) return Fail(EIO, "a sparse-mmap capability past the reply");
      for (uint32_t i = 0; i < sparse.nr_areas; ++i) {
        vfio_region_sparse_mmap_area area;
        std::memcpy(&area, reply.data() + at + sizeof(sparse) + i * sizeof(area), sizeof(area));
        info.sparse_mmap.push_back(SparseMmapArea{area.offset, area.size});
      }
    } else if (header.id == VFIO_REGION_INFO_CAP_TYPE) {
      vfio_region_info_cap_type type;
      if (reply.size() - at < sizeof(type)) return Fail(EIO, "a truncated type capability");
      std::memcpy(&type, reply.data() + at, sizeof(type));
      info.type = RegionType{type.type, type.subtype};
    } else if (header.id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) {
      info.msix_mappable = true;
    }
    previous = at;
    at = header.next;
  }
  return info;
}

Result<HostDevice::Location> HostDevice::Locate(uint32_t index) {
  {
    MutexLock lock(mu_);
    if (auto it = locations_.find(index); it != locations_.end()) return it->second;
  }
  UMDEV_ASSIGN_OR_RETURN(const RegionInfo info, Region(index));
  (void)info;
  MutexLock lock(mu_);
  return locations_.at(index);
}

Result<RegionInfo> HostDevice::Region(uint32_t index) {
  if (index >= info_.num_regions) {
    return Fail(EINVAL, fmt::format("region {} of a device with {}", index, info_.num_regions));
  }
  UMDEV_ASSIGN_OR_RETURN(const std::vector<std::byte> reply, kernel_.RegionInfo(fd_.get(), index));
  uint64_t offset = 0;
  UMDEV_ASSIGN_OR_RETURN(RegionInfo info, ParseRegionInfo(reply, &offset));
  if ((info.flags & VFIO_REGION_INFO_FLAG_MMAP) != 0) {
    // The client maps the device fd itself: the real BAR, no trap.
    info.mmap_fd = fd_.get();
    info.mmap_offset = offset;
  }
  MutexLock lock(mu_);
  locations_[index] = Location{offset, info.size};
  return info;
}

Result<size_t> HostDevice::Read(uint32_t index, uint64_t offset, std::span<std::byte> out) {
  UMDEV_ASSIGN_OR_RETURN(const Location where, Locate(index));
  if (offset > where.size || out.size() > where.size - offset) {
    return Fail(EINVAL, fmt::format("{} bytes at {:#x} outside region {} of {:#x} bytes",
                                    out.size(), offset, index, where.size));
  }
  return kernel_.Read(fd_.get(), where.offset + offset, out);
}

Result<size_t> HostDevice::Write(uint32_t index, uint64_t offset, std::span<const std::byte> data) {
  UMDEV_ASSIGN_OR_RETURN(const Location where, Locate(index));
  if (offset > where.size || data.size() > where.size - offset) {
    return Fail(EINVAL, fmt::format("{} bytes at {:#x} outside region {} of {:#x} bytes",
                                    data.size(), offset, index, where.size));
  }
  return kernel_.Write(fd_.get(), where.offset + offset, data);
}

Result<IrqInfo> HostDevice::Irq(uint32_t index) {
  UMDEV_ASSIGN_OR_RETURN(const vfio_irq_info raw, kernel_.IrqInfo(fd_.get(), index));
  return IrqInfo{raw.flags, raw.count};
}

Result<void> HostDevice::SetIrqs(IrqSet& set) {
  vfio_irq_set header{};
  header.flags = set.flags;
  header.index = set.index;
  header.start = set.start;
  header.count = set.count;
  std::vector<std::byte> data;
  if ((set.flags & VFIO_IRQ_SET_DATA_EVENTFD) != 0) {
    data.resize(set.fds.size() * sizeof(int32_t));
    for (size_t i = 0; i < set.fds.size(); ++i) {
      const int32_t fd = set.fds[i] ? set.fds[i].get() : -1;  // -1 de-assigns.
      std::memcpy(data.data() + i * sizeof(fd), &fd, sizeof(fd));
    }
  } else if ((set.flags & VFIO_IRQ_SET_DATA_BOOL) != 0) {
    data.resize(set.bools.size());
    std::memcpy(data.data(), set.bools.data(), set.bools.size());
  }
  return kernel_.SetIrqs(fd_.get(), header, data);
}

Result<void> HostDevice::Reset(const std::vector<std::shared_ptr<HostGroup>>& held, bool bus,
                               const std::vector<unsigned>& in_use) {
  if ((info_.flags & VFIO_DEVICE_FLAGS_RESET) != 0) return kernel_.Reset(fd_.get());
  if (!bus) {
    return Fail(ENOTTY, "no reset of the function alone, and a bus reset would reach a device "
                        "still in use");
  }
  // No reset of the function alone: a bus reset, which reaches every
  // device on the bus, is allowed only with all of their groups in hand.
  auto affected = kernel_.HotResetInfo(fd_.get());
  if (!affected.has_value()) {
    return Fail(affected.error().code,
                fmt::format("no reset of the function alone (FLR, PM) and no bus reset: {}",
                            affected.error().context));
  }
  std::vector<int32_t> group_fds;
  for (const vfio_pci_dependent_device& device : *affected) {
    const auto group = std::find_if(held.begin(), held.end(), [&](const auto& g) {
      return g != nullptr && g->number() == device.group_id;
    });
    if (group == held.end()) {
      const std::string function = fmt::format("{:04x}:{:02x}:{:02x}.{}", device.segment,
                                               device.bus, device.devfn >> 3, device.devfn & 7);
      const bool used = std::find(in_use.begin(), in_use.end(), device.group_id) != in_use.end();
      return Fail(used ? EBUSY : EPERM,
                  fmt::format("a bus reset would also reset {}, in IOMMU group {}, {}", function,
                              device.group_id,
                              used ? "which another client of umdevd is using"
                                   : "which umdevd does not hold"));
    }
    if (std::find(group_fds.begin(), group_fds.end(), (*group)->fd()) == group_fds.end()) {
      group_fds.push_back((*group)->fd());
    }
  }
  return kernel_.HotReset(fd_.get(), group_fds);
}

}  // namespace umdev::passthrough
