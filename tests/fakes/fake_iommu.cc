// FakeIommu: in-memory IOMMU backend for core tests.
#include "fake_iommu.h"

#include <linux/vfio.h>

#include <algorithm>
#include <cstring>

namespace umdev::testing {

FakeIommu::~FakeIommu() {
  (void)UnmapAll();
  --*live_;
}

Result<void> FakeIommu::Map(DmaMapRequest request) {
  if (request.size == 0 || request.iova % kPageSize != 0 || request.size % kPageSize != 0) {
    return Fail(EINVAL, "fake map: unaligned");
  }
  MutexLock lock(mu_);
  for (const auto& [iova, region] : regions_) {
    if (iova < request.iova + request.size && request.iova < iova + region.size) {
      return Fail(EEXIST, "fake map: overlap");
    }
  }
  regions_.emplace(request.iova,
                   Region{request.size, request.prot, std::vector<std::byte>(request.size)});
  return {};
}

bool FakeIommu::PinnedInLocked(uint64_t iova, uint64_t size) const {
  return std::any_of(pins_.begin(), pins_.end(), [&](const auto& entry) {
    return entry.first.second >= iova && entry.first.second < iova + size;
  });
}

Result<uint64_t> FakeIommu::Unmap(uint64_t iova, uint64_t size) {
  for (int attempt = 0;; ++attempt) {
    std::vector<DmaUnmapListener*> listeners;
    {
      MutexLock lock(mu_);
      if (!PinnedInLocked(iova, size)) break;
      listeners = listeners_;
      ++callbacks_in_flight_;
      if (attempt == 3) {
        // Give up on the vendor: revoke, as the real backend does.
        std::erase_if(pins_, [&](const auto& e) {
          return e.first.second >= iova && e.first.second < iova + size;
        });
        mu_.Unlock();
        for (auto* l : listeners) l->OnPinsRevoked(iova, size);
        mu_.Lock();
        --callbacks_in_flight_;
        callbacks_done_.NotifyAll();
        break;
      }
    }
    for (auto* l : listeners) l->OnDmaUnmap(iova, size);
    MutexLock lock(mu_);
    --callbacks_in_flight_;
    callbacks_done_.NotifyAll();
  }
  MutexLock lock(mu_);
  uint64_t unmapped = 0;
  for (auto it = regions_.begin(); it != regions_.end();) {
    if (it->first >= iova && it->first + it->second.size <= iova + size) {
      unmapped += it->second.size;
      it = regions_.erase(it);
    } else {
      ++it;
    }
  }
  return unmapped;
}

Result<void> FakeIommu::AttachListener(DmaUnmapListener& listener) {
  MutexLock lock(mu_);
  listeners_.push_back(&listener);
  return {};
}

void FakeIommu::DetachListener(DmaUnmapListener& listener) {
  MutexLock lock(mu_);
  std::erase(listeners_, &listener);
  // Simpler than the real backend: waits for every callback, not only this
  // listener's. Never called from a callback in the core tests.
  while (callbacks_in_flight_ > 0) callbacks_done_.Wait(mu_);
  std::erase_if(pins_, [&](const auto& e) { return e.first.first == &listener; });
}

FakeIommu::Region* FakeIommu::FindLocked(uint64_t iova, uint64_t* offset) {
  auto it = regions_.upper_bound(iova);
  if (it == regions_.begin()) return nullptr;
  --it;
  if (iova >= it->first + it->second.size) return nullptr;
  *offset = iova - it->first;
  return &it->second;
}

Result<std::vector<void*>> FakeIommu::PinPages(DmaUnmapListener& owner, uint64_t iova,
                                               int npage, uint32_t prot) {
  MutexLock lock(mu_);
  if (std::find(listeners_.begin(), listeners_.end(), &owner) == listeners_.end()) {
    return Fail(EINVAL, "fake pin: unknown owner");
  }
  std::vector<void*> pages;
  for (int i = 0; i < npage; ++i) {
    uint64_t offset = 0;
    Region* region = FindLocked(iova + i * kPageSize, &offset);
    if (region == nullptr) return Fail(EFAULT, "fake pin: not mapped");
    if ((region->prot & prot) != prot) return Fail(EPERM, "fake pin: rights");
    pages.push_back(region->memory.data() + offset);
  }
  for (int i = 0; i < npage; ++i) ++pins_[{&owner, iova + i * kPageSize}];
  return pages;
}

void FakeIommu::UnpinPages(DmaUnmapListener& owner, uint64_t iova, int npage) {
  MutexLock lock(mu_);
  for (int i = 0; i < npage; ++i) {
    auto it = pins_.find({&owner, iova + i * kPageSize});
    if (it != pins_.end() && --it->second == 0) pins_.erase(it);
  }
}

Result<void> FakeIommu::DmaRead(uint64_t iova, std::span<std::byte> out) {
  MutexLock lock(mu_);
  uint64_t offset = 0;
  Region* region = FindLocked(iova, &offset);
  if (region == nullptr || out.size() > region->size - offset) return Fail(EFAULT, "fake read");
  std::memcpy(out.data(), region->memory.data() + offset, out.size());
  return {};
}

Result<void> FakeIommu::DmaWrite(uint64_t iova, std::span<const std::byte> data) {
  MutexLock lock(mu_);
  uint64_t offset = 0;
  Region* region = FindLocked(iova, &offset);
  if (region == nullptr || data.size() > region->size - offset) return Fail(EFAULT, "fake write");
  std::memcpy(region->memory.data() + offset, data.data(), data.size());
  return {};
}

size_t FakeIommu::pinned_pages() const {
  MutexLock lock(mu_);
  return pins_.size();
}

size_t FakeIommu::listeners() const {
  MutexLock lock(mu_);
  return listeners_.size();
}

bool FakeIommuDriver::Supports(uint32_t type) const { return type == VFIO_TYPE1v2_IOMMU; }

Result<std::unique_ptr<IommuBackend>> FakeIommuDriver::Create(uint32_t type) {
  if (!Supports(type)) return Fail(EINVAL, "fake: unsupported type");
  return std::unique_ptr<IommuBackend>(std::make_unique<FakeIommu>(live_));
}

}  // namespace umdev::testing
