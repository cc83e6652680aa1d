// SystemVfioKernel: VfioKernel over the real ioctls.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>

#include "umdev/passthrough/vfio_kernel.h"

namespace umdev::passthrough {
namespace {

// A variable-size ioctl argument: |header| bytes of T, then |extra| bytes.
template <typename T>
std::vector<std::byte> Buffer(const T& header, size_t extra) {
  std::vector<std::byte> bytes(sizeof(T) + extra);
  std::memcpy(bytes.data(), &header, sizeof(T));
  return bytes;
}

class SystemKernel final : public VfioKernel {
 public:
  explicit SystemKernel(std::string dev) : dev_(std::move(dev)) {}

  Result<UniqueFd> OpenContainer() override {
    UniqueFd fd(::open((dev_ + "/vfio/vfio").c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) return FailErrno("open " + dev_ + "/vfio/vfio");
    const int version = ioctl(fd.get(), VFIO_GET_API_VERSION);
    if (version != VFIO_API_VERSION) {
      return Fail(EPROTO, fmt::format("the kernel's VFIO API version is {}, not {}", version,
                                      VFIO_API_VERSION));
    }
    return fd;
  }

  Result<UniqueFd> OpenGroup(unsigned group) override {
    const std::string path = fmt::format("{}/vfio/{}", dev_, group);
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) return FailErrno("open " + path);
    return fd;
  }

  Result<bool> CheckExtension(int container, uint32_t extension) override {
    const int supported = ioctl(container, VFIO_CHECK_EXTENSION, extension);
    if (supported < 0) return FailErrno("VFIO_CHECK_EXTENSION");
    return supported > 0;
  }

  Result<uint32_t> GroupStatus(int group) override {
    vfio_group_status status{};
    status.argsz = sizeof(status);
    if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) != 0) return FailErrno("VFIO_GROUP_GET_STATUS");
    return status.flags;
  }

  Result<void> SetContainer(int group, int container) override {
    if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) != 0) {
      return FailErrno("VFIO_GROUP_SET_CONTAINER");
    }
    return {};
  }

  Result<void> UnsetContainer(int group) override {
    if (ioctl(group, VFIO_GROUP_UNSET_CONTAINER) != 0) return FailErrno("VFIO_GROUP_UNSET_CONTAINER");
    return {};
  }

  Result<void> SetIommu(int container, uint32_t type) override {
    if (ioctl(container, VFIO_SET_IOMMU, type) != 0) return FailErrno("VFIO_SET_IOMMU");
    return {};
  }

  Result<UniqueFd> DeviceFd(int group, const std::string& name) override {
    UniqueFd fd(ioctl(group, VFIO_GROUP_GET_DEVICE_FD, name.c_str()));
    if (!fd) return FailErrno("VFIO_GROUP_GET_DEVICE_FD " + name);
    return fd;
  }

  Result<vfio_device_info> DeviceInfo(int device) override {
    vfio_device_info info{};
    info.argsz = sizeof(info);
    if (ioctl(device, VFIO_DEVICE_GET_INFO, &info) != 0) return FailErrno("VFIO_DEVICE_GET_INFO");
    return info;
  }

  Result<std::vector<std::byte>> RegionInfo(int device, uint32_t index) override {
    vfio_region_info info{};
    info.argsz = sizeof(info);
    info.index = index;
    // The kernel says how much the capability chain needs; asked again
    // with that (bounded: a chain is a few small structs).
    for (size_t extra = 0;;) {
      std::vector<std::byte> bytes = Buffer(info, extra);
      if (ioctl(device, VFIO_DEVICE_GET_REGION_INFO, bytes.data()) != 0) {
        return FailErrno(fmt::format("VFIO_DEVICE_GET_REGION_INFO {}", index));
      }
      vfio_region_info got;
      std::memcpy(&got, bytes.data(), sizeof(got));
      if (got.argsz <= bytes.size()) return bytes;
      if (extra != 0 || got.argsz > 65536) {
        return Fail(EIO, fmt::format("region {}: the kernel asks for {} bytes of capabilities",
                                     index, got.argsz));
      }
      info.argsz = got.argsz;
      extra = got.argsz - sizeof(info);
    }
  }

  Result<vfio_irq_info> IrqInfo(int device, uint32_t index) override {
    vfio_irq_info info{};
    info.argsz = sizeof(info);
    info.index = index;
    if (ioctl(device, VFIO_DEVICE_GET_IRQ_INFO, &info) != 0) {
      return FailErrno(fmt::format("VFIO_DEVICE_GET_IRQ_INFO {}", index));
    }
    return info;
  }

  Result<void> SetIrqs(int device, const vfio_irq_set& header,
                       std::span<const std::byte> data) override {
    vfio_irq_set set = header;
    set.argsz = static_cast<uint32_t>(sizeof(set) + data.size());
    std::vector<std::byte> bytes = Buffer(set, data.size());
    if (!data.empty()) std::memcpy(bytes.data() + sizeof(set), data.data(), data.size());
    if (ioctl(device, VFIO_DEVICE_SET_IRQS, bytes.data()) != 0) {
      return FailErrno(fmt::format("VFIO_DEVICE_SET_IRQS index {}", header.index));
    }
    return {};
  }

  Result<void> Reset(int device) override {
    if (ioctl(device, VFIO_DEVICE_RESET) != 0) return FailErrno("VFIO_DEVICE_RESET");
    return {};
  }

  Result<std::vector<vfio_pci_dependent_device>> HotResetInfo(int device) override {
    vfio_pci_hot_reset_info info{};
    info.argsz = sizeof(info);
    // ENOSPC with the count filled in, then again with room for them.
    if (ioctl(device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, &info) != 0 && errno != ENOSPC) {
      return FailErrno("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO");
    }
    if (info.count > 256) return Fail(EIO, "the kernel lists more than 256 devices to reset");
    info.argsz = static_cast<uint32_t>(sizeof(info) + info.count * sizeof(vfio_pci_dependent_device));
    std::vector<std::byte> bytes = Buffer(info, info.count * sizeof(vfio_pci_dependent_device));
    if (ioctl(device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, bytes.data()) != 0) {
      return FailErrno("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO");
    }
    std::memcpy(&info, bytes.data(), sizeof(info));
    std::vector<vfio_pci_dependent_device> devices(info.count);
    std::memcpy(devices.data(), bytes.data() + sizeof(info), devices.size() * sizeof(devices[0]));
    return devices;
  }

  Result<void> HotReset(int device, std::span<const int32_t> group_fds) override {
    vfio_pci_hot_reset reset{};
    reset.argsz = static_cast<uint32_t>(sizeof(reset) + group_fds.size_bytes());
    reset.count = static_cast<uint32_t>(group_fds.size());
    std::vector<std::byte> bytes = Buffer(reset, group_fds.size_bytes());
    std::memcpy(bytes.data() + sizeof(reset), group_fds.data(), group_fds.size_bytes());
    if (ioctl(device, VFIO_DEVICE_PCI_HOT_RESET, bytes.data()) != 0) {
      return FailErrno("VFIO_DEVICE_PCI_HOT_RESET");
    }
    return {};
  }

  Result<size_t> Read(int device, uint64_t offset, std::span<std::byte> out) override {
    const ssize_t got = pread(device, out.data(), out.size(), static_cast<off_t>(offset));
    if (got < 0) return FailErrno(fmt::format("read at {:#x}", offset));
    return static_cast<size_t>(got);
  }

  Result<size_t> Write(int device, uint64_t offset, std::span<const std::byte> data) override {
    const ssize_t put = pwrite(device, data.data(), data.size(), static_cast<off_t>(offset));
    if (put < 0) return FailErrno(fmt::format("write at {:#x}", offset));
    return static_cast<size_t>(put);
  }

  Result<void> MapDma(int container, uint64_t vaddr, uint64_t iova, uint64_t size,
                      uint32_t flags) override {
    vfio_iommu_type1_dma_map map{};
    map.argsz = sizeof(map);
    map.flags = flags;
    map.vaddr = vaddr;
    map.iova = iova;
    map.size = size;
    if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map) != 0) {
      return FailErrno(fmt::format("VFIO_IOMMU_MAP_DMA of {:#x} bytes at IOVA {:#x}", size, iova));
    }
    return {};
  }

  Result<uint64_t> UnmapDma(int container, uint64_t iova, uint64_t size, uint32_t flags) override {
    vfio_iommu_type1_dma_unmap unmap{};
    unmap.argsz = sizeof(unmap);
    unmap.flags = flags;
    unmap.iova = iova;
    unmap.size = size;
    if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) != 0) {
      return FailErrno(fmt::format("VFIO_IOMMU_UNMAP_DMA of {:#x} bytes at IOVA {:#x}", size, iova));
    }
    return unmap.size;
  }

  Result<void> DirtyTracking(int container, bool start) override {
    vfio_iommu_type1_dirty_bitmap dirty{};
    dirty.argsz = sizeof(dirty);
    dirty.flags = start ? VFIO_IOMMU_DIRTY_PAGES_FLAG_START : VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP;
    if (ioctl(container, VFIO_IOMMU_DIRTY_PAGES, &dirty) != 0) {
      return FailErrno("VFIO_IOMMU_DIRTY_PAGES");
    }
    return {};
  }

  Result<std::vector<uint64_t>> DirtyBitmap(int container, uint64_t iova, uint64_t size,
                                            uint64_t page_size) override {
    if (page_size == 0 || size % page_size != 0) {
      return Fail(EINVAL, fmt::format("a dirty bitmap of {:#x} bytes in pages of {:#x}", size,
                                      page_size));
    }
    std::vector<uint64_t> bitmap((size / page_size + 63) / 64);
    vfio_iommu_type1_dirty_bitmap dirty{};
    vfio_iommu_type1_dirty_bitmap_get get{};
    dirty.argsz = sizeof(dirty) + sizeof(get);
    dirty.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
    get.iova = iova;
    get.size = size;
    get.bitmap.pgsize = page_size;
    get.bitmap.size = bitmap.size() * sizeof(uint64_t);
    get.bitmap.data = reinterpret_cast<__u64*>(bitmap.data());
    std::vector<std::byte> bytes = Buffer(dirty, sizeof(get));
    std::memcpy(bytes.data() + sizeof(dirty), &get, sizeof(get));
    if (ioctl(container, VFIO_IOMMU_DIRTY_PAGES, bytes.data()) != 0) {
      return FailErrno("VFIO_IOMMU_DIRTY_PAGES get bitmap");
    }
    return bitmap;
  }

 private:
  const std::string dev_;
};

}  // namespace

std::unique_ptr<VfioKernel> SystemVfioKernel(std::string dev) {
  return std::make_unique<SystemKernel>(std::move(dev));
}

}  // namespace umdev::passthrough
