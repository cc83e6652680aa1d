// FakeIommuDriver: an in-memory IOMMU backend for core tests, so the object
// model is tested without pinning/. Guest memory is a std::vector per mapping.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <vector>

#include "umdev/common/mutex.h"
#include "umdev/mdev_core/iommu_backend.h"

namespace umdev::testing {

// Thread-safe. Follows the unmap contract: listeners are told with no lock held.
class FakeIommu final : public IommuBackend {
 public:
  explicit FakeIommu(std::shared_ptr<std::atomic<int>> live) : live_(std::move(live)) { ++*live_; }
  ~FakeIommu() override;

  IommuInfo info() const override { return IommuInfo{kPageSize, 16}; }
  void SetMessageChannel(DmaMessageChannel* channel) override { (void)channel; }
  Result<void> Map(DmaMapRequest request) override;
  Result<uint64_t> Unmap(uint64_t iova, uint64_t size) override;
  Result<uint64_t> UnmapAll() override { return Unmap(0, ~uint64_t{0} & ~(kPageSize - 1)); }
  Result<void> AttachListener(DmaUnmapListener& listener) override;
  void DetachListener(DmaUnmapListener& listener) override;
  Result<std::vector<void*>> PinPages(DmaUnmapListener& owner, uint64_t iova, int npage,
                                      uint32_t prot) override;
  void UnpinPages(DmaUnmapListener& owner, uint64_t iova, int npage) override;
  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override;
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override;
  Result<void> StartDirtyTracking(uint64_t) override { return Fail(ENOTTY, "fake"); }
  Result<void> StopDirtyTracking() override { return Fail(ENOTTY, "fake"); }
  Result<std::vector<uint64_t>> ReadAndClearDirty(uint64_t, uint64_t, uint64_t) override {
    return Fail(ENOTTY, "fake");
  }

  size_t mapping_count() const override {
    MutexLock lock(mu_);
    return regions_.size();
  }
  size_t pinned_pages() const;
  size_t listeners() const;

 private:
  struct Region {
    uint64_t size;
    uint32_t prot;
    std::vector<std::byte> memory;
  };
  Region* FindLocked(uint64_t iova, uint64_t* offset) UMDEV_REQUIRES(mu_);
  bool PinnedInLocked(uint64_t iova, uint64_t size) const UMDEV_REQUIRES(mu_);

  std::shared_ptr<std::atomic<int>> live_;
  mutable Mutex mu_;
  std::map<uint64_t, Region> regions_ UMDEV_GUARDED_BY(mu_);
  // (listener, page iova) -> pin count.
  std::map<std::pair<DmaUnmapListener*, uint64_t>, int> pins_ UMDEV_GUARDED_BY(mu_);
  std::vector<DmaUnmapListener*> listeners_ UMDEV_GUARDED_BY(mu_);
  // Listener callbacks running; DetachListener() waits for 0 (the contract).
  int callbacks_in_flight_ UMDEV_GUARDED_BY(mu_) = 0;
  CondVar callbacks_done_;
};

// Supports VFIO_TYPE1v2_IOMMU; counts live backends so tests see them freed.
class FakeIommuDriver final : public IommuDriver {
 public:
  std::string_view name() const override { return "fake"; }
  bool Supports(uint32_t type) const override;
  Result<std::unique_ptr<IommuBackend>> Create(uint32_t type) override;
  int live_backends() const { return *live_; }

 private:
  std::shared_ptr<std::atomic<int>> live_ = std::make_shared<std::atomic<int>>(0);
};

}  // namespace umdev::testing
