// ContainerDirtyLog: DMA logging from the session's kernel container.
#include "umdev/passthrough/container_dirty_log.h"

#include <fmt/format.h>

#include <bit>

namespace umdev::passthrough {

void MarkDirtyPages(std::span<const uint64_t> fine, uint64_t pages, uint64_t first,
                    uint64_t factor, std::span<uint64_t> out) {
  for (size_t word = 0; word < fine.size() && word * 64 < pages; ++word) {
    for (uint64_t bits = fine[word]; bits != 0; bits &= bits - 1) {
      const uint64_t page = word * 64 + static_cast<uint64_t>(std::countr_zero(bits));
      if (page >= pages) break;  // Bits past the mapping are not its pages.
      const uint64_t big = (first + page) / factor;
      if (big / 64 < out.size()) out[big / 64] |= uint64_t{1} << (big % 64);
    }
  }
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
  UMDEV_ASSIGN_OR_RETURN(const std::vector<SparseMmapArea> mappings,
                         container->MappingsWithin(iova, size));
  // The caller has bounded the report's bitmap (DirtyBitmapWords); an
  // unmapped stretch of the range is clean and costs nothing.
  const uint64_t pages = size == 0 ? 0 : (size - 1) / page_size + 1;
  std::vector<uint64_t> out((pages + 63) / 64);
  const uint64_t factor = page_size / kTrackedPageSize;
  for (const SparseMmapArea& mapping : mappings) {
    UMDEV_ASSIGN_OR_RETURN(std::vector<uint64_t> fine,
                           container->DirtyBitmap(mapping.offset, mapping.size, kTrackedPageSize));
    MarkDirtyPages(fine, mapping.size / kTrackedPageSize,
                   (mapping.offset - iova) / kTrackedPageSize, factor, out);
  }
  return out;
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
