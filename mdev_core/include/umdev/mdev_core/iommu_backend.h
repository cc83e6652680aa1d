// IommuBackend: the per-container address space of guest IOVAs (kernel:
// vfio_iommu_driver_ops). Implemented by pinning/ (type1); chosen at SET_IOMMU.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/mdev_core/dma.h"

namespace umdev {

struct IommuInfo {
  uint64_t pgsizes = kPageSize;  // Bitmap of supported page sizes (vfio-user "pgsizes").
  uint32_t max_mappings = 0;     // Live mappings allowed (vfio-user "max_dma_maps").
};

// Thread-safe. Never calls a DmaUnmapListener or the DmaMessageChannel with one
// of its own locks held; the core never holds its locks while calling in.
class IommuBackend {
 public:
  virtual ~IommuBackend() = default;

  virtual IommuInfo info() const = 0;

  // Where fd-less mappings are read and written. Not owned; must outlive its
  // use; nullptr detaches (fd-less access then fails with EFAULT).
  virtual void SetMessageChannel(DmaMessageChannel* channel) = 0;

  // Errors: EINVAL unaligned/empty/overflowing range or no rights; EEXIST
  // overlaps a live mapping; ENOSPC mapping or byte cap reached; mmap errno.
  virtual Result<void> Map(DmaMapRequest request) = 0;
  // Unmaps mappings lying wholly inside [iova, iova + size); returns the bytes
  // unmapped. Pinned pages are first handed to the listeners (the unmap
  // contract). Errors: EINVAL unaligned, or the range would split a mapping.
  virtual Result<uint64_t> Unmap(uint64_t iova, uint64_t size) = 0;
  virtual Result<uint64_t> UnmapAll() = 0;
  // Live mappings, for a transport that enforces a lower cap it negotiated
  // (vfio-user's max_dma_maps).
  virtual size_t mapping_count() const = 0;
  // Bytes pinned (locked) in this address space, for operators' views.
  virtual uint64_t locked_bytes() const { return 0; }

  // Devices that may pin register their listener; a device is identified by it.
  virtual Result<void> AttachListener(DmaUnmapListener& listener) = 0;
  // Releases every pin the listener still holds; waits for its callbacks to end.
  virtual void DetachListener(DmaUnmapListener& listener) = 0;

  // kernel vfio_pin_pages(): host addresses of |npage| pages from |iova|.
  // Errors: EINVAL unaligned, npage < 1, or unknown owner; E2BIG npage > 512;
  // EFAULT not mapped; EPERM rights; ENOMEM locked-memory limit.
  virtual Result<std::vector<void*>> PinPages(DmaUnmapListener& owner, uint64_t iova,
                                              int npage, uint32_t prot) = 0;
  virtual void UnpinPages(DmaUnmapListener& owner, uint64_t iova, int npage) = 0;

  // kernel vfio_dma_rw(): any length, across mappings. Errors: EFAULT not
  // mapped; EPERM rights; the channel's errno for fd-less mappings.
  virtual Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) = 0;
  virtual Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) = 0;

  // Dirty-page tracking (VFIO_IOMMU_DIRTY_PAGES, vfio-user DMA_LOGGING_*).
  virtual Result<void> StartDirtyTracking(uint64_t pgsize) = 0;
  virtual Result<void> StopDirtyTracking() = 0;
  // One bit per |pgsize| page of [iova, iova + size), then cleared.
  virtual Result<std::vector<uint64_t>> ReadAndClearDirty(uint64_t iova, uint64_t size,
                                                          uint64_t pgsize) = 0;
};

// A backend kind, registered with the core (kernel: vfio_register_iommu_driver).
// Thread-safe.
class IommuDriver {
 public:
  virtual ~IommuDriver() = default;
  virtual std::string_view name() const = 0;
  // |type| is a VFIO_SET_IOMMU value (VFIO_TYPE1v2_IOMMU, ...).
  virtual bool Supports(uint32_t type) const = 0;
  virtual Result<std::unique_ptr<IommuBackend>> Create(uint32_t type) = 0;
};

}  // namespace umdev
