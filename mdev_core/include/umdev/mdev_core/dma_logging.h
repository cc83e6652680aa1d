// The checks VFIO_DEVICE_FEATURE_DMA_LOGGING_START/REPORT make before a
// device's DirtyLogOps sees a request (kernel vfio_main.c,
// vfio_ioctl_device_feature_logging_*), shared with the transports that
// size their replies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "umdev/common/error.h"
#include "umdev/mdev_core/device_ops.h"

namespace umdev {

// Ranges one START may carry: as many vfio_device_feature_dma_logging_range
// as fit in one 4 KiB kernel page (kernel LOG_MAX_RANGES).
inline constexpr size_t kDmaLoggingMaxRanges = 4096 / 16;
// The largest report bitmap the core builds (vfio_iommu_type1's
// DIRTY_BITMAP_SIZE_MAX): 2^31 pages.
inline constexpr uint64_t kDirtyBitmapMaxBytes = uint64_t{256} << 20;

// kernel vfio_ioctl_device_feature_logging_start. Errors: EINVAL no ranges,
// a range not aligned to |page_size|, or overlapping another; E2BIG more than
// kDmaLoggingMaxRanges; EOVERFLOW iova + size wraps. Added here (the kernel
// leaves them to the driver, where they are undefined): EINVAL |page_size|
// not a power of two, or an empty range.
Result<void> ValidateDmaLoggingStart(std::span<const SparseMmapArea> ranges, uint64_t page_size);

// The u64 words of a report on [iova, iova + size) at |page_size| per bit,
// bit i covering [iova + i * page_size, iova + (i + 1) * page_size) (kernel
// iova_bitmap). Errors: EINVAL |page_size| below 4096 or not a power of two
// (kernel vfio_ioctl_device_feature_logging_report); EOVERFLOW iova + size
// wraps (same); EINVAL |size| 0 or a bitmap over kDirtyBitmapMaxBytes
// (type1's verify_bitmap_size rules; the kernel report path writes straight
// to user memory and needs no bound).
Result<size_t> DirtyBitmapWords(uint64_t iova, uint64_t size, uint64_t page_size);

}  // namespace umdev
