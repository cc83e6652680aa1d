// DmaAccess: an mdev's path to guest memory (kernel vfio_pin_pages,
// vfio_unpin_pages, vfio_dma_rw), and PinnedPages, an RAII pin.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "umdev/common/error.h"

namespace umdev {

// Implemented by the core for each instance and handed to the vendor in
// Probe(). Thread-safe. Must not be called from DmaUnmapListener::OnDmaUnmap()
// except UnpinPages(), which that callback exists to call.
class DmaAccess {
 public:
  virtual ~DmaAccess() = default;
  // Host addresses of |npage| pages from |iova|, pinned until unpinned.
  // Errors: EINVAL the device is not open or has no dma_unmap listener; the
  // backend's (E2BIG, EFAULT, EPERM, ENOMEM; see IommuBackend::PinPages).
  virtual Result<std::vector<void*>> PinPages(uint64_t iova, int npage, uint32_t prot) = 0;
  virtual void UnpinPages(uint64_t iova, int npage) = 0;
  // Errors: EINVAL not open; the backend's (EFAULT, EPERM, channel errno).
  virtual Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) = 0;
  virtual Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) = 0;
};

// Pages pinned through a DmaAccess, unpinned when this is destroyed.
// Thread-compatible. The DmaAccess must outlive it.
class PinnedPages {
 public:
  PinnedPages() = default;
  // Errors: those of DmaAccess::PinPages.
  static Result<PinnedPages> Pin(DmaAccess& dma, uint64_t iova, int npage, uint32_t prot);
  PinnedPages(PinnedPages&& other) noexcept;
  PinnedPages& operator=(PinnedPages&& other) noexcept;
  PinnedPages(const PinnedPages&) = delete;
  PinnedPages& operator=(const PinnedPages&) = delete;
  ~PinnedPages() { Reset(); }

  uint64_t iova() const { return iova_; }
  const std::vector<void*>& pages() const { return pages_; }
  bool empty() const { return pages_.empty(); }
  // Whether the pinned IOVA range overlaps [iova, iova + size).
  bool Overlaps(uint64_t iova, uint64_t size) const;
  void Reset();

 private:
  DmaAccess* dma_ = nullptr;  // Not owned.
  uint64_t iova_ = 0;
  std::vector<void*> pages_;
};

}  // namespace umdev
