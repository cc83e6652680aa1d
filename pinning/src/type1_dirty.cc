// Type1Backend: dirty-page tracking (VFIO_IOMMU_DIRTY_PAGES, vfio-user DMA_LOGGING).
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cerrno>

#include "dma_region.h"
#include "umdev/pinning/type1_backend.h"

namespace umdev::pinning {

using detail::DirtyBits;
using detail::DmaRegion;

Result<void> Type1Backend::StartDirtyTracking(uint64_t pgsize) {
  if (pgsize < kPageSize || !std::has_single_bit(pgsize)) {
    return Fail(EINVAL, fmt::format("start dirty tracking: page size {:#x} is not {:#x} times a "
                                    "power of two",
                                    pgsize, kPageSize));
  }
  {
    MutexLock lock(mu_);
    if (dirty_pgsize_ == pgsize) return {};
    if (dirty_pgsize_ != 0) {
      return Fail(EBUSY, fmt::format("start dirty tracking at {:#x}: already on at {:#x}", pgsize,
                                     dirty_pgsize_));
    }
    for (auto& [iova, region] : regions_) {
      region->dirty = std::make_shared<DirtyBits>(region->pages());
    }
    dirty_pgsize_ = pgsize;
    // Writes through the translation cache mark nothing: from here on they
    // go the tracked way...
    InvalidateTranslationsLocked();
  }
  // ...and the ones in flight end before tracking is reported on.
  WaitForCachedCopies();
  return {};
}

Result<void> Type1Backend::StopDirtyTracking() {
  MutexLock lock(mu_);
  for (auto& [iova, region] : regions_) region->dirty.reset();
  dirty_pgsize_ = 0;
  InvalidateTranslationsLocked();  // Writes may take the cache again.
  return {};
}

Result<std::vector<uint64_t>> Type1Backend::ReadAndClearDirty(uint64_t iova, uint64_t size,
                                                              uint64_t pgsize) {
  MutexLock lock(mu_);
  if (dirty_pgsize_ == 0 || pgsize != dirty_pgsize_) {
    return Fail(EINVAL, fmt::format("dirty bitmap at page size {:#x}: tracking is at {:#x}",
                                    pgsize, dirty_pgsize_));
  }
  if (size == 0 || iova % pgsize != 0 || size % pgsize != 0 || iova + size - 1 < iova) {
    return Fail(EINVAL, fmt::format("dirty bitmap [{:#x}, +{:#x}): not aligned to {:#x}", iova,
                                    size, pgsize));
  }
  const uint64_t last = iova + size - 1;
  // The whole range must be mapped, as type1 wants the bitmap of whole mappings.
  auto it = regions_.upper_bound(iova);
  if (it != regions_.begin()) --it;
  auto first_region = it;
  for (uint64_t cursor = iova;; ++it) {
    if (it == regions_.end() || it->second->iova > cursor || it->second->last() < cursor) {
      return Fail(EINVAL, fmt::format("dirty bitmap [{:#x}, +{:#x}): {:#x} is not mapped", iova,
                                      size, cursor));
    }
    if (it->second->last() >= last) break;
    cursor = it->second->last() + 1;
  }

  std::vector<uint64_t> bitmap((size / pgsize + 63) / 64, 0);
  for (it = first_region; it != regions_.end() && it->second->iova <= last; ++it) {
    DmaRegion& region = *it->second;
    const uint64_t begin = std::max(iova, region.iova);
    const uint64_t end_last = std::min(last, region.last());
    for (uint64_t page = begin; page <= end_last && page >= begin; page += kPageSize) {
      const uint64_t index = (page - region.iova) / kPageSize;
      // Clear first, unconditionally: a pinned page's written bit goes too.
      const bool written = region.dirty->TestAndClear(index);
      if (written || region.pins.contains(index)) {
        const uint64_t bit = (page - iova) / pgsize;
        bitmap[bit / 64] |= uint64_t{1} << (bit % 64);
      }
    }
  }
  return bitmap;
}

}  // namespace umdev::pinning
