// Checks for device DMA logging requests.
#include "umdev/mdev_core/dma_logging.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <vector>

namespace umdev {

Result<void> ValidateDmaLoggingStart(std::span<const SparseMmapArea> ranges, uint64_t page_size) {
  if (ranges.empty()) return Fail(EINVAL, "dma logging start: no ranges");
  if (ranges.size() > kDmaLoggingMaxRanges) {
    return Fail(E2BIG, fmt::format("dma logging start: {} ranges, at most {}", ranges.size(),
                                   kDmaLoggingMaxRanges));
  }
  if (!std::has_single_bit(page_size)) {
    return Fail(EINVAL, fmt::format("dma logging start: page size {:#x}", page_size));
  }
  std::vector<SparseMmapArea> sorted(ranges.begin(), ranges.end());
  for (const SparseMmapArea& range : sorted) {
    if (range.offset % page_size != 0 || range.size % page_size != 0) {
      return Fail(EINVAL, fmt::format("dma logging start: [{:#x}, +{:#x}) not aligned to {:#x}",
                                      range.offset, range.size, page_size));
    }
    if (range.size > UINT64_MAX - range.offset) {
      return Fail(EOVERFLOW, fmt::format("dma logging start: [{:#x}, +{:#x}) wraps", range.offset,
                                         range.size));
    }
    if (range.size == 0) {
      return Fail(EINVAL, fmt::format("dma logging start: empty range at {:#x}", range.offset));
    }
  }
  std::sort(sorted.begin(), sorted.end(), [](const SparseMmapArea& a, const SparseMmapArea& b) {
    return a.offset < b.offset;
  });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].offset < sorted[i - 1].offset + sorted[i - 1].size) {
      return Fail(EINVAL, fmt::format("dma logging start: ranges overlap at {:#x}",
                                      sorted[i].offset));
    }
  }
  return {};
}

Result<size_t> DirtyBitmapWords(uint64_t iova, uint64_t size, uint64_t page_size) {
  if (page_size < 4096 || !std::has_single_bit(page_size)) {
    return Fail(EINVAL, fmt::format("dma logging report: page size {:#x}", page_size));
  }
  if (size > UINT64_MAX - iova) {
    return Fail(EOVERFLOW, fmt::format("dma logging report: [{:#x}, +{:#x}) wraps", iova, size));
  }
  if (size == 0) return Fail(EINVAL, "dma logging report: empty range");
  const uint64_t pages = ((size - 1) >> std::countr_zero(page_size)) + 1;
  const uint64_t words = (pages + 63) / 64;
  if (words > kDirtyBitmapMaxBytes / sizeof(uint64_t)) {
    return Fail(EINVAL, fmt::format("dma logging report: {} pages need a bitmap over {} bytes",
                                    pages, kDirtyBitmapMaxBytes));
  }
  return static_cast<size_t>(words);
}

}  // namespace umdev
