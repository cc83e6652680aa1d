// ContainerDirtyLog: a passthrough function's DMA logging
// (VFIO_DEVICE_FEATURE_DMA_LOGGING_*, the only dirty tracking vfio-user
// has) answered from the client's kernel container with
// VFIO_IOMMU_DIRTY_PAGES. type1 sees no device writes: while tracking, it
// reports every page mapped for the device as dirty, on each read — the
// kernel's answer, relayed as is (docs/passthrough.md).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/mdev_core/device_ops.h"
#include "umdev/passthrough/passthrough_driver.h"

namespace umdev::passthrough {

// The page type1 tracks: the smallest the host IOMMU maps.
inline constexpr uint64_t kTrackedPageSize = 4096;

// Marks in |out| the pages of a report whose bit covers |factor| tracked
// pages: for each of the |pages| bits set in |fine| (tracked pages from
// tracked page |first| of the report on), the page that holds it.
void MarkDirtyPages(std::span<const uint64_t> fine, uint64_t pages, uint64_t first,
                    uint64_t factor, std::span<uint64_t> out);

// One function's log, over whatever container its group is in now.
// Thread-safe: the session serving the function, and its close.
class ContainerDirtyLog final : public DirtyLogOps {
 public:
  explicit ContainerDirtyLog(std::shared_ptr<HostIommuDriver> iommu) : iommu_(std::move(iommu)) {}

  // type1 tracks the whole container, so |ranges| (checked by the core)
  // only bound what the client will ask for. Errors: EINVAL a page under
  // 4 KiB; EBUSY logging already; ENODEV no container; the kernel's.
  Result<void> Start(std::span<const SparseMmapArea> ranges, uint64_t page_size) override
      UMDEV_EXCLUDES(mu_);
  // Errors: EINVAL not logging; the kernel's.
  Result<void> Stop() override UMDEV_EXCLUDES(mu_);
  // Read one mapping at a time, so the kernel's bitmaps follow what is
  // mapped, never the size a client asks for. Errors: EINVAL not logging,
  // a range off 4 KiB pages, or one that cuts a mapping; the kernel's.
  Result<std::vector<uint64_t>> ReadAndClear(uint64_t iova, uint64_t size,
                                             uint64_t page_size) override UMDEV_EXCLUDES(mu_);
  // The client is leaving: tracking off, and the next client starts clean.
  void Forget() UMDEV_EXCLUDES(mu_);

 private:
  Result<std::shared_ptr<HostContainer>> Container() const;

  const std::shared_ptr<HostIommuDriver> iommu_;
  // Held across the ioctls, so that a start, a report and a stop of one
  // client stay in order.
  Mutex mu_;
  bool logging_ UMDEV_GUARDED_BY(mu_) = false;
};

}  // namespace umdev::passthrough
