// VfioKernel: the host kernel's VFIO UAPI (/dev/vfio, the group path), one
// method per call the passthrough driver makes and nothing more, so that
// the driver runs unchanged against the real kernel and against a fake
// that makes every call fail the way the kernel can (docs/passthrough.md).
#pragma once

#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"

namespace umdev::passthrough {

// Any thread; the fds are the caller's.
class VfioKernel {
 public:
  virtual ~VfioKernel() = default;

  // /dev/vfio/vfio, its API version checked. Errors: open's; EPROTO
  // another API version.
  virtual Result<UniqueFd> OpenContainer() = 0;
  // /dev/vfio/|group|. Errors: open's (ENOENT no such group, EBUSY open
  // elsewhere).
  virtual Result<UniqueFd> OpenGroup(unsigned group) = 0;
  // VFIO_CHECK_EXTENSION: whether |container| supports |extension|.
  virtual Result<bool> CheckExtension(int container, uint32_t extension) = 0;
  // VFIO_GROUP_GET_STATUS: VFIO_GROUP_FLAGS_*.
  virtual Result<uint32_t> GroupStatus(int group) = 0;
  virtual Result<void> SetContainer(int group, int container) = 0;
  virtual Result<void> UnsetContainer(int group) = 0;
  // VFIO_SET_IOMMU.
  virtual Result<void> SetIommu(int container, uint32_t type) = 0;
  // VFIO_GROUP_GET_DEVICE_FD.
  virtual Result<UniqueFd> DeviceFd(int group, const std::string& name) = 0;

  virtual Result<vfio_device_info> DeviceInfo(int device) = 0;
  // VFIO_DEVICE_GET_REGION_INFO with its capability chain: the whole reply
  // (struct vfio_region_info first), asked again with the size it needs.
  virtual Result<std::vector<std::byte>> RegionInfo(int device, uint32_t index) = 0;
  virtual Result<vfio_irq_info> IrqInfo(int device, uint32_t index) = 0;
  // VFIO_DEVICE_SET_IRQS: |header| (argsz filled in here) then |data|.
  virtual Result<void> SetIrqs(int device, const vfio_irq_set& header,
                               std::span<const std::byte> data) = 0;
  virtual Result<void> Reset(int device) = 0;
  // VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: the devices a bus reset would
  // reach, with their groups.
  virtual Result<std::vector<vfio_pci_dependent_device>> HotResetInfo(int device) = 0;
  // VFIO_DEVICE_PCI_HOT_RESET with the fds of groups owning all of them.
  virtual Result<void> HotReset(int device, std::span<const int32_t> group_fds) = 0;
  // pread/pwrite on a device fd; the bytes moved.
  virtual Result<size_t> Read(int device, uint64_t offset, std::span<std::byte> out) = 0;
  virtual Result<size_t> Write(int device, uint64_t offset, std::span<const std::byte> data) = 0;

  // VFIO_IOMMU_MAP_DMA of this process's |vaddr|. Errors: the kernel's
  // (EEXIST overlap, EINVAL alignment, ENOMEM past RLIMIT_MEMLOCK, ENOSPC
  // past the container's mapping limit).
  virtual Result<void> MapDma(int container, uint64_t vaddr, uint64_t iova, uint64_t size,
                              uint32_t flags) = 0;
  // VFIO_IOMMU_UNMAP_DMA; the bytes unmapped. |flags| may hold
  // VFIO_DMA_UNMAP_FLAG_ALL.
  virtual Result<uint64_t> UnmapDma(int container, uint64_t iova, uint64_t size,
                                    uint32_t flags) = 0;
  // VFIO_IOMMU_DIRTY_PAGES start (true) or stop (false).
  virtual Result<void> DirtyTracking(int container, bool start) = 0;
  // VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP of [iova, iova + size), one bit
  // per |page_size|.
  virtual Result<std::vector<uint64_t>> DirtyBitmap(int container, uint64_t iova, uint64_t size,
                                                    uint64_t page_size) = 0;
};

// The running kernel's, with device nodes under |dev| ("/dev").
std::unique_ptr<VfioKernel> SystemVfioKernel(std::string dev = "/dev");

}  // namespace umdev::passthrough
