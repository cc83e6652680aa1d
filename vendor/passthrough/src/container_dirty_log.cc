// ContainerDirtyLog: DMA logging from the session's kernel container.
#include "umdev/passthrough/container_dirty_log.h"

#include <fmt/format.h>

#include <bit>

namespace umdev::passthrough {

std::vector<uint64_t> FoldDirtyBitmap(std::span<const uint64_t> bitmap, uint64_t pages,
                                      uint64_t factor) {
  const uint64_t folded_pages = (pages + factor - 1) / factor;
  std::vector<uint64_t> folded((folded_pages + 63) / 64);
  for (uint64_t page = 0; page < pages && page / 64 < bitmap.size(); ++page) {
    if ((bitmap[page / 64] >> (page % 64) & 1) == 0) continue;
    const uint64_t big = page / factor;
    folded[big / 64] |= uint64_t{1} << (big % 64);
  }
  return folded;
}

Result<std::shared_ptr<HostContainer>> ContainerDirtyLog::Container() const {
  std::shared_ptr<HostContainer> container = iommu_->Current();
  if (container == nullptr) return Fail(ENODEV, "dma logging: the group is in no container");
  return container;
}

Result<void> ContainerDirtyLog::Start(std::span<const SparseMmapArea>, uint64_t page_size) {
  if (page_size < kTrackedPageSize) {
    return Fail(EINVAL, fmt::format("dma logging start: page size {:#x}; the host IOMMU tracks "
                                    "{:#x}-byte pages at the finest",
                                    page_size, kTrackedPageSize));
  }
  MutexLock lock(mu_);
  if (logging_) return Fail(EBUSY, "dma logging start: logging already");
  UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<HostContainer> container, Container());
  UMDEV_TRY(container->StartDirtyTracking());
  logging_ = true;
  return {};
}

Result<void> ContainerDirtyLog::Stop() {
  MutexLock lock(mu_);
  if (!logging_) return Fail(EINVAL, "dma logging stop: not logging");
  logging_ = false;
  UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<HostContainer> container, Container());
  return container->StopDirtyTracking();
}

Result<std::vector<uint64_t>> ContainerDirtyLog::ReadAndClear(uint64_t iova, uint64_t size,
                                                              uint64_t page_size) {
  if (iova % kTrackedPageSize != 0 || size % kTrackedPageSize != 0 ||
      page_size < kTrackedPageSize || !std::has_single_bit(page_size)) {
    return Fail(EINVAL, fmt::format("dma logging report: [{:#x}, +{:#x}) in pages of {:#x}: the "
                                    "host IOMMU reports {:#x}-byte pages",
                                    iova, size, page_size, kTrackedPageSize));
  }
  MutexLock lock(mu_);
  if (!logging_) return Fail(EINVAL, "dma logging report: not logging");
  UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<HostContainer> container, Container());
  UMDEV_ASSIGN_OR_RETURN(std::vector<uint64_t> fine,
                         container->DirtyBitmap(iova, size, kTrackedPageSize));
  const uint64_t factor = page_size / kTrackedPageSize;
  if (factor == 1) return fine;
  return FoldDirtyBitmap(fine, size / kTrackedPageSize, factor);
}

void ContainerDirtyLog::Forget() {
  MutexLock lock(mu_);
  if (!logging_) return;
  logging_ = false;
  // The container may be gone already, and tracking with it.
  if (std::shared_ptr<HostContainer> container = iommu_->Current()) {
    (void)container->StopDirtyTracking();
  }
}

}  // namespace umdev::passthrough
