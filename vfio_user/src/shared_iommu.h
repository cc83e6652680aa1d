// SharedAddressSpace and its per-session views: the devices of one real
// IOMMU group used by one client over several vfio-user sessions (QEMU
// gives each device a socket and a container of its own, the kernel lets
// the group be in one container). Each session maps through its own view;
// the same mapping made by several sessions (QEMU maps the guest's RAM for
// each device) exists once, counted, and a session's end takes away only
// what it mapped.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "umdev/common/mutex.h"
#include "umdev/mdev_core/iommu_backend.h"

namespace umdev::vfio_user {

// Thread-safe: the sessions' threads call in.
class SharedAddressSpace {
 public:
  explicit SharedAddressSpace(std::shared_ptr<IommuBackend> backend)
      : backend_(std::move(backend)) {}

  IommuBackend& backend() { return *backend_; }

  // What one mapping is: where, with what rights, of which memory.
  struct Key {
    uint64_t iova = 0;
    uint64_t size = 0;
    uint32_t prot = 0;
    dev_t dev = 0;
    ino_t ino = 0;
    uint64_t offset = 0;
    auto operator<=>(const Key&) const = default;
  };
  // Maps |request| unless the same mapping exists (then counts it).
  // Errors: EINVAL no fd (a shared space has no one client to ask for
  // fd-less memory); fstat's; the backend's (EEXIST another mapping there).
  Result<Key> Map(DmaMapRequest request) UMDEV_EXCLUDES(mu_);
  // One user of |key| gone; unmapped from the backend with its last.
  // Returns the bytes that left the backend.
  Result<uint64_t> Release(const Key& key) UMDEV_EXCLUDES(mu_);

 private:
  const std::shared_ptr<IommuBackend> backend_;
  Mutex mu_;
  std::map<Key, unsigned> users_ UMDEV_GUARDED_BY(mu_);
};

// One session's view: its mappings, over the shared space. Thread-safe.
class SharedAddressSpaceView final : public IommuBackend {
 public:
  explicit SharedAddressSpaceView(std::shared_ptr<SharedAddressSpace> space)
      : space_(std::move(space)) {}
  ~SharedAddressSpaceView() override;

  IommuInfo info() const override { return space_->backend().info(); }
  // No client to ask: fd-less mappings are refused (Map's EINVAL).
  void SetMessageChannel(DmaMessageChannel*) override {}
  Result<void> Map(DmaMapRequest request) override UMDEV_EXCLUDES(mu_);
  // This session's mappings inside the range; one that straddles an end
  // is EINVAL (type1v2's rule), and nothing is unmapped then.
  Result<uint64_t> Unmap(uint64_t iova, uint64_t size) override UMDEV_EXCLUDES(mu_);
  Result<uint64_t> UnmapAll() override UMDEV_EXCLUDES(mu_);
  size_t mapping_count() const override UMDEV_EXCLUDES(mu_);
  uint64_t locked_bytes() const override { return space_->backend().locked_bytes(); }
  Result<void> AttachListener(DmaUnmapListener& listener) override {
    return space_->backend().AttachListener(listener);
  }
  void DetachListener(DmaUnmapListener& listener) override {
    space_->backend().DetachListener(listener);
  }
  Result<std::vector<void*>> PinPages(DmaUnmapListener& owner, uint64_t iova, int npage,
                                      uint32_t prot) override {
    return space_->backend().PinPages(owner, iova, npage, prot);
  }
  void UnpinPages(DmaUnmapListener& owner, uint64_t iova, int npage) override {
    space_->backend().UnpinPages(owner, iova, npage);
  }
  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override {
    return space_->backend().DmaRead(iova, out);
  }
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override {
    return space_->backend().DmaWrite(iova, data);
  }
  Result<void> StartDirtyTracking(uint64_t pgsize) override {
    return space_->backend().StartDirtyTracking(pgsize);
  }
  Result<void> StopDirtyTracking() override { return space_->backend().StopDirtyTracking(); }
  Result<std::vector<uint64_t>> ReadAndClearDirty(uint64_t iova, uint64_t size,
                                                  uint64_t pgsize) override {
    return space_->backend().ReadAndClearDirty(iova, size, pgsize);
  }

 private:
  const std::shared_ptr<SharedAddressSpace> space_;
  mutable Mutex mu_;
  std::vector<SharedAddressSpace::Key> mine_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev::vfio_user
